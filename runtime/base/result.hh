// rw::result<T, E>: a small expected-like type for operational errors on the
// data path (g++ 12 has <expected> only in C++23 mode). Nothing on the data
// path throws; functions return a result and callers must look at it.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "runtime/base/assert.hh"

namespace rw {

// An errno-style error from the kernel, kept as a positive errno value.
struct sys_error {
    int code = 0;
    std::string message() const { return std::strerror(code); }
    friend bool operator==(const sys_error&, const sys_error&) = default;
};

template <typename E>
struct unexpected {
    // A constructor, not an aggregate: clang before 16 cannot deduce the
    // template argument of `unexpected(x)` for an aggregate.
    explicit unexpected(E e) : error(std::move(e)) {}
    E error;
};
template <typename E>
unexpected(E) -> unexpected<E>;

template <typename T, typename E = sys_error>
class [[nodiscard]] result {
public:
    result(T v) : _v(std::in_place_index<0>, std::move(v)) {}
    template <typename G>
    result(unexpected<G> e) : _v(std::in_place_index<1>, E(std::move(e.error))) {}

    bool has_value() const noexcept { return _v.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }

    T& value() & {
        RW_ASSERT(has_value(), "result holds an error");
        return std::get<0>(_v);
    }
    T&& value() && {
        RW_ASSERT(has_value(), "result holds an error");
        return std::get<0>(std::move(_v));
    }
    const T& value() const& {
        RW_ASSERT(has_value(), "result holds an error");
        return std::get<0>(_v);
    }
    T* operator->() { return &value(); }
    T& operator*() & { return value(); }

    const E& error() const {
        RW_ASSERT(!has_value(), "result holds a value");
        return std::get<1>(_v);
    }

private:
    std::variant<T, E> _v;
};

template <typename E>
class [[nodiscard]] result<void, E> {
public:
    result() = default;
    template <typename G>
    result(unexpected<G> e) : _e(E(std::move(e.error))), _ok(false) {}
    bool has_value() const noexcept { return _ok; }
    explicit operator bool() const noexcept { return _ok; }
    const E& error() const {
        RW_ASSERT(!_ok, "result holds a value");
        return _e;
    }

private:
    E _e{};
    bool _ok = true;
};

// Turns a negative io_uring/syscall return into a result.
inline result<int> from_res(int res) {
    if (res < 0)
        return unexpected(sys_error{-res});
    return res;
}

}  // namespace rw
