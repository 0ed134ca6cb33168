#include "admin/appliance/upgrade.hh"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cerrno>
#include <algorithm>
#include <charconv>
#include <cstring>
#include <fmt/format.h>
#include <memory>
#include <sstream>
#include <vector>

namespace rw::admin::appliance {

namespace {

constexpr size_t k_block = 512;
constexpr size_t k_max_small_member = 64 * 1024;  // manifest, signature
constexpr size_t k_chunk = 1 << 20;

std::string hex(const unsigned char* p, size_t n) {
    static const char* d = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; ++i) {
        s += d[p[i] >> 4];
        s += d[p[i] & 15];
    }
    return s;
}

// Reads exactly n bytes; false at end of input or on an error (err set).
bool read_full(int fd, char* p, size_t n, std::string& err) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = ::read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = fmt::format("reading the bundle: {}", std::strerror(errno));
            return false;
        }
        if (r == 0) {
            err = "the bundle ends early (was it copied whole?)";
            return false;
        }
        got += size_t(r);
    }
    return true;
}

bool write_full(int fd, const char* p, size_t n, uint64_t off, std::string& err) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = ::pwrite(fd, p + done, n - done, off_t(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            err = fmt::format("writing the slot: {}", std::strerror(errno));
            return false;
        }
        done += size_t(r);
    }
    return true;
}

struct tar_member {
    std::string name;
    uint64_t size = 0;
    char type = '0';
};

uint64_t octal(const char* p, size_t n, bool& ok) {
    uint64_t v = 0;
    size_t i = 0;
    while (i < n && p[i] == ' ')
        ++i;
    ok = i < n && p[i] >= '0' && p[i] <= '7';
    for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i)
        v = v * 8 + uint64_t(p[i] - '0');
    for (; i < n; ++i)
        if (p[i] != ' ' && p[i] != '\0')
            ok = false;
    return v;
}

// The next member's header; an empty name at the end of the archive.
result<tar_member, std::string> next_header(int fd) {
    char h[k_block];
    std::string err;
    if (!read_full(fd, h, k_block, err))
        return unexpected(err);
    if (std::all_of(h, h + k_block, [](char c) { return c == 0; }))
        return tar_member{};
    bool ok = false;
    const uint64_t sum = octal(h + 148, 8, ok);
    uint64_t mine = 0;
    for (size_t i = 0; i < k_block; ++i)
        mine += (i >= 148 && i < 156) ? uint64_t(' ') : uint64_t(static_cast<unsigned char>(h[i]));
    if (!ok || sum != mine)
        return unexpected(std::string("this is not an upgrade bundle (not a tar archive, or a damaged one)"));
    tar_member m;
    m.name.assign(h, strnlen(h, 100));
    m.size = octal(h + 124, 12, ok);
    if (!ok)
        return unexpected(fmt::format("the bundle's member {} has an unreadable size", m.name));
    m.type = h[156] == '\0' ? '0' : h[156];
    return m;
}

result<std::string, std::string> read_member(int fd, const tar_member& m) {
    if (m.size > k_max_small_member)
        return unexpected(fmt::format("the bundle's {} is {} bytes: too large", m.name, m.size));
    const size_t padded = (m.size + k_block - 1) / k_block * k_block;
    std::string s(padded, '\0');
    std::string err;
    if (padded && !read_full(fd, s.data(), padded, err))
        return unexpected(err);
    s.resize(m.size);
    return s;
}

result<void, std::string> skip(int fd, uint64_t n) {
    char buf[8192];
    std::string err;
    while (n) {
        size_t k = size_t(std::min<uint64_t>(n, sizeof buf));
        if (!read_full(fd, buf, k, err))
            return unexpected(err);
        n -= k;
    }
    return {};
}

uint64_t device_size(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        return 0;
    if (S_ISBLK(st.st_mode)) {
        uint64_t b = 0;
        return ::ioctl(fd, BLKGETSIZE64, &b) == 0 ? b : 0;
    }
    return uint64_t(st.st_size);
}

using md_ctx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

md_ctx sha256_ctx() {
    md_ctx c(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (c && EVP_DigestInit_ex(c.get(), EVP_sha256(), nullptr) != 1)
        c.reset();
    return c;
}

std::string sha256_final(EVP_MD_CTX* c) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(c, md, &n);
    return hex(md, n);
}

// Makes a refused slot unbootable: its first MiB zeroed.
void wipe_start(int fd) {
    std::vector<char> z(k_chunk, 0);
    std::string err;
    write_full(fd, z.data(), z.size(), 0, err);
    ::fsync(fd);
}

}  // namespace

