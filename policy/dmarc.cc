// DMARC: records, alignment, disposition (dmarc.hh).
#include "policy/dmarc.hh"

#include <libpsl.h>

#include <charconv>

#include "mail/domain.hh"

namespace rw::policy::dmarc {

std::string_view to_string(result r) noexcept {
    switch (r) {
    case result::none: return "none";
    case result::pass: return "pass";
    case result::fail: return "fail";
    case result::temperror: return "temperror";
    case result::permerror: return "permerror";
    }
    return "?";
}

std::string_view to_string(disposition d) noexcept {
    switch (d) {
    case disposition::none: return "none";
    case disposition::quarantine: return "quarantine";
    case disposition::reject: return "reject";
    }
    return "?";
}

std::string organizational_domain(std::string_view domain) {
    // The system list (Debian's publicsuffix), loaded once; read-only and
    // safe to share between threads after that.
    static const psl_ctx_t* psl = [] {
        const psl_ctx_t* p = psl_latest(nullptr);
        return p ? p : psl_builtin();
    }();
    const std::string d = mail::normalize_domain(domain);
    const char* reg = psl ? psl_registrable_domain(psl, d.c_str()) : nullptr;
    return reg ? std::string(reg) : d;
}

namespace {

std::optional<disposition> disposition_of(std::string_view v) {
    if (mail::iequals(v, "none"))
        return disposition::none;
    if (mail::iequals(v, "quarantine"))
        return disposition::quarantine;
    if (mail::iequals(v, "reject"))
        return disposition::reject;
    return std::nullopt;
}

std::vector<std::string> uris(std::string_view v) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos <= v.size() && out.size() < 8) {
        size_t c = v.find(',', pos);
        std::string_view u = v.substr(pos, c == std::string_view::npos ? std::string_view::npos : c - pos);
        while (!u.empty() && (u.front() == ' ' || u.front() == '\t'))
            u.remove_prefix(1);
        while (!u.empty() && (u.back() == ' ' || u.back() == '\t'))
            u.remove_suffix(1);
        if (u.size() > 7 && mail::iequals(u.substr(0, 7), "mailto:"))
            out.emplace_back(u);
        if (c == std::string_view::npos)
            break;
        pos = c + 1;
    }
    return out;
}

bool aligned(std::string_view a, std::string_view from, bool strict) {
    const std::string x = mail::normalize_domain(a), f = mail::normalize_domain(from);
    if (strict)
        return x == f;
    return organizational_domain(x) == organizational_domain(f);
}

// The one DMARC record in a _dmarc answer: found, none there, or (several
// records) none usable.
enum class found { one, none, several };
found pick(const dns_answer& a, std::optional<record>& out, std::string& why) {
    int n = 0;
    for (const std::string& txt : a.names) {
        if (!txt.starts_with("v=DMARC1"))
            continue;  // other TXT records at the name are ignored (6.6.3)
        std::string w;
        auto r = parse_record(txt, w);
        ++n;
        if (r)
            out = std::move(r);
        else
            why = w;
    }
    if (n > 1) {
        out.reset();
        return found::several;
    }
    return out ? found::one : found::none;
}

}  // namespace

std::optional<record> parse_record(std::string_view txt, std::string& why) {
    auto tags = dkim::parse_tags(txt);
    if (!tags || tags->empty() || (*tags)[0].name != "v" || (*tags)[0].value != "DMARC1") {
        why = "not a DMARC record (v=DMARC1 first)";
        return std::nullopt;
    }
    record r;
    bool have_p = false;
    for (const auto& t : *tags) {
        if (t.name == "p") {
            if (auto d = disposition_of(t.value)) {
                r.p = *d;
                have_p = true;
            }
        } else if (t.name == "sp") {
            r.sp = disposition_of(t.value);
        } else if (t.name == "np") {
            r.np = disposition_of(t.value);
        } else if (t.name == "pct") {
            unsigned v = 0;
            auto res = std::from_chars(t.value.data(), t.value.data() + t.value.size(), v);
            if (res.ec == std::errc() && res.ptr == t.value.data() + t.value.size() && v <= 100)
                r.pct = v;
        } else if (t.name == "adkim") {
            r.strict_dkim = t.value == "s";
        } else if (t.name == "aspf") {
            r.strict_spf = t.value == "s";
        } else if (t.name == "rua") {
            r.rua = uris(t.value);
        } else if (t.name == "ruf") {
            r.ruf = uris(t.value);
        } else if (t.name == "fo") {
            r.fo = std::string(t.value.substr(0, 16));
        }
    }
    if (!have_p && r.rua.empty()) {
        why = "no valid p= (and no rua=)";
        return std::nullopt;
    }
    return r;
}

