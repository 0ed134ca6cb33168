// Received: counting and the subject (see trace_counter.hh).
#include "mta/smtp/trace_counter.hh"

namespace rw::mta::smtp {

namespace {
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
                // as a line end so the scan never runs away.
                ++i;
            } else if (c == ' ' || c == '\t') {
                // A folded continuation of the field before (RFC 5322 2.2.3:
                // unfolding removes the CRLF, the white space stays).
                _st = _in_subject ? state::value : state::rest;
            } else {
                _name_len = 0;
                _in_subject = false;
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
            if (c == ':') {
                ++i;
                const std::string_view name(_name, _name_len);
                if (name == "received") {
                    ++_received;
                    _st = state::rest;
                } else if (name == "subject" && !_have_subject) {
                    _have_subject = _in_subject = true;
                    _st = state::value;
                } else {
                    _st = state::rest;
                }
            } else if (c == '\r' || c == '\n' || _name_len == k_max_name) {
                _st = state::rest;
            } else {
                _name[_name_len++] = lower(c);
                ++i;
            }
            break;
        case state::value: {
            const size_t end = chunk.find_first_of("\r\n", i);
            const size_t stop = end == std::string_view::npos ? n : end;
            for (; i < stop; ++i)
                if (_subject.size() < k_max_subject && !(_subject.empty() && (chunk[i] == ' ' || chunk[i] == '\t')))
                    _subject += chunk[i];
            if (end != std::string_view::npos)
                _st = state::rest;  // the CR LF
            break;
        }
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
