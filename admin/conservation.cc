#include "admin/conservation.hh"

#include "runtime/base/service_notify.hh"

#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"

namespace rw::admin {

namespace {
const logger lg{"conservation"};
}

unsigned next_level(unsigned current, double use, double tarpit_at, double refuse_at, double hysteresis) {
    auto reached = [&](double at) { return at > 0 && use >= at; };
    const unsigned up = reached(refuse_at) ? 2 : reached(tarpit_at) ? 1 : 0;
    if (up >= current)
        return up;
    unsigned l = current;
    while (l > up) {
        const double at = l == 2 ? refuse_at : tarpit_at;
        if (at > 0 && use >= at * (1.0 - hysteresis))
            break;  // not far enough below yet
        --l;
    }
    return l;
}

unsigned conservation::update(const conservation_reading& r, std::string& why) {
    const double h = double(_c.hysteresis_percent) / 100.0;
    const double mem = r.memory_limit_bytes ? 100.0 * double(r.rss_bytes) / double(r.memory_limit_bytes) : 0;
    const double spool = r.spool_total_bytes ? 100.0 * double(r.spool_used_bytes) / double(r.spool_total_bytes) : 0;
    _memory = next_level(_memory, mem, _c.memory_tarpit_percent, _c.memory_refuse_percent, h);
    _spool = next_level(_spool, spool, _c.spool_tarpit_percent, _c.spool_refuse_percent, h);
    _queue = next_level(_queue, double(r.queued_messages), double(_c.queue_tarpit_messages),
                        double(_c.queue_refuse_messages), h);
    _level = std::max({_memory, _spool, _queue});
    why.clear();
    auto add = [&](std::string s) { why += (why.empty() ? "" : ", ") + s; };
    if (_memory)
        add(fmt::format("memory {:.1f}% of {} bytes", mem, r.memory_limit_bytes));
    if (_spool)
        add(fmt::format("spool {:.1f}% used", spool));
    if (_queue)
        add(fmt::format("queue {} messages", r.queued_messages));
    if (why.empty())
        why = fmt::format("memory {:.1f}%, spool {:.1f}%, queue {} messages", mem, spool, r.queued_messages);
    return _level;
}

uint64_t machine_memory_bytes() {
    std::FILE* f = std::fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t kb = 0;
    while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "MemTotal: %lu kB", &kb) == 1)
            break;
    std::fclose(f);
    return kb * 1024;
}

uint64_t resident_bytes() {
    std::FILE* f = std::fopen("/proc/self/statm", "r");  // memory, not disk: does not block
    if (!f)
        return 0;
    unsigned long size = 0, pages = 0;
    int n = std::fscanf(f, "%lu %lu", &size, &pages);
    std::fclose(f);
    return n == 2 ? uint64_t(pages) * uint64_t(::sysconf(_SC_PAGESIZE)) : 0;
}

task<void> run_conservation(registry* reg, cancel_token* stop) {
    conservation state(reg->running->conservation);
    const uint64_t machine = machine_memory_bytes();
    const auto& geo = reg->geometry();
    const uint64_t total = uint64_t(geo.slots_per_shard) * geo.shard_count * geo.segment_bytes;
    std::chrono::milliseconds applied_tarpit{-1};
    while (!stop->cancelled()) {
        if (!(reg->running->conservation == state.config()))
            state.set_config(reg->running->conservation);
        const conservation_config* c = &state.config();
        const uint64_t limit = c->memory_limit_bytes ? c->memory_limit_bytes : machine;
        conservation_reading r;
        r.rss_bytes = resident_bytes();
        r.memory_limit_bytes = limit;
        r.spool_total_bytes = total;
        uint64_t free_slots = 0;
        for (unsigned core = 0; core < reg->cores(); ++core) {
            auto t = reg->call(core, [](core_slot& s) {
                std::pair<uint64_t, uint64_t> x{0, 0};  // free slots, messages
                for (fs::shard* sh : s.shards) {
                    x.first += sh->get_stats().free_slots;
                    x.second += sh->live_count();
                }
                return x;
            });
            auto [f, m] = co_await std::move(t);
            free_slots += f;
            r.queued_messages += m;
        }
        const uint64_t free_bytes = free_slots * uint64_t(geo.segment_bytes);
        r.spool_used_bytes = total > free_bytes ? total - free_bytes : 0;
        std::string why;
        const unsigned before = state.level();
        const unsigned now = state.update(r, why);
        const auto tarpit = c->tarpit_ms;
        if (now != before || tarpit != applied_tarpit) {
            applied_tarpit = tarpit;
            for (unsigned core = 0; core < reg->cores(); ++core) {
                auto t = reg->call(core, [now, tarpit](core_slot& s) {
                    for (auto* env : s.listeners) {
                        env->conservation_level = now;
                        env->tarpit = tarpit;
                    }
                });
                co_await std::move(t);
            }
        }
        if (now != before) {
            static constexpr const char* names[] = {"normal", "tarpit", "refuse"};
            if (now > before)
                lg.warn("resource conservation level {} ({}) from {}: {}", now, names[now], before, why);
            else
                lg.info("resource conservation level {} ({}) from {}: {}", now, names[now], before, why);
            journal::record("conservation", {{"level", uint64_t(now)},
                                             {"was", uint64_t(before)},
                                             {"why", std::string_view(why)}});
            reg->conservation_level = now;
            reg->conservation_reason = why;
        }
        // Every core answered this round: tell the service manager's
        // watchdog that the daemon is alive (a stuck reactor stops this).
        service_notify::send("WATCHDOG=1");
        co_await io::sleep(std::chrono::seconds(1), stop);
    }
}

}  // namespace rw::admin
