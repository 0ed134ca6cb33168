// SMTP command and address parser tests: every verb valid and invalid, the
// line limits, control characters, MAIL/RCPT paths (brackets, the
// "FROM: <" tolerance, null path, Postmaster, source routes, quoted local
// parts, address literals, length limits, UTF-8 with and without
// SMTPUTF8), every ESMTP parameter and its refusals, BDAT, AUTH, and the
// mailbox round trip through to_string. Every refusal is checked by basic
// and enhanced code.
#include <catch2/catch.hpp>

#include <string>
#include <string_view>

#include "mta/smtp/command.hh"

using namespace rw::mta::smtp;

namespace {

command ok(std::string_view line, bool utf8_ok = false) {
    INFO("line: " << std::string(line));
    auto r = parse_command(line, utf8_ok);
    if (!r)
        INFO("refused: " << r.error().code << " " << std::string(r.error().enhanced) << " " << r.error().text);
    REQUIRE(r.has_value());
    return r.value();
}

void bad(std::string_view line, int code, std::string_view enhanced, bool utf8_ok = false) {
    INFO("line: " << std::string(line));
    auto r = parse_command(line, utf8_ok);
    REQUIRE_FALSE(r.has_value());
    INFO("text: " << r.error().text);
    CHECK(r.error().code == code);
    CHECK(std::string(r.error().enhanced) == std::string(enhanced));
    CHECK_FALSE(r.error().text.empty());
}

mailbox mb_ok(std::string_view s, bool utf8_ok = false) {
    INFO("mailbox: " << std::string(s));
    auto r = parse_mailbox(s, utf8_ok);
    if (!r)
        INFO("refused: " << r.error().code << " " << std::string(r.error().enhanced) << " " << r.error().text);
    REQUIRE(r.has_value());
    return r.value();
}

void mb_bad(std::string_view s, int code, std::string_view enhanced, bool utf8_ok = false) {
    INFO("mailbox: " << std::string(s));
    auto r = parse_mailbox(s, utf8_ok);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == code);
    CHECK(std::string(r.error().enhanced) == std::string(enhanced));
}

}  // namespace

TEST_CASE("verbs are case-insensitive and parse without arguments", "[smtp]") {
    CHECK(ok("DATA").v == verb::data);
    CHECK(ok("data").v == verb::data);
    CHECK(ok("DaTa").v == verb::data);
    CHECK(ok("RSET").v == verb::rset);
    CHECK(ok("QUIT").v == verb::quit);
    CHECK(ok("quit").v == verb::quit);
    CHECK(ok("NOOP").v == verb::noop);
    CHECK(ok("HELP").v == verb::help);
    CHECK(ok("STARTTLS").v == verb::starttls);
    CHECK(ok("StartTLS").v == verb::starttls);
    CHECK(to_string(verb::starttls) == "STARTTLS");
    CHECK(to_string(verb::mail) == "MAIL");
    CHECK(to_string(verb::unknown) == "?");
}

TEST_CASE("unknown and malformed command words: 500 5.5.2", "[smtp]") {
    bad("", 500, "5.5.2");
    bad("FOO", 500, "5.5.2");
    bad("FOO bar", 500, "5.5.2");
    bad("MAILFROM:<a@b.c>", 500, "5.5.2");
    bad(" MAIL FROM:<a@b.c>", 500, "5.5.2");  // leading space
    bad("DATAX", 500, "5.5.2");
    bad("DAT", 500, "5.5.2");
    bad("ETRN example.com", 500, "5.5.2");  // not implemented
    bad("\xc3\xa9HLO x", 500, "5.5.2");
}

TEST_CASE("control characters and NUL: 500 5.5.2", "[smtp]") {
    using namespace std::string_literals;
    bad("NOOP\0"s, 500, "5.5.2");
    bad("MAIL FROM:<a\0b@c.d>"s, 500, "5.5.2");
    bad("\0"s, 500, "5.5.2");
    bad("NOOP\tx", 500, "5.5.2");
    bad("HELO\tx", 500, "5.5.2");
    bad("NOOP x\ry", 500, "5.5.2");   // bare CR inside a command
    bad("NOOP x\ny", 500, "5.5.2");   // bare LF inside a command
    bad("RSET\x7f", 500, "5.5.2");    // DEL
    bad("NOOP \x1b[31m", 500, "5.5.2");
    bad("QUIT\r", 500, "5.5.2");
}

TEST_CASE("line length limits", "[smtp]") {
    // 512 octets incl. CRLF: a 510-octet line is the longest ordinary one.
    const std::string noop510 = "NOOP " + std::string(505, 'x');
    REQUIRE(noop510.size() == 510);
    CHECK(ok(noop510).text.size() == 505);
    bad(noop510 + "x", 500, "5.5.6");
    bad("HELO " + std::string(506, 'a'), 500, "5.5.6");
    // MAIL/RCPT with parameters may use up to 2048 incl. CRLF.
    std::string mail = "MAIL FROM:<a@b.example> ENVID=" + std::string(100, 'e') + " AUTH=" ;
    mail += std::string(2046 - mail.size(), 'a');
    REQUIRE(mail.size() == 2046);
    auto c = ok(mail);
    CHECK(c.envid.size() == 100);
    bad(mail + "a", 500, "5.5.6");
    bad(std::string(5000, 'A'), 500, "5.5.6");
    bad("VRFY " + std::string(600, 'u'), 500, "5.5.6");
}

