// ringway-sink: a fast SMTP server for benchmarks and delivery tests. It
// accepts and counts mail, checks the load generator's integrity mark
// (bench/lib/mark.hh) in every message, and misbehaves on demand: by flag
// (--rcpt-tempfail 0.1, --greylist 30s, --stall 0.01...) or by magic
// recipient (tempfail@x, greylist@x, delay-500@x, stall+1@x...), so one
// sink serves mixed tests. On SIGTERM/SIGINT it stops accepting, closes
// connections within 1 s, and writes a JSON report (--report) of what
// arrived, what was corrupt, duplicated or missing (--expect).
//
//   ringway-sink --listen 127.0.0.1:2526 --cores 2 --expect accepted.log --report sink.json
//
// Magic recipients (local part, optionally "+anything"; the mode applies to
// that transaction): tempfail permfail greylist data-tempfail data-permfail
// disconnect garbage endless stall slow delay-<ms>.
//
// Report fields: received (transactions answered 250 after the dot),
// recipients (of those), ok/corrupt/unmarked (mark verdicts), duplicates
// (extra copies of one (id, recipient)), missing/unexpected (against
// --expect, null without it), transactions (MAIL accepted), connections,
// max_concurrent_connections (including connections refused with 421),
// max_messages_per_connection, max_messages_in_any_minute (sliding 60 s),
// bytes (unstuffed message bytes of received messages), faults (injections
// by mode: rcpt-tempfail rcpt-permfail greylist data-tempfail data-permfail
// disconnect garbage endless stall data-delay delay slow-read refuse-after
// max-connections reply-421 lose corrupt duplicate), fault_replies (4xx/5xx replies given by
// faults), replies (every reply by class), peers (received per client IP),
// peer_connections (connections per client IP), helos (connections per
// "IP NAME", the name of each connection's first EHLO or HELO),
// corrupt_ids/missing_ids/duplicate_ids (first 20), seed, elapsed_s.
//
// --save-dir writes with plain blocking calls on the reactor thread: fine
// for tests that look at a few messages, wrong for benchmarks.
//
// One reactor per core (SO_REUSEPORT listener each); sessions are in
// bench/sink/session.cc, the report in bench/sink/report.cc.
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "bench/lib/args.hh"
#include "bench/sink/report.hh"
#include "bench/sink/session.hh"
#include "bench/sink/sink.hh"
#include "runtime/net/tcp.hh"
#include "runtime/net/tls.hh"
#include "runtime/smp/smp.hh"

namespace rw::bench::sink {
globals g;
}

namespace {

using namespace rw::bench::sink;
namespace bench = rw::bench;

[[noreturn]] void die(const std::string& msg) {
    std::fprintf(stderr, "ringway-sink: %s\n", msg.c_str());
    std::exit(2);
}

template <typename T>
T check(rw::result<T, std::string> r) {
    if (!r)
        die(r.error());
    return std::move(r.value());
}

// --delay and --data-delay: a plain number is milliseconds, else a duration.
std::chrono::milliseconds parse_ms(std::string_view opt, const std::string& v) {
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec == std::errc() && p == v.data() + v.size())
        return std::chrono::milliseconds(n);
    return check(bench::parse_duration(opt, v));
}

double fraction(std::string_view opt, const std::string& v) {
    double f = check(bench::parse_fraction(opt, v));
    if (f < 0 || f > 1)
        die(fmt::format("{}: expected a probability between 0 and 1, got \"{}\"", opt, v));
    return f;
}

