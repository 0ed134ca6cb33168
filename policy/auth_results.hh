// The Authentication-Results header field (RFC 8601): what this gateway
// found out about a message, for the inside to act on, and the check that
// tells such a field from one that only claims to come from us.
//
//   Authentication-Results: mx.example.net;
//   	spf=pass (mechanism "ip4:192.0.2.0/24" matched) smtp.mailfrom=example.com
//
// Pure functions; the SMTP session adds the field to the message through
// the spool's added headers and leaves out incoming ones with our
// authserv-id (RFC 8601 5).
#pragma once

#include <string>
#include <string_view>

#include <vector>

#include "policy/arc.hh"
#include "policy/dkim.hh"
#include "policy/dmarc.hh"
#include "policy/spf.hh"

namespace rw::policy {

struct auth_findings {
    const spf::outcome* spf = nullptr;                // null: not checked
    const spf::outcome* spf_helo = nullptr;           // the HELO identity's own check, if made
    const std::vector<dkim::verdict>* dkim = nullptr;  // null: not checked; empty: no signature
    const dmarc::outcome* dmarc = nullptr;             // null: not evaluated
    const arc::outcome* arc = nullptr;                 // null: not validated
};

// The whole field, folded, ending in CRLF. With nothing checked it says
// "none" (RFC 8601 2.2).
std::string authentication_results(std::string_view authserv_id, const auth_findings& f);

// Whether an Authentication-Results field value (unfolded, after the
// colon) names authserv_id: its first token, after any comments, compared
// without case (RFC 8601 2.2, 5).
bool names_authserv_id(std::string_view value, std::string_view authserv_id);

}  // namespace rw::policy
