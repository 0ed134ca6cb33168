#include "bench/lib/json.hh"

#include <cmath>

namespace rw::bench {

nlohmann::ordered_json& json_writer::add(std::string_view key, nlohmann::ordered_json v) {
    if (_open.empty()) {
        _root = std::move(v);
        return _root;
    }
    nlohmann::ordered_json& parent = *_open.back();
    if (parent.is_array()) {
        parent.push_back(std::move(v));
        return parent.back();
    }
    auto& slot = parent[std::string(key)];
    slot = std::move(v);
    return slot;
}

json_writer& json_writer::begin_object(std::string_view k) {
    _open.push_back(&add(k, nlohmann::ordered_json::object()));
    return *this;
}
json_writer& json_writer::end_object() {
    if (!_open.empty())
        _open.pop_back();
    return *this;
}
json_writer& json_writer::begin_array(std::string_view k) {
    _open.push_back(&add(k, nlohmann::ordered_json::array()));
    return *this;
}
json_writer& json_writer::end_array() {
    if (!_open.empty())
        _open.pop_back();
    return *this;
}
json_writer& json_writer::value(std::string_view k, std::string_view v) {
    add(k, std::string(v));
    return *this;
}
json_writer& json_writer::value(std::string_view k, uint64_t v) {
    add(k, v);
    return *this;
}
json_writer& json_writer::value(std::string_view k, int64_t v) {
    add(k, v);
    return *this;
}
json_writer& json_writer::value(std::string_view k, double v) {
    add(k, std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr));
    return *this;
}
json_writer& json_writer::value(std::string_view k, bool v) {
    add(k, v);
    return *this;
}

const std::string& json_writer::str() const {
    _out = _root.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    return _out;
}

}  // namespace rw::bench
