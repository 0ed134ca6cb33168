// Counts the Received: trace fields (RFC 5321 4.4) in a message's header
// section as the message streams past, for mail-loop detection (RFC 5321
// 6.3), and keeps the first Subject: field's value (unfolded, as sent, at
// most k_max_subject octets) for the mail log. Fed the message as stored
// (unstuffed, CRLF line ends), in chunks split at any byte; keeps a few
// scalars, a field name of at most k_max_name octets and the subject, never
// a line. The header section ends at the first empty line (RFC 5322 2.1); a
// message without one is all header, as far as this goes.
//
// Only a field name at the start of a line counts: a folded continuation
// line (starting with a space or tab) is part of the field before it.
// Owned by one SMTP session (DATA or BDAT) or by a delivery worker reading a
// queued message; pure, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace rw::mta::smtp {

class trace_counter {
public:
    static constexpr size_t k_max_subject = 200;
    static constexpr size_t k_max_name = 16;  // longer field names are neither of ours

    void feed(std::string_view chunk);
    // True once the empty line that ends the header section has been seen.
    bool headers_done() const { return _st == state::body; }
    unsigned received() const { return _received; }
    // The first Subject: field's value, leading white space dropped; empty
    // when there is none (yet).
    std::string_view subject() const { return _subject; }
    void reset() { *this = trace_counter{}; }

private:
    enum class state : uint8_t {
        bol,    // at the start of a line in the header section
        name,   // reading a field name, up to the colon
        cr,     // a CR at the start of a line: LF makes it the empty line
        value,  // in the subject's value
        rest,   // in the rest of a line
        body,   // after the empty line
    };
    state _st = state::bol;
    bool _in_subject = false;    // the current field is the subject (continuations belong to it)
    bool _have_subject = false;  // the first Subject: has been seen
    uint8_t _name_len = 0;
    char _name[k_max_name];
    unsigned _received = 0;
    std::string _subject;
};

}  // namespace rw::mta::smtp
