// The connections of one core: dispensing messages (closed loop or paced
// open loop), the SMTP dialogue and the accounting.
#include <fmt/format.h>

#include <cerrno>
#include <coroutine>
#include <cstring>
#include <deque>
#include <optional>
#include <random>

#include <sys/socket.h>

#include "bench/lib/mark.hh"
#include "bench/lib/smtp_reply.hh"
#include "bench/load/load.hh"
#include "mail/header.hh"
#include "policy/dkim.hh"
#include "runtime/net/tcp.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/reactor.hh"
#include "runtime/reactor/sync.hh"

namespace rw::load {

namespace {

using namespace std::chrono_literals;

// ---- messages to send ----

struct ticket {
    clock::time_point intended;  // open loop: when it should have been sent
    bool paced = false;
};

// Hands out messages to the connections of one core. Closed loop: as fast
// as they ask, up to the count or the deadline. Open loop: a pacer releases
// each message at its intended time (rate / cores per core); a message
// waiting for a free connection keeps its intended time, so latency counts
// the wait (no coordinated omission).
class dispenser {
public:
    dispenser(shared_state* s, uint64_t limit, double rate) : _s(s), _limit(limit), _rate(rate) {}

    bool finished() const { return _done && _ready.empty(); }

    // A ticket now if one is ready (closed loop: always, until the end).
    std::optional<ticket> try_take() {
        if (stopped())
            return std::nullopt;
        if (_rate <= 0) {
            if (_limit && _issued >= _limit) {
                finish();
                return std::nullopt;
            }
            ++_issued;
            return ticket{clock::now(), false};
        }
        if (_ready.empty())
            return std::nullopt;
        ticket t{_ready.front(), true};
        _ready.pop_front();
        return t;
    }

    // Waits for a ticket; nullopt when the run is over.
    task<std::optional<ticket>> take() {
        for (;;) {
            auto t = try_take();
            if (t || _done || stopped())
                co_return t;
            co_await waiter{this};
        }
    }

    // Open loop: releases tickets at their intended times.
    task<void> pace() {
        const auto start = _s->start;
        const double per_ns = _rate / 1e9;
        uint64_t k = 0;
        for (;;) {
            if (stopped() || (_limit && k >= _limit))
                break;
            auto now = clock::now();
            const auto due = start + std::chrono::nanoseconds(int64_t(double(k) / per_ns));
            if (due > now) {
                auto wait = std::min<clock::duration>(due - now, 50ms);
                co_await io::sleep(wait);
                continue;
            }
            // Release everything due by now (a late wake-up releases a burst,
            // each with its own intended time).
            while ((!_limit || k < _limit) && start + std::chrono::nanoseconds(int64_t(double(k) / per_ns)) <= now) {
                _ready.push_back(start + std::chrono::nanoseconds(int64_t(double(k) / per_ns)));
                ++k;
            }
            wake();
        }
        // Tickets already released are still handed out (try_take drains
        // _ready before it looks at _done).
        finish();
    }

    void finish() {
        _done = true;
        wake();
    }
    void wake() {
        auto& r = reactor::local();
        for (auto h : _waiters)
            r.schedule(h);
        _waiters.clear();
    }
    bool stopped() const { return _s->stop.load(std::memory_order_relaxed); }
    size_t ready_count() const { return _ready.size(); }

private:
    struct waiter {
        dispenser* d;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) { d->_waiters.push_back(h); }
        void await_resume() const noexcept {}
    };
    shared_state* _s;
    uint64_t _limit;
    double _rate;
    uint64_t _issued = 0;
    bool _done = false;
    std::deque<clock::time_point> _ready;
    std::vector<std::coroutine_handle<>> _waiters;
};

// ---- the wire: plain TCP, or TLS after STARTTLS ----

struct wire {
    net::tcp_stream tcp;
    std::unique_ptr<net::tls_stream> tls;
    std::string tls_error;

