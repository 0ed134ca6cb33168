// The spool shard cleaner: relocates live messages out of old segments so
// that their slots can be reused.
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
    // What delivery adds goes with the copy, just before its commit.
    if (auto a = co_await read_added_record(id); _msgs.find(id) == _msgs.end() || !_msgs.find(id)->second.relocating) {
        co_return result<void, spool_error>{};  // removed meanwhile
    } else if (!a) {
        co_return abandon(a.error());
    } else if (!a.value().empty()) {
        auto it2 = _msgs.find(id);
        std::string hb = rec::encode_headers(a.value());
        copy& c = *it2->second.relocating;
        c.added = chunk_loc{0, 0, uint32_t(hb.size())};
        c.added_crc = crc32c(hb.data(), hb.size());
        c.prefix_len = uint32_t(a.value().prefix.size());
        c.omit = std::move(a.value().omit);
        fixup f{id, true, k_added_fixup, 0};
        auto h = co_await append_record(record_type::msg_headers, 0, id, std::span<const char>(hb.data(), hb.size()),
                                        {}, &f);
        if (!h)
            co_return abandon(h.error());
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
    const copy& rc = *it3->second.relocating;
    std::string cm = rec::encode_commit({rc.body_len, rc.body_crc, rc.added.data_len, rc.added_crc});
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

}  // namespace rw::fs
