// What the parts of a spool shard share (shard.cc, shard_recovery.cc,
// shard_writer.cc, shard_cleaner.cc): record and header checksums and the
// retrying read of recovery. Not for use outside fs/.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fs/block_device.hh"
#include "fs/crc32c.hh"
#include "fs/records.hh"
#include "runtime/reactor/task.hh"

namespace rw::fs::detail {

constexpr size_t k_hdr = sizeof(batch_header);

inline uint32_t record_crc(const record_header& h, const char* body, size_t body_len) {
    record_header c = h;
    c.crc = 0;
    uint32_t crc = crc32c(&c, sizeof c);
    return crc32c(body, body_len, crc);
}

inline uint32_t segment_crc(const segment_header& h) {
    segment_header c = h;
    c.crc = 0;
    return crc32c(&c, sizeof c);
}

inline uint32_t batch_header_crc(const batch_header& h) {
    batch_header c = h;
    c.header_crc = 0;
    return crc32c(&c, sizeof c);
}

// Recovery retries failed reads: a transient read error must not cost
// acknowledged mail. Found by tests/sim (spool_sim --seed 5): one failed
// segment-header read left a whole segment out of the replay, and its slot
// then counted as free and was overwritten.
task<int> read_retrying(block_device& dev, void* buf, size_t len, uint64_t off);

}  // namespace rw::fs::detail