    // > 0 bytes, 0 closed, < 0 -errno (-EPROTO: TLS failure, see tls_error).
    task<int> read(char* buf, size_t len, int64_t timeout_ms) {
        io_options o{.timeout = std::chrono::milliseconds(timeout_ms)};
        if (!tls) {
            int n = co_await tcp.recv(buf, len, o);
            co_return n;
        }
        auto r = co_await tls->read(buf, len, o);
        if (!r) {
            tls_error = r.error().message();
            co_return r.error().sys ? -r.error().sys : -EPROTO;
        }
        co_return int(r.value());
    }
    task<int> write(const char* buf, size_t len, int64_t timeout_ms) {
        io_options o{.timeout = std::chrono::milliseconds(timeout_ms)};
        if (!tls) {
            int n = co_await tcp.send_all(buf, len, o);
            co_return n;
        }
        auto r = co_await tls->write_all(buf, len, o);
        if (!r) {
            tls_error = r.error().message();
            co_return r.error().sys ? -r.error().sys : -EPROTO;
        }
        co_return int(len);
    }
};

std::string cause_of(int err) {
    switch (-err) {
    case 0: return "closed";
    case ECONNREFUSED: return "refused";
    case ECONNRESET:
    case EPIPE: return "reset";
    case ETIMEDOUT: return "timeout";
    case EPROTO: return "tls";
    case ECANCELED: return "cancelled";
    default: return std::strerror(-err);
    }
}

// ---- one connection ----

enum class outcome { ok, reconnect, fatal };

class connection {
public:
    connection(shared_state* s, core_stats* st, dispenser* d, unsigned core, unsigned index)
        : _s(s), _st(st), _d(d), _core(core), _index(index), _rng(s->opt.seed * 1000003 + core * 7919 + index) {
        _in.resize(k_in_bytes);
    }

    task<void> run() {
        while (!_d->finished() && !_d->stopped()) {
            auto r = co_await session();
            if (r == outcome::fatal)
                break;
            if (r == outcome::reconnect && _failed_in_a_row > 0) {
                // Back off a little after a failure so a dead server is not
                // hammered; bounded, and cut short by the end of the run.
                auto wait = std::chrono::milliseconds(std::min<int64_t>(1000, 20LL << std::min(_failed_in_a_row, 6u)));
                co_await io::sleep(wait);
            }
        }
    }

private:
    static constexpr size_t k_in_bytes = 64 * 1024;

    struct pending {
        ticket t;
        clock::time_point sent;
        std::string id;
        std::vector<std::string> rcpts;
        unsigned body = 0;  // template index
        unsigned rcpt_ok = 0;
        bool mail_ok = false;
    };

    void error(std::string key, std::string_view sample) {
        _st->errors.fetch_add(1, std::memory_order_relaxed);
        auto& e = _st->by_cause[key];
        if (e.count++ == 0)
            e.sample = std::string(sample.substr(0, 200));
        if (_s->opt.stop_on_error && !_s->first_error_set.exchange(true)) {
            _s->first_error = fmt::format("{}{}{}", key, sample.empty() ? "" : ": ", sample.substr(0, 200));
            _s->error_stop.store(true);
            _s->stop.store(true);
        }
    }
    void io_error(std::string_view stage, int err) {
        std::string detail = err == -EPROTO ? _w.tls_error : std::string();
        error(fmt::format("{}: {}", stage, cause_of(err)), detail);
    }
    void reply_error(std::string_view stage, const bench::smtp_reply& r) {
        error(fmt::format("{} {}{}{}", stage, r.code, r.enhanced.empty() ? "" : " ", r.enhanced), r.first_text());
    }

