// Content rules (policy/rules.hh): the condition language and its errors,
// the actions, and evaluation over real messages (multipart, base64,
// ISO-8859-1 text, RFC 2047 subjects, a zip made by libarchive), fed in
// pieces of every size.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "mail/codec.hh"
#include "policy/rules.hh"
#include "tests/unit/policy/archive_maker.hh"

using namespace rw;
using namespace rw::policy::rules;

namespace {

std::string b64(const std::string& s) {
    std::string e = mail::base64_encode(s), out;
    for (size_t i = 0; i < e.size(); i += 76)
        out += e.substr(i, 76) + "\r\n";
    return out;
}

std::shared_ptr<const rule_set> compile(std::vector<rule_set::source> src) {
    auto rs = rule_set::compile(src);
    INFO((rs ? std::string() : rs.error()));
    REQUIRE(rs);
    return rs.value();
}

message_facts facts() {
    message_facts f;
    f.mail_from = "alice@sender.test";
    f.rcpts = {"bob@inside.test", "carol@inside.test"};
    f.helo = "mx.sender.test";
    f.client = *net::address::parse("192.0.2.7", 25);
    f.inbound = true;
    f.size = 5000;
    f.spf = "pass";
    f.dmarc = "fail";
    f.dkim = {"none"};
    return f;
}

decision run(const std::shared_ptr<const rule_set>& rs, const std::string& msg, const message_facts& f,
             size_t step = 0) {
    evaluator ev(rs);
    if (step == 0)
        ev.feed(msg);
    else
        for (size_t i = 0; i < msg.size(); i += step)
            ev.feed(std::string_view(msg).substr(i, step));
    ev.finish();
    return ev.decide(f);
}

std::string error_of(std::string_view cond) {
    auto r = parse_condition(cond);
    REQUIRE(!r);
    return r.error();
}

}  // namespace

TEST_CASE("rules: conditions parse into and/or/not trees", "[rules]") {
    auto r = parse_condition("attachment-name ~ /\\.exe$/ or (subject == \"hi\" and not size > 10K)");
    REQUIRE(r);
    REQUIRE(r.value().tests.size() == 3);
    REQUIRE(r.value().nodes[0].k == node::kind::any);
    REQUIRE(r.value().tests[0].what == subject::attachment_name);
    REQUIRE(r.value().tests[0].how == op::match);
    REQUIRE(r.value().tests[0].text == "\\.exe$");
    REQUIRE(r.value().tests[1].header == "subject");
    REQUIRE(r.value().tests[2].number == 10 * 1024);
    // and binds tighter than or; keywords in any case.
    auto p = parse_condition("authenticated OR mime-defect AND archive-encrypted");
    REQUIRE(p);
    REQUIRE(p.value().nodes[0].k == node::kind::any);
    // Quoted strings: \" and \\ are escapes, other backslashes are kept.
    auto q = parse_condition(R"(header "X-Tag" == "a \"b\" \\ \d")");
    REQUIRE(q);
    REQUIRE(q.value().tests[0].header == "x-tag");
    REQUIRE(q.value().tests[0].text == R"(a "b" \ \d)");
    auto s = parse_condition(R"(body ~ /a\/b/)");
    REQUIRE(s);
    REQUIRE(s.value().tests[0].text == R"(a\/b)");
    auto c = parse_condition(R"(client-ip in "192.0.2.0/24" and client-ip != "198.51.100.1")");
    REQUIRE(c);
    REQUIRE(c.value().tests[0].net);
}

