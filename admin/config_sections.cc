// The loader's section readers: [runtime], [dns], [spool], [[listener]],
// [smtp], [delivery], [[route]], [control], and the checks across them.
#include "admin/config_loader.hh"

#include "mail/domain.hh"
#include "mail/header.hh"
#include "policy/access.hh"
#include "policy/recipient_access.hh"
#include "mta/delivery/delivery.hh"
#include "mta/scan/scanners.hh"
#include "runtime/net/tcp.hh"
#include "policy/patterns.hh"
#include "policy/rules.hh"
#include "policy/spf.hh"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <limits>

namespace rw::admin::detail {

void loader::read_runtime(const section& s, runtime_config& out) {
    check_keys(s, keys_of(s.name()));
    read_simple(s, &out);
    set_path(s, "mail_log", true, "a file path, \"-\" (stdout) or \"\" (off)", out.mail_log);
}

void loader::read_dns(const section& s, dns_config& out) {
    check_keys(s, keys_of(s.name()));
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
    read_simple(s, &out);
}

void loader::read_spool(const section& s, spool_config& out) {
    check_keys(s, keys_of(s.name()));
    read_simple(s, &out);
    set_path(s, "path", false, "the path of a block device or of a file", out.path);
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
    check_keys(s, keys_of(s.name()));
    read_simple(s, &out);

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

    if (out.implicit_tls && !s.get("tls_cert") && !s.get("tls_key"))
        note(line_of(*s.get("implicit_tls"), s.line), s.key("implicit_tls"),
             "no tls_cert/tls_key: a self-signed certificate will be generated at start-up, which clients "
             "that verify certificates will refuse");

    if (out.auth == auth_mode::none && out.allow_auth_without_tls && s.get("allow_auth_without_tls"))
        note(line_of(*s.get("allow_auth_without_tls"), s.line), s.key("allow_auth_without_tls"),
             "has no effect: auth is \"none\"");

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
    check_keys(s, keys_of(s.name()));
    read_simple(s, &out);
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
    check_keys(s, keys_of(s.name()));
    read_simple(s, &out);
    set_path(s, "tls_ca_file", true, "a PEM file of trust anchors, or \"\" for the system's store", out.tls_ca_file);
    check_hosts(s, "internal_hosts", out.internal_hosts);
    if (out.max_retry_ms < out.first_retry_ms)
        error(s.get("max_retry_ms") ? line_of(*s.get("max_retry_ms"), s.line) : s.line, s.key("max_retry_ms"),
              fmt::format("{} is below first_retry_ms ({})", out.max_retry_ms.count(), out.first_retry_ms.count()),
              "at least delivery.first_retry_ms");
}

bool loader::pool_exists(const config& c, std::string_view name) {
    return std::any_of(c.pools.begin(), c.pools.end(), [&](const pool_config& p) { return p.name == name; });
}

void loader::read_pool_ref(const section& s, const config& c, std::string& out) {
    static constexpr std::string_view allowed = "the name of a [[pool]], or \"\" for none";
    auto v = read_string(s, "pool", allowed);
    if (!v)
        return;
    if (!v->empty() && !pool_exists(c, *v))
        error(line_of(*s.get("pool"), s.line), s.key("pool"), fmt::format("there is no pool {}", quote(*v)), allowed);
    else
        out = std::move(*v);
}

void loader::read_sources(const toml::table& root, config& c) {
    for_each_table(root, "provider", "[[provider]] tables, each with name and mx_suffixes", 1000, [&](const section& s) {
        provider_config p;
        read_simple(s, &p);
        read_name(s, c.providers, "provider", p.name);
        const bool builtin = std::any_of(mta::delivery::builtin_providers().begin(),
                                         mta::delivery::builtin_providers().end(),
                                         [&](const auto& b) { return b.name == p.name; });
        static constexpr std::string_view sfx_allowed = "a host name suffix like \"google.com\"";
        if (!builtin)
            missing(s, "mx_suffixes", "MX host name suffixes (a provider that is not built in)");
        for_each_string(s, "mx_suffixes", 64, sfx_allowed, [&](uint32_t line, const std::string& path, const std::string& v) {
            if (domain_problem(v))
                error(line, path, fmt::format("{} is not a host name suffix", quote(v)), sfx_allowed);
            else
                p.mx_suffixes.push_back(to_lower(v));
        });
        if (!builtin && s.get("mx_suffixes") && s.get("mx_suffixes")->as_array() &&
            s.get("mx_suffixes")->as_array()->empty())
            error(line_of(*s.get("mx_suffixes"), s.line), s.key("mx_suffixes"), "empty list", "at least one suffix");
        c.providers.push_back(std::move(p));
    });
    auto provider_known = [&](std::string_view name) {
        return std::any_of(c.providers.begin(), c.providers.end(), [&](const auto& p) { return p.name == name; }) ||
               std::any_of(mta::delivery::builtin_providers().begin(), mta::delivery::builtin_providers().end(),
                           [&](const auto& p) { return p.name == name; });
    };
    for_each_table(root, "warmup", "[[warmup]] tables, each with name and daily caps", 100, [&](const section& s) {
        warmup_config w;
        read_name(s, c.warmups, "warm-up schedule", w.name);
        static constexpr std::string_view caps_allowed =
            "daily caps, day 1 first, separated by commas: \"50, 100, 200\" (each 1..1000000000, up to 365 days)";
        if (auto v = read_string(s, "daily", caps_allowed)) {
            if (!v->empty() && !parse_caps(*v))
                error(line_of(*s.get("daily"), s.line), s.key("daily"), quote(*v), caps_allowed);
            else
                w.daily = std::move(*v);
        }
        static constexpr std::string_view prov_allowed = "\"PROVIDER: 20, 40, 80\" naming a provider";
        for_each_string(s, "providers", 64, prov_allowed, [&](uint32_t line, const std::string& path, const std::string& v) {
            const size_t colon = v.find(':');
            const std::string name = colon == std::string::npos ? std::string() : v.substr(0, colon);
            if (colon == std::string::npos || !parse_caps(std::string_view(v).substr(colon + 1)))
                error(line, path, fmt::format("{} is not a provider and its caps", quote(v)), prov_allowed);
            else if (!provider_known(name))
                error(line, path, fmt::format("there is no provider {}", quote(name)), prov_allowed);
            else
                w.providers.push_back(v);
        });
        c.warmups.push_back(std::move(w));
    });
    for_each_table(root, "source", "[[source]] tables, each with name and address", 1000, [&](const section& s) {
        source_config src;
        read_simple(s, &src);
        read_name(s, c.sources, "source", src.name);
        static constexpr std::string_view wu_allowed = "the name of a [[warmup]], or \"\" for a warm source";
        if (auto v = read_string(s, "warmup", wu_allowed)) {
            if (!v->empty() && std::none_of(c.warmups.begin(), c.warmups.end(), [&](const auto& w) { return w.name == *v; }))
                error(line_of(*s.get("warmup"), s.line), s.key("warmup"), fmt::format("there is no warm-up schedule {}", quote(*v)),
                      wu_allowed);
            else
                src.warmup = std::move(*v);
        }
        static constexpr std::string_view day_allowed = "a date, \"YYYY-MM-DD\"";
        if (auto v = read_string(s, "warmup_start", day_allowed)) {
            if (!v->empty() && !parse_day(*v))
                error(line_of(*s.get("warmup_start"), s.line), s.key("warmup_start"), quote(*v), day_allowed);
            else
                src.warmup_start = std::move(*v);
        }
        if (!src.warmup.empty() && src.warmup_start.empty() && !(s.get("warmup_start") && s.get("warmup_start")->as_string() &&
                                                                  !s.get("warmup_start")->as_string()->get().empty() &&
                                                                  !parse_day(s.get("warmup_start")->as_string()->get())))
            error(s.get("warmup_start") ? line_of(*s.get("warmup_start"), s.line) : s.line, s.key("warmup_start"),
                  "missing: a warming source needs the first day of its warm-up", day_allowed);
        static constexpr std::string_view addr_allowed = "an IPv4 or IPv6 address of this machine, like \"192.0.2.10\"";
        missing(s, "address", addr_allowed);
        if (auto v = read_string(s, "address", addr_allowed)) {
            auto a = net::address::parse(*v, 0);
            if (!a) {
                error(line_of(*s.get("address"), s.line), s.key("address"),
                      fmt::format("{} is not an IP address", quote(*v)), addr_allowed);
            } else if (auto ok = net::check_local_address(*a); !ok) {
                // A pool must not name an address the machine lacks: every
                // connection from it would fail.
                error(line_of(*s.get("address"), s.line), s.key("address"),
                      fmt::format("{} cannot be used: {}", quote(*v), ok.error()), addr_allowed);
            } else {
                src.address = std::move(*v);
            }
        }
        static constexpr std::string_view helo_allowed = "a host name like \"out1.example.test\", or empty";
        if (auto v = read_string(s, "helo", helo_allowed)) {
            if (!v->empty() && domain_problem(*v))
                error(line_of(*s.get("helo"), s.line), s.key("helo"), fmt::format("{} is not a host name", quote(*v)),
                      helo_allowed);
            else
                src.helo = std::move(*v);
        }
        c.sources.push_back(std::move(src));
    });
    for_each_table(root, "pool", "[[pool]] tables, each with name and sources", 1000, [&](const section& s) {
        pool_config p;
        read_name(s, c.pools, "pool", p.name);
        static constexpr std::string_view src_allowed = "\"NAME\" or \"NAME:WEIGHT\" (1..1000) of a [[source]]";
        missing(s, "sources", src_allowed);
        for_each_string(s, "sources", 256, src_allowed, [&](uint32_t line, const std::string& path, const std::string& v) {
            auto m = parse_pool_member(v);
            if (!m) {
                error(line, path, fmt::format("{} is not a source and weight", quote(v)), src_allowed);
                return;
            }
            if (std::none_of(c.sources.begin(), c.sources.end(), [&](const source_config& x) { return x.name == m->first; })) {
                error(line, path, fmt::format("there is no source {}", quote(m->first)), src_allowed);
                return;
            }
            for (const auto& other : p.sources)
                if (parse_pool_member(other)->first == m->first) {
                    error(line, path, fmt::format("{} is in the pool already", quote(m->first)), "each source once");
                    return;
                }
            p.sources.push_back(v);
        });
        if (s.get("sources") && s.get("sources")->as_array() && s.get("sources")->as_array()->empty())
            error(line_of(*s.get("sources"), s.line), s.key("sources"), "empty list", "at least one source");
        if (auto v = read_string(s, "overflow", "the name of another [[pool]]"))
            p.overflow = std::move(*v);
        c.pools.push_back(std::move(p));
    });
    // Overflow pools may name pools defined later.
    if (const toml::node* n = root.get("pool"); n && n->as_array())
        for (size_t i = 0; i < c.pools.size() && i < n->as_array()->size(); ++i) {
            auto& p = c.pools[i];
            if (p.overflow.empty())
                continue;
            const toml::node* at = n->as_array()->get(i);
            const toml::node* v = at && at->as_table() ? at->as_table()->get("overflow") : nullptr;
            const uint32_t line = v ? line_of(*v, 0) : 0;
            const std::string path = fmt::format("pool[{}].overflow", i);
            if (p.overflow == p.name)
                error(line, path, "names the pool itself", "the name of another [[pool]]");
            else if (!pool_exists(c, p.overflow))
                error(line, path, fmt::format("there is no pool {}", quote(p.overflow)), "the name of another [[pool]]");
        }
    for_each_table(root, "shaping_rule", "[[shaping_rule]] tables, each with name and pattern", 1000,
                   [&](const section& s) {
        shaping_rule_config r;
        read_simple(s, &r);
        read_name(s, c.shaping_rules, "shaping rule", r.name);
        static constexpr std::string_view prov_allowed = "the name of a provider, or \"\" for every destination";
        if (auto v = read_string(s, "provider", prov_allowed)) {
            if (!v->empty() && !provider_known(*v))
                error(line_of(*s.get("provider"), s.line), s.key("provider"),
                      fmt::format("there is no provider {}", quote(*v)), prov_allowed);
            else
                r.provider = std::move(*v);
        }
        static constexpr std::string_view pat_allowed =
            "a regular expression (PCRE syntax, no back-references) over \"CODE X.Y.Z text\"";
        missing(s, "pattern", pat_allowed);
        if (auto v = read_string(s, "pattern", pat_allowed)) {
            if (v->empty())
                error(line_of(*s.get("pattern"), s.line), s.key("pattern"), "empty", pat_allowed);
            else if (auto why = policy::patterns::check(policy::patterns::pattern{*v, 0, true, true}))
                error(line_of(*s.get("pattern"), s.line), s.key("pattern"), fmt::format("{}: {}", quote(*v), *why),
                      pat_allowed);
            else
                r.pattern = std::move(*v);
        }
        static constexpr std::string_view act_allowed =
            "suspend, rate N (messages per minute, 1..1000000), connections N (1..10000), bounce";
        if (auto v = read_string(s, "action", act_allowed)) {
            if (!parse_shaping_action(*v))
                error(line_of(*s.get("action"), s.line), s.key("action"), quote(*v), act_allowed);
            else
                r.action = std::move(*v);
        }
        if (r.scope == "source" && parse_shaping_action(r.action) && parse_shaping_action(r.action)->first != "suspend")
            error(s.get("scope") ? line_of(*s.get("scope"), s.line) : s.line, s.key("scope"),
                  "a source can only be suspended", "\"destination\", or \"source\" with action = \"suspend\"");
        c.shaping_rules.push_back(std::move(r));
    });
    // Each pattern compiles alone; the set must compile together too (as
    // delivery builds it): a limit only the whole set reaches is said here.
    if (!c.shaping_rules.empty()) {
        std::vector<policy::patterns::pattern> pats;
        for (const auto& r : c.shaping_rules)
            if (!r.pattern.empty())
                pats.push_back({r.pattern, unsigned(pats.size()), true, true});
        if (auto db = policy::patterns::database::compile(pats); !db)
            error(0, "shaping_rule", fmt::format("the patterns do not compile together: {}", db.error()),
                  "patterns Hyperscan can compile as one set");
    }
    section d = open_table(root, "delivery");
    static constexpr std::string_view allowed = "the name of a [[pool]], or \"\" for none";
    if (auto v = read_string(d, "default_pool", allowed)) {
        if (!v->empty() && !pool_exists(c, *v))
            error(line_of(*d.get("default_pool"), d.line), d.key("default_pool"),
                  fmt::format("there is no pool {}", quote(*v)), allowed);
        else
            c.delivery.default_pool = std::move(*v);
    }
}

void loader::read_routes(const toml::table& root, config& c) {
    static constexpr std::string_view allowed =
        "[[route]] tables, each with domain (\"example.test\", \"*.example.test\" or \"*\") and hosts";
    for_each_table(root, "route", allowed, 100000, [&](const section& s) {
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
        read_pool_ref(s, c, r.pool);
        static constexpr std::string_view tls_allowed = "none, opportunistic, required, verify, or \"\"";
        if (auto v = read_string(s, "tls", tls_allowed)) {
            if (!v->empty() && *v != "none" && *v != "opportunistic" && *v != "required" && *v != "verify")
                error(line_of(*s.get("tls"), s.line), s.key("tls"), quote(*v), tls_allowed);
            else
                r.tls = std::move(*v);
        }
        if (!s.get("pool") && !s.get("tls"))
            missing(s, "hosts", "a non-empty list of next hops (or a pool or tls, for the domain's MX hosts)");
        check_hosts(s, "hosts", r.hosts);
        if (s.get("hosts") && r.hosts.empty() && s.get("hosts")->as_array() && s.get("hosts")->as_array()->empty() &&
            r.pool.empty() && r.tls.empty())
            error(line_of(*s.get("hosts"), s.line), s.key("hosts"), "empty list",
                  "at least one next hop, or a pool");
        c.routes.push_back(std::move(r));
    });
}

bool loader::quarantine_exists(const config& c, std::string_view name) {
    for (const auto& q : quarantines_of(c.quarantines))
        if (q.name == name)
            return true;
    return false;
}

void loader::read_quarantines(const toml::table& root, config& c) {
    static constexpr std::string_view allowed =
        "[[quarantine]] tables, each with name and optionally retention_s, max_size, expire";
    for_each_table(root, "quarantine", allowed, 1000, [&](const section& s) {
        quarantine_config q;
        read_simple(s, &q);
        static constexpr std::string_view name_allowed = "letters, digits, '-', '_' and '.', up to 32 characters";
        missing(s, "name", name_allowed);
        if (auto v = read_string(s, "name", name_allowed)) {
            bool ok = policy::rules::is_quarantine_name(*v);
            if (!ok)
                error(line_of(*s.get("name"), s.line), s.key("name"),
                      fmt::format("{} is not a quarantine name", quote(*v)), name_allowed);
            for (const auto& other : c.quarantines)
                if (ok && other.name == *v) {
                    error(line_of(*s.get("name"), s.line), s.key("name"),
                          fmt::format("{} names another quarantine already", quote(*v)), "one table per name");
                    ok = false;
                }
            if (ok)
                q.name = std::move(*v);
        }
        c.quarantines.push_back(std::move(q));
    });
}

void loader::read_content_rules(const toml::table& root, config& c) {
    static constexpr std::string_view allowed =
        "[[content_rule]] tables, each with name, condition and actions (docs/rules.md)";
    for_each_table(root, "content_rule", allowed, 10000, [&](const section& s) {
        content_rule_config r;
        static constexpr std::string_view name_allowed = "letters, digits, '-', '_' and '.', up to 64 characters";
        missing(s, "name", name_allowed);
        if (auto v = read_string(s, "name", name_allowed)) {
            bool ok = !v->empty() && v->size() <= 64;
            for (char ch : *v)
                ok = ok && (std::isalnum(uint8_t(ch)) || ch == '-' || ch == '_' || ch == '.');
            if (!ok)
                error(line_of(*s.get("name"), s.line), s.key("name"), fmt::format("{} is not a rule name", quote(*v)),
                      name_allowed);
            for (const auto& other : c.content_rules)
                if (ok && other.name == *v) {
                    error(line_of(*s.get("name"), s.line), s.key("name"),
                          fmt::format("{} names another rule already", quote(*v)), "one rule per name");
                    ok = false;
                }
            if (ok)
                r.name = std::move(*v);
        }
        static constexpr std::string_view cond_allowed =
            "tests joined by and, or, not, like attachment-name ~ /\\.exe$/ (docs/rules.md)";
        missing(s, "condition", cond_allowed);
        if (auto v = read_string(s, "condition", cond_allowed)) {
            auto parsed = policy::rules::parse_condition(*v);
            if (!parsed)
                error(line_of(*s.get("condition"), s.line), s.key("condition"), parsed.error(), {});
            else
                r.condition = std::move(*v);
        }
        static constexpr std::string_view act_allowed =
            "accept, reject [CODE [X.Y.Z]] [TEXT], drop, quarantine NAME, add-header NAME: VALUE, remove-header NAME, "
            "tag-subject TEXT";
        missing(s, "actions", act_allowed);
        bool stopped = false;
        for_each_string(s, "actions", 16, "an action", [&](uint32_t line, const std::string& p, const std::string& v) {
            auto act = policy::rules::parse_action(v);
            if (!act) {
                error(line, p, act.error(), act.error().find("allowed:") == std::string::npos ? act_allowed : "");
                return;
            }
            if (stopped)
                error(line, p, "comes after accept, reject, drop or quarantine, which end the rule's actions", act_allowed);
            const auto k = act.value().kind;
            if (k == policy::rules::action_kind::quarantine && !quarantine_exists(c, act.value().text))
                error(line, p, fmt::format("there is no quarantine {}", quote(act.value().text)),
                      "a [[quarantine]] name, or policy, virus, spam");
            if (k == policy::rules::action_kind::pool && !pool_exists(c, act.value().text))
                error(line, p, fmt::format("there is no pool {}", quote(act.value().text)), "a [[pool]] name");
            stopped = stopped || policy::rules::stops(k);
            r.actions.push_back(v);
        });
        if (s.get("actions") && s.get("actions")->as_array() && s.get("actions")->as_array()->empty())
            error(line_of(*s.get("actions"), s.line), s.key("actions"), "empty list", "at least one action");
        c.content_rules.push_back(std::move(r));
    });
}

template <typename T>
bool loader::read_name(const section& s, const std::vector<T>& taken, std::string_view what, std::string& out) {
    static constexpr std::string_view name_allowed = "letters, digits, '-', '_' and '.', up to 64 characters";
    missing(s, "name", name_allowed);
    auto v = read_string(s, "name", name_allowed);
    if (!v)
        return false;
    bool ok = !v->empty() && v->size() <= 64;
    for (char ch : *v)
        ok = ok && (std::isalnum(uint8_t(ch)) || ch == '-' || ch == '_' || ch == '.');
    if (!ok) {
        error(line_of(*s.get("name"), s.line), s.key("name"), fmt::format("{} is not a {} name", quote(*v), what),
              name_allowed);
        return false;
    }
    for (const auto& other : taken)
        if (other.name == *v) {
            error(line_of(*s.get("name"), s.line), s.key("name"),
                  fmt::format("{} names another {} already", quote(*v), what), "one table per name");
            return false;
        }
    out = std::move(*v);
    return true;
}

void loader::read_screening(const section& s, screening_config& out) {
    check_keys(s, keys_of(s.name()));
    read_simple(s, &out);
    static constexpr std::string_view site_allowed =
        "\"zone\", \"zone*WEIGHT\" or \"zone=FILTER*WEIGHT\", e.g. \"bl.example.test=127.0.0.[2..11]*2\"";
    for_each_string(s, "dnsbl_sites", 100, site_allowed, [&](uint32_t line, const std::string& p, const std::string& v) {
        auto site = policy::access::dnsbl_site::parse(v);
        if (!site)
            error(line, p, fmt::format("{}: {}", quote(v), site.error()), site_allowed);
        else
            out.dnsbl_sites.push_back(v);
    });
}

void loader::read_flow_policies(const toml::table& root, config& c) {
    static constexpr std::string_view allowed =
        "[[mail_flow_policy]] tables, each with name and optionally action, limits, tls, auth, sender_auth, "
        "content_rules, screening";
    for_each_table(root, "mail_flow_policy", allowed, 1000, [&](const section& s) {
        mail_flow_policy_config p;
        read_simple(s, &p);
        read_name(s, c.flow_policies, "mail flow policy", p.name);
        read_pool_ref(s, c, p.pool);
        static constexpr std::string_view reply_allowed = "\"CODE X.Y.Z text\", 4xx or 5xx, e.g. \"554 5.7.1 Go away\"";
        if (auto v = read_string(s, "reject_reply", reply_allowed)) {
            if (!policy::access::parse_reply(*v))
                error(line_of(*s.get("reject_reply"), s.line), s.key("reject_reply"), quote(*v), reply_allowed);
            else
                p.reject_reply = std::move(*v);
        }
        c.flow_policies.push_back(std::move(p));
    });
}

void loader::read_sender_groups(const toml::table& root, config& c) {
    static constexpr std::string_view allowed =
        "[[sender_group]] tables, each with name, policy and criteria (networks, rdns, rdns_unconfirmed, "
        "dnsbl_min_score, dnsbl_max_score, spf)";
    const auto policies = flow_policies_of(c.flow_policies);
    for_each_table(root, "sender_group", allowed, 1000, [&](const section& s) {
        sender_group_config g;
        read_simple(s, &g);
        read_name(s, c.sender_groups, "sender group", g.name);
        static constexpr std::string_view pol_allowed = "the name of a [[mail_flow_policy]], or ACCEPTED, BLOCKED, "
                                                        "THROTTLED, TRUSTED, RELAYED";
        missing(s, "policy", pol_allowed);
        if (auto v = read_string(s, "policy", pol_allowed)) {
            if (std::none_of(policies.begin(), policies.end(), [&](const auto& p) { return p.name == *v; }))
                error(line_of(*s.get("policy"), s.line), s.key("policy"),
                      fmt::format("there is no mail flow policy {}", quote(*v)), pol_allowed);
            else
                g.policy = std::move(*v);
        }
        static constexpr std::string_view net_allowed =
            "a network in CIDR form with no host bits set, e.g. \"192.0.2.0/24\", or one address";
        for_each_string(s, "networks", 100'000, net_allowed,
                        [&](uint32_t line, const std::string& path, const std::string& v) {
                            std::string why;
                            if (auto net = parse_network(v, why))
                                g.networks.push_back(std::move(*net));
                            else
                                error(line, path, fmt::format("{}: {}", quote(v), why), net_allowed);
                        });
        static constexpr std::string_view rdns_allowed =
            "a host name (\"mail.example.test\") or \"*.example.test\" for any name below a domain";
        for_each_string(s, "rdns", 10'000, rdns_allowed, [&](uint32_t line, const std::string& path, const std::string& v) {
            std::string_view bare = v;
            if (bare.starts_with("*."))
                bare.remove_prefix(2);
            else if (bare.starts_with('.'))
                bare.remove_prefix(1);
            if (auto why = domain_problem(bare))
                error(line, path, fmt::format("{} {}", quote(v), *why), rdns_allowed);
            else
                g.rdns.push_back(to_lower(v));
        });
        static constexpr std::string_view spf_allowed = "pass, fail, softfail, neutral, none, temperror, permerror";
        for_each_string(s, "spf", 7, spf_allowed, [&](uint32_t line, const std::string& path, const std::string& v) {
            if (!policy::access::parse_spf_result(v))
                error(line, path, fmt::format("{} is not an SPF result", quote(v)), spf_allowed);
            else
                g.spf.push_back(v);
        });
        if (g.name == "UNKNOWNLIST" && (!g.networks.empty() || !g.rdns.empty() || g.rdns_unconfirmed ||
                                        g.dnsbl_min_score || g.dnsbl_max_score || !g.spf.empty()))
            error(s.line, s.path, "UNKNOWNLIST holds every client no other group holds; it takes a policy only",
                  "name and policy");
        if ((g.dnsbl_min_score || g.dnsbl_max_score) && c.screening.dnsbl_sites.empty())
            error(s.line, s.path, "a DNSBL score criterion, and no screening.dnsbl_sites to score with",
                  "screening.dnsbl_sites with at least one site");
        c.sender_groups.push_back(std::move(g));
    });
}

