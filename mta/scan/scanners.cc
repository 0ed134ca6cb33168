#include "mta/scan/scanners.hh"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/reactor/io.hh"

namespace rw::mta::scan {

namespace {

constexpr size_t k_max_answer = 1 << 20;  // rspamd's JSON; clamd's line is short

using clock = std::chrono::steady_clock;

std::chrono::microseconds since(clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - t0);
}

// A header value as rspamd may be given it: no line breaks or controls.
std::string header_value(std::string_view v) {
    std::string out;
    for (char c : v.substr(0, 1000))
        out += uint8_t(c) < 0x20 || c == 0x7f ? ' ' : c;
    return out;
}

// Idle scanner connections of this core, by endpoint: clamd sessions
// (IDSESSION) between messages, and rspamd connections when rspamd keeps
// them open. Taken newest first; one idle longer than k_max_idle (below
// clamd's default IdleTimeout of 30 s) or readable while idle (the peer
// closed it, or sent what nobody asked for) is closed instead.
constexpr auto k_max_idle = std::chrono::seconds(5);
constexpr size_t k_max_pooled = 32;  // per endpoint and core
struct pooled {
    net::tcp_stream s;
    clock::time_point since;
};
thread_local std::unordered_map<std::string, std::vector<pooled>> t_idle;

std::optional<net::tcp_stream> take_idle(const std::string& key) {
    auto it = t_idle.find(key);
    if (it == t_idle.end())
        return std::nullopt;
    auto& v = it->second;
    while (!v.empty()) {
        pooled p = std::move(v.back());
        v.pop_back();
        if (clock::now() - p.since > k_max_idle)
            continue;  // closed as p goes
        pollfd pfd{p.s.fd(), POLLIN | POLLRDHUP, 0};
        if (::poll(&pfd, 1, 0) != 0)
            continue;
        return std::move(p.s);
    }
    return std::nullopt;
}

void put_idle(const std::string& key, net::tcp_stream s) {
    auto& v = t_idle[key];
    // Oldest first out when full: they are the likeliest to have expired.
    if (v.size() >= k_max_pooled)
        v.erase(v.begin());
    v.push_back({std::move(s), clock::now()});
}

// "stream: OK" from a session's "1: stream: OK": the request id dropped.
std::string_view without_id(std::string_view line) {
    size_t i = 0;
    while (i < line.size() && line[i] >= '0' && line[i] <= '9')
        ++i;
    if (i > 0 && line.substr(i).starts_with(": "))
        return line.substr(i + 2);
    return line;
}

}  // namespace

size_t idle_scanner_connections() {
    size_t n = 0;
    for (const auto& [k, v] : t_idle)
        n += v.size();
    return n;
}

task<result<net::tcp_stream>> connect_endpoint(const endpoint& e, std::chrono::milliseconds timeout) {
    if (e.path.empty()) {
        task<result<net::tcp_stream>> t = net::connect_tcp(e.address, timeout);
        co_return co_await std::move(t);
    }
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        co_return unexpected(sys_error{errno});
    net::tcp_stream s(fd);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (e.path.size() >= sizeof a.sun_path)
        co_return unexpected(sys_error{ENAMETOOLONG});
    std::memcpy(a.sun_path, e.path.data(), e.path.size());
    auto op = io::connect(fd, reinterpret_cast<const sockaddr*>(&a), socklen_t(sizeof a), {.timeout = timeout});
    int r = co_await op;
    if (r < 0)
        co_return unexpected(sys_error{-r});
    co_return std::move(s);
}


std::optional<endpoint> endpoint::parse(std::string_view s) {
    endpoint e;
    if (s.starts_with('/')) {
        if (s.size() >= sizeof(sockaddr_un::sun_path))
            return std::nullopt;
        e.path = std::string(s);
        return e;
    }
    auto a = net::address::parse_host_port(s);
    if (!a)
        return std::nullopt;
    e.address = *a;
    return e;
}

