// Attachments (policy/attachments.hh): true types by libmagic, archive
// listings by libarchive (archives the test makes with libarchive's
// writer: zip, tar.gz, nested, encrypted, a bomb of nesting), and the MIME
// collector describing each part of a message as it streams past.
#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "mail/codec.hh"
#include "mail/mime.hh"
#include "policy/attachments.hh"
#include "tests/unit/policy/archive_maker.hh"

using namespace rw;
using namespace rw::policy::attachments;
using rw::test::make_archive;

namespace {

const std::string k_pdf = "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<<>>\n%%EOF\n";

}  // namespace

TEST_CASE("attachments: true types from the first bytes", "[attachments]") {
    REQUIRE(true_type(k_pdf) == "application/pdf");
    REQUIRE(true_type("just some words of text\n") == "text/plain");
    REQUIRE(true_type(make_archive({{"a.txt", "hello"}})) == "application/zip");
    REQUIRE(true_type("") == "application/x-empty");
    REQUIRE(is_archive_type("application/zip"));
    REQUIRE(is_archive_type("application/gzip"));
    REQUIRE(!is_archive_type("application/pdf"));
}

TEST_CASE("attachments: the signatures known without libmagic are what libmagic says", "[attachments]") {
    using namespace std::string_literals;
    const std::string tail(600, '\x5a');
    const std::vector<std::string> samples = {
        k_pdf,
        "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0\x1f\xf3\xff" "a"s + tail,
        "GIF89a\x10\0\x10\0\x80\0\0"s + tail,
        "GIF87a\x10\0\x10\0\x80\0\0"s + tail,
        "\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0"s + tail,
        "\x1f\x8b\x08\0\0\0\0\0\0\x03"s + tail,
        "\xfd" "7zXZ\0\0\x04\xe6\xd6\xb4\x46"s + tail,
        "\x28\xb5\x2f\xfd\x24\x05\x29\0"s + tail,
        "7z\xbc\xaf\x27\x1c\0\x04"s + tail,
    };
    for (const auto& x : samples) {
        INFO(mail::base64_encode(x.substr(0, 16)));
        REQUIRE(!known_signature(x).empty());
        REQUIRE(known_signature(x) == libmagic_type(x));
        REQUIRE(true_type(x) == libmagic_type(x));
    }
    // Not known: left to libmagic.
    REQUIRE(known_signature("just text").empty());
    REQUIRE(known_signature(make_archive({{"a.txt", "hello"}})).empty());
}