TEST_CASE("HELO and EHLO", "[smtp]") {
    auto c = ok("EHLO mail.example.com");
    CHECK(c.v == verb::ehlo);
    CHECK(c.domain == "mail.example.com");
    CHECK(ok("helo localhost").domain == "localhost");
    CHECK(ok("EHLO [192.0.2.1]").domain == "[192.0.2.1]");
    CHECK(ok("HELO [192.0.2.1]").domain == "[192.0.2.1]");  // lenient: real clients do this
    CHECK(ok("EHLO [IPv6:2001:db8::1]").domain == "[IPv6:2001:db8::1]");
    CHECK(ok("EHLO WIN_PC").domain == "WIN_PC");  // underscore tolerated in HELO only
    CHECK(ok("EHLO a-b.c-d.example").domain == "a-b.c-d.example");
    CHECK(ok("EHLO " + std::string(63, 'a') + ".example").v == verb::ehlo);

    bad("EHLO", 501, "5.5.4");
    bad("EHLO ", 501, "5.5.4");
    bad("HELO", 501, "5.5.4");
    bad("EHLO  host.example", 501, "5.5.4");  // two spaces
    bad("EHLO host.example ", 501, "5.5.4");  // trailing space
    bad("EHLO host example", 501, "5.5.4");
    bad("EHLO host..example", 501, "5.5.4");
    bad("EHLO host.example.", 501, "5.5.4");
    bad("EHLO .example", 501, "5.5.4");
    bad("EHLO -host.example", 501, "5.5.4");
    bad("EHLO host-.example", 501, "5.5.4");
    bad("EHLO ho$t.example", 501, "5.5.4");
    bad("EHLO " + std::string(64, 'a') + ".example", 501, "5.5.4");
    bad("EHLO h\xc3\xa9.example", 501, "5.5.4");  // no U-labels in EHLO
    bad("EHLO [192.0.2.256]", 501, "5.5.4");
    bad("EHLO [IPv6:2001:db8::g]", 501, "5.5.4");
    bad("EHLO [foo:bar]", 501, "5.5.4");
    bad("EHLO [192.0.2.1", 501, "5.5.4");
}

TEST_CASE("MAIL FROM: path forms", "[smtp]") {
    auto c = ok("MAIL FROM:<alice@example.com>");
    CHECK(c.v == verb::mail);
    CHECK(c.path.local == "alice");
    CHECK(c.path.domain == "example.com");
    CHECK_FALSE(c.null_path);
    CHECK_FALSE(c.had_source_route);
    CHECK(c.params.empty());

    CHECK(ok("mail from:<alice@example.com>").path.local == "alice");
    CHECK(ok("MAIL FROM: <alice@example.com>").path.domain == "example.com");  // common client tolerance
    CHECK(ok("Mail From:<Alice@Example.COM>").path.domain == "Example.COM");   // case kept

    auto n = ok("MAIL FROM:<>");
    CHECK(n.null_path);
    CHECK(n.path.local.empty());
    CHECK(ok("MAIL FROM: <>").null_path);
    CHECK(ok("MAIL FROM:<> SIZE=100").null_path);

    // Missing FROM: / broken keyword: syntax of the command.
    bad("MAIL", 501, "5.5.4");
    bad("MAIL ", 501, "5.5.4");
    bad("MAIL TO:<a@b.c>", 501, "5.5.4");
    bad("MAIL FROM <a@b.c>", 501, "5.5.4");
    bad("MAIL FROM:", 501, "5.5.4");
    bad("MAIL FROM: ", 501, "5.5.4");
    bad("MAIL  FROM:<a@b.c>", 501, "5.5.4");
    // Address problems: bad sender address syntax.
    bad("MAIL FROM:alice@example.com", 501, "5.1.7");   // no brackets
    bad("MAIL FROM: alice@example.com", 501, "5.1.7");
    bad("MAIL FROM:  <alice@example.com>", 501, "5.1.7");  // only one space tolerated
    bad("MAIL FROM:<alice@example.com", 501, "5.1.7");
    bad("MAIL FROM:<alice@example.com>x", 501, "5.1.7");
    bad("MAIL FROM:<alice@example.com>>", 501, "5.1.7");
    bad("MAIL FROM:<alice>", 501, "5.1.7");
    bad("MAIL FROM:<@example.com>", 501, "5.1.7");
    bad("MAIL FROM:<alice@>", 501, "5.1.7");
    bad("MAIL FROM:<alice@@example.com>", 501, "5.1.7");
    bad("MAIL FROM:<Postmaster>", 501, "5.1.7");  // only RCPT may name bare Postmaster
    bad("MAIL FROM:<<a@b.c>>", 501, "5.1.7");
}

