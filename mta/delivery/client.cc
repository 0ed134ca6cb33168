#include "mta/delivery/client.hh"

#include <poll.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "runtime/base/assert.hh"

namespace rw::mta::delivery {

namespace {
constexpr size_t k_max_line = 4096;
constexpr size_t k_max_lines = 512;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string upper(std::string_view s) {
    std::string o(s);
    for (auto& c : o)
        if (c >= 'a' && c <= 'z')
            c = char(c - 32);
    return o;
}
}  // namespace

std::string smtp_reply::line() const { return code ? fmt::format("{} {}", code, text) : text; }

void dot_stuffer::feed(std::string& out, std::string_view body) {
    if (body.empty())
        return;
    out.reserve(out.size() + body.size() + body.size() / 64 + 8);
    size_t i = 0;
    while (i < body.size()) {
        if (_bol && body[i] == '.')
            out += '.';
        size_t nl = body.find('\n', i);
        size_t end = nl == std::string_view::npos ? body.size() : nl + 1;
        out.append(body.data() + i, end - i);
        _bol = nl != std::string_view::npos;
        i = end;
    }
    if (body.size() >= 2) {
        _tail[0] = body[body.size() - 2];
        _tail[1] = body.back();
    } else {
        _tail[0] = _tail[1];
        _tail[1] = body.back();
    }
    _fed += body.size();
}

void dot_stuffer::finish(std::string& out) {
    if (_fed > 0 && !(_fed >= 2 && _tail[0] == '\r' && _tail[1] == '\n'))
        out += "\r\n";
    out += ".\r\n";
}

void append_stuffed(std::string& out, std::string_view body) {
    dot_stuffer d;
    d.feed(out, body);
    d.finish(out);
}

task<int> smtp_client::recv_some(char* p, size_t n, std::chrono::milliseconds timeout) {
    if (!_tls) {
        int r = co_await _s.recv(p, n, io_options{.timeout = timeout});
        co_return r;
    }
    auto r = co_await _tls->read(p, n, io_options{.timeout = timeout});
    if (!r) {
        error = fmt::format("TLS: {}", r.error().message());
        co_return r.error().sys ? -r.error().sys : -EPROTO;
    }
    co_return int(r.value());
}

task<int> smtp_client::send_all(const char* p, size_t n, std::chrono::milliseconds timeout) {
    if (!_tls) {
        int r = co_await _s.send_all(p, n, io_options{.timeout = timeout});
        co_return r;
    }
    auto r = co_await _tls->write_all(p, n, io_options{.timeout = timeout});
    if (!r) {
        error = fmt::format("TLS: {}", r.error().message());
        co_return r.error().sys ? -r.error().sys : -EPROTO;
    }
    co_return int(n);
}

std::string smtp_client::tls_description() const {
    if (!_tls)
        return {};
    return fmt::format("{} {}", _tls->protocol(), _tls->cipher());
}

task<bool> smtp_client::flush(std::chrono::milliseconds timeout) {
    if (_out.empty())
        co_return true;
    int n = co_await send_all(_out.data(), _out.size(), timeout);
    _out.clear();
    if (n < 0) {
        if (n != -EPROTO)
            error = fmt::format("send failed: {}", std::strerror(-n));
        co_return false;
    }
    co_return true;
}

// One reply: lines "ddd-..." then "ddd ..." with the same code.
task<bool> smtp_client::read_reply(smtp_reply* r, std::chrono::milliseconds timeout) {
    *r = smtp_reply{};
    size_t lines = 0;
    std::string text;
    for (;;) {
        size_t nl = _in.find('\n', _start);
        if (nl == std::string::npos) {
            if (_in.size() - _start > k_max_line) {
                error = "reply line too long (no line end within 4096 bytes)";
                co_return false;
            }
            if (_start > 0) {
                _in.erase(0, _start);
                _start = 0;
            }
            const size_t old = _in.size();
            _in.resize(old + 8192);
            int n = co_await recv_some(_in.data() + old, 8192, timeout);
            _in.resize(old + size_t(std::max(n, 0)));
            if (n == 0) {
                error = "connection closed by the server";
                co_return false;
            }
            if (n < 0) {
                if (n != -EPROTO)
                    error = n == -ETIMEDOUT ? "timeout waiting for the server's reply"
                                            : fmt::format("receive failed: {}", std::strerror(-n));
                co_return false;
            }
            continue;
        }
        std::string_view line(_in.data() + _start, nl - _start);
        _start = nl + 1;
        if (!line.empty() && line.back() == '\r')
            line.remove_suffix(1);
        if (line.size() > k_max_line || ++lines > k_max_lines) {
            error = "reply too long";
            co_return false;
        }
        if (line.size() < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]) || line[0] < '2' ||
            line[0] > '5' || (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
            std::string shown(line.substr(0, 80));
            for (auto& c : shown)
                if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f)
                    c = '?';
            error = fmt::format("not an SMTP reply: \"{}\"", shown);
            co_return false;
        }
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (lines > 1 && code != r->code) {
            error = "reply lines with different codes";
            co_return false;
        }
        r->code = code;
        std::string_view t = line.size() > 4 ? line.substr(4) : std::string_view();
        if (lines == 1) {
            // Enhanced status code (RFC 3463): class must match the reply.
            size_t sp = t.find(' ');
            std::string_view w = t.substr(0, sp);
            if (w.size() >= 5 && w[0] == line[0] && w[1] == '.' && w.find('.', 2) != std::string_view::npos)
                r->enhanced = std::string(w);
        }
        if (!text.empty())
            text += "; ";
        text += t;
        if (line.size() == 3 || line[3] == ' ') {
            r->text = std::move(text);
            co_return true;
        }
    }
}

