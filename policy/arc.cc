// ARC: chain validation and sealing (arc.hh).
#include "policy/arc.hh"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "mail/codec.hh"
#include "mail/domain.hh"

namespace rw::policy::arc {

std::string_view to_string(result r) noexcept {
    switch (r) {
    case result::none: return "none";
    case result::pass: return "pass";
    case result::fail: return "fail";
    }
    return "?";
}

namespace {

const dkim::tag* get(const std::vector<dkim::tag>& tags, std::string_view name) {
    for (const auto& t : tags)
        if (t.name == name)
            return &t;
    return nullptr;
}

std::string strip_fws(std::string_view v) {
    std::string o;
    for (char c : v)
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
            o += c;
    return o;
}

// i= of an ARC header: 1..50, or 0.
unsigned instance_of(const mail::header_field& f) {
    std::string_view v = f.raw_value();
    std::optional<std::vector<dkim::tag>> tags;
    std::string_view iv;
    if (mail::name_is(f, "ARC-Authentication-Results")) {
        // "i=N; authserv-id; results": only the first element is a tag.
        const size_t semi = v.find(';');
        tags = dkim::parse_tags(v.substr(0, semi));
    } else {
        tags = dkim::parse_tags(v);
    }
    if (!tags)
        return 0;
    const dkim::tag* t = get(*tags, "i");
    if (!t)
        return 0;
    iv = t->value;
    unsigned n = 0;
    auto r = std::from_chars(iv.data(), iv.data() + iv.size(), n);
    if (r.ec != std::errc() || r.ptr != iv.data() + iv.size() || n < 1 || n > verification::k_max_instances)
        return 0;
    return n;
}

// The field with its b= value deleted, canonicalized relaxed, without the
// final CRLF (RFC 6376 3.7, RFC 8617 4.1.3).
std::string own_data(const mail::header_field& f, bool relaxed) {
    const std::string_view rv = f.raw_value();
    auto tags = dkim::parse_tags(rv);
    const dkim::tag* b = tags ? get(*tags, "b") : nullptr;
    std::string own = f.raw;
    if (b) {
        const size_t off = size_t(rv.data() - f.raw.data());
        own = f.raw.substr(0, off + b->value_begin) + f.raw.substr(off + b->value_end);
    }
    std::string c = dkim::canon_header(own, f.name_len, relaxed ? dkim::canon::relaxed : dkim::canon::simple);
    c.resize(c.size() - 2);
    return c;
}

std::string relaxed(const mail::header_field& f) {
    return dkim::canon_header(f.raw, f.name_len, dkim::canon::relaxed);
}

struct sig_facts {
    std::string d, s, b;
    bool ed25519 = false;
    bool sha1 = false;
};

std::optional<sig_facts> sig_of(const mail::header_field& f, std::string& why) {
    auto tags = dkim::parse_tags(f.raw_value());
    if (!tags) {
        why = std::string(f.name()) + ": tag list syntax";
        return std::nullopt;
    }
    sig_facts s;
    const dkim::tag *a = get(*tags, "a"), *d = get(*tags, "d"), *sel = get(*tags, "s"), *b = get(*tags, "b");
    if (!a || !d || !sel || !b) {
        why = std::string(f.name()) + ": a=, b=, d= or s= missing";
        return std::nullopt;
    }
    if (a->value == "ed25519-sha256")
        s.ed25519 = true;
    else if (a->value == "rsa-sha1")
        s.sha1 = true;
    else if (a->value != "rsa-sha256") {
        why = std::string(f.name()) + ": unknown algorithm";
        return std::nullopt;
    }
    s.d = mail::normalize_domain(d->value);
    s.s = mail::lower_ascii(sel->value);
    auto bytes = mail::base64_decode(strip_fws(b->value), mail::base64_mode::lenient);
    if (!bytes || bytes->empty() || mail::check_domain(s.d, {.utf8 = false, .underscore = true}) ||
        mail::check_domain(s.s, {.utf8 = false, .underscore = true})) {
        why = std::string(f.name()) + ": b=, d= or s= is malformed";
        return std::nullopt;
    }
    s.b = std::move(*bytes);
    return s;
}

}  // namespace

verification::~verification() = default;

void verification::header_section(const std::vector<mail::header_field>& fields) {
    _fields = fields;
    std::vector<set> sets(k_max_instances);
    unsigned count = 0;
    for (const auto& f : _fields) {
        const bool aar = mail::name_is(f, "ARC-Authentication-Results"), ams = mail::name_is(f, "ARC-Message-Signature"),
                   as = mail::name_is(f, "ARC-Seal");
        if (!aar && !ams && !as)
            continue;
        ++count;
        const unsigned i = instance_of(f);
        if (i == 0) {
            _structure = fmt::format("{} without a valid i= (1..{})", f.name(), k_max_instances);
            continue;
        }
        const mail::header_field*& slot = aar ? sets[i - 1].aar : ams ? sets[i - 1].ams : sets[i - 1].as;
        if (slot)
            _structure = fmt::format("two {} headers for instance {}", f.name(), i);
        slot = &f;
        _n = std::max(_n, i);
    }
    if (count == 0)
        return;
    for (unsigned i = 1; i <= _n && _structure.empty(); ++i)
        if (!sets[i - 1].aar || !sets[i - 1].ams || !sets[i - 1].as)
            _structure = fmt::format("instance {} lacks one of its three ARC headers", i);
    sets.resize(_n);
    _sets = std::move(sets);
    if (!_structure.empty())
        return;
    for (unsigned i = 1; i <= _n && _structure.empty(); ++i) {
        auto tags = dkim::parse_tags(_sets[i - 1].as->raw_value());
        const dkim::tag* cv = tags ? get(*tags, "cv") : nullptr;
        const std::string_view want = i == 1 ? "none" : "pass";
        if (!cv || cv->value != want)
            _structure = cv && cv->value == "fail" ? fmt::format("the seal of instance {} says the chain failed", i)
                                                   : fmt::format("instance {} has cv={}, not {}", i,
                                                                 cv ? std::string(cv->value.substr(0, 8)) : "", want);
    }
    if (!_structure.empty())
        return;
    // The newest AMS: a DKIM signature without v= whose i= is its instance.
    const mail::header_field& ams = *_sets[_n - 1].ams;
    auto tags = dkim::parse_tags(ams.raw_value());
    std::string value = "v=1";
    for (const auto& t : *tags)
        if (t.name != "i" && t.name != "v")
            value += fmt::format("; {}={}", t.name, t.value);
    std::string why;
    _ams = dkim::parse_signature(value, why);
    if (!_ams) {
        _structure = "ARC-Message-Signature: " + why;
        return;
    }
    if (_ams->a == dkim::algorithm::rsa_sha1) {
        _structure = "ARC-Message-Signature: rsa-sha1 is not accepted";
        _ams.reset();
        return;
    }
    // Its own field and every ARC-Seal are never among what it signs.
    const size_t own = size_t(&ams - _fields.data());
    _ams_data = dkim::signed_header_data(_fields, _ams->h, _ams->header_canon == dkim::canon::relaxed, own) +
                own_data(ams, _ams->header_canon == dkim::canon::relaxed);
    _hasher = std::make_unique<dkim::body_hasher>(_ams->body_canon, false, _ams->l);
}

void verification::body(std::string_view bytes) {
    if (_hasher)
        _hasher->feed(bytes);
}

void verification::end() {
    if (_hasher)
        _body_hash = _hasher->finish();
    _hasher.reset();
}

step<outcome> verification::evaluate(const dns_answers& answers) const {
    step<outcome> st;
    outcome o;
    o.instances = _n;
    if (_n == 0 && _structure.empty()) {
        st.done = o;
        return st;
    }
    o.res = result::fail;
    if (!_structure.empty() || !_ams) {
        o.reason = _structure.empty() ? "no usable ARC-Message-Signature" : _structure;
        st.done = o;
        return st;
    }
    o.ams_domain = _ams->d;
    // Every key at once: the newest AMS's and each seal's.
    std::vector<std::pair<const mail::header_field*, sig_facts>> seals;
    for (unsigned i = 1; i <= _n; ++i) {
        std::string why;
        auto s = sig_of(*_sets[i - 1].as, why);
        if (!s) {
            o.reason = why;
            st.done = o;
            return st;
        }
        seals.emplace_back(_sets[i - 1].as, std::move(*s));
    }
    o.sealer = seals.back().second.d;
    auto need = [&](const std::string& sel, const std::string& d) {
        const dns_query q{rrtype::txt, sel + "._domainkey." + d};
        if (!answers.find(q.type, q.name) &&
            std::find(st.need.begin(), st.need.end(), q) == st.need.end())
            st.need.push_back(q);
    };
    need(_ams->s, _ams->d);
    for (const auto& [f, s] : seals)
        need(s.s, s.d);
    if (!st.need.empty())
        return st;
    auto key_for = [&](const std::string& sel, const std::string& d, bool ed, std::string& why) -> std::optional<dkim::key> {
        const dns_answer* a = answers.find(rrtype::txt, sel + "._domainkey." + d);
        if (!a || a->status != dns_status::ok || a->names.empty()) {
            why = fmt::format("no key at {}._domainkey.{}", sel, d);
            return std::nullopt;
        }
        for (const auto& rec : a->names)
            if (auto k = dkim::parse_key(rec, why); k && k->ed25519 == ed)
                return k;
        if (why.empty())
            why = "key type does not match a=";
        return std::nullopt;
    };
    // The newest AMS (RFC 8617 5.2 step 3).
    {
        std::string why;
        auto k = key_for(_ams->s, _ams->d, _ams->a == dkim::algorithm::ed25519_sha256, why);
        if (!k) {
            o.reason = "ARC-Message-Signature: " + why;
            st.done = o;
            return st;
        }
        if (_body_hash != _ams->bh) {
            o.reason = fmt::format("ARC-Message-Signature of instance {}: body hash did not verify", _n);
            st.done = o;
            return st;
        }
        if (dkim::verify_data(*k, _ams_data, _ams->b, why) != dkim::result::pass) {
            o.reason = fmt::format("ARC-Message-Signature of instance {}: {}", _n, why);
            st.done = o;
            return st;
        }
    }
    // Every seal, newest first (5.2 step 6): each covers the sets up to
    // its own, oldest first, itself with b= deleted.
    for (unsigned i = _n; i >= 1; --i) {
        const sig_facts& s = seals[i - 1].second;
        if (s.sha1) {
            o.reason = fmt::format("ARC-Seal of instance {}: rsa-sha1 is not accepted", i);
            st.done = o;
            return st;
        }
        std::string data;
        for (unsigned j = 1; j <= i; ++j) {
            data += relaxed(*_sets[j - 1].aar) + relaxed(*_sets[j - 1].ams);
            data += j == i ? own_data(*_sets[j - 1].as, true) : relaxed(*_sets[j - 1].as);
        }
        std::string why;
        auto k = key_for(s.s, s.d, s.ed25519, why);
        if (!k || dkim::verify_data(*k, data, s.b, why) != dkim::result::pass) {
            o.reason = fmt::format("ARC-Seal of instance {}: {}", i, why);
            st.done = o;
            return st;
        }
    }
    o.res = result::pass;
    st.done = o;
    return st;
}

rw::result<std::string, std::string> seal(const std::vector<mail::header_field>& fields, std::string_view body_hash,
                                          const outcome& chain, std::string_view results, const dkim::signing_key& key,
                                          const seal_options& o) {
    if (chain.res == result::fail)
        return unexpected(std::string("the chain failed: not sealed"));
    const unsigned i = chain.instances + 1;
    if (i > verification::k_max_instances)
        return unexpected(std::string("the chain is at its 50 instances"));
    const char* a = key.ed25519 ? "ed25519-sha256" : "rsa-sha256";
    const std::string aar = fmt::format("ARC-Authentication-Results: i={}; {}\r\n", i, results);
    // The message signature: the listed fields (never ARC's own).
    std::vector<std::string> names;
    for (const auto& h : o.headers)
        if (!mail::iequals(h.substr(0, 4), "arc-"))
            for (const auto& f : fields)
                if (mail::iequals(f.name(), h)) {
                    names.push_back(mail::lower_ascii(h));
                    break;
                }
    std::string hl;
    for (const auto& n : names)
        hl += (hl.empty() ? "" : ":") + n;
    std::string ams = fmt::format(
        "ARC-Message-Signature: i={}; a={}; c=relaxed/relaxed; d={}; s={};\r\n\tt={}; h={};\r\n\tbh={};\r\n\tb=", i, a,
        key.domain, key.selector, o.now, hl, mail::base64_encode(body_hash));
    std::string c = dkim::canon_header(ams, 21, dkim::canon::relaxed);
    c.resize(c.size() - 2);
    auto sign_one = [&](const std::string& data) -> std::optional<std::string> {
        auto sig = dkim::sign_raw(key, data);
        if (!sig)
            return std::nullopt;
        std::string b = mail::base64_encode(*sig), out;
        for (size_t k = 0; k < b.size(); k += 72)
            out += (k ? "\r\n\t " : "") + b.substr(k, 72);
        return out;
    };
    auto ams_b = sign_one(dkim::signed_header_data(fields, names, true) + c);
    if (!ams_b)
        return unexpected(std::string("signing the ARC-Message-Signature failed"));
    ams += *ams_b + "\r\n";
    std::string as = fmt::format("ARC-Seal: i={}; a={}; cv={}; d={}; s={};\r\n\tt={}; b=", i, a,
                                 i == 1 ? "none" : "pass", key.domain, key.selector, o.now);
    // What the seal covers: every earlier set, oldest first, then ours.
    std::string data;
    for (unsigned j = 1; j < i; ++j) {
        const mail::header_field *faar = nullptr, *fams = nullptr, *fas = nullptr;
        for (const auto& f : fields) {
            if (instance_of(f) != j)
                continue;
            if (mail::name_is(f, "ARC-Authentication-Results"))
                faar = &f;
            else if (mail::name_is(f, "ARC-Message-Signature"))
                fams = &f;
            else if (mail::name_is(f, "ARC-Seal"))
                fas = &f;
        }
        if (!faar || !fams || !fas)
            return unexpected(fmt::format("instance {} of the chain is incomplete", j));
        data += relaxed(*faar) + relaxed(*fams) + relaxed(*fas);
    }
    data += dkim::canon_header(aar, 26, dkim::canon::relaxed) + dkim::canon_header(ams, 21, dkim::canon::relaxed);
    std::string own = dkim::canon_header(as, 8, dkim::canon::relaxed);
    own.resize(own.size() - 2);
    auto as_b = sign_one(data + own);
    if (!as_b)
        return unexpected(std::string("signing the ARC-Seal failed"));
    as += *as_b + "\r\n";
    return as + ams + aar;
}

}  // namespace rw::policy::arc
