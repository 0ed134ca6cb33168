// Tests for SMTP AUTH credentials (policy/credentials.hh) and the
// ringway-passwd tool (admin/ringway_passwd.cc), run as the real binary
// (RINGWAY_PASSWD_BIN, set by CMake) on files in a temporary directory.
// Each yescrypt hash costs ~15 ms, so the cases use a handful of them.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "policy/credentials.hh"

using rw::policy::credentials;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed afterwards.
struct temp_dir {
    fs::path path;
    temp_dir() {
        std::string tmpl = (fs::temp_directory_path() / "ringway-cred-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

void write_file(const fs::path& p, const std::string& text, mode_t mode) {
    {
        std::ofstream out(p, std::ios::binary | std::ios::trunc);
        out << text;
        REQUIRE(out.good());
    }
    REQUIRE(::chmod(p.c_str(), mode) == 0);
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

mode_t mode_of(const fs::path& p) {
    struct stat st{};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

std::string make_hash(const std::string& pw) {
    auto h = credentials::hash(pw);
    REQUIRE(h.has_value());
    return h.value();
}

credentials parsed(const std::string& text) {
    auto c = credentials::parse(text, "t");
    INFO((c.has_value() ? std::string() : c.error()));
    REQUIRE(c.has_value());
    return c.value();
}

std::string refused(const std::string& text) {
    auto c = credentials::parse(text, "t");
    REQUIRE_FALSE(c.has_value());
    return c.error();
}

// Runs a shell command line; returns its exit status (or -1 if killed).
struct run_result {
    int status;
    std::string output;
};
run_result run(const std::string& cmd, const fs::path& dir) {
    fs::path out = dir / "cmd.out";
    std::string full = cmd + " >" + out.string() + " 2>&1";
    int rc = std::system(full.c_str());
    run_result r{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_file(out)};
    fs::remove(out);
    return r;
}

const std::string k_bin = RINGWAY_PASSWD_BIN;

// Files in dir other than `keep`: leftovers such as temporary files.
std::vector<std::string> others(const fs::path& dir, const std::string& keep) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().filename() != keep)
            out.push_back(e.path().filename().string());
    return out;
}

}  // namespace

TEST_CASE("credentials: hash and verify round trip", "[policy]") {
    std::string h = make_hash("correct horse battery staple");
    CHECK_THAT(h, StartsWith("$y$"));
    CHECK_FALSE(credentials::hash_problem(h).has_value());
    std::string h2 = make_hash("correct horse battery staple");
    CHECK(h != h2);  // a fresh salt each time

    credentials c = parsed("alice:" + h + "\n");
    CHECK(c.size() == 1);
    CHECK(c.warnings().empty());
    CHECK(c.verify("alice", "correct horse battery staple"));
    CHECK_FALSE(c.verify("alice", "correct horse battery stapl"));
    CHECK_FALSE(c.verify("alice", "correct horse battery staple "));
    CHECK_FALSE(c.verify("alice", std::string("correct horse battery staple\0", 29)));
    CHECK_FALSE(c.verify("alice", ""));
    CHECK_FALSE(c.verify("Alice", "correct horse battery staple"));  // user names are exact
    CHECK_FALSE(c.verify("bob", "correct horse battery staple"));
    CHECK_FALSE(c.verify("", ""));
    CHECK_FALSE(c.verify("alice", std::string(credentials::max_password_bytes + 1, 'x')));
}

TEST_CASE("credentials: hash refuses unusable passwords", "[policy]") {
    CHECK_FALSE(credentials::hash("").has_value());
    CHECK_FALSE(credentials::hash(std::string("a\0b", 3)).has_value());
    CHECK_FALSE(credentials::hash(std::string(credentials::max_password_bytes + 1, 'x')).has_value());
    CHECK(credentials::hash(std::string(credentials::max_password_bytes, 'x')).has_value());
}

TEST_CASE("credentials: an empty or default set verifies nothing", "[policy]") {
    credentials none;
    CHECK(none.size() == 0);
    CHECK_FALSE(none.verify("alice", "x"));
    credentials empty = parsed("# nobody yet\n\n");
    CHECK(empty.size() == 0);
    CHECK_FALSE(empty.verify("alice", "x"));
}

TEST_CASE("credentials: unknown users cost a hash too", "[policy]") {
    credentials c = parsed("alice:" + make_hash("pw") + "\n");
    auto time_of = [&](const char* user) {
        auto best = std::chrono::nanoseconds::max();
        for (int i = 0; i < 3; ++i) {
            auto t0 = std::chrono::steady_clock::now();
            CHECK_FALSE(c.verify(user, "wrong"));
            best = std::min(best, std::chrono::steady_clock::now() - t0);
        }
        return best;
    };
    auto known = time_of("alice");
    auto unknown = time_of("mallory");
    INFO("known " << known.count() << " ns, unknown " << unknown.count() << " ns");
    // The same hash on both paths; a lookup-only path would be ~1000x faster.
    CHECK(unknown * 3 > known);
    CHECK(known * 3 > unknown);
}

TEST_CASE("credentials: file syntax", "[policy]") {
    std::string h = make_hash("pw");
    credentials c = parsed("# users\n"
                           "   # indented comment\n"
                           "\n"
                           "alice:" + h + "\r\n"  // CR LF
                           "bob@example.test:" + h);  // no final newline
    CHECK(c.size() == 2);
    CHECK(c.verify("alice", "pw"));
    CHECK(c.verify("bob@example.test", "pw"));

    // Other libxcrypt methods that are salted and slow load too.
    std::string sha512 = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";
    CHECK_FALSE(credentials::hash_problem(sha512).has_value());
}

TEST_CASE("credentials: malformed lines are named by file and line", "[policy]") {
    std::string h = make_hash("pw");
    std::string err = refused("# fine\n"                                         // 1
                              "nocolon\n"                                        // 2
                              ":" + h + "\n"                                     // 3
                              "bob:hunter2\n"                                    // 4 plain text
                              "carol:$1$abcdefgh$0123456789abcdefghijkl\n"       // 5 md5crypt
                              "dave:$y$j9T$RnoghSHlsbqK/K/FRvd1G0\n"             // 6 a setting, no hash
                              "erin:" + h + ":extra\n"                           // 7
                              "alice:" + h + "\n"                                // 8 fine
                              "alice:" + h + "\n"                                // 9 duplicate
                              "bad user:" + h + "\n"                             // 10
                              "frank:" + h + " \n"                               // 11 trailing space
                              "gina:\n"                                          // 12
                              "#x:" + h + "\n");                                 // 13 a comment: fine
    INFO(err);
    CHECK_THAT(err, Contains("t:2: expected USER:HASH"));
    CHECK_THAT(err, Contains("t:3: empty user name"));
    CHECK_THAT(err, Contains("t:4: user \"bob\": plain text or a legacy hash is not supported"));
    CHECK_THAT(err, Contains("t:5: user \"carol\": the method \"$1$\" is not supported"));
    CHECK_THAT(err, Contains("t:6: user \"dave\": hash is cut short"));
    CHECK_THAT(err, Contains("t:7: user \"erin\": more than one ':'"));
    CHECK_THAT(err, Contains("t:9: user \"alice\" is already defined on line 8"));
    CHECK_THAT(err, Contains("t:10: user name contains a space"));
    CHECK_THAT(err, Contains("t:11: user \"frank\": hash contains a character"));
    CHECK_THAT(err, Contains("t:12: user \"gina\": empty hash"));
    CHECK(err.find("t:1:") == std::string::npos);
    CHECK(err.find("t:8:") == std::string::npos);
    CHECK(err.find("t:13:") == std::string::npos);
    CHECK(err.find("hunter2") == std::string::npos);  // a plain-text password is never echoed

    // Many bad lines: the first max_errors_shown, then a count.
    std::string many;
    for (int i = 0; i < 30; ++i)
        many += "x\n";
    CHECK_THAT(refused(many), Contains("t:20:") && Contains("... and 10 more"));
    CHECK_THAT(refused(std::string(credentials::max_line_bytes + 1, 'a') + ":x\n"), Contains("t:1: line longer"));
}

TEST_CASE("credentials: load checks the file", "[policy]") {
    temp_dir d;
    fs::path p = d.path / "credentials";
    std::string h = make_hash("pw");

    auto missing = credentials::load(p.string());
    REQUIRE_FALSE(missing.has_value());
    CHECK_THAT(missing.error(), Contains(p.string()) && Contains("No such file"));

    auto dir = credentials::load(d.path.string());
    REQUIRE_FALSE(dir.has_value());
    CHECK_THAT(dir.error(), Contains("not a regular file"));

    write_file(p, "alice:" + h + "\n", 0600);
    auto ok = credentials::load(p.string());
    REQUIRE(ok.has_value());
    CHECK(ok.value().size() == 1);
    CHECK(ok.value().warnings().empty());
    CHECK(ok.value().verify("alice", "pw"));

    REQUIRE(::chmod(p.c_str(), 0644) == 0);
    auto readable = credentials::load(p.string());
    REQUIRE(readable.has_value());
    REQUIRE(readable.value().warnings().size() == 1);
    CHECK_THAT(readable.value().warnings()[0], Contains("0644") && Contains("chmod 600"));

    REQUIRE(::chmod(p.c_str(), 0602) == 0);
    auto writable = credentials::load(p.string());
    REQUIRE_FALSE(writable.has_value());
    CHECK_THAT(writable.error(), Contains("0602") && Contains("any user"));

    write_file(p, "alice:" + h + "\nbroken\n", 0600);
    auto bad = credentials::load(p.string());
    REQUIRE_FALSE(bad.has_value());
    CHECK_THAT(bad.error(), Contains(p.string() + ":2:"));
}

TEST_CASE("credentials: verify from several threads at once", "[policy]") {
    std::string h = make_hash("pw");
    const credentials c = parsed("alice:" + h + "\nbob:" + h + "\n");
    std::vector<std::thread> threads;
    std::vector<int> good(4, 0);
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&c, &good, t] {
            for (int i = 0; i < 3; ++i) {
                good[size_t(t)] += c.verify(t % 2 ? "alice" : "bob", "pw") ? 1 : 0;
                good[size_t(t)] += c.verify("alice", "nope") ? 100 : 0;
            }
        });
    for (auto& th : threads)
        th.join();
    for (int g : good)
        CHECK(g == 3);
}

