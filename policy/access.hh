// The host access table: sender groups, and the mail flow policy each one
// puts a client under. Decided once per connection, before the greeting
// (and again at MAIL when a group names SPF results, which exist only
// then), as a pure function of the client's facts and DNS answers
// (dns_facts.hh: the caller asks the queries a step names and runs it
// again).
//
// A sender group holds a client when ANY of its criteria does:
//   networks          the client's address is in one of these CIDRs
//   rdns              its forward-confirmed reverse DNS name (a PTR name
//                     whose A/AAAA records include the client) is one of
//                     these: "mail.example.test" exactly, or "*.example.test"
//                     (or ".example.test") for any name below it
//   rdns_unconfirmed  it has no forward-confirmed name (a DNS failure
//                     confirms nothing either way and never matches)
//   dnsbl_min_score   its DNSBL score is at least this (0: not a criterion)
//   dnsbl_max_score   its DNSBL score is at most this (0: not a criterion):
//                     allowlists score negative
//   spf               the SPF result of MAIL FROM is one of these (known
//                     only at MAIL; such a criterion never holds at connect)
// Groups are tried in order; the first that holds wins; a client no group
// holds belongs to the last, the default group (UNKNOWNLIST).
//
// The DNSBL score is postscreen's: the sum of the weights of the listed
// sites, each site of `dnsbl_sites` written "zone[=filter][*weight]":
//   "bl.example.test"                      listed on any 127.0.0.0/8 answer, weight 1
//   "bl.example.test=127.0.0.2*3"          only the answer 127.0.0.2, weight 3
//   "wl.example.test=127.0.[0..255].[1..3]*-2"   octet ranges [a..b], lists [a;b]
// IPv4 clients are asked as d.c.b.a.zone, IPv6 as their 32 reversed
// nibbles. An unanswered query (timeout, SERVFAIL) counts as not listed.
//
// Lookups cost only what a decision needs: none while groups are decided
// by address alone; a group's reverse-DNS and DNSBL lookups are asked
// together (one round for the PTR and the sites, one more to confirm the
// PTR names) when the walk reaches the first group that needs them, and
// the answers serve every later group.
//
// Immutable once built; shared by every core.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/cidr.hh"
#include "policy/dns_facts.hh"
#include "policy/spf.hh"
#include "runtime/base/result.hh"

namespace rw::policy::access {

// One DNSBL (or DNSWL) site.
struct dnsbl_site {
    std::string zone;  // lower case, no trailing dot
    // Per octet of the answer, the values that count; none: any 127.x.y.z.
    std::optional<std::array<std::bitset<256>, 4>> filter;
    int weight = 1;

    // "zone[=filter][*weight]"; the error says what is wrong.
    static result<dnsbl_site, std::string> parse(std::string_view text);
    // Whether answer address `a` lists the client.
    bool listed_by(const rw::net::address& a) const noexcept;
    std::string to_string() const;
};

// The name to ask for `peer` on `zone` (nullopt for an address of neither family).
std::optional<std::string> dnsbl_name(const rw::net::address& peer, std::string_view zone);
// The PTR name of `peer` (d.c.b.a.in-addr.arpa, or the ip6.arpa nibbles).
std::optional<std::string> reverse_name(const rw::net::address& peer);

enum class flow_action { accept, reject, relay };
std::string_view to_string(flow_action a) noexcept;
enum class tls_mode { off, preferred, required };
std::string_view to_string(tls_mode t) noexcept;

// A mail flow policy: what a sender group's clients may do. Limits of 0
// leave the listener's own (message size, recipients per message,
// connections per client) or mean no limit (messages per session,
// recipients per hour).
struct flow_policy {
    std::string name;
    flow_action action = flow_action::accept;
    // For reject: the greeting refused, "CODE X.Y.Z text".
    int reject_code = 554;
    std::string reject_enhanced = "5.7.1";
    std::string reject_text = "Access denied";
    uint64_t max_message_size = 0;
    unsigned max_messages_per_session = 0;
    unsigned max_recipients_per_message = 0;
    unsigned max_recipients_per_hour = 0;  // per client address, every core together
    unsigned max_connections_per_client = 0;
    tls_mode tls = tls_mode::preferred;  // off: STARTTLS not offered; required: before MAIL
    bool auth = true;                    // offer SMTP AUTH (as the listener allows)
    bool sender_auth = true;             // SPF, DKIM, DMARC, ARC (as [authentication] says)
    bool content_rules = true;
    bool screening = true;               // the pregreet and protocol tests ([screening])
    bool antivirus = true;               // the [antivirus] scanner, when there is one
    bool antispam = true;                // the [antispam] scanner, when there is one
    bool milters = true;                 // the [[milter]] filters
    std::string pool;                    // the source pool of its mail ("": as routed)
};

struct group {
    std::string name;
    size_t policy = 0;  // index into the table's policies
    std::vector<cidr> networks;
    std::vector<std::string> rdns;  // lower case: "mail.example.test" or ".example.test"
    bool rdns_unconfirmed = false;
    int dnsbl_min_score = 0, dnsbl_max_score = 0;
    std::vector<spf::result> spf;

    bool needs_rdns() const { return !rdns.empty() || rdns_unconfirmed; }
    bool needs_dnsbl() const { return dnsbl_min_score != 0 || dnsbl_max_score != 0; }
};

// The client, as known when the table is consulted.
struct facts {
    rw::net::address peer;
    std::optional<spf::result> spf;  // at MAIL, when SPF was checked
};

struct classification {
    size_t group = 0, policy = 0;
    std::string matched;               // "network 192.0.2.0/24", "rdns mail.example.test", "dnsbl score 4", "default"
    std::optional<std::string> rdns;   // the forward-confirmed name, when it was looked up and found
    bool rdns_temporary = false;       // the lookup failed for now
    std::optional<int> dnsbl_score;    // when it was looked up
    std::vector<std::string> listed;   // the zones that listed the client
};

class table {
public:
    // Groups in order, the default (catch-all) one last; every group's
    // policy index inside `policies`. The error names what is wrong.
    static result<std::shared_ptr<const table>, std::string> build(std::vector<group> groups,
                                                                   std::vector<flow_policy> policies,
                                                                   std::vector<dnsbl_site> sites);

    step<classification> classify(const facts& f, const dns_answers& answers) const;

    // Some group names SPF results: the client is classified again at MAIL.
    bool needs_spf() const noexcept { return _needs_spf; }
    const std::vector<group>& groups() const noexcept { return _groups; }
    const std::vector<flow_policy>& policies() const noexcept { return _policies; }
    const std::vector<dnsbl_site>& sites() const noexcept { return _sites; }

private:
    std::vector<group> _groups;
    std::vector<flow_policy> _policies;
    std::vector<dnsbl_site> _sites;
    bool _needs_spf = false;
};

// "CODE X.Y.Z text" with a 4xx or 5xx code whose class the enhanced code
// shares, and printable ASCII text (at most 200 octets).
struct reply_text {
    int code = 0;
    std::string enhanced, text;
};
std::optional<reply_text> parse_reply(std::string_view s);

// "pass", "fail", ... as spf::to_string writes them.
std::optional<spf::result> parse_spf_result(std::string_view s);

// Whether `name` (lower case, no trailing dot) matches an rdns pattern.
bool rdns_matches(std::string_view pattern, std::string_view name) noexcept;

}  // namespace rw::policy::access
