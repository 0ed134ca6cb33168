// The host access table (policy/access.hh): DNSBL site syntax and its
// answer filters, the DNSBL and reverse names asked for a client, rdns
// patterns, reject replies, and the classification walk over sender groups
// with the DNS answered by hand, round by round, checking that each round
// asks only what the next group needs.
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "policy/access.hh"
#include "policy/recipient_access.hh"

using namespace rw;
using namespace rw::policy::access;
using Catch::Matchers::Contains;
using policy::dns_status;
using policy::rrtype;

namespace {

const std::string k_ptr = "1.2.0.192.in-addr.arpa";
const std::string k_bl = "1.2.0.192.bl.test", k_bl2 = "1.2.0.192.bl2.test", k_wl = "1.2.0.192.wl.test";

net::address ip(const std::string& s) {
    auto a = net::address::parse(s, 0);
    REQUIRE(a);
    return *a;
}

std::string or_none(const std::optional<std::string>& s) { return s ? *s : std::string("<none>"); }

std::string parse_error(std::string_view text) {
    auto r = dnsbl_site::parse(text);
    REQUIRE(!r);
    return r.error();
}

dnsbl_site site(std::string_view text) {
    auto r = dnsbl_site::parse(text);
    INFO((r ? std::string() : r.error()));
    REQUIRE(r);
    return r.value();
}

// An A/AAAA answer holding `ips`.
void answer(policy::dns_answers& ans, rrtype t, std::string name, std::vector<std::string> ips) {
    policy::dns_answer r;
    r.status = dns_status::ok;
    for (const auto& s : ips)
        r.addrs.push_back(ip(s));
    ans.put({t, std::move(name)}, std::move(r));
}

// A PTR answer (or a failure of any type).
void answer_names(policy::dns_answers& ans, rrtype t, std::string name, dns_status st,
                  std::vector<std::string> names = {}) {
    policy::dns_answer r;
    r.status = st;
    r.names = std::move(names);
    ans.put({t, std::move(name)}, std::move(r));
}

// The three DNSBL answers for 192.0.2.1: the answer address, or nullptr for NXDOMAIN.
void dnsbl(policy::dns_answers& ans, const char* bl, const char* bl2, const char* wl) {
    const std::pair<std::string, const char*> zones[] = {{k_bl, bl}, {k_bl2, bl2}, {k_wl, wl}};
    for (const auto& [name, listed] : zones) {
        if (listed)
            answer(ans, rrtype::a, name, {listed});
        else
            answer_names(ans, rrtype::a, name, dns_status::nxdomain);
    }
}

bool asks(const policy::step<classification>& s, rrtype t, const std::string& name) {
    for (const auto& q : s.need)
        if (q.type == t && q.name == name)
            return true;
    return false;
}

std::vector<flow_policy> policies() {
    std::vector<flow_policy> ps(3);
    ps[0].name = "ACCEPTED";
    ps[1].name = "BLOCKED";
    ps[1].action = flow_action::reject;
    ps[2].name = "THROTTLED";
    ps[2].max_messages_per_session = 10;
    return ps;
}

std::shared_ptr<const table> make_table() {
    std::vector<group> gs(6);
    gs[0].name = "ALLOWLIST";
    gs[0].networks = {*policy::cidr::parse("10.0.0.0/8")};
    gs[1].name = "GOODRDNS";
    gs[1].rdns = {"*.Good.Test."};  // build() stores it as ".good.test"
    gs[2].name = "BLOCKLIST";
    gs[2].dnsbl_min_score = 3;
    gs[2].policy = 1;
    gs[3].name = "NORDNS";
    gs[3].rdns_unconfirmed = true;
    gs[3].policy = 2;
    gs[4].name = "SPFFAIL";
    gs[4].spf = {policy::spf::result::fail};
    gs[4].policy = 1;
    gs[5].name = "UNKNOWNLIST";
    auto t = table::build(std::move(gs), policies(), {site("bl.test*2"), site("bl2.test=127.0.0.[2..3]"),
                                                       site("wl.test*-5")});
    INFO((t ? std::string() : t.error()));
    REQUIRE(t);
    return t.value();
}

facts client(const std::string& addr) {
    facts f;
    f.peer = ip(addr);
    return f;
}

}  // namespace

