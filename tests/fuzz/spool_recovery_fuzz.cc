// Fuzz target: arbitrary bytes as the data area of a spool shard, recovered.
// The superblock is fixed (one shard, eight 64 KiB segments) so the fuzzer
// spends its time in segment headers, batches and records. Recovery must
// never crash, hang or accept garbage: every message it returns must read
// back whole with its checksums intact.
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/spool_recovery as a ctest, and
// `spool_recovery_fuzz --write-seeds DIR` regenerates the seeds.
#include <cstdint>
#include <cstring>
#include <vector>

#include "fs/crc32c.hh"
#include "fs/format.hh"
#include "fs/spool.hh"
#include "runtime/base/log.hh"
#include "tests/fuzz/mem_device.hh"

using namespace rw;

namespace {

constexpr uint32_t k_seg = 64 << 10;
constexpr uint32_t k_slots = 8;
constexpr size_t k_data = size_t(k_seg) * k_slots;

void write_superblock(std::vector<char>& img) {
    fs::superblock sb{};
    sb.magic = fs::k_superblock_magic;
    sb.version = fs::k_format_version;
    for (int i = 0; i < 16; ++i)
        sb.uuid[i] = uint8_t(0xA0 + i);
    std::memcpy(&sb.spool_id, sb.uuid, 8);
    sb.device_bytes = img.size();
    sb.data_offset = fs::k_data_offset;
    sb.block_bytes = fs::k_block_bytes;
    sb.segment_bytes = k_seg;
    sb.shard_count = 1;
    sb.slots_per_shard = k_slots;
    sb.crc = 0;
    sb.crc = fs::crc32c(&sb, sizeof sb);
    std::memcpy(img.data(), &sb, sizeof sb);
    std::memcpy(img.data() + 4096, &sb, sizeof sb);
}

task<void> recover_and_check(fuzz::mem_device* dev) {
    auto g = co_await fs::read_superblock(*dev);
    if (!g)
        __builtin_trap();  // the fixed superblock is valid
    fs::shard_options o;
    o.cleaner = false;
    o.batch_bytes = 16 << 10;
    o.chunk_bytes = 4 << 10;
    auto sh = co_await fs::shard::open(*dev, g.value(), o);
    if (!sh)
        co_return;  // a clear refusal is fine
    fs::shard* s = sh.value().get();
    std::vector<char> buf;
    for (uint64_t id : s->live_ids()) {
        auto v = s->find(id);
        if (!v)
            __builtin_trap();
        if (v->body_bytes > k_data)
            __builtin_trap();  // cannot hold more than the device
        buf.assign(v->body_bytes + 1, 0);
        auto r = co_await s->read_body(id, 0, std::span<char>(buf.data(), buf.size()));
        // The replay verified every chunk's CRC and the commit's body CRC:
        // reading back must give exactly the recorded length.
        if (!r || r.value() != v->body_bytes)
            __builtin_trap();
    }
    co_await s->close();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    rw::set_log_level(rw::log_level::error);  // a log line per input would dominate
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::mem_device dev(fs::k_data_offset + k_data);
    auto& img = dev.image();
    write_superblock(img);
    std::memcpy(img.data() + fs::k_data_offset, data, std::min(size, k_data));
    run_local(recover_and_check(&dev));
    return 0;
}

// Builds a valid spool image with a few messages, state changes, a delete
// and a torn tail, and returns its data area (the seed format).
std::vector<char> make_seed(int variant) {
    fuzz::mem_device dev(fs::k_data_offset + k_data);
    write_superblock(dev.image());
    run_local([](fuzz::mem_device* d, int var) -> task<void> {
        auto g = co_await fs::read_superblock(*d);
        fs::shard_options o;
        o.cleaner = false;
        o.batch_bytes = 16 << 10;
        o.chunk_bytes = 4 << 10;
        auto sh = co_await fs::shard::open(*d, g.value(), o);
        fs::shard* s = sh.value().get();
        for (int i = 0; i < 6 + var * 4; ++i) {
            fs::envelope env{"a" + std::to_string(i) + "@seed.test", {"x@seed.test", "y@seed.test"}, "ENVID=1", i};
            auto w = s->begin(std::move(env));
            std::string body(size_t(100 + i * 700), char('a' + i));
            auto a = co_await w.value().append(std::span<const char>(body.data(), body.size()));
            (void)a;
            auto id = co_await w.value().commit();
            if (i % 3 == 1) {
                fs::rcpt_state st{fs::rcpt_status::deferred, 1, 100, "451 4.7.1 try later", 0};
                auto r = co_await s->set_rcpt_state(id.value(), 0, st);
                (void)r;
            }
            if (i % 4 == 2) {
                auto r = co_await s->remove(id.value());
                (void)r;
            }
        }
        co_await s->close();
    }(&dev, variant));
    std::vector<char> out(dev.image().begin() + fs::k_data_offset, dev.image().end());
    size_t end = out.size();
    while (end > 0 && out[end - 1] == 0)
        --end;
    out.resize(end);
    if (variant == 1 && out.size() > 3000)
        out.resize(out.size() - 3000);  // a torn tail
    return out;
}
