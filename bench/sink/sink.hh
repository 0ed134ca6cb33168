// ringway-sink's shared state: the options, the per-core counters and the
// process-wide atomics. Each core writes only its own core_state (the
// sessions of that core do); the stats thread reads the atomic counters
// while the cores run; main() merges everything after the engine has
// stopped (bench/sink/report.cc). The greylist table lives in core 0's
// state and is reached from other cores through rw::submit_to.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bench/lib/histogram.hh"
#include "runtime/net/addr.hh"
#include "runtime/net/tls.hh"

namespace rw::bench::sink {

// Every misbehaviour the sink can inject, by flag or magic recipient. The
// names are the keys of the report's "faults" object.
enum class fault : unsigned {
    rcpt_tempfail,
    rcpt_permfail,
    greylist,
    data_tempfail,
    data_permfail,
    disconnect,
    garbage,
    endless,
    stall,
    data_delay,
    delay,
    slow_read,
    refuse_after,
    max_connections,
    reply_421,
    lose,
    corrupt,
    duplicate,
    count_
};
constexpr size_t k_faults = size_t(fault::count_);
const char* fault_name(fault f);

struct options {
    net::address listen;
    unsigned cores = 1;
    bool pin = true;
    std::string hostname;
    uint64_t max_size_bytes = 64ull << 20;
    std::chrono::milliseconds timeout{300'000};
    std::string tls_cert, tls_key;
    std::string report_file = "-";
    bool text = false;
    std::string stats_file, save_dir, port_file, expect_file;
    uint64_t seed = 0;
    // Probabilities per event.
    double rcpt_tempfail = 0, rcpt_permfail = 0, data_tempfail = 0, data_permfail = 0;
    double disconnect_in_data = 0, garbage = 0, endless = 0, stall = 0, reply_421 = 0;
    // A server that misbehaves after acknowledging: proves the verdicts.
    double lose = 0, corrupt = 0, duplicate = 0;
    std::chrono::milliseconds greylist{0}, delay{0}, data_delay{0};
    uint64_t slow_read_bps = 0;
    std::optional<uint64_t> refuse_after, max_connections;

    bool tls() const { return !tls_cert.empty(); }
};

// Single writer (the owning core), any reader: plain load + store, no
// locked instruction on the hot path.
inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

class session;

// Owned by main(), written by one core.
struct alignas(64) core_state {
    unsigned index = 0;
    // Read by the stats thread while the core runs.
    std::atomic<uint64_t> received{0}, recipients{0}, ok{0}, corrupt{0}, unmarked{0};

    uint64_t transactions = 0;      // MAIL commands accepted
    uint64_t bytes = 0;             // message bytes (after unstuffing) of acknowledged messages
    uint64_t max_msgs_per_conn = 0;
    uint64_t seq = 0;               // acknowledged messages, for queue ids
    std::array<uint64_t, k_faults> faults{};
    uint64_t fault_4xx = 0, fault_5xx = 0;  // replies given because of a fault
    std::array<uint64_t, 6> replies{};      // every reply, by first digit
    std::unordered_map<std::string, uint64_t> peers;  // ip -> acknowledged messages
    std::unordered_map<std::string, uint64_t> peer_connections;  // ip -> connections
    std::unordered_map<std::string, uint64_t> helos;  // "ip name" -> connections that greeted with name
    std::vector<uint64_t> per_second;                 // acknowledged messages per second since start
    // "id\0recipient" of every accepted recipient of every acknowledged marked message.
    std::vector<std::string> records;
    std::vector<std::string> corrupt_ids;  // the first few
    histogram latency;  // ns from the mark's sent time to acceptance (ok messages)
    uint64_t rng = 0;                      // splitmix64 state

    // Core 0 only: (ip, sender, recipient) -> first attempt.
    std::unordered_map<std::string, std::chrono::steady_clock::time_point> greylist;

    std::unordered_set<session*> sessions;  // live, for shutdown
    std::unique_ptr<net::tls_context> tls;
};

struct globals {
    options opt;
    std::vector<std::unique_ptr<core_state>> cores;
    std::atomic<uint64_t> connections{0};  // accepted, ever
    std::atomic<int64_t> current{0};
    std::atomic<int64_t> max_concurrent{0};
    std::atomic<int64_t> live_sessions{0};  // across cores, for an orderly stop
    std::atomic<unsigned> cores_stopped{0};  // cores that no longer accept
    std::chrono::steady_clock::time_point start;
};
extern globals g;

constexpr size_t k_max_listed_ids = 20;

}  // namespace rw::bench::sink
