#include "admin/shell/client.hh"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace rw::admin::shell {

namespace {
constexpr int k_reply_timeout_ms = 60'000;
}

result<client, std::string> client::connect(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path)
        return unexpected(fmt::format("socket path {} is too long", path));
    std::memcpy(a.sun_path, path.data(), path.size());
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return unexpected(fmt::format("cannot create a socket: {}", std::strerror(errno)));
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
        int e = errno;
        ::close(fd);
        std::string hint = e == ENOENT || e == ECONNREFUSED ? " (is ringwayd running? --socket names another socket)"
                           : e == EACCES                    ? " (the socket is for ringwayd's user, root and the "
                                                              "[control] group only)"
                                                            : "";
        return unexpected(fmt::format("cannot connect to {}: {}{}", path, std::strerror(e), hint));
    }
    return client(fd, path);
}

client::~client() {
    if (_fd >= 0)
        ::close(_fd);
}

result<nlohmann::json, std::string> client::call(const std::string& cmd, const nlohmann::json& args) {
    nlohmann::json req = nlohmann::json::object();
    req["v"] = 1;
    req["cmd"] = cmd;
    req["args"] = args;
    std::string line = req.dump() + "\n";
    size_t off = 0;
    while (off < line.size()) {
        ssize_t n = ::send(_fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            _broken = true;
            return unexpected(fmt::format("lost the connection to {}: {}", _path, std::strerror(errno)));
        }
        off += size_t(n);
    }
    for (;;) {
        size_t nl = _buf.find('\n');
        if (nl != std::string::npos) {
            std::string reply = _buf.substr(0, nl);
            _buf.erase(0, nl + 1);
            auto j = nlohmann::json::parse(reply, nullptr, false);
            if (j.is_discarded() || !j.is_object() || !j.contains("ok"))
                return unexpected(std::string("the daemon sent a reply that is not JSON"));
            if (j["ok"].is_boolean() && j["ok"].get<bool>())
                return j.contains("result") ? j["result"] : nlohmann::json();
            if (j.contains("error") && j["error"].is_string())
                return unexpected(j["error"].get<std::string>());
            return unexpected(std::string("the daemon refused the request"));
        }
        pollfd p{_fd, POLLIN, 0};
        int r = ::poll(&p, 1, k_reply_timeout_ms);
        if (r == 0) {
            _broken = true;
            return unexpected(fmt::format("no reply from {} in {} s", _path, k_reply_timeout_ms / 1000));
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return unexpected(fmt::format("poll: {}", std::strerror(errno)));
        }
        char buf[65536];
        ssize_t n = ::recv(_fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            _broken = true;
            return unexpected(fmt::format("the daemon closed the connection{}{}", n < 0 ? ": " : "",
                                          n < 0 ? std::strerror(errno) : ""));
        }
        _buf.append(buf, size_t(n));
    }
}

}  // namespace rw::admin::shell
