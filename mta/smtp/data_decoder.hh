// The DATA body decoder: the octets a client sends after "354" in, the
// unstuffed message out (RFC 5321 4.5.2 transparency, 4.1.1.4 end of data).
// Pure and I/O-free. Owned by one SMTP session (so by that session's shard);
// the session feeds it whatever the socket delivered, in chunks split at any
// byte, and appends the output to the message being spooled.
//
// Only CRLF "." CRLF ends the data (the first CRLF being the end of the last
// line, or the start of the data for an empty message). Because of SMTP
// smuggling (SEC Consult, December 2023; CVE-2023-51764/51765/51766) a bare
// LF or bare CR is never a line end and never part of an end marker: the
// first one fails the message, and the decoder goes on consuming, and
// discarding, until the real CRLF.CRLF, so the session stays in step with a
// client that pipelines its next command behind the data.
//
// The state machine keeps a handful of scalars, so every split point gives
// the same result; work is O(n) and output is appended in runs, never per
// byte. BDAT bodies do not come here: the session takes them verbatim by
// byte count (RFC 3030 2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mta/smtp/reply.hh"

namespace rw::mta::smtp {

// RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF,
// not counting a leading dot added for transparency.
constexpr size_t k_max_text_line = 1000;

class data_decoder {
public:
    // max_line_octets includes the CRLF; at least 3 (a "." CRLF line).
    explicit data_decoder(size_t max_line_octets = k_max_text_line);

    enum class status {
        more,    // message so far fine, end not seen yet: feed more
        done,    // end of data seen; error() says whether the message failed
        failed,  // message failed, end not seen yet: keep feeding, it is consumed and discarded
    };
    struct step {
        status st;
        size_t consumed;  // bytes of `in` used
    };

    // Appends the unstuffed message (lines end in CRLF) to `out`. Returns
    // `more` or `failed` with all of `in` consumed, or `done` with
    // `consumed` counting up to and including the terminating CRLF.CRLF;
    // bytes after it (the client's pipelined next command) are not consumed.
    // After `done`, returns {done, 0} until reset(). Once the message has
    // failed nothing more is appended; what was appended before is to be
    // thrown away by the caller.
    step feed(std::string_view in, std::string& out);

    // Why the message failed (the first cause), if it did.
    std::optional<reply> error() const { return _error; }
    // Octets appended to `out` since the last reset().
    uint64_t bytes_out() const { return _bytes_out; }
    // Octets consumed since the last reset(), terminator included: what the
    // client sent, for logs and for size limits after a failure.
    uint64_t bytes_in() const { return _bytes_in; }
    bool failed() const { return _error.has_value(); }
    bool done() const { return _st == state::done; }

    // Fails the message for a reason found outside the decoder (message
    // size over the limit, spool write refused): nothing more is appended,
    // the rest is consumed up to the end of data, error() returns `why`
    // unless the message had already failed.
    void fail(reply why);

    // Ready for the next message.
    void reset();

private:
    enum class state : uint8_t {
        bol,     // at the start of a line
        dot,     // "." at the start of a line
        dot_cr,  // "." CR at the start of a line: CRLF.CR seen, LF ends the data
        text,    // inside a line
        cr,      // inside a line, a CR seen: LF ends the line, anything else makes it bare
        done,    // CRLF.CRLF seen
    };

    void text_run(const char* p, size_t n, std::string& out);
    void text_byte();  // one content octet that is never output (bare CR/LF, NUL)
    void fail_bare_cr();
    void fail_bare_lf();
    void fail_nul();
    void fail_line_too_long();

    size_t _max_line_octets;
    size_t _max_text;  // content octets per line, CRLF excluded
    state _st = state::bol;
    size_t _line_len = 0;  // content octets of the current line so far (stuffing dot excluded)
    uint64_t _bytes_out = 0;
    uint64_t _bytes_in = 0;
    std::optional<reply> _error;
};

}  // namespace rw::mta::smtp
