// spool_sim: the spool's deterministic crash-consistency simulation
// (after TigerBeetle's VOPR). One seed is one run:
//
//   format a small simulated device (tests/sim/sim_device.hh), then for each
//   "life": open shard 0 (recovery), check what was recovered against the
//   model, run a random concurrent workload (messages begun, streamed in
//   random chunks, committed, aborted or abandoned; recipient state changes;
//   removals; read-backs), and cut the power at a random device operation.
//   The next life recovers the same device image and checks again.
//
// The checker (verify()) holds the spool to what it promised:
//   - a message whose commit() returned success is present exactly once,
//     envelope equal, body byte-exact (read back in pieces of random size);
//     a message whose remove() returned success is absent; a message whose
//     commit() was never called is absent; a commit or removal in flight at
//     the crash may have happened or not;
//   - what a recovery showed is the truth from then on: a message it did not
//     find never comes back, one it found stays until removed;
//   - a recipient's recovered state is one that was written (or the initial
//     one), and its version is never below the last acknowledged one;
//   - the recovery report's counters agree with what was recovered, and
//     nothing is quarantined unless a fault damaged something;
//   - the shard fails only when the power is gone (or when it caught the
//     device misplacing a segment header), and says full, never fails, when
//     out of space;
//   - no assertion, no hang (a watchdog counts reactor turns per life), no
//     coroutine frame left behind.
// A message whose records sat in a sector an injected fault damaged
// (misdirected write, persistent read error) is "tainted": it may be lost,
// come back, show an older state, or give way to an earlier message that
// had its id, but it is never returned with a wrong envelope or wrong body
// bytes, nor mixed with another message.
//
// Every random choice comes from one std::mt19937_64 seeded with the seed,
// and nothing reads the clock (the workload's clock is a counter):
// `spool_sim --seed N -v` replays seed N exactly; -vvv traces every
// operation and -vvvv every batch written. A failure, an assertion or a
// crash names its seed and life.
#include <CLI/CLI.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fs/crc32c.hh"
#include "fs/format.hh"
#include "fs/spool.hh"
#include "runtime/base/log.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/sync.hh"
#include "tests/sim/sim_device.hh"

namespace {

using namespace rw;
using namespace rw::fs;
using rw::sim::crash_moment;
using rw::sim::damage_kind;
using rw::sim::fault_options;
using rw::sim::sim_device;

constexpr uint64_t k_watchdog_turns = 5'000'000;  // reactor turns per life before we call it a hang
constexpr size_t k_max_body = 60 << 10;

struct cli_options {
    std::vector<uint64_t> seed_list;  // --seed: replay these
    uint64_t seeds = 1250;
    uint64_t first_seed = 1;
    uint32_t steps = 0;  // 0: random per seed
    uint32_t lives = 0;  // 0: random per seed
    int verbose = 0;
};

// Per-seed parameters, all drawn from the seed.
struct config {
    uint64_t device_bytes = 0;
    uint32_t segment_bytes = 0;
    size_t batch_bytes = 0;
    size_t chunk_bytes = 0;
    bool aligned_appends = false;  // append exactly chunk_bytes at a time
    uint32_t workers = 0;
    uint32_t lives = 0;
    uint32_t steps = 0;
    bool cleaner = true;
    bool faulty = false;
    fault_options faults;
};

// ---------------------------------------------------------------- layout

// Which message records each device sector holds, rebuilt from the writes
// the spool issues (it parses batches with fs/format.hh). Used only to turn
// an injected fault into the set of messages it may legitimately cost.
// Granularity is the batch: recovery drops a whole batch whose payload
// checksum fails unless a later batch proves it was not the tail, and a
// whole segment whose header cannot be read.
class layout {
public:
    void init(const geometry& g, uint64_t dev_bytes, std::set<uint64_t>* taint) {
        _g = g;
        _taint = taint;
        _sector.assign(dev_bytes / sim::k_sector_bytes, k_none);
        _slots.assign(g.slots_per_shard, {});
    }

    int verbose = 0;

    void on_write(const char* d, size_t len, uint64_t off) {
        if (!_taint || off < _g.data_offset)
            return;
        if (verbose >= 4)
            describe(d, len, off);
        set(off, len, k_none);
        uint32_t slot = uint32_t((off - _g.data_offset) / _g.segment_bytes);
        uint64_t within = (off - _g.data_offset) % _g.segment_bytes;
        RW_ASSERT(slot < _slots.size());
        RW_ASSERT(within + len <= _g.segment_bytes, "a spool write crosses a segment: off={} len={}", off, len);
        size_t pos = 0;
        if (within == 0) {
            segment_header sh;
            std::memcpy(&sh, d, sizeof sh);
            if (sh.magic == k_segment_magic) {
                // A header rewritten in place (a newer tail) keeps the
                // segment and its batches; a new seg_seq starts afresh.
                if (sh.seg_seq != _slots[slot].seg_seq) {
                    // The spool writes a new segment's first batch before
                    // its header: keep the batches of this seg_seq.
                    auto& v = _slots[slot].batches;
                    v.erase(std::remove_if(v.begin(), v.end(),
                                           [&](int32_t b) { return _batches[size_t(b)].seg_seq != sh.seg_seq; }),
                            v.end());
                }
                _slots[slot].seg_seq = sh.seg_seq;
                _slots[slot].headless = false;
                set(off, k_block_bytes, k_header);
            }
            pos = k_block_bytes;
        }
        if (pos + sizeof(batch_header) > len)
            return;
        batch_header bh;
        std::memcpy(&bh, d + pos, sizeof bh);
        if (bh.magic != k_batch_magic || bh.length < sizeof bh || pos + bh.length > len)
            return;
        batch b;
        b.slot = slot;
        b.seg_seq = bh.seg_seq;
        for (size_t q = pos + sizeof bh; q + sizeof(record_header) <= pos + bh.length;) {
            record_header rh;
            std::memcpy(&rh, d + q, sizeof rh);
            if (rh.length < sizeof rh || q + rh.length > pos + bh.length)
                break;
            b.ids.push_back(rh.msg_id);
            q += pad8(rh.length);
        }
        std::sort(b.ids.begin(), b.ids.end());
        b.ids.erase(std::unique(b.ids.begin(), b.ids.end()), b.ids.end());
        int32_t idx = int32_t(_batches.size());
        if (_slots[slot].headless)
            taint(b.ids);
        _batches.push_back(std::move(b));
        _slots[slot].batches.push_back(idx);
        set(off + pos, std::min<uint64_t>(pad_block(bh.length), len - pos), idx);
    }

