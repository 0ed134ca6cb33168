#include "admin/shell/client.hh"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

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

result<void, std::string> client::send_request(const std::string& cmd, const nlohmann::json& args) {
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
    return {};
}

result<std::string, std::string> client::next_line(int wait_ms, const std::function<bool()>* interrupted) {
    for (;;) {
        size_t nl = _buf.find('\n');
        if (nl != std::string::npos) {
            std::string line = _buf.substr(0, nl);
            _buf.erase(0, nl + 1);
            return line;
        }
        pollfd p[2] = {{_fd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        // While streaming on a terminal, a line typed on stdin also ends it.
        const int n_fds = interrupted && ::isatty(STDIN_FILENO) ? 2 : 1;
        int r = ::poll(p, nfds_t(n_fds), interrupted ? 200 : wait_ms);
        if (interrupted && ((*interrupted)() || (n_fds == 2 && (p[1].revents & POLLIN)))) {
            if (n_fds == 2 && (p[1].revents & POLLIN)) {
                char junk[256];
                (void)!::read(STDIN_FILENO, junk, sizeof junk);
            }
            return unexpected(std::string());  // interrupted: not an error
        }
        if (r == 0) {
            if (interrupted)
                continue;
            _broken = true;
            return unexpected(fmt::format("no reply from {} in {} s", _path, wait_ms / 1000));
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return unexpected(fmt::format("poll: {}", std::strerror(errno)));
        }
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
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

namespace {
// {"ok":true,"result":R} -> R; {"ok":false,"error":E} -> E.
result<nlohmann::json, std::string> reply_of(const nlohmann::json& j) {
    if (j["ok"].is_boolean() && j["ok"].get<bool>())
        return j.contains("result") ? j["result"] : nlohmann::json();
    if (j.contains("error") && j["error"].is_string())
        return unexpected(j["error"].get<std::string>());
    return unexpected(std::string("the daemon refused the request"));
}
}  // namespace

result<nlohmann::json, std::string> client::call(const std::string& cmd, const nlohmann::json& args) {
    if (auto r = send_request(cmd, args); !r)
        return unexpected(r.error());
    auto line = next_line(k_reply_timeout_ms, nullptr);
    if (!line)
        return unexpected(line.error());
    auto j = nlohmann::json::parse(line.value(), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("ok"))
        return unexpected(std::string("the daemon sent a reply that is not JSON"));
    return reply_of(j);
}

result<nlohmann::json, std::string> client::stream(const std::string& cmd, const nlohmann::json& args,
                                                   const std::function<bool(const nlohmann::json&)>& on_event,
                                                   const std::function<bool()>& interrupted) {
    if (auto r = send_request(cmd, args); !r)
        return unexpected(r.error());
    for (;;) {
        auto line = next_line(-1, &interrupted);
        if (!line) {
            if (line.error().empty()) {  // interrupted: this connection is done
                _broken = true;
                return nlohmann::json::object();
            }
            return unexpected(line.error());
        }
        auto j = nlohmann::json::parse(line.value(), nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("ok"))
            return unexpected(std::string("the daemon sent a reply that is not JSON"));
        if (j.contains("event")) {
            if (!on_event(j["event"])) {
                _broken = true;
                return nlohmann::json::object();
            }
            continue;
        }
        return reply_of(j);
    }
}

result<nlohmann::json, std::string> client::upload(const std::string& cmd, const nlohmann::json& args, int src,
                                                   const std::function<void(const nlohmann::json&)>& on_event) {
    if (auto r = send_request(cmd, args); !r)
        return unexpected(r.error());
    std::vector<char> chunk(1 << 16);
    size_t have = 0, off = 0;
    bool src_done = false, peer_closed_input = false;
    std::string read_error;
    auto lines = [&]() -> std::optional<result<nlohmann::json, std::string>> {
        for (size_t nl; (nl = _buf.find('\n')) != std::string::npos;) {
            std::string line = _buf.substr(0, nl);
            _buf.erase(0, nl + 1);
            auto j = nlohmann::json::parse(line, nullptr, false);
            if (j.is_discarded() || !j.is_object() || !j.contains("ok"))
                return result<nlohmann::json, std::string>(unexpected(std::string("a reply that is not JSON")));
            if (j.contains("event")) {
                on_event(j["event"]);
                continue;
            }
            return reply_of(j);
        }
        return std::nullopt;
    };
    for (;;) {
        if (auto done = lines())
            return *done;
        const bool sending = !src_done && !peer_closed_input;
        if (sending && off == have) {
            ssize_t n = ::read(src, chunk.data(), chunk.size());
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                read_error = std::strerror(errno);
                src_done = true;
            } else if (n == 0) {
                src_done = true;
            } else {
                have = size_t(n);
                off = 0;
            }
            if (src_done)
                ::shutdown(_fd, SHUT_WR);
            continue;
        }
        pollfd p{_fd, short(POLLIN | (sending ? POLLOUT : 0)), 0};
        if (::poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return unexpected(fmt::format("poll: {}", std::strerror(errno)));
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[4096];
            ssize_t n = ::recv(_fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                _buf.append(buf, size_t(n));
                continue;
            }
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                _broken = true;
                if (auto done = lines())
                    return *done;
                return unexpected(std::string("the connection closed before a reply") +
                                  (read_error.empty() ? "" : " (reading the input: " + read_error + ")"));
            }
        }
        if (sending && (p.revents & POLLOUT)) {
            ssize_t n = ::send(_fd, chunk.data() + off, have - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0)
                off += size_t(n);
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                peer_closed_input = true;  // it refused: its reply says why
        }
    }
}

}  // namespace rw::admin::shell
