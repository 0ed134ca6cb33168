// The open-files limit (RLIMIT_NOFILE) against the connections the
// configuration allows. Every client connection is one descriptor; so is
// every delivery connection, each core's ring, event fd, listening sockets
// and DNS sockets, the spool device and the logs. A process started with a
// soft limit of 256 while max_connections says 10,000 would accept
// connections in the kernel that it can never greet. At start the daemon
// raises its soft limit to the hard one and, when that still does not cover
// the listeners' max_connections, lowers them (saying so) so that a client
// over the limit gets a 421, not silence.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rw::admin {

struct descriptor_plan {
    uint64_t limit = 0;                  // the soft limit the plan was made for
    uint64_t fixed = 0;                  // descriptors reserved for the process itself
    uint64_t inbound = 0;                // client connections that fit, all listeners together
    std::vector<unsigned> max_connections;  // per listener, after lowering
    std::vector<std::string> notes;      // one line per listener lowered
};

// Reserves `fixed` descriptors (64 + 16 per core + one per listener and
// core), gives a quarter of the rest to delivery connections and the other
// three quarters to client connections; lowers each listener's
// max_connections in proportion when their sum is more than that.
descriptor_plan plan_descriptors(uint64_t limit, unsigned cores, const std::vector<std::string>& names,
                                 const std::vector<unsigned>& max_connections);

struct nofile_limit {
    uint64_t was = 0, soft = 0, hard = 0;
    int error = 0;  // errno when raising failed
};
// Raises the soft RLIMIT_NOFILE to the hard limit (RLIM_INFINITY counts as
// the kernel's nr_open).
nofile_limit raise_nofile_limit();

}  // namespace rw::admin
