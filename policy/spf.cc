#include "policy/spf.hh"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "mail/domain.hh"
#include "policy/cidr.hh"

namespace rw::policy::spf {

std::string_view to_string(result r) noexcept {
    switch (r) {
    case result::none: return "none";
    case result::neutral: return "neutral";
    case result::pass: return "pass";
    case result::fail: return "fail";
    case result::softfail: return "softfail";
    case result::temperror: return "temperror";
    case result::permerror: return "permerror";
    }
    return "?";
}

namespace {

using mail::is_alpha;
using mail::is_digit;
using mail::lower;

constexpr size_t k_max_record = 4096;   // longer than any sane record: 450 octets is advised (3.4)
constexpr size_t k_max_expansion = 2048; // a macro expansion is cut off here
constexpr unsigned k_max_depth = 32;     // include/redirect nesting, beyond the term limit

enum class mech { all, include, a, mx, ptr, ip4, ip6, exists };

struct term {
    std::string text;    // as written, for reporting
    char qualifier = '+';
    mech m = mech::all;
    std::string spec;    // domain-spec (empty: the current domain)
    int cidr4 = 32, cidr6 = 128;
    canonical_ip net;    // ip4/ip6
};

struct record {
    std::vector<term> terms;
    std::optional<std::string> redirect, exp;
};

// ---- syntax ----

bool is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }
bool is_delimiter(char c) { return c == '.' || c == '-' || c == '+' || c == ',' || c == '/' || c == '_' || c == '='; }

// A CIDR length: "0" or a number without leading zero, at most max.
bool parse_len(std::string_view s, int max, int& out) {
    if (s.empty() || s.size() > 3 || (s.size() > 1 && s[0] == '0'))
        return false;
    int v = 0;
    for (char c : s) {
        if (!is_digit(uint8_t(c)))
            return false;
        v = v * 10 + (c - '0');
    }
    if (v > max)
        return false;
    out = v;
    return true;
}

// Walks a macro-string (7.1); calls lit(text) for literal runs and
// mac(letter, digits, reverse, delimiters) for each %{...}. Returns false on
// a syntax error. exp_letters allows c, r and t (explanation text only).
template <typename Lit, typename Mac>
bool walk_macros(std::string_view s, bool exp_letters, Lit&& lit, Mac&& mac) {
    size_t i = 0;
    while (i < s.size()) {
        const char c = s[i];
        if (c != '%') {
            const auto u = uint8_t(c);
            if (u < 0x21 || u > 0x7e)
                if (!(exp_letters && u == ' '))
                    return false;
            size_t j = s.find('%', i);
            if (j == std::string_view::npos)
                j = s.size();
            std::string_view run = s.substr(i, j - i);
            for (char x : run) {
                const auto v = uint8_t(x);
                if ((v < 0x21 || v > 0x7e) && !(exp_letters && v == ' '))
                    return false;
            }
            lit(run);
            i = j;
            continue;
        }
        if (i + 1 >= s.size())
            return false;
        const char n = s[i + 1];
        if (n == '%') { lit("%"); i += 2; continue; }
        if (n == '_') { lit(" "); i += 2; continue; }
        if (n == '-') { lit("%20"); i += 2; continue; }
        if (n != '{')
            return false;
        size_t j = i + 2;
        if (j >= s.size())
            return false;
        const char letter = s[j++];
        const char ll = lower(letter);
        if (std::string_view("slodiphv").find(ll) == std::string_view::npos &&
            !(exp_letters && std::string_view("crt").find(ll) != std::string_view::npos))
            return false;
        unsigned digits = 0;
        bool have_digits = false;
        while (j < s.size() && is_digit(uint8_t(s[j]))) {
            have_digits = true;
            digits = std::min<unsigned>(digits * 10 + unsigned(s[j] - '0'), 1000);
            ++j;
        }
        if (have_digits && digits == 0)
            return false;  // 7.1: the value MUST be at least one
        bool reverse = false;
        if (j < s.size() && lower(s[j]) == 'r') {
            reverse = true;
            ++j;
        }
        size_t d0 = j;
        while (j < s.size() && is_delimiter(s[j]))
            ++j;
        if (j >= s.size() || s[j] != '}')
            return false;
        if (!mac(letter, have_digits ? digits : 0u, reverse, s.substr(d0, j - d0)))
            return false;
        i = j + 1;
    }
    return true;
}

bool macro_string_ok(std::string_view s, bool exp_letters) {
    return walk_macros(s, exp_letters, [](std::string_view) {}, [](char, unsigned, bool, std::string_view) { return true; });
}

// toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
bool is_toplabel(std::string_view l) {
    if (l.empty())
        return false;
    bool alpha = false;
    for (char c : l) {
        if (!is_alnum(uint8_t(c)) && c != '-')
            return false;
        alpha = alpha || is_alpha(uint8_t(c));
    }
    if (l.find('-') == std::string_view::npos)
        return alpha;
    return is_alnum(uint8_t(l.front())) && is_alnum(uint8_t(l.back()));
}

// domain-spec = macro-string domain-end;
// domain-end = ( "." toplabel [ "." ] ) / macro-expand
bool domain_spec_ok(std::string_view s) {
    if (s.empty() || !macro_string_ok(s, false))
        return false;
    if (s.back() == '}') {
        // Ends with a %{...}: find its start (the last "%{" that is not "%%{").
        size_t p = s.rfind("%{");
        if (p != std::string_view::npos) {
            size_t pct = 0;
            for (size_t k = p; k > 0 && s[k - 1] == '%'; --k)
                ++pct;
            if (pct % 2 == 0)
                return true;
        }
    }
    if (s.size() >= 2 && s[s.size() - 2] == '%' && (s.back() == '%' || s.back() == '_' || s.back() == '-')) {
        size_t pct = 0;
        for (size_t k = s.size() - 1; k > 0 && s[k - 1] == '%'; --k)
            ++pct;
        if (pct % 2 == 1)
            return true;
    }
    std::string_view t = s;
    if (t.back() == '.')
        t.remove_suffix(1);
    size_t dot = t.rfind('.');
    if (dot == std::string_view::npos)
        return false;
    return is_toplabel(t.substr(dot + 1));
}

bool parse_ip4(std::string_view s, canonical_ip& out) {
    // Dotted quad only (RFC 7208 ip4-network): four decimal octets.
    int parts = 0;
    size_t i = 0;
    out = {};
    out.family = 4;
    while (parts < 4) {
        size_t j = i;
        unsigned v = 0;
        while (j < s.size() && is_digit(uint8_t(s[j])) && j - i < 4) {
            v = v * 10 + unsigned(s[j] - '0');
            ++j;
        }
        if (j == i || j - i > 3 || v > 255 || (j - i > 1 && s[i] == '0'))
            return false;
        out.bytes[size_t(parts++)] = uint8_t(v);
        if (parts < 4) {
            if (j >= s.size() || s[j] != '.')
                return false;
            i = j + 1;
        } else if (j != s.size()) {
            return false;
        }
    }
    return true;
}

bool parse_ip6(std::string_view s, canonical_ip& out) {
    if (s.empty() || s.size() > 45)
        return false;
    std::string z(s);
    in6_addr a{};
    if (inet_pton(AF_INET6, z.c_str(), &a) != 1)
        return false;
    out = {};
    out.family = 6;
    std::memcpy(out.bytes.data(), &a, 16);
    return true;
}

// Splits "rest" of an a/mx term into domain-spec and dual-cidr-length.
bool split_dual_cidr(std::string_view rest, std::string_view& spec, int& c4, int& c6) {
    // From the end: [ "/" ip4-len ] [ "//" ip6-len ]
    auto tail_number = [](std::string_view s, size_t& start) {
        size_t k = s.size();
        while (k > 0 && is_digit(uint8_t(s[k - 1])))
            --k;
        start = k;
        return k < s.size() && k > 0 && s[k - 1] == '/';
    };
    size_t k = 0;
    if (tail_number(rest, k)) {
        std::string_view num = rest.substr(k);
        if (k >= 2 && rest[k - 2] == '/') {
            if (!parse_len(num, 128, c6))
                return false;
            rest = rest.substr(0, k - 2);
            if (tail_number(rest, k)) {
                if (!parse_len(rest.substr(k), 32, c4))
                    return false;
                rest = rest.substr(0, k - 1);
            }
        } else {
            if (!parse_len(num, 32, c4))
                return false;
            rest = rest.substr(0, k - 1);
        }
    }
    if (!rest.empty() && rest.back() == '/')
        return false;
    spec = rest;
    return true;
}

// Parses the terms after "v=spf1". The whole record is checked before any
// term is evaluated (4.6): one error anywhere is a permerror.
std::optional<std::string> parse(std::string_view text, record& out) {
    size_t i = 0;
    while (i < text.size()) {
        if (text[i] == ' ') {
            ++i;
            continue;
        }
        size_t j = text.find(' ', i);
        if (j == std::string_view::npos)
            j = text.size();
        std::string_view tok = text.substr(i, j - i);
        i = j;
        for (char c : tok)
            if (uint8_t(c) < 0x21 || uint8_t(c) > 0x7e)
                return fmt::format("'{}': a character outside printable ASCII", tok);

        // A modifier: name "=" ..., name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
        const size_t eq = tok.find('=');
        const size_t sep = tok.find_first_of(":/");
        if (eq != std::string_view::npos && (sep == std::string_view::npos || eq < sep)) {
            std::string_view name = tok.substr(0, eq), value = tok.substr(eq + 1);
            bool name_ok = !name.empty() && is_alpha(uint8_t(name[0]));
            for (char c : name)
                name_ok = name_ok && (is_alnum(uint8_t(c)) || c == '-' || c == '_' || c == '.');
            if (!name_ok)
                return fmt::format("'{}': not a valid modifier name", tok);
            if (mail::iequals(name, "redirect") || mail::iequals(name, "exp")) {
                auto& slot = mail::iequals(name, "redirect") ? out.redirect : out.exp;
                if (slot)
                    return fmt::format("'{}' appears twice", mail::lower_ascii(name));
                if (!domain_spec_ok(value))
                    return fmt::format("'{}': not a valid domain-spec", tok);
                slot = std::string(value);
            } else if (!macro_string_ok(value, false)) {
                return fmt::format("'{}': not a valid macro-string", tok);
            }
            continue;
        }

        term t;
        t.text = std::string(tok);
        if (tok[0] == '+' || tok[0] == '-' || tok[0] == '~' || tok[0] == '?') {
            t.qualifier = tok[0];
            tok.remove_prefix(1);
        }
        size_t ne = tok.find_first_of(":/");
        std::string_view name = tok.substr(0, ne == std::string_view::npos ? tok.size() : ne);
        std::string_view rest = ne == std::string_view::npos ? std::string_view() : tok.substr(ne);
        auto need_spec = [&](std::string_view r) -> bool {
            if (r.size() < 2 || r[0] != ':')
                return false;
            t.spec = std::string(r.substr(1));
            return domain_spec_ok(t.spec);
        };
        if (mail::iequals(name, "all")) {
            t.m = mech::all;
            if (!rest.empty())
                return fmt::format("'{}': all takes no argument", t.text);
        } else if (mail::iequals(name, "include") || mail::iequals(name, "exists")) {
            t.m = mail::iequals(name, "include") ? mech::include : mech::exists;
            if (!need_spec(rest))
                return fmt::format("'{}': needs a valid domain-spec", t.text);
        } else if (mail::iequals(name, "a") || mail::iequals(name, "mx")) {
            t.m = mail::iequals(name, "a") ? mech::a : mech::mx;
            std::string_view spec;
            if (!split_dual_cidr(rest, spec, t.cidr4, t.cidr6))
                return fmt::format("'{}': bad CIDR length", t.text);
            if (!spec.empty() && !need_spec(spec))
                return fmt::format("'{}': not a valid domain-spec", t.text);
        } else if (mail::iequals(name, "ptr")) {
            t.m = mech::ptr;
            if (!rest.empty() && !need_spec(rest))
                return fmt::format("'{}': not a valid domain-spec", t.text);
        } else if (mail::iequals(name, "ip4") || mail::iequals(name, "ip6")) {
            const bool v6 = mail::iequals(name, "ip6");
            t.m = v6 ? mech::ip6 : mech::ip4;
            if (rest.size() < 2 || rest[0] != ':')
                return fmt::format("'{}': needs an address", t.text);
            std::string_view a = rest.substr(1);
            int len = v6 ? 128 : 32;
            if (size_t sl = a.find('/'); sl != std::string_view::npos) {
                if (!parse_len(a.substr(sl + 1), len, len))
                    return fmt::format("'{}': bad CIDR length", t.text);
                a = a.substr(0, sl);
            }
            if (!(v6 ? parse_ip6(a, t.net) : parse_ip4(a, t.net)))
                return fmt::format("'{}': not an {} address", t.text, v6 ? "IPv6" : "IPv4");
            (v6 ? t.cidr6 : t.cidr4) = len;
        } else {
            return fmt::format("'{}': unknown mechanism", t.text);
        }
        out.terms.push_back(std::move(t));
    }
    return std::nullopt;
}

// "v=spf1" then a space or the end (4.5), case-insensitively.
bool is_spf1(std::string_view r) {
    return r.size() >= 6 && mail::iequals(r.substr(0, 6), "v=spf1") && (r.size() == 6 || r[6] == ' ');
}

// Whether a name can be asked in DNS: labels of 1..63 octets (any octets:
// a domain-spec may hold any visible character but '%', 7.1), at most 253
// octets in all, and more than one label.
bool askable(std::string_view d) {
    if (d.empty() || d.size() > 253 || d.find('.') == std::string_view::npos)
        return false;
    size_t start = 0;
    for (;;) {
        size_t dot = d.find('.', start);
        size_t len = (dot == std::string_view::npos ? d.size() : dot) - start;
        if (len == 0 || len > 63)
            return false;
        if (dot == std::string_view::npos)
            return true;
        start = dot + 1;
    }
}

// 7.3: an expanded name over 253 octets loses labels from the left.
std::string truncate_name(std::string d) {
    if (!d.empty() && d.back() == '.')
        d.pop_back();
    while (d.size() > 253) {
        size_t dot = d.find('.');
        if (dot == std::string::npos)
            break;
        d.erase(0, dot + 1);
    }
    return d;
}

bool prefix_match(const canonical_ip& ip, const canonical_ip& net, int len) {
    if (ip.family != net.family)
        return false;
    const int full = len / 8, bits = len % 8;
    if (std::memcmp(ip.bytes.data(), net.bytes.data(), size_t(full)) != 0)
        return false;
    if (bits == 0)
        return true;
    const uint8_t mask = uint8_t(0xff << (8 - bits));
    return (ip.bytes[size_t(full)] & mask) == (net.bytes[size_t(full)] & mask);
}

// The dot-format of an IPv6 address (7.3), upper-case hex as in the
// RFC's examples ("1.0.B.C.0.0..."); DNS compares names without case.
std::string hex_nibbles(const canonical_ip& ip, bool reverse) {
    static constexpr char hx[] = "0123456789ABCDEF";
    std::string out;
    for (int k = 0; k < 32; ++k) {
        const int n = reverse ? 31 - k : k;
        const uint8_t b = ip.bytes[size_t(n / 2)];
        if (!out.empty())
            out += '.';
        out += hx[n % 2 == 0 ? b >> 4 : b & 0xf];
    }
    return out;
}

std::string url_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        const auto u = uint8_t(c);
        if (is_alnum(u) || c == '-' || c == '.' || c == '_' || c == '~')
            out += c;
        else
            out += fmt::format("%{:02X}", unsigned(u));
    }
    return out;
}

