// Tests for the header section parser and the address lists
// (mail/header.hh): fields exactly as sent with their offsets, folding,
// bare LF, the first-line rule, limits, feeding in pieces of any size
// giving what one piece gives, and the RFC 5322 appendix A addresses.
#include "mail/header.hh"

#include <catch2/catch.hpp>

#include <random>

using namespace rw::mail;

namespace {

struct parsed {
    std::vector<header_field> fields;
    header_error error = header_error::none;
    size_t malformed = 0;
    uint64_t section = 0;
    bool done_before_finish = false;
    uint64_t returned = 0;  // the sum of what feed returned
};

// Feeds msg in pieces ending at the given cut points, then finishes.
parsed parse_cut(std::string_view msg, const std::vector<size_t>& cuts, header_limits limits = {}) {
    header_parser p(limits);
    parsed r;
    size_t at = 0;
    for (size_t cut : cuts) {
        r.returned += p.feed(msg.substr(at, cut - at));
        at = cut;
    }
    r.returned += p.feed(msg.substr(at));
    r.done_before_finish = p.done();
    p.finish();
    CHECK(p.done());
    CHECK(p.feed("X: more\r\n\r\n") == 0);
    r.fields = p.fields();
    r.error = p.error();
    r.malformed = p.malformed_lines();
    r.section = p.section_bytes();
    return r;
}

parsed parse(std::string_view msg, header_limits limits = {}) { return parse_cut(msg, {}, limits); }

parsed parse_every(std::string_view msg, size_t piece, header_limits limits = {}) {
    std::vector<size_t> cuts;
    for (size_t i = piece; i < msg.size(); i += piece)
        cuts.push_back(i);
    return parse_cut(msg, cuts, limits);
}

void check_same(const parsed& a, const parsed& b) {
    REQUIRE(a.fields.size() == b.fields.size());
    for (size_t i = 0; i < a.fields.size(); ++i) {
        CHECK(a.fields[i].raw == b.fields[i].raw);
        CHECK(a.fields[i].name_len == b.fields[i].name_len);
        CHECK(a.fields[i].offset == b.fields[i].offset);
    }
    CHECK(a.error == b.error);
    CHECK(a.malformed == b.malformed);
    CHECK(a.section == b.section);
    CHECK(a.done_before_finish == b.done_before_finish);
}

// Every field is the stored bytes at its offset, inside the section.
void check_offsets(std::string_view msg, const parsed& r) {
    uint64_t prev_end = 0;
    for (const auto& f : r.fields) {
        CHECK(f.offset >= prev_end);
        CHECK(f.offset + f.raw.size() <= r.section);
        CHECK(msg.substr(f.offset, f.raw.size()) == f.raw);
        prev_end = f.offset + f.raw.size();
    }
}

std::vector<std::string> names(const parsed& r) {
    std::vector<std::string> n;
    for (const auto& f : r.fields)
        n.emplace_back(f.name());
    return n;
}

using strings = std::vector<std::string>;

const char* const k_samples[] = {
    "From: a@b.example\r\nTo: c@d.example\r\nSubject: hi\r\n\r\nbody\r\n",
    "Subject: one\r\n two\r\n\tthree\r\nX-Empty:\r\nX-Blank: \r\n  \r\nY: z\r\n\r\n",
    "A: 1\nB: 2\n folded\nC: 3\r\n\nbody with: colon\n",
    "A: 1\r\nbogus line\r\n continued bogus\r\nB: 2\r\n:no name\r\nC D: 3\r\n\r\n",
    "A: 1\r\nB: no empty line, the message is all header\r\n more",
    "From someone@example.com Mon Jan  1 00:00:00 2024\r\nA: 1\r\n\r\n",
    "\r\nA: this is body\r\n",
    "Subject : spaced\r\nX\t: tab\r\n\r\n",
    "A: cr\rinside\r\n\rjunk\r\nB: 2\r\n\r\n",
    " leading continuation\r\nA: 1\r\n\r\n",
    "Received: from a (a [192.0.2.1])\r\n\tby b with ESMTP id 1;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s;\r\n b=dGhl\r\n IHNp\r\n\r\n",
    "",
    "A: 1\r\nBogus",
};

}  // namespace

