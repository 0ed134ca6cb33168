// The queue manager: per-destination queues owned by one core each, the
// connection workers that drain them, retries and bounces. See delivery.hh.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <unordered_map>

#include "mta/delivery/client.hh"
#include "mta/delivery/delivery.hh"
#include "mta/delivery/dsn.hh"
#include "mta/envelope_params.hh"
#include "mta/smtp/trace_counter.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/sync.hh"
#include "runtime/smp/smp.hh"

namespace rw::mta::delivery {

namespace {

logger lg("delivery");

constexpr unsigned k_max_cores = 1024;
std::atomic<service*> g_services[k_max_cores];

int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string lower(std::string_view s) {
    std::string o(s);
    for (auto& c : o)
        if (c >= 'A' && c <= 'Z')
            c = char(c + 32);
    return o;
}

std::string domain_of(std::string_view addr) {
    size_t at = addr.rfind('@');
    return at == std::string_view::npos ? std::string() : lower(addr.substr(at + 1));
}

std::string mid_string(uint64_t id) { return fmt::format("{:016X}", id); }

// One destination's share of one message: the recipients (by index in the
// envelope) that go to it.
struct entry {
    unsigned origin = 0;
    fs::shard* shard = nullptr;  // valid on the origin core only
    uint64_t id = 0;
    std::vector<uint32_t> rcpts;
    uint32_t attempts = 0;
    int64_t received_unix = 0;
    int64_t due_ms = 0;
};

// Entries posted to a core before its service exists (it starts as soon as
// its own shard is recovered; other cores may be faster). Touched only on
// that core.
std::vector<std::pair<std::string, entry>>& early_posts() {
    thread_local std::vector<std::pair<std::string, entry>> v;
    return v;
}

struct destination {
    std::string key;
    std::string domain;  // for MX lookups (empty for routes)
    const route* rt = nullptr;
    std::deque<entry> ready;
    unsigned active = 0;
    int64_t paused_until_ms = 0;
    std::deque<int64_t> sent_ms;  // sends in the last minute (rate limit)
    int64_t no_tls_until_ms = 0;  // a failed TLS handshake: plaintext for a while
    // Connections waiting for the next message (connection_cache_time);
    // kick() wakes them before it opens new ones.
    std::vector<cancel_token*> idle;
};

// What a connection needs of a message, read on its origin core.
struct loaded {
    outgoing out;
    std::vector<uint32_t> idx;  // envelope index of each out.rcpts[i]
    std::vector<uint32_t> attempts;
};

// A recipient's outcome, applied on the origin core.
struct outcome {
    uint32_t idx = 0;
    fs::rcpt_status status = fs::rcpt_status::pending;
    uint32_t attempts = 0;
    int64_t next_attempt_unix = 0;
    std::string reply;     // "550 5.1.1 ..." or a local reason
    std::string status_code;  // for a DSN: "5.1.1"
    std::string remote;    // host name
    uint8_t flags = 0;     // fs::rcpt_state::flags to keep (set at the origin)
};

// The first bytes of a body, read with its envelope: all of a typical
// message, and the trace headers that the hop count reads (a header
// section longer than this is counted over this much).
constexpr size_t k_head_bytes = 64 * 1024;

// fs::rcpt_state::flags bits of ours.
constexpr uint8_t k_delay_notified = 1;
// Final (delivered or bounced), but the report it earned could not be
// queued (the spool was full): the message stays until it is.
constexpr uint8_t k_report_due = 2;

bool is_final(fs::rcpt_status s) { return s == fs::rcpt_status::delivered || s == fs::rcpt_status::bounced; }

// "550 5.1.1 text" -> "5.1.1"; the class alone when the reply has none.
std::string enhanced_of(std::string_view reply, bool success) {
    if (reply.size() >= 9 && reply[3] == ' ' && (reply[4] == '2' || reply[4] == '4' || reply[4] == '5') &&
        reply[5] == '.') {
        size_t end = reply.find(' ', 4);
        return std::string(reply.substr(4, end == std::string_view::npos ? std::string_view::npos : end - 4));
    }
    return success ? "2.0.0" : "5.0.0";
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

// Received: headers in a stored message's header section (ours included).
unsigned received_headers(std::string_view message) {
    smtp::trace_counter tc;
    size_t end = message.find("\r\n\r\n");
    tc.feed(message.substr(0, end == std::string_view::npos ? message.size() : end + 4));
    return tc.received();
}

std::string status_of(const smtp_reply& r, char cls) {
    if (!r.enhanced.empty())
        return r.enhanced;
    return fmt::format("{}.0.0", cls);
}

}  // namespace

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

struct service::impl {
    const options* o;
    unsigned core, cores;
    std::vector<fs::shard*> shards;
    net::resolver* dns;
    std::unordered_map<std::string, std::unique_ptr<destination>> dests;
    std::multimap<int64_t, std::pair<destination*, entry>> deferred;
    gate workers;
    gate posts;
    bool stopping = false;
    std::set<std::pair<fs::shard*, uint64_t>> reports_retrying;  // retry_reports() running
    counters c;
    std::mt19937_64 rng{std::random_device{}()};
    uint64_t dcid_seq = 0;
    event stopped;
    std::unique_ptr<net::tls_context> tls;  // client side, opportunistic (no verification)

