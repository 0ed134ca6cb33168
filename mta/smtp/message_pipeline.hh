// The chain a message passes through while it streams in. DATA and BDAT
// hand each piece of the message as stored (dot-unstuffed, CRLF) to
// feed(), in order, as it arrives; the session appends the same bytes to
// the spool. Nothing takes a second pass over the body or holds it whole:
//
//   bytes -> header parser (fields, where the body begins)
//         -> trace checks (Received count: mail loops; Subject for the log)
//         -> body consumers: each sees every header field once complete,
//            the end of the header section, then the body bytes
//
// Body consumers are what the authentication and filtering stages plug in
// (DKIM body hashers, content scanners); they are synchronous and see the
// bytes once. What the gateway adds or leaves out at delivery is decided
// from what passed here (added_headers): forged Authentication-Results
// fields that carry our authserv-id are omitted (RFC 8601 5).
//
// One per message; owned by the session; no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/spool.hh"
#include "mail/header.hh"
#include "mta/smtp/replies.hh"

namespace rw::mta::smtp {

class body_consumer {
public:
    virtual ~body_consumer() = default;
    virtual void header_field(const mail::header_field&) {}
    // The header section ended (body_offset: where the body begins in the
    // message as stored).
    virtual void headers_end(uint64_t body_offset) { (void)body_offset; }
    virtual void body(std::string_view bytes) { (void)bytes; }
    // The message is complete.
    virtual void end() {}
};

struct pipeline_options {
    unsigned max_received = 50;  // more Received fields: a mail loop (RFC 5321 6.3)
    mail::header_limits limits{};
    // Incoming Authentication-Results fields naming this id are left out
    // at delivery; empty: none are.
    std::string omit_results_of;
};

class message_pipeline {
public:
    static constexpr size_t k_max_subject = 200;

    explicit message_pipeline(pipeline_options o);

    void add(body_consumer* c) { _consumers.push_back(c); }
    // The next bytes of the message as stored.
    void feed(std::string_view bytes);
    // The message is complete (the final dot, or BDAT LAST).
    void finish();

    // Why the message must be refused, found while it streamed in: a mail
    // loop, a header section past its limits. Once set, feed() ignores
    // further bytes: the session reads to the end and queues nothing.
    const std::optional<refusal>& failure() const { return _failure; }
    unsigned received() const { return _received; }
    std::string_view subject() const { return _subject; }
    const mail::header_parser& headers() const { return _headers; }
    // The body ranges delivery leaves out (forged Authentication-Results).
    const std::vector<fs::omit_range>& omitted() const { return _omit; }

private:
    static constexpr size_t k_max_first_line = 64 << 10;
    void field(const mail::header_field& f);
    void keep_first_line(std::string_view consumed);
    bool end_headers();  // false: refused

    pipeline_options _o;
    mail::header_parser _headers;
    std::vector<body_consumer*> _consumers;
    size_t _fields_seen = 0;
    bool _headers_ended = false;
    bool _have_subject = false;
    unsigned _received = 0;
    std::string _subject;
    std::string _first_line;  // bytes of an undecided first line
    std::vector<fs::omit_range> _omit;
    std::optional<refusal> _failure;
};

}  // namespace rw::mta::smtp
