// The control socket's transport: binding, accepting, credentials, framing
// JSON lines, limits. The commands are in control_commands.cc.
#include "admin/control.hh"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "admin/control_commands.hh"
#include "runtime/base/log.hh"
#include "runtime/net/tcp.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/sync.hh"

namespace rw::admin {

namespace {
const logger lg{"control"};
using json = nlohmann::json;

std::string user_name(uid_t uid) {
    // getpwuid_r reads /etc/passwd (or NSS): only at accept, for the log.
    char buf[1024];
    passwd pw{}, *res = nullptr;
    if (::getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res)
        return res->pw_name;
    return std::to_string(uid);
}

result<sockaddr_un, std::string> unix_address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path)
        return unexpected(fmt::format("control.socket {} is too long for a Unix socket", path));
    std::memcpy(a.sun_path, path.data(), path.size());
    return a;
}
}  // namespace

// Replies are built in plain functions: g++ 12 mishandles the
// initializer lists of nlohmann::json inside coroutines.
json error_reply(const std::string& why) {
    json j = json::object();
    j["v"] = k_control_version;
    j["ok"] = false;
    j["error"] = why;
    return j;
}

json ok_reply(json result) {
    json j = json::object();
    j["v"] = k_control_version;
    j["ok"] = true;
    j["result"] = std::move(result);
    return j;
}

std::string peer_cred::describe() const { return fmt::format("uid={}({}) pid={}", uid, user_name(uid), pid); }

struct control_server::impl {
    int fd = -1;
    std::string path;
    registry* reg = nullptr;
    gid_t group = gid_t(-1);  // [control] group, -1 for none
    control_detail::context ctx;
    gate clients;
    std::set<cancel_token*> tokens;  // one per client, cancelled at stop

    bool allowed(const peer_cred& c) const {
        if (c.uid == 0 || c.uid == ::geteuid())
            return true;
        // With a group, the socket's mode 0660 let the peer connect, which
        // the kernel decides by its supplementary groups too.
        return group != gid_t(-1);
    }

    static task<void> client(impl* self, int cfd, peer_cred who);
};

control_server::control_server(std::unique_ptr<impl> i) : _i(std::move(i)) {}

control_server::~control_server() {
    if (_i->fd >= 0) {
        ::close(_i->fd);
        ::unlink(_i->path.c_str());
    }
}

