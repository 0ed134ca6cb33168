// The mail log writes one JSON object per line, whatever bytes a client
// put into the fields.
#include "runtime/base/journal.hh"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {
std::vector<std::string> lines_of(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);)
        out.push_back(l);
    return out;
}
}  // namespace

TEST_CASE("journal: one JSON object per line, ts and event first, any bytes escaped", "[journal]") {
    const std::string path =
        (std::filesystem::temp_directory_path() / ("rw_journal_" + std::to_string(::getpid()) + ".jsonl")).string();
    std::filesystem::remove(path);
    int err = 0;
    REQUIRE(rw::journal::open(path, err));
    rw::journal::record("received", {{"mid", std::string_view("00000000000000AB")},
                                     {"helo", std::string_view("quote\" back\\ nl\n ctl\x01 bad\xff\xfe")},
                                     {"size", uint64_t(1234)},
                                     {"delta", int64_t(-5)},
                                     {"tls", true}});
    rw::journal::record("removed", {{"mid", std::string_view("00000000000000AB")}});
    rw::journal::close();
    auto ls = lines_of(path);
    std::filesystem::remove(path);
    REQUIRE(ls.size() == 2);
    REQUIRE(ls[0].rfind("{\"ts\":\"", 0) == 0);
    auto j = nlohmann::ordered_json::parse(ls[0]);  // throws if not JSON
    std::vector<std::string> keys;
    for (auto& [k, v] : j.items())
        keys.push_back(k);
    CHECK(keys == std::vector<std::string>{"ts", "event", "mid", "helo", "size", "delta", "tls"});
    CHECK(j["event"] == "received");
    CHECK(j["helo"] == "quote\" back\\ nl\n ctl\x01 bad\xef\xbf\xbd\xef\xbf\xbd");
    CHECK(j["size"] == 1234);
    CHECK(j["delta"] == -5);
    CHECK(j["tls"] == true);
    CHECK(nlohmann::json::parse(ls[1])["event"] == "removed");
    std::string esc;
    rw::journal::escape_json(esc, "a\"b");
    CHECK(esc == "a\\\"b");
}
