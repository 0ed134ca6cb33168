// The shell's side of the control socket (admin/control.hh): a blocking
// client, one request and one reply at a time. The shell is a separate
// process, so blocking here is fine.
#pragma once

#include <nlohmann/json.hpp>
#include <functional>
#include <string>

#include "runtime/base/result.hh"

namespace rw::admin::shell {

class client {
public:
    // Connects; the error says what to check ("is ringwayd running?").
    static result<client, std::string> connect(const std::string& path);
    client(client&& o) noexcept
        : _fd(std::exchange(o._fd, -1)), _path(std::move(o._path)), _buf(std::move(o._buf)), _broken(o._broken) {}
    client& operator=(client&&) = delete;
    ~client();

    // Sends {"v":1,"cmd":cmd,"args":args} and returns the result, or the
    // daemon's error (or a transport error) as one line.
    result<nlohmann::json, std::string> call(const std::string& cmd, const nlohmann::json& args);
    // A streaming command: on_event for each {"event":...} line until the
    // closing result, which is returned. on_event returning false, or
    // interrupted() turning true while waiting, closes the connection
    // (the daemon then stops the stream) and returns an empty object.
    result<nlohmann::json, std::string> stream(const std::string& cmd, const nlohmann::json& args,
                                               const std::function<bool(const nlohmann::json&)>& on_event,
                                               const std::function<bool()>& interrupted);
    // Sends the request, then everything src_fd holds (to its end) on the
    // same connection, printing events as they come; then waits, with no
    // deadline, for the result. The peer may refuse before the end (a bad
    // signature): its error is returned.
    result<nlohmann::json, std::string> upload(const std::string& cmd, const nlohmann::json& args, int src_fd,
                                               const std::function<void(const nlohmann::json&)>& on_event);
    // The connection failed (not the command): reconnect to go on.
    bool broken() const { return _broken; }

private:
    result<void, std::string> send_request(const std::string& cmd, const nlohmann::json& args);
    // The next line; "" with the error set on failure. wait_ms: -1 forever.
    result<std::string, std::string> next_line(int wait_ms, const std::function<bool()>* interrupted);
    client(int fd, std::string path) : _fd(fd), _path(std::move(path)) {}
    int _fd = -1;
    std::string _path;
    std::string _buf;
    bool _broken = false;
};

}  // namespace rw::admin::shell
