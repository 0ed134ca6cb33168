// Spool tests on a real file with O_DIRECT: format, write, commit, read
// back byte-exact, per-recipient state, delete, recover after reopen, group
// commit with concurrent writers, wrap-around with the cleaner, full spool,
// and the refusals for foreign, newer and damaged devices.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <random>
#include <string>

#include "fs/crc32c.hh"
#include "fs/format.hh"
#include "fs/spool.hh"
#include "runtime/reactor/sync.hh"

using namespace rw;
using namespace rw::fs;
using rw::task;

namespace {

struct temp_file {
    std::string path;
    explicit temp_file(uint64_t size) {
        char tmpl[] = "rw_spool_XXXXXX";
        int fd = ::mkstemp(tmpl);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, off_t(size)) == 0);
        ::close(fd);
        path = tmpl;
    }
    ~temp_file() { ::unlink(path.c_str()); }
};

std::string body_for(uint64_t n, size_t len) {
    std::string s(len, '\0');
    std::mt19937_64 g(n);
    for (auto& c : s)
        c = char('a' + g() % 26);
    return s;
}

task<std::string> read_all(shard& s, uint64_t id) {
    std::string out;
    std::vector<char> buf(3000);  // odd size: crosses chunk boundaries
    for (;;) {
        auto r = co_await s.read_body(id, out.size(), std::span<char>(buf.data(), buf.size()));
        REQUIRE(r);
        if (r.value() == 0)
            break;
        out.append(buf.data(), r.value());
    }
    co_return out;
}

// The message as delivered, read in pieces of the given size.
task<std::string> read_message_all(shard& s, uint64_t id, size_t piece = 3000) {
    std::string out;
    std::vector<char> buf(piece);
    for (;;) {
        auto r = co_await s.read_message(id, out.size(), std::span<char>(buf.data(), buf.size()));
        REQUIRE(r);
        if (r.value() == 0)
            break;
        out.append(buf.data(), r.value());
    }
    co_return out;
}

// Read sizes for read_message: within the prefix, across an omitted
// range, larger than the message.
constexpr size_t k_read_pieces[] = {1, 7, 64, 100, 4096, 70000};

// What read_message must give: the prefix, then the body without the
// omitted ranges.
std::string as_delivered(const added_headers& a, const std::string& body) {
    std::string o = a.prefix;
    uint64_t at = 0;
    for (const auto& r : a.omit) {
        o += body.substr(at, r.offset - at);
        at = r.offset + r.length;
    }
    return o + body.substr(at);
}

task<std::unique_ptr<file_device>> open_dev(std::string path) {
    auto d = file_device::open(path, flush_mode::automatic);
    REQUIRE(d);
    co_return std::move(d.value());
}

}  // namespace

TEST_CASE("crc32c matches the RFC 3720 vectors, hardware and table alike", "[fs]") {
    std::string zeros(32, '\0'), ones(32, '\xff');
    REQUIRE(crc32c(zeros.data(), 32) == 0x8A9136AAu);
    REQUIRE(crc32c(ones.data(), 32) == 0x62A8AB43u);
    REQUIRE(crc32c("123456789", 9) == 0xE3069283u);
    std::string r = body_for(7, 1001);
    REQUIRE(crc32c(r.data(), r.size()) == crc32c_portable(r.data(), r.size()));
    REQUIRE(crc32c(r.data() + 5, 500, crc32c(r.data(), 5)) == crc32c(r.data(), 505));
}

