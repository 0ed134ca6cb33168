// Fuzz target: SPF records (policy/spf.hh). The input is lines: the first
// is the TXT record of the domain checked, each later one the answer to
// the next TXT query the evaluation makes (include, redirect, exp); other
// queries are answered from the line's first byte (an address, an MX or
// PTR name, no record, or a DNS failure). Checked, besides never reading
// out of bounds: the evaluation ends within the round bound the mta
// driver uses; a record check_record() refuses is a permerror; the
// counters stay within the limits of RFC 7208 4.6.4.
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/spf as a ctest.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "policy/spf.hh"
#include "runtime/base/assert.hh"

using namespace rw::policy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::vector<std::string_view> lines;
    std::string_view in(reinterpret_cast<const char*>(data), size);
    while (!in.empty() && lines.size() < 64) {
        size_t nl = in.find('\n');
        lines.push_back(in.substr(0, nl));
        in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
    }
    if (lines.empty())
        return 0;
    spf::request rq;
    rq.ip = *rw::net::address::parse(size % 2 ? "192.0.2.7" : "2001:db8::7", 0);
    rq.sender = "user@example.com";
    rq.helo = "mail.example.com";
    dns_answers answers;
    size_t next_txt = 0;
    std::optional<spf::outcome> out;
    for (unsigned round = 0; round < 64 && !out; ++round) {
        auto s = spf::evaluate(rq, answers);
        if (s.done) {
            out = std::move(s.done);
            break;
        }
        RW_ASSERT(!s.need.empty(), "a step neither done nor asking");
        for (const auto& q : s.need) {
            dns_answer a;
            std::string_view line = next_txt < lines.size() ? lines[next_txt] : std::string_view();
            const uint8_t b = line.empty() ? 0 : uint8_t(line[0]);
            switch (q.type) {
            case rrtype::txt:
                if (next_txt < lines.size()) {
                    a.status = dns_status::ok;
                    a.names.emplace_back(lines[next_txt++]);
                } else {
                    a.status = dns_status::nxdomain;
                }
                break;
            case rrtype::a:
            case rrtype::aaaa:
                a.status = b % 4 == 0 ? dns_status::temporary : b % 4 == 1 ? dns_status::nodata : dns_status::ok;
                if (a.status == dns_status::ok)
                    a.addrs.push_back(*rw::net::address::parse(q.type == rrtype::a ? "192.0.2.7" : "2001:db8::7", 0));
                break;
            case rrtype::mx:
            case rrtype::ptr:
                a.status = b % 3 == 0 ? dns_status::nxdomain : dns_status::ok;
                for (unsigned k = 0; a.status == dns_status::ok && k < 1u + b % 12; ++k)
                    a.names.push_back("h" + std::to_string(k) + ".example.com");
                break;
            }
            answers.put(q, std::move(a));
        }
    }
    if (!out)
        return 0;  // the driver would give temperror after its bound
    RW_ASSERT(out->dns_terms <= 11 && out->void_lookups <= 3, "terms {} voids {}", out->dns_terms, out->void_lookups);
    if (spf::check_record(lines[0]) && lines[0].starts_with("v=spf1 ") && lines[0].find('\0') == std::string_view::npos)
        RW_ASSERT(out->res == spf::result::permerror, "an invalid record gave {}", spf::to_string(out->res));
    return 0;
}
