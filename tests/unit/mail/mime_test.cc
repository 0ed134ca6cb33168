// Tests for the streaming MIME parser (mail/mime.hh): the part tree, the
// transfer decoding of each leaf, file names (RFC 2231, RFC 2047),
// charsets, the defects of bad input within the limits, and feeding in
// pieces of any size giving what one piece gives.
#include "mail/mime.hh"

#include <catch2/catch.hpp>

#include <random>

using namespace rw::mail;
using namespace rw::mail::mime;

namespace {

struct seen {
    std::vector<part> begun;         // as part_begin saw them
    std::vector<std::string> data;   // per part index: the decoded body
    std::vector<unsigned> ended;     // indexes in part_end order
    std::vector<std::string> events;
};

struct recorder : handler {
    seen s;
    void part_begin(const part& p) override {
        s.begun.push_back(p);
        if (s.data.size() <= p.index)
            s.data.resize(p.index + 1);
        s.events.push_back("begin " + std::to_string(p.index));
    }
    void part_data(const part& p, std::string_view d) override {
        REQUIRE(!d.empty());
        s.data[p.index].append(d);
    }
    void part_end(const part& p) override {
        s.ended.push_back(p.index);
        s.events.push_back("end " + std::to_string(p.index));
    }
};

struct result {
    seen s;
    std::vector<part> parts;
    uint32_t defects = 0;
};

result parse(std::string_view msg, size_t step = 0, limits l = {}) {
    recorder r;
    parser p(r, l);
    if (step == 0) {
        p.feed(msg);
    } else {
        for (size_t i = 0; i < msg.size(); i += step)
            p.feed(msg.substr(i, step));
    }
    p.finish();
    return {r.s, p.parts(), p.defects()};
}

const std::string k_mixed =
    "From: a@example.org\r\n"
    "Subject: report\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed;\r\n"
    "\tboundary=\"=_outer\"\r\n"
    "\r\n"
    "This is the preamble.\r\n"
    "--=_outer\r\n"
    "Content-Type: text/plain; charset=\"ISO-8859-1\"\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Caf=E9 cr=E8me, soft=\r\n"
    "break and trailing space   \r\n"
    "last line\r\n"
    "--=_outer\r\n"
    "Content-Type: application/pdf; name=\"old.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0xLjQK\r\n"
    "AAEC/w==\r\n"
    "--=_outer--  \r\n"
    "The epilogue.\r\n";

}  // namespace

TEST_CASE("mime: a single-part message is one leaf", "[mime]") {
    auto r = parse("Subject: x\r\n\r\nhello\r\nworld\r\n");
    REQUIRE(r.parts.size() == 1);
    REQUIRE(r.parts[0].type == "text/plain");
    REQUIRE(r.parts[0].charset == "us-ascii");
    REQUIRE(r.parts[0].leaf);
    REQUIRE(r.s.data[0] == "hello\r\nworld\r\n");  // no boundary: the last line end is body
    REQUIRE(r.parts[0].body_offset == 14);
    REQUIRE(r.defects == 0);
    REQUIRE(r.s.events == std::vector<std::string>{"begin 0", "end 0"});
}

TEST_CASE("mime: multipart/mixed with quoted-printable text and a base64 attachment", "[mime]") {
    auto r = parse(k_mixed);
    REQUIRE(r.defects == 0);
    REQUIRE(r.parts.size() == 3);
    REQUIRE(r.parts[0].type == "multipart/mixed");
    REQUIRE(!r.parts[0].leaf);
    REQUIRE(r.parts[1].type == "text/plain");
    REQUIRE(r.parts[1].charset == "iso-8859-1");
    REQUIRE(r.parts[1].encoding == "quoted-printable");
    REQUIRE(r.parts[1].parent == 0);
    REQUIRE(r.parts[1].depth == 1);
    // Soft break joined, trailing whitespace dropped, the line end before
    // the boundary not part of the body.
    REQUIRE(r.s.data[1] == "Caf\xE9 cr\xE8me, softbreak and trailing space\r\nlast line");
    REQUIRE(to_utf8(r.parts[1].charset, r.s.data[1]) == "Caf\xC3\xA9 cr\xC3\xA8me, softbreak and trailing space\r\nlast line");
    REQUIRE(r.parts[2].type == "application/pdf");
    REQUIRE(r.parts[2].disposition == "attachment");
    REQUIRE(r.parts[2].filename == "report.pdf");  // the disposition's name wins over the type's
    REQUIRE(r.s.data[2] == std::string("%PDF-1.4\n\x00\x01\x02\xff", 13));
    REQUIRE(r.parts[2].decoded_bytes == 13);
    REQUIRE(r.s.events == std::vector<std::string>{"begin 0", "begin 1", "end 1", "begin 2", "end 2", "end 0"});
    // Offsets: part 1's header starts after the first delimiter line.
    REQUIRE(k_mixed.substr(r.parts[1].header_offset, 13) == "Content-Type:");
    REQUIRE(k_mixed.substr(r.parts[1].body_offset, 6) == "Caf=E9");
    REQUIRE(k_mixed.substr(r.parts[2].end_offset, 11) == "--=_outer--");
}

