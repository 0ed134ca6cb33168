// The version store: N.toml and N.json per committed version, start.json.
#include "admin/config_store.hh"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "admin/config_schema.hh"

namespace rw::admin {

namespace {

constexpr size_t k_max_file = 4 << 20;

result<std::string, std::string> read_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return unexpected(fmt::format("{}: {}", path, std::strerror(errno)));
    std::string out;
    char buf[16384];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            ::close(fd);
            return unexpected(fmt::format("{}: {}", path, std::strerror(e)));
        }
        if (n == 0)
            break;
        out.append(buf, size_t(n));
        if (out.size() > k_max_file) {
            ::close(fd);
            return unexpected(fmt::format("{}: larger than {} bytes", path, k_max_file));
        }
    }
    ::close(fd);
    return out;
}

// tmp, fsync, rename: the file is the old one or the new one.
result<void, std::string> write_file(const std::string& path, const std::string& text) {
    std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return unexpected(fmt::format("{}: {}", tmp, std::strerror(errno)));
    size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            return unexpected(fmt::format("{}: {}", tmp, std::strerror(e)));
        }
        done += size_t(n);
    }
    if (::fsync(fd) != 0) {
        int e = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        return unexpected(fmt::format("{}: fsync: {}", tmp, std::strerror(e)));
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0)
        return unexpected(fmt::format("{}: {}", path, std::strerror(errno)));
    return {};
}

void sync_dir(const std::string& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
}

// The version numbers present, ascending.
std::vector<uint64_t> numbers(const std::string& dir) {
    std::vector<uint64_t> out;
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return out;
    while (dirent* e = ::readdir(d)) {
        std::string_view n = e->d_name;
        if (!n.ends_with(".json") || n.size() <= 5 || n.size() > 25)
            continue;
        std::string_view digits = n.substr(0, n.size() - 5);
        if (!std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
            continue;
        out.push_back(std::stoull(std::string(digits)));
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace

std::string config_store::path(uint64_t n, const char* ext) const {
    return fmt::format("{}/{}.{}", _dir, n, ext);
}

result<void, std::string> config_store::open() {
    std::error_code ec;
    std::filesystem::create_directories(_dir, ec);
    if (ec)
        return unexpected(fmt::format("cannot create the configuration store {}: {}", _dir, ec.message()));
    return {};
}

uint64_t config_store::latest() const {
    // A version counts once its record (written last) is there.
    auto ns = numbers(_dir);
    return ns.empty() ? 0 : ns.back();
}

result<std::string, std::string> config_store::text(uint64_t n) const {
    return read_file(path(n, "toml"));
}

result<version_info, std::string> config_store::info(uint64_t n) const {
    auto t = read_file(path(n, "json"));
    if (!t)
        return unexpected(t.error());
    try {
        auto j = nlohmann::json::parse(t.value());
        version_info v;
        v.number = j.at("version").get<uint64_t>();
        v.time = j.at("time").get<int64_t>();
        v.who = j.value("who", "");
        v.comment = j.value("comment", "");
        v.diff = j.value("diff", "");
        return v;
    } catch (const std::exception& e) {
        return unexpected(fmt::format("{}: {}", path(n, "json"), e.what()));
    }
}

std::vector<version_info> config_store::history(size_t max) const {
    std::vector<version_info> out;
    auto ns = numbers(_dir);
    for (auto it = ns.rbegin(); it != ns.rend() && out.size() < max; ++it)
        if (auto v = info(*it))
            out.push_back(std::move(v.value()));
    return out;
}

result<uint64_t, std::string> config_store::commit(const std::string& text, version_info meta) {
    const uint64_t n = latest() + 1;
    meta.number = n;
    // The configuration first, its record last: a version without its
    // record is not one (latest() looks for records).
    if (auto r = write_file(path(n, "toml"), text); !r)
        return unexpected(r.error());
    nlohmann::json j = {{"version", n},  {"time", meta.time}, {"who", meta.who},
                        {"comment", meta.comment}, {"diff", meta.diff}};
    if (auto r = write_file(path(n, "json"), j.dump(2) + "\n"); !r)
        return unexpected(r.error());
    sync_dir(_dir);
    auto ns = numbers(_dir);
    if (ns.size() > _keep)
        for (size_t i = 0; i + _keep < ns.size(); ++i) {
            ::unlink(path(ns[i], "json").c_str());
            ::unlink(path(ns[i], "toml").c_str());
        }
    return n;
}

std::string config_store::start_hash() const {
    auto t = read_file(fmt::format("{}/start.json", _dir));
    if (!t)
        return {};
    try {
        return nlohmann::json::parse(t.value()).value("hash", "");
    } catch (const std::exception&) {
        return {};
    }
}

result<void, std::string> config_store::set_start_hash(const std::string& hash) {
    nlohmann::json j = {{"hash", hash}};
    auto r = write_file(fmt::format("{}/start.json", _dir), j.dump() + "\n");
    if (r)
        sync_dir(_dir);
    return r;
}

std::string config_store::hash_of(const std::string& text) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char ch : text) {
        h ^= ch;
        h *= 0x100000001b3ull;
    }
    return fmt::format("{:016x}", h);
}

start_config choose_start_config(config given, const std::string& given_text) {
    start_config out;
    config_store store(given.control.config_dir, given.control.history_versions);
    if (auto r = store.open(); !r) {
        out.note = fmt::format("{}; running {} without version history", r.error(), given.source);
        out.cfg = std::move(given);
        return out;
    }
    const std::string hash = config_store::hash_of(given_text);
    const uint64_t latest = store.latest();
    const int64_t now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    if (latest != 0 && store.start_hash() == hash) {
        auto text = store.text(latest);
        auto cfg = text ? load_config_text(text.value(), fmt::format("{}/{}.toml", store.dir(), latest))
                        : result<config, std::string>(unexpected(text.error()));
        if (cfg) {
            out.cfg = std::move(cfg.value());
            out.version = latest;
            out.note = fmt::format("running configuration version {} from {} ({} is unchanged since the last start)",
                                   latest, store.dir(), given.source);
            return out;
        }
        out.note = fmt::format("configuration version {} cannot be used ({}); ", latest, cfg.error());
    }
    version_info meta;
    meta.time = now;
    meta.who = "ringwayd (start-up)";
    if (latest == 0) {
        meta.comment = fmt::format("initial: {}", given.source);
    } else {
        meta.comment = fmt::format("{} loaded at start-up", given.source);
        if (auto t = store.text(latest))
            if (auto before = load_config_text(t.value(), "before"))
                meta.diff = format_diff(diff(before.value(), given));
    }
    auto n = store.commit(given_text, meta);
    if (!n) {
        out.note += fmt::format("cannot record {} in {}: {}", given.source, store.dir(), n.error());
    } else {
        (void)store.set_start_hash(hash);
        out.version = n.value();
        out.note += fmt::format("running {} as configuration version {}{}", given.source, n.value(),
                                latest == 0 ? "" : " (it changed since the last start)");
    }
    out.cfg = std::move(given);
    return out;
}

}  // namespace rw::admin
