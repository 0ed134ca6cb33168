// Fuzz target: the header section parser and address lists
// (mail/header.hh), and the byte encodings (mail/codec.hh). The input is a
// message. Checked, besides never reading out of bounds: feeding it in one
// piece, a byte at a time, and in pieces whose lengths come from the input
// gives the same fields, error, counts and section length; every field is
// the input's bytes at its offset, inside the section, within the limits;
// parse_mailbox agrees with parse_address_list on each field's unfolded
// value. Then the input as bytes round-trips through base64, the
// streaming base64 decoder, quoted-printable and xtext, and whatever the
// strict decoders accept, the lenient ones decode the same.
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/header as a ctest.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mail/codec.hh"
#include "mail/domain.hh"
#include "mail/header.hh"
#include "runtime/base/assert.hh"

using namespace rw::mail;

namespace {

struct outcome {
    std::vector<header_field> fields;
    header_error error = header_error::none;
    size_t malformed = 0;
    uint64_t section = 0;
    bool done = false;        // before finish()
    uint64_t returned = 0;    // the sum of what feed returned
};

// Feeds in pieces of the given lengths (0: one byte each; otherwise the
// byte at the piece's start picks its length, 1..step).
outcome run(std::string_view in, size_t step, header_limits limits) {
    header_parser p(limits);
    outcome o;
    if (step == 0) {
        o.returned = p.feed(in);
    } else {
        for (size_t at = 0; at < in.size();) {
            const size_t n = step == 1 ? 1 : 1 + static_cast<unsigned char>(in[at]) % step;
            o.returned += p.feed(in.substr(at, n));
            at += n;
        }
    }
    o.done = p.done();
    p.finish();
    RW_ASSERT(p.done(), "not done after finish");
    RW_ASSERT(p.feed("A: 1\r\n\r\n") == 0, "bytes taken after the end");
    o.fields = p.fields();
    o.error = p.error();
    o.malformed = p.malformed_lines();
    o.section = p.section_bytes();
    return o;
}

void check_same(const outcome& a, const outcome& b) {
    RW_ASSERT(a.fields.size() == b.fields.size(), "{} fields, split {}", a.fields.size(), b.fields.size());
    for (size_t i = 0; i < a.fields.size(); ++i)
        RW_ASSERT(a.fields[i].raw == b.fields[i].raw && a.fields[i].name_len == b.fields[i].name_len &&
                      a.fields[i].offset == b.fields[i].offset,
                  "field {} differs when split", i);
    RW_ASSERT(a.error == b.error && a.malformed == b.malformed && a.section == b.section && a.done == b.done,
              "split parse differs");
    if (a.section > 0)
        RW_ASSERT(b.returned == b.section, "feed returned {} for a section of {}", b.returned, b.section);
}

bool is_wsp(char c) { return c == ' ' || c == '\t'; }

void check_fields(std::string_view in, const outcome& o, const header_limits& limits) {
    RW_ASSERT(o.section <= in.size(), "section {} past the input {}", o.section, in.size());
    if (o.section > 0)
        RW_ASSERT(o.returned == o.section, "feed returned {} for a section of {}", o.returned, o.section);
    if (o.done && o.section > 0)
        RW_ASSERT(in[o.section - 1] == '\n', "the section does not end with a line break");
    RW_ASSERT(o.fields.size() <= limits.max_fields, "{} fields kept", o.fields.size());
    if (o.error == header_error::none)
        RW_ASSERT(o.section <= limits.max_section_bytes, "a section of {} without an error", o.section);
    uint64_t end = 0;
    for (const auto& f : o.fields) {
        RW_ASSERT(f.offset >= end && f.offset + f.raw.size() <= o.section, "field outside the section");
        RW_ASSERT(in.substr(f.offset, f.raw.size()) == f.raw, "field is not the input at its offset");
        RW_ASSERT(f.raw.size() <= limits.max_field_bytes, "field of {} bytes kept", f.raw.size());
        RW_ASSERT(f.name_len > 0 && f.name_len < f.raw.size(), "bad name length");
        for (char c : f.name())
            RW_ASSERT(c > ' ' && c <= '~' && c != ':', "name byte {}", int(c));
        end = f.offset + f.raw.size();

        const std::string v = f.unfolded_value();
        RW_ASSERT(v.size() <= f.raw_value().size(), "unfolding grew the value");
        RW_ASSERT(v.empty() || (!is_wsp(v.front()) && !is_wsp(v.back())), "unfolded value not trimmed");
        const auto list = parse_address_list(v);
        if (list)
            for (const auto& m : *list) {
                const bool literal = !m.domain.empty() && m.domain.front() == '[';
                RW_ASSERT(literal || check_domain(m.domain, domain_rules{.utf8 = true}) == nullptr,
                          "bad domain accepted: {}", m.domain);
            }
        if (const auto m = parse_mailbox(v))
            RW_ASSERT(list && list->size() == 1 && list->front() == *m,
                      "parse_mailbox and parse_address_list disagree");
    }
}

void check_codecs(std::string_view in) {
    // base64
    const std::string b64 = base64_encode(in);
    RW_ASSERT(base64_decode(b64) == std::optional<std::string>(in), "base64 round trip");
    std::string wrapped;
    for (size_t i = 0; i < b64.size(); i += 76)
        wrapped.append(b64, i, 76).append("\r\n");
    RW_ASSERT(base64_decode(wrapped, base64_mode::lenient) == std::optional<std::string>(in), "lenient round trip");
    {
        base64_decoder d;
        std::string out;
        for (size_t at = 0; at < wrapped.size();) {
            const size_t n = 1 + static_cast<unsigned char>(wrapped[at]) % 7;
            d.feed(std::string_view(wrapped).substr(at, n), out);
            at += n;
        }
        RW_ASSERT(d.finish(out) && out == in, "streaming base64 round trip");
    }
    const auto strict = base64_decode(in);
    const auto lenient = base64_decode(in, base64_mode::lenient);
    if (strict) {
        RW_ASSERT(base64_encode(*strict) == in, "strict base64 accepted a second spelling");
        RW_ASSERT(lenient == strict, "lenient base64 disagrees with strict");
    }
    if (lenient) {
        base64_decoder d;
        std::string out;
        d.feed(in, out);
        RW_ASSERT(d.finish(out) && out == *lenient, "streaming base64 disagrees with lenient");
    }

    // quoted-printable
    const std::string qp = qp_encode(in);
    std::string back;
    RW_ASSERT(qp_decode(qp, back) && back == in, "quoted-printable round trip");
    for (size_t start = 0; start <= qp.size();) {
        const size_t nl = qp.find("\r\n", start);
        const size_t len = (nl == std::string::npos ? qp.size() : nl) - start;
        RW_ASSERT(len <= 76, "quoted-printable line of {}", len);
        if (nl == std::string::npos)
            break;
        start = nl + 2;
    }
    std::string ignored;
    (void)qp_decode(in, ignored);

    // xtext
    const std::string xt = xtext_encode(in);
    RW_ASSERT(xtext_decode(xt) == std::optional<std::string>(in), "xtext round trip");
    RW_ASSERT(xtext_decode_lenient(xt) == in, "lenient xtext round trip");
    if (const auto x = xtext_decode(in))
        RW_ASSERT(xtext_decode_lenient(in) == *x, "lenient xtext disagrees with strict");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    header_limits limits;
    if (size % 3 == 1)  // tight limits for a third of the inputs
        limits = {.max_fields = 1 + size % 7, .max_field_bytes = 8 + size % 61, .max_section_bytes = 16 + size % 200};
    const outcome whole = run(in, 0, limits);
    check_fields(in, whole, limits);
    check_same(whole, run(in, 1, limits));
    check_same(whole, run(in, 13, limits));
    check_codecs(in);
    return 0;
}