TEST_CASE("access: DNSBL sites parse with their weights and answer filters", "[access]") {
    dnsbl_site plain = site("bl.example.test");
    CHECK(plain.zone == "bl.example.test");
    CHECK(plain.weight == 1);
    CHECK(!plain.filter);
    // Without a filter any 127.x.y.z answer lists, and nothing else does.
    CHECK(plain.listed_by(ip("127.0.0.2")));
    CHECK(plain.listed_by(ip("127.255.3.4")));
    CHECK(plain.listed_by(ip("::ffff:127.0.0.2")));
    CHECK(!plain.listed_by(ip("128.0.0.2")));
    CHECK(!plain.listed_by(ip("10.0.0.2")));
    CHECK(!plain.listed_by(ip("2001:db8::2")));

    dnsbl_site heavy = site("bl.example.test*3");
    CHECK(heavy.zone == "bl.example.test");
    CHECK(heavy.weight == 3);
    CHECK(!heavy.filter);

    dnsbl_site wl = site("wl.example.test=127.0.[0..255].[1..3]*-2");
    CHECK(wl.zone == "wl.example.test");
    CHECK(wl.weight == -2);
    REQUIRE(wl.filter);
    CHECK(wl.listed_by(ip("127.0.9.2")));
    CHECK(wl.listed_by(ip("127.0.255.1")));
    CHECK(!wl.listed_by(ip("127.0.9.4")));
    CHECK(!wl.listed_by(ip("127.1.9.2")));
    CHECK(!wl.listed_by(ip("10.0.9.2")));

    dnsbl_site list = site("bl.example.test=127.0.0.[2;4]");
    CHECK(list.weight == 1);
    CHECK(list.listed_by(ip("127.0.0.2")));
    CHECK(list.listed_by(ip("127.0.0.4")));
    CHECK(!list.listed_by(ip("127.0.0.3")));
    CHECK(!list.listed_by(ip("127.0.0.1")));

    CHECK_THAT(parse_error(""), Contains("is not a DNS zone"));
    CHECK_THAT(parse_error("nodot"), Contains("\"nodot\" is not a DNS zone"));
    CHECK_THAT(parse_error("bl.example.test*0"), Contains("weight \"0\""));
    CHECK_THAT(parse_error("bl.example.test*x"), Contains("weight \"x\""));
    CHECK_THAT(parse_error("bl.example.test*101"), Contains("weight \"101\""));
    CHECK_THAT(parse_error("bl.example.test=127.0.0"), Contains("\"127.0.0\" is not four octets"));
    CHECK_THAT(parse_error("bl.example.test=127.0.0.300"), Contains("\"300\" is not an octet"));
    CHECK_THAT(parse_error("bl.example.test=127.0.0.[5..2]"), Contains("range \"5..2\" is empty"));
}

TEST_CASE("access: DNSBL and reverse names of IPv4, mapped and IPv6 clients", "[access]") {
    const auto v4 = ip("192.0.2.1"), mapped = ip("::ffff:192.0.2.1"), v6 = ip("2001:db8::1");
    CHECK(or_none(dnsbl_name(v4, "bl.test")) == "1.2.0.192.bl.test");
    CHECK(or_none(reverse_name(v4)) == "1.2.0.192.in-addr.arpa");
    CHECK(or_none(dnsbl_name(mapped, "bl.test")) == "1.2.0.192.bl.test");
    CHECK(or_none(reverse_name(mapped)) == "1.2.0.192.in-addr.arpa");
    const std::string nib = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2";
    CHECK(or_none(reverse_name(v6)) == nib + ".ip6.arpa");
    CHECK(or_none(dnsbl_name(v6, "bl.test")) == nib + ".bl.test");
    CHECK(!reverse_name(net::address{}));
    CHECK(!dnsbl_name(net::address{}, "bl.test"));
}

TEST_CASE("access: rdns patterns match a name exactly or any name below a domain", "[access]") {
    CHECK(rdns_matches(".example.test", "mail.example.test"));
    CHECK(rdns_matches(".example.test", "a.b.example.test"));
    CHECK(!rdns_matches(".example.test", "example.test"));
    CHECK(!rdns_matches(".example.test", "badexample.test"));
    CHECK(rdns_matches("mail.example.test", "mail.example.test"));
    CHECK(!rdns_matches("mail.example.test", "a.mail.example.test"));
    CHECK(!rdns_matches("mail.example.test", "example.test"));
}

