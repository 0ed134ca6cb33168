#include "bench/lib/mark.hh"

#include <fmt/format.h>

#include <charconv>
#include <strings.h>

#include "bench/lib/digest.hh"

namespace rw::bench {

std::string format_mark(const mark& m) {
    if (m.sent_us)
        return fmt::format("{}: id={}; size={}; digest={}; sent={}\r\n", k_mark_header, m.id, m.size,
                           to_hex(m.digest), m.sent_us);
    return fmt::format("{}: id={}; size={}; digest={}\r\n", k_mark_header, m.id, m.size, to_hex(m.digest));
}

namespace {
std::optional<mark> parse_value(std::string_view v) {
    mark m;
    bool have_id = false, have_size = false, have_digest = false;
    while (!v.empty()) {
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
            v.remove_prefix(1);
        size_t semi = v.find(';');
        std::string_view item = v.substr(0, semi);
        v = semi == std::string_view::npos ? std::string_view() : v.substr(semi + 1);
        while (!item.empty() && (item.back() == ' ' || item.back() == '\t'))
            item.remove_suffix(1);
        size_t eq = item.find('=');
        if (eq == std::string_view::npos)
            return std::nullopt;
        std::string_view key = item.substr(0, eq), val = item.substr(eq + 1);
        if (key == "id" && !val.empty() && val.size() <= 128) {
            m.id = std::string(val);
            have_id = true;
        } else if (key == "size") {
            auto [p, ec] = std::from_chars(val.data(), val.data() + val.size(), m.size);
            if (ec != std::errc() || p != val.data() + val.size())
                return std::nullopt;
            have_size = true;
        } else if (key == "digest") {
            auto [p, ec] = std::from_chars(val.data(), val.data() + val.size(), m.digest, 16);
            if (ec != std::errc() || p != val.data() + val.size() || val.size() != 16)
                return std::nullopt;
            have_digest = true;
        } else if (key == "sent") {
            auto [p, ec] = std::from_chars(val.data(), val.data() + val.size(), m.sent_us);
            if (ec != std::errc() || p != val.data() + val.size() || m.sent_us < 0)
                return std::nullopt;
        }
    }
    if (!have_id || !have_size || !have_digest)
        return std::nullopt;
    return m;
}
}  // namespace

std::optional<mark> find_mark(std::string_view h) {
    size_t pos = 0;
    while (pos < h.size()) {
        size_t nl = h.find('\n', pos);
        std::string_view line = h.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? h.size() : nl + 1;
        if (!line.empty() && line.back() == '\r')
            line.remove_suffix(1);
        if (line.size() > k_mark_header.size() && line[k_mark_header.size()] == ':' &&
            strncasecmp(line.data(), k_mark_header.data(), k_mark_header.size()) == 0)
            return parse_value(line.substr(k_mark_header.size() + 1));
    }
    return std::nullopt;
}

}  // namespace rw::bench
