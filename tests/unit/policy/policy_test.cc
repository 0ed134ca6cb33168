// Tests for the pure policy decisions: relay control (policy/relay.hh) as an
// open-relay table, each case tried from an untrusted peer, a peer inside
// relay_networks (IPv4, IPv4-mapped IPv6, IPv6) and an authenticated client;
// CIDR parsing and matching (policy/cidr.hh); the per-IP rate limiter with
// injected time and its memory bound (policy/rate_limit.hh).
#include <arpa/inet.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "policy/cidr.hh"
#include "policy/facts.hh"
#include "policy/rate_limit.hh"
#include "policy/relay.hh"

using namespace rw::policy;
using Catch::Matchers::Contains;

namespace {

rw::net::address ip(const char* s) {
    auto a = rw::net::address::parse(s, 25);
    REQUIRE(a.has_value());
    return *a;
}

cidr net(const char* s) {
    auto c = cidr::parse(s);
    INFO(s);
    REQUIRE(c.has_value());
    return *c;
}

relay_policy test_policy() {
    relay_config cfg;
    cfg.accepted_domains = {"local.test", ".wild.test", "[192.0.2.99]", "[IPv6:2001:db8::99]", "Upper.Test."};
    cfg.relay_networks = {net("10.0.0.0/8"), net("2001:db8:1::/48")};
    REQUIRE(relay_policy::validate(cfg).empty());
    return relay_policy(cfg);
}

connection_facts untrusted() {
    connection_facts c;
    c.peer = ip("198.51.100.7");
    c.helo = "local.test";  // claims to be us: grants nothing
    c.tls = true;           // TLS alone grants nothing either
    return c;
}

// Every way a client may relay: its address, in each form, or AUTH.
std::vector<std::pair<std::string, connection_facts>> trusted_clients() {
    std::vector<std::pair<std::string, connection_facts>> out;
    connection_facts c;
    c.peer = ip("10.1.2.3");
    out.emplace_back("relay network (IPv4)", c);
    c.peer = ip("::ffff:10.1.2.3");
    out.emplace_back("relay network (IPv4-mapped IPv6)", c);
    c.peer = ip("2001:db8:1:ff::5");
    out.emplace_back("relay network (IPv6)", c);
    c = untrusted();
    c.authenticated = true;
    c.auth_user = "alice";
    out.emplace_back("authenticated", c);
    return out;
}

struct expect {
    action act;
    int code;
    const char* enhanced;
    bool relay;
};
constexpr expect local_ok{action::accept, 250, "2.1.5", false};
constexpr expect relay_ok{action::accept, 250, "2.1.5", true};
constexpr expect relay_denied{action::reject, 554, "5.7.1", false};
constexpr expect routing_denied{action::reject, 550, "5.7.1", false};
constexpr expect bad_domain{action::reject, 550, "5.1.2", false};
constexpr expect bad_local{action::reject, 550, "5.1.3", false};

struct relay_case {
    const char* name;
    recipient_facts rcpt;
    sender_facts sender;
    expect from_untrusted;
    expect from_trusted;
};

recipient_facts rcpt(std::string local, std::string domain) {
    recipient_facts r;
    r.local = std::move(local);
    r.domain = std::move(domain);
    return r;
}
recipient_facts with_relay_chars(recipient_facts r) {
    r.has_relay_chars = true;
    return r;
}
recipient_facts literal(recipient_facts r) {
    r.domain_literal = true;
    return r;
}
recipient_facts routed(recipient_facts r) {
    r.had_source_route = true;
    return r;
}
sender_facts from(std::string local, std::string domain) {
    sender_facts s;
    s.local = std::move(local);
    s.domain = std::move(domain);
    return s;
}
sender_facts null_sender() {
    sender_facts s;
    s.null_sender = true;
    return s;
}

const std::vector<relay_case>& open_relay_table() {
    static const std::vector<relay_case> cases = {
        // Plain cases.
        {"our domain", rcpt("user", "local.test"), from("a", "other.test"), local_ok, local_ok},
        {"other domain", rcpt("user", "other.test"), from("a", "other.test"), relay_denied, relay_ok},
        {"null sender to other domain", rcpt("user", "other.test"), null_sender(), relay_denied, relay_ok},
        // Routing characters in a local part of our domain: the host behind
        // us would relay them. Refused for every client: one that may relay
        // can name the final domain itself.
        {"percent hack user%other.test@local.test", with_relay_chars(rcpt("user%other.test", "local.test")),
         from("a", "other.test"), routing_denied, routing_denied},
        {"percent hack, parser flag not set", rcpt("user%other.test", "local.test"), from("a", "other.test"),
         routing_denied, routing_denied},
        {"bang path other.test!user@local.test", with_relay_chars(rcpt("other.test!user", "local.test")),
         from("a", "other.test"), routing_denied, routing_denied},
        {"quoted local \"user@other.test\"@local.test", with_relay_chars(rcpt("\"user@other.test\"", "local.test")),
         from("a", "other.test"), routing_denied, routing_denied},
        {"quoted local, dequoted by the parser", with_relay_chars(rcpt("user@other.test", "local.test")),
         from("a", "other.test"), routing_denied, routing_denied},
        {"parser flag alone (e.g. a quoted '@' it removed)", with_relay_chars(rcpt("user", "local.test")),
         from("a", "other.test"), routing_denied, routing_denied},
        {"percent hack to an address literal", with_relay_chars(rcpt("user%other.test", "[192.0.2.1]")),
         from("a", "other.test"), routing_denied, routing_denied},
        {"percent hack to our own literal (victim%elsewhere@[ours])",
         with_relay_chars(literal(rcpt("victim%elsewhere.example", "[192.0.2.99]"))), from("a", "other.test"),
         routing_denied, routing_denied},
        // Elsewhere the local part is the other domain's to interpret: it is
        // relayed verbatim, to that domain, and never routed by us.
        {"percent hack to another domain", with_relay_chars(rcpt("user%third.test", "other.test")),
         from("a", "other.test"), relay_denied, relay_ok},
        // Source routes are refused, whatever the final mailbox.
        {"source route @local.test:user@other.test", routed(rcpt("user", "other.test")), from("a", "other.test"),
         routing_denied, routing_denied},
        {"source route @other.test:user@local.test", routed(rcpt("user", "local.test")), from("a", "other.test"),
         routing_denied, routing_denied},
        // Address literals are refused unless configured as ours.
        {"IP literal user@[192.0.2.1]", literal(rcpt("user", "[192.0.2.1]")), from("a", "other.test"),
         routing_denied, routing_denied},
        {"IP literal without brackets", literal(rcpt("user", "192.0.2.1")), from("a", "other.test"), routing_denied,
         routing_denied},
        {"IP literal, parser flag not set", rcpt("user", "[192.0.2.1]"), from("a", "other.test"), routing_denied,
         routing_denied},
        {"IPv6 literal", literal(rcpt("user", "[IPv6:2001:db8::1]")), from("a", "other.test"), routing_denied,
         routing_denied},
        {"configured IP literal", literal(rcpt("user", "[192.0.2.99]")), from("a", "other.test"), local_ok, local_ok},
        {"configured IPv6 literal, other spelling", literal(rcpt("user", "[ipv6:2001:DB8:0:0::99]")),
         from("a", "other.test"), local_ok, local_ok},
        {"IPv4-mapped spelling of a configured IPv4 literal is not it", literal(rcpt("user", "[IPv6:::ffff:192.0.2.99]")),
         from("a", "other.test"), routing_denied, routing_denied},
        // MAIL FROM grants nothing.
        {"forged local sender to other domain", rcpt("victim", "other.test"), from("postmaster", "local.test"),
         relay_denied, relay_ok},
        {"forged local sender, upper case", rcpt("victim", "other.test"), from("postmaster", "LOCAL.TEST"),
         relay_denied, relay_ok},
        // Case and trailing dots.
        {"USER@LOCAL.TEST.", rcpt("USER", "LOCAL.TEST."), from("a", "other.test"), local_ok, local_ok},
        {"configured with case and dot", rcpt("user", "upper.test"), from("a", "other.test"), local_ok, local_ok},
        {"two trailing dots", rcpt("user", "local.test.."), from("a", "other.test"), bad_domain, bad_domain},
        {"OTHER.TEST.", rcpt("user", "OTHER.TEST."), from("a", "other.test"), relay_denied, relay_ok},
        // Subdomains and look-alikes.
        {"subdomain of an exact domain", rcpt("user", "sub.local.test"), from("a", "other.test"), relay_denied,
         relay_ok},
        {"subdomain under a wildcard", rcpt("user", "mx.wild.test"), from("a", "other.test"), local_ok, local_ok},
        {"deep subdomain under a wildcard", rcpt("user", "a.b.WILD.test."), from("a", "other.test"), local_ok,
         local_ok},
        {"the wildcard's own domain", rcpt("user", "wild.test"), from("a", "other.test"), relay_denied, relay_ok},
        {"look-alike prefix evillocal.test", rcpt("user", "evillocal.test"), from("a", "other.test"), relay_denied,
         relay_ok},
        {"look-alike notwild.test", rcpt("user", "notwild.test"), from("a", "other.test"), relay_denied, relay_ok},
        {"our domain as a prefix local.test.evil.test", rcpt("user", "local.test.evil.test"), from("a", "other.test"),
         relay_denied, relay_ok},
        // Garbage.
        {"empty domain", rcpt("user", ""), from("a", "other.test"), bad_domain, bad_domain},
        {"only a dot", rcpt("user", "."), from("a", "other.test"), bad_domain, bad_domain},
        {"space in domain", rcpt("user", "local .test"), from("a", "other.test"), bad_domain, bad_domain},
        {"empty label", rcpt("user", "local..test"), from("a", "other.test"), bad_domain, bad_domain},
        {"leading dot", rcpt("user", ".local.test"), from("a", "other.test"), bad_domain, bad_domain},
        {"hyphen at label edge", rcpt("user", "-local.test"), from("a", "other.test"), bad_domain, bad_domain},
        {"underscore", rcpt("user", "lo_cal.test"), from("a", "other.test"), bad_domain, bad_domain},
        {"'@' in domain", rcpt("user", "other.test@local.test"), from("a", "other.test"), bad_domain, bad_domain},
        {"'%' in domain", rcpt("user", "other.test%local.test"), from("a", "other.test"), bad_domain, bad_domain},
        {"bare IP without literal", rcpt("user", "192.0.2.1"), from("a", "other.test"), bad_domain, bad_domain},
        {"unbalanced bracket", rcpt("user", "[192.0.2.1"), from("a", "other.test"), bad_domain, bad_domain},
        {"bad IPv4 literal", literal(rcpt("user", "[192.0.2.256]")), from("a", "other.test"), bad_domain, bad_domain},
        {"bad IPv6 literal", literal(rcpt("user", "[IPv6:2001:db8::zz]")), from("a", "other.test"), bad_domain,
         bad_domain},
        {"NUL inside a configured literal", literal(rcpt("user", std::string("[192.0.2.99\0x]", 15))),
         from("a", "other.test"), bad_domain, bad_domain},
        {"NUL inside a domain", rcpt("user", std::string("local.test\0.evil.test", 21)), from("a", "other.test"),
         bad_domain, bad_domain},
        {"general address literal", literal(rcpt("user", "[x400:whatever]")), from("a", "other.test"), bad_domain,
         bad_domain},
        {"label of 64 characters", rcpt("user", std::string(64, 'a') + ".test"), from("a", "other.test"), bad_domain,
         bad_domain},
        {"invalid UTF-8", rcpt("user", "\xff\xfe.test"), from("a", "other.test"), bad_domain, bad_domain},
        {"CR LF injection", rcpt("user", "local.test\r\n250 ok"), from("a", "other.test"), bad_domain, bad_domain},
        {"UTF-8 domain not ours", rcpt("user", "b\xc3\xbc" "cher.test"), from("a", "other.test"), relay_denied,
         relay_ok},
        {"empty local part", rcpt("", "local.test"), from("a", "other.test"), bad_local, bad_local},
    };
    return cases;
}

void check(const verdict& v, const expect& e) {
    CHECK(v.act == e.act);
    CHECK(v.code == e.code);
    CHECK(v.enhanced == e.enhanced);
    CHECK(v.relay == e.relay);
    for (char c : v.reason) {
        INFO("reason: " << v.reason);
        REQUIRE(static_cast<unsigned char>(c) >= 0x20);
        REQUIRE(static_cast<unsigned char>(c) < 0x7f);
    }
}

}  // namespace

