// The embedded default configuration: what ringwayd runs on without a
// file, and the documented list of every key (config_test checks that it
// loads and matches the defaults of admin/config.hh).
#include "admin/config.hh"

namespace rw::admin {

namespace {

constexpr std::string_view k_default_toml = R"(# Ringway configuration: the embedded default.
#
# ringwayd runs with this when started without --config, and prints it with
# --print-default-config. Every key is shown with its default value, so a
# key left out of a configuration file means what it says here. Relative
# paths are relative to ringwayd's working directory. Sizes are an integer
# number of bytes or a string with a unit K, M, G or T (powers of 1024):
# "64K", "512M", "1G".

[runtime]
# Reactor threads, one per core: 0 = every CPU ringwayd may run on, else 1..256.
cores = 0
# Pin reactor thread i to the i-th allowed CPU.
pin = true
# Diagnostic log level (stderr): "trace", "debug", "info", "warn" or "error".
log_level = "info"
# Mail log, one JSON line per reception and delivery event: a file path,
# "-" for standard output, "" for none.
mail_log = "./var/log/mail.jsonl"
# On shutdown, milliseconds that open sessions get to finish before they are
# closed (0..3600000).
drain_timeout_ms = 5000

[dns]
# Resolvers as "IP" (port 53) or "IP:port" ("[IPv6]:port"), at most 8.
# Empty: the system's resolvers from /etc/resolv.conf.
servers = []
# Milliseconds to wait for an answer, per try (1..60000).
timeout_ms = 2000
# Attempts per query (1..10).
tries = 2
# Cached answers, kept for their TTL (0 = no cache, at most 10000000).
cache_entries = 100000

[spool]
# The spool: a raw block device (e.g. "/dev/sdb"), or a file standing in for one.
path = "./var/spool.img"
# Size of the spool (64M..64T): a spool file is pre-sized to this.
size = "1G"
# How a write batch is made durable before mail is acknowledged:
# "auto" (the spool picks for the device), "fdatasync" (write, then
# fdatasync) or "dsync" (O_DSYNC writes).
flush = "auto"

# One [[listener]] table per SMTP listening socket; at least one is required.
[[listener]]
# Unique name, used by the admin shell and in logs (required).
name = "smtp"
# IP address to bind, IPv4 or IPv6: "0.0.0.0" is every IPv4 address, "::"
# every IPv6 address.
address = "127.0.0.1"
# TCP port, 1..65535 (required).
port = 2525
# Certificate chain and private key, PEM files, both or neither. With
# neither, a self-signed certificate is generated at start-up for STARTTLS.
# tls_cert = "/etc/ringway/tls/cert.pem"
# tls_key = "/etc/ringway/tls/key.pem"
# TLS from the first byte (port 465 style, RFC 8314) instead of STARTTLS.
implicit_tls = false
# SMTP AUTH: "none" (not offered), "optional" or "required".
auth = "optional"
# Offer AUTH before TLS is up (passwords in clear text).
allow_auth_without_tls = false
# Concurrent connections, in all and from one client IP address (1..1000000).
max_connections = 10000
max_connections_per_ip = 100
# Recipients per message, 1..100000 (RFC 5321 4.5.3.1.8 asks for at least 100).
max_recipients = 1000
# Largest message accepted, announced in EHLO SIZE (64K..2G).
max_message_size = "50M"
# Longest line of a message, CRLF included (1000..64M). RFC 5321 asks for
# 1000, but newsletters and scripts send longer lines and other MTAs take
# them; lines are streamed, never held whole. Longer: 552 5.3.4.
max_line_length = "1M"
# Bad commands in a session before it is closed (1..1000).
max_errors = 10
# Timeouts in seconds (1..86400); the defaults are RFC 5321 4.5.3.2's.
# From our 220 greeting to the client's first command (4.5.3.2.1).
greeting_timeout_s = 300
# Waiting for the next command (4.5.3.2.7).
command_timeout_s = 300
# Waiting for each piece of a message during DATA or BDAT (4.5.3.2.5).
data_block_timeout_s = 180
# Our deadline to answer the final "." (queueing, checks): a client waits
# 10 minutes (4.5.3.2.6), then gives up and sends the message again later.
data_end_timeout_s = 600
# A session idle between transactions.
idle_timeout_s = 300
# Milliseconds to wait before the 220 greeting; a client that talks in
# that time is an early talker (RFC 5321 4.3.1) and is refused (0..60000).
# 0: only bytes already there when we greet are caught.
greet_pause_ms = 0

[smtp]
# Our name in EHLO, in replies and in Received: headers. Default: the
# system's host name; set a fully qualified one.
# hostname = "mx.example.test"
# Domains we accept mail for from anyone, e.g. ["example.test"]. Mail for
# other domains is relayed only for clients in relay_networks or
# authenticated clients.
accepted_domains = []
# Networks allowed to relay to any domain: CIDR ("10.0.0.0/8") or single
# addresses. A /0 is refused: that would be an open relay.
relay_networks = ["127.0.0.0/8", "::1/128"]
# Users and password hashes for SMTP AUTH.
credentials_file = "./var/credentials"
# Accept recipients at address literals ("user@[192.0.2.1]") that are not in
# accepted_domains; refused with 550 5.7.1 otherwise (RFC 5321 4.1.3 allows
# either; literals are rare in real mail and common in abuse).
allow_domain_literals = false
# More Received: headers than this (1..1000) is a mail loop: the message is
# refused with 554 5.4.6 at the end of the headers, and a queued one found
# over the limit (ours aside) is bounced the same way (RFC 5321 6.3).
max_received_headers = 50
# Per-client-IP limits, as token buckets: so many a minute, with at most
# `*_burst` at once (0 per minute = no limit): new connections, messages
# (MAIL commands), AUTH attempts.
client_connections_per_minute = 1200
client_connection_burst = 60
client_messages_per_minute = 3000
client_message_burst = 200
client_auth_attempts_per_minute = 12
client_auth_burst = 10
# Clients exempt from every per-client limit (these rates and listeners'
# max_connections_per_ip), as CIDR networks. Default: relay_networks.
# client_limit_exceptions = ["127.0.0.0/8", "::1/128"]

[delivery]
# Port of next hops found through MX or A/AAAA records.
smtp_port = 25
# Next hops for mail to accepted_domains (an inbound gateway's internal
# servers): "IP", "IP:port", "[IPv6]:port", "host" or "host:port", tried in
# order. Empty: routed like any other mail ([[route]] tables, then MX).
internal_hosts = []
# Use STARTTLS when the next hop offers it (opportunistic: the certificate
# is not verified, and a failed handshake falls back to plaintext).
starttls = true
# Per destination (next hop): concurrent connections, messages per
# connection, messages per minute (0 = no limit).
max_connections_per_destination = 20
max_messages_per_connection = 100
max_messages_per_minute = 0
# A connection whose destination has run dry stays open this long for the
# next message, then QUITs (0 = QUIT at once). Closed sooner when the
# destination's limits or a shutdown say so.
connection_cache_time_ms = 2000
# Retries: the first after first_retry_ms, then doubling up to
# max_retry_ms (with 20 % jitter); a greylisting reply (450/451 at the first
# attempt) is retried after greylist_retry_ms. Mail still undelivered after
# max_queue_lifetime_s bounces.
first_retry_ms = 60000
max_retry_ms = 3600000
greylist_retry_ms = 120000
max_queue_lifetime_s = 432000
# A recipient still deferred this long after arrival gets its sender one
# delay notice (RFC 3464 "Action: delayed"), unless its NOTIFY excludes
# DELAY; 0 = never.
delay_notice_after_s = 14400
# A destination that refuses connections or answers 421 rests this long.
destination_pause_ms = 30000
# Client deadlines (RFC 5321 4.5.3.2): connect, each command, DATA.
connect_timeout_ms = 30000
command_timeout_s = 300
data_timeout_s = 600

# Routes override DNS for a domain ("example.test"), its subdomains
# ("*.example.test") or every domain ("*"), e.g. a smarthost:
# [[route]]
# domain = "*"
# hosts = ["192.0.2.25:25"]

[control]
# Unix domain socket of the admin shell (ringway), mode 0600: only this
# daemon's user and root may use it.
socket = "./var/ringway.sock"
# A group whose members may use it too (the socket becomes mode 0660).
# group = "ringway-admin"

[metrics]
# Prometheus text format over HTTP: GET /metrics on this address ("" for none).
listen = "127.0.0.1:9425"

[conservation]
# Graded back-pressure. At a resource's first threshold every SMTP reply is
# delayed by tarpit_ms; at the second, new connections get 421 4.3.2 and
# MAIL gets 452 4.3.1. A level ends once use is hysteresis_percent below
# its threshold. 0 turns a check off.
memory_limit = 0                 # resident memory allowed; 0: the machine's memory
memory_tarpit_percent = 80
memory_refuse_percent = 90
spool_tarpit_percent = 85        # of the spool in use
spool_refuse_percent = 95
queue_tarpit_messages = 0        # messages queued
queue_refuse_messages = 0
hysteresis_percent = 5
tarpit_ms = 1000
)";

}  // namespace

std::string_view default_config_toml() {
    return k_default_toml;
}

}  // namespace rw::admin
