// Outbound spam control: how much mail each sender of relayed mail sends,
// and the suspension of one that sends too much. A sender is an
// authenticated user ("user:alice") and the domain of its MAIL FROM
// ("domain:example.test"); each has its own counts and limits.
//
// Counts are messages queued, in a sliding hour (60 one-minute buckets)
// and a sliding day (24 one-hour buckets); a message whose sender is at a
// limit gets 452 4.7.1 at MAIL and, with `suspend`, suspends the sender.
// rspamd's verdict on outbound mail counts too: `spam_strikes` messages it
// would reject within a day suspend their sender.
//
// A suspended sender's MAIL gets 550 5.7.1 until the suspension ends
// (suspend_s after it began; 0: until lifted) or is lifted in the shell
// (`ringway outbound lift KEY`). Suspensions are written to a file in the
// state directory at every change and read at start: a restart lifts
// nothing. Counts are kept in memory only.
//
// Shared by every core: one mutex, taken at MAIL and when a message is
// queued, for relayed mail only.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace rw::mta {

struct outbound_options {
    unsigned user_per_hour = 0, user_per_day = 0;      // 0: no limit
    unsigned domain_per_hour = 0, domain_per_day = 0;
    bool suspend = true;              // reaching a limit suspends the sender
    std::chrono::seconds suspend_for{0};  // 0: until lifted
    unsigned spam_strikes = 0;        // spam messages in a day that suspend; 0: none
    bool enabled() const {
        return user_per_hour || user_per_day || domain_per_hour || domain_per_day || spam_strikes;
    }
};

class outbound_control {
public:
    using clock = std::chrono::system_clock;

    // path: the suspensions file ("" keeps them in memory only); loaded now.
    explicit outbound_control(std::string path);
    void set_options(const outbound_options& o);

    struct decision {
        enum class verdict { ok, suspended, over_limit } v = verdict::ok;
        std::string key;     // the sender that decided
        std::string reason;  // for the reply and the log
    };
    // At MAIL: the sender's keys ("" for none).
    decision check(const std::string& user, const std::string& domain, clock::time_point now);
    // A message queued for these keys.
    void record(const std::string& user, const std::string& domain, clock::time_point now);
    // rspamd said reject to an outbound message of these keys.
    void strike(const std::string& user, const std::string& domain, clock::time_point now);

    struct entry {
        std::string key, reason, by;
        int64_t since_unix = 0, until_unix = 0;  // until 0: until lifted
        uint64_t last_hour = 0, last_day = 0;
    };
    std::vector<entry> suspended(clock::time_point now);
    // The busiest senders of the last hour (at most n).
    std::vector<entry> top(size_t n, clock::time_point now);
    void suspend(const std::string& key, const std::string& reason, const std::string& by, clock::time_point now);
    bool lift(const std::string& key);
    const std::string& error() const { return _error; }  // the last file error, for the log

private:
    struct counts {
        std::array<uint32_t, 60> minutes{};
        std::array<uint32_t, 24> hours{};
        int64_t minute = 0, hour = 0;  // the newest bucket's minute and hour since the epoch
        uint32_t strikes_day = 0;
        int64_t strikes_hour = 0;
        void advance(int64_t now_min);
        uint64_t last_hour() const;
        uint64_t last_day() const;
    };
    struct suspension {
        std::string reason, by;
        int64_t since = 0, until = 0;
    };
    counts& counts_of(const std::string& key, int64_t now_min);
    std::optional<std::string> limit_reached(const std::string& key, unsigned per_hour, unsigned per_day,
                                             int64_t now_min);
    void save();
    void load();

    std::mutex _lock;
    std::string _path, _error;
    outbound_options _o;
    std::unordered_map<std::string, counts> _counts;
    std::unordered_map<std::string, suspension> _suspended;
};

}  // namespace rw::mta
