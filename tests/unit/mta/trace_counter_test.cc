// Received: counting for mail-loop detection (mta/smtp/trace_counter.hh):
// counts at every split point, folded lines, case, the end of the header
// section, and look-alike field names that must not count.
#include <catch2/catch.hpp>

#include <string>

#include "mta/smtp/replies.hh"
#include "mta/smtp/trace_counter.hh"

using rw::mta::smtp::trace_counter;

namespace {

std::string hops(unsigned n) {
    std::string s;
    for (unsigned i = 0; i < n; ++i)
        s += "Received: from h" + std::to_string(i) + ".test\r\n\tby x.test; Thu, 3 Dec 2026 10:00:00 +0000\r\n";
    return s;
}

trace_counter whole(const std::string& m) {
    trace_counter t;
    t.feed(m);
    return t;
}

}  // namespace

TEST_CASE("trace_counter counts Received fields in the header section only", "[smtp]") {
    const std::string m = "Return-Path: <a@b.test>\r\n" + hops(3) + "RECEIVED: from upper.test\r\n"
                          "received:from tight.test\r\n"
                          "Subject: hi\r\n"
                          " Received: folded into Subject, not a field\r\n"
                          "X-Received: not it\r\n"
                          "Received-SPF: pass\r\n"  // a different field
                          "\r\n"
                          "Received: in the body, not counted\r\n";
    trace_counter t = whole(m);
    CHECK(t.headers_done());
    CHECK(t.received() == 5);
}

TEST_CASE("trace_counter gives the same count at every split point", "[smtp]") {
    const std::string m = hops(4) + "Subject: x\r\n\r\nReceived: body\r\n";
    const unsigned ref = whole(m).received();
    REQUIRE(ref == 4);
    for (size_t i = 0; i <= m.size(); ++i) {
        for (size_t j = i; j <= m.size(); j += 7) {
            trace_counter t;
            t.feed(std::string_view(m).substr(0, i));
            t.feed(std::string_view(m).substr(i, j - i));
            t.feed(std::string_view(m).substr(j));
            INFO("split " << i << ", " << j);
            REQUIRE(t.received() == ref);
            REQUIRE(t.headers_done());
        }
    }
    // One byte at a time.
    trace_counter t;
    for (char c : m)
        t.feed(std::string_view(&c, 1));
    CHECK(t.received() == ref);
}

TEST_CASE("trace_counter: no empty line means all header, reset starts over", "[smtp]") {
    trace_counter t = whole(hops(2));
    CHECK_FALSE(t.headers_done());
    CHECK(t.received() == 2);
    t.feed("Received: x\r\n");
    CHECK(t.received() == 3);
    t.reset();
    CHECK(t.received() == 0);
    CHECK_FALSE(t.headers_done());
    // An empty message ends its (empty) header section at once.
    t.feed("\r\nReceived: x\r\n");
    CHECK(t.headers_done());
    CHECK(t.received() == 0);
}

TEST_CASE("the loop refusal is 554 5.4.6 and names the count and the limit", "[smtp]") {
    auto r = rw::mta::smtp::too_many_hops(51, 50);
    CHECK(r.r.code == 554);
    CHECK(r.r.enhanced == "5.4.6");
    CHECK(r.r.text.find("51") != std::string::npos);
    CHECK(r.r.text.find("50") != std::string::npos);
    CHECK(r.cause == "mail loop");
}

TEST_CASE("spool errors map to one reply each", "[smtp]") {
    using rw::fs::spool_errc;
    using rw::fs::spool_error;
    auto full = rw::mta::smtp::spool_failed(spool_error{spool_errc::full, "x"});
    CHECK(full.r.code == 452);
    CHECK(full.r.enhanced == "4.3.1");
    auto failed = rw::mta::smtp::spool_failed(spool_error{spool_errc::failed, "x"});
    CHECK(failed.r.code == 451);
    CHECK(failed.r.enhanced == "4.3.0");
    CHECK(rw::mta::smtp::spool_failed(spool_error{spool_errc::too_large, "x"}).r.code == 552);
    // Asked before a transaction, the same codes as during one.
    CHECK(rw::mta::smtp::spool_unhealthy(rw::fs::spool_health::full).r.code == 452);
    CHECK(rw::mta::smtp::spool_unhealthy(rw::fs::spool_health::failed).r.code == 451);
}

TEST_CASE("trace_counter keeps the first Subject, unfolded, at every split point", "[smtp]") {
    const std::string m = hops(2) + "SUBJECT:   Quarterly\r\n\treport, part\r\n 2\r\nX-Subject: not it\r\n"
                          "Subject: the second one\r\n\r\nSubject: in the body\r\n";
    const std::string want = "Quarterly\treport, part 2";
    CHECK(whole(m).subject() == want);
    CHECK(whole(m).received() == 2);
    for (size_t i = 0; i <= m.size(); ++i) {
        trace_counter t;
        t.feed(std::string_view(m).substr(0, i));
        t.feed(std::string_view(m).substr(i));
        INFO("split " << i);
        REQUIRE(t.subject() == want);
        REQUIRE(t.received() == 2);
    }
    // None, a long one (kept to its limit), an empty one.
    CHECK(whole("From: a@b.test\r\n\r\nSubject: body\r\n").subject().empty());
    const std::string long_subject(500, 'x');
    CHECK(whole("Subject: " + long_subject + "\r\n\r\n").subject() ==
          long_subject.substr(0, trace_counter::k_max_subject));
    CHECK(whole("Subject:\r\nFrom: a@b.test\r\n\r\n").subject().empty());
}
