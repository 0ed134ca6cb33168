// A histogram with fixed bucket bounds, for the Prometheus endpoint: counts
// per upper bound (cumulated only when exposed), their sum and count.
// Adding is a short linear scan; no allocation after construction.
//
//   histogram h(k_latency_seconds);  h.add(0.0031);
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace rw {

class histogram {
public:
    histogram() = default;
    explicit histogram(std::span<const double> bounds)
        : _bounds(bounds.begin(), bounds.end()), _counts(bounds.size() + 1, 0) {}

    void add(double v) noexcept {
        size_t i = 0;
        while (i < _bounds.size() && v > _bounds[i])
            ++i;
        if (i < _counts.size())
            ++_counts[i];
        _sum += v;
        ++_count;
    }
    // Adds another histogram of the same bounds.
    void merge(const histogram& o) {
        if (_counts.empty()) {
            *this = o;
            return;
        }
        for (size_t i = 0; i < _counts.size() && i < o._counts.size(); ++i)
            _counts[i] += o._counts[i];
        _sum += o._sum;
        _count += o._count;
    }

    std::span<const double> bounds() const { return _bounds; }
    // Per bucket, not cumulated; the last is above every bound.
    std::span<const uint64_t> counts() const { return _counts; }
    double sum() const { return _sum; }
    uint64_t count() const { return _count; }

private:
    std::vector<double> _bounds;
    std::vector<uint64_t> _counts;
    double _sum = 0;
    uint64_t _count = 0;
};

// Seconds, for I/O latencies: 50 us to 5 s.
inline constexpr double k_io_latency_bounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                  0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,     5};
// Counts, for batch sizes: powers of two to 1024.
inline constexpr double k_batch_size_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

}  // namespace rw
