// TLS stream tests against real OpenSSL command-line peers (openssl s_server
// and s_client, started here and killed by an RAII guard in every case) and
// against ourselves: data both ways byte for byte, SNI, a 1 MiB full-duplex
// transfer, garbage and silent peers, deadlines, certificate verification,
// bytes read before TLS started (STARTTLS), and make_self_signed checked by
// `openssl x509`. Certificates are generated into a fresh temporary
// directory per test. Every loop is bounded in count and time.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/net/tcp.hh"
#include "runtime/net/tls.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/sync.hh"

extern char** environ;

using namespace std::chrono_literals;
using rw::task;
namespace net = rw::net;

namespace {

constexpr const char* k_openssl = "/usr/bin/openssl";
constexpr auto k_io_timeout = 10s;  // generous: the ASan build on a busy machine

using clock_type = std::chrono::steady_clock;
auto elapsed_since(clock_type::time_point t0) { return clock_type::now() - t0; }

void require_openssl() {
    // Catch2 v2 cannot skip; a missing peer is a failure, said plainly.
    if (::access(k_openssl, X_OK) != 0)
        FAIL(std::string(k_openssl) + " is missing or not executable (" + std::strerror(errno) +
             "): install the openssl package to run the [tls] tests");
    ::signal(SIGPIPE, SIG_IGN);  // writing to a dead child's stdin must not kill us
}

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// A fresh directory under /tmp, removed with everything in it.
struct temp_dir {
    std::string path;
    temp_dir() {
        std::string t = "/tmp/rw_tls_test_XXXXXX";
        REQUIRE(::mkdtemp(t.data()) != nullptr);
        path = t;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string file(const std::string& name) const { return path + "/" + name; }
};

struct cert_files {
    std::string key, cert;
};

cert_files make_cert(const temp_dir& d, const std::string& cn) {
    cert_files f{d.file(cn + ".key"), d.file(cn + ".crt")};
    auto r = net::make_self_signed(cn, f.key, f.cert);
    if (!r)
        FAIL(r.error());
    return f;
}

// A child process: stdout and stderr go to files, stdin is a pipe or
// /dev/null. The destructor ends it: SIGTERM, up to 2 s to exit, then
// SIGKILL, and always waitpid.
class child_process {
public:
    child_process(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path,
                  bool pipe_stdin = false)
        : _argv0(argv.at(1)), _err_path(err_path), _out_path(out_path) {
        posix_spawn_file_actions_t fa;
        REQUIRE(posix_spawn_file_actions_init(&fa) == 0);
        int in_pipe[2] = {-1, -1};
        if (pipe_stdin) {
            REQUIRE(::pipe2(in_pipe, O_CLOEXEC) == 0);
            posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
        } else {
            posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        }
        posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        std::vector<char*> args;
        for (const auto& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        int rc = ::posix_spawn(&_pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (pipe_stdin) {
            ::close(in_pipe[0]);
            _stdin = in_pipe[1];
        }
        if (rc != 0) {
            _pid = -1;
            close_stdin();
            FAIL("cannot start " + argv[0] + ": " + std::strerror(rc));
        }
    }
    ~child_process() {
        close_stdin();
        if (_pid <= 0 || _status)
            return;
        ::kill(_pid, SIGTERM);
        if (!wait_exit(2s)) {
            ::kill(_pid, SIGKILL);
            int st = 0;
            ::waitpid(_pid, &st, 0);
        }
    }
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    void write_stdin(const std::string& s) {
        REQUIRE(_stdin >= 0);
        REQUIRE(::write(_stdin, s.data(), s.size()) == ssize_t(s.size()));
    }
    void close_stdin() {
        if (_stdin >= 0)
            ::close(_stdin);
        _stdin = -1;
    }
    // Reaps the child if it has exited (no waiting).
    bool exited() {
        if (_status)
            return true;
        int st = 0;
        if (::waitpid(_pid, &st, WNOHANG) == _pid)
            _status = st;
        return bool(_status);
    }
    // Polls for exit until the deadline; true if it exited.
    bool wait_exit(std::chrono::milliseconds limit) {
        auto until = clock_type::now() + limit;
        for (int i = 0; i < 100000; ++i) {
            if (exited())
                return true;
            if (clock_type::now() >= until)
                return false;
            std::this_thread::sleep_for(5ms);
        }
        return exited();
    }
    int exit_code() const { return _status && WIFEXITED(*_status) ? WEXITSTATUS(*_status) : -1; }
    std::string out() const { return slurp(_out_path); }
    std::string err() const { return slurp(_err_path); }
    std::string describe() const { return "openssl " + _argv0 + " stderr: " + err(); }

private:
    pid_t _pid = -1;
    int _stdin = -1;
    std::optional<int> _status;
    std::string _argv0, _err_path, _out_path;
};

// Runs `openssl args...` to completion (10 s at most) and returns stdout.
std::string run_openssl(const temp_dir& d, std::vector<std::string> args, int* exit_code = nullptr) {
    args.insert(args.begin(), k_openssl);
    child_process c(args, d.file("cmd.out"), d.file("cmd.err"));
    if (!c.wait_exit(10s))
        FAIL("openssl " + args.at(1) + " did not finish within 10 s");
    if (exit_code)
        *exit_code = c.exit_code();
    else if (c.exit_code() != 0)
        FAIL("openssl " + args.at(1) + " failed: " + c.err());
    return c.out();
}

uint16_t free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    uint16_t port = net::local_port(fd);
    ::close(fd);
    REQUIRE(port != 0);
    return port;
}

net::address loopback(uint16_t port) { return *net::address::parse("127.0.0.1", port); }

struct listener {
    int fd = -1;
    uint16_t port = 0;
    listener() {
        auto l = net::listen_tcp(loopback(0), 16, false);
        if (!l)
            FAIL(l.error());
        fd = l.value();
        port = net::local_port(fd);
    }
    ~listener() { ::close(fd); }
};

// Accepts one connection with a deadline.
task<net::tcp_stream> accept_one(int lfd) {
    auto op = rw::io::accept(lfd, nullptr, nullptr, {.timeout = k_io_timeout});
    int fd = co_await op;
    REQUIRE(fd >= 0);
    co_return net::tcp_stream(fd);
}

// Connects to a port an openssl child is about to listen on: retries on
// ECONNREFUSED every 10 ms for at most 10 s, failing early if it exited.
task<net::tcp_stream> connect_when_listening(uint16_t port, child_process* child) {
    auto until = clock_type::now() + 10s;
    for (int attempt = 0; attempt < 1000; ++attempt) {
        auto op = net::connect_tcp(loopback(port), 2s);
        auto c = co_await std::move(op);
        if (c)
            co_return std::move(c.value());
        REQUIRE(c.error().code == ECONNREFUSED);
        if (child->exited())
            FAIL("the openssl peer exited before listening; " + child->describe());
        if (clock_type::now() >= until)
            break;
        auto pause = rw::io::sleep(10ms);
        co_await pause;
    }
    FAIL("the openssl peer did not listen on port " + std::to_string(port) + " within 10 s");
    co_return net::tcp_stream();
}

task<void> write_str(net::tls_stream* s, std::string data) {
    auto op = s->write_all(data.data(), data.size(), {.timeout = k_io_timeout});
    auto r = co_await std::move(op);
    if (!r)
        FAIL("write failed: " + r.error().message());
}

// Reads until the text ends with `end` (or the peer closes); bounded in
// rounds, bytes and time.
task<std::string> read_until(net::tls_stream* s, std::string end, size_t max_bytes) {
    std::string out;
    char buf[4096];
    for (int round = 0; round < 10000; ++round) {
        if (out.size() >= end.size() && out.compare(out.size() - end.size(), end.size(), end) == 0)
            break;
        auto op = s->read(buf, sizeof buf, {.timeout = k_io_timeout});
        auto r = co_await std::move(op);
        if (!r)
            FAIL("read failed: " + r.error().message());
        if (r.value() == 0)
            break;
        out.append(buf, r.value());
        REQUIRE(out.size() <= max_bytes);
    }
    co_return out;
}

// Reads and expects a clean end of stream.
task<void> expect_eof(net::tls_stream* s) {
    char buf[256];
    auto op = s->read(buf, sizeof buf, {.timeout = k_io_timeout});
    auto r = co_await std::move(op);
    if (!r)
        FAIL("read failed: " + r.error().message());
    REQUIRE(r.value() == 0);
}

std::string reversed_line(const std::string& line) {  // s_server -rev
    std::string body = line.substr(0, line.size() - 1);
    return std::string(body.rbegin(), body.rend()) + "\n";
}

std::string pattern(size_t n, uint64_t seed) {  // xorshift64: any byte value
    std::string s(n, '\0');
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s[i] = char(x >> 56);
    }
    return s;
}

net::tls_context server_ctx(const cert_files& f) {
    auto c = net::tls_context::server(f.cert, f.key);
    if (!c)
        FAIL(c.error());
    return std::move(c.value());
}

net::tls_context client_ctx(bool verify, const std::string& ca_file, const std::string& host) {
    net::tls_context::client_config cfg;
    cfg.verify_peer = verify;
    cfg.ca_file = ca_file;
    cfg.sni_host = host;
    auto c = net::tls_context::client(cfg);
    if (!c)
        FAIL(c.error());
    return std::move(c.value());
}

// Outcome of a peer coroutine run with spawn(): checked by the test after
// the reactor stops (no REQUIRE inside spawned coroutines).
struct peer_outcome {
    bool handshake_ok = false;
    std::string error;
    std::string sni, protocol, subject;
    std::string received;
    bool eof_clean = false;
    rw::event done;
};

}  // namespace

// ---- make_self_signed and contexts ----

TEST_CASE("make_self_signed writes a key (0600) and a ten-year certificate openssl accepts", "[tls]") {
    require_openssl();
    temp_dir d;
    cert_files f = make_cert(d, "mx.example.test");

    struct stat st{};
    REQUIRE(::stat(f.key.c_str(), &st) == 0);
    REQUIRE((st.st_mode & 0777) == 0600);
    REQUIRE(::stat(f.cert.c_str(), &st) == 0);
    REQUIRE((st.st_mode & 0777) == 0644);
    REQUIRE_THAT(slurp(f.key), Catch::StartsWith("-----BEGIN PRIVATE KEY-----"));

    std::string subject = run_openssl(d, {"x509", "-noout", "-subject", "-in", f.cert});
    REQUIRE(subject == "subject=CN = mx.example.test\n");
    std::string issuer = run_openssl(d, {"x509", "-noout", "-issuer", "-in", f.cert});
    REQUIRE(issuer == "issuer=CN = mx.example.test\n");
    std::string san = run_openssl(d, {"x509", "-noout", "-ext", "subjectAltName", "-in", f.cert});
    REQUIRE_THAT(san, Catch::Contains("DNS:mx.example.test"));
    std::string text = run_openssl(d, {"x509", "-noout", "-text", "-in", f.cert});
    REQUIRE_THAT(text, Catch::Contains("prime256v1") && Catch::Contains("Version: 3"));
    // Valid for ten years: not expiring within 9.9 years, expiring within 10.1.
    int code = -1;
    run_openssl(d, {"x509", "-noout", "-checkend", std::to_string(3615LL * 86400), "-in", f.cert}, &code);
    REQUIRE(code == 0);
    run_openssl(d, {"x509", "-noout", "-checkend", std::to_string(3690LL * 86400), "-in", f.cert}, &code);
    REQUIRE(code == 1);
    // The key matches the certificate.
    std::string kpub = run_openssl(d, {"pkey", "-pubout", "-in", f.key});
    std::string cpub = run_openssl(d, {"x509", "-noout", "-pubkey", "-in", f.cert});
    REQUIRE(kpub == cpub);

    // A second call replaces both files (new key, same permissions).
    auto again = net::make_self_signed("mx.example.test", f.key, f.cert);
    REQUIRE(again);
    REQUIRE(run_openssl(d, {"pkey", "-pubout", "-in", f.key}) != kpub);
    REQUIRE(::stat(f.key.c_str(), &st) == 0);
    REQUIRE((st.st_mode & 0777) == 0600);
    // Only the two files: no temporary left behind.
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(d.path))
        n += e.path().filename().string().rfind("mx.example.test", 0) == 0;
    REQUIRE(n == 2);
}

