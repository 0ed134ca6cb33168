// spool_bench: durable commits/s of the spool against the device's own
// limits, in one run on one core:
//   raw-sync   a loop of 4 KiB O_DIRECT write + fdatasync, one per message
//              (what one-flush-per-message would allow);
//   raw-seq    sequential O_DIRECT write bandwidth (4 MiB writes);
//   spool      4 KiB (and 64 KiB) messages committed by N concurrent writers;
//   recovery   reopening a spool that holds --recover-messages live messages.
// Reports medians over --runs, CPU per committed message (getrusage), and
// the ratios the targets are stated in. A micro-benchmark of the fs layer,
// so it links fs (the load generator does not).
//
//   spool_bench --path FILE_OR_BLOCKDEV [--seconds 2] [--runs 3]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fs/spool.hh"
#include "runtime/reactor/sync.hh"

using namespace rw;
using clk = std::chrono::steady_clock;

namespace {

double cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

// One flush per message: the baseline group commit must beat.
double raw_sync(const std::string& path, double seconds) {
    int fd = ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    if (fd < 0) {
        std::perror("open");
        std::exit(1);
    }
    disk::aligned_buffer b(4096);
    std::memset(b.data(), 'r', 4096);
    uint64_t n = 0, off = 64 << 20;
    // Write the region once first, so no write lands on an unwritten
    // extent of a file (the spool's format does the same).
    {
        disk::aligned_buffer z(16 << 20);
        if (::pwrite(fd, z.data(), z.size(), off_t(off)) != ssize_t(z.size()) || ::fdatasync(fd) != 0) {
            std::perror("raw prefill");
            std::exit(1);
        }
    }
    auto t0 = clk::now();
    while (std::chrono::duration<double>(clk::now() - t0).count() < seconds) {
        if (::pwrite(fd, b.data(), 4096, off_t(off + (n % 4096) * 4096)) != 4096 || ::fdatasync(fd) != 0) {
            std::perror("raw write");
            std::exit(1);
        }
        ++n;
    }
    double el = std::chrono::duration<double>(clk::now() - t0).count();
    ::close(fd);
    return double(n) / el;
}

double raw_seq_mbps(const std::string& path, double seconds, uint64_t dev_bytes) {
    int fd = ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    disk::aligned_buffer b(4 << 20);
    std::memset(b.data(), 's', b.size());
    auto t0 = clk::now();
    uint64_t bytes = 0, off = 64 << 20;
    while (std::chrono::duration<double>(clk::now() - t0).count() < seconds) {
        if (off + b.size() > dev_bytes)
            off = 64 << 20;
        if (::pwrite(fd, b.data(), b.size(), off_t(off)) != ssize_t(b.size())) {
            std::perror("seq write");
            std::exit(1);
        }
        off += b.size();
        bytes += b.size();
    }
    ::fdatasync(fd);
    double el = std::chrono::duration<double>(clk::now() - t0).count();
    ::close(fd);
    return double(bytes) / el / 1e6;
}

struct spool_result {
    double msgs_per_s = 0;
    double cpu_us_per_msg = 0;
    double batches_per_s = 0;
};

size_t g_batch_bytes = fs::shard_options{}.batch_bytes;

task<spool_result> spool_run(std::string path, unsigned writers, size_t msg_bytes, double seconds) {
    auto dev = fs::file_device::open(path, fs::flush_mode::automatic);
    if (!dev)
        throw std::runtime_error(dev.error());
    fs::format_options fo;
    fo.shards = 1;
    fo.force = true;
    auto g = co_await fs::format(*dev.value(), fo);
    if (!g)
        throw std::runtime_error(g.error());
    fs::shard_options so;
    so.batch_bytes = g_batch_bytes;
    auto sh = co_await fs::shard::open(*dev.value(), g.value(), so);
    if (!sh)
        throw std::runtime_error(sh.error());
    fs::shard* s = sh.value().get();
    std::string body(msg_bytes, 'm');
    uint64_t done = 0;
    bool stop = false;
    gate gt;
    auto worker = [](fs::shard* sp, std::string* b, uint64_t* d, bool* st, gate* gp) -> task<void> {
        gate::holder h(*gp);
        while (!*st) {
            fs::envelope env{"sender@bench.test", {"rcpt@bench.test"}, "", 0};
            auto w = sp->begin(std::move(env));
            if (!w)
                break;
            auto a = co_await w.value().append(std::span<const char>(b->data(), b->size()));
            if (!a)
                break;
            auto id = co_await w.value().commit();
            if (!id)
                break;
            ++*d;
            // Keep the spool from filling: finished messages are deleted,
            // as delivery would, without waiting for it to be durable.
            auto rm = sp->remove(id.value());
            spawn([](task<result<void, fs::spool_error>> t) -> task<void> { (void)co_await std::move(t); }(std::move(rm)));
        }
    };
    auto b0 = s->get_stats().batches;
    double c0 = cpu_seconds();
    auto t0 = clk::now();
    for (unsigned i = 0; i < writers; ++i)
        spawn(worker(s, &body, &done, &stop, &gt));
    auto sl = io::sleep(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds)));
    co_await sl;
    uint64_t at_stop = done;
    auto t1 = clk::now();
    double c1 = cpu_seconds();
    auto b1 = s->get_stats().batches;
    stop = true;
    co_await gt.wait_idle();
    co_await s->close();
    double el = std::chrono::duration<double>(t1 - t0).count();
    spool_result r;
    r.msgs_per_s = double(at_stop) / el;
    r.cpu_us_per_msg = at_stop ? (c1 - c0) / double(at_stop) * 1e6 : 0;
    r.batches_per_s = double(b1 - b0) / el;
    co_return r;
}

