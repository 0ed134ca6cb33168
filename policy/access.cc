#include "policy/access.hh"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "mail/domain.hh"

namespace rw::policy::access {

namespace {

constexpr size_t k_max_ptr_names = 5;  // PTR names confirmed per client (more is not a mail server)

bool parse_int(std::string_view s, int& out) {
    if (s.empty())
        return false;
    auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// One octet of a filter: "2", "[0..255]", "[1;3;5]" (values and ranges
// mixed: "[1..3;7]").
bool parse_octet(std::string_view s, std::bitset<256>& out, std::string& why) {
    auto value = [&](std::string_view v, int& n) {
        if (!parse_int(v, n) || n < 0 || n > 255) {
            why = fmt::format("\"{}\" is not an octet (0..255)", v);
            return false;
        }
        return true;
    };
    if (!s.starts_with('[')) {
        int n;
        if (!value(s, n))
            return false;
        out.set(size_t(n));
        return true;
    }
    if (!s.ends_with(']')) {
        why = fmt::format("\"{}\" lacks its closing ]", s);
        return false;
    }
    s = s.substr(1, s.size() - 2);
    while (true) {
        size_t semi = s.find(';');
        std::string_view item = s.substr(0, semi);
        size_t dots = item.find("..");
        int a, b;
        if (dots == std::string_view::npos) {
            if (!value(item, a))
                return false;
            b = a;
        } else if (!value(item.substr(0, dots), a) || !value(item.substr(dots + 2), b)) {
            return false;
        }
        if (a > b) {
            why = fmt::format("range \"{}\" is empty", item);
            return false;
        }
        for (int k = a; k <= b; ++k)
            out.set(size_t(k));
        if (semi == std::string_view::npos)
            return true;
        s.remove_prefix(semi + 1);
    }
}

std::string nibbles(const canonical_ip& ip) {
    static constexpr char hx[] = "0123456789abcdef";
    std::string out;
    out.reserve(64);
    for (int k = 31; k >= 0; --k) {
        const uint8_t b = ip.bytes[size_t(k / 2)];
        out += hx[k % 2 == 0 ? b >> 4 : b & 0xf];
        out += '.';
    }
    out.pop_back();
    return out;
}

std::optional<std::string> reversed(const rw::net::address& peer) {
    canonical_ip ip = canonicalize(peer);
    if (ip.family == 4)
        return fmt::format("{}.{}.{}.{}", ip.bytes[3], ip.bytes[2], ip.bytes[1], ip.bytes[0]);
    if (ip.family == 6)
        return nibbles(ip);
    return std::nullopt;
}

bool same_ip(const rw::net::address& a, const rw::net::address& b) { return canonicalize(a) == canonicalize(b); }

// The forward-confirmed name: nullopt while answers are missing (need
// filled), else the outcome.
struct fcrdns {
    std::optional<std::string> name;
    bool temporary = false;
};
std::optional<fcrdns> confirm(const rw::net::address& peer, const dns_answers& ans, std::vector<dns_query>& need) {
    auto rev = reverse_name(peer);
    if (!rev)
        return fcrdns{};
    const dns_answer* p = ans.find(rrtype::ptr, *rev);
    if (!p) {
        need.push_back({rrtype::ptr, *rev});
        return std::nullopt;
    }
    if (p->status == dns_status::temporary)
        return fcrdns{{}, true};
    if (p->status != dns_status::ok)
        return fcrdns{};
    const rrtype t = canonicalize(peer).family == 6 ? rrtype::aaaa : rrtype::a;
    fcrdns out;
    bool waiting = false;
    size_t n = 0;
    for (const auto& raw : p->names) {
        if (n++ == k_max_ptr_names)
            break;
        std::string name = mail::normalize_domain(raw);
        if (name.empty() || mail::check_domain(name))
            continue;
        const dns_answer* a = ans.find(t, name);
        if (!a) {
            need.push_back({t, name});
            waiting = true;
            continue;
        }
        if (a->status == dns_status::temporary)
            out.temporary = true;
        if (!waiting && !out.name && a->status == dns_status::ok)
            for (const auto& addr : a->addrs)
                if (same_ip(addr, peer)) {
                    out.name = name;
                    break;
                }
    }
    if (waiting)
        return std::nullopt;
    if (out.name)
        out.temporary = false;
    return out;
}

// The DNSBL score: nullopt while answers are missing.
struct score {
    int total = 0;
    std::vector<std::string> listed;
};
std::optional<score> dnsbl_score(const rw::net::address& peer, const std::vector<dnsbl_site>& sites,
                                 const dns_answers& ans, std::vector<dns_query>& need) {
    score out;
    bool waiting = false;
    for (const auto& s : sites) {
        auto q = dnsbl_name(peer, s.zone);
        if (!q)
            continue;
        const dns_answer* a = ans.find(rrtype::a, *q);
        if (!a) {
            if (std::none_of(need.begin(), need.end(), [&](const dns_query& d) { return d.name == *q; }))
                need.push_back({rrtype::a, *q});
            waiting = true;
            continue;
        }
        if (a->status != dns_status::ok)
            continue;
        for (const auto& addr : a->addrs)
            if (s.listed_by(addr)) {
                out.total += s.weight;
                if (std::find(out.listed.begin(), out.listed.end(), s.zone) == out.listed.end())
                    out.listed.push_back(s.zone);
                break;
            }
    }
    if (waiting)
        return std::nullopt;
    return out;
}

}  // namespace

std::string_view to_string(flow_action a) noexcept {
    switch (a) {
    case flow_action::accept: return "accept";
    case flow_action::reject: return "reject";
    case flow_action::relay: return "relay";
    }
    return "?";
}

std::string_view to_string(tls_mode t) noexcept {
    switch (t) {
    case tls_mode::off: return "off";
    case tls_mode::preferred: return "preferred";
    case tls_mode::required: return "required";
    }
    return "?";
}

result<dnsbl_site, std::string> dnsbl_site::parse(std::string_view text) {
    dnsbl_site s;
    std::string_view rest = text;
    if (size_t star = rest.rfind('*'); star != std::string_view::npos) {
        if (!parse_int(rest.substr(star + 1), s.weight) || s.weight < -100 || s.weight > 100 || s.weight == 0)
            return unexpected(fmt::format("weight \"{}\" is not a whole number in -100..-1 or 1..100",
                                          rest.substr(star + 1)));
        rest = rest.substr(0, star);
    }
    std::string_view filter;
    if (size_t eq = rest.find('='); eq != std::string_view::npos) {
        filter = rest.substr(eq + 1);
        rest = rest.substr(0, eq);
    }
    std::string zone = mail::normalize_domain(rest);
    if (zone.empty() || mail::check_domain(zone) || zone.find('.') == std::string::npos)
        return unexpected(fmt::format("\"{}\" is not a DNS zone", rest));
    s.zone = std::move(zone);
    if (size_t eq = text.find('='); eq != std::string_view::npos) {
        std::array<std::bitset<256>, 4> f;
        std::string_view r = filter;
        for (int k = 0; k < 4; ++k) {
            size_t dot = std::string_view::npos;
            // A dot inside [..] belongs to a range.
            int depth = 0;
            for (size_t i = 0; i < r.size(); ++i) {
                if (r[i] == '[')
                    ++depth;
                else if (r[i] == ']')
                    --depth;
                else if (r[i] == '.' && depth == 0) {
                    dot = i;
                    break;
                }
            }
            if ((k < 3) != (dot != std::string_view::npos))
                return unexpected(fmt::format("filter \"{}\" is not four octets like 127.0.0.2 or 127.0.0.[2..11]",
                                              filter));
            std::string why;
            if (!parse_octet(r.substr(0, dot), f[size_t(k)], why))
                return unexpected(fmt::format("filter \"{}\": {}", filter, why));
            if (dot != std::string_view::npos)
                r.remove_prefix(dot + 1);
        }
        s.filter = f;
    }
    return s;
}

bool dnsbl_site::listed_by(const rw::net::address& a) const noexcept {
    canonical_ip ip = canonicalize(a);
    if (ip.family != 4)
        return false;
    if (!filter)
        return ip.bytes[0] == 127;
    for (size_t k = 0; k < 4; ++k)
        if (!(*filter)[k].test(ip.bytes[k]))
            return false;
    return true;
}

std::string dnsbl_site::to_string() const {
    std::string s = zone;
    if (filter)
        s += "=<filter>";
    if (weight != 1)
        s += fmt::format("*{}", weight);
    return s;
}

std::optional<std::string> dnsbl_name(const rw::net::address& peer, std::string_view zone) {
    auto r = reversed(peer);
    if (!r)
        return std::nullopt;
    return fmt::format("{}.{}", *r, zone);
}

std::optional<std::string> reverse_name(const rw::net::address& peer) {
    auto r = reversed(peer);
    if (!r)
        return std::nullopt;
    return fmt::format("{}.{}", *r, canonicalize(peer).family == 6 ? "ip6.arpa" : "in-addr.arpa");
}

std::optional<reply_text> parse_reply(std::string_view s) {
    reply_text r;
    if (s.size() < 10 || s.size() > 220 || s[3] != ' ')
        return std::nullopt;
    if (!parse_int(s.substr(0, 3), r.code) || r.code < 400 || r.code > 599)
        return std::nullopt;
    size_t sp = s.find(' ', 4);
    if (sp == std::string_view::npos)
        return std::nullopt;
    std::string_view enh = s.substr(4, sp - 4);
    // class.subject.detail: 4 or 5, then 1..3 and 1..3 digits
    size_t d1 = enh.find('.'), d2 = enh.rfind('.');
    int a, b, c;
    if (d1 == std::string_view::npos || d1 == d2 || !parse_int(enh.substr(0, d1), a) ||
        !parse_int(enh.substr(d1 + 1, d2 - d1 - 1), b) || !parse_int(enh.substr(d2 + 1), c) || a != r.code / 100 ||
        b < 0 || b > 999 || c < 0 || c > 999 || enh.size() > 9)
        return std::nullopt;
    r.enhanced = std::string(enh);
    std::string_view text = s.substr(sp + 1);
    if (text.empty())
        return std::nullopt;
    for (char ch : text)
        if (uint8_t(ch) < 0x20 || uint8_t(ch) > 0x7e)
            return std::nullopt;
    r.text = std::string(text);
    return r;
}

std::optional<spf::result> parse_spf_result(std::string_view s) {
    for (auto r : {spf::result::none, spf::result::neutral, spf::result::pass, spf::result::fail, spf::result::softfail,
                   spf::result::temperror, spf::result::permerror})
        if (spf::to_string(r) == s)
            return r;
    return std::nullopt;
}

bool rdns_matches(std::string_view pattern, std::string_view name) noexcept {
    if (pattern.starts_with('.'))
        return name.size() > pattern.size() && name.ends_with(pattern);
    return name == pattern;
}

result<std::shared_ptr<const table>, std::string> table::build(std::vector<group> groups,
                                                              std::vector<flow_policy> policies,
                                                              std::vector<dnsbl_site> sites) {
    if (groups.empty())
        return unexpected(std::string("no sender group: the default group is missing"));
    auto t = std::make_shared<table>();
    for (auto& g : groups) {
        if (g.policy >= policies.size())
            return unexpected(fmt::format("sender group {}: no such mail flow policy", g.name));
        for (auto& p : g.rdns) {
            p = mail::normalize_domain(p);
            if (p.starts_with("*."))
                p.erase(0, 1);
        }
        t->_needs_spf = t->_needs_spf || !g.spf.empty();
        if (g.needs_dnsbl() && sites.empty())
            return unexpected(fmt::format("sender group {} has a DNSBL score criterion, and no DNSBL site is "
                                          "configured (screening.dnsbl_sites)",
                                          g.name));
    }
    t->_groups = std::move(groups);
    t->_policies = std::move(policies);
    t->_sites = std::move(sites);
    return std::shared_ptr<const table>(std::move(t));
}

step<classification> table::classify(const facts& f, const dns_answers& answers) const {
    step<classification> out;
    classification c;
    std::optional<fcrdns> rd;
    std::optional<score> sc;
    auto done = [&](size_t gi, std::string matched) {
        c.group = gi;
        c.policy = _groups[gi].policy;
        c.matched = std::move(matched);
        if (rd) {
            c.rdns = rd->name;
            c.rdns_temporary = rd->temporary;
        }
        if (sc) {
            c.dnsbl_score = sc->total;
            c.listed = sc->listed;
        }
        out.done = std::move(c);
        return out;
    };
    const size_t last = _groups.size() - 1;
    for (size_t gi = 0; gi < last; ++gi) {
        const group& g = _groups[gi];
        for (const auto& n : g.networks)
            if (n.contains(f.peer))
                return done(gi, fmt::format("network {}", n.to_string()));
        if (f.spf)
            for (auto r : g.spf)
                if (r == *f.spf)
                    return done(gi, fmt::format("spf {}", spf::to_string(r)));
        if (!g.needs_rdns() && !g.needs_dnsbl())
            continue;
        // Every lookup this group needs, in one round.
        if (g.needs_rdns() && !rd)
            rd = confirm(f.peer, answers, out.need);
        if (g.needs_dnsbl() && !sc)
            sc = dnsbl_score(f.peer, _sites, answers, out.need);
        if ((g.needs_rdns() && !rd) || (g.needs_dnsbl() && !sc))
            return out;
        if (g.needs_rdns()) {
            if (rd->name) {
                for (const auto& p : g.rdns)
                    if (rdns_matches(p, *rd->name))
                        return done(gi, fmt::format("rdns {}", *rd->name));
            } else if (g.rdns_unconfirmed && !rd->temporary) {
                return done(gi, "rdns unconfirmed");
            }
        }
        if (g.needs_dnsbl()) {
            if (g.dnsbl_min_score != 0 && sc->total >= g.dnsbl_min_score)
                return done(gi, fmt::format("dnsbl score {}", sc->total));
            if (g.dnsbl_max_score != 0 && sc->total <= g.dnsbl_max_score)
                return done(gi, fmt::format("dnsbl score {}", sc->total));
        }
    }
    return done(last, "default");
}

}  // namespace rw::policy::access
