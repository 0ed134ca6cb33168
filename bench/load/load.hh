// ringway-load: the bundled SMTP load generator (see main.cc for the
// command line). Each core runs its share of the connections; a core's
// connections, counters and latency histogram are its own, and the main
// thread only reads the counters (relaxed atomics) for the progress line
// and merges everything once the cores are done.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/lib/args.hh"
#include "bench/lib/digest.hh"
#include "bench/lib/histogram.hh"
#include "policy/dkim_sign.hh"
#include "runtime/net/addr.hh"
#include "runtime/net/tls.hh"
#include "runtime/reactor/task.hh"

namespace rw::load {

using clock = std::chrono::steady_clock;

struct options {
    net::address server;
    std::string server_text = "127.0.0.1:2525";
    unsigned connections = 10;
    uint64_t per_conn = 100;  // 0 = unlimited
    std::vector<bench::size_share> mix = {{4096, 1}};
    std::string mix_text = "4k";
    unsigned rcpts = 1;
    unsigned domains = 1;
    unsigned users = 1000;
    std::string from = "load{c}@sender.localhost";
    std::string to = "rcpt{n}@d{d}.localhost";
    std::string ehlo = "load.localhost";
    double rate = 0;  // msg/s; 0 = closed loop
    std::string rate_text;
    uint64_t count = 0;
    std::chrono::milliseconds duration{0};
    std::chrono::milliseconds timeout{30'000};
    bool starttls = false;
    std::string tls_ca;  // verify the server against it; empty = no verification
    std::string auth_user, auth_pass;
    bool pipelining = true;
    bool stop_on_error = false;
    unsigned cores = 1;
    std::string accepted_log;
    uint64_t seed = 0;
    // DKIM-sign every message (a PEM key, RSA or Ed25519), as a sender
    // whose mail a gateway verifies would.
    std::string dkim_key_file, dkim_domain, dkim_selector = "load";
};

// The bodies: one template per size of the mix, built once and shared
// read-only by every core.
struct body_template {
    uint64_t size = 0;       // the nominal message size it stands for
    std::string raw;         // body bytes as the receiver sees them
    std::string stuffed;     // the same, dot-stuffed for the wire
    bench::digest64 prefix;  // digest state after raw
};

struct shared_state {
    options opt;
    std::vector<body_template> bodies;
    std::vector<unsigned> mix_table;  // 1000 slots -> index into bodies, by weight
    std::string run_token;
    std::string date_header;
    std::optional<policy::dkim::signing_key> dkim_key;  // --dkim-key
    std::unique_ptr<net::tls_context> tls;
    std::atomic<bool> stop{false};        // no new messages
    std::atomic<bool> error_stop{false};  // stopped by --on-error stop
    std::string first_error;              // written once, by whoever sets error_stop
    std::atomic<bool> first_error_set{false};
    clock::time_point start;
    // Nanoseconds since start of the last successful connect: a server that
    // cannot be reached for --timeout ends the run instead of retrying forever.
    std::atomic<int64_t> last_connect_ok_ns{0};
};

struct error_entry {
    uint64_t count = 0;
    std::string sample;  // one reply text or detail
};

struct core_stats {
    std::atomic<uint64_t> attempted{0}, accepted{0}, rejected{0}, failed{0};
    std::atomic<uint64_t> rcpt_accepted{0}, rcpt_rejected{0};
    std::atomic<uint64_t> connections{0}, connect_failures{0}, in_flight{0}, errors{0};
    std::atomic<uint64_t> bytes{0};
    bench::histogram latency;              // ns, core-local
    std::map<std::string, error_entry> by_cause;  // core-local
    std::string accepted_lines;            // core-local: "id rcpt...\n"
    clock::time_point last_done{};
};

// Runs this core's share of the load; returns when it is done.
task<void> run_core(shared_state* s, core_stats* st, unsigned core, unsigned ncores);

// Builds the body templates and the mix table.
void build_bodies(shared_state& s);

}  // namespace rw::load