struct recovery_result {
    double fill_s = 0;
    double recover_ms = 0;
    uint64_t messages = 0;
};

task<recovery_result> recovery_run(std::string path, uint64_t count) {
    recovery_result rr;
    auto dev = fs::file_device::open(path, fs::flush_mode::automatic);
    if (!dev)
        throw std::runtime_error(dev.error());
    fs::format_options fo;
    fo.shards = 1;
    fo.force = true;
    auto g = co_await fs::format(*dev.value(), fo);
    if (!g)
        throw std::runtime_error(g.error());
    {
        auto sh = co_await fs::shard::open(*dev.value(), g.value(), {});
        if (!sh)
            throw std::runtime_error(sh.error());
        fs::shard* s = sh.value().get();
        std::string body(4096, 'r');
        uint64_t next = 0;
        gate gt;
        auto t0 = clk::now();
        auto worker = [](fs::shard* sp, std::string* b, uint64_t* n, uint64_t total, gate* gp) -> task<void> {
            gate::holder h(*gp);
            while (*n < total) {
                ++*n;
                fs::envelope env{"sender@bench.test", {"rcpt@bench.test"}, "", 0};
                auto w = sp->begin(std::move(env));
                if (!w)
                    throw std::runtime_error("spool full while filling for the recovery benchmark");
                auto a = co_await w.value().append(std::span<const char>(b->data(), b->size()));
                auto id = co_await w.value().commit();
                if (!a || !id)
                    throw std::runtime_error("commit failed while filling");
            }
        };
        for (int i = 0; i < 128; ++i)
            spawn(worker(s, &body, &next, count, &gt));
        co_await gt.wait_idle();
        rr.fill_s = std::chrono::duration<double>(clk::now() - t0).count();
        co_await s->close();
    }
    // Drop the page cache's copy? O_DIRECT reads bypass it anyway.
    auto t0 = clk::now();
    auto sh = co_await fs::shard::open(*dev.value(), g.value(), {.cleaner = false});
    if (!sh)
        throw std::runtime_error(sh.error());
    rr.recover_ms = std::chrono::duration<double, std::milli>(clk::now() - t0).count();
    rr.messages = sh.value()->live_count();
    co_await sh.value()->close();
    co_return rr;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Spool benchmark: group commit against the device's raw limits"};
    std::string path;
    double seconds = 2;
    int runs = 3;
    uint64_t recover_messages = 200000;
    std::vector<unsigned> writer_counts{1, 16, 64, 256};
    app.add_option("--path", path, "file or block device to use (its contents are destroyed)")->required();
    app.add_option("--seconds", seconds, "per measurement")->check(CLI::Range(0.2, 60.0));
    app.add_option("--runs", runs, "repetitions; medians are reported")->check(CLI::Range(1, 20));
    app.add_option("--recover-messages", recover_messages, "live 4 KiB messages for the recovery test (0 = skip)");
    app.add_option("--writers", writer_counts, "concurrent writers to measure");
    app.add_option("--batch-bytes", g_batch_bytes, "largest write batch of the spool (default: the spool's)");
    CLI11_PARSE(app, argc, argv);

    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) {
        std::fprintf(stderr, "spool_bench: %s: %s\n", path.c_str(), std::strerror(errno));
        return 1;
    }
    uint64_t dev_bytes = 0;
    {
        int fd = ::open(path.c_str(), O_RDONLY);
        dev_bytes = uint64_t(::lseek(fd, 0, SEEK_END));
        ::close(fd);
    }
    bool bdev = S_ISBLK(st.st_mode);
    std::printf("device %s (%s, %.0f MiB), %d runs x %.1f s, medians\n", path.c_str(), bdev ? "block device" : "file",
                double(dev_bytes) / 1048576.0, runs, seconds);

    std::vector<double> sync_v, seq_v;
    for (int i = 0; i < runs; ++i) {
        sync_v.push_back(raw_sync(path, seconds));
        seq_v.push_back(raw_seq_mbps(path, seconds, dev_bytes));
    }
    double raw_sync_med = median(sync_v), raw_seq_med = median(seq_v);
    std::printf("raw 4 KiB O_DIRECT write + fdatasync, one at a time: %.0f /s\n", raw_sync_med);
    std::printf("raw sequential O_DIRECT write (4 MiB writes):       %.0f MB/s\n", raw_seq_med);

    std::printf("\n%-10s %-8s %12s %12s %12s %14s\n", "msg size", "writers", "commits/s", "x raw sync", "batches/s",
                "CPU us/commit");
    for (size_t msg : {size_t(4096), size_t(65536)}) {
        for (unsigned w : writer_counts) {
            if (msg == 65536 && w != writer_counts.back() && w != 64)
                continue;
            std::vector<double> rate, cpu, bps;
            for (int i = 0; i < runs; ++i) {
                auto r = run_local(spool_run(path, w, msg, seconds));
                rate.push_back(r.msgs_per_s);
                cpu.push_back(r.cpu_us_per_msg);
                bps.push_back(r.batches_per_s);
            }
            double m = median(rate);
            std::printf("%-10s %-8u %12.0f %12.1f %12.0f %14.1f", msg == 4096 ? "4 KiB" : "64 KiB", w, m,
                        m / raw_sync_med, median(bps), median(cpu));
            if (msg == 65536)
                std::printf("   %.0f MB/s = %.0f%% of raw sequential", m * 65536 / 1e6, m * 65536 / 1e6 / raw_seq_med * 100);
            std::printf("\n");
        }
    }
    if (recover_messages > 0) {
        uint64_t need = recover_messages * 4300 + (64 << 20);
        if (need > dev_bytes) {
            std::printf("\nrecovery: skipped, %llu messages need %.0f MiB\n", (unsigned long long)recover_messages,
                        double(need) / 1048576.0);
        } else {
            auto rr = run_local(recovery_run(path, recover_messages));
            std::printf("\nrecovery of %llu live 4 KiB messages: %.0f ms (filled in %.1f s)\n",
                        (unsigned long long)rr.messages, rr.recover_ms, rr.fill_s);
        }
    }
    return 0;
}
