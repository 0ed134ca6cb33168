// Tests for the configuration loader (admin/config.hh): the embedded default,
// a sample file with every key, and one case per kind of error, each checking
// that the message names the file, the line, the key and what is allowed.
// Sample files live in tests/data/config/.
#include "admin/config.hh"
#include "admin/config_schema.hh"
#include "admin/config_store.hh"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

using namespace rw::admin;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

std::string data_dir() {
    return (std::filesystem::path(__FILE__).parent_path() / ".." / ".." / "data" / "config").lexically_normal();
}

std::vector<std::string> lines_of(const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);)
        out.push_back(l);
    return out;
}

// A listener that makes a configuration complete, for cases about other keys.
constexpr const char* k_listener = "[[listener]]\nname = \"smtp\"\nport = 2525\n";

// Loads text that must be refused and returns the error text.
std::string refused(const std::string& text) {
    auto r = load_config_text(text, "t.toml");
    REQUIRE_FALSE(r.has_value());
    return r.error();
}

// As refused(), for text whose only problem is one line: returns that line.
std::string refused_once(const std::string& text) {
    std::string e = refused(text);
    INFO(e);
    REQUIRE(lines_of(e).size() == 1);
    return e;
}

config loaded(const std::string& text) {
    auto r = load_config_text(text, "t.toml");
    if (!r)
        FAIL(r.error());
    return std::move(r).value();
}

std::string local_hostname() {
    char buf[256] = "";
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0')
        return "localhost";
    return buf;
}

}  // namespace

// ---- the embedded default ----

TEST_CASE("the embedded default configuration loads", "[config]") {
    auto r = load_default_config();
    INFO((r ? std::string() : r.error()));
    REQUIRE(r.has_value());
    const config& c = r.value();
    CHECK(c.source == "<embedded default>");
    REQUIRE(c.listeners.size() == 1);
    CHECK(c.listeners[0].name == "smtp");
    CHECK(c.listeners[0].endpoint().to_string() == "127.0.0.1:2525");
    CHECK(c.spool.path == "./var/spool.img");
    CHECK(c.spool.size_bytes == (uint64_t(1) << 30));
    REQUIRE(c.smtp.relay_networks.size() == 2);
    CHECK(c.smtp.relay_networks[0].to_string() == "127.0.0.0/8");
    CHECK(c.smtp.relay_networks[1].to_string() == "::1/128");
    CHECK_FALSE(c.smtp.client_limit_exceptions.has_value());  // the relay networks
    CHECK_FALSE(c.smtp.allow_domain_literals);
}

TEST_CASE("the embedded default's values are the struct defaults", "[config]") {
    auto r = load_default_config();
    REQUIRE(r.has_value());
    const config& c = r.value();
    CHECK(c.runtime == runtime_config{});
    CHECK(c.dns == dns_config{});
    CHECK(c.spool == spool_config{});
    CHECK(c.control == control_config{});
    CHECK(c.delivery == delivery_config{});
    CHECK(c.routes.empty());

    smtp_config smtp;
    smtp.hostname = local_hostname();
    CHECK(c.smtp == smtp);

    listener_config l;
    l.name = "smtp";
    l.port = 2525;
    REQUIRE(c.listeners.size() == 1);
    CHECK(c.listeners[0] == l);

    // And the text is what the loader used: loading it under another name
    // gives the same values.
    auto again = load_config_text(default_config_toml(), "copy.toml");
    REQUIRE(again.has_value());
    CHECK(again.value().source == "copy.toml");
    CHECK(again.value().runtime == c.runtime);
    CHECK(again.value().listeners == c.listeners);
}

TEST_CASE("the embedded default comments every key", "[config]") {
    // --print-default-config shows this text to operators: each key (and each
    // section) has a comment line right above it or above the block it
    // starts.
    auto ls = lines_of(std::string(default_config_toml()));
    REQUIRE(ls.size() > 20);
    for (size_t i = 0; i < ls.size(); ++i) {
        const std::string& l = ls[i];
        if (l.empty() || l[0] == '#' || l[0] == '[')
            continue;
        INFO("line " << i + 1 << ": " << l);
        REQUIRE(l.find(" = ") != std::string::npos);
        // Walk up over keys of the same commented group.
        size_t j = i;
        while (j > 0 && !ls[j - 1].empty() && ls[j - 1][0] != '#' && ls[j - 1][0] != '[')
            --j;
        REQUIRE(j > 0);
        CHECK(ls[j - 1][0] == '#');
    }
    // Every key of every struct appears, set or commented out.
    for (const char* k : {"cores", "pin", "log_level", "mail_log", "drain_timeout_ms", "servers", "timeout_ms",
                          "tries", "cache_entries", "path", "size", "flush", "name", "address", "port", "tls_cert",
                          "tls_key", "implicit_tls", "auth", "allow_auth_without_tls", "max_connections",
                          "max_connections_per_ip", "max_recipients", "max_message_size", "max_errors",
                          "greeting_timeout_s", "command_timeout_s", "data_block_timeout_s", "data_end_timeout_s",
                          "idle_timeout_s", "greet_pause_ms", "max_line_length", "hostname", "accepted_domains", "relay_networks",
                          "credentials_file", "allow_domain_literals", "max_received_headers",
                          "client_connections_per_minute", "client_connection_burst", "client_messages_per_minute",
                          "client_message_burst", "client_auth_attempts_per_minute", "client_auth_burst",
                          "client_limit_exceptions",
                          "smtp_port", "internal_hosts", "starttls", "max_connections_per_destination",
                          "max_messages_per_connection", "max_messages_per_minute", "first_retry_ms", "max_retry_ms",
                          "greylist_retry_ms", "max_queue_lifetime_s", "delay_notice_after_s", "destination_pause_ms", "connect_timeout_ms",
                          "command_timeout_s", "data_timeout_s", "domain", "hosts", "condition", "actions", "retention_s",
                          "max_size", "expire", "socket"})
        CHECK_THAT(std::string(default_config_toml()), Contains(std::string("\n") + k + " = ") ||
                                                           Contains(std::string("\n# ") + k + " = "));
}

// ---- good input ----

