// Files and block devices for O_DIRECT I/O through the reactor, and the
// aligned buffers O_DIRECT needs. Used by the spool (fs/).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "runtime/base/result.hh"
#include "runtime/reactor/io.hh"

namespace rw::disk {

constexpr size_t k_block = 4096;

// A heap buffer aligned to 4 KiB, its size a multiple of 4 KiB.
class aligned_buffer {
public:
    aligned_buffer() = default;
    explicit aligned_buffer(size_t bytes);
    aligned_buffer(aligned_buffer&& o) noexcept;
    aligned_buffer& operator=(aligned_buffer&& o) noexcept;
    ~aligned_buffer();
    char* data() { return _p; }
    const char* data() const { return _p; }
    size_t size() const { return _n; }
    std::span<char> span() { return {_p, _n}; }

private:
    char* _p = nullptr;
    size_t _n = 0;
};

struct open_options {
    bool direct = true;     // O_DIRECT
    bool create = false;    // create a regular file if missing
    bool exclusive_lock = true;  // flock(LOCK_EX|LOCK_NB): one owner at a time
    // How long to retry a held lock. A process killed with SIGKILL keeps its
    // lock for a moment while the kernel tears its io_uring down.
    std::chrono::milliseconds lock_wait{0};
};

class file {
public:
    file() = default;
    file(file&& o) noexcept;
    file& operator=(file&& o) noexcept;
    ~file();

    // Opens path for reading and writing. Errors name the path and the cause.
    static result<file, std::string> open(const std::string& path, open_options o = {});

    int fd() const { return _fd; }
    bool is_block_device() const { return _is_bdev; }
    uint64_t size_bytes() const { return _size; }
    const std::string& path() const { return _path; }

    // Offsets and lengths must be 4 KiB aligned when opened with O_DIRECT.
    // Each returns bytes done or -errno; short transfers are finished here.
    task<int> read_at(void* buf, size_t len, uint64_t off);
    task<int> write_at(const void* buf, size_t len, uint64_t off);
    task<int> fdatasync();
    task<int> fsync();

private:
    int _fd = -1;
    bool _is_bdev = false;
    uint64_t _size = 0;
    std::string _path;
};

}  // namespace rw::disk
