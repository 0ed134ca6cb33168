// The scanners' answers (mta/scan/scanners.hh): clamd's INSTREAM lines and
// rspamd's /checkv2 JSON, including the garbage a broken or hostile
// scanner might send, which must be a failure with a reason, never a pass.
#include <catch2/catch.hpp>

#include <string>

#include "mta/scan/scanners.hh"

using namespace rw::mta::scan;

TEST_CASE("scanners: clamd's answers") {
    av_result r;
    parse_clamd(std::string("stream: OK\0", 11), r);
    CHECK(r.st == status::clean);
    r = {};
    parse_clamd("stream: Win.Test.EICAR_HDB-1 FOUND", r);
    CHECK(r.st == status::infected);
    CHECK(r.virus == "Win.Test.EICAR_HDB-1");
    r = {};
    parse_clamd("INSTREAM size limit exceeded. ERROR", r);
    CHECK(r.st == status::failed);
    CHECK(r.why == "clamd said: INSTREAM size limit exceeded. ERROR");
    r = {};
    parse_clamd("stream: Bad\x01Name FOUND", r);
    CHECK(r.st == status::infected);
    CHECK(r.virus == "Bad?Name");
    for (const char* junk : {"", "FOUND", " FOUND", "stream:", "HTTP/1.1 200 OK"}) {
        av_result j;
        parse_clamd(junk, j);
        CHECK(j.st == status::failed);
    }
}

TEST_CASE("scanners: rspamd's answers") {
    spam_result r;
    parse_rspamd(R"({"is_skipped":false,"score":15.5,"required_score":15.0,"action":"reject",
                     "symbols":{"GTUBE":{"name":"GTUBE","score":0.0},"MISSING_DATE":{"name":"MISSING_DATE","score":1.0},
                                "R_SPF_NA":{"name":"R_SPF_NA","score":0.0}}})",
                 r);
    CHECK(r.st == status::scanned);
    CHECK(r.action == "reject");
    CHECK(r.score == Approx(15.5));
    CHECK(r.required == Approx(15.0));
    REQUIRE(r.symbols.size() == 3);
    CHECK(r.symbols[0] == "MISSING_DATE");  // highest score first, then by name
    CHECK(r.symbols[1] == "GTUBE");
    for (const char* junk : {"", "not json", "[]", R"({"score":1})", R"({"action":5,"score":1})",
                             R"({"action":"reject","score":"high"})"}) {
        spam_result j;
        parse_rspamd(junk, j);
        CHECK(j.st == status::failed);
        CHECK_FALSE(j.why.empty());
    }
}

TEST_CASE("scanners: where they listen") {
    auto u = endpoint::parse("/run/clamav/clamd.ctl");
    REQUIRE(u);
    CHECK(u->path == "/run/clamav/clamd.ctl");
    auto t = endpoint::parse("127.0.0.1:11333");
    REQUIRE(t);
    CHECK(t->to_string() == "127.0.0.1:11333");
    CHECK_FALSE(endpoint::parse("rspamd.example:11333"));
    CHECK_FALSE(endpoint::parse(""));
    CHECK_FALSE(endpoint::parse("/" + std::string(200, 'x')));
}
