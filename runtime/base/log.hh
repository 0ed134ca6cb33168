// Loggers: one per module (`static rw::logger lg{"smtp"}`), fmt formatting,
// one line per event with key=value ids:
//   2026-11-25T00:00:00.123456Z info  smtp[c0] accepted icid=17 peer=127.0.0.1:4242
// Lines go to stderr (the service manager or the console keeps them). The
// level is global and set once from the configuration. `fatal` logs and exits
// with status 1 (environment errors at start-up); `panic` logs and aborts.
#pragma once

#include <atomic>
#include <string_view>

#include <fmt/format.h>

namespace rw {

enum class log_level { trace = 0, debug, info, warn, error, off };

// Parses "trace", "debug", "info", "warn", "error", "off".
bool parse_log_level(std::string_view s, log_level& out);
std::string_view to_string(log_level l);

namespace detail {
extern std::atomic<int> g_log_level;
void log_write(log_level lvl, std::string_view module, std::string_view text) noexcept;
}  // namespace detail

void set_log_level(log_level l);
log_level get_log_level();

class logger {
public:
    explicit constexpr logger(std::string_view module) : _module(module) {}

    bool enabled(log_level l) const noexcept {
        return int(l) >= detail::g_log_level.load(std::memory_order_relaxed);
    }

    template <typename... A>
    void log(log_level l, fmt::format_string<A...> f, A&&... a) const noexcept {
        if (!enabled(l))
            return;
        try {
            detail::log_write(l, _module, fmt::format(f, std::forward<A>(a)...));
        } catch (...) {
            detail::log_write(log_level::error, _module, "log formatting failed");
        }
    }
    template <typename... A>
    void trace(fmt::format_string<A...> f, A&&... a) const noexcept { log(log_level::trace, f, std::forward<A>(a)...); }
    template <typename... A>
    void debug(fmt::format_string<A...> f, A&&... a) const noexcept { log(log_level::debug, f, std::forward<A>(a)...); }
    template <typename... A>
    void info(fmt::format_string<A...> f, A&&... a) const noexcept { log(log_level::info, f, std::forward<A>(a)...); }
    template <typename... A>
    void warn(fmt::format_string<A...> f, A&&... a) const noexcept { log(log_level::warn, f, std::forward<A>(a)...); }
    template <typename... A>
    void error(fmt::format_string<A...> f, A&&... a) const noexcept { log(log_level::error, f, std::forward<A>(a)...); }

    // Environment error at start-up: one clear line, exit(1).
    template <typename... A>
    [[noreturn]] void fatal(fmt::format_string<A...> f, A&&... a) const noexcept {
        detail::log_write(log_level::error, _module, fmt::format(f, std::forward<A>(a)...));
        fatal_exit();
    }
    // Broken invariant: log and abort.
    template <typename... A>
    [[noreturn]] void panic(fmt::format_string<A...> f, A&&... a) const noexcept {
        detail::log_write(log_level::error, _module, fmt::format(f, std::forward<A>(a)...));
        panic_abort();
    }

    std::string_view module() const { return _module; }

private:
    [[noreturn]] static void fatal_exit() noexcept;
    [[noreturn]] static void panic_abort() noexcept;
    std::string_view _module;
};

// The current thread's reactor index, shown in log lines as [cN]; -1 = none.
void set_log_core(int core);

}  // namespace rw
