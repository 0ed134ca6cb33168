// Fuzz target: arbitrary bytes as a mailbox ("local@domain"), parsed alone
// and as the path of RCPT TO:<...>. Checked, besides never crashing: the
// limits hold on success; SMTPUTF8 only widens what is accepted; a mailbox
// survives to_string -> parse_mailbox unchanged and its canonical form is
// never longer than what was sent; parse_mailbox and the RCPT path parser
// agree (a differential check of the two entry points).
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/smtp_address as a ctest.
#include <cstdint>
#include <string>
#include <string_view>

#include "mta/smtp/command.hh"
#include "runtime/base/assert.hh"

using namespace rw::mta::smtp;

namespace {

bool all_ascii(std::string_view s) {
    for (const char c : s)
        if (static_cast<unsigned char>(c) >= 0x80)
            return false;
    return true;
}

void check_mailbox(std::string_view s, const mailbox& m, bool utf8_ok) {
    RW_ASSERT(s.size() + 2 <= k_max_path);
    RW_ASSERT(!m.domain.empty() && m.domain.size() <= k_max_domain);
    RW_ASSERT(m.local.size() <= k_max_local_part);
    RW_ASSERT(m.domain_literal == (m.domain.front() == '['));
    RW_ASSERT(m.utf8 == !(all_ascii(m.local) && all_ascii(m.domain)));
    if (!utf8_ok)
        RW_ASSERT(!m.utf8);
    RW_ASSERT(has_relay_chars(m) == (m.local.find_first_of("%!@") != std::string::npos));
    for (const char c : m.local)
        RW_ASSERT(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f, "control character in local part");
    const std::string t = to_string(m);
    RW_ASSERT(t.size() <= s.size(), "canonical form longer than the input");
    auto again = parse_mailbox(t, utf8_ok);
    RW_ASSERT(again.has_value(), "to_string output does not parse: {}", t);
    RW_ASSERT(again.value() == m, "round trip changed the mailbox");
    RW_ASSERT(to_string(again.value()) == t, "to_string is not idempotent");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view s(reinterpret_cast<const char*>(data), size);
    auto plain = parse_mailbox(s, false);
    auto utf8 = parse_mailbox(s, true);
    if (plain) {
        RW_ASSERT(utf8.has_value() && utf8.value() == plain.value());
        check_mailbox(s, plain.value(), false);
    } else {
        RW_ASSERT(plain.error().code == 501 || plain.error().code == 553);
    }
    if (utf8)
        check_mailbox(s, utf8.value(), true);
    else
        RW_ASSERT(utf8.error().code == 501, "code {}", utf8.error().code);

    // The same bytes as a RCPT path.
    const std::string line = "RCPT TO:<" + std::string(s) + ">";
    auto rcpt = parse_command(line, true);
    if (utf8) {
        RW_ASSERT(rcpt.has_value(), "mailbox parsed but RCPT path refused");
        RW_ASSERT(rcpt.value().path == utf8.value());
        RW_ASSERT(!rcpt.value().had_source_route);
    }
    // Without parameters ("a@b> ORCPT=x;y" would make some) the path is all of s.
    if (rcpt && !rcpt.value().had_source_route && !rcpt.value().path.domain.empty() && rcpt.value().params.empty())
        RW_ASSERT(utf8.has_value(), "RCPT path parsed but mailbox refused");
    return 0;
}
