// SMTP command and address parsing (see command.hh). The grammar comments
// quote RFC 5321 4.1.2 and the extension RFCs; every refusal carries an
// RFC 3463 enhanced code:
//
//   500 5.5.6  line too long                 RFC 5321 4.5.3.1.10 ("500 Line too long")
//   500 5.5.2  control character / NUL, unknown command word
//   501 5.5.4  bad arguments, bad or duplicate ESMTP parameter
//   501 5.1.7  bad sender address (MAIL)     RFC 3463 3.2
//   501 5.1.3  bad recipient address (RCPT, parse_mailbox)
//   553 5.6.7  non-ASCII address without SMTPUTF8   RFC 6531 3.5
//   555 5.5.4  unknown ESMTP parameter       RFC 5321 4.1.1.11
//   501 5.5.2  undecodable AUTH initial response    RFC 4954 4
#include "mta/smtp/command.hh"

#include "mail/domain.hh"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <optional>

namespace rw::mta::smtp {

namespace {

constexpr auto npos = std::string_view::npos;

using maybe_reply = std::optional<reply>;

// Brace-initialised rather than err(r): clang before 16 lacks
// parenthesised aggregate initialisation, and the fuzz mode builds with clang.
rw::unexpected<reply> err(reply r) { return rw::unexpected<reply>{std::move(r)}; }

rw::unexpected<reply> fail(int code, std::string_view enhanced, std::string text) {
    return err(reply{code, enhanced, std::move(text)});
}

// ---- character classes (ASCII; bytes >= 0x80 are handled by the callers) ----

constexpr bool is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
constexpr bool is_upper_hex(unsigned char c) { return is_digit(c) || (c >= 'A' && c <= 'F'); }
constexpr bool is_hex(unsigned char c) { return is_upper_hex(c) || (c >= 'a' && c <= 'f'); }
constexpr char to_upper(char c) { return c >= 'a' && c <= 'z' ? char(c - 'a' + 'A') : c; }

// RFC 5322 3.2.3 atext, used by RFC 5321 4.1.2 Atom.
constexpr bool is_atext(unsigned char c) {
    if (is_alpha(c) || is_digit(c))
        return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '/': case '=': case '?': case '^': case '_': case '`': case '{': case '|': case '}': case '~':
        return true;
    default:
        return false;
    }
}

// RFC 5321 4.1.2 qtextSMTP = %d32-33 / %d35-91 / %d93-126
constexpr bool is_qtext(unsigned char c) { return c == 32 || c == 33 || (c >= 35 && c <= 91) || (c >= 93 && c <= 126); }

bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && mail::iequals(s.substr(0, prefix.size()), prefix);
}

std::string upper(std::string_view s) {
    std::string r(s);
    for (auto& c : r)
        c = to_upper(c);
    return r;
}

bool has_non_ascii(std::string_view s) {
    for (unsigned char c : s)
        if (c >= 0x80)
            return true;
    return false;
}

// Strict UTF-8 (RFC 3629 4, whose UTF8-2/3/4 RFC 6531 3.3 and RFC 6532 3.1
// use): no overlong forms, no surrogates, nothing above U+10FFFF, no
// truncated sequences. We also refuse the C1 controls U+0080..U+009F: a
// command holds no control characters, whatever their encoding.
bool valid_utf8(std::string_view s) {
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len = 0;
        unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            if (c == 0xC2)
                lo = 0xA0;  // U+0080..U+009F are C1 controls
        } else if (c == 0xE0) {
            len = 3, lo = 0xA0;  // overlong below U+0800
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            len = 3;
        } else if (c == 0xED) {
            len = 3, hi = 0x9F;  // U+D800..U+DFFF are surrogates
        } else if (c == 0xF0) {
            len = 4, lo = 0x90;  // overlong below U+10000
        } else if (c >= 0xF1 && c <= 0xF3) {
            len = 4;
        } else if (c == 0xF4) {
            len = 4, hi = 0x8F;  // above U+10FFFF
        } else {
            return false;  // 0x80..0xC1 (continuation or overlong lead), 0xF5..0xFF
        }
        if (n - i < len)
            return false;
        const auto c1 = static_cast<unsigned char>(s[i + 1]);
        if (c1 < lo || c1 > hi)
            return false;
        for (size_t k = 2; k < len; ++k)
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

