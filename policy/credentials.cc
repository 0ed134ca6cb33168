#include "policy/credentials.hh"

#include <crypt.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include <fmt/format.h>

namespace rw::policy {

namespace {

// A valid yescrypt setting at libxcrypt's default cost, used when the file
// has no users so that a check still costs one hash. Its output is never
// compared with anything a client could match.
constexpr const char* k_fallback_setting = "$y$j9T$RnoghSHlsbqK/K/FRvd1G0";

// crypt_r refuses longer passphrases (the NUL needs a byte of its buffer).
static_assert(credentials::max_password_bytes < CRYPT_MAX_PASSPHRASE_SIZE);

// crypt(5) methods we accept, all salted and deliberately slow, with the
// fewest '$' a complete hash of each has (a bare setting has one less).
struct method {
    std::string_view prefix;
    size_t min_dollars;
};
constexpr method k_methods[] = {
    {"$y$", 4},   // $y$params$salt$hash
    {"$gy$", 4},  // $gy$params$salt$hash
    {"$7$", 3},   // $7$params+salt$hash
    {"$2b$", 3},  // $2b$cost$salt+hash
    {"$2y$", 3},
    {"$6$", 3},   // $6$[rounds=N$]salt$hash
    {"$5$", 3},
};

// A NUL-terminated copy of a secret that is wiped when it goes away.
class secret {
public:
    explicit secret(std::string_view s) : _buf(new char[s.size() + 1]), _size(s.size() + 1) {
        if (!s.empty())  // an empty view may have a null data()
            std::memcpy(_buf.get(), s.data(), s.size());
        _buf[s.size()] = '\0';
    }
    ~secret() { explicit_bzero(_buf.get(), _size); }
    secret(const secret&) = delete;
    secret& operator=(const secret&) = delete;
    const char* c_str() const { return _buf.get(); }

private:
    std::unique_ptr<char[]> _buf;
    size_t _size;
};

// crypt_r's 32 KiB work area, on the heap (helper threads may have small
// stacks) and wiped afterwards: it held password-derived state.
struct crypt_area {
    std::unique_ptr<crypt_data> d{new crypt_data()};  // value-initialised: initialized = 0
    ~crypt_area() { explicit_bzero(d.get(), sizeof *d); }
};

// Compares the whole of `stored` whatever the contents, so the time taken
// depends on the lengths only. Returns equality.
bool equal_ct(const char* out, std::string_view stored) {
    size_t out_len = std::strlen(out);
    volatile unsigned char diff = out_len != stored.size() ? 1 : 0;
    for (size_t i = 0; i < stored.size(); ++i) {
        unsigned char o = out_len ? static_cast<unsigned char>(out[i % out_len]) : 0;
        diff = diff | static_cast<unsigned char>(o ^ static_cast<unsigned char>(stored[i]));
    }
    return diff == 0;
}

std::string quoted(std::string_view s) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size() && i < 64; ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        out += (c < 0x20 || c == 0x7f) ? '?' : char(c);
    }
    if (s.size() > 64)
        out += "...";
    return out + "\"";
}

std::string join_errors(const std::vector<std::string>& errors) {
    std::string out;
    size_t shown = std::min(errors.size(), credentials::max_errors_shown);
    for (size_t i = 0; i < shown; ++i) {
        if (i)
            out += '\n';
        out += errors[i];
    }
    if (errors.size() > shown)
        out += fmt::format("\n... and {} more", errors.size() - shown);
    return out;
}

}  // namespace

std::optional<std::string> credentials::user_problem(std::string_view user) {
    if (user.empty())
        return "empty user name";
    if (user.size() > max_user_bytes)
        return fmt::format("user name longer than {} bytes", max_user_bytes);
    if (user.front() == '#')
        return "user name starts with '#' (that would be a comment)";
    for (char ch : user) {
        auto c = static_cast<unsigned char>(ch);
        if (c == ':')
            return "user name contains ':'";
        if (c <= 0x20 || c == 0x7f)
            return "user name contains a space or control character";
    }
    return std::nullopt;
}

std::optional<std::string> credentials::hash_problem(std::string_view h) {
    if (h.empty())
        return "empty hash";
    const method* m = nullptr;
    for (const auto& candidate : k_methods)
        if (h.starts_with(candidate.prefix))
            m = &candidate;
    if (!m) {
        // Name the method ("$1$"), never echo the rest: it may be a password.
        size_t end = h.find('$', 1);
        std::string what = h.front() == '$' && end != std::string_view::npos && end <= 8
                               ? fmt::format("the method {}", quoted(h.substr(0, end + 1)))
                               : std::string("plain text or a legacy hash");
        return fmt::format("{} is not supported (expected a salted slow crypt(5) hash such as $y$...; "
                           "make one with ringway-passwd)",
                           what);
    }
    for (char c : h) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '/' || c == '$' || c == '=';
        if (!ok)
            return std::string("hash contains a character crypt(5) never writes");
    }
    size_t last = h.rfind('$');
    size_t dollars = size_t(std::count(h.begin(), h.end(), '$'));
    if (last + 1 >= h.size() || dollars < m->min_dollars || h.size() < 20)
        return "hash is cut short (a salt without the hash?)";
    std::string z(h);
    if (crypt_checksalt(z.c_str()) != CRYPT_SALT_OK)
        return "hash parameters are malformed or too weak";
    return std::nullopt;
}

