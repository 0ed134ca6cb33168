// The spool: a log-structured, append-only store of messages on a block
// device (or a file standing in for one). This is what lets the SMTP server
// answer "250 queued" and mean it.
//
// The device is formatted once (format()); it holds one shard per core. A
// shard is owned by one reactor and used only from it:
//
//   auto w = shard.begin(env);                 // a new message
//   co_await w->append(chunk) ...              // body as it streams in
//   auto id = co_await w->commit();            // resumes once durable
//   co_await shard.set_rcpt_state(id, 0, st);  // durable per-recipient state
//   co_await shard.read_body(id, off, buf);    // read back, CRC-checked
//   co_await shard.read_message(id, off, buf); // as delivered: added headers first
//   co_await shard.remove(id);                 // finished
//
// Group commit: every record appended while a write is in flight goes into
// the next batch; one write (+ one flush) makes the whole batch durable and
// resumes all its waiters. A lone writer is written at once.
//
// Errors are values (spool_error); a failed write or flush marks the shard
// failed for good (health() == failed): it is never retried as if nothing
// happened. The on-disk format and its invariants are in fs/FORMAT.md.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "fs/block_device.hh"
#include "fs/format.hh"
#include "runtime/base/histogram.hh"
#include "runtime/disk/file.hh"
#include "runtime/reactor/sync.hh"

