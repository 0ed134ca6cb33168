// Delivery: everything between "queued" and "delivered or bounced".
//
// Each core runs one delivery service. A message is queued by the core whose
// spool shard holds it (after its commit, or at start-up from the recovered
// shard); its recipients are grouped by destination (the next hop: a
// configured route, or the recipient domain's MX set) and every destination
// is owned by one core, chosen by hash, so its limits (concurrent
// connections, messages per connection and per minute) are enforced there
// without locks. Entries reach the owner by cross-core message and stay
// compact (ids and recipient indices; bodies are read from the origin's
// shard when a connection sends them).
//
// Every recipient's outcome is written to the spool (delivered, deferred
// with its attempt count and next attempt, bounced) before it is acted on,
// so after a crash delivered recipients are not sent again (except those of
// the one transaction in flight) and pending ones are. A message whose
// recipients are all final is removed. Permanent failures and expiry bounce
// to the envelope sender with an RFC 3464 report (never for a null sender).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fs/spool.hh"
#include "runtime/net/addr.hh"
#include "runtime/net/dns.hh"
#include "runtime/reactor/task.hh"

namespace rw::policy::patterns {
class database;
}

namespace rw::mta::delivery {

class shared_state;  // shared.hh

struct route_host {
    std::string name;  // as configured (IP literal or host name)
    net::address addr;  // resolved when the name is an IP literal; port set
    bool literal = true;
    uint16_t port = 25;
};

// Outbound TLS for a destination: none (never STARTTLS), opportunistic
// (when offered, not verified; a failed handshake falls back to plaintext),
// required (STARTTLS must work; the certificate is not checked), verify
// (STARTTLS with a certificate that chains to a trusted CA and names the
// host connected to).
enum class tls_mode : uint8_t { none, opportunistic, required, verify };
std::string_view to_string(tls_mode m);

// domain: "example.test" (exactly), "*.example.test" (any subdomain) or "*".
struct route {
    std::string domain;
    std::vector<route_host> hosts;  // tried in order; empty: the domain's MX
    std::string pool;               // the source pool of its mail; "": the default
    std::optional<tls_mode> tls;    // the domain's TLS policy; none: options::tls
};

// A source: a local address delivery connects from, and the name it
// greets with. Its limits (0: the destination's) hold per destination.
struct source {
    std::string name;
    net::address addr;  // port 0
    std::string helo;   // "": options::hostname
    unsigned max_connections_per_destination = 0;
    unsigned max_messages_per_minute = 0;
    // Warm-up: the schedule (options::warmups) and its first day (UTC days
    // since the epoch); "" = a warm source, no daily caps.
    std::string warmup;
    int64_t warmup_start_day = 0;
};

// A provider: every destination whose best MX host ends in one of its
// suffixes ("google.com" matches "google.com" and "*.google.com"), with
// limits over all of them together, every core included (0: none).
struct provider {
    std::string name;
    std::vector<std::string> mx_suffixes;  // lower case
    unsigned max_connections = 0;
    unsigned max_messages_per_hour = 0;
};
// The built-in table: the large mailbox providers, without limits (the
// configuration sets them, adds suffixes and more providers).
const std::vector<provider>& builtin_providers();

// A warm-up schedule: daily message caps of a new source, per provider,
// rising day by day; after the last day listed the source is warm.
struct warmup_schedule {
    std::string name;
    std::vector<unsigned> default_caps;  // providers not listed, counted together ("*"); empty: none
    std::vector<std::pair<std::string, std::vector<unsigned>>> providers;  // (provider, caps)
    // The count group of a provider ("" for none): its name when listed, else "*".
    std::string group_of(std::string_view provider) const;
    // The cap of that group on day (1 = the first day); 0: no cap.
    unsigned cap(std::string_view group, int64_t day) const;
};

// A shaping rule: replies of a destination's servers that match `pattern`
// (over "CODE X.Y.Z text", caseless) `threshold` times within `period`
// put an override on the destination (or, with per_source, on the source
// that got them, for that destination) for `duration`. The gateway's own
// replies (no connection, a message too large for the server...) never
// count.
struct shaping_rule {
    std::string name;
    std::string provider;  // "": every destination
    std::string pattern;
    unsigned threshold = 1;
    std::chrono::seconds period{300};
    enum class action_t : uint8_t { suspend, rate, connections, bounce } action = action_t::suspend;
    unsigned value = 0;  // rate: messages per minute; connections: at most this many
    bool per_source = false;  // suspend only
    std::chrono::seconds duration{3600};
};
std::string_view to_string(shaping_rule::action_t a);

// A pool: sources and their weights. A destination's connections are
// spread over the sources of its mail's pool in proportion to the weights.
struct pool {
    std::string name;
    struct member {
        size_t source = 0;  // index in options::sources
        unsigned weight = 1;
    };
    std::vector<member> members;
    // When no source of this pool may send (every warming source at its
    // daily cap, say), connections come from this pool's sources; "": none.
    std::string overflow;
};

struct options {
    std::string hostname = "localhost";  // EHLO name
    std::vector<route> routes;
    std::vector<source> sources;
    std::vector<pool> pools;
    // The pool of mail that no route, content rule or mail flow policy
    // gives one; "": connections from the system's choice of address.
    std::string default_pool;
    std::vector<provider> providers;  // the built-in table and the configured ones
    std::vector<warmup_schedule> warmups;
    std::vector<shaping_rule> shaping;
    // shaping's patterns, pattern i with id i (null when there are none).
    std::shared_ptr<const policy::patterns::database> shaping_db;
    // Counters every core shares (providers, warm-up); owned by the daemon,
    // it outlives every service. Null: each service keeps its own.
    shared_state* shared = nullptr;
    uint16_t smtp_port = 25;  // for MX and A/AAAA next hops
    // Retry schedule: first retry after first_retry, then multiplied by
    // backoff up to max_retry, with +-jitter. Greylisting (450/451 to RCPT)
    // retries after greylist_retry.
    std::chrono::milliseconds first_retry{std::chrono::minutes(1)};
    std::chrono::milliseconds max_retry{std::chrono::hours(1)};
    double backoff = 2.0;
    double jitter = 0.2;
    std::chrono::milliseconds greylist_retry{std::chrono::minutes(2)};
    std::chrono::milliseconds max_queue_lifetime{std::chrono::hours(24 * 5)};
    // One delay notice (RFC 3464, Action: delayed) per recipient still
    // deferred this long after arrival, unless its NOTIFY excludes DELAY;
    // 0 = never.
    std::chrono::milliseconds delay_notice_after{std::chrono::hours(4)};
    bool starttls = true;  // opportunistic: used when offered, not verified
    tls_mode tls = tls_mode::opportunistic;  // for destinations whose route sets none (starttls false: none)
    std::string tls_ca_file;  // trust anchors for verify and REQUIRETLS; "": the system's
    bool mta_sts = true;      // look up and apply receiving domains' MTA-STS policies (RFC 8461)
    unsigned max_connections_per_destination = 20;
    unsigned max_messages_per_connection = 100;
    // More Received: headers than this in a queued message (besides our
    // own) is a mail loop: bounced with 554 5.4.6 (smtp.max_received_headers).
    unsigned max_received_headers = 50;
    unsigned max_messages_per_minute = 0;  // per destination; 0 = no limit
    // Adaptive back-off: after this many transactions in a row that a
    // destination's servers answered with temporary failures only (4xx
    // replies they sent, not the gateway's own, and not greylisting), its
    // connection limit is halved, and its rate limit when one is set;
    // every recover_after_deliveries transactions in a row that delivered
    // give one connection (and a quarter of the rate) back, up to the
    // configured limits. 0: no adaptive back-off.
    unsigned backoff_after_tempfails = 5;
    unsigned recover_after_deliveries = 20;
    std::chrono::milliseconds destination_pause{std::chrono::seconds(30)};  // after refusal or 421
    // How long a connection with nothing more to send waits for the next
    // message of its destination before QUIT; 0: QUIT at once.
    std::chrono::milliseconds connection_cache_time{std::chrono::seconds(2)};
    // RFC 5321 4.5.3.2: greeting, MAIL, RCPT: 5 min; DATA: 2 min; each data
    // block: 3 min; the final dot: 10 min.
    std::chrono::milliseconds connect_timeout{std::chrono::seconds(30)};
    std::chrono::milliseconds command_timeout{std::chrono::minutes(5)};
    std::chrono::milliseconds data_timeout{std::chrono::minutes(10)};
    // Quarantines: how long each holds a message, how much it holds (all
    // cores together), and whether expiry releases (else deletes).
    struct quarantine {
        std::string name;
        std::chrono::seconds retention{std::chrono::hours(24 * 14)};
        uint64_t max_bytes = uint64_t(1) << 30;
        bool release_on_expiry = false;
    };
    std::vector<quarantine> quarantines;
};

// A route table lookup: the most specific matching route, or null.
const route* find_route(const std::vector<route>& routes, std::string_view domain);
// A pool by name, or null.
const pool* find_pool(const options& o, std::string_view name);
// The provider a host name belongs to (the longest matching suffix), or null.
const provider* find_provider(const options& o, std::string_view host);
const provider* provider_named(const options& o, std::string_view name);

// Delivery latency (a connection taking a message to its outcome), per
// recipient: counts per bucket of k_latency_bounds seconds (the last one
// is everything above), for the metrics' histogram.
inline constexpr double k_latency_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
struct latency_histogram {
    std::array<uint64_t, std::size(k_latency_bounds) + 1> counts{};
    double sum_seconds = 0;
    uint64_t count = 0;
    void add(double seconds) {
        size_t i = 0;
        while (i < std::size(k_latency_bounds) && seconds > k_latency_bounds[i])
            ++i;
        ++counts[i];
        sum_seconds += seconds;
        ++count;
    }
};

// One destination as the admin shell shows it (service::destinations).
struct destination_view {
    std::string key;  // "mx:example.test" or "route:*.example.test"
    unsigned core = 0;  // its owner
    uint64_t ready_rcpts = 0, ready_messages = 0;  // waiting for a connection now
    uint64_t deferred_rcpts = 0;                   // waiting for their retry time
    uint64_t never_attempted_rcpts = 0;            // of the ready ones, not tried yet
    uint64_t in_flight_rcpts = 0, in_flight_messages = 0;
    int64_t oldest_received_unix = 0;  // of what is queued; 0 when nothing is
    unsigned connections = 0, idle_connections = 0;
    // The limits in force now: the configured ones, or lower after an
    // adaptive back-off (backed_off).
    unsigned connection_limit = 0, rate_limit = 0;
    bool backed_off = false;
    int64_t paused_until_ms = 0;  // Unix ms
    bool suspended = false;
    std::string last_error;
    int64_t last_error_ms = 0, last_connection_ms = 0;
    std::string last_host, last_ip, last_tls;
    uint64_t delivered = 0, deferred = 0, bounced = 0, connections_made = 0;  // recipients; connections
    uint64_t mean_latency_ms = 0;  // connection taking a message to its outcome
    latency_histogram latency;
    // The source pool its mail goes from ("": none), and each source's
    // connections to it: open now, and made since start.
    std::string pool;
    std::string provider;  // of its best next hop ("": none, or not resolved yet)
    struct override_view {
        std::string rule, action, source;  // source: "" for the whole destination
        unsigned value = 0;
        int64_t since_ms = 0, until_ms = 0;
        std::string reply;  // the reply that set it off
    };
    std::vector<override_view> overrides;  // shaping overrides in force
    struct source_use {
        std::string name;
        unsigned connections = 0;
        uint64_t connections_made = 0;
    };
    std::vector<source_use> sources;
};

// The per-core delivery service.
class service {
public:
    // Call on each core, before its shards accept mail. shards: this core's.
    service(const options* o, unsigned core, unsigned cores, std::vector<fs::shard*> shards, net::resolver* dns);
    ~service();
    service(const service&) = delete;

