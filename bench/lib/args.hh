// Command-line values of the load tools. Each parser returns the value or
// a line that names the option, the allowed form and what was given:
//   --rate: expected N/s, N/m or N/h (N may end in k or m), got "fast"
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/result.hh"

namespace rw::bench {

// "500k/h", "139/s", "2.5k/m" -> messages per second.
result<double, std::string> parse_rate(std::string_view opt, std::string_view v);
// "512", "4k", "64K", "1m" -> bytes (k = 1024).
result<uint64_t, std::string> parse_size(std::string_view opt, std::string_view v);
// "30s", "500ms", "2m", "1h", "10" (seconds).
result<std::chrono::milliseconds, std::string> parse_duration(std::string_view opt, std::string_view v);
// "1000", "10k", "1m" -> a count (k = 1000).
result<uint64_t, std::string> parse_count(std::string_view opt, std::string_view v);
// A fraction: "0.1", "10%".
result<double, std::string> parse_fraction(std::string_view opt, std::string_view v);

struct size_share {
    uint64_t bytes = 0;
    unsigned weight = 0;
};
// "1k:50,4k:30,64k:15,1m:5" or just "4k" (weight 1).
result<std::vector<size_share>, std::string> parse_mix(std::string_view opt, std::string_view v);

}  // namespace rw::bench