TEST_CASE("open relay table: untrusted peer", "[policy]") {
    relay_policy p = test_policy();
    for (const auto& c : open_relay_table()) {
        INFO("case: " << c.name);
        verdict v = p.check_recipient(untrusted(), c.sender, c.rcpt);
        INFO("reason: " << v.reason);
        check(v, c.from_untrusted);
    }
}

TEST_CASE("open relay table: trusted network and authenticated clients", "[policy]") {
    relay_policy p = test_policy();
    for (const auto& [who, conn] : trusted_clients()) {
        for (const auto& c : open_relay_table()) {
            INFO("client: " << who << ", case: " << c.name);
            verdict v = p.check_recipient(conn, c.sender, c.rcpt);
            INFO("reason: " << v.reason);
            check(v, c.from_trusted);
        }
    }
}

TEST_CASE("allow_domain_literals: literals are relayed like domains", "[policy]") {
    relay_config cfg;
    cfg.accepted_domains = {"local.test"};
    cfg.relay_networks = {net("10.0.0.0/8"), net("2001:db8:1::/48")};
    cfg.allow_domain_literals = true;
    relay_policy p(cfg);
    check(p.check_recipient(untrusted(), from("a", "b.test"), literal(rcpt("user", "[192.0.2.1]"))), relay_denied);
    for (const auto& [who, conn] : trusted_clients()) {
        INFO("client: " << who);
        check(p.check_recipient(conn, from("a", "b.test"), literal(rcpt("user", "[192.0.2.1]"))), relay_ok);
        check(p.check_recipient(conn, from("a", "b.test"), literal(rcpt("user", "[IPv6:2001:db8::1]"))), relay_ok);
        // The other rules stand.
        check(p.check_recipient(conn, from("a", "b.test"), routed(literal(rcpt("user", "[192.0.2.1]")))),
              routing_denied);
    }
}

