#include "mta/scan/milter.hh"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace rw::mta::scan::milter {

namespace {

using clock = std::chrono::steady_clock;

void put32(std::string& out, uint32_t v) {
    const char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
    out.append(b, 4);
}

uint32_t get32(std::string_view s) {
    return uint32_t(uint8_t(s[0])) << 24 | uint32_t(uint8_t(s[1])) << 16 | uint32_t(uint8_t(s[2])) << 8 |
           uint32_t(uint8_t(s[3]));
}

// The NUL-terminated strings of a packet's data.
std::vector<std::string_view> strings(std::string_view d) {
    std::vector<std::string_view> out;
    while (!d.empty()) {
        size_t z = d.find('\0');
        if (z == std::string_view::npos)
            return {};  // unterminated: malformed
        out.push_back(d.substr(0, z));
        d.remove_prefix(z + 1);
    }
    return out;
}

bool printable(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return uint8_t(c) >= 0x20 || c == '\t'; });
}

bool field_name_ok(std::string_view n) {
    if (n.empty() || n.size() > 64)
        return false;
    return std::all_of(n.begin(), n.end(), [](char c) { return uint8_t(c) > 0x20 && uint8_t(c) < 0x7f && c != ':'; });
}

// A header value from a milter, as we store it: LF line ends (libmilter's
// convention) back to CRLF, and never a line break not followed by
// folding whitespace.
std::optional<std::string> field_value(std::string_view v) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
        char c = v[i];
        if (c == '\r')
            continue;
        if (c == '\n') {
            if (i + 1 >= v.size() || (v[i + 1] != ' ' && v[i + 1] != '\t'))
                return std::nullopt;
            out += "\r\n";
            continue;
        }
        if (uint8_t(c) < 0x20 && c != '\t')
            return std::nullopt;
        out += c;
    }
    if (out.size() > 4000)
        return std::nullopt;
    return out;
}

// A reply that ends a step: its answer; nullopt for any other packet.
// `bad` is set for a reply code that is not one.
std::optional<answer> final_answer(const packet& p, bool& bad) {
    answer a;
    switch (p.code) {
    case rep::cont: return a;
    case rep::accept: a.v = verdict::accept; return a;
    case rep::discard: a.v = verdict::discard; return a;
    case rep::reject: a.v = verdict::reject; return a;
    case rep::tempfail: a.v = verdict::tempfail; return a;
    case rep::replycode:
        if (auto r = parse_replycode(p.data))
            return r;
        bad = true;
        return std::nullopt;
    default: return std::nullopt;
    }
}

}  // namespace

void append_packet(std::string& out, char code, std::string_view data) {
    put32(out, uint32_t(data.size() + 1));
    out += code;
    out += data;
}

std::optional<packet> take_packet(std::string& in, bool& bad) {
    if (in.size() < 4)
        return std::nullopt;
    const uint32_t len = get32(in);
    if (len == 0 || len > k_max_packet) {
        bad = true;
        return std::nullopt;
    }
    if (in.size() < 4 + size_t(len))
        return std::nullopt;
    packet p;
    p.code = in[4];
    p.data = in.substr(5, len - 1);
    in.erase(0, 4 + size_t(len));
    return p;
}

std::optional<answer> parse_replycode(std::string_view d) {
    auto s = strings(d);
    std::string_view t = s.size() == 1 ? s[0] : d;
    if (t.size() < 3 || !printable(t))
        return std::nullopt;
    int code = 0;
    auto [p, ec] = std::from_chars(t.data(), t.data() + 3, code);
    if (ec != std::errc() || p != t.data() + 3 || code < 400 || code > 599 || (t.size() > 3 && t[3] != ' '))
        return std::nullopt;
    answer a;
    a.v = code / 100 == 4 ? verdict::tempfail : verdict::reject;
    a.code = code;
    std::string_view rest = t.size() > 4 ? t.substr(4) : std::string_view();
    // An enhanced code of the same class, if it starts the text.
    size_t sp = rest.find(' ');
    std::string_view w = rest.substr(0, sp);
    if (w.size() >= 5 && w[0] == t[0] && w[1] == '.' && w.find('.', 2) != std::string_view::npos &&
        std::all_of(w.begin(), w.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; })) {
        a.enhanced = std::string(w);
        rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
    }
    a.text = std::string(rest.substr(0, 300));
    if (a.text.empty())
        a.text = a.v == verdict::reject ? "Rejected by a mail filter" : "Try again later";
    return a;
}

