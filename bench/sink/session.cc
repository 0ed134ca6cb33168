// The sink's SMTP sessions. A session owns its socket, a 32 KiB receive
// buffer and the transaction in progress; it runs on the core that accepted
// it and writes only that core's core_state.
//
// Speed comes from pipelining (RFC 2920): step() parses every complete
// command in the buffer synchronously, appending replies to _out, and the
// whole batch goes out in one send before the next receive. DATA is a small
// state machine over the received bytes (dot-unstuffing, RFC 5321 4.5.2)
// that streams the body through digest64 without keeping it, except in
// --save-dir mode. Anything that must wait (a greylist lookup on core 0, an
// injected delay, STARTTLS, a fault after the final dot) makes step()
// return an event that run() awaits before parsing on.
#include "bench/sink/session.hh"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <unistd.h>

#include "bench/lib/digest.hh"
#include "bench/lib/mark.hh"
#include "bench/sink/sink.hh"
#include "runtime/net/tcp.hh"
#include "runtime/net/tls.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/sync.hh"
#include "runtime/smp/smp.hh"

namespace rw::bench::sink {

namespace {

constexpr size_t k_buf_bytes = 32 * 1024;
constexpr size_t k_max_line_bytes = 4096;        // command line, without CRLF
constexpr size_t k_max_header_bytes = 1 << 20;  // beyond: the message counts as unmarked
constexpr size_t k_max_rcpts = 10000;           // per transaction
constexpr unsigned k_max_errors = 20;
constexpr uint64_t k_endless_max_bytes = 10ull << 20;
constexpr std::chrono::minutes k_stall_max{10};
constexpr uint64_t k_slow_default_bps = 16 * 1024;  // slow@ without --slow-read
constexpr std::chrono::seconds k_greylist_default{2};
constexpr std::chrono::milliseconds k_slow_tick{100};
constexpr std::chrono::milliseconds k_drain{1000};

uint64_t next_random(uint64_t& s) {
    // splitmix64
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

bool roll(core_state& cs, double p) {
    if (p <= 0)
        return false;
    if (p >= 1)
        return true;
    return double(next_random(cs.rng) >> 11) * 0x1.0p-53 < p;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size())
        return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i]))
            return false;
    return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

// "FROM:<a@b> SIZE=10" -> "a@b", params "SIZE=10". RFC 5321 4.1.2; a bare
// address without brackets and a space after the colon are tolerated, as
// most servers do. A source route (<@x,@y:a@b>) is dropped.
std::optional<std::string_view> parse_path(std::string_view args, std::string_view keyword,
                                           std::string_view& params) {
    if (!istarts_with(args, keyword))
        return std::nullopt;
    args = trim(args.substr(keyword.size()));
    std::string_view path;
    if (!args.empty() && args.front() == '<') {
        size_t close = args.find('>');
        if (close == std::string_view::npos)
            return std::nullopt;
        path = args.substr(1, close - 1);
        params = trim(args.substr(close + 1));
    } else {
        size_t sp = args.find(' ');
        path = args.substr(0, sp);
        params = sp == std::string_view::npos ? std::string_view() : trim(args.substr(sp + 1));
        if (path.empty())
            return std::nullopt;
    }
    for (char c : path)
        if (static_cast<unsigned char>(c) <= ' ' || c == '<' || c == '>')
            return std::nullopt;
    if (!path.empty() && path.front() == '@') {
        size_t colon = path.find(':');
        if (colon == std::string_view::npos)
            return std::nullopt;
        path = path.substr(colon + 1);
    }
    return path;
}

// A recipient whose local part names a misbehaviour ("tempfail@x",
// "delay-500+tag@x").
enum class magic : uint8_t {
    none,
    tempfail,
    permfail,
    greylist,
    data_tempfail,
    data_permfail,
    disconnect,
    garbage,
    endless,
    stall,
    delay,
    slow
};

magic parse_magic(std::string_view addr, uint32_t& delay_ms) {
    std::string_view local = addr.substr(0, addr.rfind('@'));
    local = local.substr(0, local.find('+'));
    static constexpr std::pair<std::string_view, magic> table[] = {
        {"tempfail", magic::tempfail},
        {"permfail", magic::permfail},
        {"greylist", magic::greylist},
        {"data-tempfail", magic::data_tempfail},
        {"data-permfail", magic::data_permfail},
        {"disconnect", magic::disconnect},
        {"garbage", magic::garbage},
        {"endless", magic::endless},
        {"stall", magic::stall},
        {"slow", magic::slow},
    };
    for (const auto& [name, m] : table)
        if (local == name)
            return m;
    constexpr std::string_view delay = "delay-";
    if (local.size() > delay.size() && local.substr(0, delay.size()) == delay) {
        std::string_view n = local.substr(delay.size());
        uint32_t v = 0;
        auto [p, ec] = std::from_chars(n.data(), n.data() + n.size(), v);
        if (ec == std::errc() && p == n.data() + n.size() && v <= 600'000) {
            delay_ms = v;
            return magic::delay;
        }
    }
    return magic::none;
}

