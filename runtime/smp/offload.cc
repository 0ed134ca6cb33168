#include "runtime/smp/offload.hh"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace rw::detail {

namespace {
struct pool {
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
    pool() {
        for (int i = 0; i < 2; ++i)
            std::thread([this] { loop(); }).detach();
    }
    void loop() {
        for (;;) {
            std::function<void()> j;
            {
                std::unique_lock l(m);
                cv.wait(l, [this] { return !jobs.empty(); });
                j = std::move(jobs.front());
                jobs.pop_front();
            }
            j();
        }
    }
};
}  // namespace

void offload_submit(std::function<void()> job) {
    static pool* p = new pool();  // lives for the process: helper threads never exit
    {
        std::lock_guard l(p->m);
        p->jobs.push_back(std::move(job));
    }
    p->cv.notify_one();
}

}  // namespace rw::detail
