// Reactor loop, io_uring set-up with feature fallback, shutdown drain.
#include "runtime/reactor/reactor.hh"

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "runtime/base/log.hh"

namespace rw {

namespace detail {
thread_local int64_t t_live_frames = 0;
namespace {
void default_detached_handler(std::exception_ptr e) noexcept {
    static const logger lg{"runtime"};
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        lg.error("spawned task threw: {}", x.what());
    } catch (...) {
        lg.error("spawned task threw a non-standard exception");
    }
}
void (*g_detached_handler)(std::exception_ptr) noexcept = default_detached_handler;
}  // namespace
void report_detached_exception(std::exception_ptr e) noexcept { g_detached_handler(e); }
}  // namespace detail

void set_detached_exception_handler(void (*fn)(std::exception_ptr) noexcept) { detail::g_detached_handler = fn; }

namespace {
const logger lg{"runtime"};
thread_local reactor* t_reactor = nullptr;
constexpr uint64_t k_wake_tag = 1;  // user_data of a MSG_RING wake-up

std::string io_uring_error(int err) {
    switch (err) {
    case EPERM: {
        std::string v = "?";
        std::ifstream f("/proc/sys/kernel/io_uring_disabled");
        if (f)
            std::getline(f, v);
        return fmt::format(
            "cannot create an io_uring: operation not permitted (kernel.io_uring_disabled={}); "
            "run as root or set it to 0 with: sysctl -w kernel.io_uring_disabled=0",
            v);
    }
    case ENOSYS:
        return "cannot create an io_uring: this kernel has no io_uring support (Linux 6.1 or newer is needed)";
    case ENOMEM: {
        rlimit rl{};
        getrlimit(RLIMIT_MEMLOCK, &rl);
        return fmt::format(
            "cannot create an io_uring: out of locked memory (RLIMIT_MEMLOCK={} KiB); raise it with "
            "'ulimit -l unlimited' or LimitMEMLOCK=infinity in the service unit",
            rl.rlim_cur == RLIM_INFINITY ? std::string("unlimited") : std::to_string(rl.rlim_cur / 1024));
    }
    default:
        return fmt::format("cannot create an io_uring: {}", std::strerror(err));
    }
}

// The flag sets we try, best first.
constexpr unsigned k_flag_sets[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_SUBMIT_ALL,
    0,
};

int init_ring(io_uring& ring, unsigned entries, unsigned& used_flags) {
    int last = -EINVAL;
    for (unsigned f : k_flag_sets) {
        io_uring_params p{};
        p.flags = f;
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 4;
        int r = io_uring_queue_init_params(entries, &ring, &p);
        if (r == 0) {
            used_flags = f;
            return 0;
        }
        last = r;
        if (r != -EINVAL)
            return r;  // EPERM, ENOMEM, ENOSYS: no point in trying weaker flags
    }
    return last;
}

struct required_op {
    int op;
    const char* name;
};
constexpr required_op k_required[] = {
    {IORING_OP_ACCEPT, "IORING_OP_ACCEPT"},       {IORING_OP_CONNECT, "IORING_OP_CONNECT"},
    {IORING_OP_RECV, "IORING_OP_RECV"},           {IORING_OP_SEND, "IORING_OP_SEND"},
    {IORING_OP_READ, "IORING_OP_READ"},           {IORING_OP_WRITE, "IORING_OP_WRITE"},
    {IORING_OP_FSYNC, "IORING_OP_FSYNC"},         {IORING_OP_TIMEOUT, "IORING_OP_TIMEOUT"},
    {IORING_OP_LINK_TIMEOUT, "IORING_OP_LINK_TIMEOUT"}, {IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL"},
    {IORING_OP_POLL_ADD, "IORING_OP_POLL_ADD"},   {IORING_OP_PROVIDE_BUFFERS, "IORING_OP_PROVIDE_BUFFERS"},
};

bool kernel_at_least(int maj, int min) {
    utsname u{};
    if (uname(&u) != 0)
        return false;
    int a = 0, b = 0;
    if (std::sscanf(u.release, "%d.%d", &a, &b) != 2)
        return false;
    return a > maj || (a == maj && b >= min);
}
}  // namespace

std::string uring_features::describe() const {
    return fmt::format("single_issuer={} defer_taskrun={} coop_taskrun={} msg_ring={} ext_arg={}", single_issuer,
                       defer_taskrun, coop_taskrun, msg_ring, ext_arg);
}

result<uring_features, std::string> reactor::probe() {
    static std::once_flag once;
    static std::optional<result<uring_features, std::string>> cached;
    std::call_once(once, [] {
        io_uring ring{};
        unsigned flags = 0;
        int r = init_ring(ring, 8, flags);
        if (r < 0) {
            cached.emplace(unexpected(io_uring_error(-r)));
            return;
        }
        uring_features f;
        f.single_issuer = flags & IORING_SETUP_SINGLE_ISSUER;
        f.defer_taskrun = flags & IORING_SETUP_DEFER_TASKRUN;
        f.coop_taskrun = flags & IORING_SETUP_COOP_TASKRUN;
        f.ext_arg = ring.features & IORING_FEAT_EXT_ARG;
        io_uring_probe* p = io_uring_get_probe_ring(&ring);
        if (!p) {
            io_uring_queue_exit(&ring);
            cached.emplace(unexpected(std::string("cannot probe io_uring opcodes (IORING_REGISTER_PROBE failed)")));
            return;
        }
        std::string missing;
        for (auto& op : k_required)
            if (!io_uring_opcode_supported(p, op.op))
                missing += missing.empty() ? op.name : std::string(", ") + op.name;
        f.msg_ring = io_uring_opcode_supported(p, IORING_OP_MSG_RING);
        io_uring_free_probe(p);
        io_uring_queue_exit(&ring);
        if (!missing.empty()) {
            cached.emplace(unexpected(fmt::format("this kernel's io_uring lacks {}; Linux 6.1 or newer is needed", missing)));
            return;
        }
        // Multishot accept and recv with buffer rings appeared in 5.19 and
        // cannot be probed by opcode.
        if (!kernel_at_least(5, 19)) {
            cached.emplace(unexpected(std::string(
                "this kernel's io_uring lacks multishot accept and provided buffer rings (Linux 5.19 or newer)")));
            return;
        }
        cached.emplace(f);
    });
    return *cached;
}

result<std::unique_ptr<reactor>, std::string> reactor::create(const options& o) {
    RW_ASSERT(t_reactor == nullptr, "thread already has a reactor");
    auto feats = probe();
    if (!feats)
        return unexpected(feats.error());
    if (o.pin_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(o.pin_cpu, &set);
        int r = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
        if (r != 0)
            return unexpected(fmt::format("cannot pin reactor {} to CPU {}: {}", o.index, o.pin_cpu, std::strerror(r)));
    }
    std::unique_ptr<reactor> re(new reactor());
    re->_index = o.index;
    re->_features = feats.value();
    unsigned flags = 0;
    int r = init_ring(re->_ring, o.sq_entries, flags);
    if (r < 0)
        return unexpected(io_uring_error(-r));
    re->_eventfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (re->_eventfd < 0) {
        int e = errno;
        io_uring_queue_exit(&re->_ring);
        return unexpected(fmt::format("cannot create the reactor's eventfd: {}", std::strerror(e)));
    }
    re->_eventfd_poll.r = re.get();
    re->_drain_timer.r = re.get();
    re->_ready.reserve(1024);
    re->_running.reserve(1024);
    t_reactor = re.get();
    set_log_core(int(o.index));
    re->arm_eventfd();
    return re;
}

reactor::~reactor() {
    // Cancel whatever is left and wait for its CQEs, so no completion can
    // point into freed memory.
    if (_in_flight > 0) {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
        io_uring_sqe_set_data64(sqe, 0);
        for (int i = 0; i < 1000 && _in_flight > 0; ++i) {
            __kernel_timespec ts{0, 10'000'000};
            io_uring_cqe* cqe = nullptr;
            io_uring_submit_and_wait_timeout(&_ring, &cqe, 1, &ts, nullptr);
            reap();
        }
        if (_in_flight > 0)
            lg.warn("reactor {} exits with {} operations still in flight", _index, _in_flight);
    }
    _ready.clear();
    io_uring_queue_exit(&_ring);
    ::close(_eventfd);
    if (t_reactor == this)
        t_reactor = nullptr;
    set_log_core(-1);
}

reactor& reactor::local() noexcept {
    RW_ASSERT(t_reactor != nullptr, "no reactor on this thread");
    return *t_reactor;
}
reactor* reactor::local_or_null() noexcept { return t_reactor; }

void reactor::run_deferred_work() noexcept { io_uring_get_events(&_ring); }

void reactor::reserve_sqes(unsigned n) noexcept {
    while (io_uring_sq_space_left(&_ring) < n) {
        int r = io_uring_submit(&_ring);
        if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR)
            lg.panic("io_uring_submit failed: {}", std::strerror(-r));
        if (r <= 0) {
            // The CQ ring is full: make room by reaping.
            io_uring_get_events(&_ring);
            reap();
        }
    }
}

