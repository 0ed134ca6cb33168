// SMTP command and address parsing: one command line (without its CRLF) in,
// a validated `command` or the exact reply to send out. Pure and I/O-free:
// no allocation beyond the strings of the result, no state, no exceptions.
// Every byte a stranger sends reaches this code, so it is strict (RFC 5321
// 4.1 grammar, RFC 3463 enhanced codes on every refusal) and bounded (the
// limits below), lenient only where real clients need it (documented where
// it happens). The session (mta/smtp/session.*) calls parse_command once per
// received line and only maps the result; policy gets the mailboxes.
//
// Limits, all on octets:
//   any command line          512 incl. CRLF      RFC 5321 4.5.3.1.4
//   MAIL / RCPT line         2048 incl. CRLF      extensions may raise the
//                                                 limit (RFC 5321 4.5.3.1.4,
//                                                 RFC 1869); DSN (RFC 3461),
//                                                 SMTPUTF8 (RFC 6531) and
//                                                 AUTH= need it
//   local part                 64                 RFC 5321 4.5.3.1.1
//   domain                    255                 RFC 5321 4.5.3.1.2
//   ASCII label                63                 RFC 1035 2.3.4
//   path (with < >)           256                 RFC 5321 4.5.3.1.3
//   ENVID / ORCPT values  100/500                 RFC 3461 4.4 / 4.2
//   SIZE, BDAT sizes    20 digits                 RFC 1870 / RFC 3030
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mta/envelope_params.hh"
#include "mta/smtp/reply.hh"
#include "runtime/base/result.hh"

namespace rw::mta::smtp {

// RFC 5321 4.5.3.1.4: a command line, including the command word and the
// CRLF, is at most 512 octets.
constexpr size_t k_max_command_line = 512;
// MAIL and RCPT lines carrying ESMTP parameters may be longer: RFC 5321
// 4.5.3.1.4 lets extensions raise the limit, and RFC 3461 (ENVID, ORCPT up to
// 500 octets), RFC 4954 (AUTH=) and RFC 6531 (UTF-8 paths) do. We allow
// 2048 octets incl. CRLF for MAIL and RCPT only; the session must buffer a
// line up to this size before calling parse_command, which then applies the
// per-verb limit (500 5.5.6 beyond it).
constexpr size_t k_max_command_line_ext = 2048;
constexpr size_t k_max_local_part = 64;     // RFC 5321 4.5.3.1.1
constexpr size_t k_max_domain = 255;        // RFC 5321 4.5.3.1.2
constexpr size_t k_max_label = 63;          // RFC 1035 2.3.4
constexpr size_t k_max_path = 256;          // RFC 5321 4.5.3.1.3, incl. "<" ">"
constexpr size_t k_max_envid = 100;         // RFC 3461 4.4
constexpr size_t k_max_orcpt = 500;         // RFC 3461 4.2
constexpr size_t k_max_number_digits = 20;  // RFC 1870 size-value, RFC 3030 chunk-size
constexpr size_t k_max_params = 16;         // more ESMTP parameters than we know of is an error
constexpr size_t k_max_sasl_mech = 20;      // RFC 4422 3.1
static_assert(k_max_command_line <= k_max_command_line_ext);
static_assert(k_max_path <= k_max_command_line);

enum class verb { helo, ehlo, mail, rcpt, data, bdat, rset, noop, quit, vrfy, expn, help, starttls, auth, unknown };

// Upper-case command word, for logs ("MAIL"); "?" for verb::unknown.
std::string_view to_string(verb v) noexcept;

struct esmtp_param {
    std::string key;    // upper-cased
    std::string value;  // as sent (empty when the parameter had no "=value")
    friend bool operator==(const esmtp_param&, const esmtp_param&) = default;
};

// A mailbox (RFC 5321 4.1.2). `local` is the local part's content: a quoted
// local part is stored unquoted and unescaped ("a b"@x -> `a b`); to_string
// quotes it again. `domain` is as sent (no case folding); an address literal
// keeps its brackets ("[192.0.2.1]", "[IPv6:2001:db8::1]") and sets
// domain_literal. `utf8` is set when either part holds non-ASCII (RFC 6531).
// RCPT TO:<Postmaster> (RFC 5321 4.1.1.3) gives local "Postmaster" (as sent)
// and an empty domain; nothing else has an empty domain.
struct mailbox {
    std::string local;
    std::string domain;
    bool domain_literal = false;
    bool utf8 = false;
    friend bool operator==(const mailbox&, const mailbox&) = default;
};

// Values of the MAIL and RCPT parameters we know, already validated; the
// raw forms stay in command::params.
using mta::body_type;  // mta/envelope_params.hh
using mta::dsn_ret;
using mta::k_notify_delay;
using mta::k_notify_failure;
using mta::k_notify_never;
using mta::k_notify_success;

struct command {
    verb v = verb::unknown;
    std::string domain;               // HELO/EHLO argument (a domain, or an address literal with brackets)
    bool null_path = false;           // MAIL FROM:<>
    mailbox path;                     // MAIL/RCPT path (source route stripped)
    bool had_source_route = false;    // "<@a,@b:user@d>" was given
    std::vector<esmtp_param> params;  // MAIL/RCPT parameters, in the order sent
    uint64_t bdat_size = 0;           // BDAT n [LAST]
    bool bdat_last = false;
    std::string auth_mechanism;       // AUTH mech (upper-cased) [initial-response]
    std::string auth_initial;         // as sent: base64, "=" for an empty response, or empty if absent
    std::string text;                 // argument of NOOP/VRFY/EXPN/HELP

