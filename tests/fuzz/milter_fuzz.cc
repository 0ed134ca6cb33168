// Fuzz target: the milter protocol as a milter answers it
// (mta/scan/milter.hh): packet framing, SMFIR_REPLYCODE texts and the
// end-of-message modifications. The input is a stream of bytes from a
// milter. Checked, besides never reading out of bounds: taking packets
// from the whole input and from the input fed a few bytes at a time gives
// the same packets and the same verdict on the stream (bad framing or
// not); re-framing the packets gives the bytes consumed back; a reply
// code is always 4xx or 5xx with its class in the verdict; a modification
// accepted leaves field names and values that can be stored (no bare line
// break, no control characters).
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/milter as a ctest.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mta/scan/milter.hh"
#include "runtime/base/assert.hh"

using namespace rw::mta::scan::milter;

namespace {

struct outcome {
    std::vector<packet> packets;
    bool bad = false;
    size_t consumed = 0;
};

outcome take_all(std::string_view in, size_t step) {
    outcome o;
    std::string buf;
    size_t pos = 0;
    while (!o.bad) {
        bool bad = false;
        auto p = take_packet(buf, bad);
        if (bad) {
            o.bad = true;
            break;
        }
        if (p) {
            o.consumed += 5 + p->data.size();
            o.packets.push_back(std::move(*p));
            continue;
        }
        if (pos >= in.size())
            break;
        size_t n = step == 0 ? in.size() - pos : std::min(step, in.size() - pos);
        buf.append(in.substr(pos, n));
        pos += n;
    }
    return o;
}

bool storable(std::string_view v) {
    for (size_t i = 0; i < v.size(); ++i) {
        const auto c = uint8_t(v[i]);
        if (c == '\n' && (i == 0 || v[i - 1] != '\r' || i + 1 >= v.size() || (v[i + 1] != ' ' && v[i + 1] != '\t')))
            return false;
        if (c == '\r' && (i + 1 >= v.size() || v[i + 1] != '\n'))
            return false;
        if (c < 0x20 && c != '\t' && c != '\r' && c != '\n')
            return false;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    outcome whole = take_all(in, 0);
    outcome bytes = take_all(in, 3);
    RW_ASSERT(whole.bad == bytes.bad, "framing verdict depends on the split");
    RW_ASSERT(whole.packets.size() == bytes.packets.size(), "packet count depends on the split");
    std::string reframed;
    for (size_t i = 0; i < whole.packets.size(); ++i) {
        RW_ASSERT(whole.packets[i].code == bytes.packets[i].code && whole.packets[i].data == bytes.packets[i].data,
                  "packet {} depends on the split", i);
        append_packet(reframed, whole.packets[i].code, whole.packets[i].data);
    }
    RW_ASSERT(reframed == in.substr(0, whole.consumed), "re-framing differs from the bytes consumed");

    edits e;
    for (const auto& p : whole.packets) {
        if (p.code == rep::replycode) {
            if (auto a = parse_replycode(p.data)) {
                RW_ASSERT(a->code >= 400 && a->code <= 599, "reply code {}", a->code);
                RW_ASSERT((a->code / 100 == 4) == (a->v == verdict::tempfail), "verdict of {}", a->code);
                RW_ASSERT(a->enhanced.empty() || a->enhanced[0] == char('0' + a->code / 100), "enhanced class");
                RW_ASSERT(!a->text.empty(), "empty text");
            }
            continue;
        }
        const size_t before_add = e.add.size(), before_chg = e.changes.size();
        if (!apply_modification(p, e))
            continue;
        for (size_t i = before_add; i < e.add.size(); ++i) {
            RW_ASSERT(!e.add[i].first.empty() && e.add[i].first.find(':') == std::string::npos, "field name");
            RW_ASSERT(storable(e.add[i].second), "added value");
        }
        for (size_t i = before_chg; i < e.changes.size(); ++i) {
            RW_ASSERT(e.changes[i].index >= 1, "change index");
            RW_ASSERT(storable(e.changes[i].value), "changed value");
        }
    }
    return 0;
}