task<bool> smtp_client::hello(smtp_reply* out) {
    bool ok = co_await read_reply(out, _o->command_timeout);
    if (!ok)
        co_return false;
    if (out->code != 220) {
        error = fmt::format("greeting: {}", out->line());
        co_return false;
    }
    ok = co_await ehlo(out);
    co_return ok;
}

task<bool> smtp_client::start_tls(const net::tls_context* ctx, std::string sni, bool* refused) {
    *refused = false;
    _out = "STARTTLS\r\n";
    smtp_reply r;
    bool ok = co_await command(&r, _o->command_timeout);
    if (!ok)
        co_return false;
    if (r.code != 220) {
        *refused = true;
        co_return true;
    }
    if (_start != _in.size()) {
        // RFC 3207 5: nothing may follow the 220 in plaintext.
        error = "the server sent plaintext after its STARTTLS reply";
        co_return false;
    }
    _in.clear();
    _start = 0;
    net::tls_stream::options to;
    to.sni_host = std::move(sni);
    _tls = std::make_unique<net::tls_stream>(std::move(_s), *ctx, std::move(to));
    auto h = co_await _tls->handshake(io_options{.timeout = _o->command_timeout});
    if (!h) {
        error = fmt::format("TLS handshake: {}", h.error().message());
        co_return false;
    }
    pipelining = eight_bit_mime = smtputf8 = chunking = starttls = requiretls = false;
    max_size = 0;
    ok = co_await ehlo(&r);
    co_return ok;
}

task<bool> smtp_client::ehlo(smtp_reply* out) {
    _out = fmt::format("EHLO {}\r\n", _helo);
    bool ok = co_await command(out, _o->command_timeout);
    if (!ok)
        co_return false;
    if (out->code / 100 != 2) {
        // RFC 5321 3.2: an old server refuses EHLO; try HELO.
        _out = fmt::format("HELO {}\r\n", _helo);
        ok = co_await command(out, _o->command_timeout);
        if (!ok)
            co_return false;
        if (out->code / 100 != 2) {
            error = fmt::format("HELO: {}", out->line());
            co_return false;
        }
        co_return true;
    }
    // Keywords: every line after the first ("; " joined).
    std::string_view t = out->text;
    size_t pos = t.find("; ");
    while (pos != std::string_view::npos) {
        size_t next = t.find("; ", pos + 2);
        std::string kw = upper(t.substr(pos + 2, next == std::string_view::npos ? std::string_view::npos
                                                                                  : next - pos - 2));
        if (kw == "PIPELINING")
            pipelining = true;
        else if (kw == "8BITMIME")
            eight_bit_mime = true;
        else if (kw == "SMTPUTF8")
            smtputf8 = true;
        else if (kw == "CHUNKING")
            chunking = true;
        else if (kw == "STARTTLS")
            starttls = true;
        else if (kw == "REQUIRETLS")
            requiretls = true;
        else if (kw.starts_with("SIZE")) {
            max_size = 0;
            for (size_t i = 5; i < kw.size() && is_digit(kw[i]); ++i)
                max_size = max_size * 10 + uint64_t(kw[i] - '0');
        }
        pos = next;
    }
    co_return true;
}

// Sends what is queued and reads one reply.
task<bool> smtp_client::command(smtp_reply* r, std::chrono::milliseconds timeout) {
    bool ok = co_await flush(timeout);
    if (!ok)
        co_return false;
    ok = co_await read_reply(r, timeout);
    co_return ok;
}

