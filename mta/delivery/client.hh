// The SMTP client side of delivery: one connection to a next hop, EHLO
// (HELO when EHLO is refused), the extensions it offers, and transactions
// with PIPELINING when offered. Every wait has the RFC 5321 4.5.3.2
// deadline given in options. Replies that are not SMTP (garbage, an
// endless line, a close mid-reply) end the connection with a reason.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "mta/delivery/delivery.hh"
#include "runtime/base/result.hh"
#include "runtime/net/tcp.hh"
#include "runtime/net/tls.hh"
#include "runtime/reactor/task.hh"

namespace rw::mta::delivery {

struct smtp_reply {
    int code = 0;  // 0: no reply (connection lost, timeout, garbage)
    std::string text;  // every line joined with "; ", without the codes
    std::string enhanced;
    // Made by the gateway (a message too large for the server, a loop),
    // not said by the server: shaping rules ignore it.
    bool local = false;
    std::string line() const;  // "550 5.1.1 text"
};

// Reads the message's bytes from off into out (from the spool, on the
// core that holds it); returns how many (0: the message ended early) or why not.
using body_reader = std::function<task<result<size_t, std::string>>(uint64_t off, std::span<char> out)>;

// A message to send. Its body (CRLF lines as stored, not dot-stuffed) is
// size bytes: head holds the first of them (all of a small message), and
// read_rest fetches the others chunk by chunk as the socket drains, so a
// connection holds one chunk of a large message, never all of it.
struct outgoing {
    std::string from;
    std::vector<std::string> rcpts;
    uint64_t size = 0;
    std::string head;
    body_reader read_rest;  // needed when head.size() < size
    bool eight_bit = false;  // BODY=8BITMIME, or 8-bit bytes found
    bool smtputf8 = false;
    bool requiretls = false;  // RFC 8689: MAIL FROM ... REQUIRETLS
};

// Dot-stuffing (RFC 5321 4.5.2) over a body fed in pieces that may split
// lines anywhere; finish() ends it with CRLF.CRLF (adding the CRLF a body
// without a final line end lacks).
class dot_stuffer {
public:
    void feed(std::string& out, std::string_view piece);
    void finish(std::string& out);

private:
    bool _bol = true;     // the next byte starts a line
    char _tail[2] = {};   // the last two bytes fed
    uint64_t _fed = 0;
};

class smtp_client {
public:
    // Bodies at least this large go with BDAT when the server offers CHUNKING.
    static constexpr size_t k_bdat_min_bytes = 32 * 1024;
    // Bytes of a body read from the spool at a time.
    static constexpr size_t k_chunk_bytes = 128 * 1024;

    // helo: the name to greet with ("": options::hostname).
    smtp_client(net::tcp_stream s, const options* o, std::string helo = {})
        : _s(std::move(s)), _o(o), _helo(helo.empty() ? o->hostname : std::move(helo)) {}

    // Greeting and EHLO/HELO. On failure: the reply (code 0 if none).
    task<bool> hello(smtp_reply* out);
    // STARTTLS (RFC 3207) and EHLO again. false: the connection is no
    // longer usable (error says why); a server that refuses STARTTLS with
    // a reply leaves it usable in plaintext (refused is then set).
    task<bool> start_tls(const net::tls_context* ctx, std::string sni, bool* refused);
    bool tls_active() const { return bool(_tls); }
    // The server's certificate chained to a trusted CA and named the host
    // (only with a verifying context).
    bool tls_verified() const { return _tls && _tls->peer_verified(); }
    std::string tls_description() const;
    // One transaction. rcpt_replies gets one reply per recipient: the RCPT
    // reply when it failed, else the reply to the final dot. Returns false
    // when the connection is no longer usable (those without a final
    // answer have code 0).
    task<bool> send(const outgoing* m, std::vector<smtp_reply>* rcpt_replies, smtp_reply* mail_reply);
    task<void> quit();
    // Recipient verification (a call-ahead): MAIL FROM:<from> and RCPT
    // TO:<rcpt>, then RSET. 1: *reply is the RCPT reply; 0: MAIL was
    // refused, *reply says how; -1: no usable answer (error says why).
    task<int> probe(std::string from, std::string rcpt, smtp_reply* reply);
    // After an idle wait: false when the server has spoken (a 421, a TLS
    // alert) or closed since the last reply, so the connection must not be
    // reused. One poll(2), no round trip.
    bool still_open() const;

    bool pipelining = false, eight_bit_mime = false, smtputf8 = false, chunking = false, starttls = false,
         requiretls = false;
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
    // The body after the DATA command's 354 (stuffed) or a BDAT command
    // (as is). false: the connection is unusable (error says why).
    task<bool> send_body(const outgoing* m, bool stuffed);
    task<bool> send_body_parts(const outgoing* m, bool stuffed);
    task<bool> read_envelope(const outgoing* m, std::vector<smtp_reply>* res, smtp_reply* mail_reply,
                             std::vector<bool>* rcpt_ok);
    net::tcp_stream _s;
    std::unique_ptr<net::tls_stream> _tls;
    const options* _o;
    std::string _helo;
    std::string _in, _out;
    std::string _chunk;  // one chunk of a body read from the spool
    // A body was cut short on the wire: nothing more may be sent (after
    // "BDAT n LAST" the server would take a QUIT's bytes as the missing
    // end of the message).
    bool _broken = false;
    size_t _start = 0;
};

// Dot-stuffs body onto out and ends it with CRLF.CRLF (a body not ending in
// CRLF gets one).
void append_stuffed(std::string& out, std::string_view body);

}  // namespace rw::mta::delivery