// 1..k_max_number_digits decimal digits. Returns false on syntax; on a value
// above UINT64_MAX sets `overflow` and stores UINT64_MAX.
bool parse_number(std::string_view s, uint64_t& out, bool& overflow) {
    overflow = false;
    if (s.empty() || s.size() > k_max_number_digits)
        return false;
    uint64_t v = 0;
    for (unsigned char c : s) {
        if (!is_digit(c))
            return false;
        const uint64_t d = c - '0';
        if (v > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
    }
    out = overflow ? UINT64_MAX : v;
    return true;
}

// RFC 3461 4: xtext = *( xchar / hexchar ); xchar = "!".."~" except "+"
// and "="; hexchar = "+" 2(DIGIT / "A".."F") (upper case only).
bool valid_xtext(std::string_view s) {
    for (size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == '+') {
            if (s.size() - i < 3 || !is_upper_hex(s[i + 1]) || !is_upper_hex(s[i + 2]))
                return false;
            i += 2;
            continue;
        }
        if (c < 33 || c > 126 || c == '=')
            return false;
    }
    return true;
}

// RFC 4648 4 base64 with padding, as RFC 4954 4 requires of an initial
// response.
bool valid_base64(std::string_view s) {
    if (s.empty() || s.size() % 4 != 0)
        return false;
    const size_t n = s.size();
    for (size_t i = 0; i < n; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (is_alpha(c) || is_digit(c) || c == '+' || c == '/')
            continue;
        if (c == '=' && (i == n - 1 || (i == n - 2 && s[n - 1] == '=')))
            continue;
        return false;
    }
    return true;
}

// ---- domains ----

// allow_underscore is the HELO/EHLO tolerance: many Windows hosts announce
// names like "WIN_PC"; Postfix accepts them unless told otherwise. The
// syntax itself is mail::check_domain's. Returns the reason for refusal,
// or nullptr.
const char* check_domain(std::string_view d, bool allow_utf8, bool allow_underscore) {
    return mail::check_domain(d, mail::domain_rules{allow_utf8, allow_underscore, k_max_domain});
}

// RFC 5321 4.1.3: address-literal = "[" ( IPv4-address-literal /
// IPv6-address-literal / General-address-literal ) "]". The first two are
// checked with inet_pton; General-address-literal (a Standardized-tag
// other than "IPv6") has no registered tag we could route, so it is refused.
// `lit` includes the brackets.
const char* check_address_literal(std::string_view lit) {
    if (lit.size() < 3 || lit.front() != '[' || lit.back() != ']')
        return "bad address literal";
    const std::string_view inner = lit.substr(1, lit.size() - 2);
    char buf[64];
    unsigned char addr[16];
    if (istarts_with(inner, "IPv6:")) {
        const std::string_view a = inner.substr(5);
        if (a.empty() || a.size() > 45)  // INET6_ADDRSTRLEN - 1
            return "bad IPv6 address literal";
        for (const char c : a)
            if (!is_hex(static_cast<unsigned char>(c)) && c != ':' && c != '.')
                return "bad IPv6 address literal";
        std::memcpy(buf, a.data(), a.size());
        buf[a.size()] = '\0';
        if (::inet_pton(AF_INET6, buf, addr) != 1)
            return "bad IPv6 address literal";
        return nullptr;
    }
    if (inner.find(':') != npos)
        return "unsupported address literal";
    if (inner.empty() || inner.size() > 15)  // INET_ADDRSTRLEN - 1
        return "bad IPv4 address literal";
    for (const char c : inner)
        if (!is_digit(static_cast<unsigned char>(c)) && c != '.')
            return "bad IPv4 address literal";
    std::memcpy(buf, inner.data(), inner.size());
    buf[inner.size()] = '\0';
    if (::inet_pton(AF_INET, buf, addr) != 1)
        return "bad IPv4 address literal";
    return nullptr;
}

// ---- mailboxes and paths ----

enum class role { sender, recipient, address };

