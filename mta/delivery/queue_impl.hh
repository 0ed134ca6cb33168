// The delivery service's inside, shared by its parts (not for use outside
// mta/delivery): queue.cc (the service, per-destination queues, handing
// mail between cores), load.cc (reading messages on their origin core),
// worker.cc (connections), next_hop.cc (routes and MX), outcomes.cc
// (recording results, reports), retry.cc (the retry schedule).
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/spool.hh"
#include "mta/delivery/client.hh"
#include "mta/delivery/delivery.hh"
#include "mta/delivery/dsn.hh"
#include "mta/delivery/mta_sts.hh"
#include "mta/delivery/shared.hh"
#include "mta/envelope_params.hh"
#include "runtime/base/result.hh"
#include "runtime/net/tls.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/sync.hh"
#include "runtime/reactor/task.hh"

namespace rw::mta::delivery {
namespace detail {

inline int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

inline std::string lower(std::string_view s) {
    std::string o(s);
    for (auto& c : o)
        if (c >= 'A' && c <= 'Z')
            c = char(c + 32);
    return o;
}

inline std::string domain_of(std::string_view addr) {
    size_t at = addr.rfind('@');
    return at == std::string_view::npos ? std::string() : lower(addr.substr(at + 1));
}

inline std::string mid_string(uint64_t id) { return fmt::format("{:016X}", id); }

// One destination's share of one message: the recipients (by index in the
// envelope) that go to it.
struct entry {
    unsigned origin = 0;
    fs::shard* shard = nullptr;  // valid on the origin core only
    uint64_t id = 0;
    std::vector<uint32_t> rcpts;
    uint32_t attempts = 0;
    int64_t received_unix = 0;
    int64_t due_ms = 0;
    int64_t taken_ms = 0;  // when a connection took it (latency)
    bool released = false;  // from a quarantine (k_released)
};

struct destination {
    std::string key;
    std::string pool;    // the source pool of its mail ("": none)
    std::string provider;  // of its best next hop, once resolved ("": none)
    bool requiretls = false;  // its mail asked for REQUIRETLS (RFC 8689)
    std::string domain;  // for MX lookups (empty for routes)
    const route* rt = nullptr;
    std::deque<entry> ready;
    unsigned active = 0;
    int64_t paused_until_ms = 0;
    std::deque<int64_t> sent_ms;  // sends in the last minute (rate limit)
    // Each source of the pool keeps its own connections and rate here.
    struct source_state {
        unsigned active = 0;
        std::deque<int64_t> sent_ms;
        int64_t wrr = 0;  // smooth weighted round robin: the running weight
        uint64_t connections = 0;
    };
    std::map<std::string, source_state, std::less<>> sources;  // by source name
    int64_t no_tls_until_ms = 0;  // a failed TLS handshake: plaintext for a while
    // Connections waiting for the next message (connection_cache_time);
    // kick() wakes them before it opens new ones.
    std::vector<cancel_token*> idle;
    bool suspended = false;      // by the operator (service::suspend)
    // Adaptive back-off (options::backoff_after_tempfails): the limits in
    // force when lower than the configured ones (0: the configured one).
    unsigned conn_cap = 0, rate_cap = 0;
    unsigned tempfails_in_row = 0, deliveries_in_row = 0;
    // Shaping: each rule's recent matches ("rule" or "rule\nsource" ->
    // times), and the overrides in force.
    std::map<std::string, std::deque<int64_t>> shaping_hits;
    struct override_t {
        size_t rule = 0;  // index in options::shaping when set (names are kept for a commit)
        std::string rule_name, source;  // source: "" = the whole destination
        shaping_rule::action_t action = shaping_rule::action_t::suspend;
        unsigned value = 0;
        int64_t since_ms = 0, until_ms = 0;
        std::string reply;
    };
    std::vector<override_t> overrides;
    bool bouncing = false;  // a bounce override's fail_all runs
    // A connection found no usable source (limits, warm-up caps, address
    // family) or provider slot: no new one before this (Unix ms).
    int64_t no_slot_until_ms = 0;
    uint64_t in_flight_rcpts = 0;  // taken by a connection, outcome not yet settled
    uint64_t in_flight_msgs = 0;
    // For the admin shell: the last failure and what came of each recipient.
    std::string last_error;
    int64_t last_error_ms = 0;
    int64_t last_connection_ms = 0;
    std::string last_host, last_ip, last_tls;
    uint64_t delivered = 0, deferred = 0, bounced = 0, connections = 0;
    latency_histogram latency;  // per recipient settled
};

// What a connection needs of a message, read on its origin core.
struct loaded {
    outgoing out;
    std::vector<uint32_t> idx;  // envelope index of each out.rcpts[i]
    std::vector<uint32_t> attempts;
};

// A recipient's outcome, applied on the origin core.
struct outcome {
    uint32_t idx = 0;
    fs::rcpt_status status = fs::rcpt_status::pending;
    uint32_t attempts = 0;
    int64_t next_attempt_unix = 0;
    std::string reply;     // "550 5.1.1 ..." or a local reason
    std::string status_code;  // for a DSN: "5.1.1"
    std::string remote;    // host name
    uint8_t flags = 0;     // fs::rcpt_state::flags to keep (set at the origin)
};

// The first bytes of a body, read with its envelope: all of a typical
// message, and the trace headers that the hop count reads (a header
// section longer than this is counted over this much).
constexpr size_t k_head_bytes = 64 * 1024;

// fs::rcpt_state::flags bits of ours.
constexpr uint8_t k_delay_notified = 1;
// Final (delivered or bounced), but the report it earned could not be
// queued (the spool was full): the message stays until it is.
constexpr uint8_t k_report_due = 2;
// Held in a quarantine (service::hold_states): not queued for delivery.
constexpr uint8_t k_quarantined = 4;
// Released from a quarantine: its queue lifetime starts at the release,
// not at arrival (the time held does not count). The release time is not
// stored; the retry schedule since it is (retry_schedule_ms(attempts)).
constexpr uint8_t k_released = 8;

inline bool is_final(fs::rcpt_status s) { return s == fs::rcpt_status::delivered || s == fs::rcpt_status::bounced; }

// "550 5.1.1 text" -> "5.1.1"; the class alone when the reply has none.
inline std::string enhanced_of(std::string_view reply, bool success) {
    if (reply.size() >= 9 && reply[3] == ' ' && (reply[4] == '2' || reply[4] == '4' || reply[4] == '5') &&
        reply[5] == '.') {
        size_t end = reply.find(' ', 4);
        return std::string(reply.substr(4, end == std::string_view::npos ? std::string_view::npos : end - 4));
    }
    return success ? "2.0.0" : "5.0.0";
}

// A message's parameters as the session stored them. Unreadable bytes (a
// damaged record passes its CRC only by accident, so this is a bug or a
// spool from elsewhere) are logged and read as defaults: the message is
// still delivered, failures still reported.
envelope_params read_params(uint64_t id, std::string_view bytes, size_t rcpts);
// A next hop from the spool: "host:port" with a port of 1..65535.
bool valid_next_hop(std::string_view hop);
// A destination key is "mx:DOMAIN", "route:PATTERN" or "redirect:HOST:PORT",
// then "#POOL" when its mail goes from a source pool.
std::string_view key_pool(std::string_view key);
std::string_view key_base(std::string_view key);

}  // namespace detail

using namespace detail;

struct service::impl {
    const options* o;
    unsigned core, cores;
    std::vector<fs::shard*> shards;
    net::resolver* dns;
    std::unordered_map<std::string, std::unique_ptr<destination>> dests;
    std::multimap<int64_t, std::pair<destination*, entry>> deferred;
    gate workers;
    gate posts;
    bool stopping = false;
    std::set<std::pair<fs::shard*, uint64_t>> reports_retrying;  // retry_reports() running
    counters c;
    std::mt19937_64 rng{std::random_device{}()};
    uint64_t dcid_seq = 0;
    event stopped;
    std::unique_ptr<net::tls_context> tls;  // client side, opportunistic (no verification)
    // Client side, verifying (chain and host name), made on first use and
    // again when tls_ca_file changes.
    std::unique_ptr<net::tls_context> tls_verify;
    std::string tls_verify_ca;
    const net::tls_context* verifying_tls();
    // The TLS policy of d's connections (REQUIRETLS mail: verify).
    tls_mode tls_mode_of(const destination* d) const;
    // Counters shared with the other cores (options::shared), or this
    // service's own when there are none.
    std::unique_ptr<shared_state> own_shared = std::make_unique<shared_state>();
    shared_state& shared() const { return o->shared ? *o->shared : *own_shared; }
    // The provider of d's mail (null: none, or not known yet).
    const provider* provider_of(const destination* d) const {
        return d->provider.empty() ? nullptr : provider_named(*o, d->provider);
    }
    static std::string provider_key(const provider& p) { return "provider:" + p.name; }
    // Milliseconds until d's provider allows one more message this hour (0: now).
    int64_t provider_wait_ms(const destination* d, int64_t now) const;
    // Warm-up: the count group of d's mail for source s ("" when s is warm),
    // and the milliseconds until s may send it another message (0: now).
    std::string warmup_group(const source& s, const destination* d) const;
    int64_t warmup_wait_ms(const source& s, const destination* d, int64_t now) const;
    // Quarantined messages of this core's shards, by id.
    struct held_entry {
        fs::shard* sh = nullptr;
        std::string quarantine;
        int64_t expires_unix = 0, received_unix = 0;
        uint64_t size = 0;
    };
    std::map<uint64_t, held_entry> quarantined;
    int64_t last_sweep_ms = 0;
    void hold(fs::shard* sh, uint64_t id, const fs::shard::message_view& v);
    std::optional<held_entry> take_held(uint64_t id);  // and forgets it
    void sweep_quarantines(int64_t now_ms);
    const options::quarantine* quarantine_options(std::string_view name) const;

