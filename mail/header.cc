#include "mail/header.hh"

#include "mail/domain.hh"

#include <ctime>

namespace rw::mail {

namespace {

constexpr bool is_wsp(char c) { return c == ' ' || c == '\t'; }
// RFC 5322 3.6.8: ftext = %d33-57 / %d59-126
constexpr bool is_ftext(char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c >= 33 && c <= 126 && c != ':';
}

}  // namespace

// ---- fields ----

bool is_field_name(std::string_view name) noexcept {
    if (name.empty() || name.size() > 64)
        return false;
    for (char c : name)
        if (!is_ftext(c))
            return false;
    return true;
}

std::string_view header_field::raw_value() const noexcept {
    std::string_view v(raw);
    const size_t colon = v.find(':', name_len);
    if (colon == std::string_view::npos)
        return {};
    v.remove_prefix(colon + 1);
    if (v.ends_with('\n')) {
        v.remove_suffix(1);
        if (v.ends_with('\r'))
            v.remove_suffix(1);
    }
    return v;
}

std::string header_field::unfolded_value() const {
    const std::string_view v = raw_value();
    std::string out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        // Inside the value every line break is a fold: WSP follows it.
        if (v[i] == '\n' && i + 1 < v.size() && is_wsp(v[i + 1])) {
            if (!out.empty() && out.back() == '\r' && i > 0 && v[i - 1] == '\r')
                out.pop_back();
            continue;
        }
        out += v[i];
    }
    size_t b = 0, e = out.size();
    while (b < e && is_wsp(out[b]))
        ++b;
    while (e > b && is_wsp(out[e - 1]))
        --e;
    return out.substr(b, e - b);
}

bool name_is(const header_field& f, std::string_view name) noexcept { return iequals(f.name(), name); }

const char* to_string(header_error e) noexcept {
    switch (e) {
    case header_error::none:
        return "none";
    case header_error::too_many_fields:
        return "too many header fields";
    case header_error::field_too_long:
        return "header field too long";
    case header_error::section_too_long:
        return "header section too long";
    }
    return "?";
}

// ---- the streaming parser ----

size_t header_parser::feed(std::string_view chunk) {
    const uint64_t start = _pos;
    size_t i = 0;
    while (i < chunk.size() && _state != state::done) {
        const char c = chunk[i];
        switch (_state) {
        case state::line_start:
            if (c == '\n') {
                close_field();
                take(chunk.substr(i, 1));
                ++i;
                end_section();
            } else if (c == '\r') {
                close_field();
                take(chunk.substr(i, 1));
                ++i;
                _state = state::cr_first;
            } else if (is_wsp(c)) {
                // A continuation line: of the open field, or of nothing.
                if (_first_line) {
                    no_header();
                } else {
                    if (!_open)
                        ++_malformed;
                    _state = state::rest;
                }
            } else {
                close_field();
                if (is_ftext(c)) {
                    _cur = header_field{};
                    _cur.offset = _pos;
                    _has_cur = _collecting;
                    _name_len = 0;
                    _state = state::name;
                } else {
                    non_field_line();
                }
            }
            break;
        case state::cr_first:
            if (c == '\n') {
                take(chunk.substr(i, 1));
                ++i;
                end_section();
            } else {
                non_field_line();
            }
            break;
        case state::name:
        case state::name_wsp:
            if (_state == state::name && is_ftext(c)) {
                ++_name_len;
            } else if (is_wsp(c)) {
                _state = state::name_wsp;
            } else if (c == ':') {
                take(chunk.substr(i, 1));
                ++i;
                field_line();
                break;
            } else {
                non_field_line();
                break;
            }
            take(chunk.substr(i, 1));
            ++i;
            break;
        case state::rest: {
            const size_t nl = chunk.find('\n', i);
            const size_t end = nl == std::string_view::npos ? chunk.size() : nl + 1;
            take(chunk.substr(i, end - i));
            i = end;
            if (nl != std::string_view::npos)
                _state = state::line_start;
            break;
        }
        case state::done:
            break;
        }
    }
    if (_state == state::done)
        return _section_bytes > start ? size_t(_section_bytes - start) : 0;
    return i;
}

void header_parser::finish() {
    const state at_end = _state;
    switch (_state) {
    case state::cr_first:
    case state::name:
    case state::name_wsp:
        // A last line without a colon, or a lone CR.
        non_field_line();
        break;
    case state::line_start:
    case state::rest:
        close_field();
        break;
    case state::done:
        return;
    }
    if (_state != state::done) {
        if (_pos > 0)
            _missing_end = at_end == state::line_start ? std::string_view("\r\n") : std::string_view("\r\n\r\n");
        end_section();
    }
}