TEST_CASE("a sample file with every key loads into the expected values", "[config]") {
    std::string path = data_dir() + "/full.toml";
    auto r = load_config_file(path);
    INFO((r ? std::string() : r.error()));
    REQUIRE(r.has_value());
    const config& c = r.value();
    CHECK(c.source == path);
    CHECK(c.notes.empty());

    CHECK(c.runtime.cores == 2);
    CHECK_FALSE(c.runtime.pin);
    CHECK(c.runtime.log_level == rw::log_level::debug);
    CHECK(c.runtime.mail_log == "-");
    CHECK(c.runtime.drain_timeout_ms == std::chrono::milliseconds(250));

    CHECK(c.dns.servers ==
          std::vector<std::string>{"127.0.0.53:53", "192.0.2.1:5353", "[2001:db8::53]:53", "[2001:db8::54]:5300"});
    CHECK(c.dns.timeout_ms == std::chrono::milliseconds(500));
    CHECK(c.dns.tries == 3);
    CHECK(c.dns.cache_entries == 0);

    CHECK(c.spool.path == "/dev/vdb");
    CHECK(c.spool.size_bytes == 512ull << 20);
    CHECK(c.spool.flush == spool_flush::fdatasync);

    REQUIRE(c.listeners.size() == 2);
    const listener_config& a = c.listeners[0];
    CHECK(a.name == "inbound");
    CHECK(a.address == "0.0.0.0");
    CHECK(a.port == 25);
    CHECK(a.endpoint().to_string() == "0.0.0.0:25");
    CHECK(a.tls_cert == "/etc/ringway/tls/cert.pem");
    CHECK(a.tls_key == "/etc/ringway/tls/key.pem");
    CHECK_FALSE(a.implicit_tls);
    CHECK(a.auth == auth_mode::none);
    CHECK_FALSE(a.allow_auth_without_tls);
    CHECK(a.max_connections == 20000);
    CHECK(a.max_connections_per_ip == 50);
    CHECK(a.max_recipients == 100);
    CHECK(a.max_message_size_bytes == 20ull << 20);
    CHECK(a.max_line_length_bytes == 4096);
    CHECK(a.max_errors == 5);
    CHECK(a.greeting_timeout_s == std::chrono::seconds(30));
    CHECK(a.command_timeout_s == std::chrono::seconds(60));
    CHECK(a.data_block_timeout_s == std::chrono::seconds(120));
    CHECK(a.data_end_timeout_s == std::chrono::seconds(300));
    CHECK(a.idle_timeout_s == std::chrono::seconds(30));

    const listener_config& b = c.listeners[1];
    CHECK(b.name == "submissions");
    CHECK(b.address == "::");
    CHECK(b.endpoint().to_string() == "[::]:465");
    CHECK(b.implicit_tls);
    CHECK(b.auth == auth_mode::required);
    CHECK(b.allow_auth_without_tls);
    CHECK(b.max_connections == 500);
    CHECK(b.max_connections_per_ip == 10);
    CHECK(b.max_recipients == 500);
    CHECK(b.max_message_size_bytes == 1048576);
    CHECK(b.max_line_length_bytes == 1ull << 20);  // the default
    CHECK(b.max_errors == 3);
    CHECK(b.greeting_timeout_s == std::chrono::seconds(10));
    CHECK(b.command_timeout_s == std::chrono::seconds(20));
    CHECK(b.data_block_timeout_s == std::chrono::seconds(30));
    CHECK(b.data_end_timeout_s == std::chrono::seconds(40));
    CHECK(b.idle_timeout_s == std::chrono::seconds(50));

    CHECK(c.smtp.hostname == "mx1.example.test");
    // Lower-cased, duplicates dropped.
    CHECK(c.smtp.accepted_domains == std::vector<std::string>{"example.test", "example.org.test"});
    REQUIRE(c.smtp.relay_networks.size() == 3);
    CHECK(c.smtp.relay_networks[0] == ip_network{"10.0.0.0", 8});
    CHECK(c.smtp.relay_networks[1] == ip_network{"192.0.2.7", 32});
    CHECK(c.smtp.relay_networks[2] == ip_network{"2001:db8::", 32});
    CHECK(c.smtp.credentials_file == "/etc/ringway/credentials");
    CHECK(c.smtp.allow_domain_literals);
    CHECK(c.smtp.max_received_headers == 30);
    CHECK(c.smtp.client_connections_per_minute == 600);
    CHECK(c.smtp.client_connection_burst == 30);
    CHECK(c.smtp.client_messages_per_minute == 0);
    CHECK(c.smtp.client_message_burst == 5);
    CHECK(c.smtp.client_auth_attempts_per_minute == 6);
    CHECK(c.smtp.client_auth_burst == 3);
    REQUIRE(c.smtp.client_limit_exceptions.has_value());
    CHECK(*c.smtp.client_limit_exceptions ==
          std::vector<ip_network>{ip_network{"10.1.0.0", 16}, ip_network{"2001:db8:5::1", 128}});

    CHECK(c.control.socket == "/run/ringway/ringway.sock");
    CHECK(c.control.state_dir == "/var/lib/ringway");
    CHECK(rw::admin::state_dir(c) == "/var/lib/ringway");
}

TEST_CASE("a minimal file takes every default", "[config]") {
    config c = loaded(k_listener);
    CHECK(c.runtime == runtime_config{});
    CHECK(c.dns == dns_config{});
    CHECK(c.spool == spool_config{});
    CHECK(c.control == control_config{});
    CHECK(c.smtp.hostname == local_hostname());
    CHECK(c.smtp.relay_networks == smtp_config{}.relay_networks);
    REQUIRE(c.listeners.size() == 1);
    CHECK(c.listeners[0].address == "127.0.0.1");
    CHECK(c.listeners[0].auth == auth_mode::optional);
    CHECK(c.listeners[0].max_message_size_bytes == 50ull << 20);
}

TEST_CASE("sizes take a unit K/M/G/T or a number of bytes", "[config]") {
    auto size_of = [](const std::string& v) {
        return loaded("[spool]\nsize = " + v + "\n" + k_listener).spool.size_bytes;
    };
    CHECK(size_of("\"64M\"") == 64ull << 20);
    CHECK(size_of("\"65536K\"") == 64ull << 20);
    CHECK(size_of("\"2g\"") == 2ull << 30);
    CHECK(size_of("\"2GiB\"") == 2ull << 30);
    CHECK(size_of("\"3GB\"") == 3ull << 30);
    CHECK(size_of("\"1T\"") == 1ull << 40);
    CHECK(size_of("\"134217728\"") == 128ull << 20);
    CHECK(size_of("134217728") == 128ull << 20);
}

TEST_CASE("IPv6 listeners and bracketed addresses are canonicalised", "[config]") {
    config c = loaded("[[listener]]\nname = \"v6\"\naddress = \"[0:0::1]\"\nport = 25\n"
                      "[[listener]]\nname = \"v4\"\naddress = \"127.0.0.1\"\nport = 25\n");
    REQUIRE(c.listeners.size() == 2);
    CHECK(c.listeners[0].address == "::1");
    CHECK(c.listeners[0].endpoint().to_string() == "[::1]:25");
    CHECK(c.listeners[1].endpoint().to_string() == "127.0.0.1:25");
}

TEST_CASE("an implicit-TLS listener without a certificate gets a note and no error", "[config]") {
    config c = loaded("[smtp]\n"
                      "hostname = \"mx.example.test\"\n"
                      "[[listener]]\n"
                      "name = \"smtps\"\n"
                      "port = 4465\n"
                      "implicit_tls = true\n");
    REQUIRE(c.notes.size() == 1);
    CHECK_THAT(c.notes[0], StartsWith("t.toml:6: listener[0].implicit_tls: no tls_cert/tls_key"));
    CHECK_THAT(c.notes[0], Contains("self-signed"));
}

// ---- errors: the file itself ----

TEST_CASE("error: missing file", "[config]") {
    std::string path = data_dir() + "/does-not-exist.toml";
    auto r = load_config_file(path);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == path + ": cannot open: No such file or directory");
}

TEST_CASE("error: unreadable file (a directory)", "[config]") {
    auto r = load_config_file(data_dir());
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == data_dir() + ": cannot read: Is a directory");
}

TEST_CASE("error: TOML syntax with the line", "[config]") {
    std::string e = refused_once("[runtime]\n"
                                 "cores = 2\n"
                                 "pin = \n"
                                 "[[listener]]\n");
    CHECK_THAT(e, StartsWith("t.toml:3: TOML syntax error: "));
    CHECK_THAT(e, Contains("expected"));

    // Keys defined twice are syntax errors in TOML; the line is the second.
    e = refused_once(std::string(k_listener) + "port = 25\n");
    CHECK_THAT(e, StartsWith("t.toml:4: TOML syntax error: "));
}

TEST_CASE("error: a file with no listener", "[config]") {
    auto r = load_config_file(data_dir() + "/no_listener.toml");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == data_dir() +
                           "/no_listener.toml: listener: missing: no [[listener]] table; allowed: one or more "
                           "[[listener]] tables, each with at least a name and a port");
}

// ---- errors: sections and keys ----

TEST_CASE("error: unknown section lists the sections", "[config]") {
    std::string e = refused_once(std::string(k_listener) +  // lines 1-3
                                 "\n"
                                 "[smpt]\n"  // line 5
                                 "hostname = \"mx.example.test\"\n");
    CHECK(e == "t.toml:5: smpt: unknown section (did you mean [smtp]?); allowed: [runtime], [dns], [spool], "
               "[[listener]], [smtp], [delivery], [[route]], [[source]], [[pool]], [[provider]], [[shaping_rule]], [[warmup]], [[quarantine]], [[content_rule]], [screening], [[mail_flow_policy]], [[sender_group]], [[recipient_access]], [call_ahead], [antivirus], [antispam], [[milter]], [outbound], [control], [metrics], [conservation], [authentication]");
}

