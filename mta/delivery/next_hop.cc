// Next hops: a configured route's hosts, or the MX set of the recipient
// domain (RFC 5321 5.1: by preference, equal ones shuffled, A/AAAA when
// there is no MX), each resolved to addresses.
#include "mta/delivery/queue_impl.hh"

#include <algorithm>

#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/smp/smp.hh"

namespace rw::mta::delivery {

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
    if (out.hops.empty())
        out.error = last.code ? smtp_reply{451, last.text, "4.4.3"}
                              : smtp_reply{451, "4.4.3 no usable MX host", "4.4.3"};
    co_return out;
}

}  // namespace rw::mta::delivery
