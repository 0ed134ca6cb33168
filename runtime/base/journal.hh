// The mail log: a JSON-lines journal of reception and delivery events, kept
// apart from the diagnostic log so operators and tests can parse it. Every
// line is one event: {"ts":"…","event":"…", key: value, …}. Lines are written
// with a single write(2) on an O_APPEND descriptor, so lines from different
// cores never interleave. One journal per process, opened at start-up.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace rw {

class journal {
public:
    using value = std::variant<std::string_view, int64_t, uint64_t, bool>;
    struct field {
        std::string_view key;
        value val;
    };

    // Opens (creates, appends to) the journal; "-" means stdout, "" disables.
    // Returns false and sets errno_out when the file cannot be opened.
    static bool open(const std::string& path, int& errno_out);
    static void close();
    static bool enabled();

    static void record(std::string_view event, std::initializer_list<field> fields) noexcept;

    // Appends s to out as a JSON string body (no quotes), escaping as needed.
    static void escape_json(std::string& out, std::string_view s);
};

}  // namespace rw
