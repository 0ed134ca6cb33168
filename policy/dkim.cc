// DKIM verification: tag lists, signatures, key records, and the checks
// (dkim.hh).
#include "policy/dkim.hh"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <charconv>
#include <unordered_map>

#include "mail/codec.hh"
#include "mail/domain.hh"
#include "policy/dkim_sign.hh"

namespace rw::policy::dkim {

std::string_view to_string(algorithm a) noexcept {
    switch (a) {
    case algorithm::rsa_sha256: return "rsa-sha256";
    case algorithm::ed25519_sha256: return "ed25519-sha256";
    case algorithm::rsa_sha1: return "rsa-sha1";
    }
    return "?";
}

std::string_view to_string(result r) noexcept {
    switch (r) {
    case result::none: return "none";
    case result::pass: return "pass";
    case result::fail: return "fail";
    case result::policy: return "policy";
    case result::neutral: return "neutral";
    case result::temperror: return "temperror";
    case result::permerror: return "permerror";
    }
    return "?";
}

namespace {

constexpr bool is_fws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view v) {
    while (!v.empty() && is_fws(v.front()))
        v.remove_prefix(1);
    while (!v.empty() && is_fws(v.back()))
        v.remove_suffix(1);
    return v;
}

std::string strip_fws(std::string_view v) {
    std::string o;
    for (char c : v)
        if (!is_fws(c))
            o += c;
    return o;
}

// Colon-separated list, each element trimmed.
std::vector<std::string_view> colon_list(std::string_view v) {
    std::vector<std::string_view> out;
    size_t pos = 0;
    for (;;) {
        size_t c = v.find(':', pos);
        out.push_back(trim(v.substr(pos, c == std::string_view::npos ? std::string_view::npos : c - pos)));
        if (c == std::string_view::npos)
            break;
        pos = c + 1;
    }
    return out;
}

std::optional<uint64_t> number(std::string_view v, size_t max_digits) {
    if (v.empty() || v.size() > max_digits)
        return std::nullopt;
    uint64_t n = 0;
    auto r = std::from_chars(v.data(), v.data() + v.size(), n);
    if (r.ec != std::errc() || r.ptr != v.data() + v.size())
        return std::nullopt;
    return n;
}

const tag* find(const std::vector<tag>& tags, std::string_view name) {
    for (const auto& t : tags)
        if (t.name == name)
            return &t;
    return nullptr;
}

}  // namespace

std::optional<std::vector<tag>> parse_tags(std::string_view text) {
    std::vector<tag> out;
    size_t i = 0;
    const size_t n = text.size();
    for (;;) {
        while (i < n && is_fws(text[i]))
            ++i;
        if (i == n)
            break;
        const size_t nb = i;
        if (!mail::is_alpha(uint8_t(text[i])))
            return std::nullopt;
        while (i < n && (mail::is_alpha(uint8_t(text[i])) || mail::is_digit(uint8_t(text[i])) || text[i] == '_'))
            ++i;
        std::string_view name = text.substr(nb, i - nb);
        while (i < n && is_fws(text[i]))
            ++i;
        if (i == n || text[i] != '=')
            return std::nullopt;
        ++i;
        const size_t vb = i;
        while (i < n && text[i] != ';') {
            const unsigned char c = uint8_t(text[i]);
            if (!is_fws(char(c)) && (c < 0x21 || c > 0x7e))
                return std::nullopt;
            ++i;
        }
        tag t;
        t.name = name;
        t.value_begin = vb;
        t.value_end = i;
        t.value = trim(text.substr(vb, i - vb));
        for (const auto& o : out)
            if (o.name == name)
                return std::nullopt;  // RFC 6376 3.2: a repeated tag is an error
        out.push_back(t);
        if (i < n)
            ++i;  // the ';'
    }
    return out;
}