    // Reads one reply; false on failure (counted under stage).
    task<bool> read_reply(std::string_view stage, bench::smtp_reply& out) {
        for (;;) {
            if (_end > _start) {
                size_t used = 0;
                auto st = bench::parse_reply(std::string_view(_in.data() + _start, _end - _start), out, used);
                if (st == bench::reply_status::complete) {
                    _start += used;
                    co_return true;
                }
                if (st == bench::reply_status::garbage) {
                    auto bad = std::string_view(_in.data() + _start, std::min<size_t>(_end - _start, 60));
                    error(fmt::format("{}: garbage", stage), bad.substr(0, bad.find_first_of("\r\n")));
                    co_return false;
                }
            }
            if (_start > 0 && (_start == _end || _end > k_in_bytes / 2)) {
                std::memmove(_in.data(), _in.data() + _start, _end - _start);
                _end -= _start;
                _start = 0;
            }
            if (_end == _in.size()) {
                error(fmt::format("{}: garbage", stage), "reply too long");
                co_return false;
            }
            int n = co_await _w.read(_in.data() + _end, _in.size() - _end, _s->opt.timeout.count());
            if (n <= 0) {
                io_error(stage, n);
                co_return false;
            }
            _end += size_t(n);
        }
    }

    // Sends what is queued, then reads one reply. (Two co_awaits joined by
    // || in one condition are miscompiled by g++ 12: keep them apart.)
    task<bool> exchange(std::string_view stage, bench::smtp_reply& r) {
        bool ok = co_await flush(stage);
        if (!ok)
            co_return false;
        ok = co_await read_reply(stage, r);
        co_return ok;
    }

    task<bool> flush(std::string_view stage) {
        if (_out.empty())
            co_return true;
        int n = co_await _w.write(_out.data(), _out.size(), _s->opt.timeout.count());
        if (n < 0) {
            io_error(stage, n);
            co_return false;
        }
        _st->bytes.fetch_add(_out.size(), std::memory_order_relaxed);
        _out.clear();
        co_return true;
    }

    std::string expand(const std::string& pattern, uint64_t n, unsigned d) {
        std::string out;
        out.reserve(pattern.size() + 16);
        for (size_t i = 0; i < pattern.size(); ++i) {
            if (pattern.compare(i, 3, "{n}") == 0) {
                out += fmt::format("{}", n);
                i += 2;
            } else if (pattern.compare(i, 3, "{d}") == 0) {
                out += fmt::format("{}", d);
                i += 2;
            } else if (pattern.compare(i, 3, "{c}") == 0) {
                out += fmt::format("{}", _core * 100000 + _index);
                i += 2;
            } else {
                out += pattern[i];
            }
        }
        return out;
    }

    pending make_message(ticket t) {
        pending p;
        p.t = t;
        const uint64_t seq = _s_seq++;
        p.id = fmt::format("{}-{}-{}-{}", _s->run_token, _core, _index, seq);
        p.body = _s->mix_table[_rng() % _s->mix_table.size()];
        const auto& o = _s->opt;
        for (unsigned i = 0; i < o.rcpts; ++i) {
            unsigned d = unsigned((_msgs_total + i) % o.domains) + 1;
            p.rcpts.push_back(expand(o.to, _rng() % o.users, d));
        }
        ++_msgs_total;
        return p;
    }

    // MAIL, RCPT..., DATA for p, appended to the output.
    void append_envelope(pending& p) {
        _out += fmt::format("MAIL FROM:<{}>", _from);
        if (_size_ok)
            _out += fmt::format(" SIZE={}", message_bytes(p));
        _out += "\r\n";
        for (auto& r : p.rcpts)
            _out += fmt::format("RCPT TO:<{}>\r\n", r);
        _out += "DATA\r\n";
        p.sent = clock::now();
        _st->attempted.fetch_add(1, std::memory_order_relaxed);
        _st->in_flight.fetch_add(1, std::memory_order_relaxed);
    }

    size_t message_bytes(const pending& p) const { return _s->bodies[p.body].raw.size() + (_s->dkim_key ? 1400 : 400); }

