// Spool shard recovery: replaying the log on open, and the invariants
// checked once it is rebuilt (see FORMAT.md).
#include <algorithm>
#include <cstring>

#include "fs/shard_internal.hh"
#include "fs/spool.hh"
#include "runtime/base/log.hh"

namespace rw::fs {

using namespace detail;

namespace {
const logger lg{"spool"};
}  // namespace

// ---------------------------------------------------------------- recovery

void shard::seg_ref(uint64_t seg, uint64_t id, int delta) {
    if (delta < 0) {
        auto it = _seg_refs.find(seg);
        const size_t gone = it == _seg_refs.end() ? 0 : it->second.erase(id);
        RW_ASSERT(gone == 1, "segment reference underflow seg={} msg={:x}", seg, id);
        --_live;
        if (it->second.empty())
            _seg_refs.erase(it);
    } else {
        const bool added = _seg_refs[seg].insert(id).second;
        RW_ASSERT(added, "segment reference taken twice seg={} msg={:x}", seg, id);
        ++_live;
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
    case record_type::msg_headers: {
        added_headers a;
        if (!rec::decode_headers(body, blen, a)) {
            bad = true;
            return;
        }
        if (it == _msgs.end())
            return;
        copy* c = it->second.relocating ? it->second.relocating.get() : (it->second.committed ? nullptr : &it->second.cur);
        if (!c)
            return;
        if (!a.omit.empty() && a.omit.back().offset + a.omit.back().length > c->body_len) {
            bad = true;  // written after the whole body: it cannot reach past it
            return;
        }
        c->added = chunk_loc{dev_off, 0, uint32_t(blen)};
        c->added_crc = crc32c(body, blen);
        c->prefix_len = uint32_t(a.prefix.size());
        c->omit = std::move(a.omit);
        return;
    }
    case record_type::msg_commit: {
        rec::commit_info ci;
        if (!rec::decode_commit(body, blen, ci)) {
            bad = true;
            return;
        }
        if (it == _msgs.end())
            return;
        entry& e = it->second;
        copy* c = e.relocating ? e.relocating.get() : (e.committed ? nullptr : &e.cur);
        if (!c)
            return;
        if (c->body_len != ci.body_len || c->body_crc != ci.body_crc || c->added.data_len != ci.added_len ||
            c->added_crc != ci.added_crc) {
            // Some chunk or the header record was lost: the message cannot
            // be trusted.
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

}  // namespace rw::fs