reply bad_address(role r, std::string_view why) {
    switch (r) {
    case role::sender:  // RFC 3463 3.2: X.1.7 Bad sender's mailbox address syntax
        return {501, "5.1.7", "Bad sender address syntax (" + std::string(why) + ")"};
    case role::recipient:  // RFC 3463 3.2: X.1.3 Bad destination mailbox address syntax
        return {501, "5.1.3", "Bad recipient address syntax (" + std::string(why) + ")"};
    case role::address:
        break;
    }
    return {501, "5.1.3", "Bad address syntax (" + std::string(why) + ")"};
}

// RFC 6531 3.5: a non-ASCII address in a transaction without SMTPUTF8 is
// refused with 553 and X.6.7 "Non-ASCII addresses not permitted for that
// sender/recipient" (RFC 5248 registry).
reply need_smtputf8() { return {553, "5.6.7", "Non-ASCII address requires SMTPUTF8"}; }

// Dot-string = Atom *("." Atom) (RFC 5321 4.1.2), with RFC 6531 3.3's
// atext =/ UTF8-non-ascii.
bool is_dot_string(std::string_view s) {
    if (s.empty() || s.front() == '.' || s.back() == '.')
        return false;
    for (size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == '.') {
            if (s[i - 1] == '.')
                return false;
            continue;
        }
        if (!is_atext(c) && c < 0x80)
            return false;
    }
    return true;
}

// "local@domain" with UTF-8 allowed; the caller decides whether UTF-8 was
// permitted (the flag `utf8` of the result tells).
rw::result<mailbox, reply> parse_mailbox_as(std::string_view s, role r) {
    // RFC 5321 4.5.3.1.3: a path is at most 256 octets with its brackets.
    if (s.size() > k_max_path - 2)
        return err(bad_address(r, "address too long"));
    const bool non_ascii = has_non_ascii(s);
    if (non_ascii && !valid_utf8(s))
        return err(bad_address(r, "invalid UTF-8"));

    mailbox m;
    size_t at = 0;  // index of the '@' between local part and domain
    if (!s.empty() && s.front() == '"') {
        // Quoted-string = DQUOTE *QcontentSMTP DQUOTE;
        // QcontentSMTP = qtextSMTP / quoted-pairSMTP; quoted-pairSMTP = %d92 %d32-126
        // (RFC 5321 4.1.2; RFC 6531 3.3 adds qtextSMTP =/ UTF8-non-ascii).
        size_t i = 1;
        bool closed = false;
        while (i < s.size()) {
            const auto c = static_cast<unsigned char>(s[i]);
            if (c == '"') {
                closed = true;
                ++i;
                break;
            }
            if (c == '\\') {
                if (i + 1 >= s.size())
                    return err(bad_address(r, "bad quoted local part"));
                const auto e = static_cast<unsigned char>(s[i + 1]);
                if (e < 32 || e > 126)
                    return err(bad_address(r, "bad quoted local part"));
                m.local.push_back(char(e));
                i += 2;
                continue;
            }
            if (!is_qtext(c) && c < 0x80)
                return err(bad_address(r, "bad quoted local part"));
            m.local.push_back(char(c));
            ++i;
        }
        if (!closed)
            return err(bad_address(r, "unterminated quoted local part"));
        if (i >= s.size() || s[i] != '@')
            return err(bad_address(r, "missing '@'"));
        at = i;
    } else {
        at = s.find('@');  // atext has no '@', so the first one ends the local part
        if (at == npos)
            return err(bad_address(r, "missing '@'"));
        const std::string_view local = s.substr(0, at);
        if (!is_dot_string(local))
            return err(bad_address(r, local.empty() ? "empty local part" : "bad local part"));
        m.local = std::string(local);
    }
    // RFC 5321 4.5.3.1.1: 64 octets, counted as sent (with quotes and escapes).
    if (at > k_max_local_part)
        return err(bad_address(r, "local part too long"));

    const std::string_view domain = s.substr(at + 1);
    if (!domain.empty() && domain.front() == '[') {
        if (const char* why = check_address_literal(domain))
            return err(bad_address(r, why));
        m.domain_literal = true;
    } else if (const char* why = check_domain(domain, true, false)) {
        return err(bad_address(r, why));
    }
    m.domain = std::string(domain);
    m.utf8 = non_ascii;
    return m;
}