namespace rw::fs {

// ---- geometry and formatting ----

struct format_options {
    uint32_t shards = 1;
    uint32_t segment_bytes = 8 << 20;
    bool force = false;  // overwrite a device that holds a valid spool
};

struct geometry {
    uint8_t uuid[16] = {};
    uint64_t spool_id = 0;
    uint64_t device_bytes = 0;
    uint64_t data_offset = 0;
    uint32_t segment_bytes = 0;
    uint32_t shard_count = 0;
    uint32_t slots_per_shard = 0;
    uint32_t version = 0;  // of the superblock read
    std::string uuid_string() const;
    uint64_t slot_offset(uint32_t shard, uint32_t slot) const {
        return data_offset + (uint64_t(shard) * slots_per_shard + slot) * segment_bytes;
    }
};

// Writes a fresh spool (both superblocks, invalidated segment headers).
// Refuses a device that already holds a spool unless o.force.
task<result<geometry, std::string>> format(block_device& dev, format_options o);

// Reads and checks the superblocks. Errors name the device and say whether
// it is foreign, from a newer format, damaged or too small.
task<result<geometry, std::string>> read_superblock(block_device& dev);

// Stamps an older spool with this format version (copy A, flush, copy B,
// flush: one good copy at every moment), before anything of the newer
// version is written to it. From then on older ringwayds refuse it as newer
// instead of misreading records they do not know.
task<result<void, std::string>> upgrade_superblock(block_device& dev, geometry& g);

// ---- the shard ----

struct envelope {
    std::string mail_from;
    std::vector<std::string> rcpts;
    std::string params;  // opaque to the spool (ESMTP/DSN parameters)
    int64_t received_unix = 0;
    friend bool operator==(const envelope&, const envelope&) = default;
};

// What the gateway adds to a message without rewriting it: header fields
// prepended at delivery (Received, Authentication-Results, signatures), and
// ranges of the body left out at delivery (header fields it must not pass
// on, such as a forged Authentication-Results). Stored with the message
// (record msg_headers); the body as received stays untouched.
struct omit_range {
    uint64_t offset = 0;  // in the body
    uint32_t length = 0;
    friend bool operator==(const omit_range&, const omit_range&) = default;
};
struct added_headers {
    std::string prefix;
    std::vector<omit_range> omit;  // in order, apart, inside the body
    bool empty() const { return prefix.empty() && omit.empty(); }
    friend bool operator==(const added_headers&, const added_headers&) = default;
};

enum class rcpt_status : uint8_t { pending = 0, deferred = 1, delivered = 2, bounced = 3 };

struct rcpt_state {
    rcpt_status status = rcpt_status::pending;
    uint32_t attempts = 0;
    int64_t next_attempt_unix = 0;
    std::string last_reply;
    uint32_t version = 0;  // set by the spool: +1 per change, never goes back
    uint8_t flags = 0;     // the delivery layer's own bits (6 of them), kept as given
    friend bool operator==(const rcpt_state&, const rcpt_state&) = default;
};

enum class spool_errc { full, failed, not_found, bad_state, corrupt, too_large };
struct spool_error {
    spool_errc code;
    std::string detail;
};
std::string_view to_string(spool_errc c);

enum class spool_health { ok, full, failed };

struct recovery_report {
    uint64_t messages = 0;            // live, committed
    uint64_t recipients_pending = 0;  // pending or deferred
    uint64_t body_bytes = 0;
    uint64_t segments = 0;            // in the replay window
    uint64_t batches = 0;
    uint64_t records = 0;
    uint64_t incomplete = 0;          // begun, never committed: dropped
    uint64_t quarantined_records = 0;
    uint64_t quarantined_messages = 0;
    uint64_t torn_batches = 0;        // invalid tail dropped
    std::chrono::microseconds took{0};
};

struct shard_options {
    uint32_t index = 0;
    size_t batch_bytes = 4 << 20;      // largest write batch (clamped to half a segment)
    size_t chunk_bytes = 64 << 10;     // body record size
    uint32_t reserve_segments = 2;     // kept for state records and the cleaner
    bool cleaner = true;
};

class shard;

// One message being received. Not copyable; destroying it without commit
// aborts the message.
class message_writer {
public:
    message_writer(message_writer&& o) noexcept;
    message_writer& operator=(message_writer&& o) noexcept;
    ~message_writer();
    uint64_t id() const { return _id; }
    // Appends body bytes. Waits only when the batch buffer is full.
    task<result<void, spool_error>> append(std::span<const char> data);
    // Makes the message durable, with what delivery adds to it; resumes
    // once it is on stable storage. Pass a named object: not a temporary
    // built in the co_await expression.
    task<result<uint64_t, spool_error>> commit();
    task<result<uint64_t, spool_error>> commit(const added_headers& added);
    // Same, with the recipients' first states (index = envelope index; a
    // recipient past the end stays pending), written in the log before
    // the commit record: after a crash the message comes back with them
    // or not at all (a message held from delivery is never released by a
    // crash at its commit).
    task<result<uint64_t, spool_error>> commit(const added_headers& added, const std::vector<rcpt_state>& states);
    // Abandons the message (also done by the destructor).
    void abort() noexcept;

private:
    friend class shard;
    message_writer(shard* s, uint64_t id) : _s(s), _id(id) {}
    shard* _s;
    uint64_t _id;
    bool _done = false;
};

class shard {
public:
    // Opens shard o.index of a formatted device and recovers it.
    static task<result<std::unique_ptr<shard>, std::string>> open(block_device& dev, geometry g, shard_options o);
    ~shard();

    const recovery_report& recovered() const { return _report; }
    uint32_t index() const { return _opt.index; }
    // The shard a message ID was issued by (its top 8 bits).
    static uint32_t index_of(uint64_t id) { return uint32_t(id >> 56); }
    spool_health health() const noexcept;

    // Starts a message; fails at once (full / failed) before anything is
    // acknowledged. The envelope's recipients start pending.
    result<message_writer, spool_error> begin(envelope env);

    // Records one recipient's new state durably. The version is assigned
    // here; states of finished recipients (delivered/bounced) are final.
    // A delivered or bounced recipient is final: bad_state, unless only
    // its flags change.
    task<result<void, spool_error>> set_rcpt_state(uint64_t id, uint32_t rcpt, rcpt_state st);
    // Forgets a finished message durably.
    task<result<void, spool_error>> remove(uint64_t id);
    // Reads body bytes from off into out; returns bytes read (0 at the end).
    task<result<size_t, spool_error>> read_body(uint64_t id, uint64_t off, std::span<char> out);
    // The message as delivered: the added header fields, then the body
    // without its omitted ranges; off counts in that. Fills out unless the
    // message ends first.
    task<result<size_t, spool_error>> read_message(uint64_t id, uint64_t off, std::span<char> out);
    // What delivery adds to and omits from a message.
    task<result<added_headers, spool_error>> read_added(uint64_t id);