TEST_CASE("access: reject replies and SPF result names", "[access]") {
    auto r = parse_reply("554 5.7.1 Access denied");
    REQUIRE(r);
    CHECK(r->code == 554);
    CHECK(r->enhanced == "5.7.1");
    CHECK(r->text == "Access denied");
    auto busy = parse_reply("421 4.7.0 Busy");
    REQUIRE(busy);
    CHECK(busy->code == 421);
    CHECK(busy->enhanced == "4.7.0");
    CHECK(busy->text == "Busy");
    CHECK(!parse_reply("250 2.0.0 ok"));              // not a 4xx or 5xx
    CHECK(!parse_reply("554 4.7.1 mismatch class"));  // classes differ
    CHECK(!parse_reply("554 5.7.1"));                 // no text
    CHECK(!parse_reply("554 5.7.1 "));
    CHECK(!parse_reply("55 5.7.1 x"));
    CHECK(!parse_reply("554 5.7.1 bad\ttext"));
    CHECK(!parse_reply("554 5.7.1 bad\x7f"));

    CHECK(parse_spf_result("fail") == policy::spf::result::fail);
    CHECK(parse_spf_result("softfail") == policy::spf::result::softfail);
    CHECK(!parse_spf_result("bogus"));
}

TEST_CASE("access: build checks policies and DNSBL sites", "[access]") {
    auto t = make_table();
    CHECK(t->needs_spf());
    REQUIRE(t->groups().size() == 6);
    REQUIRE(t->groups()[1].rdns.size() == 1);
    CHECK(t->groups()[1].rdns[0] == ".good.test");
    CHECK(t->sites().size() == 3);
    CHECK(t->policies()[1].name == "BLOCKED");

    std::vector<group> plain(2);
    plain[0].name = "ALLOWLIST";
    plain[0].networks = {*policy::cidr::parse("192.0.2.0/24")};
    plain[1].name = "UNKNOWNLIST";
    auto ok = table::build(plain, policies(), {});
    REQUIRE(ok);
    CHECK(!ok.value()->needs_spf());

    auto none = table::build({}, policies(), {});
    REQUIRE(!none);
    CHECK_THAT(none.error(), Contains("default group is missing"));

    std::vector<group> bad_policy = plain;
    bad_policy[0].policy = 3;
    auto bp = table::build(bad_policy, policies(), {});
    REQUIRE(!bp);
    CHECK_THAT(bp.error(), Contains("ALLOWLIST") && Contains("no such mail flow policy"));

    std::vector<group> no_sites = plain;
    no_sites[0].dnsbl_max_score = -1;
    auto ns = table::build(no_sites, policies(), {});
    REQUIRE(!ns);
    CHECK_THAT(ns.error(), Contains("ALLOWLIST") && Contains("no DNSBL site"));
}

TEST_CASE("access: a client decided by its address asks nothing", "[access]") {
    auto t = make_table();
    policy::dns_answers ans;
    for (const char* a : {"10.1.2.3", "::ffff:10.1.2.3"}) {
        INFO(a);
        facts f = client(a);
        f.spf = policy::spf::result::fail;  // an earlier group still wins
        auto s = t->classify(f, ans);
        REQUIRE(s.done);
        CHECK(s.need.empty());
        CHECK(s.done->group == 0);
        CHECK(s.done->policy == 0);
        CHECK(s.done->matched == "network 10.0.0.0/8");
        CHECK(!s.done->rdns);
        CHECK(!s.done->dnsbl_score);
        CHECK(s.done->listed.empty());
    }
}

