// ARC (RFC 8617): validating the chain of ARC sets a message arrives with,
// and sealing it on relay. Like DKIM verification (dkim.hh), in two
// halves: while the message streams in, header_section() finds the sets
// and starts the body hash of the newest ARC-Message-Signature; after it,
// evaluate() is a DNS stage asking for the keys of that signature and of
// every ARC-Seal, then checks them (RFC 8617 5.2):
//
//   none  no ARC set;
//   fail  a structural fault (5.1.1: instances 1..N, one of each header
//         per instance, N <= 50, cv= of instance 1 "none" and of the rest
//         "pass"), the newest AMS or any AS does not verify, or a seal
//         says cv=fail;
//   pass  otherwise.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mail/header.hh"
#include "policy/dkim.hh"
#include "policy/dkim_sign.hh"
#include "policy/dns_facts.hh"

namespace rw::policy::arc {

enum class result { none, pass, fail };
std::string_view to_string(result r) noexcept;

struct outcome {
    result res = result::none;
    unsigned instances = 0;   // sets found
    std::string reason;       // for fail: which rule or signature
    std::string sealer;       // d= of the newest ARC-Seal
    std::string ams_domain;   // d= of the newest ARC-Message-Signature
};

class verification {
public:
    static constexpr unsigned k_max_instances = 50;

    verification() = default;
    ~verification();
    void header_section(const std::vector<mail::header_field>& fields);
    void body(std::string_view bytes);
    void end();
    bool has_sets() const noexcept { return _n > 0 || !_structure.empty(); }
    step<outcome> evaluate(const dns_answers& answers) const;

private:
    struct set {
        const mail::header_field* aar = nullptr;
        const mail::header_field* ams = nullptr;
        const mail::header_field* as = nullptr;
    };
    std::vector<mail::header_field> _fields;  // the header section (a copy: the pipeline's may move)
    std::vector<set> _sets;                   // by instance - 1
    unsigned _n = 0;
    std::string _structure;                   // a structural fault, found at header time
    std::optional<dkim::signature> _ams;      // the newest AMS, parsed
    std::string _ams_data;                    // its canonical header data
    std::unique_ptr<dkim::body_hasher> _hasher;
    std::string _body_hash;
};

struct seal_options {
    std::string authserv_id;
    std::vector<std::string> headers;  // what the AMS signs
    int64_t now = 0;
};

// The ARC set this gateway adds (ARC-Seal, ARC-Message-Signature,
// ARC-Authentication-Results, CRLF-terminated, in that order) as instance
// N+1 over a message with these header fields, its body hash (relaxed,
// SHA-256), the chain's validation (cv=) and our Authentication-Results
// value (what follows "Authentication-Results:"), signed with `key`.
rw::result<std::string, std::string> seal(const std::vector<mail::header_field>& fields, std::string_view body_hash,
                                          const outcome& chain, std::string_view results, const dkim::signing_key& key,
                                          const seal_options& o);

}  // namespace rw::policy::arc