TEST_CASE("header: fields exactly as sent, with their offsets", "[header]") {
    const std::string msg = "From: a@b.example\r\nTo: c@d.example\r\nSubject: hi there \r\n\r\nbody\r\n";
    header_parser p;
    CHECK(p.feed(msg) == msg.find("body"));
    REQUIRE(p.done());
    CHECK(p.section_bytes() == msg.find("body"));
    CHECK(p.error() == header_error::none);
    CHECK(p.malformed_lines() == 0);
    const auto& f = p.fields();
    REQUIRE(f.size() == 3);
    CHECK(f[0].raw == "From: a@b.example\r\n");
    CHECK(f[0].offset == 0);
    CHECK(f[0].name() == "From");
    CHECK(f[0].raw_value() == " a@b.example");
    CHECK(f[1].offset == msg.find("To:"));
    CHECK(f[2].offset == msg.find("Subject:"));
    CHECK(f[2].raw == "Subject: hi there \r\n");
    CHECK(f[2].unfolded_value() == "hi there");
    CHECK(name_is(f[2], "SUBJECT"));
    CHECK(name_is(f[2], "subject"));
    CHECK_FALSE(name_is(f[2], "subjec"));
    // Done: nothing more is header.
    CHECK(p.feed("X: y\r\n\r\n") == 0);
    CHECK(p.fields().size() == 3);
}

TEST_CASE("header: the body begins inside the chunk that ends the section", "[header]") {
    header_parser p;
    CHECK(p.feed("A: 1\r\nB: 2\r") == 11);
    CHECK_FALSE(p.done());
    CHECK(p.fields().size() == 1);  // B may still be folded
    CHECK(p.feed("\n\r\nbody") == 3);
    CHECK(p.done());
    CHECK(p.section_bytes() == 14);
    CHECK(p.fields().size() == 2);
}

TEST_CASE("header: what a section that the message's end cut short lacks", "[header]") {
    header_parser ended;
    ended.feed("A: 1\r\n\r\nbody");
    ended.finish();
    CHECK(ended.unterminated_end().empty());
    header_parser at_line;
    at_line.feed("A: 1\r\nB: 2\r\n");
    at_line.finish();
    CHECK((at_line.done() && at_line.section_bytes() == 12));
    CHECK(at_line.unterminated_end() == "\r\n");
    header_parser mid_line;
    mid_line.feed("A: 1\r\nB: 2");
    mid_line.finish();
    CHECK(mid_line.unterminated_end() == "\r\n\r\n");
    header_parser none;
    none.feed("no header here\r\n");
    none.finish();
    CHECK((none.section_bytes() == 0 && none.unterminated_end().empty()));
    header_parser empty;
    empty.finish();
    CHECK(empty.unterminated_end().empty());
}

TEST_CASE("header: folding and unfolding (RFC 5322 2.2.3)", "[header]") {
    const auto r = parse("Subject: one\r\n two\r\n\tthree \r\nX-Empty:\r\nX-Blank:  \r\n  \r\nY: z\r\n\r\n");
    REQUIRE(r.fields.size() == 4);
    CHECK(r.fields[0].raw == "Subject: one\r\n two\r\n\tthree \r\n");
    CHECK(r.fields[0].raw_value() == " one\r\n two\r\n\tthree ");
    CHECK(r.fields[0].unfolded_value() == "one two\tthree");
    CHECK(r.fields[1].raw_value().empty());
    CHECK(r.fields[1].unfolded_value().empty());
    // A line of nothing but WSP continues the field (obs-FWS).
    CHECK(r.fields[2].raw == "X-Blank:  \r\n  \r\n");
    CHECK(r.fields[2].unfolded_value().empty());
    CHECK(r.fields[3].name() == "Y");
}