    // ---- origin side ----

    // The destination of a recipient domain's mail (msg_pool: the pool its
    // message asks for, "" for the route's or the default).
    std::string key_for(std::string_view domain, std::string_view msg_pool) const;
    unsigned owner_of(const std::string& key) const { return unsigned(std::hash<std::string>{}(key) % cores); }

    void queue_message(fs::shard* sh, uint64_t id);

    static task<void> remove_left_over(impl* self, fs::shard* sh, uint64_t id);

    static task<void> post(impl* self, unsigned owner, std::string key, entry e);

    // Reads what a connection needs; nullopt when the message is gone.
    // Without with_body only the envelope (for failing it unsent).
    static task<std::optional<loaded>> load(fs::shard* sh, uint64_t id, std::vector<uint32_t> idx,
                                            bool with_body = true);

    // Body bytes of a message being sent, read on its origin core.
    static task<result<size_t, std::string>> read_body_here(fs::shard* sh, uint64_t id, uint64_t off,
                                                           std::span<char> out);
    static task<result<size_t, std::string>> read_from_origin(unsigned origin, fs::shard* sh, uint64_t id,
                                                             uint64_t off, std::span<char> out);

    // load() run on the message's origin core, from any core.
    static task<std::optional<loaded>> load_from_origin(unsigned origin, fs::shard* sh, uint64_t id,
                                                        std::vector<uint32_t> idx, bool with_body = true);

