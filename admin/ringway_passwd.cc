// ringway-passwd: adds, replaces or deletes one SMTP AUTH user in a Ringway
// credentials file (the format is described in policy/credentials.hh).
//
//   ringway-passwd --file PATH USER           password from stdin
//   ringway-passwd --file PATH --delete USER
//
// The password is read from the terminal without echo, asked twice, or, when
// stdin is not a terminal, as one line (the newline, and a CR before it, are
// not part of it). The file is replaced atomically: the new text goes to a
// temporary file in the same directory (mode 0600, the old file's owner when
// we may set it), is fsync'ed, and renamed over the old one; then the
// directory is fsync'ed. Comments, blank lines and the other users' lines
// are kept as they were. A file that does not load (policy::credentials) is
// not edited: fix it first. Concurrent runs on the same directory are
// serialised with flock(2) on the directory.
//
// Exit status: 0 done, 1 failed (message on stderr), CLI11's codes for usage
// errors.
#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "policy/credentials.hh"
#include "runtime/base/assert.hh"
#include "runtime/base/version.hh"

namespace {

using rw::policy::credentials;

[[noreturn]] void die(const std::string& msg) {
    std::fprintf(stderr, "ringway-passwd: %s\n", msg.c_str());
    std::exit(1);
}

std::string errno_text() {
    return std::strerror(errno);
}

// The terminal settings to restore if a signal arrives while echo is off.
termios g_saved_tty;
volatile sig_atomic_t g_tty_changed = 0;

void restore_tty_and_reraise(int sig) {
    if (g_tty_changed)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_tty);
    signal(sig, SIG_DFL);
    raise(sig);
}

// Reads one line from fd 0, at most max bytes before the newline. nullopt
// on a read error or a longer line. The newline (and a CR before it) are
// dropped; end of input ends the line too.
std::optional<std::string> read_line(size_t max) {
    std::string s;
    s.reserve(max + 2);  // never reallocates, so no stray copies of the secret
    for (;;) {
        char c;
        ssize_t n = ::read(STDIN_FILENO, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return std::nullopt;
        if (n == 0 || c == '\n')
            break;
        if (s.size() > max) {
            explicit_bzero(s.data(), s.size());
            return std::nullopt;
        }
        s += c;
    }
    if (!s.empty() && s.back() == '\r')
        s.pop_back();
    if (s.size() > max) {
        explicit_bzero(s.data(), s.size());
        return std::nullopt;
    }
    return s;
}

std::string prompt_password(const char* prompt) {
    std::fputs(prompt, stderr);
    std::fflush(stderr);
    termios t{};
    if (tcgetattr(STDIN_FILENO, &t) != 0)
        die("cannot read the terminal settings: " + errno_text());
    g_saved_tty = t;
    signal(SIGINT, restore_tty_and_reraise);
    signal(SIGTERM, restore_tty_and_reraise);
    signal(SIGHUP, restore_tty_and_reraise);
    t.c_lflag &= ~tcflag_t(ECHO);
    t.c_lflag |= ECHONL;
    g_tty_changed = 1;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) != 0)
        die("cannot turn off echo: " + errno_text());
    auto line = read_line(credentials::max_password_bytes);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_tty);
    g_tty_changed = 0;
    if (!line)
        die("password too long or unreadable");
    return *line;
}

std::string read_password(const std::string& user) {
    if (isatty(STDIN_FILENO)) {
        std::string p1 = prompt_password(("New password for " + user + ": ").c_str());
        std::string p2 = prompt_password("Retype the password: ");
        bool same = p1 == p2;
        explicit_bzero(p2.data(), p2.size());
        if (!same) {
            explicit_bzero(p1.data(), p1.size());
            die("the passwords differ; nothing changed");
        }
        return p1;
    }
    auto line = read_line(credentials::max_password_bytes);
    if (!line)
        die("cannot read the password from stdin (longer than " +
            std::to_string(credentials::max_password_bytes) + " bytes, or a read error)");
    return *line;
}

// The whole file, or "" if it does not exist yet.
std::string read_file(const std::string& path, bool& exists, struct stat& st) {
    exists = false;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return "";
        die(path + ": cannot open: " + errno_text());
    }
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        die(path + ": not a regular file");
    if (uint64_t(st.st_size) > credentials::max_file_bytes)
        die(path + ": too large");
    std::string text(size_t(st.st_size), '\0');
    size_t got = 0;
    while (got < text.size()) {
        ssize_t n = ::read(fd, text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die(path + ": cannot read: " + errno_text());
        if (n == 0)
            break;
        got += size_t(n);
    }
    text.resize(got);
    ::close(fd);
    exists = true;
    return text;
}