struct parsed_path {
    mailbox m;
    bool null = false;
    bool source_route = false;
    bool non_ascii = false;  // anywhere in the path, source route included
    size_t length = 0;       // octets of the path, "<" and ">" included
};

// Path = "<" [ A-d-l ":" ] Mailbox ">"; Reverse-path = Path / "<>"
// (RFC 5321 4.1.2). `s` starts at the "<" and may continue after the ">".
rw::result<parsed_path, reply> parse_path(std::string_view s, role r, bool allow_null, bool allow_postmaster) {
    if (s.empty() || s.front() != '<')
        return err(bad_address(r, "address must be enclosed in <>"));
    // The closing ">" is the first one outside a quoted local part.
    size_t close = npos;
    bool quoted = false;
    for (size_t i = 1; i < s.size(); ++i) {
        const char c = s[i];
        if (quoted) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                quoted = false;
        } else if (c == '"') {
            quoted = true;
        } else if (c == '>') {
            close = i;
            break;
        }
    }
    if (close == npos)
        return err(bad_address(r, "missing '>'"));
    parsed_path p;
    p.length = close + 1;
    if (p.length > k_max_path)  // RFC 5321 4.5.3.1.10: "501 Path too long"
        return err(bad_address(r, "path too long"));
    std::string_view inner = s.substr(1, close - 1);
    p.non_ascii = has_non_ascii(inner);
    if (p.non_ascii && !valid_utf8(inner))
        return err(bad_address(r, "invalid UTF-8"));
    if (inner.empty()) {
        if (!allow_null)
            return err(bad_address(r, "null path not allowed"));
        p.null = true;
        return p;
    }
    if (inner.front() == '@') {
        // A-d-l = At-domain *( "," At-domain ); At-domain = "@" Domain.
        // RFC 5321 4.1.2 and Appendix C: servers accept a source route and
        // ignore it (deliver to the mailbox only). We validate and strip it.
        const size_t colon = inner.find(':');  // a Domain has no ':'
        if (colon == npos)
            return err(bad_address(r, "bad source route"));
        const std::string_view adl = inner.substr(0, colon);
        size_t pos = 0;
        for (;;) {
            if (pos >= adl.size() || adl[pos] != '@')
                return err(bad_address(r, "bad source route"));
            const size_t comma = adl.find(',', pos);
            const std::string_view dom = adl.substr(pos + 1, comma == npos ? npos : comma - pos - 1);
            if (check_domain(dom, true, false))
                return err(bad_address(r, "bad source route"));
            if (comma == npos)
                break;
            pos = comma + 1;
        }
        p.source_route = true;
        inner = inner.substr(colon + 1);
    }
    // RFC 5321 4.1.1.3: "<Postmaster>" without a domain is a valid
    // forward-path (case-insensitive, 2.4); it names our postmaster.
    if (allow_postmaster && !p.source_route && mail::iequals(inner, "postmaster")) {
        p.m.local = std::string(inner);
        return p;
    }
    auto m = parse_mailbox_as(inner, r);
    if (!m)
        return err(m.error());
    p.m = std::move(m.value());
    return p;
}

// ---- ESMTP parameters ----

reply param_syntax(std::string_view what) { return {501, "5.5.4", std::string(what)}; }

// NOTIFY="NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) (RFC 3461 4.1)
bool parse_notify(std::string_view v, uint8_t& out) {
    uint8_t bits = 0;
    size_t pos = 0;
    for (;;) {
        const size_t comma = v.find(',', pos);
        const std::string_view item = v.substr(pos, comma == npos ? npos : comma - pos);
        uint8_t bit = 0;
        if (mail::iequals(item, "NEVER"))
            bit = k_notify_never;
        else if (mail::iequals(item, "SUCCESS"))
            bit = k_notify_success;
        else if (mail::iequals(item, "FAILURE"))
            bit = k_notify_failure;
        else if (mail::iequals(item, "DELAY"))
            bit = k_notify_delay;
        else
            return false;
        if (bits & bit)
            return false;
        bits |= bit;
        if (comma == npos)
            break;
        pos = comma + 1;
    }
    if ((bits & k_notify_never) && bits != k_notify_never)
        return false;  // "NEVER" must appear alone
    out = bits;
    return true;
}

