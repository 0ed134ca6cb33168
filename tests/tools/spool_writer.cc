// spool_writer / spool_check: the two halves of the real-process crash test
// (tests/integration/spool_kill_test.sh).
//
//   spool_writer --path P [--format] [--writers 32] [--seconds 5]
//     Opens (or formats) the spool on P and commits messages from many
//     concurrent writers until killed, printing "ACK <id>" once a commit has
//     returned (i.e. is durable) and "DEL <id>" once a remove has returned.
//     Each message's body is derived from a seed carried in its sender, so a
//     checker can verify it byte-exact without any other record.
//   spool_check --path P --log FILE
//     Recovers the spool and checks it against every log line: each ACKed
//     message not later DELeted is present and byte-exact; each DELeted one
//     is absent; nothing present is corrupt. Exit 0 = consistent.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <string>

#include "fs/spool.hh"
#include "runtime/reactor/sync.hh"

using namespace rw;

namespace {

std::string body_for(uint64_t seed) {
    std::mt19937_64 g(seed);
    size_t len = size_t(g() % 40000);
    std::string s(len, '\0');
    for (auto& c : s)
        c = char(g() & 0xff);
    return s;
}

void say(const char* kind, uint64_t id) {
    char line[64];
    int n = std::snprintf(line, sizeof line, "%s %llu\n", kind, (unsigned long long)id);
    // One write(2) per line: the line is whole in the pipe when we die.
    [[maybe_unused]] ssize_t w = ::write(1, line, size_t(n));
}

task<int> writer_main(std::string path, bool do_format, unsigned writers, double seconds) {
    auto dev = fs::file_device::open(path, fs::flush_mode::automatic);
    if (!dev) {
        std::fprintf(stderr, "%s\n", dev.error().c_str());
        co_return 1;
    }
    fs::geometry g;
    if (do_format) {
        fs::format_options fo;
        fo.shards = 1;
        fo.segment_bytes = 1 << 20;
        fo.force = true;
        auto r = co_await fs::format(*dev.value(), fo);
        if (!r) {
            std::fprintf(stderr, "%s\n", r.error().c_str());
            co_return 1;
        }
        g = r.value();
    } else {
        auto r = co_await fs::read_superblock(*dev.value());
        if (!r) {
            std::fprintf(stderr, "%s\n", r.error().c_str());
            co_return 1;
        }
        g = r.value();
    }
    auto sh = co_await fs::shard::open(*dev.value(), g, {.batch_bytes = 256 << 10, .chunk_bytes = 16 << 10});
    if (!sh) {
        std::fprintf(stderr, "%s\n", sh.error().c_str());
        co_return 1;
    }
    fs::shard* s = sh.value().get();
    std::random_device rd;
    uint64_t base = (uint64_t(rd()) << 32) ^ rd();
    gate gt;
    bool stop = false;
    auto worker = [](fs::shard* sp, uint64_t seed0, bool* st, gate* gp) -> task<void> {
        gate::holder h(*gp);
        std::mt19937_64 rng(seed0);
        for (uint64_t k = 0; !*st; ++k) {
            uint64_t seed = seed0 + k * 7919;
            fs::envelope env{"s" + std::to_string(seed) + "@kill.test", {"r@kill.test"}, "", 0};
            auto w = sp->begin(std::move(env));
            if (!w) {
                auto p = io::sleep(std::chrono::milliseconds(2));
                co_await p;
                continue;
            }
            std::string b = body_for(seed);
            size_t off = 0;
            bool ok = true;
            while (off < b.size()) {
                size_t n = std::min<size_t>(b.size() - off, 1 + rng() % 9000);
                auto a = co_await w.value().append(std::span<const char>(b.data() + off, n));
                if (!a) {
                    ok = false;
                    break;
                }
                off += n;
            }
            if (!ok)
                continue;
            auto id = co_await w.value().commit();
            if (!id)
                continue;
            say("ACK", id.value());
            if (rng() % 3 != 0) {
                // A remove in flight when we are killed may or may not
                // have happened: say so before starting it.
                say("RM", id.value());
                auto rm = co_await sp->remove(id.value());
                if (rm)
                    say("DEL", id.value());
            }
        }
    };
    for (unsigned i = 0; i < writers; ++i)
        spawn(worker(s, base + uint64_t(i) * 1000003, &stop, &gt));
    auto sl = io::sleep(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds)));
    co_await sl;
    stop = true;
    co_await gt.wait_idle();
    co_await s->close();
    co_return 0;
}

