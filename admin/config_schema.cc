// The schema's table: every key of every section, in the order the default
// configuration and the reference show them.
#include "admin/config_schema.hh"

#include <chrono>
#include <concepts>
#include <unordered_map>

#include "admin/config_values.hh"

namespace rw::admin {

using detail::format_size;

namespace {

// -- a member's value as a key_value --
key_value val(bool b) { return b; }
template <std::integral T>
    requires(!std::same_as<T, bool>)
key_value val(T v) {
    return int64_t(v);
}
template <typename R, typename P>
key_value val(std::chrono::duration<R, P> d) {
    return int64_t(d.count());
}
key_value val(const std::string& s) { return s; }
key_value val(const std::vector<std::string>& l) { return l; }
key_value val(const std::vector<ip_network>& l) {
    std::vector<std::string> out;
    for (const auto& n : l)
        out.push_back(n.to_string());
    return out;
}
key_value val(const std::optional<std::vector<ip_network>>& l) {
    if (!l)
        return std::monostate{};
    return val(*l);
}
key_value val(rw::log_level l) { return std::string(rw::to_string(l)); }
key_value val(spool_flush f) { return std::string(to_string(f)); }
key_value val(auth_mode a) { return std::string(to_string(a)); }
key_value val(quarantine_expiry e) { return std::string(to_string(e)); }
key_value val(screen_action e) { return std::string(to_string(e)); }
key_value val(flow_action e) { return std::string(to_string(e)); }
key_value val(tls_policy e) { return std::string(to_string(e)); }
key_value val(scan_failure e) { return std::string(to_string(e)); }
key_value val(virus_action e) { return std::string(to_string(e)); }
// Sizes print with their unit; empty strings are absent.
key_value size_val(uint64_t b) { return format_size(b); }
key_value opt_val(const std::string& s) {
    if (s.empty())
        return std::monostate{};
    return s;
}

// A key's getter and setter on its section's struct (passed as void*: the
// schema is one table for every section).
// -- a key_value into a member (what the loader validated) --
void assign(bool& f, const key_value& v) {
    if (auto* b = std::get_if<bool>(&v))
        f = *b;
}
template <std::integral T>
    requires(!std::same_as<T, bool>)
void assign(T& f, const key_value& v) {
    if (auto* i = std::get_if<int64_t>(&v))
        f = T(*i);
}
template <typename R, typename P>
void assign(std::chrono::duration<R, P>& f, const key_value& v) {
    if (auto* i = std::get_if<int64_t>(&v))
        f = std::chrono::duration<R, P>(*i);
}
void assign(std::string& f, const key_value& v) {
    if (auto* s = std::get_if<std::string>(&v))
        f = *s;
}
void assign(rw::log_level& f, const key_value& v) {
    if (auto* s = std::get_if<std::string>(&v))
        (void)rw::parse_log_level(*s, f);
}
void assign(spool_flush& f, const key_value& v) {
    if (auto* s = std::get_if<std::string>(&v))
        f = *s == "fdatasync" ? spool_flush::fdatasync : *s == "dsync" ? spool_flush::dsync : spool_flush::automatic;
}
void assign(auth_mode& f, const key_value& v) {
    if (auto* s = std::get_if<std::string>(&v))
        f = *s == "none" ? auth_mode::none : *s == "required" ? auth_mode::required : auth_mode::optional;
}
void assign(quarantine_expiry& f, const key_value& v) {
    if (auto* s = std::get_if<std::string>(&v))
        f = *s == "release" ? quarantine_expiry::release : quarantine_expiry::remove;
}
void assign(screen_action& f, const key_value& v) {
    if (auto* s = std::get_if<std::string>(&v))
        f = *s == "ignore" ? screen_action::ignore : *s == "enforce" ? screen_action::enforce : screen_action::drop;
}
void assign(flow_action& f, const key_value& v) {
    if (auto* s = std::get_if<std::string>(&v))
        f = *s == "reject" ? flow_action::reject : *s == "relay" ? flow_action::relay : flow_action::accept;
}
void assign(tls_policy& f, const key_value& v) {
    if (auto* s = std::get_if<std::string>(&v))
        f = *s == "off" ? tls_policy::off : *s == "required" ? tls_policy::required : tls_policy::preferred;
}
void assign(scan_failure& f, const key_value& v) {
    if (auto* s = std::get_if<std::string>(&v))
        f = *s == "tempfail" ? scan_failure::tempfail : scan_failure::accept;
}
void assign(virus_action& f, const key_value& v) {
    if (auto* s = std::get_if<std::string>(&v))
        f = *s == "quarantine" ? virus_action::quarantine : *s == "drop" ? virus_action::drop : virus_action::reject;
}
// Lists are read by their sections' own code (each element has its own check).
template <typename T>
void assign(std::vector<T>&, const key_value&) {}
template <typename T>
void assign(std::optional<T>&, const key_value&) {}

#define RW_F(S, m)                                                                                        \
    [](const void* p) -> key_value { return val(static_cast<const S*>(p)->m); },                          \
        [](void* p, const key_value& v) { assign(static_cast<S*>(p)->m, v); }
#define RW_F_SIZE(S, m)                                                                                   \
    [](const void* p) -> key_value { return size_val(static_cast<const S*>(p)->m); },                     \
        [](void* p, const key_value& v) { assign(static_cast<S*>(p)->m, v); }
#define RW_F_OPT(S, m)                                                                                    \
    [](const void* p) -> key_value { return opt_val(static_cast<const S*>(p)->m); },                      \
        [](void* p, const key_value& v) { assign(static_cast<S*>(p)->m, v); }

constexpr std::string_view k_log_levels[] = {"trace", "debug", "info", "warn", "error"};
constexpr std::string_view k_flush_modes[] = {"auto", "fdatasync", "dsync"};
constexpr std::string_view k_auth_modes[] = {"none", "optional", "required"};
constexpr std::string_view k_spf_fail[] = {"none", "reject"};
constexpr std::string_view k_spf_temperror[] = {"accept", "tempfail"};
constexpr std::string_view k_quarantine_expiry[] = {"delete", "release"};
constexpr std::string_view k_shaping_scopes[] = {"destination", "source"};
constexpr std::string_view k_tls_modes[] = {"none", "opportunistic", "required", "verify"};
constexpr std::string_view k_screen_actions[] = {"ignore", "enforce", "drop"};
constexpr std::string_view k_flow_actions[] = {"accept", "reject", "relay"};
constexpr std::string_view k_tls_policies[] = {"off", "preferred", "required"};
constexpr std::string_view k_scan_failures[] = {"accept", "tempfail"};
constexpr std::string_view k_virus_actions[] = {"reject", "quarantine", "drop"};

constexpr auto live = apply_mode::live;
constexpr auto restart = apply_mode::restart;
using T = key_type;

const section_spec k_sections[] = {
    {"runtime", false, "Reactor threads and process-wide logging."},
    {"dns", false, "The resolver (c-ares on every reactor) and its cache."},
    {"spool", false, "The spool: Ringway's own log-structured store on a raw block device."},
    {"listener", true,
     "One [[listener]] table per SMTP listening socket; at least one is required. Listeners are counted "
     "from 0 in file order (listener[0])."},
    {"smtp", false, "Identity, relay control and per-client limits shared by every listener."},
    {"delivery", false, "The outbound queue and SMTP client."},
    {"route", true,
     "Routes override DNS for a domain (\"example.test\"), its subdomains (\"*.example.test\") or every "
     "domain (\"*\"), e.g. a smarthost: [[route]] with domain = \"*\" and hosts = [\"192.0.2.25:25\"]. A route "
     "may also, or only, choose the source pool of the domain's mail."},
    {"source", true,
     "Sources: local addresses delivery connects from, each with the name it greets with (EHLO) and optional "
     "limits of its own per destination. Every source keeps its own connection count and rate per destination. "
     "The address must be one this machine has."},
    {"pool", true,
     "Pools: sources with weights. A destination's connections are spread over the sources of its mail's pool in "
     "proportion to their weights (smooth weighted round robin). The pool of a message is, first to last: a "
     "content rule's pool action, its client's mail flow policy's pool, its route's pool, delivery.default_pool; "
     "without one, connections come from the address the system chooses."},
    {"provider", true,
     "Providers: destinations grouped by the suffix of their best MX host's name (every domain whose MX is a "
     "google.com host is one provider), with limits over all of them together, every core included, on top of "
     "each destination's. A built-in table names the large mailbox providers (gmail, microsoft, yahoo, apple, "
     "comcast, att, gmx, mailru, yandex, zoho, proton, fastmail, orange, qq, mimecast, proofpoint) without limits; "
     "a table with one of these names sets its limits (and replaces its suffixes when it gives mx_suffixes)."},
    {"shaping_rule", true,
     "Shaping rules: when the replies of a destination's servers match pattern (a regular expression over \"CODE "
     "X.Y.Z text\", caseless) threshold times within period_s, an override is put on the destination (scope = "
     "\"destination\") or on the source that got them, for that destination (scope = \"source\", suspend only), "
     "for duration_s: suspend (no new connection), rate N (messages per minute), connections N, or bounce "
     "(queued mail fails with a report). The gateway's own replies never count. ringway shaping list shows the "
     "overrides in force, ringway shaping lift ends them."},
    {"warmup", true,
     "Warm-up schedules: a new source's daily message caps, per provider, rising day by day (day 1 is the "
     "source's warmup_start); after the last day listed it is warm. Providers not listed share the daily caps. "
     "A source at its cap for the day sends nothing more there: its pool's other sources, then the overflow "
     "pool's, take the mail, or it waits for the next UTC day. Counts survive a restart."},
    {"quarantine", true,
     "Quarantines hold the mail of content rules whose action is quarantine NAME, in the spool, until released "
     "(ringway quarantine release), deleted, or expired. policy, virus and spam exist with the defaults shown "
     "unless configured."},
    {"content_rule", true,
     "Content rules, evaluated in file order at the end of each message: a condition on the envelope, header, "
     "decoded body, attachments and authentication results, and the actions taken when it holds. docs/rules.md "
     "has the language, e.g. condition = 'attachment-name ~ /\\.(exe|scr)$/' with actions = [\"reject 550 5.7.1 "
     "No executables\"]."},
    {"screening", false,
     "Connection screening, decided inside the session (a client is never made to reconnect): what a client "
     "that talks before the greeting, pipelines before the EHLO reply, ends a command with a bare LF or sends "
     "HTTP or header lines gets: ignore (logged), enforce (the session goes on and every RCPT gets 550 5.5.1) "
     "or drop (521 5.5.1, closed). Mail flow policies with screening = false skip it. The DNSBL sites give the "
     "score sender groups match."},
    {"mail_flow_policy", true,
     "Mail flow policies: what the clients of a sender group may do. ACCEPTED (the listener's limits), BLOCKED "
     "(reject), THROTTLED (10 messages per session, 50 recipients per message, 100 per hour, 5 connections, "
     "10M), TRUSTED (no screening) and RELAYED (may relay, no screening) exist unless configured; a table with "
     "one of these names replaces it."},
    {"sender_group", true,
     "Sender groups, tried in file order at connect: the first whose criteria hold for the client (any of "
     "networks, rdns, rdns_unconfirmed, dnsbl_min_score, dnsbl_max_score, spf) puts it under its mail flow "
     "policy. RELAYLIST (RELAYED), ALLOWLIST (TRUSTED), BLOCKLIST (BLOCKED) and SUSPECTLIST (THROTTLED) follow, "
     "empty unless configured, and UNKNOWNLIST (ACCEPTED) holds every other client; configure it to change its "
     "policy only. Only the lookups a decision needs are made."},
    {"recipient_access", true,
     "The recipient access table: entries for a mailbox (\"user@example.test\"), a local part at any domain "
     "(\"user@\"), a domain (\"example.test\") or its subdomains (\"*.example.test\"), the most precise first. "
     "accept: known, no call-ahead; reject: refused at RCPT with reply. It refines relay control and never "
     "grants relaying."},
    {"call_ahead", false,
     "Recipient validation: before a RCPT for one of domains is accepted, the internal server is asked "
     "(MAIL, RCPT, RSET, QUIT) and an unknown user is refused at RCPT with its reply, so no bounce is made. "
     "Answers are cached for every core; a server that does not answer, or answers 4xx, fails open or gets "
     "451 4.4.3."},
    {"antivirus", false,
     "Anti-virus through clamd: every message is streamed to it (INSTREAM) as it arrives, over a connection of "
     "its own, and judged at the end of DATA. Mail flow policies with antivirus = false skip it."},
    {"antispam", false,
     "Anti-spam through rspamd: every message is streamed to /checkv2 (chunked) as it arrives; rspamd's action "
     "decides: reject (refused, or held in quarantine spam), soft reject and greylist (451 4.7.1), rewrite "
     "subject (subject_tag), add header (X-Spam: Yes). Mail flow policies with antispam = false skip it "
     "(TRUSTED does)."},
    {"milter", true,
     "Mail filters speaking the Sendmail milter protocol (version 6), asked in file order for every "
     "transaction of clients whose mail flow policy has milters = true: connect, HELO, MAIL, RCPT, DATA, the "
     "header fields, the body as it streams in, and the end of the message, where they may add, change or "
     "delete header fields, quarantine, reject, tempfail or discard."},
    {"outbound", false,
     "Outbound spam control for relayed mail: messages per hour and per day for each authenticated user and each "
     "MAIL FROM domain (sliding windows, every core together). A sender at a limit gets 452 4.7.1 at MAIL and, "
     "with suspend, is suspended (550 5.7.1) for suspend_s or until lifted with ringway outbound lift; so is "
     "one whose messages rspamd would reject spam_strikes times in a day. Suspensions survive restarts."},
    {"control", false, "The admin shell's Unix domain socket and the store of configuration versions."},
    {"metrics", false, "The Prometheus endpoint."},
    {"conservation", false,
     "Graded back-pressure. At a resource's first threshold every SMTP reply is delayed by tarpit_ms; at the "
     "second, new connections get 421 4.3.2 and MAIL gets 452 4.3.1. A level ends once use is "
     "hysteresis_percent below its threshold. 0 turns a check off."},
    {"authentication", false,
     "Sender authentication: SPF (RFC 7208) of the MAIL FROM and HELO identities, reported in the "
     "Authentication-Results header (RFC 8601) the gateway adds."},
};

const key_spec k_keys[] = {
    // [runtime]
    {"runtime", "cores", T::integer, 0, 256, "0 (every CPU) or 1..256", "threads", restart,
     "Reactor threads, one per core: 0 = every CPU ringwayd may run on.", false, {}, {}, RW_F(runtime_config, cores)},
    {"runtime", "pin", T::boolean, 0, 0, {}, {}, restart, "Pin reactor thread i to the i-th allowed CPU.", false, {},
     {}, RW_F(runtime_config, pin)},
    {"runtime", "log_level", T::enumeration, 0, 0, {}, {}, live, "Diagnostic log level (standard error).", false, {},
     k_log_levels, RW_F(runtime_config, log_level)},
    {"runtime", "mail_log", T::path, 0, 0, "a file path, \"-\" (stdout) or \"\" (off)", {}, restart,
     "Mail log, one JSON line per reception and delivery event: a file path, \"-\" for standard output, \"\" for "
     "none.",
     false, {}, {}, RW_F(runtime_config, mail_log)},
    {"runtime", "drain_timeout_ms", T::integer, 0, 3'600'000, {}, "ms", restart,
     "On shutdown, how long open sessions get to finish before they are closed.", false, {}, {},
     RW_F(runtime_config, drain_timeout_ms)},

    // [dns]
    {"dns", "servers", T::string_list, 0, 8, "at most 8", {}, restart,
     "Resolvers as \"IP\" (port 53) or \"IP:port\" (\"[IPv6]:port\"). Empty: the system's resolvers from "
     "/etc/resolv.conf.",
     false, {}, {}, RW_F(dns_config, servers)},
    {"dns", "timeout_ms", T::integer, 1, 60'000, {}, "ms", restart, "How long to wait for an answer, per try.", false,
     {}, {}, RW_F(dns_config, timeout_ms)},
    {"dns", "tries", T::integer, 1, 10, {}, "attempts", restart, "Attempts per query.", false, {}, {},
     RW_F(dns_config, tries)},
    {"dns", "cache_entries", T::integer, 0, 10'000'000, "0 (no cache)..10000000", "answers", restart,
     "Cached answers, each kept for its TTL.", false, {}, {}, RW_F(dns_config, cache_entries)},

    // [spool]
    {"spool", "path", T::path, 0, 0, "the path of a block device or of a file", {}, restart,
     "The spool: a raw block device (e.g. \"/dev/sdb\"), or a file standing in for one.", false, {}, {},
     RW_F(spool_config, path)},
    {"spool", "size", T::size, int64_t(64) << 20, int64_t(64) << 40, {}, "bytes", restart,
     "Size of the spool: a spool file is pre-sized to this.", false, {}, {}, RW_F_SIZE(spool_config, size_bytes)},
    {"spool", "flush", T::enumeration, 0, 0, {}, {}, restart,
     "How a write batch is made durable before mail is acknowledged: \"auto\" (the spool picks for the device), "
     "\"fdatasync\" (write, then fdatasync) or \"dsync\" (O_DSYNC writes).",
     false, {}, k_flush_modes, RW_F(spool_config, flush)},

    // [[listener]]
    {"listener", "name", T::string, 0, 0, {}, {}, restart,
     "Unique name, used by the admin shell and in logs: 1..32 letters, digits, \"-\", \"_\" or \".\".", true, {}, {},
     RW_F(listener_config, name)},
    {"listener", "address", T::string, 0, 0, {}, {}, live,
     "IP address to bind, IPv4 or IPv6: \"0.0.0.0\" is every IPv4 address, \"::\" every IPv6 address.", false, {},
     {}, RW_F(listener_config, address)},
    {"listener", "port", T::integer, 1, 65535, {}, {}, live, "TCP port.", true, {}, {},
     RW_F(listener_config, port)},
    {"listener", "tls_cert", T::path, 0, 0, {}, {}, live,
     "Certificate chain, a PEM file; tls_cert and tls_key go together. With neither, a self-signed certificate is "
     "generated at start-up for STARTTLS.",
     false, "\"/etc/ringway/tls/cert.pem\"", {}, RW_F_OPT(listener_config, tls_cert)},
    {"listener", "tls_key", T::path, 0, 0, {}, {}, live, "Private key of tls_cert, a PEM file.", false,
     "\"/etc/ringway/tls/key.pem\"", {}, RW_F_OPT(listener_config, tls_key)},
    {"listener", "implicit_tls", T::boolean, 0, 0, {}, {}, live,
     "TLS from the first byte (port 465 style, RFC 8314) instead of STARTTLS.", false, {}, {},
     RW_F(listener_config, implicit_tls)},
    {"listener", "auth", T::enumeration, 0, 0, {}, {}, live,
     "SMTP AUTH: \"none\" (not offered), \"optional\" or \"required\".", false, {}, k_auth_modes,
     RW_F(listener_config, auth)},
    {"listener", "allow_auth_without_tls", T::boolean, 0, 0, {}, {}, live,
     "Offer AUTH before TLS is up (passwords in clear text).", false, {}, {},
     RW_F(listener_config, allow_auth_without_tls)},
    {"listener", "max_connections", T::integer, 1, 1'000'000, {}, "connections", live,
     "Concurrent connections to this listener, on all cores together.", false, {}, {},
     RW_F(listener_config, max_connections)},
    {"listener", "max_connections_per_ip", T::integer, 1, 1'000'000, {}, "connections", live,
     "Concurrent connections from one client IP address (smtp.client_limit_exceptions are exempt).", false, {}, {},
     RW_F(listener_config, max_connections_per_ip)},
    {"listener", "max_recipients", T::integer, 1, 100'000, {}, "recipients", live,
     "Recipients per message (RFC 5321 4.5.3.1.8 asks for at least 100).", false, {}, {},
     RW_F(listener_config, max_recipients)},
    {"listener", "max_message_size", T::size, int64_t(64) << 10, int64_t(2) << 30, {}, "bytes", live,
     "Largest message accepted, announced in EHLO SIZE; at most spool.size.", false, {}, {},
     RW_F_SIZE(listener_config, max_message_size_bytes)},
    {"listener", "max_line_length", T::size, 1000, int64_t(64) << 20, {}, "bytes", live,
     "Longest line of a message, CRLF included. RFC 5321 asks for 1000, but newsletters and scripts send longer "
     "lines and other MTAs take them; lines are streamed, never held whole. Longer: 552 5.3.4.",
     false, {}, {}, RW_F_SIZE(listener_config, max_line_length_bytes)},
    {"listener", "max_errors", T::integer, 1, 1000, {}, "commands", live,
     "Bad commands in a session before it is closed.", false, {}, {}, RW_F(listener_config, max_errors)},
    {"listener", "greeting_timeout_s", T::integer, 1, 86'400, {}, "s", live,
     "From our 220 greeting to the client's first command (RFC 5321 4.5.3.2.1).", false, {}, {},
     RW_F(listener_config, greeting_timeout_s)},
    {"listener", "command_timeout_s", T::integer, 1, 86'400, {}, "s", live,
     "Waiting for the next command (RFC 5321 4.5.3.2.7).", false, {}, {}, RW_F(listener_config, command_timeout_s)},
    {"listener", "data_block_timeout_s", T::integer, 1, 86'400, {}, "s", live,
     "Waiting for each piece of a message during DATA or BDAT (RFC 5321 4.5.3.2.5).", false, {}, {},
     RW_F(listener_config, data_block_timeout_s)},
    {"listener", "data_end_timeout_s", T::integer, 1, 86'400, {}, "s", live,
     "Our deadline to answer the final \".\" (queueing, checks): a client waits 10 minutes (RFC 5321 4.5.3.2.6), "
     "then gives up and sends the message again later.",
     false, {}, {}, RW_F(listener_config, data_end_timeout_s)},
    {"listener", "idle_timeout_s", T::integer, 1, 86'400, {}, "s", live, "A session idle between transactions.", false,
     {}, {}, RW_F(listener_config, idle_timeout_s)},
    {"listener", "greet_pause_ms", T::integer, 0, 60'000, {}, "ms", live,
     "Wait before the 220 greeting; a client that talks in that time is an early talker (RFC 5321 4.3.1) and is "
     "refused. 0: only bytes already there when we greet are caught.",
     false, {}, {}, RW_F(listener_config, greet_pause_ms)},
    {"listener", "dmarc_reject", T::boolean, 0, 0, {}, {}, live,
     "Act on a DMARC policy of reject (after pct= sampling): the message gets 550 5.7.1 at the end of DATA and "
     "is not queued. false: the result is only recorded (Authentication-Results, mail log).",
     false, {}, {}, RW_F(listener_config, dmarc_reject)},

    // [smtp]
    {"smtp", "hostname", T::string, 0, 0, {}, {}, restart,
     "Our name in EHLO, in replies and in Received: headers. Default: the system's host name; set a fully "
     "qualified one.",
     false, "\"mx.example.test\"", {}, RW_F_OPT(smtp_config, hostname)},
    {"smtp", "accepted_domains", T::string_list, 0, 100'000, {}, {}, live,
     "Domains we accept mail for from anyone, e.g. [\"example.test\"]. Mail for other domains is relayed only for "
     "clients in relay_networks or authenticated clients.",
     false, {}, {}, RW_F(smtp_config, accepted_domains)},
    {"smtp", "relay_networks", T::string_list, 0, 100'000, {}, {}, live,
     "Networks allowed to relay to any domain: CIDR (\"10.0.0.0/8\") or single addresses. A /0 is refused: that "
     "would be an open relay.",
     false, {}, {}, RW_F(smtp_config, relay_networks)},
    {"smtp", "credentials_file", T::path, 0, 0, "a file path", {}, live,
     "Users and password hashes for SMTP AUTH (ringway-passwd); read again at every commit.", false, {}, {},
     RW_F(smtp_config, credentials_file)},
    {"smtp", "allow_domain_literals", T::boolean, 0, 0, {}, {}, live,
     "Accept recipients at address literals (\"user@[192.0.2.1]\") that are not in accepted_domains; refused with "
     "550 5.7.1 otherwise (RFC 5321 4.1.3 allows either; literals are rare in real mail and common in abuse).",
     false, {}, {}, RW_F(smtp_config, allow_domain_literals)},
    {"smtp", "max_received_headers", T::integer, 1, 1000, {}, "headers", live,
     "More Received: headers than this is a mail loop: the message is refused with 554 5.4.6 at the end of the "
     "headers, and a queued one found over the limit (ours aside) is bounced the same way (RFC 5321 6.3).",
     false, {}, {}, RW_F(smtp_config, max_received_headers)},
    {"smtp", "client_connections_per_minute", T::integer, 0, 100'000'000, "0 (no limit)..100000000", "per minute",
     live, "New connections per client IP address, as a token bucket (0 = no limit).", false, {}, {},
     RW_F(smtp_config, client_connections_per_minute)},
    {"smtp", "client_connection_burst", T::integer, 1, 100'000'000, {}, "connections", live,
     "New connections one client may make at once before client_connections_per_minute applies.", false, {}, {},
     RW_F(smtp_config, client_connection_burst)},
    {"smtp", "client_messages_per_minute", T::integer, 0, 100'000'000, "0 (no limit)..100000000", "per minute", live,
     "Messages (MAIL commands) per client IP address (0 = no limit).", false, {}, {},
     RW_F(smtp_config, client_messages_per_minute)},
    {"smtp", "client_message_burst", T::integer, 1, 100'000'000, {}, "messages", live,
     "Messages one client may send at once before client_messages_per_minute applies.", false, {}, {},
     RW_F(smtp_config, client_message_burst)},
    {"smtp", "client_auth_attempts_per_minute", T::integer, 0, 100'000'000, "0 (no limit)..100000000", "per minute",
     live, "AUTH attempts per client IP address (0 = no limit).", false, {}, {},
     RW_F(smtp_config, client_auth_attempts_per_minute)},
    {"smtp", "client_auth_burst", T::integer, 1, 100'000'000, {}, "attempts", live,
     "AUTH attempts one client may make at once before client_auth_attempts_per_minute applies.", false, {}, {},
     RW_F(smtp_config, client_auth_burst)},
    {"smtp", "client_limit_exceptions", T::string_list, 0, 100'000, {}, {}, live,
     "Clients exempt from every per-client limit (these rates and listeners' max_connections_per_ip), as CIDR "
     "networks. Default: relay_networks.",
     false, "[\"127.0.0.0/8\", \"::1/128\"]", {}, RW_F(smtp_config, client_limit_exceptions)},

    // [delivery]
    {"delivery", "smtp_port", T::integer, 1, 65535, {}, {}, live, "Port of next hops found through MX or A/AAAA records.",
     false, {}, {}, RW_F(delivery_config, smtp_port)},
    {"delivery", "internal_hosts", T::string_list, 0, 64, {}, {}, live,
     "Next hops for mail to smtp.accepted_domains (an inbound gateway's internal servers): \"IP\", \"IP:port\", "
     "\"[IPv6]:port\", \"host\" or \"host:port\", tried in order. Empty: routed like any other mail ([[route]] "
     "tables, then MX).",
     false, {}, {}, RW_F(delivery_config, internal_hosts)},
    {"delivery", "starttls", T::boolean, 0, 0, {}, {}, live,
     "Use STARTTLS when the next hop offers it (opportunistic: the certificate is not verified, and a failed "
     "handshake falls back to plaintext).",
     false, {}, {}, RW_F(delivery_config, starttls)},
    {"delivery", "max_connections_per_destination", T::integer, 1, 10'000, {}, "connections", live,
     "Concurrent connections to one destination (next hop).", false, {}, {},
     RW_F(delivery_config, max_connections_per_destination)},
    {"delivery", "max_messages_per_connection", T::integer, 1, 1'000'000, {}, "messages", live,
     "Messages sent over one connection before it is closed.", false, {}, {},
     RW_F(delivery_config, max_messages_per_connection)},
    {"delivery", "max_messages_per_minute", T::integer, 0, 100'000'000, "0 (no limit)..100000000", "per minute", live,
     "Messages per minute to one destination (0 = no limit).", false, {}, {},
     RW_F(delivery_config, max_messages_per_minute)},
    {"delivery", "backoff_after_tempfails", T::integer, 0, 1'000'000, "0 (no adaptive back-off)..1000000",
     "replies", live,
     "Adaptive back-off: after this many transactions in a row that a destination's servers answered with "
     "temporary failures only (4xx replies they sent; not greylisting, not the gateway's own DNS or connection "
     "failures), its connection limit is halved, and its message rate limit when max_messages_per_minute is set; "
     "recover_after_deliveries delivering transactions in a row then give one connection (and a quarter of the "
     "rate) back, up to the configured limits.",
     false, {}, {}, RW_F(delivery_config, backoff_after_tempfails)},
    {"delivery", "recover_after_deliveries", T::integer, 1, 1'000'000, {}, "deliveries", live,
     "Delivering transactions in a row that give a backed-off destination one connection (and a quarter of its "
     "rate) back.",
     false, {}, {}, RW_F(delivery_config, recover_after_deliveries)},
    {"delivery", "connection_cache_time_ms", T::integer, 0, 300'000, "0 (no cache)..300000", "ms", live,
     "A connection whose destination has run dry stays open this long for the next message, then QUITs (0 = QUIT "
     "at once). Closed sooner when the destination's limits or a shutdown say so.",
     false, {}, {}, RW_F(delivery_config, connection_cache_time_ms)},
    {"delivery", "first_retry_ms", T::integer, 10, 86'400'000, {}, "ms", live,
     "The first retry of a deferred recipient comes after this; later ones double up to max_retry_ms (with 20 % "
     "jitter).",
     false, {}, {}, RW_F(delivery_config, first_retry_ms)},
    {"delivery", "max_retry_ms", T::integer, 10, 86'400'000, {}, "ms", live,
     "The longest wait between retries; at least first_retry_ms.", false, {}, {}, RW_F(delivery_config, max_retry_ms)},
    {"delivery", "greylist_retry_ms", T::integer, 10, 86'400'000, {}, "ms", live,
     "A greylisting reply (450/451 at the first attempt) is retried after this.", false, {}, {},
     RW_F(delivery_config, greylist_retry_ms)},
    {"delivery", "max_queue_lifetime_s", T::integer, 1, 30 * 86'400, {}, "s", live,
     "Mail still undelivered this long after arrival bounces.", false, {}, {},
     RW_F(delivery_config, max_queue_lifetime_s)},
    {"delivery", "delay_notice_after_s", T::integer, 0, 30 * 86'400, "0 (never)..2592000", "s", live,
     "A recipient still deferred this long after arrival gets its sender one delay notice (RFC 3464 \"Action: "
     "delayed\"), unless its NOTIFY excludes DELAY; 0 = never.",
     false, {}, {}, RW_F(delivery_config, delay_notice_after_s)},
    {"delivery", "destination_pause_ms", T::integer, 10, 86'400'000, {}, "ms", live,
     "A destination that refuses connections or answers 421 rests this long.", false, {}, {},
     RW_F(delivery_config, destination_pause_ms)},
    {"delivery", "connect_timeout_ms", T::integer, 10, 600'000, {}, "ms", live,
     "Client deadline to connect (RFC 5321 4.5.3.2).", false, {}, {}, RW_F(delivery_config, connect_timeout_ms)},
    {"delivery", "command_timeout_s", T::integer, 1, 3600, {}, "s", live,
     "Client deadline for each command's reply (RFC 5321 4.5.3.2).", false, {}, {},
     RW_F(delivery_config, command_timeout_s)},
    {"delivery", "data_timeout_s", T::integer, 1, 3600, {}, "s", live,
     "Client deadline for the reply to the end of a message (RFC 5321 4.5.3.2.6).", false, {}, {},
     RW_F(delivery_config, data_timeout_s)},
    {"delivery", "tls", T::enumeration, 0, 0, {}, {}, live,
     "Outbound TLS for destinations whose route sets none: none (never STARTTLS), opportunistic (when offered, "
     "unverified; a failed handshake falls back to plaintext), required (STARTTLS must work; the certificate is not "
     "checked), verify (the certificate must chain to a trusted CA and name the host). With starttls = false: none. "
     "REQUIRETLS mail is always sent with verify, to servers that offer REQUIRETLS.",
     false, {}, k_tls_modes, RW_F(delivery_config, tls)},
    {"delivery", "tls_ca_file", T::path, 0, 0, {}, {}, live,
     "PEM trust anchors to verify servers with (tls = \"verify\", REQUIRETLS); empty: the system's store.", false,
     "\"/etc/ringway/tls/ca.pem\"", {}, RW_F_OPT(delivery_config, tls_ca_file)},
    {"delivery", "mta_sts", T::boolean, 0, 0, {}, {}, live,
     "Apply receiving domains' MTA-STS policies (RFC 8461): a TXT record at _mta-sts.DOMAIN, the policy fetched "
     "over verified HTTPS and cached; in enforce mode only the MX hosts it names are used, with verified TLS.",
     false, {}, {}, RW_F(delivery_config, mta_sts)},
    {"delivery", "default_pool", T::string, 0, 0, {}, {}, live,
     "The [[pool]] of mail that no content rule, mail flow policy or route gives one; empty: connections from the "
     "address the system chooses, greeting with smtp.hostname.",
     false, "\"outbound\"", {}, RW_F_OPT(delivery_config, default_pool)},

    // [[route]]
    {"route", "domain", T::string, 0, 0, {}, {}, live,
     "A domain (\"example.test\"), a wildcard for its subdomains (\"*.example.test\") or \"*\" (every domain); one "
     "route per domain.",
     true, {}, {}, RW_F(route_config, domain)},
    {"route", "hosts", T::string_list, 0, 64, {}, {}, live,
     "Next hops, tried in order, as in delivery.internal_hosts. Required unless pool is set; without hosts the "
     "domain's MX hosts are used.",
     false, {}, {}, RW_F(route_config, hosts)},
    {"route", "pool", T::string, 0, 0, {}, {}, live, "The [[pool]] the domain's mail goes from.", false,
     "\"bulk\"", {}, RW_F_OPT(route_config, pool)},
    {"route", "tls", T::string, 0, 0, {}, {}, live,
     "The domain's outbound TLS policy (as delivery.tls); empty: delivery.tls.", false, "\"verify\"", {},
     RW_F_OPT(route_config, tls)},

    // [[source]]
    {"source", "name", T::string, 0, 0, {}, {}, live, "The source's name, unique; pools name it.", true, {}, {},
     RW_F(source_config, name)},
    {"source", "address", T::string, 0, 0, {}, {}, live,
     "The local IPv4 or IPv6 address connections come from; this machine must have it. A source connects only to "
     "next hops of its address family.",
     true, {}, {}, RW_F(source_config, address)},
    {"source", "helo", T::string, 0, 0, {}, {}, live,
     "The name it greets with (EHLO); empty: smtp.hostname. It should match the address's reverse DNS.", false,
     "\"out1.example.test\"", {}, RW_F_OPT(source_config, helo)},
    {"source", "max_connections_per_destination", T::integer, 0, 10'000, {}, "connections", live,
     "Its connections to one destination at a time; 0: only the destination's limit.", false, {}, {},
     RW_F(source_config, max_connections_per_destination)},
    {"source", "max_messages_per_minute", T::integer, 0, 10'000'000, {}, "messages", live,
     "Its messages to one destination per minute; 0: only the destination's limit.", false, {}, {},
     RW_F(source_config, max_messages_per_minute)},
    {"source", "warmup", T::string, 0, 0, {}, {}, live, "The [[warmup]] schedule of a new address; empty: warm.",
     false, "\"new-ip\"", {}, RW_F_OPT(source_config, warmup)},
    {"source", "warmup_start", T::string, 0, 0, {}, {}, live,
     "The first day of its warm-up, \"YYYY-MM-DD\" (UTC); required with warmup.", false, "\"2026-12-01\"", {},
     RW_F_OPT(source_config, warmup_start)},

    // [[pool]]
    {"pool", "name", T::string, 0, 0, {}, {}, live, "The pool's name, unique.", true, {}, {}, RW_F(pool_config, name)},
    {"pool", "sources", T::string_list, 1, 256, {}, {}, live,
     "Its sources, \"NAME\" (weight 1) or \"NAME:WEIGHT\" (1..1000), e.g. [\"out1:3\", \"out2\"].", true, {}, {},
     RW_F(pool_config, sources)},
    {"pool", "overflow", T::string, 0, 0, {}, {}, live,
     "The [[pool]] whose sources take the mail when none of this pool's may send (warm-up caps, limits); empty: "
     "the mail waits for them.",
     false, "\"warm\"", {}, RW_F_OPT(pool_config, overflow)},

    // [[provider]]
    {"provider", "name", T::string, 0, 0, {}, {}, live, "The provider's name, unique; a built-in one's to change it.",
     true, {}, {}, RW_F(provider_config, name)},
    {"provider", "mx_suffixes", T::string_list, 0, 64, {}, {}, live,
     "MX host name suffixes (\"google.com\" matches google.com and every name below it). Required for a new "
     "provider; for a built-in one, replaces its suffixes.",
     false, {}, {}, RW_F(provider_config, mx_suffixes)},
    {"provider", "max_connections", T::integer, 0, 100'000, {}, "connections", live,
     "Connections to all of its destinations at once, every core together; 0: no limit.", false, {}, {},
     RW_F(provider_config, max_connections)},
    {"provider", "max_messages_per_hour", T::integer, 0, 1'000'000'000, {}, "messages", live,
     "Messages to all of its destinations in a sliding hour, every core together; 0: no limit.", false, {}, {},
     RW_F(provider_config, max_messages_per_hour)},

    // [[shaping_rule]]
    {"shaping_rule", "name", T::string, 0, 0, {}, {}, live, "The rule's name, unique; in the mail log and the shell.",
     true, {}, {}, RW_F(shaping_rule_config, name)},
    {"shaping_rule", "provider", T::string, 0, 0, {}, {}, live,
     "The provider whose destinations it watches; empty: every destination.", false, "\"gmail\"", {},
     RW_F_OPT(shaping_rule_config, provider)},
    {"shaping_rule", "pattern", T::string, 0, 0, {}, {}, live,
     "A regular expression (PCRE syntax, no back-references) over the reply, \"CODE X.Y.Z text\", caseless.", true,
     {}, {}, RW_F(shaping_rule_config, pattern)},
    {"shaping_rule", "threshold", T::integer, 1, 100'000, {}, "matches", live,
     "Matches within period_s that set the override (a transaction counts once per distinct reply).", false, {}, {},
     RW_F(shaping_rule_config, threshold)},
    {"shaping_rule", "period_s", T::integer, 1, 86'400, {}, "s", live, "The window the matches are counted in.",
     false, {}, {}, RW_F(shaping_rule_config, period_s)},
    {"shaping_rule", "action", T::string, 0, 0, {}, {}, live,
     "suspend, rate N (messages per minute), connections N, or bounce.", false, {}, {},
     RW_F(shaping_rule_config, action)},
    {"shaping_rule", "scope", T::enumeration, 0, 0, {}, {}, live,
     "What the override holds: the destination, or the source that got the replies (for that destination; "
     "suspend only).",
     false, {}, k_shaping_scopes, RW_F(shaping_rule_config, scope)},
    {"shaping_rule", "duration_s", T::integer, 1, 604'800, {}, "s", live,
     "How long the override lasts; matching again meanwhile extends it.", false, {}, {},
     RW_F(shaping_rule_config, duration_s)},

    // [[warmup]]
    {"warmup", "name", T::string, 0, 0, {}, {}, live, "The schedule's name, unique; sources name it.", true, {}, {},
     RW_F(warmup_config, name)},
    {"warmup", "daily", T::string, 0, 0, {}, {}, live,
     "Daily caps for the providers not listed (together), day 1 first: \"50, 100, 200, 500\". Empty: none.", false,
     "\"50, 100, 200, 500, 1000, 2000\"", {}, RW_F_OPT(warmup_config, daily)},
    {"warmup", "providers", T::string_list, 0, 64, {}, {}, live,
     "Daily caps per provider: \"NAME: 20, 40, 80\".", false, {}, {}, RW_F(warmup_config, providers)},

    // [[quarantine]]
    {"quarantine", "name", T::string, 0, 0, {}, {}, live,
     "The quarantine's name (letters, digits, '-', '_', '.'), unique; rules name it: quarantine NAME.", true, {}, {},
     RW_F(quarantine_config, name)},
    {"quarantine", "retention_s", T::integer, 1, 315'360'000, {}, "s", live,
     "How long a message stays held before its expire action.", false, {}, {},
     RW_F(quarantine_config, retention_s)},
    {"quarantine", "max_size", T::size, int64_t(1) << 20, int64_t(1) << 40, {}, "bytes", live,
     "The most the quarantine holds, all cores together; past it the oldest messages expire early.", false, {}, {},
     RW_F_SIZE(quarantine_config, max_size_bytes)},
    {"quarantine", "expire", T::enumeration, 0, 0, {}, {}, live,
     "What expiry does: delete the message, or release it to delivery.", false, {}, k_quarantine_expiry,
     RW_F(quarantine_config, expire)},

    // [[content_rule]]
    {"content_rule", "name", T::string, 0, 0, {}, {}, live,
     "The rule's name, unique; shown in the mail log and by trace.", true, {}, {}, RW_F(content_rule_config, name)},
    {"content_rule", "condition", T::string, 0, 0, {}, {}, live,
     "When the rule fires: tests joined by and, or, not (docs/rules.md).", true, {}, {},
     RW_F(content_rule_config, condition)},
    {"content_rule", "actions", T::string_list, 1, 16, {}, {}, live,
     "What firing does, in order: accept, reject [CODE [X.Y.Z]] [TEXT], drop, add-header NAME: VALUE, "
     "remove-header NAME, tag-subject TEXT. accept, reject and drop end the evaluation.",
     true, {}, {}, RW_F(content_rule_config, actions)},

    // [screening]
    {"screening", "dnsbl_sites", T::string_list, 0, 100, {}, {}, live,
     "DNS blocklists and allowlists, \"zone[=filter][*weight]\": a site lists the client when it answers "
     "(with an address the filter allows, like 127.0.0.2 or 127.0.[0..255].[1..3]); the score is the sum of "
     "the listing sites' weights (1 unless given; allowlists weigh negative).",
     false, "[\"zen.example.test*2\", \"wl.example.test=127.0.[0..255].[1..3]*-3\"]", {},
     RW_F(screening_config, dnsbl_sites)},
    {"screening", "pregreet", T::enumeration, 0, 0, {}, {}, live,
     "A client that talks before the greeting (within the listener's greet_pause_ms).", false, {},
     k_screen_actions, RW_F(screening_config, pregreet)},
    {"screening", "pipelining", T::enumeration, 0, 0, {}, {}, live,
     "A client that sends more commands before the reply to its first EHLO or HELO (it cannot know of "
     "PIPELINING yet).",
     false, {}, k_screen_actions, RW_F(screening_config, pipelining)},
    {"screening", "bare_lf", T::enumeration, 0, 0, {}, {}, live,
     "A client that ends a command line with LF alone.", false, {}, k_screen_actions,
     RW_F(screening_config, bare_lf)},
    {"screening", "non_smtp", T::enumeration, 0, 0, {}, {}, live,
     "A client that sends an HTTP request (CONNECT, GET, POST...) or a header line (\"Host:\") as a command.",
     false, {}, k_screen_actions, RW_F(screening_config, non_smtp)},
    {"screening", "pass_ttl_s", T::integer, 0, 2'592'000, "0 (no memory)..2592000", "s", live,
     "How long a client that passed every test is remembered: it skips the greeting pause and the tests.", false,
     {}, {}, RW_F(screening_config, pass_ttl_s)},
    {"screening", "pass_cache_entries", T::integer, 1, 10'000'000, {}, "clients", live,
     "The most clients remembered; the least recently seen are forgotten first.", false, {}, {},
     RW_F(screening_config, pass_cache_entries)},

    // [[mail_flow_policy]]
    {"mail_flow_policy", "name", T::string, 0, 0, {}, {}, live,
     "The policy's name (letters, digits, '-', '_', '.'), unique; sender groups name it.", true, {}, {},
     RW_F(mail_flow_policy_config, name)},
    {"mail_flow_policy", "action", T::enumeration, 0, 0, {}, {}, live,
     "accept the client's mail; reject it at connect with reject_reply; or accept it and let it relay, as "
     "relay_networks do.",
     false, {}, k_flow_actions, RW_F(mail_flow_policy_config, action)},
    {"mail_flow_policy", "reject_reply", T::string, 0, 0, {}, {}, live,
     "What a reject policy's clients are told instead of the greeting: \"CODE X.Y.Z text\", 4xx or 5xx.", false,
     {}, {}, RW_F(mail_flow_policy_config, reject_reply)},
    {"mail_flow_policy", "max_message_size", T::size, 0, int64_t(1) << 40, "0 (the listener's)..1T", "bytes", live,
     "The largest message (EHLO SIZE); 0: the listener's max_message_size.", false, {}, {},
     RW_F_SIZE(mail_flow_policy_config, max_message_size_bytes)},
    {"mail_flow_policy", "max_messages_per_session", T::integer, 0, 1'000'000, "0 (no limit)..1000000", "messages",
     live, "Messages one session may send; the next MAIL gets 421 4.7.0 and the session ends.", false, {}, {},
     RW_F(mail_flow_policy_config, max_messages_per_session)},
    {"mail_flow_policy", "max_recipients_per_message", T::integer, 0, 100'000, "0 (the listener's)..100000",
     "recipients", live, "Recipients of one message; more get 452 4.5.3.", false, {}, {},
     RW_F(mail_flow_policy_config, max_recipients_per_message)},
    {"mail_flow_policy", "max_recipients_per_hour", T::integer, 0, 100'000'000, "0 (no limit)..100000000",
     "recipients", live,
     "Recipients one client address may send in an hour, every core together (a token bucket); more get "
     "452 4.7.1.",
     false, {}, {}, RW_F(mail_flow_policy_config, max_recipients_per_hour)},
    {"mail_flow_policy", "max_connections_per_client", T::integer, 0, 100'000, "0 (the listener's)..100000",
     "connections", live, "Connections open at once from one client address; more get 421 4.7.0.", false, {}, {},
     RW_F(mail_flow_policy_config, max_connections_per_client)},
    {"mail_flow_policy", "tls", T::enumeration, 0, 0, {}, {}, live,
     "off: STARTTLS is not offered; preferred: offered; required: MAIL before STARTTLS gets 530 5.7.0.", false, {},
     k_tls_policies, RW_F(mail_flow_policy_config, tls)},
    {"mail_flow_policy", "auth", T::boolean, 0, 0, {}, {}, live,
     "Offer SMTP AUTH (as the listener allows).", false, {}, {}, RW_F(mail_flow_policy_config, auth)},
    {"mail_flow_policy", "sender_auth", T::boolean, 0, 0, {}, {}, live,
     "Check SPF, DKIM, DMARC and ARC (as [authentication] says).", false, {}, {},
     RW_F(mail_flow_policy_config, sender_auth)},
    {"mail_flow_policy", "content_rules", T::boolean, 0, 0, {}, {}, live,
     "Run the content rules.", false, {}, {}, RW_F(mail_flow_policy_config, content_rules)},
    {"mail_flow_policy", "screening", T::boolean, 0, 0, {}, {}, live,
     "Run the [screening] tests.", false, {}, {}, RW_F(mail_flow_policy_config, screening)},
    {"mail_flow_policy", "antivirus", T::boolean, 0, 0, {}, {}, live,
     "Scan with [antivirus] (when configured).", false, {}, {}, RW_F(mail_flow_policy_config, antivirus)},
    {"mail_flow_policy", "antispam", T::boolean, 0, 0, {}, {}, live,
     "Scan with [antispam] (when configured).", false, {}, {}, RW_F(mail_flow_policy_config, antispam)},
    {"mail_flow_policy", "milters", T::boolean, 0, 0, {}, {}, live,
     "Ask the [[milter]] filters.", false, {}, {}, RW_F(mail_flow_policy_config, milters)},
    {"mail_flow_policy", "pool", T::string, 0, 0, {}, {}, live,
     "The [[pool]] the clients' mail goes from (a content rule's pool action overrides it); empty: as routed.",
     false, "\"bulk\"", {}, RW_F_OPT(mail_flow_policy_config, pool)},

