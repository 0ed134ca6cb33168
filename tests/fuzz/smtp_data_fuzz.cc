// Fuzz target: arbitrary bytes as the octets after "354", through the DATA
// decoder. Input layout: byte 0 picks the line limit (1000, or a small one
// so long lines are cheap to reach), bytes 1..8 seed the chunking, the rest
// is the stream. Three ways must agree exactly (output, status, consumed,
// error, counters):
//   1. the whole stream in one feed;
//   2. the stream in random pieces (0..16 octets, sometimes larger);
//   3. a line-based model written from RFC 5321 4.5.2 / 4.1.1.4 alone.
// Plus invariants: an accepted message holds only CRLF line ends, no NUL,
// no line over the limit; `done` is only ever reported right after a
// CRLF.CRLF (or ".\r\n" at the start).
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/smtp_data as a ctest.
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "mta/smtp/data_decoder.hh"
#include "runtime/base/assert.hh"

using namespace rw::mta::smtp;
using st = data_decoder::status;

namespace {

enum class cause { none, bare_cr, bare_lf, nul, too_long };

struct outcome {
    std::string out;
    st status = st::more;
    size_t consumed = 0;
    cause why = cause::none;
    std::optional<reply> error;
    uint64_t bytes_out = 0;
    uint64_t bytes_in = 0;
};

cause classify(const std::optional<reply>& e) {
    if (!e)
        return cause::none;
    if (e->code == 552) {
        RW_ASSERT(e->enhanced == "5.3.4");
        return cause::too_long;
    }
    RW_ASSERT(e->code == 554 && e->enhanced == "5.6.0", "reply {} {}", e->code, e->enhanced);
    if (e->text.find("<CR>") != std::string::npos)
        return cause::bare_cr;
    if (e->text.find("<LF>") != std::string::npos)
        return cause::bare_lf;
    RW_ASSERT(e->text.find("NUL") != std::string::npos);
    return cause::nul;
}

// Line-based model: split at CRLF only; "." alone ends; a leading "." is
// deleted; in a line's content every CR, LF and NUL fails the message, and
// content octets are appended while not failed and within max_line - 2.
outcome model(std::string_view in, size_t max_line) {
    const size_t max_text = max_line - 2;
    outcome o;
    auto fail = [&](cause c) {
        if (o.why == cause::none)
            o.why = c;
    };
    auto content = [&](std::string_view c) {
        size_t count = 0;
        for (const char ch : c) {
            const bool special = ch == '\r' || ch == '\n' || ch == '\0';
            if (special)
                fail(ch == '\r' ? cause::bare_cr : ch == '\n' ? cause::bare_lf : cause::nul);
            ++count;
            if (count > max_text)
                fail(cause::too_long);
            else if (!special && o.why == cause::none)
                o.out.push_back(ch);
        }
    };
    size_t pos = 0;
    for (;;) {
        const size_t e = in.find("\r\n", pos);
        if (e == std::string_view::npos) {
            // A partial last line: a pending "." or ".\r" decides nothing
            // yet; a trailing CR is pending too.
            std::string_view line = in.substr(pos);
            if (line != "." && line != ".\r") {
                if (!line.empty() && line.front() == '.')
                    line.remove_prefix(1);
                if (!line.empty() && line.back() == '\r')
                    line.remove_suffix(1);
                content(line);
            }
            o.status = o.why == cause::none ? st::more : st::failed;
            o.consumed = in.size();
            return o;
        }
        std::string_view line = in.substr(pos, e - pos);
        if (line == ".") {
            o.status = st::done;
            o.consumed = e + 2;
            return o;
        }
        if (!line.empty() && line.front() == '.')
            line.remove_prefix(1);
        content(line);
        if (o.why == cause::none)
            o.out += "\r\n";
        pos = e + 2;
    }
}

void finish(outcome& o, const data_decoder& d) {
    o.error = d.error();
    o.why = classify(o.error);
    o.bytes_out = d.bytes_out();
    o.bytes_in = d.bytes_in();
}

outcome whole(std::string_view in, size_t max_line) {
    data_decoder d(max_line);
    outcome o;
    auto s = d.feed(in, o.out);
    o.status = s.st;
    o.consumed = s.consumed;
    finish(o, d);
    // After done nothing more is consumed.
    if (s.st == st::done) {
        std::string scratch;
        auto again = d.feed(in.substr(s.consumed), scratch);
        RW_ASSERT(again.st == st::done && again.consumed == 0 && scratch.empty());
    }
    return o;
}

outcome pieces(std::string_view in, size_t max_line, uint64_t seed) {
    std::mt19937_64 rng(seed);
    data_decoder d(max_line);
    outcome o;
    size_t pos = 0;
    for (;;) {
        size_t n = rng() % 17;
        if (rng() % 16 == 0)
            n = rng() % 4096;
        n = std::min(n, in.size() - pos);
        auto s = d.feed(in.substr(pos, n), o.out);
        RW_ASSERT(s.consumed <= n);
        RW_ASSERT(s.st == st::done || s.consumed == n, "partial consumption without done");
        RW_ASSERT((s.st == st::failed) == (d.failed() && !d.done()));
        o.status = s.st;
        o.consumed += s.consumed;
        pos += n;
        if (s.st == st::done || pos == in.size())
            break;
    }
    finish(o, d);
    return o;
}

void same(const outcome& a, const outcome& b, const char* what) {
    RW_ASSERT(a.status == b.status, "{}: status {} vs {}", what, int(a.status), int(b.status));
    RW_ASSERT(a.consumed == b.consumed, "{}: consumed {} vs {}", what, a.consumed, b.consumed);
    RW_ASSERT(a.why == b.why, "{}: cause {} vs {}", what, int(a.why), int(b.why));
    RW_ASSERT(a.out == b.out, "{}: output differs", what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    size_t max_line = k_max_text_line;
    uint64_t seed = 1;
    if (size >= 9) {
        max_line = (data[0] & 0x80) ? k_max_text_line : 3 + data[0] % 40;
        std::memcpy(&seed, data + 1, 8);
        data += 9;
        size -= 9;
    }
    const std::string_view in(reinterpret_cast<const char*>(data), size);

    const outcome w = whole(in, max_line);
    const outcome p = pieces(in, max_line, seed);
    const outcome m = model(in, max_line);
    same(w, p, "whole vs pieces");
    RW_ASSERT(w.bytes_out == p.bytes_out && w.bytes_in == p.bytes_in);
    RW_ASSERT(w.error.has_value() == p.error.has_value());
    if (w.error)
        RW_ASSERT(w.error->text == p.error->text);
    same(w, m, "decoder vs model");

    RW_ASSERT(w.bytes_out == w.out.size());
    RW_ASSERT(w.bytes_in == w.consumed);
    RW_ASSERT(w.consumed <= in.size());
    if (w.status == st::done) {
        const std::string_view used = in.substr(0, w.consumed);
        RW_ASSERT(used == ".\r\n" || (used.size() >= 5 && used.substr(used.size() - 5) == "\r\n.\r\n"),
                  "done without CRLF.CRLF");
    } else {
        RW_ASSERT(w.consumed == in.size());
    }
    if (w.why == cause::none) {
        // Every CR is followed by LF and every LF preceded by CR; no NUL; lines within the limit.
        size_t line = 0;
        for (size_t i = 0; i < w.out.size(); ++i) {
            const char c = w.out[i];
            RW_ASSERT(c != '\0');
            if (c == '\r') {
                RW_ASSERT(i + 1 < w.out.size() && w.out[i + 1] == '\n', "bare CR in output");
            } else if (c == '\n') {
                RW_ASSERT(i > 0 && w.out[i - 1] == '\r', "bare LF in output");
                RW_ASSERT(line - 1 + 2 <= max_line, "line over the limit in output");
                line = 0;
                continue;
            }
            ++line;
        }
        if (w.status == st::done)
            RW_ASSERT(w.out.empty() || (w.out.size() >= 2 && w.out.substr(w.out.size() - 2) == "\r\n"));
    }
    return 0;
}
