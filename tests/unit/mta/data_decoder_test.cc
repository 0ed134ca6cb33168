// DATA decoder tests: dot-unstuffing, the end of data, pipelined bytes left
// unconsumed, every split point (all single and double splits, byte by
// byte, random splits with a fixed seed) giving identical results, the SMTP
// smuggling variants of the 2023 SEC Consult write-up (none ends the data,
// each fails the message, the real CRLF.CRLF still ends it), NUL, line
// length, first-cause errors, fail(), reset().
#include <catch2/catch.hpp>

#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "mta/smtp/data_decoder.hh"

using namespace rw::mta::smtp;
using st = data_decoder::status;

namespace {

struct outcome {
    std::string out;
    st status = st::more;
    size_t consumed = 0;
    std::optional<reply> error;
    uint64_t bytes_out = 0;
    uint64_t bytes_in = 0;
};

// Feeds `in` cut at the given (ascending) positions; stops at `done`.
outcome run(std::string_view in, const std::vector<size_t>& cuts, size_t max_line = 1000) {
    data_decoder d(max_line);
    outcome o;
    size_t from = 0;
    for (size_t i = 0; i <= cuts.size(); ++i) {
        const size_t to = i < cuts.size() ? cuts[i] : in.size();
        auto s = d.feed(in.substr(from, to - from), o.out);
        REQUIRE(s.consumed <= to - from);
        if (s.st != st::done)
            REQUIRE(s.consumed == to - from);
        o.consumed += s.consumed;
        o.status = s.st;
        from = to;
        if (s.st == st::done)
            break;
    }
    o.error = d.error();
    o.bytes_out = d.bytes_out();
    o.bytes_in = d.bytes_in();
    return o;
}

outcome whole(std::string_view in, size_t max_line = 1000) { return run(in, {}, max_line); }

void same(const outcome& a, const outcome& b) {
    CHECK(a.out == b.out);
    CHECK(a.status == b.status);
    CHECK(a.consumed == b.consumed);
    CHECK(a.bytes_out == b.bytes_out);
    CHECK(a.bytes_in == b.bytes_in);
    REQUIRE(a.error.has_value() == b.error.has_value());
    if (a.error) {
        CHECK(a.error->code == b.error->code);
        CHECK(a.error->enhanced == b.error->enhanced);
        CHECK(a.error->text == b.error->text);
    }
}

void check_all_splits(std::string_view in, size_t max_line = 1000) {
    const outcome ref = whole(in, max_line);
    // Every single split point.
    for (size_t i = 0; i <= in.size(); ++i) {
        INFO("split at " << i);
        same(ref, run(in, {i}, max_line));
    }
    // Every pair of split points (the input is small).
    for (size_t i = 0; i <= in.size(); ++i)
        for (size_t j = i; j <= in.size(); ++j) {
            INFO("split at " << i << " and " << j);
            same(ref, run(in, {i, j}, max_line));
        }
    // Byte by byte.
    std::vector<size_t> every;
    for (size_t i = 1; i < in.size(); ++i)
        every.push_back(i);
    same(ref, run(in, every, max_line));
    // Random splits, fixed seed.
    std::mt19937 rng(20231218);
    for (int round = 0; round < 300; ++round) {
        std::vector<size_t> cuts;
        size_t at = 0;
        while (at < in.size()) {
            at += rng() % 9;
            cuts.push_back(std::min(at, in.size()));
        }
        INFO("random round " << round);
        same(ref, run(in, cuts, max_line));
    }
}

std::string line_of(size_t n, char c = 'x') { return std::string(n, c) + "\r\n"; }

std::string escaped(std::string_view v) {
    std::string s;
    for (const char c : v)
        s += c == '\r' ? std::string("\\r") : c == '\n' ? std::string("\\n") : std::string(1, c);
    return s;
}

}  // namespace

TEST_CASE("plain message with dot-stuffing", "[smtp]") {
    const std::string in =
        "Subject: hello\r\n"
        "\r\n"
        "..leading dot\r\n"
        "...two dots\r\n"
        ".x\r\n"
        "..\r\n"
        "end.\r\n"
        ".\r\n";
    auto o = whole(in);
    CHECK(o.status == st::done);
    CHECK(o.consumed == in.size());
    CHECK_FALSE(o.error);
    CHECK(o.out ==
          "Subject: hello\r\n"
          "\r\n"
          ".leading dot\r\n"
          "..two dots\r\n"
          "x\r\n"
          ".\r\n"
          "end.\r\n");
    CHECK(o.bytes_out == o.out.size());
    CHECK(o.bytes_in == in.size());
}

