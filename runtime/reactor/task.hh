// task<T>: a lazy coroutine. It starts when awaited; if it finishes before
// its first real suspension the awaiter simply continues, otherwise it
// resumes its awaiter by symmetric transfer when it finishes. Either way a
// loop of awaits runs in constant stack, also under ASan where symmetric
// transfer is not a tail call (a g++ 12 limitation). Exceptions are kept
// and rethrown in the awaiter (tests and config code may throw; the data path
// does not). spawn() runs a task<void> detached: its frame frees itself.
//
// Every live coroutine frame made here is counted per thread
// (live_task_frames()), so tests can check that cancellation leaked nothing.
#pragma once

#include <coroutine>
#include <cstdint>
#include <exception>
#include <optional>
#include <utility>

#include "runtime/base/assert.hh"

namespace rw {

namespace detail {
extern thread_local int64_t t_live_frames;
}

// Frames of task<> and spawned coroutines alive on this thread.
inline int64_t live_task_frames() { return detail::t_live_frames; }

template <typename T = void>
class task;

namespace detail {

struct promise_base {
    std::coroutine_handle<> continuation = std::noop_coroutine();
    std::exception_ptr exception;
    // Set while the awaiter's await_suspend is running this coroutine. If it
    // finishes then, final_suspend returns to await_suspend instead of
    // transferring to the awaiter, so a loop of immediately-ready awaits
    // runs in constant stack even where symmetric transfer is not a tail
    // call (-O0, ASan).
    bool starting = false;
    bool finished_while_starting = false;

    promise_base() noexcept { ++t_live_frames; }
    ~promise_base() { --t_live_frames; }

    struct final_awaiter {
        bool await_ready() const noexcept { return false; }
        template <typename P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
            auto& p = h.promise();
            if (p.starting) {
                p.finished_while_starting = true;
                return std::noop_coroutine();
            }
            return p.continuation;
        }
        void await_resume() const noexcept {}
    };
    std::suspend_always initial_suspend() const noexcept { return {}; }
    final_awaiter final_suspend() const noexcept { return {}; }
    void unhandled_exception() noexcept { exception = std::current_exception(); }
};

template <typename T>
struct promise : promise_base {
    std::optional<T> value;
    task<T> get_return_object() noexcept;
    template <typename U>
    void return_value(U&& v) {
        value.emplace(std::forward<U>(v));
    }
    T take() {
        if (exception)
            std::rethrow_exception(exception);
        RW_ASSERT(value.has_value(), "task finished without a value");
        return std::move(*value);
    }
};

template <>
struct promise<void> : promise_base {
    task<void> get_return_object() noexcept;
    void return_void() noexcept {}
    void take() {
        if (exception)
            std::rethrow_exception(exception);
    }
};

}  // namespace detail

template <typename T>
class [[nodiscard]] task {
public:
    using promise_type = detail::promise<T>;
    using handle_type = std::coroutine_handle<promise_type>;

    task() noexcept = default;
    explicit task(handle_type h) noexcept : _h(h) {}
    task(task&& o) noexcept : _h(std::exchange(o._h, {})) {}
    task& operator=(task&& o) noexcept {
        if (this != &o) {
            if (_h)
                _h.destroy();
            _h = std::exchange(o._h, {});
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    ~task() {
        if (_h)
            _h.destroy();
    }

    bool valid() const noexcept { return bool(_h); }
    bool done() const noexcept { return _h && _h.done(); }

    struct awaiter {
        handle_type h;
        bool await_ready() const noexcept { return false; }
        bool await_suspend(std::coroutine_handle<> cont) noexcept {
            auto& p = h.promise();
            p.continuation = cont;
            p.starting = true;
            h.resume();
            p.starting = false;
            // Finished already: do not suspend the awaiter at all.
            return !p.finished_while_starting;
        }
        T await_resume() { return h.promise().take(); }
    };
    awaiter operator co_await() && noexcept {
        RW_ASSERT(_h, "awaiting an empty task");
        return awaiter{_h};
    }

    // For drivers (run-to-completion helpers, spawn): release ownership.
    handle_type release() noexcept { return std::exchange(_h, {}); }
    handle_type handle() const noexcept { return _h; }

private:
    handle_type _h;
};

namespace detail {
template <typename T>
task<T> promise<T>::get_return_object() noexcept {
    return task<T>(std::coroutine_handle<promise<T>>::from_promise(*this));
}
inline task<void> promise<void>::get_return_object() noexcept {
    return task<void>(std::coroutine_handle<promise<void>>::from_promise(*this));
}

// A self-destroying coroutine that drives one task<void>.
struct detached {
    struct promise_type {
        promise_type() noexcept { ++t_live_frames; }
        ~promise_type() { --t_live_frames; }
        detached get_return_object() noexcept { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
};
void report_detached_exception(std::exception_ptr e) noexcept;

inline detached run_detached(task<void> t) {
    try {
        co_await std::move(t);
    } catch (...) {
        report_detached_exception(std::current_exception());
    }
}
}  // namespace detail

// Starts t now, on this thread; it runs until its first suspension and then
// continues on completions. Its frame is freed when it finishes.
inline void spawn(task<void> t) { detail::run_detached(std::move(t)); }

}  // namespace rw