result<std::unique_ptr<control_server>, std::string> control_server::open(const config& cfg, registry* reg) {
    auto i = std::make_unique<impl>();
    i->path = cfg.control.socket;
    i->reg = reg;
    if (!cfg.control.group.empty()) {
        char buf[4096];
        group g{}, *res = nullptr;
        if (::getgrnam_r(cfg.control.group.c_str(), &g, buf, sizeof buf, &res) != 0 || !res)
            return unexpected(fmt::format("control.group {} is not a group on this machine (add it with: groupadd {})",
                                          cfg.control.group, cfg.control.group));
        i->group = res->gr_gid;
    }
    auto addr = unix_address(i->path);
    if (!addr)
        return unexpected(addr.error());
    std::filesystem::path p(i->path);
    if (p.has_parent_path()) {
        std::error_code ec;
        std::filesystem::create_directories(p.parent_path(), ec);
        if (ec)
            return unexpected(fmt::format("cannot create directory {} for the control socket: {}",
                                          p.parent_path().string(), ec.message()));
    }
    struct stat st{};
    if (::lstat(i->path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return unexpected(fmt::format("control.socket {} exists and is not a socket; move it away", i->path));
        // Someone answering there is another daemon; silence is a stale
        // file. A predecessor killed a moment ago may still be listening
        // while the kernel tears its io_uring down: ask again for a while.
        bool live = true;
        for (int i = 0; i < 250 && live; ++i) {
            if (i)
                ::usleep(20000);
            int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            live = probe >= 0 && ::connect(probe, reinterpret_cast<const sockaddr*>(&addr.value()),
                                           sizeof(sockaddr_un)) == 0;
            if (probe >= 0)
                ::close(probe);
        }
        if (live)
            return unexpected(fmt::format("control.socket {} is in use by another process (another ringwayd?)",
                                          i->path));
        ::unlink(i->path.c_str());
    }
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return unexpected(fmt::format("cannot create the control socket: {}", std::strerror(errno)));
    // Bound under a umask that leaves nobody else a window before chmod.
    const mode_t mode = i->group == gid_t(-1) ? 0600 : 0660;
    mode_t old = ::umask(0177);
    int b = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr.value()), sizeof(sockaddr_un));
    int be = errno;
    ::umask(old);
    if (b != 0) {
        ::close(fd);
        return unexpected(fmt::format("cannot bind the control socket {}: {}", i->path, std::strerror(be)));
    }
    if (i->group != gid_t(-1) && ::chown(i->path.c_str(), uid_t(-1), i->group) != 0) {
        int e = errno;
        ::close(fd);
        ::unlink(i->path.c_str());
        return unexpected(fmt::format("cannot give the control socket {} to group {}: {}", i->path,
                                      cfg.control.group, std::strerror(e)));
    }
    ::chmod(i->path.c_str(), mode);
    if (::listen(fd, 64) != 0) {
        int e = errno;
        ::close(fd);
        ::unlink(i->path.c_str());
        return unexpected(fmt::format("cannot listen on the control socket {}: {}", i->path, std::strerror(e)));
    }
    i->fd = fd;
    i->ctx.reg = reg;
    i->ctx.cfg = &cfg;
    i->ctx.state_dir = state_dir(cfg);
    auto store = std::make_unique<config_store>(cfg.control.config_dir, cfg.control.history_versions);
    if (store->open()) {
        i->ctx.version = store->latest();
        i->ctx.store = std::move(store);
    }
    return std::unique_ptr<control_server>(new control_server(std::move(i)));
}