TEST_CASE("rules: a bad condition is refused with where and why", "[rules]") {
    REQUIRE_THAT(error_of(""), Catch::Contains("empty"));
    REQUIRE_THAT(error_of("attachment-nmae ~ /x/"), Catch::Contains("at 1: unknown subject \"attachment-nmae\""));
    REQUIRE_THAT(error_of("body == \"x\""), Catch::Contains("body does not take =="));
    REQUIRE_THAT(error_of("size ~ /x/"), Catch::Contains("size does not take ~"));
    REQUIRE_THAT(error_of("size > lots"), Catch::Contains("expected a number"));
    REQUIRE_THAT(error_of("subject"), Catch::Contains("expected an operator after subject"));
    REQUIRE_THAT(error_of("subject ~ /(/"), Catch::Contains("does not compile"));
    REQUIRE_THAT(error_of("(subject ~ /a/"), Catch::Contains("expected )"));
    REQUIRE_THAT(error_of("subject ~ /a/ subject ~ /b/"), Catch::Contains("at 15: unexpected"));
    REQUIRE_THAT(error_of("subject ~ \"open"), Catch::Contains("no closing"));
    REQUIRE_THAT(error_of("client-ip == \"192.0.2.0/24\""), Catch::Contains("is a network: use in"));
    REQUIRE_THAT(error_of("client-ip in \"nowhere\""), Catch::Contains("not an IP address"));
    REQUIRE_THAT(error_of("direction == \"sideways\""), Catch::Contains("\"inbound\" or \"outbound\""));
    REQUIRE_THAT(error_of("header \"Bad Name\" ~ /x/"), Catch::Contains("not a header field name"));
    std::string deep(200, '(');
    REQUIRE_THAT(error_of(deep + "authenticated"), Catch::Contains("nested deeper"));
}

TEST_CASE("rules: actions and their checks", "[rules]") {
    auto r = parse_action("reject");
    REQUIRE(r);
    REQUIRE(r.value().code == 550);
    REQUIRE(r.value().enhanced == "5.7.1");
    auto t = parse_action("reject 451 4.7.0 Try later please");
    REQUIRE(t);
    REQUIRE(t.value().code == 451);
    REQUIRE(t.value().enhanced == "4.7.0");
    REQUIRE(t.value().text == "Try later please");
    auto u = parse_action("reject 554 No executables");
    REQUIRE(u);
    REQUIRE(u.value().enhanced == "5.7.1");
    REQUIRE(u.value().text == "No executables");
    REQUIRE(!parse_action("reject 550 4.7.1 x"));
    REQUIRE(!parse_action("reject 421 closing"));
    REQUIRE(!parse_action("reject 250 fine"));
    auto h = parse_action("add-header X-Scanned: yes, by rules");
    REQUIRE(h);
    REQUIRE(h.value().text == "X-Scanned");
    REQUIRE(h.value().value == "yes, by rules");
    REQUIRE(!parse_action("add-header no colon"));
    REQUIRE(!parse_action("add-header X-A: line\r\nBcc: evil@x.test"));
    REQUIRE(parse_action("remove-header X-Spam-Flag").value().text == "x-spam-flag");
    REQUIRE(parse_action("tag-subject [SUSPECT]").value().text == "[SUSPECT]");
    REQUIRE_THAT(parse_action("quarantine-ish").error(), Catch::Contains("unknown action"));
    REQUIRE(!parse_action("drop now"));
    // Nothing may follow a stopping action.
    auto rr = parse_rule("r", "authenticated", {"reject", "add-header X-A: b"});
    REQUIRE(!rr);
    REQUIRE_THAT(rr.error(), Catch::Contains("actions[1]"));
    REQUIRE(!parse_rule("r", "authenticated", {}));
}

