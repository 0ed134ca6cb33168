// The SMTP client side of delivery: one connection to a next hop, EHLO
// (HELO when EHLO is refused), the extensions it offers, and transactions
// with PIPELINING when offered. Every wait has the RFC 5321 4.5.3.2
// deadline given in options. Replies that are not SMTP (garbage, an
// endless line, a close mid-reply) end the connection with a reason.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mta/delivery/delivery.hh"
#include "runtime/net/tcp.hh"
#include "runtime/net/tls.hh"
#include "runtime/reactor/task.hh"

namespace rw::mta::delivery {

struct smtp_reply {
    int code = 0;  // 0: no reply (connection lost, timeout, garbage)
    std::string text;  // every line joined with "; ", without the codes
    std::string enhanced;
    std::string line() const;  // "550 5.1.1 text"
};

struct outgoing {
    std::string from;
    std::vector<std::string> rcpts;
    std::string body;  // the message as stored: CRLF lines, not dot-stuffed
    bool eight_bit = false;  // BODY=8BITMIME, or 8-bit bytes found
    bool smtputf8 = false;
};

class smtp_client {
public:
    // Bodies at least this large go with BDAT when the server offers CHUNKING.
    static constexpr size_t k_bdat_min_bytes = 32 * 1024;

    smtp_client(net::tcp_stream s, const options* o) : _s(std::move(s)), _o(o) {}

    // Greeting and EHLO/HELO. On failure: the reply (code 0 if none).
    task<bool> hello(smtp_reply* out);
    // STARTTLS (RFC 3207) and EHLO again. false: the connection is no
    // longer usable (error says why); a server that refuses STARTTLS with
    // a reply leaves it usable in plaintext (refused is then set).
    task<bool> start_tls(const net::tls_context* ctx, std::string sni, bool* refused);
    bool tls_active() const { return bool(_tls); }
    std::string tls_description() const;
    // One transaction. rcpt_replies gets one reply per recipient: the RCPT
    // reply when it failed, else the reply to the final dot. Returns false
    // when the connection is no longer usable (those without a final
    // answer have code 0).
    task<bool> send(const outgoing* m, std::vector<smtp_reply>* rcpt_replies, smtp_reply* mail_reply);
    task<void> quit();
    // After an idle wait: false when the server has spoken (a 421, a TLS
    // alert) or closed since the last reply, so the connection must not be
    // reused. One poll(2), no round trip.
    bool still_open() const;

    bool pipelining = false, eight_bit_mime = false, smtputf8 = false, chunking = false, starttls = false;
    uint64_t max_size = 0;  // 0: not announced
    std::string error;       // why the connection ended

private:
    task<bool> ehlo(smtp_reply* out);
    task<int> recv_some(char* p, size_t n, std::chrono::milliseconds timeout);
    task<int> send_all(const char* p, size_t n, std::chrono::milliseconds timeout);
    task<bool> read_reply(smtp_reply* r, std::chrono::milliseconds timeout);
    task<bool> flush(std::chrono::milliseconds timeout);
    task<bool> command(smtp_reply* r, std::chrono::milliseconds timeout);
    task<bool> rset();
    task<bool> read_envelope(const outgoing* m, std::vector<smtp_reply>* res, smtp_reply* mail_reply,
                             std::vector<bool>* rcpt_ok);
    net::tcp_stream _s;
    std::unique_ptr<net::tls_stream> _tls;
    const options* _o;
    std::string _in, _out;
    size_t _start = 0;
};

// Dot-stuffs body onto out and ends it with CRLF.CRLF (a body not ending in
// CRLF gets one).
void append_stuffed(std::string& out, std::string_view body);

}  // namespace rw::mta::delivery