TEST_CASE("messages survive a reopen byte-exact with their recipient states", "[fs]") {
    temp_file tf(64 << 20);
    run_local([](std::string path) -> task<void> {
        std::map<uint64_t, std::string> bodies;
        {
            auto dev = co_await open_dev(path);
            auto g = co_await format(*dev, {.shards = 1, .segment_bytes = 1 << 20});
            REQUIRE(g);
            auto sh = co_await shard::open(*dev, g.value(), {});
            REQUIRE(sh);
            shard& s = *sh.value();
            REQUIRE(s.recovered().messages == 0);
            for (int i = 0; i < 50; ++i) {
                envelope e{"sender" + std::to_string(i) + "@a.test", {"r1@b.test", "r2@c.test"}, "RET=HDRS", 1000 + i};
                auto w = s.begin(e);
                REQUIRE(w);
                std::string b = body_for(uint64_t(i), size_t(100 + i * 3000));
                for (size_t off = 0; off < b.size(); off += 1777) {
                    auto a = co_await w.value().append(std::span<const char>(b.data() + off, std::min<size_t>(1777, b.size() - off)));
                    REQUIRE(a);
                }
                auto id = co_await w.value().commit();
                REQUIRE(id);
                bodies[id.value()] = b;
            }
            // State changes and deletions.
            auto it = bodies.begin();
            uint64_t first = it->first;
            rcpt_state delivered{rcpt_status::delivered, 1, 0, "250 ok", 0};
            auto st = co_await s.set_rcpt_state(first, 1, delivered);
            REQUIRE(st);
            ++it;
            uint64_t second = it->first;
            rcpt_state later{rcpt_status::deferred, 1, 12345, "451 later", 0};
            auto st2 = co_await s.set_rcpt_state(second, 0, later);
            REQUIRE(st2);
            rcpt_state again{rcpt_status::deferred, 2, 23456, "451 again", 0, 0x2a};
            auto st3 = co_await s.set_rcpt_state(second, 0, again);
            REQUIRE(st3);
            ++it;
            uint64_t third = it->first;
            auto rm = co_await s.remove(third);
            REQUIRE(rm);
            bodies.erase(third);
            // A message begun and never committed must not come back.
            auto w = s.begin(envelope{"x@a.test", {"y@b.test"}, "", 1});
            REQUIRE(w);
            std::string junk = "not committed";
            auto a = co_await w.value().append(std::span<const char>(junk.data(), junk.size()));
            REQUIRE(a);
            co_await s.close();
        }
        auto dev = co_await open_dev(path);
        auto g = co_await read_superblock(*dev);
        REQUIRE(g);
        auto sh = co_await shard::open(*dev, g.value(), {});
        REQUIRE(sh);
        shard& s = *sh.value();
        REQUIRE(s.recovered().messages == bodies.size());
        REQUIRE(s.live_count() == bodies.size());
        for (auto& [id, b] : bodies) {
            auto v = s.find(id);
            REQUIRE(v);
            REQUIRE(v->body_bytes == b.size());
            REQUIRE(v->env.rcpts.size() == 2);
            std::string got = co_await read_all(s, id);
            REQUIRE(got == b);
        }
        auto v1 = s.find(bodies.begin()->first);
        REQUIRE(v1->rcpts[1].status == rcpt_status::delivered);
        REQUIRE(v1->rcpts[0].status == rcpt_status::pending);
        auto v2 = s.find(std::next(bodies.begin())->first);
        REQUIRE(v2->rcpts[0].status == rcpt_status::deferred);
        REQUIRE(v2->rcpts[0].attempts == 2);
        REQUIRE(v2->rcpts[0].last_reply == "451 again");
        REQUIRE(v2->rcpts[0].next_attempt_unix == 23456);
        REQUIRE(v2->rcpts[0].flags == 0x2a);  // the caller's bits, kept as given
        // A finished recipient's state is final.
        rcpt_state late{rcpt_status::deferred, 3, 1, "", 0};
        auto again = co_await s.set_rcpt_state(bodies.begin()->first, 1, late);
        REQUIRE(!again);
        co_await s.close();
    }(tf.path));
}

