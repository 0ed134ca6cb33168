// Engine: starts the reactor threads, wires the SPSC rings between them.
#include "runtime/smp/smp.hh"

#include <pthread.h>
#include <sched.h>

#include <mutex>

#include "runtime/base/log.hh"

namespace rw {

namespace {
engine* g_engine = nullptr;
}  // namespace

spsc_ring::spsc_ring(size_t capacity_pow2) : _cap(capacity_pow2), _slots(new cross_message*[capacity_pow2]) {
    RW_ASSERT(capacity_pow2 >= 2 && (capacity_pow2 & (capacity_pow2 - 1)) == 0, "capacity must be a power of two");
}

engine& engine::instance() {
    RW_ASSERT(g_engine != nullptr, "no engine is running");
    return *g_engine;
}

result<std::unique_ptr<engine>, std::string> engine::create(const engine_options& o) {
    auto f = reactor::probe();
    if (!f)
        return unexpected(f.error());
    std::unique_ptr<engine> e(new engine());
    e->_opts = o;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return unexpected(std::string("cannot read the CPU affinity mask"));
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set))
            e->_cpus.push_back(c);
    unsigned n = o.cores == 0 ? unsigned(e->_cpus.size()) : o.cores;
    if (n == 0 || n > 256)
        return unexpected(fmt::format("runtime.cores must be between 1 and 256, got {}", n));
    e->_n = n;
    size_t cap = 2;
    while (cap < o.queue_capacity)
        cap <<= 1;
    e->_rings.resize(size_t(n) * n);
    for (auto& r : e->_rings)
        r = std::make_unique<spsc_ring>(cap);
    e->_reactors.assign(n, nullptr);
    return e;
}

engine::~engine() {
    if (g_engine == this)
        g_engine = nullptr;
}

bool engine::try_post(unsigned to, cross_message* m) noexcept {
    unsigned from = this_core();
    RW_ASSERT(to < _n);
    return ring(from, to).push(m);
}

size_t engine::inbox_depth(unsigned core) noexcept {
    size_t n = 0;
    for (unsigned from = 0; from < _n; ++from)
        if (from != core)
            n += ring(from, core).size();
    return n;
}

bool engine::poll_inbox(unsigned core) noexcept {
    bool ran = false;
    // Bounded per round so one chatty peer cannot starve the loop.
    for (unsigned from = 0; from < _n; ++from) {
        if (from == core)
            continue;
        spsc_ring& r = ring(from, core);
        for (int i = 0; i < 256; ++i) {
            cross_message* m = r.pop();
            if (!m)
                break;
            m->run(m);
            ran = true;
        }
    }
    return ran;
}

bool engine::inbox_pending(unsigned core) noexcept {
    for (unsigned from = 0; from < _n; ++from)
        if (from != core && !ring(from, core).empty())
            return true;
    return false;
}

result<void, std::string> engine::run(std::function<task<void>(unsigned)> main) {
    RW_ASSERT(g_engine == nullptr, "one engine per process");
    g_engine = this;
    std::mutex& m = _lock;
    std::vector<std::thread> threads;
    std::atomic<unsigned> ready{0};
    std::atomic<bool> failed{false};
    for (unsigned i = 0; i < _n; ++i) {
        threads.emplace_back([this, i, &main, &m, &ready, &failed] {
            reactor::options ro;
            ro.index = i;
            ro.sq_entries = _opts.sq_entries;
            ro.pin_cpu = _opts.pin ? _cpus[i % _cpus.size()] : -1;
            auto r = reactor::create(ro);
            if (!r) {
                std::lock_guard g(m);
                _errors.push_back(r.error());
                failed = true;
                ready.fetch_add(1);
                return;
            }
            std::unique_ptr<reactor> re = std::move(r.value());
            re->set_inbox([this, i] { return poll_inbox(i); }, [this, i] { return inbox_pending(i); });
            {
                std::lock_guard g(m);
                _reactors[i] = re.get();
                // A stop requested before this reactor existed still applies.
                if (_stop_pending)
                    re->request_stop(_stop_drain);
            }
            ready.fetch_add(1);
            // Wait until every reactor exists before anyone posts.
            while (ready.load() < _n)
                std::this_thread::yield();
            if (failed.load())
                return;
            auto root = main(i);
            re->run(std::move(root));
            // Keep answering until every core is done, so a late message to
            // this core still runs (cores finish at different times).
            _started.fetch_add(1);
            while (_started.load() < _n) {
                auto idle = [](engine* e) -> task<void> {
                    auto t = io::sleep(std::chrono::milliseconds(1));
                    co_await t;
                    (void)e;
                };
                re->run(idle(this));
            }
            re->run([]() -> task<void> { co_return; }());
            std::lock_guard g(m);
            _reactors[i] = nullptr;
        });
    }
    for (auto& t : threads)
        t.join();
    g_engine = nullptr;
    if (!_errors.empty())
        return unexpected(_errors.front());
    return {};
}

void engine::request_stop(std::chrono::milliseconds drain) {
    struct stop_msg : cross_message {
        std::chrono::milliseconds drain;
    };
    // Owned here until each reactor ran it; reactors outlive this call only
    // while the engine runs, so allocate and let the message free itself.
    std::lock_guard g(_lock);
    _stop_pending = true;
    _stop_drain = drain;
    for (unsigned i = 0; i < _n; ++i) {
        reactor* r = _reactors[i];
        if (!r)
            continue;
        auto* m = new stop_msg();
        m->drain = drain;
        m->run = [](cross_message* cm) noexcept {
            auto* sm = static_cast<stop_msg*>(cm);
            reactor::local().request_stop(sm->drain);
            delete sm;
        };
        r->post_foreign(m);
    }
}

}  // namespace rw
