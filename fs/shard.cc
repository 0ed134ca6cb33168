// A spool shard: replay on open, the group-commit writer, reads, and the
// cleaner. Owned by one reactor; nothing here takes a lock.
#include <algorithm>
#include <cstring>

#include "fs/crc32c.hh"
#include "fs/records.hh"
#include "fs/spool.hh"
#include "runtime/base/log.hh"

namespace rw::fs {

namespace {
const logger lg{"spool"};

constexpr size_t k_hdr = sizeof(batch_header);

uint32_t record_crc(const record_header& h, const char* body, size_t body_len) {
    record_header c = h;
    c.crc = 0;
    uint32_t crc = crc32c(&c, sizeof c);
    return crc32c(body, body_len, crc);
}

uint32_t segment_crc(const segment_header& h) {
    segment_header c = h;
    c.crc = 0;
    return crc32c(&c, sizeof c);
}

uint32_t batch_header_crc(const batch_header& h) {
    batch_header c = h;
    c.header_crc = 0;
    return crc32c(&c, sizeof c);
}

// Recovery retries failed reads: a transient read error must not cost
// acknowledged mail. Found by tests/sim (spool_sim --seed 5): one failed
// segment-header read left a whole segment out of the replay, and its slot
// then counted as free and was overwritten.
constexpr int k_recovery_read_tries = 4;
task<int> read_retrying(block_device& dev, void* buf, size_t len, uint64_t off) {
    int r = -EIO;
    for (int i = 0; i < k_recovery_read_tries && r < 0; ++i) {
        auto op = dev.read(buf, len, off);
        r = co_await std::move(op);
    }
    co_return r;
}
}  // namespace

// ---------------------------------------------------------------- writer API

message_writer::message_writer(message_writer&& o) noexcept : _s(o._s), _id(o._id), _done(o._done) { o._done = true; }

message_writer& message_writer::operator=(message_writer&& o) noexcept {
    if (this != &o) {
        abort();
        _s = o._s;
        _id = o._id;
        _done = o._done;
        o._done = true;
    }
    return *this;
}

message_writer::~message_writer() { abort(); }

task<result<void, spool_error>> message_writer::append(std::span<const char> data) {
    if (_done)
        co_return unexpected(spool_error{spool_errc::bad_state, "message already finished"});
    auto r = co_await _s->append_chunk(_id, data);
    if (!r)
        abort();
    co_return r;
}

task<result<uint64_t, spool_error>> message_writer::commit() {
    if (_done)
        co_return unexpected(spool_error{spool_errc::bad_state, "message already finished"});
    _done = true;
    co_return co_await _s->commit_message(_id);
}

void message_writer::abort() noexcept {
    if (_done)
        return;
    _done = true;
    _s->abort_message(_id);
}

// ---------------------------------------------------------------- open

task<result<std::unique_ptr<shard>, std::string>> shard::open(block_device& dev, geometry g, shard_options o) {
    if (o.index >= g.shard_count)
        co_return unexpected(fmt::format("{}: shard {} does not exist (the spool has {})", dev.name(), o.index,
                                         g.shard_count));
    if (o.batch_bytes + 2 * k_block_bytes > g.segment_bytes / 2)
        o.batch_bytes = g.segment_bytes / 2 - 2 * k_block_bytes;
    if (o.chunk_bytes + 256 > o.batch_bytes / 2)
        o.chunk_bytes = o.batch_bytes / 2 - 256;
    std::unique_ptr<shard> s(new shard());
    s->_dev = &dev;
    s->_g = g;
    s->_opt = o;
    s->_slot_seq.assign(g.slots_per_shard, 0);
    size_t cap = k_block_bytes + pad_block(k_hdr + o.batch_bytes);
    s->_open_buf = disk::aligned_buffer(cap);
    s->_flight_buf = disk::aligned_buffer(cap);
    auto r = co_await s->recover();
    if (!r)
        co_return unexpected(r.error());
    s->_open_fill = 0;
    spawn(s->writer_loop());
    if (o.cleaner) {
        s->_cleaner_running = true;
        spawn(s->cleaner_loop());
    }
    co_return std::move(s);
}

shard::~shard() {
    // The writer and cleaner coroutines point into this object.
    RW_ASSERT(_writer_done.is_set(), "shard {} destroyed while its writer runs; await close() first", _opt.index);
    RW_ASSERT(!_cleaner_running || _cleaner_done.is_set(), "shard {} destroyed while its cleaner runs", _opt.index);
}

// ---------------------------------------------------------------- recovery

void shard::seg_ref(uint64_t seg, uint64_t id, int delta) {
    if (delta < 0) {
        auto it = _seg_refs.find(seg);
        const size_t gone = it == _seg_refs.end() ? 0 : it->second.erase(id);
        RW_ASSERT(gone == 1, "segment reference underflow seg={} msg={:x}", seg, id);
        if (it->second.empty())
            _seg_refs.erase(it);
    } else {
        const bool added = _seg_refs[seg].insert(id).second;
        RW_ASSERT(added, "segment reference taken twice seg={} msg={:x}", seg, id);
    }
}

namespace {
// Replay state of one message copy being rebuilt.
struct replay_copy {
    uint32_t crc = 0;
};
}  // namespace

void shard::apply_record(const record_header& h, const char* body, uint64_t dev_off, uint64_t seg_seq, bool& bad) {
    size_t blen = h.length - sizeof(record_header);
    uint64_t counter = h.msg_id & ((uint64_t(1) << 56) - 1);
    if ((h.msg_id >> 56) == _opt.index && counter >= _next_counter)
        _next_counter = counter + 1;
    auto it = _msgs.find(h.msg_id);
    switch (record_type(h.type)) {
    case record_type::msg_begin: {
        bool reloc = h.flags & k_begin_relocated;
        envelope env;
        std::vector<rcpt_state> states;
        if (!rec::decode_begin(body, blen, reloc, env, states)) {
            bad = true;
            return;
        }
        if (reloc && it != _msgs.end() && it->second.committed) {
            auto c = std::make_unique<copy>();
            c->begin_seg = seg_seq;
            it->second.relocating = std::move(c);
            for (size_t i = 0; i < states.size() && i < it->second.rcpts.size(); ++i)
                if (states[i].version > it->second.rcpts[i].version)
                    it->second.rcpts[i] = states[i];
            return;
        }
        if (it != _msgs.end()) {
            if (it->second.committed)
                seg_ref(it->second.cur.begin_seg, it->first, -1);
            _msgs.erase(it);
        }
        entry e;
        e.env = std::move(env);
        e.rcpts = std::move(states);
        e.cur.begin_seg = seg_seq;
        _msgs.emplace(h.msg_id, std::move(e));
        return;
    }
    case record_type::msg_chunk: {
        if (it == _msgs.end())
            return;  // a message finished before the replay window
        copy* c = it->second.relocating ? it->second.relocating.get() : (it->second.committed ? nullptr : &it->second.cur);
        if (!c)
            return;
        uint64_t off;
        if (blen < 8) {
            bad = true;
            return;
        }
        std::memcpy(&off, body, 8);
        if (off != c->body_len) {
            bad = true;  // chunks are written in order: a gap is corruption
            return;
        }
        chunk_loc l;
        l.dev_off = dev_off;
        l.body_off = off;
        l.data_len = uint32_t(blen - 8);
        c->chunks.push_back(l);
        c->body_crc = crc32c(body + 8, blen - 8, c->body_crc);
        c->body_len += blen - 8;
        return;
    }
    case record_type::msg_commit: {
        uint64_t len;
        uint32_t crc;
        if (!rec::decode_commit(body, blen, len, crc)) {
            bad = true;
            return;
        }
        if (it == _msgs.end())
            return;
        entry& e = it->second;
        copy* c = e.relocating ? e.relocating.get() : (e.committed ? nullptr : &e.cur);
        if (!c)
            return;
        if (c->body_len != len || c->body_crc != crc) {
            // Some chunk was lost: the message cannot be trusted.
            _report.quarantined_messages++;
            if (e.relocating) {
                e.relocating.reset();  // keep the older, intact copy
            } else {
                _msgs.erase(it);
            }
            return;
        }
        if (e.relocating) {
            seg_ref(e.cur.begin_seg, it->first, -1);
            e.cur = std::move(*e.relocating);
            e.relocating.reset();
        }
        e.committed = true;
        seg_ref(e.cur.begin_seg, it->first, +1);
        return;
    }
    case record_type::msg_abort: {
        if (it == _msgs.end())
            return;
        if (it->second.relocating)
            it->second.relocating.reset();
        else if (!it->second.committed)
            _msgs.erase(it);
        return;
    }
    case record_type::rcpt_state: {
        uint32_t idx;
        rcpt_state st;
        if (!rec::decode_rcpt_state(body, blen, idx, st)) {
            bad = true;
            return;
        }
        if (it == _msgs.end() || idx >= it->second.rcpts.size())
            return;
        if (st.version > it->second.rcpts[idx].version)
            it->second.rcpts[idx] = std::move(st);
        return;
    }
    case record_type::msg_delete: {
        if (it == _msgs.end())
            return;
        if (it->second.committed)
            seg_ref(it->second.cur.begin_seg, it->first, -1);
        _msgs.erase(it);
        return;
    }
    }
    bad = true;  // unknown type
}

task<result<void, std::string>> shard::recover() {
    auto t0 = std::chrono::steady_clock::now();
    const uint32_t slots = _g.slots_per_shard;
    const uint64_t seg_bytes = _g.segment_bytes;
    // 1. Every segment header of this shard.
    struct seg_info {
        uint32_t slot;
        segment_header h;
    };
    std::vector<seg_info> valid;
    disk::aligned_buffer hb(k_block_bytes);
    // Slots whose header block is unreadable or damaged (neither a valid
    // header nor the zeros format() left) may hold a segment newer than any
    // we can see, with batches and message ids we cannot see either.
    uint64_t suspect = 0;
    for (uint32_t slot = 0; slot < slots; ++slot) {
        auto hdr_read = read_retrying(*_dev, hb.data(), k_block_bytes, _g.slot_offset(_opt.index, slot));
        int r = co_await std::move(hdr_read);
        if (r < 0) {
            lg.warn("shard={} slot={} header unreadable: {}", _opt.index, slot, std::strerror(-r));
            _report.quarantined_records++;
            suspect++;
            continue;
        }
        segment_header h;
        std::memcpy(&h, hb.data(), sizeof h);
        if (h.magic != k_segment_magic || h.spool_id != _g.spool_id || h.shard != _opt.index || h.slot != slot ||
            segment_crc(h) != h.crc || h.seg_seq == 0 || h.tail_seq > h.seg_seq) {
            if (std::any_of(hb.data(), hb.data() + k_block_bytes, [](char c) { return c != 0; }))
                suspect++;
            continue;
        }
        _slot_seq[slot] = h.seg_seq;
        valid.push_back({slot, h});
    }
    if (suspect > 0) {
        // Never reuse a seg_seq or a message id such a slot may hold: the
        // stale batches of a lost segment 5 were replayed into a new
        // segment 5 written in the same slot, and a lost message's begin
        // record replaced a new message that had reused its id (a wrong
        // envelope and body under an acknowledged id: spool_sim --seed
        // 1668). Each segment newer than the newest readable one is in a
        // suspect slot, and a segment holds at most segment_bytes / 48
        // msg_begin records.
        lg.warn("shard={} {} segment header(s) unreadable or damaged; skipping their sequence numbers and ids",
                _opt.index, suspect);
        _seg_seq_gap = suspect;
    }
    // Applied after the replay too, which raises _next_counter.
    const uint64_t id_gap = suspect * (seg_bytes / 48 + 1);
    if (valid.empty()) {
        _next_counter += id_gap;
        _report.took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
        lg.info("shard={} recovered an empty spool shard took_ms={:.1f}", _opt.index, double(_report.took.count()) / 1000.0);
        co_return result<void, std::string>{};
    }
    std::sort(valid.begin(), valid.end(), [](const seg_info& a, const seg_info& b) { return a.h.seg_seq < b.h.seg_seq; });
    const segment_header newest = valid.back().h;
    uint64_t tail = newest.tail_seq;
    std::vector<seg_info> window;
    for (auto& v : valid)
        if (v.h.seg_seq >= tail)
            window.push_back(v);
    // Segments in [tail, newest] must all be there.
    uint64_t expect_seg = tail;
    for (auto& w : window) {
        if (w.h.seg_seq != expect_seg) {
            lg.warn("shard={} segments {}..{} of the replay window are missing (damaged headers)", _opt.index,
                    expect_seg, w.h.seg_seq - 1);
            _report.quarantined_records++;
        }
        expect_seg = w.h.seg_seq + 1;
    }

    // 2. Replay the window in order.
    disk::aligned_buffer seg(seg_bytes);
    uint64_t expect_batch = window.front().h.first_batch_seq;
    uint64_t head_off = k_block_bytes;
    for (size_t wi = 0; wi < window.size(); ++wi) {
        const seg_info& si = window[wi];
        bool last = wi + 1 == window.size();
        uint64_t base = _g.slot_offset(_opt.index, si.slot);
        int r = co_await _dev->read(seg.data(), seg_bytes, base);
        if (r < 0) {
            // Read error: retry per 64 KiB piece, then per 4 KiB block of a
            // piece that still fails, zeroing only what cannot be read. (A
            // whole zeroed piece cost every batch in it, even when the bad
            // sector was in space not yet written: spool_sim --seed 25.)
            for (uint64_t off = 0; off < seg_bytes; off += 65536) {
                const uint64_t n = std::min<uint64_t>(65536, seg_bytes - off);
                auto rp = read_retrying(*_dev, seg.data() + off, n, base + off);
                int rr = co_await std::move(rp);
                if (rr >= 0)
                    continue;
                for (uint64_t b = off; b < off + n; b += k_block_bytes) {
                    auto rb = read_retrying(*_dev, seg.data() + b, k_block_bytes, base + b);
                    int rbr = co_await std::move(rb);
                    if (rbr < 0) {
                        std::memset(seg.data() + b, 0, k_block_bytes);
                        _report.quarantined_records++;
                    }
                }
            }
        }
        _report.segments++;
        if (si.h.first_batch_seq != expect_batch) {
            if (si.h.first_batch_seq > expect_batch) {
                lg.warn("shard={} batches {}..{} lost before segment {}", _opt.index, expect_batch,
                        si.h.first_batch_seq - 1, si.h.seg_seq);
                _report.quarantined_records++;
            }
            expect_batch = si.h.first_batch_seq;
        }
        const char* sd = seg.data();
        auto valid_batch_at = [&](uint64_t p, uint64_t want_min, batch_header& bh, bool& payload_ok) -> bool {
            if (p + k_hdr > seg_bytes)
                return false;
            std::memcpy(&bh, sd + p, k_hdr);
            if (bh.magic != k_batch_magic || bh.spool_id != _g.spool_id || bh.seg_seq != si.h.seg_seq ||
                batch_header_crc(bh) != bh.header_crc || bh.batch_seq < want_min || bh.length < k_hdr ||
                p + pad_block(bh.length) > seg_bytes)
                return false;
            payload_ok = crc32c(sd + p + k_hdr, bh.length - k_hdr) == bh.payload_crc;
            return true;
        };
        uint64_t p = k_block_bytes;
        bool jumped = false;  // continued past damage: the layout is not sequential
        // Also at the end of the segment: batches may remain behind a stray
        // copy replayed from its last block (spool_sim --seed 4557).
        for (;;) {
            batch_header bh{};
            bool payload_ok = false;
            bool ok = p < seg_bytes && valid_batch_at(p, expect_batch, bh, payload_ok) && bh.batch_seq == expect_batch;
            if (ok && payload_ok) {
                // Walk the records.
                uint64_t q = p + k_hdr, end = p + bh.length;
                while (q + sizeof(record_header) <= end) {
                    record_header rh;
                    std::memcpy(&rh, sd + q, sizeof rh);
                    if (rh.length < sizeof rh || q + rh.length > end)
                        break;
                    const char* body = sd + q + sizeof rh;
                    bool bad = false;
                    if (record_crc(rh, body, rh.length - sizeof rh) != rh.crc)
                        bad = true;
                    else
                        apply_record(rh, body, base + q, si.h.seg_seq, bad);
                    if (bad)
                        _report.quarantined_records++;
                    _report.records++;
                    q += pad8(rh.length);
                }
                _report.batches++;
                expect_batch++;
                p += pad_block(bh.length);
                head_off = p;
                continue;
            }
            // Invalid here. A later valid batch in this segment means damage
            // in the middle (a torn write is only ever the last one).
            // A misdirected write leaves the only copy of a batch somewhere
            // else in the segment, before or after where it belongs. So:
            // continue at the lowest batch_seq found anywhere in the segment,
            // not at the first valid batch after p. Jumping to the first by
            // position skipped the batches between a stray copy and its
            // successors (removed messages came back, acknowledged states
            // went back: spool_sim --seed 214, --seed 1477). Batches already
            // replayed are below `want`, so none is applied twice. And only
            // a header that names expect_batch proves that batch is the
            // damaged one; stale data at p does not, so expect_batch itself
            // may still be found (spool_sim --seed 651).
            const uint64_t want = ok ? expect_batch + 1 : expect_batch;
            uint64_t found = 0, found_seq = UINT64_MAX;
            for (uint64_t s = k_block_bytes; s < seg_bytes && found_seq != want; s += k_block_bytes) {
                if (s == p)
                    continue;
                batch_header nb;
                bool pok = false;
                if (valid_batch_at(s, want, nb, pok) && pok && nb.batch_seq < found_seq) {
                    found = s;
                    found_seq = nb.batch_seq;
                }
            }
            if (found) {
                if (ok) {
                    // Header intact, payload damaged: salvage records one by one.
                    uint64_t q = p + k_hdr, end = p + bh.length;
                    while (q + sizeof(record_header) <= end) {
                        record_header rh;
                        std::memcpy(&rh, sd + q, sizeof rh);
                        if (rh.length < sizeof rh || q + rh.length > end)
                            break;
                        const char* body = sd + q + sizeof rh;
                        bool bad = record_crc(rh, body, rh.length - sizeof rh) != rh.crc;
                        if (!bad)
                            apply_record(rh, body, base + q, si.h.seg_seq, bad);
                        if (bad)
                            _report.quarantined_records++;
                        q += pad8(rh.length);
                    }
                } else {
                    _report.quarantined_records++;
                }
                batch_header nb;
                std::memcpy(&nb, sd + found, k_hdr);
                lg.warn("shard={} damaged batch in segment {} at offset {}; continuing at batch {}", _opt.index,
                        si.h.seg_seq, p, nb.batch_seq);
                expect_batch = nb.batch_seq;
                p = found;
                jumped = true;
                continue;
            }
            if (last && (ok || (bh.magic == k_batch_magic && bh.seg_seq == si.h.seg_seq)))
                _report.torn_batches++;
            if (ok) {
                // A torn tail is dropped, but its intact records stay on the
                // device and can be salvaged by a later recovery (when a
                // misdirected write leaves this batch where its successor
                // should be). Never hand out their ids again: a reused id
                // gave an acknowledged message another message's envelope
                // and body (spool_sim --seed 2093).
                for (uint64_t q = p + k_hdr, end = p + bh.length; q + sizeof(record_header) <= end;) {
                    record_header rh;
                    std::memcpy(&rh, sd + q, sizeof rh);
                    if (rh.length < sizeof rh || q + rh.length > end)
                        break;
                    uint64_t counter = rh.msg_id & ((uint64_t(1) << 56) - 1);
                    if (record_crc(rh, sd + q + sizeof rh, rh.length - sizeof rh) == rh.crc &&
                        (rh.msg_id >> 56) == _opt.index && counter >= _next_counter)
                        _next_counter = counter + 1;
                    q += pad8(rh.length);
                }
            }
            break;
        }
        if (last) {
            _cur_slot = int(si.slot);
            _cur_seq = si.h.seg_seq;
            // After damage in the last segment, write on in a new one.
            // Space behind the head may hold replayed batches (the head
            // follows the last batch replayed, which can be a stray copy
            // placed before them: spool_sim --seed 6633), and a torn batch
            // left behind it would shadow the next batch that reuses its
            // batch_seq (spool_sim --seed 25545).
            _cur_off = jumped ? seg_bytes : head_off;
            _cur_first_batch = si.h.first_batch_seq;
            _recorded_tail = si.h.tail_seq;
        }
        head_off = k_block_bytes;
    }
    _next_batch_seq = expect_batch;
    _durable_seq = expect_batch - 1;
    _next_counter += id_gap;

    // 3. Drop what was begun and never committed; pending relocations too.
    for (auto it = _msgs.begin(); it != _msgs.end();) {
        if (!it->second.committed) {
            _report.incomplete++;
            it = _msgs.erase(it);
            continue;
        }
        it->second.relocating.reset();
        _report.messages++;
        _report.body_bytes += it->second.cur.body_len;
        for (auto& st : it->second.rcpts)
            if (st.status == rcpt_status::pending || st.status == rcpt_status::deferred)
                _report.recipients_pending++;
        ++it;
    }
    check_recovered();
    _report.took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    lg.info("shard={} recovered messages={} recipients_pending={} bytes={} segments={} batches={} incomplete={} "
            "quarantined_records={} quarantined_messages={} torn_batches={} took_ms={:.1f}",
            _opt.index, _report.messages, _report.recipients_pending, _report.body_bytes, _report.segments,
            _report.batches, _report.incomplete, _report.quarantined_records, _report.quarantined_messages,
            _report.torn_batches, double(_report.took.count()) / 1000.0);
    co_return result<void, std::string>{};
}

void shard::check_recovered() const {
    size_t refs = 0;
    for (const auto& [seg, ids] : _seg_refs) {
        RW_ASSERT(seg <= _cur_seq, "shard {}: segment {} referenced, newest is {}", _opt.index, seg, _cur_seq);
        refs += ids.size();
    }
    RW_ASSERT(refs == _msgs.size(), "shard {}: {} segment references for {} messages", _opt.index, refs,
              _msgs.size());
    RW_ASSERT(_durable_seq + 1 == _next_batch_seq, "shard {}: batch {} durable, next {}", _opt.index, _durable_seq,
              _next_batch_seq);
    for (const auto& [id, e] : _msgs) {
        RW_ASSERT(e.committed && !e.relocating, "shard {}: message {:x} left uncommitted or relocating", _opt.index,
                  id);
        auto r = _seg_refs.find(e.cur.begin_seg);
        RW_ASSERT(r != _seg_refs.end() && r->second.count(id) == 1,
                  "shard {}: message {:x} not referenced by its segment {}", _opt.index, id, e.cur.begin_seg);
        if ((id >> 56) == _opt.index)
            RW_ASSERT((id & ((uint64_t(1) << 56) - 1)) < _next_counter,
                      "shard {}: message {:x} at or above the next id {}", _opt.index, id, _next_counter);
        uint64_t off = 0;
        for (const auto& c : e.cur.chunks) {
            RW_ASSERT(c.body_off == off, "shard {}: message {:x} chunk at {} after {} bytes", _opt.index, id,
                      c.body_off, off);
            off += c.data_len;
        }
        RW_ASSERT(off == e.cur.body_len, "shard {}: message {:x} chunks hold {} of {} bytes", _opt.index, id, off,
                  e.cur.body_len);
        RW_ASSERT(e.rcpts.size() == e.env.rcpts.size(), "shard {}: message {:x} has {} states for {} recipients",
                  _opt.index, id, e.rcpts.size(), e.env.rcpts.size());
    }
}

void shard::check_sealed(uint64_t seq, size_t length, size_t blocks_bytes, bool new_seg) const {
    // Recovery replays batch numbers without a gap: one batch in flight at
    // a time, so the one sealed now follows the last durable one.
    RW_ASSERT(seq == _durable_seq + 1, "shard {}: sealing batch {} after durable {}", _opt.index, seq, _durable_seq);
    RW_ASSERT(length >= k_hdr && length <= k_hdr + _opt.batch_bytes, "shard {}: batch {} of {} bytes", _opt.index,
              seq, length);
    // Recovery refuses a batch that runs past its segment.
    const uint64_t off = new_seg ? k_block_bytes : _cur_off;
    RW_ASSERT(off + blocks_bytes <= _g.segment_bytes, "shard {}: batch {} at {} + {} past the segment", _opt.index,
              seq, off, blocks_bytes);
#ifdef RINGWAY_SANITIZE
    // Recovery walks records by their lengths; the walk must end exactly at
    // the end of the batch and count every record.
    const char* p = _open_buf.data() + k_block_bytes + k_hdr;
    size_t q = 0, n = 0;
    while (q < _open_fill) {
        record_header rh;
        std::memcpy(&rh, p + q, sizeof rh);
        RW_ASSERT(rh.length >= sizeof rh && q + rh.length <= _open_fill, "shard {}: batch {} record at {} of length {}",
                  _opt.index, seq, q, rh.length);
        q += pad8(rh.length);
        ++n;
    }
    RW_ASSERT(q == _open_fill && n == _open_records, "shard {}: batch {} walks {} records in {} bytes, holds {} in {}",
              _opt.index, seq, n, q, _open_records, _open_fill);
#endif
}

// ---------------------------------------------------------------- space

uint64_t shard::compute_tail() const {
    uint64_t t = _cur_seq;
    if (!_seg_refs.empty())
        t = std::min(t, _seg_refs.begin()->first);
    // In-progress messages (begun and not committed, or being relocated)
    // pin the segment their current copy begins in.
    for (auto it = _unsettled.begin(); it != _unsettled.end();) {
        auto m = _msgs.find(*it);
        if (m == _msgs.end() || (m->second.committed && !m->second.relocating)) {
            it = _unsettled.erase(it);
            continue;
        }
        t = std::min(t, m->second.cur.begin_seg);
        ++it;
    }
#ifdef RINGWAY_SANITIZE
    uint64_t full = _cur_seq;
    if (!_seg_refs.empty())
        full = std::min(full, _seg_refs.begin()->first);
    for (const auto& [id, e] : _msgs)
        if (!e.committed || e.relocating)
            full = std::min(full, e.cur.begin_seg);
    RW_ASSERT(t == full, "tail {} from the messages in flight, {} from all of them", t, full);
#endif
    return t;
}

uint32_t shard::free_slots() const {
    uint32_t n = 0;
    for (uint32_t s = 0; s < _g.slots_per_shard; ++s)
        if (int(s) != _cur_slot && _slot_seq[s] < _recorded_tail)
            ++n;
    // Never-used slots have seq 0 < any tail; before the first segment the
    // recorded tail is 0, so count them explicitly.
    if (_recorded_tail == 0)
        for (uint32_t s = 0; s < _g.slots_per_shard; ++s)
            if (int(s) != _cur_slot && _slot_seq[s] == 0)
                ++n;
    return n;
}

int shard::pick_free_slot() const {
    // Oldest first, so recently written data stays readable longest.
    int best = -1;
    for (uint32_t s = 0; s < _g.slots_per_shard; ++s) {
        if (int(s) == _cur_slot)
            continue;
        bool free = _slot_seq[s] == 0 || _slot_seq[s] < _recorded_tail;
        if (free && (best < 0 || _slot_seq[s] < _slot_seq[size_t(best)]))
            best = int(s);
    }
    return best;
}

spool_health shard::health() const noexcept {
    if (_failed)
        return spool_health::failed;
    // One segment beyond the reserve, so a message admitted now has room.
    if (free_slots() < _opt.reserve_segments + 1)
        return spool_health::full;
    return spool_health::ok;
}

void shard::fail(std::string why) noexcept {
    if (_failed)
        return;
    _failed = true;
    _fail_reason = why;
    lg.error("shard={} device={} failed: {}; refusing new messages until restart", _opt.index, _dev->name(), why);
}

// ---------------------------------------------------------------- write path

void shard::record_tail_if_short() {
    if (_cur_slot >= 0 && free_slots() <= _opt.reserve_segments + 1 && compute_tail() > _recorded_tail) {
        _tail_wanted = true;
        _work.set();
    }
}

uint64_t shard::landing_seg() const {
    // Before the first segment, the one the writer will open (after any
    // sequence numbers skipped at recovery); then the current one, which
    // the tail never passes.
    return _cur_slot < 0 ? _cur_seq + 1 + _seg_seq_gap : _cur_seq;
}

size_t shard::open_room() const { return _opt.batch_bytes - _open_fill; }

task<result<uint64_t, spool_error>> shard::append_record(record_type t, uint16_t flags, uint64_t id,
                                                         std::span<const char> a, std::span<const char> b,
                                                         const fixup* fx) {
    // Declared first, so it is left last: close() waits for every append to
    // be out of this shard before the shard may go (an append still waiting
    // for buffer space woke after its shard was freed: spool_sim --seed
    // 30506).
    gate::holder in_flight(_appends);
    size_t len = sizeof(record_header) + a.size() + b.size();
    RW_ASSERT(pad8(len) <= _opt.batch_bytes, "record of {} bytes cannot fit a batch", len);
    // Once close() has stopped the writer nothing appended would ever be
    // written or waited for: the cleaner, mid-relocation, waited for space
    // or durability for ever and close() never returned (spool_sim --seed
    // 2604).
    // Records are placed in the order their appends began (a ticket each).
    // Appends that wait for buffer space must not be overtaken: a state
    // change placed ahead of a cleaner's copy that was snapshotted before it
    // made that recipient's state go back at recovery (spool_sim --seed
    // 21038), as a chunk placed ahead of its message's begin once did.
    const uint64_t my_ticket = _ticket_next++;
    struct turn_guard {
        shard* s;
        ~turn_guard() {
            s->_ticket_serving++;
            s->_space.set();  // the next ticket may go
        }
    } turn{this};
    while (!_failed && !_writer_done.is_set() && (my_ticket != _ticket_serving || open_room() < pad8(len))) {
        if (my_ticket == _ticket_serving)
            _work.set();  // our turn, but no room: have the writer take the batch
        _space.reset();
        co_await _space.wait();
    }
    if (_failed)
        co_return unexpected(spool_error{spool_errc::failed, _fail_reason});
    if (_writer_done.is_set())
        co_return unexpected(spool_error{spool_errc::failed, "spool is shutting down"});
    // Never hand the writer a batch it has no segment for: no room left in
    // the current segment, no free slot and no tail movement to record
    // means full, for every kind of record. Until now state changes and
    // removals had no such check; once they used up the reserve, the
    // writer failed the whole shard ("no free segment"), and after a
    // restart again at the first write (spool_sim --seed 26052).
    if (_cur_slot >= 0 && _cur_off + pad_block(k_hdr + _open_fill + pad8(len)) > _g.segment_bytes &&
        free_slots() == 0 && compute_tail() <= _recorded_tail)
        co_return unexpected(spool_error{spool_errc::full, "spool full: no segment left for this record"});
    record_header h{};
    h.type = uint16_t(t);
    h.flags = flags;
    h.length = uint32_t(len);
    h.msg_id = id;
    char* dst = _open_buf.data() + k_block_bytes + k_hdr + _open_fill;
    if (!a.empty())
        std::memcpy(dst + sizeof h, a.data(), a.size());
    if (!b.empty())
        std::memcpy(dst + sizeof h + a.size(), b.data(), b.size());
    h.crc = record_crc(h, dst + sizeof h, a.size() + b.size());
    std::memcpy(dst, &h, sizeof h);
    if (pad8(len) > len)
        std::memset(dst + len, 0, pad8(len) - len);
    if (fx) {
        fixup f = *fx;
        f.offset_in_batch = uint32_t(k_hdr + _open_fill);
        _open_fixups.push_back(f);
    }
    _open_fill += pad8(len);
    _open_records++;
    _stats.records++;
    if (t == record_type::msg_begin) {
        // The copy begins in the segment its begin record lands in (this
        // one, or a later one when the batch opens a new segment), not the
        // one current when begin() or relocate() ran: a message begun while
        // segment 1 was current and written after the tail had moved to 2
        // pinned segment 1, the tail went back to 1 in the next segment
        // header, and recovery reported segment 1 (long reused) missing.
        if (auto m = _msgs.find(id); m != _msgs.end()) {
            copy* c = (flags & k_begin_relocated) ? m->second.relocating.get() : &m->second.cur;
            if (c)
                c->begin_seg = std::max(c->begin_seg, landing_seg());
        }
    }
    _work.set();
    co_return _next_batch_seq;
}

task<int> shard::wait_durable(uint64_t batch_seq) {
    if (_durable_seq >= batch_seq)
        co_return 0;
    if (_failed || _writer_done.is_set())
        co_return -EIO;
    int status = 1;
    struct aw {
        shard* s;
        uint64_t seq;
        int* st;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) { s->_waiters.push_back(waiter{seq, h, st}); }
        void await_resume() const noexcept {}
    };
    co_await aw{this, batch_seq, &status};
    co_return status;
}