TEST_CASE("group commit: concurrent writers share batches", "[fs]") {
    temp_file tf(64 << 20);
    auto stats = run_local([](std::string path) -> task<shard::stats> {
        auto dev = co_await open_dev(path);
        auto g = co_await format(*dev, {.shards = 1, .segment_bytes = 4 << 20});
        REQUIRE(g);
        auto sh = co_await shard::open(*dev, g.value(), {});
        REQUIRE(sh);
        shard* s = sh.value().get();
        gate gt;
        int ok = 0;
        auto one = [](shard* sp, gate* gp, int n, int* okp) -> task<void> {
            gate::holder h(*gp);
            std::string b = body_for(uint64_t(n), 4096);
            auto w = sp->begin(envelope{"a@a.test", {"b@b.test"}, "", 0});
            REQUIRE(w);
            auto a = co_await w.value().append(std::span<const char>(b.data(), b.size()));
            REQUIRE(a);
            auto c = co_await w.value().commit();
            REQUIRE(c);
            ++*okp;
        };
        for (int i = 0; i < 256; ++i)
            spawn(one(s, &gt, i, &ok));
        co_await gt.wait_idle();
        REQUIRE(ok == 256);
        auto st = s->get_stats();
        co_await s->close();
        co_return st;
    }(tf.path));
    INFO("batches=" << stats.batches);
    REQUIRE(stats.batches < 64);  // 256 commits, far fewer writes
}

TEST_CASE("the ring wraps: deleted space is reused and the cleaner relocates live messages", "[fs]") {
    temp_file tf(4 << 20);  // 1 MiB header area + 3 MiB of 128 KiB segments = 24 slots
    run_local([](std::string path) -> task<void> {
        auto dev = co_await open_dev(path);
        auto g = co_await format(*dev, {.shards = 1, .segment_bytes = 128 << 10});
        REQUIRE(g);
        std::map<uint64_t, std::string> keep;
        std::map<uint64_t, added_headers> added;
        {
            auto sh = co_await shard::open(*dev, g.value(), {.batch_bytes = 32 << 10, .chunk_bytes = 8 << 10});
            REQUIRE(sh);
            shard& s = *sh.value();
            // 40x the spool's capacity passes through; one message in 50 stays.
            for (int i = 0; i < 3000; ++i) {
                std::string b = body_for(uint64_t(i), 3000 + size_t(i % 7) * 1000);
                auto w = s.begin(envelope{"a@a.test", {"b@b.test"}, "", i});
                int tries = 0;
                while (!w && tries++ < 100) {
                    auto p = io::sleep(std::chrono::milliseconds(5));
                    co_await p;  // let the cleaner catch up
                    w = s.begin(envelope{"a@a.test", {"b@b.test"}, "", i});
                }
                REQUIRE(w);
                auto a = co_await w.value().append(std::span<const char>(b.data(), b.size()));
                if (!a) {
                    auto st = s.get_stats();
                    FAIL("append " << i << ": " << a.error().detail << " free=" << st.free_slots << " tail="
                                   << st.tail_seq << " head=" << st.head_seq << " relocated=" << st.relocated);
                }
                // Kept messages carry added headers and an omitted range,
                // which the cleaner must move along with them.
                added_headers add;
                if (i % 50 == 0) {
                    add.prefix = "X-Kept: " + std::to_string(i) + "\r\n";
                    add.omit.push_back(omit_range{10, uint32_t(5 + i % 3)});
                }
                auto id = co_await w.value().commit(add);
                REQUIRE(id);
                if (i % 50 == 0) {
                    added[id.value()] = add;
                    keep[id.value()] = b;
                } else {
                    auto rm = co_await s.remove(id.value());
                    REQUIRE(rm);
                }
            }
            auto st = s.get_stats();
            INFO("relocated=" << st.relocated << " segments_opened=" << st.segments_opened);
            REQUIRE(st.segments_opened > 48);  // wrapped at least twice
            REQUIRE(st.relocated > 0);
            for (auto& [id, b] : keep) {
                auto got1 = co_await read_all(s, id);
                REQUIRE(got1 == b);
                auto got2 = co_await read_message_all(s, id);
                REQUIRE(got2 == as_delivered(added[id], b));
            }
            co_await s.close();
        }
        auto sh = co_await shard::open(*dev, g.value(), {.batch_bytes = 32 << 10, .chunk_bytes = 8 << 10});
        REQUIRE(sh);
        shard& s = *sh.value();
        REQUIRE(s.live_count() == keep.size());
        for (auto& [id, b] : keep) {
            auto got3 = co_await read_all(s, id);
            REQUIRE(got3 == b);
            auto got4 = co_await read_message_all(s, id);
            REQUIRE(got4 == as_delivered(added[id], b));
            auto a = co_await s.read_added(id);
            REQUIRE(a);
            REQUIRE(a.value() == added[id]);
        }
        co_await s.close();
    }(tf.path));
}