    // Decoded forms of the known parameters (added for the session's convenience).
    bool smtputf8 = false;                     // MAIL ... SMTPUTF8 (RFC 6531 3.4)
    bool requiretls = false;                   // MAIL ... REQUIRETLS (RFC 8689 3)
    bool has_size = false;                     // MAIL ... SIZE=n (RFC 1870)
    uint64_t size = 0;                         // saturates at UINT64_MAX (always over any limit)
    body_type body = body_type::unspecified;   // MAIL ... BODY=
    dsn_ret ret = dsn_ret::unspecified;        // MAIL ... RET=
    std::string envid;                         // MAIL ... ENVID= (xtext as sent)
    std::string auth_param;                    // MAIL ... AUTH= (xtext as sent, may be "<>"; RFC 4954 5)
    uint8_t notify = 0;                        // RCPT ... NOTIFY= (k_notify_* bits; 0 = absent)
    std::string orcpt;                         // RCPT ... ORCPT= (addr-type;xtext as sent)

    friend bool operator==(const command&, const command&) = default;
};

// line: one command line WITHOUT the CRLF. utf8_ok: the session got
// SMTPUTF8 on this transaction's MAIL (RFC 6531); for a MAIL command a
// SMTPUTF8 parameter on the same line also allows a UTF-8 reverse-path.
// The session must check that the client may use what it asked for
// (EHLO before extensions, SMTPUTF8/DSN/CHUNKING advertised, AUTH= ...):
// this layer checks syntax only. Never returns a command with verb::unknown.
rw::result<command, reply> parse_command(std::string_view line, bool utf8_ok);

// "local@domain", no angle brackets, no source route.
rw::result<mailbox, reply> parse_mailbox(std::string_view s, bool utf8_ok);

// local@domain, quoting the local part when it is not a Dot-string
// (RFC 5321 4.1.2: quote only when needed). parse_mailbox(to_string(m))
// gives m back.
std::string to_string(const mailbox& m);

// True when the local part holds '%', '!' or '@' (the last only possible
// quoted): the old relay-routing syntaxes, which policy must refuse to
// route as a relay ("user%other@us", "other!user@us").
bool has_relay_chars(const mailbox& m) noexcept;

// Whether a command line is another protocol talking to us: an HTTP
// request line (CONNECT, GET, POST, HEAD, PUT, OPTIONS, DELETE, TRACE,
// PATCH) or a header field ("Host: ...", "User-Agent: ..."): what a proxy
// abused to reach port 25 sends (postscreen's forbidden commands).
bool looks_non_smtp(std::string_view line) noexcept;

}  // namespace rw::mta::smtp