    // [[sender_group]]
    {"sender_group", "name", T::string, 0, 0, {}, {}, live,
     "The group's name (letters, digits, '-', '_', '.'), unique; in the mail log.", true, {}, {},
     RW_F(sender_group_config, name)},
    {"sender_group", "policy", T::string, 0, 0, {}, {}, live,
     "The mail flow policy of its clients.", true, {}, {}, RW_F(sender_group_config, policy)},
    {"sender_group", "networks", T::string_list, 0, 100'000, {}, {}, live,
     "Client addresses, as CIDR networks or single addresses.", false, "[\"192.0.2.0/24\"]", {},
     RW_F(sender_group_config, networks)},
    {"sender_group", "rdns", T::string_list, 0, 10'000, {}, {}, live,
     "Forward-confirmed reverse DNS names: \"mail.example.test\", or \"*.example.test\" for any name below it.",
     false, "[\"*.example.test\"]", {}, RW_F(sender_group_config, rdns)},
    {"sender_group", "rdns_unconfirmed", T::boolean, 0, 0, {}, {}, live,
     "Clients without a forward-confirmed reverse DNS name (a DNS failure confirms nothing and does not match).",
     false, {}, {}, RW_F(sender_group_config, rdns_unconfirmed)},
    {"sender_group", "dnsbl_min_score", T::integer, -1000, 1000, "-1000..1000, 0 (not a criterion)", "points", live,
     "Clients whose DNSBL score (screening.dnsbl_sites) is at least this.", false, {}, {},
     RW_F(sender_group_config, dnsbl_min_score)},
    {"sender_group", "dnsbl_max_score", T::integer, -1000, 1000, "-1000..1000, 0 (not a criterion)", "points", live,
     "Clients whose DNSBL score is at most this (allowlists: negative).", false, {}, {},
     RW_F(sender_group_config, dnsbl_max_score)},
    {"sender_group", "spf", T::string_list, 0, 7, {}, {}, live,
     "SPF results of MAIL FROM (pass, fail, softfail, neutral, none, temperror, permerror): decided at MAIL, "
     "where a group that starts to hold changes the transaction's policy.",
     false, "[\"fail\"]", {}, RW_F(sender_group_config, spf)},