TEST_CASE("RCPT TO: path forms", "[smtp]") {
    auto c = ok("RCPT TO:<bob@example.org>");
    CHECK(c.v == verb::rcpt);
    CHECK(c.path.local == "bob");
    CHECK(c.path.domain == "example.org");
    CHECK(ok("rcpt to: <bob@example.org>").path.local == "bob");

    auto pm = ok("RCPT TO:<Postmaster>");
    CHECK(pm.path.local == "Postmaster");
    CHECK(pm.path.domain.empty());
    CHECK(ok("RCPT TO:<postMASTER>").path.local == "postMASTER");
    CHECK(ok("RCPT TO:<postmaster@example.org>").path.domain == "example.org");

    bad("RCPT", 501, "5.5.4");
    bad("RCPT FROM:<bob@example.org>", 501, "5.5.4");
    bad("RCPT TO:", 501, "5.5.4");
    bad("RCPT TO:bob@example.org", 501, "5.1.3");
    bad("RCPT TO:<>", 501, "5.1.3");  // null forward-path
    bad("RCPT TO:<bob>", 501, "5.1.3");
    bad("RCPT TO:<bob@example.org", 501, "5.1.3");
    bad("RCPT TO:<bob@example.org> ", 501, "5.5.4");  // trailing space: empty parameter
    bad("RCPT TO:<b ob@example.org>", 501, "5.1.3");
    bad("RCPT TO:<bob@exa mple.org>", 501, "5.1.3");
}

TEST_CASE("source routes are parsed, validated and stripped", "[smtp]") {
    auto c = ok("RCPT TO:<@relay1.example,@relay2.example:user@dest.example>");
    CHECK(c.had_source_route);
    CHECK(c.path.local == "user");
    CHECK(c.path.domain == "dest.example");
    CHECK(to_string(c.path) == "user@dest.example");

    auto m = ok("MAIL FROM:<@a.example:alice@b.example>");
    CHECK(m.had_source_route);
    CHECK(m.path.local == "alice");
    CHECK(m.path.domain == "b.example");

    bad("RCPT TO:<@relay.example user@dest.example>", 501, "5.1.3");  // no ':'
    bad("RCPT TO:<@:user@dest.example>", 501, "5.1.3");
    bad("RCPT TO:<@relay..example:user@dest.example>", 501, "5.1.3");
    bad("RCPT TO:<@a.example,b.example:user@dest.example>", 501, "5.1.3");  // missing '@'
    bad("RCPT TO:<@a.example,:user@dest.example>", 501, "5.1.3");
    bad("RCPT TO:<@a.example:>", 501, "5.1.3");
    bad("MAIL FROM:<@a.example:>", 501, "5.1.7");
    bad("RCPT TO:<@[192.0.2.1]:user@dest.example>", 501, "5.1.3");  // At-domain is a Domain only
}

TEST_CASE("quoted local parts", "[smtp]") {
    auto c = ok("RCPT TO:<\"john doe\"@example.com>");
    CHECK(c.path.local == "john doe");
    CHECK(to_string(c.path) == "\"john doe\"@example.com");

    auto e = ok(R"(RCPT TO:<"a\"b\\c"@example.com>)");
    CHECK(e.path.local == "a\"b\\c");
    CHECK(to_string(e.path) == R"("a\"b\\c"@example.com)");

    auto gt = ok(R"(RCPT TO:<"x>y"@example.com> NOTIFY=NEVER)");  // '>' inside quotes does not close
    CHECK(gt.path.local == "x>y");
    CHECK(gt.notify == k_notify_never);

    auto plain = ok(R"(RCPT TO:<"simple"@example.com>)");
    CHECK(plain.path.local == "simple");
    CHECK(to_string(plain.path) == "simple@example.com");  // quoted only when needed

    auto at = ok(R"(RCPT TO:<"user@other"@example.com>)");
    CHECK(at.path.local == "user@other");
    CHECK(has_relay_chars(at.path));

    auto empty = ok(R"(RCPT TO:<""@example.com>)");
    CHECK(empty.path.local.empty());
    CHECK(to_string(empty.path) == R"(""@example.com)");

    bad(R"(RCPT TO:<"unterminated@example.com>)", 501, "5.1.3");
    bad(R"(RCPT TO:<"a"b@example.com>)", 501, "5.1.3");
    bad(R"(RCPT TO:<"a"@>)", 501, "5.1.3");
}

