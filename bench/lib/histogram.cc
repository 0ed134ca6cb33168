#include "bench/lib/histogram.hh"

#include <algorithm>
#include <cmath>

namespace rw::bench {

unsigned histogram::index_of(uint64_t v) noexcept {
    constexpr uint64_t exact = uint64_t(1) << (k_sub_bits + 1);
    if (v < exact)
        return unsigned(v);
    const unsigned msb = 63 - unsigned(__builtin_clzll(v));
    const unsigned shift = msb - k_sub_bits;
    return ((shift + 1) << k_sub_bits) + unsigned((v >> shift) - (uint64_t(1) << k_sub_bits));
}

uint64_t histogram::highest_of(unsigned i) noexcept {
    constexpr unsigned exact = 1u << (k_sub_bits + 1);
    if (i < exact)
        return i;
    const unsigned shift = (i >> k_sub_bits) - 1;
    const uint64_t top = (uint64_t(1) << k_sub_bits) + (i & ((1u << k_sub_bits) - 1));
    const uint64_t low = top << shift;
    const uint64_t width = uint64_t(1) << shift;
    return low + (width - 1);  // wraps to UINT64_MAX in the last bucket, as it should
}

void histogram::record(uint64_t v, uint64_t count) noexcept {
    if (count == 0)
        return;
    _counts[index_of(v)] += count;
    _count += count;
    _min = std::min(_min, v);
    _max = std::max(_max, v);
    _sum += __uint128_t(v) * count;
}

void histogram::merge(const histogram& o) noexcept {
    for (unsigned i = 0; i < k_buckets; ++i)
        _counts[i] += o._counts[i];
    _count += o._count;
    _min = std::min(_min, o._min);
    _max = std::max(_max, o._max);
    _sum += o._sum;
}

void histogram::reset() noexcept {
    std::fill(_counts.begin(), _counts.end(), 0);
    _count = 0;
    _min = UINT64_MAX;
    _max = 0;
    _sum = 0;
}

uint64_t histogram::percentile(double q) const noexcept {
    if (_count == 0)
        return 0;
    if (q >= 100.0)
        return _max;
    q = std::max(q, 0.0);
    // Nearest rank, with a tolerance so that 99.9 % of 1000 is rank 999 and
    // not 1000 because 99.9 / 100 * 1000 came out as 999.0000000000001.
    const double r = q / 100.0 * double(_count);
    uint64_t rank = uint64_t(std::ceil(r - 1e-9 * std::max(1.0, r)));
    rank = std::clamp<uint64_t>(rank, 1, _count);
    uint64_t seen = 0;
    for (unsigned i = 0; i < k_buckets; ++i) {
        seen += _counts[i];
        if (seen >= rank)
            return std::clamp(highest_of(i), min(), _max);
    }
    return _max;
}

}  // namespace rw::bench