    // Writes the outcomes, sends DSNs, removes the message once every
    // recipient is final. Runs on the origin core.
    static task<void> apply_at_origin(const options* o, fs::shard* sh, uint64_t id, std::vector<outcome> outs);

    // Queues the reports of recipients marked k_report_due, at once then
    // with back-off (first_retry, doubling up to max_retry), until every one is queued;
    // then removes the message if nothing else keeps it. One per message
    // at a time; at shutdown it stops and recovery starts it again.
    static task<void> retry_reports(impl* self, fs::shard* sh, uint64_t id);

    // Removes a message whose recipients are all final.
    static task<void> remove_finished(fs::shard* sh, uint64_t id);

    // Queues one report; false when it could not be (the spool full or
    // failing), so the caller keeps what earned it.
    static task<bool> send_dsn(fs::shard* sh, uint64_t id, std::string sender, int64_t arrival, envelope_params dp,
                               bool full, std::vector<dsn_recipient> rcpts, std::string hostname);

    // ---- owner side ----

    destination* dest_for(const std::string& key, const entry& e);
    // The route of a "redirect:HOST:PORT" destination (made once, kept).
    std::map<std::string, route> redirects;
    const route* redirect_route(const std::string& key);

    void accept(const std::string& key, entry e);

    // Milliseconds until the destination may send another message under
    // its rate limit (0: now).
    int64_t rate_wait_ms(destination* d, int64_t now);
    // The sources a destination's connections come from: its pool's
    // (null: no pool, or one a commit removed, whose mail goes from the
    // system's choice of address).
    const pool* pool_of(const destination* d) const;
    // The source of d's next connection to an address of this family:
    // the pool's members by smooth weighted round robin, skipping those
    // at their connection limit, those held by their rate limit while
    // another is free, and those that may not send for long (a warm-up
    // cap reached); then the same over the pool's overflow pool. Null
    // when none can connect; *busy then says whether some source of the
    // family exists (and is only busy), so the mail waits rather than fails.
    const source* pick_source(destination* d, int family, bool* busy);
    // Milliseconds until this source may send to d again (0: now).
    int64_t source_wait_ms(destination* d, const source& s, int64_t now);
    // Milliseconds until some source of d's pool may send (0: now, or no pool).
    int64_t pool_wait_ms(destination* d, int64_t now);
    // The destination's limits in force: the configured ones, or lower
    // after an adaptive back-off, and no more connections than its
    // pool's sources allow together.
    unsigned conn_limit(const destination* d) const;
    unsigned rate_limit(const destination* d) const {
        const unsigned base = d->rate_cap && o->max_messages_per_minute
                                  ? std::min(d->rate_cap, o->max_messages_per_minute)
                                  : o->max_messages_per_minute;
        // A shaping override sets a rate even where none is configured.
        if (const auto* ov = overridden(d, shaping_rule::action_t::rate, now_ms()))
            return base ? std::min(base, ov->value) : ov->value;
        return base;
    }
    // One transaction's outcome, for the adaptive back-off: temporary
    // failures only (from the destination's server), or a delivery.
    void adapt(destination* d, bool tempfail, bool delivered);