    void append_message(const pending& p) {
        const auto& b = _s->bodies[p.body];
        std::string tail = fmt::format("id {}\r\n", p.id);
        bench::digest64 d = b.prefix;
        d.update(tail);
        bench::mark m{p.id, b.raw.size() + tail.size(), d.finish(),
                      std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count()};
        std::string head = fmt::format(
            "From: <{}>\r\nTo: <{}>\r\nSubject: ringway-load {}\r\nDate: {}\r\nMessage-ID: <{}@ringway-load>\r\n", _from,
            p.rcpts.front(), p.id, _s->date_header, p.id);
        head += bench::format_mark(m);
        if (_s->dkim_key)
            _out += dkim_signature(head, b.raw, tail);
        _out += head;
        _out += "\r\n";
        _out += b.stuffed;
        _out += tail;
        _out += ".\r\n";
    }

    // The DKIM-Signature field for a message of this header and body.
    std::string dkim_signature(const std::string& head, std::string_view body, std::string_view tail) {
        mail::header_parser hp;
        hp.feed(head);
        hp.feed("\r\n");
        policy::dkim::body_hasher bh(policy::dkim::canon::relaxed, false, std::nullopt);
        bh.feed(body);
        bh.feed(tail);
        policy::dkim::sign_options so;
        so.headers = {"from", "to", "subject", "date", "message-id"};
        so.now = int64_t(std::time(nullptr));
        auto sig = policy::dkim::sign(hp.fields(), bh.finish(), std::span(&*_s->dkim_key, 1), so);
        return sig ? sig.value() : std::string();
    }

    void done(pending& p, bool accepted, bool rejected) {
        _st->in_flight.fetch_sub(1, std::memory_order_relaxed);
        auto now = clock::now();
        if (accepted) {
            _st->accepted.fetch_add(1, std::memory_order_relaxed);
            auto from = p.t.paced ? p.t.intended : p.sent;
            _st->latency.record(uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(now - from).count()));
            _st->last_done = now;
            if (_log) {
                _st->accepted_lines += p.id;
                for (auto& r : _accepted_rcpts) {
                    _st->accepted_lines += ' ';
                    _st->accepted_lines += r;
                }
                _st->accepted_lines += '\n';
            }
        } else if (rejected) {
            _st->rejected.fetch_add(1, std::memory_order_relaxed);
        } else {
            _st->failed.fetch_add(1, std::memory_order_relaxed);
        }
    }

    // Reads the replies to MAIL, RCPT... and DATA of p. Returns false when
    // the connection is lost (p counted as failed). go_on: DATA got 354.
    task<bool> read_envelope_replies(pending& p, bool& go_on) {
        bench::smtp_reply r;
        go_on = false;
        _accepted_rcpts.clear();
        if (!co_await read_reply("MAIL", r)) {
            done(p, false, false);
            co_return false;
        }
        p.mail_ok = r.code / 100 == 2;
        if (!p.mail_ok)
            reply_error("MAIL", r);
        if (r.code == 421) {
            done(p, false, true);
            co_return false;
        }
        for (auto& rc : p.rcpts) {
            if (!co_await read_reply("RCPT", r)) {
                done(p, false, false);
                co_return false;
            }
            if (r.code / 100 == 2) {
                ++p.rcpt_ok;
                _accepted_rcpts.push_back(rc);
                _st->rcpt_accepted.fetch_add(1, std::memory_order_relaxed);
            } else {
                _st->rcpt_rejected.fetch_add(1, std::memory_order_relaxed);
                if (p.mail_ok)
                    reply_error("RCPT", r);
                if (r.code == 421) {
                    done(p, false, true);
                    co_return false;
                }
            }
        }
        if (!co_await read_reply("DATA", r)) {
            done(p, false, false);
            co_return false;
        }
        if (r.code == 354) {
            go_on = true;
            co_return true;
        }
        if (p.mail_ok && p.rcpt_ok > 0)
            reply_error("DATA", r);
        done(p, false, true);
        co_return r.code != 421;
    }

    // After a failed transaction: RSET, so the next one starts clean.
    task<bool> reset() {
        _out += "RSET\r\n";
        if (!co_await flush("RSET"))
            co_return false;
        bench::smtp_reply r;
        if (!co_await read_reply("RSET", r))
            co_return false;
        co_return r.code / 100 == 2;
    }

