// The load tools' arithmetic: histogram percentiles against a sorted
// reference, argument parsing with its error lines, the streaming digest,
// the integrity mark and the SMTP reply parser.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "bench/lib/args.hh"
#include "bench/lib/digest.hh"
#include "bench/lib/histogram.hh"
#include "bench/lib/json.hh"
#include "bench/lib/mark.hh"
#include "bench/lib/smtp_reply.hh"

using namespace rw::bench;

namespace {
// Nearest rank: the value of rank ceil(permille * n / 1000) in sorted order.
uint64_t reference(const std::vector<uint64_t>& sorted, uint64_t permille) {
    uint64_t rank = (permille * sorted.size() + 999) / 1000;
    rank = std::clamp<uint64_t>(rank, 1, sorted.size());
    return sorted[rank - 1];
}

void check_against_reference(std::vector<uint64_t> v) {
    histogram h;
    for (auto x : v)
        h.record(x);
    std::sort(v.begin(), v.end());
    REQUIRE(h.count() == v.size());
    REQUIRE(h.min() == v.front());
    REQUIRE(h.max() == v.back());
    for (uint64_t pm : {1u, 100u, 250u, 500u, 900u, 990u, 999u, 1000u}) {
        const uint64_t want = reference(v, pm);
        const uint64_t got = h.percentile(double(pm) / 10.0);
        INFO("permille " << pm << " want " << want << " got " << got);
        // Never below the true value, and at most one sub-bucket above it.
        REQUIRE(got >= want);
        REQUIRE(double(got - want) <= double(want) / 128.0 + 1.0);
    }
}
}  // namespace

TEST_CASE("histogram: exact below 256, bounded relative error above") {
    for (uint64_t v = 0; v < 256; ++v)
        REQUIRE(histogram::highest_of(histogram::index_of(v)) == v);
    std::mt19937_64 rng(1);
    for (int i = 0; i < 100000; ++i) {
        uint64_t v = rng() >> (rng() % 64);
        unsigned idx = histogram::index_of(v);
        REQUIRE(idx < histogram::k_buckets);
        uint64_t hi = histogram::highest_of(idx);
        REQUIRE(hi >= v);
        REQUIRE(double(hi - v) <= double(v) / 128.0);
        if (idx > 0)
            REQUIRE(histogram::highest_of(idx - 1) < v);  // buckets are contiguous
    }
    REQUIRE(histogram::index_of(UINT64_MAX) == histogram::k_buckets - 1);
    REQUIRE(histogram::highest_of(histogram::k_buckets - 1) == UINT64_MAX);
}

