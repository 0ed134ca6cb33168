// Configuration to each layer's options.
#include "admin/settings.hh"

#include <algorithm>

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
    o.first_retry = d.first_retry_ms;
    o.max_retry = d.max_retry_ms;
    o.greylist_retry = d.greylist_retry_ms;
    o.max_queue_lifetime = d.max_queue_lifetime_s;
    o.delay_notice_after = d.delay_notice_after_s;
    o.max_connections_per_destination = d.max_connections_per_destination;
    o.max_messages_per_connection = d.max_messages_per_connection;
    o.max_received_headers = cfg.smtp.max_received_headers;
    o.max_messages_per_minute = d.max_messages_per_minute;
    o.destination_pause = d.destination_pause_ms;
    o.connection_cache_time = d.connection_cache_time_ms;
    o.connect_timeout = d.connect_timeout_ms;
    o.command_timeout = d.command_timeout_s;
    o.data_timeout = d.data_timeout_s;
    for (const auto& q : quarantines_of(cfg.quarantines))
        o.quarantines.push_back({q.name, q.retention_s, q.max_size_bytes,
                                 q.expire == quarantine_expiry::release});
    for (const auto& r : cfg.routes) {
        mta::delivery::route rt;
        rt.domain = r.domain;
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

}  // namespace rw::admin
