// The appliance's own commands. Network, SSH, time, power, upgrades and the
// spool disk go to ringway-appliance, the privileged helper that systemd
// starts for each connection to /run/ringway-appliance.sock (root and the
// ringway-admin group only). loadtest runs the bundled load generator
// directly, as the admin, with arguments checked here (no shell between).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>

#include "admin/shell/client.hh"
#include "admin/shell/commands.hh"

extern char** environ;

namespace rw::admin::shell {

namespace {
using json = nlohmann::json;

std::string appliance_socket() {
    const char* e = std::getenv("RINGWAY_APPLIANCE_SOCKET");
    return e && *e ? e : "/run/ringway-appliance.sock";
}

outcome fail(int status, std::string why) {
    outcome r;
    r.status = status;
    r.err = std::move(why);
    return r;
}

std::string str(const json& j, const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : ""; }

std::string actions_text(const json& r) {
    std::string o;
    if (r.contains("actions"))
        for (const auto& a : r["actions"]) {
            if (a.value("run", json(true)) == json(false) || a.value("run", json()) == json("no"))
                o += fmt::format("  (not run here: {})\n", str(a, "command"));
            else if (a.contains("status") && a["status"] != 0)
                o += fmt::format("  {} failed ({}): {}\n", str(a, "command"), a["status"].dump(), str(a, "output"));
        }
    return o;
}

std::string network_text(const json& r) {
    std::string o;
    if (!str(r, "changed").empty())
        o += fmt::format("changed: {}\n", str(r, "changed"));
    o += fmt::format("mode      {}\n", str(r, "mode"));
    if (str(r, "mode") == "static") {
        o += fmt::format("address   {}\n", str(r, "address"));
        o += fmt::format("gateway   {}\n", str(r, "gateway").empty() ? "(none)" : str(r, "gateway"));
    }
    std::vector<std::string> dns;
    for (const auto& d : r.value("dns", json::array()))
        dns.push_back(d.get<std::string>());
    o += fmt::format("dns       {}\n", dns.empty() ? std::string("from DHCP") : fmt::format("{}", fmt::join(dns, " ")));
    for (const auto& l : r.value("links", json::array())) {
        if (l.contains("default_route")) {
            o += fmt::format("default route via {}\n", str(l, "default_route"));
            continue;
        }
        if (str(l, "name") == "lo")
            continue;
        std::vector<std::string> addrs;
        for (const auto& a : l.value("addresses", json::array()))
            addrs.push_back(a.get<std::string>());
        o += fmt::format("link {:<8} {:<6} {} {}\n", str(l, "name"), str(l, "state"), str(l, "mac"), fmt::join(addrs, " "));
    }
    return o + actions_text(r);
}

std::string ssh_text(const json& r) {
    std::string o = fmt::format("password logins: {}\n", r.value("password_authentication", false) ? "on" : "off");
    if (r["keys"].empty())
        o += "no SSH keys\n";
    for (const auto& k : r["keys"])
        o += fmt::format("key {}: {}\n", k["index"].get<int>(), str(k, "key"));
    return o + actions_text(r);
}

std::string ntp_text(const json& r) {
    std::vector<std::string> s;
    for (const auto& x : r["servers"])
        s.push_back(x.get<std::string>());
    return fmt::format("time servers: {}\nsynchronized: {}\ntime now: {}\n",
                       s.empty() ? str(r, "source") : fmt::format("{}", fmt::join(s, " ")),
                       r.value("synchronized", false) ? "yes" : "not yet", str(r, "time")) +
           actions_text(r);
}

std::string upgrade_text(const json& r) {
    std::string o;
    if (!str(r, "message").empty())
        o += str(r, "message") + "\n";
    o += fmt::format("running slot {}; the boot loader boots slot {}", str(r, "running"), str(r, "boots"));
    if (!str(r, "trial").empty())
        o += fmt::format(", and slot {} on probation ({} tries)", str(r, "trial"), str(r, "trial_tries"));
    o += "\n";
    for (const auto& s : r["slots"])
        o += fmt::format("slot {}: {}{}\n", str(s, "slot"),
                         s.value("holds_system", false) ? "version " + str(s, "version") : std::string("empty"),
                         s.value("running", false) ? " (running)" : "");
    for (const auto& l : r.value("log", json::array()))
        o += "  " + l.get<std::string>() + "\n";
    return o + actions_text(r);
}

std::string spool_text(const json& r) {
    std::string o;
    o += fmt::format("spool device: {}\n", str(r, "device").empty() ? "(none in use)" : str(r, "device"));
    if (!str(r, "uuid").empty())
        o += fmt::format("spool uuid:   {}\n", str(r, "uuid"));
    if (!str(r, "problem").empty())
        o += fmt::format("problem:      {}\n", str(r, "problem"));
    return o + actions_text(r);
}

// One request to the helper; the result printed by fmt (or as JSON).
outcome ask(const std::string& cmd, const json& args, bool json_out, std::string (*fmt_fn)(const json&)) {
    auto c = client::connect(appliance_socket());
    if (!c)
        return fail(1, fmt::format("cannot reach the appliance helper ({}): this command works on the Ringway "
                                   "appliance, as admin", c.error()));
    auto r = c.value().call(cmd, args);
    if (!r)
        return fail(1, r.error());
    outcome o;
    o.out = json_out ? r.value().dump(2) + "\n" : fmt_fn(r.value());
    return o;
}

bool is_word(const std::string& w) {
    return !w.empty() && w.size() <= 255 && w[0] != '-' &&
           std::all_of(w.begin(), w.end(), [](unsigned char c) { return c > ' ' && c < 127; });
}

// ---- the commands ----

outcome interfaceconfig(const std::vector<std::string>& w, bool j, const std::function<bool()>&) {
    if (w.size() > 2)
        return fail(2, "usage: interfaceconfig [dhcp | ADDRESS/PREFIX]");
    json a = json::object();
    if (w.size() == 2)
        a["address"] = w[1];
    return ask("interfaceconfig", a, j, network_text);
}

outcome setgateway(const std::vector<std::string>& w, bool j, const std::function<bool()>&) {
    if (w.size() > 2)
        return fail(2, "usage: setgateway [ADDRESS]");
    json a = json::object();
    if (w.size() == 2)
        a["gateway"] = w[1];
    return ask("setgateway", a, j, network_text);
}

outcome dnsconfig(const std::vector<std::string>& w, bool j, const std::function<bool()>&) {
    json a = json::object();
    if (w.size() >= 2) {
        a["servers"] = json::array();
        if (!(w.size() == 2 && w[1] == "dhcp"))
            for (size_t i = 1; i < w.size(); ++i)
                a["servers"].push_back(w[i]);
    }
    return ask("dnsconfig", a, j, network_text);
}

outcome sshconfig(const std::vector<std::string>& w, bool j, const std::function<bool()>&) {
    const char* usage = "usage: sshconfig [addkey KEY | delkey N | password on|off]";
    json a = json::object();
    if (w.size() == 1)
        return ask("sshconfig", a, j, ssh_text);
    a["action"] = w[1];
    if (w[1] == "addkey" && w.size() >= 3) {
        std::string key = w[2];
        for (size_t i = 3; i < w.size(); ++i)
            key += " " + w[i];
        a["key"] = key;
    } else if (w[1] == "delkey" && w.size() == 3 && !w[2].empty() && w[2].size() < 6 &&
               std::all_of(w[2].begin(), w[2].end(), [](char c) { return c >= '0' && c <= '9'; })) {
        a["index"] = std::stoi(w[2]);
    } else if (w[1] == "password" && w.size() == 3 && (w[2] == "on" || w[2] == "off")) {
        a["value"] = w[2];
    } else {
        return fail(2, usage);
    }
    return ask("sshconfig", a, j, ssh_text);
}

outcome ntpconfig(const std::vector<std::string>& w, bool j, const std::function<bool()>&) {
    json a = json::object();
    if (w.size() >= 2) {
        a["servers"] = json::array();
        if (!(w.size() == 2 && w[1] == "default"))
            for (size_t i = 1; i < w.size(); ++i)
                a["servers"].push_back(w[i]);
    }
    return ask("ntpconfig", a, j, ntp_text);
}

outcome power(const std::vector<std::string>& w, bool j, const std::function<bool()>&) {
    if (w.size() != 1)
        return fail(2, fmt::format("usage: {}", w[0]));
    return ask(w[0], json::object(), j, [](const json& r) { return str(r, "message") + "\n" + actions_text(r); });
}

outcome spool(const std::vector<std::string>& w, bool j, const std::function<bool()>&) {
    json a = json::object();
    if (w.size() == 3 && w[1] == "format")
        a = {{"action", "format"}, {"device", w[2]}};
    else if (w.size() == 2 && w[1] == "adopt")
        a = {{"action", "adopt"}};
    else if (w.size() != 1)
        return fail(2, "usage: spool [format DEVICE | adopt]");
    return ask("spool", a, j, spool_text);
}

outcome upgrade(const std::vector<std::string>& w, bool j, const std::function<bool()>&) {
    const char* usage = "usage: upgrade status | rollback | FILE | - (the bundle on standard input)";
    if (w.size() == 1 || (w.size() == 2 && w[1] == "status"))
        return ask("upgrade_status", json::object(), j, upgrade_text);
    if (w.size() == 2 && w[1] == "rollback")
        return ask("upgrade_rollback", json::object(), j, upgrade_text);
    if (w.size() != 2)
        return fail(2, usage);
    int fd = STDIN_FILENO;
    if (w[1] == "-") {
        if (::isatty(STDIN_FILENO))
            return fail(2, "upgrade - reads the bundle from standard input: ssh admin@GATEWAY upgrade - < ringway.bundle");
    } else {
        fd = ::open(w[1].c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return fail(1, fmt::format("cannot read {}: {}", w[1], std::strerror(errno)));
    }
    auto c = client::connect(appliance_socket());
    if (!c) {
        if (fd != STDIN_FILENO)
            ::close(fd);
        return fail(1, fmt::format("cannot reach the appliance helper ({}): upgrade works on the Ringway appliance",
                                   c.error()));
    }
    auto r = c.value().upload("upgrade", json::object(), fd, [&](const json& e) {
        std::string line = j ? e.dump() + "\n" : str(e, "text") + "\n";
        std::fwrite(line.data(), 1, line.size(), stdout);
        std::fflush(stdout);
    });
    if (fd != STDIN_FILENO)
        ::close(fd);
    if (!r)
        return fail(1, "upgrade refused: " + r.error());
    outcome o;
    o.out = j ? r.value().dump(2) + "\n" : upgrade_text(r.value());
    return o;
}

// ---- loadtest ----

std::string load_generator() {
    if (const char* e = std::getenv("RINGWAY_LOAD"); e && *e)
        return e;
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        auto beside = self.parent_path() / "ringway-load";
        if (::access(beside.c_str(), X_OK) == 0)
            return beside;
    }
    return "/usr/bin/ringway-load";
}

outcome loadtest(const std::vector<std::string>& w, bool j, const std::function<bool()>&) {
    const char* usage =
        "usage: loadtest HOST[:PORT] [--rate N/h] [--count N] [--duration 60s] [--connections N] [--size 4k] "
        "[--rcpts N] [--from PATTERN] [--to PATTERN] [--starttls]";
    if (w.size() < 2 || !is_word(w[1]))
        return fail(2, usage);
    std::string target = w[1];
    if (target.find(':') == std::string::npos)
        target += ":25";
    std::vector<std::string> argv = {load_generator(), "--server", target};
    // Each option of the shell is one of the load generator's, its value a
    // single word that cannot be taken for an option.
    static const std::vector<std::pair<std::string, std::string>> valued = {
        {"--rate", "--rate"}, {"--count", "--count"}, {"--duration", "--duration"}, {"--connections", "--connections"},
        {"--size", "--mix"}, {"--rcpts", "--rcpts"}, {"--from", "--from"}, {"--to", "--to"}, {"--per-conn", "--per-conn"}};
    bool bounded = false;
    for (size_t i = 2; i < w.size(); ++i) {
        if (w[i] == "--starttls") {
            argv.push_back("--starttls");
            continue;
        }
        auto it = std::find_if(valued.begin(), valued.end(), [&](const auto& p) { return p.first == w[i]; });
        if (it == valued.end())
            return fail(2, fmt::format("unexpected {}; {}", w[i], usage));
        if (i + 1 >= w.size() || !is_word(w[i + 1]))
            return fail(2, fmt::format("{} needs a value; {}", w[i], usage));
        bounded |= w[i] == "--count" || w[i] == "--duration";
        argv.push_back(it->second);
        argv.push_back(w[++i]);
    }
    if (!bounded) {  // never an endless run by accident
        argv.push_back("--duration");
        argv.push_back("30s");
    }
    if (j)
        argv.push_back("--json");
    std::vector<char*> args;
    for (auto& a : argv)
        args.push_back(a.data());
    args.push_back(nullptr);
    // The shell ignores Ctrl-C; the load generator must not, so Ctrl-C
    // ends a test early.
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t def;
    sigemptyset(&def);
    sigaddset(&def, SIGINT);
    sigaddset(&def, SIGQUIT);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    std::fflush(stdout);
    pid_t pid;
    int rc = posix_spawn(&pid, args[0], &fa, &at, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0)
        return fail(1, fmt::format("cannot run the load generator {}: {}", argv[0], std::strerror(rc)));
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    outcome o;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        o.status = 1;
        o.err = WIFEXITED(st) ? fmt::format("the load test ended with status {}", WEXITSTATUS(st))
                              : std::string("the load test was stopped");
    }
    return o;
}

}  // namespace