task<void> shard::writer_loop() {
    reactor& r = reactor::local();
    (void)r;
    for (;;) {
        while (_open_fill == 0 && !_closing && !_failed && !_tail_wanted) {
            _work.reset();
            co_await _work.wait();
        }
        if (_failed || (_open_fill == 0 && _closing))
            break;
        const bool tail_wanted = std::exchange(_tail_wanted, false);
        // No slot is free by the tail the current segment's header records,
        // but the live data has moved on (removals, relocations): record the
        // newer tail by rewriting that header in place, so the slots behind
        // it can be reused. The tail otherwise moves only when a segment
        // opens, which needs a free slot: the shard failed with "no free
        // segment" and, after a restart, again on its first state change
        // (spool_sim --seed 1173). A rewritten header is as safe as a new
        // one carrying the same tail; the 56-byte header sits in one sector.
        // Also when space is short and the tail has moved with nothing to
        // write (record_tail_if_short): the recorded tail is what frees
        // slots, so a spool drained down to a message that pinned the
        // tail stayed full until something else was written, and nothing
        // else could be (a report waiting for room never got it).
        if (_cur_slot >= 0 && (pick_free_slot() < 0 || tail_wanted)) {
            uint64_t t = compute_tail();
            if (t > _recorded_tail && t <= _cur_seq) {
                segment_header sh{};
                sh.magic = k_segment_magic;
                sh.spool_id = _g.spool_id;
                sh.shard = _opt.index;
                sh.slot = uint32_t(_cur_slot);
                sh.seg_seq = _cur_seq;
                sh.tail_seq = t;
                sh.first_batch_seq = _cur_first_batch;
                sh.crc = segment_crc(sh);
                disk::aligned_buffer hb(k_block_bytes);
                std::memcpy(hb.data(), &sh, sizeof sh);
                auto hw = _dev->write_durable(hb.data(), k_block_bytes, _g.slot_offset(_opt.index, uint32_t(_cur_slot)));
                int hrc = co_await std::move(hw);
                if (hrc < 0) {
                    fail(fmt::format("rewrite of segment {}'s header failed: {}", _cur_seq, std::strerror(-hrc)));
                    break;
                }
                _recorded_tail = t;
                _space.set();
            }
        }
        if (_open_fill == 0)
            continue;  // only the tail to record
        // Seal the open batch.
        uint64_t seq = _next_batch_seq++;
        size_t length = k_hdr + _open_fill;
        size_t blocks_bytes = pad_block(length);
        bool new_seg = _cur_slot < 0 || _cur_off + blocks_bytes > _g.segment_bytes;
        check_sealed(seq, length, blocks_bytes, new_seg);
        segment_header sh{};
        if (new_seg) {
            int slot = pick_free_slot();
            if (slot < 0) {
                fail("no free segment for a write batch (space accounting broken)");
                break;
            }
            uint64_t tail = compute_tail();
            const uint64_t prev_seq = _cur_seq;
            _cur_seq = _cur_seq + 1 + _seg_seq_gap;
            _seg_seq_gap = 0;
            if (tail > _cur_seq || tail == 0)
                tail = _cur_seq;
            sh.magic = k_segment_magic;
            sh.spool_id = _g.spool_id;
            sh.shard = _opt.index;
            sh.slot = uint32_t(slot);
            sh.seg_seq = _cur_seq;
            sh.tail_seq = std::min(tail, _cur_seq);
            sh.first_batch_seq = seq;
            // What recovery takes for a valid header: newer than every
            // other, its tail not ahead of itself.
            RW_ASSERT(sh.seg_seq > prev_seq && sh.tail_seq <= sh.seg_seq && sh.tail_seq >= _recorded_tail,
                      "shard {}: segment {} after {} with tail {} (recorded {})", _opt.index, sh.seg_seq, prev_seq,
                      sh.tail_seq, _recorded_tail);
            sh.crc = segment_crc(sh);
            _cur_slot = slot;
            _cur_off = k_block_bytes;
            _cur_first_batch = seq;
            _recorded_tail = sh.tail_seq;
            _slot_seq[size_t(slot)] = _cur_seq;
            _stats.segments_opened++;
            _cleaner_kick.set();
        }
        batch_header bh{};
        bh.magic = k_batch_magic;
        bh.spool_id = _g.spool_id;
        bh.seg_seq = _cur_seq;
        bh.batch_seq = seq;
        bh.length = uint32_t(length);
        bh.records = _open_records;
        char* bstart = _open_buf.data() + k_block_bytes;
        bh.payload_crc = crc32c(bstart + k_hdr, _open_fill);
        bh.header_crc = batch_header_crc(bh);
        std::memcpy(bstart, &bh, k_hdr);
        std::memset(bstart + length, 0, blocks_bytes - length);
        uint64_t base = _g.slot_offset(_opt.index, uint32_t(_cur_slot));
        uint64_t batch_dev_off = base + _cur_off;
        // Chunk locations are known now.
        for (const fixup& f : _open_fixups) {
            auto it = _msgs.find(f.id);
            if (it == _msgs.end())
                continue;
            copy* c = f.relocating ? it->second.relocating.get() : &it->second.cur;
            if (c && f.chunk < c->chunks.size())
                c->chunks[f.chunk].dev_off = batch_dev_off + f.offset_in_batch;
        }
        const char* wbuf = bstart;
        size_t wlen = blocks_bytes;
        uint64_t woff = batch_dev_off;
        if (new_seg) {
            // The segment header goes out in the same write as the batch.
            std::memset(_open_buf.data(), 0, k_block_bytes);
            std::memcpy(_open_buf.data(), &sh, sizeof sh);
            wbuf = _open_buf.data();
            wlen += k_block_bytes;
            woff = base;
        }
        _cur_off += blocks_bytes;
        std::swap(_open_buf, _flight_buf);
        std::swap(_open_fixups, _flight_fixups);
        _open_fixups.clear();
        _open_fill = 0;
        _open_records = 0;
        _space.set();
        // wbuf points into what is now _flight_buf.
        int rc;
        if (new_seg) {
            // The first batch, then the header that makes the segment part of
            // the log. In one write, a crash could keep the new header and
            // drop the batch, leaving in its place the batch of an earlier,
            // torn attempt to open the same seg_seq in this slot (same
            // seg_seq, same batch_seq), which a later recovery replayed: a
            // removal never acknowledged struck after a recovery had shown
            // the message back (spool_sim --seed 38511). Now a visible header
            // always means a durable first batch.
            auto wb = _dev->write_durable(wbuf + k_block_bytes, wlen - k_block_bytes, woff + k_block_bytes);
            rc = co_await std::move(wb);
            if (rc == 0) {
                auto wh = _dev->write_durable(wbuf, k_block_bytes, woff);
                rc = co_await std::move(wh);
            }
        } else {
            auto wb = _dev->write_durable(wbuf, wlen, woff);
            rc = co_await std::move(wb);
        }
        _stats.batches++;
        _stats.bytes_written += wlen;
        if (rc < 0) {
            fail(fmt::format("write of batch {} ({} bytes at offset {}) failed: {}", seq, wlen, woff,
                             std::strerror(-rc)));
            break;
        }
        if (new_seg) {
            // Read the new segment header back before acknowledging anything
            // in it. If the device put it elsewhere (a misdirected write),
            // every later batch of this segment is invisible to recovery,
            // which then reopens the same seg_seq in this slot and replays
            // those stale batches as if new: another message's envelope and
            // body under an acknowledged id (spool_sim --seed 2696). One 4 KiB
            // read per segment opened.
            disk::aligned_buffer chk(k_block_bytes);
            auto rb = read_retrying(*_dev, chk.data(), k_block_bytes, base);
            int rbr = co_await std::move(rb);
            if (rbr < 0 || std::memcmp(chk.data(), &sh, sizeof sh) != 0) {
                fail(fmt::format("segment {}'s header at offset {} did not read back ({}); misdirected write?",
                                 sh.seg_seq, base, rbr < 0 ? std::strerror(-rbr) : "different data"));
                break;
            }
        }
        _durable_seq = seq;
        RW_DASSERT(std::is_sorted(_waiters.begin(), _waiters.end(),
                                  [](const waiter& a, const waiter& b) { return a.batch_seq < b.batch_seq; }),
                   "shard {}: durability waiters out of order", _opt.index);
        while (!_waiters.empty() && _waiters.front().batch_seq <= _durable_seq) {
            waiter w = _waiters.front();
            _waiters.pop_front();
            *w.status = 0;
            r.schedule(w.h);
        }
    }
    // Failed or closing: nobody waits forever.
    while (!_waiters.empty()) {
        waiter w = _waiters.front();
        _waiters.pop_front();
        *w.status = -EIO;
        r.schedule(w.h);
    }
    _space.set();
    _writer_done.set();
}

