// Socket addresses: IPv4 and IPv6, parsed from text and printed back.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rw::net {

class address {
public:
    address() = default;
    // "127.0.0.1", "::1", "[::1]" with the given port.
    static std::optional<address> parse(std::string_view ip, uint16_t port);
    // "127.0.0.1:25", "[::1]:25".
    static std::optional<address> parse_host_port(std::string_view s);
    static address from_sockaddr(const sockaddr* sa, socklen_t len);

    int family() const { return _ss.ss_family; }
    bool is_v6() const { return family() == AF_INET6; }
    uint16_t port() const;
    void set_port(uint16_t p);
    const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&_ss); }
    sockaddr* sa() { return reinterpret_cast<sockaddr*>(&_ss); }
    socklen_t len() const { return is_v6() ? sizeof(sockaddr_in6) : sizeof(sockaddr_in); }
    std::string ip_string() const;
    std::string to_string() const;  // "1.2.3.4:25" or "[::1]:25"

private:
    sockaddr_storage _ss{};
};

}  // namespace rw::net