TEST_CASE("routing refusals name the rule", "[policy]") {
    relay_policy p = test_policy();
    connection_facts t = trusted_clients().front().second;
    verdict v = p.check_recipient(t, from("a", "b.test"), literal(rcpt("victim%elsewhere.example", "[127.0.0.1]")));
    CHECK(v.code == 550);
    CHECK_THAT(v.reason, Contains("<victim%elsewhere.example@[127.0.0.1]>") && Contains("domain literals"));
    v = p.check_recipient(t, from("a", "b.test"), routed(rcpt("user", "other.test")));
    CHECK_THAT(v.reason, Contains("source routes are not accepted"));
    v = p.check_recipient(t, from("a", "b.test"), rcpt("a!b", "local.test"));
    CHECK_THAT(v.reason, Contains("routing characters"));
}

TEST_CASE("relay denial wording names the recipient", "[policy]") {
    relay_policy p = test_policy();
    verdict v = p.check_recipient(untrusted(), from("a", "local.test"), rcpt("user", "other.test"));
    CHECK(v.reason == "<user@other.test>: Relay access denied");

    v = p.check_recipient(untrusted(), from("a", "b.test"), with_relay_chars(rcpt("user%other.test", "local.test")));
    CHECK_THAT(v.reason, Contains("<user%other.test@local.test>") && Contains("routing characters"));

    v = p.check_recipient(untrusted(), from("a", "b.test"), rcpt("user", "local.test\r\n250 ok"));
    CHECK(v.reason.find('\r') == std::string::npos);
    CHECK(v.reason.find('\n') == std::string::npos);
    CHECK_THAT(v.reason, Contains("<user@local.test??250 ok>"));

    // A huge local part is cut in the echo.
    v = p.check_recipient(untrusted(), from("a", "b.test"), rcpt(std::string(10000, 'x'), "other.test"));
    CHECK(v.code == 554);
    CHECK(v.reason.size() < 500);

    v = p.check_recipient(untrusted(), from("a", "b.test"), rcpt("user", "local.test"));
    CHECK(v.reason == "Ok");
}

