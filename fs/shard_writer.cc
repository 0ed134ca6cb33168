// The spool shard write path: message writers, the record appender and
// the group-commit writer loop that seals batches and makes them durable.
#include <algorithm>
#include <cstring>

#include "fs/shard_internal.hh"
#include "fs/spool.hh"
#include "runtime/base/log.hh"

namespace rw::fs {

using namespace detail;

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

namespace {
task<result<uint64_t, spool_error>> finished() {
    co_return unexpected(spool_error{spool_errc::bad_state, "message already finished"});
}
}  // namespace

task<result<uint64_t, spool_error>> message_writer::commit() {
    if (_done)
        return finished();
    _done = true;
    return _s->commit_message(_id);
}

// Not a coroutine, and no parameter by value: what is added is copied to
// the shard's entry here. g++ 12 copied a by-value argument built in a
// co_await expression bitwise, and freed the copy's pointer into the
// caller's frame.
task<result<uint64_t, spool_error>> message_writer::commit(const added_headers& added) {
    if (_done)
        return finished();
    _done = true;
    _s->stash_added(_id, added);
    return _s->commit_message(_id);
}

task<result<uint64_t, spool_error>> message_writer::commit(const added_headers& added,
                                                         const std::vector<rcpt_state>& states) {
    if (_done)
        return finished();
    _done = true;
    _s->stash_added(_id, added);
    _s->stash_states(_id, states);
    return _s->commit_message(_id);
}

void message_writer::abort() noexcept {
    if (_done)
        return;
    _done = true;
    _s->abort_message(_id);
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
            if (c && f.chunk == k_added_fixup)
                c->added.dev_off = batch_dev_off + f.offset_in_batch;
            else if (c && f.chunk < c->chunks.size())
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
        const uint32_t batch_records = bh.records;
        const auto write_start = std::chrono::steady_clock::now();
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
        _stats.commit_seconds.add(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - write_start).count());
        _stats.batch_records.add(double(batch_records));
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

void shard::stash_added(uint64_t id, const added_headers& added) {
    if (auto it = _msgs.find(id); it != _msgs.end() && !it->second.committed)
        it->second.pending_added = added;
}

void shard::stash_states(uint64_t id, const std::vector<rcpt_state>& states) {
    if (auto it = _msgs.find(id); it != _msgs.end() && !it->second.committed)
        it->second.pending_states = states;
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
    if (!it->second.pending_added.empty()) {
        added_headers added = std::move(it->second.pending_added);
        it->second.pending_added = {};
        // Checked as recovery will check it: a record it would refuse must
        // not be acknowledged.
        uint64_t end = 0;
        for (const auto& o : added.omit) {
            if (o.length == 0 || o.offset < end || o.offset + o.length > it->second.cur.body_len) {
                _msgs.erase(id);
                co_return unexpected(spool_error{spool_errc::bad_state, "omitted ranges out of order or outside the body"});
            }
            end = o.offset + o.length;
        }
        if (added.prefix.size() > rec::k_max_added_headers || added.omit.size() > rec::k_max_omitted ||
            pad8(sizeof(record_header) + rec::encode_headers(added).size()) > _opt.batch_bytes) {
            _msgs.erase(id);
            co_return unexpected(spool_error{spool_errc::too_large, "added header fields too large"});
        }
        std::string hb = rec::encode_headers(added);
        copy& c = it->second.cur;
        c.added = chunk_loc{0, 0, uint32_t(hb.size())};
        c.added_crc = crc32c(hb.data(), hb.size());
        c.prefix_len = uint32_t(added.prefix.size());
        c.omit = std::move(added.omit);
        fixup f{id, false, k_added_fixup, 0};
        auto h = co_await append_record(record_type::msg_headers, 0, id, std::span<const char>(hb.data(), hb.size()),
                                        {}, &f);
        if (!h) {
            _msgs.erase(id);
            co_return unexpected(h.error());
        }
        it = _msgs.find(id);
        if (it == _msgs.end() || it->second.committed)
            co_return unexpected(spool_error{spool_errc::bad_state, "no message being received with this id"});
    }
    if (!it->second.pending_states.empty()) {
        // The first states, before the commit record: recovery applies a
        // state to a message begun and not yet committed, and drops both
        // when the commit is lost.
        std::vector<rcpt_state> states = std::move(it->second.pending_states);
        it->second.pending_states = {};
        for (uint32_t i = 0; i < states.size() && i < it->second.rcpts.size(); ++i) {
            rcpt_state st = states[i];
            st.version = it->second.rcpts[i].version + 1;
            std::string sb = rec::encode_rcpt_state(i, st);
            it->second.rcpts[i] = st;
            auto w = co_await append_record(record_type::rcpt_state, 0, id, std::span<const char>(sb.data(), sb.size()));
            if (!w) {
                _msgs.erase(id);
                co_return unexpected(w.error());
            }
            it = _msgs.find(id);
            if (it == _msgs.end() || it->second.committed)
                co_return unexpected(spool_error{spool_errc::bad_state, "no message being received with this id"});
        }
    }
    const copy& cc = it->second.cur;
    std::string body = rec::encode_commit({cc.body_len, cc.body_crc, cc.added.data_len, cc.added_crc});
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

}  // namespace rw::fs