std::string sanitise(std::string_view id) {
    std::string s(id);
    for (char& c : s)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '-' || c == '_'))
            c = '_';
    if (s.empty() || s[0] == '.')
        s.insert(s.begin(), '_');
    return s;
}

bool write_file(const std::string& path, std::string_view data) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f)
        return false;
    bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
    ok = std::fclose(f) == 0 && ok;
    return ok;
}

void count_fault(core_state& cs, fault f) { ++cs.faults[size_t(f)]; }

// Runs on core 0: how long (rounded up to seconds) the triplet must still
// wait; 0 = pass.
uint64_t greylist_check(const std::string& key, int64_t period_ms) {
    auto& table = g.cores[0]->greylist;
    auto now = std::chrono::steady_clock::now();
    auto [it, fresh] = table.try_emplace(key, now);
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - it->second).count();
    if (!fresh && waited >= period_ms)
        return 0;
    int64_t left_ms = period_ms - (fresh ? 0 : waited);
    return uint64_t(std::max<int64_t>(1, (left_ms + 999) / 1000));
}

}  // namespace

class session {
public:
    session(int fd, net::address peer, core_state* cs);
    ~session();
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    task<void> run();
    // Shutdown: the current and every later operation ends with ECANCELED.
    void cancel() noexcept { _cancel.cancel(); }

private:
    enum class ev : uint8_t {
        more,        // go on parsing
        need_input,  // the buffer is used up
        close,       // send what is queued, then close
        drop,        // close without sending anything more
        greylist,    // _gl_key / _gl_rcpt wait for core 0's verdict
        data_end,    // the final dot needs a delay or a fault: run() does it
        starttls,
    };
    enum class dstate : uint8_t { line_start, mid, dot, dot_cr };
    enum class outcome : uint8_t { accept, too_big, tempfail, permfail, garbage, endless, stall };

    struct transaction {
        bool active = false;
        std::string from;
        std::vector<std::string> rcpts;
        bool data_tempfail = false, data_permfail = false, disconnect = false, garbage = false, endless = false,
             stall = false, slow = false;
        uint32_t delay_ms = 0;
    };

    io_options io_opts(std::chrono::nanoseconds timeout) { return io_options{.timeout = timeout, .cancel = &_cancel}; }
    io_options io_opts() { return io_opts(g.opt.timeout); }

    ev step();
    ev command(std::string_view line);
    ev do_mail(std::string_view args);
    ev do_rcpt(std::string_view args);
    ev do_data(std::string_view args);
    void do_ehlo(std::string_view args, bool extended);
    void accept_rcpt(std::string rcpt, magic m, uint32_t delay_ms);
    ev end_of_data();
    void finish(outcome o);
    void accept_message();
    void save_message(uint64_t qid, const std::optional<mark>& m);
    ev error_reply(std::string_view line);
    void reset_transaction() { _txn = transaction{}; }

    void reply(std::string_view line) {
        ++_cs->replies[size_t(std::min(line[0] - '0', 5))];
        _out.append(line);
    }
    void fault_reply(fault f, std::string_view line) {
        count_fault(*_cs, f);
        if (line[0] == '4')
            ++_cs->fault_4xx;
        else if (line[0] == '5')
            ++_cs->fault_5xx;
        reply(line);
    }

    // DATA
    void start_data();
    size_t feed_data(const char* p, size_t n, bool& done);
    void emit(const char* p, size_t n);
    void header_append(const char* p, size_t n) {
        if (_hdr_overflow)
            return;
        if (_hdr.size() + n > k_max_header_bytes) {
            _hdr_overflow = true;
            return;
        }
        _hdr.append(p, n);
    }

    // Awaited paths.
    task<bool> flush();
    task<bool> send_raw(const char* p, size_t n);
    task<bool> pause(std::chrono::milliseconds d);
    task<bool> do_greylist();
    task<bool> do_data_end();
    task<bool> do_starttls();
    task<void> hold_until_closed(std::chrono::nanoseconds max);

    net::tcp_stream _tcp;
    std::unique_ptr<net::tls_stream> _tls;
    net::address _peer;
    std::string _peer_ip;
    core_state* _cs;
    uint64_t* _peer_count;
    cancel_token _cancel;

    std::unique_ptr<char[]> _buf;
    size_t _rpos = 0, _wpos = 0;
    std::string _out;
    bool _skip_line = false;  // discarding the rest of a too-long command line
    bool _in_data = false;
    unsigned _errors = 0;
    bool _helo = false;
    bool _greeted = false;  // sent EHLO or HELO at least once
    uint64_t _messages = 0;
    bool _slow_counted = false;

    transaction _txn;
    outcome _outcome = outcome::accept;
    std::chrono::milliseconds _data_delay{0};
    // Greylist request in flight.
    std::string _gl_key, _gl_rcpt;
    int64_t _gl_period_ms = 0;
    magic _gl_magic = magic::none;
    uint32_t _gl_delay_ms = 0;

