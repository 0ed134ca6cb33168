// The configuration loader: TOML text -> toml++ tree -> plain structs
// (admin/config.hh). Loading is start-up work: it allocates, and toml++
// reports syntax errors by throwing; everything is caught here so the
// public functions never throw.
//
// The loader walks the tree section by section, keeps every problem it finds
// (it does not stop at the first), and only hands back a config when there
// are none. Problems carry the line toml++ recorded for the offending node;
// for something missing, the line of the table that should have held it.
// Its parts: config_values.cc (value parsers, without toml++),
// config_walk.cc (tables, keys, typed values), config_sections.cc (each
// section and the checks across them), config_schema.cc (every key's
// type, range and documentation, and the embedded default made from them). toml++ is header-heavy: only the loader's files include it.
#include "admin/config.hh"

#include <algorithm>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>

#include "admin/config_loader.hh"

namespace rw::admin {

using namespace detail;

namespace {
constexpr std::string_view k_embedded_source = "<embedded default>";
constexpr size_t k_max_file_bytes = 1 << 20;   // a configuration is a few KiB
}  // namespace

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

std::optional<std::pair<std::string, unsigned>> parse_shaping_action(std::string_view s) {
    if (s == "suspend" || s == "bounce")
        return std::pair{std::string(s), 0u};
    const size_t sp = s.find(' ');
    if (sp == std::string_view::npos)
        return std::nullopt;
    const std::string_view verb = s.substr(0, sp), num = s.substr(sp + 1);
    if (verb != "rate" && verb != "connections")
        return std::nullopt;
    if (num.empty() || num.size() > 7 || !std::all_of(num.begin(), num.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
        return std::nullopt;
    const unsigned n = unsigned(std::stoul(std::string(num)));
    if (n < 1 || n > (verb == "rate" ? 1'000'000u : 10'000u))
        return std::nullopt;
    return std::pair{std::string(verb), n};
}

std::optional<std::vector<unsigned>> parse_caps(std::string_view s) {
    std::vector<unsigned> out;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && (s[i] == ' ' || s[i] == ','))
            ++i;
        if (i == s.size())
            break;
        uint64_t v = 0;
        size_t digits = 0;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
            v = v * 10 + uint64_t(s[i++] - '0');
            if (++digits > 10)
                return std::nullopt;
        }
        if (!digits || v < 1 || v > 1'000'000'000 || (i < s.size() && s[i] != ' ' && s[i] != ','))
            return std::nullopt;
        out.push_back(unsigned(v));
        if (out.size() > 365)
            return std::nullopt;
    }
    if (out.empty())
        return std::nullopt;
    return out;
}

std::optional<int64_t> parse_day(std::string_view s) {
    if (s.size() != 10 || s[4] != '-' || s[7] != '-')
        return std::nullopt;
    auto num = [&](size_t at, size_t n) -> int {
        int v = 0;
        for (size_t k = at; k < at + n; ++k) {
            if (s[k] < '0' || s[k] > '9')
                return -1;
            v = v * 10 + (s[k] - '0');
        }
        return v;
    };
    const int y = num(0, 4), m = num(5, 2), d = num(8, 2);
    if (y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1)
        return std::nullopt;
    const std::chrono::year_month_day ymd{std::chrono::year(y), std::chrono::month(unsigned(m)),
                                          std::chrono::day(unsigned(d))};
    if (!ymd.ok())
        return std::nullopt;
    return std::chrono::sys_days(ymd).time_since_epoch().count();
}

std::optional<std::pair<std::string, unsigned>> parse_pool_member(std::string_view s) {
    const size_t colon = s.find(':');
    std::string_view name = s.substr(0, colon);
    unsigned weight = 1;
    if (colon != std::string_view::npos) {
        std::string_view w = s.substr(colon + 1);
        if (w.empty() || w.size() > 4)
            return std::nullopt;
        weight = 0;
        for (char ch : w) {
            if (ch < '0' || ch > '9')
                return std::nullopt;
            weight = weight * 10 + unsigned(ch - '0');
        }
        if (weight < 1 || weight > 1000)
            return std::nullopt;
    }
    if (name.empty() || name.size() > 64)
        return std::nullopt;
    for (char ch : name)
        if (!(std::isalnum(uint8_t(ch)) || ch == '-' || ch == '_' || ch == '.'))
            return std::nullopt;
    return std::pair{std::string(name), weight};
}

std::optional<std::pair<std::string, uint16_t>> parse_next_hop(std::string_view s, uint16_t default_port) {
    return next_hop_of(s, default_port);
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

std::string state_dir(const config& c) {
    if (!c.control.state_dir.empty())
        return c.control.state_dir;
    std::filesystem::path dir = std::filesystem::path(c.spool.path).parent_path();
    return dir.empty() ? std::string(".") : dir.string();
}

std::string_view to_string(quarantine_expiry e) { return e == quarantine_expiry::release ? "release" : "delete"; }

std::vector<quarantine_config> quarantines_of(const std::vector<quarantine_config>& configured) {
    std::vector<quarantine_config> out = configured;
    for (const char* builtin : {"policy", "virus", "spam"})
        if (std::none_of(out.begin(), out.end(), [&](const quarantine_config& q) { return q.name == builtin; })) {
            quarantine_config q;
            q.name = builtin;
            out.push_back(q);
        }
    return out;
}

std::string_view to_string(screen_action a) {
    return a == screen_action::ignore ? "ignore" : a == screen_action::enforce ? "enforce" : "drop";
}
std::string_view to_string(flow_action a) {
    return a == flow_action::accept ? "accept" : a == flow_action::reject ? "reject" : "relay";
}
std::string_view to_string(tls_policy t) {
    return t == tls_policy::off ? "off" : t == tls_policy::preferred ? "preferred" : "required";
}

std::string_view to_string(scan_failure f) { return f == scan_failure::accept ? "accept" : "tempfail"; }
std::string_view to_string(virus_action a) {
    return a == virus_action::reject ? "reject" : a == virus_action::quarantine ? "quarantine" : "drop";
}

std::vector<mail_flow_policy_config> flow_policies_of(const std::vector<mail_flow_policy_config>& configured) {
    std::vector<mail_flow_policy_config> out = configured;
    auto add = [&](const char* name, auto set) {
        if (std::any_of(out.begin(), out.end(), [&](const mail_flow_policy_config& p) { return p.name == name; }))
            return;
        mail_flow_policy_config p;
        p.name = name;
        set(p);
        out.push_back(std::move(p));
    };
    add("ACCEPTED", [](mail_flow_policy_config&) {});
    add("BLOCKED", [](mail_flow_policy_config& p) { p.action = flow_action::reject; });
    add("THROTTLED", [](mail_flow_policy_config& p) {
        p.max_message_size_bytes = uint64_t(10) << 20;
        p.max_messages_per_session = 10;
        p.max_recipients_per_message = 50;
        p.max_recipients_per_hour = 100;
        p.max_connections_per_client = 5;
    });
    add("TRUSTED", [](mail_flow_policy_config& p) {
        p.screening = false;
        p.antispam = false;
    });
    add("RELAYED", [](mail_flow_policy_config& p) {
        p.action = flow_action::relay;
        p.screening = false;
    });
    return out;
}

std::vector<sender_group_config> sender_groups_of(const std::vector<sender_group_config>& configured) {
    std::vector<sender_group_config> out;
    std::optional<sender_group_config> unknown;
    for (const auto& g : configured) {
        if (g.name == "UNKNOWNLIST")
            unknown = g;
        else
            out.push_back(g);
    }
    for (const auto& builtin : {std::pair{"RELAYLIST", "RELAYED"}, std::pair{"ALLOWLIST", "TRUSTED"},
                                std::pair{"BLOCKLIST", "BLOCKED"}, std::pair{"SUSPECTLIST", "THROTTLED"}}) {
        const std::string_view name = builtin.first;
        if (std::none_of(out.begin(), out.end(), [name](const sender_group_config& g) { return g.name == name; })) {
            sender_group_config g;
            g.name = builtin.first;
            g.policy = builtin.second;
            out.push_back(std::move(g));
        }
    }
    if (!unknown) {
        unknown.emplace();
        unknown->name = "UNKNOWNLIST";
        unknown->policy = "ACCEPTED";
    }
    out.push_back(std::move(*unknown));
    return out;
}

}  // namespace rw::admin
