// Coroutine synchronisation within one reactor (no locks: everything here is
// owned by one core). event: waiters resume once it is set. gate: counts
// running tasks so shutdown can wait for them to finish.
#pragma once

#include <coroutine>
#include <vector>

#include "runtime/reactor/reactor.hh"

namespace rw {

class event {
public:
    void set() noexcept {
        if (_set)
            return;
        _set = true;
        auto& r = reactor::local();
        for (auto h : _waiters)
            r.schedule(h);
        _waiters.clear();
    }
    void reset() noexcept { _set = false; }
    bool is_set() const noexcept { return _set; }

    struct awaiter {
        event& e;
        bool await_ready() const noexcept { return e._set; }
        void await_suspend(std::coroutine_handle<> h) { e._waiters.push_back(h); }
        void await_resume() const noexcept {}
    };
    awaiter wait() noexcept { return awaiter{*this}; }

private:
    bool _set = false;
    std::vector<std::coroutine_handle<>> _waiters;
};

// Tracks tasks in progress. close() waits for the count to reach zero.
class gate {
public:
    void enter() noexcept { ++_count; }
    void leave() noexcept {
        RW_ASSERT(_count > 0);
        if (--_count == 0)
            _idle.set();
    }
    size_t count() const noexcept { return _count; }
    task<void> wait_idle() {
        while (_count > 0) {
            _idle.reset();
            co_await _idle.wait();
        }
    }

    // RAII holder for a task's lifetime.
    class holder {
    public:
        explicit holder(gate& g) : _g(&g) { _g->enter(); }
        holder(holder&& o) noexcept : _g(std::exchange(o._g, nullptr)) {}
        holder(const holder&) = delete;
        ~holder() {
            if (_g)
                _g->leave();
        }

    private:
        gate* _g;
    };

private:
    size_t _count = 0;
    event _idle;
};

}  // namespace rw