result<message_writer, spool_error> shard::begin(envelope env) {
    if (_failed)
        return unexpected(spool_error{spool_errc::failed, _fail_reason});
    if (_closing)
        return unexpected(spool_error{spool_errc::failed, "spool is shutting down"});
    if (health() == spool_health::full)
        return unexpected(spool_error{spool_errc::full, "no free segment beyond the reserve"});
    uint64_t id = next_id();
    entry e;
    e.env = std::move(env);
    e.rcpts.assign(e.env.rcpts.size(), rcpt_state{});
    e.cur.begin_seg = landing_seg();
    // The begin record is written by the message's own first append or
    // commit, in the caller's coroutine, so it always precedes the chunks in
    // the log (a separately spawned append could be overtaken while both
    // wait for buffer space).
    e.pending_begin = rec::encode_begin(e.env, nullptr);
    _msgs.emplace(id, std::move(e));
    _unsettled.insert(id);
    return message_writer(this, id);
}

task<result<void, spool_error>> shard::write_pending_begin(uint64_t id) {
    auto it = _msgs.find(id);
    if (it == _msgs.end() || it->second.pending_begin.empty())
        co_return result<void, spool_error>{};
    std::string body = std::move(it->second.pending_begin);
    it->second.pending_begin.clear();
    auto r = co_await append_record(record_type::msg_begin, 0, id, std::span<const char>(body.data(), body.size()));
    if (!r)
        co_return unexpected(r.error());
    co_return result<void, spool_error>{};
}

