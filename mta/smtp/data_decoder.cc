// DATA body decoder (see data_decoder.hh). Replies for a failed message:
//
//   bare CR or LF    554 5.6.0  see fail_bare_lf() for the choice
//   NUL              554 5.6.0  RFC 5321 4.5.2 / RFC 5322 2.3: no NUL in text
//   line too long    552 5.3.4  RFC 5321 4.5.3.1.6, 4.5.3.1.10
//
// The byte-level contract, which the differential fuzz target
// (tests/fuzz/smtp_data_fuzz.cc) checks against a line-based model: a
// content octet (anything of a line but its CRLF and a leading stuffing dot)
// is appended iff the message has not failed before it and the line,
// counting it, is still within max_line_octets - 2 octets; a line's CRLF is
// appended iff the message has not failed.
#include "mta/smtp/data_decoder.hh"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#include "runtime/base/assert.hh"

namespace rw::mta::smtp {

data_decoder::data_decoder(size_t max_line_octets)
    : _max_line_octets(max_line_octets), _max_text(max_line_octets - 2) {
    RW_ASSERT(max_line_octets >= 3, "max_line_octets {} cannot hold \".\" CRLF", max_line_octets);
}

void data_decoder::reset() {
    _st = state::bol;
    _line_len = 0;
    _bytes_out = 0;
    _bytes_in = 0;
    _error.reset();
}

void data_decoder::fail(reply why) {
    if (!_error)
        _error = std::move(why);
}

// SMTP smuggling defence. RFC 5321 2.3.8: CR and LF only ever appear
// together, as CRLF. Postfix's smtpd_forbid_bare_newline (added after the
// 2023 smuggling reports) rejects a bare newline with
// smtpd_forbid_bare_newline_reject_code, 550 by default; Exchange uses
// 5.6.11 (SMTPSEND.BareLinefeedsAreIllegal). We answer 554 5.6.0 instead:
// 554 "Transaction failed" is the reply RFC 5321 4.3.2 lists for a DATA
// transaction that fails on its content (550 there is for policy
// rejections, and says "mailbox unavailable"); X.6.11 is not an RFC 3463 /
// RFC 5248 registered code, while X.6.0 "Other or undefined media error"
// (RFC 3463 3.7) is, and fits: the content is malformed. A NUL gets the
// same code with its own text.
void data_decoder::fail_bare_lf() { fail(reply{554, "5.6.0", "Message contains a bare <LF> (only CRLF ends a line)"}); }
void data_decoder::fail_bare_cr() { fail(reply{554, "5.6.0", "Message contains a bare <CR> (only CRLF ends a line)"}); }
void data_decoder::fail_nul() { fail(reply{554, "5.6.0", "Message contains a NUL octet"}); }

// RFC 5321 4.5.3.1.6 (1000 octets incl. CRLF), 4.5.3.1.10 ("552 Too much
// mail data" is the reply after the data); X.3.4 "Message too big for
// system" (RFC 3463 3.4).
void data_decoder::fail_line_too_long() {
    fail(reply{552, "5.3.4", "Message line too long (more than " + std::to_string(_max_line_octets) +
                                 " octets including CRLF)"});
}

namespace {
// The first CR, LF or NUL in [p, end), or end. Eight octets at a time: a
// byte of w is zero exactly where w has that octet, and the lowest flagged
// byte of the classic "has a zero byte" test is always a true one (its
// false positives lie only above a true zero), so the count of trailing
// zero bits finds the first. This loop was the largest item of ringwayd's
// profile at 100 KB messages.
const char* find_special(const char* p, const char* end) {
    constexpr uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    auto zero_bytes = [](uint64_t v) { return (v - ones) & ~v & highs; };
    while (end - p >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        const uint64_t m = zero_bytes(w ^ (ones * '\r')) | zero_bytes(w ^ (ones * '\n')) | zero_bytes(w);
        if (m) {
            static_assert(std::endian::native == std::endian::little);
            return p + __builtin_ctzll(m) / 8;
        }
        p += 8;
    }
    while (p < end && *p != '\r' && *p != '\n' && *p != '\0')
        ++p;
    return p;
}
}  // namespace

// A run of ordinary content octets: appended up to the line limit.
void data_decoder::text_run(const char* p, size_t n, std::string& out) {
    const size_t room = _line_len < _max_text ? _max_text - _line_len : 0;
    _line_len += n;
    if (_error)
        return;
    const size_t k = std::min(n, room);
    out.append(p, k);
    _bytes_out += k;
    if (n > room)
        fail_line_too_long();
}

void data_decoder::text_byte() {
    if (++_line_len > _max_text)
        fail_line_too_long();
}

data_decoder::step data_decoder::feed(std::string_view in, std::string& out) {
    if (_st == state::done)
        return {status::done, 0};
    const char* const begin = in.data();
    const char* const end = begin + in.size();
    const char* p = begin;
    while (p < end) {
        switch (_st) {
        case state::text: {
            // The hot loop: find the next CR, LF or NUL and append the run before it.
            const char* q = find_special(p, end);
            if (q != p)
                text_run(p, size_t(q - p), out);
            p = q;
            if (p == end)
                break;
            const char c = *p++;
            if (c == '\r') {
                _st = state::cr;
            } else {
                if (c == '\n')
                    fail_bare_lf();  // never a line end: "\n.\n", "\n.\r\n" stay inside the line
                else
                    fail_nul();
                text_byte();
            }
            break;
        }
        case state::cr:
            if (*p == '\n') {
                ++p;
                if (!_error) {
                    out.append("\r\n", 2);
                    _bytes_out += 2;
                }
                _line_len = 0;
                _st = state::bol;
            } else {
                // A bare CR: content, never a line end ("\r.\r", "\r.\r\n").
                // The octet after it is looked at again in `text`.
                fail_bare_cr();
                text_byte();
                _st = state::text;
            }
            break;
        case state::bol:
            if (*p == '.') {
                ++p;
                _st = state::dot;
            } else {
                _st = state::text;
            }
            break;
        case state::dot:
            if (*p == '\r') {
                ++p;
                _st = state::dot_cr;
            } else {
                // RFC 5321 4.5.2: a line starting with "." and holding more
                // is unstuffed by deleting that first "." (".." -> "."). A
                // bare LF after it ("\r\n.\n") is just content, failing the
                // message in `text`.
                _st = state::text;
            }
            break;
        case state::dot_cr:
            if (*p == '\n') {
                // RFC 5321 4.1.1.4: CRLF "." CRLF, the end of the mail data.
                ++p;
                _st = state::done;
                const auto used = size_t(p - begin);
                _bytes_in += used;
                return {status::done, used};
            }
            // "\r\n.\r" followed by anything but LF: the CR is bare, the dot
            // was stuffing. The octet after it is looked at again in `text`.
            fail_bare_cr();
            text_byte();
            _st = state::text;
            break;
        case state::done:
            RW_UNREACHABLE("feed in state done");
        }
    }
    _bytes_in += in.size();
    return {_error ? status::failed : status::more, in.size()};
}

}  // namespace rw::mta::smtp