void loader::read_recipient_access(const toml::table& root, config& c) {
    static constexpr std::string_view allowed =
        "[[recipient_access]] tables, each with recipient, action and optionally reply, bypass_throttles";
    std::vector<policy::recipient_entry> seen;
    for_each_table(root, "recipient_access", allowed, 100'000, [&](const section& s) {
        recipient_access_config r;
        read_simple(s, &r);
        static constexpr std::string_view rcpt_allowed =
            "\"user@example.test\", \"user@\", \"example.test\" or \"*.example.test\"";
        missing(s, "recipient", rcpt_allowed);
        if (auto v = read_string(s, "recipient", rcpt_allowed)) {
            policy::recipient_entry e;
            e.match = *v;
            seen.push_back(e);
            if (auto t = policy::recipient_table::build(seen); !t) {
                error(line_of(*s.get("recipient"), s.line), s.key("recipient"), t.error(), rcpt_allowed);
                seen.pop_back();
            } else {
                r.recipient = std::move(*v);
            }
        }
        static constexpr std::string_view act_allowed = "\"accept\" or \"reject\"";
        missing(s, "action", act_allowed);
        if (auto v = read_string(s, "action", act_allowed)) {
            if (*v == "accept" || *v == "reject")
                r.reject = *v == "reject";
            else
                error(line_of(*s.get("action"), s.line), s.key("action"), fmt::format("unknown value {}", quote(*v)),
                      act_allowed);
        }
        static constexpr std::string_view reply_allowed = "\"CODE X.Y.Z text\", 4xx or 5xx";
        if (auto v = read_string(s, "reply", reply_allowed)) {
            if (!policy::access::parse_reply(*v))
                error(line_of(*s.get("reply"), s.line), s.key("reply"), quote(*v), reply_allowed);
            else
                r.reply = std::move(*v);
        }
        c.recipient_access.push_back(std::move(r));
    });
}

