// The tools' machine-readable reports: a fluent writer over nlohmann::json
// (ordered, so keys come out in the order written). Text that is not UTF-8
// (replies quoted from arbitrary servers) comes out with U+FFFD in place of
// the bad bytes, so Python's json and jq read every report.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace rw::bench {

class json_writer {
public:
    // key is ignored inside an array (and for the outermost value).
    json_writer& begin_object(std::string_view key = {});
    json_writer& end_object();
    json_writer& begin_array(std::string_view key = {});
    json_writer& end_array();
    json_writer& value(std::string_view key, std::string_view v);
    json_writer& value(std::string_view key, const char* v) { return value(key, std::string_view(v)); }
    json_writer& value(std::string_view key, uint64_t v);
    json_writer& value(std::string_view key, int64_t v);
    json_writer& value(std::string_view key, int v) { return value(key, int64_t(v)); }
    json_writer& value(std::string_view key, unsigned v) { return value(key, uint64_t(v)); }
    json_writer& value(std::string_view key, double v);  // not finite: null
    json_writer& value(std::string_view key, bool v);
    // The document, compact, on one line.
    const std::string& str() const;

private:
    nlohmann::ordered_json& add(std::string_view key, nlohmann::ordered_json v);
    nlohmann::ordered_json _root;
    // The open objects and arrays, innermost last. Only the innermost one
    // grows, so pointers to the outer ones stay valid.
    std::vector<nlohmann::ordered_json*> _open;
    mutable std::string _out;
};

}  // namespace rw::bench
