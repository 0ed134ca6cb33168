// The configuration commands of the control socket. One candidate is
// shared by every shell (like a router's candidate configuration): `set`
// and `load` change it, `diff` compares it with the committed one,
// `commit` validates it, puts it in force on every core and records it as
// a version; `rollback` commits an earlier version's text the same way.
#include <nlohmann/json.hpp>

#include "admin/config_schema.hh"
#include "admin/control.hh"
#include "admin/control_commands.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/reactor/io.hh"
#include "runtime/smp/offload.hh"

namespace rw::admin::control_detail {

namespace {
const logger lg{"config"};
using json = nlohmann::json;

constexpr size_t k_max_candidate = 1 << 20;
constexpr int k_commit_wait_tries = 3000;  // x 10 ms: a commit waits this long for another

std::string str_arg(const json& args, const char* key, bool required) {
    if (!args.contains(key)) {
        if (required)
            throw command_error(fmt::format("missing argument {}", key));
        return {};
    }
    if (!args[key].is_string())
        throw command_error(fmt::format("argument {} must be a string", key));
    return args[key].get<std::string>();
}

int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

json changes_json(const std::vector<key_change>& changes) {
    json a = json::array();
    for (const auto& ch : changes) {
        json o = json::object();
        o["key"] = ch.key;
        o["before"] = ch.before;
        o["after"] = ch.after;
        o["apply"] = std::string(to_string(ch.apply));
        a.push_back(std::move(o));
    }
    return a;
}

json problems_json(const std::string& errors) {
    json a = json::array();
    size_t pos = 0;
    while (pos < errors.size()) {
        size_t nl = errors.find('\n', pos);
        a.push_back(errors.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
        if (nl == std::string::npos)
            break;
        pos = nl + 1;
    }
    return a;
}

// The text a new candidate starts from: the committed version as stored
// (comments and all), or the canonical TOML of the committed configuration.
std::string committed_text(const context& c) {
    if (c.store && c.version != 0)
        if (auto t = c.store->text(c.version))
            return t.value();
    return to_toml(*c.reg->committed);
}

json version_json(const version_info& v) {
    json o = json::object();
    o["version"] = v.number;
    o["time"] = v.time;
    o["who"] = v.who;
    o["comment"] = v.comment;
    o["diff"] = v.diff;
    return o;
}

// The candidate (or the committed text) loaded, with the changes it makes.
struct staged {
    std::optional<config> cfg;
    std::string problems;
    std::vector<key_change> changes;
};
staged examine(const context& c, const std::string& text) {
    staged s;
    auto loaded = load_config_text(text, "candidate");
    if (!loaded) {
        s.problems = loaded.error();
        return s;
    }
    s.changes = diff(*c.reg->committed, loaded.value());
    s.cfg = std::move(loaded.value());
    return s;
}

json staged_json(const context& c, const staged& s) {
    json o = json::object();
    o["candidate"] = c.candidate.has_value();
    o["changes"] = changes_json(s.changes);
    o["problems"] = problems_json(s.problems);
    o["valid"] = s.problems.empty();
    return o;
}

// Validates text, applies it on every core, records it. Commits are
// serialised: a second one waits for the first.
// from_candidate: the text is the candidate's (a commit), which is then
// done with unless a shell changed it meanwhile; a rollback leaves it.
task<json> commit_text(context& c, const peer_cred& who, std::string text, std::string comment, bool from_candidate) {
    for (int i = 0; c.committing; ++i) {
        if (i >= k_commit_wait_tries || c.stopping)
            throw command_error("another commit is still being applied; try again");
        auto pause = io::sleep(std::chrono::milliseconds(10));
        co_await pause;
    }
    c.committing = true;
    struct release {
        bool& flag;
        ~release() { flag = false; }
    } held{c.committing};

    staged s = examine(c, text);
    if (!s.cfg)
        throw command_error(fmt::format("the candidate is invalid; nothing was changed:\n{}", s.problems));
    auto done_with_candidate = [&] {
        if (from_candidate && c.candidate && *c.candidate == text)
            c.candidate.reset();
    };
    if (s.changes.empty()) {
        done_with_candidate();
        json o = json::object();
        o["version"] = c.version;
        o["unchanged"] = true;
        co_return o;
    }
    const config before = *c.reg->committed;
    std::string partial;
    {
        auto apply = c.reg->apply(*s.cfg);
        std::string err = co_await std::move(apply);
        if (err.starts_with("partial: "))
            partial = err.substr(9);
        else if (!err.empty())
            throw command_error(fmt::format("cannot apply the candidate; nothing was changed: {}", err));
    }
    version_info meta;
    meta.time = unix_now();
    meta.who = who.describe();
    meta.comment = comment;
    meta.diff = format_diff(s.changes);
    uint64_t number = c.version + 1;
    if (c.store) {
        c.store->set_keep(s.cfg->control.history_versions);
        config_store* store = c.store.get();
        auto write = [store, text, meta]() { return store->commit(text, meta); };
        auto job = offload(std::move(write));
        auto n = co_await std::move(job);
        if (!n) {
            // Not recorded: put the previous configuration back, so what runs is what is on disk.
            auto undo = c.reg->apply(before);
            std::string err = co_await std::move(undo);
            throw command_error(fmt::format("cannot record the new version ({}); the previous configuration is "
                                            "in force again{}",
                                            n.error(), err.empty() ? "" : fmt::format(" (undo: {})", err)));
        }
        number = n.value();
    }
    c.version = number;
    done_with_candidate();
    size_t restart = 0;
    for (const auto& ch : s.changes)
        restart += ch.apply == apply_mode::restart;
    lg.info("configuration version {} committed by {}: {} changes ({} at restart){}", number, who.describe(),
            s.changes.size(), restart, comment.empty() ? "" : fmt::format(", comment: {}", comment));
    for (const auto& ch : s.changes)
        lg.info("  {} {} -> {}{}", ch.key, ch.before.empty() ? "(none)" : ch.before,
                ch.after.empty() ? "(none)" : ch.after, ch.apply == apply_mode::restart ? " (at restart)" : "");
    journal::record("config", {{"version", number},
                               {"who", std::string_view(meta.who)},
                               {"changes", uint64_t(s.changes.size())},
                               {"comment", std::string_view(comment)}});
    json o = json::object();
    o["version"] = number;
    o["changes"] = changes_json(s.changes);
    o["pending_restart"] = pending_restart(c);
    if (!partial.empty())
        o["problems"] = problems_json(partial);
    co_return o;
}

task<json> cmd_showconfig(context& c, const json& args) {
    const std::string section = str_arg(args, "section", false);
    const bool want_candidate = args.contains("candidate") && args["candidate"].is_boolean() &&
                                args["candidate"].get<bool>();
    if (!section.empty()) {
        bool known = false;
        for (const auto& s : config_sections())
            known |= s.name == section;
        if (!known)
            throw command_error(fmt::format("no section {}", section));
    }
    json o = json::object();
    o["version"] = c.version;
    o["section"] = section;
    o["candidate"] = want_candidate;
    o["pending_restart"] = pending_restart(c);
    if (want_candidate) {
        if (!c.candidate)
            throw command_error("there is no candidate (set or load makes one)");
        // Whole, it is shown as it is (its problems name its lines); a
        // section of it only once it loads.
        staged s = examine(c, *c.candidate);
        if (section.empty())
            o["toml"] = *c.candidate;
        else if (!s.cfg)
            throw command_error(fmt::format("the candidate is invalid:\n{}", s.problems));
        else
            o["toml"] = to_toml(*s.cfg, section);
        o["problems"] = problems_json(s.problems);
    } else {
        o["toml"] = to_toml(*c.reg->committed, section);
    }
    co_return o;
}

task<json> cmd_set(context& c, const peer_cred& who, const json& args) {
    const std::string key = str_arg(args, "key", true);
    const std::string value = str_arg(args, "value", true);
    std::string base = c.candidate ? *c.candidate : committed_text(c);
    auto t = set_config_key(base, key, value);
    if (!t)
        throw command_error(t.error());
    if (t.value().size() > k_max_candidate)
        throw command_error("the candidate would be larger than 1 MiB");
    c.candidate = std::move(t.value());
    c.candidate_by = who.describe();
    lg.info("candidate: {} set {} = {}", c.candidate_by, key, value);
    co_return staged_json(c, examine(c, *c.candidate));
}

task<json> cmd_load(context& c, const peer_cred& who, const json& args) {
    std::string text = str_arg(args, "text", true);
    const std::string name = str_arg(args, "name", false);
    if (text.size() > k_max_candidate)
        throw command_error("larger than 1 MiB; is this a configuration file?");
    c.candidate = std::move(text);
    c.candidate_by = who.describe();
    lg.info("candidate: {} loaded {}", c.candidate_by, name.empty() ? "a configuration" : name);
    co_return staged_json(c, examine(c, *c.candidate));
}

task<json> cmd_diff(context& c) {
    if (!c.candidate) {
        json o = staged_json(c, staged{});
        co_return o;
    }
    co_return staged_json(c, examine(c, *c.candidate));
}

task<json> cmd_abandon(context& c, const peer_cred& who) {
    const bool had = c.candidate.has_value();
    c.candidate.reset();
    if (had)
        lg.info("candidate abandoned by {}", who.describe());
    json o = json::object();
    o["abandoned"] = had;
    co_return o;
}

task<json> cmd_history(context& c, const json& args) {
    int64_t max = 20;
    if (args.contains("count")) {
        if (!args["count"].is_number_integer() || args["count"].get<int64_t>() < 1)
            throw command_error("count must be a positive integer");
        max = std::min<int64_t>(args["count"].get<int64_t>(), 100000);
    }
    if (!c.store)
        throw command_error("no configuration store (control.config_dir could not be used at start-up)");
    config_store* store = c.store.get();
    auto read = [store, max]() { return store->history(size_t(max)); };
    auto job = offload(std::move(read));
    auto versions = co_await std::move(job);
    json a = json::array();
    for (const auto& v : versions)
        a.push_back(version_json(v));
    json o = json::object();
    o["running"] = c.version;
    o["versions"] = std::move(a);
    co_return o;
}

task<json> cmd_rollback(context& c, const peer_cred& who, const json& args) {
    if (!c.store)
        throw command_error("no configuration store (control.config_dir could not be used at start-up)");
    uint64_t target = c.version > 1 ? c.version - 1 : 0;
    if (args.contains("version")) {
        std::string v = str_arg(args, "version", false);
        if (v.empty() || v.size() > 19 || !std::all_of(v.begin(), v.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
            throw command_error(fmt::format("version: {} is not a version number (see history)", v));
        target = std::stoull(v);
    }
    if (target == 0)
        throw command_error("there is no earlier version");
    config_store* store = c.store.get();
    auto read = [store, target]() { return store->text(target); };
    auto job = offload(std::move(read));
    auto text = co_await std::move(job);
    if (!text)
        throw command_error(fmt::format("no version {} (see history): {}", target, text.error()));
    auto t = commit_text(c, who, std::move(text.value()), fmt::format("rollback to version {}", target), false);
    json o = co_await std::move(t);
    o["rolled_back_to"] = target;
    co_return o;
}

}  // namespace

json pending_restart(const context& c) {
    json a = json::array();
    for (const auto& ch : diff(*c.reg->running, *c.reg->committed))
        a.push_back(ch.key);
    return a;
}

bool is_config_command(const std::string& cmd) {
    return cmd == "showconfig" || cmd == "set" || cmd == "load" || cmd == "diff" || cmd == "commit" ||
           cmd == "abandon" || cmd == "history" || cmd == "rollback";
}

task<json> config_command(context& c, const peer_cred& who, const std::string& cmd, const json& args) {
    if (cmd == "showconfig")
        co_return co_await cmd_showconfig(c, args);
    if (cmd == "set")
        co_return co_await cmd_set(c, who, args);
    if (cmd == "load")
        co_return co_await cmd_load(c, who, args);
    if (cmd == "diff")
        co_return co_await cmd_diff(c);
    if (cmd == "abandon")
        co_return co_await cmd_abandon(c, who);
    if (cmd == "history")
        co_return co_await cmd_history(c, args);
    if (cmd == "rollback")
        co_return co_await cmd_rollback(c, who, args);
    // commit
    if (!c.candidate)
        throw command_error("nothing to commit: there is no candidate (set or load makes one)");
    std::string comment = str_arg(args, "comment", false);
    if (comment.size() > 1000)
        throw command_error("comment: longer than 1000 characters");
    auto t = commit_text(c, who, *c.candidate, std::move(comment), true);
    co_return co_await std::move(t);
}

}  // namespace rw::admin::control_detail
