// The reactor: one per core, owning one io_uring. Everything a core does --
// sockets, timers, disk I/O, cross-core messages -- is a submission on this
// ring and a coroutine resumed by its completion. Owned by the thread that
// runs it; never touched from another thread except through wake() and the
// cross-core queues (runtime/smp).
//
// Completions are reaped in a batch and only move their coroutine onto the
// ready list; the ready list runs afterwards, so the stack stays bounded no
// matter how many completions arrive at once.
#pragma once

#include <liburing.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/base/result.hh"
#include "runtime/reactor/task.hh"

namespace rw {

// Something that waits for a CQE. user_data of its SQE points at it.
// complete() must not resume a coroutine inline: schedule it.
struct completion {
    virtual void complete(int res, uint32_t flags) noexcept = 0;

protected:
    ~completion() = default;
};

// What the kernel offers, probed once per process.
struct uring_features {
    bool single_issuer = false;
    bool defer_taskrun = false;
    bool coop_taskrun = false;
    bool msg_ring = false;
    bool ext_arg = false;
    std::string describe() const;
};

// A message posted to a reactor from another thread (runtime/smp). Intrusive:
// the sender owns the storage and keeps it alive until run() is called.
struct cross_message {
    void (*run)(cross_message*) noexcept = nullptr;
    cross_message* next = nullptr;  // used by the foreign (non-reactor) inbox
};

class reactor {
public:
    struct options {
        unsigned index = 0;         // core index within the engine
        unsigned sq_entries = 4096;  // submission queue size
        int pin_cpu = -1;           // CPU to pin the calling thread to, -1 = none
    };

    // Creates a reactor for the calling thread. On failure returns one line
    // saying what is wrong and what to do.
    static result<std::unique_ptr<reactor>, std::string> create(const options& o);
    ~reactor();
    reactor(const reactor&) = delete;
    reactor& operator=(const reactor&) = delete;

    // The calling thread's reactor; asserts there is one.
    static reactor& local() noexcept;
    static reactor* local_or_null() noexcept;

    // Probes io_uring once per process; an error names what is missing.
    static result<uring_features, std::string> probe();
    const uring_features& features() const { return _features; }

    unsigned index() const { return _index; }
    int ring_fd() const { return _ring.ring_fd; }

    // Runs root (and everything it spawns) until root has finished and no
    // operation is in flight. Returns when the reactor is idle.
    void run(task<void> root);

    // Begins shutdown: stop_requested() waiters resume; after `drain` every
    // operation still in flight is cancelled.
    void request_stop(std::chrono::milliseconds drain = std::chrono::milliseconds(5000)) noexcept;
    bool stopping() const noexcept { return _stopping; }

    // An awaitable that completes when request_stop() is called.
    struct stop_awaiter {
        reactor& r;
        bool await_ready() const noexcept { return r._stopping; }
        void await_suspend(std::coroutine_handle<> h) { r._stop_waiters.push_back(h); }
        void await_resume() const noexcept {}
    };
    stop_awaiter stop_requested() noexcept { return stop_awaiter{*this}; }

    // ---- used by awaitables ----
    // Returns n free SQEs in a row (submits if the queue is too full).
    void reserve_sqes(unsigned n) noexcept;
    io_uring_sqe* get_sqe() noexcept;
    // Prepares the SQE's user_data and counts the operation as in flight.
    void track(io_uring_sqe* sqe, completion* c) noexcept;
    // Requests cancellation of the operation whose completion is c.
    void cancel(completion* c) noexcept;
    void schedule(std::coroutine_handle<> h) noexcept { _ready.push_back(h); }
    uint64_t in_flight() const noexcept { return _in_flight; }
    // Runs the kernel's deferred work for this ring without waiting or
    // reaping. Under IORING_SETUP_DEFER_TASKRUN an io-wq worker that drops
    // the last reference to a finished request (an fdatasync, say) queues
    // the request's release to this thread, and the file it holds stays
    // open (with its flock) until the ring is entered again: a caller about
    // to wait for such a file synchronously calls this first.
    void run_deferred_work() noexcept;
    // For runtime-internal registrations (buffer rings, files).
    io_uring* raw_ring() noexcept { return &_ring; }

    // ---- cross-core plumbing (runtime/smp) ----
    using inbox_poller = std::function<bool()>;  // drains, returns true if it ran anything
    using inbox_checker = std::function<bool()>;  // true if anything is waiting
    void set_inbox(inbox_poller poll, inbox_checker check);
    // Thread-safe: posts from any thread (not the hot path; takes a lock).
    void post_foreign(cross_message* m) noexcept;
    // Thread-safe: wakes this reactor if it sleeps. `from` may be null.
    void wake(reactor* from) noexcept;

    uint64_t loop_iterations() const { return _iterations; }
    // Time spent asleep in io_uring waiting for work: the loop's
    // utilisation over an interval is 1 - idle / elapsed.
    uint64_t idle_ns() const { return _idle_ns; }

private:
    reactor() = default;
    void reap() noexcept;
    void run_ready() noexcept;
    bool drain_inboxes() noexcept;
    bool inbox_pending() noexcept;
    void arm_eventfd() noexcept;
    void on_drain_deadline() noexcept;

    struct eventfd_poll : completion {
        reactor* r = nullptr;
        void complete(int res, uint32_t flags) noexcept override;
    };
    struct drain_timer : completion {
        reactor* r = nullptr;
        __kernel_timespec ts{};
        bool armed = false;
        void complete(int res, uint32_t flags) noexcept override;
    };

    io_uring _ring{};
    uring_features _features;
    unsigned _index = 0;
    uint64_t _in_flight = 0;  // operations that will still post a CQE
    uint64_t _iterations = 0;
    uint64_t _idle_ns = 0;
    std::vector<std::coroutine_handle<>> _ready;
    std::vector<std::coroutine_handle<>> _running;
    std::vector<std::coroutine_handle<>> _stop_waiters;
    bool _stopping = false;
    bool _cancelled_all = false;
    std::chrono::milliseconds _drain{5000};
    drain_timer _drain_timer;

    int _eventfd = -1;
    uint64_t _eventfd_value = 0;
    eventfd_poll _eventfd_poll;
    bool _eventfd_armed = false;
    std::atomic<bool> _sleeping{false};

    inbox_poller _poll_inbox;
    inbox_checker _check_inbox;
    std::mutex _foreign_lock;
    cross_message* _foreign_head = nullptr;
    std::atomic<bool> _foreign_pending{false};
};

// Runs t on a fresh reactor on the calling thread and returns its value.
// For tests, tools and the load generator's single-core mode.
template <typename T>
T run_local(task<T> t, reactor::options o = {});

// Registers a callback that runs when a spawned task throws (default: log).
void set_detached_exception_handler(void (*fn)(std::exception_ptr) noexcept);

}  // namespace rw

#include "runtime/reactor/reactor_impl.hh"