task<void> control_server::run() {
    impl* self = _i.get();
    {
        auto t = control_detail::start(self->ctx);
        co_await std::move(t);
    }
    net::acceptor acc(self->fd, 256);
    auto stopper = [](net::acceptor* a, impl* s) -> task<void> {
        co_await reactor::local().stop_requested();
        a->stop();
        for (cancel_token* t : s->tokens)
            t->cancel();
        control_detail::stop(s->ctx);
    };
    spawn(stopper(&acc, self));
    for (;;) {
        auto a = co_await acc.accept();
        if (!a) {
            if (a.error().code == ECANCELED)
                break;
            lg.warn("accept failed: {}", a.error().message());
            co_await io::sleep(std::chrono::milliseconds(100));
            continue;
        }
        ucred uc{};
        socklen_t len = sizeof uc;
        if (::getsockopt(a.value().fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0) {
            lg.warn("no peer credentials on a control connection: {}", std::strerror(errno));
            ::close(a.value().fd);
            continue;
        }
        peer_cred who{uc.pid, uc.uid, uc.gid};
        if (!self->allowed(who) || self->clients.count() >= k_max_control_clients) {
            const bool refused = !self->allowed(who);
            json e = error_reply(refused ? "permission denied: not the daemon's user, root or the control group"
                                         : "too many control clients; try again");
            std::string line = e.dump() + "\n";
            (void)!::send(a.value().fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            ::close(a.value().fd);
            lg.warn("control connection refused: {} {}", who.describe(), refused ? "not allowed" : "too many");
            continue;
        }
        spawn(impl::client(self, a.value().fd, who));
    }
    co_await acc.stopped();
    co_await self->clients.wait_idle();
    auto t = control_detail::stopped(self->ctx);
    co_await std::move(t);
}

task<void> control_server::impl::client(impl* self, int cfd, peer_cred who) {
    gate::holder h(self->clients);
    net::tcp_stream s(cfd);  // a stream socket like any other to recv/send
    cancel_token tok;
    self->tokens.insert(&tok);
    struct untrack {
        impl* self;
        cancel_token* t;
        ~untrack() { self->tokens.erase(t); }
    } u{self, &tok};
    std::string buf;
    std::vector<char> in(16384);
    auto send_line = [&](const json& j) -> task<bool> {
        std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace);
        line += '\n';
        int r = co_await s.send_all(line.data(), line.size(), {.timeout = k_send_timeout, .cancel = &tok});
        co_return r >= 0;
    };
    // A request that ends the connection: its reason, sent after the loop.
    // (Reasons are locals, not arguments of a co_await'ed call: g++ 12
    // mishandles class-type temporaries in the operand of co_await.)
    std::string fatal;
    for (;;) {
        size_t nl = buf.find('\n');
        if (nl == std::string::npos) {
            if (buf.size() > k_max_request) {
                fatal = (fmt::format("request longer than {} bytes; closing", k_max_request));
                break;
            }
            int n = co_await s.recv(in.data(), in.size(), {.timeout = k_idle_timeout, .cancel = &tok});
            if (n <= 0)
                break;  // closed, idle too long, or stopping
            buf.append(in.data(), size_t(n));
            continue;
        }
        if (nl > k_max_request) {
            fatal = (fmt::format("request longer than {} bytes; closing", k_max_request));
            break;
        }
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        if (line.empty())
            continue;
        json req = json::parse(line, nullptr, false);
        if (req.is_discarded() || !req.is_object()) {
            fatal = ("not a JSON object; closing (protocol: one JSON object per line)");
            break;
        }
        if (!req.contains("v") || !req["v"].is_number_integer() || req["v"].get<int64_t>() != k_control_version) {
            fatal = (fmt::format("unsupported protocol version (this daemon speaks {}); closing",
                                      k_control_version));
            break;
        }
        if (!req.contains("cmd") || !req["cmd"].is_string()) {
            fatal = ("no \"cmd\" string in the request; closing");
            break;
        }
        const std::string cmd = req["cmd"].get<std::string>();
        json args = req.contains("args") ? req["args"] : json::object();
        if (!args.is_object()) {
            fatal = ("\"args\" is not an object; closing");
            break;
        }
        json reply;
        if (cmd == "tail") {
            // Streams {"v":1,"ok":true,"event":{...}} lines, then the result.
            control_detail::event_sink sink = [&](const json& e) -> task<bool> {
                json line = json::object();
                line["v"] = k_control_version;
                line["ok"] = true;
                line["event"] = e;
                co_return co_await send_line(line);
            };
            std::function<bool()> gone = [cfd] {
                char b;
                ssize_t n = ::recv(cfd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
                return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) || n > 0;  // closed, or said more
            };
            try {
                auto t = control_detail::tail(self->ctx, args, std::move(sink), std::move(gone), &tok);
                json result = co_await std::move(t);
                reply = ok_reply(std::move(result));
            } catch (const control_detail::command_error& e) {
                reply = error_reply(e.what());
            }
            if (!co_await send_line(reply))
                break;
            continue;
        }
        try {
            auto t = control_detail::dispatch(self->ctx, who, cmd, args);
            json result = co_await std::move(t);
            reply = ok_reply(std::move(result));
        } catch (const control_detail::command_error& e) {
            reply = error_reply(e.what());
        } catch (const std::exception& e) {
            lg.error("control command {} failed: {}", cmd, e.what());
            reply = error_reply(fmt::format("internal error: {}", e.what()));
        }
        if (!co_await send_line(reply))
            break;  // not reading its replies: cut off
    }
    if (!fatal.empty()) {
        json e = error_reply(fatal);
        if (co_await send_line(e)) {
            // Closing with the client's input unread would reset the
            // connection before it reads why: stop writing, drop what it
            // still sends (bounded), then close.
            ::shutdown(cfd, SHUT_WR);
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
            size_t dropped = 0;
            while (dropped < 4 * k_max_request) {
                auto left = until - std::chrono::steady_clock::now();
                if (left <= std::chrono::nanoseconds(0))
                    break;
                int n = co_await s.recv(in.data(), in.size(), {.timeout = left, .cancel = &tok});
                if (n <= 0)
                    break;
                dropped += size_t(n);
            }
        }
    }
}

}  // namespace rw::admin
