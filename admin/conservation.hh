// Resource conservation: every second core 0 reads memory in use, spool
// fill and queue depth, turns them into a level (0 normal, 1 tarpit,
// 2 refuse) with hysteresis, and when the level changes sets it on every
// core's SMTP environments, logs it and records it in the mail log. See
// conservation_config for the thresholds.
#pragma once

#include <cstdint>
#include <string>

#include "admin/config.hh"
#include "admin/registry.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/task.hh"

namespace rw::admin {

// One resource's level, from its use and thresholds (same unit; a
// threshold of 0 is off), given the level it had: up at once, down only
// below threshold * (1 - hysteresis).
unsigned next_level(unsigned current, double use, double tarpit_at, double refuse_at, double hysteresis);

struct conservation_reading {
    uint64_t rss_bytes = 0, memory_limit_bytes = 0;
    uint64_t spool_used_bytes = 0, spool_total_bytes = 0;
    uint64_t queued_messages = 0;
};

class conservation {
public:
    explicit conservation(const conservation_config& c) : _c(c) {}
    // New thresholds (a configuration commit); levels are re-judged at the next update.
    void set_config(const conservation_config& c) { _c = c; }
    const conservation_config& config() const { return _c; }
    // The new overall level; `why` says which resource holds it there.
    unsigned update(const conservation_reading& r, std::string& why);
    unsigned level() const { return _level; }

private:
    conservation_config _c;
    unsigned _memory = 0, _spool = 0, _queue = 0, _level = 0;
};

// The machine's memory (MemTotal), for memory_limit = 0.
uint64_t machine_memory_bytes();
uint64_t resident_bytes();

// Runs on core 0 after the start-up barrier until stop is cancelled, on
// the thresholds of reg->running (read again every second, so a commit
// applies within one).
task<void> run_conservation(registry* reg, cancel_token* stop);

}  // namespace rw::admin