enum class ev { match, nomatch, pending, temperror, permerror };

class evaluator {
public:
    evaluator(const request& rq, const dns_answers& ans, const options& o) : _rq(rq), _ans(ans), _o(o) {
        _ip = canonicalize(rq.ip);
    }

    step<outcome> run();

private:
    struct host_result {
        std::optional<result> res;  // nullopt: pending
        std::string mechanism, explanation;
    };

    const dns_answer* get(rrtype t, std::string_view name);
    void prefetch(const record& rec, size_t from, std::string_view domain);
    host_result check_host(const std::string& domain, unsigned depth, bool want_exp);
    ev match(const term& t, const std::string& domain, unsigned depth);
    ev match_ptr(const std::string& target);
    // Expands a macro-string; nullopt with _pending set when %{p} waits for
    // DNS, or with _syntax set on an error.
    std::optional<std::string> expand(std::string_view s, const std::string& domain, bool exp_text);
    std::optional<std::string> target_of(const term& t, const std::string& domain);
    std::optional<std::string> validated_name(const std::string& domain);
    std::vector<std::string> validated_names(bool& pending);
    std::string explain(const record& rec, const std::string& domain, bool& pending);
    ev void_lookup();
    ev perm(std::string why) {
        if (_reason.empty())
            _reason = std::move(why);
        return ev::permerror;
    }
    ev temp(std::string why) {
        if (_reason.empty())
            _reason = std::move(why);
        return ev::temperror;
    }
    std::string reverse_name() const;
    rrtype addr_type() const { return _ip.family == 6 ? rrtype::aaaa : rrtype::a; }