    // [[recipient_access]]
    {"recipient_access", "recipient", T::string, 0, 0, {}, {}, live,
     "Whom the entry is for: \"user@example.test\", \"user@\", \"example.test\" or \"*.example.test\".", true,
     {}, {}, RW_F(recipient_access_config, recipient)},
    {"recipient_access", "action", T::string, 0, 0, {}, {}, live,
     "accept (the mailbox is known: no call-ahead) or reject (with reply).", true, {}, {},
     [](const void* p) -> key_value {
         return std::string(static_cast<const recipient_access_config*>(p)->reject ? "reject" : "accept");
     },
     [](void*, const key_value&) {}},
    {"recipient_access", "reply", T::string, 0, 0, {}, {}, live,
     "What a rejected recipient is told: \"CODE X.Y.Z text\", 4xx or 5xx.", false, {}, {},
     RW_F(recipient_access_config, reply)},
    {"recipient_access", "bypass_throttles", T::boolean, 0, 0, {}, {}, live,
     "The client's mail flow policy limits on recipients (per message, per hour) do not count it.", false, {}, {},
     RW_F(recipient_access_config, bypass_throttles)},

    // [call_ahead]
    {"call_ahead", "domains", T::string_list, 0, 10'000, {}, {}, live,
     "Recipient domains validated (\"*.example.test\" for subdomains); empty: none.", false,
     "[\"example.test\"]", {}, RW_F(call_ahead_config, domains)},
    {"call_ahead", "hosts", T::string_list, 0, 16, {}, {}, live,
     "The internal servers asked, \"IP\" or \"IP:port\", in order; empty: delivery.internal_hosts.", false,
     "[\"192.0.2.25:25\"]", {}, RW_F(call_ahead_config, hosts)},
    {"call_ahead", "sender", T::string, 0, 0, {}, {}, live,
     "MAIL FROM of the probe; empty: the null sender.", false, "\"postmaster@example.test\"", {},
     RW_F_OPT(call_ahead_config, sender)},
    {"call_ahead", "timeout_ms", T::integer, 100, 120'000, {}, "ms", live,
     "For the connection and for each reply.", false, {}, {}, RW_F(call_ahead_config, timeout_ms)},
    {"call_ahead", "cache_ttl_s", T::integer, 0, 604'800, {}, "s", live,
     "How long a valid recipient is remembered.", false, {}, {}, RW_F(call_ahead_config, cache_ttl_s)},
    {"call_ahead", "negative_cache_ttl_s", T::integer, 0, 604'800, {}, "s", live,
     "How long an unknown recipient is remembered.", false, {}, {}, RW_F(call_ahead_config, negative_cache_ttl_s)},
    {"call_ahead", "cache_entries", T::integer, 1, 10'000'000, {}, "recipients", live,
     "The most recipients remembered, every core together.", false, {}, {},
     RW_F(call_ahead_config, cache_entries)},
    {"call_ahead", "fail_open", T::boolean, 0, 0, {}, {}, live,
     "When the internal server cannot say (no answer, 4xx): accept the recipient (true) or answer 451 4.4.3.",
     false, {}, {}, RW_F(call_ahead_config, fail_open)},