TEST_CASE("empty messages and empty lines", "[smtp]") {
    auto e = whole(".\r\n");
    CHECK(e.status == st::done);
    CHECK(e.consumed == 3);
    CHECK(e.out.empty());
    auto l = whole("\r\n.\r\n");
    CHECK(l.status == st::done);
    CHECK(l.out == "\r\n");
    auto two = whole("\r\n\r\n.\r\n");
    CHECK(two.out == "\r\n\r\n");
    // Not an end: a dot with more on the line, or a dot not at line start.
    auto m = whole(". \r\n");
    CHECK(m.status == st::more);
    CHECK(m.out == " \r\n");
    auto n = whole("a.\r\n");
    CHECK(n.status == st::more);
}

TEST_CASE("pipelined bytes after CRLF.CRLF are not consumed", "[smtp]") {
    const std::string msg = "body\r\n.\r\n";
    const std::string next = "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n";
    data_decoder d;
    std::string out;
    auto s = d.feed(msg + next, out);
    CHECK(s.st == st::done);
    CHECK(s.consumed == msg.size());
    CHECK(out == "body\r\n");
    CHECK(d.done());
    // Further feeds consume nothing until reset.
    auto again = d.feed(next, out);
    CHECK(again.st == st::done);
    CHECK(again.consumed == 0);
    CHECK(out == "body\r\n");

    // The same across chunks: the terminator's last LF in a chunk with the next command.
    check_all_splits(msg + next);
    auto o = run(msg + next, {5, 7, 8});
    CHECK(o.consumed == msg.size());
}

TEST_CASE("every split point gives identical output", "[smtp]") {
    const std::string in =
        "From: a@b.example\r\n"
        "\r\n"
        "..stuffed\r\n"
        ".\tx\r\n"
        "\r\n"
        "\xc3\xa9t\xc3\xa9\r\n"
        "..\r\n"
        "x.\r\n"
        ".\r\n"
        "QUIT\r\n";
    auto o = whole(in);
    CHECK(o.status == st::done);
    CHECK_FALSE(o.error);
    CHECK(o.out == "From: a@b.example\r\n\r\n.stuffed\r\n\tx\r\n\r\n\xc3\xa9t\xc3\xa9\r\n.\r\nx.\r\n");
    CHECK(o.consumed == in.size() - 6);
    check_all_splits(in);
}

TEST_CASE("the final CRLF.CRLF spread across five chunks", "[smtp]") {
    data_decoder d;
    std::string out;
    CHECK(d.feed("line", out).st == st::more);
    CHECK(d.feed("\r", out).st == st::more);
    CHECK(d.feed("\n", out).st == st::more);
    CHECK(d.feed(".", out).st == st::more);
    CHECK(d.feed("\r", out).st == st::more);
    auto s = d.feed("\nNEXT", out);
    CHECK(s.st == st::done);
    CHECK(s.consumed == 1);
    CHECK(out == "line\r\n");
    CHECK_FALSE(d.error());
    CHECK(d.bytes_in() == 9);
}

TEST_CASE("SMTP smuggling variants neither end the data nor pass", "[smtp]") {
    // SEC Consult, "SMTP Smuggling" (2023): end-of-data sequences that some
    // servers accept but that are not CRLF.CRLF.
    const std::vector<std::string> variants = {
        "\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r", "\r\n.\n", "\r.\r\n", "\n.\r", "\r.\n",
        "\r\n.\r\r\n", "\r\n.\n\r\n", "\n\n.\n\n",
    };
    const std::string head = "Subject: hi\r\n\r\nbody";
    const std::string smuggled =
        "MAIL FROM:<admin@victim.example>\r\n"
        "RCPT TO:<target@victim.example>\r\n"
        "DATA\r\n"
        "From: admin@victim.example\r\n"
        "\r\n"
        "spoofed";
    const std::string end = "\r\n.\r\n";
    const std::string after = "QUIT\r\n";
    for (const auto& v : variants) {
        INFO("variant " << escaped(v));
        // Up to and including the smuggled part: never done, failed.
        auto partial = whole(head + v + smuggled);
        CHECK(partial.status == st::failed);
        REQUIRE(partial.error);
        CHECK(partial.error->code == 554);
        CHECK(partial.error->enhanced == "5.6.0");
        // The variant alone at the end of the input is not an end either.
        CHECK(whole(head + v).status != st::done);
        // With the real end: done there, message failed, pipelined QUIT left.
        const std::string in = head + v + smuggled + end + after;
        auto o = whole(in);
        CHECK(o.status == st::done);
        CHECK(o.consumed == in.size() - after.size());
        REQUIRE(o.error);
        CHECK(o.error->code == 554);
        CHECK(o.error->enhanced == "5.6.0");
        // Same when the variant starts the data.
        auto first = whole(v + smuggled + end + after);
        CHECK(first.status == st::done);
        CHECK(first.consumed == v.size() + smuggled.size() + end.size());
        CHECK(first.error);
        check_all_splits(head + v + "x" + end + after);
    }
}

