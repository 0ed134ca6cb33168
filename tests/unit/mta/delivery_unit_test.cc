// Delivery's pure parts: route matching, dot-stuffing for the wire, DSN
// parameters and the DSN message itself.
#include <catch2/catch.hpp>

#include "mta/delivery/client.hh"
#include "mta/delivery/delivery.hh"
#include "mta/delivery/dsn.hh"
#include "mta/delivery/retry.hh"

using namespace rw::mta::delivery;

TEST_CASE("routes: exact beats wildcard, the longest wildcard wins, * is the fallback") {
    std::vector<route> rs(4);
    rs[0].domain = "*";
    rs[1].domain = "*.example.test";
    rs[2].domain = "*.eu.example.test";
    rs[3].domain = "example.test";
    CHECK(find_route(rs, "example.test") == &rs[3]);
    CHECK(find_route(rs, "a.example.test") == &rs[1]);
    CHECK(find_route(rs, "x.eu.example.test") == &rs[2]);
    CHECK(find_route(rs, "eu.example.test") == &rs[1]);
    CHECK(find_route(rs, "other.test") == &rs[0]);
    CHECK(find_route(rs, "badexample.test") == &rs[0]);
    rs.erase(rs.begin());
    CHECK(find_route(rs, "other.test") == nullptr);
}

