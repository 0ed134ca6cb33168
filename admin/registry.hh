// The per-core registry: what each core runs (its spool shards, delivery
// service, SMTP listeners' environments, resolver), reachable from any core
// by cross-core call. Each core fills its own slot before the start-up
// barrier and clears nothing until after the shutdown barrier, so between
// the two every pointer is valid; a slot is only dereferenced on its own
// core (call()).
//
//   auto views = co_await reg.call(c, [](core_slot& s) { return s.delivery->destinations(); });
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "admin/config.hh"
#include "fs/spool.hh"
#include "mta/delivery/delivery.hh"
#include "mta/delivery/shared.hh"
#include "mta/smtp/outbound.hh"
#include "mta/smtp/server.hh"
#include "policy/rate_limit.hh"
#include "runtime/reactor/task.hh"
#include "runtime/net/dns.hh"
#include "runtime/smp/barrier.hh"
#include "runtime/smp/smp.hh"

namespace rw::admin {

struct core_slot {
    unsigned core = 0;
    std::vector<fs::shard*> shards;
    mta::delivery::service* delivery = nullptr;
    std::vector<mta::server_env*> listeners;                 // per listener, in configuration order
    std::vector<mta::connection_limits*> listener_limits;    // shared by every core; same order
    // The options new sessions of each listener start with (a commit
    // replaces them; open sessions keep theirs). Sized before `started`.
    std::vector<const mta::listener_options*> listener_options;
    // Per-client rate limiters of this core, every set made (sessions may
    // hold the older ones); the newest are in the listeners' environments.
    std::vector<std::unique_ptr<policy::rate_limiter>> rate_limiters;
    net::resolver* dns = nullptr;
    policy::dmarc_report::store* dmarc_reports = nullptr;  // recorded here; the control plane gathers it
    // Set by ringwayd, called on this core by a commit: listener i takes
    // connections on `fd` from now (the old socket closes once its accept
    // loop has ended; open sessions go on), or serves this certificate to
    // new sessions. Each returns "" or why it could not.
    std::function<std::string(size_t i, int fd)> reopen_listener;
    std::function<std::string(size_t i, const std::string& cert, const std::string& key)> reload_tls;
};

class registry {
    std::vector<core_slot> _slots;

public:
    explicit registry(unsigned cores) : _slots(cores), started(cores), delivery_stopped(cores) {
        for (unsigned c = 0; c < cores; ++c)
            _slots[c].core = c;
    }
    registry(const registry&) = delete;

    unsigned cores() const { return unsigned(_slots.size()); }
    // The calling core's own slot (to fill it before `started`).
    core_slot& mine() { return _slots[this_core()]; }

    // Runs fn(slot) on `core` and returns its result here. fn may return a
    // value or a task.
    template <typename F>
    auto call(unsigned core, F fn) {
        core_slot* s = &_slots[core];
        return submit_to(core, [s, fn = std::move(fn)]() mutable { return fn(*s); });
    }

    // Outbound spam control (shared by every core; null until set).
    mta::outbound_control* outbound = nullptr;
    // Delivery's shared counters: providers, warm-up (null until set).
    mta::delivery::shared_state* delivery_shared = nullptr;

    // The DKIM signing keys in force (a commit or `dkim reload` replaces them).
    policy::dkim::keyring_holder dkim_keys;

    // Every core has filled its slot (after this, call() may be used).
    core_barrier started;
    // Every core's delivery has stopped: connections on one core record
    // outcomes in other cores' shards, so shards close only after this.
    core_barrier delivery_stopped;

    // The spool's geometry (set before the engine runs).
    fs::geometry spool;
    const fs::geometry& geometry() const { return spool; }
    // The core whose shards include the one that issued message `id`.
    unsigned core_of_message(uint64_t id) const { return fs::shard::index_of(id) % cores(); }

    // The configuration in force (its restart keys as at start-up) and the
    // newest committed one; set on core 0 and read there only.
    const config* running = nullptr;
    const config* committed = nullptr;
    // Applies a committed configuration on every core (set by ringwayd;
    // call on core 0, one at a time). Returns "" or why it could not (and
    // nothing changed); "partial: why" when it is in force but a core could
    // not take all of it (a listener not moved there, say).
    std::function<task<std::string>(config committed)> apply;

    // Resource conservation's level and why (admin/conservation.hh);
    // written and read on core 0 only.
    unsigned conservation_level = 0;
    std::string conservation_reason;

    const std::chrono::steady_clock::time_point start_time = std::chrono::steady_clock::now();
    const int64_t start_unix = std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
};

}  // namespace rw::admin
