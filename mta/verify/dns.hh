// Runs policy stages that need DNS (policy/dns_facts.hh) on the reactor:
// each round's queries go to the core's resolver at once, in parallel, and
// the stage runs again with their answers until it is done. The resolver's
// cache keeps every answer for its TTL, so a sender's records cost one
// round trip per TTL, not one per message.
#pragma once

#include <span>

#include "policy/access.hh"
#include "policy/arc.hh"
#include "policy/dkim.hh"
#include "policy/dmarc.hh"
#include "policy/dns_facts.hh"
#include "policy/spf.hh"
#include "runtime/net/dns.hh"
#include "runtime/reactor/task.hh"

namespace rw::mta::verify {

// A bound on rounds of one stage: the SPF limits allow about 25 (10 terms,
// each an MX or PTR round after it, the record, exp=); this stops a stage
// that keeps asking.
inline constexpr unsigned k_max_rounds = 64;

// Asks every query at once and adds the answers to `answers`.
task<void> resolve(net::resolver& r, std::span<const policy::dns_query> queries, policy::dns_answers& answers);

// check_host() for the request, with answers from r (and what `answers`
// already holds, which the lookups made here are added to).
task<policy::spf::outcome> check_spf(net::resolver& r, policy::spf::request rq, const policy::spf::options& o,
                                     policy::dns_answers& answers);

// The verdicts of a message's DKIM signatures (v has seen the whole
// message), their key records asked for in parallel.
task<std::vector<policy::dkim::verdict>> check_dkim(net::resolver& r, const policy::dkim::verification& v,
                                                    policy::dns_answers& answers);

// DMARC for the request: the policy records (and np='s existence checks).
task<policy::dmarc::outcome> check_dmarc(net::resolver& r, policy::dmarc::request rq, policy::dns_answers& answers);

// The ARC chain's validation (v has seen the whole message).
task<policy::arc::outcome> check_arc(net::resolver& r, const policy::arc::verification& v, policy::dns_answers& answers);

// The client's sender group (policy/access.hh): only the lookups the
// table's walk asks for. r null: every lookup fails as temporary.
task<policy::access::classification> classify_client(net::resolver* r, const policy::access::table& t,
                                                     policy::access::facts f, policy::dns_answers& answers);

}  // namespace rw::mta::verify
