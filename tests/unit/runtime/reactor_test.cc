// Reactor, task and awaitable tests: each operation, timers, linked
// timeouts, cancellation of every kind of pending operation (and that no
// coroutine frame is left behind), long chains of immediately-ready awaits.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/disk/file.hh"
#include "runtime/net/buf_ring.hh"
#include "runtime/net/tcp.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/sync.hh"

using namespace std::chrono_literals;
using rw::task;

namespace {

struct socket_pair {
    int a = -1, b = -1;
    socket_pair() {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        a = sv[0];
        b = sv[1];
    }
    ~socket_pair() {
        ::close(a);
        ::close(b);
    }
};

task<int> add_one(int x) { co_return x + 1; }

task<int> chain(int depth) {
    int v = 0;
    for (int i = 0; i < depth; ++i)
        v = co_await add_one(v);
    co_return v;
}

auto elapsed_since(std::chrono::steady_clock::time_point t0) { return std::chrono::steady_clock::now() - t0; }

}  // namespace

TEST_CASE("task returns values and chains without growing the stack", "[runtime]") {
    int v = rw::run_local(chain(200000));
    REQUIRE(v == 200000);
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("task propagates exceptions to its awaiter", "[runtime]") {
    auto thrower = []() -> task<int> {
        throw std::runtime_error("boom");
        co_return 1;
    };
    auto outer = [](decltype(thrower) f) -> task<std::string> {
        try {
            co_await f();
        } catch (const std::runtime_error& e) {
            co_return std::string(e.what());
        }
        co_return std::string("no exception");
    };
    REQUIRE(rw::run_local(outer(thrower)) == "boom");
}

TEST_CASE("sleep waits at least its duration", "[runtime]") {
    auto t0 = std::chrono::steady_clock::now();
    int r = rw::run_local([]() -> task<int> {
        auto s = rw::io::sleep(20ms);
        co_return co_await s;
    }());
    REQUIRE(r == 0);
    REQUIRE(elapsed_since(t0) >= 20ms);
}

TEST_CASE("send and recv move bytes both ways", "[runtime]") {
    socket_pair sp;
    auto body = [](int a, int b) -> task<std::string> {
        const char msg[] = "hello over io_uring";
        auto s = rw::io::send(a, msg, sizeof msg - 1);
        int n = co_await s;
        REQUIRE(n == int(sizeof msg - 1));
        char buf[64] = {};
        auto r = rw::io::recv(b, buf, sizeof buf);
        int m = co_await r;
        REQUIRE(m == n);
        co_return std::string(buf, size_t(m));
    };
    REQUIRE(rw::run_local(body(sp.a, sp.b)) == "hello over io_uring");
}

TEST_CASE("linked timeout turns a stuck recv into ETIMEDOUT", "[runtime]") {
    socket_pair sp;
    auto t0 = std::chrono::steady_clock::now();
    int r = rw::run_local([](int fd) -> task<int> {
        char buf[16];
        auto op = rw::io::recv(fd, buf, sizeof buf, {.timeout = 30ms});
        co_return co_await op;
    }(sp.a));
    REQUIRE(r == -ETIMEDOUT);
    REQUIRE(elapsed_since(t0) >= 30ms);
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("a recv that completes before its deadline is not reported as a timeout", "[runtime]") {
    socket_pair sp;
    REQUIRE(::write(sp.b, "x", 1) == 1);
    int r = rw::run_local([](int fd) -> task<int> {
        char buf[16];
        auto op = rw::io::recv(fd, buf, sizeof buf, {.timeout = 5s});
        co_return co_await op;
    }(sp.a));
    REQUIRE(r == 1);
}

TEST_CASE("cancellation of every kind of pending operation", "[runtime]") {
    socket_pair sp;
    auto lfd = rw::net::listen_tcp(*rw::net::address::parse("127.0.0.1", 0));
    REQUIRE(lfd);
    int listen_fd = lfd.value();

    auto run_cancel = [](std::function<task<int>(rw::cancel_token*)> make) {
        return rw::run_local([](std::function<task<int>(rw::cancel_token*)> mk) -> task<int> {
            rw::cancel_token tok;
            int result = 1;
            rw::event done;
            auto waiter = [](std::function<task<int>(rw::cancel_token*)> m2, rw::cancel_token* t, int* out,
                             rw::event* d) -> task<void> {
                *out = co_await m2(t);
                d->set();
            };
            rw::spawn(waiter(mk, &tok, &result, &done));
            auto pause = rw::io::sleep(10ms);
            co_await pause;
            REQUIRE(!done.is_set());
            tok.cancel();
            co_await done.wait();
            co_return result;
        }(std::move(make)));
    };

    SECTION("recv") {
        int r = run_cancel([fd = sp.a](rw::cancel_token* t) -> task<int> {
            char buf[8];
            auto op = rw::io::recv(fd, buf, sizeof buf, {.cancel = t});
            co_return co_await op;
        });
        REQUIRE(r == -ECANCELED);
    }
    SECTION("recv with a deadline") {
        int r = run_cancel([fd = sp.a](rw::cancel_token* t) -> task<int> {
            char buf[8];
            auto op = rw::io::recv(fd, buf, sizeof buf, {.timeout = 10s, .cancel = t});
            co_return co_await op;
        });
        REQUIRE(r == -ECANCELED);
    }
    SECTION("timer") {
        int r = run_cancel([](rw::cancel_token* t) -> task<int> {
            auto op = rw::io::sleep(10s, t);
            co_return co_await op;
        });
        REQUIRE(r == -ECANCELED);
    }
    SECTION("accept") {
        int r = run_cancel([listen_fd](rw::cancel_token* t) -> task<int> {
            auto op = rw::io::accept(listen_fd, nullptr, nullptr, {.cancel = t});
            co_return co_await op;
        });
        REQUIRE(r == -ECANCELED);
    }
    SECTION("poll") {
        int r = run_cancel([fd = sp.a](rw::cancel_token* t) -> task<int> {
            auto op = rw::io::poll(fd, POLLIN, {.cancel = t});
            co_return co_await op;
        });
        REQUIRE(r == -ECANCELED);
    }
    SECTION("send into a full socket") {
        int r = run_cancel([fd = sp.a](rw::cancel_token* t) -> task<int> {
            std::string big(1 << 20, 'x');
            for (;;) {
                auto op = rw::io::send(fd, big.data(), big.size(), {.cancel = t});
                int n = co_await op;
                if (n < 0)
                    co_return n;
            }
        });
        REQUIRE(r == -ECANCELED);
    }
    SECTION("an operation started on a cancelled token fails at once") {
        int r = rw::run_local([](int fd) -> task<int> {
            rw::cancel_token tok;
            tok.cancel();
            char buf[8];
            auto op = rw::io::recv(fd, buf, sizeof buf, {.cancel = &tok});
            co_return co_await op;
        }(sp.a));
        REQUIRE(r == -ECANCELED);
    }
    ::close(listen_fd);
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("reactor stop drains: in-flight operations are cancelled after the deadline", "[runtime]") {
    socket_pair sp;
    auto t0 = std::chrono::steady_clock::now();
    int outcome = 0;
    rw::run_local([](int fd, int* out) -> task<void> {
        auto reader = [](int f, int* o) -> task<void> {
            char buf[8];
            auto op = rw::io::recv(f, buf, sizeof buf);
            *o = co_await op;
        };
        rw::spawn(reader(fd, out));
        rw::reactor::local().request_stop(50ms);
        co_return;
    }(sp.a, &outcome));
    REQUIRE(outcome == -ECANCELED);
    REQUIRE(elapsed_since(t0) >= 50ms);
    REQUIRE(elapsed_since(t0) < 5s);
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("multishot acceptor accepts many connections and stops cleanly", "[runtime][net]") {
    auto lfd = rw::net::listen_tcp(*rw::net::address::parse("127.0.0.1", 0));
    REQUIRE(lfd);
    int listen_fd = lfd.value();
    uint16_t port = rw::net::local_port(listen_fd);
    REQUIRE(port != 0);
    int accepted = rw::run_local([](int lf, uint16_t p) -> task<int> {
        rw::net::acceptor acc(lf);
        constexpr int n = 50;
        auto client = [](uint16_t pp) -> task<void> {
            auto c = co_await rw::net::connect_tcp(*rw::net::address::parse("127.0.0.1", pp), 2s);
            REQUIRE(c);
            const char ping[] = "ping";
            int s = co_await c.value().send_all(ping, 4);
            REQUIRE(s == 4);
        };
        for (int i = 0; i < n; ++i)
            rw::spawn(client(p));
        int got = 0;
        for (int i = 0; i < n; ++i) {
            auto a = co_await acc.accept();
            REQUIRE(a);
            rw::net::tcp_stream s(a.value().fd);
            REQUIRE(a.value().peer.ip_string() == "127.0.0.1");
            char buf[8];
            int r = co_await s.recv(buf, sizeof buf, {.timeout = 2s});
            REQUIRE(r == 4);
            ++got;
        }
        co_await acc.stopped();
        auto after = co_await acc.accept();
        REQUIRE(!after);
        REQUIRE(after.error().code == ECANCELED);
        co_return got;
    }(listen_fd, port));
    REQUIRE(accepted == 50);
    ::close(listen_fd);
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("IPv6 listener and connect", "[runtime][net]") {
    auto lfd = rw::net::listen_tcp(*rw::net::address::parse("::1", 0));
    if (!lfd) {
        // Not an environment without IPv6: loopback ::1 must exist here.
        FAIL(lfd.error());
    }
    int listen_fd = lfd.value();
    uint16_t port = rw::net::local_port(listen_fd);
    std::string peer = rw::run_local([](int lf, uint16_t p) -> task<std::string> {
        rw::net::acceptor acc(lf);
        auto client = [](uint16_t pp) -> task<void> {
            auto c = co_await rw::net::connect_tcp(*rw::net::address::parse("::1", pp), 2s);
            REQUIRE(c);
        };
        rw::spawn(client(p));
        auto a = co_await acc.accept();
        REQUIRE(a);
        ::close(a.value().fd);
        co_await acc.stopped();
        co_return a.value().peer.ip_string();
    }(listen_fd, port));
    REQUIRE(peer == "::1");
    ::close(listen_fd);
}

TEST_CASE("connect to a closed port is refused", "[runtime][net]") {
    auto lfd = rw::net::listen_tcp(*rw::net::address::parse("127.0.0.1", 0));
    REQUIRE(lfd);
    uint16_t port = rw::net::local_port(lfd.value());
    ::close(lfd.value());
    int err = rw::run_local([](uint16_t p) -> task<int> {
        auto c = co_await rw::net::connect_tcp(*rw::net::address::parse("127.0.0.1", p), 2s);
        co_return c ? 0 : c.error().code;
    }(port));
    REQUIRE(err == ECONNREFUSED);
}

TEST_CASE("listening on a port in use names the address and the cause", "[runtime][net]") {
    auto a = rw::net::listen_tcp(*rw::net::address::parse("127.0.0.1", 0), 16, false);
    REQUIRE(a);
    uint16_t port = rw::net::local_port(a.value());
    auto b = rw::net::listen_tcp(*rw::net::address::parse("127.0.0.1", port), 16, false);
    REQUIRE(!b);
    REQUIRE_THAT(b.error(), Catch::Contains("127.0.0.1:" + std::to_string(port)) &&
                                Catch::Contains("Address already in use"));
    ::close(a.value());
}

TEST_CASE("provided buffer ring receives and recycles", "[runtime][net]") {
    socket_pair sp;
    std::string got = rw::run_local([](int a, int b) -> task<std::string> {
        auto br = rw::net::buf_ring::create(7, 4, 64);
        REQUIRE(br);
        auto& ring = *br.value();
        std::string out;
        for (int i = 0; i < 10; ++i) {  // more rounds than buffers: recycling works
            std::string m = "msg" + std::to_string(i) + ";";
            REQUIRE(::write(a, m.data(), m.size()) == ssize_t(m.size()));
            auto s = co_await rw::net::recv_select(b, ring);
            REQUIRE(s.res > 0);
            REQUIRE(s.has_buffer);
            out.append(ring.buffer(s.bid).data(), size_t(s.res));
            ring.recycle(s.bid);
        }
        co_return out;
    }(sp.a, sp.b));
    REQUIRE(got == "msg0;msg1;msg2;msg3;msg4;msg5;msg6;msg7;msg8;msg9;");
}

TEST_CASE("O_DIRECT write, fdatasync and read back", "[runtime][disk]") {
    char tmpl[] = "rw_disk_XXXXXX";  // build dir: a real file system, not tmpfs
    int tfd = ::mkstemp(tmpl);
    REQUIRE(tfd >= 0);
    REQUIRE(::ftruncate(tfd, 1 << 20) == 0);
    ::close(tfd);
    std::string path = tmpl;
    bool ok = rw::run_local([](std::string p) -> task<bool> {
        auto f = rw::disk::file::open(p);
        REQUIRE(f);
        rw::disk::file& fl = f.value();
        REQUIRE(fl.size_bytes() == (1u << 20));
        rw::disk::aligned_buffer w(8192), r(8192);
        for (size_t i = 0; i < w.size(); ++i)
            w.data()[i] = char(i * 7 + 3);
        int n = co_await fl.write_at(w.data(), w.size(), 4096 * 3);
        REQUIRE(n == 8192);
        int s = co_await fl.fdatasync();
        REQUIRE(s == 0);
        int m = co_await fl.read_at(r.data(), r.size(), 4096 * 3);
        REQUIRE(m == 8192);
        // A second opener is refused while we hold the lock.
        auto g = rw::disk::file::open(p);
        REQUIRE(!g);
        REQUIRE_THAT(g.error(), Catch::Contains("in use by another process"));
        co_return std::memcmp(w.data(), r.data(), 8192) == 0;
    }(path));
    REQUIRE(ok);
    ::unlink(path.c_str());
}

// An io-wq worker may drop the last reference to a finished fdatasync after
// its completion has been reaped; under DEFER_TASKRUN the release waits for
// this thread to enter the ring, and with it the file's flock. Closing and
// reopening in one thread must still get the lock (file::open runs that
// deferred work while it waits). The race hits about once in a few thousand
// cycles here; 3,000 cycles take well under a second.
TEST_CASE("a file closed after an fdatasync can be locked again by the same thread", "[runtime][disk]") {
    char tmpl[] = "rw_disk_XXXXXX";
    int tfd = ::mkstemp(tmpl);
    REQUIRE(tfd >= 0);
    REQUIRE(::ftruncate(tfd, 1 << 16) == 0);
    ::close(tfd);
    std::string path = tmpl;
    int reopened = rw::run_local([](std::string p) -> task<int> {
        rw::disk::aligned_buffer w(4096);
        int n = 0;
        for (; n < 3000; ++n) {
            auto f = rw::disk::file::open(p, {.lock_wait = std::chrono::seconds(5)});
            if (!f) {
                UNSCOPED_INFO(f.error());
                break;
            }
            int wr = co_await f.value().write_at(w.data(), w.size(), 0);
            REQUIRE(wr == 4096);
            int sy = co_await f.value().fdatasync();
            REQUIRE(sy == 0);
        }
        co_return n;
    }(path));
    REQUIRE(reopened == 3000);
    ::unlink(path.c_str());
}

TEST_CASE("a write not aligned to sectors fails with EINVAL, not a crash", "[runtime][disk]") {
    char tmpl[] = "rw_disk_XXXXXX";  // build dir: a real file system, not tmpfs
    int tfd = ::mkstemp(tmpl);
    REQUIRE(::ftruncate(tfd, 1 << 16) == 0);
    ::close(tfd);
    std::string path = tmpl;
    int r = rw::run_local([](std::string p) -> task<int> {
        auto f = rw::disk::file::open(p);
        REQUIRE(f);
        rw::disk::aligned_buffer w(4096);
        co_return co_await f.value().write_at(w.data(), 100, 1);  // not sector aligned
    }(path));
    REQUIRE(r == -EINVAL);
    ::unlink(path.c_str());
}

TEST_CASE("out of descriptors, waiting clients are answered and closed, not left unserved", "[runtime][net]") {
    auto lfd = rw::net::listen_tcp(*rw::net::address::parse("127.0.0.1", 0));
    REQUIRE(lfd);
    const uint16_t port = rw::net::local_port(lfd.value());
    rw::net::fd_reserve reserve;
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::vector<int> clients;
    for (int i = 0; i < 3; ++i) {
        int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(::connect(c, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
        clients.push_back(c);
    }
    // Use up every descriptor left (under a lowered limit), so accept4
    // alone would fail with EMFILE. No assertion macro runs while the
    // process has no descriptor left: sanitizer runtimes may need one.
    rlimit before{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &before) == 0);
    rlimit low = before;
    low.rlim_cur = std::min<rlim_t>(before.rlim_cur, 512);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    std::vector<int> filler;
    int open_errno = 0;
    while (filler.size() < 1'000'000) {
        int f = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (f < 0) {
            open_errno = errno;
            break;
        }
        filler.push_back(f);
    }
    const int plain = ::accept4(lfd.value(), nullptr, nullptr, SOCK_NONBLOCK);
    const int plain_errno = errno;
    auto first = reserve.shed(lfd.value(), "421 4.3.2 out of resources\r\n", 2);
    auto second = reserve.shed(lfd.value(), "421 4.3.2 out of resources\r\n", 10);
    for (int f : filler)
        ::close(f);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &before) == 0);
    REQUIRE(open_errno == EMFILE);
    REQUIRE(plain < 0);
    REQUIRE(plain_errno == EMFILE);
    CHECK(first.size() == 2);   // bounded by max
    CHECK(second.size() == 1);  // and stops when the queue is empty
    auto turned = first;
    turned.insert(turned.end(), second.begin(), second.end());
    for (int c : clients) {
        char buf[64] = {};
        ssize_t n = ::recv(c, buf, sizeof buf - 1, 0);
        CHECK(std::string(buf, n > 0 ? size_t(n) : 0) == "421 4.3.2 out of resources\r\n");
        CHECK(::recv(c, buf, sizeof buf, 0) == 0);  // then closed
        ::close(c);
    }
    for (const auto& p : turned)
        CHECK(p.ip_string() == "127.0.0.1");
    ::close(lfd.value());
}