    struct message_view {
        uint64_t id;
        const envelope& env;
        const std::vector<rcpt_state>& rcpts;
        uint64_t body_bytes;     // as received
        uint64_t message_bytes;  // as delivered (read_message)
    };
    // Live committed messages, in no particular order.
    std::vector<uint64_t> live_ids() const;
    std::optional<message_view> find(uint64_t id) const;
    size_t live_count() const;

    // Writes what is pending and stops the writer and the cleaner.
    task<void> close();

    // Counters for benchmarks and tests.
    struct stats {
        uint64_t batches = 0, records = 0, bytes_written = 0, segments_opened = 0, relocated = 0;
        uint32_t free_slots = 0;
        uint64_t tail_seq = 0, head_seq = 0;
        // Per batch: the durable write's time (what an acknowledgement
        // waits for), and the records it carried.
        histogram commit_seconds{k_io_latency_bounds};
        histogram batch_records{k_batch_size_bounds};
    };
    stats get_stats() const;

    // Used by message_writer.
    task<result<void, spool_error>> append_chunk(uint64_t id, std::span<const char> data);
    void stash_added(uint64_t id, const added_headers& added);  // for the commit_message that follows
    void stash_states(uint64_t id, const std::vector<rcpt_state>& states);
    task<result<uint64_t, spool_error>> commit_message(uint64_t id);
    void abort_message(uint64_t id) noexcept;

private:
    shard() = default;
    struct chunk_loc {
        uint64_t dev_off = 0;  // record header on the device (0 until sealed)
        uint64_t body_off = 0;
        uint32_t data_len = 0;
    };
    struct copy {
        std::vector<chunk_loc> chunks;
        uint64_t body_len = 0;
        uint32_t body_crc = 0;
        uint64_t begin_seg = 0;
        // The msg_headers record (data_len 0: none); its omitted ranges
        // and prefix length are kept here, the prefix itself only on disk.
        chunk_loc added;
        uint32_t added_crc = 0;  // CRC32C of the msg_headers body, which the commit repeats
        uint32_t prefix_len = 0;
        std::vector<omit_range> omit;
        uint64_t message_len() const {
            uint64_t n = prefix_len + body_len;
            for (const auto& o : omit)
                n -= o.length;
            return n;
        }
    };
    static constexpr uint32_t k_added_fixup = UINT32_MAX;  // fixup.chunk of a msg_headers record
    struct entry {
        envelope env;
        std::vector<rcpt_state> rcpts;
        copy cur;                          // committed (or in progress if !committed)
        std::unique_ptr<copy> relocating;  // a cleaner's copy being written
        std::string pending_begin;  // begin record, written before the first chunk or commit
        added_headers pending_added;  // handed to commit(), written with it
        std::vector<rcpt_state> pending_states;  // likewise
        bool committed = false;
        bool deleting = false;  // a delete record is queued: never relocate it again
    };
    struct fixup {
        uint64_t id;
        bool relocating;
        uint32_t chunk;
        uint32_t offset_in_batch;
    };
    struct waiter {
        uint64_t batch_seq;
        std::coroutine_handle<> h;
        int* status;
    };