TEST_CASE("access: PTR, then its A record, then the DNSBLs, as the groups need them", "[access]") {
    auto t = make_table();
    const facts f = client("192.0.2.1");
    policy::dns_answers ans;

    // GOODRDNS needs only the reverse name: no DNSBL query yet.
    auto s1 = t->classify(f, ans);
    REQUIRE(!s1.done);
    REQUIRE(s1.need.size() == 1);
    CHECK(s1.need[0].type == rrtype::ptr);
    CHECK(s1.need[0].name == k_ptr);

    answer_names(ans, rrtype::ptr, k_ptr, dns_status::ok, {"mx.good.test"});
    auto s2 = t->classify(f, ans);
    REQUIRE(!s2.done);
    REQUIRE(s2.need.size() == 1);
    CHECK(s2.need[0].type == rrtype::a);
    CHECK(s2.need[0].name == "mx.good.test");

    SECTION("a confirmed name in GOODRDNS") {
        answer(ans, rrtype::a, "mx.good.test", {"192.0.2.5", "192.0.2.1"});
        auto s = t->classify(f, ans);
        REQUIRE(s.done);
        CHECK(s.need.empty());
        CHECK(s.done->group == 1);
        CHECK(s.done->policy == 0);
        CHECK(s.done->matched == "rdns mx.good.test");
        CHECK(or_none(s.done->rdns) == "mx.good.test");
        CHECK(!s.done->rdns_temporary);
        CHECK(!s.done->dnsbl_score);  // never looked up
    }

    SECTION("an unconfirmed name goes on to the DNSBLs") {
        answer(ans, rrtype::a, "mx.good.test", {"192.0.2.99"});
        auto s3 = t->classify(f, ans);
        REQUIRE(!s3.done);
        REQUIRE(s3.need.size() == 3);
        CHECK(asks(s3, rrtype::a, k_bl));
        CHECK(asks(s3, rrtype::a, k_bl2));
        CHECK(asks(s3, rrtype::a, k_wl));

        SECTION("score 2 + 1 reaches BLOCKLIST") {
            dnsbl(ans, "127.0.0.2", "127.0.0.3", nullptr);
            auto s = t->classify(f, ans);
            REQUIRE(s.done);
            CHECK(s.need.empty());
            CHECK(s.done->group == 2);
            CHECK(s.done->policy == 1);
            CHECK(s.done->matched == "dnsbl score 3");
            CHECK(s.done->dnsbl_score == 3);
            const std::vector<std::string> both{"bl.test", "bl2.test"};
            CHECK(s.done->listed == both);
            CHECK(!s.done->rdns);
        }
        SECTION("an answer outside bl2's filter leaves score 2, and NORDNS holds") {
            dnsbl(ans, "127.0.0.2", "127.0.0.4", nullptr);
            auto s = t->classify(f, ans);
            REQUIRE(s.done);
            CHECK(s.done->group == 3);
            CHECK(s.done->policy == 2);
            CHECK(s.done->matched == "rdns unconfirmed");
            CHECK(s.done->dnsbl_score == 2);
            const std::vector<std::string> one{"bl.test"};
            CHECK(s.done->listed == one);
        }
        SECTION("an allowlist listing lowers the score") {
            dnsbl(ans, "127.0.0.2", "127.0.0.3", "127.0.0.2");
            auto s = t->classify(f, ans);
            REQUIRE(s.done);
            CHECK(s.done->group == 3);
            CHECK(s.done->dnsbl_score == -2);
            CHECK(s.done->listed.size() == 3);
        }
    }
}

TEST_CASE("access: IPv6 clients confirm their name by AAAA", "[access]") {
    auto t = make_table();
    const facts f = client("2001:db8::1");
    policy::dns_answers ans;
    const std::string rev = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
    auto s1 = t->classify(f, ans);
    REQUIRE(s1.need.size() == 1);
    CHECK(asks(s1, rrtype::ptr, rev));
    answer_names(ans, rrtype::ptr, rev, dns_status::ok, {"V6.Good.Test."});
    auto s2 = t->classify(f, ans);
    REQUIRE(s2.need.size() == 1);
    CHECK(asks(s2, rrtype::aaaa, "v6.good.test"));
    answer(ans, rrtype::aaaa, "v6.good.test", {"2001:db8::1"});
    auto s3 = t->classify(f, ans);
    REQUIRE(s3.done);
    CHECK(s3.done->group == 1);
    CHECK(s3.done->matched == "rdns v6.good.test");
}