TEST_CASE("error: key outside any section says where it belongs", "[config]") {
    std::string e = refused_once("hostname = \"mx.example.test\"\n" + std::string(k_listener));
    CHECK(e == "t.toml:1: hostname: key outside any section (it belongs in [smtp]); allowed: [runtime], [dns], "
               "[spool], [[listener]], [smtp], [delivery], [[route]], [[source]], [[pool]], [[provider]], [[shaping_rule]], [[warmup]], [[quarantine]], [[content_rule]], [screening], [[mail_flow_policy]], [[sender_group]], [[recipient_access]], [call_ahead], [antivirus], [antispam], [[milter]], [outbound], [control], [metrics], [conservation], "
               "[authentication]");
}

TEST_CASE("error: unknown key lists the allowed keys of its table", "[config]") {
    std::string e = refused_once("[[listener]]\n"
                                 "name = \"smtp\"\n"
                                 "prot = 2525\n"
                                 "port = 2525\n");
    CHECK(e == "t.toml:3: listener[0].prot: unknown key (did you mean \"port\"?); allowed: name, address, port, "
               "tls_cert, tls_key, implicit_tls, auth, allow_auth_without_tls, max_connections, "
               "max_connections_per_ip, max_recipients, max_message_size, max_line_length, max_errors, "
               "greeting_timeout_s, "
               "command_timeout_s, data_block_timeout_s, data_end_timeout_s, idle_timeout_s, greet_pause_ms, dmarc_reject");

    e = refused_once(std::string(k_listener) + "[spool]\nbogus = 1\n");
    CHECK(e == "t.toml:5: spool.bogus: unknown key; allowed: path, size, flush");
}

TEST_CASE("error: a section that is not a table", "[config]") {
    std::string e = refused_once("runtime = 4\n" + std::string(k_listener));
    CHECK(e == "t.toml:1: runtime: expected a table ([runtime]), got an integer (4); allowed: a [runtime] "
               "section with the keys cores, pin, log_level, mail_log, drain_timeout_ms");

    e = refused_once("[listener]\nname = \"smtp\"\nport = 25\n");
    CHECK_THAT(e, StartsWith("t.toml:1: listener: expected an array of tables ([[listener]], with two "
                             "brackets), got a table; allowed: one or more [[listener]] tables"));
}

TEST_CASE("error: missing required listener keys name the listener's line", "[config]") {
    std::string e = refused(std::string(k_listener) +  // lines 1-3
                            "\n"
                            "[[listener]]\n"  // line 5
                            "address = \"::1\"\n");
    auto ls = lines_of(e);
    REQUIRE(ls.size() == 2);
    CHECK(ls[0] == "t.toml:5: listener[1].name: missing (required); allowed: 1..32 letters, digits, \"-\", "
                   "\"_\" or \".\", unique among listeners");
    CHECK(ls[1] == "t.toml:5: listener[1].port: missing (required); allowed: an integer 1..65535");
}

// ---- errors: values ----

TEST_CASE("error: wrong type (a string for a port)", "[config]") {
    std::string e = refused_once(std::string(k_listener) +  // lines 1-3
                                 "\n"
                                 "[[listener]]\n"
                                 "name = \"submission\"\n"
                                 "port = \"smtp\"\n");  // line 7
    CHECK(e == "t.toml:7: listener[1].port: expected an integer, got \"smtp\"; allowed: 1..65535");
}

TEST_CASE("error: wrong type (a string for a boolean or a float for an integer)", "[config]") {
    std::string e = refused("[runtime]\n"
                            "pin = \"yes\"\n"
                            "cores = 2.0\n" +
                            std::string(k_listener));
    auto ls = lines_of(e);
    REQUIRE(ls.size() == 2);
    CHECK(ls[0] == "t.toml:2: runtime.pin: expected a boolean, got \"yes\"; allowed: true, false");
    CHECK(ls[1] == "t.toml:3: runtime.cores: expected an integer, got a float (2.0); allowed: 0 (every CPU) or "
                   "1..256");
}

TEST_CASE("error: integer out of range", "[config]") {
    std::string e = refused_once("[runtime]\ncores = 300\n" + std::string(k_listener));
    CHECK(e == "t.toml:2: runtime.cores: 300 is out of range; allowed: 0 (every CPU) or 1..256");

    e = refused_once(std::string(k_listener) + "max_connections = 0\n");
    CHECK(e == "t.toml:4: listener[0].max_connections: 0 is out of range; allowed: 1..1000000");

    e = refused_once("[[listener]]\nname = \"smtp\"\nport = 70000\n");
    CHECK(e == "t.toml:3: listener[0].port: 70000 is out of range; allowed: 1..65535");

    e = refused_once("[dns]\ntries = -1\n" + std::string(k_listener));
    CHECK(e == "t.toml:2: dns.tries: -1 is out of range; allowed: 1..10");
}

TEST_CASE("error: a value not among the allowed words", "[config]") {
    std::string e = refused_once("[runtime]\nlog_level = \"verbose\"\n" + std::string(k_listener));
    CHECK(e == "t.toml:2: runtime.log_level: unknown value \"verbose\"; allowed: \"trace\", \"debug\", \"info\", "
               "\"warn\", \"error\"");

    e = refused_once("[runtime]\nlog_level = \"INFO\"\n" + std::string(k_listener));
    CHECK_THAT(e, Contains("unknown value \"INFO\" (did you mean \"info\"?)"));

    e = refused_once("[spool]\nflush = \"fsync\"\n" + std::string(k_listener));
    CHECK_THAT(e, StartsWith("t.toml:2: spool.flush: unknown value \"fsync\""));
    CHECK_THAT(e, Contains("; allowed: \"auto\", \"fdatasync\", \"dsync\""));

    e = refused_once(std::string(k_listener) + "auth = true\n");
    CHECK(e == "t.toml:4: listener[0].auth: expected a string, got a boolean (true); allowed: \"none\", "
               "\"optional\", \"required\"");
}

TEST_CASE("error: bad size strings and sizes out of range", "[config]") {
    std::string e = refused_once("[spool]\nsize = \"1X\"\n" + std::string(k_listener));
    CHECK(e == "t.toml:2: spool.size: expected a size such as \"64K\", \"512M\" or \"1G\", got \"1X\"; allowed: "
               "a size with a unit K, M, G or T (powers of 1024), or an integer number of bytes, 64M..64T");

    e = refused_once("[spool]\nsize = \"1.5G\"\n" + std::string(k_listener));
    CHECK_THAT(e, StartsWith("t.toml:2: spool.size: expected a size"));

    e = refused_once("[spool]\nsize = \"32M\"\n" + std::string(k_listener));
    CHECK(e == "t.toml:2: spool.size: \"32M\" is out of range; allowed: a size with a unit K, M, G or T (powers "
               "of 1024), or an integer number of bytes, 64M..64T");

    e = refused_once("[spool]\nsize = -1\n" + std::string(k_listener));
    CHECK_THAT(e, StartsWith("t.toml:2: spool.size: -1 is out of range; allowed: "));

    e = refused_once("[spool]\nsize = \"99999999999999999999G\"\n" + std::string(k_listener));
    CHECK_THAT(e, StartsWith("t.toml:2: spool.size: expected a size"));

    e = refused_once(std::string(k_listener) + "max_message_size = \"1K\"\n");
    CHECK_THAT(e, StartsWith("t.toml:4: listener[0].max_message_size: \"1K\" is out of range; allowed: "));
    CHECK_THAT(e, Contains("64K..2G"));
}

TEST_CASE("error: a message size larger than the spool", "[config]") {
    std::string e = refused_once("[spool]\nsize = \"64M\"\n" + std::string(k_listener) +  // lines 1-5
                                 "max_message_size = \"100M\"\n");                       // line 6
    CHECK(e == "t.toml:6: listener[0].max_message_size: 100M is larger than the spool (64M); allowed: at most "
               "spool.size");
}

