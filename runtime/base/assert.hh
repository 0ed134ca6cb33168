// Assertions that stay on in every build (RW_ASSERT), costly checks for
// debug and simulation builds (RW_DASSERT), and impossible paths
// (RW_UNREACHABLE). A failed assertion is a programmer error: it prints
// where and why, then aborts.
#pragma once

#include <fmt/format.h>

namespace rw::detail {
[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const std::string& msg) noexcept;
}

#define RW_ASSERT(cond, ...)                                                                  \
    do {                                                                                      \
        if (__builtin_expect(!(cond), 0)) [[unlikely]]                                        \
            ::rw::detail::assert_fail(#cond, __FILE__, __LINE__, ::fmt::format("" __VA_ARGS__)); \
    } while (0)

#ifdef RINGWAY_SANITIZE
#define RW_DASSERT(cond, ...) RW_ASSERT(cond, __VA_ARGS__)
#else
#define RW_DASSERT(cond, ...) ((void)0)
#endif

#define RW_UNREACHABLE(...) ::rw::detail::assert_fail("unreachable", __FILE__, __LINE__, ::fmt::format("" __VA_ARGS__))