TEST_CASE("make_self_signed refuses bad names and unwritable paths", "[tls]") {
    temp_dir d;
    auto bad = net::make_self_signed("has space,comma", d.file("k"), d.file("c"));
    REQUIRE(!bad);
    REQUIRE_THAT(bad.error(), Catch::Contains("has space,comma"));
    auto empty = net::make_self_signed("", d.file("k"), d.file("c"));
    REQUIRE(!empty);
    auto nodir = net::make_self_signed("ok.test", d.file("missing/k"), d.file("missing/c"));
    REQUIRE(!nodir);
    REQUIRE_THAT(nodir.error(), Catch::Contains(d.file("missing/k")) && Catch::Contains("No such file"));
}

TEST_CASE("context errors name the file and OpenSSL's reason", "[tls]") {
    temp_dir d;
    cert_files a = make_cert(d, "a.test");
    cert_files b = make_cert(d, "b.test");
    SECTION("missing certificate") {
        auto c = net::tls_context::server(d.file("nope.crt"), a.key);
        REQUIRE(!c);
        REQUIRE_THAT(c.error(), Catch::Contains(d.file("nope.crt")) && Catch::Contains("No such file"));
    }
    SECTION("garbage key") {
        std::ofstream(d.file("junk.key")) << "not a key\n";
        auto c = net::tls_context::server(a.cert, d.file("junk.key"));
        REQUIRE(!c);
        REQUIRE_THAT(c.error(), Catch::Contains(d.file("junk.key")) && Catch::Contains("error:"));
    }
    SECTION("key of another certificate") {
        auto c = net::tls_context::server(a.cert, b.key);
        REQUIRE(!c);
        REQUIRE_THAT(c.error(), Catch::Contains(b.key) && Catch::Contains(a.cert));
    }
    SECTION("missing CA file") {
        net::tls_context::client_config cfg;
        cfg.ca_file = d.file("nope-ca.pem");
        auto c = net::tls_context::client(cfg);
        REQUIRE(!c);
        REQUIRE_THAT(c.error(), Catch::Contains(d.file("nope-ca.pem")));
    }
    SECTION("good ones") {
        auto s = net::tls_context::server(a.cert, a.key);
        REQUIRE(s);
        REQUIRE(s.value().is_server());
        net::tls_context::client_config cfg;
        cfg.ca_file = a.cert;
        cfg.sni_host = "a.test";
        auto c = net::tls_context::client(cfg);
        REQUIRE(c);
        REQUIRE(!c.value().is_server());
        REQUIRE(c.value().sni_host() == "a.test");
    }
}

