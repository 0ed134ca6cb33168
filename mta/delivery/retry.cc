#include "mta/delivery/retry.hh"

#include <algorithm>

namespace rw::mta::delivery {

int64_t retry_delay_ms(const options& o, uint32_t attempts, int code, std::mt19937_64& rng) {
    double ms = double(o.first_retry.count());
    for (uint32_t i = 1; i < attempts && ms < double(o.max_retry.count()); ++i)
        ms *= o.backoff;
    ms = std::min(ms, double(o.max_retry.count()));
    if (attempts <= 1 && (code == 450 || code == 451))
        ms = std::min(ms, double(o.greylist_retry.count()));  // greylisting: come back soon
    std::uniform_real_distribution<double> j(1.0 - o.jitter, 1.0 + o.jitter);
    return std::max<int64_t>(1, int64_t(ms * j(rng)));
}

int64_t retry_schedule_ms(const options& o, uint32_t attempts) {
    const double cap = double(o.max_retry.count());
    double ms = double(o.first_retry.count()), total = 0;
    uint32_t i = 1;
    // The growing part (a few dozen steps at most), then max_retry (or a
    // delay that no longer grows) per attempt left.
    for (; i < attempts && ms < cap && i < 64; ++i) {
        total += ms;
        ms *= o.backoff;
    }
    if (i < attempts)
        total += double(attempts - i) * std::min(ms, cap);
    return int64_t(std::min(total, 9e18));
}

}  // namespace rw::mta::delivery
