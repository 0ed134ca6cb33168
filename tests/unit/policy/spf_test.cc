// SPF evaluation as a pure function of the DNS answers: the rounds it asks
// for, the prefetch of later terms, and the limits. The RFC 7208 suite
// runs against a real DNS server in tests/integration/auth_test.py.
#include <catch2/catch.hpp>

#include "policy/spf.hh"

using namespace rw::policy;

namespace {

dns_answer txt(std::string t) {
    dns_answer a;
    a.status = dns_status::ok;
    a.names.push_back(std::move(t));
    return a;
}

dns_answer addr(const char* ip) {
    dns_answer a;
    a.status = dns_status::ok;
    a.addrs.push_back(*rw::net::address::parse(ip, 0));
    return a;
}

spf::request req(const char* ip, const char* sender) {
    spf::request r;
    r.ip = *rw::net::address::parse(ip, 0);
    r.sender = sender;
    r.helo = "mail.example.org";
    return r;
}

bool asks(const step<spf::outcome>& s, rrtype t, const std::string& name) {
    for (const auto& q : s.need)
        if (q.type == t && q.name == name)
            return true;
    return false;
}

}  // namespace

TEST_CASE("SPF asks for the record, then every include of it in one round") {
    dns_answers ans;
    auto rq = req("192.0.2.10", "user@example.org");
    auto s = spf::evaluate(rq, ans);
    REQUIRE_FALSE(s.done);
    REQUIRE(s.need.size() == 1);
    CHECK(asks(s, rrtype::txt, "example.org"));

    ans.put({rrtype::txt, "example.org"}, txt("v=spf1 include:a.example.net include:b.example.net a:c.example.net -all"));
    s = spf::evaluate(rq, ans);
    REQUIRE_FALSE(s.done);
    CHECK(s.need.size() == 3);
    CHECK(asks(s, rrtype::txt, "a.example.net"));
    CHECK(asks(s, rrtype::txt, "b.example.net"));
    CHECK(asks(s, rrtype::a, "c.example.net"));

    ans.put({rrtype::txt, "a.example.net"}, txt("v=spf1 ip4:198.51.100.0/24 -all"));
    ans.put({rrtype::txt, "b.example.net"}, txt("v=spf1 ip4:192.0.2.0/25 -all"));
    ans.put({rrtype::a, "c.example.net"}, addr("203.0.113.1"));
    s = spf::evaluate(rq, ans);
    REQUIRE(s.done);
    CHECK(s.done->res == spf::result::pass);
    CHECK(s.done->mechanism == "include:b.example.net");
    CHECK(s.done->dns_terms == 2);  // the a: term was prefetched, not evaluated
}

TEST_CASE("SPF: the eleventh DNS term is a permerror, the third void lookup too") {
    dns_answers ans;
    auto rq = req("192.0.2.10", "user@example.org");
    std::string rec = "v=spf1";
    for (int i = 0; i < 11; ++i)
        rec += " a:h" + std::to_string(i) + ".example.net";
    rec += " -all";
    ans.put({rrtype::txt, "example.org"}, txt(rec));
    for (int i = 0; i < 11; ++i)
        ans.put({rrtype::a, "h" + std::to_string(i) + ".example.net"}, addr("203.0.113.1"));
    auto s = spf::evaluate(rq, ans);
    REQUIRE(s.done);
    CHECK(s.done->res == spf::result::permerror);
    CHECK(s.done->reason.find("more than 10") != std::string::npos);

    dns_answers voids;
    voids.put({rrtype::txt, "example.org"}, txt("v=spf1 a:v1.example.net a:v2.example.net a:v3.example.net -all"));
    for (const char* n : {"v1.example.net", "v2.example.net", "v3.example.net"}) {
        dns_answer a;
        a.status = dns_status::nxdomain;
        voids.put({rrtype::a, n}, a);
    }
    s = spf::evaluate(rq, voids);
    REQUIRE(s.done);
    CHECK(s.done->res == spf::result::permerror);
    CHECK(s.done->void_lookups == 3);
}

TEST_CASE("SPF: a DNS failure is temperror, a bad record is permerror, no record is none") {
    auto rq = req("2001:db8::1", "user@example.org");
    dns_answers a1;
    dns_answer fail;
    fail.status = dns_status::temporary;
    fail.error = "timeout";
    a1.put({rrtype::txt, "example.org"}, fail);
    auto s = spf::evaluate(rq, a1);
    REQUIRE(s.done);
    CHECK(s.done->res == spf::result::temperror);

    dns_answers a2;
    a2.put({rrtype::txt, "example.org"}, txt("v=spf1 ip4:1.2.3.4/33 -all"));
    s = spf::evaluate(rq, a2);
    REQUIRE(s.done);
    CHECK(s.done->res == spf::result::permerror);
    CHECK(spf::check_record("v=spf1 ip4:1.2.3.4/33 -all").has_value());
    CHECK_FALSE(spf::check_record("v=spf1 ip6:2001:db8::/32 mx/24//64 ~all").has_value());

    dns_answers a3;
    a3.put({rrtype::txt, "example.org"}, txt("some other text"));
    s = spf::evaluate(rq, a3);
    REQUIRE(s.done);
    CHECK(s.done->res == spf::result::none);

    // A single-label or literal domain is "none" without a lookup (4.3).
    s = spf::evaluate(req("192.0.2.1", "user@localhost"), a3);
    REQUIRE(s.done);
    CHECK(s.done->res == spf::result::none);
}
