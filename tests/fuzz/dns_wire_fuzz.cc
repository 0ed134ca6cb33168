// Fuzz target: arbitrary bytes as a DNS response (runtime/net/dns.hh,
// dns_wire). Checked, besides never reading out of bounds: an accepted
// message reports its own header faithfully and has at least a header;
// skip_name from any offset either fails or ends inside the message.
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/dns_wire as a ctest.
#include <cstdint>
#include <span>

#include "runtime/base/assert.hh"
#include "runtime/net/dns.hh"

namespace wire = rw::net::dns_wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::span<const uint8_t> msg(data, size);
    auto s = wire::summarize(msg);
    if (s) {
        RW_ASSERT(size >= wire::header_bytes, "accepted a message of {} bytes", size);
        auto u16 = [&](size_t o) { return uint16_t(data[o] << 8 | data[o + 1]); };
        const auto& v = s.value();
        RW_ASSERT(v.id == u16(0) && v.rcode == (data[3] & 0x0F) && v.truncated == bool(data[2] & 0x02));
        RW_ASSERT(v.qdcount == u16(4) && v.ancount == u16(6) && v.nscount == u16(8) && v.arcount == u16(10));
        RW_ASSERT(v.min_answer_ttl.has_value() == (v.ancount > 0), "answers {} but ttl {}", v.ancount,
                  v.min_answer_ttl.has_value());
        if (v.min_answer_ttl)
            RW_ASSERT(*v.min_answer_ttl <= 0x7FFFFFFFu, "a TTL with its top bit set counts as 0 (RFC 2181 8)");
    } else {
        RW_ASSERT(!s.error().empty());
    }
    for (size_t off = wire::header_bytes; off < size && off < wire::header_bytes + 64; ++off) {
        auto n = wire::skip_name(msg, off);
        if (n)
            RW_ASSERT(n.value() > off && n.value() <= size, "skip_name({}) = {} of {}", off, n.value(), size);
    }
    return 0;
}
