// core_barrier: every core of the running engine calls arrive_and_wait()
// once, and each resumes when all have arrived. Counted on core 0, which
// the arrivals reach by cross-core message: no shared atomics, no polling.
// Single use: start-up ("every core has registered") and shutdown ("every
// core's delivery has stopped") each get their own.
#pragma once

#include "runtime/reactor/sync.hh"
#include "runtime/reactor/task.hh"
#include "runtime/smp/smp.hh"

namespace rw {

class core_barrier {
public:
    explicit core_barrier(unsigned cores) : _n(cores) {}
    core_barrier(const core_barrier&) = delete;
    core_barrier& operator=(const core_barrier&) = delete;

    task<void> arrive_and_wait() {
        auto fn = [this]() -> task<void> {
            // Runs on core 0: _arrived and _all are only touched there.
            if (++_arrived >= _n)
                _all.set();
            else
                co_await _all.wait();
        };
        auto t = submit_to(0, std::move(fn));
        co_await std::move(t);
    }

private:
    unsigned _n;
    unsigned _arrived = 0;
    event _all;
};

}  // namespace rw