// ORCPT=addr-type ";" xtext (RFC 3461 4.2); addr-type is an atom naming the
// address type ("rfc822", "utf-8" of RFC 6533).
bool valid_orcpt(std::string_view v) {
    if (v.size() > k_max_orcpt)
        return false;
    const size_t semi = v.find(';');
    if (semi == npos || semi == 0 || semi + 1 == v.size())
        return false;
    for (const char c : v.substr(0, semi))
        if (!is_atext(static_cast<unsigned char>(c)))
            return false;
    return valid_xtext(v.substr(semi + 1));
}

// Checks the value of a parameter we know and records it in `c`. Returns
// the refusal, or nullopt. `has_value` says whether "=value" was sent.
maybe_reply apply_param(command& c, const std::string& key, std::string_view value, bool has_value) {
    if (c.v == verb::mail) {
        if (key == "SIZE") {  // RFC 1870 6: size-value ::= 1*20DIGIT
            bool overflow = false;
            if (!has_value || !parse_number(value, c.size, overflow))
                return param_syntax("Bad SIZE parameter");
            c.has_size = true;  // a saturated size is above any limit; the session answers 552
            return std::nullopt;
        }
        if (key == "BODY") {  // RFC 6152 2 (8BITMIME), RFC 3030 3 (BINARYMIME); 7BIT is the default
            if (has_value && mail::iequals(value, "7BIT"))
                c.body = body_type::seven_bit;
            else if (has_value && mail::iequals(value, "8BITMIME"))
                c.body = body_type::eight_bit_mime;
            else if (has_value && mail::iequals(value, "BINARYMIME"))
                c.body = body_type::binary_mime;
            else
                return param_syntax("Bad BODY parameter");
            return std::nullopt;
        }
        if (key == "SMTPUTF8") {  // RFC 6531 3.4: the keyword takes no value
            if (has_value)
                return param_syntax("SMTPUTF8 takes no value");
            c.smtputf8 = true;
            return std::nullopt;
        }
        if (key == "REQUIRETLS") {  // RFC 8689 3: the keyword takes no value
            if (has_value)
                return param_syntax("REQUIRETLS takes no value");
            c.requiretls = true;
            return std::nullopt;
        }
        if (key == "RET") {  // RFC 3461 4.3: RET=FULL / HDRS
            if (has_value && mail::iequals(value, "FULL"))
                c.ret = dsn_ret::full;
            else if (has_value && mail::iequals(value, "HDRS"))
                c.ret = dsn_ret::hdrs;
            else
                return param_syntax("Bad RET parameter");
            return std::nullopt;
        }
        if (key == "ENVID") {  // RFC 3461 4.4: xtext, at most 100 characters
            if (!has_value || value.size() > k_max_envid || !valid_xtext(value))
                return param_syntax("Bad ENVID parameter");
            c.envid = std::string(value);
            return std::nullopt;
        }
        if (key == "AUTH") {  // RFC 4954 5: AUTH=mailbox (as xtext) or AUTH=<>
            if (!has_value || !valid_xtext(value))
                return param_syntax("Bad AUTH parameter");
            c.auth_param = std::string(value);
            return std::nullopt;
        }
    } else if (c.v == verb::rcpt) {
        if (key == "NOTIFY") {
            if (!has_value || !parse_notify(value, c.notify))
                return param_syntax("Bad NOTIFY parameter");
            return std::nullopt;
        }
        if (key == "ORCPT") {
            if (!has_value || !valid_orcpt(value))
                return param_syntax("Bad ORCPT parameter");
            c.orcpt = std::string(value);
            return std::nullopt;
        }
    }
    // RFC 5321 4.1.1.11: "555 MAIL FROM/RCPT TO parameters not recognized
    // or not implemented". The key is an esmtp-keyword, safe to echo.
    return reply{555, "5.5.4", "Unsupported parameter " + key};
}

