// DNS resolver tests. The answer walker (dns_wire) is tested on hand-made
// messages, valid and broken (truncations, compression loops, rdlength past
// the end, random and mutated bytes). The resolver is tested against a real
// dnsmasq on 127.0.0.1 (A, AAAA, MX, TXT, CNAME, NXDOMAIN, NODATA, cache
// hits and TTL expiry), against ports where nothing answers (connection
// refused, timeout), and against a small fake server that sends broken or
// unusual answers (malformed, SERVFAIL, SOA negative TTL, TTL 0).
//
// dnsmasq must be installed (/usr/sbin/dnsmasq, Debian package
// dnsmasq-base): without it these tests fail, naming the package.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/net/dns.hh"
#include "runtime/reactor/io.hh"

extern char** environ;

using namespace std::chrono_literals;
using rw::task;
using rw::net::dns_errc;
using rw::net::resolver;
using rw::net::resolver_options;
namespace wire = rw::net::dns_wire;

namespace {

using bytes = std::vector<uint8_t>;

// ---- building DNS messages by hand ----

void put16(bytes& b, uint16_t v) {
    b.push_back(uint8_t(v >> 8));
    b.push_back(uint8_t(v));
}
void put32(bytes& b, uint32_t v) {
    put16(b, uint16_t(v >> 16));
    put16(b, uint16_t(v));
}
void put_name(bytes& b, const std::string& name) {
    size_t start = 0;
    while (start < name.size()) {
        size_t dot = name.find('.', start);
        if (dot == std::string::npos)
            dot = name.size();
        b.push_back(uint8_t(dot - start));
        b.insert(b.end(), name.begin() + long(start), name.begin() + long(dot));
        start = dot + 1;
    }
    b.push_back(0);
}
void put_header(bytes& b, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar) {
    put16(b, id);
    put16(b, flags);
    put16(b, qd);
    put16(b, an);
    put16(b, ns);
    put16(b, ar);
}
// An RR whose owner is a pointer to offset 12 (the question name).
void put_rr_ptr(bytes& b, uint16_t type, uint32_t ttl, const bytes& rdata) {
    put16(b, 0xC00C);
    put16(b, type);
    put16(b, 1);
    put32(b, ttl);
    put16(b, uint16_t(rdata.size()));
    b.insert(b.end(), rdata.begin(), rdata.end());
}

constexpr uint16_t k_response = 0x8180;  // QR, RD, RA, NOERROR

// example.test A: two addresses with TTLs 300 and 100.
bytes valid_a_answer() {
    bytes b;
    put_header(b, 0x1234, k_response, 1, 2, 0, 0);
    put_name(b, "example.test");
    put16(b, 1);
    put16(b, 1);
    put_rr_ptr(b, 1, 300, {192, 0, 2, 1});
    put_rr_ptr(b, 1, 100, {192, 0, 2, 2});
    return b;
}

// alias.test A: CNAME (TTL 50) to target.test, then its A (TTL 400). The
// target's owner name is compressed into the CNAME's rdata.
bytes cname_answer() {
    bytes b;
    put_header(b, 7, k_response, 1, 2, 0, 0);
    put_name(b, "alias.test");  // offset 12; "test" label at 18
    put16(b, 1);
    put16(b, 1);
    bytes rdata;
    rdata.push_back(6);
    for (char c : std::string("target"))
        rdata.push_back(uint8_t(c));
    put16(rdata, 0xC012);  // -> "test" at 18
    size_t target_at = b.size() + 12;  // where the rdata will start in b
    put_rr_ptr(b, 5, 50, rdata);
    put16(b, uint16_t(0xC000 | target_at));
    put16(b, 1);
    put16(b, 1);
    put32(b, 400);
    put16(b, 4);
    for (uint8_t x : {192, 0, 2, 9})
        b.push_back(x);
    return b;
}

// nope.test A: NXDOMAIN with an SOA in the authority section.
bytes nxdomain_with_soa(uint32_t soa_ttl, uint32_t minimum) {
    bytes b;
    put_header(b, 9, 0x8183, 1, 0, 1, 0);
    put_name(b, "nope.test");  // "test" at 17
    put16(b, 1);
    put16(b, 1);
    put16(b, 0xC011);  // owner: "test"
    put16(b, 6);
    put16(b, 1);
    put32(b, soa_ttl);
    bytes rdata;
    put_name(rdata, "ns.test");
    put16(rdata, 0xC011);  // RNAME compressed
    for (uint32_t v : {1u, 2u, 3u, 4u, minimum})
        put32(rdata, v);
    put16(b, uint16_t(rdata.size()));
    b.insert(b.end(), rdata.begin(), rdata.end());
    return b;
}

auto summarize(const bytes& b) { return wire::summarize(std::span<const uint8_t>(b.data(), b.size())); }

// ---- processes and sockets ----

uint16_t bound_port(int fd) {
    sockaddr_in sin{};
    socklen_t len = sizeof sin;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len) == 0);
    return ntohs(sin.sin_port);
}

int udp_socket_on(uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// A port that is free for UDP and TCP on 127.0.0.1 right now.
uint16_t free_port() {
    for (int attempt = 0; attempt < 20; ++attempt) {
        int u = udp_socket_on(0);
        REQUIRE(u >= 0);
        uint16_t port = bound_port(u);
        ::close(u);
        int t = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(t >= 0);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bool ok = ::bind(t, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0;
        ::close(t);
        if (ok)
            return port;
    }
    FAIL("no free UDP+TCP port on 127.0.0.1");
    return 0;
}

// Sends one A query for name to 127.0.0.1:port and waits up to wait for an
// answer (blocking; the test thread only, before the reactor runs).
bool udp_answers(uint16_t port, const std::string& name, std::chrono::milliseconds wait) {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bytes q;
    put_header(q, 0x4242, 0x0100, 1, 0, 0, 0);
    put_name(q, name);
    put16(q, 1);
    put16(q, 1);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    if (::sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == ssize_t(q.size())) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, int(wait.count())) == 1) {
            uint8_t buf[512];
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            ok = n >= 12 && buf[0] == 0x42 && buf[1] == 0x42;
        }
    }
    ::close(fd);
    return ok;
}

