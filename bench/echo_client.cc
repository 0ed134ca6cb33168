// echo_client: drives an echo server with N connections in ping-pong (one
// request outstanding per connection), for a fixed duration, and prints
// requests/s and latency percentiles as one JSON line. Written plainly on
// epoll so it is the same instrument for every server it measures.
//
//   echo_client --port 7000 --conns 64 --size 64 --seconds 5
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {
using clk = std::chrono::steady_clock;

struct conn {
    int fd = -1;
    size_t got = 0;
    clk::time_point sent;
};
}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Ping-pong client for the runtime benchmark"};
    uint16_t port = 7000;
    unsigned conns = 64, size = 64;
    double seconds = 5, warmup = 1;
    app.add_option("--port", port);
    app.add_option("--conns", conns)->check(CLI::Range(1u, 100000u));
    app.add_option("--size", size)->check(CLI::Range(1u, 65536u));
    app.add_option("--seconds", seconds)->check(CLI::Range(0.1, 600.0));
    app.add_option("--warmup", warmup)->check(CLI::Range(0.0, 60.0));
    CLI11_PARSE(app, argc, argv);

    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    std::vector<conn> cs(conns);
    std::string req(size, 'x');
    std::vector<char> buf(65536);
    std::vector<uint32_t> lat_ns;
    lat_ns.reserve(1 << 22);
    for (unsigned i = 0; i < conns; ++i) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
            std::fprintf(stderr, "echo_client: connect 127.0.0.1:%u failed: %s\n", port, std::strerror(errno));
            return 1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cs[i].fd = fd;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u32 = i;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    auto t_start = clk::now();
    auto t_measure = t_start + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(warmup));
    auto t_end = t_measure + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(seconds));
    for (auto& c : cs) {
        c.sent = clk::now();
        if (send(c.fd, req.data(), req.size(), MSG_NOSIGNAL) != ssize_t(req.size()))
            return 1;
    }
    uint64_t done = 0;
    std::vector<epoll_event> evs(1024);
    for (;;) {
        auto now = clk::now();
        if (now >= t_end)
            break;
        int n = epoll_wait(ep, evs.data(), int(evs.size()), 100);
        now = clk::now();
        for (int i = 0; i < n; ++i) {
            conn& c = cs[evs[i].data.u32];
            ssize_t r = recv(c.fd, buf.data(), buf.size(), 0);
            if (r <= 0) {
                std::fprintf(stderr, "echo_client: server closed a connection\n");
                return 1;
            }
            c.got += size_t(r);
            if (c.got < size)
                continue;
            c.got = 0;
            if (now >= t_measure && now < t_end) {
                ++done;
                auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now - c.sent).count();
                lat_ns.push_back(uint32_t(std::min<int64_t>(ns, UINT32_MAX)));
            }
            c.sent = now;
            if (send(c.fd, req.data(), req.size(), MSG_NOSIGNAL) != ssize_t(req.size()))
                return 1;
        }
    }
    std::sort(lat_ns.begin(), lat_ns.end());
    auto pct = [&](double p) -> double {
        if (lat_ns.empty())
            return 0;
        size_t idx = size_t(p / 100.0 * double(lat_ns.size() - 1) + 0.5);
        return lat_ns[idx] / 1000.0;
    };
    std::printf("{\"conns\":%u,\"size\":%u,\"seconds\":%.2f,\"requests\":%llu,\"rps\":%.0f,\"p50_us\":%.1f,"
                "\"p99_us\":%.1f,\"max_us\":%.1f}\n",
                conns, size, seconds, (unsigned long long)done, double(done) / seconds, pct(50), pct(99), pct(100));
    for (auto& c : cs)
        close(c.fd);
    return 0;
}
