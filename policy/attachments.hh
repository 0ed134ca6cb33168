// What a message's attachments are, for content policy: each leaf part's
// name, declared type and true type (libmagic, from its first bytes), its
// decoded size, and for archives the listing of what they hold (libarchive:
// names, sizes, encryption, archives inside archives), within limits, so a
// zip bomb costs a bounded read and a flag, not the machine.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mail/mime.hh"

namespace rw::policy::attachments {

// The MIME type the bytes say they are ("application/pdf"), from the
// first bytes of a body (4 KiB are enough for the magic database).
// "application/octet-stream" when libmagic has no better name.
std::string true_type(std::string_view head);
// The type a signature of the first bytes decides (PDF, PNG, GIF, JPEG,
// gzip, xz, zstd, 7z) without libmagic; "" for anything else.
std::string_view known_signature(std::string_view head);
// What libmagic alone says (true_type without the signatures).
std::string libmagic_type(std::string_view head);

// Whether list_archive() reads this true type.
bool is_archive_type(std::string_view true_type);

struct archive_limits {
    unsigned max_entries = 1000;             // across every level
    unsigned max_depth = 3;                  // archives inside archives, the outer one being 1
    uint64_t max_nested_bytes = 10u << 20;   // an inner archive read to be listed: at most this
};

struct archive_entry {
    std::string name;       // the path inside the archive; inner archives' entries as "outer.zip/inner.txt"
    uint64_t size = 0;      // as the archive says (uncompressed)
    unsigned depth = 1;
    bool encrypted = false;
    bool directory = false;
};

struct archive_listing {
    std::string format;                 // libarchive's name of the outer format ("ZIP 2.0 (deflation)")
    std::vector<archive_entry> entries;
    bool encrypted = false;             // an entry (or the whole archive) is encrypted
    bool truncated = false;             // a limit was reached: entries, depth or an inner archive's size
    std::string error;                  // why (part of) it could not be read: corrupt, not an archive
};

// Lists an archive held in memory (zip, tar, 7z, rar, cpio, iso9660, and
// tars compressed with gzip, bzip2, xz or zstd).
// Only headers are read, except inner archives, which are read (up to
// max_nested_bytes) to be listed in turn.
archive_listing list_archive(std::string_view bytes, const archive_limits& l = {});

struct attachment {
    unsigned part = 0;            // the MIME part's index
    std::string filename;         // as the part names it (UTF-8), or ""
    std::string declared_type;    // its Content-Type
    std::string true_type;        // what its first bytes are
    std::string disposition;
    uint64_t size = 0;            // decoded
    std::optional<archive_listing> archive;  // when it is an archive read whole (within max_archive_bytes)
    bool archive_too_large = false;          // an archive larger than max_archive_bytes: not listed
};

struct collector_options {
    uint64_t max_archive_bytes = 20u << 20;  // an archive attachment is held up to this to be listed
    archive_limits archive;
};

// A MIME handler that describes every leaf part as it streams past: true
// type from the first 4 KiB, size, and archives listed at the part's end.
class collector : public mail::mime::handler {
public:
    explicit collector(collector_options o = {}) : _o(o) {}
    void part_begin(const mail::mime::part& p) override;
    void part_data(const mail::mime::part& p, std::string_view d) override;
    void part_end(const mail::mime::part& p) override;
    const std::vector<attachment>& result() const { return _out; }

private:
    collector_options _o;
    std::vector<attachment> _out;
    std::string _head;     // the current leaf's first bytes
    std::string _archive;  // the current leaf, while it may be an archive
    bool _typed = false, _keep = false;
};

}  // namespace rw::policy::attachments
