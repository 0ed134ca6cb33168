// The control socket: a Unix domain stream socket ([control] socket) that
// the `ringway` shell talks to. Protocol version 1, JSON lines: one request
// object per line,
//
//   {"v":1,"cmd":"workqueue","args":{...}}
//
// answered by one object per line,
//
//   {"v":1,"ok":true,"result":...}     {"v":1,"ok":false,"error":"why"}
//
// in order. The socket is mode 0600 (0660 with [control] group); the
// peer's credentials (SO_PEERCRED) are checked again on accept and named in
// the log of every change it makes. A request that is not JSON, not an
// object, of another version, or over k_max_request bytes gets an error and
// the connection is closed; an idle client is closed after
// k_idle_timeout; a client that does not read its replies is cut off after
// k_send_timeout. Everything runs on core 0 and reaches other cores through
// the registry; nothing waits on a client with a reactor blocked.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

#include "admin/config.hh"
#include "admin/registry.hh"
#include "runtime/base/result.hh"
#include "runtime/reactor/task.hh"

namespace rw::admin {

constexpr int k_control_version = 1;
constexpr size_t k_max_request = 1 << 20;
constexpr size_t k_max_control_clients = 32;
constexpr std::chrono::seconds k_idle_timeout{600};
constexpr std::chrono::seconds k_send_timeout{10};

struct peer_cred {
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    std::string describe() const;  // "uid=0(root) pid=1234"
};

class control_server {
public:
    // Binds and listens (on the calling thread, before the engine runs): a
    // stale socket file is replaced, one a live process answers on is an
    // error.
    static result<std::unique_ptr<control_server>, std::string> open(const config& cfg, registry* reg);
    ~control_server();
    control_server(const control_server&) = delete;

    // Runs on core 0 once every core has registered; returns after the
    // reactor's stop request, when every client has been closed.
    task<void> run();

    struct impl;

private:
    explicit control_server(std::unique_ptr<impl> i);
    std::unique_ptr<impl> _i;
};

}  // namespace rw::admin