    void kick(destination* d);

    // Takes the next ready entry for sending; finish() (or untake()) ends it.
    entry take(destination* d);
    void untake(destination* d, const entry& e);

    // Turns a recipient's reply into its outcome; deferred recipients also
    // go back into the queue here.
    void settle(destination* d, const entry& e, const loaded& L, const std::vector<smtp_reply>& replies,
                const std::string& host, const std::string& ip, uint64_t dcid, std::vector<outcome>& outs,
                entry& retry);

    // Applies outcomes for one entry: state at the origin, retries here.
    task<void> finish(destination* d, const entry& e, const loaded& L, std::vector<smtp_reply> replies,
                      std::string host, std::string ip, uint64_t dcid);

    // Fails every ready entry of d the same way (no connection, DNS): those
    // queued when it starts; what arrives meanwhile waits for the next
    // attempt (the destination is paused), and a stop ends it.
    task<void> fail_all(destination* d, smtp_reply r, std::string host);

    struct hop {
        net::address addr;
        std::string name;
    };
    struct hops_result {
        std::vector<hop> hops;
        smtp_reply error;  // code 4xx/5xx when hops is empty
        // The domain's MTA-STS policy in enforce mode: these hops match it,
        // and TLS to them must verify.
        tls_mode min_tls = tls_mode::none;
    };
    // MTA-STS policies by domain (this core's), and the lookup.
    struct sts_cached {
        sts::policy p;
        std::string id;
        int64_t expires_ms = 0, checked_ms = 0;
    };
    std::map<std::string, sts_cached> sts_cache;
    task<std::optional<sts::policy>> sts_policy_for(std::string domain);

    task<hops_result> resolve_host(std::string name, uint16_t port);

    task<hops_result> next_hops(destination* d);

    void pause(destination* d, const std::string& why);
    // Paused after a failure, suspended by the operator or by a shaping
    // override: no new connection.
    bool held(const destination* d, int64_t now) const {
        return d->suspended || now < d->paused_until_ms || overridden(d, shaping_rule::action_t::suspend, now);
    }
    // ---- shaping (shaping.cc) ----
    // The override of this action on the whole destination in force now
    // (its value; 0 when none).
    const destination::override_t* overridden(const destination* d, shaping_rule::action_t a, int64_t now) const;
    bool source_suspended(const destination* d, const source& s, int64_t now) const;
    // One transaction's (or greeting's) replies from d's servers, got by
    // a connection from src (null: none): counts the rules they match and
    // sets overrides when a threshold is reached.
    void shape(destination* d, const std::vector<smtp_reply>& replies, const source* src);
    // Drops expired overrides (the timer loop, once a second).
    void expire_overrides(int64_t now);
    // A bounce override: fails every ready entry of d permanently.
    static task<void> bounce_ready(impl* self, destination* d);
    // "mx:example.test" and "route:example.test" match "example.test"; "" matches all.
    static bool matches(const destination* d, std::string_view domain);
    std::set<std::string> suspended_domains;  // "" = all

    static task<void> worker(impl* self, destination* d);

    task<void> work(destination* d);

    // Waits up to connection_cache_time for kick() to hand this connection
    // a message. true: something is ready (or may be: check again).
    task<bool> idle_wait(destination* d);

    static task<void> finish_owned(impl* self, destination* d, entry e, loaded L, std::vector<smtp_reply> replies,
                                   std::string host, std::string ip, uint64_t dcid, gate* g);

    task<void> timers();
    // Writes the shared counts' file (core 0 only; force: at stop).
    void save_shared(int64_t now, bool force);
};

}  // namespace rw::mta::delivery