// Ends a failed transaction so the next one starts clean. true: the
// connection is still usable.
task<bool> smtp_client::rset() {
    _out += "RSET\r\n";
    smtp_reply r;
    bool ok = co_await command(&r, _o->command_timeout);
    co_return ok && r.code / 100 == 2;
}

// The replies to a pipelined MAIL and its RCPTs. A recipient accepted by
// RCPT gets code 0 in res: its outcome is known only after the data.
task<bool> smtp_client::read_envelope(const outgoing* m, std::vector<smtp_reply>* res, smtp_reply* mail_reply,
                                      std::vector<bool>* rcpt_ok) {
    const auto t = _o->command_timeout;
    bool ok = co_await read_reply(mail_reply, t);
    if (!ok)
        co_return false;
    if (mail_reply->code == 421) {
        // The server is closing the connection (RFC 5321 3.8).
        for (auto& x : *res)
            x = *mail_reply;
        error = mail_reply->line();
        co_return false;
    }
    for (size_t i = 0; i < m->rcpts.size(); ++i) {
        ok = co_await read_reply(&(*res)[i], t);
        if (!ok)
            co_return false;
        if (mail_reply->code / 100 != 2) {
            (*res)[i] = *mail_reply;
        } else if ((*res)[i].code / 100 == 2) {
            (*rcpt_ok)[i] = true;
            (*res)[i] = smtp_reply{};
        }
    }
    co_return true;
}

task<bool> smtp_client::send(const outgoing* m, std::vector<smtp_reply>* res, smtp_reply* mail_reply) {
    res->assign(m->rcpts.size(), smtp_reply{});
    std::string params;
    if (max_size)
        params += fmt::format(" SIZE={}", m->size);
    if (m->eight_bit && eight_bit_mime)
        params += " BODY=8BITMIME";
    if (m->smtputf8 && smtputf8)
        params += " SMTPUTF8";
    if (m->requiretls && requiretls)
        params += " REQUIRETLS";  // RFC 8689 4.2.1: the next hop must keep it
    _out += fmt::format("MAIL FROM:<{}>{}\r\n", m->from, params);
    const auto cmd_t = _o->command_timeout;
    const auto data_t = _o->data_timeout;
    std::vector<bool> rcpt_ok(m->rcpts.size(), false);
    auto accepted = [&] { return size_t(std::count(rcpt_ok.begin(), rcpt_ok.end(), true)); };
    // Gives every recipient accepted so far the reply that decides it.
    auto settle = [&](const smtp_reply& r) {
        for (size_t i = 0; i < rcpt_ok.size(); ++i)
            if (rcpt_ok[i])
                (*res)[i] = r;
    };
    // CHUNKING (RFC 3030) where it pays: a large body goes as one BDAT
    // chunk, sent as stored (no dot-stuffing pass, no scan for the end
    // marker on the other side), and only once a recipient was accepted.
    const bool bdat = pipelining && chunking && m->size >= k_bdat_min_bytes;
    smtp_reply r;
    bool ok = false;
    if (pipelining) {
        for (auto& rc : m->rcpts)
            _out += fmt::format("RCPT TO:<{}>\r\n", rc);
        if (!bdat)
            _out += "DATA\r\n";
        ok = co_await flush(cmd_t);
        if (!ok)
            co_return false;
        ok = co_await read_envelope(m, res, mail_reply, &rcpt_ok);
        if (!ok)
            co_return false;
        if (bdat) {
            if (accepted() == 0) {
                ok = co_await rset();
                co_return ok;
            }
            _out += fmt::format("BDAT {} LAST\r\n", m->size);
            ok = co_await send_body(m, false);
            if (!ok)
                co_return false;
            ok = co_await read_reply(&r, data_t);
            if (!ok)
                co_return false;  // accepted recipients keep code 0: unknown
            settle(r);
            if (r.code / 100 != 2) {
                // A refused BDAT LAST may leave the transaction open: be sure.
                ok = co_await rset();
                co_return ok;
            }
            co_return true;
        }
        ok = co_await read_reply(&r, data_t);
        if (!ok)
            co_return false;
        if (r.code != 354) {
            settle(r);
            ok = co_await rset();
            co_return ok;
        }
        if (accepted() == 0) {
            // A server that said 354 with no recipient: an empty message ends it.
            _out += ".\r\n";
            ok = co_await command(&r, data_t);
            co_return ok;
        }
    } else {
        ok = co_await command(mail_reply, cmd_t);
        if (!ok)
            co_return false;
        if (mail_reply->code / 100 != 2) {
            for (auto& x : *res)
                x = *mail_reply;
            ok = co_await rset();
            co_return ok;
        }
        for (size_t i = 0; i < m->rcpts.size(); ++i) {
            _out += fmt::format("RCPT TO:<{}>\r\n", m->rcpts[i]);
            ok = co_await command(&(*res)[i], cmd_t);
            if (!ok)
                co_return false;
            if ((*res)[i].code / 100 == 2) {
                rcpt_ok[i] = true;
                (*res)[i] = smtp_reply{};  // known only after the final dot
            }
        }
        if (accepted() == 0) {
            ok = co_await rset();
            co_return ok;
        }
        _out += "DATA\r\n";
        ok = co_await command(&r, data_t);
        if (!ok)
            co_return false;
        if (r.code != 354) {
            settle(r);
            ok = co_await rset();
            co_return ok;
        }
    }
    ok = co_await send_body(m, true);
    if (!ok)
        co_return false;
    ok = co_await read_reply(&r, data_t);
    if (!ok)
        co_return false;  // accepted recipients keep code 0: unknown
    settle(r);
    co_return true;
}