    // DATA state
    dstate _ds = dstate::line_start;
    bool _in_body = false;
    size_t _hline_len = 0;
    char _hline_first = 0;
    bool _hdr_overflow = false;
    std::string _hdr;
    digest64 _digest;
    uint64_t _msg_bytes = 0;
    bool _saving = false;
    std::string _save;
};

session::session(int fd, net::address peer, core_state* cs)
    : _tcp(fd), _peer(peer), _peer_ip(peer.ip_string()), _cs(cs), _buf(new char[k_buf_bytes]) {
    _peer_count = &_cs->peers[_peer_ip];
    ++_cs->peer_connections[_peer_ip];
    _cs->sessions.insert(this);
    g.live_sessions.fetch_add(1);
    _saving = !g.opt.save_dir.empty();
}

session::~session() {
    _cs->sessions.erase(this);
    g.live_sessions.fetch_sub(1);
}

// ---- command parsing (synchronous) ----

session::ev session::step() {
    for (;;) {
        if (_in_data) {
            size_t avail = _wpos - _rpos;
            if (avail == 0)
                return ev::need_input;
            bool done = false;
            _rpos += feed_data(_buf.get() + _rpos, avail, done);
            if (_txn.disconnect) {
                // Some of the message has arrived: hang up without a word.
                count_fault(*_cs, fault::disconnect);
                return ev::drop;
            }
            if (!done)
                return ev::need_input;
            _in_data = false;
            ev e = end_of_data();
            if (e != ev::more)
                return e;
            continue;
        }
        const char* start = _buf.get() + _rpos;
        size_t avail = _wpos - _rpos;
        if (avail == 0)
            return ev::need_input;
        const char* nl = static_cast<const char*>(std::memchr(start, '\n', avail));
        if (_skip_line) {
            if (!nl) {
                _rpos = _wpos;
                return ev::need_input;
            }
            _rpos += size_t(nl - start) + 1;
            _skip_line = false;
            continue;
        }
        if (!nl) {
            if (avail <= k_max_line_bytes)
                return ev::need_input;
            _skip_line = true;
            _rpos = _wpos;
            ev e = error_reply("500 5.5.2 Line too long\r\n");
            return e == ev::more ? ev::need_input : e;
        }
        size_t len = size_t(nl - start);
        _rpos += len + 1;
        if (len > 0 && start[len - 1] == '\r')
            --len;
        ev e = len > k_max_line_bytes ? error_reply("500 5.5.2 Line too long\r\n")
                                      : command(std::string_view(start, len));
        if (e != ev::more)
            return e;
    }
}

session::ev session::error_reply(std::string_view line) {
    reply(line);
    if (++_errors >= k_max_errors) {
        reply(fmt::format("421 4.7.0 {} Error: too many errors\r\n", g.opt.hostname));
        return ev::close;
    }
    return ev::more;
}