    // [antivirus]
    {"antivirus", "clamd", T::string, 0, 0, {}, {}, live,
     "clamd's socket: a Unix socket path or \"IP:port\"; empty: no anti-virus.", false,
     "\"/run/clamav/clamd.ctl\"", {}, RW_F_OPT(antivirus_config, clamd)},
    {"antivirus", "timeout_ms", T::integer, 100, 600'000, {}, "ms", live,
     "For the connection, each piece sent and the answer.", false, {}, {}, RW_F(antivirus_config, timeout_ms)},
    {"antivirus", "max_size", T::size, 1024, int64_t(1) << 32, {}, "bytes", live,
     "Larger messages are not scanned (keep it at most clamd's StreamMaxLength).", false, {}, {},
     RW_F_SIZE(antivirus_config, max_size_bytes)},
    {"antivirus", "on_failure", T::enumeration, 0, 0, {}, {}, live,
     "When clamd cannot be reached, times out or answers garbage: accept the message (fail open, logged) or "
     "451 4.7.1.",
     false, {}, k_scan_failures, RW_F(antivirus_config, on_failure)},
    {"antivirus", "action", T::enumeration, 0, 0, {}, {}, live,
     "What an infected message gets: reject (reply, with the virus name), quarantine (held in virus) or drop.",
     false, {}, k_virus_actions, RW_F(antivirus_config, action)},
    {"antivirus", "reply", T::string, 0, 0, {}, {}, live,
     "The refusal, \"CODE X.Y.Z text\"; \": NAME\" is added.", false, {}, {}, RW_F(antivirus_config, reply)},