io_uring_sqe* reactor::get_sqe() noexcept {
    reserve_sqes(1);
    io_uring_sqe* sqe = io_uring_get_sqe(&_ring);
    RW_ASSERT(sqe != nullptr);
    return sqe;
}

void reactor::track(io_uring_sqe* sqe, completion* c) noexcept {
    io_uring_sqe_set_data(sqe, c);
    ++_in_flight;
}

void reactor::cancel(completion* c) noexcept {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel(sqe, c, 0);
    io_uring_sqe_set_data64(sqe, 0);
}

void reactor::arm_eventfd() noexcept {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_read(sqe, _eventfd, &_eventfd_value, sizeof _eventfd_value, 0);
    io_uring_sqe_set_data(sqe, &_eventfd_poll);
    _eventfd_armed = true;
}

void reactor::eventfd_poll::complete(int, uint32_t) noexcept {
    r->_eventfd_armed = false;
    // Messages are drained by the loop; re-arm unless we are tearing down.
    if (!r->_cancelled_all || r->_in_flight > 0)
        r->arm_eventfd();
}

void reactor::drain_timer::complete(int res, uint32_t) noexcept {
    armed = false;
    if (res == -ETIME)
        r->on_drain_deadline();
}

void reactor::on_drain_deadline() noexcept {
    if (_in_flight == 0)
        return;
    lg.info("drain deadline reached, cancelling {} operations", _in_flight);
    _cancelled_all = true;
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, 0);
}