TEST_CASE("bare CR and bare LF fail the message but keep it in sync", "[smtp]") {
    auto lf = whole("a\nb\r\n.\r\n");
    CHECK(lf.status == st::done);
    REQUIRE(lf.error);
    CHECK(lf.error->code == 554);
    CHECK(lf.error->enhanced == "5.6.0");
    CHECK(lf.error->text.find("<LF>") != std::string::npos);

    auto cr = whole("a\rb\r\n.\r\n");
    REQUIRE(cr.error);
    CHECK(cr.error->text.find("<CR>") != std::string::npos);
    CHECK(cr.status == st::done);

    auto crcrlf = whole("a\r\r\n.\r\n");  // the first CR is bare, the second ends the line
    CHECK(crcrlf.status == st::done);
    CHECK(crcrlf.error);
    CHECK(crcrlf.consumed == 7);

    // Output stops at the failure: the caller discards the message anyway.
    data_decoder d;
    std::string out;
    auto s = d.feed("good\r\nbad\nmore\r\n", out);
    CHECK(s.st == st::failed);
    CHECK(s.consumed == 16);
    CHECK(out == "good\r\nbad");
    CHECK(d.failed());
    s = d.feed("still discarded\r\n", out);
    CHECK(s.st == st::failed);
    CHECK(out == "good\r\nbad");
    s = d.feed(".\r\nNOOP\r\n", out);
    CHECK(s.st == st::done);
    CHECK(s.consumed == 3);
    CHECK(d.bytes_out() == out.size());
}

TEST_CASE("NUL fails the message with 554 5.6.0", "[smtp]") {
    using namespace std::string_literals;
    const std::string in = "a\0b\r\n.\r\nRSET\r\n"s;
    auto o = whole(in);
    CHECK(o.status == st::done);
    CHECK(o.consumed == in.size() - 6);
    REQUIRE(o.error);
    CHECK(o.error->code == 554);
    CHECK(o.error->enhanced == "5.6.0");
    CHECK(o.error->text.find("NUL") != std::string::npos);
    check_all_splits(in);
    CHECK(whole("\0.\r\n"s).status == st::failed);  // a NUL-prefixed dot line is no end
}

TEST_CASE("line length limit: 1000 octets incl. CRLF, stuffing dot not counted", "[smtp]") {
    auto ok998 = whole(line_of(998) + ".\r\n");
    CHECK(ok998.status == st::done);
    CHECK_FALSE(ok998.error);
    CHECK(ok998.out.size() == 1000);

    auto long999 = whole(line_of(999) + ".\r\n");
    CHECK(long999.status == st::done);
    REQUIRE(long999.error);
    CHECK(long999.error->code == 552);
    CHECK(long999.error->enhanced == "5.3.4");
    CHECK(long999.out.size() == 998);  // appended up to the limit, then stopped

    auto stuffed = whole("." + line_of(998) + ".\r\n");  // 1001 octets on the wire
    CHECK_FALSE(stuffed.error);
    CHECK(stuffed.out.size() == 1000);
    auto stuffed2 = whole("." + line_of(999) + ".\r\n");
    CHECK(stuffed2.error);

    // A huge line does not end the message nor grow the output.
    auto huge = whole(std::string(100000, 'y') + "\r\n.\r\n");
    CHECK(huge.status == st::done);
    CHECK(huge.error);
    CHECK(huge.out.size() == 998);

    // Small limits, split everywhere.
    data_decoder d(10);
    std::string out;
    CHECK(d.feed(line_of(8), out).st == st::more);
    CHECK(d.feed(line_of(9), out).st == st::failed);
    REQUIRE(d.error());
    CHECK(d.error()->code == 552);
    check_all_splits(line_of(8) + "." + line_of(8) + line_of(9) + ".\r\nQUIT\r\n", 10);
    check_all_splits(line_of(7) + "\n" + line_of(12) + ".\r\n", 10);
    // Minimal limit: one octet per line.
    CHECK_FALSE(whole("\r\na\r\n.\r\n", 3).error);
    CHECK_FALSE(whole("..\r\n.\r\n", 3).error);
    CHECK(whole("ab\r\n.\r\n", 3).error);
}

