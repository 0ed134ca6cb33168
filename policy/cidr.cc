#include "policy/cidr.hh"

#include <arpa/inet.h>

#include <cstring>

#include <fmt/format.h>

namespace rw::policy {

namespace {

constexpr size_t k_max_cidr_text = 64;  // longest IPv6 text + "/128" fits well within

bool is_v4_mapped(const uint8_t* b) {
    static constexpr uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(b, prefix, sizeof prefix) == 0;
}

// Whether the first `bits` bits of a and b agree.
bool prefix_equal(const uint8_t* a, const uint8_t* b, unsigned bits) {
    unsigned whole = bits / 8;
    if (std::memcmp(a, b, whole) != 0)
        return false;
    unsigned rest = bits % 8;
    if (rest == 0)
        return true;
    uint8_t mask = static_cast<uint8_t>(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

}  // namespace

canonical_ip canonicalize(const rw::net::address& a) noexcept {
    canonical_ip c;
    if (a.family() == AF_INET) {
        auto* sin = reinterpret_cast<const sockaddr_in*>(a.sa());
        std::memcpy(c.bytes.data(), &sin->sin_addr, 4);
        c.family = 4;
    } else if (a.family() == AF_INET6) {
        auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a.sa());
        const auto* b = reinterpret_cast<const uint8_t*>(&sin6->sin6_addr);
        if (is_v4_mapped(b)) {
            std::memcpy(c.bytes.data(), b + 12, 4);
            c.family = 4;
        } else {
            std::memcpy(c.bytes.data(), b, 16);
            c.family = 6;
        }
    }
    return c;
}

std::optional<cidr> cidr::parse(std::string_view text) {
    std::string why;
    return parse(text, why);
}

std::optional<cidr> cidr::parse(std::string_view text, std::string& why) {
    if (text.empty()) {
        why = "empty";
        return std::nullopt;
    }
    if (text.size() > k_max_cidr_text) {
        why = "too long to be a network";
        return std::nullopt;
    }
    if (text.find('\0') != std::string_view::npos) {
        why = "contains a NUL byte";
        return std::nullopt;
    }
    size_t slash = text.find('/');
    std::string_view ip = text.substr(0, slash);
    if (ip.size() >= 2 && ip.front() == '[' && ip.back() == ']')
        ip = ip.substr(1, ip.size() - 2);
    std::string ip_z(ip);  // inet_pton wants a NUL-terminated string
    uint8_t bytes[16] = {};
    bool v6 = false;
    if (inet_pton(AF_INET, ip_z.c_str(), bytes) != 1) {
        if (inet_pton(AF_INET6, ip_z.c_str(), bytes) != 1) {
            why = fmt::format("\"{}\" is not an IP address", ip_z);
            return std::nullopt;
        }
        v6 = true;
    }
    unsigned max_len = v6 ? 128 : 32;
    unsigned len = max_len;
    if (slash != std::string_view::npos) {
        std::string_view ps = text.substr(slash + 1);
        bool digits = !ps.empty() && ps.size() <= 3;
        for (char c : ps)
            digits = digits && c >= '0' && c <= '9';
        if (!digits || (ps.size() > 1 && ps.front() == '0')) {
            why = fmt::format("the prefix length \"{}\" is not a number 0..{}", ps, max_len);
            return std::nullopt;
        }
        len = 0;
        for (char c : ps)
            len = len * 10 + unsigned(c - '0');
        if (len > max_len) {
            why = fmt::format("the prefix length {} is too long for IPv{} (at most {})", len, v6 ? 6 : 4, max_len);
            return std::nullopt;
        }
    }
    // Host bits past the prefix are refused: "10.0.0.1/8" is a typo for
    // something, and guessing which is how relays get opened.
    uint8_t masked[16] = {};
    std::memcpy(masked, bytes, 16);
    for (unsigned i = 0; i < 16; ++i) {
        unsigned keep = len > i * 8 ? std::min(8u, len - i * 8) : 0;
        masked[i] &= static_cast<uint8_t>(keep == 0 ? 0 : 0xFF << (8 - keep));
    }
    if (std::memcmp(masked, bytes, 16) != 0) {
        char t[INET6_ADDRSTRLEN] = "";
        inet_ntop(v6 ? AF_INET6 : AF_INET, masked, t, sizeof t);
        why = fmt::format("host bits are set past the prefix (did you mean \"{}/{}\"?)", t, len);
        return std::nullopt;
    }
    cidr c;
    if (v6 && len >= 96 && is_v4_mapped(bytes)) {
        // ::ffff:a.b.c.d/n is the IPv4 network a.b.c.d/(n-96); see the header.
        std::memcpy(c._bytes.data(), bytes + 12, 4);
        c._prefix_len = static_cast<uint8_t>(len - 96);
        c._v6 = false;
        return c;
    }
    std::memcpy(c._bytes.data(), bytes, 16);
    c._prefix_len = static_cast<uint8_t>(len);
    c._v6 = v6;
    return c;
}

std::optional<cidr> cidr::host(const rw::net::address& a) {
    canonical_ip ip = canonicalize(a);
    if (ip.family == 0)
        return std::nullopt;
    cidr c;
    c._bytes = ip.bytes;
    c._v6 = ip.family == 6;
    c._prefix_len = c._v6 ? 128 : 32;
    return c;
}

bool cidr::contains(const rw::net::address& a) const noexcept {
    canonical_ip ip = canonicalize(a);
    if (ip.family != (_v6 ? 6 : 4))
        return false;  // includes an unset address (family 0): never inside anything
    return prefix_equal(ip.bytes.data(), _bytes.data(), _prefix_len);
}

std::string cidr::to_string() const {
    char t[INET6_ADDRSTRLEN] = "";
    inet_ntop(_v6 ? AF_INET6 : AF_INET, _bytes.data(), t, sizeof t);
    return fmt::format("{}/{}", t, _prefix_len);
}

}  // namespace rw::policy