std::optional<signature> parse_signature(std::string_view value, std::string& why) {
    auto tags = parse_tags(value);
    if (!tags) {
        why = "signature tag list syntax";
        return std::nullopt;
    }
    for (const char* req : {"v", "a", "b", "bh", "d", "h", "s"})
        if (!find(*tags, req)) {
            why = std::string("signature has no ") + req + "= tag";
            return std::nullopt;
        }
    signature s;
    if (find(*tags, "v")->value != "1") {
        why = "signature version is not 1";
        return std::nullopt;
    }
    const std::string_view a = find(*tags, "a")->value;
    if (a == "rsa-sha256")
        s.a = algorithm::rsa_sha256;
    else if (a == "ed25519-sha256")
        s.a = algorithm::ed25519_sha256;
    else if (a == "rsa-sha1")
        s.a = algorithm::rsa_sha1;
    else {
        why = "unknown signing algorithm " + std::string(a.substr(0, 32));
        return std::nullopt;
    }
    s.b_text = strip_fws(find(*tags, "b")->value);
    auto b = mail::base64_decode(s.b_text, mail::base64_mode::lenient);
    auto bh = mail::base64_decode(strip_fws(find(*tags, "bh")->value), mail::base64_mode::lenient);
    if (!b || !bh || b->empty() || bh->empty()) {
        why = "b= or bh= is not base64";
        return std::nullopt;
    }
    s.b = std::move(*b);
    s.bh = std::move(*bh);
    if (const tag* c = find(*tags, "c")) {
        auto parts = c->value;
        const size_t slash = parts.find('/');
        std::string_view hc = parts.substr(0, slash);
        std::string_view bc = slash == std::string_view::npos ? std::string_view("simple") : parts.substr(slash + 1);
        auto one = [](std::string_view v) -> std::optional<canon> {
            if (v == "simple")
                return canon::simple;
            if (v == "relaxed")
                return canon::relaxed;
            return std::nullopt;
        };
        auto h = one(hc), bo = one(bc);
        if (!h || !bo) {
            why = "unknown canonicalization " + std::string(parts.substr(0, 32));
            return std::nullopt;
        }
        s.header_canon = *h;
        s.body_canon = *bo;
    }
    s.d = mail::normalize_domain(find(*tags, "d")->value);
    if (const char* e = mail::check_domain(s.d, {.utf8 = false, .underscore = true})) {
        why = std::string("d= is not a domain: ") + e;
        return std::nullopt;
    }
    s.s = mail::lower_ascii(find(*tags, "s")->value);
    if (s.s.empty() || mail::check_domain(s.s, {.utf8 = false, .underscore = true})) {
        why = "s= is not a selector";
        return std::nullopt;
    }
    bool from = false;
    for (std::string_view h : colon_list(find(*tags, "h")->value)) {
        if (h.empty()) {
            why = "h= has an empty name";
            return std::nullopt;
        }
        from = from || mail::iequals(h, "from");
        s.h.emplace_back(h);
    }
    if (!from) {
        why = "h= does not include From";
        return std::nullopt;
    }
    if (const tag* i = find(*tags, "i")) {
        s.i = std::string(i->value);
        const size_t at = s.i.rfind('@');
        const std::string idom = at == std::string::npos ? "" : mail::normalize_domain(s.i.substr(at + 1));
        if (at == std::string::npos ||
            !(idom == s.d || (idom.size() > s.d.size() && idom.ends_with(s.d) && idom[idom.size() - s.d.size() - 1] == '.'))) {
            why = "i= is not within d=";
            return std::nullopt;
        }
    } else {
        s.i = "@" + s.d;
    }
    if (const tag* l = find(*tags, "l")) {
        s.l = number(l->value, 19);
        if (!s.l) {
            why = "l= is not a number";
            return std::nullopt;
        }
    }
    if (const tag* q = find(*tags, "q")) {
        bool dns = false;
        for (auto m : colon_list(q->value))
            dns = dns || m == "dns/txt";
        if (!dns) {
            why = "q= does not allow dns/txt";
            return std::nullopt;
        }
    }
    for (const char* tn : {"t", "x"}) {
        if (const tag* t = find(*tags, tn)) {
            auto v = number(t->value, 12);
            if (!v) {
                why = std::string(tn) + "= is not a time";
                return std::nullopt;
            }
            (tn[0] == 't' ? s.t : s.x) = int64_t(*v);
        }
    }
    if (s.t >= 0 && s.x >= 0 && s.x < s.t) {
        why = "x= is before t=";
        return std::nullopt;
    }
    return s;
}

