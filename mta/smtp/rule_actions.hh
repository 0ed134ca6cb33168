// What a content rule's envelope actions write to the spool besides the
// message itself: a message under a new envelope with another's body
// (redirect, route, copy), and a notice about a message (notify).
//
// A message's envelope is written when its first bytes are, long before a
// rule can look at the whole of it; so a rule that changes where it goes
// does not rewrite it: the message is committed with every recipient
// final, and a second message with its body, as received, and the same
// added header fields is committed under the new envelope before the
// client gets its 250. A crash in between leaves nothing acknowledged
// undone: the first message is removed as finished, and the client, which
// got no reply, sends it again.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fs/spool.hh"
#include "runtime/reactor/task.hh"

namespace rw::mta::smtp {

// A new message in sh: the body of `source` (also in sh) as received,
// under `env`, with `added` and the recipients' first `states`. With
// `tail`, only the first `keep` bytes of the source are taken and tail
// follows them (a milter's new body after the header section); the
// caller keeps *tail alive until the task is done.
task<result<uint64_t, fs::spool_error>> spool_copy(fs::shard& sh, uint64_t source, fs::envelope env,
                                                   fs::added_headers added, std::vector<fs::rcpt_state> states,
                                                   uint64_t keep = UINT64_MAX, const std::string* tail = nullptr);

// A new message in sh holding `message` (header and body, CRLF).
task<result<uint64_t, fs::spool_error>> spool_text(fs::shard& sh, fs::envelope env, std::string message);

struct notice {
    std::string hostname;  // ours
    std::string to;
    std::string rule, text;  // the rule that asked, and its text (may be empty)
    std::string outcome;     // "delivered", "quarantined in spam", "rejected: 550 ...", ...
    std::string mid;         // "" when the message was not queued
    std::string client, helo, sender, subject;
    std::vector<std::string> rcpts;
    std::vector<std::string> fired;
    uint64_t size = 0;
    int64_t now_unix = 0;
    uint64_t serial = 0;  // makes the Message-ID unique
};

// The notice: a text/plain message from MAILER-DAEMON, marked
// Auto-Submitted. What came from the client (sender, subject, ...) is
// put in the body with control characters replaced, never in the header.
std::string build_notice(const notice& n);

}  // namespace rw::mta::smtp
