// TCP on the reactor: listening sockets (SO_REUSEPORT, one per core, so the
// kernel spreads connections), a multishot acceptor, streams and connect.
// Everything lives on the core that created it.
#pragma once

#include <deque>
#include <utility>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/result.hh"
#include "runtime/net/addr.hh"
#include "runtime/reactor/io.hh"

namespace rw::net {

// A bound, listening, non-blocking socket. The error says which address and
// why ("cannot listen on 127.0.0.1:2525: Address already in use").
result<int, std::string> listen_tcp(const address& a, int backlog = 4096, bool reuseport = true);

// The port a socket is bound to (for tests that bind port 0).
uint16_t local_port(int fd);

struct accepted {
    int fd = -1;
    address peer;
};

// Multishot accept on one listening socket. One per core and listener; the
// acceptor does not own the listening fd.
class acceptor final : public completion {
public:
    // max_backlog bounds connections accepted by the kernel but not yet taken
    // by accept(); beyond it they are closed (a burst larger than the
    // listen backlog itself).
    explicit acceptor(int listen_fd, size_t max_backlog = 65536);
    ~acceptor();
    acceptor(const acceptor&) = delete;

    // Waits for the next connection; -ECANCELED after stop().
    task<result<accepted>> accept();
    // Stops accepting; pending accept() calls resume with ECANCELED. The
    // object may be destroyed only after stopped() has resumed.
    void stop() noexcept;
    task<void> stopped();
    // After stopped(): the connections accepted and not yet taken by
    // accept(), for the caller to serve or close.
    std::deque<int> take_ready() noexcept { return std::exchange(_ready, {}); }

    void complete(int res, uint32_t flags) noexcept override;

private:
    void arm() noexcept;
    int _lfd;
    size_t _max_backlog;
    bool _armed = false;
    bool _stopping = false;
    std::deque<int> _ready;
    int _error = 0;
    std::coroutine_handle<> _waiter;
    std::coroutine_handle<> _stop_waiter;
};

// One descriptor held back for the day the process runs out of them
// (EMFILE/ENFILE): connections then wait in the listen queue, and a client
// would see a connection that is never greeted. shed() gives the reserve
// up, accepts waiting connections one at a time, writes `line` to each
// (a single non-blocking send: the socket's buffer is empty) and closes it,
// then takes the reserve back. One per core.
class fd_reserve {
public:
    fd_reserve();
    ~fd_reserve();
    fd_reserve(const fd_reserve&) = delete;
    fd_reserve& operator=(const fd_reserve&) = delete;

    // Peers turned away, at most max.
    std::vector<address> shed(int listen_fd, std::string_view line, size_t max);

private:
    int _fd = -1;
};

// A connected TCP socket owned by one core.
class tcp_stream {
public:
    tcp_stream() = default;
    explicit tcp_stream(int fd) : _fd(fd) {}
    tcp_stream(tcp_stream&& o) noexcept : _fd(std::exchange(o._fd, -1)) {}
    tcp_stream& operator=(tcp_stream&& o) noexcept;
    ~tcp_stream();

    int fd() const { return _fd; }
    bool is_open() const { return _fd >= 0; }

    // One recv: bytes read (0 = peer closed) or -errno. Awaitables, not
    // coroutines, so the hot path allocates no frame.
    auto recv(void* buf, size_t len, io_options o = {}) { return io::recv(_fd, buf, len, o); }
    // Sends everything or fails: len or -errno.
    io::send_all_op send_all(const void* buf, size_t len, io_options o = {}) {
        return io::send_all(_fd, buf, len, o);
    }
    void close() noexcept;
    void set_nodelay(bool on);

private:
    int _fd = -1;
};

// Connects to a, with a deadline; from the local address `from` (its port
// ignored: the kernel picks one when the connection is made) when given.
task<result<tcp_stream>> connect_tcp(address a, std::chrono::milliseconds timeout, const address* from = nullptr);

// Whether this machine has the address (a socket can be bound to it);
// else the reason.
result<void, std::string> check_local_address(const address& a);

}  // namespace rw::net
