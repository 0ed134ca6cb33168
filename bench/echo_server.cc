// ringway-echo-bench-server: a ping-pong echo server written twice -- on the
// Ringway runtime (io_uring, coroutines) and plainly on epoll with
// non-blocking sockets -- so the runtime can be compared with the classic
// event loop under the same client. Used by bench/runtime_bench.sh.
//
//   echo_server --mode uring|epoll --port 7000 [--cores 1]
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "runtime/net/tcp.hh"
#include "runtime/reactor/sync.hh"
#include "runtime/smp/smp.hh"

using rw::task;

namespace {

constexpr size_t k_buf = 16384;

task<void> echo_conn(int fd) {
    rw::net::tcp_stream s(fd);
    s.set_nodelay(true);
    std::unique_ptr<char[]> buf(new char[k_buf]);
    for (;;) {
        int n = co_await s.recv(buf.get(), k_buf);
        if (n <= 0)
            break;
        int w = co_await s.send_all(buf.get(), size_t(n));
        if (w < 0)
            break;
    }
}

task<void> uring_core(uint16_t port) {
    auto lfd = rw::net::listen_tcp(*rw::net::address::parse("127.0.0.1", port));
    if (!lfd) {
        std::fprintf(stderr, "%s\n", lfd.error().c_str());
        std::exit(1);
    }
    rw::net::acceptor acc(lfd.value());
    auto stopper = [](rw::net::acceptor* a) -> task<void> {
        co_await rw::reactor::local().stop_requested();
        a->stop();
    };
    rw::spawn(stopper(&acc));
    for (;;) {
        auto a = co_await acc.accept();
        if (!a)
            break;
        rw::spawn(echo_conn(a.value().fd));
    }
    co_await acc.stopped();
    ::close(lfd.value());
}

int run_uring(uint16_t port, unsigned cores) {
    rw::engine_options o;
    o.cores = cores;
    auto e = rw::engine::create(o);
    if (!e) {
        std::fprintf(stderr, "%s\n", e.error().c_str());
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    rw::engine* eng = e.value().get();
    std::thread sig([eng, set] {
        int s = 0;
        sigwait(&set, &s);
        eng->request_stop(std::chrono::milliseconds(200));
    });
    sig.detach();
    auto r = eng->run([port](unsigned) { return uring_core(port); });
    return r ? 0 : 1;
}

void epoll_thread(uint16_t port, int cpu) {
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    auto lfd = rw::net::listen_tcp(*rw::net::address::parse("127.0.0.1", port));
    if (!lfd) {
        std::fprintf(stderr, "%s\n", lfd.error().c_str());
        std::exit(1);
    }
    int lf = lfd.value();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lf;
    epoll_ctl(ep, EPOLL_CTL_ADD, lf, &ev);
    std::vector<epoll_event> events(512);
    std::unique_ptr<char[]> buf(new char[k_buf]);
    for (;;) {
        int n = epoll_wait(ep, events.data(), int(events.size()), -1);
        if (n < 0 && errno == EINTR)
            continue;
        for (int i = 0; i < n; ++i) {
            int fd = events[i].data.fd;
            if (fd == lf) {
                for (;;) {
                    int c = accept4(lf, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0)
                        break;
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    epoll_event cev{};
                    cev.events = EPOLLIN;
                    cev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = ::recv(fd, buf.get(), k_buf, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                ::close(fd);
                continue;
            }
            ssize_t off = 0;
            while (off < r) {
                ssize_t w = ::send(fd, buf.get() + off, size_t(r - off), MSG_NOSIGNAL);
                if (w < 0) {
                    if (errno == EAGAIN)
                        continue;  // tiny replies: the socket buffer never fills here
                    ::close(fd);
                    break;
                }
                off += w;
            }
        }
    }
}

int run_epoll(uint16_t port, unsigned cores) {
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set))
            cpus.push_back(c);
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < cores; ++i)
        ts.emplace_back(epoll_thread, port, cpus[i % cpus.size()]);
    for (auto& t : ts)
        t.join();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Echo server on the Ringway runtime or on plain epoll, for the runtime benchmark"};
    std::string mode = "uring";
    uint16_t port = 7000;
    unsigned cores = 1;
    app.add_option("--mode", mode, "uring or epoll")->check(CLI::IsMember({"uring", "epoll"}));
    app.add_option("--port", port, "TCP port on 127.0.0.1");
    app.add_option("--cores", cores, "threads / reactors");
    app.set_version_flag("--version", "echo_server " RINGWAY_VERSION);
    CLI11_PARSE(app, argc, argv);
    signal(SIGPIPE, SIG_IGN);
    return mode == "uring" ? run_uring(port, cores) : run_epoll(port, cores);
}