std::optional<key> parse_key(std::string_view txt, std::string& why) {
    auto tags = parse_tags(txt);
    if (!tags) {
        why = "key record syntax";
        return std::nullopt;
    }
    key k;
    if (const tag* v = find(*tags, "v"); v && v->value != "DKIM1") {
        why = "key record version is not DKIM1";
        return std::nullopt;
    }
    if (const tag* t = find(*tags, "k")) {
        if (t->value == "ed25519")
            k.ed25519 = true;
        else if (t->value != "rsa") {
            why = "unknown key type " + std::string(t->value.substr(0, 32));
            return std::nullopt;
        }
    }
    if (const tag* h = find(*tags, "h")) {
        k.sha256 = k.sha1 = false;
        for (auto x : colon_list(h->value)) {
            k.sha256 = k.sha256 || x == "sha256";
            k.sha1 = k.sha1 || x == "sha1";
        }
    }
    if (const tag* s = find(*tags, "s")) {
        bool email = false;
        for (auto x : colon_list(s->value))
            email = email || x == "*" || x == "email";
        if (!email) {
            why = "key is not for email";
            return std::nullopt;
        }
    }
    if (const tag* t = find(*tags, "t"))
        for (auto x : colon_list(t->value)) {
            k.testing = k.testing || x == "y";
            k.strict = k.strict || x == "s";
        }
    const tag* p = find(*tags, "p");
    if (!p) {
        why = "key record has no p=";
        return std::nullopt;
    }
    const std::string pt = strip_fws(p->value);
    if (pt.empty()) {
        why = "key revoked (empty p=)";
        return std::nullopt;
    }
    auto pk = mail::base64_decode(pt, mail::base64_mode::lenient);
    if (!pk) {
        why = "p= is not base64";
        return std::nullopt;
    }
    k.p = std::move(*pk);
    return k;
}

dns_query key_query(const signature& s) { return dns_query{rrtype::txt, s.s + "._domainkey." + s.d}; }

verification::~verification() = default;

void verification::header_section(const std::vector<mail::header_field>& fields) {
    for (size_t idx = 0; idx < fields.size() && _sigs.size() < k_max_signatures; ++idx) {
        const mail::header_field& f = fields[idx];
        if (!mail::name_is(f, "DKIM-Signature"))
            continue;
        one o;
        o.field = idx;
        const std::string_view rv = f.raw_value();
        o.sig = parse_signature(rv, o.error);
        // Signatures that are never checked cost no body hash: rsa-sha1
        // fails as it is, and only the first max_signatures count.
        if (o.sig && o.sig->a != algorithm::rsa_sha1 && _sigs.size() < _o.max_signatures) {
            const signature& s = *o.sig;
            o.signed_data = signed_header_data(fields, s.h, s.header_canon == canon::relaxed, idx);
            // Then its own field with b='s value deleted, without the
            // final CRLF (RFC 6376 3.7).
            auto tags = parse_tags(rv);
            const tag* bt = nullptr;
            for (const auto& t : *tags)
                if (t.name == "b")
                    bt = &t;
            const size_t off = size_t(rv.data() - f.raw.data());
            std::string own = f.raw.substr(0, off + bt->value_begin) + f.raw.substr(off + bt->value_end);
            std::string c = canon_header(own, f.name_len, s.header_canon);
            c.resize(c.size() - 2);
            o.signed_data += c;
            const bool sha1 = s.a == algorithm::rsa_sha1;
            for (size_t h = 0; h < _hashers.size(); ++h)
                if (_hashers[h]->matches(s.body_canon, sha1, s.l))
                    o.hasher = int(h);
            if (o.hasher < 0) {
                o.hasher = int(_hashers.size());
                _hashers.push_back(std::make_unique<body_hasher>(s.body_canon, sha1, s.l));
            }
        }
        _sigs.push_back(std::move(o));
    }
}