TEST_CASE("the first cause of failure is kept", "[smtp]") {
    using namespace std::string_literals;
    auto a = whole("x\ny\0z\r\n.\r\n"s);
    REQUIRE(a.error);
    CHECK(a.error->text.find("<LF>") != std::string::npos);
    auto b = whole("x\0y\nz\r\n.\r\n"s);
    REQUIRE(b.error);
    CHECK(b.error->text.find("NUL") != std::string::npos);
    auto c = whole(line_of(1200) + "\n\r\n.\r\n");
    REQUIRE(c.error);
    CHECK(c.error->code == 552);
    auto d = whole("ab\r\0\r\n.\r\n"s);  // bare CR found when the NUL arrives: the CR came first
    REQUIRE(d.error);
    CHECK(d.error->text.find("<CR>") != std::string::npos);
}

TEST_CASE("fail() from outside and reset()", "[smtp]") {
    data_decoder d;
    std::string out;
    CHECK(d.feed("part one\r\n", out).st == st::more);
    d.fail(reply{552, "5.3.4", "Message size exceeds fixed limit"});
    CHECK(d.failed());
    auto s = d.feed("part two\r\n", out);
    CHECK(s.st == st::failed);
    CHECK(out == "part one\r\n");
    d.fail(reply{451, "4.3.0", "second cause ignored"});
    s = d.feed(".\r\n", out);
    CHECK(s.st == st::done);
    REQUIRE(d.error());
    CHECK(d.error()->code == 552);
    CHECK(d.error()->text == "Message size exceeds fixed limit");

    d.reset();
    CHECK_FALSE(d.failed());
    CHECK_FALSE(d.done());
    CHECK(d.bytes_out() == 0);
    CHECK(d.bytes_in() == 0);
    out.clear();
    s = d.feed("again\r\n.\r\n", out);
    CHECK(s.st == st::done);
    CHECK(out == "again\r\n");
    CHECK_FALSE(d.error());
}

TEST_CASE("a large message decodes in one pass", "[smtp]") {
    std::string in;
    for (int i = 0; i < 20000; ++i)
        in += (i % 7 == 0 ? ".." : "") + std::string(70, char('a' + i % 26)) + "\r\n";
    in += ".\r\n";
    data_decoder d;
    std::string out;
    size_t used = 0;
    data_decoder::step s{st::more, 0};
    for (size_t at = 0; at < in.size() && s.st != st::done; at += 4096) {
        s = d.feed(std::string_view(in).substr(at, 4096), out);
        used += s.consumed;
    }
    CHECK(s.st == st::done);
    CHECK(used == in.size());
    CHECK_FALSE(d.error());
    CHECK(out.size() == in.size() - 3 - (20000 + 6) / 7);
}

TEST_CASE("CR, LF and NUL are found at every offset of the eight-octet scan", "[smtp]") {
    // The text scan reads eight octets at a time: put each special octet at
    // every position of a line (and lines of every length around the word
    // size) and check what comes out, against the octet-by-octet meaning.
    for (size_t len = 0; len <= 40; ++len) {
        std::string line;
        for (size_t i = 0; i < len; ++i)
            line += char('a' + i % 26 + (i % 3 == 0 ? 0x80 - 'a' : 0));  // 8-bit octets too
        std::string msg = line + "\r\n" + line + "\r\n.\r\n";
        auto o = run(msg, {});
        CHECK(o.status == st::done);
        CHECK(o.out == line + "\r\n" + line + "\r\n");
        for (size_t at = 0; at < len; ++at)
            for (char c : {'\n', '\0', '\r'}) {
                std::string bad = line;
                bad[at] = c;
                if (c == '\r' && at + 1 < len)
                    bad[at + 1] = 'x';  // a bare CR, not a line end
                auto b = run(bad + "\r\n.\r\n", {});
                INFO("line length " << len << ", octet " << int(c) << " at " << at);
                CHECK(b.status == st::done);  // the data still ends at CRLF.CRLF, failed
                REQUIRE(b.error);
                CHECK(b.error->code == 554);
                CHECK(b.error->enhanced == "5.6.0");
                CHECK(b.consumed == bad.size() + 5);
            }
    }
}
