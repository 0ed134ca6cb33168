#include "runtime/disk/file.hh"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>
#include <cstring>

namespace rw::disk {

aligned_buffer::aligned_buffer(size_t bytes) {
    _n = (bytes + k_block - 1) / k_block * k_block;
    if (_n == 0)
        _n = k_block;
    _p = static_cast<char*>(std::aligned_alloc(k_block, _n));
    RW_ASSERT(_p != nullptr, "out of memory allocating {} aligned bytes", _n);
    std::memset(_p, 0, _n);
}
aligned_buffer::aligned_buffer(aligned_buffer&& o) noexcept
    : _p(std::exchange(o._p, nullptr)), _n(std::exchange(o._n, 0)) {}
aligned_buffer& aligned_buffer::operator=(aligned_buffer&& o) noexcept {
    if (this != &o) {
        std::free(_p);
        _p = std::exchange(o._p, nullptr);
        _n = std::exchange(o._n, 0);
    }
    return *this;
}
aligned_buffer::~aligned_buffer() { std::free(_p); }

file::file(file&& o) noexcept
    : _fd(std::exchange(o._fd, -1)), _is_bdev(o._is_bdev), _size(o._size), _path(std::move(o._path)) {}
file& file::operator=(file&& o) noexcept {
    if (this != &o) {
        if (_fd >= 0)
            ::close(_fd);
        _fd = std::exchange(o._fd, -1);
        _is_bdev = o._is_bdev;
        _size = o._size;
        _path = std::move(o._path);
    }
    return *this;
}
file::~file() {
    if (_fd >= 0)
        ::close(_fd);
}

result<file, std::string> file::open(const std::string& path, open_options o) {
    int flags = O_RDWR | O_CLOEXEC | (o.direct ? O_DIRECT : 0) | (o.create ? O_CREAT : 0);
    int fd = ::open(path.c_str(), flags, 0600);
    if (fd < 0)
        return unexpected(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
    file f;
    f._fd = fd;
    f._path = path;
    struct stat st{};
    if (::fstat(fd, &st) != 0)
        return unexpected(fmt::format("cannot stat {}: {}", path, std::strerror(errno)));
    if (S_ISBLK(st.st_mode)) {
        f._is_bdev = true;
        uint64_t bytes = 0;
        if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0)
            return unexpected(fmt::format("cannot read the size of block device {}: {}", path, std::strerror(errno)));
        f._size = bytes;
    } else if (S_ISREG(st.st_mode)) {
        f._size = uint64_t(st.st_size);
    } else {
        return unexpected(fmt::format("{} is neither a block device nor a regular file", path));
    }
    auto deadline = std::chrono::steady_clock::now() + o.lock_wait;
    while (o.exclusive_lock && ::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK && std::chrono::steady_clock::now() < deadline) {
            // This thread's own ring may hold the last reference to an
            // earlier open of the same file (reactor::run_deferred_work).
            if (reactor* r = reactor::local_or_null())
                r->run_deferred_work();
            ::usleep(20000);  // start-up only: never on a running reactor's hot path
            continue;
        }
        if (errno == EWOULDBLOCK)
            return unexpected(fmt::format("{} is in use by another process (it holds the lock); stop it first", path));
        return unexpected(fmt::format("cannot lock {}: {}", path, std::strerror(errno)));
    }
    return f;
}

task<int> file::read_at(void* buf, size_t len, uint64_t off) {
    char* p = static_cast<char*>(buf);
    size_t done = 0;
    while (done < len) {
        auto op = io::read(_fd, p + done, unsigned(len - done), off + done);
        int n = co_await op;
        if (n < 0)
            co_return n;
        if (n == 0)
            break;  // end of file
        done += size_t(n);
    }
    co_return int(done);
}

task<int> file::write_at(const void* buf, size_t len, uint64_t off) {
    const char* p = static_cast<const char*>(buf);
    size_t done = 0;
    while (done < len) {
        auto op = io::write(_fd, p + done, unsigned(len - done), off + done);
        int n = co_await op;
        if (n < 0)
            co_return n;
        if (n == 0)
            co_return -EIO;
        done += size_t(n);
    }
    co_return int(done);
}

task<int> file::fdatasync() {
    auto op = io::fdatasync(_fd);
    co_return co_await op;
}

task<int> file::fsync() {
    auto op = io::fsync(_fd);
    co_return co_await op;
}

}  // namespace rw::disk