    // [antispam]
    {"antispam", "rspamd", T::string, 0, 0, {}, {}, live,
     "rspamd's normal worker, \"IP:port\" (or a Unix socket path); empty: no anti-spam.", false,
     "\"127.0.0.1:11333\"", {}, RW_F_OPT(antispam_config, rspamd)},
    {"antispam", "timeout_ms", T::integer, 100, 600'000, {}, "ms", live,
     "For the connection, each piece sent and the answer.", false, {}, {}, RW_F(antispam_config, timeout_ms)},
    {"antispam", "max_size", T::size, 1024, int64_t(1) << 32, {}, "bytes", live, "Larger messages are not scanned.",
     false, {}, {}, RW_F_SIZE(antispam_config, max_size_bytes)},
    {"antispam", "on_failure", T::enumeration, 0, 0, {}, {}, live,
     "When rspamd cannot be reached, times out or answers garbage: accept (fail open, logged) or 451 4.7.1.", false,
     {}, k_scan_failures, RW_F(antispam_config, on_failure)},
    {"antispam", "quarantine", T::boolean, 0, 0, {}, {}, live,
     "rspamd's reject holds the message in quarantine spam instead of refusing it.", false, {}, {},
     RW_F(antispam_config, quarantine)},
    {"antispam", "reply", T::string, 0, 0, {}, {}, live, "The refusal of rspamd's reject, \"CODE X.Y.Z text\".",
     false, {}, {}, RW_F(antispam_config, reply)},
    {"antispam", "subject_tag", T::string, 0, 0, {}, {}, live,
     "Prefixed to the Subject for rspamd's rewrite subject.", false, {}, {}, RW_F(antispam_config, subject_tag)},
    {"antispam", "headers", T::boolean, 0, 0, {}, {}, live,
     "Add X-Spam-Status (Yes or No, score, required score, action, symbols) to every scanned message.", false, {},
     {}, RW_F(antispam_config, headers)},

