// Awaitable io_uring operations for coroutines on the local reactor.
//
//   int n = co_await rw::io::recv(fd, buf, len, {.timeout = 30s, .cancel = &tok});
//
// Every operation returns the kernel's result: >= 0 on success, -errno on
// failure. A deadline is a linked timeout (IORING_OP_LINK_TIMEOUT) and shows
// up as -ETIMEDOUT. Cancellation through a cancel_token asks the kernel to
// cancel the operation and the awaiting coroutine resumes with -ECANCELED
// once the kernel has posted the operation's CQE: an awaitable never lets its
// frame go while its completion is still pending, so no CQE can dangle.
#pragma once

#include <liburing.h>
#include <sys/socket.h>

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <optional>

#include "runtime/reactor/reactor.hh"

namespace rw {

// Cancels whatever operation is currently attached to it, and every later
// one (a cancelled token stays cancelled). One operation at a time.
class cancel_token {
public:
    cancel_token() = default;
    cancel_token(const cancel_token&) = delete;
    cancel_token& operator=(const cancel_token&) = delete;

    void cancel() noexcept {
        if (_cancelled)
            return;
        _cancelled = true;
        if (_op)
            _owner->cancel(_op);
    }
    bool cancelled() const noexcept { return _cancelled; }

    // Used by awaitables.
    void attach(reactor* r, completion* c) noexcept {
        RW_ASSERT(_op == nullptr, "cancel_token already has an operation attached");
        _owner = r;
        _op = c;
    }
    void detach() noexcept { _op = nullptr; }

private:
    reactor* _owner = nullptr;
    completion* _op = nullptr;
    bool _cancelled = false;
};

struct io_options {
    std::optional<std::chrono::nanoseconds> timeout;  // linked timeout
    cancel_token* cancel = nullptr;
};

namespace io {

inline __kernel_timespec to_timespec(std::chrono::nanoseconds d) {
    if (d.count() < 0)
        d = std::chrono::nanoseconds(0);
    __kernel_timespec ts;
    ts.tv_sec = d.count() / 1'000'000'000;
    ts.tv_nsec = d.count() % 1'000'000'000;
    return ts;
}

// The generic one-shot operation. Prep fills the SQE.
template <typename Prep>
class op final : public completion {
public:
    op(Prep prep, io_options o) noexcept : _prep(prep), _opts(o) {}
    op(const op&) = delete;

