// The SMTP server: listener options (plain structs the admin layer fills
// from the configuration) and the per-core environment a session runs in.
// run_session() is one connection from greeting to close, on the core that
// accepted it; everything it touches belongs to that core except the
// connection counters, which are shared atomics.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "fs/spool.hh"
#include "mta/scan/scanners.hh"
#include "mta/smtp/access.hh"
#include "mta/smtp/outbound.hh"
#include "policy/cidr.hh"
#include "policy/credentials.hh"
#include "policy/arc.hh"
#include "policy/dkim.hh"
#include "policy/dkim_sign.hh"
#include "policy/dmarc.hh"
#include "policy/dmarc_report.hh"
#include "policy/rate_limit.hh"
#include "policy/relay.hh"
#include "policy/rules.hh"
#include "policy/spf.hh"
#include "runtime/net/dns.hh"
#include "runtime/net/buf_ring.hh"
#include "mta/delivery/delivery.hh"
#include "runtime/net/tcp.hh"
#include "runtime/net/tls.hh"

namespace rw::mta {

enum class auth_mode { none, optional, required };

struct listener_options {
    std::string name;
    bool implicit_tls = false;
    auth_mode auth = auth_mode::optional;
    bool allow_auth_without_tls = false;
    unsigned max_connections = 10000;
    unsigned max_connections_per_ip = 100;
    unsigned max_recipients = 1000;
    uint64_t max_message_size_bytes = 50 << 20;
    uint64_t max_line_length_bytes = 1 << 20;  // message lines, CRLF included; at least 1000
    unsigned max_errors = 10;
    std::chrono::seconds greeting_timeout{300};
    std::chrono::seconds command_timeout{300};
    std::chrono::seconds data_block_timeout{180};
    std::chrono::seconds data_end_timeout{600};
    std::chrono::seconds idle_timeout{300};
    // A client that talks before our greeting is an early talker (RFC 5321
    // 4.3.1 says to wait): we wait this long before the 220 and refuse one
    // that sent anything meanwhile. 0 = only refuse bytes already there.
    std::chrono::milliseconds greet_pause{0};
    bool dmarc_reject = true;  // a DMARC reject disposition refuses the message
};

// Sender authentication ([authentication]); one per configuration version.
struct authentication_options {
    bool spf = false;                     // check SPF of MAIL FROM (HELO for the null sender)
    bool spf_helo = false;                // check the HELO identity too (RFC 7208 2.3)
    bool spf_reject_fail = false;         // a fail gets 550 5.7.23 at MAIL
    bool spf_tempfail_temperror = false;  // a temperror gets 451 4.7.24 at MAIL
    std::string authserv_id;
    policy::spf::options spf_options;
    bool dkim_verify = false;  // verify the DKIM signatures of arriving mail
    policy::dkim::options dkim_options;
    bool dmarc = false;        // evaluate DMARC for arriving mail
    bool arc_verify = false;   // validate the ARC chain of arriving mail
    std::vector<std::string> arc_trusted_sealers;  // a passing chain they sealed overrides a DMARC fail
    std::string arc_seal_domain;                    // seal arriving mail with this domain's key
    bool dmarc_reports = false;  // record evaluations for the aggregate reports (server_env::dmarc_reports)
    bool dkim_sign = false;    // sign relayed mail with the keys of its From domain
    policy::dkim::sign_options sign_options;
};

// Connection counts shared by every core of one listener.
class connection_limits {
public:
    enum class verdict { ok, over_total, over_per_ip };
    // Takes a slot for peer unless a limit is reached (then the caller
    // answers 421 and closes). An exempt peer (client_limit_exceptions) is
    // counted in the total but has no per-IP limit.
    verdict enter(const net::address& peer, unsigned max_total, unsigned max_per_ip, bool exempt);
    void leave(const net::address& peer, bool exempt);
    // Connections open from peer now (its own included).
    unsigned count(const net::address& peer);
    uint64_t total() const { return _total.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> _total{0};
    std::mutex _lock;  // only at connect and disconnect, never per command
    std::unordered_map<std::string, unsigned> _per_ip;
};

// What a core's sessions share. Owned by the core.
struct server_env {
    std::string hostname;
    unsigned core = 0;
    unsigned cores = 1;
    fs::shard* spool = nullptr;                   // this core's shard
    const policy::relay_policy* relay = nullptr;
    const policy::credentials* creds = nullptr;  // null: AUTH not offered
    const authentication_options* auth = nullptr; // null: no sender authentication
    const policy::dkim::keyring_holder* dkim_keys = nullptr;  // signing keys (ringwayd-wide)
    net::resolver* dns = nullptr;                 // this core's resolver
    // DMARC aggregate-report data recorded on this core; the admin plane
    // gathers it. Null: none is recorded.
    policy::dmarc_report::store* dmarc_reports = nullptr;
    net::tls_context* tls = nullptr;              // null: no STARTTLS
    policy::rate_limiter* conn_rate = nullptr;    // per client IP, this core's share
    policy::rate_limiter* msg_rate = nullptr;
    policy::rate_limiter* auth_fail_rate = nullptr;
    // Clients no per-client limit applies to (rates, connections per IP):
    // smtp.client_limit_exceptions. Null: none is exempt.
    const std::vector<policy::cidr>* limit_exempt = nullptr;
    unsigned max_received_headers = 50;           // more is a mail loop (RFC 5321 6.3)
    // Sender groups, mail flow policies and screening; null: none (every
    // client under the listener's limits).
    const access_env* access = nullptr;
    // The scanners ([antivirus], [antispam]); null: none.
    const scan::options* scanning = nullptr;
    // Outbound spam control, every core's; null: none.
    outbound_control* outbound = nullptr;
    // The content rules in force; null: none (nothing parses the message for them).
    std::shared_ptr<const policy::rules::rule_set> rules;
    net::buf_ring* rx = nullptr;                  // receive buffers for plain sessions
    delivery::service* delivery = nullptr;        // told about every message queued
    uint64_t icid_seq = 0;
    // Resource conservation (set by the admin plane): 1 delays every reply
    // by tarpit, 2 refuses new connections and transactions.
    unsigned conservation_level = 0;
    std::chrono::milliseconds tarpit{0};
    // Listener suspension (set by the admin plane): while `suspended`, new
    // connections get 421 4.3.2 and close; close_sessions() ends the open
    // ones. session_fds: the sockets of this listener's open sessions here.
    bool suspended = false;
    bool closing = false;
    std::unordered_set<int> session_fds;
    // Counters for the admin plane: sessions started, messages and their
    // recipients queued, replies refusing something (by code).
    uint64_t sessions = 0, messages = 0, recipients = 0, rejected = 0;
    std::map<int, uint64_t> rejected_by_code;
};

// Ends env's open sessions (a suspension's delay is over): each is told
// 421 4.3.2 at its next read, which ends at once, and is closed. Sets
// env.closing until the listener is resumed. Returns how many.
size_t close_sessions(server_env& env);

// Whether peer is in the exceptions list (null: no exceptions).
bool limit_exempt(const server_env& env, const net::address& peer);

// One SMTP connection, from greeting to close.
task<void> run_session(net::accepted conn, const listener_options* lo, server_env* env, connection_limits* limits);

}  // namespace rw::mta
