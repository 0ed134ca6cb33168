// Formatting a spool device and reading its superblocks.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

#include "fs/crc32c.hh"
#include "fs/spool.hh"

namespace rw::fs {

std::string geometry::uuid_string() const {
    return fmt::format("{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                       uuid[0], uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7], uuid[8], uuid[9],
                       uuid[10], uuid[11], uuid[12], uuid[13], uuid[14], uuid[15]);
}

std::string_view to_string(spool_errc c) {
    switch (c) {
    case spool_errc::full: return "spool full";
    case spool_errc::failed: return "spool failed";
    case spool_errc::not_found: return "no such message";
    case spool_errc::bad_state: return "bad state";
    case spool_errc::corrupt: return "corrupt record";
    case spool_errc::too_large: return "too large";
    }
    return "?";
}

namespace {

uint32_t sb_crc(const superblock& sb) {
    superblock c = sb;
    c.crc = 0;
    return crc32c(&c, sizeof c);
}

enum class sb_verdict { ok, foreign, newer, damaged };

sb_verdict check(const superblock& sb) {
    if (sb.magic != k_superblock_magic)
        return sb_verdict::foreign;
    if (sb_crc(sb) != sb.crc)
        return sb_verdict::damaged;
    if (sb.version > k_format_version)
        return sb_verdict::newer;
    if (sb.version < k_oldest_format_version)
        return sb_verdict::damaged;
    if (sb.block_bytes != k_block_bytes || sb.segment_bytes == 0 || sb.segment_bytes % k_block_bytes != 0 ||
        sb.shard_count == 0 || sb.slots_per_shard == 0 || sb.data_offset % k_block_bytes != 0)
        return sb_verdict::damaged;
    return sb_verdict::ok;
}

geometry to_geometry(const superblock& sb) {
    geometry g;
    std::memcpy(g.uuid, sb.uuid, 16);
    g.spool_id = sb.spool_id;
    g.device_bytes = sb.device_bytes;
    g.data_offset = sb.data_offset;
    g.segment_bytes = sb.segment_bytes;
    g.shard_count = sb.shard_count;
    g.slots_per_shard = sb.slots_per_shard;
    g.version = sb.version;
    return g;
}

}  // namespace

task<result<geometry, std::string>> read_superblock(block_device& dev) {
    const std::string& name = dev.name();
    if (dev.size_bytes() < k_data_offset + 2 * k_block_bytes)
        co_return unexpected(fmt::format("{}: too small to hold a spool ({} bytes)", name, dev.size_bytes()));
    disk::aligned_buffer buf(2 * k_block_bytes);
    int r = co_await dev.read(buf.data(), buf.size(), 0);
    if (r < 0)
        co_return unexpected(fmt::format("{}: cannot read the superblock: {}", name, std::strerror(-r)));
    superblock a, b;
    std::memcpy(&a, buf.data(), sizeof a);
    std::memcpy(&b, buf.data() + k_block_bytes, sizeof b);
    sb_verdict va = check(a), vb = check(b);
    const superblock* use = nullptr;
    if (va == sb_verdict::ok && vb == sb_verdict::ok)
        use = &a;  // both good: they are written together and identical
    else if (va == sb_verdict::ok)
        use = &a;
    else if (vb == sb_verdict::ok)
        use = &b;
    if (!use) {
        if (va == sb_verdict::newer || vb == sb_verdict::newer) {
            uint32_t v = va == sb_verdict::newer ? a.version : b.version;
            co_return unexpected(fmt::format(
                "{}: the spool has format version {}, newer than this ringwayd understands ({}); run a newer "
                "ringwayd, nothing was changed",
                name, v, k_format_version));
        }
        if (va == sb_verdict::foreign && vb == sb_verdict::foreign)
            co_return unexpected(fmt::format(
                "{}: not a Ringway spool (no spool superblock); format it with: ringwayd --format-spool {} "
                "(this erases the device)",
                name, name));
        co_return unexpected(fmt::format(
            "{}: both spool superblocks are damaged (checksum or geometry); refusing to guess. Restore the "
            "device or reformat it with ringwayd --format-spool {} --force (this erases every queued message)",
            name, name));
    }
    geometry g = to_geometry(*use);
    if (va == sb_verdict::ok && vb == sb_verdict::ok)
        g.version = std::min(a.version, b.version);  // an upgrade cut short leaves them apart
    uint64_t need = g.data_offset + uint64_t(g.shard_count) * g.slots_per_shard * g.segment_bytes;
    if (need > dev.size_bytes())
        co_return unexpected(fmt::format("{}: the spool needs {} bytes but the device has only {} (was it shrunk?)",
                                         name, need, dev.size_bytes()));
    co_return g;
}

task<result<void, std::string>> upgrade_superblock(block_device& dev, geometry& g) {
    const std::string& name = dev.name();
    if (g.version >= k_format_version)
        co_return result<void, std::string>{};
    disk::aligned_buffer buf(2 * k_block_bytes);
    int r = co_await dev.read(buf.data(), buf.size(), 0);
    if (r < 0)
        co_return unexpected(fmt::format("{}: cannot read the superblock: {}", name, std::strerror(-r)));
    // One copy at a time, each made durable before the other is touched.
    for (size_t copy = 0; copy < 2; ++copy) {
        superblock sb;
        std::memcpy(&sb, buf.data() + copy * k_block_bytes, sizeof sb);
        if (check(sb) != sb_verdict::ok || sb.spool_id != g.spool_id || sb.version >= k_format_version)
            continue;  // damaged (the other copy carries the spool) or already stamped
        sb.version = k_format_version;
        sb.crc = sb_crc(sb);
        disk::aligned_buffer one(k_block_bytes);
        std::memcpy(one.data(), buf.data() + copy * k_block_bytes, k_block_bytes);
        std::memcpy(one.data(), &sb, sizeof sb);
        r = co_await dev.write(one.data(), k_block_bytes, copy * k_block_bytes);
        if (r == 0)
            r = co_await dev.flush();
        if (r < 0)
            co_return unexpected(fmt::format("{}: cannot write the superblock: {}", name, std::strerror(-r)));
    }
    g.version = k_format_version;
    co_return result<void, std::string>{};
}

constexpr uint32_t k_min_auto_segment = 256 << 10;

task<result<geometry, std::string>> format(block_device& dev, format_options o) {
    const std::string& name = dev.name();
    if (o.segment_bytes < 16 * k_block_bytes || o.segment_bytes % k_block_bytes != 0)
        co_return unexpected(fmt::format("{}: segment size must be a multiple of 4096 and at least 64 KiB", name));
    if (o.shards == 0 || o.shards > 256)
        co_return unexpected(fmt::format("{}: shard count must be 1..256", name));
    if (!o.force) {
        auto existing = co_await read_superblock(dev);
        if (existing)
            co_return unexpected(fmt::format(
                "{}: already holds a spool (uuid {}); refusing to overwrite queued mail without --force", name,
                existing.value().uuid_string()));
    }
    uint64_t usable = dev.size_bytes() > k_data_offset ? dev.size_bytes() - k_data_offset : 0;
    uint64_t slots = usable / o.segment_bytes / o.shards;
    // A small device gets smaller segments, so each shard still has a ring
    // of at least 16 (the cleaner and the reserve need room to work).
    while (slots < 16 && o.segment_bytes >= 2 * k_min_auto_segment) {
        o.segment_bytes /= 2;
        slots = usable / o.segment_bytes / o.shards;
    }
    if (slots < 4)
        co_return unexpected(fmt::format("{}: too small: {} bytes give {} segments of {} bytes per shard, need 4",
                                         name, dev.size_bytes(), slots, o.segment_bytes));
    superblock sb{};
    sb.magic = k_superblock_magic;
    sb.version = k_format_version;
    std::random_device rd;
    for (auto& x : sb.uuid)
        x = uint8_t(rd());
    sb.uuid[6] = uint8_t((sb.uuid[6] & 0x0f) | 0x40);
    sb.uuid[8] = uint8_t((sb.uuid[8] & 0x3f) | 0x80);
    std::memcpy(&sb.spool_id, sb.uuid, 8);
    if (sb.spool_id == 0)
        sb.spool_id = 1;
    sb.device_bytes = dev.size_bytes();
    sb.data_offset = k_data_offset;
    sb.block_bytes = k_block_bytes;
    sb.segment_bytes = o.segment_bytes;
    sb.shard_count = o.shards;
    sb.slots_per_shard = uint32_t(std::min<uint64_t>(slots, 1u << 30));
    sb.formatted_unix = uint64_t(std::chrono::duration_cast<std::chrono::seconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
    sb.crc = sb_crc(sb);
    geometry g = to_geometry(sb);

    // Invalidate every segment header of an earlier spool. The spool id
    // already tells ours apart; zeroing makes the device look clean too.
    // Zero the whole data area in 8 MiB writes: on a file this also turns
    // fallocated extents into written ones, so later O_DIRECT writes need no
    // metadata update in fdatasync.
    disk::aligned_buffer zero(8 << 20);
    uint64_t end = g.data_offset + uint64_t(g.shard_count) * g.slots_per_shard * g.segment_bytes;
    for (uint64_t off = g.data_offset; off < end;) {
        size_t n = size_t(std::min<uint64_t>(zero.size(), end - off));
        int r = co_await dev.write(zero.data(), n, off);
        if (r < 0)
            co_return unexpected(fmt::format("{}: write failed while formatting: {}", name, std::strerror(-r)));
        off += n;
    }
    disk::aligned_buffer buf(2 * k_block_bytes);
    std::memcpy(buf.data(), &sb, sizeof sb);
    std::memcpy(buf.data() + k_block_bytes, &sb, sizeof sb);
    int r = co_await dev.write(buf.data(), buf.size(), 0);
    if (r == 0)
        r = co_await dev.flush();
    if (r < 0)
        co_return unexpected(fmt::format("{}: cannot write the superblock: {}", name, std::strerror(-r)));
    co_return g;
}

}  // namespace rw::fs