    const request& _rq;
    const dns_answers& _ans;
    const options& _o;
    canonical_ip _ip;
    std::string _sender, _local, _sender_domain;
    std::vector<dns_query> _need;
    unsigned _terms = 0, _voids = 0;
    bool _pending = false;   // a needed answer is missing
    bool _syntax = false;    // a macro expansion failed
    std::string _reason;
};

const dns_answer* evaluator::get(rrtype t, std::string_view name) {
    if (const dns_answer* a = _ans.find(t, name))
        return a;
    dns_query q{t, mail::normalize_domain(name)};
    if (std::find(_need.begin(), _need.end(), q) == _need.end())
        _need.push_back(std::move(q));
    _pending = true;
    return nullptr;
}

std::string evaluator::reverse_name() const {
    if (_ip.family == 6)
        return hex_nibbles(_ip, true) + ".ip6.arpa";
    return fmt::format("{}.{}.{}.{}.in-addr.arpa", _ip.bytes[3], _ip.bytes[2], _ip.bytes[1], _ip.bytes[0]);
}

ev evaluator::void_lookup() {
    if (++_voids > _o.max_void_lookups)
        return perm(fmt::format("more than {} void DNS lookups (RFC 7208 4.6.4)", _o.max_void_lookups));
    return ev::nomatch;
}