void loader::read_call_ahead(const section& s, config& c) {
    check_keys(s, keys_of(s.name()));
    auto& out = c.call_ahead;
    read_simple(s, &out);
    static constexpr std::string_view dom_allowed = "a domain (\"example.test\") or \"*.example.test\"";
    for_each_string(s, "domains", 10'000, dom_allowed, [&](uint32_t line, const std::string& p, const std::string& v) {
        std::string_view bare = v;
        if (bare.starts_with("*."))
            bare.remove_prefix(2);
        if (auto why = domain_problem(bare))
            error(line, p, fmt::format("{} {}", quote(v), *why), dom_allowed);
        else
            out.domains.push_back(to_lower(v));
    });
    static constexpr std::string_view host_allowed = "an IP address with an optional port: \"192.0.2.25\", "
                                                     "\"192.0.2.25:2525\", \"[2001:db8::25]:25\"";
    for_each_string(s, "hosts", 16, host_allowed, [&](uint32_t line, const std::string& p, const std::string& v) {
        auto hp = parse_next_hop(v, 25);
        if (!hp || !net::address::parse(hp->first, hp->second))
            error(line, p, fmt::format("{} is not an IP address (names are not looked up here)", quote(v)),
                  host_allowed);
        else
            out.hosts.push_back(v);
    });
    static constexpr std::string_view sender_allowed = "an address (\"postmaster@example.test\") or \"\"";
    if (auto v = read_string(s, "sender", sender_allowed)) {
        if (!v->empty() && (v->find('@') == std::string::npos || v->find_first_of("<> \t\r\n") != std::string::npos))
            error(line_of(*s.get("sender"), s.line), s.key("sender"), quote(*v), sender_allowed);
        else
            out.sender = std::move(*v);
    }
    if (!out.domains.empty() && out.hosts.empty()) {
        bool usable = !c.delivery.internal_hosts.empty();
        for (const auto& h : c.delivery.internal_hosts) {
            auto hp = parse_next_hop(h, c.delivery.smtp_port);
            usable = usable && hp && net::address::parse(hp->first, hp->second);
        }
        if (!usable)
            error(s.line, s.key("hosts"),
                  "empty, and delivery.internal_hosts does not name IP addresses to ask instead",
                  "the internal servers' IP addresses");
    }
}

