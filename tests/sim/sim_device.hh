// The simulated block device of the spool's crash tests (after
// TigerBeetle's src/testing/storage.zig). Owned by one simulation run
// (tests/sim/spool_sim.cc), used from one reactor; it outlives every spool
// shard opened on it, across simulated power losses.
//
// In memory, two layers: the durable image and a volatile write cache of
// written-but-unflushed data, kept per 512-byte sector. read() sees the
// newest written data; flush() (and write_durable()) make the cache durable.
// crash() is a power loss: the durable image becomes durable + an arbitrary,
// seeded subset of the unflushed sectors, so writes tear at sector
// granularity; from then on every operation fails with -EIO until
// restart(), which is the power coming back.
//
// Faults, each rare and drawn from the simulation's one PRNG, only at
// offsets >= fault_floor (the superblocks are exempt; they have their own
// two-copy scheme and tests):
//   - latency: an operation completes after a random number of reactor
//     yields (never wall time), so concurrent writers really overlap;
//   - misdirected write: one 4 KiB block (or the whole write) lands at a
//     different 4 KiB-aligned offset; the intended place keeps its old data;
//   - read errors: -EIO for one call (transient), or a sector range that
//     stays unreadable until it is written again (persistent).
// Every sector a fault damages is reported to the damage observer, so the
// checker knows which data may legitimately be lost (never corrupted).
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "fs/block_device.hh"

namespace rw::sim {

constexpr uint64_t k_sector_bytes = 512;

struct fault_options {
    uint64_t fault_floor = 0;              // no faults below this offset
    uint32_t misdirect_ppm = 0;            // per write
    uint32_t read_transient_ppm = 0;       // per read
    uint32_t read_persistent_ppm = 0;      // per read
    uint32_t latency_max_yields = 0;       // usual latency: 0..max yields
    uint32_t long_latency_ppm = 0;         // per op: a stall of up to 20x max
    bool fua = true;  // write_durable is one op (RWF_DSYNC/FUA); else write + flush
};

enum class damage_kind { misdirect_lost, misdirect_target, read_persistent };
const char* to_string(damage_kind k);

// Where the crash point falls within the chosen operation.
enum class crash_moment { before, after };

class sim_device final : public fs::block_device {
public:
    // Called with the write as the caller asked for it, before any fault.
    using write_observer = std::function<void(const char* data, size_t len, uint64_t off)>;
    // Called for every damaged range (sector aligned).
    using damage_observer = std::function<void(uint64_t off, uint64_t len, damage_kind k)>;

    sim_device(uint64_t bytes, std::mt19937_64* rng);
    ~sim_device() override;
    sim_device(const sim_device&) = delete;
    sim_device& operator=(const sim_device&) = delete;

    uint64_t size_bytes() const override { return _bytes; }
    const std::string& name() const override { return _name; }
    task<int> read(void* buf, size_t len, uint64_t off) override;
    task<int> write(const void* buf, size_t len, uint64_t off) override;
    task<int> flush() override;
    task<int> write_durable(const void* buf, size_t len, uint64_t off) override;

    void set_faults(const fault_options& f) { _f = f; }
    const fault_options& faults() const { return _f; }
    void enable_faults(bool on) { _faults_on = on; }
    void enable_read_faults(bool on) { _read_faults_on = on; }
    void on_write(write_observer w) { _on_write = std::move(w); }
    void on_damage(damage_observer d) { _on_damage = std::move(d); }

    // Power loss when the operation numbered `op` (see ops()) starts or
    // finishes. 0 disarms.
    void arm_crash(uint64_t op, crash_moment m) {
        _crash_op = op;
        _crash_moment = m;
    }
    // Power loss now. Idempotent.
    void crash();
    // Power back on: the volatile cache is gone, operations work again.
    void restart();
    bool crashed() const { return _crashed; }

    uint64_t ops() const { return _ops; }
    uint64_t crashes() const { return _crashes; }
    uint64_t read_errors_injected() const { return _read_errors; }
    uint64_t misdirected_writes() const { return _misdirected; }
    uint64_t torn_sectors_dropped() const { return _dropped_sectors; }
    uint64_t torn_sectors_kept() const { return _kept_sectors; }
    uint64_t dirty_sectors() const { return _dirty_list.size(); }

    // Test access to the durable image (for patching the superblock).
    std::vector<char>& durable_image() { return _durable; }
    std::vector<char>& latest_image() { return _latest; }

private:
    uint64_t below(uint64_t n) { return n ? (*_rng)() % n : 0; }
    bool chance_ppm(uint32_t ppm) { return ppm && below(1000000) < ppm; }
    task<void> latency();
    void check_args(const void* buf, size_t len, uint64_t off) const;
    void land(const char* data, size_t len, uint64_t off);  // into the cache, faults applied
    void store(const char* data, size_t len, uint64_t off);  // into the cache as is
    void persist();                                         // cache -> durable
    bool unreadable(uint64_t off, size_t len) const;

    uint64_t _bytes;
    std::string _name = "sim0";
    std::mt19937_64* _rng;
    fault_options _f;
    bool _faults_on = false;
    bool _read_faults_on = true;
    write_observer _on_write;
    damage_observer _on_damage;

    std::vector<char> _durable;           // what survives a power loss
    std::vector<char> _latest;            // durable + cache: what reads see
    std::vector<uint8_t> _dirty;          // per sector: in the cache, unflushed
    std::vector<uint32_t> _dirty_list;    // dirty sectors, oldest write first
    std::vector<uint8_t> _bad;            // per sector: persistent read error

    uint64_t _ops = 0;
    uint64_t _crash_op = 0;
    crash_moment _crash_moment = crash_moment::before;
    bool _crashed = false;
    uint64_t _crashes = 0;
    uint64_t _read_errors = 0;
    uint64_t _misdirected = 0;
    uint64_t _dropped_sectors = 0;
    uint64_t _kept_sectors = 0;
};

}  // namespace rw::sim
