// ringwayd: the Ringway daemon. With no --config it runs the embedded
// default (SMTP on 127.0.0.1:2525, a spool file under ./var/).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "admin/config.hh"
#include "admin/daemon.hh"
#include "runtime/base/version.hh"

int main(int argc, char** argv) {
    CLI::App app{"ringwayd: the Ringway mail gateway daemon.\nWith no --config it runs on the embedded default "
                 "configuration (see --print-default-config)."};
    app.name("ringwayd");
    std::string config_path, check_path;
    bool print_default = false;
    app.add_option("--config", config_path, "TOML configuration file")->check(CLI::ExistingFile);
    app.add_option("--check-config", check_path, "validate a configuration file and exit (0 = valid)");
    app.add_flag("--print-default-config", print_default, "print the embedded default configuration and exit");
    app.set_version_flag("--version", "ringwayd " RINGWAY_VERSION);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    if (print_default) {
        auto t = rw::admin::default_config_toml();
        std::fwrite(t.data(), 1, t.size(), stdout);
        return 0;
    }
    if (!check_path.empty()) {
        auto c = rw::admin::load_config_file(check_path);
        if (!c) {
            std::fprintf(stderr, "%s\n", c.error().c_str());
            return 2;
        }
        for (const auto& n : c.value().notes)
            std::fprintf(stderr, "%s\n", n.c_str());
        std::printf("%s: configuration is valid\n", check_path.c_str());
        return 0;
    }
    auto c = config_path.empty() ? rw::admin::load_default_config() : rw::admin::load_config_file(config_path);
    if (!c) {
        std::fprintf(stderr, "ringwayd: invalid configuration:\n%s\n", c.error().c_str());
        return 2;
    }
    return rw::admin::run_daemon(c.value());
}