std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

const char* const k_dnsmasq = "/usr/sbin/dnsmasq";

// A real dnsmasq serving the .test zone below on 127.0.0.1:port, in the
// foreground, its output in a temporary log. Killed (SIGTERM, then SIGKILL)
// and reaped by the destructor.
class dnsmasq_server {
public:
    dnsmasq_server() {
        if (::access(k_dnsmasq, X_OK) != 0)
            FAIL("dnsmasq not found at " << k_dnsmasq
                                         << ": install the Debian package dnsmasq-base (apt-get install dnsmasq-base)");
        char tmpl[] = "/tmp/rw_dnsmasq_XXXXXX";
        int lfd = ::mkstemp(tmpl);
        REQUIRE(lfd >= 0);
        ::close(lfd);
        _log = tmpl;
        std::string why;
        for (int attempt = 0; attempt < 5; ++attempt) {
            _port = free_port();
            if (start_once(why))
                return;
        }
        std::string log = read_file(_log);
        ::unlink(_log.c_str());
        _log.clear();
        FAIL("dnsmasq did not start: " << why << "\n--- dnsmasq log ---\n" << log);
    }
    ~dnsmasq_server() {
        stop();
        if (!_log.empty())
            ::unlink(_log.c_str());
    }
    dnsmasq_server(const dnsmasq_server&) = delete;

    uint16_t port() const { return _port; }
    std::string server() const { return "127.0.0.1:" + std::to_string(_port); }

private:
    bool start_once(std::string& why) {
        std::vector<std::string> args = {
            k_dnsmasq,
            "--no-daemon",  // foreground, no privilege drop, TCP served in-process
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--port=" + std::to_string(_port),
            "--pid-file=",
            "--log-facility=-",
            "--log-queries",
            "--local=/test/",
            "--local-ttl=2",
            "--host-record=mx1.example.test,192.0.2.10",
            "--host-record=mx2.example.test,192.0.2.20",
            "--host-record=v6.example.test,2001:db8::10",
            "--host-record=dual.example.test,192.0.2.30,2001:db8::30",
            "--mx-host=example.test,mx2.example.test,20",
            "--mx-host=example.test,mx1.example.test,10",
            "--txt-record=example.test,v=spf1 -all",
            "--txt-record=multi.example.test,part one,part two",
            "--cname=alias.example.test,mx1.example.test",
            "--cname=chain.example.test,alias.example.test",
            "--cname=mxalias.example.test,example.test",
        };
        for (int i = 0; i < 8; ++i)
            args.push_back(fmt::format("--host-record=h{}.example.test,192.0.2.{}", i, 100 + i));
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);

        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, _log.c_str(), O_WRONLY | O_APPEND, 0);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        posix_spawnattr_t at;
        posix_spawnattr_init(&at);
        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
        posix_spawnattr_setpgroup(&at, 0);
        pid_t pid = -1;
        int r = ::posix_spawn(&pid, k_dnsmasq, &fa, &at, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&at);
        if (r != 0) {
            why = fmt::format("posix_spawn {}: {}", k_dnsmasq, std::strerror(r));
            return false;
        }
        _pid = pid;
        // Ready when it answers; gone if it could not bind (port taken
        // between our probe and its bind): then the caller tries another.
        auto deadline = std::chrono::steady_clock::now() + 10s;
        for (int i = 0; i < 200 && std::chrono::steady_clock::now() < deadline; ++i) {
            int status = 0;
            if (::waitpid(_pid, &status, WNOHANG) == _pid) {
                _pid = -1;
                why = fmt::format("dnsmasq exited (status {}) on port {}", status, _port);
                return false;
            }
            if (udp_answers(_port, "mx1.example.test", 50ms))
                return true;
        }
        why = fmt::format("dnsmasq did not answer on port {} within 10 s", _port);
        stop();
        return false;
    }

    void stop() {
        if (_pid <= 0)
            return;
        ::kill(-_pid, SIGTERM);
        for (int i = 0; i < 200; ++i) {  // up to 2 s
            if (::waitpid(_pid, nullptr, WNOHANG) == _pid) {
                _pid = -1;
                return;
            }
            std::this_thread::sleep_for(10ms);
        }
        ::kill(-_pid, SIGKILL);
        ::waitpid(_pid, nullptr, 0);
        _pid = -1;
    }

    pid_t _pid = -1;
    uint16_t _port = 0;
    std::string _log;
};