std::vector<std::string> evaluator::validated_names(bool& pending) {
    std::vector<std::string> out;
    const dns_answer* p = get(rrtype::ptr, reverse_name());
    if (!p) {
        pending = true;
        return out;
    }
    if (p->status != dns_status::ok)
        return out;
    const size_t n = std::min<size_t>(p->names.size(), _o.max_mx_ptr_names);
    std::vector<const dns_answer*> addrs(n);
    for (size_t k = 0; k < n; ++k)
        if (!(addrs[k] = get(addr_type(), p->names[k])))
            pending = true;
    if (pending)
        return out;
    for (size_t k = 0; k < n; ++k) {
        if (addrs[k]->status != dns_status::ok)
            continue;  // 5.5: a name whose lookup fails is skipped
        for (const auto& a : addrs[k]->addrs)
            if (canonicalize(a) == _ip) {
                out.push_back(mail::normalize_domain(p->names[k]));
                break;
            }
    }
    return out;
}

std::optional<std::string> evaluator::validated_name(const std::string& domain) {
    bool pending = false;
    auto names = validated_names(pending);
    if (pending)
        return std::nullopt;
    const std::string d = mail::normalize_domain(domain);
    for (const auto& n : names)
        if (n == d)
            return n;
    for (const auto& n : names)
        if (n.size() > d.size() && n.ends_with(d) && n[n.size() - d.size() - 1] == '.')
            return n;
    return names.empty() ? std::string("unknown") : names.front();
}