TEST_CASE("first recipient states given at commit are there at once and after a reopen", "[fs]") {
    temp_file tf(16 << 20);
    run_local([](std::string path) -> task<void> {
        uint64_t held = 0;
        const std::string body = "Subject: x\r\n\r\n" + body_for(3, 9000);
        {
            auto dev = co_await open_dev(path);
            auto g = co_await format(*dev, {.shards = 1, .segment_bytes = 1 << 20});
            REQUIRE(g);
            auto sh = co_await shard::open(*dev, g.value(), {.chunk_bytes = 4096});
            REQUIRE(sh);
            shard& s = *sh.value();
            auto w = s.begin(envelope{"a@a.test", {"b@b.test", "c@c.test", "d@d.test"}, "", 1});
            REQUIRE(w);
            auto a = co_await w.value().append(std::span<const char>(body.data(), body.size()));
            REQUIRE(a);
            const added_headers add{"X-Added: 1\r\n", {}};
            // Two of three given: the third stays pending.
            const std::vector<rcpt_state> states = {{rcpt_status::deferred, 0, 99999, "held: policy", 0, 4},
                                                    {rcpt_status::deferred, 0, 99999, "held: policy", 0, 4}};
            auto id = co_await w.value().commit(add, states);
            REQUIRE(id);
            held = id.value();
            auto v = s.find(held);
            REQUIRE(v);
            REQUIRE(v->rcpts[0].status == rcpt_status::deferred);
            REQUIRE(v->rcpts[1].flags == 4);
            REQUIRE(v->rcpts[2].status == rcpt_status::pending);
            co_await s.close();
        }
        auto dev = co_await open_dev(path);
        auto g = co_await read_superblock(*dev);
        REQUIRE(g);
        auto sh = co_await shard::open(*dev, g.value(), {.chunk_bytes = 4096});
        REQUIRE(sh);
        shard& s = *sh.value();
        auto v = s.find(held);
        REQUIRE(v);
        for (uint32_t i = 0; i < 2; ++i) {
            REQUIRE(v->rcpts[i].status == rcpt_status::deferred);
            REQUIRE(v->rcpts[i].next_attempt_unix == 99999);
            REQUIRE(v->rcpts[i].last_reply == "held: policy");
            REQUIRE(v->rcpts[i].flags == 4);
        }
        REQUIRE(v->rcpts[2].status == rcpt_status::pending);
        // Later states go on from the first ones.
        rcpt_state released{rcpt_status::pending, 0, 0, "", 0, 0};
        auto st = co_await s.set_rcpt_state(held, 0, released);
        REQUIRE(st);
        REQUIRE(s.find(held)->rcpts[0].status == rcpt_status::pending);
        std::string got = co_await read_all(s, held);
        REQUIRE(got == body);
        co_await s.close();
    }(tf.path));
}

