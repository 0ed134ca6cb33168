// ringwayd's run loop. Start-up order matters for error messages: everything
// that can fail for environmental reasons (io_uring, ./var, the spool file,
// binding the listeners) is checked on the main thread first and reported as
// one line, before any reactor starts.
#include "admin/daemon.hh"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/file.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "fs/spool.hh"
#include "mta/delivery/delivery.hh"
#include "admin/config_schema.hh"
#include "admin/settings.hh"
#include "admin/conservation.hh"
#include "admin/control.hh"
#include "admin/descriptors.hh"
#include "admin/metrics.hh"
#include "admin/registry.hh"
#include "mta/smtp/replies.hh"
#include "mta/smtp/server.hh"
#include "runtime/net/tls.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/base/service_notify.hh"
#include "runtime/net/tcp.hh"
#include "runtime/reactor/sync.hh"
#include "runtime/smp/offload.hh"
#include "runtime/smp/smp.hh"

namespace rw::admin {

namespace {
const logger lg{"ringwayd"};

// Creates the parent directory of path if needed.
result<void, std::string> ensure_parent_dir(const std::string& path, std::string_view what) {
    std::filesystem::path p(path);
    if (!p.has_parent_path())
        return {};
    std::error_code ec;
    std::filesystem::create_directories(p.parent_path(), ec);
    if (ec)
        return unexpected(fmt::format("cannot create directory {} for the {}: {}", p.parent_path().string(), what,
                                      ec.message()));
    return {};
}

// The spool stand-in: a pre-sized file (or the configured block device).
// Opened exclusively so two daemons cannot share a spool.
struct spool_file {
    int lock_fd = -1;
    bool created = false;
};

result<spool_file, std::string> prepare_spool(const spool_config& sc) {
    if (auto r = ensure_parent_dir(sc.path, "spool"); !r)
        return unexpected(r.error());
    struct stat st{};
    bool exists = ::stat(sc.path.c_str(), &st) == 0;
    if (exists && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return unexpected(fmt::format("spool.path {} is neither a block device nor a regular file", sc.path));
    int fd = ::open(sc.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return unexpected(fmt::format("cannot open the spool {}: {}", sc.path, std::strerror(errno)));
    // A predecessor killed a moment ago may still hold the lock while the
    // kernel tears its io_uring down: wait a little before giving up.
    for (int i = 0; i < 250 && ::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK; ++i)
        ::usleep(20000);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        return unexpected(
            fmt::format("the spool {} is in use by another process (another ringwayd?); stop it first", sc.path));
    }
    spool_file out;
    out.lock_fd = fd;
    out.created = !exists;
    if (!exists || (S_ISREG(st.st_mode) && uint64_t(st.st_size) < sc.size_bytes)) {
        int r = ::posix_fallocate(fd, 0, off_t(sc.size_bytes));
        if (r != 0) {
            ::close(fd);
            return unexpected(fmt::format("cannot pre-size the spool file {} to {} bytes: {}", sc.path,
                                          sc.size_bytes, std::strerror(r)));
        }
        lg.info("created spool file path={} size_bytes={}", sc.path, sc.size_bytes);
    }
    return out;
}

fs::flush_mode to_flush(spool_flush f) {
    switch (f) {
    case spool_flush::automatic: return fs::flush_mode::automatic;
    case spool_flush::fdatasync: return fs::flush_mode::fdatasync;
    case spool_flush::dsync: return fs::flush_mode::dsync;
    }
    return fs::flush_mode::automatic;
}

// Reads the superblock; a spool file we have just created is formatted with
// one shard per core. Anything else that is not a valid spool is refused.
result<fs::geometry, std::string> check_or_format_spool(const spool_config& sc, bool created, unsigned cores) {
    return run_local([](spool_config c, bool fresh, unsigned n) -> task<result<fs::geometry, std::string>> {
        auto dev = fs::file_device::open_shared(c.path, to_flush(c.flush));
        if (!dev)
            co_return unexpected(dev.error());
        auto g = co_await fs::read_superblock(*dev.value());
        if (g && g.value().version < fs::k_format_version) {
            lg.info("spool path={} has format version {}: stamping it version {}", c.path, g.value().version,
                    fs::k_format_version);
            auto u = co_await fs::upgrade_superblock(*dev.value(), g.value());
            if (!u)
                co_return unexpected(u.error());
        }
        if (g)
            co_return g;
        if (!fresh)
            co_return g;
        lg.info("formatting new spool path={} shards={}", c.path, n);
        fs::format_options fo;
        fo.shards = n;
        co_return co_await fs::format(*dev.value(), fo);
    }(sc, created, cores));
}

// The shards of this core: shard i belongs to core i % cores.
struct core_spool {
    std::unique_ptr<fs::file_device> dev;
    std::vector<std::unique_ptr<fs::shard>> shards;
};

struct listener_fds {
    const listener_config* cfg;
    std::vector<int> per_core;  // one SO_REUSEPORT socket per core
};

std::atomic<uint64_t> g_connections{0};

// Client IPs each per-client rate limiter tracks per core (least recently
// seen forgotten first).
constexpr size_t k_rate_entries = 100000;

// One core's share of a per-client rate (the kernel spreads a client's
// connections over the cores); null when the rate is 0 (no limit).
std::unique_ptr<policy::rate_limiter> client_rate(unsigned per_minute, unsigned burst, unsigned cores) {
    if (per_minute == 0)
        return nullptr;
    return std::make_unique<policy::rate_limiter>(double(per_minute) / 60.0 / cores, double(burst), k_rate_entries);
}

// One committed configuration's objects, shared read-only by every core.
// Each is kept for the daemon's life: sessions and deliveries that began
// under it may still hold its options, relay policy or credentials.
struct generation {
    config cfg;  // in force: its restart keys as at start-up
    std::vector<mta::listener_options> options;  // per listener
    std::unique_ptr<policy::relay_policy> relay;
    std::unique_ptr<policy::credentials> creds;
    std::vector<policy::cidr> limit_exempt;  // smtp.client_limit_exceptions, or the relay networks
    mta::delivery::options delivery;
    mta::authentication_options auth;
    std::shared_ptr<const policy::dkim::keyring> dkim_keys;  // authentication.dkim_key_dir, read at build
    std::shared_ptr<const policy::rules::rule_set> rules;     // the [[content_rule]] tables, compiled
    std::unique_ptr<mta::access_env> access;  // sender groups, mail flow policies, screening
    std::unique_ptr<mta::scan::options> scanning;  // [antivirus], [antispam]
};

// What every core shares, built on the main thread.
struct shared_state {
    std::vector<std::unique_ptr<mta::connection_limits>> limits;  // per listener
    std::vector<std::pair<std::string, std::string>> tls_files;   // per listener: cert, key
    std::string self_signed_cert, self_signed_key;                // for listeners without their own
    unsigned shard_count = 0;                                     // cores below it have listening sockets
    net::resolver_options dns;
    registry* reg = nullptr;
    control_server* control = nullptr;  // runs on core 0; null: no control socket
    metrics_server* metrics = nullptr;  // runs on core 0; null: no endpoint
    unsigned nofile = 0;                // the open-files limit, for each generation's plan
    std::set<std::string> suspended_listeners;  // from suspensions.json: suspended from the start
    unsigned cores = 1;
    // Every generation, the one in force last; and every committed
    // configuration (restart keys included), newest last. Touched on core 0.
    std::vector<std::unique_ptr<generation>> generations;
    std::vector<std::unique_ptr<config>> committed;
    // Clients that passed screening: kept across commits.
    mta::pass_cache passed{100'000};
    mta::call_ahead_cache call_ahead{100'000};  // likewise
    std::unique_ptr<mta::outbound_control> outbound;  // suspensions and counts: kept across commits
    std::unique_ptr<mta::delivery::shared_state> delivery_shared;  // provider and warm-up counts: likewise
};

void apply_on_core(core_slot& s, const generation& g, const generation* before, unsigned cores);

// Outbound spam control: one for the process, set before the cores start.
mta::outbound_control* s_outbound = nullptr;

mta::outbound_options outbound_options_of(const config& c) {
    mta::outbound_options o;
    o.user_per_hour = c.outbound.user_messages_per_hour;
    o.user_per_day = c.outbound.user_messages_per_day;
    o.domain_per_hour = c.outbound.domain_messages_per_hour;
    o.domain_per_day = c.outbound.domain_messages_per_day;
    o.suspend = c.outbound.suspend;
    o.suspend_for = c.outbound.suspend_s;
    o.spam_strikes = c.outbound.spam_strikes;
    return o;
}

// One listening socket's accept loop on one core. A commit that moves the
// listener stops it (close_at_end: its socket closes once the loop is out)
// and starts another on the new socket.
struct accept_state {
    int fd;
    net::acceptor acc;
    bool close_at_end = false;
    explicit accept_state(int f) : fd(f), acc(f) {}
};

// `current` holds the options new sessions start with (a commit replaces them).
task<void> accept_loop(std::shared_ptr<accept_state> st, const mta::listener_options* const* current,
                       mta::server_env* env, mta::connection_limits* limits, net::fd_reserve* reserve,
                       gate* sessions) {
    net::acceptor& acc = st->acc;
    const int lfd = st->fd;
    auto stopper = [](std::weak_ptr<accept_state> w) -> task<void> {
        co_await reactor::local().stop_requested();
        if (auto s = w.lock())
            s->acc.stop();
    };
    spawn(stopper(st));
    for (;;) {
        auto a = co_await acc.accept();
        const mta::listener_options* lo = *current;
        if (!a) {
            if (a.error().code == ECANCELED)
                break;
            const int e = a.error().code;
            if (e == EMFILE || e == ENFILE) {
                // Out of descriptors: the waiting clients get a 421 and a
                // mail-log line each, not a connection that is never greeted.
                auto r = mta::smtp::out_of_descriptors(env->hostname);
                auto turned = reserve->shed(lfd, mta::smtp::wire(r.r), 256);
                for (const auto& p : turned)
                    journal::record("reject", {{"peer", std::string_view(p.ip_string())},
                                               {"listener", std::string_view(lo->name)},
                                               {"code", int64_t(r.r.code)},
                                               {"what", r.cause}});
                env->rejected += turned.size();
                lg.warn("out of file descriptors listener={} error={} turned_away={} (raise the open-files limit or "
                        "lower max_connections)",
                        lo->name, a.error().message(), turned.size());
            } else {
                lg.warn("accept failed listener={} error={}", lo->name, a.error().message());
            }
            auto pause = io::sleep(std::chrono::milliseconds(100));
            co_await pause;  // EMFILE and friends: back off instead of spinning
            continue;
        }
        g_connections.fetch_add(1, std::memory_order_relaxed);
        auto run = [](gate* g, task<void> t) -> task<void> {
            gate::holder h(*g);
            co_await std::move(t);
        };
        spawn(run(sessions, mta::run_session(std::move(a.value()), lo, env, limits)));
    }
    co_await acc.stopped();
    if (st->close_at_end) {
        // Moved by a commit: the connections already accepted, in our queue
        // or the kernel's, are clients like any other. Serve them, then close.
        std::deque<int> left = acc.take_ready();
        for (int i = 0; i < 100000; ++i) {
            int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0)
                break;
            left.push_back(fd);
        }
        ::close(lfd);
        const mta::listener_options* lo = *current;
        for (int fd : left) {
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
                ::close(fd);
                continue;
            }
            net::accepted conn{fd, net::address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len)};
            auto run = [](gate* g, task<void> t) -> task<void> {
                gate::holder h(*g);
                co_await std::move(t);
            };
            spawn(run(sessions, mta::run_session(std::move(conn), lo, env, limits)));
        }
    }
}

task<void> core_main(unsigned core, const config* cfg, std::vector<listener_fds>* fds, fs::geometry geo,
                     std::atomic<int>* spool_errors, const shared_state* shared, const generation* first) {
    core_spool sp;
    auto dev = fs::file_device::open_shared(cfg->spool.path, to_flush(cfg->spool.flush));
    if (!dev) {
        lg.error("{}", dev.error());
        spool_errors->fetch_add(1);
        engine::instance().request_stop(std::chrono::milliseconds(0));
    } else {
        sp.dev = std::move(dev.value());
        unsigned cores = engine::instance().cores();
        for (uint32_t i = core; i < geo.shard_count; i += cores) {
            fs::shard_options so;
            so.index = i;
            auto sh = co_await fs::shard::open(*sp.dev, geo, so);
            if (!sh) {
                lg.error("{}", sh.error());
                spool_errors->fetch_add(1);
                engine::instance().request_stop(std::chrono::milliseconds(0));
                break;
            }
            sp.shards.push_back(std::move(sh.value()));
        }
    }
    unsigned cores = engine::instance().cores();
    // Per-core state of the SMTP server (policy, limits and options come
    // from the generation in force: apply_on_core).
    auto rx = net::buf_ring::create(1, 1024, 16 << 10);
    if (!rx)
        lg.warn("no provided receive buffers: {}", rx.error());
    std::vector<std::unique_ptr<net::tls_context>> tls;
    std::vector<std::unique_ptr<mta::server_env>> envs;
    policy::dmarc_report::store dmarc_reports;  // this core's; the control plane gathers it
    for (size_t i = 0; i < fds->size(); ++i) {
        auto env = std::make_unique<mta::server_env>();
        env->hostname = cfg->smtp.hostname;
        env->core = core;
        env->cores = cores;
        env->spool = sp.shards.empty() ? nullptr : sp.shards.front().get();
        env->rx = rx ? rx.value().get() : nullptr;
        auto ctx = net::tls_context::server(shared->tls_files[i].first, shared->tls_files[i].second);
        if (ctx) {
            tls.push_back(std::make_unique<net::tls_context>(std::move(ctx.value())));
            env->tls = tls.back().get();
        } else {
            lg.error("listener={} TLS disabled: {}", cfg->listeners[i].name, ctx.error());
        }
        env->suspended = shared->suspended_listeners.contains(cfg->listeners[i].name);
        env->dkim_keys = &shared->reg->dkim_keys;
        env->dmarc_reports = &dmarc_reports;
        envs.push_back(std::move(env));
    }
    // Delivery: one service per core over this core's shards.
    std::unique_ptr<net::resolver> dns;
    {
        auto r = net::resolver::create(shared->dns);
        if (r)
            dns = std::move(r.value());
        else
            lg.error("no DNS resolver, delivery uses configured routes only: {}", r.error());
    }
    std::vector<fs::shard*> my_shards;
    for (auto& sh : sp.shards)
        my_shards.push_back(sh.get());
    mta::delivery::service delivery(&first->delivery, core, cores, my_shards, dns.get());
    for (auto& env : envs)
        env->delivery = &delivery;
    // Register, then wait for every core: from here on any core may post
    // mail to any other core's service, and the control socket may ask
    // any core anything.
    {
        core_slot& me = shared->reg->mine();
        me.shards = my_shards;
        me.delivery = &delivery;
        for (size_t i = 0; i < envs.size(); ++i) {
            me.listeners.push_back(envs[i].get());
            me.listener_limits.push_back(shared->limits[i].get());
        }
        me.dns = dns.get();
        me.dmarc_reports = &dmarc_reports;
        me.listener_options.resize(envs.size());
        apply_on_core(me, *first, nullptr, cores);
    }
    co_await shared->reg->started.arrive_and_wait();
    if (core == 0)
        service_notify::send("READY=1\nSTATUS=serving");
    gate control_gate;
    if (core == 0 && shared->control) {
        auto run_control = [](gate* g, control_server* c) -> task<void> {
            gate::holder h(*g);
            co_await c->run();
        };
        spawn(run_control(&control_gate, shared->control));
    }
    cancel_token conservation_stop;
    if (core == 0) {
        auto run_cons = [](gate* g, registry* r, cancel_token* t) -> task<void> {
            gate::holder h(*g);
            co_await run_conservation(r, t);
        };
        spawn(run_cons(&control_gate, shared->reg, &conservation_stop));
        auto stopper = [](cancel_token* t) -> task<void> {
            co_await reactor::local().stop_requested();
            t->cancel();
        };
        spawn(stopper(&conservation_stop));
    }
    if (core == 0 && shared->metrics) {
        auto run_metrics = [](gate* g, metrics_server* m) -> task<void> {
            gate::holder h(*g);
            co_await m->run();
        };
        spawn(run_metrics(&control_gate, shared->metrics));
    }
    gate delivery_gate;
    // A core without a shard (fewer shards than cores) still owns
    // destinations, so its service runs too.
    if (!sp.shards.empty())
        delivery.recover();
    {
        auto run_delivery = [](gate* g, mta::delivery::service* s) -> task<void> {
            gate::holder h(*g);
            co_await s->run();
        };
        spawn(run_delivery(&delivery_gate, &delivery));
        auto stopper = [](mta::delivery::service* s) -> task<void> {
            co_await reactor::local().stop_requested();
            s->stop();
        };
        spawn(stopper(&delivery));
    }
    gate sessions;
    gate loops;
    net::fd_reserve reserve;  // shared by this core's listeners
    std::vector<std::shared_ptr<accept_state>> accepting(fds->size());
    core_slot& me = shared->reg->mine();
    auto start_loop = [&, core](size_t i, int fd) {
        auto run = [](gate* g, task<void> t) -> task<void> {
            gate::holder h(*g);
            co_await std::move(t);
        };
        accepting[i] = std::make_shared<accept_state>(fd);
        (*fds)[i].per_core[core] = fd;  // ringwayd closes what is here at exit
        spawn(run(&loops, accept_loop(accepting[i], &me.listener_options[i], envs[i].get(), shared->limits[i].get(),
                                      &reserve, &sessions)));
    };
    if (!sp.shards.empty())
        for (size_t i = 0; i < fds->size(); ++i)
            start_loop(i, (*fds)[i].per_core[core]);
    // Hooks for a commit (only while the reactor runs: they start tasks in this frame's gates).
    me.reopen_listener = [&, core](size_t i, int fd) -> std::string {
        if (reactor::local().stopping())
            return "ringwayd is stopping";
        if (i >= accepting.size() || !accepting[i])
            return fmt::format("listener {} does not accept on core {}", i, core);
        accepting[i]->close_at_end = true;
        accepting[i]->acc.stop();
        start_loop(i, fd);
        return {};
    };
    me.reload_tls = [&](size_t i, const std::string& cert, const std::string& key) -> std::string {
        if (i >= envs.size())
            return fmt::format("no listener {}", i);
        auto ctx = net::tls_context::server(cert, key);
        if (!ctx)
            return ctx.error();
        tls.push_back(std::make_unique<net::tls_context>(std::move(ctx.value())));
        envs[i]->tls = tls.back().get();  // the old context stays: open sessions use it
        return {};
    };
    // Until a stop request, on every core: one without a spool shard has no
    // accept loop to wait for, but delivers, and answers commits.
    co_await reactor::local().stop_requested();
    co_await loops.wait_idle();
    co_await sessions.wait_idle();
    delivery.stop();
    co_await delivery_gate.wait_idle();
    // The control socket calls into every core's slot: it ends before the
    // barrier after which slots go away.
    co_await control_gate.wait_idle();
    me.reopen_listener = nullptr;
    me.reload_tls = nullptr;
    // Other cores' connections may still record outcomes in our shards:
    // close them only once every core's delivery has stopped.
    co_await shared->reg->delivery_stopped.arrive_and_wait();
    for (auto& env : envs)
        env->delivery = nullptr;
    if (dns)
        co_await dns->close();
    for (auto& sh : sp.shards)
        co_await sh->close();
}
// The objects of one configuration. Reads the credentials file: call on
// the main thread at start, through offload() after.
result<std::unique_ptr<generation>, std::string> build_generation(const config& cfg, unsigned nofile,
                                                                   unsigned cores, mta::pass_cache* passed,
                                                                   mta::call_ahead_cache* call_ahead,
                                                                   mta::delivery::shared_state* delivery_shared) {
    auto g = std::make_unique<generation>();
    g->cfg = cfg;
    auto relay = relay_options(cfg);
    if (!relay)
        return unexpected(relay.error());
    policy::relay_config rc = std::move(relay.value());
    if (cfg.smtp.client_limit_exceptions) {
        for (const auto& n : *cfg.smtp.client_limit_exceptions) {
            auto c = policy::cidr::parse(n.to_string());
            if (!c)
                return unexpected(fmt::format("smtp.client_limit_exceptions: cannot use {}", n.to_string()));
            g->limit_exempt.push_back(*c);
        }
    } else {
        g->limit_exempt = rc.relay_networks;
    }
    g->relay = std::make_unique<policy::relay_policy>(std::move(rc));
    struct stat st{};
    if (::stat(cfg.smtp.credentials_file.c_str(), &st) == 0) {
        auto c = policy::credentials::load(cfg.smtp.credentials_file);
        if (!c)
            return unexpected(c.error());
        g->creds = std::make_unique<policy::credentials>(std::move(c.value()));
        lg.info("credentials file={} users={}", cfg.smtp.credentials_file, g->creds->size());
    } else {
        lg.info("no credentials file {}: AUTH is not offered (add users with ringway-passwd)",
                cfg.smtp.credentials_file);
    }
    std::vector<std::string> names;
    std::vector<unsigned> maxes;
    for (const auto& l : cfg.listeners) {
        g->options.push_back(to_options(l));
        names.push_back(l.name);
        maxes.push_back(l.max_connections);
    }
    auto plan = plan_descriptors(nofile, cores, names, maxes);
    for (size_t i = 0; i < g->options.size(); ++i)
        g->options[i].max_connections = plan.max_connections[i];
    for (const auto& n : plan.notes)
        lg.warn("{}", n);
    g->delivery = delivery_options(cfg);
    g->delivery.shared = delivery_shared;
    g->auth = authentication_options(cfg);
    const std::string key_dir = dkim_key_dir(cfg);
    auto keys = policy::dkim::keyring::load_dir(key_dir);
    if (!keys)
        return unexpected(fmt::format("authentication.dkim_key_dir: {}", keys.error()));
    g->dkim_keys = std::make_shared<const policy::dkim::keyring>(std::move(keys.value()));
    if (g->dkim_keys->size())
        lg.info("DKIM signing keys dir={} keys={}", key_dir, g->dkim_keys->size());
    std::vector<policy::rules::rule_set::source> rules;
    for (const auto& r : cfg.content_rules)
        rules.push_back({r.name, r.condition, r.actions});
    auto rs = policy::rules::rule_set::compile(rules);
    if (!rs)
        return unexpected(rs.error());
    g->rules = std::move(rs.value());
    if (!g->rules->empty())
        lg.info("content rules={} patterns={}", g->rules->rules().size(), g->rules->pattern_count());
    auto access = access_options(cfg, passed, call_ahead);
    if (!access)
        return unexpected(access.error());
    g->access = std::move(access.value());
    auto scanning = scan_options(cfg);
    if (!scanning)
        return unexpected(scanning.error());
    g->scanning = std::move(scanning.value());
    return g;
}

// What stays for the daemon's life: certificates and connection counts.
result<void, std::string> build_listeners(const config& cfg, shared_state& out) {
    struct stat st{};
    // Listeners without a certificate share a self-signed one, made once.
    std::filesystem::path dirp = std::filesystem::path(cfg.spool.path).parent_path();
    if (dirp.empty())
        dirp = std::filesystem::current_path();
    const std::string dir = dirp.string();
    // (fmt rather than operator+: g++ 12 warns falsely about string appends, PR 105329)
    std::string ss_cert = fmt::format("{}/tls/selfsigned.crt", dir), ss_key = fmt::format("{}/tls/selfsigned.key", dir);
    bool need_self_signed = false;
    for (const auto& l : cfg.listeners)
        need_self_signed |= l.tls_cert.empty();
    if (need_self_signed && (::stat(ss_cert.c_str(), &st) != 0 || ::stat(ss_key.c_str(), &st) != 0)) {
        std::error_code ec;
        std::filesystem::create_directories(fmt::format("{}/tls", dir), ec);
        auto m = net::make_self_signed(cfg.smtp.hostname, ss_key, ss_cert);
        if (!m)
            return unexpected(fmt::format("cannot make a self-signed certificate in {}/tls: {}", dir, m.error()));
        lg.info("generated a self-signed certificate for {} in {}", cfg.smtp.hostname, ss_cert);
    }
    out.self_signed_cert = ss_cert;
    out.self_signed_key = ss_key;
    for (const auto& l : cfg.listeners) {
        out.limits.push_back(std::make_unique<mta::connection_limits>());
        if (l.tls_cert.empty())
            out.tls_files.emplace_back(ss_cert, ss_key);
        else
            out.tls_files.emplace_back(l.tls_cert, l.tls_key);
    }
    return {};
}

// The listeners suspensions.json (beside the spool, written by the
// control socket) says are suspended: they take no mail from the start.
std::set<std::string> read_suspended_listeners(const config& cfg) {
    std::set<std::string> out;
    std::string path = fmt::format("{}/suspensions.json", state_dir(cfg));
    std::ifstream in(path);
    if (!in)
        return out;
    std::stringstream ss;
    ss << in.rdbuf();
    auto j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("listeners") || !j["listeners"].is_array())
        return out;
    for (const auto& l : j["listeners"])
        if (l.is_string()) {
            out.insert(l.get<std::string>());
            lg.warn("listener {} is suspended (from {}; lift with: ringway resume listener {})", l.get<std::string>(),
                    path, l.get<std::string>());
        }
    return out;
}

bool same_rates(const smtp_config& a, const smtp_config& b) {
    return a.client_connections_per_minute == b.client_connections_per_minute &&
           a.client_connection_burst == b.client_connection_burst &&
           a.client_messages_per_minute == b.client_messages_per_minute &&
           a.client_message_burst == b.client_message_burst &&
           a.client_auth_attempts_per_minute == b.client_auth_attempts_per_minute &&
           a.client_auth_burst == b.client_auth_burst;
}

// Puts generation g in force on the calling core: new sessions start with
// its listener options; every session's next decision uses its relay
// policy, credentials and limits; delivery its options. Rate limiters are
// made anew only when their rates changed (their buckets would reset).
void apply_on_core(core_slot& s, const generation& g, const generation* before, unsigned cores) {
    const auto& sc = g.cfg.smtp;
    const bool new_rates = !before || !same_rates(before->cfg.smtp, sc);
    policy::rate_limiter* rates[3] = {nullptr, nullptr, nullptr};
    if (new_rates) {
        const std::pair<unsigned, unsigned> spec[3] = {{sc.client_connections_per_minute, sc.client_connection_burst},
                                                       {sc.client_messages_per_minute, sc.client_message_burst},
                                                       {sc.client_auth_attempts_per_minute, sc.client_auth_burst}};
        for (int k = 0; k < 3; ++k)
            if (auto r = client_rate(spec[k].first, spec[k].second, cores)) {
                rates[k] = r.get();
                s.rate_limiters.push_back(std::move(r));
            }
    }
    for (size_t i = 0; i < s.listeners.size(); ++i) {
        mta::server_env* env = s.listeners[i];
        env->relay = g.relay.get();
        env->creds = g.creds.get();
        env->auth = &g.auth;
        env->dns = s.dns;
        env->limit_exempt = &g.limit_exempt;
        env->max_received_headers = sc.max_received_headers;
        env->rules = g.rules->empty() ? nullptr : g.rules;
        env->access = g.access.get();
        env->outbound = s_outbound;
        env->scanning =
            g.scanning->clamd || g.scanning->rspamd || !g.scanning->milters.empty() ? g.scanning.get() : nullptr;
        if (new_rates) {
            env->conn_rate = rates[0];
            env->msg_rate = rates[1];
            env->auth_fail_rate = rates[2];
        }
        s.listener_options[i] = &g.options[i];
    }
    if (before && s.delivery)
        s.delivery->set_options(&g.delivery);
}

// A commit: builds the committed configuration's generation off the
// reactor, puts it in force on every core in turn, and records it.
// The certificate files a listener serves: its own, or the shared self-signed one.
std::pair<std::string, std::string> tls_files_of(const shared_state& sh, const listener_config& l) {
    if (l.tls_cert.empty())
        return {sh.self_signed_cert, sh.self_signed_key};
    return {l.tls_cert, l.tls_key};
}

// A listener moved to another address or port: one socket per core that
// takes mail, bound before anything changes, so a port in use refuses the
// commit. On failure everything opened is closed again.
result<std::vector<int>, std::string> bind_listener(const shared_state& sh, const listener_config& l) {
    std::vector<int> out;
    for (unsigned c = 0; c < sh.cores; ++c) {
        if (c >= sh.shard_count) {
            out.push_back(-1);
            continue;
        }
        auto fd = net::listen_tcp(l.endpoint(), 4096, true);
        if (!fd) {
            for (int f : out)
                if (f >= 0)
                    ::close(f);
            return unexpected(fmt::format("listener {}: {}", l.name, fd.error()));
        }
        out.push_back(fd.value());
    }
    return out;
}

task<std::string> apply_commit(shared_state* sh, config committed) {
    const generation* before = sh->generations.back().get();
    config eff = effective_config(before->cfg, committed);
    // Listeners whose socket or certificate changes (same names, same count:
    // effective_config keeps the running ones otherwise).
    std::vector<size_t> moved, recert;
    std::vector<std::vector<int>> new_fds;
    auto close_new = [&new_fds] {
        for (auto& v : new_fds)
            for (int f : v)
                if (f >= 0)
                    ::close(f);
    };
    for (size_t i = 0; i < eff.listeners.size() && i < before->cfg.listeners.size(); ++i) {
        const auto& now = eff.listeners[i];
        const auto& was = before->cfg.listeners[i];
        if (now.address != was.address || now.port != was.port) {
            auto fds = bind_listener(*sh, now);
            if (!fds) {
                close_new();
                co_return fds.error();
            }
            moved.push_back(i);
            new_fds.push_back(std::move(fds.value()));
        }
        if (tls_files_of(*sh, now) != tls_files_of(*sh, was)) {
            auto [cert, key] = tls_files_of(*sh, now);
            // Loaded once here first: a bad file refuses the commit before any core changes.
            auto probe = net::tls_context::server(cert, key);
            if (!probe) {
                close_new();
                co_return fmt::format("listener {}: {}", now.name, probe.error());
            }
            recert.push_back(i);
        }
    }
    auto build = [eff, nofile = sh->nofile, cores = sh->cores, passed = &sh->passed, ca = &sh->call_ahead,
                  ds = sh->delivery_shared.get()]() {
        return build_generation(eff, nofile, cores, passed, ca, ds);
    };
    // (Bound first: g++ 12 mishandles class-type temporaries in the operand of co_await.)
    auto job = offload(std::move(build));
    auto built = co_await std::move(job);
    if (!built) {
        close_new();
        co_return built.error();
    }
    sh->generations.push_back(std::move(built.value()));
    const generation* g = sh->generations.back().get();
    sh->passed.set_capacity(g->cfg.screening.pass_cache_entries);
    sh->outbound->set_options(outbound_options_of(g->cfg));
    sh->call_ahead.set_capacity(g->cfg.call_ahead.cache_entries);
    sh->reg->dkim_keys.set(g->dkim_keys);
    const unsigned cores = sh->cores;
    std::vector<std::pair<std::string, std::string>> certs;
    for (size_t i : recert)
        certs.push_back(tls_files_of(*sh, g->cfg.listeners[i]));
    std::string problems;
    for (unsigned core = 0; core < sh->reg->cores(); ++core) {
        std::vector<std::pair<size_t, int>> reopen;
        for (size_t k = 0; k < moved.size(); ++k)
            if (new_fds[k][core] >= 0)
                reopen.emplace_back(moved[k], new_fds[k][core]);
        const unsigned shard_count = sh->shard_count;
        auto fn = [g, before, cores, reopen, shard_count, &recert, &certs](core_slot& s) {
            apply_on_core(s, *g, before, cores);
            std::string why;
            for (auto [i, fd] : reopen)
                if (auto w = s.reopen_listener ? s.reopen_listener(i, fd) : std::string("no listener hook"); !w.empty()) {
                    ::close(fd);
                    why += fmt::format("core {}: {}; ", s.core, w);
                }
            for (size_t k = 0; k < recert.size() && s.core < shard_count; ++k)
                if (auto w = s.reload_tls ? s.reload_tls(recert[k], certs[k].first, certs[k].second)
                                          : std::string("no TLS hook");
                    !w.empty())
                    why += fmt::format("core {}: {}; ", s.core, w);
            return why;
        };
        auto t = sh->reg->call(core, std::move(fn));
        problems += co_await std::move(t);
    }
    for (size_t k = 0; k < moved.size(); ++k)
        lg.info("listener {} moved from {} to {}", g->cfg.listeners[moved[k]].name,
                before->cfg.listeners[moved[k]].endpoint().to_string(),
                g->cfg.listeners[moved[k]].endpoint().to_string());
    for (size_t k = 0; k < recert.size(); ++k) {
        lg.info("listener {} serves certificate {}", g->cfg.listeners[recert[k]].name, certs[k].first);
        sh->tls_files[recert[k]] = certs[k];
    }
    if (!problems.empty())
        lg.error("commit applied with problems: {}", problems);
    set_log_level(g->cfg.runtime.log_level);
    sh->committed.push_back(std::make_unique<config>(std::move(committed)));
    sh->reg->running = &g->cfg;
    sh->reg->committed = sh->committed.back().get();
    // In force, but not everywhere as asked: the caller records it and says so.
    if (!problems.empty())
        co_return fmt::format("partial: {}", problems);
    co_return std::string();
}
}  // namespace

