// Providers, warm-up schedules and the counters every core shares.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <string>

#include "mta/delivery/delivery.hh"
#include "mta/delivery/shared.hh"

using namespace rw::mta::delivery;

TEST_CASE("a provider is found by the longest matching MX suffix", "[providers]") {
    options o;
    o.providers = builtin_providers();
    o.providers.push_back({"workspace-eu", {"eu.google.com"}, 0, 0});
    CHECK(find_provider(o, "gmail-smtp-in.l.google.com")->name == "gmail");
    CHECK(find_provider(o, "ASPMX.L.GOOGLE.COM.")->name == "gmail");  // case and the root dot
    CHECK(find_provider(o, "google.com")->name == "gmail");
    CHECK(find_provider(o, "mx1.eu.google.com")->name == "workspace-eu");
    CHECK(find_provider(o, "example-com.mail.protection.outlook.com")->name == "microsoft");
    CHECK(find_provider(o, "mta5.am0.yahoodns.net")->name == "yahoo");
    CHECK(find_provider(o, "notgoogle.com") == nullptr);  // a suffix matches whole labels
    CHECK(find_provider(o, "mx.example.test") == nullptr);
    CHECK(provider_named(o, "apple") != nullptr);
    CHECK(provider_named(o, "nosuch") == nullptr);
}

TEST_CASE("a warm-up schedule's caps rise by day, then the source is warm", "[warmup]") {
    warmup_schedule w;
    w.default_caps = {10, 20};
    w.providers = {{"gmail", {1, 2, 3}}};
    CHECK(w.group_of("gmail") == "gmail");
    CHECK(w.group_of("microsoft") == "*");
    CHECK(w.group_of("") == "*");
    CHECK(w.cap("gmail", 1) == 1);
    CHECK(w.cap("gmail", 3) == 3);
    CHECK(w.cap("gmail", 4) == 0);
    CHECK(w.cap("*", 0) == 10);  // before the start: day 1
    CHECK(w.cap("*", 2) == 20);
    CHECK(w.cap("*", 3) == 0);
}

TEST_CASE("the sliding hour counts sends and says how long to wait", "[shared]") {
    shared_state s;
    const int64_t t0 = 1'000'000 * 60'000LL;  // on a minute boundary
    CHECK(s.hour_wait_ms("p", 3, t0) == 0);
    s.add_send("p", t0);
    s.add_send("p", t0 + 10 * 60'000);
    s.add_send("p", t0 + 20 * 60'000);
    CHECK(s.sent_last_hour("p", t0 + 20 * 60'000) == 3);
    CHECK(s.hour_wait_ms("p", 0, t0 + 20 * 60'000) == 0);  // no limit
    CHECK(s.hour_wait_ms("p", 4, t0 + 20 * 60'000) == 0);
    // At the limit: the first send leaves the window 60 minutes after its minute.
    CHECK(s.hour_wait_ms("p", 3, t0 + 20 * 60'000) == 40 * 60'000);
    CHECK(s.hour_wait_ms("p", 3, t0 + 60 * 60'000) == 0);
    CHECK(s.sent_last_hour("p", t0 + 60 * 60'000) == 2);
    CHECK(s.sent_last_hour("p", t0 + 500 * 60'000) == 0);  // long idle: every bucket cleared
}

TEST_CASE("connections are counted up to a limit", "[shared]") {
    shared_state s;
    CHECK(s.acquire("p", 2));
    CHECK(s.acquire("p", 2));
    CHECK_FALSE(s.acquire("p", 2));
    CHECK(s.acquire("p", 0));  // no limit: still counted
    CHECK(s.connections("p") == 3);
    s.release("p");
    s.release("p");
    CHECK(s.acquire("p", 2));
    s.release("nosuch");  // harmless
}

TEST_CASE("daily warm-up counts roll over at the day and survive a restart", "[shared]") {
    char tmpl[] = "/tmp/rw_shared_XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    const std::string path = std::string(tmpl) + "/warmup-counts.json";
    const int64_t day = 20'000, ms = day * 86'400'000LL + 5'000;
    {
        shared_state s(path);
        CHECK(s.load_error().empty());
        s.add_daily("out1", "gmail", day);
        s.add_daily("out1", "gmail", day);
        s.add_daily("out1", "*", day);
        CHECK(s.daily("out1", "gmail", day) == 2);
        CHECK(s.save(ms).empty());
        s.add_daily("out1", "gmail", day);
        CHECK(s.save(ms + 10).empty());  // within a second: not written
    }
    {
        shared_state s(path);
        CHECK(s.daily("out1", "gmail", day) == 2);
        CHECK(s.daily("out1", "*", day) == 1);
        CHECK(s.daily("out1", "gmail", day + 1) == 0);  // the next day starts from zero
        CHECK(s.daily("out1", "gmail", day) == 0);
        CHECK(s.save(ms + 86'400'000, true).empty());
    }
    {
        std::ofstream(path) << "{not json";
        shared_state s(path);
        CHECK_FALSE(s.load_error().empty());
        CHECK(s.daily("out1", "gmail", day) == 0);
    }
    std::remove(path.c_str());
    std::remove((path + ".tmp").c_str());
    rmdir(tmpl);
}

#include "mta/delivery/mta_sts.hh"

TEST_CASE("MTA-STS: policy files, TXT records and MX patterns", "[mta-sts]") {
    using namespace rw::mta::delivery::sts;
    auto p = parse_policy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
                          "max_age: 604800\r\nfuture_key: ignored\r\n");
    REQUIRE(p);
    CHECK(p.value().m == mode::enforce);
    CHECK(p.value().mx == std::vector<std::string>{"mail.example.com", "*.example.net"});
    CHECK(p.value().max_age == 604800);
    CHECK(mx_matches(p.value(), "MAIL.example.com."));
    CHECK(mx_matches(p.value(), "mx1.example.net"));
    CHECK_FALSE(mx_matches(p.value(), "a.b.example.net"));  // one label only
    CHECK_FALSE(mx_matches(p.value(), "example.net"));
    CHECK_FALSE(mx_matches(p.value(), "evil-mail.example.com"));
    auto capped = parse_policy("version: STSv1\nmode: none\nmax_age: 99999999999\n");
    REQUIRE(capped);
    CHECK(capped.value().max_age == 31'557'600);
    CHECK_FALSE(parse_policy("version: STSv1\nmode: none\nmax_age: 1234567890123456789012\n"));
    CHECK_FALSE(parse_policy("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n"));
    CHECK_FALSE(parse_policy("version: STSv1\nmode: enforce\nmax_age: 1\n"));      // no mx
    CHECK_FALSE(parse_policy("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n"));
    CHECK_FALSE(parse_policy("version: STSv1\nmode: testing\nmx: a\n"));           // no max_age
    CHECK_FALSE(parse_policy("<html>not a policy</html>"));
    CHECK_FALSE(parse_policy(""));
    CHECK(parse_txt("v=STSv1; id=20160831085700Z;") == std::optional<std::string>("20160831085700Z"));
    CHECK(parse_txt("v=STSv1;id=abc") == std::optional<std::string>("abc"));
    CHECK_FALSE(parse_txt("id=abc; v=STSv1;"));  // v must come first
    CHECK_FALSE(parse_txt("v=spf1 -all"));
    CHECK_FALSE(parse_txt("v=STSv1; id=has space;"));
    CHECK_FALSE(parse_txt("v=STSv1;"));
}
