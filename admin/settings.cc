// Configuration to each layer's options.
#include "admin/settings.hh"

#include <algorithm>

#include "policy/patterns.hh"

namespace rw::admin {

mta::listener_options to_options(const listener_config& l) {
    mta::listener_options o;
    o.name = l.name;
    o.implicit_tls = l.implicit_tls;
    o.auth = l.auth == auth_mode::none ? mta::auth_mode::none
             : l.auth == auth_mode::required ? mta::auth_mode::required
                                             : mta::auth_mode::optional;
    o.allow_auth_without_tls = l.allow_auth_without_tls;
    o.max_connections = l.max_connections;
    o.max_connections_per_ip = l.max_connections_per_ip;
    o.max_recipients = l.max_recipients;
    o.max_message_size_bytes = l.max_message_size_bytes;
    o.max_line_length_bytes = l.max_line_length_bytes;
    o.max_errors = l.max_errors;
    o.greeting_timeout = l.greeting_timeout_s;
    o.command_timeout = l.command_timeout_s;
    o.data_block_timeout = l.data_block_timeout_s;
    o.data_end_timeout = l.data_end_timeout_s;
    o.idle_timeout = l.idle_timeout_s;
    o.greet_pause = l.greet_pause_ms;
    o.dmarc_reject = l.dmarc_reject;
    return o;
}

mta::delivery::route_host to_route_host(const std::string& s, uint16_t default_port) {
    mta::delivery::route_host h;
    auto hp = parse_next_hop(s, default_port);
    RW_ASSERT(hp.has_value(), "next hop {} passed validation", s);
    h.name = hp->first;
    h.port = hp->second;
    if (auto a = net::address::parse(hp->first, hp->second)) {
        h.addr = *a;
        h.literal = true;
    } else {
        h.literal = false;
    }
    return h;
}

std::string dkim_key_dir(const config& cfg) {
    return cfg.authentication.dkim_key_dir.empty() ? cfg.control.config_dir + "/dkim" : cfg.authentication.dkim_key_dir;
}

mta::authentication_options authentication_options(const config& cfg) {
    mta::authentication_options o;
    const auto& a = cfg.authentication;
    o.spf = a.spf;
    o.spf_helo = a.spf_helo;
    o.spf_reject_fail = a.spf_fail == "reject";
    o.spf_tempfail_temperror = a.spf_temperror == "tempfail";
    o.authserv_id = a.authserv_id.empty() ? cfg.smtp.hostname : a.authserv_id;
    o.spf_options.default_explanation = a.spf_explanation;
    o.dkim_verify = a.dkim_verify;
    o.dkim_options.trust_length_limit = a.dkim_trust_length;
    o.dkim_sign = a.dkim_sign;
    o.dmarc = a.dmarc;
    o.arc_verify = a.arc_verify;
    o.arc_trusted_sealers = a.arc_trusted_sealers;
    o.arc_seal_domain = a.arc_seal_domain;
    o.dmarc_reports = a.dmarc && a.dmarc_reports;
    o.sign_options.headers = a.dkim_sign_headers;
    o.sign_options.oversign = a.dkim_oversign;
    o.sign_options.expire_seconds = a.dkim_expire_days * 86400;
    return o;
}

mta::delivery::options delivery_options(const config& cfg) {
    mta::delivery::options o;
    const auto& d = cfg.delivery;
    o.hostname = cfg.smtp.hostname;
    o.smtp_port = d.smtp_port;
    o.starttls = d.starttls;
    auto mode_of = [](const std::string& t) {
        using M = mta::delivery::tls_mode;
        return t == "none" ? M::none : t == "required" ? M::required : t == "verify" ? M::verify : M::opportunistic;
    };
    o.tls = mode_of(d.tls);
    o.tls_ca_file = d.tls_ca_file;
    o.mta_sts = d.mta_sts;
    o.first_retry = d.first_retry_ms;
    o.max_retry = d.max_retry_ms;
    o.greylist_retry = d.greylist_retry_ms;
    o.max_queue_lifetime = d.max_queue_lifetime_s;
    o.delay_notice_after = d.delay_notice_after_s;
    o.max_connections_per_destination = d.max_connections_per_destination;
    o.max_messages_per_connection = d.max_messages_per_connection;
    o.max_received_headers = cfg.smtp.max_received_headers;
    o.max_messages_per_minute = d.max_messages_per_minute;
    o.backoff_after_tempfails = d.backoff_after_tempfails;
    o.recover_after_deliveries = d.recover_after_deliveries;
    o.destination_pause = d.destination_pause_ms;
    o.connection_cache_time = d.connection_cache_time_ms;
    o.connect_timeout = d.connect_timeout_ms;
    o.command_timeout = d.command_timeout_s;
    o.data_timeout = d.data_timeout_s;
    for (const auto& q : quarantines_of(cfg.quarantines))
        o.quarantines.push_back({q.name, q.retention_s, q.max_size_bytes,
                                 q.expire == quarantine_expiry::release});
    for (const auto& sc : cfg.sources) {
        mta::delivery::source src;
        src.name = sc.name;
        auto a = net::address::parse(sc.address, 0);
        RW_ASSERT(a.has_value(), "source address {} passed validation", sc.address);
        src.addr = *a;
        src.helo = sc.helo;
        src.max_connections_per_destination = sc.max_connections_per_destination;
        src.max_messages_per_minute = sc.max_messages_per_minute;
        src.warmup = sc.warmup;
        if (!sc.warmup.empty())
            src.warmup_start_day = parse_day(sc.warmup_start).value_or(0);
        o.sources.push_back(std::move(src));
    }
    for (const auto& pc : cfg.pools) {
        mta::delivery::pool p;
        p.name = pc.name;
        p.overflow = pc.overflow;
        for (const auto& m : pc.sources) {
            auto nw = parse_pool_member(m);
            RW_ASSERT(nw.has_value(), "pool member {} passed validation", m);
            for (size_t i = 0; i < o.sources.size(); ++i)
                if (o.sources[i].name == nw->first)
                    p.members.push_back({i, nw->second});
        }
        o.pools.push_back(std::move(p));
    }
    o.default_pool = d.default_pool;
    o.providers = mta::delivery::builtin_providers();
    for (const auto& pc : cfg.providers) {
        auto it = std::find_if(o.providers.begin(), o.providers.end(), [&](const auto& p) { return p.name == pc.name; });
        if (it == o.providers.end()) {
            o.providers.push_back({pc.name, {}, 0, 0});
            it = o.providers.end() - 1;
        }
        if (!pc.mx_suffixes.empty())
            it->mx_suffixes = pc.mx_suffixes;
        it->max_connections = pc.max_connections;
        it->max_messages_per_hour = pc.max_messages_per_hour;
    }
    std::vector<policy::patterns::pattern> shaping_patterns;
    for (const auto& rc : cfg.shaping_rules) {
        mta::delivery::shaping_rule r;
        r.name = rc.name;
        r.provider = rc.provider;
        r.pattern = rc.pattern;
        r.threshold = rc.threshold;
        r.period = rc.period_s;
        r.duration = rc.duration_s;
        r.per_source = rc.scope == "source";
        auto act = parse_shaping_action(rc.action);
        RW_ASSERT(act.has_value(), "shaping action {} passed validation", rc.action);
        using A = mta::delivery::shaping_rule::action_t;
        r.action = act->first == "rate" ? A::rate : act->first == "connections" ? A::connections
                 : act->first == "bounce" ? A::bounce : A::suspend;
        r.value = act->second;
        shaping_patterns.push_back({rc.pattern, unsigned(o.shaping.size()), true, true});
        o.shaping.push_back(std::move(r));
    }
    if (!shaping_patterns.empty()) {
        // Each pattern was checked when the configuration was loaded.
        auto db = policy::patterns::database::compile(shaping_patterns);
        RW_ASSERT(db.has_value(), "shaping patterns passed validation: {}", db ? std::string() : db.error());
        o.shaping_db = std::move(db.value());
    }
    for (const auto& wc : cfg.warmups) {
        mta::delivery::warmup_schedule w;
        w.name = wc.name;
        if (!wc.daily.empty())
            w.default_caps = parse_caps(wc.daily).value_or(std::vector<unsigned>{});
        for (const auto& pv : wc.providers) {
            const size_t colon = pv.find(':');
            w.providers.emplace_back(pv.substr(0, colon),
                                     parse_caps(std::string_view(pv).substr(colon + 1)).value_or(std::vector<unsigned>{}));
        }
        o.warmups.push_back(std::move(w));
    }
    for (const auto& r : cfg.routes) {
        mta::delivery::route rt;
        rt.domain = r.domain;
        rt.pool = r.pool;
        if (!r.tls.empty())
            rt.tls = mode_of(r.tls);
        for (const auto& h : r.hosts)
            rt.hosts.push_back(to_route_host(h, d.smtp_port));
        o.routes.push_back(std::move(rt));
    }
    // The accepted domains go to the internal hosts, unless a route says otherwise.
    if (!d.internal_hosts.empty())
        for (const auto& dom : cfg.smtp.accepted_domains) {
            if (std::any_of(o.routes.begin(), o.routes.end(), [&](const auto& r) { return r.domain == dom; }))
                continue;
            mta::delivery::route rt;
            rt.domain = dom;
            for (const auto& h : d.internal_hosts)
                rt.hosts.push_back(to_route_host(h, d.smtp_port));
            o.routes.push_back(std::move(rt));
        }
    return o;
}

result<policy::relay_config, std::string> relay_options(const config& cfg) {
    policy::relay_config rc;
    rc.accepted_domains = cfg.smtp.accepted_domains;
    rc.allow_domain_literals = cfg.smtp.allow_domain_literals;
    for (const auto& n : cfg.smtp.relay_networks) {
        auto c = policy::cidr::parse(n.to_string());
        if (!c)
            return unexpected(fmt::format("smtp.relay_networks: cannot use {}", n.to_string()));
        rc.relay_networks.push_back(*c);
    }
    return rc;
}

result<std::unique_ptr<mta::scan::options>, std::string> scan_options(const config& cfg) {
    auto o = std::make_unique<mta::scan::options>();
    auto reply = [](const std::string& text, int& code, std::string& enh, std::string& out) {
        auto r = policy::access::parse_reply(text);
        if (!r)
            return false;
        code = r->code;
        enh = r->enhanced;
        out = r->text;
        return true;
    };
    const auto& av = cfg.antivirus;
    if (!av.clamd.empty()) {
        auto e = mta::scan::endpoint::parse(av.clamd);
        if (!e)
            return unexpected(fmt::format("antivirus.clamd: cannot use {:?}", av.clamd));
        mta::scan::clamd_options c;
        c.where = *e;
        c.timeout = av.timeout_ms;
        c.max_size = av.max_size_bytes;
        c.on_failure = av.on_failure == scan_failure::accept ? mta::scan::failure_mode::accept
                                                             : mta::scan::failure_mode::tempfail;
        o->clamd = c;
        o->virus = av.action == virus_action::reject       ? mta::scan::options::virus_action::reject
                   : av.action == virus_action::quarantine ? mta::scan::options::virus_action::quarantine
                                                           : mta::scan::options::virus_action::drop;
        if (!reply(av.reply, o->virus_code, o->virus_enhanced, o->virus_text))
            return unexpected(fmt::format("antivirus.reply: {:?}", av.reply));
    }
    const auto& as = cfg.antispam;
    if (!as.rspamd.empty()) {
        auto e = mta::scan::endpoint::parse(as.rspamd);
        if (!e)
            return unexpected(fmt::format("antispam.rspamd: cannot use {:?}", as.rspamd));
        mta::scan::rspamd_options r;
        r.where = *e;
        r.timeout = as.timeout_ms;
        r.max_size = as.max_size_bytes;
        r.on_failure = as.on_failure == scan_failure::accept ? mta::scan::failure_mode::accept
                                                             : mta::scan::failure_mode::tempfail;
        o->rspamd = r;
        o->spam_quarantine = as.quarantine;
        if (!reply(as.reply, o->spam_code, o->spam_enhanced, o->spam_text))
            return unexpected(fmt::format("antispam.reply: {:?}", as.reply));
        o->subject_tag = as.subject_tag;
        o->spam_headers = as.headers;
    }
    for (const auto& m : cfg.milters) {
        auto e = mta::scan::endpoint::parse(m.address);
        if (!e)
            return unexpected(fmt::format("milter {}: cannot use {:?}", m.name, m.address));
        mta::scan::milter_options mo;
        mo.name = m.name;
        mo.where = *e;
        mo.connect_timeout = m.connect_timeout_ms;
        mo.command_timeout = m.command_timeout_ms;
        mo.eom_timeout = m.eom_timeout_ms;
        mo.on_failure = m.on_failure == scan_failure::accept ? mta::scan::failure_mode::accept
                                                             : mta::scan::failure_mode::tempfail;
        o->milters.push_back(std::move(mo));
    }
    return o;
}

result<std::unique_ptr<mta::access_env>, std::string> access_options(const config& cfg, mta::pass_cache* passed,
                                                                     mta::call_ahead_cache* answers) {
    namespace pa = policy::access;
    auto env = std::make_unique<mta::access_env>();
    auto screen = [](screen_action a) {
        return a == screen_action::ignore    ? mta::screen_action::ignore
               : a == screen_action::enforce ? mta::screen_action::enforce
                                             : mta::screen_action::drop;
    };
    const auto& sc = cfg.screening;
    env->screening = {screen(sc.pregreet), screen(sc.pipelining), screen(sc.bare_lf), screen(sc.non_smtp),
                      sc.pass_ttl_s};
    env->passed = passed;
    std::vector<pa::dnsbl_site> sites;
    for (const auto& s : sc.dnsbl_sites) {
        auto site = pa::dnsbl_site::parse(s);
        if (!site)
            return unexpected(fmt::format("screening.dnsbl_sites: {}", site.error()));
        sites.push_back(std::move(site.value()));
    }
    std::vector<pa::flow_policy> policies;
    for (const auto& c : flow_policies_of(cfg.flow_policies)) {
        pa::flow_policy p;
        p.name = c.name;
        p.action = c.action == flow_action::reject ? pa::flow_action::reject
                   : c.action == flow_action::relay ? pa::flow_action::relay
                                                    : pa::flow_action::accept;
        auto r = pa::parse_reply(c.reject_reply);
        if (!r)
            return unexpected(fmt::format("mail_flow_policy {}: reject_reply {:?}", c.name, c.reject_reply));
        p.reject_code = r->code;
        p.reject_enhanced = r->enhanced;
        p.reject_text = r->text;
        p.max_message_size = c.max_message_size_bytes;
        p.max_messages_per_session = c.max_messages_per_session;
        p.max_recipients_per_message = c.max_recipients_per_message;
        p.max_recipients_per_hour = c.max_recipients_per_hour;
        p.max_connections_per_client = c.max_connections_per_client;
        p.tls = c.tls == tls_policy::off        ? pa::tls_mode::off
                : c.tls == tls_policy::required ? pa::tls_mode::required
                                                : pa::tls_mode::preferred;
        p.auth = c.auth;
        p.sender_auth = c.sender_auth;
        p.content_rules = c.content_rules;
        p.screening = c.screening;
        p.antivirus = c.antivirus;
        p.antispam = c.antispam;
        p.milters = c.milters;
        p.pool = c.pool;
        env->per_hour.push_back(
            p.max_recipients_per_hour
                ? std::make_unique<mta::shared_bucket>(double(p.max_recipients_per_hour) / 3600.0,
                                                       double(p.max_recipients_per_hour), 100'000)
                : nullptr);
        policies.push_back(std::move(p));
    }
    std::vector<pa::group> groups;
    for (const auto& c : sender_groups_of(cfg.sender_groups)) {
        pa::group g;
        g.name = c.name;
        auto it = std::find_if(policies.begin(), policies.end(), [&](const pa::flow_policy& p) { return p.name == c.policy; });
        if (it == policies.end())
            return unexpected(fmt::format("sender_group {}: no mail flow policy {}", c.name, c.policy));
        g.policy = size_t(it - policies.begin());
        for (const auto& n : c.networks) {
            auto net = policy::cidr::parse(n.to_string());
            if (!net)
                return unexpected(fmt::format("sender_group {}: cannot use {}", c.name, n.to_string()));
            g.networks.push_back(*net);
        }
        g.rdns = c.rdns;
        g.rdns_unconfirmed = c.rdns_unconfirmed;
        g.dnsbl_min_score = c.dnsbl_min_score;
        g.dnsbl_max_score = c.dnsbl_max_score;
        for (const auto& r : c.spf)
            if (auto res = pa::parse_spf_result(r))
                g.spf.push_back(*res);
        groups.push_back(std::move(g));
    }
    auto t = pa::table::build(std::move(groups), std::move(policies), std::move(sites));
    if (!t)
        return unexpected(t.error());
    env->table = std::move(t.value());
    std::vector<policy::recipient_entry> entries;
    for (const auto& r : cfg.recipient_access) {
        policy::recipient_entry e;
        e.match = r.recipient;
        e.reject = r.reject;
        auto rp = pa::parse_reply(r.reply);
        if (!rp)
            return unexpected(fmt::format("recipient_access {}: reply {:?}", r.recipient, r.reply));
        e.code = rp->code;
        e.enhanced = rp->enhanced;
        e.text = rp->text;
        e.bypass_throttles = r.bypass_throttles;
        entries.push_back(std::move(e));
    }
    auto rt = policy::recipient_table::build(std::move(entries));
    if (!rt)
        return unexpected(fmt::format("recipient_access: {}", rt.error()));
    env->recipients = std::move(rt.value());
    const auto& ca = cfg.call_ahead;
    if (!ca.domains.empty()) {
        auto c = std::make_unique<mta::call_ahead_env>();
        for (const auto& d : ca.domains)
            c->options.domains.push_back(d.starts_with("*.") ? d.substr(1) : d);
        const auto& hosts = ca.hosts.empty() ? cfg.delivery.internal_hosts : ca.hosts;
        for (const auto& h : hosts) {
            auto hp = parse_next_hop(h, cfg.delivery.smtp_port);
            auto a = hp ? net::address::parse(hp->first, hp->second) : std::nullopt;
            if (!a)
                return unexpected(fmt::format("call_ahead: {} is not an IP address to ask", h));
            c->options.hosts.push_back(*a);
        }
        c->options.sender = ca.sender;
        c->options.timeout = ca.timeout_ms;
        c->options.ttl = ca.cache_ttl_s;
        c->options.negative_ttl = ca.negative_cache_ttl_s;
        c->options.fail_open = ca.fail_open;
        c->options.hostname = cfg.smtp.hostname;
        c->client.hostname = cfg.smtp.hostname;
        c->client.connect_timeout = ca.timeout_ms;
        c->client.command_timeout = ca.timeout_ms;
        c->client.data_timeout = ca.timeout_ms;
        c->cache = answers;
        env->call_ahead = std::move(c);
    }
    return env;
}

}  // namespace rw::admin