// The text with USER's line replaced by `line` (or removed when `line` is
// nullopt), or `line` appended when USER has none. `found` says whether
// USER had a line.
std::string edit(const std::string& text, const std::string& user, const std::optional<std::string>& line,
                 bool& found) {
    found = false;
    std::string out;
    size_t start = 0;
    while (start < text.size()) {
        size_t nl = text.find('\n', start);
        size_t end = nl == std::string::npos ? text.size() : nl + 1;
        std::string_view l(text.data() + start, end - start);
        start = end;
        if (l.starts_with(user + ":")) {
            found = true;
            if (line)
                out += *line + "\n";
            continue;
        }
        out += l;
    }
    if (!found && line) {
        if (!out.empty() && out.back() != '\n')
            out += '\n';
        out += *line + "\n";
    }
    return out;
}

void replace_file(const std::string& path, const std::string& text, bool existed, const struct stat& old_st) {
    std::filesystem::path p(path);
    std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
    std::string tmp = path + ".tmp.XXXXXX";
    int fd = ::mkstemp(tmp.data());
    if (fd < 0)
        die(tmp + ": cannot create: " + errno_text());
    auto fail = [&](const std::string& msg) {
        ::unlink(tmp.c_str());
        die(msg);
    };
    if (::fchmod(fd, 0600) != 0)
        fail(tmp + ": cannot chmod 600: " + errno_text());
    // Keep the daemon's ownership when root edits a file that ringwayd reads
    // as its own user.
    if (existed && (old_st.st_uid != geteuid() || old_st.st_gid != getegid()) &&
        ::fchown(fd, old_st.st_uid, old_st.st_gid) != 0)
        std::fprintf(stderr, "ringway-passwd: warning: %s: cannot keep the owner %u:%u (%s); the new file is %u:%u\n",
                     path.c_str(), unsigned(old_st.st_uid), unsigned(old_st.st_gid), errno_text().c_str(),
                     unsigned(geteuid()), unsigned(getegid()));
    size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail(tmp + ": cannot write: " + errno_text());
        done += size_t(n);
    }
    if (::fsync(fd) != 0)
        fail(tmp + ": fsync: " + errno_text());
    if (::close(fd) != 0)
        fail(tmp + ": close: " + errno_text());
    if (::rename(tmp.c_str(), path.c_str()) != 0)
        fail("cannot rename " + tmp + " to " + path + ": " + errno_text());
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || ::fsync(dfd) != 0)
        die(dir + ": fsync after rename: " + errno_text());
    ::close(dfd);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "ringway-passwd: add, replace or delete an SMTP AUTH user in a Ringway credentials file.\n"
        "Adding reads the password from the terminal (no echo, asked twice) or one line from stdin,\n"
        "hashes it with yescrypt, and rewrites the file atomically with mode 0600."};
    app.name("ringway-passwd");
    app.footer(
        "File format: one USER:HASH per line, '#' comments (see policy/credentials.hh).\n"
        "Examples:\n"
        "  ringway-passwd --file /etc/ringway/credentials alice\n"
        "  printf '%s\\n' \"$PW\" | ringway-passwd --file ./var/credentials alice\n"
        "  ringway-passwd --file ./var/credentials --delete alice");
    std::string path, user, delete_user;
    app.add_option("--file", path, "the credentials file (created if missing)")->required();
    auto* user_opt = app.add_option("USER", user, "the user to add, or whose password to replace");
    auto* del_opt = app.add_option("--delete", delete_user, "remove USER from the file");
    user_opt->excludes(del_opt);
    app.set_version_flag("--version", "ringway-passwd " RINGWAY_VERSION);
    try {
        app.parse(argc, argv);
        if (user.empty() && delete_user.empty())
            throw CLI::RequiredError("USER or --delete USER");
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    bool deleting = !delete_user.empty();
    const std::string& name = deleting ? delete_user : user;
    if (auto why = credentials::user_problem(name))
        die("user \"" + name + "\": " + *why);

    std::filesystem::path p(path);
    std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
    int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        die(dir + ": " + errno_text());

    // Ask for the password before taking the lock: a person may be typing.
    std::optional<std::string> line;
    if (!deleting) {
        std::string pw = read_password(name);
        auto h = credentials::hash(pw);
        explicit_bzero(pw.data(), pw.size());
        if (!h)
            die(h.error());
        line = name + ":" + h.value();
    }

    if (::flock(dir_fd, LOCK_EX) != 0)
        die(dir + ": flock: " + errno_text());
    bool existed = false;
    struct stat st{};
    std::string text = read_file(path, existed, st);
    if (auto old = credentials::parse(text, path); !old)
        die("not editing a file that does not load; fix it first:\n" + old.error());
    bool found = false;
    std::string out = edit(text, name, line, found);
    if (deleting && !found)
        die(path + ": no user \"" + name + "\"");
    auto check = credentials::parse(out, path);
    RW_ASSERT(check.has_value(), "ringway-passwd produced a file that does not load: {}",
              check.has_value() ? "" : check.error());
    replace_file(path, out, existed, st);
    ::close(dir_fd);  // releases the lock
    std::fprintf(stderr, "ringway-passwd: %s: %s user \"%s\"\n", path.c_str(),
                 deleting ? "deleted" : found ? "replaced" : "added", name.c_str());
    return 0;
}
