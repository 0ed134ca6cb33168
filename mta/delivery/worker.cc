// Connection workers: one connection to a destination's next hop carries
// its ready mail, keeps idle a while when the queue runs dry, and hands
// each transaction's replies to the outcomes.
#include "mta/delivery/queue_impl.hh"

#include <algorithm>

#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/smp/smp.hh"
#include "mta/smtp/trace_counter.hh"

namespace rw::mta::delivery {

namespace {
logger lg("delivery");

// Received: headers in a stored message's header section (ours included).
unsigned received_headers(std::string_view message) {
    smtp::trace_counter tc;
    size_t end = message.find("\r\n\r\n");
    tc.feed(message.substr(0, end == std::string_view::npos ? message.size() : end + 4));
    return tc.received();
}

}  // namespace

void service::impl::pause(destination* d, const std::string& why) {
    d->paused_until_ms = now_ms() + o->destination_pause.count();
    d->last_error = why;
    d->last_error_ms = now_ms();
    lg.info("destination={} paused for {} ms: {}", d->key, o->destination_pause.count(), why);
    // Idle connections to it QUIT now rather than send once woken.
    for (cancel_token* t : std::exchange(d->idle, {}))
        t->cancel();
}

task<void> service::impl::worker(impl* self, destination* d) {
    gate::holder h(self->workers);
    auto t = self->work(d);
    co_await std::move(t);
    d->active--;
    if (!d->ready.empty())
        self->kick(d);
}

task<void> service::impl::work(destination* d) {
    auto th = next_hops(d);
    auto hr = co_await std::move(th);
    if (hr.hops.empty()) {
        if (hr.error.code / 100 == 4)
            pause(d, hr.error.text);
        auto t = fail_all(d, hr.error, "");
        co_await std::move(t);
        co_return;
    }
    // The provider: that of the best next hop's name. A provider at its
    // connection limit (all cores together) gets no new connection: the
    // mail stays ready and the timer loop kicks it again.
    {
        const provider* pv = find_provider(*o, hr.hops.front().name);
        d->provider = pv ? pv->name : std::string();
    }
    struct provider_slot {
        shared_state* s = nullptr;
        std::string key;
        ~provider_slot() {
            if (s)
                s->release(key);
        }
    } pslot;
    if (const provider* pv = provider_of(d)) {
        std::string key = provider_key(*pv);
        if (!shared().acquire(key, pv->max_connections)) {
            d->no_slot_until_ms = now_ms() + 200;
            co_return;
        }
        pslot.s = &shared();
        pslot.key = std::move(key);
    }
    std::optional<smtp_client> cl;
    std::string host, ip, why;
    // The source this connection comes from (when d's mail has a pool):
    // counted in its state from the pick until the connection ends.
    const source* src = nullptr;
    destination::source_state* sst = nullptr;
    auto drop_source = [&] {
        if (sst)
            sst->active--;
        src = nullptr;
        sst = nullptr;
    };
    const pool* pl = pool_of(d);
    if (!d->pool.empty() && !pl)
        lg.warn("destination={} pool {} is not configured (removed by a commit?): connecting from the system's "
                "address",
                d->key, d->pool);
    // How the hops failed: a temporary failure anywhere keeps REQUIRETLS
    // mail queued; only every reachable host refusing it returns it.
    bool sources_busy = false, tried = false, tls_failed = false, requiretls_refused = false, other_failure = false;
    for (size_t hi = 0; hi < hr.hops.size(); ++hi) {
        const auto& hp = hr.hops[hi];
        drop_source();
        if (pl) {
            bool busy = false;
            src = pick_source(d, hp.addr.family(), &busy);
            sources_busy = sources_busy || busy;
            if (!src) {
                other_failure = true;
                why = fmt::format("{}[{}]: no source of pool {} can connect to it (address family, or every "
                                  "source at its connection limit)",
                                  hp.name, hp.addr.to_string(), pl->name);
                continue;
            }
            sst = &d->sources[src->name];
            sst->active++;
        }
        tried = true;
        auto tc = net::connect_tcp(hp.addr, o->connect_timeout, src ? &src->addr : nullptr);
        auto conn = co_await std::move(tc);
        if (!conn) {
            other_failure = true;
            why = src ? fmt::format("connect to {}[{}] from {} failed: {}", hp.name, hp.addr.to_string(),
                                    src->name, conn.error().message())
                      : fmt::format("connect to {}[{}] failed: {}", hp.name, hp.addr.to_string(),
                                    conn.error().message());
            continue;
        }
        conn.value().set_nodelay(true);
        cl.emplace(std::move(conn.value()), o, src ? src->helo : std::string());
        smtp_reply r;
        bool ok = co_await cl->hello(&r);
        // The destination's policy, raised to verify by an MTA-STS policy in enforce mode.
        const tls_mode mode = std::max(tls_mode_of(d), hr.min_tls);
        bool hop_tls_failed = false, hop_req_refused = false;
        const std::string where = fmt::format("{}[{}]", hp.name, hp.addr.to_string());
        if (ok && mode == tls_mode::opportunistic && cl->starttls && tls && now_ms() >= d->no_tls_until_ms) {
            bool refused = false;
            std::string sni = net::address::parse(hp.name, 0) ? std::string() : hp.name;
            ok = co_await cl->start_tls(tls.get(), std::move(sni), &refused);
            if (!ok) {
                // Opportunistic TLS that fails is not a reason to keep
                // the mail: the next connection goes in plaintext.
                d->no_tls_until_ms = now_ms() + 3'600'000;
                lg.info("destination={} host={} STARTTLS failed, plaintext for an hour: {}", d->key, where,
                        cl->error);
                cl.reset();
                --hi;  // the same host again
                continue;
            }
        } else if (ok && (mode == tls_mode::required || mode == tls_mode::verify)) {
            // TLS is a must: no STARTTLS, a refused one, a failed
            // handshake or (verify) a certificate that does not chain to a
            // trusted CA or name the host make this host unusable.
            const net::tls_context* ctx = mode == tls_mode::verify ? verifying_tls() : tls.get();
            bool refused = false;
            if (!cl->starttls) {
                ok = false;
                hop_req_refused = d->requiretls;
                cl->error = d->requiretls ? "does not offer STARTTLS (the mail requires TLS: REQUIRETLS)"
                                          : fmt::format("does not offer STARTTLS (TLS policy {})", to_string(mode));
            } else if (!ctx) {
                ok = false;
                cl->error = "no TLS context to verify with";
            } else {
                std::string sni = hp.name;  // an IP literal is verified against the certificate's addresses
                ok = co_await cl->start_tls(ctx, std::move(sni), &refused);
                if (ok && refused) {
                    ok = false;
                    cl->error = fmt::format("refused STARTTLS (TLS policy {})", to_string(mode));
                } else if (!ok) {
                    cl->error = fmt::format("{} (TLS policy {})", cl->error, to_string(mode));
                }
            }
            // A server that cannot keep REQUIRETLS mail secure past itself
            // may not have it (RFC 8689 4.2.1): the mail is returned.
            if (ok && d->requiretls && !cl->requiretls) {
                ok = false;
                cl->error = "does not offer REQUIRETLS";
                hop_req_refused = true;
            }
            requiretls_refused = requiretls_refused || hop_req_refused;
            hop_tls_failed = !ok;
            tls_failed = tls_failed || hop_tls_failed;
        }
        // Anything but a host refusing REQUIRETLS outright (no STARTTLS or
        // no REQUIRETLS) may pass: REQUIRETLS mail then stays queued.
        if (!ok && !hop_req_refused)
            other_failure = true;
        if (ok) {
            host = hp.name;
            ip = hp.addr.ip_string();
            break;
        }
        why = fmt::format("{}[{}]: {}", hp.name, hp.addr.to_string(), cl->error);
        if (r.code == 421 || r.code / 100 == 4) {
            why = fmt::format("{}[{}]: {}", hp.name, hp.addr.to_string(), r.line());
            adapt(d, true, false);  // the server turned us away: a throttling signal
        }
        if (r.code >= 400)
            shape(d, {r}, src);
        cl.reset();
    }
    if (!cl && !tried && sources_busy) {
        // The pool's sources exist but may not connect now (their limits,
        // a warm-up cap): the mail waits, no attempt is counted, and no
        // new connection is tried for a moment.
        drop_source();
        d->no_slot_until_ms = now_ms() + 200;
        co_return;
    }
    if (!cl) {
        drop_source();
        pause(d, why);
        // REQUIRETLS mail no next hop can take securely is returned to its
        // sender (RFC 8689 5.7.30); other TLS failures are temporary.
        smtp_reply fail{0, why, ""};
        if (requiretls_refused && !other_failure)
            fail = {550, fmt::format("5.7.30 REQUIRETLS support required: {}", why), "5.7.30"};
        else if (tls_failed)
            fail = {451, fmt::format("4.7.5 TLS required: {}", why), "4.7.5"};
        fail.local = true;
        auto t = fail_all(d, std::move(fail), "");
        co_await std::move(t);
        co_return;
    }
    c.connections++;
    d->connections++;
    if (sst)
        sst->connections++;
    d->last_connection_ms = now_ms();
    d->last_host = host;
    d->last_ip = ip;
    d->last_tls = cl->tls_description();
    const uint64_t dcid = (uint64_t(core) << 48) | ++dcid_seq;
    std::string tls_desc = cl->tls_description();
    const std::string src_name = src ? src->name : std::string();
    const std::string src_ip = src ? src->addr.ip_string() : std::string();
    journal::record("connection", {{"dcid", dcid}, {"destination", std::string_view(d->key)},
                                   {"host", std::string_view(host)}, {"ip", std::string_view(ip)},
                                   {"tls", std::string_view(tls_desc)}, {"pool", std::string_view(d->pool)},
                                   {"source", std::string_view(src_name)},
                                   {"source_ip", std::string_view(src_ip)}});
    unsigned sent = 0;
    gate recording;
    for (;;) {
        if (d->ready.empty()) {
            // The destination ran dry: keep the connection for the next
            // message a while (a trickle would otherwise connect for
            // every few messages), unless its limits or a shutdown say
            // it is done.
            if (stopping || sent >= o->max_messages_per_connection || held(d, now_ms()) ||
                d->active > conn_limit(d))
                break;
            auto t = idle_wait(d);
            if (!co_await std::move(t))
                break;
            if (!cl->still_open()) {
                lg.info("destination={} host={}[{}] closed the idle connection", d->key, host, ip);
                break;  // worker() kicks a new connection for what is ready
            }
            continue;
        }
        // Over the destination's connection limit (lowered by a commit):
        // this connection ends after the message it sent.
        // A commit may have made TLS (or its verification) a must since
        // this connection was opened: it sends nothing more.
        const tls_mode need = std::max(tls_mode_of(d), hr.min_tls);
        const bool tls_short = (need == tls_mode::required && !cl->tls_active()) ||
                               (need == tls_mode::verify && !cl->tls_verified());
        if (stopping || sent >= o->max_messages_per_connection || d->suspended || tls_short ||
            overridden(d, shaping_rule::action_t::suspend, now_ms()) ||
            overridden(d, shaping_rule::action_t::bounce, now_ms()) || (src && source_suspended(d, *src, now_ms())) ||
            d->active > conn_limit(d))
            break;
        if (const int64_t wait = std::max({rate_wait_ms(d, now_ms()), src ? source_wait_ms(d, *src, now_ms()) : 0,
                                           provider_wait_ms(d, now_ms())});
            wait > 0) {
            if (wait > 5'000)
                break;  // do not hold the connection open long; the timer kicks us again
            co_await io::sleep(std::chrono::milliseconds(wait));
            continue;
        }
        // Counted before the message is loaded: connections waiting for
        // their loads must not all pass the check together.
        const int64_t slot = now_ms();
        // A provider's hourly count and a warming source's daily count are
        // checked and taken in one step (other cores count too); they are
        // not given back if the load fails: that errs on sending less.
        const provider* pv = provider_of(d);
        if (pv && !shared().try_add_send(provider_key(*pv), pv->max_messages_per_hour, slot))
            continue;  // the wait above now says how long
        if (src && !src->warmup.empty()) {
            const std::string group = warmup_group(*src, d);
            unsigned cap = 0;
            for (const auto& w : o->warmups)
                if (w.name == src->warmup)
                    cap = w.cap(group, shared_state::day_of(slot) - src->warmup_start_day + 1);
            if (!shared().try_add_daily(src->name, group, shared_state::day_of(slot), cap)) {
                if (pv)
                    shared().remove_send(provider_key(*pv), slot);
                continue;
            }
        }
        if (rate_limit(d))
            d->sent_ms.push_back(slot);
        if (src && src->max_messages_per_minute)
            sst->sent_ms.push_back(slot);
        entry e = take(d);
        auto tl = load_from_origin(e.origin, e.shard, e.id, e.rcpts);
        auto L = co_await std::move(tl);
        if (!L) {
            untake(d, e);
            auto unslot = [&](std::deque<int64_t>& q) {
                auto it = std::find(q.begin(), q.end(), slot);
                if (it != q.end())
                    q.erase(it);
            };
            if (rate_limit(d))
                unslot(d->sent_ms);
            if (src && src->max_messages_per_minute)
                unslot(sst->sent_ms);
            continue;
        }
        ++sent;
        std::vector<smtp_reply> replies;
        smtp_reply mail_reply;
        bool usable = true, local_replies = true;
        const unsigned hops = received_headers(L->out.head);
        if (hops > o->max_received_headers + 1) {
            // Counted at reception too (without our own header); found
            // here, the limit was lowered or the message came in some
            // other way: RFC 5321 6.3, bounce it rather than pass it on.
            replies.assign(L->idx.size(),
                           smtp_reply{554,
                                      fmt::format("5.4.6 too many hops: {} Received headers, more than {} "
                                                  "(mail loop?)",
                                                  hops - 1, o->max_received_headers),
                                      "5.4.6"});
        } else if (cl->max_size && L->out.size > cl->max_size) {
            replies.assign(L->idx.size(), smtp_reply{552, fmt::format("5.3.4 message size {} exceeds the "
                                                                      "server's limit {}",
                                                                      L->out.size, cl->max_size),
                                                      "5.3.4"});
        } else if (L->out.smtputf8 && !cl->smtputf8) {
            replies.assign(L->idx.size(),
                           smtp_reply{553, "5.6.7 the message needs SMTPUTF8 and the server lacks it", "5.6.7"});
        } else if (L->out.eight_bit && !cl->eight_bit_mime) {
            replies.assign(L->idx.size(),
                           smtp_reply{554, "5.6.3 the message needs 8BITMIME and the server lacks it", "5.6.3"});
        } else {
            local_replies = false;
            usable = co_await cl->send(&L->out, &replies, &mail_reply);
            if (!usable)
                for (auto& r : replies)
                    if (r.code == 0)
                        r.text = fmt::format("{}: {}", host, cl->error);
        }
        for (auto& r : replies)
            r.local = r.local || local_replies;
        shape(d, replies, src);
        // The outcome is recorded while the next transaction runs; at
        // most one is being recorded at a time per connection, so a
        // crash repeats at most this transaction and the one before.
        const bool closing = mail_reply.code == 421 ||
                             std::any_of(replies.begin(), replies.end(), [](const smtp_reply& r) { return r.code == 421; });
        co_await recording.wait_idle();
        spawn(finish_owned(this, d, std::move(e), std::move(*L), std::move(replies), host, ip, dcid, &recording));
        if (closing) {
            pause(d, fmt::format("{}: {}", host, cl->error.empty() ? mail_reply.line() : cl->error));
            break;
        }
        if (!usable)
            break;
    }
    co_await recording.wait_idle();
    co_await cl->quit();
    drop_source();
}

task<bool> service::impl::idle_wait(destination* d) {
    // The monotonic clock: a wall-clock step must not stretch the wait.
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + o->connection_cache_time;
    auto usable = [&] { return !stopping && !held(d, now_ms()); };
    while (d->ready.empty()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
        if (left.count() <= 0 || !usable())
            co_return false;
        cancel_token tok;
        d->idle.push_back(&tok);
        int r = co_await io::sleep(left, &tok);
        if (r != -ECANCELED)  // timed out: take ourselves off the list
            std::erase(d->idle, &tok);
    }
    co_return usable();
}

task<void> service::impl::finish_owned(impl* self, destination* d, entry e, loaded L, std::vector<smtp_reply> replies,
                                       std::string host, std::string ip, uint64_t dcid, gate* g) {
    gate::holder h(*g);
    auto t = self->finish(d, e, L, std::move(replies), std::move(host), std::move(ip), dcid);
    co_await std::move(t);
}

}  // namespace rw::mta::delivery