task<int> check_main(std::string path, std::string log) {
    std::set<uint64_t> acked, deleted, removing;
    std::ifstream in(log);
    std::string kind;
    unsigned long long id;
    while (in >> kind >> id) {
        if (kind == "ACK")
            acked.insert(id);
        else if (kind == "DEL")
            deleted.insert(id);
        else if (kind == "RM")
            removing.insert(id);
    }
    auto dev = fs::file_device::open(path, fs::flush_mode::automatic);
    if (!dev) {
        std::fprintf(stderr, "%s\n", dev.error().c_str());
        co_return 1;
    }
    auto g = co_await fs::read_superblock(*dev.value());
    if (!g) {
        std::fprintf(stderr, "%s\n", g.error().c_str());
        co_return 1;
    }
    auto sh = co_await fs::shard::open(*dev.value(), g.value(), {.cleaner = false});
    if (!sh) {
        std::fprintf(stderr, "%s\n", sh.error().c_str());
        co_return 1;
    }
    fs::shard* s = sh.value().get();
    int bad = 0;
    for (uint64_t a : acked) {
        if (deleted.count(a) || removing.count(a))
            continue;  // removed, or a remove was in flight at the kill
        if (!s->find(a)) {
            std::fprintf(stderr, "LOST: acknowledged message %llu is missing\n", (unsigned long long)a);
            ++bad;
        }
    }
    for (uint64_t d : deleted)
        if (s->find(d)) {
            std::fprintf(stderr, "RESURRECTED: removed message %llu is back\n", (unsigned long long)d);
            ++bad;
        }
    uint64_t checked = 0;
    for (uint64_t lid : s->live_ids()) {
        auto v = s->find(lid);
        const std::string& from = v->env.mail_from;
        uint64_t seed = std::stoull(from.substr(1, from.find('@') - 1));
        std::string want = body_for(seed);
        std::string got(v->body_bytes, '\0');
        auto r = co_await s->read_body(lid, 0, std::span<char>(got.data(), got.size()));
        if (!r || r.value() != want.size() || got != want) {
            std::fprintf(stderr, "CORRUPT: message %llu body differs\n", (unsigned long long)lid);
            ++bad;
        }
        ++checked;
    }
    const auto& rep = s->recovered();
    std::printf("check: acked=%zu deleted=%zu live=%zu verified=%llu torn=%llu incomplete=%llu quarantined=%llu bad=%d\n",
                acked.size(), deleted.size(), s->live_count(), (unsigned long long)checked,
                (unsigned long long)rep.torn_batches, (unsigned long long)rep.incomplete,
                (unsigned long long)rep.quarantined_records, bad);
    co_await s->close();
    co_return bad == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::string self = argv[0];
    bool check = self.find("spool_check") != std::string::npos;
    CLI::App app{check ? "Verify a spool against a writer's log" : "Write to a spool until killed"};
    std::string path, log;
    bool do_format = false;
    unsigned writers = 32;
    double seconds = 5;
    app.add_option("--path", path)->required();
    if (check) {
        app.add_option("--log", log)->required();
    } else {
        app.add_flag("--format", do_format);
        app.add_option("--writers", writers);
        app.add_option("--seconds", seconds);
    }
    CLI11_PARSE(app, argc, argv);
    if (check)
        return run_local(check_main(path, log));
    return run_local(writer_main(path, do_format, writers, seconds));
}
