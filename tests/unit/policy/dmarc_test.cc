// DMARC records and organisational domains (Debian's public suffix list).
#include <catch2/catch.hpp>

#include "policy/dmarc.hh"

using namespace rw::policy;
using namespace rw::policy::dmarc;

TEST_CASE("dmarc: organisational domains from the public suffix list", "[dmarc]") {
    REQUIRE(organizational_domain("mail.example.com") == "example.com");
    REQUIRE(organizational_domain("a.b.example.co.uk") == "example.co.uk");
    REQUIRE(organizational_domain("Example.COM.") == "example.com");
    REQUIRE(organizational_domain("co.uk") == "co.uk");  // a public suffix is its own
    REQUIRE(organizational_domain("x.y.blogspot.com") == "y.blogspot.com");  // private section
}

TEST_CASE("dmarc: records", "[dmarc]") {
    std::string why;
    auto r = parse_record("v=DMARC1; p=reject; sp=quarantine; np=reject; pct=50; adkim=s; "
                          "rua=mailto:a@x.test!10m, mailto:b@y.test, https://no.test/; ruf=mailto:f@x.test",
                          why);
    REQUIRE(r);
    REQUIRE(r->p == disposition::reject);
    REQUIRE(r->sp == disposition::quarantine);
    REQUIRE(r->np == disposition::reject);
    REQUIRE(r->pct == 50);
    REQUIRE(r->strict_dkim);
    REQUIRE(!r->strict_spf);
    REQUIRE(r->rua == std::vector<std::string>{"mailto:a@x.test!10m", "mailto:b@y.test"});  // size limits kept
    REQUIRE(r->ruf == std::vector<std::string>{"mailto:f@x.test"});
    REQUIRE(!parse_record("p=reject; v=DMARC1", why));  // v= first
    REQUIRE(!parse_record("v=DMARC1; p=bogus", why));
    auto rua_only = parse_record("v=DMARC1; p=bogus; rua=mailto:r@x.test", why);  // RFC 7489 6.6.3
    REQUIRE(rua_only);
    REQUIRE(rua_only->p == disposition::none);
}

TEST_CASE("dmarc: evaluation asks for both records at once, then decides", "[dmarc]") {
    spf::outcome s;
    s.res = spf::result::pass;
    s.domain = "bounces.example.com";
    request rq;
    rq.from_domain = "news.example.com";
    rq.spf = &s;
    dns_answers answers;
    auto s1 = evaluate(rq, answers);
    REQUIRE(!s1.done);
    REQUIRE(s1.need.size() == 2);  // _dmarc.news.example.com and _dmarc.example.com
    dns_answer none;
    none.status = dns_status::nxdomain;
    answers.put(s1.need[0], none);
    dns_answer rec;
    rec.status = dns_status::ok;
    rec.names = {"v=spf1 -all", "v=DMARC1; p=reject"};
    answers.put(s1.need[1], rec);
    auto s2 = evaluate(rq, answers);
    REQUIRE(s2.done);
    REQUIRE(s2.done->res == result::pass);  // relaxed: same organisational domain
    REQUIRE(s2.done->spf_aligned);
    REQUIRE(s2.done->policy_domain == "example.com");
    s.res = spf::result::softfail;
    rq.sample = 99;
    auto s3 = evaluate(rq, answers);
    REQUIRE(s3.done);
    REQUIRE(s3.done->res == result::fail);
    REQUIRE(s3.done->policy == disposition::reject);
    REQUIRE(s3.done->applied == disposition::reject);  // pct=100
}
