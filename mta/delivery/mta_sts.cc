#include "mta/delivery/mta_sts.hh"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "runtime/net/tcp.hh"

namespace rw::mta::delivery::sts {

namespace {

std::string lower(std::string_view s) {
    std::string o(s);
    for (auto& c : o)
        c = char(std::tolower(uint8_t(c)));
    return o;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

constexpr size_t k_max_policy_bytes = 64 * 1024;  // RFC 8461 3.3
constexpr int64_t k_max_age_limit = 31'557'600;    // RFC 8461 3.2

}  // namespace

std::string_view to_string(mode m) {
    switch (m) {
    case mode::none: return "none";
    case mode::testing: return "testing";
    case mode::enforce: return "enforce";
    }
    return "?";
}

result<policy, std::string> parse_policy(std::string_view body) {
    policy p;
    bool version = false, have_mode = false, have_age = false;
    size_t pos = 0;
    while (pos < body.size()) {
        size_t nl = body.find('\n', pos);
        std::string_view line = body.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? body.size() : nl + 1;
        line = trim(line);
        if (line.empty())
            continue;
        const size_t colon = line.find(':');
        if (colon == std::string_view::npos)
            return unexpected(fmt::format("not a \"key: value\" line: {:?}", std::string(line.substr(0, 80))));
        const std::string key = lower(trim(line.substr(0, colon)));
        const std::string_view value = trim(line.substr(colon + 1));
        if (key == "version") {
            if (value != "STSv1")
                return unexpected(fmt::format("version {:?} is not STSv1", std::string(value)));
            version = true;
        } else if (key == "mode") {
            if (value == "enforce")
                p.m = mode::enforce;
            else if (value == "testing")
                p.m = mode::testing;
            else if (value == "none")
                p.m = mode::none;
            else
                return unexpected(fmt::format("mode {:?} is not enforce, testing or none", std::string(value)));
            have_mode = true;
        } else if (key == "max_age") {
            if (value.empty() || value.size() > 18 ||
                !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
                return unexpected(fmt::format("max_age {:?} is not a number of seconds", std::string(value)));
            p.max_age = std::min<int64_t>(std::stoll(std::string(value)), k_max_age_limit);
            have_age = true;
        } else if (key == "mx") {
            std::string m = lower(value);
            const std::string_view bare = std::string_view(m).substr(m.starts_with("*.") ? 2 : 0);
            if (bare.empty() || bare.size() > 253 || bare.find_first_of(" *\t") != std::string_view::npos)
                return unexpected(fmt::format("mx {:?} is not a host name pattern", std::string(value)));
            if (p.mx.size() < 100)
                p.mx.push_back(std::move(m));
        }
        // Other keys are extensions: ignored (RFC 8461 3.2).
    }
    if (!version)
        return unexpected(std::string("no \"version: STSv1\""));
    if (!have_mode)
        return unexpected(std::string("no mode"));
    if (!have_age)
        return unexpected(std::string("no max_age"));
    if (p.m != mode::none && p.mx.empty())
        return unexpected(std::string("no mx"));
    return p;
}

std::optional<std::string> parse_txt(std::string_view txt) {
    // "v=STSv1; id=20160831085700Z;" (RFC 8461 3.1): v first, then id.
    std::string id;
    bool v = false;
    size_t pos = 0, n = 0;
    while (pos <= txt.size()) {
        size_t semi = txt.find(';', pos);
        std::string_view field = trim(txt.substr(pos, semi == std::string_view::npos ? std::string_view::npos : semi - pos));
        pos = semi == std::string_view::npos ? txt.size() + 1 : semi + 1;
        if (field.empty())
            continue;
        const size_t eq = field.find('=');
        if (eq == std::string_view::npos)
            return std::nullopt;
        const std::string_view k = trim(field.substr(0, eq)), val = trim(field.substr(eq + 1));
        if (n++ == 0) {
            if (k != "v" || val != "STSv1")
                return std::nullopt;
            v = true;
        } else if (k == "id") {
            if (val.empty() || val.size() > 32 ||
                !std::all_of(val.begin(), val.end(), [](char c) { return std::isalnum(uint8_t(c)); }))
                return std::nullopt;
            id = std::string(val);
        }
    }
    if (!v || id.empty())
        return std::nullopt;
    return id;
}

bool mx_matches(const policy& p, std::string_view host) {
    std::string h = lower(host);
    if (!h.empty() && h.back() == '.')
        h.pop_back();
    for (const auto& m : p.mx) {
        if (m.starts_with("*.")) {
            const std::string_view suffix = std::string_view(m).substr(1);  // ".example.com"
            if (h.size() > suffix.size() && h.ends_with(suffix) &&
                h.find('.') == h.size() - suffix.size())  // exactly one label in front
                return true;
        } else if (h == m) {
            return true;
        }
    }
    return false;
}

task<result<std::string, std::string>> https_get(net::resolver* dns, std::string host, std::string path,
                                                 const net::tls_context* ctx, std::chrono::milliseconds timeout) {
    if (!dns || !ctx)
        co_return unexpected(std::string("no resolver or TLS context"));
    auto ta = dns->resolve_a(host);
    auto a = co_await std::move(ta);
    if (!a || a.value().empty())
        co_return unexpected(fmt::format("{} has no address", host));
    net::address addr = a.value().front();
    addr.set_port(443);
    auto tc = net::connect_tcp(addr, timeout);
    auto conn = co_await std::move(tc);
    if (!conn)
        co_return unexpected(fmt::format("connect to {}: {}", addr.to_string(), conn.error().message()));
    net::tls_stream::options to;
    to.sni_host = host;
    net::tls_stream tls(std::move(conn.value()), *ctx, std::move(to));
    const io_options io{.timeout = timeout};
    auto th = tls.handshake(io);
    auto h = co_await std::move(th);
    if (!h)
        co_return unexpected(fmt::format("TLS with {}: {}", host, h.error().message()));
    const std::string req = fmt::format("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: ringway\r\n\r\n",
                                        path, host);
    auto tw = tls.write_all(req.data(), req.size(), io);
    auto w = co_await std::move(tw);
    if (!w)
        co_return unexpected(fmt::format("sending to {}: {}", host, w.error().message()));
    std::string resp;
    char buf[16384];
    for (;;) {
        auto tr = tls.read(buf, sizeof buf, io);
        auto r = co_await std::move(tr);
        if (!r)
            co_return unexpected(fmt::format("reading from {}: {}", host, r.error().message()));
        if (r.value() == 0)
            break;
        resp.append(buf, r.value());
        if (resp.size() > k_max_policy_bytes + 16384)
            co_return unexpected(fmt::format("{}: the answer is longer than 64 KiB", host));
    }
    const size_t head_end = resp.find("\r\n\r\n");
    if (head_end == std::string::npos)
        co_return unexpected(fmt::format("{}: not an HTTP answer", host));
    const std::string head = resp.substr(0, head_end);
    std::string body = resp.substr(head_end + 4);
    // "HTTP/1.1 200 OK"; a redirect is not followed (RFC 8461 3.3).
    if (!head.starts_with("HTTP/1.") || head.size() < 12 || head.substr(9, 3) != "200")
        co_return unexpected(fmt::format("{}: {}", host, head.substr(0, std::min<size_t>(head.find('\r'), 80))));
    const std::string lh = lower(head);
    if (lh.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
        std::string out;
        size_t pos = 0;
        for (;;) {
            const size_t eol = body.find("\r\n", pos);
            if (eol == std::string::npos)
                co_return unexpected(fmt::format("{}: a broken chunked body", host));
            size_t len = 0;
            size_t i = pos;
            for (; i < eol && std::isxdigit(uint8_t(body[i])); ++i) {
                len = len * 16 + size_t(std::isdigit(uint8_t(body[i])) ? body[i] - '0' : (std::tolower(body[i]) - 'a' + 10));
                if (len > k_max_policy_bytes)
                    co_return unexpected(fmt::format("{}: the policy is longer than 64 KiB", host));
            }
            if (i == pos)
                co_return unexpected(fmt::format("{}: a broken chunked body", host));
            if (len == 0)
                break;
            if (eol + 2 + len > body.size())
                co_return unexpected(fmt::format("{}: a cut chunked body", host));
            out.append(body, eol + 2, len);
            pos = eol + 2 + len + 2;
        }
        body = std::move(out);
    }
    if (body.size() > k_max_policy_bytes)
        co_return unexpected(fmt::format("{}: the policy is longer than 64 KiB", host));
    co_return body;
}

}  // namespace rw::mta::delivery::sts
