// A log-linear latency histogram (the HdrHistogram layout): values below
// 2^(k_sub_bits+1) are counted exactly; above, each power of two is split
// into 2^k_sub_bits equal sub-buckets, so any value is known to within
// 1/2^k_sub_bits (0.8 %) of itself, over the whole 64-bit range, in a
// fixed 60 KiB of counters. Recording is a shift and an increment.
//
// Percentiles follow the nearest-rank definition: the value of rank
// ceil(q/100 * n) in sorted order. The histogram answers with the highest
// value of that rank's bucket (never below the true value, at most 0.8 %
// above it); min and max are kept exactly.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace rw::bench {

class histogram {
public:
    static constexpr unsigned k_sub_bits = 7;
    static constexpr unsigned k_buckets = (64 - k_sub_bits + 1) << k_sub_bits;

    void record(uint64_t v, uint64_t count = 1) noexcept;
    void merge(const histogram& o) noexcept;
    void reset() noexcept;

    uint64_t count() const noexcept { return _count; }
    uint64_t min() const noexcept { return _count ? _min : 0; }
    uint64_t max() const noexcept { return _max; }
    double mean() const noexcept { return _count ? double(_sum) / double(_count) : 0.0; }
    // q in [0, 100]; 0 when empty. q = 100 gives max().
    uint64_t percentile(double q) const noexcept;

    static unsigned index_of(uint64_t v) noexcept;
    // The highest value that falls into bucket i.
    static uint64_t highest_of(unsigned i) noexcept;

private:
    std::vector<uint64_t> _counts = std::vector<uint64_t>(k_buckets, 0);
    uint64_t _count = 0;
    uint64_t _min = UINT64_MAX;
    uint64_t _max = 0;
    __uint128_t _sum = 0;
};

}  // namespace rw::bench