TEST_CASE("mime: feeding in pieces of any size gives the same tree and bodies", "[mime]") {
    std::string msg = k_mixed;
    // A body line far longer than the line buffer streams through.
    std::string long_line(5000, 'x');
    msg.insert(msg.find("last line"), long_line + "=\r\n");
    const auto whole = parse(msg);
    REQUIRE(whole.s.data[1].find(long_line + "last line") != std::string::npos);
    for (size_t step : {1, 2, 3, 7, 64, 1023, 1024, 1025, 4096}) {
        const auto split = parse(msg, step);
        INFO("step " << step);
        REQUIRE(split.s.data == whole.s.data);
        REQUIRE(split.s.events == whole.s.events);
        REQUIRE(split.defects == whole.defects);
        for (size_t i = 0; i < whole.parts.size(); ++i) {
            REQUIRE(split.parts[i].filename == whole.parts[i].filename);
            REQUIRE(split.parts[i].body_offset == whole.parts[i].body_offset);
            REQUIRE(split.parts[i].end_offset == whole.parts[i].end_offset);
        }
    }
}

TEST_CASE("mime: nesting, message/rfc822, digests, bare LF", "[mime]") {
    const std::string msg =
        "Content-Type: multipart/mixed; boundary=a\n"
        "\n"
        "--a\n"
        "Content-Type: multipart/alternative; boundary=\"b\"\n"
        "\n"
        "--b\n"
        "\n"
        "plain text\n"
        "--b\n"
        "Content-Type: text/html\n"
        "\n"
        "<p>html</p>\n"
        "--b--\n"
        "--a\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "Subject: inner\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        "inner body\n"
        "--a\n"
        "Content-Type: multipart/digest; boundary=d\n"
        "\n"
        "--d\n"
        "\n"
        "Subject: digested\n"
        "\n"
        "digest body\n"
        "--d--\n"
        "--a--\n";
    auto r = parse(msg);
    REQUIRE(r.defects == 0);
    std::vector<std::tuple<std::string, int, unsigned>> tree;
    for (const auto& p : r.parts)
        tree.emplace_back(p.type, p.parent, p.depth);
    REQUIRE(tree == std::vector<std::tuple<std::string, int, unsigned>>{
                        {"multipart/mixed", -1, 0},       {"multipart/alternative", 0, 1},
                        {"text/plain", 1, 2},             {"text/html", 1, 2},
                        {"message/rfc822", 0, 1},         {"text/plain", 4, 2},
                        {"multipart/digest", 0, 1},       {"message/rfc822", 6, 2},  // RFC 2046 5.1.5 default
                        {"text/plain", 7, 3}});
    REQUIRE(r.s.data[2] == "plain text");
    REQUIRE(r.s.data[3] == "<p>html</p>");
    REQUIRE(r.s.data[5] == "inner body");  // the outer delimiter closes the message and its body
    REQUIRE(r.parts[5].charset == "utf-8");
    REQUIRE(r.parts[5].headers.front() == std::pair<std::string, std::string>{"subject", "inner"});
    REQUIRE(r.s.data[8] == "digest body");
}