TEST_CASE("access: a PTR failure confirms nothing, NXDOMAIN is unconfirmed", "[access]") {
    auto t = make_table();
    const facts f = client("192.0.2.1");
    policy::dns_answers ans;
    const bool temporary = GENERATE(true, false);
    INFO("temporary: " << temporary);
    answer_names(ans, rrtype::ptr, k_ptr, temporary ? dns_status::temporary : dns_status::nxdomain);
    auto s1 = t->classify(f, ans);
    REQUIRE(!s1.done);
    REQUIRE(s1.need.size() == 3);  // the DNSBLs, not the PTR again
    CHECK(!asks(s1, rrtype::ptr, k_ptr));
    CHECK(asks(s1, rrtype::a, k_bl));
    dnsbl(ans, nullptr, nullptr, nullptr);
    auto s = t->classify(f, ans);
    REQUIRE(s.done);
    CHECK(!s.done->rdns);
    CHECK(s.done->dnsbl_score == 0);
    CHECK(s.done->listed.empty());
    CHECK(s.done->rdns_temporary == temporary);
    if (temporary) {
        CHECK(s.done->group == 5);
        CHECK(s.done->matched == "default");
    } else {
        CHECK(s.done->group == 3);
        CHECK(s.done->matched == "rdns unconfirmed");
    }
}

TEST_CASE("access: an SPF group holds only when the SPF result is known", "[access]") {
    auto t = make_table();
    facts f = client("192.0.2.1");
    policy::dns_answers ans;
    answer_names(ans, rrtype::ptr, k_ptr, dns_status::ok, {"mx.other.test"});
    answer(ans, rrtype::a, "mx.other.test", {"192.0.2.1"});
    dnsbl(ans, nullptr, nullptr, nullptr);

    auto connect = t->classify(f, ans);
    REQUIRE(connect.done);
    CHECK(connect.done->group == 5);
    CHECK(connect.done->matched == "default");
    CHECK(or_none(connect.done->rdns) == "mx.other.test");

    f.spf = policy::spf::result::fail;
    auto mail = t->classify(f, ans);
    REQUIRE(mail.done);
    CHECK(mail.need.empty());
    CHECK(mail.done->group == 4);
    CHECK(mail.done->policy == 1);
    CHECK(mail.done->matched == "spf fail");

    f.spf = policy::spf::result::softfail;
    auto soft = t->classify(f, ans);
    REQUIRE(soft.done);
    CHECK(soft.done->group == 5);
}

TEST_CASE("recipient access: the most precise entry wins") {
    std::vector<policy::recipient_entry> entries;
    auto add = [&](std::string match, bool reject) {
        policy::recipient_entry e;
        e.match = std::move(match);
        e.reject = reject;
        entries.push_back(std::move(e));
    };
    add("abuse@example.test", false);
    add("abuse@", true);
    add("example.test", true);
    add("*.example.test", false);
    add("*.deep.example.test", true);
    add("Other.Test.", false);
    auto t = policy::recipient_table::build(entries);
    REQUIRE(t);
    auto match_of = [&](std::string_view local, std::string_view domain) {
        const policy::recipient_entry* e = t.value().find(local, domain);
        return e ? e->match : std::string("<none>");
    };
    CHECK(match_of("abuse", "EXAMPLE.test.") == "abuse@example.test");
    CHECK(match_of("abuse", "elsewhere.test") == "abuse@");
    CHECK(match_of("bob", "example.test") == "example.test");
    CHECK(match_of("bob", "mx.example.test") == "*.example.test");
    CHECK(match_of("bob", "a.deep.example.test") == "*.deep.example.test");
    CHECK(match_of("bob", "deep.example.test") == "*.example.test");
    CHECK(match_of("bob", "other.test") == "Other.Test.");
    CHECK(match_of("bob", "unrelated.test") == "<none>");
    CHECK(match_of("Abuse", "elsewhere.test") == "<none>");  // local parts as written

    std::vector<policy::recipient_entry> dup(2);
    dup[0].match = "example.test";
    dup[1].match = "EXAMPLE.TEST";
    auto d = policy::recipient_table::build(dup);
    REQUIRE(!d);
    CHECK_THAT(d.error(), Contains("a second entry"));
    std::vector<policy::recipient_entry> bad(1);
    bad[0].match = "@example.test";
    CHECK(!policy::recipient_table::build(bad));
    bad[0].match = "user@exa mple.test";
    CHECK(!policy::recipient_table::build(bad));
}