task<result<void, spool_error>> shard::append_chunk(uint64_t id, std::span<const char> data) {
    {
        auto b = co_await write_pending_begin(id);
        if (!b)
            co_return unexpected(b.error());
    }
    while (!data.empty()) {
        if (_failed)
            co_return unexpected(spool_error{spool_errc::failed, _fail_reason});
        if (free_slots() < _opt.reserve_segments + 1 &&
            _cur_off + _open_fill + data.size() + 4 * k_block_bytes > _g.segment_bytes)
            co_return unexpected(spool_error{spool_errc::full, "spool full while receiving the body"});
        auto it = _msgs.find(id);
        if (it == _msgs.end() || it->second.committed)
            co_return unexpected(spool_error{spool_errc::bad_state, "no message being received with this id"});
        size_t n = std::min(data.size(), _opt.chunk_bytes);
        copy& c = it->second.cur;
        uint64_t off = c.body_len;
        chunk_loc l;
        l.body_off = off;
        l.data_len = uint32_t(n);
        c.chunks.push_back(l);
        c.body_len += n;
        c.body_crc = crc32c(data.data(), n, c.body_crc);
        fixup f{id, false, uint32_t(c.chunks.size() - 1), 0};
        auto r = co_await append_record(record_type::msg_chunk, 0, id,
                                        std::span<const char>(reinterpret_cast<const char*>(&off), 8),
                                        data.subspan(0, n), &f);
        if (!r)
            co_return unexpected(r.error());
        data = data.subspan(n);
    }
    co_return result<void, spool_error>{};
}

