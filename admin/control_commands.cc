// The control socket's commands. Each gathers what it needs from every
// core through the registry (one cross-core call per core, in turn) and
// answers with plain JSON that the shell formats; nothing here touches
// another core's objects directly.
#include "admin/control_commands.hh"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "admin/control.hh"
#include "mta/envelope_params.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/smp/offload.hh"

namespace rw::admin::control_detail {

namespace {
const logger lg{"control"};
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

constexpr std::chrono::seconds k_sample_period{5};
constexpr std::chrono::minutes k_sample_keep{16};

int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string str_arg(const json& args, const char* key, bool required = false) {
    if (!args.contains(key)) {
        if (required)
            throw command_error(fmt::format("missing argument {}", key));
        return {};
    }
    if (!args[key].is_string())
        throw command_error(fmt::format("argument {} must be a string", key));
    return args[key].get<std::string>();
}

bool bool_arg(const json& args, const char* key) {
    if (!args.contains(key))
        return false;
    if (!args[key].is_boolean())
        throw command_error(fmt::format("argument {} must be true or false", key));
    return args[key].get<bool>();
}

// "Example.COM" -> "example.com"; refuses what cannot be a domain.
std::string domain_arg(const json& args, const char* key, bool required) {
    std::string d = str_arg(args, key, required);
    for (auto& ch : d) {
        if (ch >= 'A' && ch <= 'Z')
            ch = char(ch + 32);
        const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
                        ch == '*' || ch == '[' || ch == ']' || ch == ':' || ch == '_';
        if (!ok)
            throw command_error(fmt::format("{}: {} is not a domain", key, d));
    }
    if (d.size() > 255)
        throw command_error(fmt::format("{}: longer than 255 characters", key));
    return d;
}

uint64_t mid_arg(const json& args) {
    std::string m = str_arg(args, "mid", true);
    if (m.empty() || m.size() > 16 || !std::all_of(m.begin(), m.end(), [](char ch) { return std::isxdigit(uint8_t(ch)); }))
        throw command_error(fmt::format("mid: {} is not a message ID (16 hexadecimal digits, as in the mail log)", m));
    return std::stoull(m, nullptr, 16);
}

// An object from alternating keys and values. The commands are coroutines,
// and g++ 12 mishandles nlohmann::json's initializer lists inside them: in
// a coroutine, build JSON with this or in a plain function.
inline void put(json&) {}
template <typename V, typename... R>
void put(json& j, const char* k, V&& v, R&&... rest) {
    j[k] = std::forward<V>(v);
    put(j, std::forward<R>(rest)...);
}
template <typename... A>
json obj(A&&... kv) {
    json j = json::object();
    put(j, std::forward<A>(kv)...);
    return j;
}

std::string mid_string(uint64_t id) { return fmt::format("{:016X}", id); }

std::string s_of(const json& e, const char* k) {
    auto it = e.find(k);
    return it != e.end() && it->is_string() ? it->get<std::string>() : std::string();
}

task<totals> collect(context& c) {
    totals t;
    for (unsigned core = 0; core < c.reg->cores(); ++core) {
        auto part = co_await c.reg->call(core, [](core_slot& s) {
            totals x;
            for (const auto* env : s.listeners) {
                x.sessions += env->sessions;
                x.messages += env->messages;
                x.recipients += env->recipients;
                x.rejected += env->rejected;
                for (const auto& [code, n] : env->rejected_by_code)
                    x.rejected_by_code[code] += n;
            }
            if (s.delivery) {
                const auto& d = s.delivery->stats();
                x.delivered = d.delivered;
                x.deferred = d.deferred;
                x.bounced = d.bounced;
                x.dsn = d.dsn;
                x.connections_out = d.connections;
            }
            return x;
        });
        t.sessions += part.sessions;
        t.messages += part.messages;
        t.recipients += part.recipients;
        t.rejected += part.rejected;
        t.delivered += part.delivered;
        t.deferred += part.deferred;
        t.bounced += part.bounced;
        t.dsn += part.dsn;
        t.connections_out += part.connections_out;
        for (const auto& [code, n] : part.rejected_by_code)
            t.rejected_by_code[code] += n;
    }
    co_return t;
}

json counters_json(const totals& t, const totals& base) {
    json by_code = json::object();
    for (const auto& [code, n] : t.rejected_by_code) {
        auto it = base.rejected_by_code.find(code);
        uint64_t b = it == base.rejected_by_code.end() ? 0 : it->second;
        if (n > b)
            by_code[std::to_string(code)] = n - b;
    }
    return {{"connections_in", t.sessions - base.sessions},
            {"messages_received", t.messages - base.messages},
            {"recipients_received", t.recipients - base.recipients},
            {"recipients_delivered", t.delivered - base.delivered},
            {"recipients_deferred", t.deferred - base.deferred},
            {"recipients_bounced", t.bounced - base.bounced},
            {"reports_sent", t.dsn - base.dsn},
            {"connections_out", t.connections_out - base.connections_out},
            {"rejected", t.rejected - base.rejected},
            {"rejected_by_code", std::move(by_code)}};
}

// Per minute over the last `window` (or since start, if shorter).
json rates_json(const context& c, const totals& now, std::chrono::minutes window) {
    const auto t_now = steady::now();
    const std::pair<steady::time_point, totals>* from = nullptr;
    for (const auto& s : c.samples) {
        if (t_now - s.first <= window) {
            from = &s;
            break;
        }
    }
    json out = json::object();
    if (!from || t_now - from->first < std::chrono::seconds(1)) {
        for (const char* k : {"messages_received", "recipients_received", "recipients_delivered",
                              "recipients_deferred", "recipients_bounced", "rejected"})
            out[k] = 0.0;
        out["over_seconds"] = 0;
        return out;
    }
    const double minutes = std::chrono::duration<double>(t_now - from->first).count() / 60.0;
    auto per = [&](uint64_t a, uint64_t b) { return double(a >= b ? a - b : 0) / minutes; };
    const totals& f = from->second;
    out["messages_received"] = per(now.messages, f.messages);
    out["recipients_received"] = per(now.recipients, f.recipients);
    out["recipients_delivered"] = per(now.delivered, f.delivered);
    out["recipients_deferred"] = per(now.deferred, f.deferred);
    out["recipients_bounced"] = per(now.bounced, f.bounced);
    out["rejected"] = per(now.rejected, f.rejected);
    out["over_seconds"] = int64_t(minutes * 60.0 + 0.5);
    return out;
}

uint64_t rss_bytes() {
    // /proc is memory, not disk: reading it does not block.
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long size = 0, rss = 0;
    int n = std::fscanf(f, "%lu %lu", &size, &rss);
    std::fclose(f);
    return n == 2 ? uint64_t(rss) * uint64_t(::sysconf(_SC_PAGESIZE)) : 0;
}

// The machine's memory from /proc/meminfo, bytes: total and available, and
// where the rest is (page cache, tmpfs and shared memory, kernel slabs).
json system_memory() {
    std::FILE* f = std::fopen("/proc/meminfo", "r");
    if (!f)
        return json::object();
    static constexpr std::pair<const char*, const char*> keys[] = {
        {"MemTotal:", "total_bytes"},  {"MemAvailable:", "available_bytes"}, {"MemFree:", "free_bytes"},
        {"Cached:", "cached_bytes"},   {"Shmem:", "shmem_bytes"},           {"SUnreclaim:", "slab_unreclaimable_bytes"},
        {"Percpu:", "percpu_bytes"}};
    json o = json::object();
    char key[64];
    unsigned long long kb = 0;
    while (std::fscanf(f, "%63s %llu kB\n", key, &kb) == 2)
        for (const auto& [k, name] : keys)
            if (std::strcmp(key, k) == 0)
                o[name] = uint64_t(kb) * 1024;
    std::fclose(f);
    return o;
}

// The file system holding the state directory (on the appliance, the data
// partition with the configuration versions and the mail log): a full one
// is shown in status; mail does not depend on it.
json state_disk(const std::string& dir) {
    struct statvfs v{};
    if (::statvfs(dir.c_str(), &v) != 0)
        return {{"path", dir}, {"bytes_total", 0}, {"bytes_free", 0}, {"error", std::strerror(errno)}};
    return {{"path", dir},
            {"bytes_total", uint64_t(v.f_blocks) * v.f_frsize},
            {"bytes_free", uint64_t(v.f_bavail) * v.f_frsize}};
}

struct core_gauges {
    uint64_t connections_in = 0;  // this core's sessions: limits are shared, so from core 0 only
    uint64_t connections_out = 0, queued_messages = 0;
    uint64_t rcpts_active = 0, rcpts_retry = 0, rcpts_never_attempted = 0;
    uint64_t spool_slots_free = 0, spool_slots = 0;
    uint64_t dns_hits = 0, dns_misses = 0, dns_queries = 0;
    double cpu_seconds = 0;
    uint64_t loop_iterations = 0;
};

core_gauges gauges_here(core_slot& s) {
    core_gauges g;
    for (fs::shard* sh : s.shards) {
        g.queued_messages += sh->live_count();
        auto st = sh->get_stats();
        g.spool_slots_free += st.free_slots;
    }
    // From the delivery queues, not the spool: a walk of every message's
    // recipients held core 0 for ~100 ms per 500,000 queued.
    if (s.delivery)
        for (const auto& d : s.delivery->destinations()) {
            g.connections_out += d.connections;
            g.rcpts_active += d.ready_rcpts + d.in_flight_rcpts;
            g.rcpts_retry += d.deferred_rcpts;
            g.rcpts_never_attempted += d.never_attempted_rcpts;
        }
    if (s.dns) {
        const auto& st = s.dns->stats();
        g.dns_hits = st.cache_hits;
        g.dns_misses = st.cache_misses;
    }
    timespec ts{};
    if (::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        g.cpu_seconds = double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
    g.loop_iterations = reactor::local().loop_iterations();
    return g;
}

json status_json(const context& c, const totals& now, const core_gauges& sum, uint64_t connections_in);

task<json> cmd_status(context& c, const json& args) {
    const bool detail = bool_arg(args, "detail");
    totals now = co_await collect(c);
    json per_core = json::array();
    core_gauges sum;
    uint64_t connections_in = 0;
    for (unsigned core = 0; core < c.reg->cores(); ++core) {
        auto g = co_await c.reg->call(core, [](core_slot& s) { return gauges_here(s); });
        if (core == 0)
            co_await c.reg->call(0, [&connections_in](core_slot& s) {
                for (const auto* l : s.listener_limits)
                    connections_in += l->total();
            });
        sum.connections_out += g.connections_out;
        sum.queued_messages += g.queued_messages;
        sum.rcpts_active += g.rcpts_active;
        sum.rcpts_retry += g.rcpts_retry;
        sum.rcpts_never_attempted += g.rcpts_never_attempted;
        sum.spool_slots_free += g.spool_slots_free;
        sum.dns_hits += g.dns_hits;
        sum.dns_misses += g.dns_misses;
        per_core.push_back(obj("core", core, "cpu_seconds", g.cpu_seconds, "loop_iterations", g.loop_iterations,
                               "queued_messages", g.queued_messages, "connections_out", g.connections_out));
    }
    json out = status_json(c, now, sum, connections_in);
    if (detail)
        out["per_core"] = std::move(per_core);
    co_return out;
}

std::vector<std::string> listener_names(const context& c) {
    std::vector<std::string> out;
    for (const auto& [name, token] : c.suspended_listeners)
        out.push_back(name);
    return out;
}

json status_json(const context& c, const totals& now, const core_gauges& sum, uint64_t connections_in) {
    const auto& geo = c.reg->geometry();
    const uint64_t seg = geo.segment_bytes;
    const uint64_t total_bytes = uint64_t(geo.slots_per_shard) * geo.shard_count * seg;
    return {
        {"version", RINGWAY_VERSION},
        {"hostname", c.cfg->smtp.hostname},
        {"config_version", c.version},
        {"pending_restart", pending_restart(c)},
        {"uptime_seconds", std::chrono::duration_cast<std::chrono::seconds>(steady::now() - c.reg->start_time).count()},
        {"started_unix", c.reg->start_unix},
        {"cores", c.reg->cores()},
        {"counters", counters_json(now, c.base)},
        {"rates_per_minute",
         {{"1m", rates_json(c, now, std::chrono::minutes(1))},
          {"5m", rates_json(c, now, std::chrono::minutes(5))},
          {"15m", rates_json(c, now, std::chrono::minutes(15))}}},
        {"gauges",
         {{"connections_in", connections_in},
          {"connections_out", sum.connections_out},
          {"queued_messages", sum.queued_messages},
          {"queued_recipients",
           {{"active", sum.rcpts_active}, {"retry", sum.rcpts_retry}, {"never_attempted", sum.rcpts_never_attempted}}},
          {"spool", {{"bytes_total", total_bytes}, {"bytes_free", sum.spool_slots_free * seg}}},
          {"memory_rss_bytes", rss_bytes()},
          {"system_memory", system_memory()},
          {"state_disk", state_disk(c.state_dir)},
          {"dns", {{"cache_hits", sum.dns_hits}, {"cache_misses", sum.dns_misses}}},
          {"delivery_suspended", json(std::vector<std::string>(c.suspended_delivery.begin(),
                                                               c.suspended_delivery.end()))},
          {"listeners_suspended", json(listener_names(c))},
          {"conservation_level", c.reg->conservation_level},
          {"conservation_reason", c.reg->conservation_reason}}},
    };
}

task<std::vector<mta::delivery::destination_view>> all_destinations(context& c) {
    std::vector<mta::delivery::destination_view> all;
    for (unsigned core = 0; core < c.reg->cores(); ++core) {
        auto v = co_await c.reg->call(core, [](core_slot& s) {
            return s.delivery ? s.delivery->destinations() : std::vector<mta::delivery::destination_view>{};
        });
        for (auto& d : v)
            all.push_back(std::move(d));
    }
    co_return all;
}

json destination_json(const mta::delivery::destination_view& d, int64_t now_unix) {
    const int64_t now_ms = now_unix * 1000;
    json sources = json::array();
    for (const auto& s : d.sources)
        sources.push_back({{"source", s.name}, {"connections", s.connections}, {"connections_made", s.connections_made}});
    return {{"destination", d.key},
            {"pool", d.pool},
            {"provider", d.provider},
            {"overrides", [&] {
                 json a = json::array();
                 for (const auto& ov : d.overrides)
                     a.push_back({{"rule", ov.rule}, {"action", ov.action}, {"value", ov.value}, {"source", ov.source},
                                  {"until_ms", ov.until_ms}, {"reply", ov.reply}});
                 return a;
             }()},
            {"sources", std::move(sources)},
            {"core", d.core},
            {"queued_recipients", d.ready_rcpts + d.deferred_rcpts + d.in_flight_rcpts},
            {"ready_recipients", d.ready_rcpts},
            {"retry_recipients", d.deferred_rcpts},
            {"in_flight_recipients", d.in_flight_rcpts},
            {"in_flight_messages", d.in_flight_messages},
            {"oldest_age_seconds", d.oldest_received_unix ? std::max<int64_t>(0, now_unix - d.oldest_received_unix) : 0},
            {"connections", d.connections},
            {"idle_connections", d.idle_connections},
            {"connection_limit", d.connection_limit},
            {"rate_limit_per_minute", d.rate_limit},
            {"backed_off", d.backed_off},
            {"paused_until_unix_ms", d.paused_until_ms > now_ms ? d.paused_until_ms : 0},
            {"suspended", d.suspended},
            {"last_error", d.last_error},
            {"last_error_unix_ms", d.last_error_ms},
            {"last_connection_unix_ms", d.last_connection_ms},
            {"last_host", d.last_host},
            {"last_ip", d.last_ip},
            {"last_tls", d.last_tls},
            {"delivered", d.delivered},
            {"deferred", d.deferred},
            {"bounced", d.bounced},
            {"connections_made", d.connections_made},
            {"mean_latency_ms", d.mean_latency_ms}};
}

task<json> cmd_workqueue(context& c, const json& args) {
    (void)args;
    auto all = co_await all_destinations(c);
    const int64_t now = unix_now();
    std::erase_if(all, [](const auto& d) {
        return d.ready_rcpts + d.deferred_rcpts + d.in_flight_rcpts == 0 && d.connections == 0;
    });
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
        auto qa = a.ready_rcpts + a.deferred_rcpts + a.in_flight_rcpts;
        auto qb = b.ready_rcpts + b.deferred_rcpts + b.in_flight_rcpts;
        return qa != qb ? qa > qb : a.key < b.key;
    });
    json rows = json::array();
    for (const auto& d : all)
        rows.push_back(destination_json(d, now));
    co_return obj("destinations", std::move(rows));
}

task<json> cmd_tophosts(context& c, const json& args) {
    std::string sort = str_arg(args, "sort");
    if (sort.empty())
        sort = "active";
    static const std::vector<std::string> k_sorts = {"active", "connections", "delivered", "soft", "hard"};
    if (std::find(k_sorts.begin(), k_sorts.end(), sort) == k_sorts.end())
        throw command_error(fmt::format("sort: {} is not one of active, connections, delivered, soft, hard", sort));
    auto all = co_await all_destinations(c);
    auto key = [&](const mta::delivery::destination_view& d) -> uint64_t {
        if (sort == "active")
            return d.ready_rcpts + d.deferred_rcpts + d.in_flight_rcpts;
        if (sort == "connections")
            return d.connections;
        if (sort == "delivered")
            return d.delivered;
        if (sort == "soft")
            return d.deferred;
        return d.bounced;
    };
    std::stable_sort(all.begin(), all.end(), [&](const auto& a, const auto& b) {
        return key(a) != key(b) ? key(a) > key(b) : a.key < b.key;
    });
    if (all.size() > 50)
        all.resize(50);
    json rows = json::array();
    const int64_t now = unix_now();
    for (const auto& d : all)
        rows.push_back(destination_json(d, now));
    co_return obj("sort", sort, "destinations", std::move(rows));
}

task<json> cmd_hoststatus(context& c, const json& args) {
    const std::string domain = domain_arg(args, "domain", true);
    auto all = co_await all_destinations(c);
    const int64_t now = unix_now();
    json rows = json::array();
    for (const auto& d : all) {
        std::string_view k = d.key;
        k = k.substr(0, std::min(k.find('#'), k.find('!')));  // "#POOL": the source pool of its mail
        if (k.substr(k.find(':') + 1) == domain)
            rows.push_back(destination_json(d, now));
    }
    if (rows.empty())
        throw command_error(fmt::format("no destination {} (nothing queued or sent for it since start)", domain));
    co_return obj("domain", domain, "destinations", std::move(rows));
}

// Suspensions survive a restart and a power cut: written to control.state_dir
// (by default beside the spool), durable before the command answers.
task<void> save_suspensions(context& c) {
    // One at a time (two writers of the same temporary file could
    // interleave, or rename an older state last); the state is read once
    // this save's turn has come, so the newest one is what lands.
    for (int i = 0; c.saving_suspensions; ++i) {
        if (i >= 3000)
            throw command_error("another change of the suspensions is still being saved; try again");
        auto pause = io::sleep(std::chrono::milliseconds(10));
        co_await pause;
    }
    c.saving_suspensions = true;
    struct release {
        bool& flag;
        ~release() { flag = false; }
    } held{c.saving_suspensions};
    std::string path = fmt::format("{}/suspensions.json", c.state_dir);
    std::vector<std::string> listeners;
    for (const auto& [name, token] : c.suspended_listeners)
        listeners.push_back(name);
    json j = obj("v", 1, "delivery", std::vector<std::string>(c.suspended_delivery.begin(), c.suspended_delivery.end()),
                 "listeners", listeners);
    std::string text = j.dump(2) + "\n";
    auto write = [path, text]() { return write_file_durably(path, text); };
    // (Bound first: g++ 12 mishandles class-type temporaries in the operand of co_await.)
    auto job = offload(std::move(write));
    auto ok = co_await std::move(job);
    if (!ok.empty())
        throw command_error(fmt::format("cannot save {}: {} (the change holds until restart)", path, ok));
}

task<size_t> for_each_delivery(context& c, std::function<size_t(mta::delivery::service&)> fn) {
    size_t n = 0;
    for (unsigned core = 0; core < c.reg->cores(); ++core)
        n += co_await c.reg->call(core, [&fn](core_slot& s) -> size_t { return s.delivery ? fn(*s.delivery) : 0; });
    co_return n;
}

std::string target_arg(const json& args) {
    std::string t = str_arg(args, "target");
    if (t.empty())
        t = "delivery";
    if (t != "delivery" && t != "listener")
        throw command_error(fmt::format("target: {} is not delivery or listener", t));
    return t;
}

// The index of listener `name`, or an error naming the listeners there are.
size_t listener_arg(const context& c, const json& args) {
    std::string name = str_arg(args, "name");
    if (name.empty())
        name = str_arg(args, "domain");
    const auto& ls = c.reg->running->listeners;
    std::string names;
    for (size_t i = 0; i < ls.size(); ++i) {
        if (ls[i].name == name)
            return i;
        names += fmt::format("{}{}", names.empty() ? "" : ", ", ls[i].name);
    }
    throw command_error(name.empty() ? fmt::format("which listener? ({})", names)
                                     : fmt::format("no listener {} (listeners: {})", name, names));
}

// Sets listener i's suspension on every core; with `close`, ends its open
// sessions too. Returns the open sessions found.
task<size_t> set_listener(context& c, size_t i, bool suspended, bool close,
                          std::function<bool()> still = [] { return true; }) {
    size_t n = 0;
    for (unsigned core = 0; core < c.reg->cores() && still(); ++core) {
        auto fn = [i, suspended, close](core_slot& s) -> size_t {
            if (i >= s.listeners.size())
                return 0;
            mta::server_env* env = s.listeners[i];
            env->suspended = suspended;
            if (!suspended)
                env->closing = false;
            return close ? mta::close_sessions(*env) : env->session_fds.size();
        };
        auto t = c.reg->call(core, std::move(fn));
        n += co_await std::move(t);
    }
    co_return n;
}

// After a suspension's delay, the listener's open sessions are closed,
// unless it was resumed (or suspended again) meanwhile.
task<void> close_after(context* c, size_t i, std::string name, uint64_t token, std::chrono::seconds delay) {
    gate::holder h(c->tasks);
    // In steps, so a shutdown or a resume ends the wait soon.
    const auto until = steady::now() + delay;
    for (;;) {
        auto it = c->suspended_listeners.find(name);
        if (c->stopping || it == c->suspended_listeners.end() || it->second != token)
            co_return;
        const auto left = until - steady::now();
        if (left <= steady::duration::zero())
            break;
        auto pause = io::sleep(std::min<std::chrono::milliseconds>(
            std::chrono::duration_cast<std::chrono::milliseconds>(left), std::chrono::milliseconds(200)));
        co_await pause;
    }
    auto it = c->suspended_listeners.find(name);
    if (c->stopping || it == c->suspended_listeners.end() || it->second != token)
        co_return;
    // Checked again before each core: a resume (or a new suspension) while
    // this goes round ends it.
    auto still = [c, name, token] {
        auto at = c->suspended_listeners.find(name);
        return !c->stopping && at != c->suspended_listeners.end() && at->second == token;
    };
    auto closing = set_listener(*c, i, true, true, still);
    size_t n = co_await std::move(closing);
    lg.info("listener suspended name={}: closed {} open sessions after {} s", name, n, delay.count());
}

task<json> cmd_suspend_listener(context& c, const peer_cred& who, const json& args) {
    const size_t i = listener_arg(c, args);
    const std::string name = c.reg->running->listeners[i].name;
    int64_t delay = 30;
    if (args.contains("delay")) {
        if (!args["delay"].is_number_integer() || args["delay"].get<int64_t>() < 0 ||
            args["delay"].get<int64_t>() > 86400)
            throw command_error("delay must be a number of seconds, 0..86400");
        delay = args["delay"].get<int64_t>();
    }
    const uint64_t token = ++c.suspension_seq;
    c.suspended_listeners[name] = token;
    auto t = set_listener(c, i, true, false);
    size_t open = co_await std::move(t);
    lg.info("listener suspended name={} open_sessions={} closing them in {} s, by {}", name, open, delay,
            who.describe());
    journal::record("admin", {{"action", std::string_view("suspend")},
                              {"listener", std::string_view(name)},
                              {"uid", uint64_t(who.uid)}});
    spawn(close_after(&c, i, name, token, std::chrono::seconds(delay)));
    co_await save_suspensions(c);
    co_return obj("suspended", name, "listener", true, "open_sessions", open, "delay_seconds", delay);
}

task<json> cmd_resume_listener(context& c, const peer_cred& who, const json& args) {
    const size_t i = listener_arg(c, args);
    const std::string name = c.reg->running->listeners[i].name;
    if (!c.suspended_listeners.contains(name))
        throw command_error(fmt::format("listener {} is not suspended", name));
    c.suspended_listeners.erase(name);
    auto t = set_listener(c, i, false, false);
    co_await std::move(t);
    lg.info("listener resumed name={} by {}", name, who.describe());
    journal::record("admin", {{"action", std::string_view("resume")},
                              {"listener", std::string_view(name)},
                              {"uid", uint64_t(who.uid)}});
    co_await save_suspensions(c);
    co_return obj("resumed", name, "listener", true);
}

task<json> cmd_suspend(context& c, const peer_cred& who, const json& args) {
    if (target_arg(args) == "listener")
        co_return co_await cmd_suspend_listener(c, who, args);
    const std::string domain = domain_arg(args, args.contains("name") ? "name" : "domain", false);
    std::function<size_t(mta::delivery::service&)> fn = [&domain](mta::delivery::service& s) { return s.suspend(domain); };
    auto t = for_each_delivery(c, std::move(fn));
    size_t n = co_await std::move(t);
    c.suspended_delivery.insert(domain);
    lg.info("delivery suspended domain={} destinations={} by {}", domain.empty() ? "*" : domain, n, who.describe());
    journal::record("admin", {{"action", std::string_view("suspend")},
                              {"domain", std::string_view(domain.empty() ? "*" : domain)},
                              {"uid", uint64_t(who.uid)}});
    co_await save_suspensions(c);
    co_return obj("suspended", domain.empty() ? std::string("*") : domain, "destinations", n);
}

task<json> cmd_resume(context& c, const peer_cred& who, const json& args) {
    if (target_arg(args) == "listener")
        co_return co_await cmd_resume_listener(c, who, args);
    const std::string domain = domain_arg(args, args.contains("name") ? "name" : "domain", false);
    if (!domain.empty() && !c.suspended_delivery.contains(domain))
        throw command_error(fmt::format("delivery to {} is not suspended{}", domain,
                                        c.suspended_delivery.contains("") ? " (all delivery is: resume with no domain)"
                                                                         : ""));
    std::function<size_t(mta::delivery::service&)> fn = [&domain](mta::delivery::service& s) { return s.resume(domain); };
    auto t = for_each_delivery(c, std::move(fn));
    size_t n = co_await std::move(t);
    if (domain.empty())
        c.suspended_delivery.clear();
    else
        c.suspended_delivery.erase(domain);
    lg.info("delivery resumed domain={} destinations={} by {}", domain.empty() ? "*" : domain, n, who.describe());
    journal::record("admin", {{"action", std::string_view("resume")},
                              {"domain", std::string_view(domain.empty() ? "*" : domain)},
                              {"uid", uint64_t(who.uid)}});
    co_await save_suspensions(c);
    co_return obj("resumed", domain.empty() ? std::string("*") : domain, "destinations", n);
}

task<json> cmd_delivernow(context& c, const peer_cred& who, const json& args) {
    const std::string domain = domain_arg(args, "domain", false);
    std::function<size_t(mta::delivery::service&)> fn = [&domain](mta::delivery::service& s) { return s.deliver_now(domain); };
    auto t = for_each_delivery(c, std::move(fn));
    size_t n = co_await std::move(t);
    lg.info("deliver now domain={} released={} by {}", domain.empty() ? "*" : domain, n, who.describe());
    co_return obj("domain", domain.empty() ? std::string("*") : domain, "released", n);
}

// `shaping list`: the overrides shaping rules set, on every core;
// `shaping lift DOMAIN|* [RULE]`: ends them.
task<json> cmd_shaping(context& c, const peer_cred& who, const json& args) {
    const std::string action = str_arg(args, "action", true);
    if (action == "list") {
        auto all = co_await all_destinations(c);
        json rows = json::array();
        for (const auto& d : all)
            for (const auto& ov : d.overrides)
                rows.push_back({{"destination", d.key},
                                {"rule", ov.rule},
                                {"action", ov.action},
                                {"value", ov.value},
                                {"source", ov.source},
                                {"since_unix_ms", ov.since_ms},
                                {"until_unix_ms", ov.until_ms},
                                {"reply", ov.reply}});
        co_return obj("overrides", std::move(rows));
    }
    if (action != "lift")
        throw command_error(fmt::format("shaping: unknown action {}; allowed: list, lift", action));
    std::string domain = str_arg(args, "target", true);
    if (domain == "*")
        domain.clear();
    else
        domain = domain_arg(args, "target", true);
    const std::string rule = str_arg(args, "rule", false);
    const std::string by = who.describe();
    std::function<size_t(mta::delivery::service&)> fn = [&](mta::delivery::service& s) {
        return s.lift_overrides(domain, rule, by);
    };
    auto t = for_each_delivery(c, std::move(fn));
    size_t n = co_await std::move(t);
    lg.info("shaping lift domain={} rule={} lifted={} by {}", domain.empty() ? "*" : domain, rule.empty() ? "*" : rule,
            n, by);
    co_return obj("lifted", n);
}

const char* status_name(fs::rcpt_status s) {
    switch (s) {
    case fs::rcpt_status::pending: return "pending";
    case fs::rcpt_status::deferred: return "deferred";
    case fs::rcpt_status::delivered: return "delivered";
    case fs::rcpt_status::bounced: return "bounced";
    }
    return "?";
}

json message_json(const fs::shard::message_view& v, unsigned core, uint32_t shard) {
    json rcpts = json::array();
    for (size_t i = 0; i < v.env.rcpts.size(); ++i) {
        const auto& st = v.rcpts[i];
        rcpts.push_back({{"rcpt", v.env.rcpts[i]},
                         {"state", status_name(st.status)},
                         {"attempts", st.attempts},
                         {"next_attempt_unix", st.next_attempt_unix},
                         {"last_reply", st.last_reply}});
    }
    return {{"mid", mid_string(v.id)},
            {"core", core},
            {"shard", shard},
            {"mail_from", v.env.mail_from},
            {"received_unix", v.env.received_unix},
            {"body_bytes", v.body_bytes},
            {"message_bytes", v.message_bytes},
            // The ESMTP parameters kept with it (BODY, SMTPUTF8, REQUIRETLS,
            // RET, ENVID, NEXT-HOP, POOL; each recipient's NOTIFY and ORCPT).
            {"params", [&] {
                 auto p = mta::decode_params(v.env.params, v.env.rcpts.size());
                 return p ? mta::describe_params(*p) : std::string("(unreadable)");
             }()},
            {"recipients", std::move(rcpts)}};
}

// The message's envelope, states and header section, from the core whose
// shard holds it; null when no shard does.
task<json> cmd_showmessage(context& c, const json& args) {
    const uint64_t id = mid_arg(args);
    {
        const unsigned core = c.reg->core_of_message(id);
        auto t = c.reg->call(core, [id](core_slot& s) -> task<json> {
            for (fs::shard* sh : s.shards) {
                auto v = sh->find(id);
                if (!v)
                    continue;
                json m = message_json(*v, s.core, sh->index());
                const uint64_t body = v->message_bytes;  // as delivered, with what the gateway adds
                // The header section: up to the first empty line, at most 64 KiB.
                std::string head(std::min<uint64_t>(body, 64 * 1024), '\0');
                size_t got = 0;
                while (got < head.size()) {
                    auto r = co_await sh->read_message(id, got, std::span<char>(head.data() + got, head.size() - got));
                    if (!r || r.value() == 0)
                        break;
                    got += r.value();
                }
                head.resize(got);
                size_t end = head.find("\r\n\r\n");
                m["headers_truncated"] = end == std::string::npos && got < body;
                if (end != std::string::npos)
                    head.resize(end + 2);
                m["headers"] = std::move(head);
                co_return m;
            }
            co_return json();
        });
        json m = co_await std::move(t);
        if (!m.is_null())
            co_return m;
    }
    throw command_error(fmt::format("no message {} in the spool (delivered, bounced or deleted?)", mid_string(id)));
}

task<bool> quarantine_on(mta::delivery::service* d, uint64_t id, bool release, std::string by) {
    if (!d)
        co_return false;
    if (release) {
        auto t = d->release(id, std::move(by));
        co_return co_await std::move(t);
    }
    auto t = d->discard(id, std::move(by));
    co_return co_await std::move(t);
}

// `quarantine list [NAME]`, `show MID`, `release MID`, `delete MID`.
task<json> cmd_quarantine(context& c, const peer_cred& who, const json& args) {
    const std::string action = str_arg(args, "action", true);
    const std::string target = str_arg(args, "target", false);
    using held_view = mta::delivery::service::held_view;
    if (action == "list") {
        std::vector<std::pair<unsigned, held_view>> all;
        for (unsigned core = 0; core < c.reg->cores(); ++core) {
            auto fn = [target](core_slot& s) { return s.delivery ? s.delivery->held(target) : std::vector<held_view>{}; };
            auto t = c.reg->call(core, std::move(fn));
            auto mine = co_await std::move(t);
            for (auto& h : mine)
                all.emplace_back(core, std::move(h));
        }
        std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
            return a.second.received_unix != b.second.received_unix ? a.second.received_unix < b.second.received_unix
                                                                    : a.second.id < b.second.id;
        });
        json list = json::array();
        std::map<std::string, std::pair<uint64_t, uint64_t>> use;  // messages, bytes
        for (const auto& [core, h] : all) {
            list.push_back({{"mid", mid_string(h.id)},      {"quarantine", h.quarantine}, {"rule", h.rule},
                            {"mail_from", h.from},         {"recipients", h.rcpts},      {"size", h.size},
                            {"received_unix", h.received_unix}, {"expires_unix", h.expires_unix}, {"core", core}});
            use[h.quarantine].first++;
            use[h.quarantine].second += h.size;
        }
        json qs = json::array();
        for (const auto& q : quarantines_of(c.reg->running->quarantines)) {
            if (!target.empty() && q.name != target)
                continue;
            qs.push_back({{"name", q.name},
                          {"retention_s", q.retention_s.count()},
                          {"max_size", q.max_size_bytes},
                          {"expire", std::string(to_string(q.expire))},
                          {"messages", use[q.name].first},
                          {"bytes", use[q.name].second}});
        }
        co_return obj("quarantines", std::move(qs), "messages", std::move(list));
    }
    if (action == "show") {
        const json show_args = {{"mid", target}};
        auto t = cmd_showmessage(c, show_args);
        json m = co_await std::move(t);
        bool held = false;
        for (const auto& r : m["recipients"])
            held = held || r.value("last_reply", std::string()).starts_with("quarantine ");
        if (!held)
            throw command_error(fmt::format("message {} is not held in a quarantine", target));
        co_return m;
    }
    if (action == "release" || action == "delete") {
        const uint64_t id = mid_arg(json{{"mid", target}});
        const unsigned core = c.reg->core_of_message(id);
        const bool release = action == "release";
        const std::string by = fmt::format("uid {}", who.uid);
        auto fn = [id, release, by](core_slot& s) { return quarantine_on(s.delivery, id, release, by); };
        auto t = c.reg->call(core, std::move(fn));
        const bool ok = co_await std::move(t);
        if (!ok)
            throw command_error(fmt::format("message {} is not held in a quarantine", mid_string(id)));
        lg.info("quarantine {} mid={} by {}", action, mid_string(id), who.describe());
        co_return obj(release ? "released" : "deleted", mid_string(id));
    }
    throw command_error(fmt::format("quarantine: unknown action {}; allowed: list, show, release, delete", action));
}

