// The integrity mark the load generator puts in every message and the sink
// checks:
//
//   X-Ringway-Load: id=6c1f09-0-17; size=4021; digest=8a0c6f2d9b1e4473; sent=1795000000123456
//
// id is unique per message across runs (run token, core, sequence); size and
// digest (bench/lib/digest.hh) cover the body: every byte after the blank
// line that ends the header, as the receiving server sees it after
// dot-unstuffing. A relay may add header lines (Received) above the mark,
// but must not touch the body. sent (optional) is when the generator sent
// the message, in microseconds of the system clock, so a sink on the same
// machine measures end-to-end latency.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rw::bench {

constexpr std::string_view k_mark_header = "X-Ringway-Load";

struct mark {
    std::string id;
    uint64_t size = 0;
    uint64_t digest = 0;
    int64_t sent_us = 0;  // 0: absent
};

// The header line, with CRLF.
std::string format_mark(const mark& m);
// Finds and parses the mark in a header block (lines ending in CRLF or LF,
// up to and without the blank line). nullopt when absent or malformed.
std::optional<mark> find_mark(std::string_view header_block);

}  // namespace rw::bench