TEST_CASE("dot-string local parts, relay characters kept", "[smtp]") {
    auto c = ok("RCPT TO:<first.last+tag@example.com>");
    CHECK(c.path.local == "first.last+tag");
    CHECK_FALSE(has_relay_chars(c.path));

    auto pct = ok("RCPT TO:<user%other.example@example.com>");
    CHECK(pct.path.local == "user%other.example");
    CHECK(has_relay_chars(pct.path));
    auto bang = ok("RCPT TO:<other.example!user@example.com>");
    CHECK(bang.path.local == "other.example!user");
    CHECK(has_relay_chars(bang.path));

    CHECK(ok("RCPT TO:<!#$&'*+-/=?^_`{|}~@example.com>").path.local == "!#$&'*+-/=?^_`{|}~");

    bad("RCPT TO:<.user@example.com>", 501, "5.1.3");
    bad("RCPT TO:<user.@example.com>", 501, "5.1.3");
    bad("RCPT TO:<us..er@example.com>", 501, "5.1.3");
    bad("RCPT TO:<us(er@example.com>", 501, "5.1.3");
    bad("RCPT TO:<us,er@example.com>", 501, "5.1.3");
    bad("RCPT TO:<us\"er@example.com>", 501, "5.1.3");
}

TEST_CASE("address literals", "[smtp]") {
    auto v4 = ok("RCPT TO:<postmaster@[192.0.2.1]>");
    CHECK(v4.path.domain == "[192.0.2.1]");
    CHECK(v4.path.domain_literal);
    auto v6 = ok("RCPT TO:<user@[IPv6:2001:db8::1]>");
    CHECK(v6.path.domain == "[IPv6:2001:db8::1]");
    CHECK(v6.path.domain_literal);
    CHECK(ok("RCPT TO:<user@[ipv6:::1]>").path.domain_literal);
    CHECK(ok("RCPT TO:<user@[IPv6:::ffff:192.0.2.1]>").path.domain_literal);
    CHECK_FALSE(ok("RCPT TO:<user@example.com>").path.domain_literal);

    bad("RCPT TO:<user@[192.0.2.256]>", 501, "5.1.3");
    bad("RCPT TO:<user@[192.0.2]>", 501, "5.1.3");
    bad("RCPT TO:<user@[192.0.2.1.5]>", 501, "5.1.3");
    bad("RCPT TO:<user@[ 192.0.2.1]>", 501, "5.1.3");
    bad("RCPT TO:<user@[]>", 501, "5.1.3");
    bad("RCPT TO:<user@[IPv6:]>", 501, "5.1.3");
    bad("RCPT TO:<user@[IPv6:2001:db8::1::2]>", 501, "5.1.3");
    bad("RCPT TO:<user@[IPv6:192.0.2.1]>", 501, "5.1.3");
    bad("RCPT TO:<user@[2001:db8::1]>", 501, "5.1.3");  // IPv6 needs its tag
    bad("RCPT TO:<user@[x-tag:abc]>", 501, "5.1.3");    // General-address-literal
    bad("RCPT TO:<user@[192.0.2.1]x>", 501, "5.1.3");
    bad("RCPT TO:<user@[192.0.2.1]]>", 501, "5.1.3");
    bad("MAIL FROM:<user@[300.1.1.1]>", 501, "5.1.7");
}

TEST_CASE("address length limits", "[smtp]") {
    const std::string l64(64, 'l');
    CHECK(ok("RCPT TO:<" + l64 + "@example.com>").path.local.size() == 64);
    bad("RCPT TO:<" + l64 + "l@example.com>", 501, "5.1.3");
    // The quoted form counts as sent: 62 + 2 quotes = 64.
    CHECK(ok("RCPT TO:<\"" + std::string(62, 'q') + "\"@example.com>").v == verb::rcpt);
    bad("RCPT TO:<\"" + std::string(63, 'q') + "\"@example.com>", 501, "5.1.3");

    // Label of 63 fine, 64 not.
    CHECK(ok("RCPT TO:<u@" + std::string(63, 'd') + ".example>").v == verb::rcpt);
    bad("RCPT TO:<u@" + std::string(64, 'd') + ".example>", 501, "5.1.3");

    // A 255-octet domain passes the domain check, but the address would
    // exceed the path limit (254 without brackets).
    const std::string l63(63, 'd');
    const std::string d255 = l63 + "." + l63 + "." + l63 + "." + l63;
    REQUIRE(d255.size() == 255);
    mb_bad("u@" + d255, 501, "5.1.3");

    // Path: 256 octets with brackets is the most: "<u@" + 252 + ">".
    std::string dom;
    for (int i = 0; i < 4; ++i)
        dom += std::string(50, 'd') + ".";
    dom += std::string(48, 'e');
    const size_t want_domain = 252;
    REQUIRE(dom.size() == want_domain);
    auto c = ok("RCPT TO:<u@" + dom + ">");
    CHECK(c.path.domain.size() == want_domain);
    bad("RCPT TO:<uu@" + dom + ">", 501, "5.1.3");
    bad("MAIL FROM:<uu@" + dom + ">", 501, "5.1.7");
    // The source route counts too.
    bad("RCPT TO:<@r.example:u@" + dom + ">", 501, "5.1.3");
}