// `outbound list`, `lift KEY`, `suspend KEY [REASON]`. The object is
// shared by every core (its own lock): no hop to another core.
task<json> cmd_outbound(context& c, const peer_cred& who, const json& args) {
    const std::string action = str_arg(args, "action", true);
    const std::string target = str_arg(args, "target", false);
    mta::outbound_control* o = c.reg->outbound;
    if (!o)
        throw command_error("outbound control is not running");
    const auto now = std::chrono::system_clock::now();
    auto entry_json = [](const mta::outbound_control::entry& e) {
        return json{{"key", e.key},           {"reason", e.reason},       {"by", e.by},
                    {"since_unix", e.since_unix}, {"until_unix", e.until_unix}, {"last_hour", e.last_hour},
                    {"last_day", e.last_day}};
    };
    if (action == "list") {
        json sus = json::array(), top = json::array();
        for (const auto& e : o->suspended(now))
            sus.push_back(entry_json(e));
        for (const auto& e : o->top(20, now))
            top.push_back(entry_json(e));
        co_return obj("suspended", std::move(sus), "senders", std::move(top));
    }
    const bool valid = target.starts_with("user:") || target.starts_with("domain:");
    if ((action == "lift" || action == "suspend") && (!valid || target.size() < 6))
        throw command_error(fmt::format("{}: name a sender as user:NAME or domain:DOMAIN", action));
    if (action == "lift") {
        if (!o->lift(target))
            throw command_error(fmt::format("{} is not suspended", target));
        lg.info("outbound lift {} by {}", target, who.describe());
        co_return obj("lifted", target);
    }
    if (action == "suspend") {
        std::string reason = str_arg(args, "reason", false);
        if (reason.empty())
            reason = "suspended by the administrator";
        o->suspend(target, reason, fmt::format("uid {}", who.uid), now);
        lg.info("outbound suspend {} by {}: {}", target, who.describe(), reason);
        co_return obj("suspended_sender", target);
    }
    throw command_error(fmt::format("outbound: unknown action {}; allowed: list, lift, suspend", action));
}

