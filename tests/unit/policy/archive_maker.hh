// Archives made in memory with libarchive's writer, for the content tests.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

namespace rw::test {

// An archive in memory holding (name, content) files.
inline std::string make_archive(const std::vector<std::pair<std::string, std::string>>& files, bool zip = true,
                         const char* passphrase = nullptr) {
    std::vector<char> buf(64u << 20);
    size_t used = 0;
    archive* a = archive_write_new();
    if (zip) {
        REQUIRE(archive_write_set_format_zip(a) == ARCHIVE_OK);
        if (passphrase) {
            REQUIRE(archive_write_set_options(a, "zip:encryption=zipcrypt") == ARCHIVE_OK);
            REQUIRE(archive_write_set_passphrase(a, passphrase) == ARCHIVE_OK);
        }
    } else {
        REQUIRE(archive_write_set_format_pax_restricted(a) == ARCHIVE_OK);
        REQUIRE(archive_write_add_filter_gzip(a) == ARCHIVE_OK);
    }
    REQUIRE(archive_write_open_memory(a, buf.data(), buf.size(), &used) == ARCHIVE_OK);
    for (const auto& [name, content] : files) {
        ::archive_entry* e = archive_entry_new();
        archive_entry_set_pathname(e, name.c_str());
        archive_entry_set_size(e, la_int64_t(content.size()));
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
        REQUIRE(archive_write_data(a, content.data(), content.size()) == la_ssize_t(content.size()));
        archive_entry_free(e);
    }
    REQUIRE(archive_write_close(a) == ARCHIVE_OK);
    archive_write_free(a);
    return std::string(buf.data(), used);
}

}  // namespace rw::test