// A UDP "server" on 127.0.0.1 answering each query with reply(query), in a
// thread of its own; an empty reply means stay silent. Stopped and joined
// by the destructor.
class fake_server {
public:
    using reply_fn = std::function<bytes(const bytes&)>;
    explicit fake_server(reply_fn fn) : _fn(std::move(fn)) {
        _fd = udp_socket_on(0);
        REQUIRE(_fd >= 0);
        _port = bound_port(_fd);
        _thread = std::thread([this] { serve(); });
    }
    ~fake_server() {
        _stop = true;
        _thread.join();
        ::close(_fd);
    }
    fake_server(const fake_server&) = delete;
    std::string server() const { return "127.0.0.1:" + std::to_string(_port); }
    int queries() const { return _queries.load(); }

private:
    void serve() {
        while (!_stop) {
            pollfd p{_fd, POLLIN, 0};
            if (::poll(&p, 1, 20) != 1)
                continue;
            uint8_t buf[4096];
            sockaddr_in from{};
            socklen_t flen = sizeof from;
            ssize_t n = ::recvfrom(_fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
            if (n <= 0)
                continue;
            ++_queries;
            bytes out = _fn(bytes(buf, buf + n));
            if (!out.empty())
                ::sendto(_fd, out.data(), out.size(), 0, reinterpret_cast<sockaddr*>(&from), flen);
        }
    }
    reply_fn _fn;
    int _fd = -1;
    uint16_t _port = 0;
    std::atomic<bool> _stop{false};
    std::atomic<int> _queries{0};
    std::thread _thread;
};

// The query's header id and question, as the start of a reply.
bytes reply_start(const bytes& query, uint16_t flags, uint16_t an, uint16_t ns) {
    bytes b;
    if (query.size() < 12)
        return b;
    size_t pos = 12;
    while (pos < query.size() && query[pos] != 0)
        pos += size_t(query[pos]) + 1;
    pos += 5;  // root label, type, class
    if (pos > query.size())
        return b;
    put_header(b, uint16_t(query[0] << 8 | query[1]), flags, 1, an, ns, 0);
    b.insert(b.end(), query.begin() + 12, query.begin() + long(pos));
    return b;
}

// ---- showing results ----

std::string show(const rw::net::dns_error& e) { return "error " + std::string(rw::net::to_string(e.code)); }
std::string show(const rw::net::dns_result<rw::net::address>& r) {
    if (!r)
        return show(r.error());
    std::string s;
    for (auto& a : r.value())
        s += (s.empty() ? "" : " ") + a.ip_string();
    return s;
}
std::string show(const rw::net::dns_result<rw::net::mx_record>& r) {
    if (!r)
        return show(r.error());
    std::string s;
    for (auto& m : r.value())
        s += fmt::format("{}{} {}", s.empty() ? "" : ", ", m.preference, m.host);
    return s;
}
std::string show(const rw::net::dns_result<std::string>& r) {
    if (!r)
        return show(r.error());
    std::string s;
    for (auto& t : r.value())
        s += (s.empty() ? "" : " | ") + t;
    return s;
}

// Creation failures throw here, before anything is in flight. After it,
// coroutines use CHECK (which does not throw) so close() always runs.
std::unique_ptr<resolver> make_resolver(resolver_options o) {
    auto r = resolver::create(std::move(o));
    if (!r)
        FAIL("resolver::create: " << r.error());
    return std::move(r.value());
}

resolver_options options_for(std::string server) {
    resolver_options o;
    o.servers = {std::move(server)};
    o.timeout = 1000ms;
    o.tries = 2;
    return o;
}

auto elapsed_since(std::chrono::steady_clock::time_point t0) { return std::chrono::steady_clock::now() - t0; }

}  // namespace

// ====================== the answer walker ======================

TEST_CASE("dns_wire: valid answers give the minimum TTL", "[dns]") {
    auto s = summarize(valid_a_answer());
    REQUIRE(s);
    CHECK(s.value().id == 0x1234);
    CHECK(s.value().rcode == 0);
    CHECK(!s.value().truncated);
    CHECK(s.value().ancount == 2);
    REQUIRE(s.value().min_answer_ttl);
    CHECK(*s.value().min_answer_ttl == 100);
    CHECK(!s.value().negative_ttl);

    auto c = summarize(cname_answer());
    REQUIRE(c);
    REQUIRE(c.value().min_answer_ttl);
    CHECK(*c.value().min_answer_ttl == 50);  // the CNAME's TTL counts too
}

TEST_CASE("dns_wire: negative TTL is min(SOA TTL, SOA MINIMUM)", "[dns]") {
    auto a = summarize(nxdomain_with_soa(3600, 30));
    REQUIRE(a);
    CHECK(a.value().rcode == 3);
    CHECK(!a.value().min_answer_ttl);
    REQUIRE(a.value().negative_ttl);
    CHECK(*a.value().negative_ttl == 30);
    auto b = summarize(nxdomain_with_soa(20, 900));
    REQUIRE(b);
    REQUIRE(b.value().negative_ttl);
    CHECK(*b.value().negative_ttl == 20);
}

TEST_CASE("dns_wire: TTLs with the top bit set count as zero", "[dns]") {
    bytes b;
    put_header(b, 1, k_response, 1, 1, 0, 0);
    put_name(b, "x.test");
    put16(b, 1);
    put16(b, 1);
    put_rr_ptr(b, 1, 0x80000001u, {1, 2, 3, 4});
    auto s = summarize(b);
    REQUIRE(s);
    REQUIRE(s.value().min_answer_ttl);
    CHECK(*s.value().min_answer_ttl == 0);
}

TEST_CASE("dns_wire: every truncation of a valid answer is rejected", "[dns]") {
    for (const bytes& full : {valid_a_answer(), cname_answer(), nxdomain_with_soa(60, 60)}) {
        REQUIRE(summarize(full));
        for (size_t len = 0; len < full.size(); ++len) {
            bytes cut(full.begin(), full.begin() + long(len));
            INFO("length " << len << " of " << full.size());
            CHECK(!summarize(cut));
        }
    }
}