TEST_CASE("UTF-8 addresses need SMTPUTF8", "[smtp]") {
    const std::string u = "RCPT TO:<j\xc3\xb8rn@b\xc3\xbc" "cher.example>";
    bad(u, 553, "5.6.7");
    auto c = ok(u, true);
    CHECK(c.path.utf8);
    CHECK(c.path.local == "j\xc3\xb8rn");
    CHECK(c.path.domain == "b\xc3\xbc" "cher.example");
    CHECK(to_string(c.path) == "j\xc3\xb8rn@b\xc3\xbc" "cher.example");

    // Non-ASCII domain only, local only, in the quoted form, in a source route.
    bad("RCPT TO:<a@\xe6\x97\xa5\xe6\x9c\xac.example>", 553, "5.6.7");
    CHECK(ok("RCPT TO:<a@\xe6\x97\xa5\xe6\x9c\xac.example>", true).path.utf8);
    CHECK(ok("RCPT TO:<\"\xc3\xa9 \xc3\xa9\"@x.example>", true).path.local == "\xc3\xa9 \xc3\xa9");
    bad("RCPT TO:<@r\xc3\xa9.example:a@x.example>", 553, "5.6.7");
    CHECK(ok("RCPT TO:<@r\xc3\xa9.example:a@x.example>", true).had_source_route);

    // MAIL: the SMTPUTF8 parameter on the same line allows it.
    const std::string m = "MAIL FROM:<\xc3\xa9l\xc3\xa8ve@\xc3\xa9" "cole.example>";
    bad(m, 553, "5.6.7");
    auto mm = ok(m + " SMTPUTF8");
    CHECK(mm.smtputf8);
    CHECK(mm.path.utf8);
    CHECK(ok(m, true).path.utf8);
    CHECK_FALSE(ok("MAIL FROM:<a@b.example> SMTPUTF8").path.utf8);

    // Strict UTF-8, with or without SMTPUTF8: invalid forms are syntax errors.
    for (bool utf8 : {false, true}) {
        bad("RCPT TO:<\xc0\xaf@x.example>", 501, "5.1.3", utf8);          // overlong '/'
        bad("RCPT TO:<\xe0\x80\xaf@x.example>", 501, "5.1.3", utf8);      // overlong, 3 octets
        bad("RCPT TO:<\xf0\x80\x80\xaf@x.example>", 501, "5.1.3", utf8);  // overlong, 4 octets
        bad("RCPT TO:<\xed\xa0\x80@x.example>", 501, "5.1.3", utf8);      // surrogate U+D800
        bad("RCPT TO:<\xed\xbf\xbf@x.example>", 501, "5.1.3", utf8);      // surrogate U+DFFF
        bad("RCPT TO:<\xf4\x90\x80\x80@x.example>", 501, "5.1.3", utf8);  // above U+10FFFF
        bad("RCPT TO:<\xf5\x80\x80\x80@x.example>", 501, "5.1.3", utf8);
        bad("RCPT TO:<\xc3@x.example>", 501, "5.1.3", utf8);              // truncated
        bad("RCPT TO:<a\x80@x.example>", 501, "5.1.3", utf8);             // lone continuation
        bad("RCPT TO:<\xc2\x85@x.example>", 501, "5.1.3", utf8);          // C1 control NEL
        bad("RCPT TO:<\xff@x.example>", 501, "5.1.3", utf8);
        bad("MAIL FROM:<\xed\xa0\x80@x.example> SMTPUTF8", 501, "5.1.7", utf8);
    }
    // Boundaries that are valid.
    CHECK(ok("RCPT TO:<\xc2\xa0x@x.example>", true).path.utf8);              // U+00A0
    CHECK(ok("RCPT TO:<\xed\x9f\xbf@x.example>", true).path.utf8);          // U+D7FF
    CHECK(ok("RCPT TO:<\xee\x80\x80@x.example>", true).path.utf8);          // U+E000
    CHECK(ok("RCPT TO:<\xf4\x8f\xbf\xbf@x.example>", true).path.utf8);      // U+10FFFF
    CHECK(ok("RCPT TO:<\xf0\x9f\x98\x80@x.example>", true).path.utf8);      // U+1F600

    // A U-label of 60 code points cannot have an A-label of 63 octets.
    std::string label59, label60;
    for (int i = 0; i < 59; ++i)
        label59 += "\xc3\xa9";
    label60 = label59 + "\xc3\xa9";
    CHECK(ok("RCPT TO:<a@" + label59 + ".example>", true).path.utf8);
    bad("RCPT TO:<a@" + label60 + ".example>", 501, "5.1.3", true);
}