std::optional<std::string> milter_address(std::string_view s, bool allow_null) {
    if (s.size() >= 2 && s.front() == '<' && s.back() == '>')
        s = s.substr(1, s.size() - 2);
    if (s.size() > 320 || (s.empty() && !allow_null))
        return std::nullopt;
    for (char c : s)
        if (uint8_t(c) <= 0x20 || c == 0x7f || c == '<' || c == '>')
            return std::nullopt;
    if (!s.empty() && (s.find('@') == std::string_view::npos || s.front() == '@' || s.back() == '@'))
        return std::nullopt;
    return std::string(s);
}

bool apply_modification(const packet& p, edits& e, size_t max_body) {
    switch (p.code) {
    case rep::chgfrom: {
        auto s = strings(p.data);
        if (s.empty() || s.size() > 2)
            return false;
        auto a = milter_address(s[0], true);
        if (!a)
            return false;
        e.from = std::move(*a);
        return true;
    }
    case rep::addrcpt:
    case rep::addrcpt_par:
    case rep::delrcpt: {
        auto s = strings(p.data);
        if (s.empty() || s.size() > (p.code == rep::addrcpt_par ? 2u : 1u))
            return false;
        auto a = milter_address(s[0], false);
        if (!a)
            return false;
        (p.code == rep::delrcpt ? e.del_rcpts : e.add_rcpts).push_back(std::move(*a));
        return true;
    }
    case rep::replbody: {
        // Chunks add up; bare LFs (libmilter's convention) become CRLF.
        if (!e.body)
            e.body.emplace();
        std::string& b = *e.body;
        for (size_t i = 0; i < p.data.size(); ++i) {
            const char c = p.data[i];
            if (c == '\n' && (b.empty() || b.back() != '\r'))
                b += '\r';
            b += c;
        }
        return b.size() <= max_body;
    }
    case rep::addheader: {
        auto s = strings(p.data);
        if (s.size() != 2 || !field_name_ok(s[0]))
            return false;
        auto v = field_value(s[1]);
        if (!v)
            return false;
        e.add.emplace_back(std::string(s[0]), std::move(*v));
        return true;
    }
    case rep::insheader:
    case rep::chgheader: {
        if (p.data.size() < 4)
            return false;
        const uint32_t index = get32(p.data);
        auto s = strings(std::string_view(p.data).substr(4));
        if (s.size() != 2 || !field_name_ok(s[0]))
            return false;
        auto v = field_value(s[1]);
        if (!v)
            return false;
        if (p.code == rep::insheader)
            e.add.emplace_back(std::string(s[0]), std::move(*v));  // placed with the fields we add
        else
            e.changes.push_back({std::string(s[0]), index == 0 ? 1 : index, std::move(*v)});
        return true;
    }
    case rep::quarantine: {
        auto s = strings(p.data);
        if (s.size() > 1 || (s.size() == 1 && !printable(s[0])))
            return false;
        e.quarantine = s.empty() ? std::string() : std::string(s[0].substr(0, 200));
        return true;
    }
    default: return false;
    }
}

client::client(const options* o, session_info info) : _o(o), _info(std::move(info)) {}

answer client::fail(std::string why) {
    if (_why.empty())
        _why = fmt::format("milter {} ({}): {}", _o->name, _o->where.to_string(), why);
    _s.close();
    _open = false;
    return answer{};
}

task<bool> client::send(char code, std::string_view data) {
    append_packet(_out, code, data);
    auto w = _s.send_all(_out.data(), _out.size(), {.timeout = _o->command_timeout});
    int r = co_await w;
    _out.clear();
    if (r < 0) {
        fail(r == -ETIMEDOUT || r == -ECANCELED ? "timed out sending" : std::string("send: ") + std::strerror(-r));
        co_return false;
    }
    co_return true;
}

