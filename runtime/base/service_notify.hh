#pragma once
// Tells the service manager (systemd) how the daemon is doing, through the
// datagram socket named in $NOTIFY_SOCKET: "READY=1" once serving,
// "WATCHDOG=1" while healthy, "STOPPING=1" when draining. Without
// $NOTIFY_SOCKET (not run by systemd) every call does nothing.
#include <string_view>

namespace rw::service_notify {

// Sends one notification; returns false when it could not be sent.
bool send(std::string_view state);

// True when systemd asked for watchdog pings (WatchdogSec= set for this
// process); the pings are due at least every interval_ms().
bool watchdog_enabled();
long long watchdog_interval_ms();

}  // namespace rw::service_notify
