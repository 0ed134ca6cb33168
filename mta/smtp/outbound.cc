#include "mta/smtp/outbound.hh"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace rw::mta {

namespace {
constexpr size_t k_max_keys = 100'000;  // senders counted; idle ones are forgotten first

int64_t minutes_of(outbound_control::clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::minutes>(t.time_since_epoch()).count();
}
int64_t unix_of(outbound_control::clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}
}  // namespace

void outbound_control::counts::advance(int64_t now_min) {
    const int64_t now_hour = now_min / 60;
    if (now_min - minute >= 60)
        minutes.fill(0);
    else
        for (int64_t m = minute + 1; m <= now_min; ++m)
            minutes[size_t(m % 60)] = 0;
    if (now_hour - hour >= 24)
        hours.fill(0);
    else
        for (int64_t h = hour + 1; h <= now_hour; ++h)
            hours[size_t(h % 24)] = 0;
    if (now_hour - strikes_hour >= 24)
        strikes_day = 0;
    minute = std::max(minute, now_min);
    hour = std::max(hour, now_hour);
}

uint64_t outbound_control::counts::last_hour() const {
    uint64_t n = 0;
    for (auto c : minutes)
        n += c;
    return n;
}

uint64_t outbound_control::counts::last_day() const {
    uint64_t n = 0;
    for (auto c : hours)
        n += c;
    return n;
}

outbound_control::outbound_control(std::string path) : _path(std::move(path)) { load(); }

void outbound_control::set_options(const outbound_options& o) {
    std::lock_guard g(_lock);
    _o = o;
}

outbound_control::counts& outbound_control::counts_of(const std::string& key, int64_t now_min) {
    auto it = _counts.find(key);
    if (it == _counts.end()) {
        if (_counts.size() >= k_max_keys) {
            for (auto& kv : _counts)
                kv.second.advance(now_min);
            std::erase_if(_counts, [](const auto& kv) { return kv.second.last_day() == 0 && kv.second.strikes_day == 0; });
        }
        counts c;
        c.minute = now_min;
        c.hour = now_min / 60;
        c.strikes_hour = c.hour;
        it = _counts.emplace(key, c).first;
    }
    it->second.advance(now_min);
    return it->second;
}

std::optional<std::string> outbound_control::limit_reached(const std::string& key, unsigned per_hour,
                                                           unsigned per_day, int64_t now_min) {
    if (key.empty() || (!per_hour && !per_day))
        return std::nullopt;
    counts& c = counts_of(key, now_min);
    if (per_hour && c.last_hour() >= per_hour)
        return fmt::format("{} messages in the last hour (limit {})", c.last_hour(), per_hour);
    if (per_day && c.last_day() >= per_day)
        return fmt::format("{} messages in the last day (limit {})", c.last_day(), per_day);
    return std::nullopt;
}

outbound_control::decision outbound_control::check(const std::string& user, const std::string& domain,
                                                   clock::time_point now) {
    std::lock_guard g(_lock);
    decision d;
    const int64_t now_unix = unix_of(now);
    for (const std::string* k : {&user, &domain}) {
        if (k->empty())
            continue;
        auto it = _suspended.find(*k);
        if (it == _suspended.end())
            continue;
        if (it->second.until && it->second.until <= now_unix) {
            _suspended.erase(it);
            save();
            continue;
        }
        d.v = decision::verdict::suspended;
        d.key = *k;
        d.reason = it->second.reason;
        return d;
    }
    const int64_t now_min = minutes_of(now);
    const std::pair<const std::string*, std::pair<unsigned, unsigned>> limits[] = {
        {&user, {_o.user_per_hour, _o.user_per_day}}, {&domain, {_o.domain_per_hour, _o.domain_per_day}}};
    for (const auto& [k, l] : limits)
        if (auto why = limit_reached(*k, l.first, l.second, now_min)) {
            d.v = decision::verdict::over_limit;
            d.key = *k;
            d.reason = *why;
            if (_o.suspend) {
                _suspended[*k] = {*why, "limit", now_unix,
                                  _o.suspend_for.count() ? now_unix + _o.suspend_for.count() : 0};
                save();
            }
            return d;
        }
    return d;
}

void outbound_control::record(const std::string& user, const std::string& domain, clock::time_point now) {
    std::lock_guard g(_lock);
    const int64_t now_min = minutes_of(now);
    for (const std::string* k : {&user, &domain}) {
        if (k->empty())
            continue;
        counts& c = counts_of(*k, now_min);
        c.minutes[size_t(now_min % 60)]++;
        c.hours[size_t((now_min / 60) % 24)]++;
    }
}

