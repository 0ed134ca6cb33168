// Next hops: a configured route's hosts, or the MX set of the recipient
// domain (RFC 5321 5.1: by preference, equal ones shuffled, A/AAAA when
// there is no MX), each resolved to addresses.
#include "mta/delivery/queue_impl.hh"

#include <algorithm>

#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/smp/smp.hh"

namespace rw::mta::delivery {

namespace {
logger lg("delivery");
}  // namespace

task<service::impl::hops_result> service::impl::resolve_host(std::string name, uint16_t port) {
    hops_result out;
    if (!dns) {
        out.error = {451, "4.4.3 no resolver for host " + name, "4.4.3"};
        co_return out;
    }
    auto ta = dns->resolve_a(name);
    auto a = co_await std::move(ta);
    if (a)
        for (auto ad : a.value()) {
            ad.set_port(port);
            out.hops.push_back({ad, name});
        }
    auto tq = dns->resolve_aaaa(name);
    auto aaaa = co_await std::move(tq);
    if (aaaa)
        for (auto ad : aaaa.value()) {
            ad.set_port(port);
            out.hops.push_back({ad, name});
        }
    if (out.hops.empty()) {
        bool perm = (!a && a.error().permanent()) && (!aaaa && aaaa.error().permanent());
        out.error = perm ? smtp_reply{550, fmt::format("5.1.2 host {} has no address", name), "5.1.2"}
                         : smtp_reply{451, fmt::format("4.4.3 cannot resolve {}: {}", name,
                                                       !a ? a.error().describe() : std::string("no address")),
                                      "4.4.3"};
    }
    co_return out;
}

task<service::impl::hops_result> service::impl::next_hops(destination* d) {
    hops_result out;
    if (d->rt) {
        for (const auto& h : d->rt->hosts) {
            if (h.literal) {
                out.hops.push_back({h.addr, h.name});
            } else {
                auto t = resolve_host(h.name, h.port);
                auto r = co_await std::move(t);
                for (auto& x : r.hops)
                    out.hops.push_back(std::move(x));
                if (out.hops.empty())
                    out.error = r.error;
            }
        }
        co_return out;
    }
    if (!dns) {
        out.error = {451, "4.4.3 no route and no resolver", "4.4.3"};
        co_return out;
    }
    std::string dom = d->domain;
    auto tm = dns->resolve_mx(dom);
    auto mx = co_await std::move(tm);
    if (!mx) {
        if (mx.error().code == net::dns_errc::nodata) {
            // RFC 5321 5.1: no MX, the domain itself is the host.
            auto t = resolve_host(dom, o->smtp_port);
            auto r = co_await std::move(t);
            co_return r;
        }
        if (mx.error().code == net::dns_errc::nxdomain) {
            out.error = {550, fmt::format("5.1.2 domain {} does not exist", dom), "5.1.2"};
            co_return out;
        }
        out.error = {451, fmt::format("4.4.3 MX lookup failed: {}", mx.error().describe()), "4.4.3"};
        co_return out;
    }
    auto recs = mx.value();
    if (recs.size() == 1 && (recs[0].host.empty() || recs[0].host == ".")) {
        out.error = {556, fmt::format("5.1.10 domain {} does not accept mail (null MX)", dom), "5.1.10"};
        co_return out;
    }
    // Ordered by preference, shuffled among equals (RFC 5321 5.1).
    std::stable_sort(recs.begin(), recs.end(),
                     [](const net::mx_record& a, const net::mx_record& b) { return a.preference < b.preference; });
    for (size_t i = 0; i < recs.size();) {
        size_t j = i;
        while (j < recs.size() && recs[j].preference == recs[i].preference)
            ++j;
        std::shuffle(recs.begin() + long(i), recs.begin() + long(j), rng);
        i = j;
    }
    smtp_reply last;
    for (const auto& m : recs) {
        if (m.host.empty() || m.host == ".")
            continue;
        auto t = resolve_host(m.host, o->smtp_port);
        auto r = co_await std::move(t);
        for (auto& x : r.hops)
            out.hops.push_back(std::move(x));
        if (r.hops.empty())
            last = r.error;
        if (out.hops.size() >= 10)
            break;
    }
    if (out.hops.empty()) {
        out.error = last.code ? smtp_reply{451, last.text, "4.4.3"}
                              : smtp_reply{451, "4.4.3 no usable MX host", "4.4.3"};
        co_return out;
    }
    // MTA-STS (RFC 8461 5): in enforce mode only the MX hosts the policy
    // names are used, and only with a verified certificate; in testing
    // mode a mismatch is logged and the mail goes as usual.
    if (o->mta_sts) {
        auto tp = sts_policy_for(dom);
        auto pol = co_await std::move(tp);
        if (pol && pol->m != sts::mode::none) {
            std::vector<hop> kept;
            for (auto& h : out.hops)
                if (sts::mx_matches(*pol, h.name))
                    kept.push_back(std::move(h));
                else
                    lg.info("domain={} MX host {} is not in its MTA-STS policy ({})", dom, h.name,
                            sts::to_string(pol->m));
            if (pol->m == sts::mode::enforce) {
                out.hops = std::move(kept);
                out.min_tls = tls_mode::verify;
                if (out.hops.empty())
                    out.error = {451, fmt::format("4.7.5 no MX host of {} matches its MTA-STS policy", dom), "4.7.5"};
            }
        }
    }
    co_return out;
}

task<std::optional<sts::policy>> service::impl::sts_policy_for(std::string domain) {
    const int64_t now = now_ms();
    auto it = sts_cache.find(domain);
    if (it != sts_cache.end() && now - it->second.checked_ms < 60'000 && now < it->second.expires_ms)
        co_return it->second.p;
    auto tt = dns->resolve_txt("_mta-sts." + domain);
    auto txt = co_await std::move(tt);
    std::optional<std::string> id;
    if (txt)
        for (const auto& t : txt.value())
            if (auto x = sts::parse_txt(t)) {
                if (id) {  // more than one STSv1 record: as if none (RFC 8461 3.1)
                    id.reset();
                    break;
                }
                id = std::move(x);
            }
    it = sts_cache.find(domain);  // the lookup may have let another worker fill it
    const bool cached = it != sts_cache.end() && now < it->second.expires_ms;
    if (!id) {
        // No record: a cached policy still holds until its max_age (RFC 8461 5.1).
        if (cached) {
            it->second.checked_ms = now;
            co_return it->second.p;
        }
        co_return std::nullopt;
    }
    if (cached && it->second.id == *id) {
        it->second.checked_ms = now;
        co_return it->second.p;
    }
    const std::string host = "mta-sts." + domain;
    auto tg = sts::https_get(dns, host, "/.well-known/mta-sts.txt", verifying_tls(), std::chrono::seconds(20));
    auto body = co_await std::move(tg);
    std::optional<sts::policy> got;
    if (!body) {
        lg.warn("domain={} MTA-STS policy not fetched: {}", domain, body.error());
    } else if (auto p = sts::parse_policy(body.value()); !p) {
        lg.warn("domain={} MTA-STS policy malformed, ignored: {}", domain, p.error());
    } else {
        got = std::move(p.value());
    }
    it = sts_cache.find(domain);
    if (!got) {
        if (it != sts_cache.end() && now < it->second.expires_ms)
            co_return it->second.p;  // a failed refresh keeps the cached policy
        co_return std::nullopt;
    }
    lg.info("domain={} MTA-STS policy id={} mode={} mx={} max_age={}", domain, *id, sts::to_string(got->m),
            got->mx.size(), got->max_age);
    journal::record("mta_sts", {{"domain", std::string_view(domain)}, {"id", std::string_view(*id)},
                                {"mode", sts::to_string(got->m)}, {"max_age", got->max_age}});
    sts_cache[domain] = {*got, *id, now + got->max_age * 1000, now};
    co_return got;
}

}  // namespace rw::mta::delivery