// ---- (1) our client against openssl s_server ----

namespace {
struct client_vs_s_server_result {
    std::string protocol, cipher, subject;
    bool verified = false;
    std::vector<std::string> replies;
};

task<client_vs_s_server_result> client_vs_s_server(uint16_t port, child_process* srv, const net::tls_context* ctx,
                                                   std::vector<std::string> lines) {
    auto co = connect_when_listening(port, srv);
    net::tcp_stream tcp = co_await std::move(co);
    net::tls_stream s(std::move(tcp), *ctx);
    auto hs = s.handshake({.timeout = k_io_timeout});
    auto h = co_await std::move(hs);
    if (!h)
        FAIL("handshake failed: " + h.error().message() + "; " + srv->describe());
    client_vs_s_server_result out;
    out.protocol = std::string(s.protocol());
    out.cipher = std::string(s.cipher());
    out.subject = s.peer_subject();
    out.verified = s.peer_verified();
    for (const auto& line : lines) {
        auto w = write_str(&s, line);
        co_await std::move(w);
        auto rd = read_until(&s, "\n", 1 << 20);
        std::string reply = co_await std::move(rd);
        out.replies.push_back(std::move(reply));
    }
    // Our close_notify ends s_server's session; it answers with its own
    // close_notify or just closes: either way read() reports 0.
    auto sd = s.shutdown({.timeout = k_io_timeout});
    auto sr = co_await std::move(sd);
    REQUIRE(sr);
    auto eof = expect_eof(&s);
    co_await std::move(eof);
    co_return out;
}
}  // namespace

TEST_CASE("our client talks to openssl s_server -rev byte for byte", "[tls]") {
    require_openssl();
    std::string version = GENERATE(std::string("-tls1_3"), std::string("-tls1_2"));
    temp_dir d;
    cert_files f = make_cert(d, "server.test");
    uint16_t port = free_port();
    child_process srv({k_openssl, "s_server", "-accept", "127.0.0.1:" + std::to_string(port), "-cert", f.cert, "-key",
                       f.key, "-naccept", "1", "-rev", version},
                      d.file("s_server.out"), d.file("s_server.err"));
    // Verification on: the generated certificate is the trust anchor and
    // its name the expected host.
    net::tls_context ctx = client_ctx(true, f.cert, "server.test");

    std::string long_line = pattern(12000, 7);
    for (char& c : long_line)  // printable, no CR/LF: -rev treats lines as text
        c = char(' ' + (static_cast<unsigned char>(c) % 94));
    std::vector<std::string> lines = {"hello world\n", "x\n", long_line + "\n", "The quick brown fox 0123456789\n"};
    auto r = rw::run_local(client_vs_s_server(port, &srv, &ctx, lines));

    REQUIRE(r.protocol == (version == "-tls1_3" ? "TLSv1.3" : "TLSv1.2"));
    REQUIRE(!r.cipher.empty());
    REQUIRE(r.subject == "CN=server.test");
    REQUIRE(r.verified);
    REQUIRE(r.replies.size() == lines.size());
    for (size_t i = 0; i < lines.size(); ++i)
        REQUIRE(r.replies[i] == reversed_line(lines[i]));
    // -naccept 1: s_server leaves by itself once the session is over.
    REQUIRE(srv.wait_exit(10s));
    REQUIRE(srv.exit_code() == 0);
    REQUIRE(rw::live_task_frames() == 0);
}

// ---- (2) openssl s_client against our server ----

namespace {
struct echo_server_result {
    std::string sni, protocol, subject, line;
    bool client_sent_close_notify = false;
};

task<echo_server_result> echo_server(int lfd, const net::tls_context* ctx, std::string greeting) {
    auto ac = accept_one(lfd);
    net::tcp_stream tcp = co_await std::move(ac);
    net::tls_stream s(std::move(tcp), *ctx);
    REQUIRE(s.is_server());
    auto hs = s.handshake({.timeout = k_io_timeout});
    auto h = co_await std::move(hs);
    if (!h)
        FAIL("handshake failed: " + h.error().message());
    echo_server_result out;
    out.sni = std::string(s.sni_name());
    out.protocol = std::string(s.protocol());
    out.subject = s.peer_subject();
    auto w = write_str(&s, greeting);
    co_await std::move(w);
    auto rd = read_until(&s, "\n", 1 << 16);
    out.line = co_await std::move(rd);
    auto echo = write_str(&s, out.line);
    co_await std::move(echo);
    auto sd = s.shutdown();
    auto sr = co_await std::move(sd);
    REQUIRE(sr);
    co_return out;
}
}  // namespace

TEST_CASE("openssl s_client talks to our server: data both ways and SNI", "[tls]") {
    require_openssl();
    std::string version = GENERATE(std::string("-tls1_3"), std::string("-tls1_2"));
    temp_dir d;
    cert_files f = make_cert(d, "x.test");
    net::tls_context ctx = server_ctx(f);
    listener l;
    child_process cli({k_openssl, "s_client", "-connect", "127.0.0.1:" + std::to_string(l.port), "-servername",
                       "x.test", "-quiet", version},
                      d.file("s_client.out"), d.file("s_client.err"), true);
    const std::string line = "hello from s_client: 0123456789 !#$%&'()*+,-./:;<=>?@[]^_`{|}~\n";
    cli.write_stdin(line);  // s_client sends it once the handshake is done
    const std::string greeting = "220 ringway greets you\r\n";
    auto r = rw::run_local(echo_server(l.fd, &ctx, greeting));

    REQUIRE(r.sni == "x.test");
    REQUIRE(r.protocol == (version == "-tls1_3" ? "TLSv1.3" : "TLSv1.2"));
    REQUIRE(r.subject.empty());  // no client certificate
    REQUIRE(r.line == line);
    // Our close_notify ends s_client; its stdout is exactly what we sent.
    if (!cli.wait_exit(10s))
        FAIL("s_client did not exit after our close_notify; " + cli.describe());
    REQUIRE(cli.out() == greeting + line);
    REQUIRE(rw::live_task_frames() == 0);
}

