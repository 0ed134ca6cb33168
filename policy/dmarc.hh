// DMARC (RFC 7489, with DMARCbis's np= and alignment rules): the policy
// record of the RFC5322.From domain or of its organisational domain (the
// public suffix list, through libpsl and Debian's publicsuffix), SPF and
// DKIM alignment, and the disposition the domain asks for. A DNS stage
// (policy/dns_facts.hh): it names the _dmarc TXT queries, and the
// existence queries np= needs, and is run again with their answers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/dkim.hh"
#include "policy/dns_facts.hh"
#include "policy/spf.hh"

namespace rw::policy::dmarc {

// RFC 8601 2.7.1 values.
enum class result { none, pass, fail, temperror, permerror };
std::string_view to_string(result r) noexcept;

enum class disposition { none, quarantine, reject };
std::string_view to_string(disposition d) noexcept;

// The organisational domain (RFC 7489 3.2): the public suffix plus one
// label. A name that is itself a public suffix, or unknown to the list's
// rules, is its own.
std::string organizational_domain(std::string_view domain);

struct record {
    disposition p = disposition::none;
    std::optional<disposition> sp, np;
    unsigned pct = 100;
    bool strict_dkim = false, strict_spf = false;  // adkim=s, aspf=s
    std::vector<std::string> rua, ruf;             // mailto: URIs as given
    std::string fo = "0";
};
// A _dmarc TXT record. Nothing, with why, when it is not one (it must
// begin with v=DMARC1); a record without a valid p= but with rua= is read
// as p=none (RFC 7489 6.6.3).
std::optional<record> parse_record(std::string_view txt, std::string& why);

struct request {
    std::string from_domain;                       // the RFC5322.From domain; "" when there is none usable
    const spf::outcome* spf = nullptr;             // the MAIL FROM (or HELO) check
    const std::vector<dkim::verdict>* dkim = nullptr;
    unsigned sample = 0;                           // 0..99: pct= applies when sample < pct
};

struct outcome {
    result res = result::none;
    disposition policy = disposition::none;    // what the domain asks for this message
    disposition applied = disposition::none;   // after pct= sampling
    std::string from_domain, policy_domain;    // the record was found at _dmarc.policy_domain
    bool spf_aligned = false, dkim_aligned = false;
    std::string dkim_domain;                   // the aligned passing signature's d=
    std::optional<record> rec;
    std::string reason;
    std::string override_by;  // a local policy override (RFC 7489 6.7): "arc" with the trusted sealer
};

step<outcome> evaluate(const request& rq, const dns_answers& answers);

}  // namespace rw::policy::dmarc
