// The milter protocol's pure parts (mta/scan/milter.hh): framing, reply
// codes and the modifications a milter sends at the end of a message,
// envelope and body ones included, with what a broken or hostile milter
// might send refused.
#include <catch2/catch.hpp>

#include <string>

#include "mta/scan/milter.hh"

using namespace rw::mta::scan::milter;

namespace {
packet pk(char code, std::string data) { return packet{code, std::move(data)}; }
std::string z(std::string_view s) { return std::string(s) + '\0'; }
}  // namespace

TEST_CASE("milter: framing round-trips and refuses absurd lengths") {
    std::string wire;
    append_packet(wire, rep::addheader, z("X-A") + z("1"));
    append_packet(wire, rep::cont, "");
    bool bad = false;
    auto a = take_packet(wire, bad);
    REQUIRE(a);
    CHECK((a->code == rep::addheader && a->data == z("X-A") + z("1")));
    auto b = take_packet(wire, bad);
    REQUIRE(b);
    CHECK((b->code == rep::cont && b->data.empty() && wire.empty() && !bad));
    std::string huge("\x7f\xff\xff\xff" "c", 5);
    CHECK(!take_packet(huge, bad));
    CHECK(bad);
}

TEST_CASE("milter: envelope changes") {
    edits e;
    REQUIRE(apply_modification(pk(rep::chgfrom, z("<bounces@example.test>")), e));
    CHECK(e.from == "bounces@example.test");
    REQUIRE(apply_modification(pk(rep::chgfrom, z("<>") + z("SIZE=10")), e));  // args taken, not applied
    CHECK(e.from == "");
    REQUIRE(apply_modification(pk(rep::addrcpt, z("<new@example.test>")), e));
    REQUIRE(apply_modification(pk(rep::addrcpt_par, z("plain@example.test") + z("NOTIFY=NEVER")), e));
    REQUIRE(apply_modification(pk(rep::delrcpt, z("<old@example.test>")), e));
    CHECK(e.add_rcpts == std::vector<std::string>{"new@example.test", "plain@example.test"});
    CHECK(e.del_rcpts == std::vector<std::string>{"old@example.test"});
    CHECK(e.count() == 3);
    // Not addresses, or not terminated.
    CHECK(!apply_modification(pk(rep::addrcpt, z("<>")), e));
    CHECK(!apply_modification(pk(rep::addrcpt, z("two words@example.test")), e));
    CHECK(!apply_modification(pk(rep::addrcpt, z("a@b\r\nRCPT TO:<x@y>")), e));
    CHECK(!apply_modification(pk(rep::addrcpt, "unterminated@example.test"), e));
    CHECK(!apply_modification(pk(rep::delrcpt, z("nodomain")), e));
    CHECK(!apply_modification(pk(rep::addrcpt, z("a@b") + z("x") + z("y")), e));
    CHECK(!apply_modification(pk(rep::chgfrom, z(std::string(400, 'a') + "@example.test")), e));
    CHECK(e.add_rcpts.size() == 2);
}

TEST_CASE("milter: a replaced body adds up, in CRLF, within its limit") {
    edits e;
    REQUIRE(apply_modification(pk(rep::replbody, "line one\nline two\r\n"), e, 100));
    REQUIRE(apply_modification(pk(rep::replbody, "split\r"), e, 100));
    REQUIRE(apply_modification(pk(rep::replbody, "\nend\n"), e, 100));
    CHECK(*e.body == "line one\r\nline two\r\nsplit\r\nend\r\n");
    CHECK(!apply_modification(pk(rep::replbody, std::string(100, 'x')), e, 100));
    edits empty;
    REQUIRE(apply_modification(pk(rep::replbody, ""), empty, 100));
    CHECK((empty.body && empty.body->empty()));  // an empty body is a body
}