TEST_CASE("error: a listener address that is not an IP", "[config]") {
    std::string e = refused_once("[[listener]]\n"
                                 "name = \"smtp\"\n"
                                 "address = \"localhost\"\n"
                                 "port = 25\n");
    CHECK_THAT(e, StartsWith("t.toml:3: listener[0].address: \"localhost\" is not an IP address; allowed: an "
                             "IPv4 or IPv6 address (not a host name)"));

    e = refused_once("[[listener]]\nname = \"smtp\"\naddress = \"127.0.0.256\"\nport = 25\n");
    CHECK_THAT(e, StartsWith("t.toml:3: listener[0].address: \"127.0.0.256\" is not an IP address; allowed: "));
}

TEST_CASE("error: bad CIDR in relay_networks", "[config]") {
    const std::string allowed =
        "; allowed: a network in CIDR form with no host bits set, e.g. \"10.0.0.0/8\", \"2001:db8::/32\", or one "
        "address; prefix length 1..32 for IPv4, 1..128 for IPv6";
    std::string e = refused(std::string(k_listener) +  // lines 1-3
                            "[smtp]\n"
                            "relay_networks = [\n"
                            "  \"10.0.0.0/33\",\n"      // line 6
                            "  \"10.1.2.3/8\",\n"       // line 7
                            "  \"0.0.0.0/0\",\n"        // line 8
                            "  \"10.0.0.0/x\",\n"       // line 9
                            "  \"example.test/24\",\n"  // line 10
                            "  \"2001:db8::/129\",\n"   // line 11
                            "  \"::1/128\",\n"          // line 12: fine
                            "  42,\n"                   // line 13
                            "]\n");
    auto ls = lines_of(e);
    REQUIRE(ls.size() == 7);
    CHECK(ls[0] == "t.toml:6: smtp.relay_networks[0]: \"10.0.0.0/33\": the prefix length 33 is too long for IPv4 "
                   "(at most 32)" + allowed);
    CHECK(ls[1] == "t.toml:7: smtp.relay_networks[1]: \"10.1.2.3/8\": host bits are set (did you mean "
                   "\"10.0.0.0/8\"?)" + allowed);
    CHECK(ls[2] == "t.toml:8: smtp.relay_networks[2]: \"0.0.0.0/0\": a /0 network relays for everyone (an open "
                   "relay)" + allowed);
    CHECK(ls[3] == "t.toml:9: smtp.relay_networks[3]: \"10.0.0.0/x\": the prefix length \"x\" is not a number" +
                       allowed);
    CHECK(ls[4] == "t.toml:10: smtp.relay_networks[4]: \"example.test/24\": \"example.test\" is not an IP "
                   "address" + allowed);
    CHECK(ls[5] == "t.toml:11: smtp.relay_networks[5]: \"2001:db8::/129\": the prefix length 129 is too long for "
                   "IPv6 (at most 128)" + allowed);
    CHECK_THAT(ls[6], StartsWith("t.toml:13: smtp.relay_networks[7]: expected a string, got an integer (42)"));
}

TEST_CASE("error: bad DNS servers", "[config]") {
    std::string e = refused("[dns]\n"
                            "servers = [\"192.0.2.1:0\",\n"  // line 2
                            "           \"ns1.example.test\",\n"  // line 3
                            "           \"2001:db8::1:53:x\"]\n" +  // line 4
                            std::string(k_listener));
    auto ls = lines_of(e);
    REQUIRE(ls.size() == 3);
    CHECK_THAT(ls[0], StartsWith("t.toml:2: dns.servers[0]: \"192.0.2.1:0\" is not an IP address or IP:port; "
                                 "allowed: an IP address with an optional port 1..65535"));
    CHECK_THAT(ls[1], StartsWith("t.toml:3: dns.servers[1]: \"ns1.example.test\" is not an IP address"));
    CHECK_THAT(ls[2], StartsWith("t.toml:4: dns.servers[2]: \"2001:db8::1:53:x\" is not an IP address"));

    e = refused_once("[dns]\nservers = \"192.0.2.1\"\n" + std::string(k_listener));
    CHECK_THAT(e, StartsWith("t.toml:2: dns.servers: expected an array of strings, got \"192.0.2.1\"; allowed: "
                             "an array of up to 8 strings"));
}

TEST_CASE("error: duplicate listener names", "[config]") {
    std::string e = refused_once(std::string(k_listener) +  // lines 1-3
                                 "[[listener]]\n"
                                 "name = \"smtp\"\n"  // line 5
                                 "port = 587\n");
    CHECK(e == "t.toml:5: listener[1].name: duplicate name \"smtp\" (also listener[0] on line 2); allowed: a "
               "name unique among listeners");
}

TEST_CASE("error: two listeners on one address and port", "[config]") {
    std::string e = refused_once(std::string(k_listener) +  // lines 1-3
                                 "[[listener]]\n"
                                 "name = \"again\"\n"
                                 "port = 2525\n");  // line 6
    CHECK(e == "t.toml:6: listener[1].port: 127.0.0.1:2525 overlaps 127.0.0.1:2525 of listener[0] \"smtp\" on "
               "line 1; allowed: one listener per address and port (\"0.0.0.0\" and \"::\" take the port on every "
               "address of their family)");

    // The wildcard of a family takes the port on all its addresses...
    e = refused_once(std::string(k_listener) +
                     "[[listener]]\nname = \"all\"\naddress = \"0.0.0.0\"\nport = 2525\n");  // port on line 7
    CHECK_THAT(e, StartsWith("t.toml:7: listener[1].port: 0.0.0.0:2525 overlaps 127.0.0.1:2525 of listener[0]"));

    // ...but not the other family's (IPv6 sockets are IPV6_V6ONLY).
    config c = loaded(std::string(k_listener) + "[[listener]]\nname = \"v6\"\naddress = \"::\"\nport = 2525\n");
    CHECK(c.listeners.size() == 2);
}

TEST_CASE("error: a certificate without its key and a key without its certificate", "[config]") {
    std::string e = refused_once(std::string(k_listener) + "tls_cert = \"/etc/ringway/cert.pem\"\n");
    CHECK(e == "t.toml:4: listener[0].tls_key: missing: tls_cert is set without it; allowed: tls_cert and tls_key "
               "together, or neither (a self-signed certificate is then generated)");

    e = refused_once(std::string(k_listener) + "tls_key = \"/etc/ringway/key.pem\"\n");
    CHECK(e == "t.toml:4: listener[0].tls_cert: missing: tls_key is set without it; allowed: tls_cert and tls_key "
               "together, or neither (a self-signed certificate is then generated)");

    e = refused(std::string(k_listener) + "tls_cert = \"\"\ntls_key = \"/k.pem\"\n");
    CHECK_THAT(e, StartsWith("t.toml:4: listener[0].tls_cert: empty; allowed: the path of a PEM file"));
}

TEST_CASE("error: a bad listener name", "[config]") {
    std::string e = refused_once("[[listener]]\nname = \"my listener\"\nport = 25\n");
    CHECK(e == "t.toml:2: listener[0].name: \"my listener\" is not a valid name; allowed: 1..32 letters, digits, "
               "\"-\", \"_\" or \".\", unique among listeners");
}

TEST_CASE("error: bad domain names", "[config]") {
    std::string e = refused(std::string(k_listener) +  // lines 1-3
                            "[smtp]\n"
                            "hostname = \"mx_1.example.test\"\n"                 // line 5
                            "accepted_domains = [\"example.test\", \"-bad.test\",\n"  // line 6
                            "  \"ex..test\", \"bücher.test\", \"192.0.2.1\"]\n");  // line 7
    auto ls = lines_of(e);
    REQUIRE(ls.size() == 5);
    const std::string allowed = "; allowed: a domain name such as \"mx.example.com\": dot-separated labels of "
                                "1..63 letters, digits and \"-\"";
    CHECK(ls[0] == "t.toml:5: smtp.hostname: \"mx_1.example.test\" has the character \"_\"" + allowed);
    CHECK(ls[1] == "t.toml:6: smtp.accepted_domains[1]: \"-bad.test\" has a label that starts or ends with \"-\"" +
                       allowed);
    CHECK(ls[2] == "t.toml:7: smtp.accepted_domains[2]: \"ex..test\" has an empty label" + allowed);
    CHECK_THAT(ls[3], StartsWith("t.toml:7: smtp.accepted_domains[3]: \"bücher.test\" has non-ASCII characters"));
    CHECK_THAT(ls[4], StartsWith("t.toml:7: smtp.accepted_domains[4]: \"192.0.2.1\" ends in a numeric label"));
}