TEST_CASE("dns_wire: compression loops and bad pointers are rejected", "[dns]") {
    SECTION("a pointer to itself") {
        bytes b;
        put_header(b, 1, k_response, 1, 0, 0, 0);
        put16(b, 0xC00C);  // the question name at 12 points at 12
        put16(b, 1);
        put16(b, 1);
        auto s = summarize(b);
        REQUIRE(!s);
        CHECK(s.error() == "compression pointer does not point backwards");
    }
    SECTION("two pointers pointing at each other") {
        bytes b;
        put_header(b, 1, k_response, 1, 1, 0, 0);
        put_name(b, "a.test");
        put16(b, 1);
        put16(b, 1);
        size_t at = b.size();  // answer owner: pointer to the next word, which points back here
        put16(b, uint16_t(0xC000 | (at + 2)));
        put16(b, uint16_t(0xC000 | at));
        put16(b, 1);
        put32(b, 60);
        put16(b, 0);
        CHECK(!summarize(b));
    }
    SECTION("a loop through labels and a backwards pointer") {
        // label "a" at 12, then a pointer back to 12: every pointer points
        // backwards from where it sits, yet the name would never end.
        bytes b;
        put_header(b, 1, k_response, 1, 0, 0, 0);
        b.push_back(1);
        b.push_back('a');
        put16(b, 0xC00C);
        put16(b, 1);
        put16(b, 1);
        CHECK(!summarize(b));
    }
    SECTION("a pointer past the end") {
        bytes b;
        put_header(b, 1, k_response, 1, 1, 0, 0);
        put_name(b, "a.test");
        put16(b, 1);
        put16(b, 1);
        put16(b, 0xC000 | 0x3FFF);
        put16(b, 1);
        put16(b, 1);
        put32(b, 60);
        put16(b, 0);
        CHECK(!summarize(b));
    }
    SECTION("a truncated pointer") {
        bytes b;
        put_header(b, 1, k_response, 1, 0, 0, 0);
        b.push_back(0xC0);
        CHECK(!summarize(b));
    }
    SECTION("reserved label types 0x40 and 0x80") {
        for (uint8_t kind : {uint8_t(0x40), uint8_t(0x80)}) {
            bytes b;
            put_header(b, 1, k_response, 1, 0, 0, 0);
            b.push_back(uint8_t(kind | 1));
            b.push_back('a');
            b.push_back(0);
            put16(b, 1);
            put16(b, 1);
            auto s = summarize(b);
            REQUIRE(!s);
            CHECK(s.error() == "reserved label type");
        }
    }
    SECTION("a name longer than 255 bytes") {
        bytes b;
        put_header(b, 1, k_response, 1, 0, 0, 0);
        for (int i = 0; i < 5; ++i) {  // 5 x 64 bytes of labels
            b.push_back(63);
            b.insert(b.end(), 63, 'x');
        }
        b.push_back(0);
        put16(b, 1);
        put16(b, 1);
        auto s = summarize(b);
        REQUIRE(!s);
        CHECK(s.error() == "name longer than 255 bytes");
    }
}

TEST_CASE("dns_wire: rdlength past the end and other lies are rejected", "[dns]") {
    SECTION("rdlength past the end") {
        bytes b = valid_a_answer();
        b[b.size() - 5] = 0x00;
        b[b.size() - 6] = 0x10;  // last rdlength 4 -> 4096
        auto s = summarize(b);
        REQUIRE(!s);
        CHECK(s.error() == "rdata runs past the end");
    }
    SECTION("more answers announced than present") {
        bytes b = valid_a_answer();
        b[7] = 3;
        CHECK(!summarize(b));
    }
    SECTION("65535 questions announced") {
        bytes b = valid_a_answer();
        b[4] = 0xFF;
        b[5] = 0xFF;
        CHECK(!summarize(b));
    }
    SECTION("SOA rdata too short for its fields") {
        bytes b = nxdomain_with_soa(60, 60);
        // Cut the SOA's rdlength by 4 and drop the bytes: MINIMUM is missing.
        constexpr size_t soa_rdata = 9 + 2 + 20;  // "ns.test", RNAME pointer, five numbers
        size_t rdlen_at = b.size() - soa_rdata - 2;
        uint16_t rdlen = uint16_t(b[rdlen_at] << 8 | b[rdlen_at + 1]);
        REQUIRE(rdlen == soa_rdata);
        rdlen -= 4;
        b[rdlen_at] = uint8_t(rdlen >> 8);
        b[rdlen_at + 1] = uint8_t(rdlen);
        b.resize(b.size() - 4);
        CHECK(!summarize(b));
    }
    SECTION("a query instead of a response") {
        bytes b = valid_a_answer();
        b[2] &= 0x7F;
        auto s = summarize(b);
        REQUIRE(!s);
        CHECK(s.error() == "not a response");
    }
    SECTION("shorter than a header") {
        bytes b(11, 0x80);
        CHECK(!summarize(b));
        CHECK(!summarize(bytes{}));
    }
    SECTION("the TC flag is reported") {
        bytes b = valid_a_answer();
        b[2] |= 0x02;
        auto s = summarize(b);
        REQUIRE(s);
        CHECK(s.value().truncated);
    }
}

TEST_CASE("dns_wire: random and mutated messages never read out of bounds", "[dns]") {
    // Under ASan an out-of-bounds read here aborts the test. Whatever is
    // accepted must report its own header faithfully.
    auto header_matches = [](const bytes& b, const wire::summary& s) {
        auto u16 = [&](size_t o) { return uint16_t(b[o] << 8 | b[o + 1]); };
        return s.id == u16(0) && s.rcode == (b[3] & 0x0F) && s.truncated == bool(b[2] & 0x02) &&
               s.qdcount == u16(4) && s.ancount == u16(6) && s.nscount == u16(8) && s.arcount == u16(10);
    };
    std::mt19937 rng(20261125);
    std::uniform_int_distribution<int> byte(0, 255);
    int accepted = 0, faithful = 0;
    for (int i = 0; i < 20000; ++i) {
        bytes b(size_t(byte(rng)) % 96, 0);
        for (auto& x : b)
            x = uint8_t(byte(rng));
        if (b.size() >= 3)
            b[2] |= 0x80;  // a response, so the walk goes further
        if (auto s = summarize(b)) {
            ++accepted;
            faithful += header_matches(b, s.value());
        }
    }
    CHECK(faithful == accepted);
    const bytes seeds[] = {valid_a_answer(), cname_answer(), nxdomain_with_soa(60, 30)};
    int rejected = 0;
    for (const bytes& seed : seeds) {
        auto base = summarize(seed);
        REQUIRE(base);
        for (size_t pos = 0; pos < seed.size(); ++pos) {
            for (int v : {0x00, 0x01, 0x3F, 0x40, 0x80, 0xC0, 0xC0 | 0x0C, 0xFF}) {
                bytes b = seed;
                b[pos] = uint8_t(v);
                auto s = summarize(b);
                if (!s) {
                    ++rejected;
                    continue;
                }
                CHECK(header_matches(b, s.value()));
                if (pos < 2) {  // the ID says nothing about the rest
                    CHECK(s.value().min_answer_ttl == base.value().min_answer_ttl);
                    CHECK(s.value().negative_ttl == base.value().negative_ttl);
                }
            }
        }
    }
    // Lengths and pointers set to 0xFF or 0xC0 run past the end or forwards:
    // some mutations must be refused, or the walk checks nothing.
    CHECK(rejected > 0);
}

