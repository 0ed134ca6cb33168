// Configuration: one TOML file (or the embedded default) read into plain
// structs, one per section, which ringwayd hands to each layer (runtime
// options to the engine, [dns] to the resolver, [spool] to fs, listeners and
// [smtp] to mta and policy, [control] to the control socket). Nothing here
// knows toml++: it is included by config.cc only, so the rest of the tree
// compiles without it.
//
// A configuration is validated as a whole before anything starts: every
// problem is reported, one line each, in the form
//   FILE:LINE: KEY: what is wrong; allowed: ...
// e.g. `ringway.toml:12: listener[1].port: expected an integer, got "smtp";
// allowed: 1..65535`. KEY is a path such as `runtime.cores`,
// `listener[0].port` (listeners are counted from 0 in file order) or
// `smtp.relay_networks[2]`. Lines are sorted by LINE.
//
// Members are named after their TOML keys. Durations are std::chrono values
// whose names keep the key's unit; sizes, written in the file as "512M" or a
// number of bytes, become byte counts named `*_bytes`. Each struct's default
// member values are the documented defaults, the same values the embedded
// default configuration spells out (a unit test checks that they agree).
//
// Called by ringwayd at start-up (--config, --check-config,
// --print-default-config) and by the admin layer when a new configuration is
// staged. Not for the data path: loading allocates and may be slow.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/log.hh"
#include "runtime/base/result.hh"
#include "runtime/net/addr.hh"

namespace rw::admin {

// [runtime]: reactor threads and process-wide logging.
struct runtime_config {
    unsigned cores = 0;  // reactor threads: 0 = every CPU we may run on, else 1..256
    bool pin = true;     // pin reactor i to the i-th allowed CPU
    rw::log_level log_level = rw::log_level::info;  // trace .. error
    std::string mail_log = "./var/log/mail.jsonl";  // JSON-lines journal: "-" = stdout, "" = off
    std::chrono::milliseconds drain_timeout_ms{5000};  // on shutdown, time sessions get to finish

    friend bool operator==(const runtime_config&, const runtime_config&) = default;
};

// [dns]: the resolver (c-ares on the reactors) and its cache.
struct dns_config {
    // Canonical "IP:port", e.g. "192.0.2.53:53" or "[2001:db8::53]:53" (the
    // form c-ares' ares_set_servers_ports_csv takes). Empty = the system's
    // resolvers from /etc/resolv.conf.
    std::vector<std::string> servers;
    std::chrono::milliseconds timeout_ms{2000};  // per try
    unsigned tries = 2;
    uint64_t cache_entries = 100000;  // 0 = no cache

    friend bool operator==(const dns_config&, const dns_config&) = default;
};

// How the spool makes a write batch durable.
enum class spool_flush {
    automatic,  // "auto": the spool picks per device
    fdatasync,  // write, then fdatasync(2)
    dsync,      // O_DSYNC writes
};
std::string_view to_string(spool_flush f);

// [spool]: the log-structured store (fs/).
struct spool_config {
    std::string path = "./var/spool.img";   // block device, or a file standing in for one
    uint64_t size_bytes = uint64_t(1) << 30;  // key `size`; at least 64 MiB
    spool_flush flush = spool_flush::automatic;