TEST_CASE("error: a control socket path too long for a Unix socket", "[config]") {
    std::string path = "/run/" + std::string(120, 'x') + ".sock";
    std::string e = refused_once(std::string(k_listener) + "[control]\nsocket = \"" + path + "\"\n");
    CHECK(e == "t.toml:5: control.socket: 130 bytes long, too long for a Unix socket; allowed: a file path of "
               "1..107 bytes (a Unix socket address)");
}

TEST_CASE("error: every problem of a file is reported and sorted by line", "[config]") {
    std::string path = data_dir() + "/many_errors.toml";
    auto r = load_config_file(path);
    REQUIRE_FALSE(r.has_value());
    auto ls = lines_of(r.error());
    INFO(r.error());
    REQUIRE(ls.size() == 9);
    CHECK_THAT(ls[0], StartsWith(path + ":3: runtime.cores: 300 is out of range; allowed: "));
    CHECK_THAT(ls[1], StartsWith(path + ":4: runtime.log_level: unknown value \"verbose\"; allowed: "));
    CHECK_THAT(ls[2], StartsWith(path + ":7: spool.size: expected a size"));
    CHECK(ls[3] == path + ":11: listener[0].port: expected an integer, got \"smtp\"; allowed: 1..65535");
    CHECK_THAT(ls[4], StartsWith(path + ":14: listener[1].name: duplicate name \"smtp\" (also listener[0] on "
                                        "line 10)"));
    CHECK_THAT(ls[5], StartsWith(path + ":15: listener[1].address: \"localhost\" is not an IP address; allowed: "));
    CHECK_THAT(ls[6], StartsWith(path + ":17: listener[1].tls_key: missing: tls_cert is set without it; "
                                        "allowed: "));
    CHECK_THAT(ls[7], StartsWith(path + ":20: smtp.relay_networks[0]: \"10.0.0.0/33\": the prefix length 33"));
    CHECK_THAT(ls[8], StartsWith(path + ":22: smpt: unknown section (did you mean [smtp]?); allowed: "));
}

TEST_CASE("the loader never throws whatever the input", "[config]") {
    const std::vector<std::string> inputs = {
        "",
        std::string("\0\xff\xfe[[", 5),
        "[[listener]]\nport = 99999999999999999999999\n",
        "[[listener]]\nname = \"a\"\nport = 1\n[[listener]]\n[[listener]]\nname = 5\n",
        "listener = [1, \"x\", {name = \"a\", port = 25}]\n",
        "[runtime]\ncores = 1979-05-27T07:32:00Z\n" + std::string(k_listener),
        std::string(k_listener) + "tls_cert = \"a\\u0000b\"\ntls_key = \"k\"\n",
    };
    for (const auto& in : inputs) {
        INFO(in);
        std::string err;
        CHECK_NOTHROW(err = refused(in));
        CHECK_THAT(err, StartsWith("t.toml"));
    }
    // A listener array holding things that are not tables: each is named by
    // its index in the file.
    std::string e = refused("listener = [1, {name = \"a\", port = 25}, {name = \"a\", port = 26}]\n");
    CHECK_THAT(e, Contains("t.toml:1: listener[0]: expected a table, got an integer (1)"));
    CHECK_THAT(e, Contains("t.toml:1: listener[2].name: duplicate name \"a\" (also listener[1] on line 1)"));
}

// ---- delivery and routes ----

TEST_CASE("delivery settings and routes load", "[config]") {
    auto r = load_config_text(R"(
[[listener]]
name = "smtp"
port = 2525
[smtp]
hostname = "mx.example.test"
accepted_domains = ["example.test"]
[delivery]
smtp_port = 2626
internal_hosts = ["10.0.0.5", "mail.internal.test:2525"]
max_connections_per_destination = 3
max_messages_per_minute = 60
first_retry_ms = 500
max_retry_ms = 4000
delay_notice_after_s = 0
[[route]]
domain = "*"
hosts = ["192.0.2.1:25", "[2001:db8::1]:587"]
[[route]]
domain = "*.Partner.test"
hosts = ["smarthost.test"]
)",
                              "t.toml");
    INFO((r ? std::string() : r.error()));
    REQUIRE(r.has_value());
    const auto& c = r.value();
    CHECK(c.delivery.smtp_port == 2626);
    CHECK(c.delivery.internal_hosts == std::vector<std::string>{"10.0.0.5", "mail.internal.test:2525"});
    CHECK(c.delivery.max_connections_per_destination == 3);
    CHECK(c.delivery.max_messages_per_minute == 60);
    CHECK(c.delivery.first_retry_ms == std::chrono::milliseconds(500));
    CHECK(c.delivery.delay_notice_after_s == std::chrono::seconds(0));
    CHECK(delivery_config{}.delay_notice_after_s == std::chrono::hours(4));
    REQUIRE(c.routes.size() == 2);
    CHECK(c.routes[0].domain == "*");
    CHECK(c.routes[0].hosts.size() == 2);
    CHECK(c.routes[1].domain == "*.partner.test");
    auto hp = parse_next_hop("[2001:db8::1]:587", 25);
    REQUIRE(hp);
    CHECK(hp->first == "2001:db8::1");
    CHECK(hp->second == 587);
    hp = parse_next_hop("Mail.Internal.test", 25);
    REQUIRE(hp);
    CHECK(hp->first == "mail.internal.test");
    CHECK(hp->second == 25);
    CHECK_FALSE(parse_next_hop("host:0", 25));
    CHECK_FALSE(parse_next_hop("bad host", 25));
    CHECK_FALSE(parse_next_hop("", 25));
}

TEST_CASE("content rules load in file order", "[config]") {
    auto r = load_config_file(data_dir() + "/full.toml");
    REQUIRE(r);
    const auto& rules = r.value().content_rules;
    REQUIRE(rules.size() == 2);
    CHECK(rules[0].name == "no-exe");
    CHECK(rules[0].condition == "attachment-name ~ /\\.exe$/ or archive-entry ~ /\\.exe$/");
    CHECK(rules[0].actions == std::vector<std::string>{"reject 550 5.7.1 No executables"});
    CHECK(rules[1].name == "tag.large");
    CHECK(rules[1].actions.size() == 2);
}

TEST_CASE("quarantines: configured ones, and the built-in ones with their defaults", "[config]") {
    auto r = load_config_file(data_dir() + "/full.toml");
    REQUIRE(r);
    const auto& q = r.value().quarantines;
    REQUIRE(q.size() == 2);
    CHECK(q[0].name == "policy");
    CHECK(q[0].retention_s == std::chrono::hours(48));
    CHECK(q[0].max_size_bytes == 200ull << 20);
    CHECK(q[0].expire == quarantine_expiry::release);
    CHECK(q[1].name == "hold.exe");
    CHECK(q[1].retention_s == std::chrono::days(14));
    CHECK(q[1].expire == quarantine_expiry::remove);
    auto all = quarantines_of(q);
    REQUIRE(all.size() == 4);
    CHECK(all[0].retention_s == std::chrono::hours(48));  // policy as configured
    CHECK(all[2].name == "virus");
    CHECK(all[3].name == "spam");
    auto e = refused(R"([[listener]]
name = "smtp"
port = 2525
[[quarantine]]
name = "bad name"
expire = "burn"
[[content_rule]]
name = "q"
condition = 'authenticated'
actions = ["quarantine nowhere"]
[[content_rule]]
name = "ok"
condition = 'authenticated'
actions = ["quarantine virus"]
)");
    CHECK_THAT(e, Contains("t.toml:5: quarantine[0].name: \"bad name\" is not a quarantine name"));
    CHECK_THAT(e, Contains("t.toml:6: quarantine[0].expire: unknown value \"burn\""));
    CHECK_THAT(e, Contains("t.toml:10: content_rule[0].actions[0]: there is no quarantine \"nowhere\""));
    CHECK_THAT(e, !Contains("content_rule[1]"));
}