TEST_CASE("rules: evaluation over a real message, fed in pieces", "[rules]") {
    const std::string zip = rw::test::make_archive({{"docs/readme.txt", "hello"}, {"tools/setup.exe", "MZ\x90"}});
    // ISO-8859-1 "Grüße aus Köln" in quoted-printable; an RFC 2047 subject.
    const std::string msg = "From: Alice <alice@sender.test>\r\n"
                            "Subject: =?utf-8?q?Rechnung_f=C3=BCr_Sie?=\r\n"
                            "X-Mailer: Test 1.0\r\n"
                            "Content-Type: multipart/mixed; boundary=x\r\n\r\n"
                            "--x\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
                            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                            "Gr=FC=DFe aus K=F6ln, see the attach=\r\nment.\r\n"
                            "--x\r\nContent-Type: application/octet-stream\r\n"
                            "Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n"
                            "Content-Transfer-Encoding: base64\r\n\r\n" +
                            b64(zip) + "--x--\r\n";
    auto rs = compile({
        {"body-umlaut", "body ~ /grüße aus köln/", {"add-header X-Body: matched"}},
        {"body-softbreak", "body ~ /attachment\\./", {"add-header X-Soft: matched"}},
        {"subject-decoded", "subject ~ /rechnung für/", {"tag-subject [INVOICE]"}},
        {"no-match", "body ~ /never here/ or header \"X-Mailer\" == \"Other\"", {"reject"}},
        {"mailer", "header \"x-mailer\" == \"test 1.0\"", {"remove-header X-Mailer"}},
        {"zip-exe", "archive-entry ~ /\\.exe$/ and attachment-type == \"application/zip\"", {"tag-subject [EXE]"}},
        {"name-lies", "attachment-name == \"invoice.pdf\" and not attachment-type ~ /pdf/", {"add-header X-Lie: yes"}},
        {"counts", "attachment-count == 1 and attachment-size > 100 and size < 10K", {"add-header X-Count: 1"}},
        {"envelope", "rcpt == \"CAROL@inside.test\" and mail-from ~ /@sender\\.test$/ and helo ~ /^mx\\./",
         {"add-header X-Env: yes"}},
        {"auth", "spf == \"pass\" and dmarc != \"pass\" and dkim == \"none\" and not authenticated",
         {"add-header X-Auth: yes"}},
        {"net", "client-ip in \"192.0.2.0/24\" and direction == \"inbound\"", {"reject 554 5.7.1 Not from there"}},
        {"after", "authenticated or not authenticated", {"add-header X-After: never"}},
    });
    for (size_t step : {size_t(0), size_t(1), size_t(7), size_t(100)}) {
        INFO("step " << step);
        decision d = run(rs, msg, facts(), step);
        REQUIRE(d.fired == std::vector<std::string>{"body-umlaut", "body-softbreak", "subject-decoded", "mailer",
                                                    "zip-exe", "name-lies", "counts", "envelope", "auth", "net"});
        REQUIRE(d.final == decision::outcome::reject);
        REQUIRE(d.final_rule == "net");
        REQUIRE(d.code == 554);
        REQUIRE(d.text == "Not from there");
        REQUIRE(d.subject_tag == "[INVOICE] [EXE]");
        REQUIRE(d.remove_headers == std::vector<std::string>{"x-mailer"});
        REQUIRE(d.add_headers.size() == 6);
        REQUIRE(d.add_headers[0] == std::pair<std::string, std::string>{"X-Body", "matched"});
    }
    // Another client: the stopping rule does not hold, the last one fires.
    message_facts other = facts();
    other.client = *net::address::parse("198.51.100.1", 25);
    other.rcpts = {"bob@inside.test"};
    decision d = run(rs, msg, other);
    REQUIRE(d.final == decision::outcome::none);
    REQUIRE(d.fired.back() == "after");
    REQUIRE(std::find(d.fired.begin(), d.fired.end(), "envelope") == d.fired.end());
}

TEST_CASE("rules: accept and drop stop, a plain message, rules that read no message", "[rules]") {
    const std::string plain = "Subject: hello\r\n\r\nJust text, no MIME.\r\n";
    auto rs = compile({{"ok-sender", "mail-from == \"alice@sender.test\"", {"accept"}},
                       {"text", "body ~ /just text/", {"drop"}}});
    decision d = run(rs, plain, facts());
    REQUIRE(d.final == decision::outcome::accept);
    REQUIRE(d.fired == std::vector<std::string>{"ok-sender"});
    message_facts f = facts();
    f.mail_from = "";
    decision e = run(rs, plain, f);
    REQUIRE(e.final == decision::outcome::drop);
    REQUIRE(e.final_rule == "text");
    // Only envelope tests: the message is not parsed at all.
    auto env_only = compile({{"e", "rcpt ~ /^bob@/", {"add-header X-B: 1"}}});
    REQUIRE(!env_only->needs_message());
    evaluator ev(env_only);
    ev.feed(plain);
    REQUIRE(ev.mime().parts().size() == 1);  // the message part the parser opens, never read
    REQUIRE(ev.mime().parts()[0].headers.empty());
    REQUIRE(ev.decide(facts()).fired.size() == 1);
    // A header that is absent: ~ and == do not hold, != does.
    auto absent = compile({{"a", "header \"X-None\" ~ /./ or header \"X-None\" == \"\"", {"drop"}},
                           {"b", "header \"X-None\" != \"x\"", {"add-header X-Ok: 1"}}});
    decision g = run(absent, plain, facts());
    REQUIRE(g.fired == std::vector<std::string>{"b"});
    // MIME defects: a multipart never closed.
    auto defect = compile({{"d", "mime-defect", {"reject"}}});
    REQUIRE(run(defect, plain, facts()).final == decision::outcome::none);
    REQUIRE(run(defect, "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\nx\r\n", facts()).final ==
            decision::outcome::reject);
}