task<json> cmd_deletemessage(context& c, const peer_cred& who, const json& args) {
    const uint64_t id = mid_arg(args);
    {
        const unsigned core = c.reg->core_of_message(id);
        auto t = c.reg->call(core, [id](core_slot& s) -> task<int> {
            for (fs::shard* sh : s.shards) {
                if (!sh->find(id))
                    continue;
                auto r = co_await sh->remove(id);
                co_return r ? 1 : -1;
            }
            co_return 0;
        });
        int r = co_await std::move(t);
        if (r < 0)
            throw command_error(fmt::format("cannot delete {}: the spool refused (see the daemon's log)", mid_string(id)));
        if (r > 0) {
            lg.info("message deleted mid={} by {}", mid_string(id), who.describe());
            journal::record("admin", {{"action", std::string_view("deletemessage")},
                                      {"mid", std::string_view(mid_string(id))},
                                      {"uid", uint64_t(who.uid)}});
            co_return obj("deleted", mid_string(id));
        }
    }
    throw command_error(fmt::format("no message {} in the spool", mid_string(id)));
}

// mid MID | domain DOMAIN | from ADDRESS | all: exactly one.
mta::delivery::service::selection selection_arg(const json& args) {
    mta::delivery::service::selection s;
    int given = 0;
    if (args.contains("mid")) {
        s.mid = mid_arg(args);
        ++given;
    }
    if (args.contains("domain")) {
        s.rcpt_domain = domain_arg(args, "domain", true);
        ++given;
    }
    if (args.contains("from")) {
        s.sender = str_arg(args, "from", true);
        if (s.sender.size() > 512)
            throw command_error("from: longer than 512 characters");
        ++given;
    }
    if (bool_arg(args, "all")) {
        s.all = true;
        ++given;
    }
    if (given != 1)
        throw command_error("say which recipients: mid MID, domain DOMAIN, from ADDRESS or all (one of them)");
    return s;
}