std::string endpoint::to_string() const { return path.empty() ? address.to_string() : path; }

std::string_view to_string(status s) noexcept {
    switch (s) {
    case status::none: return "none";
    case status::clean: return "clean";
    case status::infected: return "infected";
    case status::scanned: return "scanned";
    case status::failed: return "failed";
    case status::skipped: return "skipped";
    }
    return "?";
}

void parse_clamd(std::string_view line, av_result& r) {
    while (!line.empty() && (line.back() == '\0' || line.back() == '\n' || line.back() == '\r'))
        line.remove_suffix(1);
    // "stream: OK", "stream: Eicar-Signature FOUND", "INSTREAM size limit exceeded. ERROR"
    std::string_view rest = line;
    if (rest.starts_with("stream: "))
        rest.remove_prefix(8);
    if (rest == "OK") {
        r.st = status::clean;
        return;
    }
    if (rest.ends_with(" FOUND") && rest.size() > 6) {
        r.st = status::infected;
        r.virus = std::string(rest.substr(0, rest.size() - 6));
        for (char& c : r.virus)
            if (uint8_t(c) < 0x20 || uint8_t(c) > 0x7e)
                c = '?';
        return;
    }
    r.st = status::failed;
    r.why = fmt::format("clamd said: {}", header_value(line.substr(0, 200)));
}