result<bundle_manifest, std::string> parse_manifest(std::string_view text) {
    bundle_manifest m;
    std::istringstream in{std::string(text)};
    for (std::string line; std::getline(in, line);) {
        if (line.empty())
            continue;
        auto eq = line.find('=');
        if (eq == std::string::npos)
            return unexpected(fmt::format("manifest line \"{}\" is not name=value", line));
        std::string k = line.substr(0, eq), v = line.substr(eq + 1);
        if (k == "format") {
            m.format = v == "1" ? 1 : -1;
        } else if (k == "version") {
            m.version = v;
        } else if (k == "root_sha256") {
            if (v.size() != 64 || v.find_first_not_of("0123456789abcdef") != std::string::npos)
                return unexpected(std::string("manifest root_sha256 is not a SHA-256 in hex"));
            m.root_sha256 = v;
        } else if (k == "root_bytes") {
            auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), m.root_bytes);
            if (ec != std::errc() || p != v.data() + v.size() || m.root_bytes == 0)
                return unexpected(std::string("manifest root_bytes is not a size"));
        }
    }
    if (m.format != 1)
        return unexpected(std::string("the bundle's format is not one this system reads (format=1)"));
    if (m.version.empty() || m.root_sha256.empty() || m.root_bytes == 0)
        return unexpected(std::string("the bundle's manifest lacks version, root_sha256 or root_bytes"));
    return m;
}

result<void, std::string> verify_signature(std::string_view message, std::string_view signature,
                                           std::string_view pubkey_pem) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pubkey_pem.data(), int(pubkey_pem.size())), BIO_free);
    if (!bio)
        return unexpected(std::string("out of memory"));
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr),
                                                          EVP_PKEY_free);
    if (!key || EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519)
        return unexpected(std::string("the system's upgrade key is not an Ed25519 public key"));
    md_ctx c(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!c || EVP_DigestVerifyInit(c.get(), nullptr, nullptr, nullptr, key.get()) != 1)
        return unexpected(std::string("cannot start verifying the signature"));
    int ok = EVP_DigestVerify(c.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                              reinterpret_cast<const unsigned char*>(message.data()), message.size());
    if (ok != 1)
        return unexpected(std::string(
            "the bundle's signature does not verify against this system's upgrade key: it was not made for this "
            "appliance or it was altered"));
    return {};
}