    // ---- origin side ----

    std::string key_for(std::string_view domain) const {
        if (const route* r = find_route(o->routes, domain))
            return fmt::format("route:{}", r->domain);
        return fmt::format("mx:{}", domain);
    }
    unsigned owner_of(const std::string& key) const { return unsigned(std::hash<std::string>{}(key) % cores); }

    void queue_message(fs::shard* sh, uint64_t id) {
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

    static task<void> remove_left_over(impl* self, fs::shard* sh, uint64_t id) {
        gate::holder h(self->posts);
        auto t = remove_finished(sh, id);
        co_await std::move(t);
    }

    static task<void> post(impl* self, unsigned owner, std::string key, entry e) {
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

    // Reads what a connection needs; nullopt when the message is gone.
    // Without with_body only the envelope (for failing it unsent).
    static task<std::optional<loaded>> load(fs::shard* sh, uint64_t id, std::vector<uint32_t> idx,
                                            bool with_body = true) {
        loaded L;
        uint64_t size = 0;
        {
            auto v = sh->find(id);
            if (!v)
                co_return std::nullopt;
            L.out.from = v->env.mail_from;
            for (uint32_t i : idx) {
                if (i >= v->rcpts.size())
                    continue;
                auto s = v->rcpts[i].status;
                if (s == fs::rcpt_status::delivered || s == fs::rcpt_status::bounced)
                    continue;
                L.out.rcpts.push_back(v->env.rcpts[i]);
                L.idx.push_back(i);
                L.attempts.push_back(v->rcpts[i].attempts);
            }
            const envelope_params p = read_params(id, v->env.params, v->rcpts.size());
            L.out.eight_bit = p.body == body_type::eight_bit_mime;
            L.out.smtputf8 = p.smtputf8;
            size = v->body_bytes;
        }
        if (L.idx.empty())
            co_return std::nullopt;
        if (!with_body)
            co_return L;
        // The head (all of a small message) now, with the connection's
        // other work; the rest as the connection sends it.
        L.out.size = size;
        L.out.head.resize(std::min<uint64_t>(size, k_head_bytes));
        uint64_t off = 0;
        while (off < L.out.head.size()) {
            auto n = co_await sh->read_body(id, off, std::span<char>(L.out.head.data() + off, L.out.head.size() - off));
            if (!n || n.value() == 0) {
                lg.error("mid={} cannot read the body at {}: {}", mid_string(id), off,
                         n ? std::string("end of data") : n.error().detail);
                co_return std::nullopt;
            }
            off += n.value();
        }
        if (size > L.out.head.size()) {
            const unsigned origin = this_core();
            L.out.read_rest = [origin, sh, id](uint64_t at, std::span<char> out) {
                return read_from_origin(origin, sh, id, at, out);
            };
        }
        co_return L;
    }

    // Body bytes of a message being sent, read on its origin core.
    static task<result<size_t, std::string>> read_body_here(fs::shard* sh, uint64_t id, uint64_t off,
                                                           std::span<char> out) {
        auto n = co_await sh->read_body(id, off, out);
        if (!n) {
            lg.error("mid={} cannot read the body at {}: {}", mid_string(id), off, n.error().detail);
            co_return unexpected(n.error().detail);
        }
        co_return n.value();
    }
    static task<result<size_t, std::string>> read_from_origin(unsigned origin, fs::shard* sh, uint64_t id,
                                                             uint64_t off, std::span<char> out) {
        auto fn = [sh, id, off, out]() { return read_body_here(sh, id, off, out); };
        auto t = submit_to(origin, std::move(fn));
        co_return co_await std::move(t);
    }

    // load() run on the message's origin core, from any core.
    static task<std::optional<loaded>> load_from_origin(unsigned origin, fs::shard* sh, uint64_t id,
                                                        std::vector<uint32_t> idx, bool with_body = true) {
        auto fn = [sh, id, idx = std::move(idx), with_body]() { return load(sh, id, idx, with_body); };
        auto t = submit_to(origin, std::move(fn));
        co_return co_await std::move(t);
    }

    // Writes the outcomes, sends DSNs, removes the message once every
    // recipient is final. Runs on the origin core.
    static task<void> apply_at_origin(const options* o, fs::shard* sh, uint64_t id, std::vector<outcome> outs) {
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
                std::vector<dsn_recipient>* list = nullptr;
                const char* action = nullptr;
                if (x.status == fs::rcpt_status::bounced && notify_wants(notify, k_notify_failure)) {
                    list = &fails, action = "failed";
                } else if (x.status == fs::rcpt_status::delivered && notify_wants(notify, k_notify_success)) {
                    list = &successes, action = "delivered";
                } else if (x.status == fs::rcpt_status::deferred && late && !(x.flags & k_delay_notified) &&
                           notify_wants(notify, k_notify_delay)) {
                    list = &delays, action = "delayed";
                    x.flags |= k_delay_notified;
                }
                if (!list)
                    continue;
                dsn_recipient d{v->env.rcpts[x.idx], dp.rcpts[x.idx].orcpt, action, x.status_code, x.remote,
                                x.reply.empty() ? std::string() : fmt::format("smtp; {}", x.reply)};
                if (list == &delays)
                    d.will_retry_until_unix =
                        arrival + 1 + std::chrono::duration_cast<std::chrono::seconds>(o->max_queue_lifetime).count();
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

    // Queues the reports of recipients marked k_report_due, with back-off
    // (first_retry, doubling up to max_retry), until every one is queued;
    // then removes the message if nothing else keeps it. One per message
    // at a time; at shutdown it stops and recovery starts it again.
    static task<void> retry_reports(impl* self, fs::shard* sh, uint64_t id) {
        if (!self->reports_retrying.insert({sh, id}).second)
            co_return;
        gate::holder h(self->posts);
        const options* o = self->o;
        int64_t wait = std::max<int64_t>(o->first_retry.count(), 100);
        bool done = false;
        while (!self->stopping && !done) {
            for (int64_t slept = 0; slept < wait && !self->stopping; slept += 100)
                co_await io::sleep(std::chrono::milliseconds(100));
            if (self->stopping)
                break;
            wait = std::min<int64_t>(wait * 2, std::max<int64_t>(o->max_retry.count(), 100));
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

    // Removes a message whose recipients are all final.
    static task<void> remove_finished(fs::shard* sh, uint64_t id) {
        auto r = co_await sh->remove(id);
        if (r)
            journal::record("removed", {{"mid", std::string_view(mid_string(id))}});
        else if (r.error().code != fs::spool_errc::not_found)
            lg.error("mid={} cannot remove: {}", mid_string(id), r.error().detail);
    }

    // Queues one report; false when it could not be (the spool full or
    // failing), so the caller keeps what earned it.
    static task<bool> send_dsn(fs::shard* sh, uint64_t id, std::string sender, int64_t arrival, envelope_params dp,
                               bool full, std::vector<dsn_recipient> rcpts, std::string hostname) {
        // The original: its header, or the whole message with RET=FULL.
        uint64_t size = 0;
        {
            auto v = sh->find(id);
            if (!v)
                co_return true;  // gone: nothing left to report on
            size = v->body_bytes;
        }
        std::string orig(full ? size : std::min<uint64_t>(size, 64 * 1024), '\0');
        uint64_t off = 0;
        while (off < orig.size()) {
            auto n = co_await sh->read_body(id, off, std::span<char>(orig.data() + off, orig.size() - off));
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
        fs::envelope env{"", {sender}, encode_params(envelope_params{.rcpts = {rcpt_params{}}}), in.now_unix};
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

    // ---- owner side ----

    destination* dest_for(const std::string& key, const entry& e) {
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

    void accept(const std::string& key, entry e) {
        destination* d = dest_for(key, e);
        if (e.due_ms > now_ms() + 50) {
            deferred.emplace(e.due_ms, std::make_pair(d, std::move(e)));
            return;
        }
        d->ready.push_back(std::move(e));
        kick(d);
    }

    // Milliseconds until the destination may send another message under
    // max_messages_per_minute (0: now).
    int64_t rate_wait_ms(destination* d, int64_t now) {
        if (!o->max_messages_per_minute)
            return 0;
        while (!d->sent_ms.empty() && d->sent_ms.front() <= now - 60'000)
            d->sent_ms.pop_front();
        if (d->sent_ms.size() < o->max_messages_per_minute)
            return 0;
        return std::max<int64_t>(1, d->sent_ms.front() + 60'000 - now);
    }

    void kick(destination* d) {
        const int64_t now = now_ms();
        // No new connection while the rate limit holds the destination back:
        // the timer loop kicks it again once a send is allowed.
        if (rate_wait_ms(d, now) > 0 && d->active > 0)
            return;
        if (rate_wait_ms(d, now) > 5'000)
            return;
        // An idle connection takes the next message before any new one is
        // opened. (It counts in active, so the spawning below allows for it.)
        for (size_t woken = 0; !d->idle.empty() && woken < d->ready.size(); ++woken) {
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

    int64_t retry_delay_ms(uint32_t attempts, int code) {
        double ms = double(o->first_retry.count());
        for (uint32_t i = 1; i < attempts && ms < double(o->max_retry.count()); ++i)
            ms *= o->backoff;
        ms = std::min(ms, double(o->max_retry.count()));
        if (attempts <= 1 && (code == 450 || code == 451))
            ms = std::min(ms, double(o->greylist_retry.count()));  // greylisting: come back soon
        std::uniform_real_distribution<double> j(1.0 - o->jitter, 1.0 + o->jitter);
        return std::max<int64_t>(1, int64_t(ms * j(rng)));
    }

    // Turns a recipient's reply into its outcome; deferred recipients also
    // go back into the queue here.
    void settle(destination* d, const entry& e, const loaded& L, const std::vector<smtp_reply>& replies,
                const std::string& host, const std::string& ip, uint64_t dcid, std::vector<outcome>& outs,
                entry& retry) {
        const int64_t now = now_ms();
        // received_unix is whole seconds: count from the end of that second
        // so that mail never expires early.
        const bool expired = now - (e.received_unix + 1) * 1000 > o->max_queue_lifetime.count();
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
            } else if (r.code / 100 == 5) {
                x.status = fs::rcpt_status::bounced;
                x.status_code = status_of(r, '5');
                disposition = "bounced";
                c.bounced++;
            } else if (expired) {
                x.status = fs::rcpt_status::bounced;
                x.status_code = "4.4.7";
                x.reply = fmt::format("{} (delivery time expired)", x.reply);
                disposition = "expired";
                c.bounced++;
            } else {
                x.status = fs::rcpt_status::deferred;
                x.status_code = status_of(r, '4');
                const int64_t delay = retry_delay_ms(x.attempts, r.code);
                x.next_attempt_unix = (now + delay + 999) / 1000;
                retry.rcpts.push_back(x.idx);
                retry.due_ms = std::max(retry.due_ms, now + delay);
                retry.attempts = std::max(retry.attempts, x.attempts);
                disposition = "deferred";
                c.deferred++;
            }
            journal::record("delivery", {{"mid", std::string_view(mid_string(e.id))},
                                         {"dcid", dcid},
                                         {"rcpt", std::string_view(L.out.rcpts[i])},
                                         {"host", std::string_view(host)},
                                         {"ip", std::string_view(ip)},
                                         {"code", int64_t(r.code)},
                                         {"reply", std::string_view(x.reply)},
                                         {"attempt", uint64_t(x.attempts)},
                                         {"disposition", std::string_view(disposition)}});
            outs.push_back(std::move(x));
        }
        (void)d;
    }

    // Applies outcomes for one entry: state at the origin, retries here.
    task<void> finish(destination* d, const entry& e, const loaded& L, std::vector<smtp_reply> replies,
                      std::string host, std::string ip, uint64_t dcid) {
        std::vector<outcome> outs;
        entry retry{e.origin, e.shard, e.id, {}, 0, e.received_unix, 0};
        settle(d, e, L, replies, host, ip, dcid, outs, retry);
        fs::shard* sh = e.shard;
        uint64_t id = e.id;
        auto fn = [o = o, sh, id, outs = std::move(outs)]() mutable { return apply_at_origin(o, sh, id, std::move(outs)); };
        auto t = submit_to(e.origin, std::move(fn));
        co_await std::move(t);
        if (!retry.rcpts.empty())
            deferred.emplace(retry.due_ms, std::make_pair(d, std::move(retry)));
    }

    // Fails every ready entry of d the same way (no connection, DNS): those
    // queued when it starts; what arrives meanwhile waits for the next
    // attempt (the destination is paused), and a stop ends it.
    task<void> fail_all(destination* d, smtp_reply r, std::string host) {
        for (size_t n = d->ready.size(); n > 0 && !d->ready.empty() && !stopping; --n) {
            entry e = std::move(d->ready.front());
            d->ready.pop_front();
            auto tl = load_from_origin(e.origin, e.shard, e.id, e.rcpts, false);  // nothing is sent
            auto L = co_await std::move(tl);
            if (!L)
                continue;
            std::vector<smtp_reply> replies(L->idx.size(), r);
            auto t = finish(d, e, *L, std::move(replies), host, "", 0);
            co_await std::move(t);
        }
    }

    struct hop {
        net::address addr;
        std::string name;
    };
    struct hops_result {
        std::vector<hop> hops;
        smtp_reply error;  // code 4xx/5xx when hops is empty
    };

    task<hops_result> resolve_host(std::string name, uint16_t port) {
        hops_result out;
        if (!dns) {
            out.error = {451, "4.4.3 no resolver for host " + name, "4.4.3"};
            co_return out;
        }
        auto ta = dns->resolve_a(name);
        auto a = co_await std::move(ta);
        if (a)
            for (auto ad : a.value()) {
                ad.set_port(port);
                out.hops.push_back({ad, name});
            }
        auto tq = dns->resolve_aaaa(name);
        auto aaaa = co_await std::move(tq);
        if (aaaa)
            for (auto ad : aaaa.value()) {
                ad.set_port(port);
                out.hops.push_back({ad, name});
            }
        if (out.hops.empty()) {
            bool perm = (!a && a.error().permanent()) && (!aaaa && aaaa.error().permanent());
            out.error = perm ? smtp_reply{550, fmt::format("5.1.2 host {} has no address", name), "5.1.2"}
                             : smtp_reply{451, fmt::format("4.4.3 cannot resolve {}: {}", name,
                                                           !a ? a.error().describe() : std::string("no address")),
                                          "4.4.3"};
        }
        co_return out;
    }

    task<hops_result> next_hops(destination* d) {
        hops_result out;
        if (d->rt) {
            for (const auto& h : d->rt->hosts) {
                if (h.literal) {
                    out.hops.push_back({h.addr, h.name});
                } else {
                    auto t = resolve_host(h.name, h.port);
                    auto r = co_await std::move(t);
                    for (auto& x : r.hops)
                        out.hops.push_back(std::move(x));
                    if (out.hops.empty())
                        out.error = r.error;
                }
            }
            co_return out;
        }
        if (!dns) {
            out.error = {451, "4.4.3 no route and no resolver", "4.4.3"};
            co_return out;
        }
        std::string dom = d->domain;
        auto tm = dns->resolve_mx(dom);
        auto mx = co_await std::move(tm);
        if (!mx) {
            if (mx.error().code == net::dns_errc::nodata) {
                // RFC 5321 5.1: no MX, the domain itself is the host.
                auto t = resolve_host(dom, o->smtp_port);
                auto r = co_await std::move(t);
                co_return r;
            }
            if (mx.error().code == net::dns_errc::nxdomain) {
                out.error = {550, fmt::format("5.1.2 domain {} does not exist", dom), "5.1.2"};
                co_return out;
            }
            out.error = {451, fmt::format("4.4.3 MX lookup failed: {}", mx.error().describe()), "4.4.3"};
            co_return out;
        }
        auto recs = mx.value();
        if (recs.size() == 1 && (recs[0].host.empty() || recs[0].host == ".")) {
            out.error = {556, fmt::format("5.1.10 domain {} does not accept mail (null MX)", dom), "5.1.10"};
            co_return out;
        }
        // Ordered by preference, shuffled among equals (RFC 5321 5.1).
        std::stable_sort(recs.begin(), recs.end(),
                         [](const net::mx_record& a, const net::mx_record& b) { return a.preference < b.preference; });
        for (size_t i = 0; i < recs.size();) {
            size_t j = i;
            while (j < recs.size() && recs[j].preference == recs[i].preference)
                ++j;
            std::shuffle(recs.begin() + long(i), recs.begin() + long(j), rng);
            i = j;
        }
        smtp_reply last;
        for (const auto& m : recs) {
            if (m.host.empty() || m.host == ".")
                continue;
            auto t = resolve_host(m.host, o->smtp_port);
            auto r = co_await std::move(t);
            for (auto& x : r.hops)
                out.hops.push_back(std::move(x));
            if (r.hops.empty())
                last = r.error;
            if (out.hops.size() >= 10)
                break;
        }
        if (out.hops.empty())
            out.error = last.code ? smtp_reply{451, last.text, "4.4.3"}
                                  : smtp_reply{451, "4.4.3 no usable MX host", "4.4.3"};
        co_return out;
    }

    void pause(destination* d, const std::string& why) {
        d->paused_until_ms = now_ms() + o->destination_pause.count();
        lg.info("destination={} paused for {} ms: {}", d->key, o->destination_pause.count(), why);
    }

    static task<void> worker(impl* self, destination* d) {
        gate::holder h(self->workers);
        auto t = self->work(d);
        co_await std::move(t);
        d->active--;
        if (!d->ready.empty())
            self->kick(d);
    }

    task<void> work(destination* d) {
        auto th = next_hops(d);
        auto hr = co_await std::move(th);
        if (hr.hops.empty()) {
            if (hr.error.code / 100 == 4)
                pause(d, hr.error.text);
            auto t = fail_all(d, hr.error, "");
            co_await std::move(t);
            co_return;
        }
        std::optional<smtp_client> cl;
        std::string host, ip, why;
        for (size_t hi = 0; hi < hr.hops.size(); ++hi) {
            const auto& hp = hr.hops[hi];
            auto tc = net::connect_tcp(hp.addr, o->connect_timeout);
            auto conn = co_await std::move(tc);
            if (!conn) {
                why = fmt::format("connect to {}[{}] failed: {}", hp.name, hp.addr.to_string(),
                                  conn.error().message());
                continue;
            }
            conn.value().set_nodelay(true);
            cl.emplace(std::move(conn.value()), o);
            smtp_reply r;
            bool ok = co_await cl->hello(&r);
            if (ok && cl->starttls && o->starttls && tls && now_ms() >= d->no_tls_until_ms) {
                bool refused = false;
                std::string sni = net::address::parse(hp.name, 0) ? std::string() : hp.name;
                ok = co_await cl->start_tls(tls.get(), std::move(sni), &refused);
                if (!ok) {
                    // Opportunistic TLS that fails is not a reason to keep
                    // the mail: the next connection goes in plaintext.
                    d->no_tls_until_ms = now_ms() + 3'600'000;
                    lg.info("destination={} host={}[{}] STARTTLS failed, plaintext for an hour: {}", d->key,
                            hp.name, hp.addr.to_string(), cl->error);
                    cl.reset();
                    --hi;  // the same host again
                    continue;
                }
            }
            if (ok) {
                host = hp.name;
                ip = hp.addr.ip_string();
                break;
            }
            why = fmt::format("{}[{}]: {}", hp.name, hp.addr.to_string(), cl->error);
            if (r.code == 421 || r.code / 100 == 4)
                why = fmt::format("{}[{}]: {}", hp.name, hp.addr.to_string(), r.line());
            cl.reset();
        }
        if (!cl) {
            pause(d, why);
            auto t = fail_all(d, smtp_reply{0, why, ""}, "");
            co_await std::move(t);
            co_return;
        }
        c.connections++;
        const uint64_t dcid = (uint64_t(core) << 48) | ++dcid_seq;
        std::string tls_desc = cl->tls_description();
        journal::record("connection", {{"dcid", dcid}, {"destination", std::string_view(d->key)},
                                       {"host", std::string_view(host)}, {"ip", std::string_view(ip)},
                                       {"tls", std::string_view(tls_desc)}});
        unsigned sent = 0;
        gate recording;
        for (;;) {
            if (d->ready.empty()) {
                // The destination ran dry: keep the connection for the next
                // message a while (a trickle would otherwise connect for
                // every few messages), unless its limits or a shutdown say
                // it is done.
                if (stopping || sent >= o->max_messages_per_connection ||
                    now_ms() < d->paused_until_ms)
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
            if (stopping || sent >= o->max_messages_per_connection)
                break;
            if (const int64_t wait = rate_wait_ms(d, now_ms()); wait > 0) {
                if (wait > 5'000)
                    break;  // do not hold the connection open long; the timer kicks us again
                co_await io::sleep(std::chrono::milliseconds(wait));
                continue;
            }
            // Counted before the message is loaded: connections waiting for
            // their loads must not all pass the check together.
            const int64_t slot = now_ms();
            if (o->max_messages_per_minute)
                d->sent_ms.push_back(slot);
            entry e = std::move(d->ready.front());
            d->ready.pop_front();
            auto tl = load_from_origin(e.origin, e.shard, e.id, e.rcpts);
            auto L = co_await std::move(tl);
            if (!L) {
                if (o->max_messages_per_minute) {
                    auto it = std::find(d->sent_ms.begin(), d->sent_ms.end(), slot);
                    if (it != d->sent_ms.end())
                        d->sent_ms.erase(it);
                }
                continue;
            }
            ++sent;
            std::vector<smtp_reply> replies;
            smtp_reply mail_reply;
            bool usable = true;
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
                usable = co_await cl->send(&L->out, &replies, &mail_reply);
                if (!usable)
                    for (auto& r : replies)
                        if (r.code == 0)
                            r.text = fmt::format("{}: {}", host, cl->error);
            }
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
    }

    // Waits up to connection_cache_time for kick() to hand this connection
    // a message. true: something is ready (or may be: check again).
    task<bool> idle_wait(destination* d) {
        const int64_t deadline = now_ms() + o->connection_cache_time.count();
        while (d->ready.empty()) {
            const int64_t left = deadline - now_ms();
            if (left <= 0 || stopping)
                co_return false;
            cancel_token tok;
            d->idle.push_back(&tok);
            int r = co_await io::sleep(std::chrono::milliseconds(left), &tok);
            if (r != -ECANCELED)  // timed out: take ourselves off the list
                std::erase(d->idle, &tok);
        }
        co_return !stopping;
    }

    static task<void> finish_owned(impl* self, destination* d, entry e, loaded L, std::vector<smtp_reply> replies,
                                   std::string host, std::string ip, uint64_t dcid, gate* g) {
        gate::holder h(*g);
        auto t = self->finish(d, e, L, std::move(replies), std::move(host), std::move(ip), dcid);
        co_await std::move(t);
    }

    task<void> timers() {
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
};

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
