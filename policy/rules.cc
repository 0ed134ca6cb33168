// Content rules: the condition language, the actions, and the compiled
// rule set (rules.hh).
#include "policy/rules.hh"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "mail/domain.hh"
#include "mail/header.hh"

namespace rw::policy::rules {

namespace {

struct subject_spec {
    std::string_view name;
    subject what;
    enum class type : uint8_t { text, regex_only, ip, numeric, boolean } t;
};

using st = subject_spec::type;

constexpr subject_spec k_subjects[] = {
    {"body", subject::body, st::regex_only},
    {"header", subject::header, st::text},
    {"subject", subject::header, st::text},
    {"mail-from", subject::mail_from, st::text},
    {"rcpt", subject::rcpt, st::text},
    {"helo", subject::helo, st::text},
    {"client-ip", subject::client_ip, st::ip},
    {"direction", subject::direction, st::text},
    {"spf", subject::spf, st::text},
    {"dkim", subject::dkim, st::text},
    {"dmarc", subject::dmarc, st::text},
    {"dmarc-disposition", subject::dmarc_disposition, st::text},
    {"sender-group", subject::sender_group, st::text},
    {"mail-flow-policy", subject::mail_flow_policy, st::text},
    {"attachment-name", subject::attachment_name, st::text},
    {"attachment-type", subject::attachment_type, st::text},
    {"attachment-declared-type", subject::attachment_declared_type, st::text},
    {"archive-entry", subject::archive_entry, st::text},
    {"size", subject::size, st::numeric},
    {"attachment-size", subject::attachment_size, st::numeric},
    {"attachment-count", subject::attachment_count, st::numeric},
    {"authenticated", subject::authenticated, st::boolean},
    {"archive-encrypted", subject::archive_encrypted, st::boolean},
    {"mime-defect", subject::mime_defect, st::boolean},
};

constexpr std::string_view k_subject_list =
    "body, header \"Name\", subject, mail-from, rcpt, helo, client-ip, direction, spf, dkim, dmarc, dmarc-disposition, sender-group, mail-flow-policy, "
    "attachment-name, attachment-type, attachment-declared-type, archive-entry, size, attachment-size, "
    "attachment-count, authenticated, archive-encrypted, mime-defect";

constexpr size_t k_max_condition = 64 * 1024;
constexpr unsigned k_max_depth = 64;

// A recursive-descent reader over one condition.
class reader {
public:
    explicit reader(std::string_view s) : _s(s) {}

    result<rule, std::string> run() {
        rule r;
        _r = &r;
        if (_s.size() > k_max_condition)
            return unexpected(fmt::format("longer than {} bytes", k_max_condition));
        skip();
        if (_p == _s.size())
            return unexpected(std::string("empty; allowed: tests like attachment-name ~ /\\.exe$/ joined by and, or, not"));
        r.nodes.emplace_back();  // the root, filled below
        auto root = expr(0);
        if (!root)
            return unexpected(root.error());
        skip();
        if (_p != _s.size())
            return fail(fmt::format("unexpected {}; allowed: and, or, or the end", near()));
        r.nodes[0] = r.nodes[*root];
        return r;
    }

private:
    unexpected<std::string> fail(std::string what) const { return fail_at(_p, std::move(what)); }
    static unexpected<std::string> fail_at(size_t pos, std::string what) {
        return unexpected(fmt::format("at {}: {}", pos + 1, what));
    }
    std::string near() const {
        if (_p >= _s.size())
            return "the end";
        std::string_view rest = _s.substr(_p, 20);
        return fmt::format("\"{}\"", rest);
    }
    void skip() {
        while (_p < _s.size() && (_s[_p] == ' ' || _s[_p] == '\t' || _s[_p] == '\n' || _s[_p] == '\r'))
            ++_p;
    }
    // A word: letters, digits, '-', '_', '.'.
    std::string_view word() {
        skip();
        size_t b = _p;
        while (_p < _s.size() && (std::isalnum(uint8_t(_s[_p])) || _s[_p] == '-' || _s[_p] == '_' || _s[_p] == '.'))
            ++_p;
        return _s.substr(b, _p - b);
    }
    bool keyword(std::string_view k) {
        skip();
        size_t save = _p;
        std::string_view w = word();
        if (w.size() == k.size() && std::equal(w.begin(), w.end(), k.begin(),
                                               [](char a, char b) { return std::tolower(uint8_t(a)) == b; }))
            return true;
        _p = save;
        return false;
    }
    unsigned add(node n) {
        _r->nodes.push_back(std::move(n));
        return unsigned(_r->nodes.size() - 1);
    }