TEST_CASE("mime: file names in RFC 2231 and RFC 2047 forms, charsets", "[mime]") {
    auto f = parse_field_value(
        "attachment; filename*0*=utf-8'en'%E2%82%AC%20price; filename*1=\" list\"; filename*2*=.xlsx; size=12");
    REQUIRE(f.value == "attachment");
    REQUIRE(*f.param("filename") == "\xE2\x82\xAC price list.xlsx");
    REQUIRE(*f.param("size") == "12");
    REQUIRE(f.param("creation-date") == nullptr);
    auto latin = parse_field_value("attachment; filename*=iso-8859-1''r%E9sum%E9.doc");
    REQUIRE(*latin.param("filename") == "r\xC3\xA9sum\xC3\xA9.doc");
    auto ct = parse_field_value("Text/HTML (a comment) ; charset = \"UTF-8\" ; format=flowed;;junk; delsp");
    REQUIRE(ct.value == "text/html");
    REQUIRE(*ct.param("charset") == "UTF-8");
    REQUIRE(*ct.param("format") == "flowed");
    REQUIRE(parse_field_value("multipart/mixed; boundary=\"a\\\"b\"").param("boundary")->compare("a\"b") == 0);
    // Cut off inside a comment or a quoted string: read as far as it goes.
    REQUIRE(parse_field_value("text/plain; charset=x (a comment \\").value == "text/plain");
    REQUIRE(*parse_field_value("text/plain; name=\"unterminated \\").param("name") == "unterminated \\");  // a final backslash quotes nothing: kept

    REQUIRE(decode_words("=?UTF-8?B?w6l0w6k=?= =?ISO-8859-1?Q?_caf=E9?=.txt") == "\xC3\xA9t\xC3\xA9 caf\xC3\xA9.txt");
    REQUIRE(decode_words("plain =?bogus-charset?Q?x?= text") == "plain =?bogus-charset?Q?x?= text");
    REQUIRE(decode_words("=?utf-8*en?q?a_b?=") == "a b");
    REQUIRE(decode_words("a =?utf-8?q?x?= b") == "a x b");  // spaces next to plain text stay

    const std::string msg =
        "Content-Type: multipart/mixed; boundary=z\r\n\r\n"
        "--z\r\n"
        "Content-Type: application/octet-stream; name=\"=?UTF-8?B?w7xiZXIuZXhl?=\"\r\n\r\n"
        "MZ\r\n"
        "--z--\r\n";
    auto r = parse(msg);
    REQUIRE(r.parts[1].filename == "\xC3\xBC" "ber.exe");
    REQUIRE(r.parts[1].disposition.empty());

    REQUIRE(to_utf8("windows-1252", "\x80") == "\xE2\x82\xAC");
    REQUIRE(to_utf8("utf-8", "ok \xFF end") == "ok \xEF\xBF\xBD end");  // invalid: U+FFFD
    REQUIRE(to_utf8("no-such-charset", "x") == std::nullopt);
}

