// ringway-appliance: the privileged side of the shell's appliance commands
// (interfaceconfig, setgateway, dnsconfig, sshconfig, ntpconfig, reboot,
// shutdown, upgrade, spool). systemd starts one per connection on
// /run/ringway-appliance.sock (ringway-appliance.socket: root and the
// ringway-admin group only), with the connection as stdin and stdout.
//
// The protocol is the control socket's: one request line
// {"v":1,"cmd":...,"args":{...}}, then {"ok":true,"event":{...}} lines for
// progress and one {"ok":true,"result":...} or {"ok":false,"error":...}.
// `upgrade` is followed by the bundle's bytes on the same connection.
//
// Every answer is checked here (the shell's checks are a convenience);
// nothing reaches a program's argument list or a file unchecked. Changes
// are logged with the peer's user id to stderr (the journal).
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <iostream>
#include <sstream>

#include "admin/appliance/system.hh"
#include "admin/appliance/upgrade.hh"

namespace ap = rw::admin::appliance;
using json = nlohmann::json;

namespace {

struct options {
    std::string root;  // prefix of every system path ("" on the appliance)
    std::string state = "/data/ringway";
    std::string home = "/data/home/admin";
    std::string key = "/usr/share/ringway/upgrade-key.pub";
    bool services = true;
};

options g;
std::string g_peer = "unknown";

std::string now_text() {
    std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

void send_line(const json& j) {
    std::string s = j.dump() + "\n";
    size_t off = 0;
    while (off < s.size()) {
        ssize_t n = ::write(STDOUT_FILENO, s.data() + off, s.size() - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;  // the shell went away; the work goes on
        off += size_t(n);
    }
}
void event(const std::string& text) { send_line({{"ok", true}, {"event", {{"ts", now_text()}, {"event", "progress"}, {"text", text}}}}); }

struct refusal {
    std::string why;
};
[[noreturn]] void refuse(std::string why) { throw refusal{std::move(why)}; }

void log_change(const std::string& what) { std::fprintf(stderr, "ringway-appliance: %s by %s\n", what.c_str(), g_peer.c_str()); }

std::string sys(const std::string& path) { return g.root + path; }

std::vector<std::vector<std::string>> g_after;  // run once the reply is sent

std::string command_line(const std::vector<std::string>& argv) {
    std::string line;
    for (const auto& a : argv)
        line += (line.empty() ? "" : " ") + a;
    return line;
}

// Runs a system program, unless --no-services (then it is reported only).
json act(const std::vector<std::string>& argv) {
    if (!g.services)
        return {{"command", command_line(argv)}, {"run", false}};
    std::string out;
    int rc = ap::run_program(argv, &out);
    return {{"command", command_line(argv)}, {"run", true}, {"status", rc}, {"output", out}};
}

// The same, after the reply has left: a reboot, or a new address that may
// cut the connection the reply goes over.
json act_after_reply(const std::vector<std::string>& argv) {
    if (g.services)
        g_after.push_back(argv);
    return {{"command", command_line(argv)}, {"run", g.services ? "after the reply" : "no"}};
}

std::string arg_string(const json& a, const char* k, bool required = true) {
    if (a.contains(k) && a[k].is_string())
        return a[k].get<std::string>();
    if (required)
        refuse(fmt::format("missing {}", k));
    return {};
}

std::vector<std::string> arg_list(const json& a, const char* k) {
    std::vector<std::string> v;
    if (a.contains(k) && a[k].is_array())
        for (const auto& x : a[k])
            if (x.is_string())
                v.push_back(x.get<std::string>());
    return v;
}

// ---- network ----

std::vector<std::string> interfaces() {
    std::vector<std::string> v;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(sys("/sys/class/net"), ec)) {
        auto n = e.path().filename().string();
        if (n != "lo")
            v.push_back(n);
    }
    std::sort(v.begin(), v.end());
    return v;
}

json network_json() {
    auto n = ap::read_network(g.root);
    json links = json::array();
    if (g.services) {
        std::string out;
        if (ap::run_program({"/usr/sbin/ip", "-j", "address", "show"}, &out) == 0) {
            auto j = json::parse(out, nullptr, false);
            if (j.is_array())
                for (const auto& l : j) {
                    json addrs = json::array();
                    for (const auto& a : l.value("addr_info", json::array()))
                        addrs.push_back(fmt::format("{}/{}", a.value("local", ""), a.value("prefixlen", 0)));
                    links.push_back({{"name", l.value("ifname", "")}, {"state", l.value("operstate", "")},
                                     {"mac", l.value("address", "")}, {"addresses", addrs}});
                }
        }
        out.clear();
        if (ap::run_program({"/usr/sbin/ip", "-j", "route", "show", "default"}, &out) == 0) {
            auto j = json::parse(out, nullptr, false);
            if (j.is_array() && !j.empty())
                links.push_back({{"default_route", j[0].value("gateway", "")}});
        }
    }
    return {{"mode", n.dhcp ? "dhcp" : "static"}, {"address", n.address}, {"gateway", n.gateway},
            {"dns", n.dns}, {"links", links}};
}

json apply_network(const ap::network_settings& n, const std::string& what) {
    if (auto r = ap::write_network(g.root, n); !r)
        refuse(r.error());
    log_change(what);
    json actions = json::array();
    actions.push_back(act({"/usr/bin/networkctl", "reload"}));
    std::vector<std::string> re = {"/usr/bin/networkctl", "reconfigure"};
    for (const auto& i : interfaces())
        re.push_back(i);
    if (re.size() > 2)
        actions.push_back(act_after_reply(re));
    json r = network_json();
    r["changed"] = what;
    r["actions"] = actions;
    return r;
}

json cmd_interfaceconfig(const json& a) {
    auto n = ap::read_network(g.root);
    if (!a.contains("address"))
        return network_json();
    std::string addr = arg_string(a, "address");
    if (addr == "dhcp") {
        n.dhcp = true;
        n.address.clear();
        n.gateway.clear();
        return apply_network(n, "interfaceconfig dhcp");
    }
    if (auto why = ap::check_address_prefix(addr); !why.empty())
        refuse(fmt::format("{}: {}", addr, why));
    n.dhcp = false;
    n.address = addr;
    return apply_network(n, "interfaceconfig " + addr);
}

json cmd_setgateway(const json& a) {
    auto n = ap::read_network(g.root);
    if (!a.contains("gateway"))
        return network_json();
    std::string gw = arg_string(a, "gateway");
    if (n.dhcp)
        refuse("the gateway comes from DHCP: give the appliance a static address first (interfaceconfig ADDRESS/PREFIX)");
    if (auto why = ap::check_ip(gw); !why.empty())
        refuse(fmt::format("{}: {}", gw, why));
    n.gateway = gw;
    return apply_network(n, "setgateway " + gw);
}

json cmd_dnsconfig(const json& a) {
    auto n = ap::read_network(g.root);
    if (!a.contains("servers"))
        return network_json();
    auto servers = arg_list(a, "servers");
    if (servers.size() > 3)
        refuse("at most three name servers");
    for (const auto& s : servers)
        if (auto why = ap::check_ip(s); !why.empty())
            refuse(fmt::format("{}: {}", s, why));
    n.dns = servers;
    return apply_network(n, servers.empty() ? std::string("dnsconfig dhcp") : "dnsconfig " + fmt::format("{}", fmt::join(servers, " ")));
}

// ---- ssh ----

const char* k_password_conf = "/etc/ssh/sshd_config.d/50-ringway-password.conf";

std::vector<std::string> read_keys() {
    std::vector<std::string> keys;
    if (auto t = ap::read_file(sys(g.home + "/.ssh/authorized_keys"))) {
        std::istringstream in(*t);
        for (std::string l; std::getline(in, l);)
            if (!l.empty() && l[0] != '#')
                keys.push_back(l);
    }
    return keys;
}

std::string fingerprint(const std::string& key) {
    auto a = key.find(' ');
    auto b = key.find(' ', a + 1);
    std::string blob = key.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
    std::string comment = b == std::string::npos ? std::string() : key.substr(b + 1);
    std::string type = key.substr(0, a);
    std::string shortblob = blob.size() > 16 ? "..." + blob.substr(blob.size() - 16) : blob;
    return fmt::format("{} {} {}", type, shortblob, comment);
}

bool password_auth() {
    auto t = ap::read_file(sys(k_password_conf));
    return t && t->find("PasswordAuthentication yes") != std::string::npos;
}

json ssh_json() {
    json keys = json::array();
    auto k = read_keys();
    for (size_t i = 0; i < k.size(); ++i)
        keys.push_back({{"index", i + 1}, {"key", fingerprint(k[i])}});
    return {{"keys", keys}, {"password_authentication", password_auth()}};
}

json cmd_sshconfig(const json& a) {
    std::string action = arg_string(a, "action", false);
    if (action.empty())
        return ssh_json();
    unsigned uid = 1000, gid = 1000;
    if (g.root.empty())
        if (const passwd* pw = ::getpwnam("admin")) {
            uid = pw->pw_uid;
            gid = pw->pw_gid;
        }
    json actions = json::array();
    if (action == "addkey") {
        std::string key = arg_string(a, "key");
        if (auto why = ap::check_ssh_key(key); !why.empty())
            refuse(fmt::format("not an SSH public key: {}", why));
        auto keys = read_keys();
        if (std::find(keys.begin(), keys.end(), key) != keys.end())
            refuse("that key is already there");
        keys.push_back(key);
        if (auto r = ap::write_authorized_keys(g.root, g.home, keys, uid, gid); !r)
            refuse(r.error());
        log_change("sshconfig addkey " + fingerprint(key));
    } else if (action == "delkey") {
        if (!a.contains("index") || !a["index"].is_number_integer())
            refuse("missing the key's number (sshconfig shows them)");
        auto keys = read_keys();
        int64_t i = a["index"].get<int64_t>();
        if (i < 1 || size_t(i) > keys.size())
            refuse(fmt::format("there is no key {} (sshconfig lists {})", i, keys.size()));
        if (keys.size() == 1 && !password_auth())
            refuse("that is the last key and password logins are off: removing it would lock out SSH (sshconfig password on first, or add another key)");
        std::string gone = fingerprint(keys[size_t(i - 1)]);
        keys.erase(keys.begin() + (i - 1));
        if (auto r = ap::write_authorized_keys(g.root, g.home, keys, uid, gid); !r)
            refuse(r.error());
        log_change("sshconfig delkey " + gone);
    } else if (action == "password") {
        std::string v = arg_string(a, "value");
        if (v != "on" && v != "off")
            refuse("sshconfig password on|off");
        if (v == "off" && read_keys().empty())
            refuse("no SSH key is installed: turning password logins off would lock out SSH (sshconfig addkey KEY first)");
        std::string text = fmt::format("# Written by the ringway shell (sshconfig password {}).\nPasswordAuthentication {}\n",
                                       v, v == "on" ? "yes" : "no");
        if (auto r = ap::replace_file(sys(k_password_conf), text, 0644); !r)
            refuse(r.error());
        log_change("sshconfig password " + v);
        actions.push_back(act({"/usr/bin/systemctl", "reload", "ssh.service"}));
    } else {
        refuse(fmt::format("sshconfig has no action {}", action));
    }
    json r = ssh_json();
    r["actions"] = actions;
    return r;
}

// ---- time ----

const char* k_ntp_conf = "/etc/systemd/timesyncd.conf.d/ringway.conf";

json ntp_json() {
    std::vector<std::string> servers;
    if (auto t = ap::read_file(sys(k_ntp_conf))) {
        std::istringstream in(*t);
        for (std::string l; std::getline(in, l);)
            if (l.starts_with("NTP="))
                servers = ap::split_list(l.substr(4));
    }
    bool synced = ::access(sys("/run/systemd/timesync/synchronized").c_str(), F_OK) == 0;
    return {{"servers", servers}, {"source", servers.empty() ? "DHCP or Debian's pool" : "configured"},
            {"synchronized", synced}, {"time", now_text()}};
}

json cmd_ntpconfig(const json& a) {
    if (!a.contains("servers"))
        return ntp_json();
    auto servers = arg_list(a, "servers");
    for (const auto& s : servers)
        if (ap::check_ip(s).empty() == false && ap::check_hostname(s).empty() == false)
            refuse(fmt::format("{} is neither an address nor a host name", s));
    std::error_code ec;
    std::filesystem::create_directories(sys("/etc/systemd/timesyncd.conf.d"), ec);
    std::string text = fmt::format("# Written by the ringway shell (ntpconfig).\n[Time]\nNTP={}\n", fmt::join(servers, " "));
    if (servers.empty()) {
        if (::unlink(sys(k_ntp_conf).c_str()) != 0 && errno != ENOENT)
            refuse(fmt::format("cannot remove {}: {}", k_ntp_conf, std::strerror(errno)));
    } else if (auto r = ap::replace_file(sys(k_ntp_conf), text, 0644); !r) {
        refuse(r.error());
    }
    log_change(fmt::format("ntpconfig {}", fmt::join(servers, " ")));
    json r = ntp_json();
    r["actions"] = json::array({act({"/usr/bin/systemctl", "restart", "systemd-timesyncd.service"})});
    return r;
}

// ---- slots and upgrades ----

std::string running_slot() {
    auto t = ap::read_file(sys("/proc/cmdline"));
    if (!t)
        return {};
    auto p = t->find("ringway.slot=");
    if (p == std::string::npos || p + 13 >= t->size())
        return {};
    char c = (*t)[p + 13];
    return c == 'a' || c == 'b' ? std::string(1, c) : std::string();
}

std::string slot_device(const std::string& s) { return sys("/dev/disk/by-partlabel/ringway-root-" + s); }
std::string version_file(const std::string& s) { return sys(g.state + "/slot-" + s + ".version"); }

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    return s;
}

// The ESP holds grubenv; mounted only while it is read or changed (as
// ringway-boot-ok does), unless it is already there.
struct esp_mount {
    std::string dir = sys("/run/ringway/esp");
    bool mounted = false;
    int lock = -1;
    esp_mount() {
        // One user of the ESP at a time: ringway-boot-ok takes the same lock.
        lock = ::open(sys("/run/ringway-esp.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (lock < 0)
            refuse(fmt::format("cannot open the boot partition's lock: {}", std::strerror(errno)));
        for (int i = 0; ::flock(lock, LOCK_EX | LOCK_NB) != 0; ++i) {
            if (i >= 1200) {
                ::close(lock);
                refuse("the boot partition stayed busy for 2 minutes (ringway-boot-ok?)");
            }
            ::usleep(100'000);
        }
        if (::access((dir + "/grub/grubenv").c_str(), F_OK) == 0)
            return;
        if (!g.services)
            refuse("the boot partition is not mounted");
        std::filesystem::create_directories(dir);
        if (::mount("/dev/disk/by-partlabel/ringway-esp", dir.c_str(), "vfat", MS_NODEV | MS_NOSUID | MS_NOEXEC | MS_SYNCHRONOUS,
                    nullptr) != 0) {
            int e = errno;
            ::close(lock);
            refuse(fmt::format("cannot mount the boot partition: {}", std::strerror(e)));
        }
        mounted = true;
    }
    ~esp_mount() {
        if (mounted) {
            ::sync();
            ::umount(dir.c_str());
        }
        ::close(lock);
    }
    std::string env() const { return dir + "/grub/grubenv"; }
};

json upgrade_json() {
    const std::string run = running_slot();
    esp_mount esp;
    auto env = ap::read_grubenv(esp.env());
    if (!env)
        refuse(env.error());
    auto& e = env.value();
    json slots = json::array();
    const std::string running_version = trim(ap::read_file(sys("/usr/share/ringway/version")).value_or(""));
    for (std::string s : {"a", "b"}) {
        std::string v = s == run ? running_version : trim(ap::read_file(version_file(s)).value_or(""));
        bool has = s == run || ap::holds_squashfs(slot_device(s));
        slots.push_back({{"slot", s}, {"running", s == run}, {"holds_system", has},
                         {"version", has ? (v.empty() ? std::string("unknown") : v) : std::string()}});
    }
    json log = json::array();
    if (auto t = ap::read_file(sys(g.state + "/upgrade.log"))) {
        std::istringstream in(*t);
        std::vector<std::string> lines;
        for (std::string l; std::getline(in, l);)
            lines.push_back(l);
        for (size_t i = lines.size() > 10 ? lines.size() - 10 : 0; i < lines.size(); ++i)
            log.push_back(lines[i]);
    }
    return {{"running", run}, {"boots", e.count("slot") ? e["slot"] : "a"}, {"trial", e.count("trial") ? e["trial"] : ""},
            {"trial_tries", e.count("trial_tries") ? e["trial_tries"] : ""}, {"slots", slots}, {"log", log}};
}

void upgrade_log(const std::string& line) {
    std::string path = sys(g.state + "/upgrade.log");
    std::string text = ap::read_file(path).value_or("") + now_text() + " " + line + "\n";
    (void)ap::replace_file(path, text, 0644);
}

json reboot_soon(json r) {
    r["actions"] = json::array({act_after_reply({"/usr/bin/systemctl", "reboot", "--no-block"})});
    return r;
}

json cmd_upgrade(const json& a) {
    const std::string run = running_slot();
    if (run.empty())
        refuse("this system was not booted from a Ringway root slot");
    const std::string target = run == "a" ? "b" : "a";
    auto key = ap::read_file(sys(g.key));
    if (!key)
        refuse(fmt::format("cannot read the upgrade key {}", g.key));
    {
        esp_mount esp;  // before writing: the boot loader must be reachable
        auto env = ap::read_grubenv(esp.env());
        if (!env)
            refuse(env.error());
    }
    event(fmt::format("receiving the bundle; writing slot {} (the running system is slot {})", target, run));
    uint64_t next_report = 16u << 20;
    auto m = ap::install_bundle(STDIN_FILENO, slot_device(target), *key, [&](uint64_t done, uint64_t all) {
        if (done >= next_report || done == all) {
            event(fmt::format("{} of {} MiB written", done >> 20, all >> 20));
            next_report = done + (16u << 20);
        }
    });
    if (!m) {
        upgrade_log(fmt::format("upgrade of slot {} refused: {}", target, m.error()));
        refuse(m.error());
    }
    (void)ap::replace_file(version_file(target), m.value().version + "\n", 0644);
    event(fmt::format("slot {} holds version {}, verified against the signed manifest", target, m.value().version));
    {
        esp_mount esp;
        if (auto r = ap::update_grubenv(esp.env(), {{"trial", target}, {"trial_tries", "2"}, {"fell_back", ""}}); !r)
            refuse(r.error());
    }
    log_change(fmt::format("upgrade: slot {} holds {}; booting it on probation", target, m.value().version));
    upgrade_log(fmt::format("slot {} written with version {}; booting it on probation", target, m.value().version));
    bool reboot = !a.contains("reboot") || a["reboot"] != false;
    json r = upgrade_json();
    r["version"] = m.value().version;
    r["slot"] = target;
    r["message"] = reboot ? fmt::format("rebooting into slot {} on probation: it must start a healthy ringwayd, or the "
                                        "previous slot boots again by itself", target)
                          : fmt::format("slot {} boots on probation at the next reboot", target);
    return reboot ? reboot_soon(r) : r;
}

json cmd_upgrade_rollback(const json& a) {
    const std::string run = running_slot();
    if (run.empty())
        refuse("this system was not booted from a Ringway root slot");
    const std::string target = run == "a" ? "b" : "a";
    if (!ap::holds_squashfs(slot_device(target)))
        refuse(fmt::format("slot {} holds no system to go back to", target));
    {
        esp_mount esp;
        if (auto r = ap::update_grubenv(esp.env(), {{"trial", target}, {"trial_tries", "2"}, {"fell_back", ""}}); !r)
            refuse(r.error());
    }
    log_change(fmt::format("upgrade rollback to slot {}", target));
    upgrade_log(fmt::format("rollback to slot {} requested; booting it on probation", target));
    json r = upgrade_json();
    r["slot"] = target;
    bool reboot = !a.contains("reboot") || a["reboot"] != false;
    r["message"] = fmt::format("rebooting into slot {} (on probation: if it is not healthy, slot {} boots again)", target, run);
    return reboot ? reboot_soon(r) : r;
}

// ---- power ----

json cmd_power(const std::string& what) {
    log_change(what);
    return {{"message", what == "reboot" ? "rebooting" : "powering off"},
            {"actions", json::array({act_after_reply({"/usr/bin/systemctl", what == "reboot" ? "reboot" : "poweroff", "--no-block"})})}};
}

// ---- the spool disk ----

json spool_json() {
    json j;
    j["problem"] = trim(ap::read_file(sys("/run/ringway/spool-problem")).value_or(""));
    std::error_code ec;
    auto dev = std::filesystem::read_symlink(sys("/run/ringway/spool"), ec);
    j["device"] = ec ? std::string() : dev.string();
    j["uuid"] = trim(ap::read_file(sys(g.state + "/spool-uuid")).value_or(""));
    j["configured_device"] = trim(ap::read_file(sys(g.state + "/spool-device")).value_or(""));
    return j;
}

bool is_disk_name(const std::string& d) {
    if (!d.starts_with("/dev/") || d.size() < 6 || d.size() > 64)
        return false;
    return std::all_of(d.begin() + 5, d.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '-' || c == '_'; }) &&
           d.find("..") == std::string::npos;
}

// The disk the appliance boots from ("vda"), from its data partition.
std::string boot_disk() {
    std::error_code ec;
    auto part = std::filesystem::canonical(sys("/dev/disk/by-partlabel/ringway-data"), ec);
    if (ec)
        return {};
    auto link = std::filesystem::canonical(sys("/sys/class/block/" + part.filename().string()), ec);
    if (ec)
        return {};
    return link.parent_path().filename().string();
}

json cmd_spool(const json& a) {
    std::string action = arg_string(a, "action", false);
    if (action.empty())
        return spool_json();
    json actions = json::array();
    if (action == "format") {
        std::string dev = arg_string(a, "device");
        if (!is_disk_name(dev))
            refuse(fmt::format("{} is not a device name (/dev/vdb, /dev/sdb)", dev));
        struct stat st {};
        if (::stat(sys(dev).c_str(), &st) != 0 || (g.services && !S_ISBLK(st.st_mode)))
            refuse(fmt::format("{} is not a block device here", dev));
        // Never the disk the appliance runs from, nor one of its partitions.
        std::error_code ec;
        const std::string name = std::filesystem::canonical(sys(dev), ec).filename().string();
        const std::string boot = boot_disk();
        auto part_of = [](const std::string& n, const std::string& disk) {
            if (disk.empty() || !n.starts_with(disk))
                return false;
            std::string rest = n.substr(disk.size());
            if (!rest.empty() && rest[0] == 'p')
                rest.erase(0, 1);
            return n == disk || (!rest.empty() && std::all_of(rest.begin(), rest.end(), ::isdigit));
        };
        if (part_of(name, boot))
            refuse(fmt::format("{} is the disk this appliance boots from (or part of it)", dev));
        if (auto r = ap::replace_file(sys(g.state + "/spool-device"), dev + "\n", 0644); !r)
            refuse(r.error());
        if (auto r = ap::replace_file(sys(g.state + "/spool-format"), dev + "\n", 0600); !r)
            refuse(r.error());
        log_change("spool format " + dev);
    } else if (action == "adopt") {
        std::string problem = trim(ap::read_file(sys("/run/ringway/spool-problem")).value_or(""));
        auto p = problem.find("(uuid ");
        if (p == std::string::npos)
            refuse("there is no other appliance's spool waiting to be adopted");
        auto e = problem.find(')', p);
        std::string uuid = problem.substr(p + 6, e - p - 6);
        auto d0 = problem.find(' ');
        std::string pdev = problem.substr(0, d0);
        if (!is_disk_name(pdev))
            refuse("the spool problem names no device");
        if (auto r = ap::replace_file(sys(g.state + "/spool-adopt"), uuid + "\n", 0600); !r)
            refuse(r.error());
        log_change(fmt::format("spool adopt {} on {}", uuid, pdev));
    } else {
        refuse(fmt::format("spool has no action {}", action));
    }
    actions.push_back(act({"/usr/bin/systemctl", "restart", "ringwayd.service"}));
    json r = spool_json();
    r["actions"] = actions;
    return r;
}

json dispatch(const std::string& cmd, const json& a) {
    if (cmd == "interfaceconfig")
        return cmd_interfaceconfig(a);
    if (cmd == "setgateway")
        return cmd_setgateway(a);
    if (cmd == "dnsconfig")
        return cmd_dnsconfig(a);
    if (cmd == "sshconfig")
        return cmd_sshconfig(a);
    if (cmd == "ntpconfig")
        return cmd_ntpconfig(a);
    if (cmd == "upgrade_status")
        return upgrade_json();
    if (cmd == "upgrade")
        return cmd_upgrade(a);
    if (cmd == "upgrade_rollback")
        return cmd_upgrade_rollback(a);
    if (cmd == "reboot" || cmd == "shutdown")
        return cmd_power(cmd);
    if (cmd == "spool")
        return cmd_spool(a);
    refuse(fmt::format("unknown appliance command {}", cmd));
}

// The request line, read a byte at a time so that an upgrade's bundle,
// which follows it, stays unread on stdin.
std::optional<std::string> request_line() {
    std::string line;
    char c;
    while (line.size() < 65536) {
        ssize_t n = ::read(STDIN_FILENO, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return std::nullopt;
        if (c == '\n')
            return line;
        line += c;
    }
    return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringway-appliance: the privileged helper of the shell's appliance commands (one request on stdin)"};
    app.name("ringway-appliance");
    bool no_services = false;
    app.add_option("--root", g.root, "system files under this folder (default /)");
    app.add_option("--state", g.state, "the appliance's state folder (default /data/ringway)");
    app.add_option("--home", g.home, "the admin's home (default /data/home/admin)");
    app.add_option("--key", g.key, "the upgrade signing key (default /usr/share/ringway/upgrade-key.pub)");
    app.add_flag("--no-services", no_services, "change files only: run no system program (reboot, networkctl...)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    g.services = !no_services;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(STDIN_FILENO, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        const passwd* pw = ::getpwuid(cred.uid);
        g_peer = fmt::format("uid {}{}{} pid {}", cred.uid, pw ? " " : "", pw ? pw->pw_name : "", cred.pid);
    }
    auto line = request_line();
    if (!line) {
        send_line({{"ok", false}, {"error", "no request"}});
        return 1;
    }
    auto req = json::parse(*line, nullptr, false);
    if (req.is_discarded() || !req.is_object() || !req.contains("cmd") || !req["cmd"].is_string() ||
        req.value("v", 0) != 1) {
        send_line({{"ok", false}, {"error", "the request is not a version 1 JSON request"}});
        return 1;
    }
    json args = req.contains("args") && req["args"].is_object() ? req["args"] : json::object();
    try {
        json r = dispatch(req["cmd"].get<std::string>(), args);
        send_line({{"ok", true}, {"result", r}});
        // Power, upgrade and address changes act once the reply has left.
        ::close(STDOUT_FILENO);
        int status = 0;
        for (const auto& argv : g_after)
            if (ap::run_program(argv) != 0)
                status = 1;
        return status;
    } catch (const refusal& e) {
        send_line({{"ok", false}, {"error", e.why}});
        return 1;
    } catch (const std::exception& e) {
        send_line({{"ok", false}, {"error", fmt::format("failed: {}", e.what())}});
        return 1;
    }
}