TEST_CASE("added headers and omitted ranges: read as delivered, kept across a reopen", "[fs]") {
    temp_file tf(16 << 20);
    run_local([](std::string path) -> task<void> {
        std::string body = "Authentication-Results: us; spf=pass\r\nFrom: a@a.test\r\n"
                           "Authentication-Results: us; dkim=pass\r\nSubject: hi\r\n\r\n" +
                           body_for(7, 20000);
        const uint32_t ar1 = uint32_t(body.find("From:"));
        const uint64_t ar2_at = body.find("Authentication-Results: us; dkim");
        const uint32_t ar2 = uint32_t(body.find("Subject:") - ar2_at);
        added_headers add;
        add.prefix = "Received: from x by y; Mon, 7 Dec 2026 06:00:00 +0000\r\n"
                     "Authentication-Results: us; spf=pass smtp.mailfrom=a.test\r\n";
        add.omit.push_back(omit_range{0, ar1});
        add.omit.push_back(omit_range{ar2_at, ar2});
        const std::string want = as_delivered(add, body);
        REQUIRE(want.find("dkim=pass") == std::string::npos);
        uint64_t with = 0, without = 0;
        {
            auto dev = co_await open_dev(path);
            auto g = co_await format(*dev, {.shards = 1, .segment_bytes = 1 << 20});
            REQUIRE(g);
            REQUIRE(g.value().version == k_format_version);
            auto sh = co_await shard::open(*dev, g.value(), {.chunk_bytes = 4096});
            REQUIRE(sh);
            shard& s = *sh.value();
            auto w = s.begin(envelope{"a@a.test", {"b@b.test"}, "", 1});
            REQUIRE(w);
            auto a_w = co_await w.value().append(std::span<const char>(body.data(), body.size()));
            REQUIRE(a_w);
            auto id = co_await w.value().commit(add);
            REQUIRE(id);
            with = id.value();
            auto w2 = s.begin(envelope{"a@a.test", {"b@b.test"}, "", 1});
            REQUIRE(w2);
            auto a_w2 = co_await w2.value().append(std::span<const char>(body.data(), body.size()));
            REQUIRE(a_w2);
            auto id2 = co_await w2.value().commit();
            REQUIRE(id2);
            without = id2.value();
            // Ranges outside the body or out of order are refused, before
            // anything is acknowledged.
            std::vector<std::vector<omit_range>> bads;
            bads.resize(3);
            bads[0].push_back(omit_range{uint64_t(body.size()) - 2, 5});
            bads[1].push_back(omit_range{50, 5});
            bads[1].push_back(omit_range{40, 5});
            bads[2].push_back(omit_range{3, 0});
            for (const auto& bad : bads) {
                auto w3 = s.begin(envelope{"a@a.test", {"b@b.test"}, "", 1});
                REQUIRE(w3);
                auto a_w3 = co_await w3.value().append(std::span<const char>(body.data(), body.size()));
            REQUIRE(a_w3);
                const added_headers wrong{"X: y\r\n", bad};
                auto id3 = co_await w3.value().commit(wrong);
                REQUIRE(!id3);
            }
            REQUIRE(s.live_count() == 2);
            co_await s.close();
        }
        auto dev = co_await open_dev(path);
        auto g = co_await read_superblock(*dev);
        REQUIRE(g);
        auto sh = co_await shard::open(*dev, g.value(), {.chunk_bytes = 4096});
        REQUIRE(sh);
        shard& s = *sh.value();
        REQUIRE(s.live_count() == 2);
        auto v = s.find(with);
        REQUIRE(v);
        REQUIRE(v->body_bytes == body.size());
        REQUIRE(v->message_bytes == want.size());
        auto got5 = co_await read_all(s, with);  // the body as received, untouched
        REQUIRE(got5 == body);
        // Every piece size, including ones that end inside the prefix and
        // right at an omitted range.
        for (size_t piece : k_read_pieces) {
            auto got6 = co_await read_message_all(s, with, piece);
            REQUIRE(got6 == want);
        }
        auto a = co_await s.read_added(with);
        REQUIRE(a);
        REQUIRE(a.value() == add);
        auto v2 = s.find(without);
        REQUIRE(v2->message_bytes == body.size());
        auto got7 = co_await read_message_all(s, without);
        REQUIRE(got7 == body);
        auto none = co_await s.read_added(without);
        REQUIRE(none);
        REQUIRE(none.value().empty());
        co_await s.close();
    }(tf.path));
}

