// The header section of a message (RFC 5322 2.2, 3.6): a streaming parser
// that finds the fields and where the body begins, and the address lists
// of From, To, Cc and the like (RFC 5322 3.4, with the obsolete forms of
// 4.4 that mail still carries).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rw::mail {

// One field exactly as it came: name, colon, value, folding line breaks and
// the final line break (absent only when the message ended inside the
// field).
struct header_field {
    std::string raw;
    size_t name_len = 0;  // the name is raw.substr(0, name_len)
    uint64_t offset = 0;  // of raw's first byte in the stream fed to the parser

    std::string_view name() const noexcept { return std::string_view(raw).substr(0, name_len); }
    // After the colon up to the final line break (excluded); folding kept.
    std::string_view raw_value() const noexcept;
    // RFC 5322 2.2.3: each line break followed by WSP removed, then leading
    // and trailing WSP trimmed.
    std::string unfolded_value() const;
};

// A field name (RFC 5322 3.6.8: ftext, 1..64 characters here).
bool is_field_name(std::string_view name) noexcept;

// Case-insensitive name comparison (field names are, RFC 5322 1.2.2).
bool name_is(const header_field& f, std::string_view name) noexcept;

struct header_limits {
    size_t max_fields = 1000;
    size_t max_field_bytes = 64 * 1024;  // one field with its folding and line breaks
    size_t max_section_bytes = 1 << 20;  // the whole section with the empty line ending it
};

enum class header_error {
    none,
    too_many_fields,
    field_too_long,
    section_too_long,
};
const char* to_string(header_error e) noexcept;

// Reads the message as stored (dot-unstuffed, lines ending in CRLF, bare LF
// tolerated) in chunks split at any byte, up to the empty line that ends
// the header section.
//
// A line that is not a field (no colon, or a name byte outside 33..126)
// ends the header section if it is the first line: by RFC 5322 the message
// then has no header section ("From " envelope lines, a body without
// header). Anywhere else it is skipped and counted, and so is a continuation
// line that follows it. WSP between the name and the colon is accepted
// (obs-optional, RFC 5322 4.5).
//
// Past a limit the parser records the error and keeps no more fields (the
// field it was reading is dropped too; the fields before it stay) but still
// finds the end of the section, so the caller can reject the message or
// carry on with what it has.
class header_parser {
public:
    explicit header_parser(header_limits limits = {}) : _limits(limits) {}

    // Returns how many bytes at the start of chunk belong to the header
    // section, the empty line ending it included: all of them until the
    // section ends, then none. Once done(), the rest of the chunk and all
    // later bytes are body.
    //
    // One exception: whether the first line is a field is known only at
    // its colon (or at the byte that rules one out). If it is not, the
    // message has no header section: done() with section_bytes() == 0, and
    // the bytes of that line fed before this chunk, already counted as
    // header, are body too. section_bytes() is always the true length.
    size_t feed(std::string_view chunk);
    // The message ended. Without an empty line, the whole message is the
    // header section and the last field ends with the message.
    void finish();

    bool done() const noexcept { return _state == state::done; }
    // The length of the header section, the empty line included; the body
    // begins at this offset. Final once done().
    uint64_t section_bytes() const noexcept { return _state == state::done ? _section_bytes : _pos; }
    // What a section that finish() ended lacks to end as sections do
    // (its last line's CRLF and the empty line), for whoever appends a
    // body to it; "" when an empty line ended it or there is none.
    std::string_view unterminated_end() const noexcept { return _missing_end; }
    header_error error() const noexcept { return _error; }
    // Non-field lines skipped inside the section.
    size_t malformed_lines() const noexcept { return _malformed; }
    // The complete fields so far, in order. A field is complete when the
    // next line begins (it may be folded until then).
    const std::vector<header_field>& fields() const noexcept { return _fields; }

private:
    enum class state {
        line_start,  // at the first byte of a line
        cr_first,    // the line began with CR: the empty line, or junk
        name,        // in what may be a field name
        name_wsp,    // after the name, before the colon
        rest,        // the rest of a line up to its LF
        done,
    };

    void take(std::string_view bytes);
    void close_field();
    void field_line();
    void non_field_line();
    void no_header();
    void end_section();
    void fail(header_error e);

    header_limits _limits;
    state _state = state::line_start;
    uint64_t _pos = 0;            // bytes consumed
    uint64_t _section_bytes = 0;  // once done
    std::string_view _missing_end;  // set by finish()
    header_field _cur;            // the field being read
    bool _has_cur = false;        // the bytes being read go into _cur
    bool _open = false;           // the last line that was not a continuation was a field
    bool _first_line = true;
    bool _collecting = true;      // no limit hit yet
    size_t _name_len = 0;
    size_t _malformed = 0;
    header_error _error = header_error::none;
    std::vector<header_field> _fields;
};

// A date-time field's value for unix time t in UTC (RFC 5322 3.3):
// "Mon, 07 Dec 2026 09:30:00 +0000".
std::string date_time(int64_t t);

// ---- addresses (RFC 5322 3.4) ----

// `display` is the phrase before an angle address: its words joined by one
// space where CFWS separated them, quoted strings unquoted and unescaped,
// encoded-words (RFC 2047) left as they are, comments dropped. `local` is
// the local part's content: quoted parts unquoted and unescaped, dots kept,
// CFWS around them removed. `domain` is as written with the CFWS removed;
// a domain literal keeps its brackets ("[192.0.2.1]").
struct mailbox {
    std::string display;
    std::string local;
    std::string domain;
    friend bool operator==(const mailbox&, const mailbox&) = default;
};

// Parses an address list such as the unfolded value of To or Cc. Groups
// ("undisclosed-recipients:;", "Team: a@b.example, c@d.example;") give
// their members (a group may lack its ';' at the very end); a source route
// in an angle address is dropped; empty list elements are skipped, so an
// empty or blank value gives an empty list. Nothing on a syntax error: an
// unbalanced '<', '"', '[' or parenthesis, a missing '@', a local part
// that is not words separated by dots, an empty domain or one check_domain
// (UTF-8 allowed) refuses, or anything left over.
std::optional<std::vector<mailbox>> parse_address_list(std::string_view unfolded_value);

// Exactly one mailbox (From with one author, Sender, Reply-To of one).
std::optional<mailbox> parse_mailbox(std::string_view unfolded_value);

}  // namespace rw::mail