TEST_CASE("relay permission comes only from the peer address or AUTH", "[policy]") {
    relay_policy p = test_policy();
    connection_facts c = untrusted();
    c.auth_user = "alice";  // a name without authenticated=true is nothing
    CHECK_FALSE(p.may_relay(c));
    c.helo = "[10.1.2.3]";
    CHECK_FALSE(p.may_relay(c));
    c.peer = rw::net::address();  // unset address
    CHECK_FALSE(p.may_relay(c));
    c.peer = ip("11.0.0.1");
    CHECK_FALSE(p.may_relay(c));
    c.peer = ip("2001:db8:2::1");
    CHECK_FALSE(p.may_relay(c));
    c.peer = ip("::ffff:11.0.0.1");
    CHECK_FALSE(p.may_relay(c));
    c.peer = ip("10.255.255.255");
    CHECK(p.may_relay(c));
    c.peer = ip("11.0.0.1");
    c.authenticated = true;
    CHECK(p.may_relay(c));
}

TEST_CASE("a policy with no relay networks and no domains relays for no one", "[policy]") {
    relay_policy p(relay_config{});
    connection_facts c;
    c.peer = ip("127.0.0.1");
    verdict v = p.check_recipient(c, sender_facts{}, rcpt("user", "local.test"));
    CHECK(v.code == 554);
    CHECK_FALSE(p.is_local_domain("local.test"));
}

