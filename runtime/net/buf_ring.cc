#include "runtime/net/buf_ring.hh"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

namespace rw::net {

result<std::unique_ptr<buf_ring>, std::string> buf_ring::create(uint16_t group, unsigned count, unsigned size) {
    RW_ASSERT(count > 0 && count <= 32768 && (count & (count - 1)) == 0, "buffer count must be a power of two");
    std::unique_ptr<buf_ring> b(new buf_ring());
    b->_r = &reactor::local();
    b->_group = group;
    b->_count = count;
    b->_size = size;
    b->_ring_bytes = count * sizeof(io_uring_buf);
    void* mem = mmap(nullptr, b->_ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED)
        return unexpected(fmt::format("cannot map a buffer ring: {}", std::strerror(errno)));
    b->_br = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(b->_br);
    size_t bytes = (size_t(count) * size + 4095) / 4096 * 4096;  // aligned_alloc wants a multiple
    b->_data = static_cast<char*>(std::aligned_alloc(4096, bytes));
    if (!b->_data) {
        munmap(mem, b->_ring_bytes);
        b->_br = nullptr;
        return unexpected(std::string("cannot allocate receive buffers"));
    }
    io_uring_buf_reg reg{};
    reg.ring_addr = uint64_t(uintptr_t(mem));
    reg.ring_entries = count;
    reg.bgid = group;
    int r = io_uring_register_buf_ring(b->_r->raw_ring(), &reg, 0);
    if (r < 0) {
        std::free(b->_data);
        munmap(mem, b->_ring_bytes);
        b->_br = nullptr;
        b->_data = nullptr;
        return unexpected(fmt::format("cannot register a provided buffer ring: {}", std::strerror(-r)));
    }
    int mask = io_uring_buf_ring_mask(count);
    for (unsigned i = 0; i < count; ++i)
        io_uring_buf_ring_add(b->_br, b->_data + size_t(i) * size, size, uint16_t(i), mask, int(i));
    io_uring_buf_ring_advance(b->_br, int(count));
    return b;
}

buf_ring::~buf_ring() {
    if (_br) {
        io_uring_unregister_buf_ring(_r->raw_ring(), _group);
        munmap(_br, _ring_bytes);
    }
    std::free(_data);
}

void buf_ring::recycle(uint16_t id) noexcept {
    RW_DASSERT(id < _count);
    io_uring_buf_ring_add(_br, _data + size_t(id) * _size, _size, id, io_uring_buf_ring_mask(_count), 0);
    io_uring_buf_ring_advance(_br, 1);
}

task<selected> recv_select(int fd, buf_ring& ring, io_options o) {
    uint16_t group = ring.group();
    auto op = io::make_op(
        [=](io_uring_sqe* s) {
            io_uring_prep_recv(s, fd, nullptr, 0, 0);
            s->flags |= IOSQE_BUFFER_SELECT;
            s->buf_group = group;
        },
        o);
    int res = co_await op;
    selected out;
    out.res = res;
    if (op.cqe_flags() & IORING_CQE_F_BUFFER) {
        out.has_buffer = true;
        out.bid = uint16_t(op.cqe_flags() >> IORING_CQE_BUFFER_SHIFT);
    }
    co_return out;
}

}  // namespace rw::net
