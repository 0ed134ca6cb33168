// Value parsers of the configuration loader, free of toml++ so that they
// can be tested alone: sizes ("64m"), domains, networks ("10.0.0.0/8"),
// DNS servers, next hops, and the quoting and "did you mean" of its
// messages. Not for use outside admin/.
#pragma once

#include <sys/un.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "admin/config.hh"

namespace rw::admin::detail {

using key_list = std::span<const std::string_view>;

// Named limits.
constexpr size_t k_max_reported_errors = 100;  // then "... and N more"
constexpr size_t k_max_listeners = 64;
constexpr size_t k_max_dns_servers = 8;
constexpr size_t k_max_list_entries = 100000;  // accepted_domains, relay_networks
constexpr size_t k_max_listener_name = 32;
constexpr size_t k_max_path_bytes = 4095;       // PATH_MAX less the NUL
constexpr size_t k_max_quoted_chars = 64;       // of a bad value echoed back
constexpr int64_t k_max_cores = 256;
constexpr int64_t k_max_drain_timeout_ms = 3'600'000;
constexpr int64_t k_max_dns_timeout_ms = 60'000;
constexpr int64_t k_max_dns_tries = 10;
constexpr int64_t k_max_dns_cache_entries = 10'000'000;
constexpr int64_t k_max_connections = 1'000'000;
constexpr int64_t k_max_recipients = 100'000;
constexpr int64_t k_max_errors = 1000;
constexpr int64_t k_max_timeout_s = 86'400;
constexpr uint64_t k_kib = uint64_t(1) << 10;
constexpr uint64_t k_mib = uint64_t(1) << 20;
constexpr uint64_t k_gib = uint64_t(1) << 30;
constexpr uint64_t k_tib = uint64_t(1) << 40;
constexpr uint64_t k_min_spool_bytes = 64 * k_mib;
constexpr uint64_t k_max_spool_bytes = 64 * k_tib;
constexpr uint64_t k_min_message_bytes = 64 * k_kib;  // RFC 5321 4.5.3.1.7
constexpr uint64_t k_max_message_bytes = 2 * k_gib;
constexpr uint64_t k_min_line_bytes = 1000;      // RFC 5321 4.5.3.1.6
constexpr uint64_t k_max_line_bytes = 64 * k_mib;  // streamed; this bounds what any later line consumer sees
constexpr size_t k_max_socket_path = sizeof(sockaddr_un::sun_path) - 1;

std::string join(key_list l);
size_t edit_distance(std::string_view a, std::string_view b);
// The allowed word nearest to word, if it is near enough to be a typo.
std::optional<std::string_view> closest(std::string_view word, key_list allowed);
// s in double quotes, escaped, at most k_max_quoted_chars of it.
std::string quote(std::string_view s);
std::string quote_list(key_list l);
std::string format_size(uint64_t b);
char lower(char c);
std::string to_lower(std::string_view s);
// "64m", "2G", "1048576" -> bytes.
std::optional<uint64_t> parse_size(std::string_view s);
// Why d is not a usable domain name, or nullopt.
std::optional<std::string> domain_problem(std::string_view d);
std::optional<ip_network> parse_network(std::string_view s, std::string& why);
std::optional<std::string> parse_dns_server(std::string_view s);
bool is_wildcard(const std::string& ip);
std::string system_hostname();
std::optional<std::pair<std::string, uint16_t>> next_hop_of(std::string_view s, uint16_t default_port);

}  // namespace rw::admin::detail