task<result<uint64_t, spool_error>> shard::commit_message(uint64_t id) {
    {
        auto b = co_await write_pending_begin(id);
        if (!b) {
            _msgs.erase(id);
            co_return unexpected(b.error());
        }
    }
    auto it = _msgs.find(id);
    if (it == _msgs.end() || it->second.committed)
        co_return unexpected(spool_error{spool_errc::bad_state, "no message being received with this id"});
    std::string body = rec::encode_commit(it->second.cur.body_len, it->second.cur.body_crc);
    auto r = co_await append_record(record_type::msg_commit, 0, id, std::span<const char>(body.data(), body.size()));
    if (!r) {
        _msgs.erase(id);
        co_return unexpected(r.error());
    }
    int st = co_await wait_durable(r.value());
    auto it2 = _msgs.find(id);
    if (st != 0 || it2 == _msgs.end()) {
        if (it2 != _msgs.end())
            _msgs.erase(it2);
        co_return unexpected(spool_error{spool_errc::failed, _fail_reason.empty() ? "write failed" : _fail_reason});
    }
    it2->second.committed = true;
    seg_ref(it2->second.cur.begin_seg, it2->first, +1);
    co_return id;
}

void shard::abort_message(uint64_t id) noexcept {
    auto it = _msgs.find(id);
    if (it == _msgs.end() || it->second.committed)
        return;
    bool logged = it->second.pending_begin.empty();
    _msgs.erase(it);
    if (!logged)
        return;  // nothing of it reached the log
    if (_failed || _closing)
        return;
    auto t = [](shard* s, uint64_t mid) -> task<void> {
        auto r = co_await s->append_record(record_type::msg_abort, 0, mid, {});
        (void)r;
    };
    spawn(t(this, id));
}