step<outcome> evaluate(const request& rq, const dns_answers& answers) {
    step<outcome> st;
    outcome o;
    o.from_domain = mail::normalize_domain(rq.from_domain);
    if (o.from_domain.empty() || mail::check_domain(o.from_domain, {.utf8 = true})) {
        o.reason = "no single From: domain to check";
        st.done = std::move(o);
        return st;
    }
    const std::string org = organizational_domain(o.from_domain);
    const dns_query at_from{rrtype::txt, "_dmarc." + o.from_domain};
    const dns_query at_org{rrtype::txt, "_dmarc." + org};
    const dns_answer* af = answers.find(rrtype::txt, at_from.name);
    if (!af) {
        st.need.push_back(at_from);
        if (org != o.from_domain && !answers.find(rrtype::txt, at_org.name))
            st.need.push_back(at_org);  // asked at once: most mail comes from organisational domains' subdomains
        return st;
    }
    std::string why;
    if (af->status == dns_status::temporary) {
        o.res = result::temperror;
        o.reason = "policy lookup failed: " + af->error;
        st.done = std::move(o);
        return st;
    }
    found f = af->status == dns_status::ok ? pick(*af, o.rec, why) : found::none;
    if (f == found::several) {
        o.reason = "several DMARC records at _dmarc." + o.from_domain;
        st.done = std::move(o);
        return st;
    }
    if (f == found::one) {
        o.policy_domain = o.from_domain;
    } else if (org != o.from_domain) {
        const dns_answer* ao = answers.find(rrtype::txt, at_org.name);
        if (!ao) {
            st.need.push_back(at_org);
            return st;
        }
        if (ao->status == dns_status::temporary) {
            o.res = result::temperror;
            o.reason = "policy lookup failed: " + ao->error;
            st.done = std::move(o);
            return st;
        }
        f = ao->status == dns_status::ok ? pick(*ao, o.rec, why) : found::none;
        if (f == found::one)
            o.policy_domain = org;
    }
    if (f != found::one) {
        o.reason = f == found::several ? "several DMARC records at _dmarc." + org
                   : why.empty()       ? "no DMARC record"
                                       : why;
        st.done = std::move(o);
        return st;
    }
    const record& r = *o.rec;
    // Alignment (RFC 7489 3.1): SPF's domain, each passing signature's d=.
    if (rq.spf && rq.spf->res == spf::result::pass && aligned(rq.spf->domain, o.from_domain, r.strict_spf))
        o.spf_aligned = true;
    if (rq.dkim)
        for (const auto& v : *rq.dkim)
            if (v.res == dkim::result::pass && aligned(v.domain, o.from_domain, r.strict_dkim)) {
                o.dkim_aligned = true;
                o.dkim_domain = v.domain;
                break;
            }
    o.res = o.spf_aligned || o.dkim_aligned ? result::pass : result::fail;
    if (o.res == result::pass) {
        st.done = std::move(o);
        return st;
    }
    // Which of the record's policies: p= for the domain itself; for a
    // subdomain sp= (p= without it), or np= when it does not exist (no
    // A, AAAA or MX: DMARCbis).
    o.policy = r.p;
    if (o.policy_domain != o.from_domain) {
        o.policy = r.sp.value_or(r.p);
        if (r.np) {
            bool missing = false;
            for (rrtype t : {rrtype::a, rrtype::aaaa, rrtype::mx})
                if (!answers.find(t, o.from_domain))
                    st.need.push_back(dns_query{t, o.from_domain});
            if (!st.need.empty())
                return st;
            missing = true;
            for (rrtype t : {rrtype::a, rrtype::aaaa, rrtype::mx}) {
                const dns_answer* a = answers.find(t, o.from_domain);
                missing = missing && (a->status == dns_status::nxdomain || a->status == dns_status::nodata);
            }
            if (missing)
                o.policy = *r.np;
        }
    }
    // pct= (RFC 7489 6.6.4): outside the sample, one step milder.
    o.applied = o.policy;
    if (rq.sample >= r.pct)
        o.applied = o.policy == disposition::reject ? disposition::quarantine : disposition::none;
    o.reason = o.spf_aligned || o.dkim_aligned ? "" : "neither SPF nor DKIM passed aligned with the From: domain";
    st.done = std::move(o);
    return st;
}

}  // namespace rw::policy::dmarc
