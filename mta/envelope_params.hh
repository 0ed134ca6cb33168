// The ESMTP parameters of a message that outlive its SMTP session: MAIL's
// BODY, SMTPUTF8, RET and ENVID, and each recipient's NOTIFY and ORCPT
// (RFC 6152, RFC 6531, RFC 3461). The session parses them once, from the
// validated command (mta/smtp/command.hh), into this structure; the spool
// stores its encoding as opaque bytes (fs::envelope::params); delivery and
// the DSN code read the decoded structure, never the text a client sent.
//
// Encoding (version 1), little-endian:
//   u8 version = 1
//   u8 flags: bits 0-1 body_type, bit 2 smtputf8, bits 3-4 dsn_ret, bit 5 requiretls
//   u8 envid length, then the ENVID, xtext-decoded (at most 100 octets)
//   u32 recipient count, then per recipient:
//     u8 NOTIFY bits, u16 ORCPT length, then "addr-type;address" decoded
// Version 2 is version 1 followed by one field, written only when set:
//   u8 next hop length, then the next hop ("host:port", "[v6]:port")
// Version 3 is version 1 followed by two fields, written only when a pool is set:
//   u8 next hop length (0 when none), then the next hop
//   u8 pool length, then the pool's name
// Spools written before this encoding hold a text form ("RET=FULL
// ENVID=x\nNOTIFY=SUCCESS ORCPT=rfc822;a+40b" ...); decode_params reads
// both, matching keywords whole.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rw::mta {

enum class body_type : uint8_t { unspecified, seven_bit, eight_bit_mime, binary_mime };  // RFC 6152, RFC 3030
enum class dsn_ret : uint8_t { unspecified, full, hdrs };                                // RFC 3461 4.3
// RFC 3461 4.1 NOTIFY bits; k_notify_never is never combined with the others.
constexpr uint8_t k_notify_never = 1;
constexpr uint8_t k_notify_success = 2;
constexpr uint8_t k_notify_failure = 4;
constexpr uint8_t k_notify_delay = 8;

struct rcpt_params {
    uint8_t notify = 0;  // k_notify_* bits; 0 = NOTIFY absent
    std::string orcpt;   // "rfc822;user@example" with the address xtext-decoded; empty = absent
    friend bool operator==(const rcpt_params&, const rcpt_params&) = default;
};

struct envelope_params {
    body_type body = body_type::unspecified;
    bool smtputf8 = false;
    bool requiretls = false;  // RFC 8689: relay only over verified TLS to servers that offer REQUIRETLS
    dsn_ret ret = dsn_ret::unspecified;
    std::string envid;  // xtext-decoded; empty = absent
    std::vector<rcpt_params> rcpts;
    // Where delivery sends every recipient instead of their MX or route
    // (a content rule's route action); empty = as usual.
    std::string next_hop;
    // The source pool delivery connects from (a content rule's pool
    // action, or the client's mail flow policy); empty = as routed.
    std::string pool;
    friend bool operator==(const envelope_params&, const envelope_params&) = default;
};

constexpr size_t k_max_envid_bytes = 100;   // RFC 3461 4.4
constexpr size_t k_max_orcpt_bytes = 500;   // RFC 3461 4.2
constexpr size_t k_max_next_hop_bytes = 255;
constexpr size_t k_max_pool_bytes = 64;

std::string encode_params(const envelope_params& p);
// rcpts: the envelope's recipient count. Recipients the bytes do not cover
// get defaults. nullopt when the bytes are malformed (a field out of range,
// a length past the end, bytes left over, more recipients than rcpts).
std::optional<envelope_params> decode_params(std::string_view bytes, size_t rcpts);
// The text form, for tools and logs: "BODY=8BITMIME SMTPUTF8 RET=HDRS
// ENVID=xtext" then one line per recipient "NOTIFY=SUCCESS,FAILURE
// ORCPT=rfc822;xtext".
std::string describe_params(const envelope_params& p);

// Whether NOTIFY asks for this kind of report (k_notify_success, _failure
// or _delay). An absent NOTIFY means FAILURE and DELAY (RFC 3461 4.1: DELAY
// at the server's choice).
bool notify_wants(uint8_t notify, uint8_t kind);


}  // namespace rw::mta