// Mail-parameters = esmtp-param *(SP esmtp-param);
// esmtp-param = esmtp-keyword ["=" esmtp-value];
// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-");
// esmtp-value = 1*(%d33-60 / %d62-126) (RFC 5321 4.1.2). Exactly one SP
// between parameters; no trailing SP.
maybe_reply parse_params(std::string_view s, command& c) {
    size_t pos = 0;
    for (;;) {
        const size_t sp = s.find(' ', pos);
        const std::string_view tok = s.substr(pos, sp == npos ? npos : sp - pos);
        if (tok.empty())
            return param_syntax("Syntax error in parameters");
        if (c.params.size() >= k_max_params)
            return param_syntax("Too many parameters");
        const size_t eq = tok.find('=');
        const std::string_view key = tok.substr(0, eq);
        if (key.empty() || !(is_alpha(key[0]) || is_digit(key[0])))
            return param_syntax("Syntax error in parameters");
        for (const char ch : key) {
            const auto k = static_cast<unsigned char>(ch);
            if (!is_alpha(k) && !is_digit(k) && k != '-')
                return param_syntax("Syntax error in parameters");
        }
        const bool has_value = eq != npos;
        const std::string_view value = has_value ? tok.substr(eq + 1) : std::string_view{};
        if (has_value && value.empty())
            return param_syntax("Syntax error in parameters");
        for (const char ch : value) {
            const auto v = static_cast<unsigned char>(ch);
            if (v < 33 || v > 126 || v == '=')
                return param_syntax("Syntax error in parameters");
        }
        std::string ukey = upper(key);
        for (const auto& p : c.params)
            if (p.key == ukey)
                return param_syntax("Duplicate parameter " + ukey);
        if (auto e = apply_param(c, ukey, value, has_value))
            return e;
        c.params.push_back(esmtp_param{std::move(ukey), std::string(value)});
        if (sp == npos)
            return std::nullopt;
        pos = sp + 1;
    }
}

// ---- the command table ----

struct verb_entry {
    std::string_view name;
    verb v;
};

constexpr verb_entry k_verbs[] = {
    {"HELO", verb::helo},          // RFC 5321 4.1.1.1
    {"EHLO", verb::ehlo},          // RFC 5321 4.1.1.1
    {"MAIL", verb::mail},          // RFC 5321 4.1.1.2
    {"RCPT", verb::rcpt},          // RFC 5321 4.1.1.3
    {"DATA", verb::data},          // RFC 5321 4.1.1.4
    {"BDAT", verb::bdat},          // RFC 3030 2
    {"RSET", verb::rset},          // RFC 5321 4.1.1.5
    {"VRFY", verb::vrfy},          // RFC 5321 4.1.1.6
    {"EXPN", verb::expn},          // RFC 5321 4.1.1.7
    {"HELP", verb::help},          // RFC 5321 4.1.1.8
    {"NOOP", verb::noop},          // RFC 5321 4.1.1.9
    {"QUIT", verb::quit},          // RFC 5321 4.1.1.10
    {"STARTTLS", verb::starttls},  // RFC 3207 4
    {"AUTH", verb::auth},          // RFC 4954 4
};

verb lookup_verb(std::string_view word) {
    for (const auto& e : k_verbs)
        if (mail::iequals(word, e.name))  // RFC 5321 2.4: command verbs are case-insensitive
            return e.v;
    return verb::unknown;
}

rw::unexpected<reply> syntax(std::string_view usage) { return fail(501, "5.5.4", "Syntax: " + std::string(usage)); }

// MAIL FROM:<reverse-path> [SP Mail-parameters] / RCPT TO:<forward-path> [SP Rcpt-parameters]
rw::result<command, reply> parse_mail_rcpt(command c, std::string_view arg, bool has_arg, bool utf8_ok) {
    const bool mail = c.v == verb::mail;
    const std::string_view keyword = mail ? "FROM:" : "TO:";
    const std::string_view usage = mail ? "MAIL FROM:<address> [parameters]" : "RCPT TO:<address> [parameters]";
    const role r = mail ? role::sender : role::recipient;
    if (!has_arg || !istarts_with(arg, keyword))
        return syntax(usage);
    std::string_view rest = arg.substr(keyword.size());
    // Tolerance: RFC 5321 has no space after the colon, but common clients
    // send "MAIL FROM: <a@b>". One space is accepted, no more.
    if (!rest.empty() && rest.front() == ' ')
        rest.remove_prefix(1);
    if (rest.empty())
        return syntax(usage);
    auto p = parse_path(rest, r, /*allow_null=*/mail, /*allow_postmaster=*/!mail);
    if (!p)
        return err(p.error());
    rest.remove_prefix(p->length);
    if (!rest.empty()) {
        if (rest.front() != ' ')
            return err(bad_address(r, "junk after address"));
        if (auto e = parse_params(rest.substr(1), c))
            return err(std::move(*e));
    }
    // RFC 6531 3.4: SMTPUTF8 on this MAIL allows UTF-8 in its own reverse-path.
    if (p->non_ascii && !(utf8_ok || c.smtputf8))
        return err(need_smtputf8());
    c.null_path = p->null;
    c.had_source_route = p->source_route;
    c.path = std::move(p->m);
    return c;
}

}  // namespace

