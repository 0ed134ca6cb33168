#include "fs/crc32c.hh"

#include <nmmintrin.h>

#include <array>
#include <cstring>

namespace rw::fs {

namespace {
constexpr std::array<uint32_t, 256> make_table() {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        t[i] = c;
    }
    return t;
}
constexpr auto k_table = make_table();

__attribute__((target("sse4.2"))) uint32_t crc32c_hw(const void* data, size_t len, uint32_t crc) noexcept {
    const auto* p = static_cast<const unsigned char*>(data);
    uint64_t c = ~crc;
    while (len >= 8) {
        uint64_t v;
        std::memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = uint32_t(c);
    while (len--)
        c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

bool have_sse42() {
    static const bool yes = __builtin_cpu_supports("sse4.2");
    return yes;
}
}  // namespace

uint32_t crc32c_portable(const void* data, size_t len, uint32_t crc) noexcept {
    const auto* p = static_cast<const unsigned char*>(data);
    uint32_t c = ~crc;
    while (len--)
        c = k_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

uint32_t crc32c(const void* data, size_t len, uint32_t crc) noexcept {
    return have_sse42() ? crc32c_hw(data, len, crc) : crc32c_portable(data, len, crc);
}

}  // namespace rw::fs