    task<bool> ehlo() {
        bench::smtp_reply& r = _ehlo_reply;
        _out += fmt::format("EHLO {}\r\n", _s->opt.ehlo);
        if (!co_await exchange("EHLO", r))
            co_return false;
        if (r.code != 250) {
            reply_error("EHLO", r);
            co_return false;
        }
        _kws = bench::ehlo_keywords(r);
        _pipelining = _s->opt.pipelining && bench::has_keyword(_kws, "PIPELINING");
        _size_ok = bench::has_keyword(_kws, "SIZE");
        co_return true;
    }
    bool has(const bench::smtp_reply&, std::string_view kw) const { return bench::has_keyword(_kws, kw); }

    static std::string base64(std::string_view in) {
        static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        std::string out;
        size_t i = 0;
        for (; i + 2 < in.size(); i += 3) {
            uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
            out += t[v >> 18];
            out += t[(v >> 12) & 63];
            out += t[(v >> 6) & 63];
            out += t[v & 63];
        }
        if (i < in.size()) {
            uint32_t v = uint32_t(uint8_t(in[i])) << 16 | (i + 1 < in.size() ? uint32_t(uint8_t(in[i + 1])) << 8 : 0);
            out += t[v >> 18];
            out += t[(v >> 12) & 63];
            out += i + 1 < in.size() ? t[(v >> 6) & 63] : '=';
            out += '=';
        }
        return out;
    }