std::string_view to_string(verb v) noexcept {
    for (const auto& e : k_verbs)
        if (e.v == v)
            return e.name;
    return "?";
}

rw::result<command, reply> parse_command(std::string_view line, bool utf8_ok) {
    // RFC 5321 4.5.3.1.4 (512 octets incl. CRLF; k_max_command_line_ext for
    // MAIL/RCPT), RFC 5321 4.5.3.1.10 "500 Line too long". The enhanced code
    // 5.5.6 is the one registered for a too-long AUTH exchange line
    // (RFC 4954 6); it is the closest registered "line too long" there is.
    auto too_long = [] { return fail(500, "5.5.6", "Line too long"); };
    if (line.size() + 2 > k_max_command_line_ext)
        return too_long();
    // RFC 5321 2.3.8 / 4.1.1: only CRLF ends a command and no command syntax
    // has room for a control character. A NUL, a bare CR or LF (a smuggling
    // attempt, or a client ending lines with LF), TAB or DEL make the whole
    // line unrecognizable.
    for (const char ch : line) {
        const auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7F)
            return fail(500, "5.5.2", "Invalid character in command");
    }
    const size_t sp = line.find(' ');
    command c;
    c.v = lookup_verb(line.substr(0, sp));
    if (c.v == verb::unknown)
        return fail(500, "5.5.2", "Command unrecognized");
    const size_t limit =
        (c.v == verb::mail || c.v == verb::rcpt) ? k_max_command_line_ext : k_max_command_line;
    if (line.size() + 2 > limit)
        return too_long();
    // Exactly one SP separates the command word from its argument (RFC 5321 4.1.1).
    const bool has_arg = sp != npos;
    const std::string_view arg = has_arg ? line.substr(sp + 1) : std::string_view{};

    switch (c.v) {
    case verb::helo:
    case verb::ehlo: {
        // "EHLO" SP ( Domain / address-literal ); "HELO" SP Domain. We take an
        // address literal after HELO too (real clients send "HELO [192.0.2.1]").
        const std::string_view usage = c.v == verb::ehlo ? "EHLO hostname" : "HELO hostname";
        if (!has_arg || arg.empty() || arg.find(' ') != npos)
            return syntax(usage);
        const char* why = arg.front() == '[' ? check_address_literal(arg) : check_domain(arg, false, true);
        if (why)
            return fail(501, "5.5.4", "Invalid hostname (" + std::string(why) + ")");
        c.domain = std::string(arg);
        return c;
    }
    case verb::mail:
    case verb::rcpt:
        return parse_mail_rcpt(std::move(c), arg, has_arg, utf8_ok);
    case verb::data:      // "DATA" CRLF (RFC 5321 4.1.1.4)
    case verb::rset:      // "RSET" CRLF (4.1.1.5)
    case verb::quit:      // "QUIT" CRLF (4.1.1.10)
    case verb::starttls:  // RFC 3207 4: "501 Syntax error (no parameters allowed)"
        if (has_arg)
            return syntax(to_string(c.v));
        return c;
    case verb::noop:  // "NOOP" [ SP String ] (4.1.1.9), argument ignored
    case verb::help:  // "HELP" [ SP String ] (4.1.1.8)
    case verb::vrfy:  // "VRFY" SP String (4.1.1.6), may carry SMTPUTF8 (RFC 6531 3.7.4.2)
    case verb::expn:  // "EXPN" SP String (4.1.1.7)
        if ((c.v == verb::vrfy || c.v == verb::expn) && arg.empty())
            return syntax(c.v == verb::vrfy ? "VRFY address" : "EXPN list");
        if (!valid_utf8(arg))
            return fail(501, "5.5.4", "Invalid characters in argument");
        c.text = std::string(arg);
        return c;
    case verb::bdat: {
        // bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ]; chunk-size = 1*DIGIT;
        // end-marker = "LAST" (RFC 3030 2). A size we cannot even represent
        // is refused; the session should then drop the connection, since it
        // cannot know how many octets follow.
        if (!has_arg)
            return syntax("BDAT size [LAST]");
        const size_t sp2 = arg.find(' ');
        if (sp2 != npos) {
            if (!mail::iequals(arg.substr(sp2 + 1), "LAST"))
                return syntax("BDAT size [LAST]");
            c.bdat_last = true;
        }
        bool overflow = false;
        if (!parse_number(arg.substr(0, sp2), c.bdat_size, overflow) || overflow)
            return syntax("BDAT size [LAST]");
        return c;
    }
    case verb::auth: {
        // "AUTH" SP sasl-mech [SP initial-response]; initial-response = base64 / "="
        // (RFC 4954 4); sasl-mech = 1*20 of A-Z 0-9 "-" "_" (RFC 4422 3.1).
        // Lower case is accepted and folded: some clients send "auth login".
        if (!has_arg)
            return syntax("AUTH mechanism [initial-response]");
        const size_t sp2 = arg.find(' ');
        const std::string_view mech = arg.substr(0, sp2);
        if (mech.empty() || mech.size() > k_max_sasl_mech)
            return syntax("AUTH mechanism [initial-response]");
        for (const char ch : mech) {
            const auto m = static_cast<unsigned char>(ch);
            if (!is_alpha(m) && !is_digit(m) && m != '-' && m != '_')
                return syntax("AUTH mechanism [initial-response]");
        }
        c.auth_mechanism = upper(mech);
        if (sp2 != npos) {
            const std::string_view ir = arg.substr(sp2 + 1);
            if (ir.empty())
                return syntax("AUTH mechanism [initial-response]");
            // RFC 4954 4: "501 5.5.2 Cannot Base64-decode Client responses"
            if (ir != "=" && !valid_base64(ir))
                return fail(501, "5.5.2", "Cannot Base64-decode Client responses");
            c.auth_initial = std::string(ir);
        }
        return c;
    }
    case verb::unknown:
        break;
    }
    RW_UNREACHABLE("verb {}", int(c.v));
}

