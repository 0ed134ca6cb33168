#include "admin/shell/commands.hh"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>

#include "admin/config_schema.hh"
#include "admin/shell/client.hh"

namespace rw::admin::shell {

namespace {
using json = nlohmann::json;

// ---- formatting helpers ----

std::string human_age(int64_t s) {
    if (s < 0)
        s = 0;
    if (s < 60)
        return fmt::format("{}s", s);
    if (s < 3600)
        return fmt::format("{}m{:02}s", s / 60, s % 60);
    if (s < 86400)
        return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
    return fmt::format("{}d{:02}h", s / 86400, (s % 86400) / 3600);
}

std::string human_bytes(uint64_t b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = double(b);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.1f} {}", v, units[u]);
}

std::string unix_time(int64_t t) {
    if (t <= 0)
        return "-";
    std::time_t tt = std::time_t(t);
    std::tm tm{};
    ::gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
    return buf;
}

int64_t now_unix() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

uint64_t u(const json& j, const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<uint64_t>() : 0; }
int64_t i(const json& j, const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<int64_t>() : 0; }
double d(const json& j, const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<double>() : 0.0; }
std::string s(const json& j, const char* k) {
    return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
}

// A table: the first row is the header; columns padded to their widest.
std::string table(const std::vector<std::vector<std::string>>& rows) {
    if (rows.empty())
        return {};
    std::vector<size_t> w(rows.front().size(), 0);
    for (const auto& r : rows)
        for (size_t c = 0; c < r.size() && c < w.size(); ++c)
            w[c] = std::max(w[c], r[c].size());
    std::string out;
    for (const auto& r : rows) {
        std::string line;
        for (size_t c = 0; c < r.size(); ++c) {
            if (c + 1 == r.size())
                line += r[c];
            else
                line += fmt::format("{:<{}}  ", r[c], w[c]);
        }
        while (!line.empty() && line.back() == ' ')
            line.pop_back();
        out += line + "\n";
    }
    return out;
}

std::string paused_text(const json& x) {
    std::string p;
    if (x.contains("suspended") && x["suspended"].is_boolean() && x["suspended"].get<bool>())
        p = "suspended";
    else if (int64_t until = i(x, "paused_until_unix_ms"); until > 0)
        p = fmt::format("paused {}", human_age((until + 999) / 1000 - now_unix()));
    return p.empty() ? "-" : p;
}

bool is_mid(const std::string& w) {
    return !w.empty() && w.size() <= 16 &&
           std::all_of(w.begin(), w.end(), [](char ch) { return std::isxdigit(uint8_t(ch)); });
}

std::string destination_name(const json& x) {
    std::string k = s(x, "destination");
    if (k.starts_with("mx:"))
        return k.substr(3);
    return k;  // route:PATTERN stays marked as a route
}

// ---- formatters ----

std::string change_line(const json& ch) {
    const std::string when = s(ch, "apply") == "restart" ? "  (at restart)" : "";
    if (s(ch, "before").empty())
        return fmt::format("  + {} = {}{}\n", s(ch, "key"), s(ch, "after"), when);
    if (s(ch, "after").empty())
        return fmt::format("  - {} = {}{}\n", s(ch, "key"), s(ch, "before"), when);
    return fmt::format("  ~ {}: {} -> {}{}\n", s(ch, "key"), s(ch, "before"), s(ch, "after"), when);
}

std::string pending_text(const json& r) {
    if (!r.contains("pending_restart") || r["pending_restart"].empty())
        return {};
    std::vector<std::string> keys;
    for (const auto& k : r["pending_restart"])
        keys.push_back(k.get<std::string>());
    return fmt::format("waiting for a restart of ringwayd: {}\n", fmt::join(keys, ", "));
}

std::string fmt_status(const json& r) {
    const json& c = r["counters"];
    const json& g = r["gauges"];
    const json& rates = r["rates_per_minute"];
    std::string o;
    o += fmt::format("Ringway {} on {}, up {} ({} cores)\n", s(r, "version"), s(r, "hostname"),
                     human_age(i(r, "uptime_seconds")), u(r, "cores"));
    o += fmt::format("configuration version {}\n", u(r, "config_version"));
    o += pending_text(r);
    o += "\nCounters (since start)        total      1m/min    5m/min   15m/min\n";
    auto row = [&](const char* label, const char* key) {
        o += fmt::format("  {:<24}{:>10} {:>11.1f} {:>9.1f} {:>9.1f}\n", label, u(c, key), d(rates["1m"], key),
                         d(rates["5m"], key), d(rates["15m"], key));
    };
    row("messages received", "messages_received");
    row("recipients received", "recipients_received");
    row("recipients delivered", "recipients_delivered");
    row("recipients deferred", "recipients_deferred");
    row("recipients bounced", "recipients_bounced");
    row("rejected", "rejected");
    if (c.contains("rejected_by_code") && !c["rejected_by_code"].empty()) {
        std::string codes;
        for (auto it = c["rejected_by_code"].begin(); it != c["rejected_by_code"].end(); ++it)
            codes += fmt::format("{}{}: {}", codes.empty() ? "" : ", ", it.key(), it.value().get<uint64_t>());
        o += fmt::format("    by code: {}\n", codes);
    }
    o += fmt::format("  {:<24}{:>10}\n", "connections in", u(c, "connections_in"));
    o += fmt::format("  {:<24}{:>10}\n", "connections out", u(c, "connections_out"));
    o += fmt::format("  {:<24}{:>10}\n", "reports (DSN) sent", u(c, "reports_sent"));
    o += "\nGauges\n";
    o += fmt::format("  {:<24}{:>10} in, {} out\n", "connections open", u(g, "connections_in"),
                     u(g, "connections_out"));
    o += fmt::format("  {:<24}{:>10}\n", "messages queued", u(g, "queued_messages"));
    const json& q = g["queued_recipients"];
    o += fmt::format("  {:<24}{:>10} active, {} waiting for retry, {} never attempted\n", "recipients queued",
                     u(q, "active"), u(q, "retry"), u(q, "never_attempted"));
    const json& sp = g["spool"];
    const uint64_t total = u(sp, "bytes_total"), free = u(sp, "bytes_free");
    o += fmt::format("  {:<24}{:>10} used of {} ({} free)\n", "spool", human_bytes(total - std::min(total, free)),
                     human_bytes(total), human_bytes(free));
    o += fmt::format("  {:<24}{:>10}\n", "memory (RSS)", human_bytes(u(g, "memory_rss_bytes")));
    if (g.contains("system_memory")) {
        const uint64_t mt = u(g["system_memory"], "total_bytes"), ma = u(g["system_memory"], "available_bytes");
        o += fmt::format("  {:<24}{:>10} used of {}\n", "memory (machine)", human_bytes(mt - std::min(mt, ma)),
                         human_bytes(mt));
    }
    if (g.contains("state_disk")) {
        const json& d = g["state_disk"];
        const uint64_t dt = u(d, "bytes_total"), df = u(d, "bytes_free");
        const bool low = dt && df * 20 < dt;  // under 5% free
        o += fmt::format("  {:<24}{:>10} free of {} ({}){}\n", "state disk", human_bytes(df), human_bytes(dt),
                         s(d, "path"), low ? "  LOW: old configuration versions and logs can be removed" : "");
    }
    o += fmt::format("  {:<24}{:>10} hits, {} misses\n", "DNS cache", u(g["dns"], "cache_hits"),
                     u(g["dns"], "cache_misses"));
    {
        static const char* names[] = {"normal", "tarpit", "refuse"};
        const uint64_t lvl = std::min<uint64_t>(u(g, "conservation_level"), 2);
        o += fmt::format("  {:<24}{:>10} ({}{}{})\n", "resource conservation", lvl, names[lvl],
                         lvl ? ": " : "", lvl ? s(g, "conservation_reason") : "");
    }
    if (g.contains("listeners_suspended") && !g["listeners_suspended"].empty()) {
        std::vector<std::string> names;
        for (const auto& x : g["listeners_suspended"])
            names.push_back(x.get<std::string>());
        o += fmt::format("  {:<24}{:>10}\n", "listeners suspended", fmt::join(names, ", "));
    }
    if (g.contains("delivery_suspended") && !g["delivery_suspended"].empty()) {
        std::string list;
        for (const auto& x : g["delivery_suspended"]) {
            std::string n = x.get<std::string>();
            list += fmt::format("{}{}", list.empty() ? "" : ", ", n.empty() ? "all" : n);
        }
        o += fmt::format("  {:<24}{:>10}\n", "delivery suspended", list);
    }
    if (r.contains("per_core")) {
        o += "\nPer core\n";
        std::vector<std::vector<std::string>> rows{{"  core", "cpu", "loop iterations", "queued", "conn out"}};
        for (const auto& pc : r["per_core"])
            rows.push_back({fmt::format("  {}", u(pc, "core")), fmt::format("{:.2f}s", d(pc, "cpu_seconds")),
                            std::to_string(u(pc, "loop_iterations")), std::to_string(u(pc, "queued_messages")),
                            std::to_string(u(pc, "connections_out"))});
        o += table(rows);
    }
    return o;
}

std::string fmt_workqueue(const json& r) {
    const json& ds = r["destinations"];
    if (ds.empty())
        return "The queue is empty.\n";
    std::vector<std::vector<std::string>> rows{
        {"DESTINATION", "QUEUED", "RETRY", "OLDEST", "CONN", "IN FLIGHT", "HELD", "LAST ERROR"}};
    for (const auto& x : ds)
        rows.push_back({destination_name(x), std::to_string(u(x, "queued_recipients")),
                        std::to_string(u(x, "retry_recipients")), human_age(i(x, "oldest_age_seconds")),
                        std::to_string(u(x, "connections")), std::to_string(u(x, "in_flight_messages")),
                        paused_text(x), s(x, "last_error").empty() ? "-" : s(x, "last_error")});
    return table(rows);
}

std::string fmt_tophosts(const json& r) {
    const json& ds = r["destinations"];
    if (ds.empty())
        return "No destinations yet.\n";
    std::vector<std::vector<std::string>> rows{
        {"DESTINATION", "ACTIVE", "CONN", "DELIVERED", "SOFT", "HARD", "LATENCY"}};
    for (const auto& x : ds)
        rows.push_back({destination_name(x), std::to_string(u(x, "queued_recipients")),
                        std::to_string(u(x, "connections")), std::to_string(u(x, "delivered")),
                        std::to_string(u(x, "deferred")), std::to_string(u(x, "bounced")),
                        fmt::format("{} ms", u(x, "mean_latency_ms"))});
    return fmt::format("Sorted by {}\n", s(r, "sort")) + table(rows);
}

std::string fmt_hoststatus(const json& r) {
    std::string o;
    for (const auto& x : r["destinations"]) {
        o += fmt::format("{}\n", s(x, "destination"));
        auto line = [&](const char* label, const std::string& v) { o += fmt::format("  {:<22}{}\n", label, v); };
        line("owner core", std::to_string(u(x, "core")));
        line("queued recipients", fmt::format("{} ({} ready, {} waiting for retry, {} in flight)",
                                              u(x, "queued_recipients"), u(x, "ready_recipients"),
                                              u(x, "retry_recipients"), u(x, "in_flight_recipients")));
        line("oldest", i(x, "oldest_age_seconds") ? human_age(i(x, "oldest_age_seconds")) : "-");
        line("connections", fmt::format("{} open ({} idle), {} made", u(x, "connections"), u(x, "idle_connections"),
                                        u(x, "connections_made")));
        line("state", paused_text(x) == "-" ? "delivering" : paused_text(x));
        std::string host = s(x, "last_host");
        line("last connection", host.empty() ? "-"
                                             : fmt::format("{} [{}] at {}, TLS {}", host, s(x, "last_ip"),
                                                           unix_time(i(x, "last_connection_unix_ms") / 1000),
                                                           s(x, "last_tls").empty() ? "none" : s(x, "last_tls")));
        line("recipients", fmt::format("{} delivered, {} deferred, {} bounced", u(x, "delivered"), u(x, "deferred"),
                                       u(x, "bounced")));
        line("mean latency", fmt::format("{} ms", u(x, "mean_latency_ms")));
        line("limits", fmt::format("{} connections, {} per minute{}", u(x, "connection_limit"),
                                   u(x, "rate_limit_per_minute") ? std::to_string(u(x, "rate_limit_per_minute"))
                                                                 : std::string("no limit"),
                                   x.value("backed_off", false) ? " (backed off)" : ""));
        if (!s(x, "pool").empty()) {
            std::string src;
            for (const auto& y : x["sources"])
                src += fmt::format("{}{} ({} open, {} made)", src.empty() ? "" : ", ", s(y, "source"),
                                   u(y, "connections"), u(y, "connections_made"));
            line("pool", fmt::format("{}: {}", s(x, "pool"), src.empty() ? "no connection yet" : src));
        }
        if (!s(x, "provider").empty())
            line("provider", s(x, "provider"));
        for (const auto& ov : x["overrides"])
            line("shaping override",
                 fmt::format("{}{}{} by rule {} until {} (after: {})", s(ov, "action"),
                             u(ov, "value") ? fmt::format(" {}", u(ov, "value")) : std::string(),
                             s(ov, "source").empty() ? std::string() : fmt::format(" source {}", s(ov, "source")),
                             s(ov, "rule"), unix_time(i(ov, "until_ms") / 1000), s(ov, "reply")));
        line("last error", s(x, "last_error").empty()
                               ? "-"
                               : fmt::format("{} ({})", s(x, "last_error"), unix_time(i(x, "last_error_unix_ms") / 1000)));
    }
    return o;
}

std::string fmt_warmup(const json& r) {
    if (r["sources"].empty())
        return "no source is warming up (set warmup and warmup_start on a [[source]])\n";
    std::vector<std::vector<std::string>> rows{{"SOURCE", "ADDRESS", "SCHEDULE", "DAY", "PROVIDER", "CAP TODAY", "USED"}};
    for (const auto& x : r["sources"])
        for (const auto& g : x["providers"])
            rows.push_back({s(x, "source"), s(x, "address"), s(x, "schedule"),
                            fmt::format("{} (since {})", u(x, "day"), s(x, "start")),
                            s(g, "provider") == "*" ? "others" : s(g, "provider"),
                            u(g, "cap") ? std::to_string(u(g, "cap")) : std::string("warm"), std::to_string(u(g, "used"))});
    return fmt::format("{} (UTC)\n", s(r, "date")) + table(rows);
}

std::string fmt_shaping(const json& r) {
    if (r.contains("lifted"))
        return fmt::format("{} override(s) lifted\n", u(r, "lifted"));
    if (r["overrides"].empty())
        return "no shaping override is in force\n";
    std::vector<std::vector<std::string>> rows{{"DESTINATION", "RULE", "ACTION", "SOURCE", "SINCE", "UNTIL", "AFTER"}};
    for (const auto& x : r["overrides"])
        rows.push_back({s(x, "destination"), s(x, "rule"),
                        u(x, "value") ? fmt::format("{} {}", s(x, "action"), u(x, "value")) : s(x, "action"),
                        s(x, "source").empty() ? "-" : s(x, "source"), unix_time(i(x, "since_unix_ms") / 1000),
                        unix_time(i(x, "until_unix_ms") / 1000), s(x, "reply")});
    return table(rows);
}

std::string fmt_providers(const json& r) {
    std::vector<std::vector<std::string>> rows{{"PROVIDER", "CONNECTIONS", "LIMIT", "SENT LAST HOUR", "LIMIT", "MX SUFFIXES"}};
    for (const auto& x : r["providers"]) {
        std::vector<std::string> sfx;
        for (const auto& y : x["mx_suffixes"])
            sfx.push_back(y.get<std::string>());
        auto lim = [&](const char* k) { return u(x, k) ? std::to_string(u(x, k)) : std::string("-"); };
        rows.push_back({s(x, "provider"), std::to_string(u(x, "connections")), lim("max_connections"),
                        std::to_string(u(x, "sent_last_hour")), lim("max_messages_per_hour"),
                        fmt::format("{}", fmt::join(sfx, " "))});
    }
    return table(rows);
}

std::string fmt_showmessage(const json& r) {
    std::string o;
    o += fmt::format("Message {}  (core {}, shard {})\n", s(r, "mid"), u(r, "core"), u(r, "shard"));
    o += fmt::format("  received   {}\n", unix_time(i(r, "received_unix")));
    o += fmt::format("  from       <{}>\n", s(r, "mail_from"));
    o += fmt::format("  size       {} bytes\n", u(r, "body_bytes"));
    o += "  recipients\n";
    std::vector<std::vector<std::string>> rows{{"    RECIPIENT", "STATE", "ATTEMPTS", "NEXT ATTEMPT", "LAST REPLY"}};
    for (const auto& x : r["recipients"])
        rows.push_back({fmt::format("    <{}>", s(x, "rcpt")), s(x, "state"), std::to_string(u(x, "attempts")),
                        s(x, "state") == "deferred" ? unix_time(i(x, "next_attempt_unix")) : "-",
                        s(x, "last_reply").empty() ? "-" : s(x, "last_reply")});
    o += table(rows);
    o += "  headers\n";
    std::string h = s(r, "headers");
    size_t pos = 0;
    while (pos < h.size()) {
        size_t e = h.find("\r\n", pos);
        if (e == std::string::npos)
            e = h.size();
        o += fmt::format("    {}\n", h.substr(pos, e - pos));
        pos = e + 2;
    }
    if (r.contains("headers_truncated") && r["headers_truncated"].get<bool>())
        o += "    (header section longer than 64 KiB: cut here)\n";
    return o;
}

std::string fmt_simple(const json& r) {
    if (r.value("listener", false) && r.contains("suspended"))
        return fmt::format("Listener {} suspended: new connections get 421; its {} open sessions are closed in {} s.\n",
                           s(r, "suspended"), u(r, "open_sessions"), u(r, "delay_seconds"));
    if (r.value("listener", false) && r.contains("resumed"))
        return fmt::format("Listener {} resumed.\n", s(r, "resumed"));
    if (r.contains("suspended"))
        return fmt::format("Delivery suspended for {} ({} destinations held now).\n",
                           s(r, "suspended") == "*" ? "every domain" : s(r, "suspended"), u(r, "destinations"));
    if (r.contains("resumed"))
        return fmt::format("Delivery resumed for {} ({} destinations released).\n",
                           s(r, "resumed") == "*" ? "every domain" : s(r, "resumed"), u(r, "destinations"));
    if (r.contains("released"))
        return fmt::format("{} queue entries due now ({}).\n", u(r, "released"),
                           s(r, "domain") == "*" ? "every domain" : s(r, "domain"));
    if (r.contains("bounced"))
        return fmt::format("{} recipients bounced ({}).\n", u(r, "bounced"), s(r, "which"));
    if (r.contains("redirected"))
        return fmt::format("{} recipients redirected to {} ({}).\n", u(r, "redirected"), s(r, "to"), s(r, "which"));
    if (r.contains("deleted"))
        return fmt::format("Message {} deleted.\n", s(r, "deleted"));
    if (r.contains("reset"))
        return "Counters reset.\n";
    return r.dump(2) + "\n";
}

// One mail-log record as a line: time, event, then the other fields.
std::string event_line(const json& e) {
    std::string o = fmt::format("{} {:<10}", s(e, "ts"), s(e, "event"));
    for (auto it = e.begin(); it != e.end(); ++it) {
        if (it.key() == "ts" || it.key() == "event")
            continue;
        std::string v = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
        if (v.find(' ') != std::string::npos)
            v = json(v).dump();
        o += fmt::format(" {}={}", it.key(), v);
    }
    return o + "\n";
}

std::string fmt_findevent(const json& r) {
    std::string o;
    if (r["messages"].empty())
        return "No message matches.\n";
    o += fmt::format("{} message(s): {}\n", r["messages"].size(), fmt::join(r["messages"].get<std::vector<std::string>>(), " "));
    for (const auto& e : r["events"])
        o += event_line(e);
    if (r.contains("truncated") && r["truncated"].get<bool>())
        o += "(more events than shown: narrow the search)\n";
    return o;
}

std::string fmt_showconfig(const json& r) {
    std::string o = fmt::format("# {} configuration, version {}\n", r.value("candidate", false) ? "candidate" : "committed",
                                u(r, "version"));
    o += s(r, "toml");
    if (std::string p = pending_text(r); !p.empty())
        o += "# " + p;
    return o;
}

std::string fmt_staged(const json& r) {
    if (!r.value("candidate", false))
        return "no candidate: set KEY VALUE or load FILE makes one\n";
    std::string o;
    if (r["changes"].empty() && r["problems"].empty())
        o += "the candidate changes nothing\n";
    else
        o += fmt::format("the candidate changes {} key{}:\n", r["changes"].size(), r["changes"].size() == 1 ? "" : "s");
    for (const auto& ch : r["changes"])
        o += change_line(ch);
    if (!r["problems"].empty()) {
        o += "problems (commit refuses the candidate until they are fixed):\n";
        for (const auto& p : r["problems"])
            o += fmt::format("  {}\n", p.get<std::string>());
    }
    return o;
}

std::string fmt_commit(const json& r) {
    if (r.value("unchanged", false))
        return fmt::format("nothing changed: version {} stays in force\n", u(r, "version"));
    std::string o;
    if (r.contains("rolled_back_to"))
        o += fmt::format("rolled back to version {}: ", u(r, "rolled_back_to"));
    o += fmt::format("committed version {} ({} change{})\n", u(r, "version"), r["changes"].size(),
                     r["changes"].size() == 1 ? "" : "s");
    for (const auto& ch : r["changes"])
        o += change_line(ch);
    o += pending_text(r);
    if (r.contains("problems"))
        for (const auto& p : r["problems"])
            o += fmt::format("in force, but not everywhere: {}\n", p.get<std::string>());
    return o;
}

std::string fmt_history(const json& r) {
    std::string o;
    for (const auto& v : r["versions"]) {
        const bool running = u(v, "version") == u(r, "running");
        o += fmt::format("{}{:>5}  {}  {}  {}\n", running ? "*" : " ", u(v, "version"), unix_time(i(v, "time")),
                         s(v, "who"), s(v, "comment"));
        std::string d = s(v, "diff");
        size_t pos = 0;
        while (pos < d.size()) {
            size_t nl = d.find('\n', pos);
            o += fmt::format("         {}\n", d.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
            if (nl == std::string::npos)
                break;
            pos = nl + 1;
        }
    }
    if (o.empty())
        o = "no versions recorded\n";
    return o;
}

std::string fmt_trace(const json& r) {
    std::string o = fmt::format("Trace against the {} configuration\n", s(r, "configuration"));
    auto line = [&](const std::string& name, const json& st) {
        o += fmt::format("  {:<11} {:<7} {}{}\n", name, s(st, "decision"), s(st, "reply"),
                         st.contains("note") ? fmt::format("  ({})", s(st, "note")) : std::string());
    };
    if (r.contains("connection"))
        line("connection", r["connection"]);
    if (r.contains("sender_group")) {
        const json& g = r["sender_group"];
        line("group", g);
        std::string what = fmt::format("{} (matched {}), policy {}", s(g, "group"), s(g, "matched"), s(g, "policy"));
        if (g.contains("rdns"))
            what += fmt::format("; rdns {}", s(g, "rdns"));
        if (g.contains("dnsbl_score"))
            what += fmt::format("; dnsbl score {}", i(g, "dnsbl_score"));
        o += fmt::format("  {:<11} {}\n", "", what);
    }
    for (const char* k : {"helo", "mail_from"})
        if (r.contains(k))
            line(k, r[k]);
    if (r.contains("spf")) {
        const json& f = r["spf"];
        line("spf", f);
        std::string what = fmt::format("{} for {} ({})", s(f, "result"), s(f, "domain"), s(f, "identity"));
        if (f.contains("mechanism"))
            what += fmt::format(", matched {}", s(f, "mechanism"));
        for (const char* k : {"explanation", "reason"})
            if (f.contains(k))
                what += fmt::format("; {}", s(f, k));
        o += fmt::format("  {:<11} {}\n", "", what);
    }
    if (r.contains("rcpt"))
        for (const auto& x : r["rcpt"])
            line(fmt::format("rcpt {}", s(x, "rcpt")), x);
    if (r.contains("message"))
        line("message", r["message"]);
    if (r.contains("mime")) {
        const json& m = r["mime"];
        o += fmt::format("  {:<11} {} part{}{}\n", "mime", u(m, "parts"), u(m, "parts") == 1 ? "" : "s",
                         s(m, "defects").empty() ? std::string() : "; defects: " + s(m, "defects"));
        for (const auto& a : m["attachments"]) {
            const std::string type = s(a, "type") == s(a, "true_type")
                                         ? s(a, "type")
                                         : fmt::format("{}, really {}", s(a, "type"), s(a, "true_type"));
            o += fmt::format("  {:<11} #{} {} ({}), {} bytes\n", "", u(a, "part"),
                             s(a, "filename").empty() ? "(no name)" : s(a, "filename"), type, u(a, "size"));
            if (a.contains("archive")) {
                const json& ar = a["archive"];
                std::vector<std::string> names;
                for (const auto& e : ar["entries"])
                    if (names.size() < 20)
                        names.push_back(s(e, "name") + (e.value("encrypted", false) ? " (encrypted)" : ""));
                o += fmt::format("  {:<11}    holds {}{}{}\n", "", fmt::join(names, ", "),
                                 ar["entries"].size() > names.size() ? ", ..." : "",
                                 ar.value("truncated", false) ? " (listing cut at a limit)" : "");
            } else if (a.value("archive_too_large", false)) {
                o += fmt::format("  {:<11}    an archive too large to list\n", "");
            }
        }
    }
    if (r.contains("dkim")) {
        const json& d = r["dkim"];
        if (d.is_object()) {
            line("dkim", d);
        } else if (d.empty()) {
            o += fmt::format("  {:<11} none    no signature\n", "dkim");
        } else {
            for (const auto& x : d)
                o += fmt::format("  {:<11} {:<7} d={} s={} {}{}\n", "dkim", s(x, "result"), s(x, "d"), s(x, "s"),
                                 s(x, "a"), s(x, "reason").empty() ? std::string() : fmt::format("; {}", s(x, "reason")));
        }
    }
    if (r.contains("dmarc")) {
        const json& d = r["dmarc"];
        line("dmarc", d);
        std::string what = fmt::format("{} for {}", s(d, "result"), s(d, "domain"));
        if (!s(d, "policy_domain").empty())
            what += fmt::format(" (policy of {}: {}, disposition {})", s(d, "policy_domain"), s(d, "policy"),
                                s(d, "disposition"));
        if (!s(d, "reason").empty())
            what += fmt::format("; {}", s(d, "reason"));
        o += fmt::format("  {:<11} {}\n", "", what);
    }
    if (r.contains("rules")) {
        const json& d = r["rules"];
        line("rules", d);
        std::vector<std::string> fired;
        for (const auto& f : d["fired"])
            fired.push_back(f.get<std::string>());
        o += fmt::format("  {:<11} fired: {}\n", "", fired.empty() ? std::string("none") : fmt::format("{}", fmt::join(fired, ", ")));
        for (const auto& h : d["add_headers"])
            o += fmt::format("  {:<11} adds {}\n", "", h.get<std::string>());
        for (const auto& h : d["remove_headers"])
            o += fmt::format("  {:<11} removes {}\n", "", h.get<std::string>());
        if (d.contains("subject_tag"))
            o += fmt::format("  {:<11} tags the Subject with {}\n", "", s(d, "subject_tag"));
        if (d.contains("redirect"))
            o += fmt::format("  {:<11} redirects to {}\n", "", s(d, "redirect"));
        if (d.contains("route"))
            o += fmt::format("  {:<11} routes through {}\n", "", s(d, "route"));
        if (d.contains("copies"))
            for (const auto& c : d["copies"])
                o += fmt::format("  {:<11} copies to {}\n", "", c.get<std::string>());
        if (d.contains("notices"))
            for (const auto& c : d["notices"])
                o += fmt::format("  {:<11} notifies {}\n", "", c.get<std::string>());
    }
    if (r.contains("routing"))
        for (const auto& x : r["routing"]) {
            std::vector<std::string> hosts;
            for (const auto& h : x["hosts"])
                hosts.push_back(h.get<std::string>());
            o += fmt::format("  {:<11} {} via {}\n", fmt::format("route {}", s(x, "rcpt")), s(x, "destination"),
                             fmt::join(hosts, ", "));
        }
    const json& v = r["verdict"];
    if (s(v, "decision") == "accept")
        o += fmt::format("verdict: accept ({} recipients): {}\n", u(v, "recipients"), s(v, "reply"));
    else
        o += fmt::format("verdict: reject at {}: {}\n", s(v, "stage"), s(v, "reply"));
    return o;
}

std::string fmt_quarantine(const json& r) {
    if (r.contains("released"))
        return fmt::format("released {}: it goes to delivery now\n", s(r, "released"));
    if (r.contains("deleted"))
        return fmt::format("deleted {}\n", s(r, "deleted"));
    if (!r.contains("messages"))
        return fmt_showmessage(r);
    std::string o;
    std::vector<std::vector<std::string>> qs{{"QUARANTINE", "MESSAGES", "BYTES", "MAX", "RETENTION", "EXPIRY"}};
    for (const auto& q : r["quarantines"])
        qs.push_back({s(q, "name"), std::to_string(u(q, "messages")), std::to_string(u(q, "bytes")),
                      std::to_string(u(q, "max_size")), human_age(i(q, "retention_s")), s(q, "expire")});
    o += table(qs);
    if (r["messages"].empty())
        return o + "no message held\n";
    std::vector<std::vector<std::string>> rows{{"MID", "QUARANTINE", "RULE", "RECEIVED", "EXPIRES", "SIZE", "FROM", "TO"}};
    for (const auto& m : r["messages"]) {
        std::vector<std::string> to;
        for (const auto& x : m["recipients"])
            to.push_back(x.get<std::string>());
        rows.push_back({s(m, "mid"), s(m, "quarantine"), s(m, "rule"), unix_time(i(m, "received_unix")),
                        unix_time(i(m, "expires_unix")), std::to_string(u(m, "size")), fmt::format("<{}>", s(m, "mail_from")),
                        fmt::format("{}", fmt::join(to, ", "))});
    }
    return o + "\n" + table(rows);
}

std::string fmt_outbound(const json& r) {
    if (r.contains("lifted"))
        return fmt::format("lifted {}: it may send again\n", s(r, "lifted"));
    if (r.contains("suspended_sender"))
        return fmt::format("suspended {}\n", s(r, "suspended_sender"));
    std::string o;
    if (r["suspended"].empty()) {
        o += "no sender is suspended\n";
    } else {
        std::vector<std::vector<std::string>> rows{{"SENDER", "SINCE", "UNTIL", "BY", "LAST HOUR", "LAST DAY", "WHY"}};
        for (const auto& e : r["suspended"])
            rows.push_back({s(e, "key"), unix_time(i(e, "since_unix")),
                            i(e, "until_unix") ? unix_time(i(e, "until_unix")) : std::string("lifted by hand"), s(e, "by"),
                            std::to_string(u(e, "last_hour")), std::to_string(u(e, "last_day")), s(e, "reason")});
        o += table(rows);
    }
    if (!r["senders"].empty()) {
        std::vector<std::vector<std::string>> rows{{"BUSIEST SENDERS", "LAST HOUR", "LAST DAY"}};
        for (const auto& e : r["senders"])
            rows.push_back({s(e, "key"), std::to_string(u(e, "last_hour")), std::to_string(u(e, "last_day"))});
        o += "\n" + table(rows);
    }
    return o;
}

std::string fmt_abandon(const json& r) {
    return r.value("abandoned", false) ? "candidate abandoned\n" : "there was no candidate\n";
}

// A TXT record in zone-file form: strings of at most 255 octets.
std::string zone_txt(const std::string& name, const std::string& rec) {
    std::string o = name + ". IN TXT (";
    for (size_t i = 0; i < rec.size(); i += 255)
        o += fmt::format("\n    \"{}\"", rec.substr(i, 255));
    return o + " )\n";
}

std::string fmt_dkim(const json& r) {
    if (r.contains("record")) {
        return fmt::format("made {} key {} ({} bits), in force now\nfile: {}\npublish this record:\n{}",
                           s(r, "type"), s(r, "dns_name"), u(r, "bits"), s(r, "file"),
                           zone_txt(s(r, "dns_name"), s(r, "record")));
    }
    if (r.contains("keys") && r["keys"].is_number())
        return fmt::format("{} signing key{} in force from {}\n", u(r, "keys"), u(r, "keys") == 1 ? "" : "s", s(r, "dir"));
    std::string o = fmt::format("signing keys in {}:\n", s(r, "dir"));
    if (r["keys"].empty())
        o += "  none (make one with: dkim genkey DOMAIN SELECTOR)\n";
    for (const auto& k : r["keys"])
        o += fmt::format("  {:<40} {:<8} {:>5} bits\n", s(k, "dns_name"), s(k, "type"), u(k, "bits"));
    for (const auto& k : r["keys"])
        o += "\n" + zone_txt(s(k, "dns_name"), s(k, "record"));
    return o;
}

std::string fmt_dmarc(const json& r) {
    if (r.contains("xml"))
        return s(r, "xml");
    std::string o;
    if (r.contains("reports")) {
        if (r["reports"].empty())
            return "no report to send\n";
        for (const auto& x : r["reports"]) {
            o += fmt::format("{} {}: {} messages in {} rows, report {}\n", s(x, "day"), s(x, "domain"),
                             u(x, "messages"), u(x, "rows"), s(x, "report_id"));
            for (const auto& d : x["destinations"])
                o += fmt::format("  {:<40} {}{}\n", s(d, "uri"), s(d, "status"),
                                 d.contains("mid") ? " as " + s(d, "mid") : d.contains("why") ? ": " + s(d, "why") : "");
        }
        return o;
    }
    o = fmt::format("DMARC aggregate reports {} (data kept in {})\n",
                    r.value("enabled", false) ? "on: each day's go out after it ends" : "off", s(r, "file"));
    if (r["days"].empty())
        return o + "  nothing recorded\n";
    o += fmt::format("  {:<10}  {:<32} {:>8} {:>6}  {}\n", "DAY", "POLICY DOMAIN", "MESSAGES", "ROWS", "RUA");
    for (const auto& d : r["days"]) {
        std::string rua;
        for (const auto& x : d["policy"]["rua"])
            rua += (rua.empty() ? "" : ",") + x.get<std::string>();
        o += fmt::format("  {:<10}  {:<32} {:>8} {:>6}  {}\n", s(d, "day"), s(d, "domain"), u(d, "messages"),
                         u(d, "rows"), rua);
        if (d.contains("records"))
            for (const auto& x : d["records"])
                o += fmt::format("      {:<39} {:>6}  {:<10} dkim={} spf={} from={}\n", s(x, "source_ip"),
                                 u(x, "count"), s(x, "disposition"), x.value("dkim_aligned", false) ? "pass" : "fail",
                                 x.value("spf_aligned", false) ? "pass" : "fail", s(x, "header_from"));
    }
    if (u(r, "dropped_rows"))
        o += fmt::format("  {} messages were not recorded: the row limit was reached\n", u(r, "dropped_rows"));
    return o;
}

std::vector<command> make_commands() {
    using a = arg_spec;
    std::vector<command> v;
    v.push_back({"help", "", {a{"COMMAND", a::word, {}, true}}, "list the commands, or explain one",
                 "help lists every command; help COMMAND shows its arguments and what it does.", nullptr});
    v.push_back({"status", "status", {a{"detail", a::choice, {"detail"}, true, true}},
                 "counters, rates and gauges of the whole gateway",
                 "Counters since start (or since `counters reset`) with rates per minute over the last 1, 5 and 15\n"
                 "minutes; gauges: open connections, queued messages and recipients (active, waiting for retry,\n"
                 "never attempted), spool use, memory, DNS cache, resource conservation level, suspensions.\n"
                 "`status detail` adds CPU time and loop iterations per core.",
                 fmt_status});
    v.push_back({"workqueue", "workqueue", {}, "what is queued, per destination",
                 "One line per destination with mail queued or connections open: recipients queued and waiting\n"
                 "for retry, age of the oldest, connections open, messages in flight, whether it is paused\n"
                 "(after failures) or suspended, and its last error. Largest queue first.",
                 fmt_workqueue});
    v.push_back({"tophosts", "tophosts", {a{"sort", a::choice, {"active", "connections", "delivered", "soft", "hard"}, true}},
                 "the busiest destinations",
                 "The top 50 destinations by recipients queued (active, the default), open connections,\n"
                 "recipients delivered, soft (4xx) or hard (5xx) failures since start.",
                 fmt_tophosts});
    v.push_back({"hoststatus", "hoststatus", {a{"domain", a::domain, {}, false}}, "one destination in detail",
                 "For DOMAIN (a recipient domain, or a route's pattern): its queue, connections, the last host\n"
                 "and IP address used with its TLS, counts, mean delivery latency and the last error.",
                 fmt_hoststatus});
    v.push_back({"showmessage", "showmessage", {a{"mid", a::mid, {}, false}}, "one queued message",
                 "MID is the message ID of the mail log (16 hexadecimal digits): envelope, per-recipient state,\n"
                 "attempts and last reply, and the message's header section.",
                 fmt_showmessage});
    v.push_back({"deletemessage", "deletemessage", {a{"mid", a::mid, {}, false}}, "remove a queued message, no report",
                 "Removes MID from the spool at once. No delivery status notification is sent; the removal is\n"
                 "in the mail log with who did it.",
                 fmt_simple});
    {
        const std::vector<arg_spec> which = {a{"mid", a::keyword}, a{"domain", a::keyword}, a{"from", a::keyword},
                                             a{"all", a::flag}};
        v.push_back({"bouncerecipients", "bouncerecipients", which, "bounce queued recipients back to their senders",
                     "bouncerecipients mid MID | domain DOMAIN | from ADDRESS | all: every queued recipient of the\n"
                     "message, at the domain, of the sender, or every one, fails now with 550 5.0.0 and its\n"
                     "sender gets a delivery status notification, as for a permanent failure.",
                     fmt_simple});
        std::vector<arg_spec> redirect = which;
        redirect.insert(redirect.begin(), a{"to", a::keyword});
        v.push_back({"redirectrecipients", "redirectrecipients", redirect,
                     "send queued recipients to another host",
                     "redirectrecipients to HOST[:PORT] mid MID | domain DOMAIN | from ADDRESS | all: the queued\n"
                     "recipients chosen go to HOST (an IP address or a name, port 25 by default) instead of\n"
                     "their next hop, until they are delivered or ringwayd restarts. Recipients on a connection\n"
                     "right now stay where they are.",
                     fmt_simple});
    }
    v.push_back({"delivernow", "delivernow", {a{"domain", a::domain, {}, true}}, "retry deferred mail now",
                 "Makes every deferred recipient (of DOMAIN, or of every domain) due now and lifts the pause\n"
                 "that failures put on its destination.",
                 fmt_simple});
    v.push_back({"suspend", "suspend",
                 {a{"target", a::choice, {"delivery", "listener"}, false}, a{"name", a::domain, {}, true},
                  a{"delay", a::number, {}, true}},
                 "hold delivery (all, or one domain), or a listener",
                 "suspend delivery [DOMAIN]: no new connections for DOMAIN (or every domain); idle connections\n"
                 "close; a message being sent finishes. Mail keeps arriving and queues.\n"
                 "suspend listener NAME [DELAY]: the listener takes no new mail (new connections get\n"
                 "421 4.3.2); after DELAY seconds (30) its open sessions are told 421 4.3.2 and closed.\n"
                 "Suspensions survive a restart; `resume` lifts them.",
                 fmt_simple});
    v.push_back({"resume", "resume",
                 {a{"target", a::choice, {"delivery", "listener"}, false}, a{"name", a::domain, {}, true}},
                 "lift a suspension",
                 "resume delivery [DOMAIN]: lifts `suspend delivery DOMAIN`; without DOMAIN lifts every\n"
                 "delivery suspension. resume listener NAME: the listener takes mail again.",
                 fmt_simple});
    v.push_back({"counters", "counters_reset", {a{"reset", a::choice, {"reset"}, false}},
                 "counters reset: start the counters of status from zero",
                 "counters reset: the counters and rates of `status` count from now. Gauges are not affected.",
                 fmt_simple});
    const std::vector<arg_spec> filters = {
        a{"mid", a::keyword}, a{"from", a::keyword}, a{"rcpt", a::keyword}, a{"subject", a::keyword},
        a{"since", a::keyword}, a{"until", a::keyword}};
    {
        std::vector<arg_spec> t = {a{"follow", a::flag}, a{"lines", a::keyword}, a{"event", a::keyword}};
        t.insert(t.end(), filters.begin(), filters.end());
        command c{"tail", "tail", t, "the mail log: the last records, or follow it",
                  "tail [follow] [lines N] [event NAME] [mid MID] [from ADDR] [rcpt ADDR] [since TIME] [until TIME]\n"
                  "prints the last N (20) mail-log records that match; with follow, then every new one until\n"
                  "Ctrl-C or Enter. from and rcpt match part of an address; TIME is 30m, 2h, 1d (ago), Unix\n"
                  "seconds, or 2026-12-04T21:00:00Z.",
                  nullptr};
        c.streams = true;
        v.push_back(std::move(c));
    }
    v.push_back({"findevent", "findevent", filters, "a message's whole history in the mail log",
                 "findevent mid MID | from ADDR | rcpt ADDR | subject TEXT [since TIME] [until TIME]: the\n"
                 "messages that match (addresses and subject as parts, without case) and every mail-log record\n"
                 "of each (received, each delivery attempt, reports, removal).",
                 fmt_findevent});
    std::vector<std::string> sections;
    for (const auto& sec : config_sections())
        sections.push_back(std::string(sec.name));
    v.push_back({"showconfig", "showconfig",
                 {a{"section", a::choice, sections, true}, a{"candidate", a::choice, {"candidate"}, true, true}},
                 "the configuration in force, or the candidate",
                 "showconfig [SECTION] [candidate]: the committed configuration as TOML (every key with its\n"
                 "value), or one section of it; with `candidate`, the candidate instead. Keys committed but\n"
                 "waiting for a restart of ringwayd are listed at the end. docs/config.md explains each key.",
                 fmt_showconfig});
    v.push_back({"set", "set", {a{"key", a::key, {}, false}, a{"value", a::rest, {}, false}},
                 "change one key in the candidate",
                 "set KEY VALUE: changes KEY in the candidate (made from the committed configuration if there\n"
                 "is none); nothing changes until `commit`. KEY is section.key, or listener[N].key /\n"
                 "route[N].key (N a number, a listener's name or a route's domain). VALUE is read by the key's\n"
                 "type: 25, true, 50M, mx.example.test, or a list: a.test, b.test ([] is empty). Prints what\n"
                 "the candidate changes and any problem it has.",
                 fmt_staged});
    v.push_back({"load", "load", {a{"file", a::file, {}, false}}, "make a whole file the candidate",
                 "load FILE: reads FILE (TOML, as for ringwayd --config) and makes it the candidate, replacing\n"
                 "any other. Prints what it changes and its problems; `commit` puts it in force.",
                 fmt_staged});
    v.push_back({"diff", "diff", {}, "what the candidate changes",
                 "Each key the candidate changes, its committed value and its new one, and whether a commit\n"
                 "applies it at once or at the next restart; then the candidate's problems, if any.",
                 fmt_staged});
    v.push_back({"commit", "commit", {a{"comment", a::rest, {}, true}}, "validate the candidate and put it in force",
                 "commit [COMMENT]: validates the candidate (every problem is listed, and nothing changes if\n"
                 "there is one), puts it in force on every core without dropping a connection (open sessions\n"
                 "finish on the values they started with), and records it as a new version with who made it,\n"
                 "when, COMMENT and the changes. Keys marked (at restart) wait for the next start of\n"
                 "ringwayd. Two commits at once are applied one after the other.",
                 fmt_commit});
    v.push_back({"abandon", "abandon", {}, "throw the candidate away",
                 "Discards the candidate; the committed configuration is untouched.", fmt_abandon});
    v.push_back({"history", "history", {a{"count", a::number, {}, true}}, "the committed versions",
                 "history [N]: the last N (20) committed versions, newest first: number, time, who, comment\n"
                 "and changes. The version in force is marked with *.",
                 fmt_history});
    v.push_back({"rollback", "rollback", {a{"version", a::word, {}, true}}, "put an earlier version back in force",
                 "rollback [VERSION]: commits the configuration of VERSION (default: the one before the version\n"
                 "in force) as a new version, the same way as `commit`. The candidate is discarded.",
                 fmt_commit});
    v.push_back({"trace", "trace",
                 {a{"--client-ip", a::keyword}, a{"--helo", a::keyword}, a{"--mail-from", a::keyword},
                  a{"--rcpt", a::keyword}, a{"--message", a::keyword}, a{"--listener", a::keyword},
                  a{"--candidate", a::flag}},
                 "what the gateway would do with a transaction",
                 "trace --client-ip IP --helo NAME --mail-from ADDR --rcpt ADDR [--rcpt ADDR...]\n"
                 "      [--message FILE] [--listener NAME] [--candidate]\n"
                 "Runs the facts through every stage a session applies (connection limits and suspension,\n"
                 "HELO, MAIL, each RCPT's relay decision, the message's size, lines and Received: count, the\n"
                 "route each recipient would take) with the committed configuration, or the candidate, and\n"
                 "prints each stage's decision and the verdict. Nothing is queued or sent.",
                 fmt_trace});
    v.push_back({"dkim", "dkim",
                 {a{"action", a::choice, {"genkey", "keys", "reload"}}, a{"domain", a::word, {}, true},
                  a{"selector", a::word, {}, true}, a{"type_flag", a::choice, {"--type"}, true, true},
                  a{"type", a::choice, {"rsa", "ed25519"}, true}, a{"bits", a::number, {}, true}},
                 "DKIM signing keys",
                 "dkim genkey DOMAIN SELECTOR [--type rsa|ed25519] [BITS]: makes a signing key (RSA of 2048\n"
                 "bits by default, or Ed25519) in authentication.dkim_key_dir, puts it in force at once and\n"
                 "prints the TXT record to publish at SELECTOR._domainkey.DOMAIN. Mail relayed for DOMAIN (its\n"
                 "From:) is signed with every key of the domain: make an RSA and an Ed25519 key to sign twice.\n"
                 "dkim keys: the keys in force and their records. dkim reload: reads the directory again.",
                 fmt_dkim});
    v.push_back({"dmarc", "dmarc",
                 {a{"action", a::choice, {"show", "xml", "send"}}, a{"day", a::word, {}, true},
                  a{"domain", a::word, {}, true}},
                 "DMARC aggregate reports",
                 "dmarc show [DAY [DOMAIN]]: what is recorded for the aggregate reports, per day and policy\n"
                 "domain (with its rows when a day is given). dmarc xml DAY DOMAIN: the report as it would be\n"
                 "sent. dmarc send [DAY [DOMAIN]]: sends the reports of DAY now (today: the day so far), or of\n"
                 "every day that has ended. DAY is today, yesterday or YYYY-MM-DD. Each day's reports also go\n"
                 "out by themselves once it has ended (authentication.dmarc_reports).",
                 fmt_dmarc});
    v.push_back({"quarantine", "quarantine",
                 {a{"action", a::choice, {"list", "show", "release", "delete"}}, a{"target", a::word, {}, true}},
                 "mail held by content rules",
                 "quarantine list [NAME]: the quarantines (their use, size and retention) and the messages\n"
                 "they hold, oldest first. quarantine show MID: a held message's envelope and header.\n"
                 "quarantine release MID: delivery resumes as if it had never been held. quarantine delete\n"
                 "MID: removes it (no report to its sender). Held mail also expires by itself after the\n"
                 "quarantine's retention_s (deleted, or released with expire = \"release\").",
                 fmt_quarantine});
    v.push_back({"outbound", "outbound",
                 {a{"action", a::choice, {"list", "lift", "suspend"}}, a{"target", a::word, {}, true},
                  a{"reason", a::word, {}, true}},
                 "outbound spam control",
                 "outbound list: the suspended senders of relayed mail (why, since when, until when) and the\n"
                 "busiest senders of the last hour. outbound lift SENDER: lets a suspended sender send again\n"
                 "(its counts start afresh). outbound suspend SENDER [REASON]: suspends one by hand, until\n"
                 "lifted. SENDER is user:NAME (an authenticated user) or domain:DOMAIN (a MAIL FROM domain).\n"
                 "Limits are set in [outbound].",
                 fmt_outbound});
    v.push_back({"warmup", "warmup", {a{"action", a::choice, {"status"}, true}},
                 "warm-up of new source addresses",
                 "warmup status: each warming [[source]]: its schedule, the day of its warm-up, and per provider\n"
                 "today's cap and how much of it is used (UTC days). A source at its cap sends nothing more\n"
                 "there today: its pool's other sources, then the overflow pool, take the mail.",
                 fmt_warmup});
    v.push_back({"shaping", "shaping",
                 {a{"action", a::choice, {"list", "lift"}}, a{"target", a::word, {}, true}, a{"rule", a::word, {}, true}},
                 "overrides set by shaping rules",
                 "shaping list: the overrides [[shaping_rule]]s set (suspend, rate, connections, bounce), on which\n"
                 "destination or source, since and until when, and the reply that set each off. shaping lift\n"
                 "DOMAIN [RULE]: ends a destination's overrides (those of one rule); DOMAIN * ends every one.",
                 fmt_shaping});
    v.push_back({"providers", "providers", {}, "providers: their connections and hourly sends",
                 "Each provider (destinations grouped by MX host suffix, [[provider]]): its connections now and\n"
                 "messages in the last hour, all cores together, against its limits.",
                 fmt_providers});
    v.push_back({"version", "version", {}, "the daemon's version", "The version of the running ringwayd.",
                 [](const json& r) { return fmt::format("ringwayd {} (control protocol {})\n", s(r, "version"),
                                                        u(r, "protocol")); }});
    v.push_back({"uptime", "uptime", {}, "how long the daemon has run", "Time since ringwayd started.",
                 [](const json& r) {
                     return fmt::format("up {} (since {})\n", human_age(i(r, "uptime_seconds")),
                                        unix_time(i(r, "started_unix")));
                 }});
    add_appliance_commands(v);
    v.push_back({"quit", "", {}, "leave the shell", "Leaves the shell (so does exit, or Ctrl-D).", nullptr});
    v.push_back({"exit", "", {}, "leave the shell", "Leaves the shell (so does quit, or Ctrl-D).", nullptr});
    return v;
}
}  // namespace

std::string command::usage() const {
    if (!usage_text.empty())
        return usage_text;
    std::string u = name;
    for (const auto& a : args) {
        if (a.kind == arg_spec::flag) {
            u += fmt::format(" [{}]", a.name);
            continue;
        }
        if (a.kind == arg_spec::keyword) {
            std::string v = a.name;
            for (auto& ch : v)
                ch = char(std::toupper(uint8_t(ch)));
            u += fmt::format(" [{} {}]", a.name, a.name == "lines" ? "N" : a.name == "since" || a.name == "until" ? "TIME" : v);
            continue;
        }
        std::string w;
        if (a.kind == arg_spec::choice) {
            for (const auto& c : a.choices)
                w += (w.empty() ? "" : "|") + c;
        } else {
            w = a.name;
            for (auto& ch : w)
                ch = char(std::toupper(uint8_t(ch)));
        }
        u += a.optional ? fmt::format(" [{}]", w) : fmt::format(" {}", w);
    }
    return u;
}

const std::vector<command>& commands() {
    static const std::vector<command> v = make_commands();
    return v;
}

const command* find_command(std::string_view name) {
    for (const auto& c : commands())
        if (c.name == name)
            return &c;
    return nullptr;
}

std::vector<std::string> split_words(std::string_view line) {
    std::vector<std::string> out;
    std::string cur;
    bool in_word = false, quoted = false;
    for (char ch : line) {
        if (quoted) {
            if (ch == '"')
                quoted = false;
            else
                cur += ch;
        } else if (ch == '"') {
            quoted = in_word = true;
        } else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            if (in_word)
                out.push_back(std::exchange(cur, {}));
            in_word = false;
        } else {
            cur += ch;
            in_word = true;
        }
    }
    if (in_word)
        out.push_back(cur);
    return out;
}