task<result<void, spool_error>> shard::set_rcpt_state(uint64_t id, uint32_t rcpt, rcpt_state st) {
    auto it = _msgs.find(id);
    if (it == _msgs.end() || !it->second.committed)
        co_return unexpected(spool_error{spool_errc::not_found, "no such message"});
    if (rcpt >= it->second.rcpts.size())
        co_return unexpected(spool_error{spool_errc::bad_state, "no such recipient"});
    rcpt_state& cur = it->second.rcpts[rcpt];
    // A finished recipient stays finished; only the delivery layer's own
    // flags may still change (a report queued late clears its flag).
    if ((cur.status == rcpt_status::delivered || cur.status == rcpt_status::bounced) &&
        (st.status != cur.status || st.attempts != cur.attempts || st.last_reply != cur.last_reply))
        co_return unexpected(spool_error{spool_errc::bad_state, "recipient already finished"});
    st.version = cur.version + 1;
    std::string body = rec::encode_rcpt_state(rcpt, st);
    // Memory first, so a relocation that starts now copies the new state;
    // the caller learns of success only once the record is durable.
    cur = st;
    auto r = co_await append_record(record_type::rcpt_state, 0, id, std::span<const char>(body.data(), body.size()));
    if (!r)
        co_return unexpected(r.error());
    int s = co_await wait_durable(r.value());
    if (s != 0)
        co_return unexpected(spool_error{spool_errc::failed, _fail_reason});
    co_return result<void, spool_error>{};
}