    result<unsigned, std::string> expr(unsigned depth) {
        if (depth > k_max_depth)
            return fail(fmt::format("nested deeper than {}", k_max_depth));
        node any{node::kind::any, {}, 0};
        for (;;) {
            auto t = term(depth);
            if (!t)
                return t;
            any.kids.push_back(*t);
            if (!keyword("or"))
                break;
        }
        if (any.kids.size() == 1)
            return any.kids[0];
        return add(std::move(any));
    }
    result<unsigned, std::string> term(unsigned depth) {
        node all{node::kind::all, {}, 0};
        for (;;) {
            auto f = factor(depth);
            if (!f)
                return f;
            all.kids.push_back(*f);
            if (!keyword("and"))
                break;
        }
        if (all.kids.size() == 1)
            return all.kids[0];
        return add(std::move(all));
    }
    result<unsigned, std::string> factor(unsigned depth) {
        if (depth > k_max_depth)
            return fail(fmt::format("nested deeper than {}", k_max_depth));
        skip();
        if (keyword("not")) {
            auto f = factor(depth + 1);
            if (!f)
                return f;
            return add(node{node::kind::negate, {*f}, 0});
        }
        if (_p < _s.size() && _s[_p] == '(') {
            ++_p;
            auto e = expr(depth + 1);
            if (!e)
                return e;
            skip();
            if (_p >= _s.size() || _s[_p] != ')')
                return fail(fmt::format("expected ) but found {}", near()));
            ++_p;
            return e;
        }
        return leaf();
    }

    result<std::string, std::string> quoted() {
        skip();
        if (_p >= _s.size() || (_s[_p] != '"' && _s[_p] != '/'))
            return fail(fmt::format("expected a value in double quotes or a /regular expression/, found {}", near()));
        const char q = _s[_p++];
        std::string out;
        for (;;) {
            if (_p >= _s.size())
                return fail(fmt::format("the value has no closing {}", q));
            char c = _s[_p++];
            if (c == q)
                break;
            if (c == '\\' && _p < _s.size()) {
                char n = _s[_p];
                if (q == '"' && (n == '"' || n == '\\')) {
                    out += n;
                    ++_p;
                    continue;
                }
                if (q == '/' && n == '/') {
                    out += "\\/";
                    ++_p;
                    continue;
                }
            }
            out += c;
        }
        return out;
    }