namespace {
std::string help_text(const std::vector<std::string>& words) {
    if (words.size() >= 2) {
        const command* c = find_command(words[1]);
        if (!c)
            return {};
        return fmt::format("usage: {}\n{}\n", c->usage(), c->help);
    }
    std::string o = "Commands (help COMMAND for more):\n";
    for (const auto& c : commands()) {
        const std::string u = c.usage();
        o += u.size() < 44 ? fmt::format("  {:<44}{}\n", u, c.summary)
                           : fmt::format("  {}\n  {:<44}{}\n", u, "", c.summary);
    }
    return o;
}

}  // namespace

std::optional<int64_t> parse_time(std::string_view t, int64_t now) {
    if (t.empty())
        return std::nullopt;
    const char unit = t.back();
    std::string_view digits = t;
    int64_t mult = 0;
    if (unit == 's' || unit == 'm' || unit == 'h' || unit == 'd') {
        mult = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : 86400;
        digits = t.substr(0, t.size() - 1);
    }
    if (!digits.empty() && std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
        digits.size() <= 12) {
        int64_t n = std::stoll(std::string(digits));
        return mult ? now - n * mult : n;
    }
    std::tm tm{};
    std::string str(t);
    for (const char* f : {"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M",
                          "%Y-%m-%d"}) {
        tm = {};
        const char* end = ::strptime(str.c_str(), f, &tm);
        if (end && *end == '\0')
            return int64_t(::timegm(&tm));
    }
    return std::nullopt;
}

