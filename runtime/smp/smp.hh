// The engine: N reactor threads, one per core, pinned, and the cross-core
// message queues between them. Each ordered pair of cores has its own
// bounded single-producer/single-consumer ring, so the hot path takes no
// lock; a sleeping core is woken with IORING_OP_MSG_RING from the sender's
// ring (or its eventfd when the sender is not a reactor or the kernel lacks
// MSG_RING).
//
//   auto n = co_await rw::submit_to(2, [] { return local_count(); });
//
// submit_to runs fn on the target core and resumes the caller on its own
// core with the result. fn may return a value or a task<T>. When the ring
// to the target is full the caller waits (bounded back-pressure).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "runtime/reactor/io.hh"
#include "runtime/reactor/reactor.hh"
#include "runtime/reactor/task.hh"

namespace rw {

// Bounded SPSC ring of message pointers.
class spsc_ring {
public:
    explicit spsc_ring(size_t capacity_pow2);
    bool push(cross_message* m) noexcept {
        size_t t = _tail.load(std::memory_order_relaxed);
        if (t - _head_cache >= _cap) {
            _head_cache = _head.load(std::memory_order_acquire);
            if (t - _head_cache >= _cap)
                return false;
        }
        _slots[t & (_cap - 1)] = m;
        _tail.store(t + 1, std::memory_order_release);
        return true;
    }
    cross_message* pop() noexcept {
        size_t h = _head.load(std::memory_order_relaxed);
        if (h == _tail_cache) {
            _tail_cache = _tail.load(std::memory_order_acquire);
            if (h == _tail_cache)
                return nullptr;
        }
        cross_message* m = _slots[h & (_cap - 1)];
        _head.store(h + 1, std::memory_order_release);
        return m;
    }
    bool empty() const noexcept {
        return _head.load(std::memory_order_acquire) == _tail.load(std::memory_order_acquire);
    }
    // Messages waiting (a moment's reading, from any thread).
    size_t size() const noexcept {
        size_t h = _head.load(std::memory_order_acquire);
        size_t t = _tail.load(std::memory_order_acquire);
        return t >= h ? t - h : 0;
    }

private:
    size_t _cap;
    std::unique_ptr<cross_message*[]> _slots;
    alignas(64) std::atomic<size_t> _head{0};
    size_t _tail_cache = 0;  // consumer's view of _tail
    alignas(64) std::atomic<size_t> _tail{0};
    size_t _head_cache = 0;  // producer's view of _head
};

struct engine_options {
    unsigned cores = 0;           // 0 = every CPU this process may run on
    bool pin = true;              // pin reactor i to the i-th allowed CPU
    size_t queue_capacity = 1024;  // per ordered pair of cores
    unsigned sq_entries = 4096;
};

class engine {
public:
    // Starts nothing yet; validates options and probes io_uring.
    static result<std::unique_ptr<engine>, std::string> create(const engine_options& o);
    ~engine();

    unsigned cores() const { return _n; }
    static engine& instance();  // the running engine (one per process)

    // Runs main(core) as the root task on every core and returns when all
    // reactors are idle. Returns an error line if a reactor cannot start.
    result<void, std::string> run(std::function<task<void>(unsigned core)> main);

    // Thread-safe: asks every core to stop (from a signal thread, say).
    void request_stop(std::chrono::milliseconds drain);

    // ---- used by submit_to ----
    // Pushes m into the ring from the current core to `to`; false when full.
    bool try_post(unsigned to, cross_message* m) noexcept;
    reactor* reactor_of(unsigned core) const { return _reactors[core]; }
    // Cross-core messages waiting for `core` in the rings from the others.
    size_t inbox_depth(unsigned core) noexcept;

private:
    engine() = default;
    bool poll_inbox(unsigned core) noexcept;
    bool inbox_pending(unsigned core) noexcept;
    spsc_ring& ring(unsigned from, unsigned to) { return *_rings[from * _n + to]; }

