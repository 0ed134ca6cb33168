// Domain names as mail uses them: one syntax check for SMTP commands,
// policy and SPF alike (RFC 5321 4.1.2, RFC 6531 3.3, RFC 1035 limits).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace rw::mail {

inline constexpr size_t k_max_domain = 255;  // RFC 5321 4.5.3.1.2
inline constexpr size_t k_max_label = 63;    // RFC 1035 2.3.4

struct domain_rules {
    bool utf8 = false;        // U-labels allowed (SMTPUTF8, RFC 6531)
    bool underscore = false;  // '_' allowed: HELO names of some hosts, DNS names of SPF/DKIM records
    size_t max_length = k_max_domain;
};

// RFC 5321 4.1.2: Domain = sub-domain *("." sub-domain), LDH labels of at
// most 63 octets (a U-label: at most 59 code points, since its A-label
// needs "xn--" and one octet per code point). No trailing dot. Returns why
// d is not a domain, or nullptr.
const char* check_domain(std::string_view d, domain_rules rules = {});

constexpr bool is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
constexpr char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c + ('a' - 'A')) : c; }

// ASCII case folding (DNS names compare case-insensitively, RFC 4343).
std::string lower_ascii(std::string_view s);
bool iequals(std::string_view a, std::string_view b) noexcept;
// d without one trailing dot, lower-cased: the form names are compared in.
std::string normalize_domain(std::string_view d);

}  // namespace rw::mail