// Consumes bytes of the current line; they go into the field being read,
// if any. When the bytes pass both limits, the error is that of the limit
// passed first, as if they came one at a time: the same for any split.
void header_parser::take(std::string_view bytes) {
    const uint64_t section_room = _limits.max_section_bytes > _pos ? _limits.max_section_bytes - _pos : 0;
    if (_has_cur) {
        const uint64_t field_room =
            _limits.max_field_bytes > _cur.raw.size() ? _limits.max_field_bytes - _cur.raw.size() : 0;
        if (bytes.size() > field_room && field_room <= section_room)
            fail(header_error::field_too_long);
        else
            _cur.raw.append(bytes);
    }
    _pos += bytes.size();
    if (_pos > _limits.max_section_bytes)
        fail(header_error::section_too_long);
}

void header_parser::close_field() {
    if (_has_cur)
        _fields.push_back(std::move(_cur));
    _cur = header_field{};
    _has_cur = false;
    _open = false;
}

// The colon of a field line was just consumed.
void header_parser::field_line() {
    _first_line = false;
    _open = true;
    _cur.name_len = _name_len;
    if (_collecting && _fields.size() >= _limits.max_fields)
        fail(header_error::too_many_fields);
    _state = state::rest;
}

// The current line turned out not to be a field; the byte that showed it
// is not consumed yet.
void header_parser::non_field_line() {
    if (_first_line) {
        no_header();
        return;
    }
    ++_malformed;
    _cur = header_field{};
    _has_cur = false;
    _open = false;
    _state = state::rest;
}

void header_parser::no_header() {
    _first_line = false;
    _cur = header_field{};
    _has_cur = false;
    _open = false;
    _error = header_error::none;  // no section, so no limit was passed
    _section_bytes = 0;
    _state = state::done;
}

void header_parser::end_section() {
    _first_line = false;
    _section_bytes = _pos;
    _state = state::done;
}

void header_parser::fail(header_error e) {
    if (_error == header_error::none)
        _error = e;
    _collecting = false;
    _cur = header_field{};
    _has_cur = false;
}

// ---- addresses ----

namespace {

// RFC 5322 3.2.3 atext, with the UTF-8 of RFC 6532 3.2.
bool is_atext(char ch) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80 || is_alpha(c) || is_digit(c))
        return true;
    return std::string_view("!#$%&'*+-/=?^_`{|}~").find(ch) != std::string_view::npos;
}

struct token {
    enum kind_t { atom, quoted, literal, special } kind = special;
    std::string text;           // atom as is, quoted string's content, literal with brackets, the special
    bool space_before = false;  // CFWS came before it
};

bool is_special(const token& t, char c) { return t.kind == token::special && t.text[0] == c; }
bool is_word(const token& t) { return t.kind == token::atom || t.kind == token::quoted; }

// Splits the value into tokens, dropping CFWS (comments nest and hold
// quoted pairs). Nothing if a comment, quoted string or domain literal is
// not closed, or a byte fits nowhere.
std::optional<std::vector<token>> tokenize(std::string_view s) {
    std::vector<token> out;
    bool space = false;
    size_t i = 0;
    while (i < s.size()) {
        const char c = s[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            space = true;
            ++i;
        } else if (c == '(') {
            size_t depth = 0;
            for (; i < s.size(); ++i) {
                if (s[i] == '\\')
                    ++i;
                else if (s[i] == '(')
                    ++depth;
                else if (s[i] == ')' && --depth == 0)
                    break;
            }
            if (i >= s.size())
                return std::nullopt;
            ++i;
            space = true;
        } else if (c == '"') {
            token t{token::quoted, {}, space};
            for (++i; i < s.size() && s[i] != '"'; ++i) {
                if (s[i] == '\\' && ++i == s.size())
                    break;
                t.text += s[i];
            }
            if (i >= s.size())
                return std::nullopt;
            ++i;
            out.push_back(std::move(t));
            space = false;
        } else if (c == '[') {
            const size_t b = i;
            for (++i; i < s.size() && s[i] != ']' && s[i] != '['; ++i)
                if (s[i] == '\\')
                    ++i;
            if (i >= s.size() || s[i] != ']')
                return std::nullopt;
            ++i;
            out.push_back({token::literal, std::string(s.substr(b, i - b)), space});
            space = false;
        } else if (std::string_view("<>@,:;.").find(c) != std::string_view::npos) {
            out.push_back({token::special, std::string(1, c), space});
            space = false;
            ++i;
        } else if (is_atext(c)) {
            const size_t b = i;
            while (i < s.size() && is_atext(s[i]))
                ++i;
            out.push_back({token::atom, std::string(s.substr(b, i - b)), space});
            space = false;
        } else {
            return std::nullopt;  // ')', ']', '\\', controls
        }
    }
    return out;
}