TEST_CASE("header: bare LF line ends", "[header]") {
    const std::string msg = "A: 1\nB: 2\n folded\nC: 3\r\n\nbody with: colon\n";
    const auto r = parse(msg);
    CHECK(names(r) == strings{"A", "B", "C"});
    CHECK(r.fields[1].raw == "B: 2\n folded\n");
    CHECK(r.fields[1].raw_value() == " 2\n folded");
    CHECK(r.fields[1].unfolded_value() == "2 folded");
    CHECK(r.section == msg.find("body"));
    CHECK(r.done_before_finish);
    check_offsets(msg, r);
}

TEST_CASE("header: the first line decides whether there is a header section", "[header]") {
    SECTION("an empty first line: no fields, the body follows it") {
        auto r = parse("\r\nA: 1\r\n\r\n");
        CHECK(r.fields.empty());
        CHECK(r.section == 2);
        r = parse("\nA: 1\n");
        CHECK(r.fields.empty());
        CHECK(r.section == 1);
    }
    SECTION("an mbox From line: no header section") {
        header_parser p;
        CHECK(p.feed("From someone@example.com Mon Jan  1 00:00:00 2024\r\nA: 1\r\n\r\n") == 0);
        CHECK(p.done());
        CHECK(p.section_bytes() == 0);
        CHECK(p.fields().empty());
        CHECK(p.malformed_lines() == 0);
    }
    SECTION("split before the byte that shows it") {
        header_parser p;
        CHECK(p.feed("From") == 4);  // may still be "From:"
        CHECK(p.feed(" x\r\n") == 0);
        CHECK(p.done());
        CHECK(p.section_bytes() == 0);
    }
    SECTION("a leading continuation line, a leading colon, a lone word") {
        for (const char* m : {" x\r\nA: 1\r\n\r\n", ":x\r\nA: 1\r\n\r\n", "body\r\nA: 1\r\n\r\n", "Bogus", "\r"}) {
            INFO(m);
            const auto r = parse(m);
            CHECK(r.fields.empty());
            CHECK(r.section == 0);
            CHECK(r.malformed == 0);
        }
    }
    SECTION("an empty message") {
        const auto r = parse("");
        CHECK(r.fields.empty());
        CHECK(r.section == 0);
    }
}

TEST_CASE("header: later non-field lines are skipped and counted", "[header]") {
    const std::string msg =
        "A: 1\r\nbogus line\r\n continued bogus\r\nB: 2\r\n:no name\r\nC D: 3\r\n\rjunk\r\nE: 5\r\n\r\n";
    const auto r = parse(msg);
    CHECK(names(r) == strings{"A", "B", "E"});
    CHECK(r.malformed == 5);
    CHECK(r.section == msg.size());
    check_offsets(msg, r);
}

TEST_CASE("header: WSP before the colon (obs-optional)", "[header]") {
    const auto r = parse("Subject : spaced\r\nX\t: tab\r\n\r\n");
    REQUIRE(r.fields.size() == 2);
    CHECK(r.fields[0].name() == "Subject");
    CHECK(r.fields[0].raw_value() == " spaced");
    CHECK(r.fields[1].name() == "X");
    CHECK(r.fields[1].unfolded_value() == "tab");
}

TEST_CASE("header: a message without an empty line is all header", "[header]") {
    const std::string msg = "A: 1\r\nB: last\r\n more";
    header_parser p;
    CHECK(p.feed(msg) == msg.size());
    CHECK_FALSE(p.done());
    CHECK(p.fields().size() == 1);
    p.finish();
    CHECK(p.done());
    CHECK(p.section_bytes() == msg.size());
    REQUIRE(p.fields().size() == 2);
    CHECK(p.fields()[1].raw == "B: last\r\n more");
    CHECK(p.fields()[1].raw_value() == " last\r\n more");
    CHECK(p.fields()[1].unfolded_value() == "last more");

    // A last line that is no field is skipped.
    const auto r = parse("A: 1\r\nBogus");
    CHECK(names(r) == strings{"A"});
    CHECK(r.malformed == 1);
    CHECK(r.section == 11);
}

