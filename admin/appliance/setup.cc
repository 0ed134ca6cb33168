// ringway-setup: the appliance's first-boot setup. Asks on the console (or
// reads from a seed file) the host name, the network, the admin's password
// or SSH key, the accepted domains with their internal mail server and the
// relay networks; writes the system's files, and commits the mail settings
// to ringwayd as one configuration version.
//
//   ringway-setup                       interactive, on the terminal
//   ringway-setup --seed FILE           from FILE (TOML); removed once applied
//
// Run as root by the console's login program on first boot
// (/usr/lib/ringway/console-login) and by ringway-setup.service when a seed
// file is on the data partition. --root, --state, --socket and
// --no-services let it run against a scratch tree and any ringwayd.
//
// Exit status: 0 applied, 1 refused or failed (reasons on stderr and in
// STATE/setup-problem), 2 usage.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fmt/format.h>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <toml++/toml.h>

#include "admin/appliance/system.hh"
#include "admin/shell/client.hh"

extern char** environ;

namespace ap = rw::admin::appliance;

namespace {

struct options {
    std::string root;  // "" on the appliance
    std::string state = "/data/ringway";
    std::string home = "/data/home/admin";
    std::string socket = "/run/ringway/ringway.sock";
    bool services = true;
    int socket_wait_s = 180;
};

int run(const std::vector<std::string>& argv) { return ap::run_program(argv); }

// ---- the terminal ----

// The setup runs on every console at once (the operator is at one of them);
// once one has finished, the others stop at their next answer.
std::string g_done_file;

void stop_if_done_elsewhere() {
    if (!g_done_file.empty() && ::access(g_done_file.c_str(), F_OK) == 0) {
        std::cout << "\nThe setup was finished on another console. Log in as admin.\n" << std::flush;
        std::exit(0);
    }
}

bool read_line(std::string& out) {
    for (int eofs = 0; eofs < 20; ++eofs) {
        if (std::getline(std::cin, out)) {
            stop_if_done_elsewhere();
            return true;
        }
        if (std::cin.bad())
            return false;
        // Ctrl-D: not a way out; ask again.
        std::cin.clear();
        std::cout << "\n(the setup has to be finished before anyone can log in)\n> " << std::flush;
    }
    return false;
}

std::string ask(const std::string& question, const std::string& def,
                const std::function<std::string(const std::string&)>& check) {
    for (;;) {
        std::cout << question;
        if (!def.empty())
            std::cout << " [" << def << "]";
        std::cout << ": " << std::flush;
        std::string line;
        if (!read_line(line))
            std::exit(1);
        while (!line.empty() && (line.back() == ' ' || line.back() == '\r'))
            line.pop_back();
        size_t b = line.find_first_not_of(' ');
        line = b == std::string::npos ? std::string() : line.substr(b);
        if (line.empty())
            line = def;
        std::string why = check(line);
        if (why.empty())
            return line;
        std::cout << "  not accepted: " << why << "; again.\n";
    }
}

std::string ask_secret(const std::string& question) {
    termios old{};
    bool tty = ::isatty(0) && ::tcgetattr(0, &old) == 0;
    if (tty) {
        termios t = old;
        t.c_lflag &= ~tcflag_t(ECHO);
        ::tcsetattr(0, TCSAFLUSH, &t);
    }
    std::cout << question << ": " << std::flush;
    std::string line;
    bool ok = read_line(line);
    if (tty) {
        ::tcsetattr(0, TCSAFLUSH, &old);
        std::cout << "\n";
    }
    if (!ok)
        std::exit(1);
    if (!line.empty() && line.back() == '\r')
        line.pop_back();
    return line;
}

std::string check_list(const std::string& text, std::string (*one)(std::string_view)) {
    for (const auto& w : ap::split_list(text))
        if (auto why = one(w); !why.empty())
            return fmt::format("\"{}\": {}", w, why);
    return {};
}

ap::setup_answers interview() {
    ap::setup_answers a;
    std::cout << "\nRingway first-boot setup. Every answer can be changed later in the ringway shell.\n"
                 "Press Enter to take the value in brackets.\n\n";
    a.hostname = ask("Host name of this gateway (fully qualified)", a.hostname,
                     [](const std::string& s) { return ap::check_hostname(s); });
    std::string mode = ask("Network: dhcp or static", "dhcp", [](const std::string& s) {
        return s == "dhcp" || s == "static" ? std::string() : std::string("answer dhcp or static");
    });
    a.network.dhcp = mode == "dhcp";
    if (!a.network.dhcp) {
        a.network.address = ask("Address with prefix length (e.g. 192.0.2.10/24)", "",
                                [](const std::string& s) { return ap::check_address_prefix(s); });
        a.network.gateway =
            ask("Default gateway", "", [](const std::string& s) { return ap::check_ip(s); });
        a.network.dns = ap::split_list(ask("DNS servers (separated by spaces)", "", [](const std::string& s) {
            if (ap::split_list(s).empty())
                return std::string("give at least one");
            return check_list(s, ap::check_ip);
        }));
    }
    std::cout << "\nThe admin logs in with a password (console, and SSH if enabled) or an SSH key.\n";
    for (;;) {
        std::string pw = ask_secret("Admin password (Enter for none: SSH key only)");
        if (pw.empty()) {
            a.password.clear();
            break;
        }
        if (auto why = ap::check_password(pw); !why.empty()) {
            std::cout << "  not accepted: " << why << "; again.\n";
            continue;
        }
        if (ask_secret("The same password again") != pw) {
            std::cout << "  the two differ; again.\n";
            continue;
        }
        a.password = pw;
        break;
    }
    std::string key = ask(a.password.empty() ? "Admin SSH public key (one line of a .pub file)"
                                             : "Admin SSH public key (one line of a .pub file; Enter for none)",
                          "", [&a](const std::string& s) {
                              if (s.empty())
                                  return a.password.empty() ? std::string("without a password, a key is needed")
                                                            : std::string();
                              return ap::check_ssh_key(s);
                          });
    if (!key.empty())
        a.ssh_keys.push_back(key);
    std::cout << "\nMail.\n";
    a.accepted_domains = ap::split_list(
        ask("Domains this gateway accepts mail for (separated by spaces; Enter for none)", "",
            [](const std::string& s) { return check_list(s, ap::check_domain); }));
    if (!a.accepted_domains.empty())
        a.internal_server = ask("Internal mail server for them (host or address, optional :port)", "",
                                [](const std::string& s) { return ap::check_mail_server(s); });
    a.relay_networks = ap::split_list(
        ask("Networks allowed to relay through it (e.g. 10.0.0.0/8; Enter for none)", "",
            [](const std::string& s) { return check_list(s, ap::check_network); }));
    return a;
}

void summary(const ap::setup_answers& a) {
    std::cout << "\n  host name        " << a.hostname << "\n";
    if (a.network.dhcp)
        std::cout << "  network          DHCP\n";
    else
        std::cout << fmt::format("  network          {} via {}, DNS {}\n", a.network.address, a.network.gateway,
                                 fmt::join(a.network.dns, " "));
    std::cout << "  admin password   " << (a.password.empty() && a.password_hash.empty() ? "none" : "set") << "\n";
    std::cout << "  admin SSH keys   " << a.ssh_keys.size() << "\n";
    std::cout << "  accepted domains " << (a.accepted_domains.empty() ? "none" : fmt::format("{}", fmt::join(a.accepted_domains, " ")))
              << "\n";
    if (!a.internal_server.empty())
        std::cout << "  delivered to     " << a.internal_server << "\n";
    std::cout << "  relay networks   "
              << (a.relay_networks.empty() ? "this gateway only" : fmt::format("{}", fmt::join(a.relay_networks, " ")))
              << "\n\n";
}

// ---- applying ----

// The committed configuration with the mail answers in it.
rw::result<std::string, std::string> mail_config(const std::string& committed, const ap::setup_answers& a) {
    toml::table t;
    try {
        t = toml::parse(std::string_view(committed), std::string_view("committed configuration"));
    } catch (const toml::parse_error& e) {
        return rw::unexpected(fmt::format("the committed configuration does not parse: {}", e.description()));
    }
    if (!t["smtp"].as_table())
        t.insert("smtp", toml::table{});
    toml::table& smtp = *t["smtp"].as_table();
    std::string host = a.hostname;
    if (!host.empty() && host.back() == '.')
        host.pop_back();
    smtp.insert_or_assign("hostname", host);
    toml::array domains;
    for (const auto& d : a.accepted_domains)
        domains.push_back(d);
    smtp.insert_or_assign("accepted_domains", domains);
    toml::array nets{"127.0.0.0/8", "::1/128"};
    for (const auto& n : a.relay_networks)
        nets.push_back(n);
    smtp.insert_or_assign("relay_networks", nets);
    // One route per accepted domain to the internal server; routes for
    // other domains are kept.
    toml::array routes;
    if (auto old = t["route"].as_array())
        for (auto& r : *old) {
            auto rt = r.as_table();
            if (!rt)
                continue;
            auto dom = (*rt)["domain"].value<std::string>();
            bool ours = false;
            for (const auto& d : a.accepted_domains)
                ours |= dom && *dom == d;
            if (!ours)
                routes.push_back(*rt);
        }
    for (const auto& d : a.accepted_domains)
        routes.push_back(toml::table{{"domain", d}, {"hosts", toml::array{a.internal_server}}});
    if (routes.empty())
        t.erase("route");
    else
        t.insert_or_assign("route", routes);
    std::ostringstream out;
    out << t << "\n";
    return out.str();
}

rw::result<void, std::string> commit_mail(const options& o, const ap::setup_answers& a) {
    using rw::admin::shell::client;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.socket_wait_s);
    std::string last;
    for (;;) {
        auto c = client::connect(o.socket);
        if (c) {
            auto shown = c.value().call("showconfig", nlohmann::json::object());
            if (!shown)
                return rw::unexpected(fmt::format("showconfig: {}", shown.error()));
            auto text = mail_config(shown.value().value("toml", std::string()), a);
            if (!text)
                return rw::unexpected(text.error());
            auto loaded = c.value().call("load", {{"text", text.value()}, {"name", "first-boot setup"}});
            if (!loaded)
                return rw::unexpected(fmt::format("the mail settings were refused: {}", loaded.error()));
            if (auto p = loaded.value().find("problems"); p != loaded.value().end() && p->is_array() && !p->empty()) {
                std::string all;
                for (const auto& x : *p)
                    all += "\n  " + (x.is_string() ? x.get<std::string>() : x.dump());
                (void)c.value().call("abandon", nlohmann::json::object());
                return rw::unexpected("the mail settings were refused:" + all);
            }
            auto done = c.value().call("commit", {{"comment", "first-boot setup"}});
            if (!done)
                return rw::unexpected(fmt::format("commit: {}", done.error()));
            // Some settings (the host name in the greeting) take effect
            // when ringwayd restarts: restart it now, while nothing is
            // flowing yet.
            auto pending = done.value().find("pending_restart");
            if (o.services && pending != done.value().end() && pending->is_array() && !pending->empty()) {
                std::cout << "  restarting ringwayd for the settings that need it\n" << std::flush;
                if (run({"/usr/bin/systemctl", "restart", "ringwayd.service"}) != 0)
                    return rw::unexpected("ringwayd did not restart with the new settings");
            }
            return {};
        }
        last = c.error();
        if (std::chrono::steady_clock::now() >= deadline)
            return rw::unexpected(fmt::format("ringwayd did not answer within {} s: {}", o.socket_wait_s, last));
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
}

rw::result<void, std::string> apply(const options& o, const ap::setup_answers& a) {
    auto step = [](const char* what, rw::result<void, std::string> r) -> rw::result<void, std::string> {
        if (!r)
            return rw::unexpected(fmt::format("{}: {}", what, r.error()));
        std::cout << "  " << what << ": done\n" << std::flush;
        return {};
    };
    if (auto r = step("host name", ap::write_hostname(o.root, a.hostname)); !r)
        return r;
    if (o.services) {
        std::string h = a.hostname;
        if (!h.empty() && h.back() == '.')
            h.pop_back();
        (void)::sethostname(h.c_str(), h.size());
    }
    if (auto r = step("network", ap::write_network(o.root, a.network)); !r)
        return r;
    if (o.services)
        run({"/usr/bin/systemctl", "restart", "systemd-networkd.service"});
    std::string hash = a.password_hash;
    if (!a.password.empty()) {
        auto h = ap::hash_password(a.password);
        if (!h)
            return rw::unexpected(h.error());
        hash = h.value();
    }
    if (!hash.empty())
        if (auto r = step("admin password", ap::set_password_hash(o.root, "admin", hash)); !r)
            return r;
    if (!a.ssh_keys.empty()) {
        unsigned uid = 1000, gid = 1000;
        if (o.root.empty())
            if (const passwd* pw = ::getpwnam("admin")) {
                uid = pw->pw_uid;
                gid = pw->pw_gid;
            }
        if (auto r = step("admin SSH keys", ap::write_authorized_keys(o.root, o.home, a.ssh_keys, uid, gid)); !r)
            return r;
    }
    std::cout << "  mail settings: waiting for ringwayd...\n" << std::flush;
    if (auto r = step("mail settings (committed as a configuration version)", commit_mail(o, a)); !r)
        return r;
    return {};
}

void record(const options& o, const std::string& name, const std::string& text) {
    (void)ap::replace_file(o.root + o.state + "/" + name, text, 0644);
}

std::string now_text() {
    std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringway-setup: the appliance's first-boot setup (interactive, or from a seed file)"};
    app.name("ringway-setup");
    options o;
    std::string seed;
    bool no_services = false;
    app.add_option("--seed", seed, "answers from this TOML file instead of the terminal; removed once applied");
    app.add_option("--root", o.root, "write the system's files under this folder (default /)");
    app.add_option("--state", o.state, "where setup-done and setup-problem go (default /data/ringway)");
    app.add_option("--home", o.home, "the admin's home (default /data/home/admin)");
    app.add_option("--socket", o.socket, "ringwayd's control socket (default /run/ringway/ringway.sock)");
    app.add_option("--socket-wait", o.socket_wait_s, "seconds to wait for ringwayd (default 180)");
    app.add_flag("--no-services", no_services, "do not set the running host name or restart networking");
    bool reset_password = false;
    app.add_flag("--reset-password", reset_password,
                 "only set a new admin password (the boot menu's password reset runs this on the console)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    o.services = !no_services;
    const std::string problem_file = o.root + o.state + "/setup-problem";

    if (reset_password) {
        ::signal(SIGINT, SIG_IGN);
        ::signal(SIGQUIT, SIG_IGN);
        ::signal(SIGTSTP, SIG_IGN);
        std::cout << "\nReset of the admin password (booted with the boot menu's reset entry).\n";
        for (;;) {
            std::string pw = ask_secret("New admin password");
            if (auto why = ap::check_password(pw); !why.empty()) {
                std::cout << "  not accepted: " << why << "; again.\n";
                continue;
            }
            if (ask_secret("The same password again") != pw) {
                std::cout << "  the two differ; again.\n";
                continue;
            }
            auto h = ap::hash_password(pw);
            if (!h) {
                std::fprintf(stderr, "ringway-setup: %s\n", h.error().c_str());
                return 1;
            }
            if (auto r = ap::set_password_hash(o.root, "admin", h.value()); !r) {
                std::fprintf(stderr, "ringway-setup: %s\n", r.error().c_str());
                return 1;
            }
            std::cout << "The admin password is set. Log in as admin.\n";
            return 0;
        }
    }

    ap::setup_answers a;
    if (!seed.empty()) {
        std::ifstream in(seed);
        if (!in) {
            std::fprintf(stderr, "ringway-setup: cannot read %s\n", seed.c_str());
            return 1;
        }
        std::stringstream ss;
        ss << in.rdbuf();
        auto parsed = ap::parse_seed(ss.str(), seed);
        if (!parsed) {
            std::fprintf(stderr, "ringway-setup: the seed file is refused:\n%s\n", parsed.error().c_str());
            record(o, "setup-problem", "the seed file " + seed + " was refused:\n" + parsed.error() + "\n");
            std::rename(seed.c_str(), (seed + ".refused").c_str());
            return 1;
        }
        a = std::move(parsed.value());
        std::cout << "ringway-setup: applying " << seed << "\n";
    } else {
        g_done_file = o.root + o.state + "/setup-done";
        // The console's setup: Ctrl-C and Ctrl-Z do not leave it.
        ::signal(SIGINT, SIG_IGN);
        ::signal(SIGQUIT, SIG_IGN);
        ::signal(SIGTSTP, SIG_IGN);
        for (;;) {
            a = interview();
            summary(a);
            std::string yes = ask("Apply these settings? (yes/no)", "yes", [](const std::string& s) {
                return s == "yes" || s == "no" ? std::string() : std::string("answer yes or no");
            });
            if (yes == "yes")
                break;
        }
    }
    // One setup applies at a time; a console whose operator answered after
    // another console finished applies nothing.
    const std::string lock_path = o.root + o.state + "/setup.lock";
    int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd >= 0)
        ::flock(lock_fd, LOCK_EX);
    if (seed.empty())
        stop_if_done_elsewhere();
    auto r = apply(o, a);
    if (!r) {
        std::fprintf(stderr, "ringway-setup: %s\n", r.error().c_str());
        record(o, "setup-problem", r.error() + "\n");
        if (!seed.empty())
            std::rename(seed.c_str(), (seed + ".refused").c_str());
        return 1;
    }
    ::unlink(problem_file.c_str());
    if (!seed.empty())
        ::unlink(seed.c_str());  // it may hold the admin's password
    record(o, "setup-done", fmt::format("{} {}\n", now_text(), seed.empty() ? "console" : "seed " + seed));
    std::cout << "ringway-setup: done. Log in as admin.\n";
    return 0;
}
