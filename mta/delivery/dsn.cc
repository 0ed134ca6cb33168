#include "mta/delivery/dsn.hh"

#include <fmt/format.h>

#include "mail/header.hh"

namespace rw::mta::delivery {

namespace {
std::string rfc5322_date(int64_t t) { return mail::date_time(t); }
}  // namespace

std::string_view header_of(std::string_view m) {
    size_t e = m.find("\r\n\r\n");
    if (e != std::string_view::npos)
        return m.substr(0, e + 4);
    if (m.starts_with("\r\n"))
        return m.substr(0, 2);
    return m;
}

std::string build_dsn(const dsn_input& in) {
    bool any_failed = false, any_delayed = false;
    for (auto& r : in.rcpts) {
        any_failed |= r.action == "failed";
        any_delayed |= r.action == "delayed";
    }
    const std::string boundary = fmt::format("{}/{}", in.mid, in.reporting_mta);
    std::string subject = any_failed    ? "Undelivered Mail Returned to Sender"
                          : any_delayed ? "Delayed Mail (still being retried)"
                                        : "Successful Mail Delivery Report";
    std::string o;
    o += fmt::format("From: Mail Delivery System <MAILER-DAEMON@{}>\r\n", in.reporting_mta);
    o += fmt::format("To: <{}>\r\n", in.original_sender);
    o += fmt::format("Subject: {}\r\n", subject);
    o += fmt::format("Date: {}\r\n", rfc5322_date(in.now_unix));
    o += fmt::format("Message-ID: <{}.dsn@{}>\r\n", in.mid, in.reporting_mta);
    o += "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n";
    o += fmt::format("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{}\"\r\n", boundary);
    o += "\r\nThis is a MIME-encapsulated message.\r\n\r\n";
    o += fmt::format("--{}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", boundary);
    o += fmt::format("This is the mail system at host {}.\r\n\r\n", in.reporting_mta);
    if (any_failed)
        o += "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more "
             "recipients. It's attached below.\r\n\r\n";
    else if (any_delayed)
        o += "Your message could not be delivered yet to one or more recipients;\r\nit is still being "
             "retried. You do not need to resend it.\r\n\r\n";
    else
        o += "Your message was successfully delivered to the destination(s)\r\nlisted below.\r\n\r\n";
    for (auto& r : in.rcpts)
        o += fmt::format("<{}>: {}\r\n", r.address, r.diagnostic.empty() ? r.action : r.diagnostic);
    o += "\r\n";
    o += fmt::format("--{}\r\nContent-Type: message/delivery-status\r\n\r\n", boundary);
    o += fmt::format("Reporting-MTA: dns; {}\r\n", in.reporting_mta);
    if (!in.envid.empty())
        o += fmt::format("Original-Envelope-Id: {}\r\n", in.envid);
    o += fmt::format("X-Ringway-Queue-ID: {}\r\n", in.mid);
    o += fmt::format("Arrival-Date: {}\r\n", rfc5322_date(in.arrival_unix));
    for (auto& r : in.rcpts) {
        o += "\r\n";
        if (!r.orcpt.empty())
            o += fmt::format("Original-Recipient: {}\r\n", r.orcpt);
        o += fmt::format("Final-Recipient: rfc822; {}\r\n", r.address);
        o += fmt::format("Action: {}\r\n", r.action);
        o += fmt::format("Status: {}\r\n", r.status);
        if (!r.remote_mta.empty())
            o += fmt::format("Remote-MTA: dns; {}\r\n", r.remote_mta);
        if (!r.diagnostic.empty())
            o += fmt::format("Diagnostic-Code: {}\r\n", r.diagnostic);
        o += fmt::format("Last-Attempt-Date: {}\r\n", rfc5322_date(in.now_unix));
        if (r.will_retry_until_unix)
            o += fmt::format("Will-Retry-Until: {}\r\n", rfc5322_date(r.will_retry_until_unix));
        // An extension field (RFC 3464 7.1): what kind of failure it was.
        if (!r.failure_class.empty())
            o += fmt::format("X-Ringway-Failure-Class: {}\r\n", r.failure_class);
    }
    o += "\r\n";
    o += fmt::format("--{}\r\nContent-Type: {}\r\n\r\n", boundary,
                     in.full ? "message/rfc822" : "text/rfc822-headers");
    o += in.original;
    if (!o.ends_with("\r\n"))
        o += "\r\n";
    o += fmt::format("\r\n--{}--\r\n", boundary);
    return o;
}

}  // namespace rw::mta::delivery