task<std::optional<packet>> client::receive(std::chrono::milliseconds timeout) {
    const auto deadline = clock::now() + timeout;
    for (;;) {
        bool bad = false;
        if (auto p = take_packet(_in, bad))
            co_return p;
        if (bad) {
            fail("a packet of impossible length");
            co_return std::nullopt;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
        if (left.count() <= 0) {
            fail("no answer in time");
            co_return std::nullopt;
        }
        char b[8192];
        auto rd = _s.recv(b, sizeof b, {.timeout = left});
        int n = co_await rd;
        if (n == 0) {
            fail("closed the connection");
            co_return std::nullopt;
        }
        if (n < 0) {
            fail(n == -ETIMEDOUT || n == -ECANCELED ? "no answer in time" : std::string("recv: ") + std::strerror(-n));
            co_return std::nullopt;
        }
        _in.append(b, size_t(n));
    }
}

void client::macros(char for_cmd, std::initializer_list<std::pair<std::string_view, std::string_view>> kv) {
    std::string d(1, for_cmd);
    for (const auto& [k, v] : kv) {
        if (v.empty())
            continue;
        d += k;
        d += '\0';
        d += v;
        d += '\0';
    }
    append_packet(_out, cmd::macro, d);
}

task<bool> client::open() {
    if (_open)
        co_return true;
    if (failed())
        co_return false;
    task<result<net::tcp_stream>> t = connect_endpoint(_o->where, _o->connect_timeout);
    auto c = co_await std::move(t);
    if (!c) {
        fail(fmt::format("connect failed: {}", c.error().message()));
        co_return false;
    }
    _s = std::move(c.value());
    _open = true;
    // Negotiation: version 6, the actions we allow, every step offered.
    std::string neg;
    put32(neg, k_version);
    put32(neg, k_allowed_actions);
    constexpr uint32_t offered = p_noconnect | p_nohelo | p_nomail | p_norcpt | p_nobody | p_nohdrs | p_noeoh |
                                 p_nr_hdr | p_nounknown | p_nodata | p_skip | p_nr_conn | p_nr_helo | p_nr_mail |
                                 p_nr_rcpt | p_nr_data | p_nr_unkn | p_nr_eoh | p_nr_body | p_hdr_leadspc;
    put32(neg, offered);
    if (!co_await send(cmd::optneg, neg))
        co_return false;
    auto p = co_await receive(_o->command_timeout);
    if (!p)
        co_return false;
    if (p->code != rep::optneg || p->data.size() < 12) {
        fail("did not answer the option negotiation");
        co_return false;
    }
    const uint32_t version = get32(p->data), actions = get32(std::string_view(p->data).substr(4));
    _protocol = get32(std::string_view(p->data).substr(8));
    _version = version;
    if (_protocol & ~offered) {
        fail(fmt::format("wants protocol steps 0x{:x} the gateway does not offer", _protocol & ~offered));
        co_return false;
    }
    if (version < 2 || version > k_version) {
        fail(fmt::format("speaks milter protocol version {}", version));
        co_return false;
    }
    if (actions & ~k_allowed_actions) {
        fail(fmt::format("wants actions 0x{:x} the gateway does not offer (it offers 0x{:x})",
                         actions & ~k_allowed_actions, k_allowed_actions));
        co_return false;
    }
    // The session's first steps: connect, then HELO.
    std::string conn = _info.client_name;
    conn += '\0';
    const bool v6 = _info.client.is_v6();
    conn += v6 ? '6' : '4';
    uint16_t port = 0;
    if (v6)
        port = ntohs(reinterpret_cast<const sockaddr_in6*>(_info.client.sa())->sin6_port);
    else
        port = ntohs(reinterpret_cast<const sockaddr_in*>(_info.client.sa())->sin_port);
    conn += char(port >> 8);
    conn += char(port & 0xff);
    conn += _info.client.ip_string();
    conn += '\0';
    const std::string ip = _info.client.ip_string();
    macros(cmd::connect, {{"j", _info.our_hostname},
                          {"_", fmt::format("{} [{}]", _info.client_name, ip)},
                          {"{daemon_name}", "ringway"},
                          {"{client_addr}", ip},
                          {"{client_name}", _info.client_name}});
    _session = co_await step(cmd::connect, conn, p_noconnect, p_nr_conn);
    if (failed())
        co_return false;
    if (_session.v == verdict::cont && !_info.helo.empty()) {
        std::string h = _info.helo;
        h += '\0';
        _session = co_await step(cmd::helo, h, p_nohelo, p_nr_helo);
        if (failed())
            co_return false;
    }
    co_return true;
}

task<answer> client::step(char code, std::string_view data, uint32_t no_step, uint32_t no_reply) {
    if (failed() || !_open)
        co_return answer{};
    if (_protocol & no_step) {
        _out.clear();  // its macros go unsent
        co_return answer{};
    }
    if (!co_await send(code, data))
        co_return answer{};
    if (_protocol & no_reply)
        co_return answer{};
    // Progress messages extend the wait, up to ten times the timeout.
    const auto give_up = clock::now() + 10 * _o->command_timeout;
    for (;;) {
        if (clock::now() >= give_up)
            co_return fail("kept sending progress and never answered");
        auto p = co_await receive(_o->command_timeout);
        if (!p)
            co_return answer{};
        if (p->code == rep::progress)
            continue;
        if (p->code == rep::skip) {
            _skip_body = true;
            co_return answer{};
        }
        bool bad = false;
        if (auto a = final_answer(*p, bad))
            co_return *a;
        co_return fail(bad ? std::string("set a reply that is not one")
                           : fmt::format("answered '{}' to '{}'", p->code, code));
    }
}

task<answer> client::mail(std::string from, std::vector<std::string> esmtp_args, std::string auth_user,
                          std::string queue_id) {
    if (_in_transaction)
        co_await abort();  // the last transaction ended without its end (RSET, a refusal)
    _done = false;
    _skip_body = false;
    if (!co_await open())
        co_return answer{};
    if (_session.v != verdict::cont) {
        // The milter refused the client at connect or HELO: every MAIL says so.
        co_return _session;
    }
    std::string d = fmt::format("<{}>", from);
    d += '\0';
    for (const auto& a : esmtp_args) {
        d += a;
        d += '\0';
    }
    macros(cmd::mail, {{"{mail_addr}", from}, {"{auth_authen}", auth_user}, {"i", queue_id}});
    answer a = co_await step(cmd::mail, d, p_nomail, p_nr_mail);
    _in_transaction = !failed();
    _done = a.v != verdict::cont;
    co_return a;
}

task<answer> client::rcpt(std::string rcpt) {
    if (_done || failed() || !_open)
        co_return answer{};
    std::string d = fmt::format("<{}>", rcpt);
    d += '\0';
    macros(cmd::rcpt, {{"{rcpt_addr}", rcpt}});
    answer a = co_await step(cmd::rcpt, d, p_norcpt, p_nr_rcpt);
    // A refusal here is about this recipient; accept and discard are about the message.
    if (a.v == verdict::accept || a.v == verdict::discard)
        _done = true;
    co_return a;
}

task<answer> client::data() {
    if (_done || failed() || !_open || _version < 4)
        co_return answer{};
    answer a = co_await step(cmd::data, {}, p_nodata, p_nr_data);
    _done = a.v != verdict::cont;
    co_return a;
}

task<answer> client::header(std::string name, std::string value) {
    if (_done || failed() || !_open)
        co_return answer{};
    // libmilter's form: LF line ends; the space after the colon dropped
    // unless the milter asked for it.
    std::string v;
    for (char c : value)
        if (c != '\r')
            v += c;
    if (!(_protocol & p_hdr_leadspc) && !v.empty() && v.front() == ' ')
        v.erase(0, 1);
    while (!v.empty() && v.back() == '\n')
        v.pop_back();
    std::string d = name;
    d += '\0';
    d += v;
    d += '\0';
    answer a = co_await step(cmd::header, d, p_nohdrs, p_nr_hdr);
    _done = a.v != verdict::cont;
    co_return a;
}

task<answer> client::end_of_headers() {
    if (_done || failed() || !_open)
        co_return answer{};
    answer a = co_await step(cmd::eoh, {}, p_noeoh, p_nr_eoh);
    _done = a.v != verdict::cont;
    co_return a;
}

task<answer> client::body(std::string_view chunk) {
    while (!chunk.empty()) {
        if (_done || failed() || !_open || _skip_body)
            co_return answer{};
        std::string_view piece = chunk.substr(0, k_chunk);
        chunk.remove_prefix(piece.size());
        answer a = co_await step(cmd::body, piece, p_nobody, p_nr_body);
        if (a.v != verdict::cont) {
            _done = true;
            co_return a;
        }
    }
    co_return answer{};
}

task<answer> client::end_of_message(edits* e, std::string queue_id, size_t max_body) {
    if (_done || failed() || !_open)
        co_return answer{};
    _done = true;
    _in_transaction = false;
    macros(cmd::eom, {{"i", queue_id}});
    if (!co_await send(cmd::eom, {}))
        co_return answer{};
    const auto give_up = clock::now() + 10 * _o->eom_timeout;
    for (;;) {
        if (clock::now() >= give_up)
            co_return fail("kept sending progress and never answered the end of the message");
        if (e->count() > k_max_modifications)
            co_return fail(fmt::format("sent more than {} header and recipient changes", k_max_modifications));
        auto p = co_await receive(_o->eom_timeout);
        if (!p)
            co_return answer{};
        if (p->code == rep::progress)
            continue;
        if (p->code == rep::skip)
            co_return answer{};
        bool bad = false;
        if (auto a = final_answer(*p, bad))
            co_return *a;
        if (bad)
            co_return fail("set a reply that is not one");
        if (!apply_modification(*p, *e, max_body))
            co_return fail(p->code == rep::replbody
                               ? fmt::format("replaced the body with more than {} bytes", max_body)
                               : fmt::format("sent a modification the gateway does not allow ('{}')", p->code));
    }
}

task<void> client::abort() {
    if (!_open || failed() || !_in_transaction)
        co_return;
    _in_transaction = false;
    _done = true;
    // SMFIC_ABORT has no answer.
    co_await send(cmd::abort, {});
}

task<void> client::quit() {
    if (_open && !failed())
        co_await send(cmd::quit, {});
    _s.close();
    _open = false;
}

}  // namespace rw::mta::scan::milter
