// Tests for the open-files plan (admin/descriptors.hh).
#include "admin/descriptors.hh"

#include <sys/resource.h>

#include <catch2/catch.hpp>

using namespace rw::admin;
using Catch::Matchers::Contains;

TEST_CASE("a generous open-files limit leaves max_connections alone", "[descriptors]") {
    auto p = plan_descriptors(1048576, 2, {"smtp", "submission"}, {10000, 500});
    CHECK(p.max_connections == std::vector<unsigned>{10000, 500});
    CHECK(p.notes.empty());
    CHECK(p.fixed == 64 + 16 * 2 + 2 * 2);
    CHECK(p.inbound + p.fixed <= 1048576);
}

TEST_CASE("a small open-files limit lowers max_connections in proportion and says so", "[descriptors]") {
    // 256 descriptors, 2 cores, one listener: 64 + 32 + 2 reserved, 3/4 of
    // the remaining 158 for clients.
    auto p = plan_descriptors(256, 2, {"smtp"}, {10000});
    CHECK(p.fixed == 98);
    CHECK(p.inbound == 158 - 158 / 4);
    REQUIRE(p.max_connections.size() == 1);
    CHECK(p.max_connections[0] == p.inbound);
    REQUIRE(p.notes.size() == 1);
    CHECK_THAT(p.notes[0], Contains("listener smtp") && Contains("from 10000 to 119") && Contains("256") &&
                               Contains("ulimit -n"));

    auto two = plan_descriptors(1000, 1, {"a", "b"}, {3000, 1000});
    REQUIRE(two.notes.size() == 2);
    CHECK(two.max_connections[0] + two.max_connections[1] <= two.inbound);
    CHECK(two.max_connections[0] == 3 * two.max_connections[1]);
}

TEST_CASE("a limit below the reserve still leaves each listener one connection", "[descriptors]") {
    auto p = plan_descriptors(32, 4, {"smtp"}, {100});
    CHECK(p.inbound == 0);
    CHECK(p.max_connections[0] == 1);
    CHECK(p.notes.size() == 1);
}

TEST_CASE("the soft open-files limit is raised to the hard one", "[descriptors]") {
    rlimit before{};
    REQUIRE(getrlimit(RLIMIT_NOFILE, &before) == 0);
    // Lower the soft limit first, so there is something to raise.
    rlimit low = before;
    low.rlim_cur = 200;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
    auto r = raise_nofile_limit();
    CHECK(r.error == 0);
    CHECK(r.was == 200);
    CHECK(r.soft == r.hard);
    rlimit after{};
    REQUIRE(getrlimit(RLIMIT_NOFILE, &after) == 0);
    CHECK(uint64_t(after.rlim_cur) == r.soft);
    REQUIRE(setrlimit(RLIMIT_NOFILE, &before) == 0);
}