    task<outcome> session() {
        const auto& o = _s->opt;
        _start = _end = 0;
        _out.clear();
        _w = wire{};
        _from = expand(o.from, 0, 0);
        auto c = co_await net::connect_tcp(o.server, o.timeout);
        if (!c) {
            ++_failed_in_a_row;
            _st->connect_failures.fetch_add(1, std::memory_order_relaxed);
            io_error("connect", -c.error().code);
            const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - _s->start).count();
            if (now_ns - _s->last_connect_ok_ns.load(std::memory_order_relaxed) > std::chrono::nanoseconds(o.timeout).count()) {
                if (!_s->first_error_set.exchange(true)) {
                    _s->first_error = fmt::format("cannot connect to {}: {} (no connection succeeded for {} ms)",
                                                  o.server_text, cause_of(-c.error().code), o.timeout.count());
                    _s->error_stop.store(true);
                }
                _s->stop.store(true);
                co_return outcome::fatal;
            }
            co_return outcome::reconnect;
        }
        _st->connections.fetch_add(1, std::memory_order_relaxed);
        {
            const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - _s->start).count();
            int64_t prev = _s->last_connect_ok_ns.load(std::memory_order_relaxed);
            while (prev < now_ns && !_s->last_connect_ok_ns.compare_exchange_weak(prev, now_ns)) {
            }
        }
        _w.tcp = std::move(c.value());
        _w.tcp.set_nodelay(true);
        bench::smtp_reply r;
        if (!co_await read_reply("greeting", r)) {
            ++_failed_in_a_row;
            co_return outcome::reconnect;
        }
        if (r.code != 220) {
            ++_failed_in_a_row;
            reply_error("greeting", r);
            co_return outcome::reconnect;
        }
        bool hello = co_await ehlo();
        if (!hello)
            co_return outcome::reconnect;
        if (o.starttls) {
            if (!has(r, "STARTTLS")) {
                error("STARTTLS: not offered", "");
                co_return outcome::fatal;
            }
            _out += "STARTTLS\r\n";
            if (!co_await exchange("STARTTLS", r))
                co_return outcome::reconnect;
            if (r.code != 220) {
                reply_error("STARTTLS", r);
                co_return outcome::reconnect;
            }
            _w.tls = std::make_unique<net::tls_stream>(std::move(_w.tcp), *_s->tls);
            auto h = co_await _w.tls->handshake({.timeout = o.timeout});
            if (!h) {
                error("STARTTLS: handshake", h.error().message());
                co_return outcome::reconnect;
            }
            if (!co_await ehlo())
                co_return outcome::reconnect;
        }
        if (!o.auth_user.empty()) {
            std::string plain;
            plain += '\0';
            plain += o.auth_user;
            plain += '\0';
            plain += o.auth_pass;
            _out += fmt::format("AUTH PLAIN {}\r\n", base64(plain));
            if (!co_await exchange("AUTH", r))
                co_return outcome::reconnect;
            if (r.code != 235) {
                reply_error("AUTH", r);
                co_return outcome::fatal;
            }
        }
        _failed_in_a_row = 0;
        co_return co_await transactions();
    }

    // The messages of one connection. With PIPELINING the envelope goes in
    // one write, and the next envelope rides with the previous message's
    // final dot when a message is ready (RFC 2920 allows it: the dot is not
    // a command that must end a group).
    task<outcome> transactions() {
        const auto& o = _s->opt;
        uint64_t sent_here = 0;
        auto more_allowed = [&] { return o.per_conn == 0 || sent_here < o.per_conn; };
        std::optional<pending> cur;  // empty: start the next transaction
        for (;;) {
            if (!cur) {
                if (!more_allowed())
                    co_return co_await quit();
                auto t = co_await _d->take();
                if (!t)
                    co_return co_await quit();
                cur = make_message(*t);
                append_envelope(*cur);
                ++sent_here;
                if (_pipelining) {
                    bool ok = co_await flush("MAIL");
                    if (!ok) {
                        done(*cur, false, false);
                        co_return outcome::reconnect;
                    }
                }
            }
            bool go_on = false;
            if (_pipelining) {
                if (!co_await read_envelope_replies(*cur, go_on))
                    co_return outcome::reconnect;
            } else {
                if (!co_await serial_envelope(*cur, go_on))
                    co_return outcome::reconnect;
            }
            if (!go_on) {
                if (!co_await reset())
                    co_return outcome::reconnect;
                cur.reset();
                continue;
            }
            append_message(*cur);
            std::optional<pending> next;
            bool quitting = false;
            if (more_allowed()) {
                if (_pipelining) {
                    if (auto t = _d->try_take()) {
                        next = make_message(*t);
                        append_envelope(*next);
                        ++sent_here;
                    }
                }
            } else if (_pipelining) {
                _out += "QUIT\r\n";
                quitting = true;
            }
            if (!co_await flush("DATA")) {
                done(*cur, false, false);
                if (next)
                    done(*next, false, false);
                co_return outcome::reconnect;
            }
            bench::smtp_reply r;
            if (!co_await read_reply("end of data", r)) {
                done(*cur, false, false);
                if (next)
                    done(*next, false, false);
                co_return outcome::reconnect;
            }
            if (r.code / 100 == 2) {
                done(*cur, true, false);
            } else {
                reply_error("end of data", r);
                done(*cur, false, true);
                if (r.code == 421) {
                    if (next)
                        done(*next, false, false);
                    co_return outcome::reconnect;
                }
            }
            if (quitting) {
                if (co_await read_reply("QUIT", r))
                    abortive_close();
                co_return outcome::ok;
            }
            cur = std::move(next);  // pipelined behind the dot, or empty
        }
    }

    // Without PIPELINING: one command, one reply.
    task<bool> serial_envelope(pending& p, bool& go_on) {
        // append_envelope has put every command into _out: send them one by one.
        std::string cmds = std::move(_out);
        _out.clear();
        go_on = false;
        _accepted_rcpts.clear();
        size_t pos = 0;
        unsigned idx = 0;  // 0 MAIL, 1..n RCPT, n+1 DATA
        const unsigned n = unsigned(p.rcpts.size());
        while (pos < cmds.size()) {
            size_t e = cmds.find("\r\n", pos) + 2;
            _out.assign(cmds, pos, e - pos);
            pos = e;
            std::string_view stage = idx == 0 ? "MAIL" : idx <= n ? "RCPT" : "DATA";
            bench::smtp_reply r;
            if (!co_await exchange(stage, r)) {
                done(p, false, false);
                co_return false;
            }
            if (idx == 0) {
                p.mail_ok = r.code / 100 == 2;
                if (!p.mail_ok) {
                    reply_error("MAIL", r);
                    done(p, false, true);
                    co_return r.code != 421;
                }
            } else if (idx <= n) {
                if (r.code / 100 == 2) {
                    ++p.rcpt_ok;
                    _accepted_rcpts.push_back(p.rcpts[idx - 1]);
                    _st->rcpt_accepted.fetch_add(1, std::memory_order_relaxed);
                } else {
                    _st->rcpt_rejected.fetch_add(1, std::memory_order_relaxed);
                    reply_error("RCPT", r);
                    if (r.code == 421) {
                        done(p, false, true);
                        co_return false;
                    }
                }
                if (idx == n && p.rcpt_ok == 0) {
                    done(p, false, true);
                    co_return true;
                }
            } else {
                if (r.code == 354) {
                    go_on = true;
                    co_return true;
                }
                reply_error("DATA", r);
                done(p, false, true);
                co_return r.code != 421;
            }
            ++idx;
        }
        co_return true;
    }

    task<outcome> quit() {
        _out += "QUIT\r\n";
        if (co_await flush("QUIT")) {
            bench::smtp_reply r;
            if (co_await read_reply("QUIT", r))
                abortive_close();
        }
        co_return outcome::ok;
    }

    // After the reply to QUIT everything sent has been answered: close with
    // a reset instead of leaving a TIME_WAIT socket behind, which at tens of
    // thousands of connections per second would exhaust the ephemeral
    // ports and cost the kernel a timer each.
    void abortive_close() {
        int fd = _w.tls ? _w.tls->tcp().fd() : _w.tcp.fd();
        if (fd < 0)
            return;
        linger l{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        _w = wire{};
    }

    shared_state* _s;
    core_stats* _st;
    dispenser* _d;
    unsigned _core, _index;
    std::mt19937_64 _rng;
    wire _w;
    std::vector<char> _in;
    size_t _start = 0, _end = 0;
    std::string _out;
    std::string _from;
    std::vector<std::string> _kws;
    bench::smtp_reply _ehlo_reply;
    std::vector<std::string> _accepted_rcpts;
    bool _pipelining = false, _size_ok = false;
    bool _log = true;
    unsigned _failed_in_a_row = 0;
    uint64_t _msgs_total = 0;
    uint64_t _s_seq = 0;
};

