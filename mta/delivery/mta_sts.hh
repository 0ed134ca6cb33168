// MTA-STS (RFC 8461): a receiving domain publishes, over HTTPS, which MX
// hosts may receive its mail and whether TLS to them must be verified.
//
// Discovery: a TXT record at _mta-sts.DOMAIN ("v=STSv1; id=ID;"), then the
// policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt, fetched with a
// verified certificate, no redirect followed, at most 64 KiB. The policy is
// cached until its max_age and fetched again when the TXT record's id
// changes; a failed fetch keeps the cached policy (RFC 8461 5.1).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/result.hh"
#include "runtime/net/dns.hh"
#include "runtime/net/tls.hh"
#include "runtime/reactor/task.hh"

namespace rw::mta::delivery::sts {

enum class mode : uint8_t { none, testing, enforce };
std::string_view to_string(mode m);

struct policy {
    mode m = mode::none;
    std::vector<std::string> mx;  // "mx.example.com" or "*.example.com", lower case
    int64_t max_age = 0;          // seconds
};

// The policy file (RFC 8461 3.2); the error says what is wrong.
result<policy, std::string> parse_policy(std::string_view body);
// The TXT record's id (RFC 8461 3.1); nullopt when the record is not an STSv1 one.
std::optional<std::string> parse_txt(std::string_view txt);
// Whether an MX host name matches one of the policy's patterns (RFC 8461 4.1:
// a wildcard stands for exactly one left-most label).
bool mx_matches(const policy& p, std::string_view host);

// An HTTPS GET of https://HOST/PATH on port 443 (addresses from dns),
// verified with ctx against HOST; the body of a 200 answer, else why not.
task<result<std::string, std::string>> https_get(net::resolver* dns, std::string host, std::string path,
                                                 const net::tls_context* ctx, std::chrono::milliseconds timeout);

}  // namespace rw::mta::delivery::sts
