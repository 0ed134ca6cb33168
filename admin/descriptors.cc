// Open-files limit planning (see descriptors.hh).
#include "admin/descriptors.hh"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fmt/format.h>

namespace rw::admin {

descriptor_plan plan_descriptors(uint64_t limit, unsigned cores, const std::vector<std::string>& names,
                                 const std::vector<unsigned>& max_connections) {
    descriptor_plan p;
    p.limit = limit;
    p.fixed = 64 + 16 * uint64_t(cores) + uint64_t(cores) * max_connections.size();
    const uint64_t rest = limit > p.fixed ? limit - p.fixed : 0;
    p.inbound = rest - rest / 4;
    p.max_connections = max_connections;
    uint64_t sum = 0;
    for (unsigned m : max_connections)
        sum += m;
    if (sum <= p.inbound)
        return p;
    for (size_t i = 0; i < max_connections.size(); ++i) {
        uint64_t share = uint64_t(max_connections[i]) * p.inbound / sum;
        p.max_connections[i] = unsigned(share < 1 ? 1 : share);
        p.notes.push_back(fmt::format(
            "listener {}: max_connections lowered from {} to {}: the open-files limit is {} and leaves room for {} "
            "client connections (raise it: ulimit -n, or LimitNOFILE= in the service unit)",
            i < names.size() ? names[i] : std::string("?"), max_connections[i], p.max_connections[i], limit,
            p.inbound));
    }
    return p;
}

namespace {
uint64_t nr_open() {
    uint64_t n = 1048576;
    if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "r")) {
        unsigned long long v = 0;
        if (std::fscanf(f, "%llu", &v) == 1 && v > 0)
            n = v;
        std::fclose(f);
    }
    return n;
}
}  // namespace

nofile_limit raise_nofile_limit() {
    nofile_limit out;
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        out.error = errno;
        return out;
    }
    // The kernel refuses a soft limit above fs.nr_open, whatever the hard one says.
    const uint64_t ceiling = nr_open();
    const uint64_t hard = rl.rlim_max == RLIM_INFINITY ? ceiling : std::min<uint64_t>(rl.rlim_max, ceiling);
    out.was = rl.rlim_cur == RLIM_INFINITY ? hard : uint64_t(rl.rlim_cur);
    out.soft = out.was;
    out.hard = hard;
    if (out.was < hard) {
        rlimit want{rlim_t(hard), rl.rlim_max};
        if (::setrlimit(RLIMIT_NOFILE, &want) == 0)
            out.soft = hard;
        else
            out.error = errno;
    }
    return out;
}

}  // namespace rw::admin