// ====================== the resolver against dnsmasq ======================

namespace {

task<void> basic_records(std::string server) {
    auto res = make_resolver(options_for(server));
    auto ta = res->resolve_a("mx1.example.test");
    auto a = co_await std::move(ta);
    CHECK(show(a) == "192.0.2.10");
    if (a)
        CHECK(a.value().at(0).port() == 0);

    auto t6 = res->resolve_aaaa("v6.example.test");
    auto aaaa = co_await std::move(t6);
    CHECK(show(aaaa) == "2001:db8::10");
    if (aaaa)
        CHECK(aaaa.value().at(0).is_v6());

    auto td = res->resolve_aaaa("dual.example.test");
    auto dual6 = co_await std::move(td);
    CHECK(show(dual6) == "2001:db8::30");

    auto tm = res->resolve_mx("example.test");
    auto mx = co_await std::move(tm);
    CHECK(show(mx) == "10 mx1.example.test, 20 mx2.example.test");

    auto tt = res->resolve_txt("example.test");
    auto txt = co_await std::move(tt);
    CHECK(show(txt) == "v=spf1 -all");

    auto tmulti = res->resolve_txt("multi.example.test");
    auto multi = co_await std::move(tmulti);
    CHECK(show(multi) == "part onepart two");  // one record, its strings joined

    CHECK(res->stats().queries_sent == 6);
    CHECK(res->stats().cache_hits == 0);
    // Each query's time to its answer, a loopback server: well under a second.
    CHECK(res->stats().latency_seconds.count() == 6);
    CHECK(res->stats().latency_seconds.sum() > 0);
    CHECK(res->stats().latency_seconds.sum() < 6.0);
    auto closing = res->close();
    co_await std::move(closing);
}

task<void> cname_records(std::string server) {
    auto res = make_resolver(options_for(server));
    auto t1 = res->resolve_a("alias.example.test");
    auto a = co_await std::move(t1);
    CHECK(show(a) == "192.0.2.10");
    auto t2 = res->resolve_a("chain.example.test");  // CNAME -> CNAME -> A
    auto chain = co_await std::move(t2);
    CHECK(show(chain) == "192.0.2.10");
    auto t3 = res->resolve_mx("mxalias.example.test");
    auto mx = co_await std::move(t3);
    CHECK(show(mx) == "10 mx1.example.test, 20 mx2.example.test");
    // The alias exists but its target has no AAAA: nodata, not nxdomain.
    auto t4 = res->resolve_aaaa("alias.example.test");
    auto none = co_await std::move(t4);
    CHECK(show(none) == "error nodata");
    auto closing = res->close();
    co_await std::move(closing);
}

task<void> negative_answers(std::string server) {
    auto res = make_resolver(options_for(server));
    auto t1 = res->resolve_a("nope.example.test");
    auto nx = co_await std::move(t1);
    CHECK(show(nx) == "error nxdomain");
    if (!nx) {
        CHECK(nx.error().permanent());
        CHECK_THAT(nx.error().message, Catch::Contains("nope.example.test A"));
        std::error_code ec = nx.error().code;
        CHECK(ec == dns_errc::nxdomain);
        CHECK(ec.message() == "nxdomain");
    }
    auto t2 = res->resolve_mx("nope.example.test");
    auto nxmx = co_await std::move(t2);
    CHECK(show(nxmx) == "error nxdomain");
    auto t3 = res->resolve_aaaa("mx1.example.test");  // only an A
    auto nodata = co_await std::move(t3);
    CHECK(show(nodata) == "error nodata");
    auto t4 = res->resolve_a("example.test");  // only MX and TXT
    auto nodata2 = co_await std::move(t4);
    CHECK(show(nodata2) == "error nodata");
    CHECK(res->stats().queries_sent == 4);
    CHECK(res->stats().answers_negative == 4);

    // Negative answers are cached too.
    auto t5 = res->resolve_a("NOPE.example.test.");
    auto nx_again = co_await std::move(t5);
    CHECK(show(nx_again) == "error nxdomain");
    auto t6 = res->resolve_aaaa("mx1.example.test");
    auto nodata_again = co_await std::move(t6);
    CHECK(show(nodata_again) == "error nodata");
    CHECK(res->stats().queries_sent == 4);
    CHECK(res->stats().cache_hits == 2);
    auto closing = res->close();
    co_await std::move(closing);
}

task<void> cache_hits(std::string server) {
    auto res = make_resolver(options_for(server));
    auto t1 = res->resolve_mx("example.test");
    auto first = co_await std::move(t1);
    CHECK(show(first) == "10 mx1.example.test, 20 mx2.example.test");
    CHECK(res->stats().queries_sent == 1);
    CHECK(res->stats().cache_hits == 0);
    auto t2 = res->resolve_mx("Example.TEST.");  // same key: lower-cased, trailing dot dropped
    auto second = co_await std::move(t2);
    CHECK(show(second) == show(first));
    CHECK(res->stats().queries_sent == 1);
    CHECK(res->stats().cache_hits == 1);
    // Another type of the same name is another entry.
    auto t3 = res->resolve_txt("example.test");
    auto txt = co_await std::move(t3);
    CHECK(show(txt) == "v=spf1 -all");
    CHECK(res->stats().queries_sent == 2);
    CHECK(res->stats().cache_entries == 2);
    auto closing = res->close();
    co_await std::move(closing);
}

// Asks name until a lookup goes to the server again; returns how long
// after the first lookup that happened (or -1 s). Bounded: 40 rounds of
// 100 ms.
template <typename Lookup>
task<std::chrono::milliseconds> wait_for_requery(resolver* res, Lookup lookup) {
    auto t0 = std::chrono::steady_clock::now();
    uint64_t sent = res->stats().queries_sent;
    for (int i = 0; i < 40; ++i) {
        auto pause = rw::io::sleep(100ms);
        co_await pause;
        auto t = lookup(res);
        auto r = co_await std::move(t);
        (void)r;
        if (res->stats().queries_sent > sent)
            co_return std::chrono::duration_cast<std::chrono::milliseconds>(elapsed_since(t0));
    }
    co_return -1000ms;
}

task<rw::net::dns_result<rw::net::address>> ask_mx1(resolver* r) {
    auto t = r->resolve_a("mx1.example.test");
    co_return co_await std::move(t);
}
task<rw::net::dns_result<rw::net::address>> ask_nope(resolver* r) {
    auto t = r->resolve_a("nope.example.test");
    co_return co_await std::move(t);
}

task<std::chrono::milliseconds> positive_expiry(std::string server) {
    auto res = make_resolver(options_for(server));
    auto t1 = res->resolve_a("mx1.example.test");  // TTL 2 (--local-ttl=2)
    auto first = co_await std::move(t1);
    CHECK(show(first) == "192.0.2.10");
    CHECK(res->stats().queries_sent == 1);
    auto t2 = res->resolve_a("mx1.example.test");
    auto hit = co_await std::move(t2);
    CHECK(show(hit) == "192.0.2.10");
    CHECK(res->stats().cache_hits == 1);
    auto w = wait_for_requery(res.get(), &ask_mx1);
    auto after = co_await std::move(w);
    auto closing = res->close();
    co_await std::move(closing);
    co_return after;
}

task<std::chrono::milliseconds> negative_expiry(std::string server) {
    resolver_options o = options_for(server);
    o.max_negative_ttl = 1s;  // dnsmasq sends no SOA: 60 s fallback, capped to 1 s
    auto res = make_resolver(o);
    auto t1 = res->resolve_a("nope.example.test");
    auto first = co_await std::move(t1);
    CHECK(show(first) == "error nxdomain");
    auto t2 = res->resolve_a("nope.example.test");
    auto hit = co_await std::move(t2);
    CHECK(show(hit) == "error nxdomain");
    CHECK(res->stats().cache_hits == 1);
    CHECK(res->stats().queries_sent == 1);
    auto w = wait_for_requery(res.get(), &ask_nope);
    auto after = co_await std::move(w);
    auto closing = res->close();
    co_await std::move(closing);
    co_return after;
}

task<void> bounded_cache(std::string server) {
    resolver_options o = options_for(server);
    o.cache_max_entries = 2;
    auto res = make_resolver(o);
    for (const char* n : {"h0.example.test", "h1.example.test", "h2.example.test"}) {
        auto t = res->resolve_a(n);
        auto r = co_await std::move(t);
        CHECK(r);
    }
    CHECK(res->stats().cache_entries == 2);
    CHECK(res->stats().cache_evictions == 1);
    CHECK(res->stats().queries_sent == 3);
    auto t1 = res->resolve_a("h2.example.test");  // still cached
    auto r1 = co_await std::move(t1);
    CHECK(show(r1) == "192.0.2.102");
    CHECK(res->stats().queries_sent == 3);
    auto t2 = res->resolve_a("h0.example.test");  // evicted: asked again
    auto r2 = co_await std::move(t2);
    CHECK(show(r2) == "192.0.2.100");
    CHECK(res->stats().queries_sent == 4);
    auto closing = res->close();
    co_await std::move(closing);
}

task<void> one_lookup(resolver* res, std::string name, std::string* out) {
    auto t = res->resolve_a(std::move(name));
    auto r = co_await std::move(t);
    *out = show(r);
}

task<void> concurrent_lookups(std::string server) {
    auto res = make_resolver(options_for(server));
    constexpr int n = 8;
    std::vector<std::string> got(n);
    rw::gate g;
    auto run = [](resolver* r, std::string name, std::string* out, rw::gate* gt) -> task<void> {
        rw::gate::holder h(*gt);
        auto t = one_lookup(r, std::move(name), out);
        co_await std::move(t);
    };
    for (int i = 0; i < n; ++i)
        rw::spawn(run(res.get(), fmt::format("h{}.example.test", i), &got[size_t(i)], &g));
    auto idle = g.wait_idle();
    co_await std::move(idle);
    for (int i = 0; i < n; ++i)
        CHECK(got[size_t(i)] == fmt::format("192.0.2.{}", 100 + i));
    CHECK(res->stats().queries_sent == n);
    auto closing = res->close();
    co_await std::move(closing);
}

task<void> bad_names(std::string server) {
    auto res = make_resolver(options_for(server));
    std::string long_label(64, 'a');
    std::string long_name;
    for (int i = 0; i < 5; ++i)
        long_name += std::string(60, 'b') + ".";
    for (std::string n : {std::string(""), std::string("."), std::string("a..test"), long_label + ".test", long_name,
                          std::string("nul\0x.test", 10)}) {
        auto t = res->resolve_a(n);
        auto r = co_await std::move(t);
        CHECK(show(r) == "error bad_name");
    }
    CHECK(res->stats().queries_sent == 0);
    auto closing = res->close();
    co_await std::move(closing);
}

}  // namespace