task<result<void, spool_error>> shard::remove(uint64_t id) {
    auto it = _msgs.find(id);
    if (it == _msgs.end() || !it->second.committed || it->second.deleting)
        co_return unexpected(spool_error{spool_errc::not_found, "no such message"});
    // From here on the cleaner must not copy it: a relocated copy written
    // after the delete record would bring it back at recovery.
    it->second.deleting = true;
    auto r = co_await append_record(record_type::msg_delete, 0, id, {});
    if (!r) {
        // Not written (a full spool): the message stays, removable later.
        auto it3 = _msgs.find(id);
        if (it3 != _msgs.end())
            it3->second.deleting = false;
        co_return unexpected(r.error());
    }
    int s = co_await wait_durable(r.value());
    if (s != 0)
        co_return unexpected(spool_error{spool_errc::failed, _fail_reason});
    auto it2 = _msgs.find(id);
    if (it2 != _msgs.end()) {
        if (it2->second.committed)
            seg_ref(it2->second.cur.begin_seg, it2->first, -1);
        if (it2->second.relocating)
            it2->second.relocating.reset();
        _msgs.erase(it2);
        _cleaner_kick.set();
        record_tail_if_short();
    }
    co_return result<void, spool_error>{};
}

// ---------------------------------------------------------------- reads

task<result<size_t, spool_error>> shard::read_body(uint64_t id, uint64_t off, std::span<char> out) {
    auto it = _msgs.find(id);
    if (it == _msgs.end() || !it->second.committed)
        co_return unexpected(spool_error{spool_errc::not_found, "no such message"});
    size_t done = 0;
    int moved_retries = 0;
    while (done < out.size()) {
        auto it2 = _msgs.find(id);
        if (it2 == _msgs.end())
            co_return unexpected(spool_error{spool_errc::not_found, "message removed while reading"});
        const copy& c = it2->second.cur;
        uint64_t want = off + done;
        if (want >= c.body_len)
            break;
        auto ci = std::upper_bound(c.chunks.begin(), c.chunks.end(), want,
                                   [](uint64_t v, const chunk_loc& l) { return v < l.body_off; });
        RW_ASSERT(ci != c.chunks.begin());
        const chunk_loc l = *(ci - 1);
        RW_ASSERT(l.dev_off != 0, "committed chunk without a location");
        size_t rec_len = sizeof(record_header) + 8 + l.data_len;
        uint64_t a0 = l.dev_off / k_block_bytes * k_block_bytes;
        uint64_t a1 = pad_block(l.dev_off + rec_len);
        disk::aligned_buffer buf(a1 - a0);
        int r = co_await _dev->read(buf.data(), a1 - a0, a0);
        if (r < 0)
            co_return unexpected(spool_error{spool_errc::corrupt, fmt::format("read failed: {}", std::strerror(-r))});
        const char* rp = buf.data() + (l.dev_off - a0);
        record_header h;
        std::memcpy(&h, rp, sizeof h);
        const char* why = nullptr;
        if (h.length != rec_len || h.msg_id != id || h.type != uint16_t(record_type::msg_chunk) ||
            record_crc(h, rp + sizeof h, rec_len - sizeof h) != h.crc) {
            why = "body chunk failed its checksum";
        } else {
            // The record must also be the piece at this body offset: a
            // valid chunk of the same message and length, put here by a
            // misdirected write, passed every check above and its bytes
            // were returned for another part of the body (spool_sim --seed
            // 906).
            uint64_t rec_body_off;
            std::memcpy(&rec_body_off, rp + sizeof h, 8);
            if (rec_body_off != l.body_off)
                why = "body chunk is from another offset of the body";
        }
        if (why) {
            // The cleaner may have moved the message while this read was in
            // flight and its old segment been reused: read again from where
            // the piece is now, or report the removal (spool_sim --seed 859).
            auto it3 = _msgs.find(id);
            if (it3 == _msgs.end())
                continue;
            const copy& c3 = it3->second.cur;
            auto c3i = std::upper_bound(c3.chunks.begin(), c3.chunks.end(), want,
                                        [](uint64_t v, const chunk_loc& x) { return v < x.body_off; });
            if (moved_retries++ < 4 && c3i != c3.chunks.begin() && (c3i - 1)->dev_off != l.dev_off)
                continue;
            co_return unexpected(spool_error{spool_errc::corrupt, why});
        }
        size_t in_chunk = size_t(want - l.body_off);
        size_t n = std::min<size_t>(l.data_len - in_chunk, out.size() - done);
        std::memcpy(out.data() + done, rp + sizeof h + 8 + in_chunk, n);
        done += n;
    }
    co_return done;
}

std::vector<uint64_t> shard::live_ids() const {
    std::vector<uint64_t> v;
    v.reserve(_msgs.size());
    for (const auto& [id, e] : _msgs)
        if (e.committed)
            v.push_back(id);
    return v;
}