void parse_rspamd(std::string_view body, spam_result& r) {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("action") || !j["action"].is_string() ||
        !j.contains("score") || !j["score"].is_number()) {
        r.st = status::failed;
        r.why = fmt::format("rspamd's answer is not a /checkv2 result: {}", header_value(body.substr(0, 120)));
        return;
    }
    r.st = status::scanned;
    r.action = j["action"].get<std::string>();
    r.score = j["score"].get<double>();
    if (j.contains("required_score") && j["required_score"].is_number())
        r.required = j["required_score"].get<double>();
    std::vector<std::pair<double, std::string>> syms;
    if (j.contains("symbols") && j["symbols"].is_object())
        for (const auto& [name, v] : j["symbols"].items()) {
            double s = v.is_object() && v.contains("score") && v["score"].is_number() ? v["score"].get<double>() : 0;
            syms.emplace_back(s, header_value(name));
        }
    std::sort(syms.begin(), syms.end(), [](const auto& a, const auto& b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    for (size_t i = 0; i < syms.size() && i < 32; ++i)
        r.symbols.push_back(std::move(syms[i].second));
}

struct job::stream {
    bool clamd = true;
    const endpoint* where = nullptr;
    std::chrono::milliseconds timeout{0};
    uint64_t max_size = 0;
    net::tcp_stream s;
    enum class state { idle, open, done } st = state::idle;
    uint64_t sent = 0;
    std::string buf;
    clock::time_point t0{};
    std::string key;  // in the idle pool
};

job::job(const clamd_options* clamd, const rspamd_options* rspamd, message_info info)
    : _info(std::move(info)), _co(clamd), _ro(rspamd) {
    if (clamd) {
        _clamd = std::make_unique<stream>();
        _clamd->clamd = true;
        _clamd->where = &clamd->where;
        _clamd->timeout = clamd->timeout;
        _clamd->max_size = clamd->max_size;
    }
    if (rspamd) {
        _rspamd = std::make_unique<stream>();
        _rspamd->clamd = false;
        _rspamd->where = &rspamd->where;
        _rspamd->timeout = rspamd->timeout;
        _rspamd->max_size = rspamd->max_size;
    }
}

job::~job() = default;

task<bool> job::open(stream& s) {
    s.t0 = clock::now();
    s.key = fmt::format("{}:{}", s.clamd ? "clamd" : "rspamd", s.where->to_string());
    auto fail = [&](std::string why) {
        s.st = stream::state::done;
        if (s.clamd) {
            av.st = status::failed;
            av.why = std::move(why);
        } else {
            spam.st = status::failed;
            spam.why = std::move(why);
        }
    };
    bool fresh = true;
    if (auto idle = take_idle(s.key)) {
        s.s = std::move(*idle);
        fresh = false;
    } else {
        task<result<net::tcp_stream>> t = connect_endpoint(*s.where, s.timeout);
        auto c = co_await std::move(t);
        if (!c) {
            fail(fmt::format("connect to {} failed: {}", s.where->to_string(), c.error().message()));
            co_return false;
        }
        s.s = std::move(c.value());
        if (s.where->path.empty())
            s.s.set_nodelay(true);
    }
    (s.clamd ? av.reused : spam.reused) = !fresh;
    if (s.clamd) {
        // A session, so that the connection serves the next message too.
        s.buf.clear();
        if (fresh)
            s.buf.append("zIDSESSION\0", 11);
        s.buf.append("zINSTREAM\0", 10);
    } else {
        s.buf = "POST /checkv2 HTTP/1.1\r\nHost: rspamd\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n";
        auto h = [&](std::string_view name, std::string_view v) {
            if (!v.empty())
                s.buf += fmt::format("{}: {}\r\n", name, header_value(v));
        };
        h("IP", _info.ip);
        h("Helo", _info.helo);
        h("From", _info.from);
        for (size_t i = 0; i < _info.rcpts.size() && i < 1000; ++i)
            h("Rcpt", _info.rcpts[i]);
        h("Hostname", _info.hostname);
        h("User", _info.user);
        s.buf += "\r\n";
    }
    s.st = stream::state::open;
    co_return true;
}

task<void> job::feed_one(stream& s, std::string_view piece) {
    if (s.st == stream::state::done || piece.empty())
        co_return;
    if (s.st == stream::state::idle) {
        bool ok = co_await open(s);
        if (!ok)
            co_return;
    } else {
        s.buf.clear();
    }
    if (s.sent + piece.size() > s.max_size) {
        s.st = stream::state::done;
        s.s.close();
        std::string why = fmt::format("larger than its max_size ({} bytes): not scanned", s.max_size);
        if (s.clamd) {
            av.st = status::skipped;
            av.why = std::move(why);
        } else {
            spam.st = status::skipped;
            spam.why = std::move(why);
        }
        co_return;
    }
    if (s.clamd) {
        const uint32_t n = uint32_t(piece.size());
        const char len[4] = {char(n >> 24), char(n >> 16), char(n >> 8), char(n)};
        s.buf.append(len, 4);
        s.buf += piece;
    } else {
        s.buf += fmt::format("{:x}\r\n", piece.size());
        s.buf += piece;
        s.buf += "\r\n";
    }
    s.sent += piece.size();
    auto w = s.s.send_all(s.buf.data(), s.buf.size(), {.timeout = s.timeout});
    int r = co_await w;
    if (r < 0) {
        s.st = stream::state::done;
        s.s.close();
        std::string why = fmt::format("sending to {} failed: {}", s.where->to_string(),
                                      r == -ETIMEDOUT || r == -ECANCELED ? std::string("timed out")
                                                                         : std::string(std::strerror(-r)));
        if (s.clamd) {
            av.st = status::failed;
            av.why = std::move(why);
        } else {
            spam.st = status::failed;
            spam.why = std::move(why);
        }
    }
}

task<void> job::feed(std::string_view piece) {
    if (_clamd) {
        task<void> t = feed_one(*_clamd, piece);
        co_await std::move(t);
    }
    if (_rspamd) {
        task<void> t = feed_one(*_rspamd, piece);
        co_await std::move(t);
    }
}

task<void> job::finish() {
    // Both ends first, so the scanners work at the same time; then the answers.
    stream* all[2] = {_clamd.get(), _rspamd.get()};
    for (stream* s : all) {
        if (!s || s->st != stream::state::open)
            continue;
        if (s->clamd)
            s->buf.assign(4, '\0');
        else
            s->buf = "0\r\n\r\n";
        auto w = s->s.send_all(s->buf.data(), s->buf.size(), {.timeout = s->timeout});
        int r = co_await w;
        if (r < 0) {
            s->st = stream::state::done;
            (s->clamd ? av.why : spam.why) = fmt::format("sending to {} failed", s->where->to_string());
            if (s->clamd)
                av.st = status::failed;
            else
                spam.st = status::failed;
        }
    }
    for (stream* s : all) {
        if (!s || s->st != stream::state::open)
            continue;
        std::string in;
        const auto deadline = clock::now() + s->timeout;
        std::string why;
        bool complete = false;
        while (in.size() < k_max_answer) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
            if (left.count() <= 0) {
                why = "no answer in time";
                break;
            }
            char b[4096];
            auto rd = s->s.recv(b, sizeof b, {.timeout = left});
            int n = co_await rd;
            if (n == 0) {
                complete = true;
                break;
            }
            if (n < 0) {
                why = n == -ETIMEDOUT || n == -ECANCELED ? "no answer in time" : std::strerror(-n);
                break;
            }
            in.append(b, size_t(n));
            if (s->clamd && in.find('\0') != std::string::npos) {
                complete = true;
                break;
            }
            if (!s->clamd) {
                // Headers, then Content-Length bytes (rspamd closes after, too).
                size_t he = in.find("\r\n\r\n");
                if (he != std::string::npos) {
                    std::string head = in.substr(0, he);
                    for (char& c : head)
                        c = char(std::tolower(uint8_t(c)));
                    size_t cl = head.find("content-length:");
                    if (cl != std::string::npos &&
                        in.size() - he - 4 >= size_t(std::strtoull(head.c_str() + cl + 15, nullptr, 10))) {
                        complete = true;
                        break;
                    }
                }
            }
        }
        s->st = stream::state::done;
        if (s->clamd) {
            av.took = since(s->t0);
            if (!complete || in.empty()) {
                av.st = status::failed;
                av.why = fmt::format("clamd at {}: {}", s->where->to_string(), why.empty() ? "closed without an answer" : why);
            } else {
                const size_t end = in.find('\0');
                parse_clamd(without_id(std::string_view(in).substr(0, end)), av);
                // Exactly one answer and a verdict: the session serves the
                // next message. (An error ends clamd's session anyway.)
                if (end != std::string::npos && end + 1 == in.size() &&
                    (av.st == status::clean || av.st == status::infected))
                    put_idle(s->key, std::move(s->s));
            }
        } else {
            spam.took = since(s->t0);
            size_t he = in.find("\r\n\r\n");
            if (!complete || he == std::string::npos) {
                spam.st = status::failed;
                spam.why = fmt::format("rspamd at {}: {}", s->where->to_string(), why.empty() ? "incomplete answer" : why);
            } else if (!in.starts_with("HTTP/1.1 200") && !in.starts_with("HTTP/1.0 200")) {
                spam.st = status::failed;
                spam.why = fmt::format("rspamd at {} said: {}", s->where->to_string(),
                                       header_value(std::string_view(in).substr(0, std::min(in.find("\r\n"), size_t(120)))));
            } else {
                parse_rspamd(std::string_view(in).substr(he + 4), spam);
                // Kept when rspamd keeps it (HTTP/1.1 without Connection:
                // close; Debian 12's rspamd 3.4 closes after each answer)
                // and the answer was exactly its Content-Length.
                std::string head = in.substr(0, he);
                for (char& c : head)
                    c = char(std::tolower(uint8_t(c)));
                const size_t cl = head.find("content-length:");
                if (spam.st == status::scanned && in.starts_with("HTTP/1.1") &&
                    head.find("connection: close") == std::string::npos && cl != std::string::npos &&
                    in.size() - he - 4 == size_t(std::strtoull(head.c_str() + cl + 15, nullptr, 10)))
                    put_idle(s->key, std::move(s->s));
            }
        }
        s->s.close();
    }
}

}  // namespace rw::mta::scan