void reactor::request_stop(std::chrono::milliseconds drain) noexcept {
    if (_stopping)
        return;
    _stopping = true;
    _drain = drain;
    for (auto h : _stop_waiters)
        schedule(h);
    _stop_waiters.clear();
    _drain_timer.ts.tv_sec = drain.count() / 1000;
    _drain_timer.ts.tv_nsec = (drain.count() % 1000) * 1'000'000;
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_timeout(sqe, &_drain_timer.ts, 0, 0);
    io_uring_sqe_set_data(sqe, &_drain_timer);
    _drain_timer.armed = true;
}

void reactor::set_inbox(inbox_poller poll, inbox_checker check) {
    _poll_inbox = std::move(poll);
    _check_inbox = std::move(check);
}

void reactor::post_foreign(cross_message* m) noexcept {
    {
        std::lock_guard g(_foreign_lock);
        m->next = _foreign_head;
        _foreign_head = m;
    }
    _foreign_pending.store(true, std::memory_order_seq_cst);
    wake(nullptr);
}

void reactor::wake(reactor* from) noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!_sleeping.load(std::memory_order_seq_cst))
        return;
    if (!_sleeping.exchange(false, std::memory_order_seq_cst))
        return;
    if (from != nullptr && from != this && from->_features.msg_ring) {
        io_uring_sqe* sqe = from->get_sqe();
        io_uring_prep_msg_ring(sqe, _ring.ring_fd, 0, k_wake_tag, 0);
        io_uring_sqe_set_data64(sqe, 0);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        return;
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(_eventfd, &one, sizeof one);
}

