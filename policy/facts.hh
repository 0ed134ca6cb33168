// The facts policy decides on, and the verdict it gives back. mta copies
// what it knows about a connection and an envelope into these plain structs
// (policy never sees a socket, a session or the spool) and maps a verdict
// to an SMTP reply in one place (mta/smtp/replies.cc).
//
// Values, no invariants beyond their members; each session owns its own
// copies on its shard.
#pragma once

#include <string>

#include "runtime/net/addr.hh"

namespace rw::policy {

// What we know about the client once it has connected (and maybe said HELO,
// started TLS, authenticated).
struct connection_facts {
    rw::net::address peer;  // the client's address as accepted (IPv4-mapped IPv6 is fine)
    std::string helo;       // the HELO/EHLO argument as given, "" before HELO
    bool tls = false;       // the session runs over TLS (STARTTLS done, or implicit TLS)
    bool authenticated = false;  // SMTP AUTH succeeded; only this and the peer address grant relaying
    std::string auth_user;       // the authenticated identity, "" if none
    bool relay_granted = false;  // its sender group's mail flow policy lets it relay (access.hh)
};

// One RCPT TO mailbox, as parsed by the SMTP layer.
//
// `local` is the local part (quoted or not; either way it is checked for
// '%', '!' and '@'). `domain` is the domain as the client wrote it: policy
// ignores case and one trailing dot itself. An address literal may be
// given with or without its brackets ("[192.0.2.1]", or "192.0.2.1" with
// domain_literal set; "[IPv6:2001:db8::1]" likewise).
//
// A source route (RFC 5321 4.1.1.3, <@hosta,@hostb:user@domain>) must
// already be stripped: local/domain are the final mailbox, and
// had_source_route only records that one was there. Policy judges the
// final mailbox alone, as RFC 5321 Appendix C says a server SHOULD: the
// route is never used, neither to grant relaying nor to deliver.
struct recipient_facts {
    std::string local;
    std::string domain;
    bool domain_literal = false;   // domain is an address literal ([1.2.3.4], [IPv6:...])
    bool has_relay_chars = false;  // the parser saw '%', '!' or a quoted '@' in the local part
    bool had_source_route = false;
};

// MAIL FROM. Never a source of relay permission: a client that claims one
// of our own domains as its sender is not trusted for that.
struct sender_facts {
    bool null_sender = false;  // MAIL FROM:<>
    std::string local, domain;
};

enum class action { accept, reject, tempfail };

// The outcome of one decision. code/enhanced/reason are what the client
// should be told: "<code> <enhanced> <reason>", e.g.
// "554 5.7.1 <user@other.test>: Relay access denied". reason never holds
// CR, LF or other control characters (anything taken from the envelope is
// cleaned first), and is bounded in length.
struct verdict {
    action act = action::accept;
    int code = 250;
    std::string enhanced = "2.1.5";
    std::string reason;
    // For an accepted recipient: true when it was accepted on relay
    // permission (its domain is not one of ours and the client may relay),
    // false when the domain is ours.
    bool relay = false;
};

}  // namespace rw::policy