// ---- (3) 1 MiB both ways, our client and our server, full duplex ----

namespace {
constexpr size_t k_big_bytes = 1 << 20;

task<void> big_writer(net::tls_stream* s, const std::string* data, peer_outcome* out, rw::event* done) {
    // Uneven pieces so records and writes do not line up.
    constexpr size_t k_piece = 7919 * 5;
    size_t off = 0;
    for (int i = 0; i < 10000 && off < data->size(); ++i) {
        size_t n = std::min(k_piece, data->size() - off);
        auto op = s->write_all(data->data() + off, n, {.timeout = k_io_timeout});
        auto r = co_await std::move(op);
        if (!r) {
            out->error = "write: " + r.error().message();
            break;
        }
        off += n;
    }
    done->set();
}

// Sends `send` while receiving `expect_len` bytes, then shuts down and
// waits for the peer's close_notify.
task<void> duplex(net::tls_stream* s, const std::string* send, size_t expect_len, peer_outcome* out) {
    rw::event wrote;
    rw::spawn(big_writer(s, send, out, &wrote));
    std::vector<char> buf(5000);  // odd size: reads split records
    for (int i = 0; i < 100000 && out->received.size() < expect_len; ++i) {
        auto op = s->read(buf.data(), buf.size(), {.timeout = k_io_timeout});
        auto r = co_await std::move(op);
        if (!r) {
            out->error = "read: " + r.error().message();
            break;
        }
        if (r.value() == 0)
            break;
        out->received.append(buf.data(), r.value());
    }
    co_await wrote.wait();
    auto sd = s->shutdown({.timeout = k_io_timeout});
    auto sr = co_await std::move(sd);
    if (!sr && out->error.empty())
        out->error = "shutdown: " + sr.error().message();
    auto op = s->read(buf.data(), buf.size(), {.timeout = k_io_timeout});
    auto r = co_await std::move(op);
    out->eof_clean = r && r.value() == 0 && s->peer_sent_close_notify();
}

task<void> big_server(int lfd, const net::tls_context* ctx, const std::string* send, peer_outcome* out) {
    auto op = rw::io::accept(lfd, nullptr, nullptr, {.timeout = k_io_timeout});
    int fd = co_await op;
    if (fd < 0) {
        out->error = std::string("accept: ") + std::strerror(-fd);
        out->done.set();
        co_return;
    }
    net::tls_stream s(net::tcp_stream(fd), *ctx);
    auto hs = s.handshake({.timeout = k_io_timeout});
    auto h = co_await std::move(hs);
    out->handshake_ok = bool(h);
    if (h) {
        out->sni = std::string(s.sni_name());
        auto dx = duplex(&s, send, k_big_bytes, out);
        co_await std::move(dx);
    } else {
        out->error = "handshake: " + h.error().message();
    }
    out->done.set();
}

task<void> big_transfer(int lfd, uint16_t port, const net::tls_context* sctx, const net::tls_context* cctx,
                        const std::string* up, const std::string* down, peer_outcome* srv, peer_outcome* cli) {
    rw::spawn(big_server(lfd, sctx, down, srv));
    auto co = net::connect_tcp(loopback(port), 2s);
    auto c = co_await std::move(co);
    REQUIRE(c);
    net::tls_stream s(std::move(c.value()), *cctx);
    auto hs = s.handshake({.timeout = k_io_timeout});
    auto h = co_await std::move(hs);
    cli->handshake_ok = bool(h);
    if (h) {
        cli->protocol = std::string(s.protocol());
        auto dx = duplex(&s, up, k_big_bytes, cli);
        co_await std::move(dx);
    } else {
        cli->error = "handshake: " + h.error().message();
    }
    co_await srv->done.wait();
}
}  // namespace

TEST_CASE("1 MiB each way at once between our client and our server, byte for byte", "[tls]") {
    temp_dir d;
    cert_files f = make_cert(d, "big.test");
    net::tls_context sctx = server_ctx(f);
    net::tls_context cctx = client_ctx(true, f.cert, "big.test");
    listener l;
    const std::string up = pattern(k_big_bytes, 1), down = pattern(k_big_bytes, 2);
    peer_outcome srv, cli;
    rw::run_local(big_transfer(l.fd, l.port, &sctx, &cctx, &up, &down, &srv, &cli));
    INFO("server error: " << srv.error);
    INFO("client error: " << cli.error);
    REQUIRE(srv.handshake_ok);
    REQUIRE(cli.handshake_ok);
    REQUIRE(srv.error.empty());
    REQUIRE(cli.error.empty());
    REQUIRE(cli.protocol == "TLSv1.3");  // tickets arrive after the handshake, mid-read
    REQUIRE(srv.sni == "big.test");
    REQUIRE(srv.received.size() == up.size());
    REQUIRE(srv.received == up);
    REQUIRE(cli.received.size() == down.size());
    REQUIRE(cli.received == down);
    REQUIRE(srv.eof_clean);
    REQUIRE(cli.eof_clean);
    REQUIRE(rw::live_task_frames() == 0);
}

// ---- (4) a plaintext peer that sends garbage ----

namespace {
// Sends `bytes` on the accepted (or connected) socket, then drains until the
// other side closes (bounded).
task<void> garbage_peer(net::tcp_stream* tcp, std::string bytes, bool close_after) {
    auto w = tcp->send_all(bytes.data(), bytes.size(), {.timeout = k_io_timeout});
    int n = co_await w;
    (void)n;  // the TLS side may already have given up
    if (close_after)
        ::shutdown(tcp->fd(), SHUT_WR);
    char buf[4096];
    for (int i = 0; i < 1000; ++i) {
        auto op = tcp->recv(buf, sizeof buf, {.timeout = k_io_timeout});
        int r = co_await op;
        if (r <= 0)
            break;
    }
}

task<rw::net::tls_error> client_vs_garbage(int lfd, uint16_t port, const net::tls_context* ctx, std::string bytes) {
    auto co = net::connect_tcp(loopback(port), 2s);
    auto c = co_await std::move(co);
    REQUIRE(c);
    auto ac = accept_one(lfd);
    net::tcp_stream peer = co_await std::move(ac);
    rw::event peer_done;
    auto run_peer = [](net::tcp_stream* p, std::string b, rw::event* done) -> task<void> {
        auto g = garbage_peer(p, std::move(b), false);
        co_await std::move(g);
        done->set();
    };
    rw::spawn(run_peer(&peer, bytes, &peer_done));
    net::tls_error err;
    {
        net::tls_stream s(std::move(c.value()), *ctx);
        auto hs = s.handshake({.timeout = k_io_timeout});
        auto h = co_await std::move(hs);
        REQUIRE(!h);
        err = h.error();
        REQUIRE(s.failed());
        // Anything further fails at once and says why.
        char buf[16];
        auto rd = s.read(buf, sizeof buf);
        auto r = co_await std::move(rd);
        REQUIRE(!r);
        REQUIRE(r.error().code == net::tls_errc::state);
    }  // closes our socket: the peer's drain loop ends
    co_await peer_done.wait();
    co_return err;
}

task<rw::net::tls_error> server_vs_garbage(int lfd, uint16_t port, const net::tls_context* ctx, std::string bytes,
                                           bool close_after) {
    auto co = net::connect_tcp(loopback(port), 2s);
    auto c = co_await std::move(co);
    REQUIRE(c);
    net::tcp_stream peer = std::move(c.value());
    rw::event peer_done;
    auto run_peer = [](net::tcp_stream* p, std::string b, bool cl, rw::event* done) -> task<void> {
        auto g = garbage_peer(p, std::move(b), cl);
        co_await std::move(g);
        done->set();
    };
    rw::spawn(run_peer(&peer, bytes, close_after, &peer_done));
    auto ac = accept_one(lfd);
    net::tcp_stream tcp = co_await std::move(ac);
    net::tls_error err;
    {
        net::tls_stream s(std::move(tcp), *ctx);
        auto hs = s.handshake({.timeout = k_io_timeout});
        auto h = co_await std::move(hs);
        REQUIRE(!h);
        err = h.error();
    }
    co_await peer_done.wait();
    co_return err;
}
}  // namespace

