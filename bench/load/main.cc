// ringway-load: drives an SMTP server with many connections and reports
// throughput, latency percentiles and every failure by cause.
//
//   ringway-load --server 127.0.0.1:2525 --connections 50 --per-conn 100
//       --mix 1k:50,4k:30,64k:15,1m:5 --rcpts 2 --domains 2 --count 100k
//   ringway-load --rate 500k/h --duration 60s --json
//
// Closed loop (default): every connection sends its next message as soon as
// the previous one is answered. Open loop (--rate): messages are due at
// fixed intervals whatever the server does; latency is measured from the
// time a message was due, so a stalled server shows up in the percentiles
// instead of slowing the clock down (coordinated omission).
//
// Every message carries an integrity mark (bench/lib/mark.hh) that
// ringway-sink checks; --accepted-log writes the id and accepted recipients
// of every message the server acknowledged, for the sink's --expect.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "bench/lib/json.hh"
#include "bench/load/load.hh"
#include "runtime/smp/smp.hh"

using namespace rw;
using namespace rw::load;

namespace {

// Pseudo-random printable body lines of 76 characters (78 with CRLF); one
// line in sixteen starts with a dot so dot-stuffing is exercised on every
// message of any size.
void make_body(body_template& b, uint64_t target, std::mt19937_64& rng) {
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,;-";
    const size_t n = sizeof alphabet - 1;
    // Headers and the id line take about 330 bytes of the nominal size.
    const uint64_t want = target > 400 ? target - 330 : 64;
    unsigned line = 0;
    while (b.raw.size() < want) {
        std::string l;
        size_t len = std::min<uint64_t>(76, want - b.raw.size() > 2 ? want - b.raw.size() - 2 : 1);
        for (size_t i = 0; i < len; ++i)
            l += alphabet[rng() % n];
        if (line % 16 == 7)
            l[0] = '.';
        if (line % 64 == 13 && len >= 1)
            l = ".";  // a line that is a lone dot: the hardest case for stuffing
        b.raw += l;
        b.raw += "\r\n";
        b.stuffed += l[0] == '.' ? "." + l : l;
        b.stuffed += "\r\n";
        ++line;
    }
    b.prefix.update(b.raw);
}

std::string fmt_ms(uint64_t ns) { return fmt::format("{:.3f}", double(ns) / 1e6); }

struct totals {
    uint64_t attempted = 0, accepted = 0, rejected = 0, failed = 0, rcpt_accepted = 0, rcpt_rejected = 0;
    uint64_t connections = 0, connect_failures = 0, in_flight = 0, errors = 0, bytes = 0;
};

totals sum(const std::vector<std::unique_ptr<core_stats>>& cs) {
    totals t;
    for (auto& c : cs) {
        t.attempted += c->attempted.load(std::memory_order_relaxed);
        t.accepted += c->accepted.load(std::memory_order_relaxed);
        t.rejected += c->rejected.load(std::memory_order_relaxed);
        t.failed += c->failed.load(std::memory_order_relaxed);
        t.rcpt_accepted += c->rcpt_accepted.load(std::memory_order_relaxed);
        t.rcpt_rejected += c->rcpt_rejected.load(std::memory_order_relaxed);
        t.connections += c->connections.load(std::memory_order_relaxed);
        t.connect_failures += c->connect_failures.load(std::memory_order_relaxed);
        t.in_flight += c->in_flight.load(std::memory_order_relaxed);
        t.errors += c->errors.load(std::memory_order_relaxed);
        t.bytes += c->bytes.load(std::memory_order_relaxed);
    }
    return t;
}

template <typename T>
CLI::Option* add_parsed(CLI::App& app, const std::string& name, T& out, std::string& text,
                        std::function<result<T, std::string>(std::string_view, std::string_view)> parse,
                        const std::string& help) {
    return app
        .add_option_function<std::string>(
            name,
            [&out, &text, parse, name](const std::string& v) {
                auto r = parse(name.substr(name.find("--")), v);
                if (!r)
                    throw CLI::ValidationError(r.error());
                out = r.value();
                text = v;
            },
            help)
        ->type_name("VALUE");
}

}  // namespace