    void on_damage(uint64_t off, uint64_t len, damage_kind k) {
        if (!_taint || off + len <= _g.data_offset)
            return;
        uint64_t end = off + len;
        uint64_t lo = off, hi = end;
        if (k == damage_kind::read_persistent) {
            // Recovery zeroes the 4 KiB blocks it cannot read.
            lo = off / k_block_bytes * k_block_bytes;
            hi = pad_block(end);
        }
        for (uint64_t s = lo / sim::k_sector_bytes; s < hi / sim::k_sector_bytes; ++s) {
            int32_t v = _sector[s];
            if (v >= 0)
                taint(_batches[size_t(v)].ids);
        }
        // A damaged segment header loses the whole segment, including what
        // the spool writes into it later (it does not know).
        for (uint64_t p = off / k_block_bytes * k_block_bytes; p < end; p += k_block_bytes) {
            if (p < _g.data_offset)
                continue;
            uint64_t base = slot_base(p);
            if (p == base) {
                slot_info& si = _slots[slot_of(p)];
                for (int32_t b : si.batches)
                    taint(_batches[size_t(b)].ids);
                si.headless = true;
            }
        }
        if (k == damage_kind::misdirect_target)
            set(off, len, k_none);  // now holds a stray copy of other data
    }

private:
    void describe(const char* d, size_t len, uint64_t off) const {
        uint32_t slot = uint32_t((off - _g.data_offset) / _g.segment_bytes);
        uint64_t within = (off - _g.data_offset) % _g.segment_bytes;
        std::string out = fmt::format("  write slot={} at={} len={}", slot, within, len);
        size_t pos = 0;
        if (within == 0) {
            segment_header sh;
            std::memcpy(&sh, d, sizeof sh);
            if (sh.magic == k_segment_magic)
                out += fmt::format(" [segment seq={} tail={} first_batch={}]", sh.seg_seq, sh.tail_seq,
                                   sh.first_batch_seq);
            pos = k_block_bytes;
        }
        batch_header bh{};
        if (pos + sizeof bh <= len)
            std::memcpy(&bh, d + pos, sizeof bh);
        if (bh.magic == k_batch_magic && pos + bh.length <= len) {
            out += fmt::format(" batch seq={} seg={} len={}:", bh.batch_seq, bh.seg_seq, bh.length);
            for (size_t q = pos + sizeof bh; q + sizeof(record_header) <= pos + bh.length;) {
                record_header rh;
                std::memcpy(&rh, d + q, sizeof rh);
                if (rh.length < sizeof rh)
                    break;
                static const char* names[] = {"?", "begin", "chunk", "commit", "abort", "state", "delete"};
                out += fmt::format(" {}{}:{:x}", rh.type < 7 ? names[rh.type] : "?",
                                   rh.flags & k_begin_relocated ? "(R)" : "", rh.msg_id);
                q += pad8(rh.length);
            }
        }
        fmt::print("{}\n", out);
    }

    static constexpr int32_t k_none = -1, k_header = -2;
    struct batch {
        uint32_t slot = 0;
        uint64_t seg_seq = 0;
        std::vector<uint64_t> ids;
    };
    struct slot_info {
        std::vector<int32_t> batches;
        uint64_t seg_seq = 0;
        bool headless = false;
    };
    uint32_t slot_of(uint64_t off) const { return uint32_t((off - _g.data_offset) / _g.segment_bytes); }
    uint64_t slot_base(uint64_t off) const {
        return _g.data_offset + uint64_t(slot_of(off)) * _g.segment_bytes;
    }
    void set(uint64_t off, uint64_t len, int32_t v) {
        for (uint64_t s = off / sim::k_sector_bytes; s < (off + len) / sim::k_sector_bytes; ++s)
            _sector[s] = v;
    }
    void taint(const std::vector<uint64_t>& ids) { _taint->insert(ids.begin(), ids.end()); }

    geometry _g;
    std::set<uint64_t>* _taint = nullptr;
    std::vector<int32_t> _sector;
    std::vector<batch> _batches;
    std::vector<slot_info> _slots;
};

// ---------------------------------------------------------------- model

enum class phase { writing, committing, acked, gone };

struct rcpt_model {
    uint32_t acked_version = 0;       // last set_rcpt_state that returned success
    std::vector<rcpt_state> written;  // states handed to the spool that may still show up
    std::vector<rcpt_state> ever;     // every state ever handed to the spool (tainted messages)
};

struct msg_model {
    envelope env;
    std::string body;
    std::string delivered;  // read_message's view: added header fields, the body minus its omitted ranges
    phase ph = phase::writing;
    bool removing = false;  // remove() called, outcome not known
    bool removed = false;   // remove() returned success
    std::vector<rcpt_model> rcpts;
    // Earlier messages that had this id (ids of messages a recovery did not
    // find are handed out again). A fault can bring one of them back.
    std::vector<msg_model> past;
};

struct totals {
    uint64_t seeds = 0, crash_points = 0, crashes_in_open = 0, acked = 0, aborted = 0, removed = 0,
             states = 0, reads = 0, verified_msgs = 0, relocated = 0, segments_opened = 0, batches = 0,
             torn_batches = 0, incomplete = 0, quarantined = 0, tainted = 0, misdirected = 0,
             read_errors = 0, dropped_sectors = 0, kept_sectors = 0, ops = 0;
};

struct sim_run {
    uint64_t seed = 0;
    config cfg;
    const cli_options* opt = nullptr;
    std::mt19937_64 rng;
    std::unique_ptr<sim_device> dev;
    geometry g;
    layout lay;
    std::map<uint64_t, msg_model> msgs;
    std::set<uint64_t> tainted;
    bool damaged = false;  // some fault damaged data in this run
    int64_t clock = 1'700'000'000;  // the simulated clock: whatever the workload says
    uint32_t life = 0;
    int32_t steps_left = 0;
    bool life_done = false;
    shard* cur_shard = nullptr;
    std::vector<std::string> doing;  // per worker, for the hang report
    totals* tot = nullptr;