    // [[milter]]
    {"milter", "name", T::string, 0, 0, {}, {}, live, "The milter's name, unique; in the mail log.", true, {}, {},
     RW_F(milter_config, name)},
    {"milter", "address", T::string, 0, 0, {}, {}, live,
     "Its socket: a Unix socket path or \"IP:port\".", true, "\"127.0.0.1:8891\"", {},
     RW_F(milter_config, address)},
    {"milter", "connect_timeout_ms", T::integer, 100, 60'000, {}, "ms", live, "To connect.", false, {}, {},
     RW_F(milter_config, connect_timeout_ms)},
    {"milter", "command_timeout_ms", T::integer, 100, 600'000, {}, "ms", live, "For each answer.", false, {}, {},
     RW_F(milter_config, command_timeout_ms)},
    {"milter", "eom_timeout_ms", T::integer, 100, 3'600'000, {}, "ms", live,
     "For its answer to the end of the message (its progress messages extend it).", false, {}, {},
     RW_F(milter_config, eom_timeout_ms)},
    {"milter", "on_failure", T::enumeration, 0, 0, {}, {}, live,
     "When it cannot be reached, times out or speaks garbage: go on without it for the session (accept, logged) "
     "or 451 4.7.1.",
     false, {}, k_scan_failures, RW_F(milter_config, on_failure)},

    // [outbound]
    {"outbound", "user_messages_per_hour", T::integer, 0, 100'000'000, "0 (no limit)..100000000", "messages", live,
     "Messages an authenticated user may relay in an hour.", false, {}, {},
     RW_F(outbound_config, user_messages_per_hour)},
    {"outbound", "user_messages_per_day", T::integer, 0, 100'000'000, "0 (no limit)..100000000", "messages", live,
     "Messages an authenticated user may relay in a day.", false, {}, {},
     RW_F(outbound_config, user_messages_per_day)},
    {"outbound", "domain_messages_per_hour", T::integer, 0, 100'000'000, "0 (no limit)..100000000", "messages",
     live, "Messages with one MAIL FROM domain relayed in an hour.", false, {}, {},
     RW_F(outbound_config, domain_messages_per_hour)},
    {"outbound", "domain_messages_per_day", T::integer, 0, 100'000'000, "0 (no limit)..100000000", "messages",
     live, "Messages with one MAIL FROM domain relayed in a day.", false, {}, {},
     RW_F(outbound_config, domain_messages_per_day)},
    {"outbound", "suspend", T::boolean, 0, 0, {}, {}, live,
     "A sender that reaches a limit is suspended (else only refused with 452 until its counts fall).", false, {},
     {}, RW_F(outbound_config, suspend)},
    {"outbound", "suspend_s", T::integer, 0, 31'536'000, "0 (until lifted)..31536000", "s", live,
     "How long a suspension lasts.", false, {}, {}, RW_F(outbound_config, suspend_s)},
    {"outbound", "spam_strikes", T::integer, 0, 1'000'000, "0 (off)..1000000", "messages", live,
     "Relayed messages rspamd would reject, in a day, that suspend their sender.", false, {}, {},
     RW_F(outbound_config, spam_strikes)},

    // [control]
    {"control", "socket", T::path, 0, 0, {}, {}, restart,
     "Unix domain socket of the admin shell (ringway), mode 0600: only this daemon's user and root may use it.",
     false, {}, {}, RW_F(control_config, socket)},
    {"control", "group", T::string, 0, 0, {}, {}, restart,
     "A group whose members may use the socket too (it becomes mode 0660); empty: the daemon's own user only.", false,
     "\"ringway-admin\"", {}, RW_F_OPT(control_config, group)},
    {"control", "config_dir", T::path, 0, 0, {}, {}, restart,
     "Where committed configuration versions are kept (one TOML file and one JSON record each, the last "
     "history_versions of them). ringwayd starts on the newest version unless the file given with --config has "
     "changed since it was last loaded.",
     false, {}, {}, RW_F(control_config, config_dir)},
    {"control", "history_versions", T::integer, 100, 100'000, {}, "versions", live,
     "Configuration versions kept; older ones are deleted at commit.", false, {}, {},
     RW_F(control_config, history_versions)},
    {"control", "state_dir", T::path, 0, 0, {}, {}, restart,
     "Where state that survives a restart is kept (the suspensions of listeners and delivery); empty: the "
     "directory of spool.path. Set it when the spool is a block device.",
     false, "\"/data/ringway\"", {}, RW_F_OPT(control_config, state_dir)},

    // [metrics]
    {"metrics", "listen", T::string, 0, 0, {}, {}, restart,
     "Prometheus text format over HTTP: GET /metrics on this \"IP:port\" (\"\" for none).", false, {}, {},
     RW_F(metrics_config, listen)},

    // [conservation]
    {"conservation", "memory_limit", T::size, 0, int64_t(1) << 50, {}, "bytes", live,
     "Resident memory allowed; 0: the machine's memory.", false, {}, {},
     RW_F_SIZE(conservation_config, memory_limit_bytes)},
    {"conservation", "memory_tarpit_percent", T::integer, 0, 100, "0 (off)..100", "%", live,
     "Resident memory, in percent of memory_limit, at which replies are tarpitted.", false, {}, {},
     RW_F(conservation_config, memory_tarpit_percent)},
    {"conservation", "memory_refuse_percent", T::integer, 0, 100, "0 (off)..100", "%", live,
     "Resident memory, in percent of memory_limit, at which new mail is refused.", false, {}, {},
     RW_F(conservation_config, memory_refuse_percent)},
    {"conservation", "spool_tarpit_percent", T::integer, 0, 100, "0 (off)..100", "%", live,
     "Spool in use, in percent, at which replies are tarpitted.", false, {}, {},
     RW_F(conservation_config, spool_tarpit_percent)},
    {"conservation", "spool_refuse_percent", T::integer, 0, 100, "0 (off)..100", "%", live,
     "Spool in use, in percent, at which new mail is refused.", false, {}, {},
     RW_F(conservation_config, spool_refuse_percent)},
    {"conservation", "queue_tarpit_messages", T::integer, 0, int64_t(1) << 40, "0 (off) or a message count",
     "messages", live, "Messages in the spool at which replies are tarpitted.", false, {}, {},
     RW_F(conservation_config, queue_tarpit_messages)},
    {"conservation", "queue_refuse_messages", T::integer, 0, int64_t(1) << 40, "0 (off) or a message count",
     "messages", live, "Messages in the spool at which new mail is refused.", false, {}, {},
     RW_F(conservation_config, queue_refuse_messages)},
    {"conservation", "hysteresis_percent", T::integer, 0, 50, {}, "%", live,
     "A level is left only once use falls this far below its threshold.", false, {}, {},
     RW_F(conservation_config, hysteresis_percent)},
    {"conservation", "tarpit_ms", T::integer, 0, 30'000, {}, "ms", live,
     "How long each SMTP reply waits at the tarpit level.", false, {}, {}, RW_F(conservation_config, tarpit_ms)},

