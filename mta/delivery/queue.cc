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

// The calling core's service. Every core constructs its service before any
// core queues mail (the daemon's start-up barrier), so a post always finds
// its owner's.
thread_local service* t_service = nullptr;
}  // namespace

namespace detail {

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

bool detail::valid_next_hop(std::string_view hop) {
    const size_t colon = hop.rfind(':');
    if (colon == 0 || colon == std::string_view::npos || colon + 1 == hop.size() || hop.size() - colon > 6)
        return false;
    unsigned port = 0;
    for (char c : hop.substr(colon + 1)) {
        if (c < '0' || c > '9')
            return false;
        port = port * 10 + unsigned(c - '0');
    }
    return port > 0 && port < 65536;
}

const pool* find_pool(const options& o, std::string_view name) {
    for (const auto& p : o.pools)
        if (p.name == name)
            return &p;
    return nullptr;
}

std::string service::impl::key_for(std::string_view domain, std::string_view msg_pool) const {
    const route* r = find_route(o->routes, domain);
    std::string key = r && !r->hosts.empty() ? fmt::format("route:{}", r->domain) : fmt::format("mx:{}", domain);
    std::string_view p = !msg_pool.empty() ? msg_pool : r && !r->pool.empty() ? std::string_view(r->pool)
                                                                                : std::string_view(o->default_pool);
    if (!p.empty())
        key += fmt::format("#{}", p);
    return key;
}

std::string_view detail::key_pool(std::string_view key) {
    key = key.substr(0, key.find('!'));
    const size_t hash = key.find('#');
    return hash == std::string_view::npos ? std::string_view() : key.substr(hash + 1);
}

std::string_view detail::key_base(std::string_view key) {
    return key.substr(0, std::min(key.find('#'), key.find('!')));
}

std::string_view to_string(tls_mode m) {
    switch (m) {
    case tls_mode::none: return "none";
    case tls_mode::opportunistic: return "opportunistic";
    case tls_mode::required: return "required";
    case tls_mode::verify: return "verify";
    }
    return "?";
}

tls_mode service::impl::tls_mode_of(const destination* d) const {
    if (d->requiretls)
        return tls_mode::verify;
    const route* r = d->rt && !key_base(d->key).starts_with("redirect:") ? d->rt
                     : d->domain.empty()                                  ? nullptr
                                                                          : find_route(o->routes, d->domain);
    if (r && r->tls)
        return *r->tls;
    return o->starttls ? o->tls : tls_mode::none;
}

const net::tls_context* service::impl::verifying_tls() {
    if (!tls_verify || tls_verify_ca != o->tls_ca_file) {
        net::tls_context::client_config cc;
        cc.verify_peer = true;
        cc.ca_file = o->tls_ca_file;
        auto t = net::tls_context::client(cc);
        if (!t) {
            lg.warn("no verifying TLS for delivery (ca file {}): {}", o->tls_ca_file, t.error());
            return nullptr;
        }
        tls_verify = std::make_unique<net::tls_context>(std::move(t.value()));
        tls_verify_ca = o->tls_ca_file;
    }
    return tls_verify.get();
}

void service::impl::queue_message(fs::shard* sh, uint64_t id) {
    auto v = sh->find(id);
    if (!v)
        return;
    std::map<std::string, entry> by_key;
    const int64_t now = now_ms();
    bool reports_due = false, quarantined = false;
    // A content rule's route: every recipient to that host ("redirect:"
    // destinations, as the shell's redirect makes, but kept in the spool).
    // A content rule's or mail flow policy's pool: "#POOL" on the key.
    // REQUIRETLS mail (RFC 8689) has destinations of its own ("!requiretls"):
    // their connections verify the server and need it to offer REQUIRETLS.
    std::string hop, msg_pool;
    bool requiretls = false;
    if (!v->env.params.empty()) {
        const envelope_params dp = read_params(id, v->env.params, v->rcpts.size());
        requiretls = dp.requiretls;
        if (valid_next_hop(dp.next_hop))
            hop = "redirect:" + dp.next_hop;
        else if (!dp.next_hop.empty())
            lg.error("mid={} next hop \"{}\" is not HOST:PORT; delivered as usual", mid_string(id), dp.next_hop);
        msg_pool = dp.pool;
        if (!hop.empty() && !dp.pool.empty())
            hop += "#" + dp.pool;
        else if (!hop.empty() && !o->default_pool.empty())
            hop += "#" + o->default_pool;
    }
    for (uint32_t i = 0; i < v->rcpts.size(); ++i) {
        const auto& st = v->rcpts[i];
        if (is_final(st.status)) {
            reports_due |= (st.flags & k_report_due) != 0;
            continue;
        }
        if (st.flags & k_quarantined) {
            quarantined = true;
            continue;
        }
        std::string key = hop.empty() ? key_for(domain_of(v->env.rcpts[i]), msg_pool) : hop;
        if (requiretls)
            key += "!requiretls";
        auto& e = by_key[key];
        e.origin = core;
        e.shard = sh;
        e.id = id;
        e.rcpts.push_back(i);
        e.attempts = std::max(e.attempts, st.attempts);
        e.received_unix = v->env.received_unix;
        e.released = e.released || (st.flags & k_released);
        e.due_ms = std::max(e.due_ms, st.status == fs::rcpt_status::deferred ? st.next_attempt_unix * 1000 : now);
    }
    // Every recipient final, yet the message is still here: a crash came
    // after its last state and before its removal. Its reports were
    // queued before those states, so all that is left is the removal.
    if (reports_due)
        spawn(retry_reports(this, sh, id));
    if (quarantined)
        hold(sh, id, *v);
    if (by_key.empty()) {
        if (quarantined)
            return;
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
        service* s = service::local();
        RW_ASSERT(s, "delivery entry posted to core {} before its service exists", this_core());
        s->_i->accept(key, std::move(e));
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
    d->pool = key_pool(key);
    d->requiretls = key.ends_with("!requiretls");
    const std::string_view base = key_base(key);
    if (base.starts_with("route:")) {
        std::string_view pattern = base.substr(6);
        for (const auto& r : o->routes)
            if (r.domain == pattern)
                d->rt = &r;
    } else if (base.starts_with("redirect:")) {
        d->rt = redirect_route(key);
    } else {
        d->domain = base.substr(3);
    }
    d->suspended = suspended_domains.contains("") || std::any_of(suspended_domains.begin(), suspended_domains.end(),
                                                                  [&](const std::string& s) { return matches(d.get(), s); });
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

namespace {
// Milliseconds until a sliding one-minute window of sends has room.
int64_t window_wait(std::deque<int64_t>& sent, unsigned limit, int64_t now) {
    if (!limit)
        return 0;
    while (!sent.empty() && sent.front() <= now - 60'000)
        sent.pop_front();
    if (sent.size() < limit)
        return 0;
    return std::max<int64_t>(1, sent.front() + 60'000 - now);
}
}  // namespace

int64_t service::impl::rate_wait_ms(destination* d, int64_t now) {
    return window_wait(d->sent_ms, rate_limit(d), now);
}

const pool* service::impl::pool_of(const destination* d) const {
    return d->pool.empty() ? nullptr : find_pool(*o, d->pool);
}

unsigned service::impl::conn_limit(const destination* d) const {
    unsigned limit = d->conn_cap ? std::min(d->conn_cap, o->max_connections_per_destination)
                                 : o->max_connections_per_destination;
    if (const auto* ov = overridden(d, shaping_rule::action_t::connections, now_ms()))
        limit = std::min(limit, ov->value);
    if (const pool* p = pool_of(d)) {
        unsigned sum = 0;
        for (const auto& m : p->members) {
            const unsigned l = o->sources[m.source].max_connections_per_destination;
            if (!l)
                return limit;
            sum += l;
        }
        limit = std::min(limit, sum);
    }
    return limit;
}


int64_t service::impl::provider_wait_ms(const destination* d, int64_t now) const {
    const provider* p = provider_of(d);
    return p ? shared().hour_wait_ms(provider_key(*p), p->max_messages_per_hour, now) : 0;
}

std::string service::impl::warmup_group(const source& s, const destination* d) const {
    if (s.warmup.empty())
        return {};
    for (const auto& w : o->warmups)
        if (w.name == s.warmup)
            return w.group_of(d->provider);
    return {};
}

int64_t service::impl::warmup_wait_ms(const source& s, const destination* d, int64_t now) const {
    if (s.warmup.empty())
        return 0;
    for (const auto& w : o->warmups) {
        if (w.name != s.warmup)
            continue;
        const std::string group = w.group_of(d->provider);
        const int64_t today = shared_state::day_of(now);
        const unsigned cap = w.cap(group, today - s.warmup_start_day + 1);
        if (!cap || shared().daily(s.name, group, today) < cap)
            return 0;
        return (today + 1) * 86'400'000 - now;  // the next UTC day
    }
    return 0;
}

int64_t service::impl::source_wait_ms(destination* d, const source& s, int64_t now) {
    return std::max(window_wait(d->sources[s.name].sent_ms, s.max_messages_per_minute, now),
                    warmup_wait_ms(s, d, now));
}

int64_t service::impl::pool_wait_ms(destination* d, int64_t now) {
    const pool* p = pool_of(d);
    if (!p)
        return 0;
    int64_t best = -1;
    // The pool's sources, then its overflow pool's (one level).
    for (int level = 0; level < 2 && p; ++level) {
        for (const auto& m : p->members) {
            int64_t w = source_wait_ms(d, o->sources[m.source], now);
            for (const auto& ov : d->overrides)
                if (ov.source == o->sources[m.source].name && ov.until_ms > now)
                    w = std::max(w, ov.until_ms - now);
            best = best < 0 ? w : std::min(best, w);
        }
        p = p->overflow.empty() ? nullptr : find_pool(*o, p->overflow);
    }
    return std::max<int64_t>(best, 0);
}

const source* service::impl::pick_source(destination* d, int family, bool* busy) {
    *busy = false;
    const pool* p = pool_of(d);
    const int64_t now = now_ms();
    for (int level = 0; level < 2 && p; ++level) {
        // Eligible: the address family fits and the connection limit has
        // room; those the rate limit holds briefly only when no other is
        // free, and those held for long (a warm-up cap) never.
        for (bool rate_free : {true, false}) {
            int64_t total = 0;
            const pool::member* best = nullptr;
            destination::source_state* best_st = nullptr;
            for (const auto& m : p->members) {
                const source& s = o->sources[m.source];
                auto& st = d->sources[s.name];
                if (s.addr.family() != family)
                    continue;
                *busy = true;
                if (source_suspended(d, s, now))
                    continue;
                if (s.max_connections_per_destination && st.active >= s.max_connections_per_destination)
                    continue;
                const int64_t wait = source_wait_ms(d, s, now);
                if (rate_free ? wait > 0 : wait > 5'000)
                    continue;
                st.wrr += m.weight;
                total += m.weight;
                if (!best || st.wrr > best_st->wrr) {
                    best = &m;
                    best_st = &st;
                }
            }
            if (best) {
                best_st->wrr -= total;
                return &o->sources[best->source];
            }
        }
        p = p->overflow.empty() ? nullptr : find_pool(*o, p->overflow);
    }
    return nullptr;
}

void service::impl::kick(destination* d) {
    const int64_t now = now_ms();
    // A bounce override fails what is ready, once at a time, and opens
    // no connection meanwhile.
    if (overridden(d, shaping_rule::action_t::bounce, now)) {
        if (!d->ready.empty() && !d->bouncing) {
            d->bouncing = true;
            spawn(bounce_ready(this, d));
        }
        return;
    }
    // A connection just found no source or provider slot free: the timer
    // loop tries again, not the connection's end (that would loop).
    if (now < d->no_slot_until_ms)
        return;
    // No new connection while the rate limit (the destination's, or that
    // of every source of its pool) holds it back: the timer loop kicks
    // it again once a send is allowed.
    const int64_t rate_wait = std::max({rate_wait_ms(d, now), pool_wait_ms(d, now), provider_wait_ms(d, now)});
    if (rate_wait > 0 && d->active > 0)
        return;
    if (rate_wait > 5'000)
        return;
    // An idle connection takes the next message before any new one is
    // opened (it counts in active, so the spawning below allows for it);
    // none is woken while the destination is paused.
    for (size_t woken = 0; !held(d, now) && !d->idle.empty() && woken < d->ready.size(); ++woken) {
        cancel_token* t = d->idle.back();
        d->idle.pop_back();
        t->cancel();
    }
    // A provider at its connection limit (every core's connections to
    // it together) gets none either; the timer loop tries again.
    const provider* pv = provider_of(d);
    auto provider_full = [&] {
        return pv && pv->max_connections && shared().connections(provider_key(*pv)) >= pv->max_connections;
    };
    // A worker runs at once until it first waits: one that ends without
    // connecting (no source, no provider slot) has set no_slot_until_ms,
    // which ends this loop too.
    while (!stopping && !d->ready.empty() && d->active < conn_limit(d) && !held(d, now) &&
           d->active < d->ready.size() && !provider_full() && now >= d->no_slot_until_ms) {
        d->active++;
        spawn(worker(this, d));
    }
}

entry service::impl::take(destination* d) {
    entry e = std::move(d->ready.front());
    d->ready.pop_front();
    e.taken_ms = now_ms();
    d->in_flight_rcpts += e.rcpts.size();
    d->in_flight_msgs++;
    return e;
}

void service::impl::untake(destination* d, const entry& e) {
    d->in_flight_rcpts -= std::min<uint64_t>(d->in_flight_rcpts, e.rcpts.size());
    d->in_flight_msgs -= std::min<uint64_t>(d->in_flight_msgs, 1);
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
        if (now - last_sweep_ms >= 1000) {
            last_sweep_ms = now;
            sweep_quarantines(now);
            expire_overrides(now);
        }
        save_shared(now, false);
        co_await io::sleep(std::chrono::milliseconds(100));
    }
    save_shared(now_ms(), true);
}

void service::impl::save_shared(int64_t now, bool force) {
    // One writer of the shared file: core 0.
    if (core != 0 || !o->shared)
        return;
    if (auto err = o->shared->save(now, force); !err.empty())
        lg.warn("warm-up counts: {}", err);
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
    RW_ASSERT(!t_service, "one delivery service per core");
    t_service = this;
}

service::~service() {
    t_service = nullptr;
}

service* service::local() { return t_service; }

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
    // Every core writes the shared counts once its own connections are
    // done (one writer at a time): the last one leaves the final counts.
    if (_i->o->shared)
        if (auto err = _i->o->shared->save(detail::now_ms(), true); !err.empty())
            lg.warn("warm-up counts: {}", err);
}

void service::stop() {
    _i->stopping = true;
    // Idle connections QUIT now rather than at the end of their wait.
    for (auto& [k, d] : _i->dests)
        for (cancel_token* t : std::exchange(d->idle, {}))
            t->cancel();
}

const service::counters& service::stats() const { return _i->c; }

bool service::impl::matches(const destination* d, std::string_view domain) {
    if (domain.empty())
        return true;
    std::string_view k = key_base(d->key);
    size_t colon = k.find(':');
    return lower(k.substr(colon + 1)) == lower(domain);
}

std::vector<destination_view> service::destinations() const {
    std::unordered_map<const destination*, std::pair<uint64_t, int64_t>> waiting;  // rcpts, oldest
    for (const auto& [due, de] : _i->deferred) {
        auto& w = waiting[de.first];
        w.first += de.second.rcpts.size();
        if (!w.second || de.second.received_unix < w.second)
            w.second = de.second.received_unix;
    }
    std::vector<destination_view> out;
    out.reserve(_i->dests.size());
    for (const auto& [key, d] : _i->dests) {
        destination_view v;
        v.key = key;
        v.core = _i->core;
        for (const auto& e : d->ready) {
            v.ready_rcpts += e.rcpts.size();
            ++v.ready_messages;
            if (e.attempts == 0)
                v.never_attempted_rcpts += e.rcpts.size();
            if (!v.oldest_received_unix || e.received_unix < v.oldest_received_unix)
                v.oldest_received_unix = e.received_unix;
        }
        if (auto it = waiting.find(d.get()); it != waiting.end()) {
            v.deferred_rcpts = it->second.first;
            if (!v.oldest_received_unix || it->second.second < v.oldest_received_unix)
                v.oldest_received_unix = it->second.second;
        }
        v.in_flight_rcpts = d->in_flight_rcpts;
        v.in_flight_messages = d->in_flight_msgs;
        v.connections = d->active;
        v.idle_connections = unsigned(d->idle.size());
        v.paused_until_ms = d->paused_until_ms;
        v.connection_limit = _i->conn_limit(d.get());
        v.rate_limit = _i->rate_limit(d.get());
        v.backed_off = d->conn_cap || d->rate_cap;
        v.pool = d->pool;
        v.provider = d->provider;
        for (const auto& ov : d->overrides)
            v.overrides.push_back({ov.rule_name, std::string(to_string(ov.action)), ov.source, ov.value, ov.since_ms,
                                   ov.until_ms, ov.reply});
        for (const auto& [name, st] : d->sources)
            v.sources.push_back({name, st.active, st.connections});
        v.suspended = d->suspended;
        v.last_error = d->last_error;
        v.last_error_ms = d->last_error_ms;
        v.last_connection_ms = d->last_connection_ms;
        v.last_host = d->last_host;
        v.last_ip = d->last_ip;
        v.last_tls = d->last_tls;
        v.delivered = d->delivered;
        v.deferred = d->deferred;
        v.bounced = d->bounced;
        v.connections_made = d->connections;
        v.latency = d->latency;
        v.mean_latency_ms = d->latency.count ? uint64_t(d->latency.sum_seconds * 1000.0 / double(d->latency.count)) : 0;
        out.push_back(std::move(v));
    }
    return out;
}

size_t service::suspend(std::string_view domain) {
    _i->suspended_domains.insert(lower(domain));
    size_t n = 0;
    for (auto& [k, d] : _i->dests)
        if (impl::matches(d.get(), domain) && !d->suspended) {
            d->suspended = true;
            ++n;
            for (cancel_token* t : std::exchange(d->idle, {}))
                t->cancel();  // idle connections QUIT
        }
    return n;
}

void service::set_options(const options* o) {
    _i->o = o;
    for (auto& entry : _i->dests) {
        destination* d = entry.second.get();
        if (key_base(d->key).starts_with("route:")) {
            std::string_view pattern = key_base(d->key).substr(6);
            for (const auto& r : o->routes)
                if (r.domain == pattern)
                    d->rt = &r;
        }
        // A raised connection limit opens connections now, not at the next message.
        _i->kick(d);
    }
}

size_t service::resume(std::string_view domain) {
    if (domain.empty())
        _i->suspended_domains.clear();
    else
        _i->suspended_domains.erase(lower(domain));
    const bool all = _i->suspended_domains.contains("");
    size_t n = 0;
    for (auto& entry : _i->dests) {
        destination* d = entry.second.get();  // (clang 14 cannot capture a structured binding)
        if (!d->suspended || all)
            continue;
        if (std::any_of(_i->suspended_domains.begin(), _i->suspended_domains.end(),
                        [&](const std::string& s) { return impl::matches(d, s); }))
            continue;
        d->suspended = false;
        ++n;
        if (!d->ready.empty())
            _i->kick(d);
    }
    return n;
}

size_t service::deliver_now(std::string_view domain) {
    size_t n = 0;
    for (auto it = _i->deferred.begin(); it != _i->deferred.end();) {
        destination* d = it->second.first;
        if (!impl::matches(d, domain)) {
            ++it;
            continue;
        }
        auto node = _i->deferred.extract(it++);
        d->ready.push_back(std::move(node.mapped().second));
        ++n;
    }
    for (auto& [k, d] : _i->dests)
        if (impl::matches(d.get(), domain)) {
            d->paused_until_ms = 0;
            if (!d->ready.empty())
                _i->kick(d.get());
        }
    return n;
}

}  // namespace rw::mta::delivery
