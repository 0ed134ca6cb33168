#include "policy/auth_results.hh"

#include <fmt/format.h>

#include "mail/domain.hh"

namespace rw::policy {

namespace {

// RFC 8601 2.2 value: a token as is, anything else as a quoted-string.
bool is_token(std::string_view s) {
    if (s.empty())
        return false;
    for (unsigned char c : s)
        if (c <= 32 || c >= 127 || std::string_view("()<>@,;:\\\"/[]?=").find(char(c)) != std::string_view::npos)
            return false;
    return true;
}

std::string quoted(std::string_view s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\')
            o += '\\';
        o += (c < 32 || c == 127) ? ' ' : char(c);
    }
    return o + '"';
}

// A comment's text (RFC 5322 3.2.2): balanced parentheses stay as they
// are (nested comments), unbalanced ones and backslashes are quoted; no
// line breaks.
std::string comment(std::string_view s) {
    int depth = 0;
    bool balanced = true;
    for (char c : s) {
        depth += c == '(' ? 1 : c == ')' ? -1 : 0;
        balanced = balanced && depth >= 0;
    }
    balanced = balanced && depth == 0;
    std::string o;
    for (unsigned char c : s) {
        if (c == '\\' || (!balanced && (c == '(' || c == ')')))
            o += '\\';
        o += (c < 32 || c == 127) ? ' ' : char(c);
    }
    return o;
}

// smtp.mailfrom is the address (or its domain when the local part would
// need quoting); smtp.helo the name given.
std::string spf_property(const spf::outcome& o) {
    if (o.identity == "helo")
        return "smtp.helo=" + (is_token(o.domain) ? o.domain : quoted(o.domain));
    const size_t at = o.sender.rfind('@');
    const std::string_view local = at == std::string::npos ? std::string_view() : std::string_view(o.sender).substr(0, at);
    bool plain = !local.empty();
    for (unsigned char c : local)
        if (!(mail::is_alpha(c) || mail::is_digit(c) || std::string_view("!#$%&'*+-/=?^_`{|}~.").find(char(c)) !=
                                                             std::string_view::npos))
            plain = false;
    return "smtp.mailfrom=" + (plain ? o.sender : o.domain);
}

std::string spf_comment(const spf::outcome& o) {
    switch (o.res) {
    case spf::result::pass:
    case spf::result::fail:
    case spf::result::softfail:
    case spf::result::neutral:
        return o.mechanism.empty() ? "no mechanism matched" : fmt::format("mechanism \"{}\" matched", o.mechanism);
    default:
        return o.reason;
    }
}

}  // namespace

std::string authentication_results(std::string_view authserv_id, const auth_findings& f) {
    std::string h = fmt::format("Authentication-Results: {};", authserv_id);
    bool any = false;
    if (f.spf) {
        const spf::outcome& o = *f.spf;
        h += fmt::format("\r\n\tspf={}", spf::to_string(o.res));
        if (std::string c = spf_comment(o); !c.empty())
            h += fmt::format(" ({})", comment(c));
        h += ' ' + spf_property(o);
        any = true;
    }
    if (f.spf_helo) {
        const spf::outcome& o = *f.spf_helo;
        h += fmt::format("\r\n\tspf={}", spf::to_string(o.res));
        if (std::string c = spf_comment(o); !c.empty())
            h += fmt::format(" ({})", comment(c));
        h += ' ' + spf_property(o);
        any = true;
    }
    if (f.dkim) {
        if (f.dkim->empty())
            h += "\r\n\tdkim=none (no signature)";
        for (const dkim::verdict& v : *f.dkim) {
            h += fmt::format("\r\n\tdkim={}", dkim::to_string(v.res));
            std::string c = v.reason;
            if (v.testing)
                c += c.empty() ? "key in testing mode" : "; key in testing mode";
            if (!c.empty())
                h += fmt::format(" ({})", comment(c));
            if (!v.domain.empty())
                h += fmt::format(" header.d={} header.s={}", v.domain, v.selector);
            if (!v.b_prefix.empty())
                h += " header.b=" + (is_token(v.b_prefix) ? v.b_prefix : quoted(v.b_prefix));
        }
        any = true;
    }
    if (f.dmarc && !f.dmarc->from_domain.empty()) {
        const dmarc::outcome& d = *f.dmarc;
        h += fmt::format("\r\n\tdmarc={}", dmarc::to_string(d.res));
        if (d.rec)
            h += fmt::format(" (p={} dis={}{})", dmarc::to_string(d.rec->p), dmarc::to_string(d.applied),
                             d.override_by.empty() ? std::string() : "; override: " + comment(d.override_by));
        else if (!d.reason.empty())
            h += fmt::format(" ({})", comment(d.reason.substr(0, 120)));
        h += " header.from=" + (is_token(d.from_domain) ? d.from_domain : quoted(d.from_domain));
        any = true;
    }
    if (f.arc) {
        const arc::outcome& a = *f.arc;
        h += fmt::format("\r\n\tarc={}", arc::to_string(a.res));
        if (a.res == arc::result::pass)
            h += fmt::format(" ({} instance{}, sealed by {})", a.instances, a.instances == 1 ? "" : "s", comment(a.sealer));
        else if (!a.reason.empty())
            h += fmt::format(" ({})", comment(a.reason.substr(0, 120)));
        any = true;
    }
    if (!any)
        h += " none";
    return h + "\r\n";
}

namespace {
// Skips white space and comments (nested, with quoted-pairs).
size_t skip_cfws(std::string_view v, size_t i) {
    while (i < v.size()) {
        if (v[i] == ' ' || v[i] == '\t' || v[i] == '\r' || v[i] == '\n') {
            ++i;
        } else if (v[i] == '(') {
            int depth = 0;
            for (; i < v.size(); ++i) {
                if (v[i] == '\\') {
                    ++i;
                } else if (v[i] == '(') {
                    ++depth;
                } else if (v[i] == ')' && --depth == 0) {
                    ++i;
                    break;
                }
            }
        } else {
            break;
        }
    }
    return i;
}
}  // namespace

bool names_authserv_id(std::string_view value, std::string_view authserv_id) {
    size_t i = skip_cfws(value, 0);
    if (i < value.size() && value[i] == '"') {
        // A quoted-string: what it says once its quoted-pairs are undone.
        std::string id;
        for (size_t k = i + 1; k < value.size() && value[k] != '"'; ++k) {
            if (value[k] == '\\' && k + 1 < value.size())
                ++k;
            id += value[k];
        }
        return !id.empty() && mail::iequals(id, authserv_id);
    }
    size_t j = i;
    while (j < value.size() && value[j] != ';' && value[j] != ' ' && value[j] != '\t' && value[j] != '(' &&
           value[j] != '\r' && value[j] != '\n')
        ++j;
    std::string_view id = value.substr(i, j - i);
    if (id.size() >= 2 && id.front() == '"' && id.back() == '"')
        id = id.substr(1, id.size() - 2);
    return !id.empty() && mail::iequals(id, authserv_id);
}

}  // namespace rw::policy
