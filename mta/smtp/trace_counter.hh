// Counts the Received: trace fields (RFC 5321 4.4) in a message's header
// section as the message streams past, for mail-loop detection (RFC 5321
// 6.3). Fed the message as stored (unstuffed, CRLF line ends), in chunks
// split at any byte; keeps a few scalars and at most nine octets of a line
// start, never a line. The header section ends at the first empty line (RFC
// 5322 2.1); a message without one is all header, as far as counting goes.
//
// Only a field name at the start of a line counts: a folded continuation
// line (starting with a space or tab) is part of the field before it.
// Owned by one SMTP session (DATA or BDAT) or by a delivery worker reading a
// queued message; pure, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace rw::mta::smtp {

class trace_counter {
public:
    void feed(std::string_view chunk);
    // True once the empty line that ends the header section has been seen.
    bool headers_done() const { return _st == state::body; }
    unsigned received() const { return _received; }
    void reset() { *this = trace_counter{}; }

private:
    enum class state : uint8_t {
        bol,   // at the start of a line in the header section
        name,  // matching "received:" at the start of a line
        cr,    // a CR at the start of a line: LF makes it the empty line
        rest,  // in the rest of a line
        body,  // after the empty line
    };
    state _st = state::bol;
    uint8_t _matched = 0;  // octets of "received:" matched so far
    unsigned _received = 0;
};

}  // namespace rw::mta::smtp
