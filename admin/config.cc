// The configuration loader: TOML text -> toml++ tree -> plain structs
// (admin/config.hh). This is the only file that includes toml++, which is
// header-heavy, so its cost is paid once. Loading is start-up work: it
// allocates, and toml++ reports syntax errors by throwing.
//
// The loader walks the tree section by section, keeps every problem it finds
// (it does not stop at the first), and only hands back a config when there
// are none. Problems carry the line toml++ recorded for the offending node;
// for something missing, the line of the table that should have held it.
// toml++ throws on syntax errors; everything is caught here so the public
// functions never throw.
#include "admin/config.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <optional>
#include <span>
#include <utility>

#include <fmt/format.h>

// The tomlplusplus CMake target links Debian's shared libtomlplusplus
// (TOML_HEADER_ONLY=0), so only declarations are compiled here. Its
// configuration macros must match the library's, so none are set here.
#include <toml++/toml.h>

namespace rw::admin {

std::string_view to_string(spool_flush f) {
    switch (f) {
    case spool_flush::automatic: return "auto";
    case spool_flush::fdatasync: return "fdatasync";
    case spool_flush::dsync: return "dsync";
    }
    return "?";
}

std::string_view to_string(auth_mode a) {
    switch (a) {
    case auth_mode::none: return "none";
    case auth_mode::optional: return "optional";
    case auth_mode::required: return "required";
    }
    return "?";
}

net::address listener_config::endpoint() const {
    auto a = net::address::parse(address, port);
    RW_ASSERT(a.has_value(), "listener {}: address {} is not an IP (config not validated?)", name, address);
    return *a;
}

std::string ip_network::to_string() const {
    return fmt::format("{}/{}", address, prefix_len);
}

namespace {

constexpr std::string_view k_embedded_source = "<embedded default>";

// Named limits.
constexpr size_t k_max_file_bytes = 1 << 20;   // a configuration is a few KiB
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

// The keys of each table, in the order the default configuration shows them
// (and "allowed:" lists them).
using key_list = std::span<const std::string_view>;
constexpr std::string_view k_sections[] = {"runtime", "dns", "spool", "listener", "smtp", "delivery", "route", "control"};
constexpr std::string_view k_runtime_keys[] = {"cores", "pin", "log_level", "mail_log", "drain_timeout_ms"};
constexpr std::string_view k_dns_keys[] = {"servers", "timeout_ms", "tries", "cache_entries"};
constexpr std::string_view k_spool_keys[] = {"path", "size", "flush"};
constexpr std::string_view k_listener_keys[] = {
    "name", "address", "port", "tls_cert", "tls_key", "implicit_tls", "auth",
    "allow_auth_without_tls", "max_connections", "max_connections_per_ip", "max_recipients",
    "max_message_size", "max_line_length", "max_errors", "greeting_timeout_s", "command_timeout_s",
    "data_block_timeout_s", "data_end_timeout_s", "idle_timeout_s", "greet_pause_ms"};
constexpr std::string_view k_smtp_keys[] = {
    "hostname", "accepted_domains", "relay_networks", "credentials_file", "allow_domain_literals",
    "max_received_headers", "client_connections_per_minute", "client_connection_burst",
    "client_messages_per_minute", "client_message_burst", "client_auth_attempts_per_minute", "client_auth_burst",
    "client_limit_exceptions"};
constexpr std::string_view k_delivery_keys[] = {
    "smtp_port", "internal_hosts", "starttls", "max_connections_per_destination", "max_messages_per_connection",
    "max_messages_per_minute", "first_retry_ms", "max_retry_ms", "greylist_retry_ms", "max_queue_lifetime_s",
    "delay_notice_after_s",
    "destination_pause_ms", "connection_cache_time_ms", "connect_timeout_ms", "command_timeout_s", "data_timeout_s"};
constexpr std::string_view k_route_keys[] = {"domain", "hosts"};
constexpr std::string_view k_control_keys[] = {"socket"};

key_list keys_of(std::string_view section) {
    if (section == "runtime") return k_runtime_keys;
    if (section == "dns") return k_dns_keys;
    if (section == "spool") return k_spool_keys;
    if (section == "listener") return k_listener_keys;
    if (section == "smtp") return k_smtp_keys;
    if (section == "delivery") return k_delivery_keys;
    if (section == "route") return k_route_keys;
    if (section == "control") return k_control_keys;
    return {};
}

bool contains(key_list l, std::string_view k) {
    return std::find(l.begin(), l.end(), k) != l.end();
}

std::string join(key_list l) {
    std::string out;
    for (auto k : l) {
        if (!out.empty())
            out += ", ";
        out += k;
    }
    return out;
}

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

// The allowed word closest to a misspelt one, if it is close enough to be a
// plausible typo ("prot" -> "port").
std::optional<std::string_view> closest(std::string_view word, key_list allowed) {
    std::optional<std::string_view> best;
    size_t best_d = std::min<size_t>(3, word.size());
    for (auto a : allowed) {
        size_t d = edit_distance(word, a);
        if (d < best_d) {
            best_d = d;
            best = a;
        }
    }
    return best;
}

// A value echoed back in a message: quoted, escaped, cut short.
std::string quote(std::string_view s) {
    std::string out = "\"";
    size_t chars = 0;
    for (unsigned char c : s) {
        bool continuation = (c & 0xC0) == 0x80;
        if (!continuation && ++chars > k_max_quoted_chars) {
            out += "...";
            break;
        }
        if (c == '"' || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c < 0x20 || c == 0x7f) {
            out += fmt::format("\\u{:04X}", unsigned(c));
        } else {
            out += char(c);
        }
    }
    out += '"';
    return out;
}

std::string quote_list(key_list l) {
    std::string out;
    for (auto k : l) {
        if (!out.empty())
            out += ", ";
        out += quote(k);
    }
    return out;
}

// What a node holds, for "expected X, got Y". Strings are shown quoted, as
// written; other kinds are named, with the value where it is short.
std::string describe(const toml::node& n) {
    switch (n.type()) {
    case toml::node_type::string: return quote(n.as_string()->get());
    case toml::node_type::integer: return fmt::format("an integer ({})", n.as_integer()->get());
    case toml::node_type::floating_point: {
        std::string v = fmt::format("{}", n.as_floating_point()->get());
        if (v.find_first_of(".eEn") == std::string::npos)
            v += ".0";
        return fmt::format("a float ({})", v);
    }
    case toml::node_type::boolean: return fmt::format("a boolean ({})", n.as_boolean()->get());
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
    }
    return "nothing";
}

// "512M" for whole multiples of a unit, else a number of bytes.
std::string format_size(uint64_t b) {
    if (b != 0 && b % k_tib == 0) return fmt::format("{}T", b / k_tib);
    if (b != 0 && b % k_gib == 0) return fmt::format("{}G", b / k_gib);
    if (b != 0 && b % k_mib == 0) return fmt::format("{}M", b / k_mib);
    if (b != 0 && b % k_kib == 0) return fmt::format("{}K", b / k_kib);
    return fmt::format("{}", b);
}

char lower(char c) {
    return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
}

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        c = lower(c);
    return out;
}

// "1G", "512M", "64K", "1T", "4096"; units are powers of 1024, case does not
// matter, and "KB"/"KiB" are read as "K" (and so on).
std::optional<uint64_t> parse_size(std::string_view s) {
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc() || p == s.data())
        return std::nullopt;
    std::string unit = to_lower(std::string_view(p, size_t(s.data() + s.size() - p)));
    uint64_t mult = 0;
    if (unit.empty() || unit == "b") {
        mult = 1;
    } else {
        switch (unit[0]) {
        case 'k': mult = k_kib; break;
        case 'm': mult = k_mib; break;
        case 'g': mult = k_gib; break;
        case 't': mult = k_tib; break;
        default: return std::nullopt;
        }
        std::string_view rest = std::string_view(unit).substr(1);
        if (!rest.empty() && rest != "b" && rest != "ib")
            return std::nullopt;
    }
    if (n > std::numeric_limits<uint64_t>::max() / mult)
        return std::nullopt;
    return n * mult;
}