std::optional<std::string> evaluator::expand(std::string_view s, const std::string& domain, bool exp_text) {
    std::string out;
    bool pending = false;
    bool ok = walk_macros(
        s, exp_text, [&](std::string_view lit) { out += lit; },
        [&](char letter, unsigned digits, bool reverse, std::string_view delims) {
            std::string v;
            switch (lower(letter)) {
            case 's': v = _sender; break;
            case 'l': v = _local; break;
            case 'o': v = _sender_domain; break;
            case 'd': v = domain; break;
            case 'i':
                v = _ip.family == 6 ? hex_nibbles(_ip, false)
                                    : fmt::format("{}.{}.{}.{}", _ip.bytes[0], _ip.bytes[1], _ip.bytes[2], _ip.bytes[3]);
                break;
            case 'p': {
                auto n = validated_name(domain);
                if (!n) {
                    pending = true;
                    return true;
                }
                v = *n;
                break;
            }
            case 'v': v = _ip.family == 6 ? "ip6" : "in-addr"; break;
            case 'h': v = _rq.helo; break;
            case 'c': {
                char buf[INET6_ADDRSTRLEN] = {};
                inet_ntop(_ip.family == 6 ? AF_INET6 : AF_INET, _ip.bytes.data(), buf, sizeof buf);
                v = buf;
                break;
            }
            case 'r': v = _rq.receiver.empty() ? std::string("unknown") : _rq.receiver; break;
            case 't': v = std::to_string(_rq.now); break;
            default: return false;
            }
            // Split on the delimiters, maybe reverse, keep the right-most
            // `digits` parts, join with dots (7.3).
            if (delims.empty())
                delims = ".";
            std::vector<std::string_view> parts;
            size_t a = 0;
            std::string_view sv(v);
            for (size_t k = 0; k <= sv.size(); ++k)
                if (k == sv.size() || delims.find(sv[k]) != std::string_view::npos) {
                    parts.push_back(sv.substr(a, k - a));
                    a = k + 1;
                }
            if (reverse)
                std::reverse(parts.begin(), parts.end());
            size_t first = digits && digits < parts.size() ? parts.size() - digits : 0;
            std::string joined;
            for (size_t k = first; k < parts.size(); ++k) {
                if (k > first)
                    joined += '.';
                joined += parts[k];
            }
            out += is_alpha(uint8_t(letter)) && letter >= 'A' && letter <= 'Z' ? url_escape(joined) : joined;
            return out.size() <= k_max_expansion;
        });
    if (!ok) {
        _syntax = true;
        return std::nullopt;
    }
    if (pending)
        return std::nullopt;
    return out;
}

