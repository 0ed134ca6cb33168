// Attachments: true types and archive listings (attachments.hh).
#include "policy/attachments.hh"

#include <archive.h>
#include <archive_entry.h>
#include <magic.h>

#include <algorithm>
#include <array>

namespace rw::policy::attachments {

namespace {

constexpr size_t k_head_bytes = 4096;

// One libmagic handle per thread (a magic_t is not safe to share), loaded
// with the system database on first use.
struct magic_handle {
    magic_t m = nullptr;
    magic_handle() {
        m = magic_open(MAGIC_MIME_TYPE | MAGIC_NO_CHECK_COMPRESS | MAGIC_NO_CHECK_ELF);
        if (m && magic_load(m, nullptr) != 0) {
            magic_close(m);
            m = nullptr;
        }
    }
    ~magic_handle() {
        if (m)
            magic_close(m);
    }
};

struct reader {
    archive* a;
    reader() : a(archive_read_new()) {
        archive_read_support_filter_all(a);
        archive_read_support_format_all(a);
    }
    ~reader() { archive_read_free(a); }
    reader(const reader&) = delete;
    reader& operator=(const reader&) = delete;
};

void list_into(archive_listing& out, std::string_view bytes, const std::string& prefix, unsigned depth,
               const archive_limits& l, unsigned& count) {
    reader r;
    if (archive_read_open_memory(r.a, bytes.data(), bytes.size()) != ARCHIVE_OK) {
        if (out.error.empty())
            out.error = prefix + (archive_error_string(r.a) ? archive_error_string(r.a) : "not an archive");
        return;
    }
    ::archive_entry* e = nullptr;  // libarchive's (ours is attachments::archive_entry)
    for (;;) {
        const int rc = archive_read_next_header(r.a, &e);
        if (rc == ARCHIVE_EOF)
            break;
        if (rc < ARCHIVE_WARN) {
            if (out.error.empty())
                out.error = prefix + (archive_error_string(r.a) ? archive_error_string(r.a) : "unreadable");
            break;
        }
        if (depth == 1 && out.format.empty() && archive_format_name(r.a))
            out.format = archive_format_name(r.a);
        if (count >= l.max_entries) {
            out.truncated = true;
            break;
        }
        ++count;
        attachments::archive_entry ent;
        const char* name = archive_entry_pathname_utf8(e);
        if (!name)
            name = archive_entry_pathname(e);
        ent.name = prefix + (name ? name : "");
        ent.size = archive_entry_size_is_set(e) ? uint64_t(std::max<la_int64_t>(archive_entry_size(e), 0)) : 0;
        ent.depth = depth;
        ent.encrypted = archive_entry_is_encrypted(e) != 0;
        ent.directory = archive_entry_filetype(e) == AE_IFDIR;
        if (ent.encrypted)
            out.encrypted = true;
        const bool readable = !ent.encrypted && !ent.directory;
        out.entries.push_back(ent);
        if (!readable)
            continue;
        // Its first bytes say whether it is an archive too.
        std::string data;
        std::array<char, 16384> buf;
        bool inner = false;
        for (;;) {
            const la_ssize_t n = archive_read_data(r.a, buf.data(), buf.size());
            if (n <= 0)
                break;
            data.append(buf.data(), size_t(n));
            if (!inner && data.size() >= k_head_bytes) {
                inner = is_archive_type(true_type(data));
                if (!inner)
                    break;  // not an archive: the rest is not needed
            }
            if (data.size() > l.max_nested_bytes) {
                out.truncated = true;  // an inner archive too large to open
                inner = false;
                data.clear();
                break;
            }
        }
        if (!inner && !data.empty() && data.size() < k_head_bytes)
            inner = is_archive_type(true_type(data));
        if (!inner)
            continue;
        if (depth >= l.max_depth) {
            out.truncated = true;
            continue;
        }
        list_into(out, data, ent.name + "/", depth + 1, l, count);
    }
    if (archive_read_has_encrypted_entries(r.a) > 0)
        out.encrypted = true;
}

}  // namespace

std::string libmagic_type(std::string_view head) {
    if (head.empty())
        return "application/x-empty";
    static thread_local magic_handle h;
    const char* t = h.m ? magic_buffer(h.m, head.data(), std::min(head.size(), k_head_bytes)) : nullptr;
    return t ? std::string(t) : std::string("application/octet-stream");
}

std::string_view known_signature(std::string_view head) {
    // Formats whose first bytes alone decide what libmagic names them
    // (a unit test holds each to libmagic's answer). libmagic walks its
    // whole database, 0.1 to 1 ms a call: these are the common
    // attachments it need not see.
    struct sig {
        std::string_view magic, type;
    };
    static constexpr sig k_sigs[] = {
        {"%PDF-", "application/pdf"},
        {"\x89PNG\r\n\x1a\n", "image/png"},
        {"GIF87a", "image/gif"},
        {"GIF89a", "image/gif"},
        {"\xff\xd8\xff", "image/jpeg"},
        {std::string_view("\x1f\x8b\x08", 3), "application/gzip"},
        {std::string_view("\xfd" "7zXZ\x00", 6), "application/x-xz"},
        {"\x28\xb5\x2f\xfd", "application/zstd"},
        {"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"},
    };
    for (const auto& g : k_sigs)
        if (head.starts_with(g.magic))
            return g.type;
    return {};
}

std::string true_type(std::string_view head) {
    if (auto t = known_signature(head); !t.empty())
        return std::string(t);
    return libmagic_type(head);
}

bool is_archive_type(std::string_view t) {
    static constexpr std::string_view types[] = {
        "application/zip",      "application/x-zip-compressed", "application/x-7z-compressed",
        "application/x-rar",    "application/vnd.rar",          "application/x-tar",
        "application/gzip",     "application/x-gzip",           "application/x-bzip2",
        "application/x-xz",     "application/zstd",             "application/x-cpio",
        "application/x-iso9660-image", "application/java-archive", "application/x-lzip",
    };
    return std::find(std::begin(types), std::end(types), t) != std::end(types);
}

archive_listing list_archive(std::string_view bytes, const archive_limits& l) {
    archive_listing out;
    unsigned count = 0;
    list_into(out, bytes, {}, 1, l, count);
    return out;
}

void collector::part_begin(const mail::mime::part& p) {
    if (!p.leaf)
        return;
    attachment a;
    a.part = p.index;
    a.filename = p.filename;
    a.declared_type = p.type;
    a.disposition = p.disposition;
    _out.push_back(std::move(a));
    _head.clear();
    _archive.clear();
    _typed = false;
    _keep = false;
}

void collector::part_data(const mail::mime::part& p, std::string_view d) {
    if (_out.empty() || _out.back().part != p.index)
        return;
    attachment& a = _out.back();
    a.size += d.size();
    if (!_typed) {
        _head.append(d.substr(0, k_head_bytes - std::min(_head.size(), k_head_bytes)));
        _archive.append(d);
        if (_head.size() < k_head_bytes)
            return;
        a.true_type = true_type(_head);
        _typed = true;
        _keep = is_archive_type(a.true_type);
        if (!_keep)
            std::string().swap(_archive);
    } else if (_keep) {
        _archive.append(d);
    }
    if (_keep && _archive.size() > _o.max_archive_bytes) {
        a.archive_too_large = true;
        _keep = false;
        std::string().swap(_archive);
    }
}

void collector::part_end(const mail::mime::part& p) {
    if (_out.empty() || _out.back().part != p.index)
        return;
    attachment& a = _out.back();
    if (!_typed) {
        a.true_type = true_type(_head);
        _keep = is_archive_type(a.true_type);
    }
    if (_keep && _archive.size() > _o.max_archive_bytes)
        a.archive_too_large = true;
    if (_keep && !a.archive_too_large)
        a.archive = list_archive(_archive, _o.archive);
    std::string().swap(_archive);
    _head.clear();
}

}  // namespace rw::policy::attachments
