// Fuzz target: arbitrary bytes as the envelope parameters the spool keeps
// for a message (mta/envelope_params.hh), for 0 to 7 recipients (the first
// byte's low bits). Checked, besides never reading out of bounds: what
// decodes has one entry per recipient and values in range; its encoding
// decodes to the same thing (for a version-1 input) and encodes the same
// again; the text form never crashes and names what is set.
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/envelope_params as a ctest.
#include <cstdint>
#include <string_view>

#include "mta/envelope_params.hh"
#include "runtime/base/assert.hh"

using namespace rw::mta;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0)
        return 0;
    const size_t rcpts = data[0] & 7;
    const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
    auto p = decode_params(bytes, rcpts);
    if (!p)
        return 0;
    RW_ASSERT(p->rcpts.size() == rcpts, "{} entries for {} recipients", p->rcpts.size(), rcpts);
    RW_ASSERT(uint8_t(p->body) <= uint8_t(body_type::binary_mime) && uint8_t(p->ret) <= uint8_t(dsn_ret::hdrs));
    for (const auto& r : p->rcpts) {
        RW_ASSERT(r.notify <= 15 && (!(r.notify & k_notify_never) || r.notify == k_notify_never),
                  "NOTIFY bits {}", r.notify);
        if (!bytes.empty() && bytes[0] == 1)
            RW_ASSERT(r.orcpt.size() <= k_max_orcpt_bytes);
    }
    const std::string e = encode_params(*p);
    auto again = decode_params(e, rcpts);
    RW_ASSERT(again.has_value(), "an encoding does not decode");
    if (!bytes.empty() && bytes[0] == 1)
        RW_ASSERT(*again == *p, "the round trip changed the parameters");
    RW_ASSERT(encode_params(*again) == e, "the encoding is not canonical");
    const std::string t = describe_params(*p);
    if (p->smtputf8)
        RW_ASSERT(t.find("SMTPUTF8") != std::string::npos);
    return 0;
}