TEST_CASE("MAIL parameters", "[smtp]") {
    auto c = ok("MAIL FROM:<a@b.example> SIZE=12345 BODY=8BITMIME RET=HDRS ENVID=QQ314159 AUTH=<>");
    REQUIRE(c.params.size() == 5);
    CHECK(c.params[0] == esmtp_param{"SIZE", "12345"});
    CHECK(c.params[1] == esmtp_param{"BODY", "8BITMIME"});
    CHECK(c.params[2] == esmtp_param{"RET", "HDRS"});
    CHECK(c.params[3] == esmtp_param{"ENVID", "QQ314159"});
    CHECK(c.params[4] == esmtp_param{"AUTH", "<>"});
    CHECK(c.has_size);
    CHECK(c.size == 12345);
    CHECK(c.body == body_type::eight_bit_mime);
    CHECK(c.ret == dsn_ret::hdrs);
    CHECK(c.envid == "QQ314159");
    CHECK(c.auth_param == "<>");

    auto lower = ok("MAIL FROM:<a@b.example> size=10 body=binarymime ret=full smtputf8");
    REQUIRE(lower.params.size() == 4);
    CHECK(lower.params[0].key == "SIZE");  // keys upper-cased
    CHECK(lower.params[1] == esmtp_param{"BODY", "binarymime"});  // value as sent
    CHECK(lower.params[3] == esmtp_param{"SMTPUTF8", ""});
    CHECK(lower.body == body_type::binary_mime);
    CHECK(lower.ret == dsn_ret::full);
    CHECK(lower.smtputf8);
    CHECK(ok("MAIL FROM:<a@b.example> BODY=7BIT").body == body_type::seven_bit);
    CHECK(ok("MAIL FROM:<a@b.example>").body == body_type::unspecified);

    CHECK(ok("MAIL FROM:<a@b.example> SIZE=0").size == 0);
    CHECK(ok("MAIL FROM:<a@b.example> SIZE=18446744073709551615").size == UINT64_MAX);
    CHECK(ok("MAIL FROM:<a@b.example> SIZE=99999999999999999999").size == UINT64_MAX);  // saturates
    CHECK(ok("MAIL FROM:<a@b.example> ENVID=" + std::string(100, 'x')).envid.size() == 100);
    CHECK(ok("MAIL FROM:<a@b.example> ENVID=a+2Bb+3Dc").envid == "a+2Bb+3Dc");
    CHECK(ok("MAIL FROM:<a@b.example> AUTH=e+3Dmc2@example.com").auth_param == "e+3Dmc2@example.com");

    // Value errors: 501 5.5.4.
    bad("MAIL FROM:<a@b.example> SIZE", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=12a", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=-1", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=+1", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=123456789012345678901", 501, "5.5.4");  // 21 digits
    bad("MAIL FROM:<a@b.example> BODY=8BIT", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> BODY", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SMTPUTF8=yes", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> RET=ALL", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> RET", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> ENVID=" + std::string(101, 'x'), 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> ENVID=a+2bb", 501, "5.5.4");  // lower-case hex
    bad("MAIL FROM:<a@b.example> ENVID=a+2", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> ENVID=a+", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> ENVID", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> AUTH=a+ZZ", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> AUTH", 501, "5.5.4");
    // Parameter syntax: 501 5.5.4.
    bad("MAIL FROM:<a@b.example> ", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example>  SIZE=1", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=1 ", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=1  BODY=7BIT", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> =1", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> -SIZE=1", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SI_ZE=1", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=1=2", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=\xc3\xa9", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> X\xc3\xa9=1", 501, "5.5.4");
    // Duplicates: 501 5.5.4, whatever the case.
    bad("MAIL FROM:<a@b.example> SIZE=1 SIZE=1", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=1 size=2", 501, "5.5.4");
    bad("MAIL FROM:<a@b.example> SMTPUTF8 SMTPUTF8", 501, "5.5.4");
    // Unknown or wrong-verb parameters: 555 5.5.4.
    bad("MAIL FROM:<a@b.example> FOO=bar", 555, "5.5.4");
    bad("MAIL FROM:<a@b.example> FOO", 555, "5.5.4");
    bad("MAIL FROM:<a@b.example> SIZE=1 X-EXT", 555, "5.5.4");
    bad("MAIL FROM:<a@b.example> NOTIFY=NEVER", 555, "5.5.4");
    bad("MAIL FROM:<a@b.example> ORCPT=rfc822;a@b", 555, "5.5.4");
    bad("RCPT TO:<a@b.example> REQUIRETLS", 555, "5.5.4");  // a MAIL parameter (RFC 8689)
    bad("MAIL FROM:<a@b.example> REQUIRETLS=1", 501, "5.5.4");
    // Too many.
    std::string many = "MAIL FROM:<a@b.example>";
    for (int i = 0; i < 17; ++i)
        many += " SIZE=1";
    bad(many, 501, "5.5.4");
}

TEST_CASE("RCPT parameters", "[smtp]") {
    auto c = ok("RCPT TO:<b@c.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@c.example");
    REQUIRE(c.params.size() == 2);
    CHECK(c.params[0] == esmtp_param{"NOTIFY", "SUCCESS,FAILURE"});
    CHECK(c.params[1] == esmtp_param{"ORCPT", "rfc822;b@c.example"});
    CHECK(c.notify == (k_notify_success | k_notify_failure));
    CHECK(c.orcpt == "rfc822;b@c.example");

    CHECK(ok("RCPT TO:<b@c.example> NOTIFY=NEVER").notify == k_notify_never);
    CHECK(ok("RCPT TO:<b@c.example> NOTIFY=delay").notify == k_notify_delay);
    CHECK(ok("RCPT TO:<b@c.example> NOTIFY=DELAY,SUCCESS,FAILURE").notify ==
          (k_notify_delay | k_notify_success | k_notify_failure));
    CHECK(ok("RCPT TO:<b@c.example> ORCPT=utf-8;b+2Bx@c.example").orcpt == "utf-8;b+2Bx@c.example");
    CHECK(ok("RCPT TO:<b@c.example>").notify == 0);

    bad("RCPT TO:<b@c.example> NOTIFY=NEVER,SUCCESS", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> NOTIFY=SUCCESS,NEVER", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> NOTIFY=SUCCESS,SUCCESS", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> NOTIFY=SUCCESS,", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> NOTIFY=,SUCCESS", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> NOTIFY=ALWAYS", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> NOTIFY", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> ORCPT=b@c.example", 501, "5.5.4");     // no addr-type
    bad("RCPT TO:<b@c.example> ORCPT=;b@c.example", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> ORCPT=rfc822;", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> ORCPT=rfc(822;b@c", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> ORCPT=rfc822;b+zz@c", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> ORCPT=rfc822;" + std::string(494, 'o'), 501, "5.5.4");  // 501 > 500
    CHECK(ok("RCPT TO:<b@c.example> ORCPT=rfc822;" + std::string(493, 'o')).orcpt.size() == 500);
    bad("RCPT TO:<b@c.example> NOTIFY=NEVER NOTIFY=NEVER", 501, "5.5.4");
    bad("RCPT TO:<b@c.example> SIZE=10", 555, "5.5.4");
    bad("RCPT TO:<b@c.example> SMTPUTF8", 555, "5.5.4");
    bad("RCPT TO:<b@c.example> BODY=8BITMIME", 555, "5.5.4");
    bad("RCPT TO:<b@c.example> XFOO", 555, "5.5.4");
}

TEST_CASE("commands without arguments refuse them", "[smtp]") {
    bad("DATA x", 501, "5.5.4");
    bad("DATA ", 501, "5.5.4");
    bad("RSET now", 501, "5.5.4");
    bad("QUIT bye", 501, "5.5.4");
    bad("STARTTLS x", 501, "5.5.4");
}

TEST_CASE("NOOP, HELP, VRFY, EXPN", "[smtp]") {
    CHECK(ok("NOOP").text.empty());
    CHECK(ok("NOOP hello there").text == "hello there");
    CHECK(ok("NOOP ").text.empty());
    CHECK(ok("HELP MAIL").text == "MAIL");
    CHECK(ok("VRFY postmaster").text == "postmaster");
    CHECK(ok("EXPN staff").text == "staff");
    CHECK(ok("VRFY j\xc3\xb8rn SMTPUTF8").text == "j\xc3\xb8rn SMTPUTF8");
    bad("VRFY", 501, "5.5.4");
    bad("VRFY ", 501, "5.5.4");
    bad("EXPN", 501, "5.5.4");
    bad("NOOP \xff", 501, "5.5.4");
    bad("VRFY \xc0\xaf", 501, "5.5.4");
}

TEST_CASE("BDAT", "[smtp]") {
    auto c = ok("BDAT 1000");
    CHECK(c.v == verb::bdat);
    CHECK(c.bdat_size == 1000);
    CHECK_FALSE(c.bdat_last);
    auto l = ok("BDAT 0 LAST");
    CHECK(l.bdat_size == 0);
    CHECK(l.bdat_last);
    CHECK(ok("bdat 5 last").bdat_last);
    CHECK(ok("BDAT 007").bdat_size == 7);
    CHECK(ok("BDAT 18446744073709551615").bdat_size == UINT64_MAX);

    bad("BDAT", 501, "5.5.4");
    bad("BDAT ", 501, "5.5.4");
    bad("BDAT x", 501, "5.5.4");
    bad("BDAT -1", 501, "5.5.4");
    bad("BDAT 1x", 501, "5.5.4");
    bad("BDAT 10 FIRST", 501, "5.5.4");
    bad("BDAT 10 LAST ", 501, "5.5.4");
    bad("BDAT 10 LAST x", 501, "5.5.4");
    bad("BDAT 10  LAST", 501, "5.5.4");
    bad("BDAT LAST", 501, "5.5.4");
    bad("BDAT 18446744073709551616", 501, "5.5.4");   // overflows uint64
    bad("BDAT 123456789012345678901", 501, "5.5.4");  // 21 digits
}

TEST_CASE("AUTH", "[smtp]") {
    auto c = ok("AUTH PLAIN");
    CHECK(c.v == verb::auth);
    CHECK(c.auth_mechanism == "PLAIN");
    CHECK(c.auth_initial.empty());
    auto i = ok("AUTH PLAIN AHVzZXIAcGFzcw==");
    CHECK(i.auth_initial == "AHVzZXIAcGFzcw==");
    CHECK(ok("AUTH PLAIN =").auth_initial == "=");
    CHECK(ok("auth login").auth_mechanism == "LOGIN");
    CHECK(ok("AUTH SCRAM-SHA-256").auth_mechanism == "SCRAM-SHA-256");
    CHECK(ok("AUTH X_MECH dGVzdA==").auth_mechanism == "X_MECH");
    CHECK(ok("AUTH PLAIN dGVzdHM=").auth_initial == "dGVzdHM=");
    CHECK(ok("AUTH PLAIN dGVz").auth_initial == "dGVz");
    CHECK(ok("AUTH " + std::string(20, 'M')).auth_mechanism.size() == 20);

    bad("AUTH", 501, "5.5.4");
    bad("AUTH ", 501, "5.5.4");
    bad("AUTH " + std::string(21, 'M'), 501, "5.5.4");
    bad("AUTH PL.AIN", 501, "5.5.4");
    bad("AUTH PLAIN ", 501, "5.5.4");
    bad("AUTH PLAIN dGVzdA", 501, "5.5.2");      // length not a multiple of 4
    bad("AUTH PLAIN dGV*dA==", 501, "5.5.2");
    bad("AUTH PLAIN dG=zdA==", 501, "5.5.2");    // padding in the middle
    bad("AUTH PLAIN dGVzd===", 501, "5.5.2");
    bad("AUTH PLAIN dGVzdA== x", 501, "5.5.2");
    bad("AUTH PLAIN ==", 501, "5.5.2");
}

TEST_CASE("parse_mailbox and to_string round trip", "[smtp]") {
    auto m = mb_ok("user@example.com");
    CHECK(m.local == "user");
    CHECK(m.domain == "example.com");
    CHECK_FALSE(m.utf8);

    for (std::string_view s : {"user@example.com", "\"a b\"@example.com", "\"a\\\\b\"@x.example", "\"a\\\"b\"@x.example",
                               "first.last@[192.0.2.7]", "x@[IPv6:2001:db8::7]", "\"\"@x.example", "\"@\"@x.example"}) {
        auto a = mb_ok(s);
        CHECK(to_string(a) == s);
        auto b = mb_ok(to_string(a));
        CHECK(a == b);
    }
    // Canonical forms: unnecessary quotes and escapes go.
    CHECK(to_string(mb_ok("\"abc\"@x.example")) == "abc@x.example");
    CHECK(to_string(mb_ok("\"a\\bc\"@x.example")) == "abc@x.example");
    CHECK(to_string(mb_ok("\"a.b\"@x.example")) == "a.b@x.example");
    CHECK(to_string(mb_ok("\"a..b\"@x.example")) == "\"a..b\"@x.example");
    CHECK(to_string(mb_ok("\".a\"@x.example")) == "\".a\"@x.example");
    // Postmaster without domain (from RCPT) prints bare.
    CHECK(to_string(mailbox{"Postmaster", "", false, false}) == "Postmaster");

    mb_bad("", 501, "5.1.3");
    mb_bad("user", 501, "5.1.3");
    mb_bad("<user@example.com>", 501, "5.1.3");
    mb_bad("user@example.com ", 501, "5.1.3");
    mb_bad("user@", 501, "5.1.3");
    mb_bad("@example.com", 501, "5.1.3");
    mb_bad("user@example..com", 501, "5.1.3");
    mb_bad("us er@example.com", 501, "5.1.3");
    mb_bad(std::string_view("us\0er@example.com", 17), 501, "5.1.3");
    mb_bad(std::string_view("user@[192.0.2.1\0]", 17), 501, "5.1.3");
    mb_bad("user@[192.0.2.1]\n", 501, "5.1.3");
    mb_bad("j\xc3\xb8rn@x.example", 553, "5.6.7");
    CHECK(mb_ok("j\xc3\xb8rn@x.example", true).utf8);
    mb_bad("\xc0\xaf@x.example", 501, "5.1.3", true);
}

TEST_CASE("screening: HTTP requests and header lines are not SMTP") {
    for (std::string_view l : {"GET / HTTP/1.1", "get /index.html HTTP/1.0", "POST /x HTTP/1.1", "CONNECT mx:25 HTTP/1.0",
                               "Host: mx.example.test", "User-Agent: curl/7.88", "OPTIONS * HTTP/1.1"})
        CHECK(looks_non_smtp(l));
    for (std::string_view l : {"EHLO client.example", "MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>", "QUIT",
                               "HELP", "", ":", "GETX /", "X-Y", "Host:x"})
        CHECK_FALSE(looks_non_smtp(l));
}
