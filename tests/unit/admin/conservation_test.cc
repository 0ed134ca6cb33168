// Resource conservation's levels: up at once, down only past the
// hysteresis, each resource on its own, 0 thresholds off.
#include <catch2/catch.hpp>

#include "admin/conservation.hh"

using rw::admin::next_level;

TEST_CASE("next_level rises at once and falls only below the hysteresis", "[conservation]") {
    // tarpit at 80, refuse at 90, 5 % hysteresis.
    CHECK(next_level(0, 50, 80, 90, 0.05) == 0);
    CHECK(next_level(0, 80, 80, 90, 0.05) == 1);
    CHECK(next_level(0, 95, 80, 90, 0.05) == 2);  // straight to refuse
    CHECK(next_level(2, 86, 80, 90, 0.05) == 2);  // 86 >= 90 * 0.95 = 85.5: stays
    CHECK(next_level(2, 85, 80, 90, 0.05) == 1);  // below 85.5, above 76
    CHECK(next_level(2, 70, 80, 90, 0.05) == 0);  // below both
    CHECK(next_level(1, 77, 80, 90, 0.05) == 1);  // 77 >= 76
    CHECK(next_level(1, 75, 80, 90, 0.05) == 0);
    // A threshold of 0 is off.
    CHECK(next_level(0, 1e12, 0, 0, 0.05) == 0);
    CHECK(next_level(0, 95, 0, 90, 0.05) == 2);
    CHECK(next_level(2, 80, 0, 90, 0.05) == 0);  // no tarpit level to fall to
}

TEST_CASE("conservation takes the highest level and names its reason", "[conservation]") {
    rw::admin::conservation_config c;
    c.queue_tarpit_messages = 10;
    c.queue_refuse_messages = 20;
    rw::admin::conservation s(c);
    rw::admin::conservation_reading r;
    r.memory_limit_bytes = 1000;
    r.rss_bytes = 100;
    r.spool_total_bytes = 1000;
    r.spool_used_bytes = 100;
    std::string why;
    CHECK(s.update(r, why) == 0);
    r.queued_messages = 25;
    CHECK(s.update(r, why) == 2);
    CHECK(why == "queue 25 messages");
    r.queued_messages = 0;
    r.spool_used_bytes = 870;  // 87 %: spool tarpit
    CHECK(s.update(r, why) == 1);
    CHECK(why.find("spool 87.0% used") != std::string::npos);
    r.rss_bytes = 950;  // 95 % memory: refuse
    CHECK(s.update(r, why) == 2);
    CHECK(why.find("memory 95.0%") != std::string::npos);
}