    friend bool operator==(const spool_config&, const spool_config&) = default;
};

// Whether a listener offers SMTP AUTH and whether it insists on it.
enum class auth_mode { none, optional, required };
std::string_view to_string(auth_mode a);

// One [[listener]]: an SMTP server socket (per core, SO_REUSEPORT) and the
// limits of its sessions. Timeouts default to RFC 5321 4.5.3.2.
struct listener_config {
    std::string name;                   // required, unique; used by the admin shell and in logs
    std::string address = "127.0.0.1";  // canonical IP text (inet_ntop form), v4 or v6
    uint16_t port = 0;                  // required, 1..65535
    std::string tls_cert;               // PEM paths, both or neither; neither = a
    std::string tls_key;                //   self-signed certificate made at start-up
    bool implicit_tls = false;          // TLS from the first byte (RFC 8314) instead of STARTTLS
    auth_mode auth = auth_mode::optional;
    bool allow_auth_without_tls = false;  // offer AUTH PLAIN/LOGIN in clear text
    unsigned max_connections = 10000;
    unsigned max_connections_per_ip = 100;
    unsigned max_recipients = 1000;                     // per message
    uint64_t max_message_size_bytes = uint64_t(50) << 20;  // key `max_message_size`; EHLO SIZE
    // Longest line of a message, CRLF included (key `max_line_length`). RFC
    // 5321 4.5.3.1.6 says 1000, but real senders exceed it and the body is
    // streamed, so memory does not grow with it; a longer line gets 552 5.3.4.
    uint64_t max_line_length_bytes = uint64_t(1) << 20;
    unsigned max_errors = 10;                           // bad commands before we hang up
    // Timeouts (RFC 5321 4.5.3.2 gives the defaults):
    std::chrono::seconds greeting_timeout_s{300};    // our 220 -> the client's first command (4.5.3.2.1)
    std::chrono::seconds command_timeout_s{300};     // waiting for the next command (4.5.3.2.7)
    std::chrono::seconds data_block_timeout_s{180};  // waiting for each piece of DATA/BDAT (4.5.3.2.5)
    std::chrono::seconds data_end_timeout_s{600};    // our deadline to answer the final "." (4.5.3.2.6:
                                                     //   the client gives up then, and would send again)
    std::chrono::seconds idle_timeout_s{300};        // between transactions
    std::chrono::milliseconds greet_pause_ms{0};      // wait before the greeting; talkers are refused
    bool dmarc_reject = true;  // act on a DMARC reject: 550 5.7.1 at the end of DATA

    // The socket address to bind: address and port. Always valid once loaded.
    net::address endpoint() const;

    friend bool operator==(const listener_config&, const listener_config&) = default;
};

// An IP network from a CIDR string. `address` is canonical inet_ntop text with
// no host bits set; prefix_len is 0..32 (IPv4) or 0..128 (IPv6).
struct ip_network {
    std::string address;
    unsigned prefix_len = 0;

    std::string to_string() const;  // "10.0.0.0/8"
    friend bool operator==(const ip_network&, const ip_network&) = default;
};

// [smtp]: identity and relay control shared by every listener.
struct smtp_config {
    // EHLO name and the name in our replies and Received: headers. Empty in
    // a default-constructed struct; the loader fills in gethostname().
    std::string hostname;
    std::vector<std::string> accepted_domains;  // lower case, no duplicates
    std::vector<ip_network> relay_networks = {{"127.0.0.0", 8}, {"::1", 128}};
    std::string credentials_file = "./var/credentials";  // AUTH users
    // Recipients at an address literal ("user@[192.0.2.1]") are refused with
    // 550 5.7.1 unless the literal is in accepted_domains or this is true.
    bool allow_domain_literals = false;
    // More Received: headers than this is a mail loop: 554 5.4.6 (RFC 5321 6.3).
    unsigned max_received_headers = 50;
    // Per-client-IP rate limits (token buckets: `*_per_minute` tokens come
    // back a minute, at most `*_burst` saved up; 0 per minute = no limit),
    // for clients outside client_limit_exceptions. listener
    // max_connections_per_ip is exempt for them too.
    unsigned client_connections_per_minute = 1200;
    unsigned client_connection_burst = 60;
    unsigned client_messages_per_minute = 3000;
    unsigned client_message_burst = 200;
    unsigned client_auth_attempts_per_minute = 12;
    unsigned client_auth_burst = 10;
    // Clients no per-client limit applies to. nullopt (key absent) = the
    // relay_networks, like Postfix's smtpd_client_event_limit_exceptions.
    std::optional<std::vector<ip_network>> client_limit_exceptions;