result<bundle_manifest, std::string> install_bundle(int in, const std::string& slot_path, std::string_view pubkey,
                                                    const progress_fn& progress) {
    std::string manifest_text, sig;
    bool have_manifest = false, have_sig = false;
    bundle_manifest m;
    for (;;) {
        auto h = next_header(in);
        if (!h)
            return unexpected(h.error());
        const tar_member& t = h.value();
        if (t.name.empty())
            return unexpected(std::string("the bundle has no root.squashfs"));
        if (t.type == 'x' || t.type == 'g') {  // pax attributes: not needed
            if (auto r = skip(in, (t.size + k_block - 1) / k_block * k_block); !r)
                return unexpected(r.error());
            continue;
        }
        if (t.type != '0')
            return unexpected(fmt::format("the bundle's member {} is not a plain file", t.name));
        if (t.name == "manifest" || t.name == "manifest.sig") {
            auto body = read_member(in, t);
            if (!body)
                return unexpected(body.error());
            (t.name == "manifest" ? manifest_text : sig) = std::move(body.value());
            (t.name == "manifest" ? have_manifest : have_sig) = true;
            continue;
        }
        if (t.name != "root.squashfs")
            return unexpected(fmt::format("the bundle holds {}, which no bundle has", t.name));
        // Nothing is written before the manifest is known to be ours.
        if (!have_manifest || !have_sig)
            return unexpected(std::string("the bundle's root.squashfs comes before its signed manifest"));
        if (auto r = verify_signature(manifest_text, sig, pubkey); !r)
            return unexpected(r.error());
        auto pm = parse_manifest(manifest_text);
        if (!pm)
            return unexpected(pm.error());
        m = pm.value();
        if (t.size != m.root_bytes)
            return unexpected(fmt::format("the bundle's root.squashfs is {} bytes; its manifest says {}", t.size,
                                          m.root_bytes));
        int fd = ::open(slot_path.c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return unexpected(fmt::format("cannot open the slot {}: {}", slot_path, std::strerror(errno)));
        struct closer {
            int fd;
            ~closer() { ::close(fd); }
        } close_slot{fd};
        const uint64_t room = device_size(fd);
        if (m.root_bytes > room)
            return unexpected(fmt::format("the new system ({} MiB) does not fit in the slot ({} MiB)",
                                          m.root_bytes >> 20, room >> 20));
        auto hash = sha256_ctx();
        if (!hash)
            return unexpected(std::string("cannot start a SHA-256"));
        std::vector<char> buf(k_chunk);
        std::string err;
        uint64_t done = 0;
        while (done < m.root_bytes) {
            size_t n = size_t(std::min<uint64_t>(k_chunk, m.root_bytes - done));
            if (!read_full(in, buf.data(), n, err)) {
                wipe_start(fd);
                return unexpected(err);
            }
            if (done == 0 && (n < 4 || std::memcmp(buf.data(), "hsqs", 4) != 0))
                return unexpected(std::string("the bundle's root.squashfs is not a squashfs image"));
            if (!write_full(fd, buf.data(), n, done, err)) {
                wipe_start(fd);
                return unexpected(err);
            }
            EVP_DigestUpdate(hash.get(), buf.data(), n);
            done += n;
            if (progress)
                progress(done, m.root_bytes);
        }
        if (::fsync(fd) != 0) {
            err = fmt::format("syncing the slot: {}", std::strerror(errno));
            wipe_start(fd);
            return unexpected(err);
        }
        const std::string streamed = sha256_final(hash.get());
        if (streamed != m.root_sha256) {
            wipe_start(fd);
            return unexpected(std::string(
                "the bundle's root.squashfs does not match its signed manifest (damaged in transfer?); the slot "
                "was wiped"));
        }
        // Read back what the disk holds, past the page cache.
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        auto again = sha256_ctx();
        for (uint64_t off = 0; off < m.root_bytes;) {
            size_t n = size_t(std::min<uint64_t>(k_chunk, m.root_bytes - off));
            ssize_t r = ::pread(fd, buf.data(), n, off_t(off));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                wipe_start(fd);
                return unexpected(fmt::format("reading the slot back: {}", r < 0 ? std::strerror(errno) : "short"));
            }
            EVP_DigestUpdate(again.get(), buf.data(), size_t(r));
            off += uint64_t(r);
        }
        if (sha256_final(again.get()) != m.root_sha256) {
            wipe_start(fd);
            return unexpected(std::string("the slot does not read back as written (a failing disk?); it was wiped"));
        }
        return m;
    }
}

bool holds_squashfs(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char magic[4] = {};
    bool ok = ::pread(fd, magic, 4, 0) == 4 && std::memcmp(magic, "hsqs", 4) == 0;
    ::close(fd);
    return ok;
}

namespace {
constexpr size_t k_env_size = 1024;
constexpr std::string_view k_env_header = "# GRUB Environment Block\n";

bool env_value_ok(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
               c == ':' || c == '/' || c == '-';
    });
}
}  // namespace

result<std::map<std::string, std::string>, std::string> read_grubenv(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return unexpected(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
    std::string buf(k_env_size, '\0');
    ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
    ::close(fd);
    if (n != ssize_t(k_env_size) || !buf.starts_with(k_env_header))
        return unexpected(fmt::format("{} is not a GRUB environment block", path));
    std::map<std::string, std::string> vars;
    std::istringstream in(buf.substr(k_env_header.size()));
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#')
            continue;
        auto eq = line.find('=');
        if (eq != std::string::npos)
            vars[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return vars;
}

result<void, std::string> update_grubenv(const std::string& path, const std::map<std::string, std::string>& changes) {
    auto cur = read_grubenv(path);
    if (!cur)
        return unexpected(cur.error());
    auto vars = cur.value();
    for (const auto& [k, v] : changes) {
        if (k.empty() || !env_value_ok(k) || !env_value_ok(v))
            return unexpected(fmt::format("bad boot loader setting {}={}", k, v));
        if (v.empty())
            vars.erase(k);
        else
            vars[k] = v;
    }
    std::string body(k_env_header);
    for (const auto& [k, v] : vars)
        body += k + "=" + v + "\n";
    if (body.size() > k_env_size)
        return unexpected(std::string("the boot loader's environment is full"));
    body.resize(k_env_size, '#');
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return unexpected(fmt::format("cannot write {}: {}", path, std::strerror(errno)));
    bool ok = ::pwrite(fd, body.data(), body.size(), 0) == ssize_t(body.size()) && ::fsync(fd) == 0;
    int e = errno;
    ::close(fd);
    if (!ok)
        return unexpected(fmt::format("cannot write {}: {}", path, std::strerror(e)));
    return {};
}

}  // namespace rw::admin::appliance