TEST_CASE("handshake with a plaintext peer sending garbage fails cleanly with a reason", "[tls]") {
    temp_dir d;
    cert_files f = make_cert(d, "g.test");
    listener l;
    SECTION("our client, an SMTP banner instead of a ServerHello") {
        net::tls_context ctx = client_ctx(false, "", "g.test");
        auto e = rw::run_local(client_vs_garbage(l.fd, l.port, &ctx, "220 mail.example ESMTP not TLS\r\n"));
        INFO(e.message());
        REQUIRE(e.code == net::tls_errc::protocol);
        REQUIRE_THAT(e.reason, Catch::StartsWith("handshake: error:") && Catch::Contains("wrong version number"));
    }
    SECTION("our client, random bytes") {
        net::tls_context ctx = client_ctx(false, "", "g.test");
        auto e = rw::run_local(client_vs_garbage(l.fd, l.port, &ctx, pattern(3000, 99)));
        INFO(e.message());
        REQUIRE(e.code == net::tls_errc::protocol);
        REQUIRE_THAT(e.reason, Catch::StartsWith("handshake: error:"));
    }
    SECTION("our server, an HTTP request instead of a ClientHello") {
        net::tls_context ctx = server_ctx(f);
        auto e = rw::run_local(server_vs_garbage(l.fd, l.port, &ctx, "GET / HTTP/1.0\r\n\r\n", false));
        INFO(e.message());
        REQUIRE(e.code == net::tls_errc::protocol);
        REQUIRE_THAT(e.reason, Catch::Contains("http request"));
    }
    SECTION("our server, half a record header, then the peer closes") {
        net::tls_context ctx = server_ctx(f);
        auto e = rw::run_local(server_vs_garbage(l.fd, l.port, &ctx, std::string("\x16\x03\x01", 3), true));
        INFO(e.message());
        REQUIRE(e.code == net::tls_errc::closed);
        REQUIRE_THAT(e.reason, Catch::Contains("closed the connection"));
    }
    REQUIRE(rw::live_task_frames() == 0);
}

// ---- (5) deadlines ----

namespace {
task<net::tls_error> client_handshake_to_silent_peer(uint16_t port, const net::tls_context* ctx,
                                                     std::chrono::milliseconds limit) {
    // Nobody accepts: the kernel completes the TCP handshake and then
    // the "server" says nothing.
    auto co = net::connect_tcp(loopback(port), 2s);
    auto c = co_await std::move(co);
    REQUIRE(c);
    net::tls_stream s(std::move(c.value()), *ctx);
    auto hs = s.handshake({.timeout = limit});
    auto h = co_await std::move(hs);
    REQUIRE(!h);
    co_return h.error();
}

task<net::tls_error> server_handshake_with_silent_peer(int lfd, uint16_t port, const net::tls_context* ctx,
                                                       std::chrono::milliseconds limit) {
    auto co = net::connect_tcp(loopback(port), 2s);
    auto c = co_await std::move(co);
    REQUIRE(c);
    net::tcp_stream silent = std::move(c.value());  // held open, never written
    auto ac = accept_one(lfd);
    net::tcp_stream tcp = co_await std::move(ac);
    net::tls_stream s(std::move(tcp), *ctx);
    auto hs = s.handshake({.timeout = limit});
    auto h = co_await std::move(hs);
    REQUIRE(!h);
    co_return h.error();
}

// The server reads with a short deadline (nothing comes), then the client
// writes, and the same stream reads it: a read timeout is not fatal.
task<void> timeout_server(int lfd, const net::tls_context* ctx, peer_outcome* out, rw::event* timed_out) {
    auto op = rw::io::accept(lfd, nullptr, nullptr, {.timeout = k_io_timeout});
    int fd = co_await op;
    if (fd >= 0) {
        net::tls_stream s(net::tcp_stream(fd), *ctx);
        auto hs = s.handshake({.timeout = k_io_timeout});
        auto h = co_await std::move(hs);
        out->handshake_ok = bool(h);
        if (h) {
            char buf[64];
            auto t0 = clock_type::now();
            auto rd = s.read(buf, sizeof buf, {.timeout = 150ms});
            auto r = co_await std::move(rd);
            if (r || r.error().code != net::tls_errc::timeout || r.error().sys != ETIMEDOUT)
                out->error = "expected a read timeout";
            else if (elapsed_since(t0) < 150ms)
                out->error = "read timed out early";
            timed_out->set();
            for (int i = 0; i < 100 && out->received.find('\n') == std::string::npos; ++i) {
                auto rd2 = s.read(buf, sizeof buf, {.timeout = k_io_timeout});
                auto r2 = co_await std::move(rd2);
                if (!r2 || r2.value() == 0) {
                    out->error += " second read failed";
                    break;
                }
                out->received.append(buf, r2.value());
            }
            auto sd = s.shutdown();
            auto sr = co_await std::move(sd);
            (void)sr;
        }
    }
    timed_out->set();
    out->done.set();
}

task<void> timeout_client(int lfd, uint16_t port, const net::tls_context* sctx, const net::tls_context* cctx,
                          peer_outcome* srv) {
    rw::event timed_out;
    rw::spawn(timeout_server(lfd, sctx, srv, &timed_out));
    auto co = net::connect_tcp(loopback(port), 2s);
    auto c = co_await std::move(co);
    REQUIRE(c);
    net::tls_stream s(std::move(c.value()), *cctx);
    auto hs = s.handshake({.timeout = k_io_timeout});
    auto h = co_await std::move(hs);
    REQUIRE(h);
    co_await timed_out.wait();
    auto w = write_str(&s, "late but fine\n");
    co_await std::move(w);
    auto eof = expect_eof(&s);
    co_await std::move(eof);
    REQUIRE(s.peer_sent_close_notify());
    co_await srv->done.wait();
}
}  // namespace

