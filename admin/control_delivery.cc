// `warmup status` and `providers`: delivery's shared counters (the object
// is shared by every core, with its own lock: no hop to another core).
#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "admin/control.hh"
#include "admin/control_commands.hh"
#include "admin/settings.hh"
#include "mta/delivery/shared.hh"

namespace rw::admin::control_detail {

using json = nlohmann::json;

namespace {
int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string date_of(int64_t day) {
    const std::chrono::year_month_day ymd{std::chrono::sys_days(std::chrono::days(day))};
    return fmt::format("{:04}-{:02}-{:02}", int(ymd.year()), unsigned(ymd.month()), unsigned(ymd.day()));
}
}  // namespace

task<json> cmd_warmup(context& c, const peer_cred&, const json& args) {
    const std::string action = args.contains("action") && args["action"].is_string() ? args["action"].get<std::string>()
                                                                                   : std::string();
    if (!action.empty() && action != "status")
        throw command_error(fmt::format("warmup: unknown action {}; allowed: status", action));
    mta::delivery::shared_state* sh = c.reg->delivery_shared;
    if (!sh)
        throw command_error("delivery is not running");
    const auto o = delivery_options(*c.reg->running);
    const int64_t today = mta::delivery::shared_state::day_of(now_ms());
    json rows = json::array();
    for (const auto& s : o.sources) {
        if (s.warmup.empty())
            continue;
        const auto* w = [&]() -> const mta::delivery::warmup_schedule* {
            for (const auto& x : o.warmups)
                if (x.name == s.warmup)
                    return &x;
            return nullptr;
        }();
        if (!w)
            continue;
        const int64_t day = std::max<int64_t>(1, today - s.warmup_start_day + 1);
        json groups = json::array();
        bool warm = true;
        auto group = [&](const std::string& name, const std::vector<unsigned>& caps) {
            const unsigned cap = size_t(day) <= caps.size() ? caps[size_t(day - 1)] : 0;
            warm = warm && cap == 0;
            groups.push_back({{"provider", name},
                              {"cap", cap},
                              {"used", sh->daily(s.name, name, today)},
                              {"days", caps.size()}});
        };
        for (const auto& [name, caps] : w->providers)
            group(name, caps);
        if (!w->default_caps.empty())
            group("*", w->default_caps);
        rows.push_back({{"source", s.name},
                        {"address", s.addr.ip_string()},
                        {"schedule", w->name},
                        {"start", date_of(s.warmup_start_day)},
                        {"day", day},
                        {"warm", warm},
                        {"providers", std::move(groups)}});
    }
    co_return json{{"date", date_of(today)}, {"sources", std::move(rows)}};
}

task<json> cmd_providers(context& c, const peer_cred&, const json&) {
    mta::delivery::shared_state* sh = c.reg->delivery_shared;
    if (!sh)
        throw command_error("delivery is not running");
    const auto o = delivery_options(*c.reg->running);
    const int64_t now = now_ms();
    json rows = json::array();
    for (const auto& p : o.providers) {
        const std::string key = "provider:" + p.name;
        rows.push_back({{"provider", p.name},
                        {"mx_suffixes", p.mx_suffixes},
                        {"max_connections", p.max_connections},
                        {"connections", sh->connections(key)},
                        {"max_messages_per_hour", p.max_messages_per_hour},
                        {"sent_last_hour", sh->sent_last_hour(key, now)}});
    }
    co_return json{{"providers", std::move(rows)}};
}

}  // namespace rw::admin::control_detail
