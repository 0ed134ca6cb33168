// Provided buffer rings (IORING_REGISTER_PBUF_RING): a pool of receive
// buffers the kernel picks from when data arrives, so 10,000 idle
// connections do not each pin a receive buffer. Debian 12's liburing 2.3
// lacks io_uring_setup_buf_ring, so this registers the ring itself.
// Owned by one reactor; buffer ids are recycled by the reader when done.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "runtime/base/result.hh"
#include "runtime/reactor/io.hh"

namespace rw::net {

class buf_ring {
public:
    // count must be a power of two <= 32768; group id unique per reactor.
    static result<std::unique_ptr<buf_ring>, std::string> create(uint16_t group, unsigned count, unsigned size);
    ~buf_ring();
    buf_ring(const buf_ring&) = delete;

    uint16_t group() const { return _group; }
    unsigned buffer_size() const { return _size; }
    std::span<char> buffer(uint16_t id) { return {_data + size_t(id) * _size, _size}; }
    // Gives buffer id back to the kernel.
    void recycle(uint16_t id) noexcept;

private:
    buf_ring() = default;
    io_uring_buf_ring* _br = nullptr;
    size_t _ring_bytes = 0;
    char* _data = nullptr;
    uint16_t _group = 0;
    unsigned _count = 0;
    unsigned _size = 0;
    reactor* _r = nullptr;
};

struct selected {
    int res = 0;       // bytes, 0 = EOF, or -errno (-ENOBUFS: pool empty)
    bool has_buffer = false;  // the kernel used buffer bid: recycle it
    uint16_t bid = 0;
};

// recv into a buffer the kernel picks from ring. The caller must recycle
// the buffer (res > 0) when it has consumed it.
task<selected> recv_select(int fd, buf_ring& ring, io_options o = {});

}  // namespace rw::net