TEST_CASE("catch-all relay networks are refused and never grant relaying", "[policy]") {
    relay_config cfg;
    cfg.accepted_domains = {"local.test", "bad domain", "", ".[192.0.2.1]"};
    cfg.relay_networks = {net("0.0.0.0/0"), net("::ffff:0:0/96"), net("::/0"), net("10.0.0.0/8")};
    auto problems = relay_policy::validate(cfg);
    REQUIRE(problems.size() == 6);
    CHECK_THAT(problems[0], Contains("accepted_domains[1]") && Contains("bad domain"));
    CHECK_THAT(problems[1], Contains("accepted_domains[2]") && Contains("empty"));
    CHECK_THAT(problems[2], Contains("accepted_domains[3]") && Contains("no subdomains"));
    CHECK_THAT(problems[3], Contains("relay_networks[0]") && Contains("0.0.0.0/0") && Contains("open relay"));
    CHECK_THAT(problems[4], Contains("relay_networks[1]") && Contains("0.0.0.0/0"));
    CHECK_THAT(problems[5], Contains("relay_networks[2]") && Contains("::/0"));

    relay_policy p(cfg);  // used anyway: the bad entries are left out
    for (const char* peer : {"198.51.100.7", "::ffff:198.51.100.7", "2001:db8:5::1"}) {
        connection_facts c;
        c.peer = ip(peer);
        INFO(peer);
        CHECK_FALSE(p.may_relay(c));
        CHECK(p.check_recipient(c, sender_facts{}, rcpt("user", "other.test")).code == 554);
    }
    connection_facts c;
    c.peer = ip("10.0.0.1");
    CHECK(p.check_recipient(c, sender_facts{}, rcpt("user", "other.test")).relay);
}