    result<unsigned, std::string> leaf() {
        skip();
        const size_t at = _p;
        std::string_view w = word();
        if (w.empty())
            return fail(fmt::format("expected a test, found {}; subjects: {}", near(), k_subject_list));
        std::string lw = mail::lower_ascii(w);
        const subject_spec* spec = nullptr;
        for (const auto& s : k_subjects)
            if (s.name == lw)
                spec = &s;
        if (!spec) {
            _p = at;
            return fail(fmt::format("unknown subject \"{}\"; allowed: {}", w, k_subject_list));
        }
        test t;
        t.what = spec->what;
        if (lw == "subject") {
            t.header = "subject";
        } else if (lw == "header") {
            auto name = quoted();
            if (!name)
                return unexpected(name.error());
            if (!mail::is_field_name(*name))
                return fail(fmt::format("\"{}\" is not a header field name", *name));
            t.header = mail::lower_ascii(*name);
        }
        if (spec->t == st::boolean) {
            t.how = op::holds;
            _r->tests.push_back(std::move(t));
            return add(node{node::kind::leaf, {}, unsigned(_r->tests.size() - 1)});
        }
        skip();
        std::string_view rest = _s.substr(_p);
        std::string_view opname;
        for (std::string_view o : {"==", "!=", "<=", ">=", "~", "<", ">"})
            if (rest.starts_with(o)) {
                opname = o;
                break;
            }
        if (opname.empty() && keyword("in"))
            opname = "in";
        else
            _p += opname.size();
        std::string_view allowed = spec->t == st::regex_only ? "~"
                                   : spec->t == st::text     ? "~, == or !="
                                   : spec->t == st::ip       ? "==, != or in"
                                                             : "==, !=, <, <=, > or >=";
        if (opname.empty())
            return fail(fmt::format("expected an operator after {}, found {}; allowed: {}", lw, near(), allowed));
        auto refuse = [&] {
            return fail(fmt::format("{} does not take {}; allowed: {}", lw, opname, allowed));
        };
        if (spec->t == st::numeric) {
            if (opname == "~" || opname == "in")
                return refuse();
            t.how = opname == "==" ? op::eq : opname == "!=" ? op::ne : opname == "<" ? op::lt
                    : opname == "<=" ? op::le : opname == ">" ? op::gt : op::ge;
            skip();
            const size_t num_at = _p;
            std::string_view num = word();
            uint64_t v = 0;
            auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
            uint64_t mult = 1;
            if (ec == std::errc() && end != num.data() + num.size()) {
                std::string_view suf = num.substr(size_t(end - num.data()));
                if (suf == "K" || suf == "k")
                    mult = 1024;
                else if (suf == "M" || suf == "m")
                    mult = 1024 * 1024;
                else if (suf == "G" || suf == "g")
                    mult = 1024 * 1024 * 1024;
                else
                    ec = std::errc::invalid_argument;
            }
            if (num.empty() || ec != std::errc() || v > UINT64_MAX / mult)
                return fail_at(num_at, fmt::format("expected a number (like 500, 10K, 5M) after {} {}", lw, opname));
            t.number = v * mult;
        } else {
            if (opname == "<" || opname == "<=" || opname == ">" || opname == ">=")
                return refuse();
            if (opname == "~" && spec->t == st::ip)
                return refuse();
            if (opname != "~" && spec->t == st::regex_only)
                return refuse();
            if (opname == "in" && spec->t != st::ip)
                return refuse();
            skip();
            const size_t value_at = _p;
            auto v = quoted();
            if (!v)
                return unexpected(v.error());
            t.how = opname == "~" ? op::match : opname == "==" ? op::eq : opname == "!=" ? op::ne : op::in;
            if (t.how == op::match) {
                if (auto why = patterns::check(patterns::pattern{*v, 0, true, true}))
                    return fail_at(value_at, fmt::format("the regular expression \"{}\" does not compile: {}", *v, *why));
            } else if (t.how == op::in || t.what == subject::client_ip) {
                std::string why;
                auto c = cidr::parse(*v, why);
                if (!c)
                    return fail_at(value_at, fmt::format("\"{}\" is not an IP address or network: {}", *v, why));
                if (t.how != op::in && c->prefix_len() != (c->is_v6() ? 128u : 32u))
                    return fail_at(value_at, fmt::format("\"{}\" is a network: use in", *v));
                t.net = *c;
            } else if (t.what == subject::direction && *v != "inbound" && *v != "outbound") {
                return fail_at(value_at, fmt::format("direction is \"inbound\" or \"outbound\", not \"{}\"", *v));
            }
            t.text = std::move(*v);
        }
        _r->tests.push_back(std::move(t));
        return add(node{node::kind::leaf, {}, unsigned(_r->tests.size() - 1)});
    }

