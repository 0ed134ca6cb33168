// Reply classes (classify.hh).
#include "mta/delivery/classify.hh"

#include "mta/delivery/delivery.hh"

#include <algorithm>
#include <array>
#include <string>

namespace rw::mta::delivery {

static_assert(k_reply_classes == std::tuple_size_v<decltype(service::counters::failures)>);

namespace {

std::string lower(std::string_view s) {
    std::string o(s.substr(0, 2000));
    for (char& c : o)
        if (c >= 'A' && c <= 'Z')
            c = char(c - 'A' + 'a');
    return o;
}

bool any(const std::string& t, std::initializer_list<std::string_view> words) {
    return std::any_of(words.begin(), words.end(), [&](std::string_view w) { return t.find(w) != std::string::npos; });
}

// From the text alone; unknown when it says nothing recognisable.
reply_class by_text(const std::string& t) {
    // TLS first: "certificate verify failed" must not read as policy.
    if (any(t, {"tls", "starttls", "ssl", "certificate", "handshake", "encryption required", "must issue a starttls"}))
        return reply_class::tls;
    if (any(t, {"over quota", "quota exceeded", "mailbox full", "mailbox is full", "mailbox size limit",
                "insufficient storage for the mailbox", "exceeded storage", "user is over", "inbox is full"}))
        return reply_class::mailbox_full;
    if (any(t, {"user unknown", "unknown user", "no such user", "no such mailbox", "no such recipient",
                "does not exist", "doesn't exist", "invalid recipient", "recipient unknown", "unknown recipient",
                "address rejected", "mailbox unavailable", "mailbox not found", "user not found", "not a valid mailbox",
                "account has been disabled", "account is disabled", "mailbox disabled", "no longer", "unrouteable address",
                "recipient address rejected", "bad destination mailbox"}))
        return reply_class::bad_mailbox;
    if (any(t, {"blocklist", "blacklist", "block list", "black list", "listed at", "listed in", "listed on", "dnsbl",
                "rbl", "spamhaus", "spamcop", "barracuda", "reputation", "sender score", "too many connections",
                "too many messages", "rate limit", "ratelimit", "rate-limit", "throttl", "unusual rate",
                "exceeded the rate", "temporarily deferred", "ip address", "your ip", "client host", "poor reputation"}))
        return reply_class::reputation;
    if (any(t, {"spam", "unsolicited", "content", "policy", "virus", "malware", "phish", "dmarc", "spf", "dkim",
                "authentication", "not authorized", "relay", "relaying", "prohibited", "not allowed", "not permitted",
                "message rejected", "rejected due to", "size", "too large", "too big", "mail loop", "too many hops"}))
        return reply_class::policy;
    if (any(t, {"host not found", "domain not found", "no such domain", "nxdomain", "cannot resolve", "no mx",
                "no usable mx", "has no address", "name service", "dns", "null mx", "does not accept mail"}))
        return reply_class::dns;
    if (any(t, {"connection refused", "connection reset", "connection timed out", "timed out", "timeout",
                "connection closed", "lost connection", "network is unreachable", "no route to host", "broken pipe",
                "send failed", "connect", "not an smtp reply"}))
        return reply_class::network;
    return reply_class::unknown;
}

}  // namespace

std::string_view to_string(reply_class c) noexcept {
    switch (c) {
    case reply_class::bad_mailbox: return "bad-mailbox";
    case reply_class::mailbox_full: return "mailbox-full";
    case reply_class::policy: return "policy";
    case reply_class::reputation: return "reputation";
    case reply_class::dns: return "dns";
    case reply_class::network: return "network";
    case reply_class::tls: return "tls";
    case reply_class::unknown: return "unknown";
    }
    return "unknown";
}

reply_class classify(int code, std::string_view enhanced, std::string_view text) {
    const std::string t = lower(text);
    // The enhanced code's subject and detail ("5.1.1": 1 and 1).
    int subject = -1, detail = -1;
    if (enhanced.size() >= 5 && (enhanced[0] == '4' || enhanced[0] == '5') && enhanced[1] == '.') {
        const size_t dot = enhanced.find('.', 2);
        // RFC 3463: subject and detail are 1..3 digits each.
        if (dot != std::string_view::npos && dot - 2 >= 1 && dot - 2 <= 3 && enhanced.size() - dot - 1 >= 1 &&
            enhanced.size() - dot - 1 <= 3) {
            subject = 0;
            for (char c : enhanced.substr(2, dot - 2))
                subject = c >= '0' && c <= '9' ? subject * 10 + (c - '0') : -1000;
            detail = 0;
            for (char c : enhanced.substr(dot + 1))
                detail = c >= '0' && c <= '9' ? detail * 10 + (c - '0') : -1000;
            if (subject < 0 || detail < 0)
                subject = detail = -1;
        }
    }
    // Specific enhanced codes first (RFC 3463, RFC 7372, the IANA registry).
    switch (subject) {
    case 1:
        if (detail == 2 || detail == 10)
            return reply_class::dns;  // bad destination system; null MX (RFC 7505)
        if (detail == 1 || detail == 3 || detail == 6)
            return reply_class::bad_mailbox;
        if (detail == 7 || detail == 8)
            return reply_class::policy;  // our sender's address refused
        break;
    case 2:
        if (detail == 2)
            return reply_class::mailbox_full;
        if (detail == 1)
            return reply_class::bad_mailbox;  // mailbox disabled
        if (detail == 3)
            return reply_class::policy;  // message too large for the mailbox
        break;
    case 3:
        if (detail == 4)
            return reply_class::policy;  // too big for the system
        if (detail == 1 && any(t, {"quota", "full"}))
            return reply_class::mailbox_full;
        break;
    case 4:
        if (detail == 3 || detail == 4)
            return reply_class::dns;
        if (detail == 1 || detail == 2 || detail == 7)
            return reply_class::network;
        if (detail == 6)
            return reply_class::policy;  // routing loop
        break;
    case 6: return reply_class::policy;  // message content or media
    case 7:
        if (detail == 10 || detail == 11 || detail == 5 || detail == 4)
            return reply_class::tls;
        if (detail == 23 || detail == 24 || detail == 26 || detail == 20 || detail == 21 || detail == 22 ||
            detail == 27 || detail == 7)
            return reply_class::policy;  // SPF, DKIM, DMARC and integrity failures
        if (detail == 25)
            return reply_class::reputation;  // reverse DNS validation failed
        break;
    default: break;
    }
    const reply_class from_text = by_text(t);
    if (from_text != reply_class::unknown)
        return from_text;
    // What the code still says.
    if (subject == 7)
        return reply_class::policy;
    if (subject == 1)
        return reply_class::bad_mailbox;
    if (subject == 4)
        return reply_class::network;
    if (code == 0)
        return reply_class::network;  // no reply at all
    if (code == 421)
        return reply_class::network;  // the service is closing the channel
    if (code == 550 || code == 551 || code == 553)
        return subject == -1 ? reply_class::bad_mailbox : reply_class::unknown;  // RFC 5321: mailbox unavailable
    if (code == 552)
        return reply_class::mailbox_full;  // RFC 5321: exceeded storage allocation
    return reply_class::unknown;
}

reply_class classify_line(std::string_view line) {
    int code = 0;
    if (line.size() >= 3 && std::all_of(line.begin(), line.begin() + 3, [](char c) { return c >= '0' && c <= '9'; }) &&
        (line.size() == 3 || line[3] == ' ' || line[3] == '-')) {
        code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        line.remove_prefix(std::min<size_t>(4, line.size()));
    }
    std::string_view enhanced;
    const size_t sp = line.find(' ');
    std::string_view w = line.substr(0, sp);
    if (w.size() >= 5 && (w[0] == '4' || w[0] == '5') && w[1] == '.' &&
        std::all_of(w.begin(), w.end(), [](char c) { return c == '.' || (c >= '0' && c <= '9'); })) {
        enhanced = w;
        line = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
    }
    return classify(code, enhanced, line);
}

}  // namespace rw::mta::delivery
