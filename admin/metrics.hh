// The Prometheus endpoint ([metrics] listen, default 127.0.0.1:9425): HTTP
// GET /metrics answered in the text exposition format (version 0.0.4) by
// core 0, which gathers every core's figures through the registry. One
// request per connection; a request larger than 8 KiB, slower than 10 s or
// not a GET gets its 4xx and the connection is closed.
#pragma once

#include <memory>
#include <string>

#include "admin/config.hh"
#include "admin/registry.hh"
#include "runtime/base/result.hh"
#include "runtime/reactor/task.hh"

namespace rw::admin {

class metrics_server {
public:
    // Binds (before the engine runs); the error names the address.
    static result<std::unique_ptr<metrics_server>, std::string> open(const config& cfg, registry* reg);
    ~metrics_server();
    metrics_server(const metrics_server&) = delete;

    // On core 0 after the start-up barrier, until the reactor stops.
    task<void> run();

    // The exposition text, gathered now (also for tests and benchmarks).
    task<std::string> render();

private:
    metrics_server() = default;
    int _fd = -1;
    registry* _reg = nullptr;
    const config* _cfg = nullptr;
};

}  // namespace rw::admin