    std::string_view _s;
    size_t _p = 0;
    rule* _r = nullptr;
};

bool printable(std::string_view s, bool allow_utf8) {
    for (char c : s) {
        const auto u = uint8_t(c);
        if (u == '\t' || (u >= 0x20 && u < 0x7f) || (allow_utf8 && u >= 0x80))
            continue;
        return false;
    }
    return true;
}

constexpr std::string_view k_actions =
    "accept, reject [CODE [X.Y.Z]] [TEXT], drop, quarantine NAME, add-header NAME: VALUE, remove-header NAME, "
    "tag-subject TEXT, bounce [CODE [X.Y.Z]] [TEXT], redirect ADDRESS, copy ADDRESS, route HOST[:PORT], "
    "notify ADDRESS [TEXT], pool NAME";

}  // namespace

std::string_view to_string(action_kind a) {
    switch (a) {
    case action_kind::accept: return "accept";
    case action_kind::reject: return "reject";
    case action_kind::drop: return "drop";
    case action_kind::quarantine: return "quarantine";
    case action_kind::add_header: return "add-header";
    case action_kind::remove_header: return "remove-header";
    case action_kind::tag_subject: return "tag-subject";
    case action_kind::bounce: return "bounce";
    case action_kind::redirect: return "redirect";
    case action_kind::copy: return "copy";
    case action_kind::route: return "route";
    case action_kind::notify: return "notify";
    case action_kind::pool: return "pool";
    }
    return "?";
}

bool stops(action_kind a) {
    return a == action_kind::accept || a == action_kind::reject || a == action_kind::drop ||
           a == action_kind::quarantine || a == action_kind::bounce;
}

bool is_rule_address(std::string_view s) {
    const size_t at = s.rfind('@');
    if (at == 0 || at == std::string_view::npos || s.size() > 254 || at > 64)
        return false;
    for (char c : s.substr(0, at))
        if (uint8_t(c) <= ' ' || uint8_t(c) >= 127 || c == '<' || c == '>' || c == '"' || c == '(' || c == ')' ||
            c == ',' || c == ';' || c == ':' || c == '\\' || c == '[' || c == ']' || c == '@')
            return false;
    return mail::check_domain(s.substr(at + 1)) == nullptr;
}

namespace {
// "HOST[:PORT]": a host name, an IPv4 address or [IPv6], normalized to
// "host:port" ("[v6]:port").
std::optional<std::string> parse_next_hop(std::string_view s) {
    std::string_view host = s, port = "25";
    if (s.starts_with('[')) {
        const size_t close = s.find(']');
        if (close == std::string_view::npos)
            return std::nullopt;
        host = s.substr(1, close - 1);
        std::string_view rest = s.substr(close + 1);
        if (!rest.empty()) {
            if (rest[0] != ':')
                return std::nullopt;
            port = rest.substr(1);
        }
        auto a = net::address::parse(std::string(host), 25);
        if (!a || host.find(':') == std::string_view::npos)
            return std::nullopt;
    } else {
        const size_t colon = s.find(':');
        if (colon != std::string_view::npos) {
            host = s.substr(0, colon);
            port = s.substr(colon + 1);
        }
        if (host.empty() || (!net::address::parse(std::string(host), 25) && mail::check_domain(host) != nullptr))
            return std::nullopt;
    }
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535)
        return std::nullopt;
    std::string hop = s.starts_with('[') ? fmt::format("[{}]:{}", mail::lower_ascii(host), p)
                                         : fmt::format("{}:{}", mail::lower_ascii(host), p);
    if (hop.size() > 255)  // what the envelope parameters hold
        return std::nullopt;
    return hop;
}
}  // namespace

bool is_quarantine_name(std::string_view s) {
    if (s.empty() || s.size() > 32)
        return false;
    for (char c : s)
        if (!std::isalnum(uint8_t(c)) && c != '-' && c != '_' && c != '.')
            return false;
    return true;
}

result<rule, std::string> parse_condition(std::string_view condition) {
    reader r(condition);
    return r.run();
}