TEST_CASE("resolver: A, AAAA, MX (by preference) and TXT from dnsmasq", "[dns]") {
    dnsmasq_server dns;
    rw::run_local(basic_records(dns.server()));
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: CNAMEs are followed for A and MX", "[dns]") {
    dnsmasq_server dns;
    rw::run_local(cname_records(dns.server()));
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: NXDOMAIN and NODATA are distinct, permanent and cached", "[dns]") {
    dnsmasq_server dns;
    rw::run_local(negative_answers(dns.server()));
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: a second lookup is a cache hit", "[dns]") {
    dnsmasq_server dns;
    rw::run_local(cache_hits(dns.server()));
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: a positive entry expires with its TTL", "[dns]") {
    dnsmasq_server dns;
    auto after = rw::run_local(positive_expiry(dns.server()));
    INFO("asked again " << after.count() << " ms after the first lookup");
    CHECK(after >= 1800ms);  // TTL 2 s, less the first lookup's round trip and clock granularity
    CHECK(after < 4000ms);
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: a negative entry expires after max_negative_ttl", "[dns]") {
    dnsmasq_server dns;
    auto after = rw::run_local(negative_expiry(dns.server()));
    INFO("asked again " << after.count() << " ms after the first lookup");
    CHECK(after >= 800ms);
    CHECK(after < 3000ms);
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: the cache is bounded and evicts the least recently used", "[dns]") {
    dnsmasq_server dns;
    rw::run_local(bounded_cache(dns.server()));
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: concurrent lookups share the channel", "[dns]") {
    dnsmasq_server dns;
    rw::run_local(concurrent_lookups(dns.server()));
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: names that cannot be asked fail without a query", "[dns]") {
    dnsmasq_server dns;
    rw::run_local(bad_names(dns.server()));
    REQUIRE(rw::live_task_frames() == 0);
}

