// Recipient validation by SMTP call-ahead: before a RCPT for one of the
// configured domains is accepted, the internal server is asked (MAIL
// FROM:<sender>, RCPT TO:<rcpt>, RSET, QUIT) and its verdict is the
// gateway's: an unknown user is refused at RCPT, so no bounce is ever made
// for it (no backscatter). Answers are cached, both ways, for every core;
// a server that does not answer in time, or answers 4xx, is a temporary
// failure: fail-open (accept, and let delivery sort it out) or 451 4.4.3,
// as configured. Nothing else is cached.
#pragma once

#include <chrono>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "mta/delivery/client.hh"
#include "runtime/net/addr.hh"
#include "runtime/reactor/task.hh"

namespace rw::mta {

struct call_ahead_options {
    std::vector<std::string> domains;  // lower case; ".example.test" for its subdomains
    std::vector<net::address> hosts;   // tried in order
    std::string sender;                // MAIL FROM; "" is the null sender
    std::chrono::milliseconds timeout{5000};  // connect, and each reply
    std::chrono::seconds ttl{3600};           // of a valid recipient
    std::chrono::seconds negative_ttl{600};   // of an unknown one
    bool fail_open = true;
    std::string hostname;  // our EHLO name
};

// The verdicts of the internal servers, by recipient (lower case), shared
// by every core.
class call_ahead_cache {
public:
    using clock = std::chrono::steady_clock;
    explicit call_ahead_cache(size_t capacity) : _capacity(capacity ? capacity : 1) {}
    std::optional<delivery::smtp_reply> find(const std::string& rcpt, clock::time_point now);
    void put(const std::string& rcpt, const delivery::smtp_reply& r, clock::time_point until);
    void set_capacity(size_t n);

private:
    struct entry {
        std::string key;
        delivery::smtp_reply reply;
        clock::time_point until;
    };
    std::mutex _lock;
    size_t _capacity;
    std::list<entry> _lru;
    std::unordered_map<std::string, std::list<entry>::iterator> _index;
};

struct call_ahead_env {
    call_ahead_options options;
    delivery::options client;  // the SMTP client's name and timeouts
    call_ahead_cache* cache = nullptr;

    // Whether mail for `domain` (lower case) is validated.
    bool covers(std::string_view domain) const;
};

struct call_ahead_result {
    enum class verdict { valid, invalid, unknown } v = verdict::unknown;
    delivery::smtp_reply reply;  // the server's (invalid: what the client is told is built from it)
    bool cached = false;
    std::string why;  // unknown: what went wrong
};

// Call-aheads at once on one core; more get `unknown` (no connection).
inline constexpr unsigned k_max_in_flight = 64;

task<call_ahead_result> call_ahead(const call_ahead_env* env, std::string rcpt);

}  // namespace rw::mta
