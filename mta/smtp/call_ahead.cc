#include "mta/smtp/call_ahead.hh"

#include <fmt/format.h>

#include "mail/domain.hh"

namespace rw::mta {

std::optional<delivery::smtp_reply> call_ahead_cache::find(const std::string& rcpt, clock::time_point now) {
    std::lock_guard g(_lock);
    auto it = _index.find(rcpt);
    if (it == _index.end())
        return std::nullopt;
    if (it->second->until <= now) {
        _lru.erase(it->second);
        _index.erase(it);
        return std::nullopt;
    }
    _lru.splice(_lru.begin(), _lru, it->second);
    return it->second->reply;
}

void call_ahead_cache::put(const std::string& rcpt, const delivery::smtp_reply& r, clock::time_point until) {
    std::lock_guard g(_lock);
    if (auto it = _index.find(rcpt); it != _index.end()) {
        it->second->reply = r;
        it->second->until = until;
        _lru.splice(_lru.begin(), _lru, it->second);
        return;
    }
    _lru.push_front({rcpt, r, until});
    _index.emplace(rcpt, _lru.begin());
    while (_index.size() > _capacity) {
        _index.erase(_lru.back().key);
        _lru.pop_back();
    }
}

void call_ahead_cache::set_capacity(size_t n) {
    std::lock_guard g(_lock);
    _capacity = n ? n : 1;
    while (_index.size() > _capacity) {
        _index.erase(_lru.back().key);
        _lru.pop_back();
    }
}

bool call_ahead_env::covers(std::string_view domain) const {
    for (const auto& d : options.domains) {
        if (d.starts_with('.') ? domain.size() > d.size() && domain.ends_with(d) : domain == d)
            return true;
    }
    return false;
}

task<call_ahead_result> call_ahead(const call_ahead_env* env, std::string rcpt) {
    call_ahead_result out;
    const std::string key = mail::lower_ascii(rcpt);
    const auto now = call_ahead_cache::clock::now();
    if (env->cache)
        if (auto hit = env->cache->find(key, now)) {
            out.reply = *hit;
            out.cached = true;
            out.v = hit->code / 100 == 2 ? call_ahead_result::verdict::valid : call_ahead_result::verdict::invalid;
            co_return out;
        }
    // A flood of recipients must not become a flood of connections to the
    // internal server: past this many at once on a core, the answer is unknown.
    static thread_local unsigned in_flight = 0;
    if (in_flight >= k_max_in_flight) {
        out.why = fmt::format("more than {} call-aheads at once on this core", k_max_in_flight);
        co_return out;
    }
    struct count {
        count() { ++in_flight; }
        ~count() { --in_flight; }
    } counted;
    const auto& o = env->options;
    for (const auto& host : o.hosts) {
        auto tc = net::connect_tcp(host, o.timeout);
        auto conn = co_await std::move(tc);
        if (!conn) {
            out.why = fmt::format("connect to {} failed: {}", host.to_string(), conn.error().message());
            continue;
        }
        conn.value().set_nodelay(true);
        delivery::smtp_client cl(std::move(conn.value()), &env->client);
        delivery::smtp_reply r;
        bool ok = co_await cl.hello(&r);
        if (!ok) {
            // (No QUIT: a server that has not greeted us would not answer it.)
            out.why = fmt::format("{}: {}", host.to_string(), r.code ? r.line() : cl.error);
            continue;
        }
        int got = co_await cl.probe(o.sender, rcpt, &r);
        if (got >= 0)
            co_await cl.quit();
        if (got < 0) {
            out.why = fmt::format("{}: {}", host.to_string(), cl.error);
            continue;
        }
        if (got == 0 || r.code / 100 == 4) {
            // MAIL refused (our sender is not welcome), or the server
            // cannot say now: unknown, and not cached.
            out.why = fmt::format("{} said to {}: {}", host.to_string(), got == 0 ? "MAIL" : "RCPT", r.line());
            out.reply = r;
            co_return out;
        }
        out.reply = r;
        const bool valid = r.code / 100 == 2;
        out.v = valid ? call_ahead_result::verdict::valid : call_ahead_result::verdict::invalid;
        if (env->cache)
            env->cache->put(key, r, call_ahead_cache::clock::now() + (valid ? o.ttl : o.negative_ttl));
        co_return out;
    }
    if (out.why.empty())
        out.why = "no host to ask";
    co_return out;
}

}  // namespace rw::mta