bool reactor::drain_inboxes() noexcept {
    bool ran = false;
    if (_foreign_pending.load(std::memory_order_acquire)) {
        cross_message* list;
        {
            std::lock_guard g(_foreign_lock);
            list = _foreign_head;
            _foreign_head = nullptr;
            _foreign_pending.store(false, std::memory_order_relaxed);
        }
        // Reverse to run in posting order.
        cross_message* rev = nullptr;
        while (list) {
            cross_message* n = list->next;
            list->next = rev;
            rev = list;
            list = n;
        }
        while (rev) {
            cross_message* n = rev->next;
            rev->run(rev);
            rev = n;
            ran = true;
        }
    }
    if (_poll_inbox && _poll_inbox())
        ran = true;
    return ran;
}

bool reactor::inbox_pending() noexcept {
    if (_foreign_pending.load(std::memory_order_seq_cst))
        return true;
    return _check_inbox && _check_inbox();
}

void reactor::reap() noexcept {
    io_uring_cqe* cqe;
    unsigned head;
    unsigned n = 0;
    io_uring_for_each_cqe(&_ring, head, cqe) {
        ++n;
        uint64_t ud = cqe->user_data;
        if (ud == 0 || ud == k_wake_tag)
            continue;
        auto* c = reinterpret_cast<completion*>(uintptr_t(ud));
        if (c == &_eventfd_poll || c == &_drain_timer) {
            c->complete(cqe->res, cqe->flags);
            continue;
        }
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
            RW_DASSERT(_in_flight > 0);
            --_in_flight;
        }
        c->complete(cqe->res, cqe->flags);
    }
    io_uring_cq_advance(&_ring, n);
}

void reactor::run_ready() noexcept {
    // Resumptions scheduled while running go to the next round.
    _running.swap(_ready);
    for (auto h : _running)
        h.resume();
    _running.clear();
}

void reactor::run(task<void> root) {
    bool root_done = false;
    auto wrapper = [](task<void> t, bool* done) -> task<void> {
        co_await std::move(t);
        *done = true;
    };
    spawn(wrapper(std::move(root), &root_done));
    for (;;) {
        ++_iterations;
        drain_inboxes();
        run_ready();
        if (!_ready.empty()) {
            io_uring_submit_and_wait(&_ring, 0);
            reap();
            continue;
        }
        if (root_done && _in_flight == 0) {
            if (!inbox_pending())
                break;
            continue;
        }
        _sleeping.store(true, std::memory_order_seq_cst);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (inbox_pending()) {
            _sleeping.store(false, std::memory_order_relaxed);
            continue;
        }
        const auto slept = std::chrono::steady_clock::now();
        int r = io_uring_submit_and_wait(&_ring, 1);
        _idle_ns += uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - slept)
                                 .count());
        _sleeping.store(false, std::memory_order_relaxed);
        if (r < 0 && r != -EINTR && r != -ETIME && r != -EBUSY && r != -EAGAIN)
            lg.panic("io_uring_submit_and_wait failed: {}", std::strerror(-r));
        reap();
    }
    // Idle: retire the drain timer if it is still pending.
    if (_drain_timer.armed) {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_timeout_remove(sqe, uint64_t(uintptr_t(&_drain_timer)), 0);
        io_uring_sqe_set_data64(sqe, 0);
        for (int i = 0; i < 100 && _drain_timer.armed; ++i) {
            io_uring_submit_and_wait(&_ring, 1);
            reap();
        }
    }
}

}  // namespace rw
