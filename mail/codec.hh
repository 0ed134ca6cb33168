// Byte encodings mail carries text in: base64 (RFC 4648 4) for SASL
// exchanges, DKIM tags and MIME bodies; quoted-printable (RFC 2045 6.7);
// and the xtext of DSN parameters (RFC 3461 4). Bad input gives an empty
// optional or a flag, never an exception.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rw::mail {

// A hex digit's value; upper_only refuses 'a'..'f'. -1 if c is none.
int hex_value(char c, bool upper_only = false);

// ---- base64 ----

enum class base64_mode {
    // The exact alphabet, '=' padding to a multiple of 4 characters, no
    // whitespace, and the unused bits of the last character zero (RFC 4648
    // 3.5): the one spelling of the bytes, as SASL (RFC 4954) wants it.
    strict,
    // CR, LF, space and tab skipped anywhere, nonzero unused bits accepted
    // (DKIM b= and p= tags, MIME). Other characters, a missing or misplaced
    // '=' and data after the padding are still refused.
    lenient,
};

std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text, base64_mode mode = base64_mode::strict);

// Decodes base64 fed in chunks split anywhere (a MIME body), skipping line
// breaks and whitespace. It decodes what it can: a character outside the
// alphabet is skipped, data after the padding starts again as new base64
// (some mailers concatenate encoded parts), an unpadded final group is
// decoded at finish(). Each of those makes bad() true, so a caller can
// tell well-formed input from repaired input.
class base64_decoder {
public:
    // Appends the bytes decoded from chunk to out.
    void feed(std::string_view chunk, std::string& out);
    // The input ended: appends what an unpadded last group holds and
    // returns !bad(). Bytes fed afterwards begin a new input; bad() keeps
    // its value.
    bool finish(std::string& out);
    bool bad() const noexcept { return _bad; }

private:
    uint32_t _bits = 0;       // sextets of the group so far
    unsigned _count = 0;      // how many (0..3)
    bool _want_pad = false;   // "xx=" seen, the second '=' due
    bool _padded = false;     // a group closed by padding: the data is over
    bool _bad = false;
};

// ---- quoted-printable ----

// Decodes in (whole lines: CRLF or LF ends, the last may have none) and
// appends the bytes to out. Soft line breaks ("=" at the end of a line)
// join lines; "=HH" in upper or lower case hex gives the byte; whitespace
// at the end of a line is removed (RFC 2045 6.7 rule 3); a hard line break
// is kept as it came (CRLF or LF). A '=' that begins neither an escape nor
// a soft break is kept as it is. Returns false if there was such a '='.
bool qp_decode(std::string_view in, std::string& out);

// Encodes to lines of at most 76 characters: CRLF in the input is a hard
// line break; '=', a CR or LF not in a CRLF, bytes outside printable ASCII
// and the space or tab that would end a line become "=HH"; longer lines are
// cut by soft breaks, never inside an escape. qp_decode gives in back.
std::string qp_encode(std::string_view in);

// ---- xtext (RFC 3461 4) ----

// xchar ('!'..'~' except '+' and '=') as is, every other byte "+HH" with
// upper-case hex.
std::string xtext_encode(std::string_view bytes);
// Nothing if the text is not xtext: a byte outside '!'..'~', a '=', or a
// '+' not followed by two upper-case hex digits.
std::optional<std::string> xtext_decode(std::string_view text);
// Decodes every well-formed "+HH" and keeps everything else as it is,
// malformed '+' sequences included.
std::string xtext_decode_lenient(std::string_view text);

}  // namespace rw::mail
