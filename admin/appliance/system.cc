#include "admin/appliance/system.hh"

#include <arpa/inet.h>
#include <crypt.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <toml++/toml.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sstream>

#include "policy/cidr.hh"
#include "policy/relay.hh"

namespace rw::admin::appliance {

namespace {

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

std::string read_text(const std::string& path, bool& found) {
    std::ifstream in(path, std::ios::binary);
    found = bool(in);
    if (!in)
        return {};
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<unsigned char> base64_decode(std::string_view b64) {
    if (b64.empty() || b64.size() % 4 != 0)
        return {};
    std::vector<unsigned char> out(b64.size() / 4 * 3);
    int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(b64.data()), int(b64.size()));
    if (n < 0)
        return {};
    size_t pad = 0;
    if (b64.back() == '=')
        pad = b64[b64.size() - 2] == '=' ? 2 : 1;
    out.resize(size_t(n) - pad);
    return out;
}

}  // namespace

std::string check_hostname(std::string_view name) {
    if (name.empty())
        return "empty";
    if (name.back() == '.')
        name.remove_suffix(1);
    if (name.size() > 253)
        return "longer than 253 characters";
    size_t labels = 0;
    size_t start = 0;
    while (start <= name.size()) {
        size_t dot = name.find('.', start);
        std::string_view label = name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (label.empty())
            return "has an empty label (two dots, or a dot at the start)";
        if (label.size() > 63)
            return fmt::format("label \"{}\" is longer than 63 characters", label);
        for (char c : label)
            if (!is_alnum(c) && c != '-')
                return fmt::format("label \"{}\" has a character other than letters, digits and '-'", label);
        if (label.front() == '-' || label.back() == '-')
            return fmt::format("label \"{}\" starts or ends with '-'", label);
        ++labels;
        if (dot == std::string_view::npos)
            break;
        start = dot + 1;
    }
    if (labels < 2)
        return "not fully qualified: give the whole name, like mx1.example.com";
    bool all_digits = true;
    for (char c : name)
        all_digits &= (c >= '0' && c <= '9') || c == '.';
    if (all_digits)
        return "looks like an address, not a name";
    return {};
}

std::string check_ip(std::string_view ip) {
    std::string s(ip);
    unsigned char buf[16];
    if (s.empty())
        return "empty";
    if (inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1)
        return {};
    return fmt::format("\"{}\" is not an IPv4 or IPv6 address", ip);
}

std::string check_address_prefix(std::string_view cidr) {
    size_t slash = cidr.find('/');
    if (slash == std::string_view::npos)
        return "give the prefix length too, like 192.0.2.10/24";
    std::string ip(cidr.substr(0, slash));
    std::string_view len = cidr.substr(slash + 1);
    unsigned char buf[16];
    unsigned max;
    if (inet_pton(AF_INET, ip.c_str(), buf) == 1)
        max = 32;
    else if (inet_pton(AF_INET6, ip.c_str(), buf) == 1)
        max = 128;
    else
        return fmt::format("\"{}\" is not an IPv4 or IPv6 address", ip);
    if (len.empty() || len.size() > 3)
        return "the prefix length is not a number";
    unsigned n = 0;
    for (char c : len) {
        if (c < '0' || c > '9')
            return "the prefix length is not a number";
        n = n * 10 + unsigned(c - '0');
    }
    if (n == 0 || n > max)
        return fmt::format("the prefix length must be 1..{}", max);
    return {};
}

std::string check_domain(std::string_view domain) {
    std::string why;
    if (domain.empty())
        return "empty";
    if (domain.front() == '[')
        return "an address literal is not a domain";
    if (!policy::canonical_domain(domain, false, why))
        return why;
    if (domain.find('.') == std::string_view::npos)
        return "not a domain with a dot, like example.com";
    return {};
}

std::string check_network(std::string_view net) {
    std::string why;
    auto c = policy::cidr::parse(net, why);
    if (!c)
        return why.empty() ? fmt::format("\"{}\" is not a network like 10.0.0.0/8", net) : why;
    if (c->prefix_len() == 0)
        return "a network of every address would make an open relay";
    return {};
}

std::string check_mail_server(std::string_view server) {
    if (server.empty())
        return "empty";
    std::string_view host = server;
    std::string_view port;
    if (server.front() == '[') {
        size_t close = server.find(']');
        if (close == std::string_view::npos)
            return "a '[' without its ']'";
        host = server.substr(1, close - 1);
        if (close + 1 < server.size()) {
            if (server[close + 1] != ':')
                return "expected :PORT after ']'";
            port = server.substr(close + 2);
        }
        if (auto e = check_ip(host); !e.empty())
            return e;
    } else {
        size_t colon = server.rfind(':');
        if (colon != std::string_view::npos && server.find(':') == colon) {
            host = server.substr(0, colon);
            port = server.substr(colon + 1);
        } else if (colon != std::string_view::npos) {
            return "write an IPv6 address in brackets: [2001:db8::25]:25";
        }
        if (check_ip(host).empty())
            ;
        else if (auto e = check_hostname(host); !e.empty())
            return fmt::format("\"{}\": {}", host, e);
    }
    if (!port.empty() || (server.back() == ':')) {
        unsigned p = 0;
        if (port.empty() || port.size() > 5)
            return "the port is not a number 1..65535";
        for (char c : port) {
            if (c < '0' || c > '9')
                return "the port is not a number 1..65535";
            p = p * 10 + unsigned(c - '0');
        }
        if (p == 0 || p > 65535)
            return "the port is not a number 1..65535";
    }
    return {};
}

std::string check_ssh_key(std::string_view line) {
    static constexpr std::string_view types[] = {"ssh-ed25519",         "ssh-rsa",
                                                 "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                                                 "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                                                 "sk-ecdsa-sha2-nistp256@openssh.com"};
    for (char c : line)
        if (c == '\n' || c == '\r' || c == '\0')
            return "a key is one line";
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos)
        return "expected \"TYPE KEY [COMMENT]\", as in a .pub file";
    std::string_view type = line.substr(0, sp);
    bool known = false;
    for (auto t : types)
        known |= t == type;
    if (!known)
        return fmt::format("\"{}\" is not an SSH key type this appliance accepts (ssh-ed25519, ssh-rsa, ecdsa-...)",
                           type);
    std::string_view rest = line.substr(sp + 1);
    size_t end = rest.find(' ');
    std::string_view b64 = rest.substr(0, end);
    auto blob = base64_decode(b64);
    if (blob.size() < 4 + type.size())
        return "the key is not valid base64";
    uint32_t n = (uint32_t(blob[0]) << 24) | (uint32_t(blob[1]) << 16) | (uint32_t(blob[2]) << 8) | blob[3];
    if (n != type.size() || std::memcmp(blob.data() + 4, type.data(), type.size()) != 0)
        return "the key's data does not match its type (a damaged or truncated key?)";
    if (type == "ssh-rsa" && blob.size() < 256)
        return "an RSA key shorter than 2048 bits";
    return {};
}

