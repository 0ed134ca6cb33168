#include "admin/metrics.hh"

#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <map>

#include "mta/delivery/classify.hh"
#include "runtime/base/log.hh"
#include "runtime/net/tcp.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/sync.hh"

namespace rw::admin {

namespace {
const logger lg{"metrics"};

constexpr size_t k_max_request = 8192;
constexpr std::chrono::seconds k_request_timeout{10};
constexpr size_t k_max_destinations = 1000;  // series per metric; the largest queues first

// A label value, escaped as the exposition format requires.
std::string label(std::string_view v) {
    std::string o;
    o.reserve(v.size());
    for (char c : v) {
        if (c == '\\' || c == '"')
            o += '\\', o += c;
        else if (c == '\n')
            o += "\\n";
        else
            o += c;
    }
    return o;
}

// The exposition, built family by family: HELP and TYPE once, then samples.
class exposition {
public:
    void family(std::string_view name, std::string_view type, std::string_view help) {
        _out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    }
    template <typename V>
    void sample(std::string_view name, std::string_view labels, V v) {
        if (labels.empty())
            _out += fmt::format("{} {}\n", name, v);
        else
            _out += fmt::format("{}{{{}}} {}\n", name, labels, v);
    }
    // A histogram's _bucket (cumulated, then +Inf), _sum and _count samples.
    void histogram(std::string_view name, std::string_view labels, const rw::histogram& h) {
        const std::string sep = labels.empty() ? "" : ",";
        uint64_t cum = 0;
        auto counts = h.counts();
        auto bounds = h.bounds();
        for (size_t i = 0; i < bounds.size() && i < counts.size(); ++i) {
            cum += counts[i];
            sample(fmt::format("{}_bucket", name), fmt::format("{}{}le=\"{}\"", labels, sep, bounds[i]), cum);
        }
        sample(fmt::format("{}_bucket", name), fmt::format("{}{}le=\"+Inf\"", labels, sep), h.count());
        sample(fmt::format("{}_sum", name), labels, h.sum());
        sample(fmt::format("{}_count", name), labels, h.count());
    }
    std::string take() { return std::move(_out); }

private:
    std::string _out;
};

struct listener_figures {
    uint64_t sessions = 0, messages = 0, recipients = 0, open = 0;
    std::map<int, uint64_t> rejected;
};

struct core_figures {
    std::vector<listener_figures> listeners;
    std::vector<mta::delivery::destination_view> destinations;
    uint64_t spool_messages = 0, spool_free_slots = 0, spool_batches = 0, spool_records = 0, spool_bytes_written = 0;
    uint64_t delivered = 0, deferred = 0, bounced = 0, dsn = 0, connections_out = 0, shaping_triggered = 0;
    std::array<uint64_t, mta::delivery::k_reply_classes> failures{};
    net::resolver_stats dns;
    double cpu_seconds = 0, idle_seconds = 0;
    uint64_t loop_iterations = 0, in_flight = 0, inbox_depth = 0;
    rw::histogram commit_seconds{k_io_latency_bounds}, batch_records{k_batch_size_bounds};
};

core_figures gather(core_slot& s) {
    core_figures f;
    for (size_t i = 0; i < s.listeners.size(); ++i) {
        const auto* env = s.listeners[i];
        listener_figures l;
        l.sessions = env->sessions;
        l.messages = env->messages;
        l.recipients = env->recipients;
        l.rejected = env->rejected_by_code;
        l.open = s.listener_limits[i]->total();  // shared by every core: read from core 0 only
        f.listeners.push_back(std::move(l));
    }
    if (s.delivery) {
        f.destinations = s.delivery->destinations();
        const auto& d = s.delivery->stats();
        f.delivered = d.delivered;
        f.deferred = d.deferred;
        f.bounced = d.bounced;
        f.dsn = d.dsn;
        f.failures = d.failures;
        f.connections_out = d.connections;
        f.shaping_triggered = d.shaping_triggered;
    }
    for (fs::shard* sh : s.shards) {
        auto st = sh->get_stats();
        f.spool_messages += sh->live_count();
        f.spool_free_slots += st.free_slots;
        f.spool_batches += st.batches;
        f.spool_records += st.records;
        f.spool_bytes_written += st.bytes_written;
        f.commit_seconds.merge(st.commit_seconds);
        f.batch_records.merge(st.batch_records);
    }
    if (s.dns)
        f.dns = s.dns->stats();
    timespec ts{};
    if (::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        f.cpu_seconds = double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
    f.loop_iterations = reactor::local().loop_iterations();
    f.in_flight = reactor::local().in_flight();
    f.idle_seconds = double(reactor::local().idle_ns()) / 1e9;
    f.inbox_depth = engine::instance().inbox_depth(this_core());
    return f;
}

std::string format(const config& cfg, const registry& reg, const std::vector<core_figures>& cores) {
    exposition x;
    x.family("ringway_build_info", "gauge", "The running version.");
    x.sample("ringway_build_info", fmt::format("version=\"{}\"", RINGWAY_VERSION), 1);
    x.family("ringway_start_time_seconds", "gauge", "When the daemon started (Unix time).");
    x.sample("ringway_start_time_seconds", "", reg.start_unix);

    // Listeners.
    const size_t nl = cfg.listeners.size();
    std::vector<listener_figures> L(nl);
    for (const auto& c : cores)
        for (size_t i = 0; i < nl && i < c.listeners.size(); ++i) {
            L[i].sessions += c.listeners[i].sessions;
            L[i].messages += c.listeners[i].messages;
            L[i].recipients += c.listeners[i].recipients;
            for (const auto& [code, n] : c.listeners[i].rejected)
                L[i].rejected[code] += n;
        }
    if (!cores.empty())
        for (size_t i = 0; i < nl && i < cores[0].listeners.size(); ++i)
            L[i].open = cores[0].listeners[i].open;
    auto per_listener = [&](const char* name, const char* type, const char* help, auto get) {
        x.family(name, type, help);
        for (size_t i = 0; i < nl; ++i)
            x.sample(name, fmt::format("listener=\"{}\"", label(cfg.listeners[i].name)), get(L[i]));
    };
    per_listener("ringway_listener_connections_total", "counter", "SMTP sessions accepted.",
                 [](const listener_figures& l) { return l.sessions; });
    per_listener("ringway_listener_connections_open", "gauge", "SMTP connections open now.",
                 [](const listener_figures& l) { return l.open; });
    per_listener("ringway_listener_messages_total", "counter", "Messages received and queued.",
                 [](const listener_figures& l) { return l.messages; });
    per_listener("ringway_listener_recipients_total", "counter", "Recipients of the messages queued.",
                 [](const listener_figures& l) { return l.recipients; });
    x.family("ringway_listener_rejections_total", "counter", "Replies refusing a command or connection, by code.");
    for (size_t i = 0; i < nl; ++i)
        for (const auto& [code, n] : L[i].rejected)
            x.sample("ringway_listener_rejections_total",
                     fmt::format("listener=\"{}\",code=\"{}\"", label(cfg.listeners[i].name), code), n);

    // Delivery, whole and per destination.
    core_figures sum;
    std::vector<const mta::delivery::destination_view*> dests;
    for (const auto& c : cores) {
        sum.delivered += c.delivered;
        sum.deferred += c.deferred;
        sum.bounced += c.bounced;
        sum.dsn += c.dsn;
        for (size_t k = 0; k < sum.failures.size(); ++k)
            sum.failures[k] += c.failures[k];
        sum.connections_out += c.connections_out;
        sum.shaping_triggered += c.shaping_triggered;
        sum.spool_messages += c.spool_messages;
        sum.spool_free_slots += c.spool_free_slots;
        sum.spool_batches += c.spool_batches;
        sum.spool_records += c.spool_records;
        sum.spool_bytes_written += c.spool_bytes_written;
        for (const auto& d : c.destinations)
            dests.push_back(&d);
    }
    auto queued = [](const mta::delivery::destination_view* d) {
        return d->ready_rcpts + d->deferred_rcpts + d->in_flight_rcpts;
    };
    std::sort(dests.begin(), dests.end(), [&](auto* a, auto* b) {
        return queued(a) != queued(b) ? queued(a) > queued(b) : a->key < b->key;
    });
    if (dests.size() > k_max_destinations)
        dests.resize(k_max_destinations);
    x.family("ringway_delivery_recipients_total", "counter", "Recipient outcomes of delivery attempts.");
    x.sample("ringway_delivery_recipients_total", "outcome=\"delivered\"", sum.delivered);
    x.sample("ringway_delivery_recipients_total", "outcome=\"deferred\"", sum.deferred);
    x.sample("ringway_delivery_recipients_total", "outcome=\"bounced\"", sum.bounced);
    x.family("ringway_delivery_failures_total", "counter",
             "Recipients deferred or bounced, by the class of the reply (bad-mailbox, mailbox-full, policy, "
             "reputation, dns, network, tls, unknown).");
    for (size_t k = 0; k < sum.failures.size(); ++k)
        x.sample("ringway_delivery_failures_total",
                 fmt::format("class=\"{}\"", mta::delivery::to_string(mta::delivery::reply_class(k))),
                 sum.failures[k]);
    x.family("ringway_shaping_overrides_total", "counter", "Overrides set by shaping rules.");
    x.sample("ringway_shaping_overrides_total", "", sum.shaping_triggered);
    // Every override in force (all destinations, not only the busiest):
    // its expiry as a Unix time.
    x.family("ringway_shaping_override_expiry_seconds", "gauge",
             "Overrides set by shaping rules and in force, by destination, rule, action and source: when each ends "
             "(Unix time).");
    for (const auto& f : cores)
        for (const auto& d : f.destinations)
            for (const auto& ov : d.overrides)
                x.sample("ringway_shaping_override_expiry_seconds",
                         fmt::format("destination=\"{}\",rule=\"{}\",action=\"{}\",source=\"{}\"", label(d.key),
                                     label(ov.rule), ov.action, label(ov.source)),
                         double(ov.until_ms) / 1000.0);
    x.family("ringway_delivery_reports_total", "counter", "Delivery status notifications queued.");
    x.sample("ringway_delivery_reports_total", "", sum.dsn);
    x.family("ringway_delivery_connections_total", "counter", "Outbound SMTP connections made.");
    x.sample("ringway_delivery_connections_total", "", sum.connections_out);
    auto per_dest = [&](const char* name, const char* type, const char* help, auto get) {
        x.family(name, type, help);
        for (const auto* d : dests)
            x.sample(name, fmt::format("destination=\"{}\"", label(d->key)), get(*d));
    };
    per_dest("ringway_destination_queued_recipients", "gauge", "Recipients queued (ready, waiting for retry, in flight).",
             [&](const auto& d) { return queued(&d); });
    per_dest("ringway_destination_connections_open", "gauge", "Outbound connections open.",
             [](const auto& d) { return d.connections; });
    per_dest("ringway_destination_connections_total", "counter", "Outbound connections made.",
             [](const auto& d) { return d.connections_made; });
    per_dest("ringway_destination_deliveries_total", "counter", "Recipients delivered.",
             [](const auto& d) { return d.delivered; });
    per_dest("ringway_destination_deferrals_total", "counter", "Recipients deferred (temporary failures).",
             [](const auto& d) { return d.deferred; });
    per_dest("ringway_destination_bounces_total", "counter", "Recipients bounced (permanent failures, expiry).",
             [](const auto& d) { return d.bounced; });
    per_dest("ringway_destination_attempts_total", "counter", "Recipient delivery attempts.",
             [](const auto& d) { return d.delivered + d.deferred + d.bounced; });
    x.family("ringway_destination_delivery_seconds", "histogram",
             "Per recipient, from a connection taking its message to the outcome.");
    for (const auto* d : dests) {
        const std::string l = label(d->key);
        uint64_t cum = 0;
        for (size_t i = 0; i < std::size(mta::delivery::k_latency_bounds); ++i) {
            cum += d->latency.counts[i];
            x.sample("ringway_destination_delivery_seconds_bucket",
                     fmt::format("destination=\"{}\",le=\"{}\"", l, mta::delivery::k_latency_bounds[i]), cum);
        }
        x.sample("ringway_destination_delivery_seconds_bucket", fmt::format("destination=\"{}\",le=\"+Inf\"", l),
                 d->latency.count);
        x.sample("ringway_destination_delivery_seconds_sum", fmt::format("destination=\"{}\"", l),
                 d->latency.sum_seconds);
        x.sample("ringway_destination_delivery_seconds_count", fmt::format("destination=\"{}\"", l), d->latency.count);
    }

    // Spool.
    const auto& geo = reg.geometry();
    const uint64_t total = uint64_t(geo.slots_per_shard) * geo.shard_count * geo.segment_bytes;
    x.family("ringway_spool_size_bytes", "gauge", "The spool's data area.");
    x.sample("ringway_spool_size_bytes", "", total);
    x.family("ringway_spool_free_bytes", "gauge", "Free segments of the spool, in bytes.");
    x.sample("ringway_spool_free_bytes", "", sum.spool_free_slots * uint64_t(geo.segment_bytes));
    x.family("ringway_spool_messages", "gauge", "Messages in the spool.");
    x.sample("ringway_spool_messages", "", sum.spool_messages);
    x.family("ringway_spool_batches_total", "counter", "Write batches made durable.");
    x.sample("ringway_spool_batches_total", "", sum.spool_batches);
    x.family("ringway_spool_records_total", "counter", "Records written.");
    x.sample("ringway_spool_records_total", "", sum.spool_records);
    x.family("ringway_spool_written_bytes_total", "counter", "Bytes written to the spool.");
    x.sample("ringway_spool_written_bytes_total", "", sum.spool_bytes_written);
    {
        rw::histogram commit{k_io_latency_bounds}, batch{k_batch_size_bounds};
        for (const auto& c : cores) {
            commit.merge(c.commit_seconds);
            batch.merge(c.batch_records);
        }
        x.family("ringway_spool_commit_seconds", "histogram",
                 "Time to make one write batch durable (what an acknowledgement waits for).");
        x.histogram("ringway_spool_commit_seconds", "", commit);
        x.family("ringway_spool_batch_records", "histogram", "Records per write batch (group commit).");
        x.histogram("ringway_spool_batch_records", "", batch);
    }

    // Runtime, per core.
    x.family("ringway_core_cpu_seconds_total", "counter", "CPU time of each reactor thread.");
    for (size_t c = 0; c < cores.size(); ++c)
        x.sample("ringway_core_cpu_seconds_total", fmt::format("core=\"{}\"", c), cores[c].cpu_seconds);
    x.family("ringway_core_loop_iterations_total", "counter", "Event loop iterations of each reactor.");
    for (size_t c = 0; c < cores.size(); ++c)
        x.sample("ringway_core_loop_iterations_total", fmt::format("core=\"{}\"", c), cores[c].loop_iterations);
    x.family("ringway_core_idle_seconds_total", "counter",
             "Time each reactor slept waiting for work; loop utilisation is 1 - rate(this).");
    for (size_t c = 0; c < cores.size(); ++c)
        x.sample("ringway_core_idle_seconds_total", fmt::format("core=\"{}\"", c), cores[c].idle_seconds);
    x.family("ringway_core_operations_in_flight", "gauge",
             "io_uring operations submitted and not yet completed (the ring's depth).");
    for (size_t c = 0; c < cores.size(); ++c)
        x.sample("ringway_core_operations_in_flight", fmt::format("core=\"{}\"", c), cores[c].in_flight);
    x.family("ringway_core_cross_core_queue_depth", "gauge",
             "Cross-core messages waiting for each core in the rings from the other cores.");
    for (size_t c = 0; c < cores.size(); ++c)
        x.sample("ringway_core_cross_core_queue_depth", fmt::format("core=\"{}\"", c), cores[c].inbox_depth);

    // DNS, per core's resolver, summed.
    net::resolver_stats dns;
    for (const auto& c : cores) {
        dns.queries_sent += c.dns.queries_sent;
        dns.cache_hits += c.dns.cache_hits;
        dns.cache_misses += c.dns.cache_misses;
        dns.failures_temporary += c.dns.failures_temporary;
        dns.cache_entries += c.dns.cache_entries;
        dns.latency_seconds.merge(c.dns.latency_seconds);
    }
    x.family("ringway_dns_queries_total", "counter", "Queries sent to the DNS servers.");
    x.sample("ringway_dns_queries_total", "", dns.queries_sent);
    x.family("ringway_dns_cache_hits_total", "counter", "Lookups answered from the cache.");
    x.sample("ringway_dns_cache_hits_total", "", dns.cache_hits);
    x.family("ringway_dns_cache_misses_total", "counter", "Lookups not in the cache.");
    x.sample("ringway_dns_cache_misses_total", "", dns.cache_misses);
    x.family("ringway_dns_failures_total", "counter", "Lookups that failed temporarily.");
    x.sample("ringway_dns_failures_total", "", dns.failures_temporary);
    x.family("ringway_dns_cache_entries", "gauge", "Entries in the DNS caches.");
    x.sample("ringway_dns_cache_entries", "", dns.cache_entries);
    x.family("ringway_dns_query_seconds", "histogram", "Time from a query sent to its answer (or failure).");
    x.histogram("ringway_dns_query_seconds", "", dns.latency_seconds);

    // Memory.
    uint64_t rss = 0;
    if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
        unsigned long size = 0, pages = 0;
        if (std::fscanf(f, "%lu %lu", &size, &pages) == 2)
            rss = uint64_t(pages) * uint64_t(::sysconf(_SC_PAGESIZE));
        std::fclose(f);
    }
    x.family("ringway_conservation_level", "gauge", "Resource conservation: 0 normal, 1 tarpit, 2 refuse.");
    x.sample("ringway_conservation_level", "", reg.conservation_level);
    x.family("ringway_resident_memory_bytes", "gauge", "Resident set size of the daemon.");
    x.sample("ringway_resident_memory_bytes", "", rss);
    return x.take();
}

std::string http_response(int code, std::string_view reason, std::string_view type, std::string_view body) {
    return fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                       code, reason, type, body.size(), body);
}

task<void> serve(metrics_server* m, int fd) {
    net::tcp_stream s(fd);
    std::string req;
    char buf[2048];
    const auto deadline = std::chrono::steady_clock::now() + k_request_timeout;
    while (req.find("\r\n\r\n") == std::string::npos && req.find("\n\n") == std::string::npos) {
        auto left = deadline - std::chrono::steady_clock::now();
        if (left <= std::chrono::nanoseconds(0) || req.size() > k_max_request) {
            std::string r = http_response(req.size() > k_max_request ? 431 : 408,
                                          req.size() > k_max_request ? "Request Header Fields Too Large"
                                                                     : "Request Timeout",
                                          "text/plain", "bad request\n");
            co_await s.send_all(r.data(), r.size(), {.timeout = std::chrono::seconds(5)});
            co_return;
        }
        int n = co_await s.recv(buf, sizeof buf, {.timeout = left});
        if (n <= 0)
            co_return;
        req.append(buf, size_t(n));
    }
    std::string response;
    const std::string_view line = std::string_view(req).substr(0, req.find_first_of("\r\n"));
    if (!line.starts_with("GET ") && !line.starts_with("HEAD ")) {
        response = http_response(405, "Method Not Allowed", "text/plain", "only GET /metrics\n");
    } else {
        std::string_view rest = line.substr(line.find(' ') + 1);
        std::string_view path = rest.substr(0, rest.find(' '));
        if (path.find('?') != std::string_view::npos)
            path = path.substr(0, path.find('?'));
        if (path != "/metrics") {
            response = http_response(404, "Not Found", "text/plain", "the metrics are at /metrics\n");
        } else {
            auto t = m->render();
            std::string body = co_await std::move(t);
            response = http_response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
            if (line.starts_with("HEAD "))
                response.resize(response.find("\r\n\r\n") + 4);
        }
    }
    co_await s.send_all(response.data(), response.size(), {.timeout = std::chrono::seconds(10)});
}
}  // namespace

