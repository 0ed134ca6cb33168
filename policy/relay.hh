// Recipient access and relay control: which RCPT TO mailboxes we take, and
// whether we take them as mail for one of our domains or as mail to relay.
// A pure function of the connection, sender and recipient facts and the
// configuration; no I/O, no state after construction.
//
// The rule (Postfix's reject_unauth_destination, with allow_untrusted_routing
// off), in the order it is applied:
//   1. the domain must be a domain name or an IPv4/IPv6 address literal,
//      else 550 5.1.2; the local part must not be empty, else 550 5.1.3;
//   2. a source route (<@a,@b:user@c>) -> 550 5.7.1, whoever the client:
//      RFC 5321 Appendix C lets a server decline them, and nothing
//      legitimate has sent one in decades;
//   3. a domain we accept -> accept, relay=false; but if the local part holds
//      a routing character ('%', '!', or a quoted '@': the percent hack, a
//      bang path, "user@other"@ours) -> 550 5.7.1, whoever the client, since
//      the host behind us might route it onward (a client that may relay
//      can name the final domain itself);
//   4. an address literal we do not accept -> 550 5.7.1, unless
//      allow_domain_literals (RFC 5321 4.1.3 permits literals, but real mail
//      does not use them and relay abuse does: user%other@[our.own.ip]);
//   5. any other domain -> accept, relay=true, if the client may relay;
//   6. otherwise 554 5.7.1 "<rcpt>: Relay access denied" (Postfix wording).
// Nothing here is ever interpreted as routing: an accepted mailbox goes to
// its own domain, its local part verbatim (RFC 5321 2.3.11: only that
// domain's host interprets it).
// A client may relay when its address is inside relay_networks, its sender
// group's mail flow policy says relay (connection_facts::relay_granted), or it has
// authenticated (SMTP AUTH). Nothing else grants it: not the MAIL FROM
// domain (a forged local sender gets nothing), not HELO, not TLS.
//
// Domains compare without case and with one trailing dot ignored. An
// accepted domain "example.test" is that domain only; ".example.test" (or
// "*.example.test") means every subdomain of it, not the domain itself, as in
// Postfix's relay_domains. An address literal is ours only when the
// configuration lists it ("[192.0.2.1]", "[IPv6:2001:db8::1]"; compared as
// addresses, so any spelling of the same address matches).
//
// Built by mta from admin's smtp_config when a configuration is applied;
// one immutable object can be shared by every shard and thread.
#pragma once

#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "policy/cidr.hh"
#include "policy/facts.hh"

namespace rw::policy {

struct relay_config {
    std::vector<std::string> accepted_domains;  // "example.test", ".example.test", "[192.0.2.1]"
    std::vector<cidr> relay_networks;           // peers that may relay without authenticating
    bool allow_domain_literals = false;         // accept literals not in accepted_domains (rule 4)
};

class relay_policy {
public:
    // Domains are lower-cased and their trailing dot dropped. Entries that
    // validate() would refuse are left out: a malformed domain never matches,
    // and a catch-all network (0.0.0.0/0, ::ffff:0:0/96, ::/0) never grants
    // relaying.
    explicit relay_policy(relay_config cfg);

    // What is wrong with a configuration, one line per problem ("" entries,
    // bad domain syntax, catch-all networks that would make an open relay).
    // Empty when the constructor will use every entry. For admin's validation.
    static std::vector<std::string> validate(const relay_config& cfg);

    // The RCPT decision; see the file comment.
    verdict check_recipient(const connection_facts& conn, const sender_facts& sender,
                            const recipient_facts& rcpt) const noexcept;

    // Whether mail for `domain` is ours (case, one trailing dot, brackets
    // around an address literal all handled here). False for garbage.
    bool is_local_domain(std::string_view domain) const noexcept;

    // Whether the client may relay: peer in relay_networks, or authenticated.
    bool may_relay(const connection_facts& conn) const noexcept;

private:
    bool is_local_canonical(const std::string& domain) const;

    std::unordered_set<std::string> _exact;      // "example.test", "[192.0.2.1]", "[ipv6:2001:db8::1]"
    std::unordered_set<std::string> _wildcards;  // ".example.test": strict subdomains
    std::vector<cidr> _relay_networks;
    bool _allow_domain_literals = false;
};

// A recipient domain in the form relay_policy compares: lower case, no
// trailing dot, address literals as "[192.0.2.1]" / "[ipv6:2001:db8::1]"
// (canonical inet_ntop text). On failure, nullopt and `why` says what is
// wrong ("empty domain", "label longer than 63 characters", ...).
// `literal` says the text is an address literal even without brackets.
std::optional<std::string> canonical_domain(std::string_view domain, bool literal, std::string& why);

}  // namespace rw::policy