void loader::read_scanners(const toml::table& root, config& c) {
    static constexpr std::string_view where_allowed = "a Unix socket path (\"/run/clamav/clamd.ctl\") or \"IP:port\"";
    static constexpr std::string_view reply_allowed = "\"CODE X.Y.Z text\", 4xx or 5xx";
    auto endpoint_of = [&](const section& s, std::string_view k, std::string& out) {
        if (auto v = read_string(s, k, where_allowed)) {
            if (!v->empty() && !mta::scan::endpoint::parse(*v))
                error(line_of(*s.get(k), s.line), s.key(k), quote(*v), where_allowed);
            else
                out = std::move(*v);
        }
    };
    auto reply_of = [&](const section& s, std::string& out) {
        if (auto v = read_string(s, "reply", reply_allowed)) {
            if (!policy::access::parse_reply(*v))
                error(line_of(*s.get("reply"), s.line), s.key("reply"), quote(*v), reply_allowed);
            else
                out = std::move(*v);
        }
    };
    section av = open_table(root, "antivirus");
    check_keys(av, keys_of(av.name()));
    read_simple(av, &c.antivirus);
    endpoint_of(av, "clamd", c.antivirus.clamd);
    reply_of(av, c.antivirus.reply);
    section as = open_table(root, "antispam");
    check_keys(as, keys_of(as.name()));
    read_simple(as, &c.antispam);
    endpoint_of(as, "rspamd", c.antispam.rspamd);
    reply_of(as, c.antispam.reply);
    for_each_table(root, "milter", "[[milter]] tables, each with name and address", 32, [&](const section& s) {
        milter_config m;
        read_simple(s, &m);
        read_name(s, c.milters, "milter", m.name);
        missing(s, "address", where_allowed);
        endpoint_of(s, "address", m.address);
        if (s.get("address") && m.address.empty())
            error(line_of(*s.get("address"), s.line), s.key("address"), "empty", where_allowed);
        c.milters.push_back(std::move(m));
    });
    static constexpr std::string_view tag_allowed = "printable text of up to 64 characters, or empty";
    if (auto v = read_string(as, "subject_tag", tag_allowed)) {
        bool ok = v->size() <= 64 && std::all_of(v->begin(), v->end(), [](char ch) { return uint8_t(ch) >= 0x20 && ch != 0x7f; });
        if (!ok)
            error(line_of(*as.get("subject_tag"), as.line), as.key("subject_tag"), quote(*v), tag_allowed);
        else
            c.antispam.subject_tag = std::move(*v);
    }
}

