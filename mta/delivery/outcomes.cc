// Outcomes: each recipient's reply turned into delivered, deferred or
// bounced, recorded on the origin core before it is acted on, with the
// RFC 3464 reports it earns and the message's removal once all are final.
#include "mta/delivery/queue_impl.hh"

#include <algorithm>
#include <cctype>

#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/smp/smp.hh"
#include "mta/delivery/classify.hh"
#include "mta/delivery/dsn.hh"
#include "mta/delivery/retry.hh"

namespace rw::mta::delivery {

namespace {
logger lg("delivery");

// A greylisting reply (RFC 6647) is the normal first answer of many
// servers, not a sign of sending too much.
bool greylisting(std::string_view text) {
    std::string t(text.substr(0, 500));
    for (char& c : t)
        c = char(std::tolower(uint8_t(c)));
    return t.find("greylist") != std::string::npos || t.find("graylist") != std::string::npos ||
           t.find("grey-list") != std::string::npos || t.find("gray-list") != std::string::npos;
}

std::string status_of(const smtp_reply& r, char cls) {
    if (!r.enhanced.empty())
        return r.enhanced;
    return fmt::format("{}.0.0", cls);
}

}  // namespace

task<void> service::impl::apply_at_origin(const options* o, fs::shard* sh, uint64_t id, std::vector<outcome> outs) {
    // Which recipients earn a report: failures (NOTIFY default or
    // FAILURE), successes on request, and a delay notice (RFC 3461 4.1:
    // NOTIFY=DELAY, or no NOTIFY at our choice) once per recipient, with
    // the first deferral after delay_notice_after (the flag in its state
    // keeps it once across restarts). Never to a null sender.
    std::vector<dsn_recipient> fails, successes, delays;
    std::vector<size_t> fails_of, successes_of, delays_of;  // indexes into outs
    std::string sender;
    int64_t arrival = 0;
    envelope_params dp;
    {
        auto v = sh->find(id);
        if (!v)
            co_return;
        sender = v->env.mail_from;
        arrival = v->env.received_unix;
        dp = read_params(id, v->env.params, v->rcpts.size());
        // A recipient already final stays as it is: bouncerecipients may
        // have failed it while a connection was sending it, and the
        // connection's outcome must not undo that (nor report twice).
        std::erase_if(outs, [&](const outcome& x) {
            return x.idx < v->rcpts.size() && is_final(v->rcpts[x.idx].status);
        });
        // Final and done with: a recipient whose report is still due
        // keeps the message.
        std::vector<bool> final(v->rcpts.size(), false);
        for (size_t i = 0; i < v->rcpts.size(); ++i)
            final[i] = is_final(v->rcpts[i].status) && !(v->rcpts[i].flags & k_report_due);
        const bool late = o->delay_notice_after.count() > 0 &&
                          now_ms() - (arrival + 1) * 1000 >= o->delay_notice_after.count();
        for (size_t xi = 0; xi < outs.size(); ++xi) {
            auto& x = outs[xi];
            if (x.idx >= final.size())
                continue;
            x.flags = v->rcpts[x.idx].flags;
            if (x.status == fs::rcpt_status::delivered || x.status == fs::rcpt_status::bounced)
                final[x.idx] = true;
            if (sender.empty())
                continue;
            const uint8_t notify = dp.rcpts[x.idx].notify;
            // Released from a quarantine: its clock is the retry schedule
            // since the release (as for its lifetime), not its arrival.
            const bool released = x.flags & k_released;
            const int64_t since_release_ms = released ? retry_schedule_ms(*o, x.attempts) : 0;
            const bool late_x = released ? o->delay_notice_after.count() > 0 &&
                                               since_release_ms >= o->delay_notice_after.count()
                                         : late;
            std::vector<dsn_recipient>* list = nullptr;
            const char* action = nullptr;
            if (x.status == fs::rcpt_status::bounced && notify_wants(notify, k_notify_failure)) {
                list = &fails, action = "failed";
            } else if (x.status == fs::rcpt_status::delivered && notify_wants(notify, k_notify_success)) {
                list = &successes, action = "delivered";
            } else if (x.status == fs::rcpt_status::deferred && late_x && !(x.flags & k_delay_notified) &&
                       notify_wants(notify, k_notify_delay)) {
                list = &delays, action = "delayed";
                x.flags |= k_delay_notified;
            }
            if (!list)
                continue;
            dsn_recipient d{v->env.rcpts[x.idx], dp.rcpts[x.idx].orcpt, action, x.status_code, x.remote,
                            x.reply.empty() ? std::string() : fmt::format("smtp; {}", x.reply)};
            if (x.status != fs::rcpt_status::delivered && !x.reply.empty())
                d.failure_class = std::string(to_string(classify_line(x.reply)));
            if (list == &delays)
                d.will_retry_until_unix =
                    released ? now_ms() / 1000 + (o->max_queue_lifetime.count() - since_release_ms) / 1000
                             : arrival + 1 + std::chrono::duration_cast<std::chrono::seconds>(o->max_queue_lifetime).count();
            list->push_back(std::move(d));
            (list == &fails ? fails_of : list == &successes ? successes_of : delays_of).push_back(xi);
        }
        // The common case: these outcomes finish the message and no
        // report is due. One durable removal then says everything;
        // recording each recipient's final state first would double the
        // writes.
        const bool all_final = std::all_of(final.begin(), final.end(), [](bool f) { return f; });
        if (all_final && fails.empty() && successes.empty()) {
            auto r = co_await sh->remove(id);
            if (r) {
                journal::record("removed", {{"mid", std::string_view(mid_string(id))}});
                co_return;
            }
            if (r.error().code == fs::spool_errc::not_found)
                co_return;
            lg.error("mid={} cannot remove: {}", mid_string(id), r.error().detail);
            // Fall through: at least record the recipients' states.
        }
    }
    // Each report is queued durably before the states that caused it are
    // written: a crash in between sends it twice (the recipient is tried
    // again), never not at all.
    // A report that cannot be queued is not lost: its recipients are
    // recorded with k_report_due and the report is tried again until it
    // is queued (a delay notice simply waits for the next deferral).
    bool reports_due = false;
    for (auto* list : {&fails, &successes, &delays}) {
        if (list->empty())
            continue;
        // RET=FULL asks for the whole message in a failure report only
        // (RFC 3461 4.3); the others carry its header.
        const bool full = list == &fails && dp.ret == dsn_ret::full;
        auto t = send_dsn(sh, id, sender, arrival, dp, full, std::move(*list), o->hostname);
        if (co_await std::move(t))
            continue;
        for (size_t xi : list == &fails ? fails_of : list == &successes ? successes_of : delays_of) {
            if (list == &delays) {
                outs[xi].flags &= uint8_t(~k_delay_notified);
            } else {
                outs[xi].flags |= k_report_due;
                reports_due = true;
            }
        }
    }
    for (const auto& x : outs) {
        fs::rcpt_state st;
        st.status = x.status;
        st.attempts = x.attempts;
        st.next_attempt_unix = x.next_attempt_unix;
        st.last_reply = x.reply.substr(0, 500);
        st.flags = x.flags;
        auto ts = sh->set_rcpt_state(id, x.idx, std::move(st));
        auto r = co_await std::move(ts);
        if (!r && r.error().code != fs::spool_errc::not_found && r.error().code != fs::spool_errc::bad_state)
            lg.error("mid={} rcpt={} cannot record its state: {}", mid_string(id), x.idx, r.error().detail);
    }
    if (reports_due) {
        if (service* s = service::local())
            spawn(retry_reports(s->_i.get(), sh, id));
        co_return;
    }
    bool all_final = true;
    {
        auto v = sh->find(id);
        if (!v)
            co_return;
        for (const auto& s : v->rcpts)
            if (!is_final(s.status) || (s.flags & k_report_due))
                all_final = false;
    }
    if (all_final) {
        auto t = remove_finished(sh, id);
        co_await std::move(t);
    }
}

std::vector<fs::rcpt_state> service::bounce_states(const std::vector<bool>& report, std::string_view reply) {
    std::vector<fs::rcpt_state> out(report.size());
    for (size_t i = 0; i < out.size(); ++i) {
        out[i].status = fs::rcpt_status::bounced;
        out[i].last_reply = std::string(reply.substr(0, 500));
        out[i].flags = report[i] ? k_report_due : 0;
    }
    return out;
}

task<void> service::impl::retry_reports(impl* self, fs::shard* sh, uint64_t id) {
    if (!self->reports_retrying.insert({sh, id}).second)
        co_return;
    gate::holder h(self->posts);
    const options* o = self->o;
    // The first try at once (a bounce a content rule decided, or reports
    // a crash left due); then first_retry, doubling up to max_retry.
    int64_t wait = 0;
    bool done = false;
    while (!self->stopping && !done) {
        for (int64_t slept = 0; slept < wait && !self->stopping; slept += 100)
            co_await io::sleep(std::chrono::milliseconds(100));
        if (self->stopping)
            break;
        wait = wait == 0 ? std::max<int64_t>(o->first_retry.count(), 100)
                         : std::min<int64_t>(wait * 2, std::max<int64_t>(o->max_retry.count(), 100));
        std::vector<dsn_recipient> fails, successes;
        std::vector<uint32_t> fails_of, successes_of;
        std::string sender;
        int64_t arrival = 0;
        envelope_params dp;
        {
            auto v = sh->find(id);
            if (!v)
                break;
            sender = v->env.mail_from;
            arrival = v->env.received_unix;
            dp = read_params(id, v->env.params, v->rcpts.size());
            for (uint32_t i = 0; i < v->rcpts.size(); ++i) {
                const auto& st = v->rcpts[i];
                if (!(st.flags & k_report_due) || !is_final(st.status))
                    continue;
                const bool ok = st.status == fs::rcpt_status::delivered;
                dsn_recipient d{v->env.rcpts[i], dp.rcpts[i].orcpt, ok ? "delivered" : "failed",
                                enhanced_of(st.last_reply, ok), "",
                                st.last_reply.empty() ? std::string() : fmt::format("smtp; {}", st.last_reply)};
                if (!ok && !st.last_reply.empty())
                    d.failure_class = std::string(to_string(classify_line(st.last_reply)));
                (ok ? successes : fails).push_back(std::move(d));
                (ok ? successes_of : fails_of).push_back(i);
            }
        }
        done = true;
        for (auto* list : {&fails, &successes}) {
            if (list->empty())
                continue;
            const bool full = list == &fails && dp.ret == dsn_ret::full;
            const auto& idx = list == &fails ? fails_of : successes_of;
            auto t = send_dsn(sh, id, sender, arrival, dp, full, std::move(*list), o->hostname);
            if (!co_await std::move(t)) {
                done = false;
                continue;
            }
            for (uint32_t i : idx) {
                auto v = sh->find(id);
                if (!v || i >= v->rcpts.size())
                    break;
                fs::rcpt_state st = v->rcpts[i];
                st.flags &= uint8_t(~k_report_due);
                auto ts = sh->set_rcpt_state(id, i, std::move(st));
                auto r = co_await std::move(ts);
                if (!r && r.error().code != fs::spool_errc::not_found)
                    lg.error("mid={} rcpt={} cannot record its report: {}", mid_string(id), i, r.error().detail);
            }
        }
    }
    self->reports_retrying.erase({sh, id});
    if (!done)
        co_return;
    bool all_final = true;
    {
        auto v = sh->find(id);
        if (!v)
            co_return;
        for (const auto& st : v->rcpts)
            if (!is_final(st.status) || (st.flags & k_report_due))
                all_final = false;
    }
    if (all_final) {
        auto t = remove_finished(sh, id);
        co_await std::move(t);
    }
}

task<void> service::impl::remove_finished(fs::shard* sh, uint64_t id) {
    auto r = co_await sh->remove(id);
    if (r)
        journal::record("removed", {{"mid", std::string_view(mid_string(id))}});
    else if (r.error().code != fs::spool_errc::not_found)
        lg.error("mid={} cannot remove: {}", mid_string(id), r.error().detail);
}

task<bool> service::impl::send_dsn(fs::shard* sh, uint64_t id, std::string sender, int64_t arrival, envelope_params dp,
                                   bool full, std::vector<dsn_recipient> rcpts, std::string hostname) {
    // The original: its header, or the whole message with RET=FULL.
    uint64_t size = 0;
    {
        auto v = sh->find(id);
        if (!v)
            co_return true;  // gone: nothing left to report on
        size = v->message_bytes;
    }
    std::string orig(full ? size : std::min<uint64_t>(size, 64 * 1024), '\0');
    uint64_t off = 0;
    while (off < orig.size()) {
        auto n = co_await sh->read_message(id, off, std::span<char>(orig.data() + off, orig.size() - off));
        if (!n || n.value() == 0)
            break;
        off += n.value();
    }
    orig.resize(off);
    if (!full)
        orig = std::string(header_of(orig));
    dsn_input in;
    in.reporting_mta = hostname;
    in.original_sender = sender;
    in.envid = dp.envid;
    in.arrival_unix = arrival;
    in.now_unix = now_ms() / 1000;
    in.mid = mid_string(id);
    in.rcpts = std::move(rcpts);
    in.original = std::move(orig);
    in.full = full;
    std::string msg = build_dsn(in);
    // A report on REQUIRETLS mail carries its header (or all of it): it
    // goes under REQUIRETLS too (RFC 8689 5).
    envelope_params rp{.rcpts = {rcpt_params{}}};
    rp.requiretls = dp.requiretls;
    fs::envelope env{"", {sender}, encode_params(rp), in.now_unix};
    auto w = sh->begin(std::move(env));
    if (!w) {
        lg.error("mid={} cannot queue a DSN: {}; will try again", in.mid, w.error().detail);
        co_return false;
    }
    fs::message_writer mw = std::move(w.value());
    auto a = co_await mw.append(std::span<const char>(msg.data(), msg.size()));
    if (!a) {
        lg.error("mid={} cannot queue a DSN: {}; will try again", in.mid, a.error().detail);
        co_return false;
    }
    auto c = co_await mw.commit();
    if (!c) {
        lg.error("mid={} cannot queue a DSN: {}; will try again", in.mid, c.error().detail);
        co_return false;
    }
    journal::record("dsn", {{"mid", std::string_view(in.mid)},
                            {"dsn_mid", std::string_view(mid_string(c.value()))},
                            {"to", std::string_view(sender)},
                            {"action", std::string_view(in.rcpts.front().action)}});
    if (service* s = service::local()) {
        s->_i->c.dsn++;
        s->queued(sh, c.value());
    }
    co_return true;
}

void service::impl::settle(destination* d, const entry& e, const loaded& L, const std::vector<smtp_reply>& replies,
                           const std::string& host, const std::string& ip, uint64_t dcid, std::vector<outcome>& outs,
                           entry& retry) {
    const int64_t now = now_ms();
    // received_unix is whole seconds: count from the end of that second
    // so that mail never expires early.
    // Released from a quarantine: the lifetime counts the retry schedule
    // since the release (as if the message had just arrived), never the
    // time it was held.
    bool any_delivered = false, any_tempfail = false;
    const bool expired = e.released ? retry_schedule_ms(*o, e.attempts + 1) > o->max_queue_lifetime.count()
                                    : now - (e.received_unix + 1) * 1000 > o->max_queue_lifetime.count();
    for (size_t i = 0; i < L.idx.size(); ++i) {
        const smtp_reply& r = replies[i];
        outcome x;
        x.idx = L.idx[i];
        x.attempts = L.attempts[i] + 1;
        x.remote = host;
        x.reply = r.code ? r.line() : r.text;
        const char* disposition;
        if (r.code / 100 == 2) {
            x.status = fs::rcpt_status::delivered;
            x.status_code = status_of(r, '2');
            disposition = "delivered";
            c.delivered++;
            d->delivered++;
        } else if (r.code / 100 == 5) {
            x.status = fs::rcpt_status::bounced;
            x.status_code = status_of(r, '5');
            disposition = "bounced";
            c.bounced++;
            d->bounced++;
        } else if (expired) {
            x.status = fs::rcpt_status::bounced;
            x.status_code = "4.4.7";
            x.reply = fmt::format("{} (delivery time expired)", x.reply);
            disposition = "expired";
            c.bounced++;
            d->bounced++;
        } else {
            x.status = fs::rcpt_status::deferred;
            x.status_code = status_of(r, '4');
            const int64_t delay = retry_delay_ms(*o, x.attempts, r.code, rng);
            x.next_attempt_unix = (now + delay + 999) / 1000;
            retry.rcpts.push_back(x.idx);
            retry.due_ms = std::max(retry.due_ms, now + delay);
            retry.attempts = std::max(retry.attempts, x.attempts);
            disposition = "deferred";
            c.deferred++;
            d->deferred++;
        }
        if (r.code / 100 == 2)
            any_delivered = true;
        else if (r.code / 100 == 4 && !greylisting(r.text))
            any_tempfail = true;
        std::string_view cls;
        if (r.code / 100 != 2) {
            d->last_error = x.reply;
            d->last_error_ms = now;
            const reply_class rc = classify(r.code, r.enhanced, r.code ? r.text : x.reply);
            cls = to_string(rc);
            c.failures[size_t(rc)]++;
        }
        if (e.taken_ms)
            d->latency.add(double(std::max<int64_t>(0, now - e.taken_ms)) / 1000.0);
        journal::record("delivery", {{"mid", std::string_view(mid_string(e.id))},
                                     {"dcid", dcid},
                                     {"rcpt", std::string_view(L.out.rcpts[i])},
                                     {"host", std::string_view(host)},
                                     {"ip", std::string_view(ip)},
                                     {"code", int64_t(r.code)},
                                     {"reply", std::string_view(x.reply)},
                                     {"attempt", uint64_t(x.attempts)},
                                     {"disposition", std::string_view(disposition)},
                                     {"class", cls}});
        outs.push_back(std::move(x));
    }
    // One transaction, one step of the back-off. Only what the
    // destination's servers said counts: host is empty for the gateway's
    // own failures (DNS).
    if (!host.empty() && (any_delivered || any_tempfail))
        adapt(d, !any_delivered, any_delivered);
}

task<void> service::impl::finish(destination* d, const entry& e, const loaded& L, std::vector<smtp_reply> replies,
                                 std::string host, std::string ip, uint64_t dcid) {
    std::vector<outcome> outs;
    entry retry{e.origin, e.shard, e.id, {}, 0, e.received_unix, 0};
    retry.released = e.released;
    settle(d, e, L, replies, host, ip, dcid, outs, retry);
    untake(d, e);
    fs::shard* sh = e.shard;
    uint64_t id = e.id;
    auto fn = [o = o, sh, id, outs = std::move(outs)]() mutable { return apply_at_origin(o, sh, id, std::move(outs)); };
    auto t = submit_to(e.origin, std::move(fn));
    co_await std::move(t);
    if (!retry.rcpts.empty())
        deferred.emplace(retry.due_ms, std::make_pair(d, std::move(retry)));
}

void service::impl::adapt(destination* d, bool tempfail, bool delivered) {
    if (!o->backoff_after_tempfails) {
        d->conn_cap = d->rate_cap = 0;
        return;
    }
    // From the destination's own limits (configured, or backed off), not
    // those a shaping override or the pool set for a while.
    const unsigned conn = d->conn_cap ? std::min(d->conn_cap, o->max_connections_per_destination)
                                      : o->max_connections_per_destination;
    const unsigned rate = d->rate_cap && o->max_messages_per_minute ? std::min(d->rate_cap, o->max_messages_per_minute)
                                                                    : o->max_messages_per_minute;
    if (tempfail) {
        d->deliveries_in_row = 0;
        if (++d->tempfails_in_row < o->backoff_after_tempfails)
            return;
        d->tempfails_in_row = 0;
        // Multiplicative decrease: half the connections and the rate.
        const unsigned nc = std::max(1u, conn / 2), nr = rate ? std::max(1u, rate / 2) : 0;
        if (nc == conn && nr == rate)
            return;
        d->conn_cap = nc;
        d->rate_cap = nr;
        lg.info("destination={} backs off: {} connections, {} messages per minute", d->key, nc,
                nr ? fmt::to_string(nr) : std::string("no limit on"));
        journal::record("backoff", {{"destination", std::string_view(d->key)}, {"direction", std::string_view("down")},
                                    {"connections", uint64_t(nc)}, {"rate", uint64_t(nr)}});
        return;
    }
    if (!delivered)
        return;
    d->tempfails_in_row = 0;
    if (!d->conn_cap && !d->rate_cap)
        return;
    if (++d->deliveries_in_row < std::max(1u, o->recover_after_deliveries))
        return;
    d->deliveries_in_row = 0;
    // Additive increase: one connection, a quarter of the rate.
    const unsigned nc = conn + 1 >= o->max_connections_per_destination ? 0 : conn + 1;
    const unsigned grown = std::max(rate + 1, rate + rate / 4);
    const unsigned nr = !o->max_messages_per_minute || grown >= o->max_messages_per_minute ? 0 : grown;
    d->conn_cap = nc;
    d->rate_cap = nr;
    journal::record("backoff", {{"destination", std::string_view(d->key)}, {"direction", std::string_view("up")},
                                {"connections", uint64_t(conn_limit(d))}, {"rate", uint64_t(rate_limit(d))}});
    kick(d);
}

task<void> service::impl::fail_all(destination* d, smtp_reply r, std::string host) {
    for (size_t n = d->ready.size(); n > 0 && !d->ready.empty() && !stopping; --n) {
        entry e = take(d);
        auto tl = load_from_origin(e.origin, e.shard, e.id, e.rcpts, false);  // nothing is sent
        auto L = co_await std::move(tl);
        if (!L) {
            untake(d, e);
            continue;
        }
        std::vector<smtp_reply> replies(L->idx.size(), r);
        auto t = finish(d, e, *L, std::move(replies), host, "", 0);
        co_await std::move(t);
    }
}

}  // namespace rw::mta::delivery