TEST_CASE("is_local_domain", "[policy]") {
    relay_policy p = test_policy();
    CHECK(p.is_local_domain("local.test"));
    CHECK(p.is_local_domain("LOCAL.test."));
    CHECK(p.is_local_domain("x.wild.test"));
    CHECK(p.is_local_domain("[192.0.2.99]"));
    CHECK(p.is_local_domain("[IPv6:2001:db8:0::99]"));
    CHECK_FALSE(p.is_local_domain("wild.test"));
    CHECK_FALSE(p.is_local_domain("sub.local.test"));
    CHECK_FALSE(p.is_local_domain("[192.0.2.1]"));
    CHECK_FALSE(p.is_local_domain("192.0.2.99"));
    CHECK_FALSE(p.is_local_domain(""));
    CHECK_FALSE(p.is_local_domain("."));
    CHECK_FALSE(p.is_local_domain("local.test.."));
    CHECK_FALSE(p.is_local_domain("user@local.test"));
}

TEST_CASE("cidr: IPv4", "[policy]") {
    cidr n = net("10.0.0.0/8");
    CHECK_FALSE(n.is_v6());
    CHECK(n.prefix_len() == 8);
    CHECK(n.to_string() == "10.0.0.0/8");
    CHECK(n.contains(ip("10.0.0.0")));
    CHECK(n.contains(ip("10.255.255.255")));
    CHECK_FALSE(n.contains(ip("11.0.0.0")));
    CHECK_FALSE(n.contains(ip("9.255.255.255")));

    cidr half = net("192.0.2.0/25");
    CHECK(half.contains(ip("192.0.2.127")));
    CHECK_FALSE(half.contains(ip("192.0.2.128")));

    cidr host = net("192.0.2.7");
    CHECK(host.prefix_len() == 32);
    CHECK(host.contains(ip("192.0.2.7")));
    CHECK_FALSE(host.contains(ip("192.0.2.6")));
    CHECK(net("192.0.2.7/32") == host);

    cidr all = net("0.0.0.0/0");
    CHECK(all.is_catch_all());
    CHECK(all.contains(ip("203.0.113.1")));
    CHECK_FALSE(all.contains(ip("2001:db8::1")));
}