    // replay
    task<result<void, std::string>> recover();
    void apply_record(const record_header& h, const char* body, uint64_t dev_off, uint64_t seg_seq, bool& bad);
    // What recovery leaves behind (and the writer relies on): only committed
    // messages, each referenced once by the segment its copy begins in, ids
    // below the next counter, chunks covering each body without a gap.
    void check_recovered() const;
    // Space is short and the tail has moved past the recorded one: has the
    // writer record it (rewriting the current segment's header), which
    // frees the slots behind it.
    void record_tail_if_short();
    // The oldest segment a record appended now can land in.
    uint64_t landing_seg() const;
    // The batch about to be written satisfies what recovery will check when
    // it reads it back: consecutive batch numbers, bounds of the segment,
    // a record walk that ends exactly at the batch's end.
    void check_sealed(uint64_t seq, size_t length, size_t blocks_bytes, bool new_seg) const;
    // write path
    size_t open_room() const;
    task<result<uint64_t, spool_error>> append_record(record_type t, uint16_t flags, uint64_t id,
                                                      std::span<const char> a, std::span<const char> b = {},
                                                      const fixup* fx = nullptr);
    task<int> wait_durable(uint64_t batch_seq);
    task<void> writer_loop();
    task<void> cleaner_loop();
    task<result<void, spool_error>> relocate(uint64_t id);
    task<result<void, spool_error>> write_pending_begin(uint64_t id);
    // The msg_headers record of a message's current copy, read back and
    // checked (data_len 0: none).
    task<result<added_headers, spool_error>> read_added_record(uint64_t id);
    uint64_t compute_tail() const;
    uint32_t free_slots() const;
    int pick_free_slot() const;
    void seg_ref(uint64_t seg, uint64_t id, int delta);
    void fail(std::string why) noexcept;
    uint64_t next_id() { return (uint64_t(_opt.index) << 56) | _next_counter++; }

    block_device* _dev = nullptr;
    geometry _g;
    shard_options _opt;
    recovery_report _report;
    std::unordered_map<uint64_t, entry> _msgs;
    // begin_seg -> the messages whose live (committed) copy begins there: the
    // oldest one bounds the tail, and the cleaner's victims are the tail's.
    std::map<uint64_t, std::unordered_set<uint64_t>> _seg_refs;
    size_t _live = 0;  // references in _seg_refs: the committed messages (live_count)
    // Messages that may be uncommitted or relocating, the ones that pin the
    // tail beside _seg_refs: a superset (begin() and relocate() add, and
    // compute_tail() drops those that have settled), so the tail costs the
    // messages in flight, not every live one. Empty after recovery, which
    // drops unfinished messages and copies.
    mutable std::unordered_set<uint64_t> _unsettled;
    std::vector<uint64_t> _slot_seq;         // seg_seq held by each slot, 0 = never used
    uint64_t _next_counter = 1;

    // head of the log
    int _cur_slot = -1;
    uint64_t _cur_seq = 0;        // seg_seq of the current segment
    uint64_t _cur_off = 0;        // next write offset within the current segment
    uint64_t _recorded_tail = 0;  // tail written in the current segment's header
    uint64_t _cur_first_batch = 0;  // first_batch_seq of the current segment's header
    uint64_t _seg_seq_gap = 0;      // seg_seqs the next segment skips (damaged headers seen in recovery)
    uint64_t _next_batch_seq = 1;

    // batch buffers: [segment header block][batch header][records ...]
    disk::aligned_buffer _open_buf, _flight_buf;
    size_t _open_fill = 0;  // bytes of records in the open batch
    uint32_t _open_records = 0;
    std::vector<fixup> _open_fixups, _flight_fixups;
    std::deque<waiter> _waiters;
    uint64_t _durable_seq = 0;
    event _work;         // the open batch has records, or the tail is to be recorded
    bool _tail_wanted = false;  // record_tail_if_short() asked the writer to record the tail
    event _space;        // the open batch was taken by the writer, or a turn ended
    uint64_t _ticket_next = 0;     // append_record's order of arrival
    uint64_t _ticket_serving = 0;  // the ticket whose record goes in next
    event _writer_done;
    event _cleaner_kick;
    event _cleaner_done;
    gate _appends;  // append_record() calls in progress: close() waits for them
    bool _closing = false;
    bool _failed = false;
    std::string _fail_reason;
    bool _cleaner_running = false;
    stats _stats;
};

}  // namespace rw::fs