TEST_CASE("attachments: archive listings", "[attachments]") {
    SECTION("zip") {
        auto l = list_archive(make_archive({{"report.pdf", k_pdf}, {"dir/notes.txt", "notes"}}));
        REQUIRE(l.error.empty());
        REQUIRE(l.format.starts_with("ZIP"));
        REQUIRE(l.entries.size() == 2);
        REQUIRE(l.entries[0].name == "report.pdf");
        REQUIRE(l.entries[1].name == "dir/notes.txt");
        REQUIRE(l.entries[1].size == 5);
        REQUIRE(!l.encrypted);
        REQUIRE(!l.truncated);
    }
    SECTION("tar.gz") {
        auto l = list_archive(make_archive({{"invoice.exe", "MZ\x90"}}, false));
        REQUIRE(l.error.empty());
        REQUIRE(l.entries.size() == 1);
        REQUIRE(l.entries[0].name == "invoice.exe");
    }
    SECTION("an archive inside an archive is listed too") {
        const std::string inner = make_archive({{"payload.js", "alert(1)"}});
        auto l = list_archive(make_archive({{"readme.txt", "see inside"}, {"inner.zip", inner}}));
        REQUIRE(l.error.empty());
        std::vector<std::pair<std::string, unsigned>> names;
        for (const auto& e : l.entries)
            names.emplace_back(e.name, e.depth);
        REQUIRE(names == std::vector<std::pair<std::string, unsigned>>{
                             {"readme.txt", 1}, {"inner.zip", 1}, {"inner.zip/payload.js", 2}});
    }
    SECTION("encrypted entries are flagged, not read") {
        auto l = list_archive(make_archive({{"secret.docm", "macro"}}, true, "infected"));
        REQUIRE(l.encrypted);
        REQUIRE(l.entries.size() == 1);
        REQUIRE(l.entries[0].encrypted);
    }
    SECTION("nesting past the depth limit stops, flagged") {
        std::string z = make_archive({{"core.txt", "bottom"}});
        for (int i = 0; i < 6; ++i)
            z = make_archive({{"level" + std::to_string(i) + ".zip", z}});
        auto l = list_archive(z, archive_limits{.max_depth = 3});
        REQUIRE(l.truncated);
        REQUIRE(l.entries.size() == 3);
        REQUIRE(l.entries.back().depth == 3);
    }
    SECTION("an inner archive past its size limit is not opened") {
        const std::string big(200000, 'z');
        const std::string inner = make_archive({{"zeros.bin", big}});  // compresses well: a small bomb
        auto l = list_archive(make_archive({{"inner.zip", inner}}), archive_limits{.max_nested_bytes = 100});
        REQUIRE(l.truncated);
        REQUIRE(l.entries.size() == 1);
    }
    SECTION("entry count limit") {
        std::vector<std::pair<std::string, std::string>> many;
        for (int i = 0; i < 50; ++i)
            many.emplace_back("f" + std::to_string(i), "x");
        auto l = list_archive(make_archive(many), archive_limits{.max_entries = 10});
        REQUIRE(l.truncated);
        REQUIRE(l.entries.size() == 10);
    }
    SECTION("not an archive, or a broken one") {
        REQUIRE(!list_archive("plain text, not an archive").error.empty());
        const std::string z = make_archive({{"a.txt", std::string(5000, 'a')}});
        auto l = list_archive(z.substr(0, z.size() / 2));  // cut in half
        REQUIRE(!l.error.empty());
    }
}

TEST_CASE("attachments: the collector describes each part of a message", "[attachments]") {
    const std::string zip = make_archive({{"docs/contract.pdf", k_pdf}, {"run.exe", "MZ"}});
    auto b64 = [](const std::string& s) {
        std::string e = mail::base64_encode(s), out;
        for (size_t i = 0; i < e.size(); i += 76)
            out += e.substr(i, 76) + "\r\n";
        return out;
    };
    const std::string msg = "Content-Type: multipart/mixed; boundary=x\r\n\r\n"
                            "--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
                            "--x\r\nContent-Type: application/octet-stream\r\n"
                            "Content-Disposition: attachment; filename=\"harmless.txt\"\r\n"
                            "Content-Transfer-Encoding: base64\r\n\r\n" +
                            b64(zip) +
                            "--x\r\nContent-Type: application/pdf; name=\"c.pdf\"\r\n"
                            "Content-Transfer-Encoding: base64\r\n\r\n" +
                            b64(k_pdf) + "--x--\r\n";
    for (size_t step : {size_t(0), size_t(7), size_t(1000)}) {
        collector c;
        mail::mime::parser p(c);
        if (step == 0)
            p.feed(msg);
        else
            for (size_t i = 0; i < msg.size(); i += step)
                p.feed(std::string_view(msg).substr(i, step));
        p.finish();
        const auto& r = c.result();
        REQUIRE(r.size() == 3);
        REQUIRE(r[0].true_type == "text/plain");
        REQUIRE(r[0].size == 5);
        REQUIRE(r[1].filename == "harmless.txt");  // the name lies; the bytes do not
        REQUIRE(r[1].declared_type == "application/octet-stream");
        REQUIRE(r[1].true_type == "application/zip");
        REQUIRE(r[1].size == zip.size());
        REQUIRE(r[1].archive);
        REQUIRE(r[1].archive->entries.size() == 2);
        REQUIRE(r[1].archive->entries[1].name == "run.exe");
        REQUIRE(r[2].true_type == "application/pdf");
        REQUIRE(!r[2].archive);
    }
    // An archive over the collector's limit is not held: flagged instead.
    collector small(collector_options{.max_archive_bytes = 64});
    mail::mime::parser p(small);
    p.feed(msg);
    p.finish();
    REQUIRE(small.result()[1].archive_too_large);
    REQUIRE(!small.result()[1].archive);
}