outcome run_words(client* cl, const std::vector<std::string>& words, bool json_out,
                  const std::function<bool()>& interrupted) {
    outcome r;
    if (words.empty())
        return r;
    const command* c = find_command(words[0]);
    if (!c) {
        r.status = 2;
        r.err = fmt::format("unknown command {}; type help for the list", words[0]);
        return r;
    }
    auto usage_error = [&](std::string what) {
        r.status = 2;
        r.err = fmt::format("{}; usage: {} (help {} for more)", what, c->usage(), c->name);
        return r;
    };
    if (c->name == "quit" || c->name == "exit") {
        r.quit = true;
        return r;
    }
    if (c->name == "help") {
        if (words.size() > 2)
            return usage_error("too many arguments");
        std::string h = help_text(words);
        if (h.empty())
            return usage_error(fmt::format("no command {}", words[1]));
        if (json_out) {
            json j = json::array();
            for (const auto& x : commands())
                if (words.size() < 2 || x.name == words[1])
                    j.push_back({{"command", x.name}, {"usage", x.usage()}, {"summary", x.summary}, {"help", x.help}});
            r.out = j.dump(2) + "\n";
        } else {
            r.out = h;
        }
        return r;
    }
    if (c->run)
        return c->run(words, json_out, interrupted);
    json args = json::object();
    size_t wi = 1;
    const bool keywords = std::any_of(c->args.begin(), c->args.end(), [](const arg_spec& a) {
        return a.kind == arg_spec::flag || a.kind == arg_spec::keyword;
    });
    for (; keywords && wi < words.size(); ++wi) {
        const std::string& w = words[wi];
        auto it = std::find_if(c->args.begin(), c->args.end(), [&](const arg_spec& a) { return a.name == w; });
        if (it == c->args.end())
            return usage_error(fmt::format("unexpected {}", w));
        // "--client-ip" is sent as "client_ip".
        std::string key = w;
        if (key.starts_with("--")) {
            key = key.substr(2);
            std::replace(key.begin(), key.end(), '-', '_');
        }
        if (it->kind == arg_spec::flag) {
            args[key] = true;
            continue;
        }
        if (wi + 1 >= words.size())
            return usage_error(fmt::format("{} needs a value", w));
        const std::string& v = words[++wi];
        if (w == "--rcpt") {
            if (!args.contains("rcpt"))
                args["rcpt"] = json::array();
            args["rcpt"].push_back(v);
        } else if (w == "--message") {
            std::ifstream in(v, std::ios::binary);
            if (!in) {
                r.status = 1;
                r.err = fmt::format("cannot read {}: {}", v, std::strerror(errno));
                return r;
            }
            std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            if (text.size() > (1u << 20) - 4096) {
                r.status = 1;
                r.err = fmt::format("{}: trace takes messages up to 1 MiB", v);
                return r;
            }
            args["message"] = std::move(text);
        } else if (key != w) {
            args[key] = v;
        } else if (w == "lines") {
            if (v.empty() || v.size() > 6 || !std::all_of(v.begin(), v.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
                return usage_error(fmt::format("lines {} is not a number", v));
            args[w] = std::stoll(v);
        } else if (w == "since" || w == "until") {
            auto t = parse_time(v, now_unix());
            if (!t)
                return usage_error(fmt::format("{} {} is not a time (30m, 2h, 1d, Unix seconds, 2026-12-04T21:00:00Z)", w, v));
            args[w] = *t;
        } else if (w == "mid" && !is_mid(v)) {
            return usage_error(fmt::format("{} is not a message ID (16 hexadecimal digits)", v));
        } else {
            args[w] = v;
        }
    }
    for (const auto& a : c->args) {
        if (keywords)
            break;
        if (wi >= words.size()) {
            if (!a.optional)
                return usage_error(fmt::format("missing {}", c->usage().substr(c->name.size() + 1)));
            continue;
        }
        const std::string& w = words[wi];
        switch (a.kind) {
        case arg_spec::choice:
            if (std::find(a.choices.begin(), a.choices.end(), w) == a.choices.end()) {
                if (a.optional && &a != &c->args.back())
                    continue;  // an optional word left out; this word is for the next argument
                return usage_error(fmt::format("{} is not {}", w, fmt::join(a.choices, " or ")));
            }
            if (a.as_flag)
                args[a.name] = true;
            else
                args[a.name] = w;
            break;
        case arg_spec::mid:
            if (!is_mid(w))
                return usage_error(fmt::format("{} is not a message ID (16 hexadecimal digits)", w));
            args[a.name] = w;
            break;
        case arg_spec::number:
            if (w.empty() || w.size() > 9 || !std::all_of(w.begin(), w.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) ||
                std::stoll(w) < 1)
                return usage_error(fmt::format("{} is not a positive number", w));
            args[a.name] = std::stoll(w);
            break;
        case arg_spec::file: {
            std::ifstream in(w, std::ios::binary);
            if (!in) {
                r.status = 1;
                r.err = fmt::format("cannot read {}: {}", w, std::strerror(errno));
                return r;
            }
            std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            if (text.size() > (1u << 20)) {
                r.status = 1;
                r.err = fmt::format("{} is larger than 1 MiB; is it a configuration file?", w);
                return r;
            }
            args["text"] = std::move(text);
            args["name"] = w;
            break;
        }
        case arg_spec::rest: {
            std::string all = w;
            while (wi + 1 < words.size())
                all += " " + words[++wi];
            args[a.name] = std::move(all);
            break;
        }
        case arg_spec::domain:
        case arg_spec::word:
        case arg_spec::key:
        case arg_spec::flag:     // (commands with these take the keyword loop above)
        case arg_spec::keyword:
            args[a.name] = w;
            break;
        }
        ++wi;
    }
    if (wi < words.size())
        return usage_error(fmt::format("unexpected {}", words[wi]));
    if (!cl) {
        r.status = 1;
        r.err = "not connected to ringwayd";
        return r;
    }
    if (c->streams) {
        auto res = cl->stream(
            c->request, args,
            [&](const json& e) {
                std::string line = json_out ? e.dump() + "\n" : event_line(e);
                std::fwrite(line.data(), 1, line.size(), stdout);
                std::fflush(stdout);
                return true;
            },
            interrupted);
        if (!res) {
            r.status = 1;
            r.err = res.error();
        }
        return r;
    }
    auto res = cl->call(c->request, args);
    if (!res) {
        r.status = 1;
        r.err = res.error();
        return r;
    }
    r.out = json_out || !c->format ? res.value().dump(2) + "\n" : c->format(res.value());
    return r;
}

std::vector<std::string> complete(const std::vector<std::string>& before, std::string_view prefix,
                                  const std::function<std::vector<std::string>()>& fetch_domains) {
    std::vector<std::string> out;
    auto offer = [&](const std::string& w) {
        if (w.starts_with(prefix) && std::find(out.begin(), out.end(), w) == out.end())
            out.push_back(w);
    };
    if (before.empty()) {
        for (const auto& c : commands())
            offer(c.name);
        return out;
    }
    const command* c = find_command(before[0]);
    if (!c)
        return out;
    if (c->name == "help") {
        if (before.size() == 1)
            for (const auto& x : commands())
                offer(x.name);
        return out;
    }
    // Which argument is being typed: skip optional choices the typed words
    // did not use (as run_words does).
    size_t wi = 1, ai = 0;
    while (ai < c->args.size() && wi < before.size()) {
        const auto& a = c->args[ai];
        if (a.kind == arg_spec::choice && a.optional &&
            std::find(a.choices.begin(), a.choices.end(), before[wi]) == a.choices.end()) {
            ++ai;
            continue;
        }
        ++ai;
        ++wi;
    }
    if (wi < before.size())
        return out;
    for (; ai < c->args.size(); ++ai) {
        const auto& a = c->args[ai];
        if (a.kind == arg_spec::choice)
            for (const auto& ch : a.choices)
                offer(ch);
        else if (a.kind == arg_spec::domain)
            for (const auto& dname : fetch_domains())
                offer(dname);
        else if (a.kind == arg_spec::key)
            for (const auto& k : config_keys()) {
                bool array = false;
                for (const auto& sec : config_sections())
                    array |= sec.name == k.section && sec.array;
                offer(array ? fmt::format("{}[0].{}", k.section, k.name) : k.path());
            }
        if (!a.optional)
            break;
    }
    return out;
}

}  // namespace rw::admin::shell
