// The admin plane's operations on queued mail: selecting messages,
// bouncing their recipients, redirecting them to another host.
#include <algorithm>

#include "mail/domain.hh"
#include "mta/delivery/queue_impl.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"

namespace rw::mta::delivery {

namespace {
const logger lg{"delivery"};

}  // namespace

std::vector<service::selected> service::select(const selection& s) const {
    std::vector<selected> out;
    auto consider = [&](fs::shard* sh, uint64_t id) {
        auto v = sh->find(id);
        if (!v)
            return;
        if (!s.sender.empty() && !mail::iequals(v->env.mail_from, s.sender))
            return;
        selected x{id, {}};
        for (uint32_t i = 0; i < v->rcpts.size() && i < v->env.rcpts.size(); ++i) {
            if (is_final(v->rcpts[i].status))
                continue;
            if (!s.rcpt_domain.empty() && domain_of(v->env.rcpts[i]) != s.rcpt_domain)
                continue;
            x.rcpts.push_back(i);
        }
        if (!x.rcpts.empty())
            out.push_back(std::move(x));
    };
    if (!s.all && s.mid == 0 && s.rcpt_domain.empty() && s.sender.empty())
        return out;
    for (fs::shard* sh : _i->shards) {
        if (s.mid) {
            if (fs::shard::index_of(s.mid) == sh->index())
                consider(sh, s.mid);
            continue;
        }
        for (uint64_t id : sh->live_ids())
            consider(sh, id);
    }
    return out;
}

task<size_t> service::bounce(std::vector<selected> which, std::string reply) {
    size_t n = 0;
    const std::string code = enhanced_of(reply, false);
    for (auto& x : which) {
        fs::shard* sh = nullptr;
        for (fs::shard* s : _i->shards)
            if (fs::shard::index_of(x.id) == s->index())
                sh = s;
        if (!sh)
            continue;
        std::vector<outcome> outs;
        {
            auto v = sh->find(x.id);
            if (!v)
                continue;
            for (uint32_t idx : x.rcpts) {
                if (idx >= v->rcpts.size() || is_final(v->rcpts[idx].status))
                    continue;
                outcome o;
                o.idx = idx;
                o.status = fs::rcpt_status::bounced;
                o.attempts = v->rcpts[idx].attempts;
                o.reply = reply;
                o.status_code = code;
                outs.push_back(std::move(o));
                journal::record("delivery", {{"mid", std::string_view(mid_string(x.id))},
                                             {"rcpt", std::string_view(v->env.rcpts[idx])},
                                             {"code", int64_t(550)},
                                             {"reply", std::string_view(reply)},
                                             {"disposition", std::string_view("bounced")}});
            }
        }
        n += outs.size();
        _i->c.bounced += outs.size();
        if (!outs.empty()) {
            auto t = impl::apply_at_origin(_i->o, sh, x.id, std::move(outs));
            co_await std::move(t);
        }
    }
    co_return n;
}

const route* service::impl::redirect_route(const std::string& key) {
    auto it = redirects.find(key);
    if (it != redirects.end())
        return &it->second;
    // "redirect:HOST:PORT" ("[v6]:PORT" for IPv6).
    std::string hp(key_base(key).substr(9));
    size_t colon = hp.rfind(':');
    route r;
    r.domain = key;
    route_host h;
    h.name = hp.substr(0, colon);
    if (h.name.size() > 2 && h.name.front() == '[' && h.name.back() == ']')
        h.name = h.name.substr(1, h.name.size() - 2);
    h.port = uint16_t(std::stoul(hp.substr(colon + 1)));
    if (auto a = net::address::parse(h.name, h.port)) {
        h.addr = *a;
        h.literal = true;
    } else {
        h.literal = false;
    }
    r.hosts.push_back(std::move(h));
    return &redirects.emplace(key, std::move(r)).first->second;
}

size_t service::redirect(const std::vector<std::pair<unsigned, selected>>& which, const std::string& host,
                         uint16_t port) {
    const std::string key = host.find(':') != std::string::npos ? fmt::format("redirect:[{}]:{}", host, port)
                                                                : fmt::format("redirect:{}:{}", host, port);
    // (origin, id) -> recipients to move.
    std::map<std::pair<unsigned, uint64_t>, std::vector<uint32_t>> wanted;
    for (const auto& [origin, x] : which)
        wanted[{origin, x.id}] = x.rcpts;
    size_t n = 0;
    // Splits e: the recipients wanted go into `moved`, the rest stay. A
    // moved entry keeps its destination's pool and REQUIRETLS ("#POOL",
    // "!requiretls" after the base of its key).
    using moved_entry = std::pair<std::string, entry>;
    auto split = [&](entry& e, const std::string& from_key, std::vector<moved_entry>& moved) {
        auto it = wanted.find({e.origin, e.id});
        if (it == wanted.end())
            return;
        entry m = e;
        m.rcpts.clear();
        std::vector<uint32_t> keep;
        for (uint32_t r : e.rcpts)
            (std::find(it->second.begin(), it->second.end(), r) != it->second.end() ? m.rcpts : keep).push_back(r);
        if (m.rcpts.empty())
            return;
        e.rcpts = std::move(keep);
        m.due_ms = 0;
        n += m.rcpts.size();
        moved.emplace_back(key + from_key.substr(key_base(from_key).size()), std::move(m));
    };
    std::vector<moved_entry> moved;
    for (auto& [k, d] : _i->dests) {
        if (key_base(k) == key)
            continue;
        for (auto& e : d->ready)
            split(e, k, moved);
        d->ready.erase(std::remove_if(d->ready.begin(), d->ready.end(), [](const entry& e) { return e.rcpts.empty(); }),
                       d->ready.end());
    }
    for (auto it = _i->deferred.begin(); it != _i->deferred.end();) {
        if (key_base(it->second.first->key) != key)
            split(it->second.second, it->second.first->key, moved);
        if (it->second.second.rcpts.empty())
            it = _i->deferred.erase(it);
        else
            ++it;
    }
    for (auto& [k, e] : moved)
        spawn(impl::post(_i.get(), _i->owner_of(k), k, std::move(e)));
    if (n)
        lg.info("redirected recipients={} to {}:{}", n, host, port);
    return n;
}

}  // namespace rw::mta::delivery
