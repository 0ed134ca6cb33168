// The sink's SMTP server side: one accept loop per core and one session
// coroutine per connection (bench/sink/session.cc).
#pragma once

#include "runtime/reactor/task.hh"

namespace rw::bench::sink {

// The root task of one core: accepts on listen_fd (this core's
// SO_REUSEPORT socket) until stop is requested, then gives sessions up to
// 1 s to finish, cancels the rest and returns once every core's sessions
// are gone. Closes listen_fd.
task<void> core_main(unsigned core, int listen_fd);

}  // namespace rw::bench::sink