TEST_CASE("retry schedule: doubling from first_retry up to max_retry, jittered, greylisting sooner") {
    options o;
    o.first_retry = std::chrono::minutes(1);
    o.max_retry = std::chrono::hours(1);
    o.greylist_retry = std::chrono::minutes(2);
    o.backoff = 2.0;
    o.jitter = 0.0;
    std::mt19937_64 rng(1);
    CHECK(retry_delay_ms(o, 1, 421, rng) == 60'000);
    CHECK(retry_delay_ms(o, 2, 421, rng) == 120'000);
    CHECK(retry_delay_ms(o, 3, 0, rng) == 240'000);
    CHECK(retry_delay_ms(o, 7, 0, rng) == 3'600'000);  // 64 min, capped at the hour
    CHECK(retry_delay_ms(o, 1000, 0, rng) == 3'600'000);
    o.first_retry = std::chrono::minutes(5);
    CHECK(retry_delay_ms(o, 1, 450, rng) == 120'000);  // greylisting at the first attempt
    CHECK(retry_delay_ms(o, 1, 451, rng) == 120'000);
    CHECK(retry_delay_ms(o, 1, 452, rng) == 300'000);  // out of room is not greylisting
    CHECK(retry_delay_ms(o, 2, 450, rng) == 600'000);  // only the first attempt
    o.jitter = 0.2;
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 2000; ++i) {
        int64_t d = retry_delay_ms(o, 2, 0, rng);
        lo = std::min(lo, d);
        hi = std::max(hi, d);
    }
    CHECK(lo >= 480'000);
    CHECK(hi <= 720'000);
    CHECK(hi - lo > 200'000);  // the jitter spreads retries
    o.first_retry = std::chrono::milliseconds(0);
    o.jitter = 0.0;
    CHECK(retry_delay_ms(o, 1, 0, rng) == 1);  // never "now"
}

TEST_CASE("retry schedule: the nominal time it takes, a clock for released mail") {
    options o;
    o.first_retry = std::chrono::minutes(1);
    o.max_retry = std::chrono::hours(1);
    o.backoff = 2.0;
    CHECK(retry_schedule_ms(o, 0) == 0);
    CHECK(retry_schedule_ms(o, 1) == 0);  // the first attempt comes at once
    CHECK(retry_schedule_ms(o, 2) == 60'000);
    CHECK(retry_schedule_ms(o, 4) == 60'000 + 120'000 + 240'000);
    // 1+2+4+8+16+32 minutes, then an hour per attempt.
    CHECK(retry_schedule_ms(o, 9) == (63 + 2 * 60) * 60'000);
    CHECK(retry_schedule_ms(o, 200) > int64_t(5) * 86'400'000);  // past five days
    CHECK(retry_schedule_ms(o, UINT32_MAX) > 0);                  // bounded, no overflow
}

TEST_CASE("dot-stuffing for the wire") {
    std::string out;
    append_stuffed(out, "a\r\n.b\r\n.\r\n..\r\nc\r\n");
    CHECK(out == "a\r\n..b\r\n..\r\n...\r\nc\r\n.\r\n");
    out.clear();
    append_stuffed(out, ".first\r\nno final newline");
    CHECK(out == "..first\r\nno final newline\r\n.\r\n");
    out.clear();
    append_stuffed(out, "");
    CHECK(out == ".\r\n");
}

TEST_CASE("dot-stuffing a body fed in pieces is the same wherever the pieces split") {
    // Lines starting with dots, a lone CR, a body ending in CR only, in LF
    // only, in CRLF: split at every one and two places.
    const std::string bodies[] = {".a\r\n..\r\nb.\r\n.\r\n.", "x\r\n.\r", "\r\n.\n.", ".\r\n", "ab", "."};
    for (const std::string& body : bodies) {
        std::string whole;
        append_stuffed(whole, body);
        for (size_t i = 0; i <= body.size(); ++i)
            for (size_t j = i; j <= body.size(); ++j) {
                dot_stuffer d;
                std::string out;
                d.feed(out, std::string_view(body).substr(0, i));
                d.feed(out, std::string_view(body).substr(i, j - i));
                d.feed(out, std::string_view(body).substr(j));
                d.finish(out);
                INFO("body " << body.size() << " bytes split at " << i << " and " << j);
                CHECK(out == whole);
            }
    }
    std::string out;
    append_stuffed(out, "x\r\n.\r");
    CHECK(out == "x\r\n..\r\r\n.\r\n");
}

TEST_CASE("a failure DSN has the three parts of RFC 3464") {
    dsn_input in;
    in.reporting_mta = "mx.ringway.test";
    in.original_sender = "s@a.test";
    in.envid = "E1";
    in.arrival_unix = 1700000000;
    in.now_unix = 1700000100;
    in.mid = "0000000000000001";
    in.rcpts.push_back({"r@b.test", "rfc822;r@b.test", "failed", "5.1.1", "mx.b.test", "smtp; 550 5.1.1 no such user"});
    in.original = std::string(header_of("Subject: hi\r\nFrom: s@a.test\r\n\r\nbody\r\n"));
    std::string m = build_dsn(in);
    CHECK(in.original == "Subject: hi\r\nFrom: s@a.test\r\n\r\n");
    CHECK(m.find("Content-Type: multipart/report; report-type=delivery-status;") != std::string::npos);
    CHECK(m.find("Content-Type: message/delivery-status\r\n") != std::string::npos);
    CHECK(m.find("Content-Type: text/rfc822-headers\r\n") != std::string::npos);
    CHECK(m.find("Reporting-MTA: dns; mx.ringway.test\r\n") != std::string::npos);
    CHECK(m.find("Original-Envelope-Id: E1\r\n") != std::string::npos);
    CHECK(m.find("Original-Recipient: rfc822;r@b.test\r\nFinal-Recipient: rfc822; r@b.test\r\nAction: failed\r\n"
                 "Status: 5.1.1\r\nRemote-MTA: dns; mx.b.test\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n") !=
          std::string::npos);
    CHECK(m.find("Subject: Undelivered Mail Returned to Sender\r\n") != std::string::npos);
    CHECK(m.find("To: <s@a.test>\r\n") != std::string::npos);
    CHECK(m.find("Auto-Submitted: auto-replied\r\n") != std::string::npos);
    CHECK(m.find("Subject: hi\r\n") != std::string::npos);
    CHECK(m.find("\r\nbody\r\n") == std::string::npos);  // headers only
    CHECK(m.ends_with("--0000000000000001/mx.ringway.test--\r\n"));
}

TEST_CASE("a delay DSN says delayed, until when it is retried, and carries the header") {
    dsn_input in;
    in.reporting_mta = "mx.ringway.test";
    in.original_sender = "s@a.test";
    in.arrival_unix = 1700000000;
    in.now_unix = 1700014400;
    in.mid = "0000000000000002";
    dsn_recipient r{"r@b.test", "", "delayed", "4.4.1", "mx.b.test", "smtp; 451 4.4.1 try later"};
    r.will_retry_until_unix = 1700432000;
    in.rcpts.push_back(r);
    in.original = std::string(header_of("Subject: hi\r\n\r\nbody\r\n"));
    std::string m = build_dsn(in);
    CHECK(m.find("Subject: Delayed Mail (still being retried)\r\n") != std::string::npos);
    CHECK(m.find("Final-Recipient: rfc822; r@b.test\r\nAction: delayed\r\nStatus: 4.4.1\r\n") != std::string::npos);
    CHECK(m.find("Will-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000\r\n") != std::string::npos);
    CHECK(m.find("Content-Type: text/rfc822-headers\r\n") != std::string::npos);
    CHECK(m.find("\r\nbody\r\n") == std::string::npos);
}
