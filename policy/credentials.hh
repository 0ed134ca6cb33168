// credentials: the SMTP AUTH users, loaded from a file of salted slow hashes,
// and the check of a password against them.
//
// File format, one user per line:
//     # comment (a '#' as the first non-blank character)
//     alice:$y$j9T$...$...
// USER is 1..255 bytes without ':', whitespace or control characters and
// is compared exactly (case matters). HASH is a crypt(5) hash from
// libxcrypt: yescrypt ($y$, what hash() and ringway-passwd write), and also
// gost-yescrypt ($gy$), scrypt ($7$), bcrypt ($2b$/$2y$), sha512crypt ($6$)
// and sha256crypt ($5$). Fast or legacy methods (md5crypt, DES, NT hash)
// and plain text are refused. Blank lines are skipped; a CR before the LF
// is tolerated. Every malformed line is reported as "FILE:LINE: problem".
// ringway-passwd (admin/ringway_passwd.cc) edits such files.
//
// verify() costs one hash (yescrypt at libxcrypt's default cost: ~15 ms and
// 16 MiB on this hardware), whether or not the user exists, so timing does
// not tell which users exist. It is too slow for a reactor: the SMTP session
// runs it on a helper thread. It is const and thread-safe (crypt_r with its
// own crypt_data per call); the object is immutable after load, so one
// instance can be shared by every thread. Loaded at start-up and on
// reload by mta from smtp_config::credentials_file.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/base/result.hh"

namespace rw::policy {

class credentials {
public:
    static constexpr size_t max_file_bytes = size_t(16) << 20;
    static constexpr size_t max_line_bytes = 4096;
    static constexpr size_t max_user_bytes = 255;
    static constexpr size_t max_password_bytes = 511;   // crypt_r's limit; longer never verifies
    static constexpr size_t max_errors_shown = 20;      // then "... and N more"

    credentials() = default;  // no users: verify() is always false

    // Reads and parses a file. Errors (one per line, each "FILE:LINE: ..."
    // or "FILE: ..."): unreadable, not a regular file, larger than
    // max_file_bytes, writable by other users (anyone could add a login),
    // malformed lines, duplicate users. A file readable by group or other,
    // or writable by group, loads with a warning (see warnings()).
    static rw::result<credentials, std::string> load(const std::string& path);

    // Parses file text; `source` names it in messages. No permission checks.
    static rw::result<credentials, std::string> parse(std::string_view text, std::string_view source);

    // Whether `password` is user's password. Unknown users, passwords with a
    // NUL byte or longer than max_password_bytes are false after the same
    // work as a real check. Thread-safe.
    bool verify(std::string_view user, std::string_view password) const noexcept;

    // A new yescrypt hash of `password` with a fresh random salt, at
    // libxcrypt's default cost. Refuses an empty password, a NUL byte, or
    // more than max_password_bytes. Thread-safe.
    static rw::result<std::string, std::string> hash(std::string_view password);

    // What is wrong with a user name or a stored hash for this file format;
    // nullopt when fine. Shared with ringway-passwd.
    static std::optional<std::string> user_problem(std::string_view user);
    static std::optional<std::string> hash_problem(std::string_view hash);

    size_t size() const { return _users.size(); }
    // Things the operator should fix that do not stop loading, e.g.
    // "FILE: mode 0644 lets group/other read the password hashes; chmod 600 FILE".
    const std::vector<std::string>& warnings() const { return _warnings; }

private:
    std::unordered_map<std::string, std::string> _users;  // user -> hash
    // What an unknown user is checked against: the first user's hash (so the
    // cost matches a real user's), or a fixed yescrypt setting when empty.
    std::string _dummy;
    std::vector<std::string> _warnings;
};

}  // namespace rw::policy