int run_daemon(const config& cfg, const std::string& start_note) {
    set_log_level(cfg.runtime.log_level);
    if (!start_note.empty())
        lg.info("{}", start_note);
    for (const auto& n : cfg.notes)
        lg.warn("{}", n);

    if (!cfg.runtime.mail_log.empty() && cfg.runtime.mail_log != "-") {
        if (auto r = ensure_parent_dir(cfg.runtime.mail_log, "mail log"); !r)
            lg.fatal("{}", r.error());
    }
    const nofile_limit nofile = raise_nofile_limit();
    if (nofile.error)
        lg.warn("open-files limit {} (hard {}): cannot raise it: {}", nofile.soft, nofile.hard,
                std::strerror(nofile.error));
    else if (nofile.soft != nofile.was)
        lg.info("open-files limit raised from {} to {}", nofile.was, nofile.soft);
    int jerr = 0;
    if (!journal::open(cfg.runtime.mail_log, jerr))
        lg.fatal("cannot open the mail log {}: {}", cfg.runtime.mail_log, std::strerror(jerr));

    auto spool = prepare_spool(cfg.spool);
    if (!spool)
        lg.fatal("{}", spool.error());

    engine_options eo;
    eo.cores = cfg.runtime.cores;
    eo.pin = cfg.runtime.pin;
    auto eng = engine::create(eo);
    if (!eng)
        lg.fatal("{}", eng.error());
    unsigned cores = eng.value()->cores();
    auto geo = check_or_format_spool(cfg.spool, spool.value().created, cores);
    if (!geo)
        lg.fatal("{}", geo.error());
    lg.info("spool path={} uuid={} shards={} segment_bytes={} segments_per_shard={}", cfg.spool.path,
            geo.value().uuid_string(), geo.value().shard_count, geo.value().segment_bytes,
            geo.value().slots_per_shard);

    if (geo.value().shard_count < cores)
        lg.warn("the spool has {} shards for {} cores: cores {}..{} receive no mail (reformat with --shards {} to "
                "use them)",
                geo.value().shard_count, cores, geo.value().shard_count, cores - 1, cores);
    // Bind everything before starting: a port in use is one clear line.
    std::vector<listener_fds> fds;
    for (const auto& l : cfg.listeners) {
        listener_fds lf{&l, {}};
        for (unsigned c = 0; c < cores; ++c) {
            // A core without a spool shard takes no mail: no socket, so the
            // kernel sends its share of connections to the other cores.
            if (c >= geo.value().shard_count) {
                lf.per_core.push_back(-1);
                continue;
            }
            auto fd = net::listen_tcp(l.endpoint(), 4096, true);
            if (!fd)
                lg.fatal("listener {}: {}", l.name, fd.error());
            lf.per_core.push_back(fd.value());
        }
        fds.push_back(std::move(lf));
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    engine* e = eng.value().get();
    std::atomic<bool> done{false};
    auto drain = cfg.runtime.drain_timeout_ms;
    std::thread sig([e, set, drain, &done] {
        // sigtimedwait so this thread also ends when the engine ends first.
        timespec ts{0, 200'000'000};
        while (!done.load()) {
            int s = sigtimedwait(&set, nullptr, &ts);
            if (s == SIGTERM || s == SIGINT) {
                lg.info("signal={} stopping: no new connections, draining for up to {} ms", strsignal(s),
                        drain.count());
                service_notify::send("STOPPING=1\nSTATUS=draining");
                e->request_stop(drain);
                return;
            }
        }
    });

    for (const auto& l : cfg.listeners)
        lg.info("listening listener={} address={} cores={}", l.name, l.endpoint().to_string(), cores);
    lg.info("ringwayd {} started config={} cores={} spool={}", RINGWAY_VERSION, cfg.source, cores, cfg.spool.path);

    registry reg(cores);
    reg.spool = geo.value();
    shared_state shared;
    shared.reg = &reg;
    std::unique_ptr<control_server> control;
    if (!cfg.control.socket.empty()) {
        auto c = control_server::open(cfg, &reg);
        if (!c)
            lg.fatal("{}", c.error());
        control = std::move(c.value());
        shared.control = control.get();
        lg.info("control socket path={}", cfg.control.socket);
    }
    std::unique_ptr<metrics_server> metrics;
    if (!cfg.metrics.listen.empty()) {
        // Mail matters more than its figures: a busy metrics port is a
        // warning, not a reason to stay down.
        auto m = metrics_server::open(cfg, &reg);
        if (m) {
            metrics = std::move(m.value());
            shared.metrics = metrics.get();
            lg.info("metrics endpoint http://{}/metrics", cfg.metrics.listen);
        } else {
            lg.warn("{}; running without the metrics endpoint", m.error());
        }
    }
    shared.dns.servers = cfg.dns.servers;
    shared.dns.timeout = cfg.dns.timeout_ms;
    shared.dns.tries = int(cfg.dns.tries);
    shared.dns.cache_max_entries = cfg.dns.cache_entries;
    shared.nofile = unsigned(std::min<uint64_t>(nofile.soft, UINT32_MAX));
    shared.cores = cores;
    shared.shard_count = geo.value().shard_count;
    if (auto r = build_listeners(cfg, shared); !r)
        lg.fatal("{}", r.error());
    shared.suspended_listeners = read_suspended_listeners(cfg);
    {
        shared.passed.set_capacity(cfg.screening.pass_cache_entries);
        shared.outbound = std::make_unique<mta::outbound_control>(fmt::format("{}/outbound-suspensions.json",
                                                                              state_dir(cfg)));
        if (!shared.outbound->error().empty())
            lg.warn("{}", shared.outbound->error());
        shared.outbound->set_options(outbound_options_of(cfg));
        s_outbound = shared.outbound.get();
        reg.outbound = s_outbound;
        shared.call_ahead.set_capacity(cfg.call_ahead.cache_entries);
        shared.delivery_shared =
            std::make_unique<mta::delivery::shared_state>(fmt::format("{}/warmup-counts.json", state_dir(cfg)));
        if (!shared.delivery_shared->load_error().empty())
            lg.warn("{}", shared.delivery_shared->load_error());
        reg.delivery_shared = shared.delivery_shared.get();
        auto g = build_generation(cfg, shared.nofile, cores, &shared.passed, &shared.call_ahead,
                                  shared.delivery_shared.get());
        if (!g)
            lg.fatal("{}", g.error());
        shared.generations.push_back(std::move(g.value()));
        shared.committed.push_back(std::make_unique<config>(cfg));
    }
    const generation* first = shared.generations.front().get();
    reg.dkim_keys.set(first->dkim_keys);
    reg.running = &first->cfg;
    reg.committed = shared.committed.front().get();
    reg.apply = [sh = &shared](config committed) { return apply_commit(sh, std::move(committed)); };
    std::atomic<int> spool_errors{0};
    fs::geometry g = geo.value();
    auto r = e->run([&cfg, &fds, g, &spool_errors, &shared, first](unsigned core) {
        return core_main(core, &cfg, &fds, g, &spool_errors, &shared, first);
    });
    done = true;
    sig.join();
    for (auto& l : fds)
        for (int fd : l.per_core)
            if (fd >= 0)
                ::close(fd);
    ::close(spool.value().lock_fd);
    if (!r)
        lg.fatal("{}", r.error());
    if (spool_errors.load() > 0)
        lg.fatal("the spool could not be opened; see the errors above");
    lg.info("stopped cleanly connections_served={}", g_connections.load());
    journal::close();
    return 0;
}

}  // namespace rw::admin
