// `trace`: the facts of one imagined SMTP transaction run through every
// stage the session would apply, with the committed (or the candidate)
// configuration, and nothing queued. Each stage uses the code the session
// uses: the command parser, the relay policy, the DATA decoder and the
// Received counter, the delivery routes.
#include <nlohmann/json.hpp>

#include "admin/config_schema.hh"
#include "admin/control.hh"
#include "admin/control_commands.hh"
#include "admin/settings.hh"
#include "mta/smtp/command.hh"
#include "mta/smtp/data_decoder.hh"
#include "mta/smtp/replies.hh"
#include "mail/header.hh"
#include "mta/smtp/message_pipeline.hh"
#include "mta/verify/dns.hh"
#include "mta/verify/feeds.hh"
#include "mail/mime.hh"
#include "policy/attachments.hh"
#include "policy/relay.hh"
#include "policy/rules.hh"
#include "runtime/smp/offload.hh"

namespace rw::admin::control_detail {

namespace {

using json = nlohmann::json;

// The message's MIME parts and what each attachment is: declared and true
// type, size, an archive's contents.
json mime_json(std::string_view message) {
    policy::attachments::collector col;
    mail::mime::parser mp(col);
    mp.feed(message);
    mp.finish();
    json list = json::array();
    for (const auto& a : col.result()) {
        json j = {{"part", a.part},       {"type", a.declared_type}, {"true_type", a.true_type},
                  {"filename", a.filename}, {"disposition", a.disposition}, {"size", a.size}};
        if (a.archive) {
            json entries = json::array();
            for (const auto& e : a.archive->entries)
                entries.push_back({{"name", e.name}, {"size", e.size}, {"encrypted", e.encrypted}, {"depth", e.depth}});
            j["archive"] = {{"format", a.archive->format},     {"entries", std::move(entries)},
                            {"encrypted", a.archive->encrypted}, {"truncated", a.archive->truncated},
                            {"error", a.archive->error}};
        }
        if (a.archive_too_large)
            j["archive_too_large"] = true;
        list.push_back(std::move(j));
    }
    return {{"parts", mp.parts().size()}, {"attachments", std::move(list)},
            {"defects", mail::mime::describe(mp.defects())}};
}

constexpr size_t k_max_trace_rcpts = 100;

std::string str(const json& args, const char* key, bool required) {
    if (!args.contains(key)) {
        if (required)
            throw command_error(fmt::format("missing argument {} (--{})", key, key));
        return {};
    }
    if (!args[key].is_string())
        throw command_error(fmt::format("argument {} must be a string", key));
    return args[key].get<std::string>();
}

std::string reply_text(int code, std::string_view enhanced, std::string_view text) {
    return enhanced.empty() ? fmt::format("{} {}", code, text) : fmt::format("{} {} {}", code, enhanced, text);
}

json spf_json(const policy::spf::outcome& o) {
    json j = json::object();
    j["result"] = std::string(policy::spf::to_string(o.res));
    j["identity"] = o.identity;
    j["domain"] = o.domain;
    j["sender"] = o.sender;
    if (!o.mechanism.empty())
        j["mechanism"] = o.mechanism;
    if (!o.explanation.empty())
        j["explanation"] = o.explanation;
    if (!o.reason.empty())
        j["reason"] = o.reason;
    j["dns_terms"] = o.dns_terms;
    j["void_lookups"] = o.void_lookups;
    return j;
}

// A client's sender group and its mail flow policy, for trace.
json group_json(const policy::access::table& t, const policy::access::classification& k) {
    const auto& p = t.policies()[k.policy];
    json j = {{"group", t.groups()[k.group].name},
              {"policy", p.name},
              {"matched", k.matched},
              {"action", std::string(policy::access::to_string(p.action))},
              {"tls", std::string(policy::access::to_string(p.tls))},
              {"limits",
               {{"max_message_size", p.max_message_size},
                {"max_messages_per_session", p.max_messages_per_session},
                {"max_recipients_per_message", p.max_recipients_per_message},
                {"max_recipients_per_hour", p.max_recipients_per_hour},
                {"max_connections_per_client", p.max_connections_per_client}}},
              {"sender_auth", p.sender_auth},
              {"content_rules", p.content_rules},
              {"screening", p.screening}};
    if (k.rdns)
        j["rdns"] = *k.rdns;
    if (k.rdns_temporary)
        j["rdns_temporary"] = true;
    if (k.dnsbl_score) {
        j["dnsbl_score"] = *k.dnsbl_score;
        j["listed"] = k.listed;
    }
    return j;
}

json stage(bool ok, std::string reply, std::string note = {}) {
    json o = json::object();
    o["decision"] = ok ? "accept" : "reject";
    o["reply"] = std::move(reply);
    if (!note.empty())
        o["note"] = std::move(note);
    return o;
}

// The message as a client would send it after DATA: CRLF line ends, dot
// stuffing, the end marker.
std::string as_data(std::string_view text) {
    std::string out;
    out.reserve(text.size() + text.size() / 40 + 8);
    bool bol = true;
    for (size_t i = 0; i < text.size(); ++i) {
        char ch = text[i];
        if (bol && ch == '.')
            out += '.';
        if (ch == '\n' && (i == 0 || text[i - 1] != '\r'))
            out += '\r';
        out += ch;
        bol = ch == '\n';
    }
    if (!bol)
        out += "\r\n";
    out += ".\r\n";
    return out;
}

}  // namespace

task<json> trace(context& c, const json& args) {
    const std::string client_ip = str(args, "client_ip", true);
    const std::string helo = str(args, "helo", true);
    const std::string mail_from = str(args, "mail_from", true);
    std::vector<std::string> rcpts;
    if (args.contains("rcpt")) {
        const json& r = args["rcpt"];
        if (r.is_string())
            rcpts.push_back(r.get<std::string>());
        else if (r.is_array())
            for (const auto& x : r)
                if (x.is_string())
                    rcpts.push_back(x.get<std::string>());
    }
    if (rcpts.empty())
        throw command_error("missing argument rcpt (--rcpt ADDRESS, one or more)");
    if (rcpts.size() > k_max_trace_rcpts)
        throw command_error(fmt::format("at most {} recipients", k_max_trace_rcpts));
    const bool candidate = args.contains("candidate") && args["candidate"].is_boolean() && args["candidate"].get<bool>();
    auto peer = net::address::parse(client_ip, 0);
    if (!peer)
        throw command_error(fmt::format("client_ip: {} is not an IP address", client_ip));

    // The configuration judged.
    std::optional<config> owned;
    const config* cfg = c.reg->committed;
    if (candidate) {
        if (!c.candidate)
            throw command_error("there is no candidate (set or load makes one)");
        auto loaded = load_config_text(*c.candidate, "candidate");
        if (!loaded)
            throw command_error(fmt::format("the candidate is invalid:\n{}", loaded.error()));
        owned = std::move(loaded.value());
        cfg = &*owned;
    }
    size_t li = 0;
    if (std::string name = str(args, "listener", false); !name.empty()) {
        li = cfg->listeners.size();
        for (size_t i = 0; i < cfg->listeners.size(); ++i)
            if (cfg->listeners[i].name == name)
                li = i;
        if (li == cfg->listeners.size())
            throw command_error(fmt::format("no listener {}", name));
    }
    const listener_config& lc = cfg->listeners[li];
    auto relay_cfg = relay_options(*cfg);
    if (!relay_cfg)
        throw command_error(relay_cfg.error());
    const std::vector<policy::cidr> relay_networks = relay_cfg.value().relay_networks;
    const policy::relay_policy relay(std::move(relay_cfg.value()));
    const mta::delivery::options dopts = delivery_options(*cfg);
    const std::string& host = cfg->smtp.hostname;

    json out = json::object();
    out["configuration"] = candidate ? std::string("candidate") : fmt::format("version {}", c.version);
    std::string rejected_at;  // the first stage that refused
    std::string final_reply;
    auto refuse = [&](const char* at, const std::string& reply) {
        if (rejected_at.empty()) {
            rejected_at = at;
            final_reply = reply;
        }
    };

    // connection
    {
        std::vector<policy::cidr> exempt;
        if (cfg->smtp.client_limit_exceptions) {
            for (const auto& n : *cfg->smtp.client_limit_exceptions)
                if (auto x = policy::cidr::parse(n.to_string()))
                    exempt.push_back(*x);
        } else {
            exempt = relay_networks;
        }
        const bool is_exempt = std::any_of(exempt.begin(), exempt.end(), [&](const policy::cidr& n) {
            return n.contains(*peer);
        });
        std::string note = fmt::format(
            "listener {}; {}", lc.name,
            is_exempt ? std::string("exempt from per-client limits")
                      : fmt::format("per-client limits: {} connections/min (burst {}), {} messages/min (burst {}), "
                                    "{} at once",
                                    cfg->smtp.client_connections_per_minute, cfg->smtp.client_connection_burst,
                                    cfg->smtp.client_messages_per_minute, cfg->smtp.client_message_burst,
                                    lc.max_connections_per_ip));
        const bool suspended = !candidate && c.suspended_listeners.contains(lc.name);
        if (suspended) {
            auto r = mta::smtp::listener_suspended(host);
            std::string t = reply_text(r.r.code, r.r.enhanced, r.r.text);
            out["connection"] = stage(false, t, note + "; the listener is suspended");
            refuse("connection", t);
        } else if (c.reg->conservation_level >= 2) {
            auto r = mta::smtp::conserving_connect(host);
            std::string t = reply_text(r.r.code, r.r.enhanced, r.r.text);
            out["connection"] = stage(false, t, note + "; resource conservation refuses new mail now");
            refuse("connection", t);
        } else {
            out["connection"] = stage(true, fmt::format("220 {} ESMTP Ringway", host), note);
        }
    }
    // sender group: the lookups the session would make, through this core's resolver
    auto access = access_options(*cfg, nullptr, nullptr);
    if (!access)
        throw command_error(access.error());
    std::optional<policy::access::classification> klass;
    {
        policy::access::facts f;
        f.peer = *peer;
        policy::dns_answers answers;
        task<policy::access::classification> t =
            mta::verify::classify_client(c.reg->mine().dns, *access.value()->table, std::move(f), answers);
        klass = co_await std::move(t);
    }
    const policy::access::flow_policy& fp = access.value()->table->policies()[klass->policy];
    {
        json j = group_json(*access.value()->table, *klass);
        if (fp.action == policy::access::flow_action::reject) {
            std::string t = reply_text(fp.reject_code, fp.reject_enhanced, fp.reject_text);
            j.update(stage(false, t, "the group's mail flow policy rejects at connect"));
            refuse("sender_group", t);
        } else {
            j.update(stage(true, fmt::format("220 {} ESMTP Ringway", host)));
        }
        out["sender_group"] = std::move(j);
    }
    // helo
    {
        auto cmd = mta::smtp::parse_command(fmt::format("EHLO {}", helo), false);
        if (cmd) {
            out["helo"] = stage(true, fmt::format("250 {}", host));
        } else {
            std::string t = reply_text(cmd.error().code, cmd.error().enhanced, cmd.error().text);
            out["helo"] = stage(false, t);
            refuse("helo", t);
        }
    }
    // mail_from
    policy::sender_facts sf;
    {
        std::string line = fmt::format("MAIL FROM:<{}>", mail_from);
        auto cmd = mta::smtp::parse_command(line, true);
        if (!cmd) {
            std::string t = reply_text(cmd.error().code, cmd.error().enhanced, cmd.error().text);
            out["mail_from"] = stage(false, t);
            refuse("mail_from", t);
        } else if (lc.auth == auth_mode::required) {
            out["mail_from"] = stage(false, "530 5.7.0 Authentication required",
                                     "the listener requires AUTH; trace runs unauthenticated");
            refuse("mail_from", "530 5.7.0 Authentication required");
        } else {
            sf.null_sender = cmd.value().null_path;
            sf.local = cmd.value().path.local;
            sf.domain = cmd.value().path.domain;
            out["mail_from"] = stage(true, "250 2.1.0 Ok", sf.null_sender ? "the null sender" : "");
        }
    }
    // spf: the MAIL FROM identity as given (the HELO identity for the null
    // sender), whatever the command parser said of it.
    const mta::authentication_options ao = authentication_options(*cfg);
    policy::connection_facts client;
    client.peer = *peer;
    client.helo = helo;
    client.relay_granted = fp.action == policy::access::flow_action::relay;
    const bool arriving = !relay.may_relay(client);
    std::optional<policy::spf::outcome> spf_out;
    if (ao.spf && !arriving) {
        out["spf"] = stage(true, "250 2.1.0 Ok", "not checked: the mail of a client that may relay is our own");
    } else if (ao.spf) {
        policy::spf::request rq;
        rq.ip = *peer;
        rq.sender = mail_from;
        rq.helo = helo;
        rq.receiver = host;
        rq.now = int64_t(std::time(nullptr));
        policy::dns_answers answers;
        net::resolver* res = c.reg->mine().dns;
        if (!res)
            throw command_error("this core has no resolver");
        task<policy::spf::outcome> check = mta::verify::check_spf(*res, std::move(rq), ao.spf_options, answers);
        policy::spf::outcome o = co_await std::move(check);
        spf_out = o;
        json j = spf_json(o);
        auto r = mta::smtp::spf_refusal(o, ao.spf_reject_fail, ao.spf_tempfail_temperror);
        if (r) {
            std::string t = reply_text(r->r.code, r->r.enhanced, r->r.text);
            j.update(stage(false, t));
            refuse("spf", t);
        } else {
            j.update(stage(true, "250 2.1.0 Ok"));
        }
        out["spf"] = std::move(j);
    }
    // rcpt
    std::vector<std::pair<std::string, std::string>> accepted;  // address, domain
    {
        policy::connection_facts cf;
        cf.peer = *peer;
        cf.helo = helo;
        json list = json::array();
        size_t n = 0;
        for (const auto& r : rcpts) {
            json one = json::object();
            one["rcpt"] = r;
            auto cmd = mta::smtp::parse_command(fmt::format("RCPT TO:<{}>", r), true);
            if (!cmd) {
                std::string t = reply_text(cmd.error().code, cmd.error().enhanced, cmd.error().text);
                one.update(stage(false, t));
            } else if (++n > lc.max_recipients) {
                one.update(stage(false, "452 4.5.3 Error: too many recipients"));
            } else {
                policy::recipient_facts rf;
                rf.local = cmd.value().path.local;
                rf.domain = cmd.value().path.domain;
                rf.domain_literal = cmd.value().path.domain_literal;
                rf.has_relay_chars = mta::smtp::has_relay_chars(cmd.value().path);
                rf.had_source_route = cmd.value().had_source_route;
                policy::verdict v = relay.check_recipient(cf, sf, rf);
                if (v.act == policy::action::accept) {
                    one.update(stage(true, "250 2.1.5 Ok", v.relay ? "relayed: the client may relay" : "a domain we accept"));
                    accepted.emplace_back(mta::smtp::to_string(cmd.value().path), cmd.value().path.domain);
                } else {
                    one.update(stage(false, reply_text(v.code, v.enhanced, v.reason)));
                }
            }
            list.push_back(std::move(one));
        }
        out["rcpt"] = std::move(list);
        if (accepted.empty())
            refuse("rcpt", out["rcpt"].back().value("reply", std::string()));
    }
    // message
    if (args.contains("message")) {
        std::string text = str(args, "message", false);
        mta::smtp::data_decoder dec(size_t(lc.max_line_length_bytes));
        std::string body;
        auto st = dec.feed(as_data(text), body);
        std::optional<std::string> why;
        if (auto e = dec.error())
            why = reply_text(e->code, e->enhanced, e->text);
        else if (st.st != mta::smtp::data_decoder::status::done)
            why = "451 4.3.0 the message did not end";
        if (!why && dec.bytes_out() > lc.max_message_size_bytes) {
            auto r = mta::smtp::message_too_big();
            why = reply_text(r.r.code, r.r.enhanced, r.r.text);
        }
        // The same pipeline as a session's, with DKIM verification on it.
        mta::smtp::pipeline_options po;
        po.max_received = cfg->smtp.max_received_headers;
        mta::smtp::message_pipeline pipe(po);
        policy::dkim::options dko = ao.dkim_options;
        dko.now = int64_t(std::time(nullptr));
        mta::verify::dkim_feed feed(dko, &pipe);
        pipe.add(&feed);
        mta::verify::arc_feed afeed(&pipe);
        pipe.add(&afeed);
        pipe.feed(body);
        pipe.finish();
        if (!why && pipe.failure())
            why = reply_text(pipe.failure()->r.code, pipe.failure()->r.enhanced, pipe.failure()->r.text);
        std::string note = fmt::format("{} bytes, {} Received: headers", dec.bytes_out(), pipe.received());
        out["mime"] = mime_json(body);
        if (why) {
            out["message"] = stage(false, *why, note);
            refuse("message", *why);
        } else {
            out["message"] = stage(true, "250 2.0.0 Ok: queued", note);
        }
        net::resolver* res = c.reg->mine().dns;
        policy::dns_answers answers;
        std::optional<std::vector<policy::dkim::verdict>> dkim_out;
        if (!why && res && arriving && ao.dkim_verify) {
            if (feed.v.has_signatures()) {
                task<std::vector<policy::dkim::verdict>> check = mta::verify::check_dkim(*res, feed.v, answers);
                dkim_out = co_await std::move(check);
            } else {
                dkim_out.emplace();
            }
            json list = json::array();
            for (const auto& v : *dkim_out)
                list.push_back({{"result", std::string(policy::dkim::to_string(v.res))},
                                {"d", v.domain},
                                {"s", v.selector},
                                {"a", std::string(policy::dkim::to_string(v.a))},
                                {"b", v.b_prefix},
                                {"reason", v.reason}});
            out["dkim"] = std::move(list);
        } else if (!arriving) {
            out["dkim"] = stage(true, "250 2.0.0 Ok: queued", "not verified: the mail of a client that may relay is our own");
        }
        std::optional<policy::arc::outcome> arc_out;
        if (!why && res && arriving && ao.arc_verify) {
            task<policy::arc::outcome> check = mta::verify::check_arc(*res, afeed.v, answers);
            arc_out = co_await std::move(check);
            out["arc"] = {{"result", std::string(policy::arc::to_string(arc_out->res))},
                          {"instances", arc_out->instances},
                          {"sealer", arc_out->sealer},
                          {"reason", arc_out->reason}};
        }
        std::string dmarc_result, dmarc_disposition;
        if (!why && res && arriving && ao.dmarc) {
            policy::dmarc::request rq;
            rq.from_domain = mta::verify::dmarc_from_domain(pipe.headers().fields());
            rq.spf = spf_out ? &*spf_out : nullptr;
            rq.dkim = dkim_out ? &*dkim_out : nullptr;
            rq.sample = 0;  // as if pct= picked this message
            task<policy::dmarc::outcome> check = mta::verify::check_dmarc(*res, std::move(rq), answers);
            policy::dmarc::outcome d = co_await std::move(check);
            dmarc_result = std::string(policy::dmarc::to_string(d.res));
            json j = {{"result", std::string(policy::dmarc::to_string(d.res))},
                      {"domain", d.from_domain},
                      {"policy_domain", d.policy_domain},
                      {"policy", std::string(policy::dmarc::to_string(d.policy))},
                      {"disposition", std::string(policy::dmarc::to_string(d.applied))},
                      {"spf_aligned", d.spf_aligned},
                      {"dkim_aligned", d.dkim_aligned},
                      {"reason", d.reason}};
            if (d.rec)
                j["pct"] = d.rec->pct;
            if (mta::verify::trusted_arc_override(d, arc_out ? &*arc_out : nullptr, ao.arc_trusted_sealers)) {
                j["disposition"] = "none";
                j["override"] = d.override_by;
            }
            dmarc_disposition = std::string(policy::dmarc::to_string(d.applied));
            if (d.applied == policy::dmarc::disposition::reject && lc.dmarc_reject) {
                auto r = mta::smtp::dmarc_rejected(d.from_domain);
                std::string t = reply_text(r.r.code, r.r.enhanced, r.r.text);
                j.update(stage(false, t));
                refuse("dmarc", t);
            } else {
                j.update(stage(true, "250 2.0.0 Ok: queued",
                               d.applied == policy::dmarc::disposition::reject ? "recorded only: the listener's dmarc_reject is off" : ""));
            }
            out["dmarc"] = std::move(j);
        }
        if (!why && !cfg->content_rules.empty()) {
            // The content rules, compiled off the reactor (a large set
            // takes seconds) and evaluated as a session would.
            std::vector<policy::rules::rule_set::source> src;
            for (const auto& r : cfg->content_rules)
                src.push_back({r.name, r.condition, r.actions});
            auto build = [src = std::move(src)]() { return policy::rules::rule_set::compile(src); };
            auto job = offload(std::move(build));
            auto rs = co_await std::move(job);
            if (!rs)
                throw command_error(rs.error());
            mta::verify::rules_feed rf(rs.value());
            mta::smtp::message_pipeline rpipe(po);
            rpipe.add(&rf);
            rpipe.feed(body);
            rpipe.finish();
            policy::rules::message_facts f;
            f.mail_from = sf.null_sender ? std::string() : mail_from;
            for (const auto& [addr, domain] : accepted)
                f.rcpts.push_back(addr);
            f.helo = helo;
            f.client = *peer;
            f.inbound = arriving;
            f.size = dec.bytes_out();
            if (spf_out)
                f.spf = policy::spf::to_string(spf_out->res);
            f.dmarc = dmarc_result;
            f.dmarc_disposition = dmarc_disposition;
            f.sender_group = access.value()->table->groups()[klass->group].name;
            f.mail_flow_policy = fp.name;
            if (dkim_out) {
                for (const auto& v : *dkim_out)
                    f.dkim.emplace_back(policy::dkim::to_string(v.res));
                if (dkim_out->empty())
                    f.dkim.emplace_back("none");
            }
            policy::rules::decision d = rf.ev.decide(f);
            using outcome = policy::rules::decision::outcome;
            json j = {{"fired", d.fired}};
            json adds = json::array();
            for (const auto& [n, v] : d.add_headers)
                adds.push_back(fmt::format("{}: {}", n, v));
            j["add_headers"] = std::move(adds);
            j["remove_headers"] = d.remove_headers;
            if (!d.subject_tag.empty())
                j["subject_tag"] = d.subject_tag;
            if (!d.final_rule.empty())
                j["rule"] = d.final_rule;
            // What the rules would send where (not for a refused message).
            if (d.final != outcome::reject && d.final != outcome::drop && d.final != outcome::bounce) {
                if (!d.redirect.empty())
                    j["redirect"] = d.redirect;
                if (!d.route.empty())
                    j["route"] = d.route;
                if (!d.pool.empty())
                    j["pool"] = d.pool;
            }
            if (d.final != outcome::reject && d.final != outcome::drop && d.final != outcome::bounce)
                for (const auto& c : d.copies)
                    j["copies"].push_back(c.to);
            for (const auto& n : d.notices)
                j["notices"].push_back(n.to);
            if (d.final == outcome::reject) {
                std::string t = reply_text(d.code, d.enhanced, d.text);
                j.update(stage(false, t));
                refuse("rules", t);
            } else {
                j.update(stage(true, "250 2.0.0 Ok: queued",
                               d.final == outcome::drop         ? "dropped: answered 250, not queued"
                               : d.final == outcome::quarantine ? fmt::format("held in quarantine {}", d.quarantine)
                               : d.final == outcome::bounce
                                   ? fmt::format("bounced: the sender gets {} {} {}", d.code, d.enhanced, d.text)
                                   : std::string()));
                if (d.final == outcome::drop)
                    j["decision"] = "drop";
                if (d.final == outcome::bounce)
                    j["decision"] = "bounce";
                if (d.final == outcome::quarantine) {
                    j["decision"] = "quarantine";
                    j["quarantine"] = d.quarantine;
                }
            }
            out["rules"] = std::move(j);
        }
    }
    // routing
    {
        json list = json::array();
        for (const auto& [addr, domain] : accepted) {
            json one = json::object();
            one["rcpt"] = addr;
            std::string d = domain;
            for (auto& ch : d)
                ch = char(std::tolower(uint8_t(ch)));
            const auto* r = mta::delivery::find_route(dopts.routes, d);
            one["pool"] = r && !r->pool.empty() ? r->pool : dopts.default_pool;
            if (r && r->hosts.empty())
                r = nullptr;  // a route that only chooses the pool
            if (r) {
                std::vector<std::string> hosts;
                for (const auto& h : r->hosts)
                    hosts.push_back(fmt::format("{}:{}", h.name, h.port));
                one["destination"] = fmt::format("route:{}", r->domain);
                one["hosts"] = hosts;
            } else {
                one["destination"] = fmt::format("mx:{}", d);
                one["hosts"] = json::array({fmt::format("the MX hosts of {} (port {})", d, dopts.smtp_port)});
            }
            list.push_back(std::move(one));
        }
        out["routing"] = std::move(list);
    }
    json verdict = json::object();
    if (rejected_at.empty()) {
        verdict["decision"] = "accept";
        verdict["recipients"] = accepted.size();
        verdict["reply"] = args.contains("message") ? "250 2.0.0 Ok: queued" : "250 2.1.5 Ok";
    } else {
        verdict["decision"] = "reject";
        verdict["stage"] = rejected_at;
        verdict["reply"] = final_reply;
        verdict["recipients"] = accepted.size();
    }
    out["verdict"] = std::move(verdict);
    co_return out;
}

}  // namespace rw::admin::control_detail
