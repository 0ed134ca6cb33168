// ringway: the admin shell. Interactive on a terminal (line editing,
// history, tab completion), a script of commands on a non-terminal stdin,
// or one command from its arguments:
//
//   ringway                      ringway status detail
//   ringway --json workqueue     echo workqueue | ringway
//
// It talks to ringwayd over the control socket (admin/control.hh). There is
// no way out of it to a Unix shell: it runs no other program, and Ctrl-C,
// Ctrl-Z and Ctrl-\ do not stop it (the appliance makes it the admin's
// login shell).
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <editline/readline.h>
#include <iostream>
#include <optional>

#include "admin/config.hh"
#include "admin/shell/client.hh"
#include "admin/shell/commands.hh"

namespace {
// Where the appliance's ringwayd listens (image/rootfs/usr/share/ringway/appliance.toml).
constexpr const char* k_appliance_socket = "/run/ringway/ringway.sock";
}  // namespace

using namespace rw::admin::shell;

namespace {

volatile sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

struct session {
    std::string path;
    std::optional<client> cl;
    bool json_out = false;

    bool connect(bool quiet) {
        auto c = client::connect(path);
        if (!c) {
            if (!quiet)
                std::fprintf(stderr, "ringway: %s\n", c.error().c_str());
            cl.reset();
            return false;
        }
        cl.emplace(std::move(c.value()));
        return true;
    }

    // One command line; reconnects once when the daemon went away (a
    // restart) and tries again.
    outcome run(const std::vector<std::string>& words) {
        if (!cl)
            connect(true);
        g_interrupted = 0;
        outcome r = run_words(cl ? &*cl : nullptr, words, json_out, [] { return g_interrupted != 0; });
        if (cl && cl->broken() && r.status != 0 && connect(true))
            r = run_words(&*cl, words, json_out, [] { return g_interrupted != 0; });
        else if (cl && cl->broken())
            cl.reset();  // a stream the user ended: a new connection next time
        if (!cl && r.status == 1 && r.err == "not connected to ringwayd") {
            auto c = client::connect(path);
            r.err = c ? r.err : c.error();
        }
        return r;
    }
};

session* g_session = nullptr;
std::vector<std::string> g_matches;

char* next_match(const char*, int state) {
    static size_t i;
    if (state == 0)
        i = 0;
    if (i < g_matches.size())
        return ::strdup(g_matches[i++].c_str());
    return nullptr;
}

char** completer(const char* text, int start, int) {
    rl_attempted_completion_over = 1;  // never file names
    std::string before(rl_line_buffer, size_t(start));
    auto words = split_words(before);
    g_matches = complete(words, text, [] {
        std::vector<std::string> names;
        if (!g_session->cl)
            g_session->connect(true);
        if (g_session->cl)
            if (auto r = g_session->cl->call("destinations", nlohmann::json::object()); r && r.value().is_array())
                for (const auto& n : r.value())
                    if (n.is_string())
                        names.push_back(n.get<std::string>());
        return names;
    });
    if (g_matches.empty())
        return nullptr;
    return rl_completion_matches(text, next_match);
}

int print(const outcome& r) {
    if (!r.out.empty())
        std::fwrite(r.out.data(), 1, r.out.size(), stdout);
    if (!r.err.empty())
        std::fprintf(stderr, "%s\n", r.err.c_str());
    std::fflush(stdout);
    return r.status;
}

std::string history_path() {
    const char* home = std::getenv("HOME");
    return home && *home ? std::string(home) + "/.ringway_history" : std::string();
}

int interactive(session& s) {
    // Ctrl-C does nothing at the prompt and ends a `tail follow`.
    ::signal(SIGINT, SIG_IGN);
    ::signal(SIGQUIT, SIG_IGN);
    ::signal(SIGTSTP, SIG_IGN);
    rl_catch_signals = 0;  // libedit's handlers would re-raise them with the default action
    rl_readline_name = "ringway";
    rl_attempted_completion_function = completer;
    using_history();
    stifle_history(1000);
    const std::string hist = history_path();
    if (!hist.empty())
        read_history(hist.c_str());
    if (!s.connect(false))
        std::fprintf(stderr, "ringway: commands will try again; help works without the daemon\n");
    std::printf("Ringway admin shell. Type help for the commands, Tab to complete, quit to leave.\n");
    std::fflush(stdout);
    for (;;) {
        char* line = readline("ringway> ");
        if (!line) {
            std::printf("\n");
            break;
        }
        std::string text(line);
        std::free(line);
        auto words = split_words(text);
        if (words.empty())
            continue;
        add_history(text.c_str());
        if (!hist.empty())
            write_history(hist.c_str());
        struct sigaction sa{}, ign{};
        sa.sa_handler = on_interrupt;
        ign.sa_handler = SIG_IGN;
        ::sigaction(SIGINT, &sa, nullptr);
        outcome r = s.run(words);
        ::sigaction(SIGINT, &ign, nullptr);
        print(r);
        if (r.quit)
            break;
    }
    return 0;
}

int script(session& s) {
    int status = 0;
    std::string text;
    while (std::getline(std::cin, text)) {
        auto words = split_words(text);
        if (words.empty() || words[0].starts_with("#"))
            continue;
        outcome r = s.run(words);
        status = std::max(status, print(r));
        if (r.quit)
            break;
    }
    return status;
}

int interactive_or_script(session& s) {
    if (::isatty(STDIN_FILENO))
        return interactive(s);
    return script(s);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringway: the Ringway admin shell. With a COMMAND, runs it and exits; without, reads commands "
                 "(interactively on a terminal). `ringway help` lists the commands."};
    session s;
    g_session = &s;
    std::string config_file;
    std::vector<std::string> words;
    const char* env = std::getenv("RINGWAY_SOCKET");
    s.path = env && *env ? env : "./var/ringway.sock";
    // The appliance's daemon socket, when there is no local one.
    if (!(env && *env) && ::access(s.path.c_str(), F_OK) != 0 && ::access(k_appliance_socket, F_OK) == 0)
        s.path = k_appliance_socket;
    // As a login shell over SSH with a command (ssh host status), sshd runs
    // "ringway -c 'status'": the command is one argument, split as typed.
    if (argc == 3 && std::string_view(argv[1]) == "-c") {
        auto cmd = split_words(argv[2]);
        if (cmd.empty())
            return interactive_or_script(s);
        std::vector<std::string> ws;
        for (auto& w : cmd) {
            if (w == "--json")
                s.json_out = true;
            else
                ws.push_back(std::move(w));
        }
        return print(s.run(ws));
    }
    app.add_option("--socket", s.path, "the control socket (default: $RINGWAY_SOCKET or ./var/ringway.sock)");
    app.add_option("--config", config_file, "take the socket from this configuration's [control] socket");
    app.add_flag("--json", s.json_out, "print results as JSON (for scripts)");
    // Everything from the command on is the command's (trace takes
    // --options of its own); --json may still come anywhere.
    app.prefix_command();
    app.footer("COMMAND [ARGS...]: a command and its arguments (ringway help)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    for (auto& w : app.remaining()) {
        if (w == "--json")
            s.json_out = true;
        else
            words.push_back(w);
    }
    if (!config_file.empty()) {
        auto c = rw::admin::load_config_file(config_file);
        if (!c) {
            std::fprintf(stderr, "ringway: %s\n", c.error().c_str());
            return 2;
        }
        s.path = c.value().control.socket;
    }
    if (!words.empty())
        return print(s.run(words));
    return interactive_or_script(s);
}
