// SPF (RFC 7208): check_host() for the MAIL FROM and HELO identities, as a
// pure function of the request and the DNS answers gathered so far (see
// policy/dns_facts.hh). Every mechanism and modifier, macros, exp=,
// redirect=, the limits of 4.6.4 (10 terms that cause lookups, 2 void
// lookups, 10 address lookups per MX or PTR), and the seven results.
//
// While a term waits for its answer, the first-level queries of the terms
// after it (include's TXT, a, mx, exists) are asked too, within the lookup
// budget left: a record of several includes costs one round trip, not one
// per include. They are only prefetched; the limits count terms evaluated.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "policy/dns_facts.hh"
#include "runtime/net/addr.hh"

namespace rw::policy::spf {

enum class result { none, neutral, pass, fail, softfail, temperror, permerror };
std::string_view to_string(result r) noexcept;

struct request {
    rw::net::address ip;  // the SMTP client (IPv4-mapped IPv6 counts as IPv4)
    std::string sender;   // MAIL FROM as given ("" for the null sender)
    std::string helo;     // the HELO/EHLO argument
    // Check the HELO identity (RFC 7208 2.3) instead of MAIL FROM. A null
    // sender is checked as postmaster@HELO either way (2.4).
    bool helo_identity = false;
    std::string receiver = "unknown";  // %{r}: the receiving host
    int64_t now = 0;                   // %{t}
};

struct options {
    unsigned max_dns_terms = 10;     // include, a, mx, ptr, exists, redirect
    unsigned max_void_lookups = 2;   // answers with no record or no name
    unsigned max_mx_ptr_names = 10;  // address lookups per mx or ptr
    // The explanation of a fail when the record gives none (or its exp=
    // cannot be used). Macros are expanded in it.
    std::string default_explanation = "%{d}: sender %{s} not permitted from %{i}; see https://www.rfc-editor.org/rfc/rfc7208";
};

struct outcome {
    result res = result::none;
    std::string identity;     // "mailfrom" or "helo"
    std::string domain;       // the domain checked
    std::string sender;       // as checked: postmaster@HELO for the null sender
    std::string mechanism;    // the term that matched ("-all", "include:x"), "" for the default
    std::string explanation;  // for fail
    std::string reason;       // for none, temperror and permerror: why
    unsigned dns_terms = 0, void_lookups = 0;
};

step<outcome> evaluate(const request& rq, const dns_answers& answers, const options& o = {});

// Syntax of one record text alone ("v=spf1 ..."): nullopt if it is valid,
// else why not. For tools and the fuzz target.
std::optional<std::string> check_record(std::string_view record);
// Whether text is a valid explanation macro-string (7.1, c, r and t allowed).
bool check_explanation(std::string_view text);

}  // namespace rw::policy::spf