    // [authentication]
    {"authentication", "authserv_id", T::string, 0, 0, "a domain name, or \"\" for smtp.hostname", {}, live,
     "The authserv-id of the Authentication-Results header (RFC 8601 2.5). Headers that already carry it are "
     "removed from arriving mail.",
     false, {}, {}, RW_F(authentication_config, authserv_id)},
    {"authentication", "spf", T::boolean, 0, 0, {}, {}, live,
     "Check SPF: the MAIL FROM identity (the HELO identity for the null sender) of every transaction.", false, {},
     {}, RW_F(authentication_config, spf)},
    {"authentication", "spf_helo", T::boolean, 0, 0, {}, {}, live,
     "Check the HELO identity as well (RFC 7208 2.3), once per HELO name of a session, before MAIL FROM's: its "
     "result goes into Authentication-Results (smtp.helo) and the mail log (spf_helo), and a fail is refused "
     "as MAIL FROM's is when spf_fail = \"reject\". Not for the null sender, whose check is the HELO identity.",
     false, {}, {}, RW_F(authentication_config, spf_helo)},
    {"authentication", "spf_fail", T::enumeration, 0, 0, {}, {}, live,
     "What an SPF fail of MAIL FROM gets: \"none\" (recorded only; DMARC decides) or \"reject\" (550 5.7.23 "
     "at RCPT, with the domain's explanation).",
     false, {}, k_spf_fail, RW_F(authentication_config, spf_fail)},
    {"authentication", "spf_temperror", T::enumeration, 0, 0, {}, {}, live,
     "What an SPF temperror (a DNS failure) gets: \"accept\" or \"tempfail\" (451 4.7.24 at RCPT).", false, {},
     k_spf_temperror, RW_F(authentication_config, spf_temperror)},
    {"authentication", "spf_explanation", T::string, 0, 0, "a macro-string (RFC 7208 7)", {}, live,
     "The explanation of an SPF fail when the sender's record gives none (exp=); macros are expanded.", false, {},
     {}, RW_F(authentication_config, spf_explanation)},
    {"authentication", "dkim_verify", T::boolean, 0, 0, {}, {}, live,
     "Verify the DKIM signatures (RFC 6376; rsa-sha256 and ed25519-sha256) of mail from clients that may not "
     "relay, while it streams in; the results go into Authentication-Results and the mail log.",
     false, {}, {}, RW_F(authentication_config, dkim_verify)},
    {"authentication", "dkim_trust_length", T::boolean, 0, 0, {}, {}, live,
     "Let a signature with l= (covering only the start of the body) pass; otherwise it gives \"policy\" when "
     "unsigned content follows.",
     false, {}, {}, RW_F(authentication_config, dkim_trust_length)},
    {"authentication", "dkim_sign", T::boolean, 0, 0, {}, {}, live,
     "DKIM-sign the mail of clients that may relay when the domain of its From: (or a parent of it) has "
     "keys in dkim_key_dir: one signature per key (an RSA and an Ed25519 key: dual signing). The body hash is "
     "computed while the message streams in.",
     false, {}, {}, RW_F(authentication_config, dkim_sign)},
    {"authentication", "dkim_key_dir", T::path, 0, 0, "a directory, or \"\" for control.config_dir/dkim", {}, live,
     "Signing keys, one PEM file (PKCS#8, RSA of 1024 bits or more, or Ed25519) per key, named "
     "SELECTOR._domainkey.DOMAIN.pem; `ringway dkim genkey` writes them here. Read at every commit and by "
     "`ringway dkim reload`; a key that does not load refuses the commit.",
     false, {}, {}, RW_F(authentication_config, dkim_key_dir)},
    {"authentication", "dkim_sign_headers", T::string_list, 1, 64, "header field names", {}, live,
     "The header fields a signature covers (each instance present; From always).", false, {}, {},
     RW_F(authentication_config, dkim_sign_headers)},
    {"authentication", "dkim_oversign", T::string_list, 0, 64, "header field names", {}, live,
     "Fields signed once more than present, so that one added later breaks the signature.", false, {}, {},
     RW_F(authentication_config, dkim_oversign)},
    {"authentication", "dkim_expire_days", T::integer, 0, 3650, "0 (none) or days", "days", live,
     "The signature's x= (expiry) this many days after signing.", false, {}, {},
     RW_F(authentication_config, dkim_expire_days)},
    {"authentication", "dmarc", T::boolean, 0, 0, {}, {}, live,
     "Evaluate DMARC (RFC 7489; np= from DMARCbis) for mail from clients that may not relay: the From: "
     "domain's policy (or its organisational domain's, by the public suffix list), SPF and DKIM alignment. "
     "What a reject policy does is each listener's dmarc_reject.",
     false, {}, {}, RW_F(authentication_config, dmarc)},
    {"authentication", "arc_verify", T::boolean, 0, 0, {}, {}, live,
     "Validate the ARC chain (RFC 8617) of mail from clients that may not relay; the result goes into "
     "Authentication-Results and the mail log.",
     false, {}, {}, RW_F(authentication_config, arc_verify)},
    {"authentication", "arc_trusted_sealers", T::string_list, 0, 1000, "domains", {}, live,
     "Sealers (d= of the newest ARC-Seal) whose passing chain overrides a DMARC fail: the message keeps "
     "disposition none, and Authentication-Results says why (mailing lists and forwarders you trust).",
     false, {}, {}, RW_F(authentication_config, arc_trusted_sealers)},
    {"authentication", "arc_seal_domain", T::string, 0, 0, "a domain with a key in dkim_key_dir, or \"\"", {},
     live,
     "Seal arriving mail (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results with our results) with "
     "this domain's first RSA key (RFC 8617 signs with rsa-sha256 only), so that hops after us can trust what we "
     "found; \"\": no sealing.",
     false, {}, {}, RW_F(authentication_config, arc_seal_domain)},
    {"authentication", "dmarc_reports", T::boolean, 0, 0, {}, {}, live,
     "Record each DMARC evaluation whose policy record asks for aggregate reports (rua=), per policy domain "
     "and UTC day, and send each day's reports (RFC 7489 appendix C XML, gzip) after it ends. A destination "
     "outside the policy domain must confirm it takes them (RFC 7489 7.1). `ringway dmarc` shows and sends "
     "them.",
     false, {}, {}, RW_F(authentication_config, dmarc_reports)},
    {"authentication", "dmarc_report_from", T::string, 0, 0, "an address, or \"\" for postmaster@smtp.hostname",
     {}, live, "The sender (From: and MAIL FROM) of the DMARC reports, and the report_metadata email.", false, {},
     {}, RW_F(authentication_config, dmarc_report_from)},
    {"authentication", "dmarc_report_org", T::string, 0, 0, "a name, or \"\" for smtp.hostname", {}, live,
     "The reporting organisation's name in the DMARC reports (org_name, and the Subject's Submitter).", false,
     {}, {}, RW_F(authentication_config, dmarc_report_org)},
};

#undef RW_F
#undef RW_F_SIZE
#undef RW_F_OPT

}  // namespace

std::string_view to_string(key_type t) {
    switch (t) {
    case key_type::integer: return "integer";
    case key_type::boolean: return "boolean";
    case key_type::string: return "string";
    case key_type::path: return "path";
    case key_type::size: return "size";
    case key_type::enumeration: return "one of";
    case key_type::string_list: return "array of strings";
    }
    return "?";
}

std::string_view to_string(apply_mode a) {
    return a == apply_mode::live ? "live" : "restart";
}

std::string key_spec::path() const {
    return fmt::format("{}.{}", section, name);
}

namespace {
const void* struct_of(const config& c, std::string_view section, size_t i) {
    if (section == "runtime") return &c.runtime;
    if (section == "dns") return &c.dns;
    if (section == "spool") return &c.spool;
    if (section == "listener") return &c.listeners.at(i);
    if (section == "smtp") return &c.smtp;
    if (section == "delivery") return &c.delivery;
    if (section == "route") return &c.routes.at(i);
    if (section == "source") return &c.sources.at(i);
    if (section == "pool") return &c.pools.at(i);
    if (section == "provider") return &c.providers.at(i);
    if (section == "warmup") return &c.warmups.at(i);
    if (section == "shaping_rule") return &c.shaping_rules.at(i);
    if (section == "content_rule") return &c.content_rules.at(i);
    if (section == "quarantine") return &c.quarantines.at(i);
    if (section == "screening") return &c.screening;
    if (section == "mail_flow_policy") return &c.flow_policies.at(i);
    if (section == "sender_group") return &c.sender_groups.at(i);
    if (section == "recipient_access") return &c.recipient_access.at(i);
    if (section == "call_ahead") return &c.call_ahead;
    if (section == "antivirus") return &c.antivirus;
    if (section == "antispam") return &c.antispam;
    if (section == "milter") return &c.milters.at(i);
    if (section == "outbound") return &c.outbound;
    if (section == "control") return &c.control;
    if (section == "metrics") return &c.metrics;
    if (section == "conservation") return &c.conservation;
    if (section == "authentication") return &c.authentication;
    return nullptr;
}
}  // namespace

key_value key_spec::value_in(const config& c, size_t index) const {
    const void* p = struct_of(c, section, index);
    return p ? get(p) : key_value{};
}

std::span<const section_spec> config_sections() { return k_sections; }
std::span<const key_spec> config_keys() { return k_keys; }

std::vector<const key_spec*> section_keys(std::string_view section) {
    std::vector<const key_spec*> out;
    for (const auto& k : k_keys)
        if (k.section == section)
            out.push_back(&k);
    return out;
}

const key_spec* find_key(std::string_view section, std::string_view name) {
    for (const auto& k : k_keys)
        if (k.section == section && k.name == name)
            return &k;
    return nullptr;
}

namespace {

std::string toml_string(std::string_view s) {
    std::string out = "\"";
    for (char ch : s) {
        switch (ch) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        default:
            if (uint8_t(ch) < 0x20 || ch == 0x7f)
                out += fmt::format("\\u{:04X}", unsigned(uint8_t(ch)));
            else
                out += ch;
        }
    }
    out += '"';
    return out;
}

size_t count_of(const config& c, const section_spec& s) {
    if (!s.array)
        return 1;
    if (s.name == "listener")
        return c.listeners.size();
    if (s.name == "content_rule")
        return c.content_rules.size();
    if (s.name == "quarantine")
        return c.quarantines.size();
    if (s.name == "mail_flow_policy")
        return c.flow_policies.size();
    if (s.name == "sender_group")
        return c.sender_groups.size();
    if (s.name == "recipient_access")
        return c.recipient_access.size();
    if (s.name == "milter")
        return c.milters.size();
    if (s.name == "source")
        return c.sources.size();
    if (s.name == "pool")
        return c.pools.size();
    if (s.name == "provider")
        return c.providers.size();
    if (s.name == "warmup")
        return c.warmups.size();
    if (s.name == "shaping_rule")
        return c.shaping_rules.size();
    return c.routes.size();
}

std::string prefix_of(const section_spec& s, size_t i) {
    return s.array ? fmt::format("{}[{}]", s.name, i) : std::string(s.name);
}

