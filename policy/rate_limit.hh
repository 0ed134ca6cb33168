// rate_limiter: a token bucket per client IP (connections per second,
// messages per second, AUTH attempts... whatever the caller counts), with
// a hard cap on how many clients it remembers.
//
// Each client starts with `burst` tokens; a request costs `cost` tokens and
// is allowed if that many are there; tokens come back at `per_second` up to
// `burst`. Time is passed in (`now`), never read here, so tests drive it and
// the decision stays a pure function of its inputs and the table.
//
// Memory is bounded: at most max_entries clients are tracked (roughly 120
// bytes each; the hash table is sized for max_entries up front, entries are
// allocated as clients arrive and reused once the cap is reached, so the
// steady state does not allocate); when a new client arrives at the cap
// the least recently seen one is forgotten. A forgotten client starts again
// with a full bucket, so the cap trades a little precision under a flood of
// distinct addresses for never growing without limit. A client that has
// been idle long enough to refill completely loses nothing when forgotten,
// and LRU order forgets those first.
//
// IPv6 clients are keyed by their /64 (ipv6_prefix_len) by default: one
// host usually owns a whole /64 and could otherwise walk through 2^64
// addresses, each with a fresh bucket. IPv4 (and IPv4-mapped IPv6) clients
// are keyed by their full address.
//
// Not thread-safe: each shard owns its own limiter (limits per shard), and
// it is not shared.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <unordered_map>

#include "policy/cidr.hh"
#include "runtime/net/addr.hh"

namespace rw::policy {

class rate_limiter {
public:
    using clock = std::chrono::steady_clock;

    // per_second >= 0 (0: tokens never come back), burst > 0, max_entries > 0,
    // ipv6_prefix_len 1..128.
    rate_limiter(double per_second, double burst, size_t max_entries, unsigned ipv6_prefix_len = 64);

    // Takes `cost` tokens from who's bucket if it holds that many and says
    // whether it did. A refused request takes nothing. `now` going backwards
    // is treated as no time passing. cost >= 0; a cost above burst is never
    // allowed.
    bool allow(const rw::net::address& who, clock::time_point now, double cost = 1) noexcept;

    // Clients currently tracked; never more than max_entries().
    size_t size() const { return _index.size(); }
    size_t max_entries() const { return _max_entries; }

private:
    struct key_hash {
        uint64_t k0 = 0, k1 = 0;  // secret per limiter, so peers cannot aim at one hash chain
        size_t operator()(const canonical_ip& ip) const noexcept;
    };
    struct entry {
        canonical_ip key;
        double tokens = 0;
        clock::time_point last{};
    };
    using lru_list = std::list<entry>;  // front: most recently seen

    canonical_ip key_of(const rw::net::address& who) const noexcept;

    double _per_second;
    double _burst;
    size_t _max_entries;
    unsigned _ipv6_prefix_len;
    lru_list _lru;
    std::unordered_map<canonical_ip, lru_list::iterator, key_hash> _index;
};

}  // namespace rw::policy
