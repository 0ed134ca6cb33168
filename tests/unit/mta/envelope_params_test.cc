// Tests for the typed envelope parameters (mta/envelope_params.hh): the
// encoding round-trips, malformed bytes are refused, the text form of older
// spools is read with whole-word keywords, NOTIFY defaults.
#include "mta/envelope_params.hh"

#include <catch2/catch.hpp>

#include "mail/codec.hh"
#include "mta/smtp/command.hh"

using namespace rw::mta;

namespace {
envelope_params sample() {
    envelope_params p;
    p.body = body_type::eight_bit_mime;
    p.smtputf8 = true;
    p.ret = dsn_ret::hdrs;
    p.envid = "QQ+Z id";
    p.rcpts = {{k_notify_success | k_notify_failure, "rfc822;a@b.example"}, {}, {k_notify_never, ""}};
    return p;
}
}  // namespace

TEST_CASE("envelope parameters round-trip through their encoding", "[params]") {
    const envelope_params p = sample();
    const std::string e = encode_params(p);
    auto d = decode_params(e, 3);
    REQUIRE(d);
    CHECK(*d == p);
    // Fewer recipients encoded than the envelope has: defaults for the rest.
    envelope_params one;
    one.rcpts = {{k_notify_delay, ""}};
    auto d2 = decode_params(encode_params(one), 3);
    REQUIRE(d2);
    REQUIRE(d2->rcpts.size() == 3);
    CHECK(d2->rcpts[0].notify == k_notify_delay);
    CHECK(d2->rcpts[2] == rcpt_params{});
}

TEST_CASE("an ENVID that spells a keyword is only an ENVID", "[params]") {
    // Delivery once searched the text for "SMTPUTF8", so ENVID=SMTPUTF8 made
    // a message look like it needed SMTPUTF8.
    auto c = rw::mta::smtp::parse_command("MAIL FROM:<a@b.example> ENVID=SMTPUTF8 BODY=8BITMIME", false);
    REQUIRE(c);
    envelope_params p;
    p.body = c.value().body;
    p.smtputf8 = c.value().smtputf8;
    p.envid = rw::mail::xtext_decode_lenient(c.value().envid);
    p.rcpts.resize(1);
    auto d = decode_params(encode_params(p), 1);
    REQUIRE(d);
    CHECK_FALSE(d->smtputf8);
    CHECK(d->envid == "SMTPUTF8");
    CHECK(d->body == body_type::eight_bit_mime);
    // And in the text form of older spools, too.
    auto t = decode_params("ENVID=SMTPUTF8 RET=FULL\nNOTIFY=SUCCESS", 1);
    REQUIRE(t);
    CHECK_FALSE(t->smtputf8);
    CHECK(t->envid == "SMTPUTF8");
    CHECK(t->ret == dsn_ret::full);
    CHECK(t->rcpts[0].notify == k_notify_success);
}

TEST_CASE("the text form of older spools is read", "[params]") {
    auto p = decode_params("RET=FULL ENVID=QQ+2BZ BODY=8BITMIME SMTPUTF8\nNOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b\n\n"
                           "NOTIFY=NEVER",
                           3);
    REQUIRE(p);
    CHECK(p->ret == dsn_ret::full);
    CHECK(p->envid == "QQ+Z");
    CHECK(p->body == body_type::eight_bit_mime);
    CHECK(p->smtputf8);
    REQUIRE(p->rcpts.size() == 3);
    CHECK(p->rcpts[0].notify == (k_notify_success | k_notify_failure));
    CHECK(p->rcpts[0].orcpt == "rfc822;a@b");
    CHECK(p->rcpts[1].notify == 0);
    CHECK(p->rcpts[2].notify == k_notify_never);
    // What DSNs were queued with, and what a spool with no parameters holds.
    for (std::string_view s : {"\n", ""}) {
        auto q = decode_params(s, 1);
        REQUIRE(q);
        CHECK(q->ret == dsn_ret::unspecified);
        CHECK(q->rcpts[0].notify == 0);
    }
}

