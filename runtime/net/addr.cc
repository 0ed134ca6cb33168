#include "runtime/net/addr.hh"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace rw::net {

std::optional<address> address::parse(std::string_view ip, uint16_t port) {
    if (ip.size() >= 2 && ip.front() == '[' && ip.back() == ']')
        ip = ip.substr(1, ip.size() - 2);
    std::string s(ip);
    address a;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&a._ss);
    if (inet_pton(AF_INET, s.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        return a;
    }
    a = address();
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&a._ss);
    if (inet_pton(AF_INET6, s.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        return a;
    }
    return std::nullopt;
}

std::optional<address> address::parse_host_port(std::string_view s) {
    size_t colon;
    std::string_view host;
    if (!s.empty() && s.front() == '[') {
        size_t close = s.find(']');
        if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
            return std::nullopt;
        host = s.substr(1, close - 1);
        colon = close + 1;
    } else {
        colon = s.rfind(':');
        if (colon == std::string_view::npos)
            return std::nullopt;
        host = s.substr(0, colon);
        if (host.find(':') != std::string_view::npos)
            return std::nullopt;  // bare IPv6 needs brackets
    }
    std::string_view ps = s.substr(colon + 1);
    unsigned port = 0;
    auto [p, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), port);
    if (ec != std::errc() || p != ps.data() + ps.size() || port > 65535 || ps.empty())
        return std::nullopt;
    return parse(host, uint16_t(port));
}

address address::from_sockaddr(const sockaddr* sa, socklen_t len) {
    address a;
    std::memcpy(&a._ss, sa, std::min<size_t>(len, sizeof a._ss));
    return a;
}

uint16_t address::port() const {
    if (is_v6())
        return ntohs(reinterpret_cast<const sockaddr_in6*>(&_ss)->sin6_port);
    return ntohs(reinterpret_cast<const sockaddr_in*>(&_ss)->sin_port);
}

void address::set_port(uint16_t p) {
    if (is_v6())
        reinterpret_cast<sockaddr_in6*>(&_ss)->sin6_port = htons(p);
    else
        reinterpret_cast<sockaddr_in*>(&_ss)->sin_port = htons(p);
}

std::string address::ip_string() const {
    char buf[INET6_ADDRSTRLEN] = "";
    if (is_v6())
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&_ss)->sin6_addr, buf, sizeof buf);
    else if (family() == AF_INET)
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&_ss)->sin_addr, buf, sizeof buf);
    else
        return "?";
    return buf;
}

std::string address::to_string() const {
    if (is_v6())
        return "[" + ip_string() + "]:" + std::to_string(port());
    return ip_string() + ":" + std::to_string(port());
}

}  // namespace rw::net
