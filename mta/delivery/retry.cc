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

}  // namespace rw::mta::delivery