    // The service of the calling core (null before construction / after stop).
    static service* local();

    // A message was committed to one of this core's shards.
    void queued(fs::shard* sh, uint64_t id);
    // Queues everything the shards recovered.
    void recover();
    // Runs timers until stop(); then waits for connections to finish.
    task<void> run();
    void stop();

    struct counters {
        uint64_t delivered = 0, deferred = 0, bounced = 0, connections = 0, dsn = 0;
        // Recipients deferred or bounced, by the class of their reply
        // (classify.hh's reply_class, in order).
        std::array<uint64_t, 8> failures{};
        uint64_t shaping_triggered = 0;  // overrides set by shaping rules
    };
    const counters& stats() const;

    // ---- the admin plane (call on this service's core) ----
    // The destinations this core owns.
    std::vector<destination_view> destinations() const;
    // Holds delivery to destinations matching domain ("" = every one, also
    // those created later): no new connection, idle ones QUIT, open ones
    // finish their current message. Returns how many were held.
    size_t suspend(std::string_view domain);
    // Lifts a suspend(domain) ("" lifts all); returns how many resumed.
    size_t resume(std::string_view domain);
    // New options (a configuration commit): limits, retries, timeouts and
    // routes apply from now on; what is in flight finishes as it started.
    // `o` must outlive every task that may still hold the old options,
    // so callers keep each set for the daemon's life.
    void set_options(const options* o);
    // Bouncing and redirecting queued mail. A selection is one message
    // (mid), the recipients at a domain, the messages of a sender, or all.
    struct selection {
        uint64_t mid = 0;          // 0: any
        std::string rcpt_domain;   // lower case; "": any
        std::string sender;        // compared without case; "": any
        bool all = false;          // must be set when nothing else is
    };
    struct selected {
        uint64_t id = 0;
        std::vector<uint32_t> rcpts;  // envelope indexes, still pending
    };
    // The messages of this core's shards that match, with their matching
    // recipients not yet final.
    std::vector<selected> select(const selection& s) const;
    // Bounces them (on this core, their origin): each recipient fails with
    // `reply` ("550 5.0.0 ...") and its sender gets a report, as for a
    // permanent failure. Returns the recipients bounced.
    task<size_t> bounce(std::vector<selected> which, std::string reply);
    // The queued entries of this core's destinations for these recipients
    // (any core's messages) go to host:port instead of their next hop,
    // until delivered or ringwayd restarts. Entries a connection holds
    // now are not moved. Returns the recipients moved.
    size_t redirect(const std::vector<std::pair<unsigned, selected>>& which, const std::string& host, uint16_t port);
    // Deferred mail of matching destinations is due now and their pause
    // after a failure is lifted; returns how many entries were released.
    size_t deliver_now(std::string_view domain);
    // Lifts the shaping overrides of matching destinations ("" = every
    // one; rule "" = every rule's); returns how many were lifted.
    size_t lift_overrides(std::string_view domain, std::string_view rule, std::string_view by);

