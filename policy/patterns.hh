// Pattern sets for content rules: every pattern of a rule set compiled
// into one Hyperscan database and matched in one pass while a message
// streams in, whatever the number of patterns, instead of one regular
// expression at a time over the whole text.
//
// A database is immutable and shared by every core; each scan keeps its
// own stream state and uses its thread's scratch space.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/result.hh"

namespace rw::policy::patterns {

struct pattern {
    std::string expr;        // a Hyperscan regular expression (PCRE syntax, no back-references)
    unsigned id = 0;         // reported on a match (several patterns may share one)
    bool caseless = true;    // ASCII letters only (as \w and \b are ASCII: Hyperscan's UCP mode has no \b)
    bool utf8 = true;        // expr and the data are UTF-8 ('.' and classes take whole characters)
};

// Whether one pattern would compile, and why not ("unmatched parentheses
// at index 3"): a quick syntax check for configuration loading, without
// building a database.
std::optional<std::string> check(const pattern& p);

class database {
public:
    // Compiles every pattern for streaming. The error names the first
    // pattern that does not compile and why ("pattern 12 (\"a{2,1}\"):
    // ..."). An empty set compiles to a database that matches nothing.
    static result<std::shared_ptr<const database>, std::string> compile(const std::vector<pattern>& set);

    ~database();
    database(const database&) = delete;
    database& operator=(const database&) = delete;

    size_t patterns() const noexcept { return _count; }
    size_t bytes() const noexcept;         // the compiled database
    size_t stream_bytes() const noexcept;  // state per scan

private:
    database() = default;
    friend class scanner;
    void* _db = nullptr;  // hs_database_t
    size_t _count = 0;
    uint64_t _serial = 0;  // unique per compiled database, for the threads' scratch
};

// One message's scan: bytes fed in pieces split anywhere (a match may span
// them); the ids matched, each once, in the order first matched.
class scanner {
public:
    explicit scanner(std::shared_ptr<const database> db);
    ~scanner();
    scanner(const scanner&) = delete;
    scanner& operator=(const scanner&) = delete;

    void feed(std::string_view bytes);
    // The data ended (patterns anchored at the end, like "x$", match now).
    void finish();
    const std::vector<unsigned>& matched() const noexcept { return _matched; }
    // Whether the scan could run (a database without patterns, or a
    // failure of the matcher, scans nothing).
    bool ok() const noexcept { return _ok; }

    // For the match callback.
    void on_match(unsigned id);

private:
    std::shared_ptr<const database> _db;
    void* _stream = nullptr;  // hs_stream_t
    std::vector<unsigned> _matched;
    std::vector<uint64_t> _seen;  // bitmap of ids matched, for ids below 64 * size
    bool _ok = true;
};

}  // namespace rw::policy::patterns