TEST_CASE("a silent peer makes the handshake time out within its deadline", "[tls]") {
    temp_dir d;
    cert_files f = make_cert(d, "t.test");
    listener l;
    constexpr auto limit = 300ms;
    auto t0 = clock_type::now();
    net::tls_error e;
    SECTION("client side") {
        net::tls_context ctx = client_ctx(false, "", "t.test");
        e = rw::run_local(client_handshake_to_silent_peer(l.port, &ctx, limit));
    }
    SECTION("server side") {
        net::tls_context ctx = server_ctx(f);
        e = rw::run_local(server_handshake_with_silent_peer(l.fd, l.port, &ctx, limit));
    }
    auto took = elapsed_since(t0);
    INFO(e.message());
    REQUIRE(e.code == net::tls_errc::timeout);
    REQUIRE(e.sys == ETIMEDOUT);
    REQUIRE_THAT(e.reason, Catch::StartsWith("handshake: receiving"));
    REQUIRE(took >= limit);
    REQUIRE(took < limit + 3s);
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("a read that times out leaves the stream usable", "[tls]") {
    temp_dir d;
    cert_files f = make_cert(d, "t2.test");
    net::tls_context sctx = server_ctx(f);
    net::tls_context cctx = client_ctx(true, f.cert, "t2.test");
    listener l;
    peer_outcome srv;
    rw::run_local(timeout_client(l.fd, l.port, &sctx, &cctx, &srv));
    INFO(srv.error);
    REQUIRE(srv.handshake_ok);
    REQUIRE(srv.error.empty());
    REQUIRE(srv.received == "late but fine\n");
    REQUIRE(rw::live_task_frames() == 0);
}

// ---- (6) certificate verification, and (7) bytes read before TLS ----

namespace {
// Our server: accepts; optionally reads the first pre_read_len bytes of the
// ClientHello as plaintext and hands them to the stream; handshake; then
// answers one line with "echo: <line>" and shuts down.
task<void> line_server(int lfd, const net::tls_context* ctx, size_t pre_read_len, peer_outcome* out,
                       size_t* buffered) {
    auto op = rw::io::accept(lfd, nullptr, nullptr, {.timeout = k_io_timeout});
    int fd = co_await op;
    if (fd < 0) {
        out->error = "accept failed";
        out->done.set();
        co_return;
    }
    net::tcp_stream tcp(fd);
    std::vector<char> pre(pre_read_len);
    net::tls_stream::options o;
    if (pre_read_len > 0) {
        auto rv = tcp.recv(pre.data(), pre.size(), {.timeout = k_io_timeout});
        int n = co_await rv;
        if (n <= 0) {
            out->error = "plaintext recv failed";
            out->done.set();
            co_return;
        }
        o.pre_read = std::span<const char>(pre.data(), size_t(n));
    }
    net::tls_stream s(std::move(tcp), *ctx, o);
    *buffered = s.buffered_input_bytes();
    auto hs = s.handshake({.timeout = k_io_timeout});
    auto h = co_await std::move(hs);
    out->handshake_ok = bool(h);
    if (!h) {
        out->error = h.error().message();
        out->done.set();
        co_return;
    }
    out->sni = std::string(s.sni_name());
    out->protocol = std::string(s.protocol());
    char buf[256];
    for (int i = 0; i < 100 && out->received.find('\n') == std::string::npos; ++i) {
        auto rd = s.read(buf, sizeof buf, {.timeout = k_io_timeout});
        auto r = co_await std::move(rd);
        if (!r || r.value() == 0) {
            out->error = r ? "early end of stream" : r.error().message();
            break;
        }
        out->received.append(buf, r.value());
    }
    std::string reply = "echo: " + out->received;
    auto w = s.write_all(reply.data(), reply.size(), {.timeout = k_io_timeout});
    auto wr = co_await std::move(w);
    if (!wr)
        out->error = wr.error().message();
    auto sd = s.shutdown();
    auto sr = co_await std::move(sd);
    (void)sr;
    out->done.set();
}

struct pair_result {
    std::optional<net::tls_error> client_error;
    bool client_verified = false;
    std::string client_subject, client_received;
    size_t server_buffered = 0;
};

task<pair_result> client_and_line_server(int lfd, uint16_t port, const net::tls_context* sctx,
                                         const net::tls_context* cctx, std::string sni_override, size_t pre_read_len,
                                         peer_outcome* srv) {
    pair_result out;
    rw::spawn(line_server(lfd, sctx, pre_read_len, srv, &out.server_buffered));
    {
        auto co = net::connect_tcp(loopback(port), 2s);
        auto c = co_await std::move(co);
        REQUIRE(c);
        net::tls_stream::options o;
        o.sni_host = sni_override;
        net::tls_stream s(std::move(c.value()), *cctx, o);
        auto hs = s.handshake({.timeout = k_io_timeout});
        auto h = co_await std::move(hs);
        if (h) {
            // A stream moves between operations; the moved-from one refuses.
            net::tls_stream m(std::move(s));
            char tmp[8];
            auto bad = s.read(tmp, sizeof tmp);
            auto br = co_await std::move(bad);
            REQUIRE(!br);
            REQUIRE(br.error().code == net::tls_errc::state);
            out.client_verified = m.peer_verified();
            out.client_subject = m.peer_subject();
            auto w = write_str(&m, "ping\n");
            co_await std::move(w);
            auto rd = read_until(&m, "\n", 1024);
            out.client_received = co_await std::move(rd);
            auto eof = expect_eof(&m);
            co_await std::move(eof);
        } else {
            out.client_error = h.error();
        }
    }  // closes the client socket, so a server still in its handshake ends
    co_await srv->done.wait();
    co_return out;
}
}  // namespace

TEST_CASE("certificate verification: untrusted, wrong name, trusted, not checked", "[tls]") {
    temp_dir d;
    cert_files server_cert = make_cert(d, "server.test");
    cert_files other = make_cert(d, "other.test");
    net::tls_context sctx = server_ctx(server_cert);
    listener l;
    peer_outcome srv;
    SECTION("untrusted self-signed certificate with verification on") {
        net::tls_context cctx = client_ctx(true, other.cert, "server.test");
        auto r = rw::run_local(client_and_line_server(l.fd, l.port, &sctx, &cctx, "", 0, &srv));
        REQUIRE(r.client_error);
        INFO(r.client_error->message());
        REQUIRE(r.client_error->code == net::tls_errc::verify);
        REQUIRE_THAT(r.client_error->reason, Catch::Contains("certificate verify failed") &&
                                                 Catch::Contains("self-signed certificate"));
        // The server hears our alert.
        INFO(srv.error);
        REQUIRE(!srv.handshake_ok);
        REQUIRE_THAT(srv.error, Catch::Contains("alert"));
    }
    SECTION("trusted certificate, wrong host name") {
        net::tls_context cctx = client_ctx(true, server_cert.cert, "server.test");
        auto r = rw::run_local(client_and_line_server(l.fd, l.port, &sctx, &cctx, "wrong.test", 0, &srv));
        REQUIRE(r.client_error);
        INFO(r.client_error->message());
        REQUIRE(r.client_error->code == net::tls_errc::verify);
        REQUIRE_THAT(r.client_error->reason, Catch::Contains("hostname mismatch"));
        REQUIRE(!srv.handshake_ok);
        REQUIRE(srv.sni == "");  // never reached
    }
    SECTION("trusted certificate, right host name") {
        net::tls_context cctx = client_ctx(true, server_cert.cert, "server.test");
        auto r = rw::run_local(client_and_line_server(l.fd, l.port, &sctx, &cctx, "", 0, &srv));
        INFO((r.client_error ? r.client_error->message() : std::string()) << " / " << srv.error);
        REQUIRE(!r.client_error);
        REQUIRE(r.client_verified);
        REQUIRE(r.client_subject == "CN=server.test");
        REQUIRE(r.client_received == "echo: ping\n");
        REQUIRE(srv.sni == "server.test");
    }
    SECTION("verification off: an untrusted certificate is accepted but not reported verified") {
        net::tls_context cctx = client_ctx(false, "", "server.test");
        auto r = rw::run_local(client_and_line_server(l.fd, l.port, &sctx, &cctx, "", 0, &srv));
        REQUIRE(!r.client_error);
        REQUIRE(!r.client_verified);
        REQUIRE(r.client_received == "echo: ping\n");
    }
    SECTION("an IP literal is not sent as SNI") {
        net::tls_context cctx = client_ctx(false, "", "");
        auto r = rw::run_local(client_and_line_server(l.fd, l.port, &sctx, &cctx, "127.0.0.1", 0, &srv));
        REQUIRE(!r.client_error);
        REQUIRE(srv.handshake_ok);
        REQUIRE(srv.sni == "");
    }
    SECTION("an IP literal is verified as an IP address") {
        net::tls_context cctx = client_ctx(true, server_cert.cert, "");
        auto r = rw::run_local(client_and_line_server(l.fd, l.port, &sctx, &cctx, "127.0.0.1", 0, &srv));
        REQUIRE(r.client_error);
        INFO(r.client_error->message());
        REQUIRE(r.client_error->code == net::tls_errc::verify);
        REQUIRE_THAT(r.client_error->reason, Catch::Contains("IP address mismatch"));
    }
    REQUIRE(rw::live_task_frames() == 0);
}

TEST_CASE("bytes of the ClientHello read as plaintext can be fed to the server stream", "[tls]") {
    // As after STARTTLS (RFC 3207) when the application buffer already
    // holds the start of the TLS stream.
    size_t pre_read_len = GENERATE(size_t(1), size_t(5), size_t(64), size_t(4096));
    temp_dir d;
    cert_files f = make_cert(d, "pre.test");
    net::tls_context sctx = server_ctx(f);
    net::tls_context cctx = client_ctx(true, f.cert, "pre.test");
    listener l;
    peer_outcome srv;
    auto r = rw::run_local(client_and_line_server(l.fd, l.port, &sctx, &cctx, "", pre_read_len, &srv));
    INFO("pre_read_len=" << pre_read_len << " server: " << srv.error);
    REQUIRE(!r.client_error);
    REQUIRE(srv.handshake_ok);
    REQUIRE(r.server_buffered > 0);
    REQUIRE(r.server_buffered <= pre_read_len);
    REQUIRE(srv.sni == "pre.test");
    REQUIRE(srv.received == "ping\n");
    REQUIRE(r.client_received == "echo: ping\n");
    REQUIRE(rw::live_task_frames() == 0);
}

// ---- openssl s_client -starttls smtp: plaintext, then TLS on the same socket ----

namespace {
// Reads one CRLF line from a plaintext socket into *buf (which may hold
// more afterwards); returns the line or "" on failure.
task<std::string> plain_line(net::tcp_stream* tcp, std::string* buf) {
    char tmp[512];
    for (int i = 0; i < 100; ++i) {
        auto pos = buf->find("\r\n");
        if (pos != std::string::npos) {
            std::string line = buf->substr(0, pos + 2);
            buf->erase(0, pos + 2);
            co_return line;
        }
        auto op = tcp->recv(tmp, sizeof tmp, {.timeout = k_io_timeout});
        int n = co_await op;
        if (n <= 0)
            break;
        buf->append(tmp, size_t(n));
    }
    co_return std::string();
}

task<void> plain_send(net::tcp_stream* tcp, std::string s) {
    auto op = tcp->send_all(s.data(), s.size(), {.timeout = k_io_timeout});
    int n = co_await op;
    REQUIRE(n == int(s.size()));
}

task<std::string> starttls_server(int lfd, const net::tls_context* ctx) {
    auto ac = accept_one(lfd);
    net::tcp_stream tcp = co_await std::move(ac);
    std::string buf;
    auto g = plain_send(&tcp, "220 ringway.test ESMTP\r\n");
    co_await std::move(g);
    auto l1 = plain_line(&tcp, &buf);
    std::string ehlo = co_await std::move(l1);
    REQUIRE_THAT(ehlo, Catch::StartsWith("EHLO "));
    auto e = plain_send(&tcp, "250-ringway.test\r\n250 STARTTLS\r\n");
    co_await std::move(e);
    auto l2 = plain_line(&tcp, &buf);
    std::string cmd = co_await std::move(l2);
    REQUIRE(cmd == "STARTTLS\r\n");
    // RFC 3207 4: the client waits for our 220, so nothing may follow the
    // command yet; the SMTP layer refuses the session otherwise.
    REQUIRE(buf.empty());
    auto ok = plain_send(&tcp, "220 2.0.0 ready to start TLS\r\n");
    co_await std::move(ok);
    net::tls_stream::options o;
    o.pre_read = std::span<const char>(buf.data(), buf.size());
    net::tls_stream s(std::move(tcp), *ctx, o);
    auto hs = s.handshake({.timeout = k_io_timeout});
    auto h = co_await std::move(hs);
    if (!h)
        FAIL("handshake failed: " + h.error().message());
    auto rd = read_until(&s, "\n", 4096);
    std::string line = co_await std::move(rd);
    auto w = write_str(&s, "250 got: " + line);
    co_await std::move(w);
    auto sd = s.shutdown();
    auto sr = co_await std::move(sd);
    REQUIRE(sr);
    co_return line;
}
}  // namespace

TEST_CASE("openssl s_client -starttls smtp upgrades a plaintext session to TLS", "[tls]") {
    require_openssl();
    temp_dir d;
    cert_files f = make_cert(d, "smtp.test");
    net::tls_context ctx = server_ctx(f);
    listener l;
    child_process cli({k_openssl, "s_client", "-connect", "127.0.0.1:" + std::to_string(l.port), "-starttls", "smtp",
                       "-quiet"},
                      d.file("s_client.out"), d.file("s_client.err"), true);
    cli.write_stdin("MAIL FROM:<a@b.test>\n");
    std::string line = rw::run_local(starttls_server(l.fd, &ctx));
    REQUIRE(line == "MAIL FROM:<a@b.test>\n");
    if (!cli.wait_exit(10s))
        FAIL("s_client did not exit after our close_notify; " + cli.describe());
    REQUIRE_THAT(cli.out(), Catch::EndsWith("250 got: MAIL FROM:<a@b.test>\n"));
    REQUIRE(rw::live_task_frames() == 0);
}

// ---- post-handshake messages from openssl s_server ----

namespace {
// Polls the child's stdout file until it contains `text` (10 s at most).
task<bool> wait_for_output(child_process* child, std::string text) {
    auto until = clock_type::now() + 10s;
    for (int i = 0; i < 2000 && clock_type::now() < until; ++i) {
        if (child->out().find(text) != std::string::npos)
            co_return true;
        auto pause = rw::io::sleep(5ms);
        co_await pause;
    }
    co_return false;
}

task<void> collect_until(net::tls_stream* s, std::string end, peer_outcome* out) {
    char buf[1024];
    for (int i = 0; i < 10000; ++i) {
        const std::string& got = out->received;
        if (got.size() >= end.size() && got.compare(got.size() - end.size(), end.size(), end) == 0)
            break;
        auto op = s->read(buf, sizeof buf, {.timeout = k_io_timeout});
        auto r = co_await std::move(op);
        if (!r) {
            out->error = r.error().message();
            break;
        }
        if (r.value() == 0) {
            out->error = "early end of stream";
            break;
        }
        out->received.append(buf, r.value());
    }
    out->done.set();
}

struct post_handshake_result {
    std::string protocol;
    peer_outcome reader;
    int renegotiations = 0;
    int requests_seen = 0;  // HelloRequest / KeyUpdate messages received
    bool server_saw_first = false, server_saw_all = false;
};

// OpenSSL's message callback: counts the post-handshake requests we receive.
void count_requests(int write_p, int, int content_type, const void* buf, size_t len, SSL*, void* arg) {
    if (write_p != 0 || content_type != SSL3_RT_HANDSHAKE || len == 0)
        return;
    int type = static_cast<const unsigned char*>(buf)[0];
    if (type == SSL3_MT_HELLO_REQUEST || type == SSL3_MT_KEY_UPDATE)
        ++*static_cast<int*>(arg);
}

task<post_handshake_result> post_handshake_session(uint16_t port, child_process* srv, const net::tls_context* ctx,
                                                   std::string command, int lines) {
    post_handshake_result out;
    auto co = connect_when_listening(port, srv);
    net::tcp_stream tcp = co_await std::move(co);
    net::tls_stream s(std::move(tcp), *ctx);
    auto hs = s.handshake({.timeout = k_io_timeout});
    auto h = co_await std::move(hs);
    if (!h)
        FAIL("handshake failed: " + h.error().message() + "; " + srv->describe());
    out.protocol = std::string(s.protocol());
    auto w1 = write_str(&s, "client first\n");
    co_await std::move(w1);
    auto seen = wait_for_output(srv, "client first\n");
    out.server_saw_first = co_await std::move(seen);

    // A reader runs throughout; s_server starts its key update or
    // renegotiation while we keep writing, so writes overlap it. s_server
    // takes a command only if it arrives alone in one read of its stdin, so
    // the next stdin line waits until the request has reached us.
    SSL_set_msg_callback(s.native(), count_requests);
    SSL_set_msg_callback_arg(s.native(), &out.requests_seen);
    rw::spawn(collect_until(&s, "server done\n", &out.reader));
    srv->write_stdin(command);
    bool sent_after = false;
    auto until = clock_type::now() + 10s;
    for (int i = 0; i < 10000 && clock_type::now() < until; ++i) {
        if (!sent_after && out.requests_seen > 0) {
            srv->write_stdin("server after " + command);
            sent_after = true;
        }
        if (i >= lines && sent_after)
            break;
        if (i < lines) {
            auto w = write_str(&s, "client line " + std::to_string(i) + "\n");
            co_await std::move(w);
        }
        auto pace = rw::io::sleep(1ms);  // spread the writes over the exchange
        co_await pace;
    }
    REQUIRE(sent_after);
    srv->write_stdin("server done\n");
    co_await out.reader.done.wait();
    auto all = wait_for_output(srv, "client line " + std::to_string(lines - 1) + "\n");
    out.server_saw_all = co_await std::move(all);
    out.renegotiations = int(SSL_total_renegotiations(s.native()));
    auto sd = s.shutdown({.timeout = k_io_timeout});
    auto sr = co_await std::move(sd);
    REQUIRE(sr);
    auto eof = expect_eof(&s);
    co_await std::move(eof);
    co_return out;
}
}  // namespace

TEST_CASE("a key update or renegotiation started by openssl s_server does not break the stream", "[tls]") {
    require_openssl();
    // s_server reads single-letter commands from stdin: K = TLS 1.3 key
    // update with update_requested, r = TLS 1.2 renegotiation.
    auto mode = GENERATE(std::pair<std::string, std::string>("-tls1_3", "K\n"),
                         std::pair<std::string, std::string>("-tls1_2", "r\n"));
    temp_dir d;
    cert_files f = make_cert(d, "post.test");
    uint16_t port = free_port();
    child_process srv({k_openssl, "s_server", "-accept", "127.0.0.1:" + std::to_string(port), "-cert", f.cert, "-key",
                       f.key, "-naccept", "1", mode.first},
                      d.file("s_server.out"), d.file("s_server.err"), true);
    net::tls_context ctx = client_ctx(true, f.cert, "post.test");
    constexpr int lines = 100;
    auto r = rw::run_local(post_handshake_session(port, &srv, &ctx, mode.second, lines));
    INFO(mode.first << " reader: " << r.reader.error << "; " << srv.describe());
    REQUIRE(r.protocol == (mode.first == "-tls1_3" ? "TLSv1.3" : "TLSv1.2"));
    REQUIRE(r.server_saw_first);
    REQUIRE(r.reader.error.empty());
    REQUIRE(r.reader.received == "server after " + mode.second + "server done\n");
    REQUIRE(r.server_saw_all);
    // Every line arrived, in order.
    std::string got = srv.out();
    size_t pos = 0;
    for (int i = 0; i < lines; ++i) {
        std::string line = "client line " + std::to_string(i) + "\n";
        size_t at = got.find(line, pos);
        INFO(line);
        REQUIRE(at != std::string::npos);
        pos = at + line.size();
    }
    REQUIRE(r.requests_seen >= 1);
    if (mode.first == "-tls1_2")
        REQUIRE(r.renegotiations >= 1);
    REQUIRE(srv.wait_exit(10s));
    REQUIRE(rw::live_task_frames() == 0);
}
