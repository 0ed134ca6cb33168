// Delivery state that every core of the process shares: the connections
// and hourly sends of each provider (a provider's destinations are owned
// by different cores), and each source's warm-up use per day.
//
// One mutex, taken when a connection to a provider's host opens or ends
// and once per message sent to a provider or from a warming source: a few
// hundred nanoseconds against a message's tens of microseconds. Daily
// warm-up counts are written to a file in the state directory (tmp +
// rename, at most once a second when they changed, and at stop) and read
// at start, so a restart does not reset a source's day.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace rw::mta::delivery {

class shared_state {
public:
    // path: the warm-up counts file ("" keeps them in memory only); read now.
    explicit shared_state(std::string path = {});

    // ---- connections per key (a provider) ----
    // Counts one more unless `limit` (0: none) are open already.
    bool acquire(const std::string& key, unsigned limit);
    void release(const std::string& key);
    unsigned connections(const std::string& key);

    // ---- sends in a sliding hour (60 one-minute buckets) per key ----
    // Milliseconds until one more may be sent under limit (0: now; limit 0: always 0).
    int64_t hour_wait_ms(const std::string& key, unsigned limit, int64_t now_ms);
    void add_send(const std::string& key, int64_t now_ms);
    // Counts one send unless limit (0: none) are in the hour already: the
    // check and the count under one lock, so cores cannot both pass at
    // the limit. remove_send takes one back (same minute).
    bool try_add_send(const std::string& key, unsigned limit, int64_t now_ms);
    void remove_send(const std::string& key, int64_t now_ms);
    uint64_t sent_last_hour(const std::string& key, int64_t now_ms);

    // ---- warm-up: messages per (source, provider group) per UTC day ----
    uint64_t daily(const std::string& source, const std::string& group, int64_t day);
    void add_daily(const std::string& source, const std::string& group, int64_t day);
    // Counts one unless cap (0: none) are counted already today.
    bool try_add_daily(const std::string& source, const std::string& group, int64_t day, unsigned cap);
    // Writes the counts when they changed (every call at most once a
    // second; force: now). Returns the error, "" when fine.
    std::string save(int64_t now_ms, bool force = false);
    const std::string& load_error() const { return _load_error; }

    static int64_t day_of(int64_t unix_ms) { return unix_ms / 86'400'000; }

private:
    struct window {
        std::array<uint32_t, 60> minutes{};
        int64_t minute = 0;  // of the newest bucket, since the epoch
        void advance(int64_t now_minute);
        uint64_t sum() const;
    };
    std::mutex _m;
    std::mutex _file;  // one writer of the file at a time
    std::map<std::string, unsigned, std::less<>> _conns;
    std::map<std::string, window, std::less<>> _sends;
    // Today's counts only: "source\ngroup" -> messages.
    int64_t _day = 0;
    std::map<std::string, uint64_t, std::less<>> _daily;
    bool _dirty = false;
    int64_t _saved_ms = 0;
    std::string _path, _load_error;
    void roll(int64_t day);  // with _m held
};

}  // namespace rw::mta::delivery