    uint64_t below(uint64_t n) { return n ? rng() % n : 0; }
    bool one_in(uint64_t n) { return below(n) == 0; }
};

char g_abort_note[256];

void on_fatal_signal(int sig) {
    ssize_t n = ::write(2, g_abort_note, std::strlen(g_abort_note));
    (void)n;
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

void set_abort_note(uint64_t seed, uint32_t life) {
    std::snprintf(g_abort_note, sizeof g_abort_note,
                  "\nspool_sim: died in seed=%llu life=%u; replay with: spool_sim --seed %llu -v\n",
                  (unsigned long long)seed, life, (unsigned long long)seed);
}

template <typename... A>
[[noreturn]] void fail(sim_run& s, fmt::format_string<A...> f, A&&... a) {
    std::string m = fmt::format(f, std::forward<A>(a)...);
    std::fflush(stdout);
    std::fprintf(stderr, "spool_sim: FAILED seed=%llu life=%u: %s\n  replay with: spool_sim --seed %llu -v\n",
                 (unsigned long long)s.seed, s.life, m.c_str(), (unsigned long long)s.seed);
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(1);
}

template <typename... A>
void trace(sim_run& s, fmt::format_string<A...> f, A&&... a) {
    if (s.opt->verbose >= 3)
        fmt::print("  [ops={} clock={}] {}\n", s.dev->ops(), s.clock, fmt::format(f, std::forward<A>(a)...));
}

std::string random_bytes(sim_run& s, size_t n) {
    std::string b(n, '\0');
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = s.rng();
        std::memcpy(b.data() + i, &v, std::min<size_t>(8, n - i));
    }
    return b;
}

std::string random_text(sim_run& s, size_t n) {
    std::string b(n, '\0');
    for (auto& c : b)
        c = char('a' + s.below(26));
    return b;
}

envelope random_envelope(sim_run& s) {
    envelope e;
    e.mail_from = s.one_in(10) ? std::string() : "s" + std::to_string(s.below(1000)) + "@a.test";
    size_t n = s.one_in(8) ? 1 + s.below(12) : 1 + s.below(3);
    for (size_t i = 0; i < n; ++i)
        e.rcpts.push_back("r" + std::to_string(i) + "x" + std::to_string(s.below(100000)) + "@b.test");
    // Envelopes of very different sizes, so begin records of many sizes
    // meet a batch with little room left.
    if (!s.one_in(3))
        e.params = random_text(s, s.below(s.one_in(4) ? 3000 : 200));
    e.received_unix = s.clock;
    return e;
}

// A shard may fail only when the power is gone or when it caught the
// device misplacing a segment header (an injected fault).
bool excused(sim_run& s, const spool_error& e) {
    if (e.code != spool_errc::failed)
        return false;
    if (s.dev->crashed())
        return true;
    return e.detail.find("did not read back") != std::string::npos &&
           (s.dev->misdirected_writes() > 0 || s.dev->read_errors_injected() > 0);
}

bool is_final(rcpt_status st) { return st == rcpt_status::delivered || st == rcpt_status::bounced; }

std::vector<uint64_t> pick_list(sim_run& s, bool allow_removing) {
    std::vector<uint64_t> v;
    for (auto& [id, m] : s.msgs)
        if (m.ph == phase::acked && !m.removed && (allow_removing || !m.removing))
            v.push_back(id);
    return v;
}

// ---------------------------------------------------------------- workload

task<void> new_message(sim_run* s, shard* sh) {
    envelope env = random_envelope(*s);
    auto w = sh->begin(env);
    if (!w) {
        if (w.error().code == spool_errc::full)
            co_return;
        if (excused(*s, w.error()))
            co_return;
        fail(*s, "begin() failed without cause: {} ({})", to_string(w.error().code), w.error().detail);
    }
    message_writer mw = std::move(w.value());
    const uint64_t id = mw.id();
    std::vector<msg_model> past;
    auto old = s->msgs.find(id);
    if (old != s->msgs.end()) {
        if (old->second.ph != phase::gone)
            fail(*s, "begin() handed out id {:x}, which is still in use", id);
        past = std::move(old->second.past);
        old->second.past.clear();
        past.push_back(std::move(old->second));
        s->msgs.erase(old);
    }
    msg_model& m = s->msgs[id];
    m.past = std::move(past);
    trace(*s, "msg {:x} begin", id);
    m.env = env;
    m.rcpts.resize(env.rcpts.size());
    for (auto& r : m.rcpts) {
        r.written.push_back(rcpt_state{});
        r.ever.push_back(rcpt_state{});
    }
    size_t size;
    uint64_t pick = s->below(20);
    if (pick == 0)
        size = 0;
    else if (pick < 4)
        size = s->below(100);
    else if (pick < 14)
        size = s->below(8192);
    else
        size = s->below(k_max_body + 1);
    uint64_t fate = s->below(10);  // 0: abort, 1: abandon, else commit
    size_t stop_at = fate <= 1 ? s->below(size + 1) : size;
    size_t done = 0;
    while (done < stop_at) {
        // Pieces of every size, many tiny: a small record must not overtake
        // a larger one of the same message waiting for room in the batch.
        size_t n = s->cfg.aligned_appends ? s->cfg.chunk_bytes
                   : s->one_in(4)         ? 1 + s->below(64)
                                          : 1 + s->below(s->one_in(3) ? 16384 : 3000);
        n = std::min(n, stop_at - done);
        std::string piece = random_bytes(*s, n);
        m.body += piece;
        std::span<const char> sp(piece.data(), piece.size());
        auto t = mw.append(sp);
        auto r = co_await std::move(t);
        if (!r) {
            if (r.error().code == spool_errc::full)
                co_return;  // the writer aborted it
            if (excused(*s, r.error()))
                co_return;
            fail(*s, "append() to msg {:x} failed without cause: {} ({})", id, to_string(r.error().code),
                 r.error().detail);
        }
        done += n;
        if (s->dev->crashed())
            co_return;
        if (s->one_in(4)) {
            auto y = io::yield();
            co_await y;
        }
    }
    if (fate == 0) {
        mw.abort();
        s->tot->aborted++;
        co_return;
    }
    if (fate == 1) {
        s->tot->aborted++;
        co_return;  // abandoned: the destructor aborts
    }
    m.ph = phase::committing;
    trace(*s, "msg {:x} commit ({} bytes)", id, m.body.size());
    // One in three messages gets header fields added and ranges omitted,
    // which the cleaner must carry along and recovery must restore.
    added_headers add;
    if (s->one_in(3)) {
        add.prefix = "X-Sim: " + random_bytes(*s, s->below(s->one_in(8) ? 9000 : 300)) + "\r\n";
        for (uint64_t at = 0; !m.body.empty() && add.omit.size() < 4;) {
            uint64_t off = at + s->below(m.body.size() / 2 + 1);
            if (off >= m.body.size())
                break;
            uint32_t len = uint32_t(std::min<uint64_t>(1 + s->below(200), m.body.size() - off));
            add.omit.push_back({off, len});
            at = off + len + 1;
        }
    }
    m.delivered = add.prefix;
    {
        uint64_t at = 0;
        for (const auto& o : add.omit) {
            m.delivered.append(m.body, at, o.offset - at);
            at = o.offset + o.length;
        }
        m.delivered.append(m.body, at);
    }
    auto t = add.empty() ? mw.commit() : mw.commit(add);
    auto r = co_await std::move(t);
    if (!r) {
        if (excused(*s, r.error()) || r.error().code == spool_errc::full)
            co_return;  // in flight at the crash (or refused): may or may not be there
        fail(*s, "commit() of msg {:x} failed without cause: {} ({})", id, to_string(r.error().code),
             r.error().detail);
    }
    if (r.value() != id)
        fail(*s, "commit() returned id {:x} for msg {:x}", r.value(), id);
    m.ph = phase::acked;
    s->tot->acked++;
    trace(*s, "msg {:x} committed ({} bytes, {} rcpts)", id, m.body.size(), m.rcpts.size());
}

task<void> change_state(sim_run* s, shard* sh) {
    auto ids = pick_list(*s, true);
    if (ids.empty())
        co_return;
    const uint64_t id = ids[s->below(ids.size())];
    msg_model& m = s->msgs[id];
    const uint32_t ri = uint32_t(s->below(m.rcpts.size()));
    auto v = sh->find(id);
    if (!v) {
        if (m.removing)
            co_return;
        fail(*s, "acknowledged msg {:x} is missing from the live index", id);
    }
    const rcpt_state cur = v->rcpts[ri];
    rcpt_state st;
    uint64_t k = s->below(4);
    if (k < 2) {
        st.status = rcpt_status::deferred;
        st.attempts = cur.attempts + 1;
        st.next_attempt_unix = s->clock + int64_t(s->below(3600));
        st.last_reply = "451 4.7.1 try again later #" + std::to_string(st.attempts);
    } else if (k == 2) {
        st.status = rcpt_status::delivered;
        st.attempts = cur.attempts + 1;
        st.last_reply = "250 2.0.0 ok";
    } else {
        st.status = rcpt_status::bounced;
        st.attempts = cur.attempts + 1;
        st.last_reply = "550 5.1.1 no such user " + random_text(*s, s->below(40));
    }
    const bool final = is_final(cur.status);
    rcpt_state expect = st;
    expect.version = cur.version + 1;
    if (!final) {
        m.rcpts[ri].written.push_back(expect);
        m.rcpts[ri].ever.push_back(expect);
    }
    auto t = sh->set_rcpt_state(id, ri, st);
    auto r = co_await std::move(t);
    trace(*s, "msg {:x} rcpt {} state {} v{} -> {}", id, ri, int(st.status), expect.version,
          r ? "ok" : r.error().detail);
    if (r) {
        if (final)
            fail(*s, "set_rcpt_state() changed finished rcpt {} of msg {:x}", ri, id);
        msg_model& m2 = s->msgs[id];
        m2.rcpts[ri].acked_version = std::max(m2.rcpts[ri].acked_version, expect.version);
        s->tot->states++;
        co_return;
    }
    if (final && r.error().code == spool_errc::bad_state)
        co_return;
    if (r.error().code == spool_errc::full)
        co_return;
    if (excused(*s, r.error()))
        co_return;
    if (r.error().code == spool_errc::not_found && s->msgs[id].removing)
        co_return;
    fail(*s, "set_rcpt_state() on msg {:x} rcpt {} failed without cause: {} ({})", id, ri,
         to_string(r.error().code), r.error().detail);
}

task<void> remove_one(sim_run* s, shard* sh) {
    auto ids = pick_list(*s, false);
    if (ids.empty())
        co_return;
    const uint64_t id = ids[s->below(ids.size())];
    s->msgs[id].removing = true;
    auto t = sh->remove(id);
    auto r = co_await std::move(t);
    msg_model& m = s->msgs[id];
    trace(*s, "msg {:x} remove -> {}", id, r ? "ok" : r.error().detail);
    if (r) {
        m.removed = true;
        m.removing = false;
        s->tot->removed++;
        if (sh->find(id))
            fail(*s, "msg {:x} still live after remove() succeeded", id);
        co_return;
    }
    if (r.error().code == spool_errc::full) {
        s->msgs[id].removing = false;  // not written: still there
        co_return;
    }
    if (excused(*s, r.error()))
        co_return;  // unknown: may or may not be gone
    fail(*s, "remove() of msg {:x} failed without cause: {} ({})", id, to_string(r.error().code), r.error().detail);
}

// Reads the whole body in pieces of random sizes and compares it. Returns
// false if a read failed (the caller decides whether that is allowed);
// wrong bytes are always a failure.
task<bool> read_compare(sim_run* s, shard* sh, uint64_t id, const char* what) {
    // The body as received, or the message as delivered.
    const bool whole = s->one_in(2);
    auto model = [s, id, whole]() -> const std::string& {
        return whole ? s->msgs[id].delivered : s->msgs[id].body;
    };
    const size_t size = model().size();
    std::vector<char> buf(1 + s->below(s->one_in(2) ? 3000 : 20000));
    uint64_t off = 0;
    for (;;) {
        std::span<char> sp(buf.data(), buf.size());
        auto t = whole ? sh->read_message(id, off, sp) : sh->read_body(id, off, sp);
        auto r = co_await std::move(t);
        if (!r) {
            if (s->opt->verbose >= 2)
                fmt::print("  {}: read_body msg={:x} off={} failed: {} ({})\n", what, id, off,
                           to_string(r.error().code), r.error().detail);
            co_return false;
        }
        size_t n = r.value();
        if (n == 0)
            break;
        const std::string& want2 = model();
        if (off + n > want2.size() || std::memcmp(buf.data(), want2.data() + off, n) != 0)
            fail(*s, "{}: read_body returned wrong bytes for msg {:x} at offset {} (+{}, body {} bytes){}", what, id,
                 off, n, want2.size(), s->tainted.count(id) ? " [tainted by an injected fault]" : "");
        off += n;
    }
    if (off != size)
        fail(*s, "{}: read_body of msg {:x} ended at {} of {} bytes", what, id, off, size);
    co_return true;
}

task<void> read_check(sim_run* s, shard* sh) {
    auto ids = pick_list(*s, true);
    if (ids.empty())
        co_return;
    const uint64_t id = ids[s->below(ids.size())];
    {
        msg_model& m = s->msgs[id];
        auto v = sh->find(id);
        if (!v) {
            if (m.removing)
                co_return;
            fail(*s, "acknowledged msg {:x} is missing from the live index", id);
        }
        if (v->env != m.env)
            fail(*s, "msg {:x}: envelope differs in memory", id);
        if (v->body_bytes != m.body.size())
            fail(*s, "msg {:x}: body_bytes {} != {}", id, v->body_bytes, m.body.size());
        if (v->message_bytes != m.delivered.size())
            fail(*s, "msg {:x}: message_bytes {} != {}", id, v->message_bytes, m.delivered.size());
    }
    uint64_t errs0 = s->dev->read_errors_injected();
    auto t = read_compare(s, sh, id, "read-back");
    bool ok = co_await std::move(t);
    s->tot->reads++;
    if (ok)
        co_return;
    const msg_model& m = s->msgs[id];
    if (s->dev->crashed() || m.removing || m.removed || s->tainted.count(id) ||
        s->dev->read_errors_injected() != errs0)
        co_return;
    fail(*s, "read_body of healthy acknowledged msg {:x} failed (no fault injected)", id);
}

task<void> worker(sim_run* s, shard* sh, size_t wi) {
    while (s->steps_left > 0 && !s->dev->crashed() && sh->health() != spool_health::failed) {
        s->steps_left--;
        s->clock += 1 + int64_t(s->below(30));
        uint64_t k = s->below(100);
        // Keep the live set small so the ring wraps and the cleaner works.
        size_t live = 0;
        for (auto& [id, m] : s->msgs)
            live += m.ph == phase::acked && !m.removed;
        if (live > 40 && k < 40)
            k = 60;
        s->doing[wi] = fmt::format("op {} at ops={}", k, s->dev->ops());
        if (k < 40) {
            auto t = new_message(s, sh);
            co_await std::move(t);
        } else if (k < 58) {
            auto t = change_state(s, sh);
            co_await std::move(t);
        } else if (k < 78) {
            auto t = remove_one(s, sh);
            co_await std::move(t);
        } else if (k < 92) {
            auto t = read_check(s, sh);
            co_await std::move(t);
        } else {
            for (uint64_t i = 0, n = 1 + s->below(20); i < n; ++i) {
                auto y = io::yield();
                co_await y;
            }
        }
    }
}

task<void> run_worker(sim_run* s, shard* sh, gate* g, size_t wi) {
    gate::holder h(*g);
    auto t = worker(s, sh, wi);
    co_await std::move(t);
    s->doing[wi] = "done";
}

task<void> watchdog(sim_run* s) {
    uint64_t turns = 0;
    while (!s->life_done) {
        if (++turns > k_watchdog_turns) {
            std::string w;
            for (size_t i = 0; i < s->doing.size(); ++i)
                w += fmt::format(" w{}: {};", i, s->doing[i]);
            std::string st;
            if (s->cur_shard) {
                auto x = s->cur_shard->get_stats();
                st = fmt::format(" shard: batches={} free={} tail={} head={} health={}", x.batches, x.free_slots,
                                 x.tail_seq, x.head_seq, int(s->cur_shard->health()));
            }
            fail(*s, "hang: life did not finish within {} reactor turns (steps_left={} crashed={} ops={}){}{}",
                 k_watchdog_turns, s->steps_left, s->dev->crashed(), s->dev->ops(), w, st);
        }
        auto y = io::yield();
        co_await y;
    }
}

// ---------------------------------------------------------------- checker

task<void> verify(sim_run* s, shard* sh, uint64_t read_errors_in_open) {
    const recovery_report& rep = sh->recovered();
    std::vector<uint64_t> live = sh->live_ids();
    std::sort(live.begin(), live.end());
    std::set<uint64_t> live_set(live.begin(), live.end());
    if (live_set.size() != live.size())
        fail(*s, "live_ids() lists a message twice");
    if (rep.messages != live.size())
        fail(*s, "recovery report says {} messages, live index has {}", rep.messages, live.size());
    if (sh->live_count() != live.size())
        fail(*s, "live_count() {} != live_ids() {}", sh->live_count(), live.size());
    if (rep.torn_batches > 1)
        fail(*s, "recovery dropped {} torn batches; only the tail can tear", rep.torn_batches);
    if (rep.segments > s->g.slots_per_shard)
        fail(*s, "recovery replayed {} segments of {}", rep.segments, s->g.slots_per_shard);
    if (!s->damaged && read_errors_in_open == 0 && (rep.quarantined_records || rep.quarantined_messages))
        fail(*s, "recovery quarantined records={} messages={} though no fault damaged anything",
             rep.quarantined_records, rep.quarantined_messages);
    uint64_t bytes = 0, pending = 0;
    for (uint64_t id : live) {
        auto it = s->msgs.find(id);
        if (it == s->msgs.end())
            fail(*s, "recovered msg {:x}, which was never begun", id);
        msg_model& m = it->second;
        const bool tainted = s->tainted.count(id) > 0;
        if (m.ph == phase::writing)
            fail(*s, "recovered msg {:x}, whose commit() was never called", id);
        if (m.ph == phase::gone && !tainted)
            fail(*s, "msg {:x} came back after an earlier recovery had not found it", id);
        if (m.removed && !tainted)
            fail(*s, "msg {:x} came back after remove() succeeded", id);
        auto v = sh->find(id);
        if (!v)
            fail(*s, "live msg {:x} not found", id);
        if ((v->env != m.env || v->body_bytes != m.body.size()) && tainted) {
            // After a fault, an earlier message with this id (never
            // acknowledged, or lost and its id handed out again) may come
            // back in place of the current one: whole, never mixed.
            auto p = std::find_if(m.past.begin(), m.past.end(), [&](const msg_model& x) {
                return x.env == v->env && x.body.size() == v->body_bytes;
            });
            if (p != m.past.end()) {
                trace(*s, "msg {:x}: an earlier message with this id came back", id);
                std::vector<msg_model> past = std::move(m.past);
                msg_model back = std::move(*p);
                m = std::move(back);
                m.past = std::move(past);
                m.ph = phase::acked;
            }
        }
        if (v->env != m.env)
            fail(*s, "msg {:x}: recovered envelope differs{}", id, tainted ? " [tainted]" : "");
        if (v->body_bytes != m.body.size())
            fail(*s, "msg {:x}: recovered body is {} bytes, was {}{}", id, v->body_bytes, m.body.size(),
                 tainted ? " [tainted]" : "");
        if (v->message_bytes != m.delivered.size())
            fail(*s, "msg {:x}: recovered message is {} bytes as delivered, was {}{}", id, v->message_bytes,
                 m.delivered.size(), tainted ? " [tainted]" : "");
        if (v->rcpts.size() != m.env.rcpts.size())
            fail(*s, "msg {:x}: {} recipient states for {} recipients", id, v->rcpts.size(), m.env.rcpts.size());
        bytes += v->body_bytes;
        for (size_t i = 0; i < v->rcpts.size(); ++i) {
            const rcpt_state& st = v->rcpts[i];
            const rcpt_model& rm = m.rcpts[i];
            // A stale record salvaged after a fault may bring back a state
            // that a crash had already made unreachable.
            const auto& cand = tainted ? rm.ever : rm.written;
            if (std::find(cand.begin(), cand.end(), st) == cand.end())
                fail(*s, "msg {:x} rcpt {}: recovered state (status {} version {} reply '{}') was never written{}", id,
                     i, int(st.status), st.version, st.last_reply, tainted ? " [tainted]" : "");
            if (st.version < rm.acked_version && !tainted)
                fail(*s, "msg {:x} rcpt {}: state went back from version {} to {}", id, i, rm.acked_version,
                     st.version);
            if (st.status == rcpt_status::pending || st.status == rcpt_status::deferred)
                pending++;
        }
    }
    if (rep.body_bytes != bytes)
        fail(*s, "recovery report says {} body bytes, live messages hold {}", rep.body_bytes, bytes);
    if (rep.recipients_pending != pending)
        fail(*s, "recovery report says {} pending recipients, live messages have {}", rep.recipients_pending,
             pending);
    for (auto& [id, m] : s->msgs)
        if (m.ph == phase::acked && !m.removed && !m.removing && !live_set.count(id) && !s->tainted.count(id))
            fail(*s, "acknowledged msg {:x} ({} bytes) was lost", id, m.body.size());
    // Bodies, byte for byte. No transient read errors here: they are the
    // workload's business; persistent ones still fail their sectors.
    s->dev->enable_read_faults(false);
    for (uint64_t id : live) {
        auto t = read_compare(s, sh, id, "recovery check");
        bool ok = co_await std::move(t);
        s->tot->verified_msgs++;
        if (!ok && !s->tainted.count(id))
            fail(*s, "recovered msg {:x} cannot be read back (not tainted by any fault)", id);
    }
    s->dev->enable_read_faults(true);
    // What was recovered is the truth from now on.
    for (auto& [id, m] : s->msgs) {
        m.removing = false;
        if (live_set.count(id)) {
            auto v = sh->find(id);
            m.ph = phase::acked;
            m.removed = false;
            for (size_t i = 0; i < m.rcpts.size(); ++i) {
                // States newer than the recovered one never became durable:
                // they must never show up. Older ones stay possible for a
                // message a fault may have cost records.
                uint32_t ver = v->rcpts[i].version;
                auto& w = m.rcpts[i].written;
                w.erase(std::remove_if(w.begin(), w.end(), [ver](const rcpt_state& x) { return x.version > ver; }),
                        w.end());
                m.rcpts[i].acked_version = ver;
            }
        } else {
            m.ph = phase::gone;
        }
    }
}

// ---------------------------------------------------------------- lives

shard_options shard_opts(const sim_run& s) {
    shard_options o;
    o.index = 0;
    o.batch_bytes = s.cfg.batch_bytes;
    o.chunk_bytes = s.cfg.chunk_bytes;
    o.cleaner = s.cfg.cleaner;
    return o;
}

// One power cycle: recover, check, work, lose power. With `final`, only
// recover and check.
task<void> life(sim_run* s, bool final) {
    sim_device& dev = *s->dev;
    spawn(watchdog(s));
    const bool crash_in_open = !final && s->one_in(25);
    if (crash_in_open)
        dev.arm_crash(dev.ops() + 1 + s->below(s->g.slots_per_shard + 8), crash_moment::before);
    uint64_t errs0 = dev.read_errors_injected();
    auto gt = read_superblock(dev);
    auto gr = co_await std::move(gt);
    if (!gr) {
        if (!dev.crashed())
            fail(*s, "read_superblock: {}", gr.error());
        s->tot->crashes_in_open++;
        s->life_done = true;
        co_return;
    }
    auto ot = shard::open(dev, gr.value(), shard_opts(*s));
    auto opened = co_await std::move(ot);
    if (!opened) {
        if (!dev.crashed())
            fail(*s, "shard::open: {}", opened.error());
        s->tot->crashes_in_open++;
        s->life_done = true;
        co_return;
    }
    std::unique_ptr<shard> sh = std::move(opened.value());
    s->cur_shard = sh.get();
    s->doing.assign(s->cfg.workers, "not started");
    trace(*s, "life {}: opened", s->life);
    const recovery_report rep = sh->recovered();
    s->tot->torn_batches += rep.torn_batches;
    s->tot->incomplete += rep.incomplete;
    s->tot->quarantined += rep.quarantined_records;
    if (dev.crashed()) {
        // Power went during recovery: what it found is not checked (its
        // reads failed); the next life recovers the same image again.
        s->tot->crashes_in_open++;
        auto ct = sh->close();
        co_await std::move(ct);
        s->life_done = true;
        co_return;
    }
    dev.arm_crash(0, crash_moment::before);
    auto vt = verify(s, sh.get(), dev.read_errors_injected() - errs0);
    co_await std::move(vt);
    trace(*s, "life {}: verified", s->life);
    if (s->opt->verbose)
        fmt::print("seed={} life={} recovered messages={} pending={} bytes={} segments={} batches={} incomplete={} "
                   "torn={} quarantined={}/{} tainted={}\n",
                   s->seed, s->life, rep.messages, rep.recipients_pending, rep.body_bytes, rep.segments, rep.batches,
                   rep.incomplete, rep.torn_batches, rep.quarantined_records, rep.quarantined_messages,
                   s->tainted.size());
    if (final) {
        auto ct = sh->close();
        co_await std::move(ct);
        s->life_done = true;
        co_return;
    }
    // The crash point: some device operation of this life's workload.
    s->steps_left = int32_t(s->cfg.steps);
    uint64_t span = uint64_t(s->cfg.steps) * 3 + 4;
    uint64_t at = dev.ops() + 1 + s->below(span);
    crash_moment cm = s->one_in(2) ? crash_moment::before : crash_moment::after;
    dev.arm_crash(at, cm);
    gate workers;
    s->cur_shard = sh.get();
    for (uint32_t i = 0; i < s->cfg.workers; ++i)
        spawn(run_worker(s, sh.get(), &workers, i));
    auto wt = workers.wait_idle();
    co_await std::move(wt);
    trace(*s, "life {}: workers done", s->life);
    if (!dev.crashed()) {
        if (sh->health() == spool_health::failed) {
            auto b = sh->begin(envelope{});
            if (b || !excused(*s, b.error()))
                fail(*s, "the shard failed though the device never failed a write: {}",
                     b ? std::string("?") : b.error().detail);
        }
        // Let the writer and the cleaner run a little, then cut the power.
        for (uint64_t i = 0, n = s->below(50); i < n && !dev.crashed(); ++i) {
            auto y = io::yield();
            co_await y;
        }
        dev.crash();
    }
    auto st = sh->get_stats();
    s->tot->relocated += st.relocated;
    s->tot->segments_opened += st.segments_opened;
    s->tot->batches += st.batches;
    if (s->opt->verbose)
        fmt::print("seed={} life={} crash at op {} ({}) ops={} batches={} segments_opened={} relocated={} free={} "
                   "tail={} head={}\n",
                   s->seed, s->life, at, cm == crash_moment::before ? "before" : "after", dev.ops(), st.batches,
                   st.segments_opened, st.relocated, st.free_slots, st.tail_seq, st.head_seq);
    // The device is dead, so close() cannot write anything: it only stops
    // the writer and the cleaner so that no coroutine outlives the shard.
    trace(*s, "life {}: closing", s->life);
    auto ct = sh->close();
    co_await std::move(ct);
    s->cur_shard = nullptr;
    sh.reset();
    s->life_done = true;
}

task<geometry> format_device(sim_run* s) {
    auto ft = format(*s->dev, {.shards = 1, .segment_bytes = s->cfg.segment_bytes});
    auto r = co_await std::move(ft);
    if (!r)
        fail(*s, "format: {}", r.error());
    co_return r.value();
}

config make_config(sim_run& s, const cli_options& o) {
    config c;
    c.segment_bytes = s.one_in(2) ? (64 << 10) : (128 << 10);
    // A quarter of the seeds on a tiny ring, where the spool fills up and
    // the cleaner has to move live messages.
    uint32_t slots = s.one_in(4) ? uint32_t(6 + s.below(6)) : uint32_t(12 + s.below(37));
    c.device_bytes = k_data_offset + uint64_t(slots) * c.segment_bytes;
    c.batch_bytes = (16 << 10) + s.below(17) * 1024;
    if (s.one_in(4))
        c.chunk_bytes = k_block_bytes - sizeof(record_header) - 8;  // a chunk record is exactly one block
    else
        c.chunk_bytes = (2 << 10) + s.below(6 << 10);
    c.aligned_appends = s.one_in(4);
    c.workers = uint32_t(2 + s.below(5));
    c.lives = o.lives ? o.lives : uint32_t(6 + s.below(5));
    c.steps = o.steps ? o.steps : uint32_t(10 + s.below(40));
    c.cleaner = !s.one_in(10);
    c.faulty = s.one_in(2);
    c.faults.fault_floor = k_data_offset;
    c.faults.latency_max_yields = s.one_in(4) ? 0 : uint32_t(1 + s.below(30));
    c.faults.long_latency_ppm = 5000;
    c.faults.fua = s.one_in(2);
    if (c.faulty) {
        c.faults.misdirect_ppm = 3000;
        c.faults.read_transient_ppm = 5000;
        c.faults.read_persistent_ppm = 1000;
    }
    return c;
}

void run_seed(uint64_t seed, const cli_options& o, totals& tot) {
    set_abort_note(seed, 0);
    sim_run s;
    s.seed = seed;
    s.opt = &o;
    s.tot = &tot;
    s.rng.seed(seed);
    s.cfg = make_config(s, o);
    s.dev = std::make_unique<sim_device>(s.cfg.device_bytes, &s.rng);
    s.dev->set_faults(s.cfg.faults);
    if (o.verbose)
        fmt::print("seed={} device={} segment={} batch={} chunk={}{} workers={} lives={} steps={} cleaner={} "
                   "faults={} latency<={} fua={}\n",
                   seed, s.cfg.device_bytes, s.cfg.segment_bytes, s.cfg.batch_bytes, s.cfg.chunk_bytes,
                   s.cfg.aligned_appends ? " (aligned appends)" : "", s.cfg.workers, s.cfg.lives, s.cfg.steps,
                   s.cfg.cleaner, s.cfg.faulty, s.cfg.faults.latency_max_yields, s.cfg.faults.fua);
    reactor::options ro;
    ro.sq_entries = 64;
    s.g = run_local(format_device(&s), ro);
    // format() draws the uuid from std::random_device and stamps the wall
    // clock: replace both so a seed replays bit for bit.
    for (int copy = 0; copy < 2; ++copy) {
        for (auto* img : {&s.dev->durable_image(), &s.dev->latest_image()}) {
            superblock sb;
            std::memcpy(&sb, img->data() + copy * k_block_bytes, sizeof sb);
            for (int i = 0; i < 16; ++i)
                sb.uuid[i] = uint8_t((seed * 0x9E3779B97F4A7C15ull) >> ((i % 8) * 8)) ^ uint8_t(i);
            std::memcpy(&sb.spool_id, sb.uuid, 8);
            sb.formatted_unix = 0;
            sb.crc = 0;
            sb.crc = crc32c(&sb, sizeof sb);
            std::memcpy(img->data() + copy * k_block_bytes, &sb, sizeof sb);
        }
    }
    std::memcpy(&s.g.spool_id, s.dev->durable_image().data() + offsetof(superblock, spool_id), 8);
    s.lay.init(s.g, s.cfg.device_bytes, &s.tainted);
    s.lay.verbose = o.verbose;
    s.dev->on_write([&s](const char* d, size_t len, uint64_t off) { s.lay.on_write(d, len, off); });
    s.dev->on_damage([&s](uint64_t off, uint64_t len, damage_kind k) {
        s.damaged = true;
        if (s.opt->verbose >= 2)
            fmt::print("  fault: {} off={} len={}\n", to_string(k), off, len);
        s.lay.on_damage(off, len, k);
    });
    s.dev->enable_faults(s.cfg.faulty);
    for (uint32_t l = 0; l <= s.cfg.lives; ++l) {
        s.life = l;
        set_abort_note(seed, l);
        s.life_done = false;
        s.dev->restart();
        int64_t frames0 = live_task_frames();
        run_local(life(&s, l == s.cfg.lives), ro);
        if (live_task_frames() != frames0)
            fail(s, "{} coroutine frame(s) never finished (a waiter was never woken)", live_task_frames() - frames0);
        if (l < s.cfg.lives)
            tot.crash_points++;
    }
    tot.seeds++;
    tot.tainted += s.tainted.size();
    tot.misdirected += s.dev->misdirected_writes();
    tot.read_errors += s.dev->read_errors_injected();
    tot.dropped_sectors += s.dev->torn_sectors_dropped();
    tot.kept_sectors += s.dev->torn_sectors_kept();
    tot.ops += s.dev->ops();
    if (o.verbose)
        fmt::print("seed={} ok digest={:08x}\n", seed,
                   crc32c(s.dev->durable_image().data(), s.dev->durable_image().size()));
}

}  // namespace