    // ---- quarantines ----
    // A message a content rule holds is committed with hold_states():
    // every recipient deferred until the quarantine's expiry and flagged,
    // so that delivery never picks it up (also after a restart) until it
    // is released, deleted or expires.
    std::vector<fs::rcpt_state> hold_states(size_t rcpts, std::string_view quarantine, std::string_view rule,
                                            int64_t now_unix) const;
    // A message a content rule bounces is committed with bounce_states():
    // every recipient bounced with `reply` ("550 5.7.1 ..."); those with
    // report[i] set are flagged so that the sender's failure report is
    // queued at once, and again after a crash until it is.
    static std::vector<fs::rcpt_state> bounce_states(const std::vector<bool>& report, std::string_view reply);
    struct held_view {
        uint64_t id = 0;
        std::string quarantine, rule, from;
        std::vector<std::string> rcpts;
        int64_t received_unix = 0, expires_unix = 0;
        uint64_t size = 0;  // as it would be delivered
    };
    // This core's held messages, oldest first ("" = every quarantine).
    std::vector<held_view> held(std::string_view quarantine) const;
    // Delivery resumes exactly as if the message had never been held;
    // false when this core holds no such message.
    task<bool> release(uint64_t id, std::string by);
    // Deletes it (its sender gets no report); false when not held here.
    task<bool> discard(uint64_t id, std::string by);

    struct impl;

private:
    std::unique_ptr<impl> _i;
};

}  // namespace rw::mta::delivery
