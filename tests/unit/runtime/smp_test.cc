// Cross-core messaging under concurrency: many coroutines on every core
// submit to every other core at once through small bounded rings (so the
// back-pressure path runs), and the engine stops cleanly from another thread.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include "runtime/reactor/sync.hh"
#include "runtime/smp/barrier.hh"
#include "runtime/smp/smp.hh"

using namespace std::chrono_literals;
using rw::task;

namespace {
// Per-core state: touched only by its own core.
struct alignas(64) core_state {
    uint64_t hits = 0;
    uint64_t sum = 0;
};
core_state g_state[8];
}  // namespace

TEST_CASE("submit_to runs on the target core and returns the result", "[smp]") {
    rw::engine_options o;
    o.cores = 2;
    o.pin = false;
    o.queue_capacity = 4;  // tiny: exercises the full-ring path
    auto e = rw::engine::create(o);
    REQUIRE(e);
    for (auto& s : g_state)
        s = {};
    constexpr int workers = 64, per_worker = 500;
    std::atomic<int> wrong_core{0};
    std::atomic<uint64_t> returned{0};
    auto r = e.value()->run([&](unsigned core) -> task<void> {
        // Not a coroutine lambda with captures: forward to a function.
        struct ctx {
            std::atomic<int>* wrong;
            std::atomic<uint64_t>* ret;
        };
        auto worker = [](unsigned me, unsigned id, ctx c) -> task<void> {
            unsigned peer = 1 - me;
            for (int i = 0; i < per_worker; ++i) {
                uint64_t v = uint64_t(id) * 100000 + uint64_t(i);
                auto t = rw::submit_to(peer, [peer, v, c] {
                    if (rw::this_core() != peer)
                        c.wrong->fetch_add(1);
                    g_state[peer].hits++;
                    g_state[peer].sum += v;
                    return v * 2;
                });
                uint64_t got = co_await std::move(t);
                if (rw::this_core() != me)
                    c.wrong->fetch_add(1);
                c.ret->fetch_add(got == v * 2 ? 1 : 0);
            }
        };
        auto main = [](unsigned me, ctx c, decltype(worker) w) -> task<void> {
            rw::gate g;
            auto run_one = [](rw::gate* gg, task<void> t) -> task<void> {
                rw::gate::holder h(*gg);
                co_await std::move(t);
            };
            for (unsigned id = 0; id < workers; ++id)
                rw::spawn(run_one(&g, w(me, id, c)));
            co_await g.wait_idle();
        };
        return main(core, ctx{&wrong_core, &returned}, worker);
    });
    REQUIRE(r);
    REQUIRE(wrong_core.load() == 0);
    REQUIRE(returned.load() == 2u * workers * per_worker);
    uint64_t expect_sum = 0;
    for (unsigned id = 0; id < workers; ++id)
        for (int i = 0; i < per_worker; ++i)
            expect_sum += uint64_t(id) * 100000 + uint64_t(i);
    for (unsigned c = 0; c < 2; ++c) {
        REQUIRE(g_state[c].hits == uint64_t(workers) * per_worker);
        REQUIRE(g_state[c].sum == expect_sum);
    }
}

TEST_CASE("submit_to with a coroutine function and with exceptions", "[smp]") {
    rw::engine_options o;
    o.cores = 2;
    o.pin = false;
    auto e = rw::engine::create(o);
    REQUIRE(e);
    std::atomic<int> ok{0};
    auto r = e.value()->run([&ok](unsigned core) -> task<void> {
        auto body = [](unsigned me, std::atomic<int>* okp) -> task<void> {
            if (me != 0)
                co_return;
            auto slow = rw::submit_to(1, []() -> task<int> {
                auto s = rw::io::sleep(5ms);
                co_await s;
                co_return int(rw::this_core()) + 40;
            });
            int v = co_await std::move(slow);
            if (v == 41)
                okp->fetch_add(1);
            auto bad = rw::submit_to(1, []() -> int { throw std::runtime_error("remote failure"); });
            try {
                co_await std::move(bad);
            } catch (const std::runtime_error& ex) {
                if (std::string(ex.what()) == "remote failure")
                    okp->fetch_add(1);
            }
        };
        return body(core, &ok);
    });
    REQUIRE(r);
    REQUIRE(ok.load() == 2);
}

TEST_CASE("engine stops from a foreign thread and drains", "[smp]") {
    rw::engine_options o;
    o.cores = 2;
    o.pin = false;
    auto e = rw::engine::create(o);
    REQUIRE(e);
    rw::engine* eng = e.value().get();
    std::atomic<int> stopped_cores{0};
    std::thread stopper([eng] {
        std::this_thread::sleep_for(50ms);
        eng->request_stop(200ms);
    });
    auto t0 = std::chrono::steady_clock::now();
    auto r = eng->run([&stopped_cores](unsigned) -> task<void> {
        auto body = [](std::atomic<int>* n) -> task<void> {
            co_await rw::reactor::local().stop_requested();
            n->fetch_add(1);
        };
        return body(&stopped_cores);
    });
    stopper.join();
    REQUIRE(r);
    REQUIRE(stopped_cores.load() == 2);
    REQUIRE(std::chrono::steady_clock::now() - t0 < 5s);
}

TEST_CASE("engine refuses an impossible core count with a clear message", "[smp]") {
    rw::engine_options o;
    o.cores = 1000;
    auto e = rw::engine::create(o);
    REQUIRE(!e);
    REQUIRE_THAT(e.error(), Catch::Contains("runtime.cores"));
}

TEST_CASE("core_barrier releases every core only once all have arrived", "[smp]") {
    // Three cores arrive at different times (core c after c * 60 ms). Each
    // records how many had arrived when it passed: every one must see all
    // three, so no core passes early, and the last one does not wait.
    rw::engine_options o;
    o.cores = 3;
    o.pin = false;
    auto e = rw::engine::create(o);
    REQUIRE(e);
    rw::core_barrier b(3);
    std::atomic<int> arrived{0};
    std::atomic<int> passed_early{0};
    std::atomic<int> passed{0};
    auto t0 = std::chrono::steady_clock::now();
    auto r = e.value()->run([&](unsigned core) -> task<void> {
        struct ctx {
            rw::core_barrier* b;
            std::atomic<int>*arrived, *early, *passed;
        };
        auto body = [](ctx c, unsigned core) -> task<void> {
            co_await rw::io::sleep(std::chrono::milliseconds(60 * core));
            c.arrived->fetch_add(1);
            co_await c.b->arrive_and_wait();
            if (c.arrived->load() != 3)
                c.early->fetch_add(1);
            c.passed->fetch_add(1);
        };
        return body(ctx{&b, &arrived, &passed_early, &passed}, core);
    });
    REQUIRE(r);
    REQUIRE(passed.load() == 3);
    REQUIRE(passed_early.load() == 0);
    const auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE(took >= 120ms);  // nobody finished before the last arrival
    REQUIRE(took < 5s);
}
