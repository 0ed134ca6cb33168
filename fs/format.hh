// The spool's on-disk format (version 2). fs/FORMAT.md explains each field
// and the invariants; this header is the byte layout, little-endian, every
// struct a fixed size checked by static_assert.
//
//   [0, 4K)        superblock copy A
//   [4K, 8K)       superblock copy B
//   [1M, ...)      segments: shard s, slot i at data_offset + (s*slots + i)*segment_bytes
//
// A segment starts with a 4 KiB segment header, then 4 KiB-aligned write
// batches, each a batch header followed by records, padded to 4 KiB.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rw::fs {

constexpr uint32_t k_format_version = 2;
// Version 1 lacks msg_headers; a version 1 spool is read as it is and
// stamped version 2 when a ringwayd that writes them opens it.
constexpr uint32_t k_oldest_format_version = 1;
constexpr size_t k_block_bytes = 4096;
constexpr uint64_t k_data_offset = 1 << 20;
constexpr uint64_t k_superblock_magic = 0x314c4f4f50535752ull;  // "RWSPOOL1"
constexpr uint64_t k_segment_magic = 0x31544e454d475352ull;     // "RSGMENT1"
constexpr uint64_t k_batch_magic = 0x3148435441425752ull;       // "RWBATCH1"

struct superblock {
    uint64_t magic;
    uint32_t version;
    uint32_t crc;  // CRC32C of the whole 4 KiB block with this field zero
    uint8_t uuid[16];
    uint64_t device_bytes;   // size when formatted
    uint64_t data_offset;    // first segment
    uint32_t block_bytes;    // 4096
    uint32_t segment_bytes;  // multiple of 4096
    uint32_t shard_count;
    uint32_t slots_per_shard;
    uint64_t formatted_unix;
    uint64_t spool_id;  // first 8 bytes of uuid, stamped in every segment and batch
    uint8_t reserved[4096 - 80];
};
static_assert(sizeof(superblock) == 4096);

struct segment_header {
    uint64_t magic;
    uint64_t spool_id;
    uint32_t shard;
    uint32_t slot;
    uint64_t seg_seq;          // per shard, +1 for every segment opened
    uint64_t tail_seq;         // oldest seg_seq holding live data when opened
    uint64_t first_batch_seq;  // batch_seq of the first batch in this segment
    uint32_t reserved0;
    uint32_t crc;  // CRC32C of this struct with crc zero
};
static_assert(sizeof(segment_header) == 56);

struct batch_header {
    uint64_t magic;
    uint64_t spool_id;
    uint64_t seg_seq;
    uint64_t batch_seq;  // per shard, contiguous across segments
    uint32_t length;     // header + records, bytes, before padding
    uint32_t records;
    uint32_t payload_crc;  // CRC32C of the records (bytes [64, length))
    uint32_t header_crc;   // CRC32C of this header with header_crc zero
    uint64_t reserved[2];
};
static_assert(sizeof(batch_header) == 64);

enum class record_type : uint16_t {
    msg_begin = 1,   // envelope; starts a message (or a relocated copy)
    msg_chunk = 2,   // a piece of the body at body offset
    msg_commit = 3,  // the message is complete: length and body CRC
    msg_abort = 4,   // the message was abandoned before commit
    rcpt_state = 5,  // one recipient's delivery state
    msg_delete = 6,  // the message is finished and may be forgotten
    msg_headers = 7,  // (version 2) what delivery adds to and omits from the body
};

// Every record: header then body, total padded to 8 bytes.
struct record_header {
    uint16_t type;
    uint16_t flags;
    uint32_t length;  // header + body, unpadded
    uint64_t msg_id;
    uint32_t crc;  // CRC32C of header (crc zero) and body
    uint32_t reserved;
};
static_assert(sizeof(record_header) == 24);

constexpr uint16_t k_begin_relocated = 1;  // msg_begin flag: a cleaner's copy

inline constexpr size_t pad8(size_t n) { return (n + 7) & ~size_t(7); }
inline constexpr uint64_t pad_block(uint64_t n) { return (n + k_block_bytes - 1) / k_block_bytes * k_block_bytes; }

}  // namespace rw::fs