// ====================== failures ======================

namespace {

struct timed_outcome {
    std::string shown;
    std::string message;
    std::chrono::milliseconds took{0};
    uint64_t temporary = 0;
};

task<timed_outcome> timed_lookup(resolver_options o) {
    auto res = make_resolver(o);
    auto t0 = std::chrono::steady_clock::now();
    auto t = res->resolve_a("mx1.example.test");
    auto r = co_await std::move(t);
    timed_outcome out;
    out.took = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed_since(t0));
    out.shown = show(r);
    if (!r)
        out.message = r.error().message;
    out.temporary = res->stats().failures_temporary;
    auto closing = res->close();
    co_await std::move(closing);
    co_return out;
}

}  // namespace

TEST_CASE("resolver: a server that is down gives a temporary error within the timeout", "[dns]") {
    resolver_options o;
    o.timeout = 300ms;
    o.tries = 1;
    SECTION("nothing listens on the port (connection refused)") {
        o.servers = {"127.0.0.1:" + std::to_string(free_port())};
        auto out = rw::run_local(timed_lookup(o));
        INFO(out.message << " after " << out.took.count() << " ms");
        CHECK(out.shown == "error temporary");
        CHECK(out.temporary == 1);
        CHECK(out.took < 2000ms);
    }
    SECTION("the server never answers (timeout)") {
        int hole = udp_socket_on(0);  // bound, never read
        REQUIRE(hole >= 0);
        o.servers = {"127.0.0.1:" + std::to_string(bound_port(hole))};
        auto out = rw::run_local(timed_lookup(o));
        ::close(hole);
        INFO(out.message << " after " << out.took.count() << " ms");
        CHECK(out.shown == "error temporary");
        CHECK_THAT(out.message, Catch::Contains("imeout"));
        CHECK(out.took >= 250ms);
        CHECK(out.took < 2000ms);
    }
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: broken and unusual answers from a server", "[dns]") {
    resolver_options o;
    o.timeout = 300ms;
    o.tries = 1;
    SECTION("rdlength past the end is a temporary failure") {
        fake_server fs([](const bytes& q) {
            bytes b = reply_start(q, k_response, 1, 0);
            put_rr_ptr(b, 1, 60, {192, 0, 2, 1});
            b[b.size() - 6] = 0x10;  // rdlength 4 -> 4096
            return b;
        });
        o.servers = {fs.server()};
        auto out = rw::run_local(timed_lookup(o));
        INFO(out.message);
        CHECK(out.shown == "error temporary");
        CHECK_THAT(out.message, Catch::Contains("malformed answer: rdata runs past the end"));
    }
    SECTION("a compression loop in the answer is a temporary failure") {
        fake_server fs([](const bytes& q) {
            bytes b = reply_start(q, k_response, 1, 0);
            size_t at = b.size();
            put16(b, uint16_t(0xC000 | at));  // owner points at itself
            put16(b, 1);
            put16(b, 1);
            put32(b, 60);
            put16(b, 4);
            for (uint8_t x : {192, 0, 2, 1})
                b.push_back(x);
            return b;
        });
        o.servers = {fs.server()};
        auto out = rw::run_local(timed_lookup(o));
        INFO(out.message);
        CHECK(out.shown == "error temporary");
        CHECK_THAT(out.message, Catch::Contains("malformed answer"));
    }
    SECTION("a reply shorter than a header is ignored: timeout") {
        fake_server fs([](const bytes& q) { return bytes(q.begin(), q.begin() + 5); });
        o.servers = {fs.server()};
        auto out = rw::run_local(timed_lookup(o));
        INFO(out.message);
        CHECK(out.shown == "error temporary");
        CHECK(out.took < 2000ms);
    }
    SECTION("SERVFAIL is a temporary failure") {
        fake_server fs([](const bytes& q) { return reply_start(q, 0x8182, 0, 0); });
        o.servers = {fs.server()};
        auto out = rw::run_local(timed_lookup(o));
        INFO(out.message);
        CHECK(out.shown == "error temporary");
        CHECK_THAT(out.message, Catch::Contains("mx1.example.test A: "));
    }
    SECTION("NXDOMAIN with an SOA is cached for min(TTL, MINIMUM)") {
        fake_server fs([](const bytes& q) {
            bytes b = reply_start(q, 0x8183, 0, 1);
            put16(b, 0xC00C);
            put16(b, 6);
            put16(b, 1);
            put32(b, 3600);
            bytes rdata;
            put_name(rdata, "ns.test");
            put_name(rdata, "hostmaster.test");
            for (uint32_t v : {1u, 2u, 3u, 4u, 1u})  // MINIMUM 1 s
                put32(rdata, v);
            put16(b, uint16_t(rdata.size()));
            b.insert(b.end(), rdata.begin(), rdata.end());
            return b;
        });
        o.servers = {fs.server()};
        auto got = rw::run_local([](resolver_options opts) -> task<std::vector<std::string>> {
            auto res = make_resolver(opts);
            std::vector<std::string> log;
            auto t1 = res->resolve_a("gone.test");
            auto r1 = co_await std::move(t1);
            log.push_back(show(r1));
            auto t2 = res->resolve_a("gone.test");
            auto r2 = co_await std::move(t2);
            log.push_back(show(r2) + " sent=" + std::to_string(res->stats().queries_sent));
            auto pause = rw::io::sleep(1200ms);  // past the SOA MINIMUM
            co_await pause;
            auto t3 = res->resolve_a("gone.test");
            auto r3 = co_await std::move(t3);
            log.push_back(show(r3) + " sent=" + std::to_string(res->stats().queries_sent));
            auto closing = res->close();
            co_await std::move(closing);
            co_return log;
        }(o));
        REQUIRE(got.size() == 3);
        CHECK(got[0] == "error nxdomain");
        CHECK(got[1] == "error nxdomain sent=1");
        CHECK(got[2] == "error nxdomain sent=2");
        CHECK(fs.queries() == 2);
    }
    SECTION("TTL 0 is not cached") {
        fake_server fs([](const bytes& q) {
            bytes b = reply_start(q, k_response, 1, 0);
            put_rr_ptr(b, 1, 0, {192, 0, 2, 77});
            return b;
        });
        o.servers = {fs.server()};
        auto sent = rw::run_local([](resolver_options opts) -> task<uint64_t> {
            auto res = make_resolver(opts);
            for (int i = 0; i < 3; ++i) {
                auto t = res->resolve_a("zero.test");
                auto r = co_await std::move(t);
                CHECK(show(r) == "192.0.2.77");
            }
            uint64_t n = res->stats().queries_sent;
            CHECK(res->stats().cache_entries == 0);
            auto closing = res->close();
            co_await std::move(closing);
            co_return n;
        }(o));
        CHECK(sent == 3);
    }
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: close() ends lookups in flight and leaves nothing behind", "[dns]") {
    int hole = udp_socket_on(0);  // never answers
    REQUIRE(hole >= 0);
    resolver_options o;
    o.servers = {"127.0.0.1:" + std::to_string(bound_port(hole))};
    o.timeout = 10s;
    o.tries = 1;
    auto t0 = std::chrono::steady_clock::now();
    auto got = rw::run_local([](resolver_options opts) -> task<std::vector<std::string>> {
        auto res = make_resolver(opts);
        std::vector<std::string> out(3);
        auto run = [](resolver* r, std::string name, std::string* o) -> task<void> {
            auto t = r->resolve_mx(std::move(name));
            auto x = co_await std::move(t);
            *o = show(x) + (x ? "" : " " + x.error().message);
        };
        for (int i = 0; i < 3; ++i)
            rw::spawn(run(res.get(), fmt::format("q{}.test", i), &out[size_t(i)]));
        auto pause = rw::io::sleep(50ms);  // the queries are out, the polls and timer armed
        co_await pause;
        CHECK(out[0].empty());
        auto closing = res->close();
        co_await std::move(closing);
        // After close every lookup has returned, and new ones fail at once.
        auto t = res->resolve_a("mx1.example.test");
        auto late = co_await std::move(t);
        out.push_back(show(late));
        co_return out;
    }(o));
    ::close(hole);
    CHECK(elapsed_since(t0) < 5s);
    REQUIRE(got.size() == 4);
    for (int i = 0; i < 3; ++i)
        CHECK_THAT(got[size_t(i)], Catch::StartsWith("error temporary") && Catch::Contains("resolver closed"));
    CHECK(got[3] == "error temporary");
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("resolver: bad options are refused with a clear message", "[dns]") {
    auto msg = rw::run_local([]() -> task<std::string> {
        resolver_options o;
        o.servers = {"127.0.0.1"};  // no port
        auto r = resolver::create(o);
        co_return r ? std::string("created") : r.error();
    }());
    CHECK_THAT(msg, Catch::Contains("'127.0.0.1'") && Catch::Contains("IP:port"));
    auto msg2 = rw::run_local([]() -> task<std::string> {
        resolver_options o;
        o.servers = {"127.0.0.1:53"};
        o.tries = 0;
        auto r = resolver::create(o);
        co_return r ? std::string("created") : r.error();
    }());
    CHECK_THAT(msg2, Catch::Contains("tries"));
    REQUIRE(rw::live_task_frames() == 0);
}
