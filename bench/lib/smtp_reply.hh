// SMTP replies as a client reads them (RFC 5321 4.2): one or more lines
// "ddd-text" ending with "ddd text" (or a bare "ddd"), all with one code.
// Anything else is garbage: the load generator reports it as such instead
// of guessing.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace rw::bench {

struct smtp_reply {
    int code = 0;
    std::string enhanced;            // "2.0.0" when the first line has one, else ""
    std::vector<std::string> lines;  // the text of each line, after "ddd-" / "ddd "
    std::string first_text() const { return lines.empty() ? std::string() : lines.front(); }
};

enum class reply_status {
    incomplete,  // need more bytes
    complete,    // out holds a reply; consumed says how many bytes it took
    garbage,     // not an SMTP reply (bad line, mixed codes, line too long)
};

constexpr size_t k_max_reply_line = 4096;
constexpr size_t k_max_reply_lines = 256;

// Parses one reply from the start of buf.
reply_status parse_reply(std::string_view buf, smtp_reply& out, size_t& consumed);

// Upper-cased EHLO keywords with their parameters ("SIZE 10240000").
std::vector<std::string> ehlo_keywords(const smtp_reply& r);
bool has_keyword(const std::vector<std::string>& kws, std::string_view kw);

}  // namespace rw::bench