std::string describe(const mta::delivery::service::selection& s) {
    if (s.mid)
        return fmt::format("mid={}", mid_string(s.mid));
    if (!s.rcpt_domain.empty())
        return fmt::format("domain={}", s.rcpt_domain);
    if (!s.sender.empty())
        return fmt::format("from={}", s.sender);
    return "all";
}

task<size_t> bounce_on(mta::delivery::service* d, mta::delivery::service::selection sel, std::string reply) {
    if (!d)
        co_return 0;
    auto which = d->select(sel);
    auto t = d->bounce(std::move(which), std::move(reply));
    co_return co_await std::move(t);
}

task<json> cmd_bouncerecipients(context& c, const peer_cred& who, const json& args) {
    const auto sel = selection_arg(args);
    const std::string reply = "550 5.0.0 Bounced by the gateway's administrator";
    size_t n = 0;
    for (unsigned core = 0; core < c.reg->cores(); ++core) {
        // (Lambda and task bound first: g++ 12 mishandles class-type temporaries in co_await operands.)
        auto fn = [sel, reply](core_slot& s) { return bounce_on(s.delivery, sel, reply); };
        auto t = c.reg->call(core, std::move(fn));
        n += co_await std::move(t);
    }
    lg.info("bouncerecipients {} recipients={} by {}", describe(sel), n, who.describe());
    journal::record("admin", {{"action", std::string_view("bouncerecipients")},
                              {"which", std::string_view(describe(sel))},
                              {"recipients", uint64_t(n)},
                              {"uid", uint64_t(who.uid)}});
    co_return obj("bounced", n, "which", describe(sel));
}