rw::result<mailbox, reply> parse_mailbox(std::string_view s, bool utf8_ok) {
    auto m = parse_mailbox_as(s, role::address);
    if (m && m->utf8 && !utf8_ok)
        return err(need_smtputf8());
    return m;
}

std::string to_string(const mailbox& m) {
    std::string out;
    out.reserve(m.local.size() + m.domain.size() + 3);
    if (is_dot_string(m.local)) {
        out = m.local;
    } else {
        // RFC 5321 4.1.2: quote, escaping only what must be escaped.
        out.push_back('"');
        for (const char c : m.local) {
            if (c == '"' || c == '\\')
                out.push_back('\\');
            out.push_back(c);
        }
        out.push_back('"');
    }
    if (!m.domain.empty()) {
        out.push_back('@');
        out += m.domain;
    }
    return out;
}

bool has_relay_chars(const mailbox& m) noexcept { return m.local.find_first_of("%!@") != std::string::npos; }

bool looks_non_smtp(std::string_view line) noexcept {
    std::string_view first = line.substr(0, line.find(' '));
    if (first.empty())
        return false;
    if (first.size() > 1 && first.back() == ':') {
        for (char ch : first.substr(0, first.size() - 1))
            if (!(std::isalnum(uint8_t(ch)) || ch == '-'))
                return false;
        return true;
    }
    for (std::string_view m : {"CONNECT", "GET", "POST", "HEAD", "PUT", "OPTIONS", "DELETE", "TRACE", "PATCH"})
        if (first.size() == m.size() && std::equal(first.begin(), first.end(), m.begin(), [](char a, char b) {
                return std::toupper(uint8_t(a)) == b;
            }))
            return true;
    return false;
}

}  // namespace rw::mta::smtp