void loader::read_control(const section& s, control_config& out) {
    check_keys(s, keys_of(s.name()));
    std::string allowed = fmt::format("a file path of 1..{} bytes (a Unix socket address)", k_max_socket_path);
    std::string before = out.socket;
    set_path(s, "socket", false, allowed, out.socket);
    if (out.socket.size() > k_max_socket_path) {
        error(line_of(*s.get("socket"), s.line), s.key("socket"),
              fmt::format("{} bytes long, too long for a Unix socket", out.socket.size()), allowed);
        out.socket = before;
    }
    read_simple(s, &out);
    set_path(s, "config_dir", false, "a directory path", out.config_dir);
    set_path(s, "state_dir", true, "a directory path, or empty for the spool file's directory", out.state_dir);
    const std::string_view group_allowed = "a Unix group name (letters, digits, '_', '-', '.'; 1..32 bytes), or "
                                           "empty for the daemon's own user only";
    if (auto v = read_string(s, "group", group_allowed)) {
        const bool ok = v->size() <= 32 && std::all_of(v->begin(), v->end(), [](char ch) {
            return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                   ch == '-' || ch == '.';
        });
        if (ok)
            out.group = std::move(*v);
        else
            error(line_of(*s.get("group"), s.line), s.key("group"), quote(*v), group_allowed);
    }
}

