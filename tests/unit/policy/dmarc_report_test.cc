// DMARC aggregate reports: days, the store, the XML, gzip, rua= and the
// report message.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "mail/codec.hh"
#include "policy/dmarc_report.hh"

using namespace rw::policy;
using namespace rw::policy::dmarc_report;

namespace {

row a_row(std::string ip, bool spf_ok) {
    row r;
    r.source_ip = std::move(ip);
    r.disposition = spf_ok ? "none" : "reject";
    r.spf_aligned = spf_ok;
    r.header_from = "example.org";
    r.spf_domain = "example.org";
    r.spf_scope = "mfrom";
    r.spf_result = spf_ok ? "pass" : "fail";
    r.dkim.push_back({"example.org", "s1", spf_ok ? "pass" : "fail"});
    r.dkim_aligned = spf_ok;
    return r;
}

published a_policy(std::string domain) {
    published p;
    p.domain = std::move(domain);
    p.p = "reject";
    p.rua = {"mailto:agg@reports.example.net!10m"};
    return p;
}

}  // namespace

TEST_CASE("dmarc report: UTC days", "[dmarc_report]") {
    REQUIRE(day_of(0) == 0);
    REQUIRE(day_of(86399) == 0);
    REQUIRE(day_of(86400) == 1);
    REQUIRE(day_of(-1) == -1);
    REQUIRE(day_string(0) == "1970-01-01");
    const int64_t d = day_of(1796601600);  // 2026-12-07T00:00:00Z
    REQUIRE(day_string(d) == "2026-12-07");
    REQUIRE(parse_day("2026-12-07") == d);
    REQUIRE(parse_day("2026-02-29") == std::nullopt);  // not a leap year
    REQUIRE(parse_day("2024-02-29").has_value());
    REQUIRE(parse_day("2026-12-7") == std::nullopt);
    REQUIRE(parse_day("yesterday") == std::nullopt);
}

TEST_CASE("dmarc report: rows are counted per domain and day", "[dmarc_report]") {
    const int64_t t = 1796601600 + 3600;
    store s;
    s.add(t, a_policy("example.org"), a_row("192.0.2.1", true));
    s.add(t + 10, a_policy("example.org"), a_row("192.0.2.1", true));
    s.add(t + 20, a_policy("example.org"), a_row("192.0.2.1", false));
    s.add(t + 86400, a_policy("example.org"), a_row("192.0.2.1", true));  // the next day
    s.add(t, a_policy("other.test"), a_row("198.51.100.7", true));
    REQUIRE(s.data().size() == 3);
    REQUIRE(s.rows() == 4);
    const domain_day& d = s.data().at({day_of(t), "example.org"});
    REQUIRE(d.messages() == 3);
    REQUIRE(d.rows.size() == 2);
    REQUIRE(d.rows.at(a_row("192.0.2.1", true)) == 2);
    REQUIRE(d.first == t);
    REQUIRE(d.last == t + 20);

    // Another core's store merges in: same rows add up, new ones join.
    store other;
    other.add(t + 30, a_policy("example.org"), a_row("192.0.2.1", true));
    other.add(t + 40, a_policy("example.org"), a_row("203.0.113.9", true));
    s.merge(other);
    REQUIRE(other.empty());
    REQUIRE(s.data().at({day_of(t), "example.org"}).rows.at(a_row("192.0.2.1", true)) == 3);
    REQUIRE(s.data().at({day_of(t), "example.org"}).messages() == 5);
    REQUIRE(s.rows() == 5);

    // The row bound holds across merges too.
    {
        store full, more;
        for (unsigned i = 0; i < store::k_max_rows; ++i)
            full.add(t, a_policy("big.test"), a_row("10." + std::to_string(i / 65536) + "." +
                                                        std::to_string(i / 256 % 256) + "." + std::to_string(i % 256),
                                                    true));
        more.add(t, a_policy("big.test"), a_row("192.0.2.200", true), 5);
        more.add(t, a_policy("big.test"), a_row("10.0.0.1", true), 2);  // an existing row still counts
        full.merge(more);
        REQUIRE(full.rows() == store::k_max_rows);
        REQUIRE(full.dropped() == 5);
        REQUIRE(full.data().at({day_of(t), "big.test"}).rows.at(a_row("10.0.0.1", true)) == 3);
    }

    // The closed days come out; today stays.
    auto closed = s.take_before(day_of(t) + 1);
    REQUIRE(closed.size() == 2);
    REQUIRE(s.data().size() == 1);
    REQUIRE(s.rows() == 1);
    REQUIRE(s.data().begin()->first.first == day_of(t) + 1);
}