void verification::body(std::string_view bytes) {
    for (auto& h : _hashers)
        h->feed(bytes);
}

void verification::end() {
    if (_ended)
        return;
    _ended = true;
    for (auto& h : _hashers) {
        _digests.push_back(h->finish());
        _lengths.push_back(h->canonical_bytes());
    }
    _hashers.clear();
}

namespace {

struct pkey_deleter {
    void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_deleter>;

// SHA-256 fetched once: an implicit fetch per use takes the provider
// store's locks each time (OpenSSL 3).
const EVP_MD* sha256() {
    static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA2-256", nullptr);
    return md ? md : EVP_sha256();
}

// A key record's public key, decoded. OpenSSL 3's decoders cost more than
// an RSA verification, so each thread keeps the keys it decoded, by their
// bytes (a changed record is a different key; the DNS cache decides how
// long a record is used).
std::shared_ptr<EVP_PKEY> decode_key(const key& k, std::string& why, result& failed);

}  // namespace

// Checks the signature; fills why when it does not verify.
result verify_data(const key& k, std::string_view data, std::string_view sigbytes, std::string& why) {
    result failed = result::permerror;
    std::shared_ptr<EVP_PKEY> pk = decode_key(k, why, failed);
    if (!pk)
        return failed;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    int ok = 0;
    const auto* sig = reinterpret_cast<const unsigned char*>(sigbytes.data());
    if (!ctx) {
        why = "out of memory";
        return result::temperror;
    }
    if (k.ed25519) {
        // RFC 8463 3: Ed25519 signs the SHA-256 hash of the header data.
        unsigned char d[32];
        unsigned n = 0;
        ok = EVP_Digest(data.data(), data.size(), d, &n, sha256(), nullptr) == 1 &&
             EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, pk.get()) == 1 &&
             EVP_DigestVerify(ctx, sig, sigbytes.size(), d, n) == 1;
    } else {
        ok = EVP_DigestVerifyInit(ctx, nullptr, sha256(), nullptr, pk.get()) == 1 &&
             EVP_DigestVerify(ctx, sig, sigbytes.size(), reinterpret_cast<const unsigned char*>(data.data()),
                              data.size()) == 1;
    }
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();  // a failed verification leaves its reasons queued
    if (!ok) {
        why = "signature did not verify";
        return result::fail;
    }
    return result::pass;
}

namespace {

std::shared_ptr<EVP_PKEY> decode_key(const key& k, std::string& why, result& failed) {
    constexpr size_t k_max_cached = 1024;
    thread_local std::unordered_map<std::string, std::shared_ptr<EVP_PKEY>> cache;
    const std::string id = (k.ed25519 ? "e" : "r") + k.p;
    if (auto it = cache.find(id); it != cache.end())
        return it->second;
    pkey_ptr pk;
    if (k.ed25519) {
        if (k.p.size() != 32) {
            why = "Ed25519 key is not 32 octets";
            return nullptr;
        }
        pk.reset(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                             reinterpret_cast<const unsigned char*>(k.p.data()), 32));
    } else {
        const unsigned char* const begin = reinterpret_cast<const unsigned char*>(k.p.data());
        const unsigned char* p = begin;
        pk.reset(d2i_PUBKEY(nullptr, &p, long(k.p.size())));
        if (!pk) {  // some publish the bare RSAPublicKey
            p = begin;
            pk.reset(d2i_PublicKey(EVP_PKEY_RSA, nullptr, &p, long(k.p.size())));
        }
        if (pk && p != begin + k.p.size())
            pk.reset();  // bytes after the key: not a key record we understand
        if (pk && EVP_PKEY_get_base_id(pk.get()) != EVP_PKEY_RSA)
            pk.reset();
    }
    if (!pk) {
        ERR_clear_error();
        why = "key data is not a public key";
        return nullptr;
    }
    if (!k.ed25519 && EVP_PKEY_get_bits(pk.get()) < 1024) {
        why = "RSA key of " + std::to_string(EVP_PKEY_get_bits(pk.get())) + " bits, under 1024 (RFC 8301)";
        failed = result::fail;
        return nullptr;
    }
    if (cache.size() >= k_max_cached)
        cache.clear();
    std::shared_ptr<EVP_PKEY> shared(pk.release(), [](EVP_PKEY* p) { EVP_PKEY_free(p); });
    cache.emplace(id, shared);
    return shared;
}

}  // namespace

