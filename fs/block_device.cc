#include "fs/block_device.hh"

#include "runtime/reactor/io.hh"

namespace rw::fs {

task<int> block_device::write_durable(const void* buf, size_t len, uint64_t off) {
    int r = co_await write(buf, len, off);
    if (r < 0)
        co_return r;
    co_return co_await flush();
}

result<std::unique_ptr<file_device>, std::string> file_device::open(const std::string& path, flush_mode m) {
    return open_impl(path, m, true);
}

result<std::unique_ptr<file_device>, std::string> file_device::open_shared(const std::string& path, flush_mode m) {
    return open_impl(path, m, false);
}

result<std::unique_ptr<file_device>, std::string> file_device::open_impl(const std::string& path, flush_mode m,
                                                                         bool lock) {
    auto f = disk::file::open(
        path, {.direct = true, .create = false, .exclusive_lock = lock, .lock_wait = std::chrono::seconds(lock ? 5 : 0)});
    if (!f)
        return unexpected(f.error());
    std::unique_ptr<file_device> d(new file_device());
    d->_f = std::move(f.value());
    // Files: fdatasync after the write. Block devices: an RWF_DSYNC write,
    // which the block layer turns into a FUA write (or write + flush where
    // the device has no FUA) -- one request instead of two (bench/README.md
    // has the measurement).
    if (m == flush_mode::automatic)
        m = d->_f.is_block_device() ? flush_mode::dsync : flush_mode::fdatasync;
    d->_mode = m;
    return d;
}

task<int> file_device::read(void* buf, size_t len, uint64_t off) {
    int r = co_await _f.read_at(buf, len, off);
    co_return r < 0 ? r : (size_t(r) == len ? 0 : -EIO);
}

task<int> file_device::write(const void* buf, size_t len, uint64_t off) {
    int r = co_await _f.write_at(buf, len, off);
    co_return r < 0 ? r : (size_t(r) == len ? 0 : -EIO);
}

task<int> file_device::flush() { co_return co_await _f.fdatasync(); }

task<int> file_device::write_durable(const void* buf, size_t len, uint64_t off) {
    if (_mode != flush_mode::dsync) {
        int r = co_await write(buf, len, off);
        if (r < 0)
            co_return r;
        co_return co_await flush();
    }
    const char* p = static_cast<const char*>(buf);
    size_t done = 0;
    while (done < len) {
        auto op = io::write_dsync(_f.fd(), p + done, unsigned(len - done), off + done);
        int n = co_await op;
        if (n < 0)
            co_return n;
        if (n == 0)
            co_return -EIO;
        done += size_t(n);
    }
    co_return 0;
}

}  // namespace rw::fs