// Wraps text into "# " comment lines of at most `width` columns.
std::string comment(std::string_view text, size_t width = 78) {
    std::string out, line;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t sp = text.find(' ', pos);
        std::string_view word = text.substr(pos, sp == std::string_view::npos ? std::string_view::npos : sp - pos);
        if (!line.empty() && line.size() + 1 + word.size() + 2 > width) {
            out += fmt::format("# {}\n", line);
            line.clear();
        }
        if (!line.empty())
            line += ' ';
        line += word;
        if (sp == std::string_view::npos)
            break;
        pos = sp + 1;
    }
    if (!line.empty())
        out += fmt::format("# {}\n", line);
    return out;
}

std::string allowed_text(const key_spec& k) {
    if (!k.allowed.empty())
        return std::string(k.allowed);
    switch (k.type) {
    case key_type::integer: return fmt::format("{}..{}", k.lo, k.hi);
    case key_type::size: return fmt::format("{}..{}", format_size(uint64_t(k.lo)), format_size(uint64_t(k.hi)));
    case key_type::boolean: return "true, false";
    case key_type::enumeration: {
        std::string s;
        for (auto c : k.choices)
            s += fmt::format("{}\"{}\"", s.empty() ? "" : ", ", c);
        return s;
    }
    case key_type::string_list: return k.hi ? fmt::format("up to {} entries", k.hi) : std::string();
    default: return {};
    }
}

// The configuration the embedded default describes: every struct's own
// defaults and the one listener the default runs.
config default_shape() {
    config c;
    listener_config l;
    l.name = "smtp";
    l.port = 2525;
    c.listeners.push_back(l);
    return c;
}

}  // namespace

std::string toml_text(const key_value& v) {
    return std::visit(
        [](const auto& x) -> std::string {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, std::monostate>)
                return {};
            else if constexpr (std::is_same_v<X, bool>)
                return x ? "true" : "false";
            else if constexpr (std::is_same_v<X, int64_t>)
                return fmt::format("{}", x);
            else if constexpr (std::is_same_v<X, std::string>)
                return toml_string(x);
            else {
                std::string s = "[";
                for (size_t i = 0; i < x.size(); ++i)
                    s += fmt::format("{}{}", i ? ", " : "", toml_string(x[i]));
                return s + "]";
            }
        },
        v);
}

flat_config flatten(const config& c) {
    flat_config out;
    for (const auto& s : k_sections) {
        size_t n = count_of(c, s);
        for (size_t i = 0; i < n; ++i)
            for (const auto& k : k_keys) {
                if (k.section != s.name)
                    continue;
                key_value v = k.value_in(c, i);
                if (std::holds_alternative<std::monostate>(v))
                    continue;
                out.emplace_back(fmt::format("{}.{}", prefix_of(s, i), k.name), toml_text(v));
            }
    }
    return out;
}

std::string to_toml(const config& c, std::string_view section) {
    std::string out;
    for (const auto& s : k_sections) {
        if (!section.empty() && s.name != section)
            continue;
        size_t n = count_of(c, s);
        for (size_t i = 0; i < n; ++i) {
            if (!out.empty())
                out += '\n';
            out += s.array ? fmt::format("[[{}]]\n", s.name) : fmt::format("[{}]\n", s.name);
            for (const auto& k : k_keys) {
                if (k.section != s.name)
                    continue;
                key_value v = k.value_in(c, i);
                if (!std::holds_alternative<std::monostate>(v))
                    out += fmt::format("{} = {}\n", k.name, toml_text(v));
            }
        }
    }
    return out;
}

std::string to_toml(const config& c) { return to_toml(c, {}); }

namespace {
// "listener[2].port" -> its spec.
const key_spec* spec_of_path(std::string_view path) {
    size_t dot = path.rfind('.');
    if (dot == std::string_view::npos)
        return nullptr;
    std::string_view sec = path.substr(0, dot);
    if (size_t b = sec.find('['); b != std::string_view::npos)
        sec = sec.substr(0, b);
    return find_key(sec, path.substr(dot + 1));
}
}  // namespace

std::vector<key_change> diff(const config& before, const config& after) {
    flat_config a = flatten(before), b = flatten(after);
    std::vector<key_change> out;
    auto mode = [](const std::string& key) {
        const key_spec* k = spec_of_path(key);
        return k ? k->apply : apply_mode::restart;
    };
    // Both lists are in schema order; keys only on one side are kept in order.
    std::unordered_map<std::string_view, const std::string*> in_a, in_b;
    for (const auto& [k, v] : a)
        in_a.emplace(k, &v);
    for (const auto& [k, v] : b)
        in_b.emplace(k, &v);
    auto find = [](const auto& m, const std::string& key) -> const std::string* {
        auto it = m.find(key);
        return it == m.end() ? nullptr : it->second;
    };
    for (const auto& [k, v] : a) {
        const std::string* other = find(in_b, k);
        if (!other)
            out.push_back({k, v, {}, mode(k)});
        else if (*other != v)
            out.push_back({k, v, *other, mode(k)});
    }
    for (const auto& [k, v] : b)
        if (!find(in_a, k))
            out.push_back({k, {}, v, mode(k)});
    // A listener added, removed or renamed: every listener key waits for a restart.
    if (!same_listener_names(before, after))
        for (auto& ch : out)
            if (ch.key.starts_with("listener["))
                ch.apply = apply_mode::restart;
    return out;
}

std::string format_diff(const std::vector<key_change>& changes) {
    std::string out;
    for (const auto& ch : changes) {
        std::string when = ch.apply == apply_mode::restart ? "  (at restart)" : "";
        if (ch.before.empty())
            out += fmt::format("+ {} = {}{}\n", ch.key, ch.after, when);
        else if (ch.after.empty())
            out += fmt::format("- {} = {}{}\n", ch.key, ch.before, when);
        else
            out += fmt::format("~ {}: {} -> {}{}\n", ch.key, ch.before, ch.after, when);
    }
    return out;
}

bool same_listener_names(const config& a, const config& b) {
    if (a.listeners.size() != b.listeners.size())
        return false;
    for (size_t i = 0; i < a.listeners.size(); ++i)
        if (a.listeners[i].name != b.listeners[i].name)
            return false;
    return true;
}

config effective_config(const config& running, const config& committed) {
    config e = committed;
    // Sections that only apply at start, but for their live keys.
    e.runtime = running.runtime;
    e.runtime.log_level = committed.runtime.log_level;
    e.dns = running.dns;
    e.spool = running.spool;
    e.control = running.control;
    e.control.history_versions = committed.control.history_versions;
    e.metrics = running.metrics;
    e.smtp.hostname = running.smtp.hostname;
    // Listeners added, removed or renamed wait for a restart; the others
    // take every change, their sockets and certificates included.
    if (!same_listener_names(running, committed))
        e.listeners = running.listeners;
    e.source = committed.source;
    e.notes = committed.notes;
    return e;
}

std::string render_default_toml() {
    const config c = default_shape();
    std::string out =
        "# Ringway configuration: the embedded default.\n"
        "#\n"
        "# ringwayd runs with this when started without --config, and prints it with\n"
        "# --print-default-config. Every key is shown with its default value, so a\n"
        "# key left out of a configuration file means what it says here. Relative\n"
        "# paths are relative to ringwayd's working directory. Sizes are an integer\n"
        "# number of bytes or a string with a unit K, M, G or T (powers of 1024):\n"
        "# \"64K\", \"512M\", \"1G\". docs/config.md is the reference of every key.\n";
    for (const auto& s : k_sections) {
        out += '\n';
        if (s.array)
            out += comment(s.doc);
        size_t n = count_of(c, s);
        if (n == 0) {
            // An array of tables with no default entry: show its keys commented out.
            out += fmt::format("# [[{}]]\n", s.name);
            for (const auto& k : k_keys)
                if (k.section == s.name)
                    out += fmt::format("# {} = ...\n", k.name);
            continue;
        }
        for (size_t i = 0; i < n; ++i) {
            out += s.array ? fmt::format("[[{}]]\n", s.name) : fmt::format("[{}]\n", s.name);
            if (!s.array)
                out += comment(s.doc);
            for (const auto& k : k_keys) {
                if (k.section != s.name)
                    continue;
                std::string doc(k.doc);
                std::string allowed = allowed_text(k);
                if (!allowed.empty() && k.type != key_type::boolean)
                    doc += fmt::format(" Allowed: {}{}.", allowed,
                                       k.unit.empty() || k.unit == "bytes" ? "" : fmt::format(" ({})", k.unit));
                if (k.required)
                    doc += " Required.";
                out += comment(doc);
                key_value v = k.value_in(c, i);
                if (std::holds_alternative<std::monostate>(v))
                    out += fmt::format("# {} = {}\n", k.name, k.example);
                else
                    out += fmt::format("{} = {}\n", k.name, toml_text(v));
            }
        }
    }
    return out;
}

std::string_view default_config_toml() {
    static const std::string text = render_default_toml();
    return text;
}

std::string render_reference_markdown() {
    const config c = default_shape();
    std::string out =
        "# Configuration reference\n\n"
        "Generated from the schema (`admin/config_schema.cc`) by `ringwayd --print-config-reference`; the test "
        "`config_reference` fails when this file is not current.\n\n"
        "One TOML file (`ringwayd --config FILE`), or the embedded default (`ringwayd --print-default-config`). "
        "Sizes are an integer number of bytes or a string with a unit K, M, G or T (powers of 1024). Durations are "
        "integers in the unit their name ends with (`_ms`, `_s`).\n\n"
        "**Applies** says what `ringway commit` does with a changed key: *live* keys take effect on every core at "
        "once (new sessions and deliveries use them; open sessions finish on the values they started with); "
        "*restart* keys are kept with the committed version and take effect when ringwayd next starts "
        "(`ringway status` lists them until then).\n";
    for (const auto& s : k_sections) {
        out += fmt::format("\n## `{}`\n\n{}\n\n", s.array ? fmt::format("[[{}]]", s.name) : fmt::format("[{}]", s.name),
                           s.doc);
        out += "| key | type | default | allowed | applies | meaning |\n|---|---|---|---|---|---|\n";
        for (const auto& k : k_keys) {
            if (k.section != s.name)
                continue;
            std::string def;
            if (count_of(c, s) > 0) {
                key_value v = k.value_in(c, 0);
                def = std::holds_alternative<std::monostate>(v) ? std::string("(none)") : toml_text(v);
            } else {
                def = "(none)";
            }
            if (k.required)
                def = "required";
            std::string type(to_string(k.type));
            if (!k.unit.empty() && k.unit != "bytes")
                type += fmt::format(" ({})", k.unit);
            auto cell = [](std::string t) {
                std::string r;
                for (char ch : t)
                    r += ch == '|' ? std::string("\\|") : std::string(1, ch);
                return r;
            };
            out += fmt::format("| `{}` | {} | `{}` | {} | {} | {} |\n", k.name, type, cell(def), cell(allowed_text(k)),
                               to_string(k.apply), cell(std::string(k.doc)));
        }
    }
    return out;
}

}  // namespace rw::admin