rw::result<credentials, std::string> credentials::parse(std::string_view text, std::string_view source) {
    credentials c;
    std::vector<std::string> errors;
    std::unordered_map<std::string, size_t> line_of;
    if (text.size() > max_file_bytes)
        return unexpected(fmt::format("{}: larger than {} bytes", source, max_file_bytes));
    size_t start = 0, lineno = 0;
    while (start < text.size()) {
        size_t nl = text.find('\n', start);
        std::string_view line = text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
        start = nl == std::string_view::npos ? text.size() : nl + 1;
        ++lineno;
        if (!line.empty() && line.back() == '\r')
            line.remove_suffix(1);
        if (line.size() > max_line_bytes) {
            errors.push_back(fmt::format("{}:{}: line longer than {} bytes", source, lineno, max_line_bytes));
            continue;
        }
        size_t first = line.find_first_not_of(" \t");
        if (first == std::string_view::npos || line[first] == '#')
            continue;
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) {
            errors.push_back(fmt::format("{}:{}: expected USER:HASH, found no ':'", source, lineno));
            continue;
        }
        std::string_view user = line.substr(0, colon), h = line.substr(colon + 1);
        if (auto why = user_problem(user)) {
            errors.push_back(fmt::format("{}:{}: {}", source, lineno, *why));
            continue;
        }
        if (h.find(':') != std::string_view::npos) {
            errors.push_back(fmt::format("{}:{}: user {}: more than one ':' (expected USER:HASH)", source, lineno,
                                         quoted(user)));
            continue;
        }
        if (auto why = hash_problem(h)) {
            errors.push_back(fmt::format("{}:{}: user {}: {}", source, lineno, quoted(user), *why));
            continue;
        }
        std::string u(user);
        if (auto seen = line_of.find(u); seen != line_of.end()) {
            errors.push_back(fmt::format("{}:{}: user {} is already defined on line {}", source, lineno, quoted(user),
                                         seen->second));
            continue;
        }
        line_of.emplace(u, lineno);
        if (c._dummy.empty())
            c._dummy = std::string(h);
        c._users.emplace(std::move(u), std::string(h));
    }
    if (!errors.empty())
        return unexpected(join_errors(errors));
    if (c._dummy.empty())
        c._dummy = k_fallback_setting;
    return c;
}

rw::result<credentials, std::string> credentials::load(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return unexpected(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } guard{fd};
    struct stat st{};
    if (::fstat(fd, &st) != 0)
        return unexpected(fmt::format("{}: cannot stat: {}", path, std::strerror(errno)));
    if (!S_ISREG(st.st_mode))
        return unexpected(fmt::format("{}: not a regular file", path));
    if (st.st_mode & S_IWOTH)
        return unexpected(fmt::format("{}: mode {:04o} lets any user add a login; chmod 600 {}", path,
                                      st.st_mode & 07777, path));
    if (uint64_t(st.st_size) > max_file_bytes)
        return unexpected(fmt::format("{}: larger than {} bytes", path, max_file_bytes));
    std::string text;
    text.resize(size_t(st.st_size));
    size_t got = 0;
    while (got < text.size()) {
        ssize_t n = ::read(fd, text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return unexpected(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
        if (n == 0)
            break;  // shrank under us; parse what is there
        got += size_t(n);
    }
    text.resize(got);
    auto c = parse(text, path);
    if (!c)
        return c;
    if (st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP))
        c->_warnings.push_back(fmt::format("{}: mode {:04o} lets {} the password hashes; chmod 600 {}", path,
                                           st.st_mode & 07777,
                                           (st.st_mode & S_IWGRP) ? "the group change" : "group/other read", path));
    return c;
}

bool credentials::verify(std::string_view user, std::string_view password) const noexcept {
    // The same work on every path: look up, then exactly one crypt_r.
    bool usable = password.size() <= max_password_bytes && password.find('\0') == std::string_view::npos;
    auto it = _users.find(std::string(user));
    bool known = it != _users.end();
    std::string_view stored = k_fallback_setting;
    if (known)
        stored = it->second;
    else if (!_dummy.empty())
        stored = _dummy;
    secret pw(usable ? password : std::string_view());
    secret setting(stored);
    crypt_area area;
    const char* out = crypt_r(pw.c_str(), setting.c_str(), area.d.get());
    bool produced = out != nullptr && out[0] != '*';
    bool same = equal_ct(produced ? out : "*", stored);
    return usable && known && produced && same;
}

rw::result<std::string, std::string> credentials::hash(std::string_view password) {
    if (password.empty())
        return unexpected(std::string("empty password"));
    if (password.find('\0') != std::string_view::npos)
        return unexpected(std::string("password contains a NUL byte"));
    if (password.size() > max_password_bytes)
        return unexpected(fmt::format("password longer than {} bytes", max_password_bytes));
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    // count 0: libxcrypt's default cost; rbytes NULL: libxcrypt reads the
    // salt from the kernel (CRYPT_GENSALT_IMPLEMENTS_AUTO_ENTROPY).
    static_assert(CRYPT_GENSALT_IMPLEMENTS_AUTO_ENTROPY, "libxcrypt must find salt entropy itself");
    if (!crypt_gensalt_rn("$y$", 0, nullptr, 0, setting, sizeof setting))
        return unexpected(fmt::format("crypt_gensalt_rn($y$): {}", std::strerror(errno)));
    secret pw(password);
    crypt_area area;
    const char* out = crypt_r(pw.c_str(), setting, area.d.get());
    if (!out || out[0] == '*')
        return unexpected(fmt::format("crypt_r(yescrypt) failed: {}", std::strerror(errno)));
    return std::string(out);
}

}  // namespace rw::policy
