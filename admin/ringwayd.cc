// ringwayd: the Ringway daemon. With no --config it runs the embedded
// default (SMTP on 127.0.0.1:2525, a spool file under ./var/).
#include <CLI/CLI.hpp>
#include <cstdio>

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "admin/config.hh"
#include "admin/config_schema.hh"
#include "admin/config_store.hh"
#include "fs/spool.hh"
#include "runtime/reactor/reactor.hh"
#include "admin/daemon.hh"
#include "runtime/base/version.hh"

int main(int argc, char** argv) {
    CLI::App app{"ringwayd: the Ringway mail gateway daemon.\nWith no --config it runs on the embedded default "
                 "configuration (see --print-default-config)."};
    app.name("ringwayd");
    std::string config_path, check_path;
    bool print_default = false, print_reference = false;
    app.add_option("--config", config_path, "TOML configuration file")->check(CLI::ExistingFile);
    app.add_option("--check-config", check_path, "validate a configuration file and exit (0 = valid)");
    app.add_flag("--print-default-config", print_default, "print the embedded default configuration and exit");
    app.add_flag("--print-config-reference", print_reference,
                 "print the reference of every configuration key (docs/config.md, Markdown) and exit");
    std::string format_path, format_size;
    unsigned format_shards = 0;
    bool force = false;
    app.add_option("--format-spool", format_path,
                   "format PATH (a block device, or a file, created if missing) as an empty spool and exit");
    app.add_option("--size", format_size, "with --format-spool on a new file: its size, e.g. 1G (default 1G)");
    app.add_option("--shards", format_shards, "with --format-spool: shards, one per core (default: CPUs)");
    app.add_flag("--force", force, "with --format-spool: erase a device that already holds a spool");
    std::string info_path;
    app.add_option("--spool-info", info_path,
                   "print the uuid of the spool on PATH and exit (0: a spool, 1: not a spool, reason on stderr)");
    app.set_version_flag("--version", "ringwayd " RINGWAY_VERSION);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    if (!info_path.empty()) {
        try {
            auto r = rw::run_local([](std::string p) -> rw::task<rw::result<rw::fs::geometry, std::string>> {
                auto dev = rw::fs::file_device::open(p, rw::fs::flush_mode::automatic);
                if (!dev)
                    co_return rw::unexpected(dev.error());
                co_return co_await rw::fs::read_superblock(*dev.value());
            }(info_path));
            if (!r) {
                std::fprintf(stderr, "ringwayd: %s\n", r.error().c_str());
                return 1;
            }
            std::printf("%s\n", r.value().uuid_string().c_str());
            return 0;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "ringwayd: %s\n", e.what());
            return 1;
        }
    }
    if (!format_path.empty()) {
        uint64_t size = uint64_t(1) << 30;
        if (!format_size.empty()) {
            // Same syntax as spool.size in the configuration.
            std::string toml = "[spool]\nsize = \"" + format_size + "\"\n[[listener]]\nname = \"x\"\nport = 1\n";
            auto c = rw::admin::load_config_text(toml, "--size");
            if (!c) {
                std::fprintf(stderr, "ringwayd: --size: expected a size like 512M or 1G (at least 64M), got \"%s\"\n",
                             format_size.c_str());
                return 2;
            }
            size = c.value().spool.size_bytes;
        }
        struct stat st{};
        if (::stat(format_path.c_str(), &st) != 0) {
            int fd = ::open(format_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd < 0 || ::posix_fallocate(fd, 0, off_t(size)) != 0) {
                std::fprintf(stderr, "ringwayd: cannot create %s: %s\n", format_path.c_str(), std::strerror(errno));
                return 1;
            }
            ::close(fd);
        }
        if (format_shards == 0) {
            cpu_set_t set;
            sched_getaffinity(0, sizeof set, &set);
            format_shards = unsigned(CPU_COUNT(&set));
        }
        try {
            auto r = rw::run_local([](std::string p, unsigned shards, bool f) -> rw::task<rw::result<rw::fs::geometry, std::string>> {
                auto dev = rw::fs::file_device::open(p, rw::fs::flush_mode::automatic);
                if (!dev)
                    co_return rw::unexpected(dev.error());
                rw::fs::format_options o;
                o.shards = shards;
                o.force = f;
                co_return co_await rw::fs::format(*dev.value(), o);
            }(format_path, format_shards, force));
            if (!r) {
                std::fprintf(stderr, "ringwayd: %s\n", r.error().c_str());
                return 1;
            }
            std::printf("%s: formatted: uuid %s, %u shards of %u segments of %u bytes\n", format_path.c_str(),
                        r.value().uuid_string().c_str(), r.value().shard_count, r.value().slots_per_shard,
                        r.value().segment_bytes);
            return 0;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "ringwayd: %s\n", e.what());
            return 1;
        }
    }
    if (print_default) {
        auto t = rw::admin::default_config_toml();
        std::fwrite(t.data(), 1, t.size(), stdout);
        return 0;
    }
    if (print_reference) {
        auto t = rw::admin::render_reference_markdown();
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
    // The store of committed versions decides: the newest one, unless the
    // file (or the embedded default) changed since the last start.
    std::string text;
    if (config_path.empty()) {
        text = std::string(rw::admin::default_config_toml());
    } else {
        std::ifstream in(config_path, std::ios::binary);
        text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    auto start = rw::admin::choose_start_config(std::move(c.value()), text);
    return rw::admin::run_daemon(start.cfg, start.note);
}