TEST_CASE("a version 1 spool is read and stamped version 2 one copy at a time", "[fs]") {
    temp_file tf(8 << 20);
    run_local([](std::string path) -> task<void> {
        auto dev = co_await open_dev(path);
        auto g = co_await format(*dev, {.shards = 1, .segment_bytes = 256 << 10});
        REQUIRE(g);
        disk::aligned_buffer b(8192);
        auto got8 = co_await dev->read(b.data(), 8192, 0);
        REQUIRE(got8 == 0);
        for (int copy = 0; copy < 2; ++copy) {
            superblock sb;
            std::memcpy(&sb, b.data() + copy * 4096, sizeof sb);
            sb.version = 1;
            sb.crc = 0;
            sb.crc = crc32c(&sb, sizeof sb);
            std::memcpy(b.data() + copy * 4096, &sb, sizeof sb);
        }
        auto got9 = co_await dev->write(b.data(), 8192, 0);
        REQUIRE(got9 == 0);
        auto old = co_await read_superblock(*dev);
        REQUIRE(old);
        REQUIRE(old.value().version == 1);
        auto u = co_await upgrade_superblock(*dev, old.value());
        REQUIRE(u);
        REQUIRE(old.value().version == k_format_version);
        auto got10 = co_await dev->read(b.data(), 8192, 0);
        REQUIRE(got10 == 0);
        for (int copy = 0; copy < 2; ++copy) {
            superblock sb;
            std::memcpy(&sb, b.data() + copy * 4096, sizeof sb);
            REQUIRE(sb.version == k_format_version);
            REQUIRE(sb.spool_id == g.value().spool_id);
        }
        auto now = co_await read_superblock(*dev);
        REQUIRE(now);
        REQUIRE(now.value().version == k_format_version);
        // An upgrade cut short: copy A stamped, copy B not. The spool reads
        // as the older version, and the upgrade stamps the copy left.
        superblock sbb;
        std::memcpy(&sbb, b.data() + 4096, sizeof sbb);
        sbb.version = 1;
        sbb.crc = 0;
        sbb.crc = crc32c(&sbb, sizeof sbb);
        std::memcpy(b.data() + 4096, &sbb, sizeof sbb);
        REQUIRE((co_await dev->write(b.data(), 8192, 0)) == 0);
        auto half = co_await read_superblock(*dev);
        REQUIRE(half);
        REQUIRE(half.value().version == 1);
        auto u2 = co_await upgrade_superblock(*dev, half.value());
        REQUIRE(u2);
        REQUIRE((co_await dev->read(b.data(), 8192, 0)) == 0);
        std::memcpy(&sbb, b.data() + 4096, sizeof sbb);
        REQUIRE(sbb.version == k_format_version);
    }(tf.path));
}

