#include "mta/delivery/shared.hh"

#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

namespace rw::mta::delivery {

shared_state::shared_state(std::string path) : _path(std::move(path)) {
    if (_path.empty())
        return;
    std::ifstream in(_path);
    if (!in)
        return;  // none yet
    std::stringstream ss;
    ss << in.rdbuf();
    auto j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("day") || !j["day"].is_number_integer() ||
        !j.contains("counts") || !j["counts"].is_object()) {
        _load_error = fmt::format("{} is not a warm-up counts file; counting from zero", _path);
        return;
    }
    _day = j["day"].get<int64_t>();
    for (const auto& [k, v] : j["counts"].items())
        if (v.is_number_unsigned())
            _daily[k] = v.get<uint64_t>();
}

bool shared_state::acquire(const std::string& key, unsigned limit) {
    std::lock_guard l(_m);
    unsigned& n = _conns[key];
    if (limit && n >= limit)
        return false;
    ++n;
    return true;
}

void shared_state::release(const std::string& key) {
    std::lock_guard l(_m);
    auto it = _conns.find(key);
    if (it != _conns.end() && it->second > 0)
        --it->second;
}

unsigned shared_state::connections(const std::string& key) {
    std::lock_guard l(_m);
    auto it = _conns.find(key);
    return it == _conns.end() ? 0 : it->second;
}

void shared_state::window::advance(int64_t now_minute) {
    if (now_minute <= minute)
        return;
    const int64_t steps = std::min<int64_t>(now_minute - minute, 60);
    for (int64_t i = 1; i <= steps; ++i)
        minutes[size_t((minute + i) % 60)] = 0;
    minute = now_minute;
}

uint64_t shared_state::window::sum() const {
    return std::accumulate(minutes.begin(), minutes.end(), uint64_t(0));
}

int64_t shared_state::hour_wait_ms(const std::string& key, unsigned limit, int64_t now_ms) {
    if (!limit)
        return 0;
    std::lock_guard l(_m);
    auto it = _sends.find(key);
    if (it == _sends.end())
        return 0;
    window& w = it->second;
    const int64_t now_minute = now_ms / 60'000;
    w.advance(now_minute);
    uint64_t total = w.sum();
    if (total < limit)
        return 0;
    // The oldest minutes drop out first: wait until enough of them have.
    for (int64_t m = now_minute - 59; m <= now_minute; ++m) {
        total -= w.minutes[size_t(m % 60)];
        if (total < limit)
            return std::max<int64_t>(1, (m + 60) * 60'000 - now_ms);
    }
    return 3'600'000;
}

void shared_state::add_send(const std::string& key, int64_t now_ms) {
    (void)try_add_send(key, 0, now_ms);  // no limit: always counted
}

bool shared_state::try_add_send(const std::string& key, unsigned limit, int64_t now_ms) {
    std::lock_guard l(_m);
    window& w = _sends[key];
    const int64_t now_minute = now_ms / 60'000;
    if (w.minute == 0)
        w.minute = now_minute;
    w.advance(now_minute);
    if (limit && w.sum() >= limit)
        return false;
    ++w.minutes[size_t(now_minute % 60)];
    return true;
}

void shared_state::remove_send(const std::string& key, int64_t now_ms) {
    std::lock_guard l(_m);
    auto it = _sends.find(key);
    const int64_t m = now_ms / 60'000;
    if (it != _sends.end() && it->second.minute - m < 60 && m <= it->second.minute) {
        auto& b = it->second.minutes[size_t(m % 60)];
        if (b)
            --b;
    }
}

uint64_t shared_state::sent_last_hour(const std::string& key, int64_t now_ms) {
    std::lock_guard l(_m);
    auto it = _sends.find(key);
    if (it == _sends.end())
        return 0;
    it->second.advance(now_ms / 60'000);
    return it->second.sum();
}

void shared_state::roll(int64_t day) {
    if (day != _day) {
        _day = day;
        _daily.clear();
        _dirty = true;
    }
}

uint64_t shared_state::daily(const std::string& source, const std::string& group, int64_t day) {
    std::lock_guard l(_m);
    roll(day);
    auto it = _daily.find(source + "\n" + group);
    return it == _daily.end() ? 0 : it->second;
}

void shared_state::add_daily(const std::string& source, const std::string& group, int64_t day) {
    std::lock_guard l(_m);
    roll(day);
    ++_daily[source + "\n" + group];
    _dirty = true;
}

bool shared_state::try_add_daily(const std::string& source, const std::string& group, int64_t day, unsigned cap) {
    std::lock_guard l(_m);
    roll(day);
    auto& n = _daily[source + "\n" + group];
    if (cap && n >= cap)
        return false;
    ++n;
    _dirty = true;
    return true;
}

std::string shared_state::save(int64_t now_ms, bool force) {
    std::lock_guard fl(_file);
    nlohmann::json j;
    {
        std::lock_guard l(_m);
        if (_path.empty() || !_dirty || (!force && now_ms - _saved_ms < 1000))
            return {};
        _dirty = false;
        _saved_ms = now_ms;
        j["day"] = _day;
        j["counts"] = nlohmann::json::object();
        for (const auto& [k, v] : _daily)
            j["counts"][k] = v;
    }
    // A small file, written without the lock and without fsync: a crash
    // loses at most the last second's counts.
    const std::string tmp = _path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << j.dump() << "\n";
        if (!out)
            return fmt::format("cannot write {}", tmp);
    }
    if (std::rename(tmp.c_str(), _path.c_str()) != 0)
        return fmt::format("cannot rename {} to {}", tmp, _path);
    return {};
}

}  // namespace rw::mta::delivery
