#include "runtime/base/service_notify.hh"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

namespace rw::service_notify {

bool send(std::string_view state) {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return false;
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    size_t n = std::strlen(path);
    if (n >= sizeof sa.sun_path)
        return false;
    std::memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';  // abstract namespace
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    socklen_t len = socklen_t(offsetof(sockaddr_un, sun_path) + n);
    bool ok = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&sa), len) ==
              ssize_t(state.size());
    ::close(fd);
    return ok;
}

long long watchdog_interval_ms() {
    const char* usec = std::getenv("WATCHDOG_USEC");
    if (!usec)
        return 0;
    // The pings are meant for this process only (not a child that
    // inherited the environment).
    if (const char* pid = std::getenv("WATCHDOG_PID"); pid && std::atoll(pid) != ::getpid())
        return 0;
    long long us = std::atoll(usec);
    return us > 0 ? us / 1000 : 0;
}

bool watchdog_enabled() { return watchdog_interval_ms() > 0; }

}  // namespace rw::service_notify