    bool await_ready() noexcept {
        if (_opts.cancel && _opts.cancel->cancelled()) {
            _res = -ECANCELED;
            return true;
        }
        return false;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept {
        _h = h;
        reactor& r = reactor::local();
        _r = &r;
        r.reserve_sqes(_opts.timeout ? 2 : 1);
        io_uring_sqe* sqe = r.get_sqe();
        _prep(sqe);
        r.track(sqe, this);
        if (_opts.timeout) {
            _ts = to_timespec(*_opts.timeout);
            sqe->flags |= IOSQE_IO_LINK;
            io_uring_sqe* t = r.get_sqe();
            io_uring_prep_link_timeout(t, &_ts, 0);
            io_uring_sqe_set_data64(t, 0);
        }
        if (_opts.cancel)
            _opts.cancel->attach(&r, this);
    }
    int await_resume() const noexcept { return _res; }

    void complete(int res, uint32_t flags) noexcept override {
        _flags = flags;
        if (_opts.cancel)
            _opts.cancel->detach();
        // A linked timeout cancels the operation: report it as a timeout,
        // unless the caller cancelled it itself.
        if (res == -ECANCELED && _opts.timeout && !(_opts.cancel && _opts.cancel->cancelled()))
            res = -ETIMEDOUT;
        if (res == -EINTR && _opts.timeout)
            res = -ETIMEDOUT;
        _res = res;
        _r->schedule(_h);
    }
    uint32_t cqe_flags() const noexcept { return _flags; }

private:
    Prep _prep;
    io_options _opts;
    reactor* _r = nullptr;
    std::coroutine_handle<> _h;
    __kernel_timespec _ts{};
    int _res = 0;
    uint32_t _flags = 0;
};

template <typename Prep>
op<Prep> make_op(Prep p, io_options o = {}) {
    return op<Prep>(p, o);
}

inline auto recv(int fd, void* buf, size_t len, io_options o = {}, int flags = 0) {
    return make_op([=](io_uring_sqe* s) { io_uring_prep_recv(s, fd, buf, len, flags); }, o);
}
inline auto send(int fd, const void* buf, size_t len, io_options o = {}, int flags = MSG_NOSIGNAL) {
    return make_op([=](io_uring_sqe* s) { io_uring_prep_send(s, fd, buf, len, flags); }, o);
}
inline auto connect(int fd, const sockaddr* sa, socklen_t len, io_options o = {}) {
    return make_op([=](io_uring_sqe* s) { io_uring_prep_connect(s, fd, sa, len); }, o);
}
inline auto accept(int fd, sockaddr* sa, socklen_t* len, io_options o = {}) {
    return make_op([=](io_uring_sqe* s) { io_uring_prep_accept(s, fd, sa, len, SOCK_CLOEXEC | SOCK_NONBLOCK); }, o);
}
inline auto read(int fd, void* buf, unsigned len, uint64_t offset, io_options o = {}) {
    return make_op([=](io_uring_sqe* s) { io_uring_prep_read(s, fd, buf, len, offset); }, o);
}
inline auto write(int fd, const void* buf, unsigned len, uint64_t offset, io_options o = {}) {
    return make_op([=](io_uring_sqe* s) { io_uring_prep_write(s, fd, buf, len, offset); }, o);
}
// RWF_DSYNC write: data and the metadata needed to read it back are durable
// when it completes (FUA on devices that support it).
inline auto write_dsync(int fd, const void* buf, unsigned len, uint64_t offset, io_options o = {}) {
    return make_op(
        [=](io_uring_sqe* s) {
            io_uring_prep_write(s, fd, buf, len, offset);
            s->rw_flags = RWF_DSYNC;
        },
        o);
}
inline auto fsync(int fd, io_options o = {}) {
    return make_op([=](io_uring_sqe* s) { io_uring_prep_fsync(s, fd, 0); }, o);
}
inline auto fdatasync(int fd, io_options o = {}) {
    return make_op([=](io_uring_sqe* s) { io_uring_prep_fsync(s, fd, IORING_FSYNC_DATASYNC); }, o);
}
inline auto poll(int fd, unsigned mask, io_options o = {}) {
    return make_op([=](io_uring_sqe* s) { io_uring_prep_poll_add(s, fd, mask); }, o);
}
inline auto close(int fd) {
    return make_op([=](io_uring_sqe* s) { io_uring_prep_close(s, fd); }, {});
}

// Sends the whole buffer, resubmitting after short sends inside the
// completion (no coroutine frame per call). Resumes with len or -errno.
class send_all_op final : public completion {
public:
    send_all_op(int fd, const void* buf, size_t len, io_options o) noexcept
        : _fd(fd), _p(static_cast<const char*>(buf)), _left(len), _len(len), _opts(o) {}
    send_all_op(const send_all_op&) = delete;
    bool await_ready() noexcept {
        if (_opts.cancel && _opts.cancel->cancelled()) {
            _res = -ECANCELED;
            return true;
        }
        if (_left == 0) {
            _res = 0;
            return true;
        }
        return false;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept {
        _h = h;
        _r = &reactor::local();
        if (_opts.timeout)
            _ts = to_timespec(*_opts.timeout);  // one deadline per chunk
        submit();
        if (_opts.cancel)
            _opts.cancel->attach(_r, this);
    }
    int await_resume() const noexcept { return _res; }
    void complete(int res, uint32_t) noexcept override {
        if (res > 0 && size_t(res) < _left && !(_opts.cancel && _opts.cancel->cancelled())) {
            _p += res;
            _left -= size_t(res);
            submit();
            return;
        }
        if (_opts.cancel)
            _opts.cancel->detach();
        if (res == -ECANCELED && _opts.timeout && !(_opts.cancel && _opts.cancel->cancelled()))
            res = -ETIMEDOUT;
        _res = res < 0 ? res : (res == 0 ? -EPIPE : int(_len));
        _r->schedule(_h);
    }

private:
    void submit() noexcept {
        _r->reserve_sqes(_opts.timeout ? 2 : 1);
        io_uring_sqe* sqe = _r->get_sqe();
        io_uring_prep_send(sqe, _fd, _p, _left, MSG_NOSIGNAL);
        _r->track(sqe, this);
        if (_opts.timeout) {
            sqe->flags |= IOSQE_IO_LINK;
            io_uring_sqe* t = _r->get_sqe();
            io_uring_prep_link_timeout(t, &_ts, 0);
            io_uring_sqe_set_data64(t, 0);
        }
    }
    int _fd;
    const char* _p;
    size_t _left;
    size_t _len;
    io_options _opts;
    reactor* _r = nullptr;
    std::coroutine_handle<> _h;
    __kernel_timespec _ts{};
    int _res = 0;
};
inline send_all_op send_all(int fd, const void* buf, size_t len, io_options o = {}) {
    return send_all_op(fd, buf, len, o);
}

// A timer. Resumes with 0 when the time has passed, -ECANCELED if cancelled.
class sleep_op final : public completion {
public:
    sleep_op(std::chrono::nanoseconds d, cancel_token* c) noexcept : _ts(to_timespec(d)), _cancel(c) {}
    sleep_op(const sleep_op&) = delete;
    bool await_ready() noexcept {
        if (_cancel && _cancel->cancelled()) {
            _res = -ECANCELED;
            return true;
        }
        return false;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept {
        _h = h;
        _r = &reactor::local();
        io_uring_sqe* sqe = _r->get_sqe();
        io_uring_prep_timeout(sqe, &_ts, 0, 0);
        _r->track(sqe, this);
        if (_cancel)
            _cancel->attach(_r, this);
    }
    int await_resume() const noexcept { return _res; }
    void complete(int res, uint32_t) noexcept override {
        if (_cancel)
            _cancel->detach();
        _res = res == -ETIME ? 0 : res;
        _r->schedule(_h);
    }

private:
    __kernel_timespec _ts;
    cancel_token* _cancel;
    reactor* _r = nullptr;
    std::coroutine_handle<> _h;
    int _res = 0;
};

inline sleep_op sleep(std::chrono::nanoseconds d, cancel_token* c = nullptr) { return sleep_op(d, c); }

// Puts the current coroutine at the back of the ready list.
struct yield_op {
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const noexcept { reactor::local().schedule(h); }
    void await_resume() const noexcept {}
};
inline yield_op yield() { return {}; }

}  // namespace io
}  // namespace rw