TEST_CASE("ringway-passwd: add, replace, delete through the real binary", "[policy]") {
    temp_dir d;
    fs::path p = d.path / "credentials";
    std::string cmd = k_bin + " --file " + p.string();

    auto r = run("printf 'first-pw\\n' | " + cmd + " alice", d.path);
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK_THAT(r.output, Contains("added user \"alice\""));
    CHECK(mode_of(p) == 0600);
    auto c = credentials::load(p.string());
    REQUIRE(c.has_value());
    CHECK(c.value().size() == 1);
    CHECK(c.value().verify("alice", "first-pw"));

    // A second user, password with CR LF (the CR is not part of it), and an
    // operator's comment that must survive edits.
    {
        std::ofstream out(p, std::ios::app);
        out << "# added by hand\n";
    }
    r = run("printf 'bob-pw\\r\\n' | " + cmd + " bob@example.test", d.path);
    REQUIRE(r.status == 0);
    // Replace alice.
    r = run("printf 'second-pw\\n' | " + cmd + " alice", d.path);
    REQUIRE(r.status == 0);
    CHECK_THAT(r.output, Contains("replaced user \"alice\""));
    c = credentials::load(p.string());
    REQUIRE(c.has_value());
    CHECK(c.value().size() == 2);
    CHECK(c.value().verify("alice", "second-pw"));
    CHECK_FALSE(c.value().verify("alice", "first-pw"));
    CHECK(c.value().verify("bob@example.test", "bob-pw"));
    std::string text = read_file(p);
    CHECK_THAT(text, Contains("# added by hand\n"));
    CHECK(text.rfind("alice:", 0) == 0);  // replaced in place, still the first line

    // Delete bob; deleting him again fails and changes nothing.
    r = run(cmd + " --delete bob@example.test", d.path);
    REQUIRE(r.status == 0);
    CHECK_THAT(r.output, Contains("deleted user"));
    c = credentials::load(p.string());
    REQUIRE(c.has_value());
    CHECK(c.value().size() == 1);
    CHECK_FALSE(c.value().verify("bob@example.test", "bob-pw"));
    std::string before = read_file(p);
    r = run(cmd + " --delete bob@example.test", d.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.output, Contains("no user \"bob@example.test\""));
    CHECK(read_file(p) == before);

    // A file opened up by someone else is written back as 0600.
    REQUIRE(::chmod(p.c_str(), 0644) == 0);
    r = run("printf 'third-pw' | " + cmd + " alice", d.path);  // no newline at all
    REQUIRE(r.status == 0);
    CHECK(mode_of(p) == 0600);
    c = credentials::load(p.string());
    REQUIRE(c.has_value());
    CHECK(c.value().verify("alice", "third-pw"));

    // Nothing left behind but the file itself.
    CHECK(others(d.path, "credentials").empty());
}