    unsigned _n = 0;
    engine_options _opts;
    std::vector<int> _cpus;
    std::vector<std::unique_ptr<spsc_ring>> _rings;
    std::vector<reactor*> _reactors;
    std::atomic<unsigned> _started{0};
    std::vector<std::string> _errors;
    std::mutex _lock;  // guards _reactors against threads coming and going
    bool _stop_pending = false;  // request_stop() came; reactors starting later stop too
    std::chrono::milliseconds _stop_drain{0};
};

// The index of the calling reactor.
inline unsigned this_core() { return reactor::local().index(); }

namespace detail {
template <typename T>
struct unwrap_task {
    using type = T;
    static constexpr bool is_task = false;
};
template <typename T>
struct unwrap_task<task<T>> {
    using type = T;
    static constexpr bool is_task = true;
};
}  // namespace detail

// Runs fn() on `core` and returns its result on the calling core.
template <typename F>
auto submit_to(unsigned core, F fn) -> task<typename detail::unwrap_task<std::invoke_result_t<F>>::type> {
    using ret = std::invoke_result_t<F>;
    using T = typename detail::unwrap_task<ret>::type;
    constexpr bool is_task = detail::unwrap_task<ret>::is_task;
    using slot_t = std::conditional_t<std::is_void_v<T>, bool, std::optional<T>>;

    struct state;
    struct node : cross_message {
        state* s = nullptr;
    };
    struct state {
        F fn;
        slot_t value{};
        std::exception_ptr ex;
        unsigned origin = 0;
        unsigned target = 0;
        std::coroutine_handle<> waiter;
        node request;
        node reply;
    };
    state st{std::move(fn)};
    st.origin = this_core();
    st.target = core;
    st.request.s = &st;
    st.reply.s = &st;

    if (core == st.origin) {
        if constexpr (is_task) {
            if constexpr (std::is_void_v<T>) {
                co_await st.fn();
                co_return;
            } else {
                co_return co_await st.fn();
            }
        } else {
            if constexpr (std::is_void_v<T>) {
                st.fn();
                co_return;
            } else {
                co_return st.fn();
            }
        }
    }

    st.reply.run = [](cross_message* m) noexcept { reactor::local().schedule(static_cast<node*>(m)->s->waiter); };
    st.request.run = [](cross_message* m) noexcept {
        state* s = static_cast<node*>(m)->s;
        auto send_back = [](state* s2) noexcept {
            engine& e = engine::instance();
            // A reply never waits: when the ring back is full it takes the
            // origin's locked overflow list, so two cores replying to each
            // other cannot deadlock.
            // Once the reply is posted the origin may resume and free *s2
            // at any moment: read what we need first.
            const unsigned origin = s2->origin;
            reactor* to = e.reactor_of(origin);
            if (e.try_post(origin, &s2->reply))
                to->wake(&reactor::local());
            else
                to->post_foreign(&s2->reply);
        };
        if constexpr (is_task) {
            auto runner = [](state* s3, decltype(send_back) sb) -> task<void> {
                try {
                    if constexpr (std::is_void_v<T>) {
                        co_await s3->fn();
                        s3->value = true;
                    } else {
                        s3->value.emplace(co_await s3->fn());
                    }
                } catch (...) {
                    s3->ex = std::current_exception();
                }
                sb(s3);
            };
            spawn(runner(s, send_back));
        } else {
            try {
                if constexpr (std::is_void_v<T>) {
                    s->fn();
                    s->value = true;
                } else {
                    s->value.emplace(s->fn());
                }
            } catch (...) {
                s->ex = std::current_exception();
            }
            send_back(s);
        }
    };

    struct post_awaiter {
        state* s;
        bool posted = false;
        bool await_ready() const noexcept { return false; }
        bool await_suspend(std::coroutine_handle<> h) noexcept {
            s->waiter = h;
            engine& e = engine::instance();
            if (!e.try_post(s->target, &s->request))
                return false;  // ring full: resume now, retry after a pause
            posted = true;
            e.reactor_of(s->target)->wake(&reactor::local());
            return true;
        }
        bool await_resume() const noexcept { return posted; }
    };
    for (;;) {
        post_awaiter pa{&st};
        bool posted = co_await pa;
        if (posted)
            break;
        auto pause = io::sleep(std::chrono::microseconds(50));
        co_await pause;
    }
    if (st.ex)
        std::rethrow_exception(st.ex);
    if constexpr (!std::is_void_v<T>)
        co_return std::move(*st.value);
}

}  // namespace rw
