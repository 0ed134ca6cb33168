// Asynchronous DNS on the reactor: c-ares builds queries, retries and reads
// its sockets, but never waits on them itself. c-ares reports through its
// socket-state callback which sockets it wants read or written; the resolver
// polls each one with IORING_OP_POLL_ADD, runs ares_process_fd when one is
// ready, and keeps one io_uring timer armed for ares_timeout(). No blocking
// call anywhere (no getaddrinfo, no select, no hosts file).
//
//   auto mx = co_await res.resolve_mx("example.org");
//   if (!mx && mx.error().code == rw::net::dns_errc::nxdomain) ...
//
// Answers (positive and negative) are cached per (type, lower-cased name)
// for their TTL: the minimum TTL of the answer section, CNAMEs included,
// or for a negative answer min(SOA TTL, SOA MINIMUM) (RFC 2308 5), capped
// by the options. The TTLs come from our own small parser of the answer
// (dns_wire below), which also rejects malformed or truncated messages
// before c-ares's record parsers see them.
//
// Ownership: one resolver per reactor (core), created and used on that
// core only; callers keep it alive and must await close() before
// destroying it, so that no poll or timer is left in flight.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <variant>
#include <vector>

#include "runtime/base/histogram.hh"
#include "runtime/base/result.hh"
#include "runtime/net/addr.hh"
#include "runtime/reactor/reactor.hh"
#include "runtime/reactor/sync.hh"
#include "runtime/reactor/task.hh"

struct ares_channeldata;  // c-ares's channel; <ares.h> stays out of this header

namespace rw::net {

// ---- errors ----

enum class dns_errc {
    nxdomain = 1,  // the name does not exist (rcode NXDOMAIN): a permanent answer
    nodata,        // the name exists but has no record of the type asked
    temporary,     // timeout, SERVFAIL, REFUSED, connection refused, malformed or
                   // truncated answer, too many queries, resolver shut down
    bad_name,      // the name cannot be asked (empty, label over 63, name over 253)
};

const std::error_category& dns_category() noexcept;
inline std::error_code make_error_code(dns_errc e) noexcept { return {int(e), dns_category()}; }
std::string_view to_string(dns_errc e) noexcept;

struct dns_error {
    dns_errc code = dns_errc::temporary;
    std::string message;  // what happened, with the name asked ("timeout: example.org MX")
    bool permanent() const noexcept { return code == dns_errc::nxdomain || code == dns_errc::nodata || code == dns_errc::bad_name; }
    std::string describe() const;  // "nxdomain: example.org MX: domain name not found"
};

// ---- records ----

struct mx_record {
    uint16_t preference = 0;
    std::string host;  // as in the answer, without the trailing dot
    friend bool operator==(const mx_record&, const mx_record&) = default;
};

template <typename T>
using dns_result = result<std::vector<T>, dns_error>;

// ---- wire format (RFC 1035 4.1), used for TTLs and validation ----

namespace dns_wire {

inline constexpr uint16_t type_a = 1;
inline constexpr uint16_t type_cname = 5;
inline constexpr uint16_t type_soa = 6;
inline constexpr uint16_t type_ptr = 12;
inline constexpr uint16_t type_mx = 15;
inline constexpr uint16_t type_txt = 16;
inline constexpr uint16_t type_aaaa = 28;

inline constexpr size_t header_bytes = 12;
inline constexpr size_t max_name_bytes = 255;      // RFC 1035 3.1, wire form
inline constexpr unsigned max_pointer_jumps = 64;  // beyond backwards-only pointers, a second bound

// What we need from an answer: response code, flags and TTLs.
struct summary {
    uint16_t id = 0;
    uint8_t rcode = 0;
    bool truncated = false;  // TC
    uint16_t qdcount = 0;
    uint16_t ancount = 0;
    uint16_t nscount = 0;
    uint16_t arcount = 0;
    // Minimum TTL over every answer record (CNAMEs included); empty when the
    // answer section is empty. TTLs with the top bit set count as 0
    // (RFC 2181 8).
    std::optional<uint32_t> min_answer_ttl;
    // From the first SOA in the authority section: min(its TTL, MINIMUM).
    std::optional<uint32_t> negative_ttl;
};

// Walks the whole message: header, questions, answers, authority and
// additional records. Any length running past the end, a compression
// pointer that does not point backwards, a loop, a reserved label type or
// an over-long name is an error (a short static text). Never reads out of
// bounds.
result<summary, std::string_view> summarize(std::span<const uint8_t> msg) noexcept;

// Skips a possibly compressed name at off; returns the offset just after it
// in the message (after the first pointer if the name is compressed).
result<size_t, std::string_view> skip_name(std::span<const uint8_t> msg, size_t off) noexcept;

}  // namespace dns_wire

// ---- the resolver ----

struct resolver_options {
    // "IP:port" or "[IPv6]:port" of recursive servers, tried in order.
    // Empty = the servers of /etc/resolv.conf (read once, at create()).
    std::vector<std::string> servers;
    // Per try and server; c-ares doubles it for each later round of tries.
    std::chrono::milliseconds timeout{2000};
    int tries = 3;
    size_t cache_max_entries = 10000;  // least recently used goes first
    std::chrono::seconds max_ttl{std::chrono::hours(24)};
    // Negative answers without an SOA are cached for fallback_negative_ttl;
    // no negative answer is cached longer than max_negative_ttl.
    std::chrono::seconds fallback_negative_ttl{60};
    std::chrono::seconds max_negative_ttl{300};
    size_t max_queries_in_flight = 4096;
    uint16_t edns_udp_size_bytes = 1232;  // 0 = no EDNS0
};

struct resolver_stats {
    uint64_t queries_sent = 0;  // handed to c-ares (each may be retried by it)
    uint64_t cache_hits = 0;
    uint64_t cache_misses = 0;
    uint64_t cache_evictions = 0;  // dropped to make room
    uint64_t answers_positive = 0;
    uint64_t answers_negative = 0;  // nxdomain + nodata
    uint64_t failures_temporary = 0;
    uint64_t malformed = 0;  // answers our parser or c-ares rejected
    size_t cache_entries = 0;
    histogram latency_seconds{k_io_latency_bounds};  // queries sent, until their answer or failure
};

class resolver {
public:
    // Must run on a reactor thread. The error names the bad server address
    // or c-ares's reason ("cannot use DNS server '1.2.3': expected IP:port
    // or [IPv6]:port").
    static result<std::unique_ptr<resolver>, std::string> create(resolver_options o);
    ~resolver();
    resolver(const resolver&) = delete;
    resolver& operator=(const resolver&) = delete;