void loader::read_metrics(const section& s, metrics_config& out) {
    check_keys(s, keys_of(s.name()));
    const std::string_view allowed = "an IP address and port to serve /metrics on, like 127.0.0.1:9425, or empty "
                                     "for no endpoint";
    auto v = read_string(s, "listen", allowed);
    if (!v)
        return;
    if (v->empty()) {
        out.listen.clear();
        return;
    }
    auto hp = parse_next_hop(*v, 9425);
    if (!hp || !net::address::parse(hp->first, hp->second) || hp->second == 0)
        error(line_of(*s.get("listen"), s.line), s.key("listen"), quote(*v), allowed);
    else
        out.listen = std::move(*v);
}

void loader::read_conservation(const section& s, conservation_config& out) {
    check_keys(s, keys_of(s.name()));
    read_simple(s, &out);
    auto order = [&](const char* lo_key, uint64_t lo, const char* hi_key, uint64_t hi) {
        if (lo && hi && lo > hi)
            error(s.line, s.key(lo_key), fmt::format("{} is above {} ({})", lo, hi_key, hi),
                  fmt::format("at most {}", hi_key));
    };
    order("memory_tarpit_percent", out.memory_tarpit_percent, "memory_refuse_percent", out.memory_refuse_percent);
    order("spool_tarpit_percent", out.spool_tarpit_percent, "spool_refuse_percent", out.spool_refuse_percent);
    order("queue_tarpit_messages", out.queue_tarpit_messages, "queue_refuse_messages", out.queue_refuse_messages);
}

