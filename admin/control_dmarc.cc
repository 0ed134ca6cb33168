// DMARC aggregate reports on the control plane (policy/dmarc_report.hh).
// Sessions record each evaluation on their own core; every minute core 0
// gathers what the cores recorded, saves it to STATE_DIR/dmarc-reports.json
// (so a restart loses at most that minute), and once a UTC day has ended
// sends its reports: one message per policy domain to the rua=
// destinations that take it, queued in the spool like any message.
// `dmarc show|xml|send` look at the data and send reports now.
#include <nlohmann/json.hpp>

#include <fstream>
#include <random>
#include <sstream>

#include "admin/control.hh"
#include "admin/control_commands.hh"
#include "mail/domain.hh"
#include "mta/envelope_params.hh"
#include "policy/dmarc_report.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/net/dns.hh"
#include "runtime/reactor/io.hh"
#include "runtime/smp/offload.hh"

namespace rw::admin::control_detail {

using json = nlohmann::json;
namespace dr = policy::dmarc_report;

namespace {

const logger lg{"dmarc"};

constexpr std::chrono::seconds k_gather_period{60};
constexpr int64_t k_keep_days = 7;  // a day whose reports cannot go out is dropped after this

std::string file_of(const context& c) { return c.state_dir + "/dmarc-reports.json"; }

int64_t now_unix() { return int64_t(std::time(nullptr)); }

// ---- the saved form ----

json row_json(const dr::row& r, uint64_t count) {
    json dk = json::array();
    for (const auto& k : r.dkim)
        dk.push_back({{"domain", k.domain}, {"selector", k.selector}, {"result", k.result}});
    return {{"source_ip", r.source_ip},   {"count", count},
            {"disposition", r.disposition}, {"dkim_aligned", r.dkim_aligned},
            {"spf_aligned", r.spf_aligned}, {"reason_type", r.reason_type},
            {"reason_comment", r.reason_comment}, {"header_from", r.header_from},
            {"dkim", std::move(dk)},        {"spf", {{"domain", r.spf_domain}, {"scope", r.spf_scope}, {"result", r.spf_result}}}};
}

json day_json(int64_t day, const std::string& domain, const dr::domain_day& d, bool with_rows) {
    const dr::published& p = d.policy;
    json j = {{"day", dr::day_string(day)},
              {"domain", domain},
              {"messages", d.messages()},
              {"rows", d.rows.size()},
              {"first", d.first},
              {"last", d.last},
              {"policy",
               {{"p", p.p}, {"sp", p.sp}, {"np", p.np}, {"adkim", p.strict_dkim ? "s" : "r"},
                {"aspf", p.strict_spf ? "s" : "r"}, {"pct", p.pct}, {"fo", p.fo}, {"rua", p.rua}}}};
    if (with_rows) {
        json rows = json::array();
        for (const auto& [r, n] : d.rows)
            rows.push_back(row_json(r, n));
        j["records"] = std::move(rows);
    }
    return j;
}

std::string str(const json& j, const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : ""; }

// The saved file back into a store; entries it cannot read are skipped.
void load_into(dr::store& s, const json& j) {
    if (!j.is_object() || !j.contains("days") || !j["days"].is_array())
        return;
    for (const auto& e : j["days"]) {
        if (!e.is_object())
            continue;
        auto day = dr::parse_day(str(e, "day"));
        if (!day || str(e, "domain").empty() || !e.contains("policy") || !e["policy"].is_object())
            continue;
        dr::domain_day d;
        const json& p = e["policy"];
        d.policy.domain = str(e, "domain");
        d.policy.p = str(p, "p");
        d.policy.sp = str(p, "sp");
        d.policy.np = str(p, "np");
        d.policy.strict_dkim = str(p, "adkim") == "s";
        d.policy.strict_spf = str(p, "aspf") == "s";
        d.policy.pct = p.value("pct", 100u);
        d.policy.fo = str(p, "fo");
        if (p.contains("rua") && p["rua"].is_array())
            for (const auto& u : p["rua"])
                if (u.is_string())
                    d.policy.rua.push_back(u.get<std::string>());
        d.first = e.value("first", int64_t(0));
        d.last = e.value("last", int64_t(0));
        if (e.contains("records") && e["records"].is_array()) {
            for (const auto& r : e["records"]) {
                if (!r.is_object())
                    continue;
                dr::row row;
                row.source_ip = str(r, "source_ip");
                row.disposition = str(r, "disposition");
                row.dkim_aligned = r.value("dkim_aligned", false);
                row.spf_aligned = r.value("spf_aligned", false);
                row.reason_type = str(r, "reason_type");
                row.reason_comment = str(r, "reason_comment");
                row.header_from = str(r, "header_from");
                if (r.contains("dkim") && r["dkim"].is_array())
                    for (const auto& k : r["dkim"])
                        if (k.is_object())
                            row.dkim.push_back({str(k, "domain"), str(k, "selector"), str(k, "result")});
                if (r.contains("spf") && r["spf"].is_object()) {
                    row.spf_domain = str(r["spf"], "domain");
                    row.spf_scope = str(r["spf"], "scope");
                    row.spf_result = str(r["spf"], "result");
                }
                const uint64_t n = r.value("count", uint64_t(0));
                if (n)
                    d.rows[row] += n;
            }
        }
        const std::string domain = d.policy.domain;  // (d is moved into the call)
        if (!d.rows.empty())
            s.put(*day, domain, std::move(d));
    }
}

// Every core's recorded data, added to c.dmarc. Whether there was any.
task<bool> gather(context& c) {
    bool any = false;
    for (unsigned core = 0; core < c.reg->cores(); ++core) {
        dr::store got = co_await c.reg->call(core, [](core_slot& s) {
            dr::store out;
            if (s.dmarc_reports)
                out.merge(*s.dmarc_reports);
            return out;
        });
        if (!got.empty()) {
            any = true;
            c.dmarc.merge(got);
        }
    }
    co_return any;
}

// Saves c.dmarc (off the reactor), one save at a time.
task<void> save(context& c) {
    while (c.dmarc_saving) {
        auto pause = io::sleep(std::chrono::milliseconds(10));
        co_await pause;
    }
    c.dmarc_saving = true;
    json days = json::array();
    for (const auto& [key, d] : c.dmarc.data())
        days.push_back(day_json(key.first, key.second, d, true));
    json j = {{"v", 1}, {"days", std::move(days)}};
    auto write = [path = file_of(c), text = j.dump() + "\n"]() { return write_file_durably(path, text); };
    auto job = offload(std::move(write));
    const std::string err = co_await std::move(job);
    c.dmarc_saving = false;
    if (!err.empty())
        lg.error("cannot save {}: {} (the DMARC report data is kept in memory)", file_of(c), err);
}

// One policy domain's day, sent: what became of each destination.
struct sent {
    json result;
    bool retry = false;  // a temporary failure: keep the data and try again later
};

task<std::optional<bool>> confirmed(net::resolver* dns, const std::string& policy_domain, const dr::destination& d) {
    if (!dr::needs_confirmation(policy_domain, d.domain))
        co_return true;
    if (!dns)
        co_return std::nullopt;
    auto t = dns->resolve_txt(dr::confirmation_name(policy_domain, d.domain));
    auto r = co_await std::move(t);
    if (!r) {
        if (!r.error().permanent())
            co_return std::nullopt;
        co_return false;
    }
    for (const auto& txt : r.value())
        if (dr::confirms(txt))
            co_return true;
    co_return false;
}

// Queues msg for rcpts on a core with a spool shard; the message ID or why not.
task<result<std::string, std::string>> queue_report(context& c, std::string sender, std::vector<std::string> rcpts,
                                                    std::string msg) {
    for (unsigned core = 0; core < c.reg->cores(); ++core) {
        const bool has = co_await c.reg->call(core, [](core_slot& s) { return !s.shards.empty(); });
        if (!has)
            continue;
        auto put = [sender, rcpts, msg](core_slot& s) -> task<result<std::string, std::string>> {
            fs::shard* sh = s.shards.front();
            mta::envelope_params dp;
            dp.rcpts.resize(rcpts.size());
            fs::envelope env{sender, rcpts, mta::encode_params(dp), int64_t(std::time(nullptr))};
            auto w = sh->begin(std::move(env));
            if (!w)
                co_return unexpected(w.error().detail);
            fs::message_writer mw = std::move(w.value());
            auto a = co_await mw.append(std::span<const char>(msg.data(), msg.size()));
            if (!a)
                co_return unexpected(a.error().detail);
            auto cm = co_await mw.commit();
            if (!cm)
                co_return unexpected(cm.error().detail);
            if (s.delivery)
                s.delivery->queued(sh, cm.value());
            co_return fmt::format("{:016X}", cm.value());
        };
        auto r = co_await c.reg->call(core, std::move(put));
        co_return r;
    }
    co_return unexpected(std::string("no spool shard to queue it in"));
}

task<sent> send_one(context& c, int64_t day, const std::string& domain, const dr::domain_day& d,
                    std::optional<int64_t> until) {
    const config& cfg = in_force(c);
    const auto& a = cfg.authentication;
    dr::reporter who;
    who.hostname = cfg.smtp.hostname;
    who.org_name = a.dmarc_report_org.empty() ? cfg.smtp.hostname : a.dmarc_report_org;
    who.email = a.dmarc_report_from.empty() ? "postmaster@" + cfg.smtp.hostname : a.dmarc_report_from;
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    const std::string id = fmt::format("{}.{}.{:08x}", domain, dr::day_string(day), uint32_t(rng()));
    const int64_t begin = day * 86400, end = until ? *until : begin + 86399;
    const std::string gz = dr::gzip(dr::xml(who, id, day, d, until));
    sent out;
    out.result = {{"day", dr::day_string(day)}, {"domain", domain}, {"messages", d.messages()},
                  {"rows", d.rows.size()}, {"report_id", id}, {"gzip_bytes", gz.size()}};
    json dests = json::array();
    std::vector<dr::destination> take;
    for (const auto& uri : d.policy.rua) {
        auto dest = dr::parse_rua(uri);
        if (!dest) {
            dests.push_back({{"uri", uri}, {"status", "unusable"}, {"why", "not a mailto: address we can use"}});
            continue;
        }
        auto ct = confirmed(c.reg->mine().dns, domain, *dest);
        auto ok = co_await std::move(ct);
        if (!ok) {
            dests.push_back({{"uri", uri}, {"status", "deferred"}, {"why", "DNS failed checking that it takes reports"}});
            out.retry = true;
            continue;
        }
        if (!*ok) {
            dests.push_back({{"uri", uri},
                             {"status", "unconfirmed"},
                             {"why", fmt::format("{} has no v=DMARC1 record (RFC 7489 7.1)",
                                                 dr::confirmation_name(domain, dest->domain))}});
            continue;
        }
        take.push_back(*dest);
    }
    if (out.retry) {
        out.result["destinations"] = std::move(dests);
        co_return out;
    }
    std::vector<std::string> rcpts;
    for (const auto& t : take)
        rcpts.push_back(t.address);
    const std::string msg = dr::message(who, id, domain, begin, end, gz, rcpts, now_unix());
    std::vector<std::string> fits;
    for (const auto& t : take) {
        if (t.max_bytes && msg.size() > t.max_bytes)
            dests.push_back({{"uri", "mailto:" + t.address},
                             {"status", "too_large"},
                             {"why", fmt::format("the report is {} bytes, the limit {}", msg.size(), t.max_bytes)}});
        else
            fits.push_back(t.address);
    }
    if (!fits.empty()) {
        auto q = queue_report(c, who.email, fits, msg);
        auto r = co_await std::move(q);
        if (!r) {
            out.retry = true;
            for (const auto& f : fits)
                dests.push_back({{"uri", "mailto:" + f}, {"status", "deferred"}, {"why", r.error()}});
        } else {
            for (const auto& f : fits)
                dests.push_back({{"uri", "mailto:" + f}, {"status", "queued"}, {"mid", r.value()}});
            out.result["mid"] = r.value();
            journal::record("dmarc_report",
                            {{"mid", std::string_view(r.value())}, {"domain", std::string_view(domain)},
                             {"day", std::string_view(dr::day_string(day))}, {"messages", d.messages()},
                             {"to", std::string_view(fmt::format("{}", fmt::join(fits, ",")))}});
            lg.info("report queued mid={} domain={} day={} messages={} to={}", r.value(), domain,
                    dr::day_string(day), d.messages(), fmt::join(fits, ","));
        }
    }
    out.result["destinations"] = std::move(dests);
    co_return out;
}

// Sends the reports of `days` (taken out of c.dmarc); the ones to try
// again go back in.
task<json> send_days(context& c, std::map<std::pair<int64_t, std::string>, dr::domain_day> days,
                     std::optional<int64_t> until) {
    json out = json::array();
    const int64_t today = dr::day_of(now_unix());
    for (auto& [key, d] : days) {
        auto t = send_one(c, key.first, key.second, d, until);
        sent s = co_await std::move(t);
        if (s.retry) {
            if (today - key.first > k_keep_days) {
                lg.warn("dropping the DMARC report data of domain={} day={}: it could not be sent for {} days",
                        key.second, dr::day_string(key.first), k_keep_days);
                s.result["dropped"] = true;
            } else {
                c.dmarc.put(key.first, key.second, std::move(d));
            }
        }
        out.push_back(std::move(s.result));
    }
    co_return out;
}

std::optional<int64_t> day_arg(const json& args) {
    if (!args.contains("day"))
        return std::nullopt;
    if (!args["day"].is_string())
        throw command_error("day: today, yesterday or YYYY-MM-DD");
    const std::string v = args["day"].get<std::string>();
    const int64_t today = dr::day_of(now_unix());
    if (v == "today")
        return today;
    if (v == "yesterday")
        return today - 1;
    auto d = dr::parse_day(v);
    if (!d)
        throw command_error(fmt::format("day: {} is not today, yesterday or YYYY-MM-DD", v));
    return d;
}

}  // namespace

void dmarc_load(context& c) {
    std::ifstream in(file_of(c));  // at start-up only
    if (!in)
        return;
    std::stringstream ss;
    ss << in.rdbuf();
    json j = json::parse(ss.str(), nullptr, false);
    if (j.is_discarded()) {
        lg.error("{} is not DMARC report data; ignoring it", file_of(c));
        return;
    }
    load_into(c.dmarc, j);
    if (!c.dmarc.empty())
        lg.info("DMARC report data loaded from {}: {} domain-days, {} rows", file_of(c), c.dmarc.data().size(),
                c.dmarc.rows());
}

task<void> dmarc_reporter(context* c) {
    gate::holder h(c->tasks);
    // At start too: days that ended while ringwayd was down go out now.
    for (;;) {
        auto g = gather(*c);
        bool changed = co_await std::move(g);
        if (!c->stopping && in_force(*c).authentication.dmarc_reports) {
            auto closed = c->dmarc.take_before(dr::day_of(now_unix()));
            if (!closed.empty()) {
                changed = true;
                auto t = send_days(*c, std::move(closed), std::nullopt);
                co_await std::move(t);
            }
        }
        if (changed) {
            auto t = save(*c);
            co_await std::move(t);
        }
        if (c->stopping)
            break;
        co_await io::sleep(k_gather_period, &c->dmarc_stop);
    }
}

task<json> cmd_dmarc(context& c, const peer_cred& who, const json& args) {
    const std::string action = args.contains("action") && args["action"].is_string()
                                   ? args["action"].get<std::string>()
                                   : std::string("show");
    auto g = gather(c);
    if (co_await std::move(g)) {
        auto t = save(c);
        co_await std::move(t);
    }
    const std::optional<int64_t> day = day_arg(args);
    const std::string domain = args.contains("domain") && args["domain"].is_string()
                                   ? mail::normalize_domain(args["domain"].get<std::string>())
                                   : std::string();
    if (action == "show") {
        json days = json::array();
        for (const auto& [key, d] : c.dmarc.data())
            if ((!day || key.first == *day) && (domain.empty() || key.second == domain))
                days.push_back(day_json(key.first, key.second, d, day || !domain.empty()));
        co_return json{{"days", std::move(days)}, {"rows", c.dmarc.rows()}, {"dropped_rows", c.dmarc.dropped()},
                       {"file", file_of(c)}, {"enabled", in_force(c).authentication.dmarc_reports}};
    }
    if (action == "xml") {
        if (domain.empty())
            throw command_error("dmarc xml [DAY] DOMAIN");
        const int64_t d = day.value_or(dr::day_of(now_unix()));
        auto it = c.dmarc.data().find({d, domain});
        if (it == c.dmarc.data().end())
            throw command_error(fmt::format("nothing recorded for {} on {}", domain, dr::day_string(d)));
        const config& cfg = in_force(c);
        dr::reporter r{cfg.authentication.dmarc_report_org.empty() ? cfg.smtp.hostname
                                                                    : cfg.authentication.dmarc_report_org,
                       cfg.authentication.dmarc_report_from.empty() ? "postmaster@" + cfg.smtp.hostname
                                                                     : cfg.authentication.dmarc_report_from,
                       cfg.smtp.hostname};
        const int64_t today = dr::day_of(now_unix());
        co_return json{{"xml", dr::xml(r, "preview", d, it->second,
                                       d == today ? std::optional<int64_t>(now_unix()) : std::nullopt)}};
    }
    if (action != "send")
        throw command_error("dmarc: show, xml or send");
    // send: the given day (today: the day so far), else every ended day.
    const int64_t today = dr::day_of(now_unix());
    std::map<std::pair<int64_t, std::string>, dr::domain_day> take;
    take = c.dmarc.take_if([&](int64_t d, const std::string& dom) {
        return (day ? d == *day : d < today) && (domain.empty() || dom == domain);
    });
    auto t = send_days(c, std::move(take), day && *day == today ? std::optional<int64_t>(now_unix()) : std::nullopt);
    json sent = co_await std::move(t);
    auto s = save(c);
    co_await std::move(s);
    lg.info("DMARC reports sent by {}: {}", who.describe(), sent.size());
    co_return json{{"reports", std::move(sent)}};
}

}  // namespace rw::admin::control_detail