task<json> cmd_redirectrecipients(context& c, const peer_cred& who, const json& args) {
    const auto sel = selection_arg(args);
    const std::string to = str_arg(args, "to", true);
    auto hp = parse_next_hop(to, 25);
    if (!hp || hp->first.empty() || hp->first.size() > 255)
        throw command_error(fmt::format("to: {} is not a host, host:port, IP or [IPv6]:port", to));
    const std::string host = hp->first;
    const uint16_t port = hp->second;
    using sel_t = mta::delivery::service::selected;
    std::vector<std::pair<unsigned, sel_t>> all;
    for (unsigned core = 0; core < c.reg->cores(); ++core) {
        auto fn = [sel](core_slot& s) { return s.delivery ? s.delivery->select(sel) : std::vector<sel_t>{}; };
        auto t = c.reg->call(core, std::move(fn));
        auto mine = co_await std::move(t);
        for (auto& x : mine)
            all.emplace_back(core, std::move(x));
    }
    size_t n = 0;
    if (!all.empty())
        for (unsigned core = 0; core < c.reg->cores(); ++core) {
            auto fn = [&all, &host, port](core_slot& s) -> size_t {
                return s.delivery ? s.delivery->redirect(all, host, port) : 0;
            };
            auto t = c.reg->call(core, std::move(fn));
            n += co_await std::move(t);
        }
    lg.info("redirectrecipients {} to {}:{} recipients={} by {}", describe(sel), host, port, n, who.describe());
    journal::record("admin", {{"action", std::string_view("redirectrecipients")},
                              {"which", std::string_view(describe(sel))},
                              {"to", std::string_view(to)},
                              {"recipients", uint64_t(n)},
                              {"uid", uint64_t(who.uid)}});
    co_return obj("redirected", n, "which", describe(sel), "to", fmt::format("{}:{}", host, port));
}