TEST_CASE("mime: bad input is bounded and recorded", "[mime]") {
    SECTION("an unterminated multipart is closed at the end") {
        auto r = parse("Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\ntext\r\n");
        REQUIRE(r.defects == unterminated_multipart);
        REQUIRE(r.s.data[1] == "text\r\n");
        REQUIRE(r.s.ended == std::vector<unsigned>{1, 0});
    }
    SECTION("multipart without a boundary is a leaf") {
        auto r = parse("Content-Type: multipart/mixed\r\n\r\n--q\r\nx\r\n");
        REQUIRE(r.defects == missing_boundary);
        REQUIRE(r.parts.size() == 1);
        REQUIRE(r.parts[0].leaf);
        REQUIRE(r.s.data[0] == "--q\r\nx\r\n");
    }
    SECTION("an outer boundary closes an inner multipart") {
        auto r = parse("Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
                       "Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nin\r\n"
                       "--o\r\n\r\nnext\r\n--o--\r\n");
        REQUIRE(r.defects == nested_boundary_missing);
        REQUIRE(r.s.data[2] == "in");
        REQUIRE(r.s.data[3] == "next");
        REQUIRE(r.parts[3].parent == 0);
    }
    SECTION("nesting past max_depth is opaque") {
        std::string msg;
        for (int i = 0; i < 6; ++i)
            msg += "Content-Type: multipart/mixed; boundary=b" + std::to_string(i) + "\r\n\r\n--b" +
                   std::to_string(i) + "\r\n";
        msg += "\r\ndeep\r\n";
        auto r = parse(msg, 0, limits{.max_depth = 3});
        REQUIRE((r.defects & too_deep));
        REQUIRE(r.parts.size() == 4);
        REQUIRE(r.parts[3].depth == 3);
        REQUIRE(r.parts[3].leaf);
        REQUIRE(r.s.data[3].find("deep") != std::string::npos);
    }
    SECTION("parts past max_parts are not opened") {
        std::string msg = "Content-Type: multipart/mixed; boundary=m\r\n\r\n";
        for (int i = 0; i < 50; ++i)
            msg += "--m\r\n\r\npart " + std::to_string(i) + "\r\n";
        msg += "--m--\r\n";
        auto r = parse(msg, 0, limits{.max_parts = 5});
        REQUIRE((r.defects & too_many_parts));
        REQUIRE(r.parts.size() == 5);
        REQUIRE(r.s.data[4] == "part 3");
    }
    SECTION("a part header past its limit is cut") {
        std::string msg = "Content-Type: multipart/mixed; boundary=h\r\n\r\n--h\r\n";
        for (int i = 0; i < 100; ++i)
            msg += "X-Filler-" + std::to_string(i) + ": " + std::string(100, 'f') + "\r\n";
        msg += "Content-Type: text/html\r\n\r\nbody\r\n--h--\r\n";
        auto r = parse(msg, 0, limits{.max_header_bytes = 2048});
        REQUIRE((r.defects & header_too_large));
        REQUIRE(r.parts[1].headers.size() < 20);
        REQUIRE(r.parts[1].type == "text/plain");  // the Content-Type past the limit was dropped
        REQUIRE(r.s.data[1] == "body");
    }
    SECTION("broken encodings decode as far as they go") {
        auto r = parse("Content-Transfer-Encoding: base64\r\n\r\naGVs*bG8=\r\nextra\r\n");
        REQUIRE(r.defects == bad_base64);
        REQUIRE(r.s.data[0].starts_with("hello"));
        auto q = parse("Content-Transfer-Encoding: quoted-printable\r\n\r\na=ZZb=4\r\n");
        REQUIRE(q.defects == bad_quoted_printable);
        REQUIRE(q.s.data[0] == "a=ZZb=4\r\n");
    }
    SECTION("a part without a header section, and lines that are not fields") {
        auto r = parse("Content-Type: multipart/mixed; boundary=n\r\n\r\n--n\r\nno header here\r\n--n\r\n"
                       "Content-Type: text/plain\r\nnot a field\r\n\r\nbody\r\n--n--\r\n");
        REQUIRE(r.defects == bad_header_line);
        REQUIRE(r.s.data[1] == "no header here");
        REQUIRE(r.s.data[2] == "body");
    }
    SECTION("a boundary that is only a prefix of the line is text") {
        auto r = parse("Content-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\n\r\n--pX\r\n--p\t\r\n\r\nb\r\n--p--\r\n");
        REQUIRE(r.defects == 0);
        REQUIRE(r.s.data[1] == "--pX");
        REQUIRE(r.s.data[2] == "b");
    }
}

TEST_CASE("mime: bodies to UTF-8 in pieces", "[mime]") {
    auto run = [](std::string_view charset, std::string_view in, size_t step) {
        utf8_stream u(charset);
        std::string out;
        for (size_t i = 0; i < in.size(); i += step)
            u.feed(in.substr(i, step), out);
        u.finish(out);
        return out;
    };
    const std::string euro_utf8 = "price: \xE2\x82\xAC" "5, \xF0\x9F\x98\x80 ok";
    const std::string shift_jis = "\x93\xfa\x96\x7b";  // 日本
    for (size_t step : {1, 2, 3, 100}) {
        INFO("step " << step);
        REQUIRE(run("utf-8", euro_utf8, step) == euro_utf8);  // split sequences are carried over
        REQUIRE(run("ISO-8859-15", "price: \xA4" "5", step) == "price: \xE2\x82\xAC" "5");
        REQUIRE(run("shift_jis", shift_jis, step) == "\xE6\x97\xA5\xE6\x9C\xAC");
        REQUIRE(run("utf-8", "bad \xC3 x", step) == "bad \xEF\xBF\xBD x");
        REQUIRE(run("utf-8", "cut \xE2\x82", step) == "cut \xEF\xBF\xBD\xEF\xBF\xBD");
    }
    utf8_stream unknown("x-no-such");
    REQUIRE(!unknown.known());
    std::string out;
    unknown.feed("plain", out);
    unknown.finish(out);
    REQUIRE(out == "plain");
}
