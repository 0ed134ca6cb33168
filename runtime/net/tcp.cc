#include "runtime/net/tcp.hh"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace rw::net {

result<int, std::string> listen_tcp(const address& a, int backlog, bool reuseport) {
    auto fail = [&](const char* what, int e) -> result<int, std::string> {
        std::string hint;
        if (e == EADDRINUSE)
            hint = "; another process holds this port (find it with: ss -ltnp)";
        else if (e == EADDRNOTAVAIL)
            hint = "; the address is not configured on this machine";
        else if (e == EACCES)
            hint = "; ports below 1024 need root or CAP_NET_BIND_SERVICE";
        return unexpected(fmt::format("cannot {} {}: {}{}", what, a.to_string(), std::strerror(e), hint));
    };
    int fd = ::socket(a.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail("create a socket for", errno);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport)
        ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (a.is_v6())
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd, a.sa(), a.len()) != 0) {
        int e = errno;
        ::close(fd);
        return fail("bind", e);
    }
    if (::listen(fd, backlog) != 0) {
        int e = errno;
        ::close(fd);
        return fail("listen on", e);
    }
    return fd;
}

uint16_t local_port(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        return 0;
    return address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len).port();
}

acceptor::acceptor(int listen_fd, size_t max_backlog) : _lfd(listen_fd), _max_backlog(max_backlog) {}

acceptor::~acceptor() {
    RW_ASSERT(!_armed, "acceptor destroyed while its accept is in flight; await stopped() first");
    for (int fd : _ready)
        ::close(fd);
}

void acceptor::arm() noexcept {
    reactor& r = reactor::local();
    io_uring_sqe* sqe = r.get_sqe();
    io_uring_prep_multishot_accept(sqe, _lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    r.track(sqe, this);
    _armed = true;
}

void acceptor::complete(int res, uint32_t flags) noexcept {
    if (!(flags & IORING_CQE_F_MORE))
        _armed = false;
    if (res >= 0) {
        if (_stopping || _ready.size() >= _max_backlog)
            ::close(res);
        else
            _ready.push_back(res);
    } else if (res != -ECANCELED && res != -EAGAIN && res != -EINTR) {
        // EMFILE/ENFILE/ENOBUFS and the like: reported to the accept loop.
        _error = -res;
    }
    reactor& r = reactor::local();
    if (_waiter)
        r.schedule(std::exchange(_waiter, {}));
    if (!_armed && _stop_waiter)
        r.schedule(std::exchange(_stop_waiter, {}));
}

task<result<accepted>> acceptor::accept() {
    for (;;) {
        if (_stopping)
            co_return unexpected(sys_error{ECANCELED});
        if (!_ready.empty()) {
            int fd = _ready.front();
            _ready.pop_front();
            accepted a;
            a.fd = fd;
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
                a.peer = address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
            co_return a;
        }
        if (_error) {
            int e = std::exchange(_error, 0);
            co_return unexpected(sys_error{e});
        }
        if (!_armed)
            arm();
        struct wait {
            acceptor* a;
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<> h) noexcept { a->_waiter = h; }
            void await_resume() const noexcept {}
        };
        co_await wait{this};
    }
}

void acceptor::stop() noexcept {
    if (_stopping)
        return;
    _stopping = true;
    reactor& r = reactor::local();
    if (_armed)
        r.cancel(this);
    if (_waiter)
        r.schedule(std::exchange(_waiter, {}));
}

task<void> acceptor::stopped() {
    stop();
    while (_armed) {
        struct wait {
            acceptor* a;
            bool await_ready() const noexcept { return !a->_armed; }
            void await_suspend(std::coroutine_handle<> h) noexcept { a->_stop_waiter = h; }
            void await_resume() const noexcept {}
        };
        co_await wait{this};
    }
}

fd_reserve::fd_reserve() : _fd(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {}

fd_reserve::~fd_reserve() {
    if (_fd >= 0)
        ::close(_fd);
}

std::vector<address> fd_reserve::shed(int listen_fd, std::string_view line, size_t max) {
    std::vector<address> peers;
    if (_fd >= 0) {
        ::close(_fd);
        _fd = -1;
    }
    while (peers.size() < max) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;  // EAGAIN: the queue is empty; EMFILE: another thread took the slot
        [[maybe_unused]] ssize_t n = ::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        ::close(fd);
        peers.push_back(address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len));
    }
    _fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    return peers;
}

tcp_stream& tcp_stream::operator=(tcp_stream&& o) noexcept {
    if (this != &o) {
        close();
        _fd = std::exchange(o._fd, -1);
    }
    return *this;
}

tcp_stream::~tcp_stream() { close(); }

void tcp_stream::close() noexcept {
    if (_fd >= 0) {
        ::close(_fd);
        _fd = -1;
    }
}

void tcp_stream::set_nodelay(bool on) {
    int v = on ? 1 : 0;
    ::setsockopt(_fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v);
}

task<result<tcp_stream>> connect_tcp(address a, std::chrono::milliseconds timeout, const address* from) {
    int fd = ::socket(a.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        co_return unexpected(sys_error{errno});
    tcp_stream s(fd);
    if (from) {
        if (from->family() != a.family())
            co_return unexpected(sys_error{EAFNOSUPPORT});
        // The port is chosen at connect, per destination address, so one
        // source is not limited to 64k connections in all.
        int one = 1;
        ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        address local = *from;
        local.set_port(0);
        if (::bind(fd, local.sa(), local.len()) < 0)
            co_return unexpected(sys_error{errno});
    }
    auto op = io::connect(fd, a.sa(), a.len(), {.timeout = timeout});
    int r = co_await op;
    if (r < 0)
        co_return unexpected(sys_error{-r});
    co_return std::move(s);
}

result<void, std::string> check_local_address(const address& a) {
    int fd = ::socket(a.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return unexpected(std::string(std::strerror(errno)));
    int one = 1;
    ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    address local = a;
    local.set_port(0);
    const int r = ::bind(fd, local.sa(), local.len());
    const int e = errno;
    ::close(fd);
    if (r < 0)
        return unexpected(e == EADDRNOTAVAIL ? std::string("the address is not configured on this machine")
                                             : std::string(std::strerror(e)));
    return {};
}

}  // namespace rw::net