task<json> cmd_counters_reset(context& c, const peer_cred& who) {
    c.base = co_await collect(c);
    c.samples.clear();
    lg.info("counters reset by {}", who.describe());
    co_return obj("reset", true);
}

// ---- the mail log: findevent and tail ----

struct event_filter {
    std::string mid, from, rcpt, subject, event;
    int64_t since = 0, until = 0;  // Unix seconds; 0: open

    static event_filter from_args(const json& args) {
        event_filter f;
        f.mid = str_arg(args, "mid");
        for (auto& ch : f.mid)
            ch = char(std::toupper(uint8_t(ch)));
        f.from = str_arg(args, "from");
        f.rcpt = str_arg(args, "rcpt");
        f.subject = str_arg(args, "subject");
        f.event = str_arg(args, "event");
        for (const char* k : {"since", "until"})
            if (args.contains(k)) {
                if (!args[k].is_number_integer())
                    throw command_error(fmt::format("argument {} must be Unix seconds", k));
                (std::string_view(k) == "since" ? f.since : f.until) = args[k].get<int64_t>();
            }
        return f;
    }
    bool any_address() const { return !from.empty() || !rcpt.empty() || !subject.empty(); }
};

bool iequals_in(std::string_view hay, std::string_view needle) {
    if (needle.empty())
        return true;
    auto low = [](char ch) { return char(std::tolower(uint8_t(ch))); };
    for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
        size_t j = 0;
        while (j < needle.size() && low(hay[i + j]) == low(needle[j]))
            ++j;
        if (j == needle.size())
            return true;
    }
    return false;
}