TEST_CASE("header: limits", "[header]") {
    const std::string msg = "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\nbody";
    const uint64_t section = msg.find("body");
    SECTION("too many fields") {
        const auto r = parse(msg, {.max_fields = 2});
        CHECK(r.error == header_error::too_many_fields);
        CHECK(names(r) == strings{"A", "B"});
        CHECK(r.section == section);
        CHECK(r.done_before_finish);
        CHECK(parse(msg, {.max_fields = 4}).error == header_error::none);
    }
    SECTION("a field too long") {
        const std::string m = "A: 1\r\nB: 123456789012345\r\nC: 1234567890123456\r\nD: 4\r\n\r\nbody";
        auto r = parse(m, {.max_field_bytes = 20});  // B is 20 bytes, C 21
        CHECK(r.error == header_error::field_too_long);
        CHECK(names(r) == strings{"A", "B"});
        CHECK(r.section == m.find("body"));
        CHECK(r.done_before_finish);
        // Folding counts.
        r = parse("A: 1\r\nB: 12345\r\n 1234567890\r\n\r\n", {.max_field_bytes = 20});
        CHECK(r.error == header_error::field_too_long);
        CHECK(names(r) == strings{"A"});
    }
    SECTION("a section too long") {
        auto r = parse(msg, {.max_section_bytes = 14});
        CHECK(r.error == header_error::section_too_long);
        CHECK(names(r) == strings{"A", "B"});  // C was being read at byte 15
        CHECK(r.section == section);
        CHECK(parse(msg, {.max_section_bytes = section}).error == header_error::none);
        CHECK(parse(msg, {.max_section_bytes = section - 1}).error == header_error::section_too_long);
    }
    SECTION("the first error is the one reported") {
        auto r = parse(msg, {.max_fields = 1, .max_field_bytes = 6, .max_section_bytes = 10});
        CHECK(r.error == header_error::too_many_fields);
        CHECK(std::string(to_string(r.error)) == "too many header fields");
        // Both limits passed inside one line: the section's at byte 4, the
        // field's at byte 6, whether the line comes in one piece or not.
        r = parse(msg, {.max_field_bytes = 5, .max_section_bytes = 3});
        CHECK(r.error == header_error::section_too_long);
        r = parse_every(msg, 1, {.max_field_bytes = 5, .max_section_bytes = 3});
        CHECK(r.error == header_error::section_too_long);
        r = parse(msg, {.max_field_bytes = 5, .max_section_bytes = 5});
        CHECK(r.error == header_error::field_too_long);
    }
    SECTION("a huge field is not buffered") {
        std::string big = "A: 1\r\nX: " + std::string(100000, 'x') + "\r\nB: 2\r\n\r\n";
        header_parser p({.max_field_bytes = 1000});
        CHECK(p.feed(big) == big.size());
        CHECK(p.done());
        CHECK(p.error() == header_error::field_too_long);
        CHECK(p.fields().size() == 1);
    }
}

TEST_CASE("header: any split gives what one piece gives", "[header]") {
    std::mt19937 rng(1);
    const header_limits tight[] = {{},
                                   {.max_fields = 2},
                                   {.max_field_bytes = 12},
                                   {.max_section_bytes = 25},
                                   {.max_field_bytes = 16, .max_section_bytes = 20},
                                   {.max_field_bytes = 30, .max_section_bytes = 27}};
    for (const char* sample : k_samples) {
        const std::string msg = sample;
        for (const auto& limits : tight) {
            INFO(msg);
            const parsed whole = parse(msg, limits);
            check_offsets(msg, whole);
            if (whole.section > 0)
                CHECK(whole.returned == whole.section);
            for (size_t piece = 1; piece <= 13; ++piece) {
                INFO(piece);
                const parsed r = parse_every(msg, piece, limits);
                check_same(whole, r);
                if (r.section > 0)
                    CHECK(r.returned == r.section);
            }
            for (int n = 0; n < 20; ++n) {
                std::vector<size_t> cuts;
                for (size_t at = 0; msg.size() > 0;) {
                    at += rng() % 9;
                    if (at >= msg.size())
                        break;
                    cuts.push_back(at);  // repeats: empty feeds
                }
                check_same(whole, parse_cut(msg, cuts, limits));
            }
        }
    }
}