    // MX records sorted by preference (then host name).
    task<dns_result<mx_record>> resolve_mx(std::string name);
    // A / AAAA records as addresses with port 0, in the server's order.
    task<dns_result<address>> resolve_a(std::string name);
    task<dns_result<address>> resolve_aaaa(std::string name);
    // One string per TXT record, its character-strings joined (RFC 7208 3.3).
    task<dns_result<std::string>> resolve_txt(std::string name);
    // The names of a PTR record set (name is the reverse name, like
    // "4.3.2.1.in-addr.arpa"), without trailing dots, duplicates dropped.
    task<dns_result<std::string>> resolve_ptr(std::string name);

    // Shuts down: pending lookups finish with dns_errc::temporary, every poll
    // and the timer are cancelled and their completions awaited, and every
    // lookup coroutine has returned. Later lookups fail at once.
    task<void> close();

    const resolver_stats& stats() const noexcept { return _stats; }
    void clear_cache() noexcept;

private:
    struct watcher;
    struct timer;
    struct query_ctx;
    struct cache_entry {
        std::string key;
        std::chrono::steady_clock::time_point expires;
        std::optional<dns_error> negative;
        std::variant<std::monostate, std::vector<mx_record>, std::vector<address>, std::vector<std::string>> records;
    };
    using cache_list = std::list<cache_entry>;

    explicit resolver(resolver_options o);

    template <typename T>
    task<dns_result<T>> lookup(std::string name, uint16_t qtype);
    template <typename T>
    dns_result<T> finish(const std::string& what, const std::string& key, uint16_t qtype, int status,
                         std::span<const uint8_t> answer);
    dns_error negative_answer(dns_errc code, const std::string& what, std::span<const uint8_t> answer,
                              const std::string& key);

    static void on_sock_state(void* data, int fd, int readable, int writable) noexcept;
    static void on_answer(void* arg, int status, int timeouts, unsigned char* abuf, int alen) noexcept;
    void update_watcher(watcher& w) noexcept;
    void update_timer() noexcept;
    void wake_driver() noexcept;
    task<void> drive();

    const cache_entry* cache_find(const std::string& key);
    void cache_put(cache_entry e, std::chrono::seconds ttl);

    resolver_options _opts;
    reactor* _reactor;
    ares_channeldata* _channel = nullptr;
    bool _closed = false;
    resolver_stats _stats;
    size_t _queries_in_flight = 0;

    // Polls and the timer: objects stay until their CQE has arrived.
    std::vector<std::unique_ptr<watcher>> _watchers;
    std::unique_ptr<timer> _timer;
    uint64_t _ops_in_flight = 0;
    event _ops_idle;

    // The driver runs c-ares outside CQE reaping.
    std::vector<watcher*> _ready;
    bool _timer_due = false;
    bool _stop_driver = false;
    bool _driver_running = false;
    event _wake;
    event _driver_exited;

    gate _lookups;  // lookup coroutines in progress

    cache_list _lru;  // most recently used first
    std::unordered_map<std::string, cache_list::iterator> _cache;
};

}  // namespace rw::net

template <>
struct std::is_error_code_enum<rw::net::dns_errc> : std::true_type {};