task<bool> smtp_client::send_body(const outgoing* m, bool stuffed) {
    bool ok = co_await send_body_parts(m, stuffed);
    if (!ok)
        _broken = true;
    co_return ok;
}

task<bool> smtp_client::send_body_parts(const outgoing* m, bool stuffed) {
    const auto t = _o->data_timeout;
    dot_stuffer ds;
    RW_ASSERT(m->head.size() <= m->size);
    std::string_view piece = m->head;
    uint64_t off = 0;
    for (;;) {
        if (stuffed) {
            ds.feed(_out, piece);
        } else if (off == 0 && _out.size() + piece.size() <= k_chunk_bytes) {
            _out.append(piece);  // the head goes with its command, in one send
        } else {
            bool ok = co_await flush(t);
            if (!ok)
                co_return false;
            int n = co_await send_all(piece.data(), piece.size(), t);
            if (n < 0) {
                if (n != -EPROTO)
                    error = fmt::format("send failed: {}", std::strerror(-n));
                co_return false;
            }
        }
        off += piece.size();
        if (off >= m->size)
            break;
        // What is stuffed goes to the socket before the next chunk is
        // read: a connection holds one chunk of a body at a time.
        if (!_out.empty()) {
            bool ok = co_await flush(t);
            if (!ok)
                co_return false;
        }
        if (!m->read_rest) {
            error = "the message's body is not readable";
            co_return false;
        }
        _chunk.resize(std::min<uint64_t>(k_chunk_bytes, m->size - off));
        auto tr = m->read_rest(off, std::span<char>(_chunk.data(), _chunk.size()));
        auto n = co_await std::move(tr);
        if (!n || n.value() == 0) {
            // Never end a transaction whose body is incomplete: dropping the
            // connection makes the server discard it.
            error = fmt::format("cannot read the message at byte {}: {}", off,
                                n ? std::string("it ended early") : n.error());
            co_return false;
        }
        piece = std::string_view(_chunk.data(), n.value());
    }
    if (stuffed)
        ds.finish(_out);
    bool ok = co_await flush(t);
    co_return ok;
}

bool smtp_client::still_open() const {
    if (_start < _in.size())
        return false;  // bytes nobody asked for
    const int fd = _tls ? _tls->tcp().fd() : _s.fd();
    if (fd < 0)
        return false;
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    return ::poll(&p, 1, 0) == 0;
}

task<int> smtp_client::probe(std::string from, std::string rcpt, smtp_reply* reply) {
    _out += fmt::format("MAIL FROM:<{}>\r\n", from);
    bool ok = co_await command(reply, _o->command_timeout);
    if (!ok)
        co_return -1;
    if (reply->code / 100 != 2)
        co_return 0;
    _out += fmt::format("RCPT TO:<{}>\r\n", rcpt);
    ok = co_await command(reply, _o->command_timeout);
    if (!ok)
        co_return -1;
    co_await rset();
    co_return 1;
}

task<void> smtp_client::quit() {
    bool ok = false;
    if (!_broken) {
        _out += "QUIT\r\n";
        ok = co_await flush(std::chrono::seconds(5));
    }
    if (ok) {
        smtp_reply r;
        co_await read_reply(&r, std::chrono::seconds(5));
    }
    if (_tls) {
        _tls->tcp().close();
        _tls.reset();
    }
    _s.close();
}

}  // namespace rw::mta::delivery
