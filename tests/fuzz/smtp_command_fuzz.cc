// Fuzz target: arbitrary bytes as SMTP command lines. The whole input is
// parsed as one line (control characters, length limits), then each
// CRLF-separated line of it (so a seed can be a pipelined dialogue).
// Checked: parse_command never crashes; success without SMTPUTF8 implies the
// same success with it (permission only ever widens); every refusal is one
// of our codes with a matching RFC 3463 enhanced code and a single-line
// text; a parsed path survives to_string -> parse_mailbox unchanged.
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/smtp_command as a ctest.
#include <cstdint>
#include <string_view>

#include "mta/smtp/command.hh"
#include "runtime/base/assert.hh"

using namespace rw::mta::smtp;

namespace {

void check_reply(const reply& r) {
    RW_ASSERT(r.code == 500 || r.code == 501 || r.code == 553 || r.code == 555, "code {}", r.code);
    RW_ASSERT(r.enhanced.size() == 5 && r.enhanced[0] == '5' && r.enhanced[1] == '.' && r.enhanced[3] == '.',
              "enhanced {}", r.enhanced);
    RW_ASSERT(!r.text.empty());
    for (const char c : r.text)
        RW_ASSERT(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f, "control character in reply text");
}

void check_command(std::string_view line, const command& c, bool utf8_ok) {
    RW_ASSERT(c.v != verb::unknown);
    RW_ASSERT(line.size() + 2 <= k_max_command_line_ext);
    if (c.v != verb::mail && c.v != verb::rcpt) {
        RW_ASSERT(line.size() + 2 <= k_max_command_line);
        RW_ASSERT(c.params.empty());
        return;
    }
    RW_ASSERT(c.params.size() <= k_max_params);
    for (size_t i = 0; i < c.params.size(); ++i) {
        for (const char ch : c.params[i].key)
            RW_ASSERT(!(ch >= 'a' && ch <= 'z'), "key not upper-cased");
        for (size_t j = 0; j < i; ++j)
            RW_ASSERT(c.params[i].key != c.params[j].key, "duplicate parameter accepted");
    }
    if (c.null_path) {
        RW_ASSERT(c.v == verb::mail);
        RW_ASSERT(c.path.local.empty() && c.path.domain.empty());
        return;
    }
    if (!(utf8_ok || c.smtputf8))
        RW_ASSERT(!c.path.utf8, "UTF-8 path without SMTPUTF8");
    if (c.path.domain.empty()) {  // RCPT TO:<Postmaster>
        RW_ASSERT(c.v == verb::rcpt);
        RW_ASSERT(c.path.local.size() == 10);
        return;
    }
    const std::string s = to_string(c.path);
    RW_ASSERT(s.size() + 2 <= k_max_path, "canonical form longer than the path");
    auto again = parse_mailbox(s, true);
    RW_ASSERT(again.has_value(), "to_string output does not parse: {}", s);
    RW_ASSERT(again.value() == c.path, "round trip changed the mailbox: {}", s);
}

void one_line(std::string_view line) {
    auto a = parse_command(line, false);
    auto b = parse_command(line, true);
    if (a) {
        RW_ASSERT(b.has_value(), "utf8_ok refused what plain accepted");
        RW_ASSERT(a.value() == b.value());
        check_command(line, a.value(), false);
    } else {
        check_reply(a.error());
    }
    if (b)
        check_command(line, b.value(), true);
    else
        check_reply(b.error());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    one_line(in);
    size_t pos = 0;
    while (pos < in.size()) {
        const size_t e = in.find("\r\n", pos);
        if (e == std::string_view::npos) {
            if (pos > 0)
                one_line(in.substr(pos));
            break;
        }
        one_line(in.substr(pos, e - pos));
        pos = e + 2;
    }
    return 0;
}