void add_appliance_commands(std::vector<command>& v) {
    using a = arg_spec;
    auto add = [&](std::string name, std::string usage, std::vector<arg_spec> args, std::string summary,
                   std::string help, decltype(command::run) run) {
        command c;
        c.name = std::move(name);
        c.usage_text = std::move(usage);
        c.args = std::move(args);
        c.summary = std::move(summary);
        c.help = std::move(help);
        c.run = std::move(run);
        v.push_back(std::move(c));
    };
    add("interfaceconfig", "interfaceconfig [dhcp|ADDRESS/PREFIX]", {a{"address", a::choice, {"dhcp"}, true}},
        "the appliance's address: show it, DHCP, or a static one",
        "interfaceconfig: the network settings and each interface's addresses.\n"
        "interfaceconfig dhcp: addresses from DHCP (the default).\n"
        "interfaceconfig 192.0.2.10/24: a static address on the wired interfaces; then setgateway and\n"
        "dnsconfig. Applied at once (an SSH session over the old address ends) and kept across reboots.",
        interfaceconfig);
    add("setgateway", "setgateway [ADDRESS]", {}, "the default gateway (static addresses)",
        "setgateway: shows the network settings. setgateway 192.0.2.1: the default gateway of a static\n"
        "address (with DHCP the gateway comes from the DHCP server).",
        setgateway);
    add("dnsconfig", "dnsconfig [SERVER...|dhcp]", {a{"server", a::choice, {"dhcp"}, true}},
        "the name servers the appliance uses",
        "dnsconfig: shows them. dnsconfig 192.0.2.53 198.51.100.53: these (up to three) instead of the\n"
        "DHCP server's. dnsconfig dhcp: the DHCP server's again. Mail routing resolves through them.",
        dnsconfig);
    add("sshconfig", "sshconfig [addkey KEY|delkey N|password on|off]",
        {a{"action", a::choice, {"addkey", "delkey", "password"}, true}}, "SSH keys and password logins",
        "sshconfig: the admin's SSH keys (numbered) and whether password logins are on.\n"
        "sshconfig addkey ssh-ed25519 AAAA... comment: adds a key. sshconfig delkey N: removes key N.\n"
        "sshconfig password on|off: password logins over SSH (off by default; keys only). The last way\n"
        "in is never removed: no key with passwords off is refused.",
        sshconfig);
    add("ntpconfig", "ntpconfig [SERVER...|default]", {a{"server", a::choice, {"default"}, true}},
        "the time servers", "ntpconfig: the time servers and whether the clock is synchronized.\n"
        "ntpconfig ntp1.example.net 192.0.2.123: these servers. ntpconfig default: those from DHCP,\n"
        "or Debian's pool.",
        ntpconfig);
    add("reboot", "reboot", {}, "restart the appliance",
        "Restarts the appliance. ringwayd stops cleanly first: every acknowledged message is in the spool\n"
        "and is delivered after the restart.",
        power);
    add("shutdown", "shutdown", {}, "power the appliance off",
        "Stops ringwayd cleanly and powers the appliance off.", power);
    add("upgrade", "upgrade [status|rollback|FILE|-]", {a{"what", a::choice, {"status", "rollback", "-"}, true}},
        "install a signed upgrade bundle, or go back",
        "upgrade FILE, or over SSH: ssh admin@GATEWAY upgrade - < ringway.bundle\n"
        "Checks the bundle's signature against this system's upgrade key before writing anything, writes\n"
        "the new system to the inactive root slot, checks it against the signed hash, and reboots into it\n"
        "on probation: unless it starts a healthy ringwayd within 5 minutes (two tries), the previous\n"
        "system boots again by itself. The configuration and the spool are kept either way.\n"
        "upgrade status: the slots, their versions and the last upgrade events.\n"
        "upgrade rollback: boots the other slot (the previous system), also on probation.",
        upgrade);
    add("spool", "spool [format DEVICE|adopt]", {a{"action", a::choice, {"format", "adopt"}, true}},
        "the spool disk: show it, or confirm formatting or adopting it",
        "spool: the spool disk in use and any problem that keeps ringwayd from starting.\n"
        "spool format /dev/vdb: the spool is this disk, formatted even though it holds something (this\n"
        "erases it). spool adopt: use the spool another appliance formatted on this disk, and deliver its\n"
        "queued mail from here. Either restarts ringwayd.",
        spool);
    add("loadtest", "loadtest HOST[:PORT] [--rate N/h] [OPTIONS]", {},
        "send test mail from the appliance and report the rate and latency",
        "loadtest HOST[:PORT] [--rate 500k/h] [--count N] [--duration 60s] [--connections N] [--size 4k]\n"
        "         [--rcpts N] [--from PATTERN] [--to PATTERN] [--starttls]\n"
        "Runs the bundled load generator (ringway-load) against HOST (an IP address; port 25 unless given)\n"
        "and prints its report: messages sent and refused, the rate, and latency percentiles. Without\n"
        "--count or --duration it runs 30 s. Ctrl-C ends it early. Point it at a test sink or at this\n"
        "gateway's own listener; every message carries an integrity mark the sink can check.",
        loadtest);
}

}  // namespace rw::admin::shell