int main(int argc, char** argv) {
    cli_options o;
    CLI::App app{"spool_sim: deterministic crash-consistency simulation of the spool"};
    app.add_option("--seed", o.seed_list, "replay these seeds only (repeat or separate with commas)")
        ->delimiter(',');
    app.add_option("--seeds", o.seeds, "how many seeds to run, from --first-seed")->capture_default_str();
    app.add_option("--first-seed", o.first_seed, "first seed")->capture_default_str();
    app.add_option("--steps", o.steps, "workload operations per life (default: random per seed, 10-49)");
    app.add_option("--lives", o.lives, "crashes per seed (default: random per seed, 6-10)");
    app.add_flag("-v,--verbose", o.verbose,
                 "per-life lines; -vv: faults, failed reads, spool logs; -vvv: every operation; -vvvv: every batch");
    CLI11_PARSE(app, argc, argv);

    set_log_level(o.verbose >= 2 ? log_level::info : log_level::off);
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    ::signal(SIGABRT, on_fatal_signal);
    ::signal(SIGSEGV, on_fatal_signal);
    ::signal(SIGBUS, on_fatal_signal);
    ::signal(SIGFPE, on_fatal_signal);

    totals tot;
    auto t0 = std::chrono::steady_clock::now();  // reporting only
    std::vector<uint64_t> seeds = o.seed_list;
    if (seeds.empty())
        for (uint64_t seed = o.first_seed; seed < o.first_seed + o.seeds; ++seed)
            seeds.push_back(seed);
    const uint64_t first = seeds.empty() ? 0 : seeds.front();
    for (uint64_t seed : seeds)
        run_seed(seed, o, tot);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("spool_sim: ok seeds={} (first {}) crash_points={} (in recovery {}) device_ops={} acked={} "
               "aborted={} removed={} state_changes={} read_backs={} verified={} batches={} segments_opened={} "
               "relocated={} torn_batches={} incomplete={} quarantined={} misdirected={} read_errors={} "
               "tainted_msgs={} torn_sectors kept={} dropped={} took={:.1f}s\n",
               tot.seeds, first, tot.crash_points, tot.crashes_in_open, tot.ops, tot.acked, tot.aborted, tot.removed,
               tot.states, tot.reads, tot.verified_msgs, tot.batches, tot.segments_opened, tot.relocated,
               tot.torn_batches, tot.incomplete, tot.quarantined, tot.misdirected, tot.read_errors, tot.tainted,
               tot.kept_sectors, tot.dropped_sectors, secs);
    return 0;
}