void outbound_control::strike(const std::string& user, const std::string& domain, clock::time_point now) {
    std::lock_guard g(_lock);
    if (!_o.spam_strikes)
        return;
    const int64_t now_min = minutes_of(now);
    for (const std::string* k : {&user, &domain}) {
        if (k->empty())
            continue;
        counts& c = counts_of(*k, now_min);
        if (c.strikes_day == 0)
            c.strikes_hour = now_min / 60;
        if (++c.strikes_day >= _o.spam_strikes && !_suspended.contains(*k)) {
            const int64_t now_unix = unix_of(now);
            _suspended[*k] = {fmt::format("{} messages scored as spam in a day (limit {})", c.strikes_day,
                                          _o.spam_strikes),
                              "spam", now_unix, _o.suspend_for.count() ? now_unix + _o.suspend_for.count() : 0};
            save();
        }
    }
}

std::vector<outbound_control::entry> outbound_control::suspended(clock::time_point now) {
    std::lock_guard g(_lock);
    std::vector<entry> out;
    const int64_t now_min = minutes_of(now);
    for (const auto& [k, s] : _suspended) {
        entry e{k, s.reason, s.by, s.since, s.until, 0, 0};
        if (auto it = _counts.find(k); it != _counts.end()) {
            it->second.advance(now_min);
            e.last_hour = it->second.last_hour();
            e.last_day = it->second.last_day();
        }
        out.push_back(std::move(e));
    }
    std::sort(out.begin(), out.end(), [](const entry& a, const entry& b) { return a.since_unix < b.since_unix; });
    return out;
}

std::vector<outbound_control::entry> outbound_control::top(size_t n, clock::time_point now) {
    std::lock_guard g(_lock);
    std::vector<entry> out;
    const int64_t now_min = minutes_of(now);
    for (auto& [k, c] : _counts) {
        c.advance(now_min);
        if (c.last_day())
            out.push_back(entry{k, {}, {}, 0, 0, c.last_hour(), c.last_day()});
    }
    std::sort(out.begin(), out.end(), [](const entry& a, const entry& b) {
        return a.last_hour != b.last_hour ? a.last_hour > b.last_hour : a.key < b.key;
    });
    if (out.size() > n)
        out.resize(n);
    return out;
}

void outbound_control::suspend(const std::string& key, const std::string& reason, const std::string& by,
                               clock::time_point now) {
    std::lock_guard g(_lock);
    _suspended[key] = {reason, by, unix_of(now), 0};
    save();
}

bool outbound_control::lift(const std::string& key) {
    std::lock_guard g(_lock);
    bool had = _suspended.erase(key) > 0;
    if (had) {
        if (auto it = _counts.find(key); it != _counts.end()) {
            // A fresh start: the counts that suspended it would again at once.
            it->second.minutes.fill(0);
            it->second.hours.fill(0);
            it->second.strikes_day = 0;
        }
        save();
    }
    return had;
}

void outbound_control::save() {
    if (_path.empty())
        return;
    nlohmann::json j = nlohmann::json::object();
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [k, s] : _suspended)
        list.push_back({{"key", k}, {"reason", s.reason}, {"by", s.by}, {"since", s.since}, {"until", s.until}});
    j["suspended"] = std::move(list);
    const std::string tmp = _path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << j.dump(1) << "\n";
        if (!out) {
            _error = fmt::format("cannot write {}", tmp);
            return;
        }
    }
    if (std::rename(tmp.c_str(), _path.c_str()) != 0)
        _error = fmt::format("cannot rename {} to {}", tmp, _path);
}

void outbound_control::load() {
    if (_path.empty())
        return;
    std::ifstream in(_path);
    if (!in)
        return;
    std::stringstream ss;
    ss << in.rdbuf();
    auto j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("suspended") || !j["suspended"].is_array()) {
        _error = fmt::format("{} is not a suspensions file; ignored", _path);
        return;
    }
    for (const auto& e : j["suspended"]) {
        if (!e.is_object() || !e.contains("key") || !e["key"].is_string())
            continue;
        suspension s;
        s.reason = e.value("reason", std::string());
        s.by = e.value("by", std::string());
        s.since = e.value("since", int64_t(0));
        s.until = e.value("until", int64_t(0));
        _suspended[e["key"].get<std::string>()] = std::move(s);
    }
}

}  // namespace rw::mta
