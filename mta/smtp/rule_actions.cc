// Rule actions that write to the spool (rule_actions.hh).
#include "mta/smtp/rule_actions.hh"

#include <fmt/format.h>

#include <algorithm>

#include "mail/header.hh"

namespace rw::mta::smtp {

task<result<uint64_t, fs::spool_error>> spool_copy(fs::shard& sh, uint64_t source, fs::envelope env,
                                                   fs::added_headers added, std::vector<fs::rcpt_state> states,
                                                   uint64_t keep, const std::string* tail) {
    auto w = sh.begin(std::move(env));
    if (!w)
        co_return unexpected(w.error());
    fs::message_writer mw = std::move(w.value());
    std::string buf(64 << 10, '\0');
    uint64_t off = 0;
    while (off < keep) {
        const size_t want = size_t(std::min<uint64_t>(buf.size(), keep - off));
        auto n = co_await sh.read_body(source, off, std::span<char>(buf.data(), want));
        if (!n)
            co_return unexpected(n.error());
        if (n.value() == 0)
            break;
        auto a = co_await mw.append(std::span<const char>(buf.data(), n.value()));
        if (!a)
            co_return unexpected(a.error());
        off += n.value();
    }
    if (tail) {
        auto a = co_await mw.append(std::span<const char>(tail->data(), tail->size()));
        if (!a)
            co_return unexpected(a.error());
    }
    auto c = co_await mw.commit(added, states);
    co_return c;
}

task<result<uint64_t, fs::spool_error>> spool_text(fs::shard& sh, fs::envelope env, std::string message) {
    auto w = sh.begin(std::move(env));
    if (!w)
        co_return unexpected(w.error());
    fs::message_writer mw = std::move(w.value());
    auto a = co_await mw.append(std::span<const char>(message.data(), message.size()));
    if (!a)
        co_return unexpected(a.error());
    auto c = co_await mw.commit();
    co_return c;
}

namespace {
// One line of text, control characters shown as '?', at most max bytes.
std::string clean(std::string_view s, size_t max = 400) {
    std::string o;
    for (char c : s.substr(0, max))
        o += (uint8_t(c) < 0x20 || c == 0x7f) ? '?' : c;
    if (s.size() > max)
        o += "...";
    return o;
}
}  // namespace

std::string build_notice(const notice& n) {
    std::string o;
    o += fmt::format("From: Mail Delivery System <MAILER-DAEMON@{}>\r\n", n.hostname);
    o += fmt::format("To: <{}>\r\n", n.to);
    o += fmt::format("Subject: Content rule {}: {}\r\n", n.rule, n.mid.empty() ? "a message" : "message " + n.mid);
    o += fmt::format("Date: {}\r\n", mail::date_time(n.now_unix));
    o += fmt::format("Message-ID: <{}.{}.notice@{}>\r\n", n.now_unix, n.serial, n.hostname);
    o += "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n";
    o += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n";
    if (!n.text.empty())
        o += clean(n.text, 500) + "\r\n\r\n";
    auto line = [&](std::string_view k, std::string_view v) { o += fmt::format("{:<12}{}\r\n", k, v); };
    line("Rule:", n.rule);
    line("Outcome:", clean(n.outcome));
    line("Message:", n.mid.empty() ? "not queued" : n.mid);
    line("Client:", clean(n.helo.empty() ? n.client : fmt::format("{} ({})", n.client, n.helo)));
    line("Sender:", fmt::format("<{}>", clean(n.sender)));
    // One recipient per line, so that no line nears RFC 5322's 998.
    for (size_t i = 0; i < n.rcpts.size() && i < 50; ++i)
        line(i ? "" : "Recipients:", "<" + clean(n.rcpts[i]) + ">");
    if (n.rcpts.size() > 50)
        line("", fmt::format("and {} more", n.rcpts.size() - 50));
    line("Subject:", clean(n.subject));
    line("Size:", fmt::format("{} bytes", n.size));
    for (size_t i = 0; i < n.fired.size() && i < 50; ++i)
        line(i ? "" : "Rules:", clean(n.fired[i], 100));
    return o;
}

}  // namespace rw::mta::smtp