// Why a domain name is not one (RFC 1035 2.3.1 as relaxed by RFC 1123 2.1:
// labels of letters, digits and hyphens, 1..63 characters, 253 in all), or
// nothing if it is fine.
std::optional<std::string> domain_problem(std::string_view d) {
    if (d.empty())
        return "empty";
    if (d.size() > 253)
        return fmt::format("{} characters long (at most 253)", d.size());
    if (d.back() == '.')
        return "ends with a dot";
    size_t start = 0;
    std::string_view last;
    while (start <= d.size()) {
        size_t dot = d.find('.', start);
        if (dot == std::string_view::npos)
            dot = d.size();
        std::string_view label = d.substr(start, dot - start);
        if (label.empty())
            return "has an empty label";
        if (label.size() > 63)
            return fmt::format("has a label of {} characters (at most 63)", label.size());
        for (char c : label) {
            if (static_cast<unsigned char>(c) >= 0x80)
                return "has non-ASCII characters (write an internationalised name in its xn-- form)";
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
            if (!ok)
                return fmt::format("has the character {}", quote(std::string_view(&c, 1)));
        }
        if (label.front() == '-' || label.back() == '-')
            return "has a label that starts or ends with \"-\"";
        last = label;
        start = dot + 1;
    }
    if (std::all_of(last.begin(), last.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return "ends in a numeric label (an IP address is not a domain name)";
    return std::nullopt;
}

// "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128).
// On failure, `why` says what is wrong.
std::optional<ip_network> parse_network(std::string_view s, std::string& why) {
    size_t slash = s.find('/');
    std::string ip(s.substr(0, slash));
    unsigned char bytes[16] = {};
    int family = AF_INET;
    unsigned bits = 32;
    if (inet_pton(AF_INET, ip.c_str(), bytes) != 1) {
        family = AF_INET6;
        bits = 128;
        if (inet_pton(AF_INET6, ip.c_str(), bytes) != 1) {
            why = fmt::format("{} is not an IP address", quote(ip));
            return std::nullopt;
        }
    }
    unsigned len = bits;
    if (slash != std::string_view::npos) {
        std::string_view ps = s.substr(slash + 1);
        auto [p, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), len);
        if (ps.empty() || ec != std::errc() || p != ps.data() + ps.size()) {
            why = fmt::format("the prefix length {} is not a number", quote(ps));
            return std::nullopt;
        }
        if (len > bits) {
            why = fmt::format("the prefix length {} is too long for IPv{} (at most {})", len,
                              family == AF_INET ? 4 : 6, bits);
            return std::nullopt;
        }
    }
    if (len == 0) {
        why = "a /0 network relays for everyone (an open relay)";
        return std::nullopt;
    }
    unsigned char masked[16];
    std::memcpy(masked, bytes, sizeof masked);
    for (unsigned i = 0; i < bits / 8; ++i) {
        unsigned keep = len > i * 8 ? std::min(8u, len - i * 8) : 0;
        masked[i] &= static_cast<unsigned char>(keep == 0 ? 0 : 0xFF << (8 - keep));
    }
    char text[INET6_ADDRSTRLEN] = "";
    inet_ntop(family, masked, text, sizeof text);
    if (std::memcmp(masked, bytes, bits / 8) != 0) {
        why = fmt::format("host bits are set (did you mean \"{}/{}\"?)", text, len);
        return std::nullopt;
    }
    return ip_network{text, len};
}

// A resolver as "IP", "IP:port", "[v6]:port"; canonical "IP:port" back.
std::optional<std::string> parse_dns_server(std::string_view s) {
    if (auto a = net::address::parse_host_port(s)) {
        if (a->port() == 0)
            return std::nullopt;
        return a->to_string();
    }
    if (auto a = net::address::parse(s, 53))
        return a->to_string();
    return std::nullopt;
}

bool is_wildcard(const std::string& ip) {
    return ip == "0.0.0.0" || ip == "::";
}

std::string system_hostname() {
    char buf[256] = "";
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0')
        return "localhost";
    return buf;
}

uint32_t line_of(const toml::node& n, uint32_t fallback) {
    uint32_t l = n.source().begin.line;
    return l != 0 ? l : fallback;
}

// A table being read: where it is and how to name its keys.
struct section {
    const toml::table* t = nullptr;  // null: absent (defaults apply)
    std::string path;                // "runtime", "listener[1]"
    uint32_t line = 0;               // of its header; 0 if absent

    std::string key(std::string_view k) const { return fmt::format("{}.{}", path, k); }
    const toml::node* get(std::string_view k) const { return t ? t->get(k) : nullptr; }
};

struct diagnostic {
    uint32_t line;  // 0: about the file as a whole
    std::string text;
};

// Walks a parsed document and fills a config, collecting diagnostics.
class loader {
public:
    explicit loader(std::string_view source) : _source(source) {}

    result<config, std::string> run(const toml::table& root);

private:
    // -- diagnostics --
    std::string format(uint32_t line, std::string_view key, std::string_view what, std::string_view allowed) const {
        std::string s(_source);
        if (line != 0)
            s += fmt::format(":{}", line);
        s += ": ";
        if (!key.empty()) {
            s += key;
            s += ": ";
        }
        s += what;
        if (!allowed.empty()) {
            s += "; allowed: ";
            s += allowed;
        }
        return s;
    }
    void error(uint32_t line, std::string_view key, std::string_view what, std::string_view allowed) {
        _errors.push_back({line, format(line, key, what, allowed)});
    }
    void note(uint32_t line, std::string_view key, std::string_view what) {
        _notes.push_back({line, format(line, key, what, {})});
    }
    void type_error(const section& s, std::string_view k, const toml::node& n, std::string_view expected,
                    std::string_view allowed) {
        error(line_of(n, s.line), s.key(k), fmt::format("expected {}, got {}", expected, describe(n)), allowed);
    }
    void missing(const section& s, std::string_view k, std::string_view allowed) {
        if (s.t && !s.get(k))
            error(s.line, s.key(k), "missing (required)", allowed);
    }

    // -- tables --
    section open_table(const toml::table& root, std::string_view name);
    void check_root_keys(const toml::table& root);
    void check_keys(const section& s, key_list allowed);

    // -- values; each leaves `out` alone when the key is absent or bad --
    std::optional<int64_t> read_int(const section& s, std::string_view k, int64_t lo, int64_t hi,
                                    std::string_view allowed);
    template <typename T>
    void set_int(const section& s, std::string_view k, int64_t lo, int64_t hi, std::string_view allowed, T& out) {
        if (auto v = read_int(s, k, lo, hi, allowed))
            out = T(*v);
    }
    void set_bool(const section& s, std::string_view k, bool& out);
    std::optional<std::string> read_string(const section& s, std::string_view k, std::string_view allowed);
    void set_path(const section& s, std::string_view k, bool allow_empty, std::string_view allowed,
                  std::string& out);
    void set_size(const section& s, std::string_view k, uint64_t lo, uint64_t hi, uint64_t& out);
    template <typename E>
    void set_enum(const section& s, std::string_view k, std::initializer_list<std::pair<std::string_view, E>> choices,
                  E& out);
    // Calls each(line, key path, value) for every string in an array; reports
    // the elements that are not strings.
    template <typename F>
    void for_each_string(const section& s, std::string_view k, size_t max, std::string_view allowed, F each);

    // -- sections --
    void read_runtime(const section& s, runtime_config& out);
    void read_dns(const section& s, dns_config& out);
    void read_spool(const section& s, spool_config& out);
    void read_listeners(const toml::table& root, config& c);
    void read_listener(const section& s, listener_config& out);
    void check_listeners(const config& c);
    void read_smtp(const section& s, smtp_config& out);
    void read_control(const section& s, control_config& out);
    void read_delivery(const section& s, delivery_config& out);
    void read_routes(const toml::table& root, config& c);
    void check_hosts(const section& s, std::string_view k, std::vector<std::string>& out);

    std::string_view _source;
    std::vector<diagnostic> _errors;
    std::vector<diagnostic> _notes;
    // Lines of each listener's table and keys, for cross-listener checks.
    struct listener_lines {
        size_t index = 0;  // in the [[listener]] array (elements that are not tables are skipped)
        uint32_t table = 0, name = 0, port = 0, max_message_size = 0;
    };
    std::vector<listener_lines> _listener_lines;
};

section loader::open_table(const toml::table& root, std::string_view name) {
    const toml::node* n = root.get(name);
    if (!n)
        return section{nullptr, std::string(name), 0};
    const toml::table* t = n->as_table();
    if (!t) {
        error(line_of(*n, 0), name, fmt::format("expected a table ([{}]), got {}", name, describe(*n)),
              fmt::format("a [{}] section with the keys {}", name, join(keys_of(name))));
        return section{nullptr, std::string(name), 0};
    }
    return section{t, std::string(name), line_of(*t, 0)};
}

void loader::check_root_keys(const toml::table& root) {
    static constexpr std::string_view allowed =
        "[runtime], [dns], [spool], [[listener]], [smtp], [delivery], [[route]], [control]";
    for (auto&& [k, v] : root) {
        std::string_view name = k.str();
        if (contains(k_sections, name))
            continue;
        uint32_t line = line_of(v, 0);
        if (v.is_table() || v.is_array_of_tables()) {
            std::string what = "unknown section";
            if (auto m = closest(name, k_sections))
                what += fmt::format(" (did you mean [{}]?)", *m);
            error(line, name, what, allowed);
            continue;
        }
        // A key outside any section: say which section it belongs in.
        std::string what = "key outside any section";
        for (auto sec : k_sections)
            if (contains(keys_of(sec), name)) {
                what += fmt::format(" (it belongs in [{}])", sec);
                break;
            }
        error(line, name, what, allowed);
    }
}

void loader::check_keys(const section& s, key_list allowed) {
    if (!s.t)
        return;
    for (auto&& [k, v] : *s.t) {
        std::string_view name = k.str();
        if (contains(allowed, name))
            continue;
        std::string what = "unknown key";
        if (auto m = closest(name, allowed))
            what += fmt::format(" (did you mean \"{}\"?)", *m);
        error(line_of(v, s.line), s.key(name), what, join(allowed));
    }
}

std::optional<int64_t> loader::read_int(const section& s, std::string_view k, int64_t lo, int64_t hi,
                                        std::string_view allowed) {
    const toml::node* n = s.get(k);
    if (!n)
        return std::nullopt;
    std::string range = allowed.empty() ? fmt::format("{}..{}", lo, hi) : std::string(allowed);
    const auto* v = n->as_integer();
    if (!v) {
        type_error(s, k, *n, "an integer", range);
        return std::nullopt;
    }
    int64_t x = v->get();
    if (x < lo || x > hi) {
        error(line_of(*n, s.line), s.key(k), fmt::format("{} is out of range", x), range);
        return std::nullopt;
    }
    return x;
}

void loader::set_bool(const section& s, std::string_view k, bool& out) {
    const toml::node* n = s.get(k);
    if (!n)
        return;
    if (const auto* v = n->as_boolean())
        out = v->get();
    else
        type_error(s, k, *n, "a boolean", "true, false");
}

std::optional<std::string> loader::read_string(const section& s, std::string_view k, std::string_view allowed) {
    const toml::node* n = s.get(k);
    if (!n)
        return std::nullopt;
    const auto* v = n->as_string();
    if (!v) {
        type_error(s, k, *n, "a string", allowed);
        return std::nullopt;
    }
    return v->get();
}

void loader::set_path(const section& s, std::string_view k, bool allow_empty, std::string_view allowed,
                      std::string& out) {
    auto v = read_string(s, k, allowed);
    if (!v)
        return;
    uint32_t line = line_of(*s.get(k), s.line);
    if (v->empty() && !allow_empty)
        error(line, s.key(k), "empty", allowed);
    else if (v->find('\0') != std::string::npos)
        error(line, s.key(k), "contains a NUL character", allowed);
    else if (v->size() > k_max_path_bytes)
        error(line, s.key(k), fmt::format("{} bytes long", v->size()), allowed);
    else
        out = std::move(*v);
}

void loader::set_size(const section& s, std::string_view k, uint64_t lo, uint64_t hi, uint64_t& out) {
    const toml::node* n = s.get(k);
    if (!n)
        return;
    uint32_t line = line_of(*n, s.line);
    std::string allowed = fmt::format(
        "a size with a unit K, M, G or T (powers of 1024), or an integer number of bytes, {}..{}",
        format_size(lo), format_size(hi));
    std::optional<uint64_t> bytes;
    std::string given;
    if (const auto* i = n->as_integer()) {
        given = fmt::format("{}", i->get());
        if (i->get() >= 0)
            bytes = uint64_t(i->get());
    } else if (const auto* str = n->as_string()) {
        given = quote(str->get());
        bytes = parse_size(str->get());
        if (!bytes) {
            error(line, s.key(k), fmt::format("expected a size such as \"64K\", \"512M\" or \"1G\", got {}", given),
                  allowed);
            return;
        }
    } else {
        type_error(s, k, *n, "a size string or an integer", allowed);
        return;
    }
    if (!bytes || *bytes < lo || *bytes > hi) {
        error(line, s.key(k), fmt::format("{} is out of range", given), allowed);
        return;
    }
    out = *bytes;
}

template <typename E>
void loader::set_enum(const section& s, std::string_view k,
                      std::initializer_list<std::pair<std::string_view, E>> choices, E& out) {
    std::vector<std::string_view> names;
    for (const auto& c : choices)
        names.push_back(c.first);
    key_list name_list(names);
    std::string allowed = quote_list(name_list);
    auto v = read_string(s, k, allowed);
    if (!v)
        return;
    for (const auto& c : choices)
        if (*v == c.first) {
            out = c.second;
            return;
        }
    std::string what = fmt::format("unknown value {}", quote(*v));
    if (auto m = closest(to_lower(*v), name_list))
        what += fmt::format(" (did you mean \"{}\"?)", *m);
    error(line_of(*s.get(k), s.line), s.key(k), what, allowed);
}

template <typename F>
void loader::for_each_string(const section& s, std::string_view k, size_t max, std::string_view allowed, F each) {
    const toml::node* n = s.get(k);
    if (!n)
        return;
    const toml::array* a = n->as_array();
    std::string list_allowed = fmt::format("an array of up to {} strings, each {}", max, allowed);
    if (!a) {
        type_error(s, k, *n, "an array of strings", list_allowed);
        return;
    }
    if (a->size() > max) {
        error(line_of(*n, s.line), s.key(k), fmt::format("{} entries", a->size()), list_allowed);
        return;
    }
    for (size_t i = 0; i < a->size(); ++i) {
        const toml::node& e = *a->get(i);
        std::string path = fmt::format("{}.{}[{}]", s.path, k, i);
        uint32_t line = line_of(e, line_of(*n, s.line));
        if (const auto* str = e.as_string())
            each(line, path, str->get());
        else
            error(line, path, fmt::format("expected a string, got {}", describe(e)), allowed);
    }
}

void loader::read_runtime(const section& s, runtime_config& out) {
    check_keys(s, k_runtime_keys);
    set_int(s, "cores", 0, k_max_cores, fmt::format("0 (every CPU) or 1..{}", k_max_cores), out.cores);
    set_bool(s, "pin", out.pin);
    set_enum<rw::log_level>(s, "log_level",
                            {{"trace", log_level::trace},
                             {"debug", log_level::debug},
                             {"info", log_level::info},
                             {"warn", log_level::warn},
                             {"error", log_level::error}},
                            out.log_level);
    set_path(s, "mail_log", true, "a file path, \"-\" (stdout) or \"\" (off)", out.mail_log);
    std::chrono::milliseconds::rep drain = out.drain_timeout_ms.count();
    set_int(s, "drain_timeout_ms", 0, k_max_drain_timeout_ms, "", drain);
    out.drain_timeout_ms = std::chrono::milliseconds(drain);
}

void loader::read_dns(const section& s, dns_config& out) {
    check_keys(s, k_dns_keys);
    if (s.get("servers")) {
        out.servers.clear();
        for_each_string(s, "servers", k_max_dns_servers,
                        "an IP address with an optional port: \"192.0.2.53\", \"192.0.2.53:5353\", "
                        "\"2001:db8::53\", \"[2001:db8::53]:5353\"",
                        [&](uint32_t line, const std::string& path, const std::string& v) {
                            if (auto srv = parse_dns_server(v))
                                out.servers.push_back(std::move(*srv));
                            else
                                error(line, path, fmt::format("{} is not an IP address or IP:port", quote(v)),
                                      "an IP address with an optional port 1..65535: \"192.0.2.53\", "
                                      "\"192.0.2.53:5353\", \"2001:db8::53\", \"[2001:db8::53]:5353\"");
                        });
    }
    auto timeout = out.timeout_ms.count();
    set_int(s, "timeout_ms", 1, k_max_dns_timeout_ms, "", timeout);
    out.timeout_ms = std::chrono::milliseconds(timeout);
    set_int(s, "tries", 1, k_max_dns_tries, "", out.tries);
    set_int(s, "cache_entries", 0, k_max_dns_cache_entries, fmt::format("0 (no cache)..{}", k_max_dns_cache_entries),
            out.cache_entries);
}

void loader::read_spool(const section& s, spool_config& out) {
    check_keys(s, k_spool_keys);
    set_path(s, "path", false, "the path of a block device or of a file", out.path);
    set_size(s, "size", k_min_spool_bytes, k_max_spool_bytes, out.size_bytes);
    set_enum<spool_flush>(
        s, "flush",
        {{"auto", spool_flush::automatic}, {"fdatasync", spool_flush::fdatasync}, {"dsync", spool_flush::dsync}},
        out.flush);
}

void loader::read_listeners(const toml::table& root, config& c) {
    static constexpr std::string_view allowed =
        "one or more [[listener]] tables, each with at least a name and a port";
    const toml::node* n = root.get("listener");
    if (!n) {
        error(0, "listener", "missing: no [[listener]] table", allowed);
        return;
    }
    const toml::array* a = n->as_array();
    if (!a) {
        error(line_of(*n, 0), "listener",
              fmt::format("expected an array of tables ([[listener]], with two brackets), got {}", describe(*n)),
              allowed);
        return;
    }
    if (a->empty()) {
        error(line_of(*n, 0), "listener", "empty array", allowed);
        return;
    }
    if (a->size() > k_max_listeners) {
        error(line_of(*n, 0), "listener", fmt::format("{} listeners", a->size()),
              fmt::format("at most {}", k_max_listeners));
        return;
    }
    for (size_t i = 0; i < a->size(); ++i) {
        const toml::node& e = *a->get(i);
        std::string path = fmt::format("listener[{}]", i);
        const toml::table* t = e.as_table();
        if (!t) {
            error(line_of(e, line_of(*n, 0)), path, fmt::format("expected a table, got {}", describe(e)), allowed);
            continue;
        }
        section s{t, path, line_of(*t, line_of(*n, 0))};
        listener_config l;
        read_listener(s, l);
        auto line = [&](std::string_view k) { return s.get(k) ? line_of(*s.get(k), s.line) : s.line; };
        _listener_lines.push_back({i, s.line, line("name"), line("port"), line("max_message_size")});
        c.listeners.push_back(std::move(l));
    }
}

void loader::read_listener(const section& s, listener_config& out) {
    check_keys(s, k_listener_keys);

    std::string name_allowed = fmt::format(
        "1..{} letters, digits, \"-\", \"_\" or \".\", unique among listeners", k_max_listener_name);
    missing(s, "name", name_allowed);
    if (auto v = read_string(s, "name", name_allowed)) {
        bool ok = !v->empty() && v->size() <= k_max_listener_name &&
                  std::all_of(v->begin(), v->end(), [](char c) {
                      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                             c == '-' || c == '_' || c == '.';
                  });
        if (ok)
            out.name = std::move(*v);
        else
            error(line_of(*s.get("name"), s.line), s.key("name"), fmt::format("{} is not a valid name", quote(*v)),
                  name_allowed);
    }

    static constexpr std::string_view addr_allowed =
        "an IPv4 or IPv6 address (not a host name), e.g. \"127.0.0.1\", \"::1\", \"0.0.0.0\" (every IPv4 "
        "address), \"::\" (every IPv6 address)";
    if (auto v = read_string(s, "address", addr_allowed)) {
        if (auto a = net::address::parse(*v, 0))
            out.address = a->ip_string();
        else
            error(line_of(*s.get("address"), s.line), s.key("address"),
                  fmt::format("{} is not an IP address", quote(*v)), addr_allowed);
    }

    missing(s, "port", "an integer 1..65535");
    set_int(s, "port", 1, 65535, "", out.port);

    static constexpr std::string_view pem_allowed = "the path of a PEM file; tls_cert and tls_key go together";
    set_path(s, "tls_cert", false, pem_allowed, out.tls_cert);
    set_path(s, "tls_key", false, pem_allowed, out.tls_key);
    static constexpr std::string_view pair_allowed =
        "tls_cert and tls_key together, or neither (a self-signed certificate is then generated)";
    if (s.get("tls_cert") && !s.get("tls_key"))
        error(line_of(*s.get("tls_cert"), s.line), s.key("tls_key"), "missing: tls_cert is set without it",
              pair_allowed);
    if (s.get("tls_key") && !s.get("tls_cert"))
        error(line_of(*s.get("tls_key"), s.line), s.key("tls_cert"), "missing: tls_key is set without it",
              pair_allowed);

    set_bool(s, "implicit_tls", out.implicit_tls);
    if (out.implicit_tls && !s.get("tls_cert") && !s.get("tls_key"))
        note(line_of(*s.get("implicit_tls"), s.line), s.key("implicit_tls"),
             "no tls_cert/tls_key: a self-signed certificate will be generated at start-up, which clients "
             "that verify certificates will refuse");

    set_enum<auth_mode>(
        s, "auth",
        {{"none", auth_mode::none}, {"optional", auth_mode::optional}, {"required", auth_mode::required}},
        out.auth);
    set_bool(s, "allow_auth_without_tls", out.allow_auth_without_tls);
    if (out.auth == auth_mode::none && out.allow_auth_without_tls && s.get("allow_auth_without_tls"))
        note(line_of(*s.get("allow_auth_without_tls"), s.line), s.key("allow_auth_without_tls"),
             "has no effect: auth is \"none\"");

    set_int(s, "max_connections", 1, k_max_connections, "", out.max_connections);
    set_int(s, "max_connections_per_ip", 1, k_max_connections, "", out.max_connections_per_ip);
    set_int(s, "max_recipients", 1, k_max_recipients, "", out.max_recipients);
    set_size(s, "max_message_size", k_min_message_bytes, k_max_message_bytes, out.max_message_size_bytes);
    set_size(s, "max_line_length", k_min_line_bytes, k_max_line_bytes, out.max_line_length_bytes);
    set_int(s, "max_errors", 1, k_max_errors, "", out.max_errors);

    auto seconds = [&](std::string_view k, std::chrono::seconds& d) {
        auto v = d.count();
        set_int(s, k, 1, k_max_timeout_s, "", v);
        d = std::chrono::seconds(v);
    };
    seconds("greeting_timeout_s", out.greeting_timeout_s);
    seconds("command_timeout_s", out.command_timeout_s);
    seconds("data_block_timeout_s", out.data_block_timeout_s);
    seconds("data_end_timeout_s", out.data_end_timeout_s);
    seconds("idle_timeout_s", out.idle_timeout_s);
    auto gp = out.greet_pause_ms.count();
    set_int(s, "greet_pause_ms", 0, 60000, "", gp);
    out.greet_pause_ms = std::chrono::milliseconds(gp);
}

// Checks between listeners, and between listeners and other sections. Runs
// on whatever was read; values that were bad kept their defaults, so the
// check against spool.size is only made when nothing else was wrong.
void loader::check_listeners(const config& c) {
    const auto& ls = c.listeners;
    const auto& lines = _listener_lines;
    auto key = [&](size_t j, std::string_view k) { return fmt::format("listener[{}].{}", lines[j].index, k); };
    for (size_t j = 0; j < ls.size(); ++j) {
        for (size_t i = 0; i < j; ++i) {
            if (!ls[j].name.empty() && ls[i].name == ls[j].name) {
                error(lines[j].name, key(j, "name"),
                      fmt::format("duplicate name {} (also listener[{}] on line {})", quote(ls[j].name),
                                  lines[i].index, lines[i].name),
                      "a name unique among listeners");
                break;
            }
        }
        if (ls[j].port == 0)
            continue;  // missing or bad: already reported
        for (size_t i = 0; i < j; ++i) {
            if (ls[i].port != ls[j].port)
                continue;
            bool same_family = (ls[i].address.find(':') == std::string::npos) ==
                               (ls[j].address.find(':') == std::string::npos);
            bool overlap = ls[i].address == ls[j].address ||
                           (same_family && (is_wildcard(ls[i].address) || is_wildcard(ls[j].address)));
            if (!overlap)
                continue;
            error(lines[j].port, key(j, "port"),
                  fmt::format("{} overlaps {} of listener[{}] {} on line {}", ls[j].endpoint().to_string(),
                              ls[i].endpoint().to_string(), lines[i].index, quote(ls[i].name), lines[i].table),
                  "one listener per address and port (\"0.0.0.0\" and \"::\" take the port on every "
                  "address of their family)");
            break;
        }
    }
    if (!_errors.empty())
        return;
    for (size_t j = 0; j < ls.size(); ++j)
        if (ls[j].max_message_size_bytes > c.spool.size_bytes)
            error(lines[j].max_message_size, key(j, "max_message_size"),
                  fmt::format("{} is larger than the spool ({})", format_size(ls[j].max_message_size_bytes),
                              format_size(c.spool.size_bytes)),
                  "at most spool.size");
}

void loader::read_smtp(const section& s, smtp_config& out) {
    check_keys(s, k_smtp_keys);
    static constexpr std::string_view domain_allowed =
        "a domain name such as \"mx.example.com\": dot-separated labels of 1..63 letters, digits and \"-\"";
    if (auto v = read_string(s, "hostname", domain_allowed)) {
        if (auto why = domain_problem(*v))
            error(line_of(*s.get("hostname"), s.line), s.key("hostname"), fmt::format("{} {}", quote(*v), *why),
                  domain_allowed);
        else
            out.hostname = std::move(*v);
    } else if (!s.get("hostname")) {
        out.hostname = system_hostname();
        if (out.hostname.find('.') == std::string::npos)
            note(s.line, s.key("hostname"),
                 fmt::format("not set, and the system host name {} is not fully qualified; receivers may "
                             "refuse it in EHLO, so set smtp.hostname",
                             quote(out.hostname)));
    }

    if (s.get("accepted_domains")) {
        out.accepted_domains.clear();
        for_each_string(s, "accepted_domains", k_max_list_entries, domain_allowed,
                        [&](uint32_t line, const std::string& path, const std::string& v) {
                            if (auto why = domain_problem(v)) {
                                error(line, path, fmt::format("{} {}", quote(v), *why), domain_allowed);
                                return;
                            }
                            std::string d = to_lower(v);
                            auto& ds = out.accepted_domains;
                            if (std::find(ds.begin(), ds.end(), d) == ds.end())
                                ds.push_back(std::move(d));
                        });
    }

    if (s.get("relay_networks")) {
        out.relay_networks.clear();
        static constexpr std::string_view net_allowed =
            "a network in CIDR form with no host bits set, e.g. \"10.0.0.0/8\", \"2001:db8::/32\", or one "
            "address; prefix length 1..32 for IPv4, 1..128 for IPv6";
        for_each_string(s, "relay_networks", k_max_list_entries, net_allowed,
                        [&](uint32_t line, const std::string& path, const std::string& v) {
                            std::string why;
                            if (auto net = parse_network(v, why))
                                out.relay_networks.push_back(std::move(*net));
                            else
                                error(line, path, fmt::format("{}: {}", quote(v), why), net_allowed);
                        });
    }
    if (s.get("client_limit_exceptions")) {
        static constexpr std::string_view exc_allowed =
            "networks in CIDR form with no host bits set, e.g. \"10.0.0.0/8\", or single addresses";
        out.client_limit_exceptions.emplace();
        for_each_string(s, "client_limit_exceptions", k_max_list_entries, exc_allowed,
                        [&](uint32_t line, const std::string& path, const std::string& v) {
                            std::string why;
                            if (auto net = parse_network(v, why))
                                out.client_limit_exceptions->push_back(std::move(*net));
                            else
                                error(line, path, fmt::format("{}: {}", quote(v), why), exc_allowed);
                        });
    }

    set_path(s, "credentials_file", false, "a file path", out.credentials_file);
    set_bool(s, "allow_domain_literals", out.allow_domain_literals);
    set_int(s, "max_received_headers", 1, 1000, "", out.max_received_headers);
    set_int(s, "client_connections_per_minute", 0, 100000000, "0 (no limit)..100000000",
            out.client_connections_per_minute);
    set_int(s, "client_connection_burst", 1, 100000000, "", out.client_connection_burst);
    set_int(s, "client_messages_per_minute", 0, 100000000, "0 (no limit)..100000000",
            out.client_messages_per_minute);
    set_int(s, "client_message_burst", 1, 100000000, "", out.client_message_burst);
    set_int(s, "client_auth_attempts_per_minute", 0, 100000000, "0 (no limit)..100000000",
            out.client_auth_attempts_per_minute);
    set_int(s, "client_auth_burst", 1, 100000000, "", out.client_auth_burst);
}

std::optional<std::pair<std::string, uint16_t>> next_hop_of(std::string_view s, uint16_t default_port) {
    if (s.empty() || s.size() > 300)
        return std::nullopt;
    if (auto a = net::address::parse_host_port(s)) {
        if (a->port() == 0)
            return std::nullopt;
        return std::make_pair(a->ip_string(), a->port());
    }
    if (auto a = net::address::parse(s, default_port))
        return std::make_pair(a->ip_string(), default_port);
    std::string_view host = s;
    uint16_t port = default_port;
    size_t colon = s.rfind(':');
    if (colon != std::string_view::npos) {
        host = s.substr(0, colon);
        std::string_view p = s.substr(colon + 1);
        unsigned v = 0;
        auto [e, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
        if (ec != std::errc() || e != p.data() + p.size() || v == 0 || v > 65535)
            return std::nullopt;
        port = uint16_t(v);
    }
    if (domain_problem(host))
        return std::nullopt;
    return std::make_pair(to_lower(host), port);
}

void loader::check_hosts(const section& s, std::string_view k, std::vector<std::string>& out) {
    static constexpr std::string_view allowed =
        "next hops as \"IP\", \"IP:port\", \"[IPv6]:port\", \"host\" or \"host:port\" (port 1..65535)";
    if (!s.get(k))
        return;
    out.clear();
    for_each_string(s, k, 64, allowed, [&](uint32_t line, const std::string& path, const std::string& v) {
        if (next_hop_of(v, 25))
            out.push_back(v);
        else
            error(line, path, fmt::format("{} is not a next hop", quote(v)), allowed);
    });
}

void loader::read_delivery(const section& s, delivery_config& out) {
    check_keys(s, k_delivery_keys);
    set_int(s, "smtp_port", 1, 65535, "", out.smtp_port);
    check_hosts(s, "internal_hosts", out.internal_hosts);
    set_bool(s, "starttls", out.starttls);
    set_int(s, "max_connections_per_destination", 1, 10000, "", out.max_connections_per_destination);
    set_int(s, "max_messages_per_connection", 1, 1000000, "", out.max_messages_per_connection);
    set_int(s, "max_messages_per_minute", 0, 100000000, "0 (no limit)..100000000", out.max_messages_per_minute);
    auto ms = [&](std::string_view k, int64_t lo, int64_t hi, std::chrono::milliseconds& v) {
        int64_t x = v.count();
        set_int(s, k, lo, hi, "", x);
        v = std::chrono::milliseconds(x);
    };
    auto secs = [&](std::string_view k, int64_t lo, int64_t hi, std::chrono::seconds& v) {
        int64_t x = v.count();
        set_int(s, k, lo, hi, "", x);
        v = std::chrono::seconds(x);
    };
    ms("first_retry_ms", 10, 86'400'000, out.first_retry_ms);
    ms("max_retry_ms", 10, 86'400'000, out.max_retry_ms);
    ms("greylist_retry_ms", 10, 86'400'000, out.greylist_retry_ms);
    secs("max_queue_lifetime_s", 1, 30 * 86'400, out.max_queue_lifetime_s);
    {
        int64_t x = out.delay_notice_after_s.count();
        set_int(s, "delay_notice_after_s", 0, 30 * 86'400, "0 (never)..2592000", x);
        out.delay_notice_after_s = std::chrono::seconds(x);
    }
    ms("destination_pause_ms", 10, 86'400'000, out.destination_pause_ms);
    {
        int64_t x = out.connection_cache_time_ms.count();
        set_int(s, "connection_cache_time_ms", 0, 300'000, "0 (no cache)..300000", x);
        out.connection_cache_time_ms = std::chrono::milliseconds(x);
    }
    ms("connect_timeout_ms", 10, 600'000, out.connect_timeout_ms);
    secs("command_timeout_s", 1, 3600, out.command_timeout_s);
    secs("data_timeout_s", 1, 3600, out.data_timeout_s);
    if (out.max_retry_ms < out.first_retry_ms)
        error(s.get("max_retry_ms") ? line_of(*s.get("max_retry_ms"), s.line) : s.line, s.key("max_retry_ms"),
              fmt::format("{} is below first_retry_ms ({})", out.max_retry_ms.count(), out.first_retry_ms.count()),
              "at least delivery.first_retry_ms");
}

void loader::read_routes(const toml::table& root, config& c) {
    static constexpr std::string_view allowed =
        "[[route]] tables, each with domain (\"example.test\", \"*.example.test\" or \"*\") and hosts";
    const toml::node* n = root.get("route");
    if (!n)
        return;
    const toml::array* a = n->as_array();
    if (!a) {
        error(line_of(*n, 0), "route",
              fmt::format("expected an array of tables ([[route]], with two brackets), got {}", describe(*n)),
              allowed);
        return;
    }
    for (size_t i = 0; i < a->size() && i < 100000; ++i) {
        const toml::node& e = *a->get(i);
        std::string path = fmt::format("route[{}]", i);
        const toml::table* t = e.as_table();
        if (!t) {
            error(line_of(e, line_of(*n, 0)), path, fmt::format("expected a table, got {}", describe(e)), allowed);
            continue;
        }
        section s{t, path, line_of(*t, line_of(*n, 0))};
        check_keys(s, k_route_keys);
        route_config r;
        static constexpr std::string_view dom_allowed =
            "a domain (\"example.test\"), a wildcard for its subdomains (\"*.example.test\") or \"*\" (every domain)";
        missing(s, "domain", dom_allowed);
        if (auto v = read_string(s, "domain", dom_allowed)) {
            std::string d = to_lower(*v);
            std::string_view bare = d;
            if (bare.starts_with("*."))
                bare.remove_prefix(2);
            if (d == "*" || !domain_problem(bare)) {
                for (const auto& other : c.routes)
                    if (other.domain == d)
                        error(line_of(*s.get("domain"), s.line), s.key("domain"),
                              fmt::format("{} has a route already", quote(d)), "one route per domain");
                r.domain = d;
            } else {
                error(line_of(*s.get("domain"), s.line), s.key("domain"), fmt::format("{} is not a domain", quote(*v)),
                      dom_allowed);
            }
        }
        missing(s, "hosts", "a non-empty list of next hops");
        check_hosts(s, "hosts", r.hosts);
        if (s.get("hosts") && r.hosts.empty() && s.get("hosts")->as_array() && s.get("hosts")->as_array()->empty())
            error(line_of(*s.get("hosts"), s.line), s.key("hosts"), "empty list", "at least one next hop");
        c.routes.push_back(std::move(r));
    }
}

void loader::read_control(const section& s, control_config& out) {
    check_keys(s, k_control_keys);
    std::string allowed = fmt::format("a file path of 1..{} bytes (a Unix socket address)", k_max_socket_path);
    std::string before = out.socket;
    set_path(s, "socket", false, allowed, out.socket);
    if (out.socket.size() > k_max_socket_path) {
        error(line_of(*s.get("socket"), s.line), s.key("socket"),
              fmt::format("{} bytes long, too long for a Unix socket", out.socket.size()), allowed);
        out.socket = before;
    }
}

result<config, std::string> loader::run(const toml::table& root) {
    config c;
    c.source = std::string(_source);
    check_root_keys(root);
    read_runtime(open_table(root, "runtime"), c.runtime);
    read_dns(open_table(root, "dns"), c.dns);
    read_spool(open_table(root, "spool"), c.spool);
    read_listeners(root, c);
    read_smtp(open_table(root, "smtp"), c.smtp);
    read_delivery(open_table(root, "delivery"), c.delivery);
    read_routes(root, c);
    read_control(open_table(root, "control"), c.control);
    check_listeners(c);

    auto by_line = [](const diagnostic& a, const diagnostic& b) { return a.line < b.line; };
    std::stable_sort(_errors.begin(), _errors.end(), by_line);
    std::stable_sort(_notes.begin(), _notes.end(), by_line);
    if (!_errors.empty()) {
        std::string out;
        size_t shown = std::min(_errors.size(), k_max_reported_errors);
        for (size_t i = 0; i < shown; ++i) {
            if (i)
                out += '\n';
            out += _errors[i].text;
        }
        if (_errors.size() > shown)
            out += fmt::format("\n{}: ... and {} more errors", _source, _errors.size() - shown);
        return unexpected(std::move(out));
    }
    for (auto& n : _notes)
        c.notes.push_back(std::move(n.text));
    return c;
}

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
# Unix domain socket of the admin shell (ringway).
socket = "./var/ringway.sock"
)";

}  // namespace

std::optional<std::pair<std::string, uint16_t>> parse_next_hop(std::string_view s, uint16_t default_port) {
    return next_hop_of(s, default_port);
}

std::string_view default_config_toml() {
    return k_default_toml;
}

result<config, std::string> load_config_text(std::string_view text, std::string_view source_name) {
    std::string source(source_name.empty() ? std::string_view("<config>") : source_name);
    try {
        toml::table root = toml::parse(text, std::string_view(source));
        loader l(source);
        return l.run(root);
    } catch (const toml::parse_error& e) {
        uint32_t line = e.source().begin.line;
        std::string where = line != 0 ? fmt::format("{}:{}", source, line) : source;
        return unexpected(fmt::format("{}: TOML syntax error: {}", where, e.description()));
    } catch (const std::exception& e) {
        return unexpected(fmt::format("{}: cannot load the configuration: {}", source, e.what()));
    } catch (...) {
        return unexpected(fmt::format("{}: cannot load the configuration", source));
    }
}

result<config, std::string> load_config_file(const std::string& path) {
    try {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return unexpected(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
        std::string text;
        char buf[16384];
        for (;;) {
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                int e = errno;
                ::close(fd);
                return unexpected(fmt::format("{}: cannot read: {}", path, std::strerror(e)));
            }
            if (n == 0)
                break;
            text.append(buf, size_t(n));
            if (text.size() > k_max_file_bytes) {
                ::close(fd);
                return unexpected(fmt::format("{}: larger than {} bytes; is this a configuration file?", path,
                                              k_max_file_bytes));
            }
        }
        ::close(fd);
        return load_config_text(text, path);
    } catch (const std::exception& e) {
        return unexpected(fmt::format("{}: cannot load the configuration: {}", path, e.what()));
    }
}

result<config, std::string> load_default_config() {
    return load_config_text(default_config_toml(), k_embedded_source);
}

}  // namespace rw::admin
