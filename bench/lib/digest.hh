// A streaming 64-bit digest of message bodies for the load generator's
// integrity header. Not cryptographic: it catches corruption, truncation and
// swapped bodies, at several GB/s, so the sink can check every byte it
// receives without becoming the bottleneck. Four independent lanes of
// multiply-rotate over 8-byte words; bytes may be fed in pieces of any size
// and give the same digest as one call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace rw::bench {

class digest64 {
public:
    digest64() noexcept { reset(); }
    void reset() noexcept;
    void update(const void* data, size_t len) noexcept;
    void update(std::string_view s) noexcept { update(s.data(), s.size()); }
    uint64_t finish() const noexcept;
    uint64_t length() const noexcept { return _total; }

    static uint64_t of(std::string_view s) noexcept {
        digest64 d;
        d.update(s);
        return d.finish();
    }

private:
    void block(const unsigned char* p) noexcept;
    uint64_t _lane[4];
    unsigned char _buf[32];
    size_t _nbuf = 0;
    uint64_t _total = 0;
};

std::string to_hex(uint64_t v);

}  // namespace rw::bench