step<std::vector<verdict>> verification::evaluate(const dns_answers& answers) const {
    step<std::vector<verdict>> st;
    std::vector<verdict> out;
    const size_t count = std::min<size_t>(_sigs.size(), _o.max_signatures);
    for (size_t n = 0; n < count; ++n) {
        const one& o = _sigs[n];
        verdict v;
        if (!o.sig) {
            v.res = result::permerror;
            v.reason = o.error;
            out.push_back(std::move(v));
            continue;
        }
        const signature& s = *o.sig;
        v.domain = s.d;
        v.selector = s.s;
        v.identity = s.i;
        v.a = s.a;
        v.b_prefix = s.b_text.substr(0, 8);
        if (s.a == algorithm::rsa_sha1) {
            v.res = result::fail;
            v.reason = "rsa-sha1 is not accepted (RFC 8301)";
        } else if (s.x >= 0 && _o.now > s.x) {
            v.res = result::fail;
            v.reason = "signature expired";
        } else if (const dns_answer* a = answers.find(rrtype::txt, key_query(s).name); !a) {
            st.need.push_back(key_query(s));
        } else if (a->status == dns_status::temporary) {
            v.res = result::temperror;
            v.reason = "key lookup failed: " + a->error;
        } else if (a->status != dns_status::ok || a->names.empty()) {
            v.res = result::permerror;
            v.reason = "no key for signature";
        } else {
            std::optional<key> k;
            std::string why;
            for (const std::string& rec : a->names)
                if ((k = parse_key(rec, why)))
                    break;
            const uint64_t body_len = size_t(o.hasher) < _lengths.size() ? _lengths[size_t(o.hasher)] : 0;
            if (!k) {
                v.res = result::permerror;
                v.reason = why;
            } else if (k->ed25519 != (s.a == algorithm::ed25519_sha256)) {
                v.res = result::permerror;
                v.reason = "key type does not match a=";
            } else if (!k->sha256) {
                v.res = result::permerror;
                v.reason = "key does not allow sha256";
            } else if (k->strict && mail::normalize_domain(s.i.substr(s.i.rfind('@') + 1)) != s.d) {
                v.res = result::permerror;
                v.reason = "key allows no subdomain in i= (t=s)";
            } else if (!_ended || size_t(o.hasher) >= _digests.size()) {
                v.res = result::temperror;
                v.reason = "the message did not end";
            } else if (s.l && *s.l > body_len) {
                v.res = result::permerror;
                v.reason = "l= is past the end of the body";
            } else if (_digests[size_t(o.hasher)] != s.bh) {
                v.res = result::fail;
                v.reason = "body hash did not verify";
            } else {
                v.res = verify_data(*k, o.signed_data, s.b, v.reason);
                v.testing = k->testing;
                if (v.res == result::pass && s.l && *s.l < body_len && !_o.trust_length_limit) {
                    v.res = result::policy;
                    v.reason = "l= leaves part of the body unsigned";
                }
            }
        }
        out.push_back(std::move(v));
    }
    if (!st.need.empty())
        return st;
    st.done = std::move(out);
    return st;
}

}  // namespace rw::policy::dkim
