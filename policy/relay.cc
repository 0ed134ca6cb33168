#include "policy/relay.hh"

#include "mail/domain.hh"

#include <arpa/inet.h>

#include <fmt/format.h>

namespace rw::policy {

namespace {

// RFC 5321 4.5.3.1.2: a domain name is at most 255 octets; DNS (RFC 1035
// 2.3.4) allows 253 characters of text and 63 per label.
constexpr size_t k_max_domain_chars = 253;
// Of the local part and domain echoed back in a reply; longer is cut.
constexpr size_t k_max_echo_local = 64;
constexpr size_t k_max_echo_domain = 255;

char ascii_lower(char c) {
    return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
}

// Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF): a
// SMTPUTF8 domain's U-labels. Anything else with the high bit set is garbage.
bool valid_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            ++i;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (size_t k = 1; k <= n; ++k) {
            if (i + k >= s.size())
                return false;
            auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

std::optional<std::string> canonical_literal(std::string_view inner, std::string& why) {
    // RFC 5321 4.1.3: IPv4-address-literal, or "IPv6:" IPv6-addr. General
    // address literals (other tags) name nothing we could deliver to.
    constexpr std::string_view v6_tag = "IPv6:";
    if (inner.size() > INET6_ADDRSTRLEN + v6_tag.size()) {
        why = "address literal too long";
        return std::nullopt;
    }
    if (inner.find('\0') != std::string_view::npos) {  // inet_pton would stop there
        why = "malformed address literal";
        return std::nullopt;
    }
    uint8_t bytes[16];
    char text[INET6_ADDRSTRLEN] = "";
    if (inner.size() > v6_tag.size() && mail::iequals(inner.substr(0, v6_tag.size()), v6_tag)) {
        std::string ip(inner.substr(v6_tag.size()));
        if (inet_pton(AF_INET6, ip.c_str(), bytes) != 1) {
            why = "malformed IPv6 address literal";
            return std::nullopt;
        }
        inet_ntop(AF_INET6, bytes, text, sizeof text);
        return fmt::format("[ipv6:{}]", text);
    }
    std::string ip(inner);
    if (inet_pton(AF_INET, ip.c_str(), bytes) != 1) {
        why = "malformed address literal";
        return std::nullopt;
    }
    inet_ntop(AF_INET, bytes, text, sizeof text);
    return fmt::format("[{}]", text);
}

// Printable ASCII only, bounded: what we echo back of the client's input
// must not inject CR LF into our reply or carry raw 8-bit text.
void append_clean(std::string& out, std::string_view s, size_t max) {
    size_t n = std::min(s.size(), max);
    for (size_t i = 0; i < n; ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        out += (c < 0x20 || c >= 0x7f) ? '?' : char(c);
    }
    if (s.size() > max)
        out += "...";
}

std::string echo(const recipient_facts& r) {
    std::string out = "<";
    append_clean(out, r.local, k_max_echo_local);
    out += '@';
    append_clean(out, r.domain, k_max_echo_domain);
    out += '>';
    return out;
}

verdict refuse(int code, std::string enhanced, std::string reason) {
    verdict v;
    v.act = action::reject;
    v.code = code;
    v.enhanced = std::move(enhanced);
    v.reason = std::move(reason);
    v.relay = false;
    return v;
}

verdict ok(bool relay) {
    verdict v;
    v.act = action::accept;
    v.code = 250;
    v.enhanced = "2.1.5";
    v.reason = "Ok";
    v.relay = relay;
    return v;
}

}  // namespace

std::optional<std::string> canonical_domain(std::string_view d, bool literal, std::string& why) {
    if (d.empty()) {
        why = "empty domain";
        return std::nullopt;
    }
    bool bracketed = d.front() == '[' || d.back() == ']';
    if (bracketed) {
        if (d.size() < 2 || d.front() != '[' || d.back() != ']') {
            why = "unbalanced brackets";
            return std::nullopt;
        }
        return canonical_literal(d.substr(1, d.size() - 2), why);
    }
    if (literal)
        return canonical_literal(d, why);

    if (d.back() == '.')
        d.remove_suffix(1);  // "example.test." is "example.test"; only one dot
    if (d.empty()) {
        why = "empty domain";
        return std::nullopt;
    }
    if (d.size() > k_max_domain_chars) {
        why = fmt::format("domain longer than {} characters", k_max_domain_chars);
        return std::nullopt;
    }
    if (!valid_utf8(d)) {
        why = "domain is not valid UTF-8";
        return std::nullopt;
    }
    // Label syntax is mail/'s, one rule set for every layer (U-labels
    // allowed: SMTPUTF8 recipients reach relay control).
    if (const char* e = mail::check_domain(d, {.utf8 = true})) {
        why = e;
        return std::nullopt;
    }
    const size_t last_dot = d.rfind('.');
    const std::string_view last = last_dot == std::string_view::npos ? d : d.substr(last_dot + 1);
    std::string out;
    out.reserve(d.size());
    bool numeric = true;
    for (char c : last)
        numeric = numeric && c >= '0' && c <= '9';
    if (numeric) {
        // 192.0.2.1 without brackets: RFC 5321 4.1.3 wants [192.0.2.1], and
        // no top-level domain is all digits.
        why = "an IP address must be written as an address literal, e.g. [192.0.2.1]";
        return std::nullopt;
    }
    for (char c : d)
        out += ascii_lower(c);
    return out;
}

relay_policy::relay_policy(relay_config cfg) {
    for (const auto& entry : cfg.accepted_domains) {
        std::string_view d = entry;
        bool wildcard = false;
        if (d.starts_with("*.")) {
            d.remove_prefix(2);
            wildcard = true;
        } else if (d.starts_with(".")) {
            d.remove_prefix(1);
            wildcard = true;
        }
        std::string why;
        auto canon = canonical_domain(d, false, why);
        if (!canon)
            continue;  // validate() reports it; it can never match a valid recipient
        if (wildcard) {
            if (canon->front() == '[')
                continue;  // no subdomains of an address literal
            _wildcards.insert("." + *canon);
        } else {
            _exact.insert(std::move(*canon));
        }
    }
    _allow_domain_literals = cfg.allow_domain_literals;
    for (const auto& net : cfg.relay_networks)
        if (!net.is_catch_all())
            _relay_networks.push_back(net);
}

std::vector<std::string> relay_policy::validate(const relay_config& cfg) {
    std::vector<std::string> problems;
    for (size_t i = 0; i < cfg.accepted_domains.size(); ++i) {
        std::string_view d = cfg.accepted_domains[i];
        bool wildcard = d.starts_with("*.") || d.starts_with(".");
        if (d.starts_with("*."))
            d.remove_prefix(2);
        else if (d.starts_with("."))
            d.remove_prefix(1);
        std::string why;
        auto canon = canonical_domain(d, false, why);
        std::string shown;
        append_clean(shown, cfg.accepted_domains[i], k_max_echo_domain);
        if (!canon)
            problems.push_back(fmt::format("accepted_domains[{}]: \"{}\": {}", i, shown, why));
        else if (wildcard && canon->front() == '[')
            problems.push_back(fmt::format("accepted_domains[{}]: \"{}\": an address literal has no subdomains", i,
                                           shown));
    }
    for (size_t i = 0; i < cfg.relay_networks.size(); ++i)
        if (cfg.relay_networks[i].is_catch_all())
            problems.push_back(fmt::format("relay_networks[{}]: {} contains every {} address (an open relay)", i,
                                           cfg.relay_networks[i].to_string(),
                                           cfg.relay_networks[i].is_v6() ? "IPv6" : "IPv4"));
    return problems;
}

bool relay_policy::is_local_canonical(const std::string& d) const {
    if (_exact.contains(d))
        return true;
    if (d.front() == '[')
        return false;
    // ".b.c" then ".c" for "a.b.c": one lookup per label.
    for (size_t dot = d.find('.'); dot != std::string::npos; dot = d.find('.', dot + 1))
        if (_wildcards.contains(d.substr(dot)))
            return true;
    return false;
}

bool relay_policy::is_local_domain(std::string_view domain) const noexcept {
    std::string why;
    auto canon = canonical_domain(domain, false, why);
    return canon && is_local_canonical(*canon);
}

bool relay_policy::may_relay(const connection_facts& conn) const noexcept {
    if (conn.authenticated || conn.relay_granted)
        return true;
    for (const auto& net : _relay_networks)
        if (net.contains(conn.peer))
            return true;
    return false;
}

verdict relay_policy::check_recipient(const connection_facts& conn, const sender_facts& /*sender*/,
                                      const recipient_facts& rcpt) const noexcept {
    // The sender is deliberately unused: MAIL FROM is the client's claim and
    // grants nothing (a forged local sender must not open the relay).
    std::string why;
    auto domain = canonical_domain(rcpt.domain, rcpt.domain_literal, why);
    if (!domain)
        return refuse(550, "5.1.2", fmt::format("{}: Recipient address rejected: {}", echo(rcpt), why));
    if (rcpt.local.empty())
        return refuse(550, "5.1.3", fmt::format("{}: Recipient address rejected: empty local part", echo(rcpt)));

    if (rcpt.had_source_route)
        return refuse(550, "5.7.1",
                      fmt::format("{}: Recipient address rejected: source routes are not accepted "
                                  "(RFC 5321 Appendix C)",
                                  echo(rcpt)));
    if (is_local_canonical(*domain)) {
        bool routing = rcpt.has_relay_chars || rcpt.local.find_first_of("%!@") != std::string::npos;
        if (routing)
            return refuse(550, "5.7.1",
                          fmt::format("{}: Recipient address rejected: routing characters ('%', '!', '@') "
                                      "in the local part are not accepted",
                                      echo(rcpt)));
        return ok(false);
    }
    if (!_allow_domain_literals && domain->starts_with('['))
        return refuse(550, "5.7.1",
                      fmt::format("{}: Recipient address rejected: domain literals are not accepted", echo(rcpt)));
    if (may_relay(conn))
        return ok(true);
    return refuse(554, "5.7.1", fmt::format("{}: Relay access denied", echo(rcpt)));
}

}  // namespace rw::policy
