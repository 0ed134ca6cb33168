// The delivery service: per-destination queues owned by one core each (a
// destination's owner is chosen by hash), mail handed between cores, and
// the timers that release deferred mail. See delivery.hh; the parts are
// listed in queue_impl.hh.
#include "mta/delivery/queue_impl.hh"

#include <algorithm>
#include <atomic>

#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/smp/smp.hh"

namespace rw::mta::delivery {

namespace {
logger lg("delivery");

constexpr unsigned k_max_cores = 1024;
std::atomic<service*> g_services[k_max_cores];
}  // namespace

namespace detail {

// Entries posted to a core before its service exists (it starts as soon as
// its own shard is recovered; other cores may be faster). Touched only on
// that core.
std::vector<std::pair<std::string, entry>>& early_posts() {
    thread_local std::vector<std::pair<std::string, entry>> v;
    return v;
}

// A message's parameters as the session stored them. Unreadable bytes (a
// damaged record passes its CRC only by accident, so this is a bug or a
// spool from elsewhere) are logged and read as defaults: the message is
// still delivered, failures still reported.
envelope_params read_params(uint64_t id, std::string_view bytes, size_t rcpts) {
    if (auto p = decode_params(bytes, rcpts))
        return std::move(*p);
    lg.error("mid={} has unreadable envelope parameters ({} bytes); delivering with defaults", mid_string(id),
             bytes.size());
    envelope_params d;
    d.rcpts.resize(rcpts);
    return d;
}

}  // namespace detail

const route* find_route(const std::vector<route>& routes, std::string_view domain) {
    const route* best = nullptr;
    size_t best_len = 0;
    for (const auto& r : routes) {
        if (r.domain == domain)
            return &r;
        if (r.domain == "*") {
            if (!best)
                best = &r;
        } else if (r.domain.starts_with("*.")) {
            std::string_view suffix = std::string_view(r.domain).substr(1);  // ".example.test"
            if (domain.size() > suffix.size() && domain.ends_with(suffix) && suffix.size() + 1 > best_len) {
                best = &r;
                best_len = suffix.size() + 1;
            }
        }
    }
    return best;
}

std::string service::impl::key_for(std::string_view domain) const {
    if (const route* r = find_route(o->routes, domain))
        return fmt::format("route:{}", r->domain);
    return fmt::format("mx:{}", domain);
}

void service::impl::queue_message(fs::shard* sh, uint64_t id) {
    auto v = sh->find(id);
    if (!v)
        return;
    std::map<std::string, entry> by_key;
    const int64_t now = now_ms();
    bool reports_due = false;
    for (uint32_t i = 0; i < v->rcpts.size(); ++i) {
        const auto& st = v->rcpts[i];
        if (is_final(st.status)) {
            reports_due |= (st.flags & k_report_due) != 0;
            continue;
        }
        std::string key = key_for(domain_of(v->env.rcpts[i]));
        auto& e = by_key[key];
        e.origin = core;
        e.shard = sh;
        e.id = id;
        e.rcpts.push_back(i);
        e.attempts = std::max(e.attempts, st.attempts);
        e.received_unix = v->env.received_unix;
        e.due_ms = std::max(e.due_ms, st.status == fs::rcpt_status::deferred ? st.next_attempt_unix * 1000 : now);
    }
    // Every recipient final, yet the message is still here: a crash came
    // after its last state and before its removal. Its reports were
    // queued before those states, so all that is left is the removal.
    if (reports_due)
        spawn(retry_reports(this, sh, id));
    if (by_key.empty()) {
        if (!reports_due)
            spawn(remove_left_over(this, sh, id));
        return;
    }
    for (auto& [key, e] : by_key) {
        const unsigned owner = owner_of(key);
        if (owner == core)
            accept(key, std::move(e));
        else
            spawn(post(this, owner, key, std::move(e)));
    }
}

task<void> service::impl::remove_left_over(impl* self, fs::shard* sh, uint64_t id) {
    gate::holder h(self->posts);
    auto t = remove_finished(sh, id);
    co_await std::move(t);
}

task<void> service::impl::post(impl* self, unsigned owner, std::string key, entry e) {
    gate::holder h(self->posts);
    // (The callable is bound to a local first: g++ 12 mishandles
    // class-type temporaries in the operand of co_await.)
    auto fn = [key = std::move(key), e = std::move(e)]() mutable {
        if (service* s = service::local())
            s->_i->accept(key, std::move(e));
        else
            early_posts().emplace_back(std::move(key), std::move(e));  // this core is still recovering
    };
    auto t = submit_to(owner, std::move(fn));
    co_await std::move(t);
}

destination* service::impl::dest_for(const std::string& key, const entry& e) {
    auto it = dests.find(key);
    if (it != dests.end())
        return it->second.get();
    auto d = std::make_unique<destination>();
    d->key = key;
    if (key.starts_with("route:")) {
        std::string pattern = key.substr(6);
        for (const auto& r : o->routes)
            if (r.domain == pattern)
                d->rt = &r;
    } else {
        d->domain = key.substr(3);
    }
    (void)e;
    auto* p = d.get();
    dests.emplace(key, std::move(d));
    return p;
}

void service::impl::accept(const std::string& key, entry e) {
    destination* d = dest_for(key, e);
    if (e.due_ms > now_ms() + 50) {
        deferred.emplace(e.due_ms, std::make_pair(d, std::move(e)));
        return;
    }
    d->ready.push_back(std::move(e));
    kick(d);
}

int64_t service::impl::rate_wait_ms(destination* d, int64_t now) {
    if (!o->max_messages_per_minute)
        return 0;
    while (!d->sent_ms.empty() && d->sent_ms.front() <= now - 60'000)
        d->sent_ms.pop_front();
    if (d->sent_ms.size() < o->max_messages_per_minute)
        return 0;
    return std::max<int64_t>(1, d->sent_ms.front() + 60'000 - now);
}

void service::impl::kick(destination* d) {
    const int64_t now = now_ms();
    // No new connection while the rate limit holds the destination back:
    // the timer loop kicks it again once a send is allowed.
    if (rate_wait_ms(d, now) > 0 && d->active > 0)
        return;
    if (rate_wait_ms(d, now) > 5'000)
        return;
    // An idle connection takes the next message before any new one is
    // opened (it counts in active, so the spawning below allows for it);
    // none is woken while the destination is paused.
    for (size_t woken = 0; now >= d->paused_until_ms && !d->idle.empty() && woken < d->ready.size(); ++woken) {
        cancel_token* t = d->idle.back();
        d->idle.pop_back();
        t->cancel();
    }
    while (!stopping && !d->ready.empty() && d->active < o->max_connections_per_destination &&
           now >= d->paused_until_ms && d->active < d->ready.size()) {
        d->active++;
        spawn(worker(this, d));
    }
}

task<void> service::impl::timers() {
    while (!stopping) {
        const int64_t now = now_ms();
        while (!deferred.empty() && deferred.begin()->first <= now) {
            auto node = deferred.extract(deferred.begin());
            destination* d = node.mapped().first;
            d->ready.push_back(std::move(node.mapped().second));
        }
        for (auto& [k, d] : dests)
            if (!d->ready.empty())
                kick(d.get());
        co_await io::sleep(std::chrono::milliseconds(100));
    }
}


service::service(const options* o, unsigned core, unsigned cores, std::vector<fs::shard*> shards, net::resolver* dns)
    : _i(std::make_unique<impl>()) {
    _i->o = o;
    _i->core = core;
    _i->cores = cores;
    _i->shards = std::move(shards);
    _i->dns = dns;
    net::tls_context::client_config cc;
    cc.verify_peer = false;
    if (auto t = net::tls_context::client(cc))
        _i->tls = std::make_unique<net::tls_context>(std::move(t.value()));
    else
        lg.warn("no TLS for delivery: {}", t.error());
    RW_ASSERT(core < k_max_cores);
    g_services[core].store(this);
    // What other cores sent for our destinations while our shard was
    // still being recovered.
    for (auto& [key, e] : std::exchange(early_posts(), {}))
        _i->accept(key, std::move(e));
}

service::~service() {
    g_services[_i->core].store(nullptr);
}

service* service::local() { return g_services[this_core()].load(std::memory_order_relaxed); }

void service::queued(fs::shard* sh, uint64_t id) { _i->queue_message(sh, id); }

void service::recover() {
    for (fs::shard* sh : _i->shards)
        for (uint64_t id : sh->live_ids())
            _i->queue_message(sh, id);
}

task<void> service::run() {
    co_await _i->timers();
    co_await _i->workers.wait_idle();
    co_await _i->posts.wait_idle();
}

void service::stop() {
    _i->stopping = true;
    // Idle connections QUIT now rather than at the end of their wait.
    for (auto& [k, d] : _i->dests)
        for (cancel_token* t : std::exchange(d->idle, {}))
            t->cancel();
}

const service::counters& service::stats() const { return _i->c; }

}  // namespace rw::mta::delivery
