// Quarantines: messages a content rule holds in the spool, out of
// delivery, until released, deleted or expired (delivery.hh).
//
// A held message's recipients are deferred until the quarantine's expiry
// and carry k_quarantined; their last reply says where and why:
// "quarantine NAME: rule RULE". That is all the state there is: the index
// below is rebuilt from the spool at start-up (queue_message).
#include <algorithm>

#include "mta/delivery/queue_impl.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"

namespace rw::mta::delivery {

namespace {
const logger lg{"quarantine"};

constexpr std::string_view k_prefix = "quarantine ";
constexpr std::string_view k_rule = ": rule ";

// (quarantine, rule) from a held recipient's last reply.
std::pair<std::string, std::string> parse_reason(std::string_view r) {
    if (!r.starts_with(k_prefix))
        return {};
    r.remove_prefix(k_prefix.size());
    const size_t at = r.find(k_rule);
    if (at == std::string_view::npos)
        return {std::string(r), {}};
    return {std::string(r.substr(0, at)), std::string(r.substr(at + k_rule.size()))};
}

}  // namespace

const options::quarantine* service::impl::quarantine_options(std::string_view name) const {
    for (const auto& q : o->quarantines)
        if (q.name == name)
            return &q;
    return nullptr;
}

std::vector<fs::rcpt_state> service::hold_states(size_t rcpts, std::string_view quarantine, std::string_view rule,
                                                 int64_t now_unix) const {
    const auto* q = _i->quarantine_options(quarantine);
    const int64_t until = now_unix + (q ? q->retention.count() : int64_t(14) * 86400);
    fs::rcpt_state st;
    st.status = fs::rcpt_status::deferred;
    st.next_attempt_unix = until;
    st.last_reply = fmt::format("{}{}{}{}", k_prefix, quarantine, k_rule, rule);
    st.flags = k_quarantined;
    return std::vector<fs::rcpt_state>(rcpts, st);
}

void service::impl::hold(fs::shard* sh, uint64_t id, const fs::shard::message_view& v) {
    held_entry e;
    e.sh = sh;
    e.received_unix = v.env.received_unix;
    e.size = v.message_bytes;
    for (const auto& st : v.rcpts)
        if (!is_final(st.status) && (st.flags & k_quarantined)) {
            e.quarantine = parse_reason(st.last_reply).first;
            e.expires_unix = st.next_attempt_unix;
            break;
        }
    quarantined[id] = std::move(e);
}

std::vector<service::held_view> service::held(std::string_view quarantine) const {
    std::vector<held_view> out;
    for (const auto& [id, e] : _i->quarantined) {
        if (!quarantine.empty() && e.quarantine != quarantine)
            continue;
        auto v = e.sh->find(id);
        if (!v)
            continue;
        held_view h;
        h.id = id;
        h.quarantine = e.quarantine;
        h.from = v->env.mail_from;
        h.received_unix = e.received_unix;
        h.expires_unix = e.expires_unix;
        h.size = e.size;
        for (uint32_t i = 0; i < v->rcpts.size() && i < v->env.rcpts.size(); ++i)
            if (v->rcpts[i].flags & k_quarantined) {
                h.rcpts.push_back(v->env.rcpts[i]);
                if (h.rule.empty())
                    h.rule = parse_reason(v->rcpts[i].last_reply).second;
            }
        out.push_back(std::move(h));
    }
    std::sort(out.begin(), out.end(), [](const held_view& a, const held_view& b) {
        return a.received_unix != b.received_unix ? a.received_unix < b.received_unix : a.id < b.id;
    });
    return out;
}

std::optional<service::impl::held_entry> service::impl::take_held(uint64_t id) {
    auto it = quarantined.find(id);
    if (it == quarantined.end())
        return std::nullopt;
    held_entry e = std::move(it->second);
    quarantined.erase(it);
    return e;
}

task<bool> service::release(uint64_t id, std::string by) {
    auto e = _i->take_held(id);
    if (!e)
        co_return false;
    fs::shard* sh = e->sh;
    const std::string q = e->quarantine;
    gate::holder h(_i->posts);
    std::vector<std::pair<uint32_t, fs::rcpt_state>> changes;
    if (auto v = sh->find(id)) {
        for (uint32_t i = 0; i < v->rcpts.size(); ++i) {
            const auto& st = v->rcpts[i];
            if (is_final(st.status) || !(st.flags & k_quarantined))
                continue;
            // As it was committed: pending, never attempted.
            fs::rcpt_state n;
            n.status = fs::rcpt_status::pending;
            n.attempts = st.attempts;
            n.flags = uint8_t((st.flags & ~k_quarantined) | k_released);
            changes.emplace_back(i, std::move(n));
        }
    }
    if (changes.empty())
        co_return false;
    for (auto& [i, st] : changes) {
        auto r = co_await sh->set_rcpt_state(id, i, st);
        if (!r) {
            lg.error("mid={} cannot release recipient {}: {}", mid_string(id), i, r.error().detail);
            // What was written stays; the rest is held again.
            if (auto v = sh->find(id))
                _i->hold(sh, id, *v);
            co_return false;
        }
    }
    journal::record("quarantine_release", {{"mid", std::string_view(mid_string(id))},
                                           {"quarantine", std::string_view(q)},
                                           {"by", std::string_view(by)}});
    _i->queue_message(sh, id);
    co_return true;
}

task<bool> service::discard(uint64_t id, std::string by) {
    auto e = _i->take_held(id);
    if (!e)
        co_return false;
    fs::shard* sh = e->sh;
    const std::string q = e->quarantine;
    gate::holder h(_i->posts);
    auto r = co_await sh->remove(id);
    if (!r) {
        lg.error("mid={} cannot delete it from quarantine {}: {}", mid_string(id), q, r.error().detail);
        if (auto v = sh->find(id))
            _i->hold(sh, id, *v);
        co_return false;
    }
    journal::record("quarantine_delete", {{"mid", std::string_view(mid_string(id))},
                                          {"quarantine", std::string_view(q)},
                                          {"by", std::string_view(by)}});
    co_return true;
}

void service::impl::sweep_quarantines(int64_t now_ms) {
    if (quarantined.empty() || stopping)
        return;
    const int64_t now = now_ms / 1000;
    service* self = service::local();
    if (!self)
        return;
    std::vector<std::pair<uint64_t, bool>> due;  // id, release
    std::map<std::string, std::vector<std::pair<int64_t, uint64_t>>> by_q;  // received, id
    std::map<std::string, uint64_t> bytes;
    for (auto it = quarantined.begin(); it != quarantined.end();) {
        if (!it->second.sh->find(it->first)) {  // deleted otherwise (deletemessage)
            it = quarantined.erase(it);
            continue;
        }
        const auto* q = quarantine_options(it->second.quarantine);
        // A quarantine no longer configured: its messages still expire
        // when their hold says (the retention it had), and are deleted,
        // the default.
        if (it->second.expires_unix <= now) {
            due.emplace_back(it->first, q && q->release_on_expiry);
        } else if (q) {
            by_q[it->second.quarantine].emplace_back(it->second.received_unix, it->first);
            bytes[it->second.quarantine] += it->second.size;
        }
        ++it;
    }
    // Over its size (this core's share): the oldest expire early.
    for (auto& [name, list] : by_q) {
        const auto* q = quarantine_options(name);
        const uint64_t share = std::max<uint64_t>(q->max_bytes / std::max(cores, 1u), 1);
        if (bytes[name] <= share)
            continue;
        std::sort(list.begin(), list.end());
        for (const auto& [received, id] : list) {
            if (bytes[name] <= share)
                break;
            bytes[name] -= quarantined[id].size;
            due.emplace_back(id, q->release_on_expiry);
        }
    }
    for (const auto& [id, release] : due) {
        if (release) {
            auto t = self->release(id, "expiry");
            spawn([](task<bool> t) -> task<void> { co_await std::move(t); }(std::move(t)));
        } else {
            auto t = self->discard(id, "expiry");
            spawn([](task<bool> t) -> task<void> { co_await std::move(t); }(std::move(t)));
        }
    }
}

}  // namespace rw::mta::delivery
