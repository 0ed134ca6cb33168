// Logger back end: formats the line prefix and writes one line with a single
// write(2), so lines from different cores never interleave.
#include "runtime/base/log.hh"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "runtime/base/assert.hh"

namespace rw {

namespace detail {
std::atomic<int> g_log_level{int(log_level::info)};
namespace {
thread_local int t_core = -1;
}

void log_write(log_level lvl, std::string_view module, std::string_view text) noexcept {
    using namespace std::chrono;
    auto now = system_clock::now();
    auto secs = time_point_cast<seconds>(now);
    auto us = duration_cast<microseconds>(now - secs).count();
    std::time_t t = system_clock::to_time_t(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[2048];
    char core[16] = "";
    if (t_core >= 0)
        std::snprintf(core, sizeof core, "[c%d]", t_core);
    int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ %-5s %.*s%s %.*s\n",
                          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                          long(us), to_string(lvl).data(), int(module.size()), module.data(), core,
                          int(text.size()), text.data());
    if (n < 0)
        return;
    if (size_t(n) >= sizeof buf) {
        n = sizeof buf;
        buf[n - 1] = '\n';
    }
    ssize_t off = 0;
    while (off < n) {
        ssize_t w = ::write(2, buf + off, size_t(n - off));
        if (w <= 0)
            break;
        off += w;
    }
}

[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const std::string& msg) noexcept {
    std::string text = fmt::format("assertion failed: {} at {}:{}{}{}", expr, file, line, msg.empty() ? "" : ": ", msg);
    log_write(log_level::error, "assert", text);
    std::abort();
}
}  // namespace detail

void set_log_core(int core) { detail::t_core = core; }

bool parse_log_level(std::string_view s, log_level& out) {
    static constexpr std::string_view names[] = {"trace", "debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 6; ++i)
        if (s == names[i]) {
            out = log_level(i);
            return true;
        }
    return false;
}

std::string_view to_string(log_level l) {
    switch (l) {
    case log_level::trace: return "trace";
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
    case log_level::off: return "off";
    }
    return "?";
}

void set_log_level(log_level l) { detail::g_log_level.store(int(l), std::memory_order_relaxed); }
log_level get_log_level() { return log_level(detail::g_log_level.load(std::memory_order_relaxed)); }

void logger::fatal_exit() noexcept { std::exit(1); }
void logger::panic_abort() noexcept { std::abort(); }

}  // namespace rw