TEST_CASE("malformed encodings are refused, never read past their end", "[params]") {
    const std::string e = encode_params(sample());
    for (size_t n = 1; n < e.size(); ++n)
        CHECK_FALSE(decode_params(std::string_view(e).substr(0, n), 3));  // truncated
    CHECK_FALSE(decode_params(e + "x", 3));                               // bytes left over
    CHECK_FALSE(decode_params(e, 2));                                     // more recipients than the envelope
    std::string bad_ret = e;
    bad_ret[1] = char(3 << 3);
    CHECK_FALSE(decode_params(bad_ret, 3));
    std::string bad_notify = e;
    bad_notify[2 + 1 + sample().envid.size() + 4] = char(k_notify_never | k_notify_success);
    CHECK_FALSE(decode_params(bad_notify, 3));
    CHECK_FALSE(decode_params(std::string("\x03\x00", 2), 1));  // a version we do not know
}

TEST_CASE("a next hop makes version 2, which round-trips and is checked", "[params]") {
    envelope_params p = sample();
    CHECK(encode_params(p)[0] == 1);  // none: version 1, as older spools hold
    p.next_hop = "[2001:db8::1]:2525";
    const std::string e = encode_params(p);
    CHECK(e[0] == 2);
    auto d = decode_params(e, 3);
    REQUIRE(d);
    CHECK(*d == p);
    for (size_t n = 1; n < e.size(); ++n)
        CHECK_FALSE(decode_params(std::string_view(e).substr(0, n), 3));
    CHECK_FALSE(decode_params(e + "x", 3));
    std::string empty_hop = encode_params(sample());
    empty_hop[0] = 2;
    CHECK_FALSE(decode_params(empty_hop + std::string(1, '\0'), 3));  // version 2 says there is one
    CHECK(describe_params(p).find("NEXT-HOP=[2001:db8::1]:2525") != std::string::npos);
}

TEST_CASE("a pool makes version 3, with or without a next hop", "[params]") {
    envelope_params p = sample();
    p.pool = "bulk-1";
    std::string e = encode_params(p);
    CHECK(e[0] == 3);
    auto d = decode_params(e, 3);
    REQUIRE(d);
    CHECK(*d == p);
    CHECK(d->next_hop.empty());
    p.next_hop = "relay.example.test:2525";
    e = encode_params(p);
    CHECK(e[0] == 3);
    d = decode_params(e, 3);
    REQUIRE(d);
    CHECK(*d == p);
    for (size_t n = 1; n < e.size(); ++n)
        CHECK_FALSE(decode_params(std::string_view(e).substr(0, n), 3));
    CHECK_FALSE(decode_params(e + "x", 3));
    // An empty pool in version 3 is malformed: version 3 says there is one.
    std::string empty_pool = encode_params(sample());
    empty_pool[0] = 3;
    CHECK_FALSE(decode_params(empty_pool + std::string(2, '\0'), 3));
    CHECK(describe_params(p).find("POOL=bulk-1") != std::string::npos);
}

TEST_CASE("REQUIRETLS is a flag bit, in every version", "[params]") {
    envelope_params p = sample();
    p.requiretls = true;
    std::string e = encode_params(p);
    CHECK(e[0] == 1);
    auto d = decode_params(e, 3);
    REQUIRE(d);
    CHECK(d->requiretls);
    CHECK(*d == p);
    CHECK(describe_params(p).find("REQUIRETLS") != std::string::npos);
    auto c = rw::mta::smtp::parse_command("MAIL FROM:<a@b.example> REQUIRETLS", false);
    REQUIRE(c);
    CHECK(c.value().requiretls);
    CHECK_FALSE(rw::mta::smtp::parse_command("MAIL FROM:<a@b.example> REQUIRETLS=YES", false));
    e[1] = char(uint8_t(e[1]) | 0x40);  // an unknown flag is still malformed
    CHECK_FALSE(decode_params(e, 3));
}

TEST_CASE("the text form names every parameter, xtext-encoded", "[params]") {
    CHECK(describe_params(sample()) ==
          "BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2BZ+20id\nNOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.example\n\n"
          "NOTIFY=NEVER");
    CHECK(rw::mail::xtext_decode_lenient(rw::mail::xtext_encode("a+b=c d\x01")) == "a+b=c d\x01");
}

TEST_CASE("NOTIFY: absent means failures and delays", "[params]") {
    CHECK(notify_wants(0, k_notify_failure));
    CHECK(notify_wants(0, k_notify_delay));
    CHECK_FALSE(notify_wants(0, k_notify_success));
    CHECK(notify_wants(k_notify_success | k_notify_failure, k_notify_success));
    CHECK_FALSE(notify_wants(k_notify_never, k_notify_failure));
    CHECK_FALSE(notify_wants(k_notify_delay, k_notify_failure));
}