    friend bool operator==(const smtp_config&, const smtp_config&) = default;
};

// [delivery]: the outbound queue and SMTP client.
struct delivery_config {
    uint16_t smtp_port = 25;  // port of next hops found by MX or A/AAAA
    // Next hops for mail to smtp.accepted_domains (the inbound-gateway case):
    // "IP", "IP:port", "[IPv6]:port", "host" or "host:port", tried in order.
    // Empty: such mail is routed like any other (routes, then MX).
    std::vector<std::string> internal_hosts;
    bool starttls = true;  // use STARTTLS when the next hop offers it (opportunistic)
    unsigned max_connections_per_destination = 20;
    unsigned max_messages_per_connection = 100;
    unsigned max_messages_per_minute = 0;  // per destination; 0 = no limit
    unsigned backoff_after_tempfails = 5;  // adaptive back-off; 0 = none
    unsigned recover_after_deliveries = 20;
    // A connection whose destination has nothing more to send stays open
    // this long for the next message (Postfix: smtp_connection_cache_time_limit).
    // 0: QUIT at once.
    std::chrono::milliseconds connection_cache_time_ms{2'000};
    std::chrono::milliseconds first_retry_ms{60'000};
    std::chrono::milliseconds max_retry_ms{3'600'000};
    std::chrono::milliseconds greylist_retry_ms{120'000};
    std::chrono::seconds max_queue_lifetime_s{432'000};  // 5 days
    std::chrono::seconds delay_notice_after_s{14'400};   // 4 hours; 0 = no delay notices
    std::chrono::milliseconds destination_pause_ms{30'000};
    std::chrono::milliseconds connect_timeout_ms{30'000};
    std::chrono::seconds command_timeout_s{300};  // RFC 5321 4.5.3.2
    std::chrono::seconds data_timeout_s{600};
    // The [[pool]] of mail no route, content rule or mail flow policy gives
    // one; "": connections from the system's choice of address.
    std::string default_pool;
    std::string tls = "opportunistic";  // none | opportunistic | required | verify ([[route]] tls overrides)
    std::string tls_ca_file;            // trust anchors to verify with; "": the system's
    bool mta_sts = true;                // apply receiving domains' MTA-STS policies (RFC 8461)

    friend bool operator==(const delivery_config&, const delivery_config&) = default;
};

// [[source]]: a local address delivery connects from, with its HELO name
// and limits per destination (0: the destination's).
struct source_config {
    std::string name;
    std::string address;  // an IP address this machine has
    std::string helo;     // "": smtp.hostname
    unsigned max_connections_per_destination = 0;
    unsigned max_messages_per_minute = 0;
    std::string warmup;        // a [[warmup]] name; "": warm
    std::string warmup_start;  // "YYYY-MM-DD" (UTC), its first day

    friend bool operator==(const source_config&, const source_config&) = default;
};

// [[pool]]: sources with weights ("name" or "name:weight").
struct pool_config {
    std::string name;
    std::vector<std::string> sources;
    std::string overflow;  // a [[pool]] used when none of these may send

    friend bool operator==(const pool_config&, const pool_config&) = default;
};
// [[provider]]: destinations grouped by MX host suffix, with limits over
// all of them. Built-in providers exist unless configured; a table with a
// built-in name changes its limits (and its suffixes, when given).
struct provider_config {
    std::string name;
    std::vector<std::string> mx_suffixes;
    unsigned max_connections = 0;        // every core and destination together; 0: none
    unsigned max_messages_per_hour = 0;  // likewise

    friend bool operator==(const provider_config&, const provider_config&) = default;
};

// [[warmup]]: a warm-up schedule: daily caps, day 1 first.
struct warmup_config {
    std::string name;
    std::string daily;                   // "50, 100, 200": providers not listed, together
    std::vector<std::string> providers;  // "gmail: 20, 40, 80"

    friend bool operator==(const warmup_config&, const warmup_config&) = default;
};
// [[shaping_rule]]: replies that set an override (docs/deliverability.md).
struct shaping_rule_config {
    std::string name;
    std::string provider;  // "": every destination
    std::string pattern;   // a regular expression over "CODE X.Y.Z text"
    unsigned threshold = 1;
    std::chrono::seconds period_s{300};
    std::string action = "suspend";  // suspend | rate N | connections N | bounce
    std::string scope = "destination";  // destination | source
    std::chrono::seconds duration_s{3600};

    friend bool operator==(const shaping_rule_config&, const shaping_rule_config&) = default;
};

// A shaping rule's action: ("suspend"|"bounce", 0) or ("rate"|"connections", N); nullopt when malformed.
std::optional<std::pair<std::string, unsigned>> parse_shaping_action(std::string_view s);
// "50, 100, 200" -> caps (each 1..10^9, at most 365 days); nullopt when malformed.
std::optional<std::vector<unsigned>> parse_caps(std::string_view s);
// "YYYY-MM-DD" -> days since 1970-01-01; nullopt when not a date.
std::optional<int64_t> parse_day(std::string_view s);

// "name" or "name:weight" (weight 1..1000) -> (name, weight); nullopt when malformed.
std::optional<std::pair<std::string, unsigned>> parse_pool_member(std::string_view s);

// [[route]]: a configured next hop that overrides DNS. domain is exact
// ("example.test"), a wildcard for subdomains ("*.example.test") or "*".
struct route_config {
    std::string domain;
    std::vector<std::string> hosts;  // as in delivery.internal_hosts; empty: the domain's MX (with a pool)
    std::string pool;                // the [[pool]] its mail goes from; "": delivery.default_pool
    std::string tls;                 // none | opportunistic | required | verify; "": delivery.tls

    friend bool operator==(const route_config&, const route_config&) = default;
};

// Splits "host", "host:port", "IP", "IP:port", "[IPv6]:port" into host and
// port (default_port when absent). nullopt when malformed.
std::optional<std::pair<std::string, uint16_t>> parse_next_hop(std::string_view s, uint16_t default_port);

// [[quarantine]]: where content rules hold mail (rule action
// `quarantine NAME`). policy, virus and spam exist with these defaults
// unless configured.
enum class quarantine_expiry { remove, release };
std::string_view to_string(quarantine_expiry e);
struct quarantine_config {
    std::string name;
    std::chrono::seconds retention_s{1'209'600};  // 14 days; then the expire action
    uint64_t max_size_bytes = uint64_t(1) << 30;  // key `max_size`: past it, the oldest expire early
    quarantine_expiry expire = quarantine_expiry::remove;  // key `expire`: "delete" or "release"

    friend bool operator==(const quarantine_config&, const quarantine_config&) = default;
};
// The quarantines in force: the configured ones, and the built-in ones
// not configured.
std::vector<quarantine_config> quarantines_of(const std::vector<quarantine_config>& configured);

// [[content_rule]]: a content rule (policy/rules.hh has the language).
// Rules run in file order at the end of each message.
struct content_rule_config {
    std::string name;       // unique; in the mail log and trace
    std::string condition;  // e.g. attachment-name ~ /\.exe$/ and direction == "inbound"
    std::vector<std::string> actions;  // e.g. ["reject 550 5.7.1 No executables"]

    friend bool operator==(const content_rule_config&, const content_rule_config&) = default;
};

// [screening]: connection screening (postscreen's tests, decided inside
// the session: a client is never made to reconnect). What a failed test
// gets: ignore (logged only), enforce (the session goes on, every RCPT gets
// 550 5.5.1: the envelope is logged and nothing is accepted) or drop (521
// 5.5.1 and close).
enum class screen_action { ignore, enforce, drop };
std::string_view to_string(screen_action a);
struct screening_config {
    // DNSBL and DNSWL sites, "zone[=filter][*weight]"; sender groups match
    // the sum of the listing sites' weights (dnsbl_min_score, dnsbl_max_score).
    std::vector<std::string> dnsbl_sites;
    screen_action pregreet = screen_action::drop;     // talked before the greeting (listener greet_pause_ms)
    screen_action pipelining = screen_action::ignore; // sent more commands before the EHLO/HELO reply
    screen_action bare_lf = screen_action::ignore;    // ended a command line with LF alone
    screen_action non_smtp = screen_action::drop;     // sent an HTTP request or a header line as a command
    // A client that passed is remembered this long and skips the greeting
    // pause and the tests; 0: no memory.
    std::chrono::seconds pass_ttl_s{86'400};
    uint64_t pass_cache_entries = 100'000;

    friend bool operator==(const screening_config&, const screening_config&) = default;
};

// [[mail_flow_policy]]: what a sender group's clients may do (policy/access.hh).
// ACCEPTED, BLOCKED, THROTTLED, TRUSTED and RELAYED exist unless configured.
enum class flow_action { accept, reject, relay };
std::string_view to_string(flow_action a);
enum class tls_policy { off, preferred, required };
std::string_view to_string(tls_policy t);
struct mail_flow_policy_config {
    std::string name;
    flow_action action = flow_action::accept;
    std::string reject_reply = "554 5.7.1 Access denied";  // the greeting of a reject policy
    uint64_t max_message_size_bytes = 0;  // key `max_message_size`; 0: the listener's
    unsigned max_messages_per_session = 0;    // 0: no limit
    unsigned max_recipients_per_message = 0;  // 0: the listener's
    unsigned max_recipients_per_hour = 0;     // per client address; 0: no limit
    unsigned max_connections_per_client = 0;  // 0: the listener's max_connections_per_ip
    tls_policy tls = tls_policy::preferred;
    bool auth = true;
    bool sender_auth = true;
    bool content_rules = true;
    bool screening = true;
    bool antivirus = true;
    bool antispam = true;
    bool milters = true;
    std::string pool;  // the [[pool]] the clients' mail goes from; "": as routed

    friend bool operator==(const mail_flow_policy_config&, const mail_flow_policy_config&) = default;
};
std::vector<mail_flow_policy_config> flow_policies_of(const std::vector<mail_flow_policy_config>& configured);

// [[sender_group]]: which clients a mail flow policy applies to. Tried in
// file order, then RELAYLIST, ALLOWLIST, BLOCKLIST and SUSPECTLIST (when
// not configured: empty), and UNKNOWNLIST, every other client, last.
struct sender_group_config {
    std::string name;
    std::string policy;  // a [[mail_flow_policy]] name
    std::vector<ip_network> networks;
    std::vector<std::string> rdns;  // "mail.example.test", "*.example.test"
    bool rdns_unconfirmed = false;
    int dnsbl_min_score = 0, dnsbl_max_score = 0;  // 0: not a criterion
    std::vector<std::string> spf;                  // SPF results ("fail", "softfail", ...)

    friend bool operator==(const sender_group_config&, const sender_group_config&) = default;
};
std::vector<sender_group_config> sender_groups_of(const std::vector<sender_group_config>& configured);

// [[recipient_access]]: the recipient access table (policy/recipient_access.hh).
struct recipient_access_config {
    std::string recipient;  // "user@example.test", "user@", "example.test", "*.example.test"
    bool reject = false;    // key `action`: "accept" or "reject"
    std::string reply = "550 5.1.1 Recipient address rejected";
    bool bypass_throttles = false;

    friend bool operator==(const recipient_access_config&, const recipient_access_config&) = default;
};

// [call_ahead]: recipient validation by asking the internal server
// (mta/smtp/call_ahead.hh).
struct call_ahead_config {
    std::vector<std::string> domains;  // validated; "*.example.test" for subdomains; empty: none
    std::vector<std::string> hosts;    // "IP" or "IP:port"; empty: delivery.internal_hosts
    std::string sender;                // MAIL FROM of the probe; "" = the null sender
    std::chrono::milliseconds timeout_ms{5000};
    std::chrono::seconds cache_ttl_s{3600};
    std::chrono::seconds negative_cache_ttl_s{600};
    uint64_t cache_entries = 100'000;
    bool fail_open = true;  // an unanswered call-ahead accepts; false: 451 4.4.3

    friend bool operator==(const call_ahead_config&, const call_ahead_config&) = default;
};

// [antivirus]: clamd (mta/scan/scanners.hh). A scanner that fails: on_failure.
enum class scan_failure { accept, tempfail };
std::string_view to_string(scan_failure f);
enum class virus_action { reject, quarantine, drop };
std::string_view to_string(virus_action a);
struct antivirus_config {
    std::string clamd;  // "/run/clamav/clamd.ctl" or "127.0.0.1:3310"; "": no anti-virus
    std::chrono::milliseconds timeout_ms{30'000};
    uint64_t max_size_bytes = uint64_t(25) << 20;  // key `max_size`: larger messages are not scanned
    scan_failure on_failure = scan_failure::accept;
    virus_action action = virus_action::reject;
    std::string reply = "554 5.7.0 Message contains a virus";

    friend bool operator==(const antivirus_config&, const antivirus_config&) = default;
};

// [antispam]: rspamd.
struct antispam_config {
    std::string rspamd;  // "127.0.0.1:11333"; "": no anti-spam
    std::chrono::milliseconds timeout_ms{30'000};
    uint64_t max_size_bytes = uint64_t(10) << 20;
    scan_failure on_failure = scan_failure::accept;
    bool quarantine = false;  // rspamd's reject: hold in quarantine spam instead of refusing
    std::string reply = "550 5.7.1 Message rejected as spam";
    std::string subject_tag = "[SPAM]";
    bool headers = true;

    friend bool operator==(const antispam_config&, const antispam_config&) = default;
};

// [[milter]]: a mail filter (mta/scan/milter.hh), asked in file order.
struct milter_config {
    std::string name;
    std::string address;  // "/run/milter.sock" or "127.0.0.1:8891"
    std::chrono::milliseconds connect_timeout_ms{5'000};
    std::chrono::milliseconds command_timeout_ms{30'000};
    std::chrono::milliseconds eom_timeout_ms{120'000};
    scan_failure on_failure = scan_failure::accept;

    friend bool operator==(const milter_config&, const milter_config&) = default;
};

// [outbound]: outbound spam control (mta/smtp/outbound.hh), for relayed mail.
struct outbound_config {
    unsigned user_messages_per_hour = 0, user_messages_per_day = 0;      // per authenticated user; 0: no limit
    unsigned domain_messages_per_hour = 0, domain_messages_per_day = 0;  // per MAIL FROM domain
    bool suspend = true;  // reaching a limit suspends the sender
    std::chrono::seconds suspend_s{0};  // 0: until lifted (ringway outbound lift)
    unsigned spam_strikes = 0;  // outbound messages rspamd would reject, in a day, that suspend; 0: off

    friend bool operator==(const outbound_config&, const outbound_config&) = default;
};

// [control]: the admin shell's Unix domain socket.
struct control_config {
    std::string socket = "./var/ringway.sock";
    // Members of this group may use the socket too (mode 0660); empty:
    // only the daemon's own user and root (mode 0600).
    std::string group;
    // Committed configuration versions: N.toml and N.json each.
    std::string config_dir = "./var/config";
    unsigned history_versions = 100;  // kept; older ones are deleted at commit
    // Where state that outlives a restart is kept (suspensions.json);
    // empty: the spool file's directory.
    std::string state_dir;

    friend bool operator==(const control_config&, const control_config&) = default;
};

// [metrics]: the Prometheus endpoint (HTTP GET /metrics).
struct metrics_config {
    std::string listen = "127.0.0.1:9425";  // "IP:port"; empty: no endpoint

    friend bool operator==(const metrics_config&, const metrics_config&) = default;
};

// [conservation]: graded back-pressure. Each resource has two thresholds:
// at the first, every SMTP reply is delayed by tarpit_ms (level 1); at the
// second, new connections get 421 4.3.2 and MAIL gets 452 4.3.1 (level 2).
// A level is left only once use falls hysteresis_percent below its
// threshold. A threshold of 0 turns that check off.
struct conservation_config {
    uint64_t memory_limit_bytes = 0;  // 0: the machine's memory (MemTotal)
    unsigned memory_tarpit_percent = 80, memory_refuse_percent = 90;  // of the limit, resident
    unsigned spool_tarpit_percent = 85, spool_refuse_percent = 95;    // of the spool, used
    uint64_t queue_tarpit_messages = 0, queue_refuse_messages = 0;    // messages in the spool
    unsigned hysteresis_percent = 5;
    std::chrono::milliseconds tarpit_ms{1000};

    friend bool operator==(const conservation_config&, const conservation_config&) = default;
};

// [authentication]: who sent the mail, proven (SPF today).
struct authentication_config {
    std::string authserv_id;              // Authentication-Results id; empty: smtp.hostname
    bool spf = true;                      // check SPF for every transaction
    bool spf_helo = true;                 // and the HELO identity of each session
    std::string spf_fail = "none";        // none | reject: what an SPF fail of MAIL FROM gets
    std::string spf_temperror = "accept"; // accept | tempfail: what a DNS failure gets
    std::string spf_explanation = "%{d}: sender %{s} not permitted from %{i}";
    bool dkim_verify = true;               // verify DKIM signatures of arriving mail
    bool dkim_trust_length = false;        // an l= signature may pass
    bool dkim_sign = true;                 // sign relayed mail whose From domain has a key
    std::string dkim_key_dir;              // SELECTOR._domainkey.DOMAIN.pem files; empty: control.config_dir/dkim
    std::vector<std::string> dkim_sign_headers = {
        "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version",
        "content-type", "content-transfer-encoding", "in-reply-to", "references", "list-id", "list-unsubscribe",
        "list-unsubscribe-post"};
    std::vector<std::string> dkim_oversign = {"from", "reply-to", "subject", "date", "to", "cc", "mime-version",
                                              "content-type", "list-unsubscribe", "list-unsubscribe-post"};
    int64_t dkim_expire_days = 0;          // x= this many days after signing; 0: none
    bool dmarc = true;                     // evaluate DMARC for arriving mail
    bool arc_verify = true;                // validate the ARC chain of arriving mail
    std::vector<std::string> arc_trusted_sealers;  // their pass overrides a DMARC fail
    std::string arc_seal_domain;           // seal arriving mail with this domain's key; "" = no sealing
    bool dmarc_reports = true;             // record DMARC results and send the daily rua= reports
    std::string dmarc_report_from;         // the reports' sender; "" = postmaster@smtp.hostname
    std::string dmarc_report_org;          // report_metadata/org_name; "" = smtp.hostname

    friend bool operator==(const authentication_config&, const authentication_config&) = default;
};

// A whole configuration. A default-constructed `config` has no listener and
// no hostname; a loaded one always has both.
struct config {
    runtime_config runtime;
    dns_config dns;
    spool_config spool;
    std::vector<listener_config> listeners;  // the [[listener]] tables, in file order
    smtp_config smtp;
    delivery_config delivery;
    std::vector<route_config> routes;  // the [[route]] tables, in file order
    std::vector<source_config> sources;  // the [[source]] tables
    std::vector<pool_config> pools;      // the [[pool]] tables
    std::vector<provider_config> providers;  // the [[provider]] tables
    std::vector<warmup_config> warmups;      // the [[warmup]] tables
    std::vector<shaping_rule_config> shaping_rules;  // the [[shaping_rule]] tables, in file order
    std::vector<quarantine_config> quarantines;      // the [[quarantine]] tables
    std::vector<content_rule_config> content_rules;  // the [[content_rule]] tables, in file order
    screening_config screening;
    std::vector<mail_flow_policy_config> flow_policies;  // the [[mail_flow_policy]] tables
    std::vector<sender_group_config> sender_groups;      // the [[sender_group]] tables, in file order
    std::vector<recipient_access_config> recipient_access;  // the [[recipient_access]] tables
    call_ahead_config call_ahead;
    antivirus_config antivirus;
    antispam_config antispam;
    std::vector<milter_config> milters;  // the [[milter]] tables, in file order
    outbound_config outbound;
    control_config control;
    metrics_config metrics;
    conservation_config conservation;
    authentication_config authentication;

    std::string source;  // the file name, or "<embedded default>"
    // Things the operator should know that are not errors, one line each in
    // the error format (e.g. an implicit-TLS listener without a certificate
    // gets a self-signed one). ringwayd logs them at warn.
    std::vector<std::string> notes;
};

// The embedded default, as commented TOML: what ringwayd runs with when given
// no --config, and what --print-default-config prints.
// Where state that survives a restart is kept: control.state_dir, or the
// spool file's directory.
std::string state_dir(const config& c);

std::string_view default_config_toml();

// Parses and validates TOML text; source_name is used in messages and kept
// in config::source. The error is every problem found, one per line. Never
// throws.
result<config, std::string> load_config_text(std::string_view text, std::string_view source_name);

// Reads and loads a file. A missing or unreadable file is an error naming the
// file and the reason (strerror). Never throws.
result<config, std::string> load_config_file(const std::string& path);

// load_config_text(default_config_toml(), "<embedded default>").
result<config, std::string> load_default_config();

}  // namespace rw::admin
