// A spool shard: opening (recovery in shard_recovery.cc), the space
// accounting, reads and closing. The write path is in shard_writer.cc, the
// cleaner in shard_cleaner.cc. Owned by one reactor; nothing takes a lock.
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

namespace detail {
constexpr int k_recovery_read_tries = 4;
task<int> read_retrying(block_device& dev, void* buf, size_t len, uint64_t off) {
    int r = -EIO;
    for (int i = 0; i < k_recovery_read_tries && r < 0; ++i) {
        auto op = dev.read(buf, len, off);
        r = co_await std::move(op);
    }
    co_return r;
}
}  // namespace detail

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

task<result<added_headers, spool_error>> shard::read_added_record(uint64_t id) {
    for (int moved_retries = 0;; ++moved_retries) {
        auto it = _msgs.find(id);
        if (it == _msgs.end() || !it->second.committed)
            co_return unexpected(spool_error{spool_errc::not_found, "no such message"});
        const chunk_loc l = it->second.cur.added;
        if (l.data_len == 0)
            co_return added_headers{};
        RW_ASSERT(l.dev_off != 0, "committed header record without a location");
        size_t rec_len = sizeof(record_header) + l.data_len;
        uint64_t a0 = l.dev_off / k_block_bytes * k_block_bytes;
        uint64_t a1 = pad_block(l.dev_off + rec_len);
        disk::aligned_buffer buf(a1 - a0);
        int r = co_await _dev->read(buf.data(), a1 - a0, a0);
        if (r < 0)
            co_return unexpected(spool_error{spool_errc::corrupt, fmt::format("read failed: {}", std::strerror(-r))});
        const char* rp = buf.data() + (l.dev_off - a0);
        record_header h;
        std::memcpy(&h, rp, sizeof h);
        added_headers a;
        if (h.length == rec_len && h.msg_id == id && h.type == uint16_t(record_type::msg_headers) &&
            record_crc(h, rp + sizeof h, rec_len - sizeof h) == h.crc &&
            rec::decode_headers(rp + sizeof h, l.data_len, a))
            co_return a;
        // Moved by the cleaner while the read was in flight: read it again
        // from where it is now (as read_body does).
        auto it2 = _msgs.find(id);
        if (it2 != _msgs.end() && moved_retries < 4 && it2->second.cur.added.dev_off != l.dev_off)
            continue;
        co_return unexpected(spool_error{spool_errc::corrupt, "added header record failed its checksum"});
    }
}

task<result<added_headers, spool_error>> shard::read_added(uint64_t id) {
    co_return co_await read_added_record(id);
}

task<result<size_t, spool_error>> shard::read_message(uint64_t id, uint64_t off, std::span<char> out) {
    auto it = _msgs.find(id);
    if (it == _msgs.end() || !it->second.committed)
        co_return unexpected(spool_error{spool_errc::not_found, "no such message"});
    if (it->second.cur.added.data_len == 0)
        co_return co_await read_body(id, off, out);  // nothing added: the body as received
    size_t done = 0;
    // The prefix: read from its record (a few KiB, once per delivery).
    const uint32_t plen = it->second.cur.prefix_len;
    std::vector<omit_range> omit = it->second.cur.omit;
    if (off < plen && !out.empty()) {
        auto a = co_await read_added_record(id);
        if (!a)
            co_return unexpected(a.error());
        const std::string& p = a.value().prefix;
        if (p.size() != plen)
            co_return unexpected(spool_error{spool_errc::corrupt, "added header record does not match the index"});
        size_t n = std::min<size_t>(p.size() - off, out.size());
        std::memcpy(out.data(), p.data() + off, n);
        done = n;
    }
    // The body, stepping over the omitted ranges: v is the offset in the
    // body without them, b the same place in the body as stored.
    while (done < out.size()) {
        uint64_t v = off + done - plen;
        uint64_t b = v;
        size_t next = 0;
        for (; next < omit.size() && omit[next].offset <= b; ++next)
            b += omit[next].length;
        uint64_t limit = next < omit.size() ? omit[next].offset : UINT64_MAX;
        size_t want = size_t(std::min<uint64_t>(out.size() - done, limit - b));
        auto n = co_await read_body(id, b, out.subspan(done, want));
        if (!n)
            co_return unexpected(n.error());
        if (n.value() == 0)
            break;
        done += n.value();
        if (n.value() < want)
            break;  // the end of the body
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
    return message_view{id, it->second.env, it->second.rcpts, it->second.cur.body_len, it->second.cur.message_len()};
}

size_t shard::live_count() const {
    // Every committed message holds exactly one segment reference (seg_ref
    // asserts it), so their count is kept there: the admin plane asks every
    // second, and a walk of a million messages held the reactor ~80 ms.
    return _live;
}

shard::stats shard::get_stats() const {
    stats s = _stats;
    s.free_slots = free_slots();
    s.tail_seq = compute_tail();
    s.head_seq = _cur_seq;
    return s;
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