TEST_CASE("dmarc report: the XML of RFC 7489 appendix C", "[dmarc_report]") {
    const int64_t t = 1796601600 + 3600;
    store s;
    s.add(t, a_policy("example.org"), a_row("192.0.2.1", true));
    s.add(t, a_policy("example.org"), a_row("192.0.2.1", true));
    row bad = a_row("192.0.2.<&>", false);
    bad.reason_type = "local_policy";
    bad.reason_comment = "arc, sealed by lists.example";
    s.add(t, a_policy("example.org"), bad);
    reporter who{"Example Gateway", "dmarc-reports@gw.example", "gw.example"};
    const std::string x = xml(who, "r-1", day_of(t), s.data().begin()->second);
    REQUIRE(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>"));
    REQUIRE(x.find("<org_name>Example Gateway</org_name>") != std::string::npos);
    REQUIRE(x.find("<begin>1796601600</begin>") != std::string::npos);
    REQUIRE(x.find("<end>1796687999</end>") != std::string::npos);
    REQUIRE(x.find("<domain>example.org</domain>\n    <adkim>r</adkim>\n    <aspf>r</aspf>\n    <p>reject</p>\n"
                   "    <sp>reject</sp>\n    <pct>100</pct>") != std::string::npos);
    REQUIRE(x.find("<source_ip>192.0.2.1</source_ip>\n      <count>2</count>") != std::string::npos);
    REQUIRE(x.find("<source_ip>192.0.2.&lt;&amp;&gt;</source_ip>") != std::string::npos);  // escaped
    REQUIRE(x.find("<type>local_policy</type>\n          <comment>arc, sealed by lists.example</comment>") !=
            std::string::npos);
    REQUIRE(x.find("<selector>s1</selector>") != std::string::npos);
    REQUIRE(x.find("<scope>mfrom</scope>") != std::string::npos);
    REQUIRE(x.ends_with("</feedback>\n"));
    // A report of the day so far ends now.
    const std::string partial = xml(who, "r-2", day_of(t), s.data().begin()->second, t + 5);
    REQUIRE(partial.find(fmt::format("<end>{}</end>", t + 5)) != std::string::npos);
}

TEST_CASE("dmarc report: gzip round trip", "[dmarc_report]") {
    std::string big;
    for (int i = 0; i < 5000; ++i)
        big += fmt::format("<record>{}</record>\n", i);
    const std::string gz = gzip(big);
    REQUIRE(gz.size() > 18);
    REQUIRE(uint8_t(gz[0]) == 0x1f);  // the gzip magic (RFC 1952 2.3.1)
    REQUIRE(uint8_t(gz[1]) == 0x8b);
    REQUIRE(gz.size() < big.size() / 4);
    REQUIRE(gunzip(gz) == big);
    REQUIRE(gunzip(gzip("")) == std::string());
    REQUIRE(gunzip("not gzip at all") == std::nullopt);
    REQUIRE(gunzip(gz.substr(0, gz.size() / 2)) == std::nullopt);  // truncated
}

TEST_CASE("dmarc report: rua= destinations", "[dmarc_report]") {
    auto d = parse_rua("mailto:agg@Reports.Example.NET!10m");
    REQUIRE(d);
    REQUIRE(d->address == "agg@Reports.Example.NET");
    REQUIRE(d->domain == "reports.example.net");
    REQUIRE(d->max_bytes == 10u << 20);
    REQUIRE(parse_rua("mailto:a@x.test")->max_bytes == 0);
    REQUIRE(parse_rua("MAILTO:a@x.test!500")->max_bytes == 500);
    REQUIRE(parse_rua("mailto:a@x.test!2k")->max_bytes == 2048);
    REQUIRE(!parse_rua("https://x.test/report"));
    REQUIRE(!parse_rua("mailto:"));
    REQUIRE(!parse_rua("mailto:nobody"));
    REQUIRE(!parse_rua("mailto:a@x.test!"));
    REQUIRE(!parse_rua("mailto:a@x.test!10q"));
    REQUIRE(!parse_rua("mailto:a@-bad-.test"));
    REQUIRE(!parse_rua("mailto:a@x.test?subject=hi"));

    // RFC 7489 7.1: outside the organisational domain, the destination
    // must say it takes the reports.
    REQUIRE(!needs_confirmation("example.org", "reports.example.org"));
    REQUIRE(!needs_confirmation("mail.example.co.uk", "example.co.uk"));
    REQUIRE(needs_confirmation("example.org", "reports.example.net"));
    REQUIRE(confirmation_name("Example.ORG", "reports.example.net") == "example.org._report._dmarc.reports.example.net");
    REQUIRE(confirms("v=DMARC1"));
    REQUIRE(confirms("v=DMARC1; rua=mailto:x@y.test"));
    REQUIRE(!confirms("v=DMARC10"));
    REQUIRE(!confirms("v=spf1 -all"));
}

TEST_CASE("dmarc report: the message", "[dmarc_report]") {
    reporter who{"Example Gateway", "dmarc-reports@gw.example", "gw.example"};
    const std::string gz = gzip("<feedback/>\n");
    const std::string m = message(who, "r-7", "example.org", 100, 200, gz, {"a@x.test", "b@y.test"}, 1796601600);
    REQUIRE(m.find("From: <dmarc-reports@gw.example>\r\n") != std::string::npos);
    REQUIRE(m.find("To: <a@x.test>,\r\n <b@y.test>\r\n") != std::string::npos);
    REQUIRE(m.find("Subject: Report Domain: example.org Submitter: Example Gateway Report-ID: <r-7>\r\n") !=
            std::string::npos);
    REQUIRE(m.find("filename=\"gw.example!example.org!100!200.xml.gz\"") != std::string::npos);
    REQUIRE(m.find("Content-Type: application/gzip") != std::string::npos);
    for (size_t i = 0, e; i < m.size(); i = e + 2) {
        e = m.find("\r\n", i);
        REQUIRE(e != std::string::npos);  // every line ends in CRLF
        REQUIRE(e - i <= 998);
    }
    // The attachment decodes to the gzip given.
    const size_t b = m.find("filename=\"gw.example!example.org!100!200.xml.gz\"\r\n\r\n");
    const size_t start = m.find("\r\n\r\n", b) + 4;
    const size_t end = m.find("\r\n--", start);
    std::string b64 = m.substr(start, end - start);
    std::erase(b64, '\r');
    std::erase(b64, '\n');
    REQUIRE(rw::mail::base64_decode(b64) == gz);
}