namespace rw::load {
void build_bodies(shared_state& s) {
    std::mt19937_64 rng(s.opt.seed ^ 0x5eed);
    unsigned total = 0;
    for (auto& m : s.opt.mix)
        total += m.weight;
    for (size_t i = 0; i < s.opt.mix.size(); ++i) {
        body_template b;
        b.size = s.opt.mix[i].bytes;
        make_body(b, b.size, rng);
        s.bodies.push_back(std::move(b));
    }
    // 1000 slots shared out by weight (at least one slot per size).
    for (size_t i = 0; i < s.opt.mix.size(); ++i) {
        unsigned slots = std::max(1u, unsigned(std::lround(1000.0 * s.opt.mix[i].weight / total)));
        for (unsigned k = 0; k < slots; ++k)
            s.mix_table.push_back(unsigned(i));
    }
}
}  // namespace rw::load

int main(int argc, char** argv) {
    CLI::App app{"ringway-load: SMTP load generator with latency percentiles and an integrity mark in every message"};
    shared_state s;
    options& o = s.opt;
    std::string count_text, duration_text, timeout_text, on_error = "continue", auth;
    bool json = false, progress = false, quiet = false;
    std::string json_file;
    app.add_option("-s,--server", o.server_text, "SMTP server HOST:PORT (IP literal)")->capture_default_str();
    app.add_option("-c,--connections", o.connections, "concurrent connections")->capture_default_str()
        ->check(CLI::Range(1u, 1000000u));
    app.add_option("--per-conn", o.per_conn, "messages per connection (0 = no limit)")->capture_default_str();
    add_parsed<std::vector<bench::size_share>>(app, "--mix", o.mix, o.mix_text, bench::parse_mix,
                                               "message sizes and weights, e.g. 1k:50,4k:30,64k:15,1m:5 (default 4k)");
    app.add_option("--rcpts", o.rcpts, "recipients per message")->capture_default_str()->check(CLI::Range(1u, 1000u));
    app.add_option("--domains", o.domains, "recipient domains the recipients are spread over")
        ->capture_default_str()->check(CLI::Range(1u, 100000u));
    app.add_option("--users", o.users, "distinct recipient local parts ({n} ranges over 0..users-1)")
        ->capture_default_str()->check(CLI::Range(1u, 1000000000u));
    app.add_option("--from", o.from, "sender pattern ({c} = connection)")->capture_default_str();
    app.add_option("--to", o.to, "recipient pattern ({n} = user, {d} = domain 1..domains)")->capture_default_str();
    app.add_option("--ehlo", o.ehlo, "EHLO name")->capture_default_str();
    add_parsed<double>(app, "--rate", o.rate, o.rate_text, bench::parse_rate,
                       "open loop at this rate: N/s, N/m or N/h, e.g. 500k/h (default: closed loop)");
    uint64_t count = 0;
    std::chrono::milliseconds duration{0}, timeout{30'000};
    add_parsed<uint64_t>(app, "-n,--count", count, count_text, bench::parse_count, "messages to send, e.g. 100k");
    add_parsed<std::chrono::milliseconds>(app, "-d,--duration", duration, duration_text, bench::parse_duration,
                                          "run for this long, e.g. 60s");
    add_parsed<std::chrono::milliseconds>(app, "--timeout", timeout, timeout_text, bench::parse_duration,
                                          "deadline for each reply and write (default 30s)");
    app.add_flag("--starttls", o.starttls, "require STARTTLS before mail");
    app.add_option("--dkim-key", o.dkim_key_file, "DKIM-sign every message with this PEM key (RSA or Ed25519)");
    app.add_option("--dkim-domain", o.dkim_domain, "the signing domain (d=); default: the --from domain");
    app.add_option("--dkim-selector", o.dkim_selector, "the selector (s=)")->capture_default_str();
    app.add_option("--tls-ca", o.tls_ca, "verify the server's certificate against this CA file");
    app.add_option("--auth", auth, "AUTH PLAIN as USER:PASSWORD");
    bool no_pipe = false;
    app.add_flag("--no-pipelining", no_pipe, "one command at a time even when PIPELINING is offered");
    app.add_option("--on-error", on_error, "continue (count and carry on) or stop (end the run at the first error)")
        ->check(CLI::IsMember({"continue", "stop"}))->capture_default_str();
    app.add_option("--cores", o.cores, "reactor threads")->capture_default_str()->check(CLI::Range(1u, 1024u));
    app.add_option("--accepted-log", o.accepted_log, "write 'id rcpt...' for each accepted message to this file");
    app.add_option("--seed", o.seed, "seed for sizes, recipients and bodies (default: random)");
    app.add_flag("--json", json, "print the report as JSON on stdout");
    app.add_option("--json-file", json_file, "also write the JSON report to this file");
    app.add_flag("--progress", progress, "live progress line on stderr (default when stderr is a terminal)");
    app.add_flag("-q,--quiet", quiet, "no progress line");
    app.set_version_flag("--version", "ringway-load " RINGWAY_VERSION);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    o.count = count;
    o.duration = duration;
    o.timeout = timeout;
    o.pipelining = !no_pipe;
    o.stop_on_error = on_error == "stop";
    if (!auth.empty()) {
        auto colon = auth.find(':');
        if (colon == std::string::npos) {
            fmt::print(stderr, "--auth: expected USER:PASSWORD, got \"{}\"\n", auth);
            return 2;
        }
        o.auth_user = auth.substr(0, colon);
        o.auth_pass = auth.substr(colon + 1);
    }
    auto addr = net::address::parse_host_port(o.server_text);
    if (!addr) {
        fmt::print(stderr, "--server: expected IPv4:PORT or [IPv6]:PORT, got \"{}\"\n", o.server_text);
        return 2;
    }
    o.server = *addr;
    if (!o.count && o.duration.count() == 0)
        o.count = 10'000;
    if (o.seed == 0)
        o.seed = std::random_device{}() | (uint64_t(std::random_device{}()) << 32);
    if (!quiet && (progress || isatty(2)))
        progress = true;
    else
        progress = false;

    if (o.starttls) {
        net::tls_context::client_config cc;
        cc.verify_peer = !o.tls_ca.empty();
        cc.ca_file = o.tls_ca;
        auto ctx = net::tls_context::client(cc);
        if (!ctx) {
            fmt::print(stderr, "--tls-ca: {}\n", ctx.error());
            return 2;
        }
        s.tls = std::make_unique<net::tls_context>(std::move(ctx.value()));
    }
    if (!o.dkim_key_file.empty()) {
        std::ifstream in(o.dkim_key_file);
        std::stringstream pem;
        pem << in.rdbuf();
        std::string domain = o.dkim_domain;
        if (domain.empty() && o.from.find('@') != std::string::npos)
            domain = o.from.substr(o.from.find('@') + 1);
        auto k = policy::dkim::key_from_pem(pem.str(), domain, o.dkim_selector);
        if (!in || !k) {
            fmt::print(stderr, "--dkim-key: {}\n", in ? k.error() : "cannot read " + o.dkim_key_file);
            return 2;
        }
        s.dkim_key = std::move(k.value());
    }
    std::FILE* log = nullptr;
    if (!o.accepted_log.empty()) {
        log = std::fopen(o.accepted_log.c_str(), "w");
        if (!log) {
            fmt::print(stderr, "--accepted-log: cannot open {}: {}\n", o.accepted_log, std::strerror(errno));
            return 2;
        }
    }
    {
        std::mt19937_64 r(o.seed);
        s.run_token = fmt::format("{:06x}", r() & 0xffffff);
        std::time_t now = std::time(nullptr);
        char buf[64];
        std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", std::gmtime(&now));
        s.date_header = buf;
    }
    build_bodies(s);

    engine_options eo;
    eo.cores = o.cores;
    eo.pin = false;  // shares the machine with what it measures
    auto eng = engine::create(eo);
    if (!eng) {
        fmt::print(stderr, "ringway-load: {}\n", eng.error());
        return 1;
    }
    const unsigned ncores = eng.value()->cores();
    std::vector<std::unique_ptr<core_stats>> stats;
    for (unsigned i = 0; i < ncores; ++i)
        stats.push_back(std::make_unique<core_stats>());

    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::atomic<bool> running{true};
    std::atomic<int> interrupted{0};
    engine* e = eng.value().get();
    std::thread sig([&, set] {
        int sn = 0;
        while (running.load()) {
            timespec ts{0, 100'000'000};
            siginfo_t si;
            sn = sigtimedwait(&set, &si, &ts);
            if (sn <= 0)
                continue;
            if (interrupted.fetch_add(1) == 0) {
                s.stop.store(true);  // finish what is in flight, then report
            } else {
                e->request_stop(std::chrono::milliseconds(500));
            }
        }
    });

    s.start = clock::now();
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    std::thread ticker([&] {
        // Ends a --duration run and draws the progress line once a second.
        auto next = s.start + std::chrono::seconds(1);
        std::unique_lock lk(m);
        uint64_t last_acc = 0;
        auto last_t = s.start;
        for (;;) {
            auto deadline = next;
            if (o.duration.count() && !s.stop.load())
                deadline = std::min(deadline, s.start + o.duration);
            cv.wait_until(lk, deadline, [&] { return done; });
            if (done)
                break;
            auto now = clock::now();
            if (o.duration.count() && now >= s.start + o.duration)
                s.stop.store(true);
            if (now >= next) {
                next += std::chrono::seconds(1);
                if (progress) {
                    totals t = sum(stats);
                    double dt = std::chrono::duration<double>(now - last_t).count();
                    fmt::print(stderr, "\r{:6.1f} s  accepted {:>10}  {:>8.0f} msg/s  in-flight {:>6}  errors {:>6} ",
                               std::chrono::duration<double>(now - s.start).count(), t.accepted,
                               double(t.accepted - last_acc) / dt, t.in_flight, t.errors);
                    last_acc = t.accepted;
                    last_t = now;
                }
            }
        }
    });

    auto r = e->run([&](unsigned core) { return run_core(&s, stats[core].get(), core, ncores); });
    const auto end = clock::now();
    {
        std::lock_guard lk(m);
        done = true;
    }
    cv.notify_all();
    ticker.join();
    running.store(false);
    sig.join();
    if (progress)
        fmt::print(stderr, "\n");
    if (!r) {
        fmt::print(stderr, "ringway-load: {}\n", r.error());
        return 1;
    }

    totals t = sum(stats);
    bench::histogram lat;
    std::map<std::string, error_entry> causes;
    clock::time_point last_done = s.start;
    for (auto& c : stats) {
        lat.merge(c->latency);
        for (auto& [k, v] : c->by_cause) {
            auto& e2 = causes[k];
            if (e2.count == 0)
                e2.sample = v.sample;
            e2.count += v.count;
        }
        if (log)
            std::fwrite(c->accepted_lines.data(), 1, c->accepted_lines.size(), log);
        last_done = std::max(last_done, c->last_done);
    }
    if (log && std::fclose(log) != 0) {
        fmt::print(stderr, "--accepted-log: cannot write {}: {}\n", o.accepted_log, std::strerror(errno));
        return 1;
    }
    // Throughput over the time the run took, up to its last acknowledgement
    // (the closing QUITs are not the server's throughput).
    const double elapsed = std::chrono::duration<double>((t.accepted ? last_done : end) - s.start).count();
    const double rate = elapsed > 0 ? double(t.accepted) / elapsed : 0;
    const double qs[] = {50, 90, 99, 99.9};
    const char* qn[] = {"p50", "p90", "p99", "p99.9"};
    std::string mode = o.rate > 0 ? fmt::format("open loop at {} ({:.1f} msg/s)", o.rate_text, o.rate) : "closed loop";

    bench::json_writer j;
    j.begin_object();
    j.value("server", o.server_text).value("connections", o.connections).value("per_conn", o.per_conn);
    j.value("mix", o.mix_text).value("rcpts", o.rcpts).value("domains", o.domains);
    j.value("mode", o.rate > 0 ? "open" : "closed").value("target_rate", o.rate);
    j.value("attempted", t.attempted).value("accepted", t.accepted).value("rejected", t.rejected);
    j.value("failed", t.failed).value("rcpt_accepted", t.rcpt_accepted).value("rcpt_rejected", t.rcpt_rejected);
    j.value("connections_opened", t.connections).value("connect_failures", t.connect_failures);
    j.value("elapsed_s", elapsed).value("msg_per_s", rate).value("msg_per_h", rate * 3600);
    j.value("bytes_sent", t.bytes);
    j.begin_object("latency_ms");
    j.value("count", lat.count()).value("min", double(lat.min()) / 1e6).value("mean", lat.mean() / 1e6);
    for (int i = 0; i < 4; ++i)
        j.value(qn[i], double(lat.percentile(qs[i])) / 1e6);
    j.value("max", double(lat.max()) / 1e6);
    j.end_object();
    j.begin_object("errors");
    for (auto& [k, v] : causes) {
        j.begin_object(k).value("count", v.count).value("sample", v.sample).end_object();
    }
    j.end_object();
    j.value("stopped_on_error", s.error_stop.load());
    if (s.error_stop.load())
        j.value("first_error", s.first_error);
    j.value("interrupted", interrupted.load() > 0);
    j.end_object();

    if (!json_file.empty()) {
        std::ofstream f(json_file);
        f << j.str() << "\n";
        if (!f) {
            fmt::print(stderr, "--json-file: cannot write {}\n", json_file);
            return 1;
        }
    }
    if (json) {
        fmt::print("{}\n", j.str());
    } else {
        fmt::print("ringway-load: {}, {} connections, {} per connection, mix {}, {} rcpt(s) over {} domain(s), {}\n",
                   o.server_text, o.connections, o.per_conn ? fmt::format("{}", o.per_conn) : "unlimited",
                   o.mix_text, o.rcpts, o.domains, mode);
        fmt::print("  messages    attempted {}  accepted {}  rejected {}  failed {}\n", t.attempted, t.accepted,
                   t.rejected, t.failed);
        fmt::print("  recipients  accepted {}  rejected {}\n", t.rcpt_accepted, t.rcpt_rejected);
        fmt::print("  connections opened {}  failed to connect {}\n", t.connections, t.connect_failures);
        fmt::print("  throughput  {:.0f} msg/s = {:.0f} msg/h over {:.3f} s; {:.1f} MB/s sent\n", rate, rate * 3600,
                   elapsed, elapsed > 0 ? double(t.bytes) / elapsed / 1e6 : 0.0);
        fmt::print("  latency ms  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples{})\n",
                   fmt_ms(lat.percentile(50)), fmt_ms(lat.percentile(90)), fmt_ms(lat.percentile(99)),
                   fmt_ms(lat.percentile(99.9)), fmt_ms(lat.max()), lat.count(),
                   o.rate > 0 ? ", from each message's due time" : "");
        if (!causes.empty()) {
            fmt::print("  errors by cause:\n");
            for (auto& [k, v] : causes)
                fmt::print("    {:<28} {:>8}  {}\n", k, v.count, v.sample);
        }
    }
    if (s.error_stop.load()) {
        fmt::print(stderr, "ringway-load: stopped{}: {}\n",
                   o.stop_on_error ? " at the first error (--on-error stop)" : "", s.first_error);
        return 1;
    }
    if (t.accepted == 0) {
        fmt::print(stderr, "ringway-load: no message was accepted\n");
        return 1;
    }
    return 0;
}