std::string check_password(std::string_view pw) {
    if (pw.size() < 8)
        return "shorter than 8 characters";
    if (pw.size() > 256)
        return "longer than 256 characters";
    for (unsigned char c : pw)
        if (c < 0x20 || c == 0x7f)
            return "has a control character";
    return {};
}

std::vector<std::string> split_list(std::string_view text) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : text) {
        if (c == ' ' || c == ',' || c == '\t') {
            if (!cur.empty())
                out.push_back(std::move(cur));
            cur.clear();
        } else {
            cur += c;
        }
    }
    if (!cur.empty())
        out.push_back(std::move(cur));
    return out;
}

std::vector<std::string> check_answers(const setup_answers& a) {
    std::vector<std::string> p;
    auto add = [&p](std::string_view what, const std::string& why) {
        if (!why.empty())
            p.push_back(fmt::format("{}: {}", what, why));
    };
    add("hostname", check_hostname(a.hostname));
    if (!a.network.dhcp) {
        add("network.address", check_address_prefix(a.network.address));
        add("network.gateway", check_ip(a.network.gateway));
        if (a.network.dns.empty())
            p.push_back("network.dns: give at least one DNS server");
        for (const auto& d : a.network.dns)
            add("network.dns", check_ip(d));
    }
    if (a.password.empty() && a.password_hash.empty() && a.ssh_keys.empty())
        p.push_back("admin: give a password or an SSH key, or nobody can log in");
    if (!a.password.empty())
        add("admin.password", check_password(a.password));
    if (!a.password_hash.empty() && (a.password_hash[0] != '$' || a.password_hash.find(':') != std::string::npos ||
                                     a.password_hash.find('\n') != std::string::npos))
        p.push_back("admin.password_hash: not a crypt(3) hash like $y$...");
    for (const auto& k : a.ssh_keys)
        add("admin.ssh_keys", check_ssh_key(k));
    for (const auto& d : a.accepted_domains)
        add(fmt::format("mail.accepted_domains \"{}\"", d), check_domain(d));
    if (!a.accepted_domains.empty() && a.internal_server.empty())
        p.push_back("mail.internal_server: where should mail for the accepted domains go? (host[:port])");
    if (!a.internal_server.empty())
        add("mail.internal_server", check_mail_server(a.internal_server));
    for (const auto& n : a.relay_networks)
        add(fmt::format("mail.relay_networks \"{}\"", n), check_network(n));
    return p;
}