// "2026-12-04T21:21:26.123456Z" -> Unix seconds (0 when unreadable).
int64_t ts_unix(const json& e) {
    if (!e.contains("ts") || !e["ts"].is_string())
        return 0;
    std::tm tm{};
    const std::string t = e["ts"].get<std::string>();
    if (!::strptime(t.c_str(), "%Y-%m-%dT%H:%M:%S", &tm))
        return 0;
    return int64_t(::timegm(&tm));
}

bool in_time(const event_filter& f, const json& e) {
    const int64_t t = ts_unix(e);
    return (!f.since || t >= f.since) && (!f.until || t <= f.until);
}

bool matches(const event_filter& f, const json& e) {
    if (!f.event.empty() && s_of(e, "event") != f.event)
        return false;
    if (!f.mid.empty() && s_of(e, "mid") != f.mid && s_of(e, "dsn_mid") != f.mid)
        return false;
    if (!f.from.empty() && !iequals_in(s_of(e, "from"), f.from))
        return false;
    if (!f.rcpt.empty() && !iequals_in(s_of(e, "rcpt"), f.rcpt) && !iequals_in(s_of(e, "to"), f.rcpt))
        return false;
    if (!f.subject.empty() && !iequals_in(s_of(e, "subject"), f.subject))
        return false;
    return in_time(f, e);
}

std::string mail_log_path(const context& c) {
    const std::string& p = c.cfg->runtime.mail_log;
    if (p.empty() || p == "-")
        throw command_error("the mail log is not a file (runtime.mail_log is empty or \"-\"), so there is nothing "
                            "to read");
    return p;
}

// Reads up to max bytes of path from off (a helper thread: files block).
task<std::pair<std::string, uint64_t>> read_log(std::string path, uint64_t off, size_t max) {
    auto job = [path, off, max]() -> std::pair<std::string, uint64_t> {
        std::pair<std::string, uint64_t> out{std::string(), 0};
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return out;
        struct stat st{};
        if (::fstat(fd, &st) == 0)
            out.second = uint64_t(st.st_size);
        if (off < out.second) {
            out.first.resize(std::min<uint64_t>(max, out.second - off));
            ssize_t n = ::pread(fd, out.first.data(), out.first.size(), off_t(off));
            out.first.resize(n > 0 ? size_t(n) : 0);
        }
        ::close(fd);
        return out;
    };
    auto t = offload(std::move(job));
    co_return co_await std::move(t);
}

constexpr size_t k_max_events = 2000;
constexpr size_t k_log_chunk = 4 << 20;

task<json> cmd_findevent(context& c, const json& args) {
    event_filter f = event_filter::from_args(args);
    if (f.mid.empty() && !f.any_address())
        throw command_error("say what to find: mid, from, rcpt or subject");
    const std::string path = mail_log_path(c);
    // Pass 1: the messages that match (by MID, sender or recipient, in
    // the time range). Pass 2: every record of those messages.
    std::set<std::string> mids;
    if (!f.mid.empty())
        mids.insert(f.mid);
    std::vector<json> events;
    bool truncated = false;
    for (int pass = f.any_address() ? 1 : 2; pass <= 2; ++pass) {
        uint64_t off = 0;
        std::string carry;
        for (;;) {
            auto t = read_log(path, off, k_log_chunk);
            auto [chunk, size] = co_await std::move(t);
            if (chunk.empty())
                break;
            off += chunk.size();
            carry += chunk;
            size_t start = 0;
            for (size_t nl; (nl = carry.find('\n', start)) != std::string::npos; start = nl + 1) {
                std::string_view line(carry.data() + start, nl - start);
                // A cheap test before parsing (a subject with characters that
                // JSON escapes is left to the parsed test).
                const bool plain_subject = f.subject.find_first_of("\"\\") == std::string::npos;
                if (pass == 1 && !iequals_in(line, f.from) && !iequals_in(line, f.rcpt) &&
                    (!plain_subject || !iequals_in(line, f.subject)))
                    continue;
                json e = json::parse(line, nullptr, false);
                if (e.is_discarded() || !e.is_object())
                    continue;
                if (pass == 1) {
                    if (matches(f, e) && !s_of(e, "mid").empty())
                        mids.insert(s_of(e, "mid"));
                } else if (mids.contains(s_of(e, "mid")) || mids.contains(s_of(e, "dsn_mid"))) {
                    if (events.size() >= k_max_events) {
                        truncated = true;
                        continue;
                    }
                    events.push_back(std::move(e));
                }
            }
            carry.erase(0, start);
        }
    }
    co_return obj("messages", std::vector<std::string>(mids.begin(), mids.end()), "events", std::move(events),
                  "truncated", truncated);
}

task<void> sampler(context* c) {
    gate::holder h(c->tasks);
    while (!c->stopping) {
        totals t = co_await collect(*c);
        const auto now = steady::now();
        c->samples.emplace_back(now, std::move(t));
        while (!c->samples.empty() && now - c->samples.front().first > k_sample_keep)
            c->samples.pop_front();
        co_await io::sleep(k_sample_period, &c->sampler_stop);
    }
}
}  // namespace

std::string write_file_durably(const std::string& path, const std::string& text) {
    std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return std::strerror(errno);
    bool good = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
    int e = errno;
    ::close(fd);
    if (!good || ::rename(tmp.c_str(), path.c_str()) != 0)
        return std::strerror(good ? errno : e);
    // The rename is durable only once the directory is: without this a
    // power cut soon after could bring the old state back.
    std::string dir = std::filesystem::path(path).parent_path().string();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return std::strerror(errno);
    good = ::fsync(dfd) == 0;
    e = errno;
    ::close(dfd);
    return good ? std::string() : std::strerror(e);
}

