// A small JSON writer for the tools' machine-readable reports.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rw::bench {

class json_writer {
public:
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
    json_writer& value(std::string_view key, double v);
    json_writer& value(std::string_view key, bool v);
    const std::string& str() const { return _out; }

    static void escape(std::string& out, std::string_view s);

private:
    void key(std::string_view k);
    std::string _out;
    bool _first = true;
};

}  // namespace rw::bench
