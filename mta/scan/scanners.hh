// External scanners on the message as it streams in: anti-virus through
// clamd (INSTREAM over its Unix or TCP socket) and anti-spam through rspamd
// (POST /checkv2 over HTTP, the body sent chunked). Each message takes a
// connection to each at its first bytes, from its core's pool of idle ones
// (clamd sessions, IDSESSION; rspamd connections it keeps alive) or a new
// one, and gives it back after a good answer; every piece the session
// stores in the spool goes to them too, awaited, so a scanner that reads
// slowly slows the client (back-pressure) instead of filling memory; at
// the end of the message both are told the end at once and their answers
// read. Nothing of the body is held here beyond the piece being sent.
//
// A scanner that cannot be reached, times out (each send, and the answer,
// have timeout_ms), or answers garbage is `failed`, with the reason: the
// session then fails open or tempfails as its options say. A message
// larger than a scanner's max_size is `skipped` by it (the bytes past the
// limit are not sent; the connection is dropped).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/net/addr.hh"
#include "runtime/net/tcp.hh"
#include "runtime/reactor/task.hh"

namespace rw::mta::scan {

// Where a scanner listens: "/run/clamav/clamd.ctl" or "127.0.0.1:3310".
struct endpoint {
    std::string path;      // a Unix socket, or
    net::address address;  // a TCP address
    static std::optional<endpoint> parse(std::string_view s);
    std::string to_string() const;
};

enum class failure_mode { accept, tempfail };

// A stream connection to e (Unix or TCP), with a deadline.
task<result<net::tcp_stream>> connect_endpoint(const endpoint& e, std::chrono::milliseconds timeout);

struct clamd_options {
    endpoint where;
    std::chrono::milliseconds timeout{30'000};
    uint64_t max_size = uint64_t(25) << 20;
    failure_mode on_failure = failure_mode::accept;
};

struct rspamd_options {
    endpoint where;
    std::chrono::milliseconds timeout{30'000};
    uint64_t max_size = uint64_t(10) << 20;
    failure_mode on_failure = failure_mode::accept;
};

// What rspamd is told about the message besides its bytes.
struct message_info {
    std::string ip, helo, from, hostname, user;
    std::vector<std::string> rcpts;
};

enum class status { none, clean, infected, scanned, failed, skipped };
std::string_view to_string(status s) noexcept;

struct av_result {
    status st = status::none;  // clean, infected, failed, skipped (none: not asked)
    std::string virus;         // infected: the signature's name
    std::string why;           // failed or skipped: what happened
    std::chrono::microseconds took{0};
    bool reused = false;       // on a pooled connection
};

struct spam_result {
    status st = status::none;  // scanned, failed, skipped
    std::string action;        // rspamd's: "no action", "add header", "rewrite subject", "soft reject", "reject", "greylist"
    double score = 0, required = 0;
    std::vector<std::string> symbols;  // by name, highest score first (at most 32)
    std::string why;
    std::chrono::microseconds took{0};
    bool reused = false;
};

// Idle connections in this core's pool (all scanners).
size_t idle_scanner_connections();

// One [[milter]] (milter.hh).
struct milter_options {
    std::string name;  // for logs
    endpoint where;
    std::chrono::milliseconds connect_timeout{5'000};
    std::chrono::milliseconds command_timeout{30'000};  // each answer
    std::chrono::milliseconds eom_timeout{120'000};     // the end of the message (progress extends it)
    failure_mode on_failure = failure_mode::accept;
};

// What the session does with the answers ([antivirus], [antispam]).
struct options {
    std::optional<clamd_options> clamd;  // nullopt: no anti-virus
    enum class virus_action { reject, quarantine, drop } virus = virus_action::reject;
    int virus_code = 554;
    std::string virus_enhanced = "5.7.0", virus_text = "Message contains a virus";
    std::optional<rspamd_options> rspamd;  // nullopt: no anti-spam
    bool spam_quarantine = false;          // rspamd's reject holds the message in quarantine spam
    int spam_code = 550;
    std::string spam_enhanced = "5.7.1", spam_text = "Message rejected as spam";
    std::string subject_tag = "[SPAM]";    // for rspamd's rewrite subject
    bool spam_headers = true;              // X-Spam-Status on every scanned message
    std::vector<milter_options> milters;   // [[milter]], in order
};

// Parses rspamd's /checkv2 JSON answer into r (status scanned), or says
// why it cannot (r.st failed).
void parse_rspamd(std::string_view json, spam_result& r);
// Parses clamd's INSTREAM answer ("stream: OK", "stream: NAME FOUND",
// "... ERROR") into r.
void parse_clamd(std::string_view line, av_result& r);

// One message's scans.
class job {
public:
    job(const clamd_options* clamd, const rspamd_options* rspamd, message_info info);
    ~job();
    job(const job&) = delete;
    job& operator=(const job&) = delete;

    // The next piece of the message (as it will be stored).
    task<void> feed(std::string_view piece);
    // The end of the message: the answers, in av and spam.
    task<void> finish();

    av_result av;
    spam_result spam;

private:
    struct stream;
    task<void> feed_one(stream& s, std::string_view piece);
    task<bool> open(stream& s);
    std::unique_ptr<stream> _clamd, _rspamd;
    message_info _info;
    const clamd_options* _co;
    const rspamd_options* _ro;
};

}  // namespace rw::mta::scan