TEST_CASE("a spool full of live mail says full before acknowledging", "[fs]") {
    temp_file tf(2 << 20);
    run_local([](std::string path) -> task<void> {
        auto dev = co_await open_dev(path);
        auto g = co_await format(*dev, {.shards = 1, .segment_bytes = 64 << 10});
        REQUIRE(g);
        auto sh = co_await shard::open(*dev, g.value(), {.batch_bytes = 16 << 10, .chunk_bytes = 4 << 10});
        REQUIRE(sh);
        shard& s = *sh.value();
        int committed = 0;
        bool saw_full = false;
        std::string b = body_for(1, 8000);
        for (int i = 0; i < 1000 && !saw_full; ++i) {
            auto w = s.begin(envelope{"a@a.test", {"b@b.test"}, "", i});
            if (!w) {
                REQUIRE(w.error().code == spool_errc::full);
                saw_full = true;
                break;
            }
            auto a = co_await w.value().append(std::span<const char>(b.data(), b.size()));
            if (!a) {
                REQUIRE(a.error().code == spool_errc::full);
                saw_full = true;
                break;
            }
            auto c = co_await w.value().commit();
            REQUIRE(c);
            ++committed;
        }
        REQUIRE(saw_full);
        REQUIRE(s.health() != spool_health::failed);
        REQUIRE(committed > 50);
        size_t live = s.live_count();
        REQUIRE(live == size_t(committed));
        // State changes still fit in the reserve.
        auto ids = s.live_ids();
        rcpt_state d{rcpt_status::deferred, 1, 5, "451", 0};
        auto st = co_await s.set_rcpt_state(ids[0], 0, d);
        REQUIRE(st);
        co_await s.close();
        auto sh2 = co_await shard::open(*dev, g.value(), {.batch_bytes = 16 << 10, .chunk_bytes = 4 << 10});
        REQUIRE(sh2);
        REQUIRE(sh2.value()->live_count() == live);
        co_await sh2.value()->close();
    }(tf.path));
}

TEST_CASE("foreign, newer, damaged and too small devices are refused with the device named", "[fs]") {
    temp_file tf(8 << 20);
    run_local([](std::string path) -> task<void> {
        auto dev = co_await open_dev(path);
        auto r = co_await read_superblock(*dev);
        REQUIRE(!r);
        REQUIRE_THAT(r.error(), Catch::Contains(path) && Catch::Contains("not a Ringway spool"));
        auto g = co_await format(*dev, {.shards = 2, .segment_bytes = 256 << 10});
        REQUIRE(g);
        auto again = co_await format(*dev, {.shards = 2, .segment_bytes = 256 << 10});
        REQUIRE(!again);
        REQUIRE_THAT(again.error(), Catch::Contains("already holds a spool"));
        // Newer format version in both copies.
        disk::aligned_buffer b(8192);
        REQUIRE((co_await dev->read(b.data(), 8192, 0)) == 0);
        for (int copy = 0; copy < 2; ++copy) {
            superblock sb;
            std::memcpy(&sb, b.data() + copy * 4096, sizeof sb);
            sb.version = 99;
            sb.crc = 0;
            sb.crc = crc32c(&sb, sizeof sb);
            std::memcpy(b.data() + copy * 4096, &sb, sizeof sb);
        }
        REQUIRE((co_await dev->write(b.data(), 8192, 0)) == 0);
        auto newer = co_await read_superblock(*dev);
        REQUIRE(!newer);
        REQUIRE_THAT(newer.error(), Catch::Contains("newer"));
        // Damage both copies.
        b.data()[100] ^= 1;
        b.data()[4096 + 100] ^= 1;
        REQUIRE((co_await dev->write(b.data(), 8192, 0)) == 0);
        auto dmg = co_await read_superblock(*dev);
        REQUIRE(!dmg);
        REQUIRE_THAT(dmg.error(), Catch::Contains("damaged"));
        // One good copy is enough.
        auto g2 = co_await format(*dev, {.shards = 1, .segment_bytes = 256 << 10, .force = true});
        REQUIRE(g2);
        REQUIRE((co_await dev->read(b.data(), 8192, 0)) == 0);
        b.data()[200] ^= 1;
        REQUIRE((co_await dev->write(b.data(), 4096, 0)) == 0);
        auto one = co_await read_superblock(*dev);
        REQUIRE(one);
        REQUIRE(one.value().spool_id == g2.value().spool_id);
    }(tf.path));
    temp_file small(1 << 20);
    run_local([](std::string path) -> task<void> {
        auto dev = co_await open_dev(path);
        auto g = co_await format(*dev, {.shards = 1, .segment_bytes = 1 << 20});
        REQUIRE(!g);
        REQUIRE_THAT(g.error(), Catch::Contains(path) && Catch::Contains("too small"));
    }(small.path));
}
