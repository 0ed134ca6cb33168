// The host access table at work in the SMTP server: what every core's
// sessions share to apply sender groups, mail flow policies and connection
// screening (policy/access.hh decides; this holds the state).
//
//   - access_env: one configuration's table, screening options and the
//     per-policy recipients-per-hour buckets (every core together, so a
//     client cannot multiply its hour by landing on other cores);
//   - pass_cache: the clients that passed screening, kept across
//     configuration changes, so they skip the greeting pause and the tests.
//
// Both lock a mutex: at connect, at the end of a session, and at RCPT for
// policies with an hourly limit only, never per byte or per command.
#pragma once

#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "mta/smtp/call_ahead.hh"
#include "policy/access.hh"
#include "policy/recipient_access.hh"
#include "policy/rate_limit.hh"
#include "runtime/net/addr.hh"

namespace rw::mta {

enum class screen_action { ignore, enforce, drop };

struct screening_options {
    screen_action pregreet = screen_action::drop;
    screen_action pipelining = screen_action::ignore;
    screen_action bare_lf = screen_action::ignore;
    screen_action non_smtp = screen_action::drop;
    std::chrono::seconds pass_ttl{86'400};
};

// Clients that passed screening, until their time is up; at most
// `capacity`, the least recently seen forgotten first.
class pass_cache {
public:
    using clock = std::chrono::steady_clock;
    explicit pass_cache(size_t capacity) : _capacity(capacity ? capacity : 1) {}

    bool passed(const net::address& peer, clock::time_point now);
    void add(const net::address& peer, clock::time_point until);
    void set_capacity(size_t n);
    size_t size();

private:
    struct entry {
        std::string key;
        clock::time_point until;
    };
    void trim();
    std::mutex _lock;
    size_t _capacity;
    std::list<entry> _lru;  // front: most recently seen
    std::unordered_map<std::string, std::list<entry>::iterator> _index;
};

// A token bucket per client, shared by every core.
class shared_bucket {
public:
    shared_bucket(double per_second, double burst, size_t entries) : _rl(per_second, burst, entries) {}
    bool allow(const net::address& who, std::chrono::steady_clock::time_point now) {
        std::lock_guard g(_lock);
        return _rl.allow(who, now);
    }

private:
    std::mutex _lock;
    policy::rate_limiter _rl;
};

// One configuration's access control, shared by every core.
struct access_env {
    std::shared_ptr<const policy::access::table> table;
    screening_options screening;
    // Per policy (the table's indexes): its recipients-per-hour bucket, or null.
    std::vector<std::unique_ptr<shared_bucket>> per_hour;
    pass_cache* passed = nullptr;  // null: no memory of passed clients
    policy::recipient_table recipients;         // [[recipient_access]]
    std::unique_ptr<call_ahead_env> call_ahead;  // null: no recipient is validated
};

}  // namespace rw::mta
