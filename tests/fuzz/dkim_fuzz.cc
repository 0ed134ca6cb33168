// Fuzz target: DKIM and ARC (policy/dkim.hh, policy/arc.hh), and the
// DMARC record and rua= parsers (policy/dmarc*.hh). The input is a message: its header
// section's DKIM-Signature fields are parsed and their header data built,
// its body is hashed in both canonicalizations fed whole and in pieces
// (which must give the same digests), and each field value also goes
// through the tag-list, signature and key-record parsers. The evaluation
// runs with every key query answered by the input's first field value as
// a key record. Checked, besides never reading out of bounds: split and
// whole feeding agree; evaluation asks for keys once, then is done.
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/dkim as a ctest.
#include <cstdint>
#include <string>
#include <string_view>

#include "mail/header.hh"
#include "policy/arc.hh"
#include "policy/dkim.hh"
#include "policy/dmarc.hh"
#include "policy/dmarc_report.hh"
#include "runtime/base/assert.hh"

using namespace rw;
using namespace rw::policy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    mail::header_parser hp;
    const size_t used = hp.feed(in);
    hp.finish();
    const std::string_view body = hp.section_bytes() == 0 ? in : in.substr(used);
    for (const auto& f : hp.fields()) {
        std::string why;
        (void)dkim::parse_tags(f.raw_value());
        (void)dkim::parse_signature(f.raw_value(), why);
        (void)dkim::parse_key(f.unfolded_value(), why);
        (void)dkim::canon_header(f.raw, f.name_len, dkim::canon::relaxed);
        // A DMARC record and its report destinations come from DNS too.
        if (auto r = dmarc::parse_record(f.unfolded_value(), why)) {
            for (const auto& u : r->rua) {
                auto d = dmarc_report::parse_rua(u);
                RW_ASSERT(!d || (!d->address.empty() && !d->domain.empty()), "a destination without an address");
            }
        }
        (void)dmarc_report::confirms(f.unfolded_value());
    }
    for (auto c : {dkim::canon::simple, dkim::canon::relaxed}) {
        dkim::body_hasher whole(c, false, std::nullopt), split(c, false, std::nullopt);
        whole.feed(body);
        const size_t step = 1 + (size ? data[0] % 7 : 0);
        for (size_t i = 0; i < body.size(); i += step)
            split.feed(body.substr(i, step));
        RW_ASSERT(whole.finish() == split.finish(), "split feeding changed the body hash");
        RW_ASSERT(whole.canonical_bytes() == split.canonical_bytes(), "split feeding changed the length");
    }
    dkim::verification v;
    v.header_section(hp.fields());
    v.body(body);
    v.end();
    dns_answers answers;
    auto s = v.evaluate(answers);
    if (!s.done) {
        dns_answer a;
        a.status = dns_status::ok;
        a.names.push_back(hp.fields().empty() ? std::string() : hp.fields().front().unfolded_value());
        for (const auto& q : s.need)
            answers.put(q, a);
        s = v.evaluate(answers);
    }
    RW_ASSERT(s.done.has_value(), "evaluation still needs keys after they were given");
    // ARC: the same message's chain, every key answered the same way.
    arc::verification av;
    av.header_section(hp.fields());
    av.body(body);
    av.end();
    dns_answers arc_answers;
    auto a1 = av.evaluate(arc_answers);
    if (!a1.done) {
        dns_answer a;
        a.status = dns_status::ok;
        a.names.push_back(hp.fields().empty() ? std::string() : hp.fields().front().unfolded_value());
        for (const auto& q : a1.need)
            arc_answers.put(q, a);
        a1 = av.evaluate(arc_answers);
    }
    RW_ASSERT(a1.done.has_value(), "ARC evaluation still needs keys after they were given");
    return 0;
}