task<void> run_connection(shared_state* s, core_stats* st, dispenser* d, unsigned core, unsigned index, gate* g) {
    gate::holder h(*g);
    connection c(s, st, d, core, index);
    co_await c.run();
}

task<void> watch_stop(shared_state* s, dispenser* d, event* finished, gate* g) {
    gate::holder h(*g);
    // Wakes waiting connections once a stop is requested (SIGINT, or the
    // duration is over), polling a shared flag every 20 ms.
    while (!finished->is_set()) {
        if (s->stop.load(std::memory_order_relaxed)) {
            d->finish();
            break;
        }
        co_await io::sleep(20ms);
    }
}

}  // namespace

task<void> run_core(shared_state* s, core_stats* st, unsigned core, unsigned ncores) {
    const auto& o = s->opt;
    uint64_t limit = 0;
    if (o.count)
        limit = o.count / ncores + (core < o.count % ncores ? 1 : 0);
    const double rate = o.rate > 0 ? o.rate / ncores : 0;
    unsigned conns = o.connections / ncores + (core < o.connections % ncores ? 1 : 0);
    if (o.count && (limit == 0 || conns == 0))
        co_return;
    dispenser d(s, limit, rate);
    gate g;
    event finished;
    for (unsigned i = 0; i < conns; ++i)
        spawn(run_connection(s, st, &d, core, i, &g));
    gate watcher;
    spawn(watch_stop(s, &d, &finished, &watcher));
    if (rate > 0)
        co_await d.pace();
    co_await g.wait_idle();
    finished.set();
    co_await watcher.wait_idle();
}

}  // namespace rw::load