session::ev session::command(std::string_view line) {
    line = trim(line);
    size_t sp = line.find(' ');
    std::string_view verb = line.substr(0, sp);
    std::string_view args = sp == std::string_view::npos ? std::string_view() : trim(line.substr(sp + 1));
    // RFC 5321 4.1.4: MAIL, RCPT and DATA first: they are the hot path.
    if (iequals(verb, "RCPT"))
        return do_rcpt(args);
    if (iequals(verb, "MAIL"))
        return do_mail(args);
    if (iequals(verb, "DATA"))
        return do_data(args);
    if (iequals(verb, "EHLO") || iequals(verb, "HELO")) {
        if (args.empty())
            return error_reply(
                fmt::format("501 5.5.4 Syntax: {} hostname\r\n", iequals(verb, "EHLO") ? "EHLO" : "HELO"));
        do_ehlo(args, iequals(verb, "EHLO"));
        return ev::more;
    }
    if (iequals(verb, "RSET")) {
        if (!args.empty())
            return error_reply("501 5.5.4 Syntax: RSET\r\n");
        reset_transaction();
        reply("250 2.0.0 Ok\r\n");
        return ev::more;
    }
    if (iequals(verb, "NOOP")) {
        reply("250 2.0.0 Ok\r\n");
        return ev::more;
    }
    if (iequals(verb, "QUIT")) {
        reply("221 2.0.0 Bye\r\n");
        return ev::close;
    }
    if (iequals(verb, "VRFY")) {
        if (args.empty())
            return error_reply("501 5.5.4 Syntax: VRFY address\r\n");
        reply("252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
        return ev::more;
    }
    if (iequals(verb, "HELP")) {
        reply("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY\r\n");
        return ev::more;
    }
    if (iequals(verb, "STARTTLS")) {
        if (!_cs->tls || _tls)
            return error_reply("502 5.5.1 Error: command not implemented\r\n");
        if (!args.empty())
            return error_reply("501 5.5.4 Syntax: STARTTLS\r\n");
        reply("220 2.0.0 Ready to start TLS\r\n");
        return ev::starttls;
    }
    // BDAT (RFC 3030) is not offered; neither are EXPN, AUTH, ETRN.
    if (iequals(verb, "BDAT") || iequals(verb, "EXPN") || iequals(verb, "AUTH") || iequals(verb, "ETRN"))
        return error_reply("502 5.5.1 Error: command not implemented\r\n");
    return error_reply("500 5.5.2 Error: command not recognized\r\n");
}

void session::do_ehlo(std::string_view args, bool extended) {
    reset_transaction();
    // The first greeting of each connection: which name each source uses.
    if (!_greeted) {
        _greeted = true;
        std::string_view name = args.substr(0, args.find(' '));
        ++_cs->helos[fmt::format("{} {}", _peer_ip, name)];
    }
    _helo = true;
    if (!extended) {
        reply(fmt::format("250 {}\r\n", g.opt.hostname));
        return;
    }
    // RFC 1869: one keyword per line, the last with a space.
    std::string r = fmt::format("250-{}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n",
                                g.opt.hostname, g.opt.max_size_bytes);
    if (_cs->tls && !_tls)
        r += "250-STARTTLS\r\n";
    r += "250 ENHANCEDSTATUSCODES\r\n";
    reply(r);
}

session::ev session::do_mail(std::string_view args) {
    if (!_helo)
        return error_reply("503 5.5.1 Error: send HELO/EHLO first\r\n");
    if (_txn.active)
        return error_reply("503 5.5.1 Error: nested MAIL command\r\n");
    std::string_view params;
    auto path = parse_path(args, "FROM:", params);
    if (!path)
        return error_reply("501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    // RFC 1870: refuse a declared size over the limit now.
    while (!params.empty()) {
        size_t sp = params.find(' ');
        std::string_view p = params.substr(0, sp);
        params = sp == std::string_view::npos ? std::string_view() : trim(params.substr(sp + 1));
        if (istarts_with(p, "SIZE=")) {
            uint64_t v = 0;
            std::string_view n = p.substr(5);
            auto [e, ec] = std::from_chars(n.data(), n.data() + n.size(), v);
            if (ec != std::errc() || e != n.data() + n.size())
                return error_reply("501 5.5.4 Syntax: bad SIZE parameter\r\n");
            if (v > g.opt.max_size_bytes) {
                reply("552 5.3.4 Error: message size exceeds fixed limit\r\n");
                return ev::more;
            }
        }
    }
    if (roll(*_cs, g.opt.reply_421)) {
        fault_reply(fault::reply_421,
                    fmt::format("421 4.3.2 {} Service not available, closing transmission channel\r\n",
                                g.opt.hostname));
        return ev::close;
    }
    _txn.active = true;
    _txn.from.assign(*path);
    ++_cs->transactions;
    reply("250 2.1.0 Ok\r\n");
    return ev::more;
}

session::ev session::do_rcpt(std::string_view args) {
    if (!_txn.active)
        return error_reply("503 5.5.1 Error: need MAIL command\r\n");
    std::string_view params;
    auto path = parse_path(args, "TO:", params);
    if (!path || path->empty())
        return error_reply("501 5.5.4 Syntax: RCPT TO:<address>\r\n");
    if (_txn.rcpts.size() >= k_max_rcpts) {
        reply("452 4.5.3 Error: too many recipients\r\n");
        return ev::more;
    }
    std::string rcpt(*path);
    for (char& c : rcpt)
        c = lower(c);
    uint32_t delay_ms = 0;
    magic m = parse_magic(rcpt, delay_ms);
    if (m == magic::tempfail || roll(*_cs, g.opt.rcpt_tempfail)) {
        fault_reply(fault::rcpt_tempfail, "451 4.3.0 Error: temporary failure (injected)\r\n");
        return ev::more;
    }
    if (m == magic::permfail || roll(*_cs, g.opt.rcpt_permfail)) {
        fault_reply(fault::rcpt_permfail, "550 5.1.1 Error: mailbox unavailable (injected)\r\n");
        return ev::more;
    }
    if (m == magic::greylist || g.opt.greylist.count() > 0) {
        auto period = g.opt.greylist.count() > 0 ? g.opt.greylist
                                                 : std::chrono::milliseconds(k_greylist_default);
        _gl_period_ms = period.count();
        std::string from(_txn.from);
        for (char& c : from)
            c = lower(c);
        _gl_key = fmt::format("{}\n{}\n{}", _peer_ip, from, rcpt);
        _gl_rcpt = std::move(rcpt);
        _gl_magic = m;
        _gl_delay_ms = delay_ms;
        return ev::greylist;
    }
    accept_rcpt(std::move(rcpt), m, delay_ms);
    return ev::more;
}

void session::accept_rcpt(std::string rcpt, magic m, uint32_t delay_ms) {
    switch (m) {
    case magic::data_tempfail: _txn.data_tempfail = true; break;
    case magic::data_permfail: _txn.data_permfail = true; break;
    case magic::disconnect: _txn.disconnect = true; break;
    case magic::garbage: _txn.garbage = true; break;
    case magic::endless: _txn.endless = true; break;
    case magic::stall: _txn.stall = true; break;
    case magic::slow: _txn.slow = true; break;
    case magic::delay: _txn.delay_ms = std::max(_txn.delay_ms, delay_ms); break;
    default: break;
    }
    _txn.rcpts.push_back(std::move(rcpt));
    reply("250 2.1.5 Ok\r\n");
}

session::ev session::do_data(std::string_view args) {
    if (!_txn.active)
        return error_reply("503 5.5.1 Error: need MAIL command\r\n");
    if (_txn.rcpts.empty())
        return error_reply("503 5.5.1 Error: need RCPT command\r\n");
    if (!args.empty())
        return error_reply("501 5.5.4 Syntax: DATA\r\n");
    if (roll(*_cs, g.opt.disconnect_in_data))
        _txn.disconnect = true;
    if (_txn.slow)
        count_fault(*_cs, fault::slow_read);
    reply("354 End data with <CR><LF>.<CR><LF>\r\n");
    start_data();
    return ev::more;
}

// ---- DATA ----

void session::start_data() {
    _in_data = true;
    _ds = dstate::line_start;
    _in_body = false;
    _hline_len = 0;
    _hline_first = 0;
    _hdr_overflow = false;
    _hdr.clear();
    _digest.reset();
    _msg_bytes = 0;
    _save.clear();
}

// Consumes up to n bytes of the DATA stream; done once the terminating
// <CRLF>.<CRLF> has been consumed (RFC 5321 4.1.1.4). A line that starts
// with a dot loses it (4.5.2). Returns the bytes consumed.
size_t session::feed_data(const char* p, size_t n, bool& done) {
    const char* const begin = p;
    const char* const end = p + n;
    while (p < end) {
        switch (_ds) {
        case dstate::line_start:
            if (*p == '.') {
                _ds = dstate::dot;
                ++p;
            } else {
                _ds = dstate::mid;
            }
            break;
        case dstate::dot:
            if (*p == '\r') {
                _ds = dstate::dot_cr;
                ++p;
            } else {
                _ds = dstate::mid;  // a stuffed dot: dropped
            }
            break;
        case dstate::dot_cr:
            if (*p == '\n') {
                done = true;
                return size_t(p + 1 - begin);
            }
            emit("\r", 1);  // ".\rX": the line was ".\r..." stuffed
            _ds = dstate::mid;
            break;
        case dstate::mid: {
            // Only a line that starts with a dot is special: emit every
            // other line in one span.
            const char* q = p;
            for (;;) {
                const char* nl = static_cast<const char*>(std::memchr(q, '\n', size_t(end - q)));
                if (!nl) {
                    q = end;
                    break;
                }
                q = nl + 1;
                if (q == end || *q == '.') {
                    _ds = dstate::line_start;
                    break;
                }
            }
            emit(p, size_t(q - p));
            p = q;
            break;
        }
        }
    }
    return n;
}

// The unstuffed message, in pieces: the header block (up to the blank
// line) is kept for find_mark; everything after the blank line is the body
// the mark's size and digest cover.
void session::emit(const char* p, size_t n) {
    _msg_bytes += n;
    if (_saving && _save.size() + n <= g.opt.max_size_bytes)
        _save.append(p, n);
    while (n > 0) {
        if (_in_body) {
            _digest.update(p, n);
            return;
        }
        const char* nl = static_cast<const char*>(std::memchr(p, '\n', n));
        size_t take = nl ? size_t(nl - p) + 1 : n;
        if (_hline_len == 0)
            _hline_first = *p;
        _hline_len += take;
        if (nl && (_hline_len == 1 || (_hline_len == 2 && _hline_first == '\r'))) {
            // The blank line: part of neither. Its CR may have arrived alone.
            if (take == 1 && _hline_len == 2 && !_hdr_overflow && !_hdr.empty())
                _hdr.pop_back();
            _in_body = true;
        } else {
            header_append(p, take);
        }
        if (nl)
            _hline_len = 0;
        p += take;
        n -= take;
    }
}

session::ev session::end_of_data() {
    const auto& o = g.opt;
    _outcome = outcome::accept;
    if (_msg_bytes > o.max_size_bytes)
        _outcome = outcome::too_big;
    else if (_txn.stall || roll(*_cs, o.stall))
        _outcome = outcome::stall;
    else if (_txn.endless || roll(*_cs, o.endless))
        _outcome = outcome::endless;
    else if (_txn.garbage || roll(*_cs, o.garbage))
        _outcome = outcome::garbage;
    else if (_txn.data_permfail || roll(*_cs, o.data_permfail))
        _outcome = outcome::permfail;
    else if (_txn.data_tempfail || roll(*_cs, o.data_tempfail))
        _outcome = outcome::tempfail;
    _data_delay = std::max(o.data_delay, std::chrono::milliseconds(_txn.delay_ms));
    if (_data_delay.count() > 0 || _outcome == outcome::stall || _outcome == outcome::endless ||
        _outcome == outcome::garbage)
        return ev::data_end;
    finish(_outcome);
    return ev::more;
}

// The reply to the final dot, for the outcomes that are a reply.
void session::finish(outcome o) {
    switch (o) {
    case outcome::accept: accept_message(); break;
    case outcome::too_big: reply("552 5.3.4 Error: message too large\r\n"); break;
    case outcome::tempfail:
        fault_reply(fault::data_tempfail, "451 4.3.0 Error: temporary failure (injected)\r\n");
        break;
    case outcome::permfail:
        fault_reply(fault::data_permfail, "554 5.6.0 Error: message rejected (injected)\r\n");
        break;
    default: RW_UNREACHABLE("finish() with a non-reply outcome");
    }
    reset_transaction();
}

void session::accept_message() {
    core_state& cs = *_cs;
    const auto& o = g.opt;
    // --lose: acknowledge and forget, as a server losing acknowledged mail
    // would; the message then shows up as missing against --expect.
    if (roll(cs, o.lose)) {
        count_fault(cs, fault::lose);
        uint64_t qid = ++cs.seq * o.cores + cs.index;
        reply(fmt::format("250 2.0.0 Ok: queued as {}\r\n", qid));
        return;
    }
    // --corrupt: as if one body byte had been altered on the way.
    bool altered = false;
    if (roll(cs, o.corrupt)) {
        count_fault(cs, fault::corrupt);
        _digest.update("x", 1);
        altered = true;
    }
    const unsigned copies = roll(cs, o.duplicate) ? 2 : 1;
    if (copies == 2)
        count_fault(cs, fault::duplicate);
    std::optional<mark> m;
    if (!_hdr_overflow)
        m = find_mark(_hdr);
    if (!m) {
        bump(cs.unmarked);
    } else if (!altered && _digest.length() == m->size && _digest.finish() == m->digest) {
        bump(cs.ok);
        if (m->sent_us > 0) {
            const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count();
            cs.latency.record(uint64_t(std::max<int64_t>(0, now_us - m->sent_us)) * 1000);
        }
    } else {
        bump(cs.corrupt);
        if (cs.corrupt_ids.size() < k_max_listed_ids)
            cs.corrupt_ids.push_back(m->id);
    }
    for (unsigned c = 0; m && c < copies; ++c) {
        for (const auto& r : _txn.rcpts) {
            std::string key;
            key.reserve(m->id.size() + 1 + r.size());
            key.append(m->id).push_back('\0');
            key.append(r);
            cs.records.push_back(std::move(key));
        }
    }
    bump(cs.received);
    bump(cs.recipients, _txn.rcpts.size());
    cs.bytes += _msg_bytes;
    ++*_peer_count;
    ++_messages;
    auto sec = size_t(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - g.start)
                          .count());
    if (cs.per_second.size() <= sec)
        cs.per_second.resize(sec + 1, 0);
    ++cs.per_second[sec];
    // Unique across cores without sharing a counter.
    uint64_t qid = ++cs.seq * g.opt.cores + cs.index;
    if (_saving)
        save_message(qid, m);
    reply(fmt::format("250 2.0.0 Ok: queued as {}\r\n", qid));
}

// --save-dir: plain blocking writes on the reactor thread. Slow, and meant
// for tests that look at a handful of messages, not for benchmarks.
void session::save_message(uint64_t qid, const std::optional<mark>& m) {
    std::string base = fmt::format("{}/{}-{}", g.opt.save_dir, qid, m ? sanitise(m->id) : std::string("nomark"));
    std::string env = fmt::format("MAIL FROM:<{}>\n", _txn.from);
    for (const auto& r : _txn.rcpts)
        env += fmt::format("RCPT TO:<{}>\n", r);
    if (!write_file(fmt::format("{}.eml", base), _save) || !write_file(fmt::format("{}.env", base), env))
        std::fprintf(stderr, "ringway-sink: cannot save %s: %s\n", base.c_str(), std::strerror(errno));
}

// ---- the connection ----

task<bool> session::send_raw(const char* p, size_t n) {
    if (_tls) {
        auto t = _tls->write_all(p, n, io_opts());
        auto r = co_await std::move(t);
        co_return bool(r);
    }
    auto op = _tcp.send_all(p, n, io_opts());
    int w = co_await op;
    co_return w >= 0;
}

task<bool> session::pause(std::chrono::milliseconds d) {
    auto op = io::sleep(d, &_cancel);
    int r = co_await op;
    co_return r == 0;
}

task<bool> session::flush() {
    if (_out.empty())
        co_return true;
    if (g.opt.delay.count() > 0) {
        count_fault(*_cs, fault::delay);
        auto p = pause(g.opt.delay);
        if (!co_await std::move(p))
            co_return false;
    }
    bool ok;
    if (_tls) {
        auto t = _tls->write_all(_out.data(), _out.size(), io_opts());
        auto r = co_await std::move(t);
        ok = bool(r);
    } else {
        auto op = _tcp.send_all(_out.data(), _out.size(), io_opts());
        ok = co_await op >= 0;
    }
    _out.clear();
    co_return ok;
}

task<bool> session::do_greylist() {
    auto fn = [key = _gl_key, period = _gl_period_ms]() -> uint64_t { return greylist_check(key, period); };
    auto op = rw::submit_to(0, std::move(fn));
    uint64_t left_s = co_await std::move(op);
    if (left_s > 0) {
        fault_reply(fault::greylist, fmt::format("450 4.7.1 Greylisted, try again in {} seconds\r\n", left_s));
    } else {
        accept_rcpt(std::move(_gl_rcpt), _gl_magic, _gl_delay_ms);
    }
    co_return true;
}

// Reads and discards until the client closes, max passes or shutdown.
task<void> session::hold_until_closed(std::chrono::nanoseconds max) {
    auto deadline = std::chrono::steady_clock::now() + max;
    for (;;) {
        auto left = deadline - std::chrono::steady_clock::now();
        if (left <= std::chrono::nanoseconds(0))
            co_return;
        int n;
        if (_tls) {
            auto t = _tls->read(_buf.get(), k_buf_bytes, io_opts(left));
            auto r = co_await std::move(t);
            n = r ? int(r.value()) : -1;
        } else {
            auto op = _tcp.recv(_buf.get(), k_buf_bytes, io_opts(left));
            n = co_await op;
        }
        if (n <= 0)
            co_return;
    }
}

// After the final dot: the injected delay, then the reply or misbehaviour.
// false = the connection ends.
task<bool> session::do_data_end() {
    if (_data_delay.count() > 0) {
        count_fault(*_cs, fault::data_delay);
        auto f = flush();
        if (!co_await std::move(f))
            co_return false;
        auto p = pause(_data_delay);
        if (!co_await std::move(p))
            co_return false;
    }
    switch (_outcome) {
    case outcome::stall: {
        count_fault(*_cs, fault::stall);
        auto f = flush();
        if (!co_await std::move(f))
            co_return false;
        auto h = hold_until_closed(k_stall_max);
        co_await std::move(h);
        co_return false;
    }
    case outcome::garbage: {
        count_fault(*_cs, fault::garbage);
        _out.append("hello there\r\n");
        auto f = flush();
        co_await std::move(f);
        co_return false;
    }
    case outcome::endless: {
        count_fault(*_cs, fault::endless);
        auto f = flush();
        if (!co_await std::move(f))
            co_return false;
        // A "reply" line that never ends: no CR, no LF.
        std::string chunk(16 * 1024, 'x');
        std::memcpy(chunk.data(), "250", 3);
        for (uint64_t sent = 0; sent < k_endless_max_bytes && !reactor::local().stopping(); sent += chunk.size()) {
            auto s = send_raw(chunk.data(), chunk.size());
            if (!co_await std::move(s))
                co_return false;
            std::memset(chunk.data(), 'x', 3);
        }
        auto h = hold_until_closed(k_stall_max);
        co_await std::move(h);
        co_return false;
    }
    default: finish(_outcome); co_return true;
    }
}

task<bool> session::do_starttls() {
    auto f = flush();
    if (!co_await std::move(f))
        co_return false;
    // RFC 3207 5 / CVE-2011-0411: anything pipelined after STARTTLS was sent
    // in clear; drop it.
    _rpos = _wpos = 0;
    _tls = std::make_unique<net::tls_stream>(std::move(_tcp), *_cs->tls);
    auto h = _tls->handshake(io_opts());
    auto r = co_await std::move(h);
    if (!r)
        co_return false;
    // RFC 3207 4.2: forget what was said before TLS.
    _helo = false;
    reset_transaction();
    co_return true;
}

task<void> session::run() {
    const auto& o = g.opt;
    _tcp.set_nodelay(true);
    uint64_t number = g.connections.fetch_add(1) + 1;
    int64_t cur = g.current.fetch_add(1) + 1;
    int64_t seen = g.max_concurrent.load();
    while (cur > seen && !g.max_concurrent.compare_exchange_weak(seen, cur)) {
    }

    bool open = true;
    if (o.refuse_after && number > *o.refuse_after) {
        fault_reply(fault::refuse_after, fmt::format("421 4.7.0 {} Too busy, closing connection\r\n", o.hostname));
        open = false;
    } else if (o.max_connections && uint64_t(cur) > *o.max_connections) {
        fault_reply(fault::max_connections,
                    fmt::format("421 4.7.0 {} Too many connections, closing connection\r\n", o.hostname));
        open = false;
    } else {
        reply(fmt::format("220 {} ESMTP ringway-sink\r\n", o.hostname));
        if (o.slow_read_bps > 0)
            count_fault(*_cs, fault::slow_read);
    }
    if (!open) {
        auto f = flush();
        co_await std::move(f);
    }

    while (open) {
        ev e = step();
        switch (e) {
        case ev::more:
        case ev::need_input: break;
        case ev::close: {
            auto f = flush();
            co_await std::move(f);
            open = false;
            continue;
        }
        case ev::drop: open = false; continue;
        case ev::greylist: {
            auto t = do_greylist();
            open = co_await std::move(t);
            continue;
        }
        case ev::data_end: {
            auto t = do_data_end();
            open = co_await std::move(t);
            continue;
        }
        case ev::starttls: {
            auto t = do_starttls();
            open = co_await std::move(t);
            continue;
        }
        }
        // Everything buffered is parsed: one send for all the replies.
        auto f = flush();
        if (!co_await std::move(f))
            break;
        if (_cancel.cancelled())
            break;
        if (_rpos == _wpos) {
            _rpos = _wpos = 0;
        } else if (_rpos > 0) {
            std::memmove(_buf.get(), _buf.get() + _rpos, _wpos - _rpos);
            _wpos -= _rpos;
            _rpos = 0;
        }
        size_t want = k_buf_bytes - _wpos;
        uint64_t bps = o.slow_read_bps;
        if (_in_data && _txn.slow && bps == 0)
            bps = k_slow_default_bps;
        if (bps > 0)
            want = std::min<size_t>(want, std::max<uint64_t>(1, bps * k_slow_tick.count() / 1000));
        int n;
        if (_tls) {
            auto t = _tls->read(_buf.get() + _wpos, want, io_opts());
            auto r = co_await std::move(t);
            if (r)
                n = int(r.value());
            else
                n = r.error().code == net::tls_errc::timeout ? -ETIMEDOUT : -EIO;
        } else {
            auto op = _tcp.recv(_buf.get() + _wpos, want, io_opts());
            n = co_await op;
        }
        if (n == -ETIMEDOUT) {
            reply(fmt::format("421 4.4.2 {} Error: timeout exceeded\r\n", o.hostname));
            auto f2 = flush();
            co_await std::move(f2);
            break;
        }
        if (n <= 0)
            break;
        _wpos += size_t(n);
        if (bps > 0) {
            auto p = pause(std::chrono::milliseconds(uint64_t(n) * 1000 / bps));
            if (!co_await std::move(p))
                break;
        }
    }

    _cs->max_msgs_per_conn = std::max(_cs->max_msgs_per_conn, _messages);
    g.current.fetch_sub(1);
}

namespace {

task<void> serve(int fd, net::address peer, core_state* cs, gate* sessions) {
    gate::holder h(*sessions);
    session s(fd, peer, cs);
    auto t = s.run();
    co_await std::move(t);
}

task<void> stopper(net::acceptor* a) {
    co_await reactor::local().stop_requested();
    a->stop();
}

task<void> nap(std::chrono::milliseconds d) {
    auto op = io::sleep(d);
    co_await op;
}

}  // namespace

task<void> core_main(unsigned core, int listen_fd) {
    core_state* cs = g.cores[core].get();
    if (g.opt.tls()) {
        auto ctx = net::tls_context::server(g.opt.tls_cert, g.opt.tls_key);
        if (ctx)
            cs->tls = std::make_unique<net::tls_context>(std::move(ctx.value()));
        else
            std::fprintf(stderr, "ringway-sink: core %u: TLS disabled: %s\n", core, ctx.error().c_str());
    }
    gate sessions;
    net::acceptor acc(listen_fd);
    spawn(stopper(&acc));
    for (;;) {
        auto at = acc.accept();
        auto a = co_await std::move(at);
        if (!a) {
            if (a.error().code == ECANCELED || reactor::local().stopping())
                break;
            // EMFILE and friends: breathe, then go on.
            auto n = nap(std::chrono::milliseconds(10));
            co_await std::move(n);
            continue;
        }
        spawn(serve(a.value().fd, a.value().peer, cs, &sessions));
    }
    {
        auto st = acc.stopped();
        co_await std::move(st);
    }
    g.cores_stopped.fetch_add(1);
    // Shutdown: sessions may finish on their own for up to k_drain, then
    // every operation they have or start is cancelled.
    for (auto waited = std::chrono::milliseconds(0); waited < k_drain && sessions.count() > 0;
         waited += std::chrono::milliseconds(10)) {
        auto n = nap(std::chrono::milliseconds(10));
        co_await std::move(n);
    }
    for (session* s : cs->sessions)
        s->cancel();
    // Wait for our sessions, then for every core's: a session elsewhere may
    // still ask core 0 about the greylist.
    while (sessions.count() > 0 || g.cores_stopped.load() < g.opt.cores || g.live_sessions.load() > 0) {
        auto n = nap(std::chrono::milliseconds(5));
        co_await std::move(n);
    }
    ::close(listen_fd);
}

const char* fault_name(fault f) {
    switch (f) {
    case fault::rcpt_tempfail: return "rcpt-tempfail";
    case fault::rcpt_permfail: return "rcpt-permfail";
    case fault::greylist: return "greylist";
    case fault::data_tempfail: return "data-tempfail";
    case fault::data_permfail: return "data-permfail";
    case fault::disconnect: return "disconnect";
    case fault::garbage: return "garbage";
    case fault::endless: return "endless";
    case fault::stall: return "stall";
    case fault::data_delay: return "data-delay";
    case fault::delay: return "delay";
    case fault::slow_read: return "slow-read";
    case fault::refuse_after: return "refuse-after";
    case fault::max_connections: return "max-connections";
    case fault::reply_421: return "reply-421";
    case fault::lose: return "lose";
    case fault::corrupt: return "corrupt";
    case fault::duplicate: return "duplicate";
    case fault::count_: break;
    }
    return "?";
}

}  // namespace rw::bench::sink