TEST_CASE("error: a malformed content rule says which line and why", "[config]") {
    auto e = refused(R"([[listener]]
name = "smtp"
port = 2525
[[content_rule]]
name = "a"
condition = 'size > 5Q'
actions = ["reject 250 fine"]
[[content_rule]]
name = "a"
condition = 'authenticated'
actions = ["drop", "tag-subject x"]
[[content_rule]]
name = "bad name!"
actions = []
)");
    CHECK_THAT(e, Contains("t.toml:6: content_rule[0].condition: at 8: expected a number (like 500, 10K, 5M) after size >"));
    CHECK_THAT(e, Contains("t.toml:7: content_rule[0].actions[0]: reject: 250 is not a reply code"));
    CHECK_THAT(e, Contains("t.toml:9: content_rule[1].name: \"a\" names another rule already"));
    CHECK_THAT(e, Contains("t.toml:11: content_rule[1].actions[1]: comes after accept, reject, drop or quarantine"));
    CHECK_THAT(e, Contains("t.toml:13: content_rule[2].name: \"bad name!\" is not a rule name"));
    CHECK_THAT(e, Contains("content_rule[2].condition: missing (required)"));
    CHECK_THAT(e, Contains("t.toml:14: content_rule[2].actions: empty list"));
}

TEST_CASE("sources and pools load, and routes and policies name pools", "[config]") {
    auto r = load_config_text(R"(
[[listener]]
name = "smtp"
port = 2525
[delivery]
default_pool = "main"
[[source]]
name = "out1"
address = "127.0.0.2"
helo = "out1.example.test"
max_connections_per_destination = 4
[[source]]
name = "v6"
address = "::1"
[[pool]]
name = "main"
sources = ["out1:3", "v6"]
[[route]]
domain = "*.bulk.test"
pool = "main"
[[mail_flow_policy]]
name = "NEWS"
pool = "main"
[[content_rule]]
name = "r"
condition = 'mail-from ~ /x/'
actions = ["pool main"]
)",
                              "t.toml");
    INFO((r ? std::string() : r.error()));
    REQUIRE(r.has_value());
    const auto& c = r.value();
    REQUIRE(c.sources.size() == 2);
    CHECK(c.sources[0].helo == "out1.example.test");
    CHECK(c.sources[0].max_connections_per_destination == 4);
    CHECK(c.sources[1].address == "::1");
    REQUIRE(c.pools.size() == 1);
    CHECK(c.pools[0].sources == std::vector<std::string>{"out1:3", "v6"});
    CHECK(c.delivery.default_pool == "main");
    REQUIRE(c.routes.size() == 1);
    CHECK(c.routes[0].hosts.empty());
    CHECK(c.routes[0].pool == "main");
    CHECK(parse_pool_member("out1:3") == std::pair<std::string, unsigned>{"out1", 3});
    CHECK(parse_pool_member("out1") == std::pair<std::string, unsigned>{"out1", 1});
    CHECK(parse_shaping_action("suspend") == std::pair<std::string, unsigned>{"suspend", 0});
    CHECK(parse_shaping_action("rate 60") == std::pair<std::string, unsigned>{"rate", 60});
    CHECK(parse_shaping_action("connections 3") == std::pair<std::string, unsigned>{"connections", 3});
    CHECK_FALSE(parse_shaping_action("rate"));
    CHECK_FALSE(parse_shaping_action("rate 0"));
    CHECK_FALSE(parse_shaping_action("connections 10001"));
    CHECK_FALSE(parse_shaping_action("rate -1"));
    CHECK_FALSE(parse_shaping_action("pause"));
    CHECK(parse_caps("50, 100,200") == std::vector<unsigned>{50, 100, 200});
    CHECK_FALSE(parse_caps(""));
    CHECK_FALSE(parse_caps("0"));
    CHECK_FALSE(parse_caps("5 x"));
    CHECK(parse_day("1970-01-02") == 1);
    CHECK(parse_day("2026-12-07") == 20'794);
    CHECK_FALSE(parse_day("2026-02-29"));
    CHECK_FALSE(parse_day("2026-1-07"));
    CHECK_FALSE(parse_pool_member("out1:0"));
    CHECK_FALSE(parse_pool_member("out1:1001"));
    CHECK_FALSE(parse_pool_member("out1:"));
    CHECK_FALSE(parse_pool_member(":3"));
    CHECK_FALSE(parse_pool_member("a b"));
}

TEST_CASE("error: bad sources and pools say which line and why", "[config]") {
    auto e = refused(R"([[listener]]
name = "smtp"
port = 2525
[[source]]
name = "gone"
address = "192.0.2.77"
[[source]]
name = "bad"
address = "not-an-ip"
helo = "no spaces allowed"
[[pool]]
name = "p"
sources = []
[[route]]
domain = "a.test"
[[content_rule]]
name = "r"
condition = 'mail-from ~ /x/'
actions = ["pool nope"]
[[mail_flow_policy]]
name = "X"
pool = "nope"
[[shaping_rule]]
name = "s"
pattern = "a(b"
action = "rate fast"
[[shaping_rule]]
name = "t"
pattern = "x"
provider = "nosuch"
scope = "source"
action = "bounce"
)");
    CHECK_THAT(e, Contains("t.toml:6: source[0].address: \"192.0.2.77\" cannot be used: the address is not "
                           "configured on this machine"));
    CHECK_THAT(e, Contains("t.toml:9: source[1].address: \"not-an-ip\" is not an IP address"));
    CHECK_THAT(e, Contains("t.toml:10: source[1].helo: \"no spaces allowed\" is not a host name"));
    CHECK_THAT(e, Contains("t.toml:13: pool[0].sources: empty list"));
    CHECK_THAT(e, Contains("route[0].hosts: missing"));
    CHECK_THAT(e, Contains("content_rule[0].actions[0]: there is no pool \"nope\""));
    CHECK_THAT(e, Contains("t.toml:22: mail_flow_policy[0].pool: there is no pool \"nope\""));
    CHECK_THAT(e, Contains("t.toml:25: shaping_rule[0].pattern: \"a(b\""));
    CHECK_THAT(e, Contains("t.toml:26: shaping_rule[0].action: \"rate fast\""));
    CHECK_THAT(e, Contains("t.toml:30: shaping_rule[1].provider: there is no provider \"nosuch\""));
    CHECK_THAT(e, Contains("t.toml:31: shaping_rule[1].scope: a source can only be suspended"));
}

TEST_CASE("error: a malformed route says which line and why", "[config]") {
    auto e = refused(R"([[listener]]
name = "smtp"
port = 2525
[[route]]
domain = "*"
hosts = ["127.0.0.1:99999"]
[[route]]
domain = "not a domain"
hosts = []
[delivery]
first_retry_ms = 5000
max_retry_ms = 1000
delay_notice_after_s = -1
)");
    CHECK_THAT(e, Contains("t.toml:6: route[0].hosts[0]: \"127.0.0.1:99999\" is not a next hop"));
    CHECK_THAT(e, Contains("t.toml:8: route[1].domain: \"not a domain\" is not a domain"));
    CHECK_THAT(e, Contains("t.toml:9: route[1].hosts: empty list"));
    CHECK_THAT(e, Contains("t.toml:12: delivery.max_retry_ms: 1000 is below first_retry_ms (5000)"));
    CHECK_THAT(e, Contains("t.toml:13: delivery.delay_notice_after_s: -1 is out of range; allowed: 0 (never)..2592000"));
}

// ---- the schema ----