// The domain a term names: its domain-spec expanded, or the current
// domain. A name over 253 octets loses labels from the left (7.3).
std::optional<std::string> evaluator::target_of(const term& t, const std::string& domain) {
    if (t.spec.empty())
        return domain;
    auto e = expand(t.spec, domain, false);
    if (!e)
        return std::nullopt;
    return truncate_name(std::move(*e));
}

void evaluator::prefetch(const record& rec, size_t from, std::string_view domain) {
    unsigned budget = _o.max_dns_terms > _terms ? _o.max_dns_terms - _terms : 0;
    const std::string d(domain);
    for (size_t k = from; k < rec.terms.size() && budget > 0; ++k) {
        const term& t = rec.terms[k];
        if (t.m == mech::all || t.m == mech::ip4 || t.m == mech::ip6 || t.m == mech::ptr)
            continue;
        --budget;
        if (t.spec.find("%{p") != std::string::npos || t.spec.find("%{P") != std::string::npos)
            continue;
        const bool was_pending = _pending;
        auto target = target_of(t, d);
        _syntax = false;
        _pending = was_pending;
        if (!target || !askable(*target))
            continue;
        rrtype type = t.m == mech::include ? rrtype::txt
                    : t.m == mech::mx      ? rrtype::mx
                    : t.m == mech::exists  ? rrtype::a
                                           : addr_type();
        get(type, *target);
    }
}

ev evaluator::match_ptr(const std::string& target) {
    bool pending = false;
    auto names = validated_names(pending);
    if (pending)
        return ev::pending;
    const dns_answer* p = _ans.find(rrtype::ptr, reverse_name());
    if (p && (p->status == dns_status::nxdomain || p->status == dns_status::nodata))
        if (void_lookup() == ev::permerror)
            return ev::permerror;
    const std::string t = mail::normalize_domain(target);
    for (const auto& n : names)
        if (n == t || (n.size() > t.size() && n.ends_with(t) && n[n.size() - t.size() - 1] == '.'))
            return ev::match;
    return ev::nomatch;
}

ev evaluator::match(const term& t, const std::string& domain, unsigned depth) {
    if (t.m == mech::all)
        return ev::match;
    if (t.m == mech::ip4 || t.m == mech::ip6)
        return prefix_match(_ip, t.net, t.m == mech::ip4 ? t.cidr4 : t.cidr6) ? ev::match : ev::nomatch;
    if (++_terms > _o.max_dns_terms)
        return perm(fmt::format("more than {} DNS-querying terms (RFC 7208 4.6.4)", _o.max_dns_terms));
    auto target = target_of(t, domain);
    if (!target)
        return _syntax ? perm(fmt::format("'{}': bad macro", t.text)) : ev::pending;
    // A name that cannot be asked matches nothing (like a name that does not exist).
    const bool can_ask = askable(*target);
    switch (t.m) {
    case mech::include: {
        if (!can_ask)
            return perm(fmt::format("'{}': include of '{}', which is not a domain", t.text, *target));
        host_result r = check_host(*target, depth + 1, false);
        if (!r.res)
            return ev::pending;
        switch (*r.res) {
        case result::pass: return ev::match;
        case result::fail:
        case result::softfail:
        case result::neutral: return ev::nomatch;
        case result::temperror: return ev::temperror;
        case result::none: return perm(fmt::format("'{}': {} has no SPF record", t.text, *target));
        case result::permerror: return ev::permerror;
        }
        return ev::permerror;
    }
    case mech::a:
    case mech::exists: {
        if (!can_ask)
            return void_lookup();
        const rrtype type = t.m == mech::exists ? rrtype::a : addr_type();
        const dns_answer* a = get(type, *target);
        if (!a)
            return ev::pending;
        if (a->status == dns_status::temporary)
            return temp(fmt::format("'{}': {}", t.text, a->error));
        if (a->status != dns_status::ok || a->addrs.empty())
            return void_lookup();
        if (t.m == mech::exists)
            return ev::match;
        for (const auto& x : a->addrs)
            if (prefix_match(_ip, canonicalize(x), _ip.family == 6 ? t.cidr6 : t.cidr4))
                return ev::match;
        return ev::nomatch;
    }
    case mech::mx: {
        if (!can_ask)
            return void_lookup();
        const dns_answer* m = get(rrtype::mx, *target);
        if (!m)
            return ev::pending;
        if (m->status == dns_status::temporary)
            return temp(fmt::format("'{}': {}", t.text, m->error));
        if (m->status != dns_status::ok || m->names.empty())
            return void_lookup();
        if (m->names.size() > _o.max_mx_ptr_names)
            return perm(fmt::format("'{}': more than {} MX records (RFC 7208 4.6.4)", t.text, _o.max_mx_ptr_names));
        std::vector<const dns_answer*> hosts;
        bool pending = false;
        for (const auto& h : m->names) {
            if (h.empty() || h == ".")
                continue;  // a null MX (RFC 7505)
            const dns_answer* a = get(addr_type(), h);
            pending = pending || !a;
            hosts.push_back(a);
        }
        if (pending)
            return ev::pending;
        for (const dns_answer* a : hosts) {
            if (a->status == dns_status::temporary)
                return temp(fmt::format("'{}': {}", t.text, a->error));
            if (a->status != dns_status::ok)
                continue;
            for (const auto& x : a->addrs)
                if (prefix_match(_ip, canonicalize(x), _ip.family == 6 ? t.cidr6 : t.cidr4))
                    return ev::match;
        }
        return ev::nomatch;
    }
    case mech::ptr:
        return match_ptr(*target);
    default:
        return ev::nomatch;
    }
}