TEST_CASE("cidr: IPv6", "[policy]") {
    cidr n = net("2001:DB8:0::/32");
    CHECK(n.is_v6());
    CHECK(n.to_string() == "2001:db8::/32");
    CHECK(n.contains(ip("2001:db8::1")));
    CHECK(n.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
    CHECK_FALSE(n.contains(ip("2001:db9::")));
    CHECK_FALSE(n.contains(ip("10.0.0.1")));

    cidr odd = net("2001:db8::/33");
    CHECK(odd.contains(ip("2001:db8:7fff::1")));
    CHECK_FALSE(odd.contains(ip("2001:db8:8000::1")));

    CHECK(net("[2001:db8::]/32") == n);
    cidr lo = net("::1");
    CHECK(lo.prefix_len() == 128);
    CHECK(lo.contains(ip("::1")));
    CHECK_FALSE(lo.contains(ip("::2")));
    CHECK_FALSE(lo.contains(ip("127.0.0.1")));

    cidr all = net("::/0");
    CHECK(all.is_catch_all());
    CHECK(all.contains(ip("2001:db8::1")));
    // IPv4-mapped peers are IPv4: a native IPv6 network never holds them.
    CHECK_FALSE(all.contains(ip("::ffff:192.0.2.1")));
    CHECK_FALSE(all.contains(ip("192.0.2.1")));
}

TEST_CASE("cidr: IPv4-mapped IPv6 is IPv4 on both sides", "[policy]") {
    cidr v4 = net("192.0.2.0/24");
    CHECK(v4.contains(ip("::ffff:192.0.2.5")));
    CHECK_FALSE(v4.contains(ip("::ffff:192.0.3.5")));
    // Not mapped: the IPv4-compatible (::a.b.c.d) and NAT64 forms are IPv6.
    CHECK_FALSE(v4.contains(ip("::192.0.2.5")));
    CHECK_FALSE(v4.contains(ip("64:ff9b::192.0.2.5")));

    cidr mapped = net("::ffff:192.0.2.0/120");
    CHECK(mapped == v4);
    CHECK_FALSE(mapped.is_v6());
    CHECK(mapped.to_string() == "192.0.2.0/24");
    CHECK(mapped.contains(ip("192.0.2.200")));
    CHECK(net("::ffff:0:0/96").is_catch_all());
    CHECK_FALSE(net("::ffff:0:0/96").is_v6());
    // A network wider than the mapped block stays IPv6 and holds no IPv4 peer.
    cidr wide = net("::/80");
    CHECK(wide.is_v6());
    CHECK_FALSE(wide.contains(ip("::ffff:192.0.2.5")));

    auto h = cidr::host(ip("::ffff:192.0.2.5"));
    REQUIRE(h.has_value());
    CHECK(h->to_string() == "192.0.2.5/32");
    CHECK_FALSE(cidr::host(rw::net::address()).has_value());
}

TEST_CASE("cidr: bad input", "[policy]") {
    for (const char* bad : {"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/-1", "10.0.0.0/+8",
                            "10.0.0.0/08", "10.0.0.0/8 ", " 10.0.0.0/8", "10.0.0/8", "10.0.0.0.0/8", "256.0.0.0/8",
                            "010.0.0.0/8", "fe80::1%eth0", "fe80::%eth0/64", "example.test/8", "10.0.0.0/8/8",
                            "10.0.0.0/1000", "10.0.0.0/0x8", "2001:db8::/32x", "[2001:db8::/32", "2001:db8:::/48",
                            "10.0.0.1/8", "2001:db8::1/32", "192.0.2.128/24"}) {
        INFO("input: \"" << bad << "\"");
        std::string why;
        CHECK_FALSE(cidr::parse(bad, why).has_value());
        CHECK_FALSE(why.empty());
    }
    std::string why;
    CHECK_FALSE(cidr::parse("10.0.0.1/8", why));
    CHECK_THAT(why, Contains("host bits") && Contains("10.0.0.0/8"));
    CHECK_FALSE(cidr::parse(std::string(1000, '1'), why));
    CHECK_FALSE(cidr::parse(std::string_view("10.0.0.0\0/8", 11), why));
}

TEST_CASE("rate limiter: burst, then refill with injected time", "[policy]") {
    using namespace std::chrono_literals;
    rate_limiter rl(1.0, 3.0, 100);
    auto t0 = rate_limiter::clock::time_point{} + 1000s;
    auto a = ip("192.0.2.1");
    CHECK(rl.allow(a, t0));
    CHECK(rl.allow(a, t0));
    CHECK(rl.allow(a, t0));
    CHECK_FALSE(rl.allow(a, t0));
    CHECK_FALSE(rl.allow(a, t0 + 500ms));  // half a token back
    CHECK(rl.allow(a, t0 + 1000ms));       // one whole token
    CHECK_FALSE(rl.allow(a, t0 + 1000ms));
    // A long pause refills only up to the burst.
    CHECK(rl.allow(a, t0 + 100s));
    CHECK(rl.allow(a, t0 + 100s));
    CHECK(rl.allow(a, t0 + 100s));
    CHECK_FALSE(rl.allow(a, t0 + 100s));
    // Time going backwards gives nothing back and does not break later refills.
    CHECK_FALSE(rl.allow(a, t0));
    CHECK(rl.allow(a, t0 + 101s));
    CHECK(rl.size() == 1);
}

TEST_CASE("rate limiter: costs", "[policy]") {
    using namespace std::chrono_literals;
    rate_limiter rl(0.0, 3.0, 100);  // no refill
    auto t = rate_limiter::clock::time_point{};
    auto a = ip("192.0.2.1");
    CHECK_FALSE(rl.allow(a, t, 3.5));  // above the burst: never, and takes nothing
    CHECK(rl.allow(a, t, 2.5));
    CHECK_FALSE(rl.allow(a, t, 1.0));  // 0.5 left
    CHECK(rl.allow(a, t, 0.5));
    CHECK(rl.allow(a, t, 0.0));
    CHECK_FALSE(rl.allow(a, t + 1h, 0.1));
}

TEST_CASE("rate limiter: keys per client", "[policy]") {
    auto t = rate_limiter::clock::time_point{};
    rate_limiter rl(0.0, 1.0, 100);
    CHECK(rl.allow(ip("192.0.2.1"), t));
    CHECK_FALSE(rl.allow(ip("192.0.2.1"), t));
    CHECK(rl.allow(ip("192.0.2.2"), t));  // its own bucket
    // The same client over a dual-stack listener is the same client.
    CHECK_FALSE(rl.allow(ip("::ffff:192.0.2.1"), t));
    // IPv6 by /64: one host's addresses share a bucket, the next /64 does not.
    CHECK(rl.allow(ip("2001:db8::1"), t));
    CHECK_FALSE(rl.allow(ip("2001:db8::ffff:1"), t));
    CHECK(rl.allow(ip("2001:db8:0:1::1"), t));
    CHECK(rl.size() == 4);

    rate_limiter per_address(0.0, 1.0, 100, 128);
    CHECK(per_address.allow(ip("2001:db8::1"), t));
    CHECK(per_address.allow(ip("2001:db8::2"), t));
    CHECK_FALSE(per_address.allow(ip("2001:db8::2"), t));
}

TEST_CASE("rate limiter: forgets the least recently seen client at the cap", "[policy]") {
    auto t = rate_limiter::clock::time_point{};
    rate_limiter rl(0.0, 1.0, 3);
    auto a = ip("192.0.2.1"), b = ip("192.0.2.2"), c = ip("192.0.2.3"), d = ip("192.0.2.4");
    CHECK(rl.allow(a, t));
    CHECK(rl.allow(b, t));
    CHECK(rl.allow(c, t));
    CHECK_FALSE(rl.allow(a, t));  // a is now the most recently seen; b the least
    CHECK(rl.allow(d, t));        // b is forgotten
    CHECK(rl.size() == 3);
    CHECK_FALSE(rl.allow(a, t));  // still remembered: still empty
    CHECK_FALSE(rl.allow(c, t));
    CHECK_FALSE(rl.allow(d, t));
    CHECK(rl.allow(b, t));  // forgotten, so a fresh bucket (the documented trade)
}

TEST_CASE("rate limiter: memory stays bounded under a million distinct clients", "[policy]") {
    using namespace std::chrono_literals;
    constexpr size_t cap = 100000;
    rate_limiter rl(1.0, 2.0, cap);
    auto t = rate_limiter::clock::time_point{};
    for (uint32_t i = 0; i < 1000000; ++i) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(0x0A000000u + i);  // 10.0.0.0 upwards
        auto who = rw::net::address::from_sockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof sin);
        REQUIRE(rl.allow(who, t + std::chrono::microseconds(i)));
        if (i % 1000 == 0)
            REQUIRE(rl.size() <= cap);
    }
    CHECK(rl.size() == cap);
    // The same with one IPv6 /64 each.
    for (uint32_t i = 0; i < 1000000; ++i) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr.s6_addr[0] = 0x20;
        sin6.sin6_addr.s6_addr[1] = 0x01;
        std::memcpy(&sin6.sin6_addr.s6_addr[4], &i, sizeof i);
        sin6.sin6_addr.s6_addr[15] = 1;
        auto who = rw::net::address::from_sockaddr(reinterpret_cast<sockaddr*>(&sin6), sizeof sin6);
        REQUIRE(rl.allow(who, t + 1s));
    }
    CHECK(rl.size() == cap);
    CHECK(rl.max_entries() == cap);
}