TEST_CASE("schema: every key is documented, typed and readable from a loaded config", "[config][schema]") {
    auto c = load_config_file(data_dir() + "/full.toml");
    REQUIRE(c);
    for (const auto& k : config_keys()) {
        INFO(k.path());
        CHECK(!k.doc.empty());
        CHECK(k.get != nullptr);
        CHECK(k.set != nullptr);
        if (k.type == key_type::integer)
            CHECK(k.lo <= k.hi);
        if (k.type == key_type::enumeration)
            CHECK(!k.choices.empty());
        bool found = false;
        for (const auto& s : config_sections())
            found |= s.name == k.section;
        CHECK(found);
    }
}

TEST_CASE("schema: the canonical TOML of a configuration loads into the same configuration", "[config][schema]") {
    auto c = load_config_file(data_dir() + "/full.toml");
    REQUIRE(c);
    std::string text = to_toml(c.value());
    auto again = load_config_text(text, "canonical.toml");
    INFO(text);
    REQUIRE(again);
    CHECK(flatten(again.value()) == flatten(c.value()));
    CHECK(diff(c.value(), again.value()).empty());
    // One section alone.
    std::string smtp = to_toml(c.value(), "smtp");
    CHECK_THAT(smtp, StartsWith("[smtp]\n"));
    CHECK_THAT(smtp, Contains("\nhostname = \"mx1.example.test\"\n"));
    CHECK(smtp.find("[delivery]") == std::string::npos);
}

TEST_CASE("schema: diff names each changed key, its values and when it applies", "[config][schema]") {
    auto a = load_config_text("[[listener]]\nname = \"in\"\nport = 25\n[delivery]\nmax_messages_per_connection = 7\n",
                              "a.toml");
    auto b = load_config_text("[runtime]\ncores = 2\n[[listener]]\nname = \"in\"\nport = 25\nmax_connections = 5\n"
                              "[smtp]\naccepted_domains = [\"example.test\"]\n",
                              "b.toml");
    REQUIRE(a);
    REQUIRE(b);
    a.value().smtp.hostname = b.value().smtp.hostname;  // both the system's name
    auto d = diff(a.value(), b.value());
    REQUIRE(d.size() == 4);
    CHECK(d[0].key == "runtime.cores");
    CHECK(d[0].before == "0");
    CHECK(d[0].after == "2");
    CHECK(d[0].apply == apply_mode::restart);
    CHECK(d[1].key == "listener[0].max_connections");
    CHECK(d[1].after == "5");
    CHECK(d[1].apply == apply_mode::live);
    CHECK(d[2].key == "smtp.accepted_domains");
    CHECK(d[2].before == "[]");
    CHECK(d[2].after == "[\"example.test\"]");
    CHECK(d[3].key == "delivery.max_messages_per_connection");
    CHECK(d[3].before == "7");
    CHECK(d[3].after == "100");
    CHECK(format_diff(d) ==
          "~ runtime.cores: 0 -> 2  (at restart)\n"
          "~ listener[0].max_connections: 10000 -> 5\n"
          "~ smtp.accepted_domains: [] -> [\"example.test\"]\n"
          "~ delivery.max_messages_per_connection: 7 -> 100\n");
}

TEST_CASE("schema: a listener added or removed is a change at restart", "[config][schema]") {
    auto a = load_config_text("[[listener]]\nname = \"in\"\nport = 25\n", "a.toml");
    auto b = load_config_text("[[listener]]\nname = \"in\"\nport = 25\n[[listener]]\nname = \"sub\"\nport = 587\n",
                              "b.toml");
    REQUIRE(a);
    REQUIRE(b);
    a.value().smtp.hostname = b.value().smtp.hostname;
    auto d = diff(a.value(), b.value());
    REQUIRE(!d.empty());
    for (const auto& ch : d) {
        INFO(ch.key);
        CHECK(ch.key.starts_with("listener[1]."));
        CHECK(ch.before.empty());
        CHECK(ch.apply == apply_mode::restart);
    }
}

TEST_CASE("schema: a commit applies live keys and keeps restart keys until restart", "[config][schema]") {
    auto running = load_config_file(data_dir() + "/full.toml");
    REQUIRE(running);
    // The same listeners (count), every other key as the default has it.
    std::string text = std::string(default_config_toml());
    std::string more;
    for (size_t i = 1; i < running.value().listeners.size(); ++i)
        more += fmt::format("[[listener]]\nname = \"l{}\"\nport = {}\n", i, 3000 + i);
    auto committed = load_config_text(text + more, "c.toml");
    REQUIRE(committed);
    const config e = effective_config(running.value(), committed.value());
    auto changes = diff(running.value(), committed.value());
    REQUIRE(changes.size() > 20);
    flat_config fe = flatten(e), fr = flatten(running.value()), fc = flatten(committed.value());
    auto value = [](const flat_config& f, const std::string& k) {
        for (const auto& [key, v] : f)
            if (key == k)
                return v;
        return std::string();
    };
    size_t live = 0, restart = 0;
    for (const auto& ch : changes) {
        INFO(ch.key);
        if (ch.apply == apply_mode::live) {
            CHECK(value(fe, ch.key) == value(fc, ch.key));
            ++live;
        } else {
            CHECK(value(fe, ch.key) == value(fr, ch.key));
            ++restart;
        }
    }
    CHECK(live > 0);
    CHECK(restart > 0);
}

TEST_CASE("set_config_key: typed by the schema, by index or by name", "[config][edit]") {
    const std::string base = "[[listener]]\nname = \"in\"\nport = 25\n[[route]]\ndomain = \"example.test\"\nhosts = [\"192.0.2.1\"]\n";
    auto t = set_config_key(base, "delivery.max_connections_per_destination", "5");
    REQUIRE(t);
    t = set_config_key(t.value(), "listener[0].max_connections", "7");
    REQUIRE(t);
    t = set_config_key(t.value(), "listener[in].auth", "required");
    REQUIRE(t);
    t = set_config_key(t.value(), "smtp.accepted_domains", "[\"a.test\", b.test]");
    REQUIRE(t);
    t = set_config_key(t.value(), "route[example.test].hosts", "192.0.2.2:2525, 192.0.2.3");
    REQUIRE(t);
    t = set_config_key(t.value(), "listener[0].max_message_size", "10M");
    REQUIRE(t);
    t = set_config_key(t.value(), "delivery.starttls", "off");
    REQUIRE(t);
    auto c = load_config_text(t.value(), "candidate");
    INFO(t.value());
    REQUIRE(c);
    CHECK(c.value().delivery.max_connections_per_destination == 5);
    CHECK(c.value().listeners[0].max_connections == 7);
    CHECK(c.value().listeners[0].auth == auth_mode::required);
    CHECK(c.value().smtp.accepted_domains == std::vector<std::string>{"a.test", "b.test"});
    CHECK(c.value().routes[0].hosts == std::vector<std::string>{"192.0.2.2:2525", "192.0.2.3"});
    CHECK(c.value().listeners[0].max_message_size_bytes == 10u << 20);
    CHECK(!c.value().delivery.starttls);
    // The empty list.
    auto e = set_config_key(t.value(), "smtp.accepted_domains", "[]");
    REQUIRE(e);
    CHECK(load_config_text(e.value(), "c").value().smtp.accepted_domains.empty());
}

TEST_CASE("set_config_key: bad keys and values get one line saying why", "[config][edit]") {
    const std::string base = "[[listener]]\nname = \"in\"\nport = 25\n";
    auto err = [&](std::string_view k, std::string_view v) {
        auto r = set_config_key(base, k, v);
        REQUIRE(!r);
        return r.error();
    };
    CHECK_THAT(err("delivery.max_conections_per_destination", "5"),
               Contains("unknown key \"max_conections_per_destination\" in [delivery] (did you mean "
                        "max_connections_per_destination?)"));
    CHECK_THAT(err("delivry.starttls", "true"), Contains("unknown section \"delivry\" (did you mean delivery?)"));
    CHECK_THAT(err("delivery.max_messages_per_minute", "many"), Contains("expected an integer, got \"many\""));
    CHECK_THAT(err("delivery.starttls", "perhaps"), Contains("expected true or false"));
    CHECK_THAT(err("listener.port", "26"), Contains("is a list: say which"));
    CHECK_THAT(err("listener[3].port", "26"), Contains("there is no listener[3] (the candidate has 1)"));
    CHECK_THAT(err("listener[out].port", "26"), Contains("no [[listener]] with name = \"out\""));
    CHECK_THAT(err("cores", "2"), Contains("not a key"));
    // A value in range for its type but not for the key is the loader's to refuse.
    auto r = set_config_key(base, "listener[0].port", "70000");
    REQUIRE(r);
    auto c = load_config_text(r.value(), "candidate");
    REQUIRE(!c);
    CHECK_THAT(c.error(), Contains("listener[0].port: 70000 is out of range; allowed: 1..65535"));
}

