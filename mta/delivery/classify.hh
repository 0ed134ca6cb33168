// What kind of failure a delivery reply is: every temporary and permanent
// reply (a remote server's, or the gateway's own when it could not get
// one) is put in one class, from its code, its enhanced status code
// (RFC 3463) and its text, for the mail log, the metrics and the DSN.
//
//   bad-mailbox   the address does not exist or no longer takes mail
//                 (X.1.1, X.1.3, X.1.6, X.2.1, "user unknown", ...)
//   mailbox-full  over quota (X.2.2, X.3.1 with "quota"/"full")
//   policy        refused for what the message or sender is: spam,
//                 content, authentication (SPF, DKIM, DMARC), size,
//                 relaying (X.7.x other than below, X.3.4, X.6.x)
//   reputation    refused for who sends: the sending IP or domain is
//                 listed, or sends too much (blocklists, "reputation",
//                 rate limits, X.7.1 with such text)
//   dns           the destination cannot be resolved (X.1.2, X.4.3,
//                 X.4.4, no MX, NXDOMAIN)
//   network       no usable connection: refused, reset, timed out, lost
//                 (X.4.1, X.4.2, X.4.7 and replies without a code)
//   tls           TLS was needed or failed (X.7.10, X.7.11, X.7.5,
//                 handshake and certificate errors)
//   unknown       none of these
//
// The text wins over a generic enhanced code (X.0.0, X.7.1, X.5.x,
// none): providers say more in words than in codes. A specific enhanced
// code wins over the text.
#pragma once

#include <cstdint>
#include <string_view>

namespace rw::mta::delivery {

enum class reply_class : uint8_t { bad_mailbox, mailbox_full, policy, reputation, dns, network, tls, unknown };
inline constexpr size_t k_reply_classes = 8;
std::string_view to_string(reply_class c) noexcept;

// code: the reply code (0: no reply); enhanced: "5.1.1" or ""; text: the
// reply's text (or the gateway's reason).
reply_class classify(int code, std::string_view enhanced, std::string_view text);
// The same from a reply line as recorded: "550 5.1.1 text", or a reason
// without a code ("mx.example: connection refused").
reply_class classify_line(std::string_view line);

}  // namespace rw::mta::delivery