TEST_CASE("header: a realistic section", "[header]") {
    const std::string msg =
        "Return-Path: <bounce@lists.example>\r\n"
        "Received: from mx.example (mx.example [192.0.2.1])\r\n"
        "\tby gw.example with ESMTPS id 4AbC;\r\n"
        "\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
        "From: \"Doe, Jane\" <jane@example.com>\r\n"
        "To: team: a@one.example,\r\n"
        "  \"b c\"@two.example (second);,\r\n"
        " <d@three.example>\r\n"
        "Subject: =?UTF-8?Q?caf=C3=A9?=\r\n"
        "\r\n"
        "body\r\n";
    const auto r = parse_every(msg, 7);
    CHECK(names(r) == strings{"Return-Path", "Received", "From", "To", "Subject"});
    check_offsets(msg, r);
    CHECK(r.fields[1].unfolded_value() ==
          "from mx.example (mx.example [192.0.2.1])\tby gw.example with ESMTPS id 4AbC;"
          "\tMon, 1 Jan 2024 00:00:00 +0000");
    const auto from = parse_mailbox(r.fields[2].unfolded_value());
    REQUIRE(from);
    CHECK(*from == mailbox{"Doe, Jane", "jane", "example.com"});
    const auto to = parse_address_list(r.fields[3].unfolded_value());
    REQUIRE(to);
    CHECK(*to ==
          std::vector<mailbox>{{"", "a", "one.example"}, {"", "b c", "two.example"}, {"", "d", "three.example"}});
}

// ---- addresses ----

TEST_CASE("addresses: RFC 5322 A.1 and A.5", "[address]") {
    using list = std::vector<mailbox>;
    CHECK(parse_address_list("\"Joe Q. Public\" <john.q.public@example.com>") ==
          list{{"Joe Q. Public", "john.q.public", "example.com"}});
    CHECK(parse_address_list("Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>") ==
          list{{"Mary Smith", "mary", "x.test"}, {"", "jdoe", "example.org"}, {"Who?", "one", "y.test"}});
    CHECK(parse_address_list("<boss@nil.test>, \"Giant; \\\"Big\\\" Box\" <sysservices@example.net>") ==
          list{{"", "boss", "nil.test"}, {"Giant; \"Big\" Box", "sysservices", "example.net"}});
    CHECK(parse_address_list("A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;") ==
          list{{"Ed Jones", "c", "a.test"}, {"", "joe", "where.test"}, {"John", "jdoe", "one.test"}});
    CHECK(parse_address_list("Undisclosed recipients:;") == list{});
    CHECK(parse_address_list("undisclosed-recipients: ;") == list{});
    // A.5, white space and comments.
    CHECK(parse_mailbox("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>") ==
          mailbox{"Pete", "pete", "silly.test"});
    CHECK(parse_address_list("A Group(Some people)\r\n     :Chris Jones <c@(Chris's host.)public.example>,\r\n"
                             "         joe@example.org,\r\n"
                             "  John <jdoe@one.test> (my dear friend); (the end of the group)") ==
          list{{"Chris Jones", "c", "public.example"}, {"", "joe", "example.org"}, {"John", "jdoe", "one.test"}});
    CHECK(parse_address_list("(Empty list)(start)Hidden recipients  :(nobody(that I know))  ;") == list{});
}

TEST_CASE("addresses: obsolete forms (RFC 5322 A.6)", "[address]") {
    using list = std::vector<mailbox>;
    CHECK(parse_address_list("Joe Q. Public <john.q.public@example.com>") ==
          list{{"Joe Q. Public", "john.q.public", "example.com"}});
    CHECK(parse_address_list("Mary Smith <@node.test:mary@example.net>, , jdoe@test  . example") ==
          list{{"Mary Smith", "mary", "example.net"}, {"", "jdoe", "test.example"}});
    CHECK(parse_mailbox("John Doe <jdoe@machine(comment).  example>") ==
          mailbox{"John Doe", "jdoe", "machine.example"});
    CHECK(parse_mailbox("Mary Smith\r\n    \r\n <mary@example.net>") == mailbox{"Mary Smith", "mary", "example.net"});
    CHECK(parse_mailbox("<@a.example,,@b.example:user@c.example>") == mailbox{"", "user", "c.example"});
    CHECK(parse_mailbox("john . doe @ example . com") == mailbox{"", "john.doe", "example.com"});
    CHECK(parse_address_list(", a@b.example,,") == list{{"", "a", "b.example"}});
}

