// The SMTP server's refusals (see replies.hh).
#include "mta/smtp/replies.hh"

#include <fmt/format.h>

namespace rw::mta::smtp {

refusal spool_unhealthy(fs::spool_health h) {
    if (h == fs::spool_health::full)
        return {{452, "4.3.1", "Insufficient system storage"}, "spool full"};
    return {{451, "4.3.0", "Temporary local problem: the queue is unavailable"}, "spool failed"};
}

refusal spool_failed(const fs::spool_error& e) {
    switch (e.code) {
    case fs::spool_errc::full: return {{452, "4.3.1", "Insufficient system storage"}, "spool full"};
    case fs::spool_errc::too_large: return message_too_big();
    case fs::spool_errc::failed:
    case fs::spool_errc::not_found:
    case fs::spool_errc::bad_state:
    case fs::spool_errc::corrupt: break;
    }
    return {{451, "4.3.0", "Temporary local problem: the message could not be queued"}, "spool failed"};
}

refusal message_too_big() { return {{552, "5.3.4", "Message size exceeds fixed maximum message size"}, "too big"}; }

refusal dmarc_rejected(std::string_view domain) {
    return {{550, "5.7.1", fmt::format("Rejected by the DMARC policy of {}: no aligned SPF or DKIM pass", domain)},
            "dmarc"};
}

refusal content_rejected(int code, std::string_view enhanced, std::string_view text) {
    return {{code, enhanced, std::string(text)}, "content rule"};
}

refusal header_too_large(std::string_view why) {
    return {{552, "5.3.4", fmt::format("Message header too large: {}", why)}, "header too large"};
}

refusal too_many_hops(unsigned count, unsigned limit) {
    return {{554, "5.4.6",
             fmt::format("Too many hops: {} Received headers, more than {} (mail loop?)", count, limit)},
            "mail loop"};
}

refusal conserving_connect(std::string_view hostname) {
    return {{421, "4.3.2", fmt::format("{} Service not available: system resources low, try again later", hostname)},
            "resource conservation"};
}

refusal listener_suspended(std::string_view hostname) {
    return {{421, "4.3.2", fmt::format("{} Service not available: this listener is suspended, try again later",
                                       hostname)},
            "listener suspended"};
}

refusal conserving_mail() {
    return {{452, "4.3.1", "Insufficient system resources, try again later"}, "resource conservation"};
}

refusal too_many_connections(std::string_view hostname) {
    return {{421, "4.3.2", fmt::format("{} Error: too many connections; try again later", hostname)},
            "connection limit"};
}

refusal too_many_from_address(std::string_view hostname) {
    return {{421, "4.7.0", fmt::format("{} Error: too many connections from your address; try again later", hostname)},
            "connections per address"};
}

refusal out_of_descriptors(std::string_view hostname) {
    return {{421, "4.3.2", fmt::format("{} Error: out of resources; try again later", hostname)},
            "out of file descriptors"};
}

std::optional<refusal> spf_refusal(const policy::spf::outcome& o, bool reject_fail, bool tempfail_temperror) {
    // The explanation comes from the sender's DNS: printable ASCII only, bounded.
    auto clean = [](std::string_view t) {
        std::string out;
        for (char c : t.substr(0, 300))
            out += (uint8_t(c) < 0x20 || uint8_t(c) > 0x7e) ? '?' : c;
        return out;
    };
    if (o.res == policy::spf::result::fail && reject_fail)
        return refusal{{550, "5.7.23", fmt::format("SPF validation failed: {}", clean(o.explanation))}, "spf fail"};
    if (o.res == policy::spf::result::temperror && tempfail_temperror)
        return refusal{{451, "4.7.24", fmt::format("SPF validation error: {}", clean(o.reason))}, "spf temperror"};
    return std::nullopt;
}

std::string wire(const reply& r) {
    return fmt::format("{} {}{}{}\r\n", r.code, r.enhanced, r.enhanced.empty() ? "" : " ", r.text);
}

}  // namespace rw::mta::smtp
