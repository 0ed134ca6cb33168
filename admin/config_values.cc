// Value parsers of the configuration (see config_values.hh).
#include "admin/config_values.hh"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <limits>

#include <fmt/format.h>

namespace rw::admin::detail {

std::string join(key_list l) {
    std::string out;
    for (auto k : l) {
        if (!out.empty())
            out += ", ";
        out += k;
    }
    return out;
}

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

// The allowed word closest to a misspelt one, if it is close enough to be a
// plausible typo ("prot" -> "port").
std::optional<std::string_view> closest(std::string_view word, key_list allowed) {
    std::optional<std::string_view> best;
    size_t best_d = std::min<size_t>(3, word.size());
    for (auto a : allowed) {
        size_t d = edit_distance(word, a);
        if (d < best_d) {
            best_d = d;
            best = a;
        }
    }
    return best;
}

// A value echoed back in a message: quoted, escaped, cut short.
std::string quote(std::string_view s) {
    std::string out = "\"";
    size_t chars = 0;
    for (unsigned char c : s) {
        bool continuation = (c & 0xC0) == 0x80;
        if (!continuation && ++chars > k_max_quoted_chars) {
            out += "...";
            break;
        }
        if (c == '"' || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c < 0x20 || c == 0x7f) {
            out += fmt::format("\\u{:04X}", unsigned(c));
        } else {
            out += char(c);
        }
    }
    out += '"';
    return out;
}

std::string quote_list(key_list l) {
    std::string out;
    for (auto k : l) {
        if (!out.empty())
            out += ", ";
        out += quote(k);
    }
    return out;
}

// What a node holds, for "expected X, got Y". Strings are shown quoted, as
// written; other kinds are named, with the value where it is short.
std::string format_size(uint64_t b) {
    if (b != 0 && b % k_tib == 0) return fmt::format("{}T", b / k_tib);
    if (b != 0 && b % k_gib == 0) return fmt::format("{}G", b / k_gib);
    if (b != 0 && b % k_mib == 0) return fmt::format("{}M", b / k_mib);
    if (b != 0 && b % k_kib == 0) return fmt::format("{}K", b / k_kib);
    return fmt::format("{}", b);
}

char lower(char c) {
    return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
}

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        c = lower(c);
    return out;
}

// "1G", "512M", "64K", "1T", "4096"; units are powers of 1024, case does not
// matter, and "KB"/"KiB" are read as "K" (and so on).
std::optional<uint64_t> parse_size(std::string_view s) {
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc() || p == s.data())
        return std::nullopt;
    std::string unit = to_lower(std::string_view(p, size_t(s.data() + s.size() - p)));
    uint64_t mult = 0;
    if (unit.empty() || unit == "b") {
        mult = 1;
    } else {
        switch (unit[0]) {
        case 'k': mult = k_kib; break;
        case 'm': mult = k_mib; break;
        case 'g': mult = k_gib; break;
        case 't': mult = k_tib; break;
        default: return std::nullopt;
        }
        std::string_view rest = std::string_view(unit).substr(1);
        if (!rest.empty() && rest != "b" && rest != "ib")
            return std::nullopt;
    }
    if (n > std::numeric_limits<uint64_t>::max() / mult)
        return std::nullopt;
    return n * mult;
}

