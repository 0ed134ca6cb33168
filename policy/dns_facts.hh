// DNS answers as policy sees them. A policy stage that needs DNS does not
// ask a resolver: it is a pure function of the facts and of the answers
// gathered so far, and returns either its outcome or the queries it needs
// next (every query it can already name, so the caller asks them in
// parallel). The caller (mta) resolves them through the reactor's
// resolver, whose cache keeps each answer for its TTL, adds them to the
// set and runs the stage again:
//
//   policy::dns_answers answers;
//   for (;;) {
//       auto s = policy::spf::evaluate(rq, answers);
//       if (s.done) break;
//       co_await resolve(resolver, s.need, answers);   // all at once
//   }
//
// Re-running from the start keeps every stage deterministic, testable
// without a network, and free of coroutine state; a stage's cost is its
// DNS round trips, not the few microseconds of re-evaluation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/net/addr.hh"

namespace rw::policy {

enum class rrtype : uint16_t { a = 1, ptr = 12, mx = 15, txt = 16, aaaa = 28 };
std::string_view to_string(rrtype t) noexcept;

struct dns_query {
    rrtype type = rrtype::a;
    std::string name;  // lower case, no trailing dot
    friend bool operator==(const dns_query&, const dns_query&) = default;
};

enum class dns_status {
    ok,         // records in the answer
    nxdomain,   // no such name
    nodata,     // the name has no record of this type
    temporary,  // timeout, SERVFAIL, malformed answer
    bad_name,   // the name cannot be asked (a label over 63 octets, ...)
};

struct dns_answer {
    dns_status status = dns_status::temporary;
    // TXT: one string per record (its character-strings joined); PTR: the
    // names; MX: the exchanges, by preference.
    std::vector<std::string> names;
    std::vector<rw::net::address> addrs;  // A, AAAA
    std::string error;                    // what the resolver said, for reasons
};

// The answers of one transaction (or one trace), by type and name.
class dns_answers {
public:
    const dns_answer* find(rrtype t, std::string_view name) const;
    void put(const dns_query& q, dns_answer a);
    size_t size() const noexcept { return _answers.size(); }

private:
    static std::string key(rrtype t, std::string_view name);
    std::unordered_map<std::string, dns_answer> _answers;
};

// One run of a stage: its outcome, or the queries it needs first.
template <typename T>
struct step {
    std::optional<T> done;
    std::vector<dns_query> need;
};

}  // namespace rw::policy