std::string evaluator::explain(const record& rec, const std::string& domain, bool& pending) {
    auto fallback = [&] {
        auto e = expand(_o.default_explanation, domain, true);
        _syntax = false;
        return e ? *e : std::string();
    };
    if (!rec.exp)
        return fallback();
    auto target = expand(*rec.exp, domain, false);
    if (!target) {
        if (_syntax) {
            _syntax = false;
            return fallback();
        }
        pending = true;
        return {};
    }
    const std::string name = truncate_name(std::move(*target));
    if (!askable(name))
        return fallback();
    const dns_answer* a = get(rrtype::txt, name);
    if (!a) {
        pending = true;
        return {};
    }
    if (a->status != dns_status::ok || a->names.size() != 1)
        return fallback();  // 6.2: no record, several, or an error: the default
    const std::string& text = a->names.front();
    for (char c : text)
        if (uint8_t(c) > 0x7e || uint8_t(c) < 0x20)
            return fallback();
    auto e = expand(text, domain, true);
    if (!e) {
        if (_syntax) {
            _syntax = false;
            return fallback();
        }
        pending = true;
        return {};
    }
    return *e;
}

evaluator::host_result evaluator::check_host(const std::string& domain, unsigned depth, bool want_exp) {
    host_result hr;
    auto done = [&](result r) {
        hr.res = r;
        return hr;
    };
    if (depth > k_max_depth) {
        perm("include and redirect nest too deep");
        return done(result::permerror);
    }
    const dns_answer* a = get(rrtype::txt, domain);
    if (!a)
        return hr;
    if (a->status == dns_status::temporary) {
        temp(fmt::format("the SPF record of {}: {}", domain, a->error));
        return done(result::temperror);
    }
    if (a->status != dns_status::ok) {
        if (_reason.empty())
            _reason = fmt::format("{} has no SPF record", domain);
        return done(result::none);
    }
    const std::string* text = nullptr;
    for (const auto& r : a->names) {
        if (!is_spf1(r))
            continue;
        if (text) {
            perm(fmt::format("{} has more than one SPF record", domain));
            return done(result::permerror);
        }
        text = &r;
    }
    if (!text) {
        if (_reason.empty())
            _reason = fmt::format("{} has no SPF record", domain);
        return done(result::none);
    }
    if (text->size() > k_max_record) {
        perm(fmt::format("the SPF record of {} is over {} octets", domain, k_max_record));
        return done(result::permerror);
    }
    record rec;
    if (auto err = parse(std::string_view(*text).substr(6), rec)) {
        perm(fmt::format("the SPF record of {}: {}", domain, *err));
        return done(result::permerror);
    }
    for (size_t k = 0; k < rec.terms.size(); ++k) {
        const term& t = rec.terms[k];
        ev e = match(t, domain, depth);
        if (e == ev::pending) {
            prefetch(rec, k + 1, domain);
            return hr;
        }
        if (e == ev::permerror)
            return done(result::permerror);
        if (e == ev::temperror)
            return done(result::temperror);
        if (e != ev::match)
            continue;
        hr.mechanism = t.text;
        result r = t.qualifier == '-' ? result::fail
                 : t.qualifier == '~' ? result::softfail
                 : t.qualifier == '?' ? result::neutral
                                      : result::pass;
        if (r == result::fail && want_exp) {
            bool pending = false;
            hr.explanation = explain(rec, domain, pending);
            if (pending)
                return hr;
        }
        return done(r);
    }
    if (rec.redirect) {
        if (++_terms > _o.max_dns_terms) {
            perm(fmt::format("more than {} DNS-querying terms (RFC 7208 4.6.4)", _o.max_dns_terms));
            return done(result::permerror);
        }
        term t;
        t.spec = *rec.redirect;
        t.text = "redirect=" + *rec.redirect;
        auto target = target_of(t, domain);
        if (!target) {
            if (_syntax) {
                perm(fmt::format("'{}': bad macro", t.text));
                return done(result::permerror);
            }
            return hr;
        }
        if (!askable(*target)) {
            perm(fmt::format("'{}': '{}' is not a domain", t.text, *target));
            return done(result::permerror);
        }
        host_result r = check_host(*target, depth + 1, want_exp);
        if (!r.res)
            return hr;
        if (*r.res == result::none) {
            perm(fmt::format("'{}': {} has no SPF record", t.text, *target));
            return done(result::permerror);
        }
        r.mechanism = r.mechanism.empty() ? t.text : r.mechanism;
        return r;
    }
    return done(result::neutral);
}