TEST_CASE("rules: a thousand patterns in one set, each found where it belongs", "[rules]") {
    std::vector<rule_set::source> src;
    for (int i = 0; i < 1000; ++i)
        src.push_back({"r" + std::to_string(i), "body ~ /token" + std::to_string(i) + "x/ or subject ~ /subj" +
                                                    std::to_string(i) + "y/",
                       {"add-header X-R: " + std::to_string(i)}});
    auto rs = compile(src);
    REQUIRE(rs->pattern_count() == 2000);
    // subj7y in the body is not a subject match; token12x in the subject is not a body match.
    const std::string msg = "Subject: about token12x and subj5y\r\n\r\nbody has token999x and subj7y\r\n";
    decision d = run(rs, msg, facts(), 3);
    REQUIRE(d.fired == std::vector<std::string>{"r5", "r999"});
}

TEST_CASE("rules: a rule gated by its patterns is skipped unless one matched, in file order all the same", "[rules]") {
    auto rs = compile({
        {"g-and", "body ~ /alpha/ and size > 0", {"add-header X-1: 1"}},
        {"u-not", "not body ~ /never/", {"add-header X-2: 2"}},
        {"u-or", "body ~ /never/ or size > 0", {"add-header X-3: 3"}},
        {"g-or", "body ~ /beta/ or subject ~ /gamma/", {"add-header X-4: 4"}},
        {"g-miss", "body ~ /delta/ and not authenticated", {"add-header X-5: 5"}},
    });
    const auto& r = rs->rules();
    REQUIRE(r[0].gated);
    REQUIRE(!r[1].gated);
    REQUIRE(!r[2].gated);
    REQUIRE(r[3].gated);
    REQUIRE(r[4].gated);
    decision d = run(rs, "Subject: gamma\r\n\r\nalpha\r\n", facts());
    REQUIRE(d.fired == std::vector<std::string>{"g-and", "u-not", "u-or", "g-or"});
}

TEST_CASE("rules: quarantine stops, naming its quarantine", "[rules]") {
    auto q = parse_action("quarantine policy");
    REQUIRE(q);
    REQUIRE(q.value().kind == action_kind::quarantine);
    REQUIRE(q.value().text == "policy");
    REQUIRE(stops(action_kind::quarantine));
    REQUIRE(!parse_action("quarantine"));
    REQUIRE(!parse_action("quarantine two words"));
    REQUIRE(!parse_rule("r", "authenticated", {"quarantine spam", "add-header X-A: b"}));
    auto rs = compile({{"tag", "subject ~ /invoice/", {"add-header X-Seen: 1"}},
                       {"hold", "subject ~ /invoice/", {"quarantine policy"}},
                       {"never", "subject ~ /invoice/", {"reject"}}});
    decision d = run(rs, "Subject: invoice 7\r\n\r\npay\r\n", facts());
    REQUIRE(d.final == decision::outcome::quarantine);
    REQUIRE(d.quarantine == "policy");
    REQUIRE(d.final_rule == "hold");
    REQUIRE(d.fired == std::vector<std::string>{"tag", "hold"});
    REQUIRE(d.add_headers.size() == 1);
}