class address_parser {
public:
    explicit address_parser(std::vector<token> toks) : _t(std::move(toks)) {}

    bool at_end() const { return _i == _t.size(); }
    bool at(char c) const { return !at_end() && is_special(_t[_i], c); }
    bool skip(char c) {
        if (!at(c))
            return false;
        ++_i;
        return true;
    }

    // address = mailbox / group; a group's members are appended to out.
    bool address(std::vector<mailbox>& out) {
        const size_t begin = _i;
        skip_phrase();
        if (_i > begin && skip(':'))
            return group_rest(out);
        _i = begin;
        auto m = one_mailbox();
        if (!m)
            return false;
        out.push_back(std::move(*m));
        return true;
    }

    // mailbox = name-addr / addr-spec
    std::optional<mailbox> one_mailbox() {
        const size_t begin = _i;
        skip_phrase();
        mailbox m;
        if (at('<')) {
            m.display = display(begin, _i);
            ++_i;
            if (!angle_rest(m))
                return std::nullopt;
            return m;
        }
        _i = begin;
        if (!addr_spec(m))
            return std::nullopt;
        return m;
    }

private:
    // Words and dots (obs-phrase): a display name, or a local part.
    void skip_phrase() {
        while (!at_end() && (is_word(_t[_i]) || at('.')))
            ++_i;
    }

    std::string display(size_t begin, size_t end) const {
        std::string d;
        for (size_t k = begin; k < end; ++k) {
            if (_t[k].space_before && !d.empty())
                d += ' ';
            d += _t[k].text;
        }
        return d;
    }

    // After "display-name:": [mailbox-list / CFWS] ";". The end of the
    // input in place of the ';' is taken for one.
    bool group_rest(std::vector<mailbox>& out) {
        for (;;) {
            while (skip(','))
                ;
            if (at_end() || skip(';'))
                return true;
            auto m = one_mailbox();
            if (!m)
                return false;
            out.push_back(std::move(*m));
            if (!at(',') && !at(';') && !at_end())
                return false;
        }
    }

    // After '<': [obs-route] addr-spec ">", where
    // obs-route = *(CFWS / ",") "@" domain *("," [CFWS] ["@" domain]) ":"
    bool angle_rest(mailbox& m) {
        if (at('@') || at(',')) {
            do {
                while (skip(','))
                    ;
                std::string hop;
                if (!skip('@') || !domain(hop))
                    return false;
            } while (at(','));
            if (!skip(':'))
                return false;
        }
        return addr_spec(m) && skip('>');
    }

    // local-part "@" domain, the local part being word *("." word).
    bool addr_spec(mailbox& m) {
        for (;;) {
            if (at_end() || !is_word(_t[_i]))
                return false;
            m.local += _t[_i++].text;
            if (!skip('.'))
                break;
            m.local += '.';
        }
        return skip('@') && domain(m.domain);
    }

    // dot-atom / obs-domain / domain-literal
    bool domain(std::string& d) {
        if (!at_end() && _t[_i].kind == token::literal) {
            d = _t[_i++].text;
            return true;
        }
        for (;;) {
            if (at_end() || _t[_i].kind != token::atom)
                return false;
            d += _t[_i++].text;
            if (!skip('.'))
                break;
            d += '.';
        }
        return check_domain(d, domain_rules{.utf8 = true}) == nullptr;
    }

    std::vector<token> _t;
    size_t _i = 0;
};

}  // namespace

std::optional<std::vector<mailbox>> parse_address_list(std::string_view unfolded_value) {
    auto toks = tokenize(unfolded_value);
    if (!toks)
        return std::nullopt;
    address_parser p(std::move(*toks));
    std::vector<mailbox> out;
    // obs-addr-list: empty elements between the commas are allowed.
    for (;;) {
        while (p.skip(','))
            ;
        if (p.at_end())
            return out;
        if (!p.address(out))
            return std::nullopt;
        if (!p.at_end() && !p.at(','))
            return std::nullopt;
    }
}

std::optional<mailbox> parse_mailbox(std::string_view unfolded_value) {
    auto toks = tokenize(unfolded_value);
    if (!toks)
        return std::nullopt;
    address_parser p(std::move(*toks));
    auto m = p.one_mailbox();
    if (!m || !p.at_end())
        return std::nullopt;
    return m;
}

std::string date_time(int64_t t) {
    const std::time_t tt = std::time_t(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    return buf;
}

}  // namespace rw::mail
