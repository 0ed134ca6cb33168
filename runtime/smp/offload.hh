// offload(): runs work that must block (a password hash, a file read at
// start-up) on a small pool of helper threads, and resumes the calling
// coroutine on its own reactor with the result, by cross-core message. A
// reactor thread never blocks.
//
//   bool ok = co_await rw::offload([=] { return creds->verify(user, pass); });
#pragma once

#include <coroutine>
#include <exception>
#include <functional>
#include <optional>
#include <type_traits>

#include "runtime/reactor/reactor.hh"
#include "runtime/reactor/task.hh"

namespace rw {

namespace detail {
// Queues job on the helper pool (started on first use, 2 threads).
void offload_submit(std::function<void()> job);
}  // namespace detail

template <typename F>
auto offload(F fn) -> task<std::invoke_result_t<F>> {
    using T = std::invoke_result_t<F>;
    using slot_t = std::conditional_t<std::is_void_v<T>, bool, std::optional<T>>;
    struct state : cross_message {
        F fn;
        slot_t value{};
        std::exception_ptr ex;
        reactor* origin = nullptr;
        std::coroutine_handle<> waiter;
        explicit state(F f) : fn(std::move(f)) {}
    };
    state st(std::move(fn));
    st.origin = &reactor::local();
    st.run = [](cross_message* m) noexcept { reactor::local().schedule(static_cast<state*>(m)->waiter); };
    struct aw {
        state* s;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) {
            s->waiter = h;
            state* sp = s;
            detail::offload_submit([sp] {
                try {
                    if constexpr (std::is_void_v<T>) {
                        sp->fn();
                        sp->value = true;
                    } else {
                        sp->value.emplace(sp->fn());
                    }
                } catch (...) {
                    sp->ex = std::current_exception();
                }
                sp->origin->post_foreign(sp);
            });
        }
        void await_resume() const noexcept {}
    };
    co_await aw{&st};
    if (st.ex)
        std::rethrow_exception(st.ex);
    if constexpr (!std::is_void_v<T>)
        co_return std::move(*st.value);
}

}  // namespace rw
