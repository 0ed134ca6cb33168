// Delivery status notifications (RFC 3464 inside RFC 6522 multipart/report):
// what the gateway sends the envelope sender when recipients fail for good,
// when a message expires in the queue, or on success when NOTIFY=SUCCESS
// asked for it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rw::mta::delivery {

struct dsn_recipient {
    std::string address;
    std::string orcpt;
    std::string action;   // "failed", "delivered", "delayed"
    std::string status;   // "5.1.1"
    std::string remote_mta;      // host name, may be empty
    std::string diagnostic;      // the remote reply, "smtp; 550 5.1.1 ..."
    int64_t will_retry_until_unix = 0;  // for "delayed": when the queue gives up (0: not said)
    std::string failure_class;   // classify.hh's class of the reply ("bad-mailbox"); "" for none
};

struct dsn_input {
    std::string reporting_mta;  // our host name
    std::string original_sender;
    std::string envid;
    int64_t arrival_unix = 0;
    int64_t now_unix = 0;
    std::string mid;
    std::vector<dsn_recipient> rcpts;
    std::string original;  // the original message, or only its header (RET=HDRS)
    bool full = false;     // original is the whole message
};

// The DSN message (header and body, CRLF line endings).
std::string build_dsn(const dsn_input& in);

// The header of a message: bytes up to and including the blank line.
std::string_view header_of(std::string_view message);

}  // namespace rw::mta::delivery