result<std::unique_ptr<metrics_server>, std::string> metrics_server::open(const config& cfg, registry* reg) {
    auto hp = parse_next_hop(cfg.metrics.listen, 9425);
    auto a = hp ? net::address::parse(hp->first, hp->second) : std::nullopt;
    if (!a)
        return unexpected(fmt::format("metrics.listen {} is not an IP address and port", cfg.metrics.listen));
    auto fd = net::listen_tcp(*a, 64, false);
    if (!fd)
        return unexpected(fmt::format("metrics: {}", fd.error()));
    std::unique_ptr<metrics_server> m(new metrics_server());
    m->_fd = fd.value();
    m->_reg = reg;
    m->_cfg = &cfg;
    return m;
}

metrics_server::~metrics_server() {
    if (_fd >= 0)
        ::close(_fd);
}

task<std::string> metrics_server::render() {
    std::vector<core_figures> cores;
    for (unsigned c = 0; c < _reg->cores(); ++c) {
        auto t = _reg->call(c, [](core_slot& s) { return gather(s); });
        cores.push_back(co_await std::move(t));
    }
    co_return format(*_cfg, *_reg, cores);
}

task<void> metrics_server::run() {
    net::acceptor acc(_fd, 256);
    auto stopper = [](net::acceptor* a) -> task<void> {
        co_await reactor::local().stop_requested();
        a->stop();
    };
    spawn(stopper(&acc));
    gate requests;
    for (;;) {
        auto a = co_await acc.accept();
        if (!a) {
            if (a.error().code == ECANCELED)
                break;
            lg.warn("accept failed: {}", a.error().message());
            co_await io::sleep(std::chrono::milliseconds(100));
            continue;
        }
        if (requests.count() >= 64) {
            ::close(a.value().fd);  // a flood of scrapers: the rest wait for the next interval
            continue;
        }
        auto one = [](gate* g, metrics_server* m, int fd) -> task<void> {
            gate::holder h(*g);
            auto t = serve(m, fd);
            co_await std::move(t);
        };
        spawn(one(&requests, this, a.value().fd));
    }
    co_await acc.stopped();
    co_await requests.wait_idle();
}

}  // namespace rw::admin
