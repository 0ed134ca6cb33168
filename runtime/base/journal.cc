// JSON-lines mail log writer.
#include "runtime/base/journal.hh"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace rw {

namespace {
std::atomic<int> g_fd{-1};
}

bool journal::open(const std::string& path, int& errno_out) {
    close();
    if (path.empty())
        return true;
    int fd = path == "-" ? ::dup(1) : ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        errno_out = errno;
        return false;
    }
    g_fd.store(fd);
    return true;
}

void journal::close() {
    int fd = g_fd.exchange(-1);
    if (fd >= 0)
        ::close(fd);
}

bool journal::enabled() { return g_fd.load(std::memory_order_relaxed) >= 0; }

namespace {
// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), or 0.
size_t utf8_length(std::string_view s, size_t i) {
    const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
    const auto cont = [&](size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
    const unsigned char c = b(0);
    if (c >= 0xC2 && c <= 0xDF)
        return cont(1) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (!cont(1) || !cont(2))
            return 0;
        if ((c == 0xE0 && b(1) < 0xA0) || (c == 0xED && b(1) > 0x9F))
            return 0;  // overlong; surrogate
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (!cont(1) || !cont(2) || !cont(3))
            return 0;
        if ((c == 0xF0 && b(1) < 0x90) || (c == 0xF4 && b(1) > 0x8F))
            return 0;  // overlong; above U+10FFFF
        return 4;
    }
    return 0;
}
}  // namespace

// Fields hold what clients and peers sent, which need not be UTF-8: a byte
// that does not start a well-formed sequence becomes U+FFFD, so every line
// is JSON any reader accepts (the unit test parses it with nlohmann::json).
void journal::escape_json(std::string& out, std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            if (size_t n = utf8_length(s, i)) {
                out.append(s.substr(i, n));
                i += n;
            } else {
                out += "\\ufffd";
                ++i;
            }
            continue;
        }
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char b[8];
                std::snprintf(b, sizeof b, "\\u%04x", c);
                out += b;
            } else {
                out += char(c);
            }
        }
        ++i;
    }
}

void journal::record(std::string_view event, std::initializer_list<field> fields) noexcept {
    int fd = g_fd.load(std::memory_order_relaxed);
    if (fd < 0)
        return;
    try {
        using namespace std::chrono;
        auto now = system_clock::now();
        auto secs = time_point_cast<seconds>(now);
        auto us = duration_cast<microseconds>(now - secs).count();
        std::time_t t = system_clock::to_time_t(secs);
        std::tm tm{};
        gmtime_r(&t, &tm);
        char ts[96];
        std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                      tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, long(us));
        std::string line;
        line.reserve(256);
        line += "{\"ts\":\"";
        line += ts;
        line += "\",\"event\":\"";
        escape_json(line, event);
        line += '"';
        for (const auto& f : fields) {
            line += ",\"";
            escape_json(line, f.key);
            line += "\":";
            if (auto* s = std::get_if<std::string_view>(&f.val)) {
                line += '"';
                escape_json(line, *s);
                line += '"';
            } else if (auto* i = std::get_if<int64_t>(&f.val)) {
                line += std::to_string(*i);
            } else if (auto* u = std::get_if<uint64_t>(&f.val)) {
                line += std::to_string(*u);
            } else {
                line += std::get<bool>(f.val) ? "true" : "false";
            }
        }
        line += "}\n";
        const char* p = line.data();
        size_t left = line.size();
        while (left > 0) {
            ssize_t w = ::write(fd, p, left);
            if (w <= 0)
                break;
            p += w;
            left -= size_t(w);
        }
    } catch (...) {
    }
}

}  // namespace rw