std::optional<shard::message_view> shard::find(uint64_t id) const {
    auto it = _msgs.find(id);
    if (it == _msgs.end() || !it->second.committed)
        return std::nullopt;
    return message_view{id, it->second.env, it->second.rcpts, it->second.cur.body_len};
}

size_t shard::live_count() const {
    size_t n = 0;
    for (const auto& [id, e] : _msgs)
        n += e.committed;
    return n;
}

shard::stats shard::get_stats() const {
    stats s = _stats;
    s.free_slots = free_slots();
    s.tail_seq = compute_tail();
    s.head_seq = _cur_seq;
    return s;
}

// ---------------------------------------------------------------- cleaner

task<result<void, spool_error>> shard::relocate(uint64_t id) {
    auto it = _msgs.find(id);
    if (it == _msgs.end() || !it->second.committed || it->second.relocating || it->second.deleting)
        co_return result<void, spool_error>{};
    entry& e = it->second;
    auto nc = std::make_unique<copy>();
    nc->begin_seg = landing_seg();
    e.relocating = std::move(nc);
    _unsettled.insert(id);
    // A copy that cannot be finished is dropped, leaving the message as it
    // was, so a later pass may move it (it stayed marked as relocating for
    // good, never moved again, when an append found no room: the spool
    // nearly full). Recovery ignores a copy without its commit.
    auto abandon = [this, id](spool_error e) {
        if (auto i = _msgs.find(id); i != _msgs.end())
            i->second.relocating.reset();
        return unexpected(std::move(e));
    };
    std::string begin = rec::encode_begin(e.env, &e.rcpts);
    auto r = co_await append_record(record_type::msg_begin, k_begin_relocated, id,
                                    std::span<const char>(begin.data(), begin.size()));
    if (!r)
        co_return abandon(r.error());
    std::vector<char> buf(_opt.chunk_bytes);
    uint64_t off = 0;
    for (;;) {
        auto n = co_await read_body(id, off, std::span<char>(buf.data(), buf.size()));
        auto it2 = _msgs.find(id);
        if (it2 == _msgs.end() || !it2->second.relocating)
            co_return result<void, spool_error>{};  // removed meanwhile
        if (!n)
            co_return abandon(n.error());
        if (n.value() == 0)
            break;
        copy& c = *it2->second.relocating;
        chunk_loc l;
        l.body_off = off;
        l.data_len = uint32_t(n.value());
        c.chunks.push_back(l);
        c.body_len += n.value();
        c.body_crc = crc32c(buf.data(), n.value(), c.body_crc);
        fixup f{id, true, uint32_t(c.chunks.size() - 1), 0};
        auto a = co_await append_record(record_type::msg_chunk, 0, id,
                                        std::span<const char>(reinterpret_cast<const char*>(&off), 8),
                                        std::span<const char>(buf.data(), n.value()), &f);
        if (!a)
            co_return abandon(a.error());
        off += n.value();
    }
    auto it3 = _msgs.find(id);
    if (it3 == _msgs.end() || !it3->second.relocating)
        co_return result<void, spool_error>{};
    if (it3->second.deleting) {
        // Removed while we copied: abandon the copy (an abort record keeps
        // recovery from even considering it).
        it3->second.relocating.reset();
        auto ab = co_await append_record(record_type::msg_abort, 0, id, {});
        (void)ab;
        co_return result<void, spool_error>{};
    }
    std::string cm = rec::encode_commit(it3->second.relocating->body_len, it3->second.relocating->body_crc);
    auto c = co_await append_record(record_type::msg_commit, 0, id, std::span<const char>(cm.data(), cm.size()));
    if (!c)
        co_return abandon(c.error());
    int s = co_await wait_durable(c.value());
    if (s != 0)
        co_return abandon(spool_error{spool_errc::failed, _fail_reason});
    auto it4 = _msgs.find(id);
    if (it4 == _msgs.end() || !it4->second.relocating)
        co_return result<void, spool_error>{};
    seg_ref(it4->second.cur.begin_seg, it4->first, -1);
    it4->second.cur = std::move(*it4->second.relocating);
    it4->second.relocating.reset();
    seg_ref(it4->second.cur.begin_seg, it4->first, +1);
    _stats.relocated++;
    record_tail_if_short();
    co_return result<void, spool_error>{};
}

task<void> shard::cleaner_loop() {
    // Relocate the live messages of the oldest segment when free segments
    // run low and that segment is mostly dead, so the tail moves on and its
    // slot (and the ones after it) can be reused.
    const uint32_t low_water = std::max<uint32_t>(_opt.reserve_segments + 2, _g.slots_per_shard / 4);
    while (!_closing && !_failed) {
        _cleaner_kick.reset();
        uint64_t tail = compute_tail();
        bool low = false;
        {
            uint32_t potential = 0;
            for (uint32_t s = 0; s < _g.slots_per_shard; ++s)
                if (int(s) != _cur_slot && (_slot_seq[s] == 0 || _slot_seq[s] < tail))
                    ++potential;
            low = potential < low_water;
        }
        std::vector<uint64_t> victims;
        uint64_t live_bytes = 0;
        if (low && tail < _cur_seq) {
            // The messages whose copy begins in the tail segment, oldest
            // first (not a scan of every live message per removal).
            if (auto in_tail = _seg_refs.find(tail); in_tail != _seg_refs.end())
                for (uint64_t id : in_tail->second) {
                    auto m = _msgs.find(id);
                    RW_ASSERT(m != _msgs.end() && m->second.cur.begin_seg == tail, "segment index out of step msg={:x}", id);
                    const entry& e = m->second;
                    if (e.committed && !e.relocating && !e.deleting) {
                        victims.push_back(id);
                        live_bytes += e.cur.body_len;
                    }
                }
            std::sort(victims.begin(), victims.end());
#ifdef RINGWAY_SANITIZE
            std::vector<uint64_t> all;
            for (const auto& [id, e] : _msgs)
                if (e.committed && !e.relocating && !e.deleting && e.cur.begin_seg == tail)
                    all.push_back(id);
            std::sort(all.begin(), all.end());
            RW_ASSERT(all == victims, "the tail segment's index lists {} movable messages, a scan {}", victims.size(),
                      all.size());
#endif
        }
        // Down to the reserve, move even a mostly live tail segment (any
        // that is not nearly full of live data still gains space): left
        // alone it pinned the tail while state changes and removals used
        // up the reserve (spool_sim --seed 26052).
        const bool critical = free_slots() <= _opt.reserve_segments;
        const uint64_t worth = critical ? uint64_t(_g.segment_bytes) * 7 / 8 : _g.segment_bytes / 2;
        if (victims.empty() || live_bytes > worth) {
            // Nothing worth moving: wait for a segment to open, a message
            // to finish, or close().
            if (!_closing && !_failed)
                co_await _cleaner_kick.wait();
            continue;
        }
        bool stuck = false;
        for (uint64_t id : victims) {
            if (_closing || _failed)
                break;
            auto r = co_await relocate(id);
            if (!r) {
                lg.warn("shard={} relocation of msg={:x} failed: {}", _opt.index, id, r.error().detail);
                stuck = true;  // no room to copy into: wait until something changes
                break;
            }
        }
        if (stuck && !_closing && !_failed)
            co_await _cleaner_kick.wait();
    }
    _cleaner_done.set();
}

task<void> shard::close() {
    _closing = true;
    _work.set();
    _cleaner_kick.set();
    co_await _writer_done.wait();
    if (_cleaner_running)
        co_await _cleaner_done.wait();
    _space.set();  // appends waiting for room see the writer gone and return
    co_await _appends.wait_idle();
}

}  // namespace rw::fs