TEST_CASE("histogram: percentiles match a sorted reference") {
    std::mt19937_64 rng(42);
    SECTION("uniform microseconds to seconds") {
        std::vector<uint64_t> v;
        for (int i = 0; i < 50000; ++i)
            v.push_back(1000 + rng() % 2'000'000'000);
        check_against_reference(v);
    }
    SECTION("long tail (lognormal)") {
        std::lognormal_distribution<double> d(13.0, 1.5);  // ~0.4 ms median, tail to seconds
        std::vector<uint64_t> v;
        for (int i = 0; i < 50000; ++i)
            v.push_back(uint64_t(d(rng)));
        check_against_reference(v);
    }
    SECTION("small counts: 1, 2, 3, 1000 samples") {
        for (size_t n : {1u, 2u, 3u, 1000u}) {
            std::vector<uint64_t> v;
            for (size_t i = 0; i < n; ++i)
                v.push_back(rng() % 100'000'000);
            check_against_reference(v);
        }
    }
    SECTION("one outlier: p99.9 of 1000 is the 999th value, max is the outlier") {
        histogram h;
        for (int i = 1; i <= 999; ++i)
            h.record(uint64_t(i) * 1000);
        h.record(5'000'000'000);
        REQUIRE(h.percentile(99.9) >= 999'000);
        REQUIRE(h.percentile(99.9) <= 999'000 + 999'000 / 128);
        REQUIRE(h.percentile(100) == 5'000'000'000);
        REQUIRE(h.max() == 5'000'000'000);
        REQUIRE(h.percentile(50) >= 500'000);
        REQUIRE(h.percentile(50) <= 500'000 + 500'000 / 128);
    }
    SECTION("merge equals recording everything in one") {
        histogram a, b, all;
        for (int i = 0; i < 10000; ++i) {
            uint64_t x = rng() % 10'000'000;
            (i % 3 ? a : b).record(x);
            all.record(x);
        }
        a.merge(b);
        for (double q : {50.0, 90.0, 99.0, 99.9})
            REQUIRE(a.percentile(q) == all.percentile(q));
        REQUIRE(a.count() == all.count());
        REQUIRE(a.mean() == all.mean());
    }
    SECTION("empty") {
        histogram h;
        REQUIRE(h.percentile(50) == 0);
        REQUIRE(h.max() == 0);
        REQUIRE(h.min() == 0);
    }
}

TEST_CASE("args: rates, sizes, durations, counts, mixes") {
    REQUIRE(parse_rate("--rate", "500k/h").value() == 500000.0 / 3600);
    REQUIRE(parse_rate("--rate", "139/s").value() == 139.0);
    REQUIRE(parse_rate("--rate", "1.5k/m").value() == 25.0);
    REQUIRE(parse_rate("--rate", "fast").error() ==
            "--rate: expected N/s, N/m or N/h (N may end in k or m), got \"fast\"");
    REQUIRE(!parse_rate("--rate", "10/d"));
    REQUIRE(!parse_rate("--rate", "0/s"));
    REQUIRE(!parse_rate("--rate", "-5/s"));
    REQUIRE(!parse_rate("--rate", "/s"));
    REQUIRE(parse_size("--max", "4k").value() == 4096);
    REQUIRE(parse_size("--max", "1m").value() == 1048576);
    REQUIRE(parse_size("--max", "512").value() == 512);
    REQUIRE(!parse_size("--max", "4kb"));
    REQUIRE(!parse_size("--max", "0"));
    REQUIRE(parse_duration("-d", "30s").value().count() == 30000);
    REQUIRE(parse_duration("-d", "500ms").value().count() == 500);
    REQUIRE(parse_duration("-d", "2m").value().count() == 120000);
    REQUIRE(parse_duration("-d", "1h").value().count() == 3600000);
    REQUIRE(parse_duration("-d", "10").value().count() == 10000);
    REQUIRE(parse_duration("-d", "soon").error() ==
            "-d: expected a duration such as 30s, 500ms, 2m or 1h, got \"soon\"");
    REQUIRE(parse_count("-n", "10k").value() == 10000);
    REQUIRE(parse_count("-n", "2m").value() == 2000000);
    REQUIRE(!parse_count("-n", "1.5"));
    REQUIRE(parse_fraction("--p", "10%").value() == 0.1);
    REQUIRE(parse_fraction("--p", "0.25").value() == 0.25);
    REQUIRE(!parse_fraction("--p", "1.5"));
    auto mix = parse_mix("--mix", "1k:50,4k:30,64k:15,1m:5").value();
    REQUIRE(mix.size() == 4);
    REQUIRE(mix[0].bytes == 1024);
    REQUIRE(mix[0].weight == 50);
    REQUIRE(mix[3].bytes == 1048576);
    REQUIRE(mix[3].weight == 5);
    REQUIRE(parse_mix("--mix", "4k").value()[0].weight == 1);
    REQUIRE(parse_mix("--mix", "4k:0").error() ==
            "--mix: expected SIZE[:WEIGHT],... such as 1k:50,4k:30,64k:15,1m:5, got \"4k:0\"");
    REQUIRE(!parse_mix("--mix", ""));
    REQUIRE(!parse_mix("--mix", "4k,"));
}

TEST_CASE("digest64: pieces of any size give the digest of the whole") {
    std::mt19937_64 rng(7);
    std::string data(100000, '\0');
    for (auto& c : data)
        c = char(rng());
    for (size_t len : {0u, 1u, 7u, 8u, 31u, 32u, 33u, 63u, 64u, 65u, 1000u, 100000u}) {
        std::string_view whole(data.data(), len);
        const uint64_t one = digest64::of(whole);
        for (int trial = 0; trial < 20; ++trial) {
            digest64 d;
            size_t pos = 0;
            while (pos < len) {
                size_t take = std::min<size_t>(len - pos, 1 + rng() % 70);
                d.update(whole.substr(pos, take));
                pos += take;
            }
            REQUIRE(d.finish() == one);
            REQUIRE(d.length() == len);
        }
    }
}

TEST_CASE("digest64: any single-byte change, truncation or swap changes it") {
    std::string body;
    for (int i = 0; i < 200; ++i)
        body += "line " + std::to_string(i) + " of a message body\r\n";
    const uint64_t d0 = digest64::of(body);
    for (size_t i = 0; i < body.size(); i += 7) {
        std::string b = body;
        b[i] ^= 0x20;
        REQUIRE(digest64::of(b) != d0);
    }
    REQUIRE(digest64::of(body.substr(0, body.size() - 1)) != d0);
    REQUIRE(digest64::of(body + "\r\n") != d0);
    std::string swapped = body.substr(40, 40) + body.substr(0, 40) + body.substr(80);
    REQUIRE(digest64::of(swapped) != d0);
    REQUIRE(digest64::of("") != digest64::of(std::string(1, '\0')));
    REQUIRE(to_hex(0x8a0c6f2d9b1e4473ull) == "8a0c6f2d9b1e4473");
}

TEST_CASE("mark: formats, and is found among other header lines") {
    mark m{"6c1f09-0-3-17", 4021, 0x8a0c6f2d9b1e4473ull};
    const std::string line = format_mark(m);
    REQUIRE(line == "X-Ringway-Load: id=6c1f09-0-3-17; size=4021; digest=8a0c6f2d9b1e4473\r\n");
    std::string hdr = "Received: from x by y;\r\n\tWed, 25 Nov 2026\r\nFrom: <a@b>\r\n" + line + "Subject: s\r\n";
    auto got = find_mark(hdr);
    REQUIRE(got);
    REQUIRE(got->id == m.id);
    REQUIRE(got->size == m.size);
    REQUIRE(got->digest == m.digest);
    REQUIRE(find_mark("x-ringway-load: id=a; size=1; digest=0000000000000001\n"));
    REQUIRE(got->sent_us == 0);
    mark t{"a-1", 5, 1, 1795000000123456};
    REQUIRE(format_mark(t) == "X-Ringway-Load: id=a-1; size=5; digest=0000000000000001; sent=1795000000123456\r\n");
    REQUIRE(find_mark(format_mark(t))->sent_us == 1795000000123456);
    REQUIRE(!find_mark("X-Ringway-Load: id=a; size=1; digest=0000000000000001; sent=-5\r\n"));
    REQUIRE(!find_mark("From: a\r\n"));
    REQUIRE(!find_mark("X-Ringway-Load: id=a; size=x; digest=0000000000000001\r\n"));
    REQUIRE(!find_mark("X-Ringway-Load: id=a; size=1; digest=01\r\n"));
    REQUIRE(!find_mark("X-Ringway-Load: id=a; size=1\r\n"));
}

TEST_CASE("smtp replies: single, multi-line, split, garbage") {
    smtp_reply r;
    size_t used = 0;
    REQUIRE(parse_reply("250 2.0.0 Ok: queued\r\n", r, used) == reply_status::complete);
    REQUIRE(r.code == 250);
    REQUIRE(r.enhanced == "2.0.0");
    REQUIRE(r.first_text() == "2.0.0 Ok: queued");
    REQUIRE(used == 22);
    std::string ehlo = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 STARTTLS\r\n221 next";
    REQUIRE(parse_reply(ehlo, r, used) == reply_status::complete);
    REQUIRE(r.lines.size() == 4);
    REQUIRE(used == ehlo.find("221"));
    auto kws = ehlo_keywords(r);
    REQUIRE(has_keyword(kws, "PIPELINING"));
    REQUIRE(has_keyword(kws, "SIZE"));
    REQUIRE(has_keyword(kws, "STARTTLS"));
    REQUIRE(!has_keyword(kws, "CHUNKING"));
    REQUIRE(!has_keyword(kws, "PIPE"));
    REQUIRE(parse_reply("250-first\r\n250 sec", r, used) == reply_status::incomplete);
    REQUIRE(parse_reply("", r, used) == reply_status::incomplete);
    REQUIRE(parse_reply("354\r\n", r, used) == reply_status::complete);
    REQUIRE(r.code == 354);
    REQUIRE(parse_reply("451 4.3.0 try later\r\n", r, used) == reply_status::complete);
    REQUIRE(r.enhanced == "4.3.0");
    REQUIRE(parse_reply("550 4.3.0 class mismatch\r\n", r, used) == reply_status::complete);
    REQUIRE(r.enhanced.empty());
    REQUIRE(parse_reply("hello there\r\n", r, used) == reply_status::garbage);
    REQUIRE(parse_reply("250-a\r\n251 b\r\n", r, used) == reply_status::garbage);
    REQUIRE(parse_reply("25O ok\r\n", r, used) == reply_status::garbage);
    REQUIRE(parse_reply("250xok\r\n", r, used) == reply_status::garbage);
    REQUIRE(parse_reply("650 no\r\n", r, used) == reply_status::garbage);
    REQUIRE(parse_reply(std::string(5000, '2'), r, used) == reply_status::garbage);
}

TEST_CASE("json: escapes and structure") {
    json_writer j;
    j.begin_object().value("a", uint64_t(1)).value("s", "q\"\\\n\x01").begin_object("o").value("x", 1.5).end_object();
    j.begin_array("l").end_array().value("b", true).end_object();
    REQUIRE(j.str() == R"({"a":1,"s":"q\"\\\n\u0001","o":{"x":1.5},"l":[],"b":true})");
}

TEST_CASE("json: arrays of objects, and bytes that are not UTF-8 still make JSON") {
    json_writer j;
    j.begin_object().begin_array("rows");
    j.begin_object().value("reply", std::string_view("550 caf\xe9 \xff")).end_object();
    j.begin_object().value("n", int64_t(-2)).value("nan", 0.0 / 0.0).end_object();
    j.end_array().end_object();
    const std::string s = j.str();
    REQUIRE(s == "{\"rows\":[{\"reply\":\"550 caf\xef\xbf\xbd \xef\xbf\xbd\"},{\"n\":-2,\"nan\":null}]}");
    auto parsed = nlohmann::json::parse(s);  // throws if it is not JSON
    REQUIRE(parsed["rows"][1]["n"] == -2);
}
