// Fuzz target: the streaming MIME parser (mail/mime.hh), its field
// decoders, the attachment collector over its parts
// (policy/attachments.hh: libmagic, libarchive), and content rules over
// the message (policy/rules.hh: body, header and attachment tests), whose
// decision must not depend on how the message is split. The input is a message, parsed fed whole and fed in pieces
// (the size from its first byte). Checked, besides never reading out of
// bounds: both feedings give the same part tree, events and decoded
// bodies; the limits hold (parts, depth); every part begun ends once; the
// decoded bytes stay within twice the input (quoted-printable turns a bare
// LF into CRLF); the field decoders take every header value.
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/mime as a ctest.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mail/mime.hh"
#include "policy/attachments.hh"
#include "policy/rules.hh"
#include "runtime/base/assert.hh"

using namespace rw;
using namespace rw::mail::mime;

namespace {

struct recorder : handler {
    std::string log;
    std::vector<int> open;  // begun, not ended
    uint64_t decoded = 0;
    void part_begin(const part& p) override {
        log += "b" + std::to_string(p.index) + p.type + "|" + p.filename + "|";
        open.push_back(int(p.index));
    }
    void part_data(const part& p, std::string_view d) override {
        RW_ASSERT(!d.empty(), "empty data");
        RW_ASSERT(!open.empty() && open.back() == int(p.index), "data for a part not innermost");
        decoded += d.size();
        log += "d" + std::to_string(p.index) + ":";
        log.append(d);
    }
    void part_end(const part& p) override {
        RW_ASSERT(!open.empty() && open.back() == int(p.index), "end of a part not innermost");
        open.pop_back();
        log += "e" + std::to_string(p.index);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const limits l{.max_depth = 8, .max_parts = 64, .max_header_bytes = 4096};
    recorder whole, split;
    std::vector<part> whole_parts;
    uint32_t whole_defects = 0;
    {
        parser p(whole, l);
        p.feed(in);
        p.finish();
        whole_parts = p.parts();
        whole_defects = p.defects();
    }
    {
        parser p(split, l);
        const size_t step = 1 + (size ? data[0] % 13 : 0);
        for (size_t i = 0; i < in.size(); i += step)
            p.feed(in.substr(i, step));
        p.finish();
        RW_ASSERT(p.parts().size() == whole_parts.size(), "split feeding changed the part count");
        RW_ASSERT(p.defects() == whole_defects, "split feeding changed the defects");
    }
    RW_ASSERT(whole.log == split.log, "split feeding changed the events or bodies");
    RW_ASSERT(whole.open.empty() && split.open.empty(), "a part never ended");
    RW_ASSERT(whole_parts.size() <= l.max_parts, "more parts than the limit");
    RW_ASSERT(whole.decoded <= 2 * size + 16, "decoded more than the input can hold");
    // The attachment collector on the same parts: true types, and archive
    // listings of whatever the input's parts hold (libmagic, libarchive).
    {
        policy::attachments::collector col(policy::attachments::collector_options{
            .max_archive_bytes = 1u << 20, .archive = {.max_entries = 100, .max_depth = 3, .max_nested_bytes = 1u << 20}});
        parser p(col, l);
        p.feed(in);
        p.finish();
        uint64_t sizes = 0;
        for (const auto& a : col.result()) {
            sizes += a.size;
            RW_ASSERT(!a.true_type.empty(), "an attachment without a type");
            if (a.archive)
                RW_ASSERT(a.archive->entries.size() <= 100, "more archive entries than the limit");
        }
        RW_ASSERT(sizes <= whole.decoded, "attachments larger than the decoded parts");
    }
    // Content rules: the same decision fed whole and in pieces.
    {
        static const auto rs = [] {
            auto r = policy::rules::rule_set::compile({
                {"body", "body ~ /a.{0,3}b/ or body ~ /^x$/", {"add-header X-B: 1"}},
                {"subject", "subject ~ /=|\\?/ and not header \"From\" == \"\"", {"tag-subject [S]"}},
                {"att", "attachment-name ~ /\\.(exe|zip)$/ or archive-entry ~ /./ or attachment-count > 2",
                 {"remove-header Subject"}},
                {"types", "attachment-type ~ /zip|x-/ or attachment-size > 100 or mime-defect", {"reject"}},
            });
            RW_ASSERT(r.has_value(), "the fuzz rule set does not compile");
            return r.value();
        }();
        policy::rules::message_facts f;
        f.size = size;
        auto decide = [&](size_t step) {
            policy::rules::evaluator ev(rs);
            for (size_t i = 0; i < in.size(); i += step)
                ev.feed(in.substr(i, step));
            ev.finish();
            auto d = ev.decide(f);
            std::string out;
            for (const auto& r : d.fired)
                out += r + ",";
            return out + std::to_string(int(d.final));
        };
        RW_ASSERT(decide(in.size() + 1) == decide(1 + (size ? data[0] % 13 : 0)),
                  "split feeding changed the rules' decision");
    }
    for (const auto& p : whole_parts) {
        RW_ASSERT(p.depth <= l.max_depth, "deeper than the limit");
        for (const auto& [name, value] : p.headers) {
            (void)parse_field_value(value);
            (void)decode_words(value);
        }
    }
    return 0;
}