void loader::read_authentication(const section& s, authentication_config& out) {
    check_keys(s, keys_of(s.name()));
    read_simple(s, &out);
    const std::string_view id_allowed = "a domain name, or empty for smtp.hostname";
    if (auto v = read_string(s, "authserv_id", id_allowed)) {
        if (!v->empty() && mail::check_domain(*v))
            error(line_of(*s.get("authserv_id"), s.line), s.key("authserv_id"), quote(*v), id_allowed);
        else
            out.authserv_id = std::move(*v);
    }
    set_path(s, "dkim_key_dir", true, "a directory, or empty for control.config_dir/dkim", out.dkim_key_dir);
    if (auto v = read_string(s, "arc_seal_domain", "a domain name, or empty")) {
        if (!v->empty() && mail::check_domain(*v))
            error(line_of(*s.get("arc_seal_domain"), s.line), s.key("arc_seal_domain"), quote(*v), "a domain name");
        else
            out.arc_seal_domain = mail::normalize_domain(*v);
    }
    const std::string_view from_allowed = "an address like dmarc-reports@example.com, or empty";
    if (auto v = read_string(s, "dmarc_report_from", from_allowed)) {
        const size_t at = v->rfind('@');
        if (!v->empty() && (at == std::string::npos || at == 0 || v->find_first_of(" \t<>\"") != std::string::npos ||
                            mail::check_domain(std::string_view(*v).substr(at + 1))))
            error(line_of(*s.get("dmarc_report_from"), s.line), s.key("dmarc_report_from"), quote(*v), from_allowed);
        else
            out.dmarc_report_from = std::move(*v);
    }
    const std::string_view org_allowed = "a name of printable characters (at most 200 bytes), or empty";
    if (auto v = read_string(s, "dmarc_report_org", org_allowed)) {
        if (v->size() > 200 || std::any_of(v->begin(), v->end(), [](char ch) { return ch < 0x20 || ch == 0x7f; }))
            error(line_of(*s.get("dmarc_report_org"), s.line), s.key("dmarc_report_org"), quote(*v), org_allowed);
        else
            out.dmarc_report_org = std::move(*v);
    }
    if (s.get("arc_trusted_sealers")) {
        out.arc_trusted_sealers.clear();
        for_each_string(s, "arc_trusted_sealers", 1000, "domain names",
                        [&](uint32_t line, const std::string& path, const std::string& v) {
                            if (mail::check_domain(v))
                                error(line, path, fmt::format("{} is not a domain", quote(v)), "domain names");
                            else
                                out.arc_trusted_sealers.push_back(mail::normalize_domain(v));
                        });
    }
    for (const char* k : {"dkim_sign_headers", "dkim_oversign"}) {
        if (!s.get(k))
            continue;
        const std::string_view allowed = "header field names, like [\"from\", \"subject\"]";
        std::vector<std::string> names;
        for_each_string(s, k, 64, allowed, [&](uint32_t line, const std::string& path, const std::string& v) {
            if (mail::is_field_name(v))
                names.push_back(mail::lower_ascii(v));
            else
                error(line, path, fmt::format("{} is not a header field name", quote(v)), allowed);
        });
        (std::string_view(k) == "dkim_oversign" ? out.dkim_oversign : out.dkim_sign_headers) = std::move(names);
    }
    const std::string_view exp_allowed = "printable ASCII text with SPF macros, like \"%{i} may not send for %{d}\"";
    if (auto v = read_string(s, "spf_explanation", exp_allowed)) {
        if (v->size() > 512 || !policy::spf::check_explanation(*v))
            error(line_of(*s.get("spf_explanation"), s.line), s.key("spf_explanation"), quote(*v), exp_allowed);
        else
            out.spf_explanation = std::move(*v);
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
    read_sources(root, c);
    read_routes(root, c);
    read_quarantines(root, c);
    read_content_rules(root, c);
    read_screening(open_table(root, "screening"), c.screening);
    read_flow_policies(root, c);
    read_sender_groups(root, c);
    read_recipient_access(root, c);
    read_call_ahead(open_table(root, "call_ahead"), c);
    read_scanners(root, c);
    {
        section o = open_table(root, "outbound");
        check_keys(o, keys_of(o.name()));
        read_simple(o, &c.outbound);
    }
    read_control(open_table(root, "control"), c.control);
    read_metrics(open_table(root, "metrics"), c.metrics);
    read_conservation(open_table(root, "conservation"), c.conservation);
    read_authentication(open_table(root, "authentication"), c.authentication);
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

}  // namespace rw::admin::detail