// ---- the version store ----

namespace {
std::string fresh_dir(const char* name) {
    auto d = std::filesystem::temp_directory_path() / fmt::format("rw_store_{}_{}", name, ::getpid());
    std::filesystem::remove_all(d);
    return d.string();
}
}  // namespace

TEST_CASE("config_store: versions are numbered, recorded and pruned to the newest", "[config][store]") {
    const std::string dir = fresh_dir("prune");
    config_store st(dir + "/nested/config", 3);
    REQUIRE(st.open());
    CHECK(st.latest() == 0);
    CHECK(st.history(10).empty());
    for (int i = 1; i <= 5; ++i) {
        version_info v;
        v.time = 1000 + i;
        v.who = "uid=0(root) pid=1";
        v.comment = fmt::format("change {}", i);
        v.diff = "~ a: 1 -> 2\n";
        auto n = st.commit(fmt::format("# v{}\n", i), v);
        REQUIRE(n);
        CHECK(n.value() == uint64_t(i));
    }
    CHECK(st.latest() == 5);
    auto h = st.history(10);
    REQUIRE(h.size() == 3);  // only the newest `keep`
    CHECK(h[0].number == 5);
    CHECK(h[0].comment == "change 5");
    CHECK(h[0].time == 1005);
    CHECK(h[2].number == 3);
    CHECK(st.text(4).value() == "# v4\n");
    CHECK(!st.text(1));  // pruned
    CHECK(!std::filesystem::exists(dir + "/nested/config/1.toml"));
    // A configuration without its record (a crash between the two) is not a version.
    { std::ofstream(dir + "/nested/config/6.toml") << "# half\n"; }
    CHECK(st.latest() == 5);
    version_info v;
    auto n = st.commit("# v6\n", v);
    REQUIRE(n);
    CHECK(n.value() == 6);
    CHECK(st.text(6).value() == "# v6\n");
    std::filesystem::remove_all(dir);
}

TEST_CASE("choose_start_config: the newest version unless the given text changed", "[config][store]") {
    const std::string dir = fresh_dir("start");
    const std::string base = fmt::format("[[listener]]\nname = \"in\"\nport = 25\n[control]\nconfig_dir = \"{}\"\n", dir);
    auto first = load_config_text(base, "f.toml");
    REQUIRE(first);
    auto s1 = choose_start_config(first.value(), base);
    CHECK(s1.version == 1);
    CHECK_THAT(s1.note, Contains("running f.toml as configuration version 1"));
    // A commit from the shell: version 2 ...
    config_store st(dir, 100);
    version_info v;
    REQUIRE(st.commit(base + "[delivery]\nstarttls = false\n", v));
    // ... is what the next start runs, the file being unchanged.
    auto s2 = choose_start_config(first.value(), base);
    CHECK(s2.version == 2);
    CHECK(!s2.cfg.delivery.starttls);
    CHECK_THAT(s2.note, Contains("running configuration version 2"));
    // The file changed: it wins, as version 3, with its diff recorded.
    const std::string edited = base + "[delivery]\nsmtp_port = 2525\n";
    auto changed = load_config_text(edited, "f.toml");
    REQUIRE(changed);
    auto s3 = choose_start_config(changed.value(), edited);
    CHECK(s3.version == 3);
    CHECK(s3.cfg.delivery.starttls);
    CHECK(s3.cfg.delivery.smtp_port == 2525);
    CHECK_THAT(s3.note, Contains("it changed since the last start"));
    auto info = st.info(3);
    REQUIRE(info);
    CHECK_THAT(info.value().diff, Contains("delivery.starttls: false -> true"));
    CHECK_THAT(info.value().diff, Contains("delivery.smtp_port: 25 -> 2525"));
    std::filesystem::remove_all(dir);
}

TEST_CASE("sender groups, mail flow policies, recipient access and call-ahead load with the built-ins", "[config]") {
    auto r = load_config_text(R"([[listener]]
name = "smtp"
port = 2525
[delivery]
internal_hosts = ["192.0.2.25:2525"]
[screening]
dnsbl_sites = ["bl.example.test*2", "wl.example.test=127.0.[0..255].[1..3]*-3"]
pipelining = "enforce"
[[mail_flow_policy]]
name = "SLOW"
max_recipients_per_hour = 50
tls = "required"
[[sender_group]]
name = "UNKNOWNLIST"
policy = "SLOW"
[[sender_group]]
name = "PARTNERS"
policy = "TRUSTED"
networks = ["198.51.100.0/24"]
rdns = ["*.partner.example"]
dnsbl_max_score = -3
[[recipient_access]]
recipient = "postmaster@"
action = "accept"
[call_ahead]
domains = ["example.test"]
)",
                              "t.toml");
    INFO((r ? std::string() : r.error()));
    REQUIRE(r);
    const config& c = r.value();
    CHECK(c.screening.pipelining == screen_action::enforce);
    const auto policies = flow_policies_of(c.flow_policies);
    REQUIRE(policies.size() == 6);
    CHECK(policies[0].name == "SLOW");
    CHECK(policies[0].tls == tls_policy::required);
    const auto groups = sender_groups_of(c.sender_groups);
    REQUIRE(groups.size() == 6);
    CHECK(groups[0].name == "PARTNERS");
    CHECK(groups[1].name == "RELAYLIST");
    CHECK(groups.back().name == "UNKNOWNLIST");
    CHECK(groups.back().policy == "SLOW");
    CHECK(c.recipient_access.size() == 1);
    CHECK(c.call_ahead.domains == std::vector<std::string>{"example.test"});
}

TEST_CASE("error: sender groups and call-ahead say what is wrong", "[config]") {
    auto e = refused(R"([[listener]]
name = "smtp"
port = 2525
[screening]
dnsbl_sites = ["bl.example.test*0"]
[[mail_flow_policy]]
name = "X"
reject_reply = "250 2.0.0 fine"
[[sender_group]]
name = "G"
policy = "NOPE"
spf = ["maybe"]
[[sender_group]]
name = "UNKNOWNLIST"
policy = "ACCEPTED"
networks = ["192.0.2.0/24"]
[[recipient_access]]
recipient = "@example.test"
action = "allow"
[call_ahead]
domains = ["example.test"]
hosts = ["mail.example.test"]
)");
    CHECK_THAT(e, Contains("t.toml:5: screening.dnsbl_sites[0]: \"bl.example.test*0\": weight \"0\""));
    CHECK_THAT(e, Contains("t.toml:8: mail_flow_policy[0].reject_reply: \"250 2.0.0 fine\""));
    CHECK_THAT(e, Contains("t.toml:11: sender_group[0].policy: there is no mail flow policy \"NOPE\""));
    CHECK_THAT(e, Contains("t.toml:12: sender_group[0].spf[0]: \"maybe\" is not an SPF result"));
    CHECK_THAT(e, Contains("sender_group[1]: UNKNOWNLIST holds every client no other group holds"));
    CHECK_THAT(e, Contains("t.toml:18: recipient_access[0].recipient: @example.test: no local part"));
    CHECK_THAT(e, Contains("t.toml:19: recipient_access[0].action: unknown value \"allow\""));
    CHECK_THAT(e, Contains("t.toml:22: call_ahead.hosts[0]: \"mail.example.test\" is not an IP address"));
}