// Why a domain name is not one (RFC 1035 2.3.1 as relaxed by RFC 1123 2.1:
// labels of letters, digits and hyphens, 1..63 characters, 253 in all), or
// nothing if it is fine.
std::optional<std::string> domain_problem(std::string_view d) {
    if (d.empty())
        return "empty";
    if (d.size() > 253)
        return fmt::format("{} characters long (at most 253)", d.size());
    if (d.back() == '.')
        return "ends with a dot";
    size_t start = 0;
    std::string_view last;
    while (start <= d.size()) {
        size_t dot = d.find('.', start);
        if (dot == std::string_view::npos)
            dot = d.size();
        std::string_view label = d.substr(start, dot - start);
        if (label.empty())
            return "has an empty label";
        if (label.size() > 63)
            return fmt::format("has a label of {} characters (at most 63)", label.size());
        for (char c : label) {
            if (static_cast<unsigned char>(c) >= 0x80)
                return "has non-ASCII characters (write an internationalised name in its xn-- form)";
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
            if (!ok)
                return fmt::format("has the character {}", quote(std::string_view(&c, 1)));
        }
        if (label.front() == '-' || label.back() == '-')
            return "has a label that starts or ends with \"-\"";
        last = label;
        start = dot + 1;
    }
    if (std::all_of(last.begin(), last.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return "ends in a numeric label (an IP address is not a domain name)";
    return std::nullopt;
}

// "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128).
// On failure, `why` says what is wrong.
std::optional<ip_network> parse_network(std::string_view s, std::string& why) {
    size_t slash = s.find('/');
    std::string ip(s.substr(0, slash));
    unsigned char bytes[16] = {};
    int family = AF_INET;
    unsigned bits = 32;
    if (inet_pton(AF_INET, ip.c_str(), bytes) != 1) {
        family = AF_INET6;
        bits = 128;
        if (inet_pton(AF_INET6, ip.c_str(), bytes) != 1) {
            why = fmt::format("{} is not an IP address", quote(ip));
            return std::nullopt;
        }
    }
    unsigned len = bits;
    if (slash != std::string_view::npos) {
        std::string_view ps = s.substr(slash + 1);
        auto [p, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), len);
        if (ps.empty() || ec != std::errc() || p != ps.data() + ps.size()) {
            why = fmt::format("the prefix length {} is not a number", quote(ps));
            return std::nullopt;
        }
        if (len > bits) {
            why = fmt::format("the prefix length {} is too long for IPv{} (at most {})", len,
                              family == AF_INET ? 4 : 6, bits);
            return std::nullopt;
        }
    }
    if (len == 0) {
        why = "a /0 network relays for everyone (an open relay)";
        return std::nullopt;
    }
    unsigned char masked[16];
    std::memcpy(masked, bytes, sizeof masked);
    for (unsigned i = 0; i < bits / 8; ++i) {
        unsigned keep = len > i * 8 ? std::min(8u, len - i * 8) : 0;
        masked[i] &= static_cast<unsigned char>(keep == 0 ? 0 : 0xFF << (8 - keep));
    }
    char text[INET6_ADDRSTRLEN] = "";
    inet_ntop(family, masked, text, sizeof text);
    if (std::memcmp(masked, bytes, bits / 8) != 0) {
        why = fmt::format("host bits are set (did you mean \"{}/{}\"?)", text, len);
        return std::nullopt;
    }
    return ip_network{text, len};
}

// A resolver as "IP", "IP:port", "[v6]:port"; canonical "IP:port" back.
std::optional<std::string> parse_dns_server(std::string_view s) {
    if (auto a = net::address::parse_host_port(s)) {
        if (a->port() == 0)
            return std::nullopt;
        return a->to_string();
    }
    if (auto a = net::address::parse(s, 53))
        return a->to_string();
    return std::nullopt;
}

bool is_wildcard(const std::string& ip) {
    return ip == "0.0.0.0" || ip == "::";
}

std::string system_hostname() {
    char buf[256] = "";
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0')
        return "localhost";
    return buf;
}

std::optional<std::pair<std::string, uint16_t>> next_hop_of(std::string_view s, uint16_t default_port) {
    if (s.empty() || s.size() > 300)
        return std::nullopt;
    if (auto a = net::address::parse_host_port(s)) {
        if (a->port() == 0)
            return std::nullopt;
        return std::make_pair(a->ip_string(), a->port());
    }
    if (auto a = net::address::parse(s, default_port))
        return std::make_pair(a->ip_string(), default_port);
    std::string_view host = s;
    uint16_t port = default_port;
    size_t colon = s.rfind(':');
    if (colon != std::string_view::npos) {
        host = s.substr(0, colon);
        std::string_view p = s.substr(colon + 1);
        unsigned v = 0;
        auto [e, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
        if (ec != std::errc() || e != p.data() + p.size() || v == 0 || v > 65535)
            return std::nullopt;
        port = uint16_t(v);
    }
    if (domain_problem(host))
        return std::nullopt;
    return std::make_pair(to_lower(host), port);
}

}  // namespace rw::admin::detail