result<action, std::string> parse_action(std::string_view text) {
    auto trim = [](std::string_view s) {
        while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
            s.remove_prefix(1);
        while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
            s.remove_suffix(1);
        return s;
    };
    text = trim(text);
    const size_t sp = text.find_first_of(" \t");
    const std::string verb = mail::lower_ascii(text.substr(0, sp));
    std::string_view arg = sp == std::string_view::npos ? std::string_view() : trim(text.substr(sp));
    action a;
    if (verb == "accept" || verb == "drop") {
        if (!arg.empty())
            return unexpected(fmt::format("{} takes nothing after it", verb));
        a.kind = verb == "accept" ? action_kind::accept : action_kind::drop;
        return a;
    }
    if (verb == "reject" || verb == "bounce") {
        const bool bounce = verb == "bounce";
        a.kind = bounce ? action_kind::bounce : action_kind::reject;
        a.code = 550;
        a.enhanced = "5.7.1";
        a.text = bounce ? "Message bounced by policy" : "Message content rejected";
        if (arg.empty())
            return a;
        std::string_view rest = arg;
        auto next_word = [&]() {
            size_t e = rest.find_first_of(" \t");
            std::string_view w = rest.substr(0, e);
            rest = e == std::string_view::npos ? std::string_view() : trim(rest.substr(e));
            return w;
        };
        std::string_view save = rest;
        std::string_view w = next_word();
        int code = 0;
        if (w.size() == 3 && std::all_of(w.begin(), w.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            code = (w[0] - '0') * 100 + (w[1] - '0') * 10 + (w[2] - '0');
            if (bounce && (code < 500 || code > 599))
                return unexpected(fmt::format("bounce: {} is not a permanent failure's reply code; allowed: "
                                              "500..599", w));
            if (code < 400 || code > 599 || code == 421)
                return unexpected(fmt::format("reject: {} is not a reply code for a refused message; allowed: "
                                              "400..599 except 421", w));
            a.code = code;
            a.enhanced = code >= 500 ? "5.7.1" : "4.7.1";
            save = rest;
            w = next_word();
            const bool enh = w.size() >= 5 && (w[0] == '4' || w[0] == '5') && w[1] == '.' &&
                             std::count(w.begin(), w.end(), '.') == 2 &&
                             std::all_of(w.begin(), w.end(), [](char c) { return c == '.' || (c >= '0' && c <= '9'); });
            if (enh) {
                if (w[0] != char('0' + code / 100))
                    return unexpected(fmt::format("{}: the enhanced code {} does not match the reply code {}", verb,
                                                  w, code));
                a.enhanced = std::string(w);
                save = rest;
            } else {
                rest = save;
            }
        } else {
            rest = save;
        }
        if (!rest.empty()) {
            if (rest.size() > 200 || !printable(rest, false))
                return unexpected(fmt::format("{}: the text must be printable ASCII, at most 200 characters", verb));
            a.text = std::string(rest);
        }
        return a;
    }
    if (verb == "quarantine") {
        if (!is_quarantine_name(arg))
            return unexpected("quarantine: expected the quarantine's name (letters, digits, '-', '_', '.'), like "
                              "quarantine policy");
        a.kind = action_kind::quarantine;
        a.text = std::string(arg);
        return a;
    }
    if (verb == "add-header") {
        const size_t colon = arg.find(':');
        if (colon == std::string_view::npos || colon == 0)
            return unexpected("add-header: expected NAME: VALUE");
        std::string_view name = trim(arg.substr(0, colon)), value = trim(arg.substr(colon + 1));
        if (!mail::is_field_name(name))
            return unexpected(fmt::format("add-header: \"{}\" is not a header field name", name));
        if (value.size() > 900 || !printable(value, true))
            return unexpected("add-header: the value must be printable text on one line, at most 900 bytes");
        a.kind = action_kind::add_header;
        a.text = std::string(name);
        a.value = std::string(value);
        return a;
    }
    if (verb == "remove-header") {
        if (!mail::is_field_name(arg))
            return unexpected(fmt::format("remove-header: \"{}\" is not a header field name", arg));
        a.kind = action_kind::remove_header;
        a.text = mail::lower_ascii(arg);
        return a;
    }
    if (verb == "tag-subject") {
        if (arg.empty() || arg.size() > 100 || !printable(arg, true))
            return unexpected("tag-subject: expected the tag, printable text on one line, at most 100 bytes");
        a.kind = action_kind::tag_subject;
        a.text = std::string(arg);
        return a;
    }
    if (verb == "redirect" || verb == "copy" || verb == "notify") {
        std::string_view addr = arg.substr(0, arg.find_first_of(" \t"));
        std::string_view text = addr.size() < arg.size() ? trim(arg.substr(addr.size())) : std::string_view();
        if (!is_rule_address(addr))
            return unexpected(fmt::format("{}: expected an address (user@example.com){}", verb,
                                          addr.empty() ? "" : fmt::format(", not \"{}\"", addr)));
        if (!text.empty() && verb != "notify")
            return unexpected(fmt::format("{} takes one address and nothing after it", verb));
        if (text.size() > 500 || !printable(text, true))
            return unexpected("notify: the text must be printable, on one line, at most 500 bytes");
        a.kind = verb == "redirect" ? action_kind::redirect : verb == "copy" ? action_kind::copy : action_kind::notify;
        a.text = std::string(addr);
        a.value = std::string(text);
        return a;
    }
    if (verb == "pool") {
        bool ok = !arg.empty() && arg.size() <= 64;
        for (char ch : arg)
            ok = ok && (std::isalnum(uint8_t(ch)) || ch == '-' || ch == '_' || ch == '.');
        if (!ok)
            return unexpected(fmt::format("pool: expected a pool name (letters, digits, '-', '_', '.'){}",
                                          arg.empty() ? "" : fmt::format(", not \"{}\"", arg)));
        a.kind = action_kind::pool;
        a.text = std::string(arg);
        return a;
    }
    if (verb == "route") {
        auto hop = parse_next_hop(arg);
        if (!hop)
            return unexpected(fmt::format("route: expected HOST[:PORT] (mx.example.com, 192.0.2.1:2525 or "
                                          "[2001:db8::1]:25){}", arg.empty() ? "" : fmt::format(", not \"{}\"", arg)));
        a.kind = action_kind::route;
        a.text = std::move(*hop);
        return a;
    }
    return unexpected(fmt::format("unknown action \"{}\"; allowed: {}", verb, k_actions));
}

result<rule, std::string> parse_rule(std::string_view name, std::string_view condition,
                                     const std::vector<std::string>& actions) {
    auto r = parse_condition(condition);
    if (!r)
        return unexpected(fmt::format("condition: {}", r.error()));
    r.value().name = std::string(name);
    if (actions.empty())
        return unexpected(fmt::format("actions: none; allowed: {}", k_actions));
    bool stopped = false;
    for (size_t i = 0; i < actions.size(); ++i) {
        auto a = parse_action(actions[i]);
        if (!a)
            return unexpected(fmt::format("actions[{}]: {}", i, a.error()));
        const bool stop = stops(a.value().kind);
        if (stopped)
            return unexpected(fmt::format("actions[{}]: comes after a stopping action ({}); nothing runs after it", i,
                                          to_string(r.value().actions.back().kind)));
        stopped = stop;
        r.value().actions.push_back(std::move(a.value()));
    }
    return r;
}

namespace {
// Whether the condition below n is false whenever every pattern test in
// it is false, whatever the other tests say.
bool gated(const rule& r, unsigned n) {
    const node& nd = r.nodes[n];
    switch (nd.k) {
    case node::kind::leaf: return r.tests[nd.leaf].how == op::match;
    case node::kind::negate: return false;
    case node::kind::all:
        for (unsigned k : nd.kids)
            if (gated(r, k))
                return true;
        return false;
    case node::kind::any:
        for (unsigned k : nd.kids)
            if (!gated(r, k))
                return false;
        return true;
    }
    return false;
}
}  // namespace

result<std::shared_ptr<const rule_set>, std::string> rule_set::compile(const std::vector<source>& rules) {
    auto rs = std::shared_ptr<rule_set>(new rule_set());
    std::vector<patterns::pattern> pats;
    for (size_t i = 0; i < rules.size(); ++i) {
        auto r = parse_rule(rules[i].name, rules[i].condition, rules[i].actions);
        if (!r)
            return unexpected(fmt::format("content rule {}: {}", rules[i].name, r.error()));
        for (auto& t : r.value().tests) {
            switch (t.what) {
            case subject::body:
                rs->_needs_body = true;
                rs->_needs_message = true;
                break;
            case subject::header:
                rs->_needs_message = true;
                if (std::find(rs->_header_names.begin(), rs->_header_names.end(), t.header) == rs->_header_names.end())
                    rs->_header_names.push_back(t.header);
                break;
            case subject::attachment_name:
            case subject::attachment_type:
            case subject::attachment_declared_type:
            case subject::archive_entry:
            case subject::attachment_size:
            case subject::attachment_count:
            case subject::archive_encrypted:
                rs->_needs_message = true;
                rs->_needs_attachments = true;
                break;
            case subject::mime_defect:
                rs->_needs_message = true;
                break;
            default:
                break;
            }
            if (t.how != op::match)
                continue;
            t.pattern = unsigned(pats.size());
            pats.push_back(patterns::pattern{t.text, t.pattern, true, true});
            rs->_meta.push_back(pattern_meta{t.what, t.header});
            rs->_rule_of.push_back(unsigned(i));
            rs->_pattern_kinds |= 1u << unsigned(t.what);
        }
        r.value().gated = !r.value().nodes.empty() && gated(r.value(), 0);
        if (!r.value().gated)
            rs->_ungated.push_back(unsigned(i));
        rs->_rules.push_back(std::move(r.value()));
    }
    auto db = patterns::database::compile(pats);
    if (!db) {
        // Name the rule of the pattern that failed.
        return unexpected(fmt::format("content rules: {}", db.error()));
    }
    rs->_db = std::move(db.value());
    return std::shared_ptr<const rule_set>(std::move(rs));
}

}  // namespace rw::policy::rules