TEST_CASE("addresses: quoting, comments, literals, UTF-8", "[address]") {
    CHECK(parse_mailbox("\"john doe\"@example.com") == mailbox{"", "john doe", "example.com"});
    CHECK(parse_mailbox("\"a\\\"b\"@x.example") == mailbox{"", "a\"b", "x.example"});
    CHECK(parse_mailbox("\"x\".y@z.example") == mailbox{"", "x.y", "z.example"});
    CHECK(parse_mailbox("a@[192.0.2.1]") == mailbox{"", "a", "[192.0.2.1]"});
    CHECK(parse_mailbox("A <a@[IPv6:2001:db8::1]>") == mailbox{"A", "a", "[IPv6:2001:db8::1]"});
    CHECK(parse_mailbox("a@b.example (x (nested \\( y) z)") == mailbox{"", "a", "b.example"});
    CHECK(parse_mailbox("J\xc3\xb6rg <j\xc3\xb6rg@b\xc3\xbc" "cher.example>") ==
          mailbox{"J\xc3\xb6rg", "j\xc3\xb6rg", "b\xc3\xbc" "cher.example"});
    CHECK(parse_mailbox("=?UTF-8?Q?Caf=C3=A9?= <a@b.example>") == mailbox{"=?UTF-8?Q?Caf=C3=A9?=", "a", "b.example"});
    CHECK(parse_mailbox("\"\" <a@b.example>") == mailbox{"", "a", "b.example"});
    CHECK(parse_mailbox("Doe(comment)John <a@b.example>") == mailbox{"Doe John", "a", "b.example"});
    CHECK(parse_mailbox("  a@b.example  ") == mailbox{"", "a", "b.example"});
    CHECK(parse_address_list("team:") == std::vector<mailbox>{});  // ';' lost at the end
    CHECK(parse_address_list("") == std::vector<mailbox>{});
    CHECK(parse_address_list(" (nothing) ") == std::vector<mailbox>{});
}

TEST_CASE("addresses: syntax errors give nothing", "[address]") {
    for (const char* bad : {
             "John <a@b.example",              // unbalanced <
             "a@b.example>",                   // stray >
             "\"unterminated <a@b.example>",   // unbalanced "
             "(unclosed a@b.example",          // unbalanced (
             "a@b.example (x (y)",             // nested, unclosed
             "a@b.example)",                   // stray )
             "john",                           // no @
             "John Doe <john>",                // no @ in the angle address
             "a@",                             // empty domain
             "<a@>",                           //
             "@b.example",                     // empty local part
             "a@b..example",                   // empty label
             "a@.b.example",                   //
             "a@b.example.",                   // trailing dot
             "a..b@c.example",                 // not words separated by dots
             ".a@c.example",                   //
             "john doe@example.com",           // a phrase is no local part
             "a@b@c.example",                  //
             "a@exa_mple.com",                 // check_domain refuses
             "a@-b.example",                   //
             "a@[192.0.2.1",                   // unbalanced [
             "a@[1.2[3].4]",                   //
             "<>",                             // the null path is no mailbox
             "a@b.example c@d.example",        // no comma
             "A: B: c@d.example;;",            // groups do not nest
             "a@b.example; c@d.example",       // ';' outside a group
             "\\a@b.example",                  // quoted pair outside quotes
             "a\x01@b.example",                // control character
             "<@a.example user@c.example>",    // route without ':'
         }) {
        INFO(bad);
        CHECK_FALSE(parse_address_list(bad));
    }
    CHECK_FALSE(parse_mailbox("a@b.example, c@d.example"));
    CHECK_FALSE(parse_mailbox("G: a@b.example;"));
    CHECK_FALSE(parse_mailbox(""));
}
