// Received: counting (see trace_counter.hh).
#include "mta/smtp/trace_counter.hh"

namespace rw::mta::smtp {

namespace {
constexpr std::string_view k_name = "received:";  // field names compare without case (RFC 5322 1.2.2)

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c + 32) : c; }
}  // namespace

void trace_counter::feed(std::string_view chunk) {
    size_t i = 0;
    const size_t n = chunk.size();
    while (i < n && _st != state::body) {
        const char c = chunk[i];
        switch (_st) {
        case state::bol:
            if (c == '\r') {
                _st = state::cr;
                ++i;
            } else if (c == '\n') {
                // A bare LF cannot reach here from the DATA decoder; treat it
                // as a line end so counting never runs away.
                ++i;
            } else {
                _matched = 0;
                _st = state::name;
            }
            break;
        case state::cr:
            if (c == '\n') {
                _st = state::body;
                ++i;
            } else {
                _st = state::rest;
            }
            break;
        case state::name:
            // RFC 5322 3.6.7: "Received:" with no space before the colon.
            // (Obsolete syntax allows white space there, 4.5.3; it is not
            // worth a loop's escape hatch to count those too.)
            if (lower(c) == k_name[_matched]) {
                ++i;
                if (++_matched == k_name.size()) {
                    ++_received;
                    _st = state::rest;
                }
            } else {
                _st = state::rest;
            }
            break;
        case state::rest: {
            // Skip to the end of the line.
            const size_t nl = chunk.find('\n', i);
            if (nl == std::string_view::npos) {
                i = n;
            } else {
                i = nl + 1;
                _st = state::bol;
            }
            break;
        }
        case state::body: break;
        }
    }
}

}  // namespace rw::mta::smtp
