// The appliance's own settings: host name, network, the admin's password
// and SSH keys. Used by the first-boot setup (ringway-setup) and by the
// shell's appliance commands through their privileged helper.
//
// Every check returns the reason an answer is refused ("" when it is
// fine), in words an operator can act on. Every change writes under a root
// prefix ("" on the appliance, a scratch folder in the tests) and replaces
// files atomically (a temporary file, fsync, rename).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/result.hh"

namespace rw::admin::appliance {

// ---- checks ----
// A fully qualified host name: labels of letters, digits and '-', not
// starting or ending with '-', 1..63 each, 253 in all, at least two labels.
std::string check_hostname(std::string_view name);
// An IPv4 or IPv6 address without a prefix.
std::string check_ip(std::string_view ip);
// An interface address with its prefix: "192.0.2.10/24", "2001:db8::10/64".
std::string check_address_prefix(std::string_view cidr);
// A mail domain as relay control compares it (policy::canonical_domain).
std::string check_domain(std::string_view domain);
// A network for relay control: "10.0.0.0/8", "192.0.2.7"; not 0.0.0.0/0.
std::string check_network(std::string_view net);
// host[:port] of the internal mail server: a host name or an address.
std::string check_mail_server(std::string_view server);
// One OpenSSH public key line: "TYPE BASE64 [COMMENT]" whose blob names TYPE.
std::string check_ssh_key(std::string_view line);
// The admin password: 8..256 characters, no control characters.
std::string check_password(std::string_view pw);

// Words of a list answer: split on spaces and commas, empty words dropped.
std::vector<std::string> split_list(std::string_view text);

// ---- the answers ----
struct network_settings {
    bool dhcp = true;
    std::string address;  // with its prefix (static only)
    std::string gateway;
    std::vector<std::string> dns;
};

struct setup_answers {
    std::string hostname = "ringway.localdomain";
    network_settings network;
    std::string password;       // clear text, or
    std::string password_hash;  // a crypt(3) hash
    std::vector<std::string> ssh_keys;
    std::vector<std::string> accepted_domains;
    std::string internal_server;  // where accepted domains' mail goes
    std::vector<std::string> relay_networks;
};

// Every problem of a whole set of answers, one line each.
std::vector<std::string> check_answers(const setup_answers& a);

// Reads a seed file (TOML; see image/README.md). Unknown keys and wrong
// types are problems, so a misspelt key never goes unnoticed.
result<setup_answers, std::string> parse_seed(std::string_view toml_text, std::string_view source);

// ---- changes (under root) ----
result<void, std::string> write_hostname(const std::string& root, const std::string& name);
// DHCP without name servers removes the file, so the appliance's default
// (DHCP on every wired interface) applies again; DHCP with name servers
// uses them instead of the DHCP server's.
result<void, std::string> write_network(const std::string& root, const network_settings& n);
// What write_network wrote (DHCP when nothing was).
network_settings read_network(const std::string& root);
// A crypt(3) hash of pw (yescrypt).
result<std::string, std::string> hash_password(std::string_view pw);
// Replaces user's password hash in ROOT/etc/shadow.
result<void, std::string> set_password_hash(const std::string& root, const std::string& user,
                                            const std::string& hash);
// Replaces the admin's authorized_keys with these keys (owner uid:gid, 0600).
result<void, std::string> write_authorized_keys(const std::string& root, const std::string& home,
                                                const std::vector<std::string>& keys, unsigned uid, unsigned gid);

// Runs a program (argv[0] a full path; no shell) and waits: its exit
// status, -1 when it could not run or was killed. With out, its stdout
// and stderr are collected there (up to 64 KiB).
int run_program(const std::vector<std::string>& argv, std::string* out = nullptr);

// The whole file, or nullopt when it cannot be read.
std::optional<std::string> read_file(const std::string& path);

// Atomic replace of ROOT+path with text (mode; owner kept if the file existed).
result<void, std::string> replace_file(const std::string& path, std::string_view text, unsigned mode);

}  // namespace rw::admin::appliance