step<outcome> evaluator::run() {
    outcome o;
    const bool null_sender = _rq.sender.empty();
    o.identity = _rq.helo_identity ? "helo" : "mailfrom";
    std::string domain;
    if (_rq.helo_identity || null_sender) {
        _local = "postmaster";
        _sender_domain = _rq.helo;
    } else {
        size_t at = _rq.sender.rfind('@');
        if (at == std::string::npos) {
            _local = "postmaster";
            _sender_domain = _rq.sender;
        } else {
            _local = _rq.sender.substr(0, at);
            _sender_domain = _rq.sender.substr(at + 1);
            if (_local.empty())
                _local = "postmaster";  // 4.3
        }
    }
    _sender = _local + "@" + _sender_domain;
    o.sender = _sender;
    domain = _sender_domain;
    if (!domain.empty() && domain.back() == '.')
        domain.pop_back();
    o.domain = domain;
    // 4.3: a malformed domain, or one that is not multi-label, is "none".
    const char* why = domain.empty() ? "empty domain" : nullptr;
    if (!why && domain.front() == '[')
        why = "an address literal";
    if (!why)
        why = mail::check_domain(domain, {false, true, 253});
    if (!why && domain.find('.') == std::string::npos)
        why = "not a multi-label domain";
    if (why) {
        o.res = result::none;
        o.reason = fmt::format("'{}': {}", domain, why);
        return {std::move(o), {}};
    }
    if (_ip.family != 4 && _ip.family != 6) {
        o.res = result::permerror;
        o.reason = "the client address is neither IPv4 nor IPv6";
        return {std::move(o), {}};
    }
    host_result r = check_host(domain, 0, true);
    if (!r.res) {
        step<outcome> s;
        s.need = std::move(_need);
        return s;
    }
    o.res = *r.res;
    o.mechanism = std::move(r.mechanism);
    o.explanation = std::move(r.explanation);
    if (o.res == result::none || o.res == result::temperror || o.res == result::permerror)
        o.reason = _reason;
    o.dns_terms = _terms;
    o.void_lookups = _voids;
    return {std::move(o), {}};
}

}  // namespace

step<outcome> evaluate(const request& rq, const dns_answers& answers, const options& o) {
    evaluator e(rq, answers, o);
    return e.run();
}

bool check_explanation(std::string_view text) { return macro_string_ok(text, true); }

std::optional<std::string> check_record(std::string_view text) {
    if (!is_spf1(text))
        return std::string("does not begin with v=spf1");
    if (text.size() > k_max_record)
        return fmt::format("over {} octets", k_max_record);
    record rec;
    return parse(text.substr(6), rec);
}

}  // namespace rw::policy::spf