result<setup_answers, std::string> parse_seed(std::string_view text, std::string_view source) {
    toml::table t;
    try {
        t = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
        const auto& b = e.source().begin;
        return unexpected(fmt::format("{}:{}:{}: {}", source, b.line, b.column, e.description()));
    }
    setup_answers a;
    std::vector<std::string> p;
    auto str = [&p](const toml::table& tab, std::string_view sect, std::string_view key, std::string& out) {
        if (auto n = tab.get(key)) {
            if (auto s = n->value<std::string>())
                out = *s;
            else
                p.push_back(fmt::format("{}{}: expected a string", sect, key));
        }
    };
    auto list = [&p](const toml::table& tab, std::string_view sect, std::string_view key,
                     std::vector<std::string>& out) {
        if (auto n = tab.get(key)) {
            auto arr = n->as_array();
            if (!arr) {
                p.push_back(fmt::format("{}{}: expected a list of strings", sect, key));
                return;
            }
            for (const auto& e : *arr) {
                if (auto s = e.value<std::string>())
                    out.push_back(*s);
                else
                    p.push_back(fmt::format("{}{}: expected a list of strings", sect, key));
            }
        }
    };
    auto unknown = [&p](const toml::table& tab, std::string_view sect, std::initializer_list<std::string_view> keys) {
        for (const auto& [k, v] : tab) {
            bool ok = false;
            for (auto key : keys)
                ok |= k.str() == key;
            if (!ok)
                p.push_back(fmt::format("{}{}: not a seed key", sect, k.str()));
        }
    };
    unknown(t, "", {"hostname", "network", "admin", "mail"});
    str(t, "", "hostname", a.hostname);
    if (auto n = t["network"].as_table()) {
        unknown(*n, "network.", {"mode", "address", "gateway", "dns"});
        std::string mode = "dhcp";
        str(*n, "network.", "mode", mode);
        if (mode != "dhcp" && mode != "static")
            p.push_back("network.mode: \"dhcp\" or \"static\"");
        a.network.dhcp = mode == "dhcp";
        str(*n, "network.", "address", a.network.address);
        str(*n, "network.", "gateway", a.network.gateway);
        list(*n, "network.", "dns", a.network.dns);
    }
    if (auto n = t["admin"].as_table()) {
        unknown(*n, "admin.", {"password", "password_hash", "ssh_keys"});
        str(*n, "admin.", "password", a.password);
        str(*n, "admin.", "password_hash", a.password_hash);
        list(*n, "admin.", "ssh_keys", a.ssh_keys);
    }
    if (auto n = t["mail"].as_table()) {
        unknown(*n, "mail.", {"accepted_domains", "internal_server", "relay_networks"});
        list(*n, "mail.", "accepted_domains", a.accepted_domains);
        str(*n, "mail.", "internal_server", a.internal_server);
        list(*n, "mail.", "relay_networks", a.relay_networks);
    }
    for (auto& x : check_answers(a))
        p.push_back(std::move(x));
    if (!p.empty()) {
        std::string all;
        for (const auto& x : p)
            all += fmt::format("{}{}: {}", all.empty() ? "" : "\n", source, x);
        return unexpected(all);
    }
    return a;
}

result<void, std::string> replace_file(const std::string& path, std::string_view text, unsigned mode) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path p(path);
    fs::create_directories(p.parent_path(), ec);
    struct stat old{};
    bool existed = ::stat(path.c_str(), &old) == 0;
    std::string tmp = path + ".ringway-new";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return unexpected(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
    size_t off = 0;
    while (off < text.size()) {
        ssize_t n = ::write(fd, text.data() + off, text.size() - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            return unexpected(fmt::format("cannot write {}: {}", tmp, std::strerror(e)));
        }
        off += size_t(n);
    }
    if (existed && ::geteuid() == 0)
        (void)::fchown(fd, old.st_uid, old.st_gid);
    ::fchmod(fd, existed ? (old.st_mode & 07777) : mode);
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return unexpected(fmt::format("cannot write {}: {}", tmp, std::strerror(e)));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return unexpected(fmt::format("cannot replace {}: {}", path, std::strerror(e)));
    }
    int dfd = ::open(p.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    return {};
}

