// Reply-driven shaping: rules that match what a destination's servers
// reply, and the overrides they set for a while (options::shaping).
#include <algorithm>
#include <set>

#include "mta/delivery/queue_impl.hh"
#include "policy/patterns.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"

namespace rw::mta::delivery {

namespace {
logger lg("delivery");
}  // namespace

std::string_view to_string(shaping_rule::action_t a) {
    switch (a) {
    case shaping_rule::action_t::suspend: return "suspend";
    case shaping_rule::action_t::rate: return "rate";
    case shaping_rule::action_t::connections: return "connections";
    case shaping_rule::action_t::bounce: return "bounce";
    }
    return "?";
}

const destination::override_t* service::impl::overridden(const destination* d, shaping_rule::action_t a,
                                                          int64_t now) const {
    const destination::override_t* best = nullptr;
    for (const auto& ov : d->overrides)
        if (ov.action == a && ov.source.empty() && ov.until_ms > now && (!best || ov.value < best->value))
            best = &ov;
    return best;
}

bool service::impl::source_suspended(const destination* d, const source& s, int64_t now) const {
    return std::any_of(d->overrides.begin(), d->overrides.end(),
                       [&](const auto& ov) { return ov.source == s.name && ov.until_ms > now; });
}

void service::impl::shape(destination* d, const std::vector<smtp_reply>& replies, const source* src) {
    if (o->shaping.empty() || !o->shaping_db)
        return;
    // One transaction is one event per distinct reply: a refusal of a
    // hundred recipients is not a hundred matches.
    std::set<std::string> lines;
    for (const auto& r : replies)
        if (r.code >= 400 && !r.local)
            lines.insert(r.line());
    if (lines.empty())
        return;
    const int64_t now = now_ms();
    for (const auto& line : lines) {
        policy::patterns::scanner sc(o->shaping_db);
        sc.feed(line);
        sc.finish();
        for (unsigned id : sc.matched()) {
            if (id >= o->shaping.size())
                continue;
            const shaping_rule& rule = o->shaping[id];
            if (!rule.provider.empty() && rule.provider != d->provider)
                continue;
            const std::string who = rule.per_source ? (src ? src->name : std::string()) : std::string();
            if (rule.per_source && who.empty())
                continue;  // a source rule, and the connection had no source
            auto& hits = d->shaping_hits[who.empty() ? rule.name : rule.name + "\n" + who];
            hits.push_back(now);
            while (!hits.empty() && hits.front() <= now - std::chrono::milliseconds(rule.period).count())
                hits.pop_front();
            if (hits.size() < rule.threshold)
                continue;
            hits.clear();
            const int64_t until = now + std::chrono::milliseconds(rule.duration).count();
            auto it = std::find_if(d->overrides.begin(), d->overrides.end(), [&](const auto& ov) {
                return ov.rule_name == rule.name && ov.source == who;
            });
            if (it == d->overrides.end()) {
                d->overrides.push_back({id, rule.name, who, rule.action, rule.value, now, until, line});
                c.shaping_triggered++;
            } else {
                it->until_ms = until;  // again before it ended: extended
                it->reply = line;
            }
            lg.info("destination={} shaping rule {}: {}{}{} until {} ms from now, after: {}", d->key, rule.name,
                    to_string(rule.action), rule.value ? fmt::format(" {}", rule.value) : std::string(),
                    who.empty() ? std::string() : fmt::format(" source {}", who),
                    std::chrono::milliseconds(rule.duration).count(), line);
            journal::record("shaping", {{"destination", std::string_view(d->key)},
                                        {"rule", std::string_view(rule.name)},
                                        {"action", to_string(rule.action)},
                                        {"value", uint64_t(rule.value)},
                                        {"source", std::string_view(who)},
                                        {"until_ms", until},
                                        {"reply", std::string_view(line)}});
            if (rule.action == shaping_rule::action_t::suspend && who.empty())
                for (cancel_token* t : std::exchange(d->idle, {}))
                    t->cancel();  // idle connections QUIT
            if (rule.action == shaping_rule::action_t::bounce)
                kick(d);
        }
    }
}

void service::impl::expire_overrides(int64_t now) {
    for (auto& [key, d] : dests) {
        const size_t before = d->overrides.size();
        for (const auto& ov : d->overrides)
            if (ov.until_ms <= now)
                journal::record("shaping", {{"destination", std::string_view(d->key)},
                                            {"rule", std::string_view(ov.rule_name)},
                                            {"action", std::string_view("expired")},
                                            {"source", std::string_view(ov.source)}});
        std::erase_if(d->overrides, [&](const auto& ov) { return ov.until_ms <= now; });
        if (d->overrides.size() != before && !d->ready.empty())
            kick(d.get());
    }
}

task<void> service::impl::bounce_ready(impl* self, destination* d) {
    gate::holder h(self->workers);
    const auto* ov = self->overridden(d, shaping_rule::action_t::bounce, now_ms());
    if (ov) {
        smtp_reply r{554, fmt::format("5.7.1 bounced by shaping rule {} after: {}", ov->rule_name, ov->reply), "5.7.1"};
        r.local = true;
        auto t = self->fail_all(d, std::move(r), "");
        co_await std::move(t);
    }
    d->bouncing = false;
}

size_t service::lift_overrides(std::string_view domain, std::string_view rule, std::string_view by) {
    size_t n = 0;
    for (auto& [key, d] : _i->dests) {
        if (!impl::matches(d.get(), domain))
            continue;
        const size_t before = d->overrides.size();
        for (const auto& ov : d->overrides)
            if (rule.empty() || ov.rule_name == rule)
                journal::record("shaping", {{"destination", std::string_view(d->key)},
                                            {"rule", std::string_view(ov.rule_name)},
                                            {"action", std::string_view("lifted")},
                                            {"source", std::string_view(ov.source)},
                                            {"by", by}});
        std::erase_if(d->overrides, [&](const auto& ov) { return rule.empty() || ov.rule_name == rule; });
        if (d->overrides.size() != before) {
            n += before - d->overrides.size();
            d->shaping_hits.clear();
            if (!d->ready.empty())
                _i->kick(d.get());
        }
    }
    return n;
}

}  // namespace rw::mta::delivery
