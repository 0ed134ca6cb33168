// cidr: one IPv4 or IPv6 network ("10.0.0.0/8", "2001:db8::/32", or a bare
// address meaning /32 or /128), and whether a peer address falls inside it.
// Used by relay control (relay_networks) and, later, sender groups.
//
// IPv4-mapped IPv6 (::ffff:a.b.c.d) is IPv4, on both sides: a peer that
// reached a dual-stack listener as ::ffff:192.0.2.1 matches 192.0.2.0/24
// exactly as if it had come in on an IPv4 socket, and a network written as
// "::ffff:192.0.2.0/120" is stored as 192.0.2.0/24. The other consequence:
// a native IPv6 network never contains an IPv4 peer, so "::/0" means every
// IPv6 peer and no IPv4 one. is_catch_all() flags networks that contain
// every peer of a family (0.0.0.0/0, ::ffff:0:0/96, ::/0), which relay
// control must never be given.
//
// Parsing is strict: no host bits past the prefix (a typo such as
// 10.0.0.1/8 is refused rather than guessed at), no zone ids, no spaces,
// decimal prefix length without sign or leading zeros. Value type, no
// allocation; safe to share between threads once built.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "runtime/net/addr.hh"

namespace rw::policy {

class cidr {
public:
    // "192.0.2.0/24", "2001:db8::/32", "::ffff:192.0.2.0/120", "[2001:db8::]/32",
    // "192.0.2.7" (= /32). nullopt on anything else.
    static std::optional<cidr> parse(std::string_view text);
    // Same, saying what is wrong in `why` on failure (for configuration errors).
    static std::optional<cidr> parse(std::string_view text, std::string& why);
    // The one-address network holding `a` (/32 or /128); nullopt for an
    // address that is neither IPv4 nor IPv6.
    static std::optional<cidr> host(const rw::net::address& a);

    bool contains(const rw::net::address& a) const noexcept;

    bool is_v6() const { return _v6; }
    unsigned prefix_len() const { return _prefix_len; }
    // Contains every address of its family (0.0.0.0/0 or ::/0).
    bool is_catch_all() const { return _prefix_len == 0; }
    std::string to_string() const;  // canonical: "192.0.2.0/24", "2001:db8::/32"

    friend bool operator==(const cidr&, const cidr&) = default;

private:
    std::array<uint8_t, 16> _bytes{};  // IPv4 uses the first 4
    uint8_t _prefix_len = 0;
    bool _v6 = false;
};

// An address reduced to its family and bytes, with IPv4-mapped IPv6 turned
// into IPv4. Shared by cidr and the rate limiter. `family` is 0 for an
// address that is neither (an unset rw::net::address).
struct canonical_ip {
    std::array<uint8_t, 16> bytes{};  // IPv4 uses the first 4, the rest are 0
    uint8_t family = 0;               // 4, 6, or 0
    friend bool operator==(const canonical_ip&, const canonical_ip&) = default;
};
canonical_ip canonicalize(const rw::net::address& a) noexcept;

}  // namespace rw::policy
