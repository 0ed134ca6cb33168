// The retry schedule of deferred mail: the first retry after
// options::first_retry, each later one backoff times the one before, at
// most max_retry, each with +-jitter; a greylisting reply (450/451) at the
// first attempt comes back after greylist_retry at most.
#pragma once

#include <cstdint>
#include <random>

#include "mta/delivery/delivery.hh"

namespace rw::mta::delivery {

// Milliseconds until the next attempt of a recipient deferred with code
// after attempts attempts (1 = the first one just failed); at least 1.
int64_t retry_delay_ms(const options& o, uint32_t attempts, int code, std::mt19937_64& rng);

// The nominal time (no jitter, no greylisting) the schedule takes to make
// `attempts` attempts after the first: a clock that lives in the
// recipients' states, for mail whose lifetime does not start at arrival.
int64_t retry_schedule_ms(const options& o, uint32_t attempts);

}  // namespace rw::mta::delivery