TEST_CASE("ringway-passwd: refusals", "[policy]") {
    temp_dir d;
    fs::path p = d.path / "credentials";
    std::string cmd = k_bin + " --file " + p.string();

    auto r = run("printf '\\n' | " + cmd + " alice", d.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.output, Contains("empty password"));
    CHECK_FALSE(fs::exists(p));

    r = run("printf 'pw\\n' | " + cmd + " 'a:b'", d.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.output, Contains("contains ':'"));

    r = run("printf 'pw\\n' | " + cmd + " '#root'", d.path);
    CHECK(r.status == 1);

    r = run(cmd + " --delete alice", d.path);  // no file yet
    CHECK(r.status == 1);

    r = run("printf 'pw\\n' | " + cmd, d.path);  // no user
    CHECK(r.status != 0);
    r = run("printf 'pw\\n' | " + cmd + " alice --delete bob", d.path);
    CHECK(r.status != 0);
    r = run("printf 'pw\\n' | " + k_bin + " alice", d.path);  // no --file
    CHECK(r.status != 0);

    // A file that does not load is not edited.
    write_file(p, "alice:plaintext\n", 0600);
    r = run("printf 'pw\\n' | " + cmd + " bob", d.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.output, Contains(p.string() + ":1:"));
    CHECK(read_file(p) == "alice:plaintext\n");
    CHECK(others(d.path, "credentials").empty());
}

TEST_CASE("ringway-passwd: --help and --version", "[policy]") {
    temp_dir d;
    auto r = run(k_bin + " --help", d.path);
    CHECK(r.status == 0);
    CHECK_THAT(r.output, Contains("--file") && Contains("--delete") && Contains("USER"));
    r = run(k_bin + " --version", d.path);
    CHECK(r.status == 0);
    CHECK_THAT(r.output, StartsWith("ringway-passwd "));
}