TEST_CASE("rules: envelope actions parse, check their arguments and collect in order", "[rules]") {
    auto b = parse_action("bounce");
    REQUIRE(b);
    CHECK((b.value().kind == action_kind::bounce && b.value().code == 550 && b.value().enhanced == "5.7.1"));
    CHECK(b.value().text == "Message bounced by policy");
    auto b2 = parse_action("bounce 554 5.7.0 Not here");
    REQUIRE(b2);
    CHECK((b2.value().code == 554 && b2.value().enhanced == "5.7.0" && b2.value().text == "Not here"));
    CHECK_THAT(parse_action("bounce 451 later").error(), Catch::Contains("permanent failure"));
    CHECK(stops(action_kind::bounce));
    CHECK(parse_action("redirect legal@example.test").value().text == "legal@example.test");
    CHECK_THAT(parse_action("redirect").error(), Catch::Contains("expected an address"));
    CHECK(!parse_action("redirect <a@b.test>"));
    CHECK(!parse_action("redirect a@b.test c@d.test"));
    CHECK(!parse_action("copy nobody"));
    CHECK(!parse_action("copy a@bad..domain"));
    auto n = parse_action("notify audit@example.test Held: please review");
    REQUIRE(n);
    CHECK((n.value().kind == action_kind::notify && n.value().text == "audit@example.test" &&
           n.value().value == "Held: please review"));
    CHECK(!parse_action("notify audit@example.test line\r\nBcc: x@y.test"));
    CHECK(parse_action("route mx.Example.test").value().text == "mx.example.test:25");
    CHECK(parse_action("route 192.0.2.7:2525").value().text == "192.0.2.7:2525");
    CHECK(parse_action("route [2001:DB8::1]:26").value().text == "[2001:db8::1]:26");
    CHECK(!parse_action("route"));
    CHECK(!parse_action("route host:0"));
    CHECK(!parse_action("route host:99999"));
    CHECK(!parse_action("route [192.0.2.1]:25"));  // brackets are for IPv6
    CHECK(!parse_action("route bad_host!:25"));
    std::string long_host;  // 251 octets, a valid name
    for (int i = 0; i < 3; ++i)
        long_host += std::string(63, 'a') + ".";
    long_host += std::string(54, 'b') + ".test";
    REQUIRE(long_host.size() == 251);
    CHECK(parse_action("route " + long_host + ":25"));
    CHECK(!parse_action("route " + long_host + ":2525"));  // longer than a next hop may be stored
    auto pl = parse_action("pool bulk-1");
    REQUIRE(pl);
    CHECK((pl.value().kind == action_kind::pool && pl.value().text == "bulk-1"));
    CHECK(!parse_action("pool"));
    CHECK(!parse_action("pool two words"));
    CHECK(!parse_action("pool " + std::string(65, 'p')));
    CHECK(!is_rule_address("@example.test"));
    CHECK(is_rule_address("first.last+tag@example.test"));

    const std::string msg = "Subject: quarterly report\r\n\r\nNumbers.\r\n";
    auto rs = compile({{"a", "subject ~ /report/", {"copy archive@example.test", "notify audit@example.test"}},
                       {"b", "subject ~ /quarterly/", {"redirect first@example.test", "route 192.0.2.1", "pool p1"}},
                       {"c", "subject ~ /quarterly/", {"redirect second@example.test", "bounce"}},
                       {"d", "subject ~ /quarterly/", {"copy never@example.test"}}});
    decision d = run(rs, msg, facts());
    CHECK(d.final == decision::outcome::bounce);
    CHECK(d.final_rule == "c");
    CHECK((d.redirect == "second@example.test" && d.redirect_rule == "c"));  // the later one
    CHECK((d.route == "192.0.2.1:25" && d.route_rule == "b"));
    CHECK((d.pool == "p1" && d.pool_rule == "b"));
    REQUIRE(d.copies.size() == 1);  // d never ran: c stopped
    CHECK((d.copies[0].to == "archive@example.test" && d.copies[0].rule == "a"));
    REQUIRE(d.notices.size() == 1);
    CHECK(d.notices[0].to == "audit@example.test");
    CHECK(d.fired == std::vector<std::string>{"a", "b", "c"});
}

TEST_CASE("rules: the DMARC disposition is a subject of its own", "[rules]") {
    auto rs = compile({{"q", "dmarc-disposition == \"quarantine\" and dmarc == \"fail\"", {"quarantine spam"}}});
    message_facts f = facts();
    f.dmarc_disposition = "quarantine";
    REQUIRE(run(rs, "Subject: x\r\n\r\ny\r\n", f).final == decision::outcome::quarantine);
    f.dmarc_disposition = "none";
    REQUIRE(run(rs, "Subject: x\r\n\r\ny\r\n", f).final == decision::outcome::none);
    REQUIRE_THAT(error_of("dmarc-disposition > 3"), Catch::Contains("does not take >"));
}