result<void, std::string> write_hostname(const std::string& root, const std::string& name) {
    std::string n = name;
    if (!n.empty() && n.back() == '.')
        n.pop_back();
    if (auto r = replace_file(root + "/etc/hostname", n + "\n", 0644); !r)
        return r;
    std::string shortname = n.substr(0, n.find('.'));
    std::string hosts = fmt::format(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{} {}\n::1\t\tlocalhost ip6-localhost ip6-loopback\n", n, shortname);
    return replace_file(root + "/etc/hosts", hosts, 0644);
}

result<void, std::string> write_network(const std::string& root, const network_settings& n) {
    const std::string path = root + "/etc/systemd/network/10-ringway-static.network";
    if (n.dhcp && n.dns.empty()) {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            return unexpected(fmt::format("cannot remove {}: {}", path, std::strerror(errno)));
        return {};
    }
    std::string text =
        "# Written by the ringway shell (interfaceconfig, setgateway, dnsconfig).\n"
        "[Match]\nName=en* eth*\n\n[Network]\n";
    if (n.dhcp) {
        // DHCP for the address, the operator's name servers for DNS.
        text += "DHCP=yes\n";
    } else {
        text += fmt::format("DHCP=no\nAddress={}\n", n.address);
        if (!n.gateway.empty())
            text += fmt::format("Gateway={}\n", n.gateway);
    }
    for (const auto& d : n.dns)
        text += fmt::format("DNS={}\n", d);
    if (n.dhcp)
        text += "\n[DHCPv4]\nUseDNS=no\n\n[DHCPv6]\nUseDNS=no\n";
    return replace_file(path, text, 0644);
}

network_settings read_network(const std::string& root) {
    bool found = false;
    std::string text = read_text(root + "/etc/systemd/network/10-ringway-static.network", found);
    network_settings n;
    if (!found)
        return n;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("DHCP="))
            n.dhcp = line == "DHCP=yes";
        else if (line.starts_with("Address="))
            n.address = line.substr(8);
        else if (line.starts_with("Gateway="))
            n.gateway = line.substr(8);
        else if (line.starts_with("DNS="))
            n.dns.push_back(line.substr(4));
    }
    return n;
}

result<std::string, std::string> hash_password(std::string_view pw) {
    char* salt = crypt_gensalt_ra("$y$", 0, nullptr, 0);
    if (!salt)
        return unexpected(std::string("cannot make a password salt: ") + std::strerror(errno));
    crypt_data data{};
    std::string p(pw);
    const char* h = crypt_r(p.c_str(), salt, &data);
    std::free(salt);
    if (!h || h[0] == '*')
        return unexpected(std::string("cannot hash the password"));
    return std::string(h);
}

result<void, std::string> set_password_hash(const std::string& root, const std::string& user,
                                            const std::string& hash) {
    const std::string path = root + "/etc/shadow";
    bool found = false;
    std::string text = read_text(path, found);
    if (!found)
        return unexpected(fmt::format("cannot read {}", path));
    std::string out;
    bool done = false;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.compare(0, user.size() + 1, user + ":") == 0) {
            size_t a = line.find(':');
            size_t b = line.find(':', a + 1);
            if (b == std::string::npos)
                return unexpected(fmt::format("{}: the line of {} is damaged", path, user));
            line = line.substr(0, a + 1) + hash + line.substr(b);
            done = true;
        }
        out += line + "\n";
    }
    if (!done)
        return unexpected(fmt::format("{}: no user {}", path, user));
    return replace_file(path, out, 0640);
}

result<void, std::string> write_authorized_keys(const std::string& root, const std::string& home,
                                                const std::vector<std::string>& keys, unsigned uid, unsigned gid) {
    const std::string dir = root + home + "/.ssh";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    ::chmod(dir.c_str(), 0700);
    if (::geteuid() == 0)
        (void)::chown(dir.c_str(), uid, gid);
    std::string text;
    for (const auto& k : keys)
        text += k + "\n";
    const std::string path = dir + "/authorized_keys";
    ::unlink(path.c_str());  // owner and mode are set afresh below
    if (auto r = replace_file(path, text, 0600); !r)
        return r;
    if (::geteuid() == 0 && ::chown(path.c_str(), uid, gid) != 0)
        return unexpected(fmt::format("cannot give {} to uid {}: {}", path, uid, std::strerror(errno)));
    return {};
}

int run_program(const std::vector<std::string>& argv, std::string* out) {
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int pipefd[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (out) {
        if (::pipe2(pipefd, O_CLOEXEC) != 0)
            return -1;
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    }
    pid_t pid;
    int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (out)
        ::close(pipefd[1]);
    if (rc != 0) {
        if (out)
            ::close(pipefd[0]);
        return -1;
    }
    if (out) {
        char buf[4096];
        for (;;) {
            ssize_t n = ::read(pipefd[0], buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            if (out->size() < 65536)
                out->append(buf, size_t(n));
        }
        ::close(pipefd[0]);
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::optional<std::string> read_file(const std::string& path) {
    bool found = false;
    std::string t = read_text(path, found);
    if (!found)
        return std::nullopt;
    return t;
}

}  // namespace rw::admin::appliance