bool write_atomically(const std::string& path, const std::string& data) {
    std::string tmp = fmt::format("{}.tmp", path);
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f)
        return false;
    bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
    ok = std::fclose(f) == 0 && ok;
    return ok && std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringway-sink: a fast SMTP sink that counts and verifies mail and misbehaves on demand"};
    std::string listen = "127.0.0.1:2526", max_size = "64m", timeout = "300s";
    std::string seed, greylist, delay, data_delay, slow_read, refuse_after, max_connections;
    std::string rcpt_tempfail, rcpt_permfail, data_tempfail, data_permfail, disconnect, garbage, endless, stall,
        reply_421;
    options& o = g.opt;
    bool no_pin = false;
    app.add_option("--listen", listen, "ADDR:PORT to listen on ([::1]:2526 for IPv6; port 0 = any)")
        ->capture_default_str();
    app.add_option("--cores", o.cores, "reactor threads, one listener each")->capture_default_str();
    app.add_flag("--no-pin", no_pin, "do not pin reactor threads to CPUs");
    app.add_option("--hostname", o.hostname, "name in the greeting (default: this host's name)");
    app.add_option("--max-size", max_size, "largest message accepted (SIZE)")->capture_default_str();
    app.add_option("--timeout", timeout, "idle timeout per connection")->capture_default_str();
    auto* cert = app.add_option("--tls-cert", o.tls_cert, "PEM certificate chain: offer STARTTLS");
    auto* key = app.add_option("--tls-key", o.tls_key, "PEM private key for --tls-cert");
    cert->needs(key);
    key->needs(cert);
    app.add_option("--report", o.report_file, "final JSON report file, - = stdout")->capture_default_str();
    app.add_flag("--text", o.text, "print a human summary on stderr at exit");
    app.add_option("--stats", o.stats_file, "write running counts here every 200 ms (tmp + rename)");
    app.add_option("--save-dir", o.save_dir,
                   "save every acknowledged message as DIR/<n>-<id>.eml + .env (blocking writes: slow)");
    app.add_option("--port-file", o.port_file, "write the bound port here once listening");
    app.add_option("--expect", o.expect_file, "load generator's accepted log: '<id> <rcpt>...' per line, read when the sink stops");
    app.add_option("--seed", seed, "seed for the fault dice (default: random)");
    app.add_option("--rcpt-tempfail", rcpt_tempfail, "P: 451 4.3.0 to a RCPT");
    app.add_option("--rcpt-permfail", rcpt_permfail, "P: 550 5.1.1 to a RCPT");
    app.add_option("--data-tempfail", data_tempfail, "P: 451 4.3.0 after the final dot");
    app.add_option("--data-permfail", data_permfail, "P: 554 5.6.0 after the final dot");
    app.add_option("--greylist", greylist, "greylist every (ip, sender, rcpt) for this long (10 = seconds)");
    app.add_option("--delay", delay, "wait before every reply batch (10 = ms)");
    app.add_option("--data-delay", data_delay, "wait before the reply to the final dot (10 = ms)");
    app.add_option("--disconnect-in-data", disconnect, "P: close in the middle of DATA, no reply");
    app.add_option("--garbage", garbage, "P: answer the final dot with a non-reply, then close");
    app.add_option("--endless", endless, "P: answer the final dot with an endless line (up to 10 MiB)");
    app.add_option("--stall", stall, "P: answer the final dot with silence (up to 10 min)");
    app.add_option("--slow-read", slow_read, "read every connection at this many bytes/s (4k = 4096)");
    app.add_option("--refuse-after", refuse_after, "after N connections, 421 at the greeting");
    app.add_option("--max-connections", max_connections, "beyond N concurrent connections, 421 at the greeting");
    app.add_option("--reply-421", reply_421, "P: 421 4.3.2 to MAIL, then close");
    std::string lose, corrupt, duplicate;
    app.add_option("--lose", lose, "P: acknowledge a message, then forget it (shows as missing)");
    app.add_option("--corrupt", corrupt, "P: verify a message as if one body byte had changed (shows as corrupt)");
    app.add_option("--duplicate", duplicate, "P: count a message twice, as a double delivery (shows as duplicate)");
    app.set_version_flag("--version", "ringway-sink " RINGWAY_VERSION);
    CLI11_PARSE(app, argc, argv);

    auto addr = rw::net::address::parse_host_port(listen);
    if (!addr)
        die(fmt::format("--listen: expected ADDR:PORT such as 127.0.0.1:2526 or [::1]:2526, got \"{}\"", listen));
    o.listen = *addr;
    if (o.cores < 1 || o.cores > 256)
        die(fmt::format("--cores: expected 1..256, got {}", o.cores));
    o.pin = !no_pin;
    if (o.hostname.empty()) {
        char h[256] = "";
        ::gethostname(h, sizeof h - 1);
        o.hostname = h[0] ? h : "localhost";
    }
    o.max_size_bytes = check(bench::parse_size("--max-size", max_size));
    o.timeout = check(bench::parse_duration("--timeout", timeout));
    if (o.timeout.count() <= 0)
        die("--timeout: must be positive");
    if (!seed.empty()) {
        o.seed = check(bench::parse_count("--seed", seed));
    } else {
        std::random_device rd;
        o.seed = (uint64_t(rd()) << 32) ^ rd();
    }
    auto frac = [](std::string_view opt, const std::string& v) { return v.empty() ? 0.0 : fraction(opt, v); };
    o.rcpt_tempfail = frac("--rcpt-tempfail", rcpt_tempfail);
    o.rcpt_permfail = frac("--rcpt-permfail", rcpt_permfail);
    o.data_tempfail = frac("--data-tempfail", data_tempfail);
    o.data_permfail = frac("--data-permfail", data_permfail);
    o.disconnect_in_data = frac("--disconnect-in-data", disconnect);
    o.garbage = frac("--garbage", garbage);
    o.endless = frac("--endless", endless);
    o.stall = frac("--stall", stall);
    o.reply_421 = frac("--reply-421", reply_421);
    o.lose = frac("--lose", lose);
    o.corrupt = frac("--corrupt", corrupt);
    o.duplicate = frac("--duplicate", duplicate);
    if (!greylist.empty())
        o.greylist = check(bench::parse_duration("--greylist", greylist));
    if (!delay.empty())
        o.delay = parse_ms("--delay", delay);
    if (!data_delay.empty())
        o.data_delay = parse_ms("--data-delay", data_delay);
    if (!slow_read.empty())
        o.slow_read_bps = check(bench::parse_size("--slow-read", slow_read));
    if (!refuse_after.empty())
        o.refuse_after = check(bench::parse_count("--refuse-after", refuse_after));
    if (!max_connections.empty())
        o.max_connections = check(bench::parse_count("--max-connections", max_connections));

    ::signal(SIGPIPE, SIG_IGN);
    if (!o.save_dir.empty() && ::mkdir(o.save_dir.c_str(), 0755) != 0 && errno != EEXIST)
        die(fmt::format("--save-dir: cannot create {}: {}", o.save_dir, std::strerror(errno)));
    if (o.tls()) {
        auto ctx = rw::net::tls_context::server(o.tls_cert, o.tls_key);
        if (!ctx)
            die(fmt::format("--tls-cert/--tls-key: {}", ctx.error()));
    }

    // Block the stop signals in every thread; one thread waits for them.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    rw::engine_options eo;
    eo.cores = o.cores;
    eo.pin = o.pin;
    auto e = rw::engine::create(eo);
    if (!e)
        die(e.error());
    rw::engine* eng = e.value().get();

    for (unsigned i = 0; i < o.cores; ++i) {
        auto cs = std::make_unique<core_state>();
        cs->index = i;
        cs->rng = o.seed ^ (0x9e3779b97f4a7c15ull * (i + 1));
        g.cores.push_back(std::move(cs));
    }

    // One SO_REUSEPORT listener per core. Port 0: the first picks a port,
    // the others bind the same one.
    std::vector<int> fds;
    rw::net::address bind_addr = o.listen;
    for (unsigned i = 0; i < o.cores; ++i) {
        int fd = check(rw::net::listen_tcp(bind_addr));
        if (i == 0 && bind_addr.port() == 0)
            bind_addr.set_port(rw::net::local_port(fd));
        fds.push_back(fd);
    }
    // The port file first: whoever waits for the line below may read it.
    if (!o.port_file.empty() && !write_atomically(o.port_file, fmt::format("{}\n", bind_addr.port())))
        die(fmt::format("--port-file: cannot write {}: {}", o.port_file, std::strerror(errno)));
    std::fprintf(stderr, "ringway-sink: listening on %s\n", bind_addr.to_string().c_str());
    g.start = std::chrono::steady_clock::now();

    std::atomic<bool> done{false};
    std::thread stats;
    if (!o.stats_file.empty()) {
        stats = std::thread([&done, path = o.stats_file] {
            auto next = std::chrono::steady_clock::now();
            while (!done.load()) {
                if (std::chrono::steady_clock::now() >= next) {
                    write_atomically(path, stats_json());
                    next += std::chrono::milliseconds(200);
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        });
    }
    std::thread sig([eng, set] {
        int s = 0;
        sigwait(&set, &s);
        // Sessions get 1 s (core_main); the reactor's own drain is the backstop.
        eng->request_stop(std::chrono::milliseconds(5000));
    });
    sig.detach();

    auto r = eng->run([&fds](unsigned core) { return core_main(core, fds[core]); });
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - g.start).count();
    done = true;
    if (stats.joinable())
        stats.join();
    if (!r)
        die(r.error());
    if (!o.stats_file.empty())
        write_atomically(o.stats_file, stats_json());

    // Read at the end: the load generator writes its log once its run is over.
    std::vector<std::string> expected;
    if (!o.expect_file.empty())
        expected = check(load_expect(o.expect_file));
    auto rep = make_report(o.expect_file.empty() ? nullptr : &expected, elapsed);
    if (o.report_file == "-") {
        std::fprintf(stdout, "%s\n", rep.json.c_str());
        std::fflush(stdout);
    } else if (!write_atomically(o.report_file, rep.json + "\n")) {
        die(fmt::format("--report: cannot write {}: {}", o.report_file, std::strerror(errno)));
    }
    if (o.text)
        std::fputs(rep.text.c_str(), stderr);
    return 0;
}
