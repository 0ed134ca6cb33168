#include "bench/lib/json.hh"

#include <fmt/format.h>

#include <cmath>

namespace rw::bench {

// Like journal::escape_json, except that bytes >= 0x7f are escaped too:
// these reports quote replies from arbitrary servers, which need not be
// UTF-8, and their readers (Python's json, jq) reject invalid UTF-8.
void json_writer::escape(std::string& out, std::string_view s) {
    out += '"';
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20 || c >= 0x7f)
                out += fmt::format("\\u{:04x}", c);  // bytes, not code points: replies are ASCII
            else
                out += ch;
        }
    }
    out += '"';
}

void json_writer::key(std::string_view k) {
    if (!_first)
        _out += ',';
    _first = false;
    if (!k.empty()) {
        escape(_out, k);
        _out += ':';
    }
}

json_writer& json_writer::begin_object(std::string_view k) {
    key(k);
    _out += '{';
    _first = true;
    return *this;
}
json_writer& json_writer::end_object() {
    _out += '}';
    _first = false;
    return *this;
}
json_writer& json_writer::begin_array(std::string_view k) {
    key(k);
    _out += '[';
    _first = true;
    return *this;
}
json_writer& json_writer::end_array() {
    _out += ']';
    _first = false;
    return *this;
}
json_writer& json_writer::value(std::string_view k, std::string_view v) {
    key(k);
    escape(_out, v);
    return *this;
}
json_writer& json_writer::value(std::string_view k, uint64_t v) {
    key(k);
    _out += fmt::format("{}", v);
    return *this;
}
json_writer& json_writer::value(std::string_view k, int64_t v) {
    key(k);
    _out += fmt::format("{}", v);
    return *this;
}
json_writer& json_writer::value(std::string_view k, double v) {
    key(k);
    _out += std::isfinite(v) ? fmt::format("{:.6g}", v) : std::string("null");
    return *this;
}
json_writer& json_writer::value(std::string_view k, bool v) {
    key(k);
    _out += v ? "true" : "false";
    return *this;
}

}  // namespace rw::bench
