// Pattern sets (policy/patterns.hh): one Hyperscan database for a rule
// set's patterns, matched while the data streams in pieces.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "policy/patterns.hh"

using namespace rw::policy::patterns;

namespace {

std::vector<unsigned> scan(const std::shared_ptr<const database>& db, std::string_view data, size_t step) {
    scanner s(db);
    for (size_t i = 0; i < data.size(); i += step)
        s.feed(data.substr(i, step));
    s.finish();
    REQUIRE(s.ok());
    return s.matched();
}

}  // namespace

TEST_CASE("patterns: one pass over pieces finds every pattern, once, across piece boundaries", "[patterns]") {
    auto db = database::compile({{"viagra", 1},
                                 {"\\bwire\\s+transfer\\b", 2},
                                 {"invoice[_ -]?\\d{4,}", 3},
                                 {"^Subject: urgent", 4, false},  // case matters here
                                 {"bitcoin", 3},                   // ids may be shared
                                 {"end of text$", 5}});
    if (!db)
        FAIL(db.error());
    REQUIRE(db.value()->patterns() == 6);
    REQUIRE(db.value()->bytes() > 0);
    const std::string text = "Subject: urgent\r\nPlease make a WIRE   transfer for Invoice-123456 today.\r\n"
                             "VIAGRA viagra viagra\r\nend of text";
    for (size_t step : {1, 2, 5, 64, 4096}) {
        INFO("step " << step);
        auto m = scan(db.value(), text, step);
        std::sort(m.begin(), m.end());
        REQUIRE(m == std::vector<unsigned>{1, 2, 3, 4, 5});
    }
    REQUIRE(scan(db.value(), "subject: URGENT\r\nnothing else", 7).empty());  // caseless off for id 4
    REQUIRE(scan(db.value(), "end of text, and more", 3).empty());            // $: only at the end
}

TEST_CASE("patterns: UTF-8, empty sets, bad patterns", "[patterns]") {
    auto db = database::compile({{"caf\xC3\xA9\\s+cr\xC3\xA8me", 7}, {"\\x{20AC}\\d+", 8}});
    if (!db)
        FAIL(db.error());
    auto m = scan(db.value(), "Un CAF\xC3\xA9 CR\xC3\xA8ME pour \xE2\x82\xAC" "5", 3);  // case folds ASCII only
    std::sort(m.begin(), m.end());
    REQUIRE(m == std::vector<unsigned>{7, 8});

    auto none = database::compile({});
    REQUIRE(none);
    REQUIRE(scan(none.value(), "anything", 1).empty());

    auto bad = database::compile({{"fine", 1}, {"a{2,1}", 2}});
    REQUIRE(!bad);
    REQUIRE_THAT(bad.error(), Catch::Contains("pattern 1 (\"a{2,1}\")"));
    auto backref = database::compile({{"(a)\\1", 1}});
    REQUIRE(!backref);  // Hyperscan has no back-references: refused, never silently wrong
}

TEST_CASE("patterns: many patterns in one database", "[patterns]") {
    std::vector<pattern> set;
    for (unsigned i = 0; i < 5000; ++i)
        set.push_back({"token" + std::to_string(i) + "\\b", i});
    auto db = database::compile(set);
    if (!db)
        FAIL(db.error());
    std::string text(64 * 1024, ' ');
    text.replace(100, 9, "token4999");
    text.replace(60000, 7, "token17");
    text.replace(30000, 8, "token170");  // token17 then a digit: \b fails for 17, 170 matches
    auto m = scan(db.value(), text, 16384);
    std::sort(m.begin(), m.end());
    REQUIRE(m == std::vector<unsigned>{17, 170, 4999});
}