task<void> start(context& c) {
    std::string path = fmt::format("{}/suspensions.json", c.state_dir);
    std::ifstream in(path);  // at start-up only, a small file
    if (in) {
        std::stringstream ss;
        ss << in.rdbuf();
        json j = json::parse(ss.str(), nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("delivery") || !j["delivery"].is_array()) {
            lg.error("{} is not a suspensions file; ignoring it (delivery is not suspended)", path);
        } else {
            for (const auto& d : j["delivery"])
                if (d.is_string())
                    c.suspended_delivery.insert(d.get<std::string>());
            // (ringwayd applied these before its listeners opened.)
            if (j.contains("listeners") && j["listeners"].is_array())
                for (const auto& l : j["listeners"])
                    if (l.is_string())
                        c.suspended_listeners[l.get<std::string>()] = ++c.suspension_seq;
        }
    }
    for (const auto& d : c.suspended_delivery) {
        std::function<size_t(mta::delivery::service&)> fn = [&d](mta::delivery::service& s) { return s.suspend(d); };
        auto t = for_each_delivery(c, std::move(fn));
        co_await std::move(t);
        lg.warn("delivery suspended domain={} (from {}; lift with: ringway resume delivery{}{})", d.empty() ? "*" : d,
                path, d.empty() ? "" : " ", d);
    }
    spawn(sampler(&c));
    dmarc_load(c);
    spawn(dmarc_reporter(&c));
}

void stop(context& c) {
    c.stopping = true;
    c.sampler_stop.cancel();
    c.dmarc_stop.cancel();
}

task<void> stopped(context& c) { co_await c.tasks.wait_idle(); }

task<json> dispatch(context& c, const peer_cred& who, const std::string& cmd, const json& args) {
    if (cmd == "version")
        co_return obj("version", RINGWAY_VERSION, "protocol", k_control_version);
    if (cmd == "uptime")
        co_return obj("uptime_seconds",
                      std::chrono::duration_cast<std::chrono::seconds>(steady::now() - c.reg->start_time).count(),
                      "started_unix", c.reg->start_unix);
    if (cmd == "status")
        co_return co_await cmd_status(c, args);
    if (cmd == "workqueue")
        co_return co_await cmd_workqueue(c, args);
    if (cmd == "tophosts")
        co_return co_await cmd_tophosts(c, args);
    if (cmd == "hoststatus")
        co_return co_await cmd_hoststatus(c, args);
    if (cmd == "suspend")
        co_return co_await cmd_suspend(c, who, args);
    if (cmd == "resume")
        co_return co_await cmd_resume(c, who, args);
    if (cmd == "delivernow")
        co_return co_await cmd_delivernow(c, who, args);
    if (cmd == "showmessage")
        co_return co_await cmd_showmessage(c, args);
    if (cmd == "deletemessage")
        co_return co_await cmd_deletemessage(c, who, args);
    if (cmd == "trace")
        co_return co_await trace(c, args);
    if (cmd == "bouncerecipients")
        co_return co_await cmd_bouncerecipients(c, who, args);
    if (cmd == "redirectrecipients")
        co_return co_await cmd_redirectrecipients(c, who, args);
    if (cmd == "counters_reset")
        co_return co_await cmd_counters_reset(c, who);
    if (cmd == "findevent")
        co_return co_await cmd_findevent(c, args);
    if (cmd == "dkim")
        co_return co_await cmd_dkim(c, who, args);
    if (cmd == "dmarc")
        co_return co_await cmd_dmarc(c, who, args);
    if (cmd == "quarantine")
        co_return co_await cmd_quarantine(c, who, args);
    if (cmd == "outbound")
        co_return co_await cmd_outbound(c, who, args);
    if (cmd == "warmup")
        co_return co_await cmd_warmup(c, who, args);
    if (cmd == "shaping")
        co_return co_await cmd_shaping(c, who, args);
    if (cmd == "providers")
        co_return co_await cmd_providers(c, who, args);
    if (is_config_command(cmd))
        co_return co_await config_command(c, who, cmd, args);
    if (cmd == "destinations") {  // for the shell's completion
        auto all = co_await all_destinations(c);
        json names = json::array();
        for (const auto& d : all) {
            std::string_view k = d.key;
            k = k.substr(0, std::min(k.find('#'), k.find('!')));
            names.push_back(std::string(k.substr(k.find(':') + 1)));
        }
        co_return names;
    }
    throw command_error(fmt::format("unknown command {}", cmd));
}

}  // namespace rw::admin::control_detail

namespace rw::admin::control_detail {

task<json> tail(context& c, const json& args, event_sink send, std::function<bool()> gone, cancel_token* stop) {
    event_filter f = event_filter::from_args(args);
    const bool follow = bool_arg(args, "follow");
    int64_t lines = 20;
    if (args.contains("lines")) {
        if (!args["lines"].is_number_integer() || args["lines"].get<int64_t>() < 0 ||
            args["lines"].get<int64_t>() > int64_t(k_max_events))
            throw command_error(fmt::format("lines must be 0..{}", k_max_events));
        lines = args["lines"].get<int64_t>();
    }
    const std::string path = mail_log_path(c);
    // The last `lines` matches: read back from the end in chunks.
    uint64_t size = 0;
    {
        auto t = read_log(path, 0, 0);
        size = (co_await std::move(t)).second;
    }
    std::deque<json> last;
    uint64_t back = size;
    std::string tail_text;  // complete lines at the end of the file, newest last
    while (back > 0 && int64_t(last.size()) < lines) {
        const uint64_t from = back > k_log_chunk ? back - k_log_chunk : 0;
        auto t = read_log(path, from, back - from);
        std::string chunk = (co_await std::move(t)).first;
        tail_text = chunk + tail_text;
        back = from;
        last.clear();
        size_t start = 0;
        if (back > 0) {  // the first line may be cut
            size_t nl = tail_text.find('\n');
            start = nl == std::string::npos ? tail_text.size() : nl + 1;
        }
        for (size_t nl; (nl = tail_text.find('\n', start)) != std::string::npos; start = nl + 1) {
            json e = json::parse(std::string_view(tail_text).substr(start, nl - start), nullptr, false);
            if (e.is_object() && matches(f, e)) {
                last.push_back(std::move(e));
                if (int64_t(last.size()) > lines)
                    last.pop_front();
            }
        }
        if (tail_text.size() > 64 * k_log_chunk)
            break;  // a filter that matches little: do not read the whole log
    }
    uint64_t sent = 0;
    for (const auto& e : last) {
        if (!co_await send(e))
            co_return obj("end", true, "events", sent);
        ++sent;
    }
    if (!follow)
        co_return obj("end", true, "events", sent);
    uint64_t off = size;
    std::string carry;
    while (!c.stopping && !gone() && !stop->cancelled()) {
        auto t = read_log(path, off, k_log_chunk);
        auto [chunk, now_size] = co_await std::move(t);
        if (now_size < off) {  // rotated or truncated: start over
            off = 0;
            carry.clear();
            continue;
        }
        if (chunk.empty()) {
            co_await io::sleep(std::chrono::milliseconds(250), stop);
            continue;
        }
        off += chunk.size();
        carry += chunk;
        size_t start = 0;
        for (size_t nl; (nl = carry.find('\n', start)) != std::string::npos; start = nl + 1) {
            json e = json::parse(std::string_view(carry).substr(start, nl - start), nullptr, false);
            if (!e.is_object() || !matches(f, e))
                continue;
            if (!co_await send(e))
                co_return obj("end", true, "events", sent);
            ++sent;
        }
        carry.erase(0, start);
    }
    co_return obj("end", true, "events", sent);
}

}  // namespace rw::admin::control_detail
