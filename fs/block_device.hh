// What the spool writes to. The spool talks only to this interface, so the
// same code runs on a raw block device, on a file standing in for one, and
// on the simulated device of the crash tests (tests/sim).
//
// Offsets and lengths are multiples of 4 KiB; buffers are 4 KiB aligned.
// write() returns once the data is handed to the device, not once it is
// durable; flush() makes every completed write durable. A device may offer
// durable writes (write_durable) that cost less than write + flush.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/base/result.hh"
#include "runtime/disk/file.hh"
#include "runtime/reactor/task.hh"

namespace rw::fs {

class block_device {
public:
    virtual ~block_device() = default;
    virtual uint64_t size_bytes() const = 0;
    virtual const std::string& name() const = 0;
    // Each returns 0 or -errno.
    virtual task<int> read(void* buf, size_t len, uint64_t off) = 0;
    virtual task<int> write(const void* buf, size_t len, uint64_t off) = 0;
    virtual task<int> flush() = 0;
    // Write that is durable on return (RWF_DSYNC / FUA). Default: write+flush.
    virtual task<int> write_durable(const void* buf, size_t len, uint64_t off);
};

enum class flush_mode { automatic, fdatasync, dsync };

// A block device or regular file opened with O_DIRECT through the reactor.
class file_device final : public block_device {
public:
    // Opens path exclusively (flock). Errors name the path.
    static result<std::unique_ptr<file_device>, std::string> open(const std::string& path, flush_mode m);
    // Opens without taking the lock: for the per-core handles of a process
    // that already holds it on another descriptor.
    static result<std::unique_ptr<file_device>, std::string> open_shared(const std::string& path, flush_mode m);
    uint64_t size_bytes() const override { return _f.size_bytes(); }
    const std::string& name() const override { return _f.path(); }
    bool is_block_device() const { return _f.is_block_device(); }
    flush_mode mode() const { return _mode; }
    task<int> read(void* buf, size_t len, uint64_t off) override;
    task<int> write(const void* buf, size_t len, uint64_t off) override;
    task<int> flush() override;
    task<int> write_durable(const void* buf, size_t len, uint64_t off) override;

private:
    static result<std::unique_ptr<file_device>, std::string> open_impl(const std::string& path, flush_mode m, bool lock);
    disk::file _f;
    flush_mode _mode = flush_mode::fdatasync;
};

}  // namespace rw::fs
