// The simulated block device: see sim_device.hh.
#include "tests/sim/sim_device.hh"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fs/crc32c.hh"
#include "fs/format.hh"
#include "runtime/reactor/io.hh"

namespace rw::sim {

const char* to_string(damage_kind k) {
    switch (k) {
    case damage_kind::misdirect_lost: return "misdirect_lost";
    case damage_kind::misdirect_target: return "misdirect_target";
    case damage_kind::read_persistent: return "read_persistent";
    }
    return "?";
}

namespace {
// The images of the last device, kept for the next one: fresh multi-MiB
// buffers for every seed cost more in page faults (under ASan above all)
// than the simulation itself.
thread_local std::vector<char> t_spare_durable, t_spare_latest;
}  // namespace

sim_device::sim_device(uint64_t bytes, std::mt19937_64* rng)
    : _bytes(bytes), _rng(rng), _durable(std::move(t_spare_durable)), _latest(std::move(t_spare_latest)),
      _dirty(bytes / k_sector_bytes, 0), _bad(bytes / k_sector_bytes, 0) {
    RW_ASSERT(bytes % fs::k_block_bytes == 0, "device size {} is not a multiple of 4 KiB", bytes);
    _durable.assign(bytes, '\0');
    _latest.assign(bytes, '\0');
}

sim_device::~sim_device() {
    t_spare_durable = std::move(_durable);
    t_spare_latest = std::move(_latest);
}

void sim_device::check_args(const void* buf, size_t len, uint64_t off) const {
    // The block_device contract (fs/block_device.hh): 4 KiB aligned offsets,
    // lengths and buffers. A spool that breaks it is a spool bug.
    RW_ASSERT(off % fs::k_block_bytes == 0, "unaligned offset {}", off);
    RW_ASSERT(len % fs::k_block_bytes == 0, "unaligned length {}", len);
    RW_ASSERT(len > 0, "empty I/O at {}", off);
    RW_ASSERT(reinterpret_cast<uintptr_t>(buf) % fs::k_block_bytes == 0, "unaligned buffer");
    RW_ASSERT(off <= _bytes && len <= _bytes - off, "I/O past the end: off={} len={} size={}", off, len, _bytes);
}

task<void> sim_device::latency() {
    uint64_t n = below(uint64_t(_f.latency_max_yields) + 1);
    if (chance_ppm(_f.long_latency_ppm))
        n = below(20 * uint64_t(_f.latency_max_yields) + 50);
    for (uint64_t i = 0; i < n; ++i) {
        auto y = io::yield();
        co_await y;
    }
}

void sim_device::store(const char* data, size_t len, uint64_t off) {
    std::memcpy(_latest.data() + off, data, len);
    for (uint64_t s = off / k_sector_bytes, e = (off + len) / k_sector_bytes; s < e; ++s) {
        _bad[s] = 0;  // a written sector is remapped by the drive
        if (!_dirty[s]) {
            _dirty[s] = 1;
            _dirty_list.push_back(uint32_t(s));
        }
    }
}

void sim_device::land(const char* data, size_t len, uint64_t off) {
    if (!_faults_on || off < _f.fault_floor || !chance_ppm(_f.misdirect_ppm)) {
        if (_on_write)
            _on_write(data, len, off);
        store(data, len, off);
        return;
    }
    // Misdirected: one block (or, sometimes, the whole write) lands elsewhere.
    _misdirected++;
    const uint64_t blk = fs::k_block_bytes;
    uint64_t nblk = len / blk;
    bool whole = nblk == 1 || below(4) == 0;
    uint64_t b = whole ? 0 : below(nblk);
    uint64_t mlen = whole ? len : blk;
    uint64_t src = off + b * blk;
    uint64_t lo = (_f.fault_floor + blk - 1) / blk, hi = (_bytes - mlen) / blk;
    uint64_t t;
    do {
        if (below(2) == 0) {
            // Near the intended place: same segment, most likely.
            int64_t d = int64_t(below(33)) - 16;
            int64_t c = int64_t(src / blk) + d;
            c = std::max<int64_t>(c, int64_t(lo));
            c = std::min<int64_t>(c, int64_t(hi));
            t = uint64_t(c) * blk;
        } else {
            t = (lo + below(hi - lo + 1)) * blk;
        }
    } while (t == src);
    // The intended place keeps what it held (reported before the observer
    // sees the write) and never gets the new data (reported after).
    if (_on_damage)
        _on_damage(src, mlen, damage_kind::misdirect_lost);
    if (_on_write)
        _on_write(data, len, off);
    if (b > 0)
        store(data, b * blk, off);
    if (src + mlen < off + len)
        store(data + (src - off) + mlen, off + len - (src + mlen), src + mlen);
    if (_on_damage) {
        _on_damage(src, mlen, damage_kind::misdirect_lost);
        _on_damage(t, mlen, damage_kind::misdirect_target);
    }
    store(data + (src - off), mlen, t);
}

void sim_device::persist() {
    for (uint32_t s : _dirty_list) {
        std::memcpy(_durable.data() + uint64_t(s) * k_sector_bytes, _latest.data() + uint64_t(s) * k_sector_bytes,
                    k_sector_bytes);
        _dirty[s] = 0;
    }
    _dirty_list.clear();
}

void sim_device::crash() {
    if (_crashed)
        return;
    _crashed = true;
    _crashes++;
    // Which unflushed sectors made it: all, none, each independently with a
    // random probability, or a prefix in write order.
    uint64_t policy = below(4);
    uint64_t p = below(1001);
    uint64_t prefix = below(_dirty_list.size() + 1);
    for (size_t i = 0; i < _dirty_list.size(); ++i) {
        uint64_t s = _dirty_list[i];
        bool keep = policy == 0 ? true : policy == 1 ? false : policy == 2 ? below(1000) < p : i < prefix;
        char* d = _durable.data() + s * k_sector_bytes;
        char* l = _latest.data() + s * k_sector_bytes;
        if (keep) {
            std::memcpy(d, l, k_sector_bytes);
            _kept_sectors++;
        } else {
            std::memcpy(l, d, k_sector_bytes);
            _dropped_sectors++;
        }
        _dirty[s] = 0;
    }
    _dirty_list.clear();
}

void sim_device::restart() {
    RW_ASSERT(_dirty_list.empty());
    _crashed = false;
    _crash_op = 0;
}

bool sim_device::unreadable(uint64_t off, size_t len) const {
    for (uint64_t s = off / k_sector_bytes, e = (off + len) / k_sector_bytes; s < e; ++s)
        if (_bad[s])
            return true;
    return false;
}

task<int> sim_device::read(void* buf, size_t len, uint64_t off) {
    check_args(buf, len, off);
    uint64_t op = ++_ops;
    if (_crashed)
        co_return -EIO;
    if (op == _crash_op) {
        crash();
        co_return -EIO;
    }
    co_await latency();
    if (_crashed)
        co_return -EIO;
    if (_faults_on && _read_faults_on && off >= _f.fault_floor) {
        if (chance_ppm(_f.read_transient_ppm)) {
            _read_errors++;
            co_return -EIO;
        }
        if (chance_ppm(_f.read_persistent_ppm)) {
            uint64_t first = off / k_sector_bytes + below(len / k_sector_bytes);
            uint64_t n = std::min<uint64_t>(1 + below(8), (off + len) / k_sector_bytes - first);
            for (uint64_t s = first; s < first + n; ++s)
                _bad[s] = 1;
            if (_on_damage)
                _on_damage(first * k_sector_bytes, n * k_sector_bytes, damage_kind::read_persistent);
        }
    }
    if (unreadable(off, len)) {
        _read_errors++;
        co_return -EIO;
    }
    std::memcpy(buf, _latest.data() + off, len);
    co_return 0;
}

task<int> sim_device::write(const void* buf, size_t len, uint64_t off) {
    check_args(buf, len, off);
    uint64_t op = ++_ops;
    if (_crashed)
        co_return -EIO;
    if (op == _crash_op && _crash_moment == crash_moment::before) {
        crash();
        co_return -EIO;
    }
    const char* p = static_cast<const char*>(buf);
    uint32_t sum = fs::crc32c(p, len);
    land(p, len, off);
    if (op == _crash_op) {  // landed in the cache, not durable: may tear
        crash();
        co_return -EIO;
    }
    co_await latency();
    // The caller owns the buffer until the write completes.
    RW_ASSERT(fs::crc32c(p, len) == sum, "write buffer changed while its write was in flight (off={})", off);
    if (_crashed)
        co_return -EIO;
    co_return 0;
}

task<int> sim_device::flush() {
    uint64_t op = ++_ops;
    if (_crashed)
        co_return -EIO;
    if (op == _crash_op && _crash_moment == crash_moment::before) {
        crash();
        co_return -EIO;
    }
    co_await latency();
    if (_crashed)
        co_return -EIO;
    persist();
    if (op == _crash_op) {  // durable, but the caller never hears so
        crash();
        co_return -EIO;
    }
    co_return 0;
}

task<int> sim_device::write_durable(const void* buf, size_t len, uint64_t off) {
    if (!_f.fua) {
        // The fdatasync path: two operations, each a crash point.
        int r = co_await fs::block_device::write_durable(buf, len, off);
        co_return r;
    }
    check_args(buf, len, off);
    uint64_t op = ++_ops;
    if (_crashed)
        co_return -EIO;
    if (op == _crash_op && _crash_moment == crash_moment::before) {
        crash();
        co_return -EIO;
    }
    const char* p = static_cast<const char*>(buf);
    uint32_t sum = fs::crc32c(p, len);
    land(p, len, off);
    // "after": half the time while the data is only in the cache (torn),
    // half the time once it is durable but not yet acknowledged.
    bool torn_point = op == _crash_op && below(2) == 0;
    if (torn_point) {
        crash();
        co_return -EIO;
    }
    co_await latency();
    RW_ASSERT(fs::crc32c(p, len) == sum, "write buffer changed while its write was in flight (off={})", off);
    if (_crashed)
        co_return -EIO;
    persist();
    if (op == _crash_op) {
        crash();
        co_return -EIO;
    }
    co_return 0;
}

}  // namespace rw::sim
