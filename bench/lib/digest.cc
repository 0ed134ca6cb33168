#include "bench/lib/digest.hh"

#include <cstring>

namespace rw::bench {

namespace {
// Odd 64-bit constants with well-mixed bits (fractions of irrational numbers).
constexpr uint64_t k_m1 = 0x9e3779b97f4a7c15ull;  // golden ratio
constexpr uint64_t k_m2 = 0xbf58476d1ce4e5b9ull;
constexpr uint64_t k_m3 = 0x94d049bb133111ebull;
constexpr uint64_t k_seed[4] = {0x243f6a8885a308d3ull, 0x13198a2e03707344ull, 0xa4093822299f31d0ull,
                                0x082efa98ec4e6c89ull};  // digits of pi

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t load64(const unsigned char* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;  // little-endian host order; the digest is only compared on x86-64
}
inline uint64_t step(uint64_t lane, uint64_t w) { return rotl(lane ^ (w * k_m2), 29) * k_m1; }
inline uint64_t avalanche(uint64_t x) {
    x ^= x >> 30;
    x *= k_m2;
    x ^= x >> 27;
    x *= k_m3;
    x ^= x >> 31;
    return x;
}
}  // namespace

void digest64::reset() noexcept {
    std::memcpy(_lane, k_seed, sizeof _lane);
    _nbuf = 0;
    _total = 0;
}

void digest64::block(const unsigned char* p) noexcept {
    _lane[0] = step(_lane[0], load64(p));
    _lane[1] = step(_lane[1], load64(p + 8));
    _lane[2] = step(_lane[2], load64(p + 16));
    _lane[3] = step(_lane[3], load64(p + 24));
}

void digest64::update(const void* data, size_t len) noexcept {
    auto p = static_cast<const unsigned char*>(data);
    _total += len;
    if (_nbuf) {
        size_t take = std::min(len, sizeof _buf - _nbuf);
        std::memcpy(_buf + _nbuf, p, take);
        _nbuf += take;
        p += take;
        len -= take;
        if (_nbuf < sizeof _buf)
            return;
        block(_buf);
        _nbuf = 0;
    }
    while (len >= 32) {
        block(p);
        p += 32;
        len -= 32;
    }
    std::memcpy(_buf, p, len);
    _nbuf = len;
}

uint64_t digest64::finish() const noexcept {
    uint64_t h = rotl(_lane[0], 1) + rotl(_lane[1], 7) + rotl(_lane[2], 12) + rotl(_lane[3], 18);
    for (int i = 0; i < 4; ++i)
        h = (h ^ avalanche(_lane[i])) * k_m1 + k_m3;
    h ^= _total * k_m2;
    // The tail: whole words, then the bytes left, each position-dependent.
    size_t i = 0;
    for (; i + 8 <= _nbuf; i += 8)
        h = rotl(h ^ avalanche(load64(_buf + i)), 27) * k_m1 + k_m2;
    for (; i < _nbuf; ++i)
        h = rotl(h ^ (uint64_t(_buf[i]) * k_m3), 11) * k_m1;
    return avalanche(h);
}

std::string to_hex(uint64_t v) {
    static const char d[] = "0123456789abcdef";
    std::string s(16, '0');
    for (int i = 15; i >= 0; --i, v >>= 4)
        s[size_t(i)] = d[v & 15];
    return s;
}

}  // namespace rw::bench
