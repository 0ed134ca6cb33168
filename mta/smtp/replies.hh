// Every reply the SMTP server gives for a refusal that is not a parse error:
// spool trouble, limits, policy the session enforces itself. One function
// per cause, so the code, the enhanced status code and the text are decided
// in one place and two callers cannot drift apart. Each refusal also names
// its cause (`refusal::cause`), the short key the mail log records in its
// `reject` line, so the log says why without parsing the text.
//
// The parsers (mta/smtp/command.cc, mta/smtp/data_decoder.cc) and policy
// (policy/relay.cc) build their own replies next to the rule that fails;
// the session sends those as they are.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <optional>

#include "fs/spool.hh"
#include "mta/smtp/reply.hh"
#include "policy/spf.hh"

namespace rw::mta::smtp {

struct refusal {
    reply r;
    std::string_view cause;  // for the mail log: "spool full", "too big", ...; a string literal
};

// A spool that is full or failed, asked before a transaction starts (MAIL).
// nullopt-free: only call it for a health other than ok.
refusal spool_unhealthy(fs::spool_health h);

// A spool operation that failed: begin, append or commit of a message.
// RFC 5321 4.5.3.1.10 / RFC 3463 3.4: full is 452 4.3.1 (try again later,
// the client keeps the message); anything else is 451 4.3.0.
refusal spool_failed(const fs::spool_error& e);

// Body over listener.max_message_size (RFC 1870 6.1 and 6.3: 552 5.3.4).
refusal message_too_big();

// More Received: headers than smtp.max_received_headers: a mail loop
// (RFC 5321 6.3; RFC 3463 3.5: X.4.6 "Routing loop detected").
refusal too_many_hops(unsigned count, unsigned limit);
// The From: domain's DMARC policy says reject (RFC 7489 10.3: 550 5.7.1).
refusal dmarc_rejected(std::string_view domain);
// A content rule refused the message, with the reply its action names
// (policy::rules::parse_action checked the code and the text). enhanced
// is not copied: send the refusal before the decision holding it goes.
refusal content_rejected(int code, std::string_view enhanced, std::string_view text);
// The header section passed a limit of the header parser (fields, one
// field's length, the section's length): 552 5.3.4.
refusal header_too_large(std::string_view why);

// A connection over the listener's max_connections (RFC 3463 3.4: X.3.2
// "System not accepting network messages"), or over max_connections_per_ip
// (a policy limit: 4.7.0). Sent instead of the greeting.
refusal too_many_connections(std::string_view hostname);
refusal too_many_from_address(std::string_view hostname);
// A connection the daemon has no file descriptor left to serve.
refusal out_of_descriptors(std::string_view hostname);

// Resource conservation at its refusing level (RFC 3463 3.4): a new
// connection gets 421 4.3.2 "System not accepting network messages"
// instead of the greeting; MAIL gets 452 4.3.1 "Mail system full".
refusal conserving_connect(std::string_view hostname);
// A suspended listener: new connections, and open sessions once the
// suspension's delay is over, get 421 4.3.2.
refusal listener_suspended(std::string_view hostname);
refusal conserving_mail();

// What an SPF outcome of MAIL FROM gets when policy acts on it (RFC 7372
// 3.2): a fail, when reject_fail, is 550 5.7.23 with the domain's
// explanation (RFC 7208 8.4); a temperror, when tempfail_temperror, is
// 451 4.7.24 (8.6). nullopt: accept.
std::optional<refusal> spf_refusal(const policy::spf::outcome& o, bool reject_fail, bool tempfail_temperror);

// One reply line as sent: "421 4.3.2 text\r\n".
std::string wire(const reply& r);

}  // namespace rw::mta::smtp
