// What ringway-sink writes: the running counts (--stats, read while the
// cores run) and the final report, merged from every core after the engine
// has stopped (bench/sink/report.cc).
#pragma once

#include <string>
#include <vector>

#include "runtime/base/result.hh"

namespace rw::bench::sink {

// The load generator's accepted log: "<id> <rcpt> <rcpt>..." per line, as
// sorted unique "id\0rcpt" keys. The error names the file and line.
result<std::vector<std::string>, std::string> load_expect(const std::string& path);

// {"received":N,...,"max_concurrent_connections":N}: safe while cores run.
std::string stats_json();

struct report {
    std::string json;  // one line, no newline
    std::string text;  // the --text summary, several lines
};
// Merges every core's state. Only after engine::run has returned.
// expected: from load_expect, or null without --expect.
report make_report(std::vector<std::string>* expected, double elapsed_s);

}  // namespace rw::bench::sink
