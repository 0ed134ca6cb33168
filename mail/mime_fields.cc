// MIME's structured field values, encoded-words and charsets (mime.hh).
#include <iconv.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <unordered_map>

#include "mail/codec.hh"
#include "mail/domain.hh"
#include "mail/mime.hh"

namespace rw::mail::mime {

namespace {

constexpr std::string_view k_replacement = "\xEF\xBF\xBD";  // U+FFFD

// A cursor over a field value with RFC 5322 comments skipped.
struct lexer {
    std::string_view s;
    size_t i = 0;

    void skip_cfws() {
        while (i < s.size()) {
            const char c = s[i];
            if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                ++i;
            } else if (c == '(') {
                int depth = 0;
                for (; i < s.size(); ++i) {
                    if (s[i] == '\\') {
                        if (i + 1 < s.size())
                            ++i;  // a quoted-pair; a backslash that ends the value quotes nothing
                    } else if (s[i] == '(') {
                        ++depth;
                    } else if (s[i] == ')' && --depth == 0) {
                        ++i;
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }
    bool at(char c) const { return i < s.size() && s[i] == c; }
    // A token, leniently: anything up to whitespace, ';', a comment or a
    // quote (and '=' for a parameter name).
    std::string_view token(bool stop_at_eq) {
        const size_t b = i;
        while (i < s.size()) {
            const char c = s[i];
            if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';' || c == '(' || c == '"' ||
                (c == '=' && stop_at_eq))
                break;
            ++i;
        }
        return s.substr(b, i - b);
    }
    // A quoted string's content, quoted-pairs undone; an unterminated one
    // runs to the end.
    std::string quoted() {
        std::string out;
        ++i;  // the opening quote
        while (i < s.size() && s[i] != '"') {
            if (s[i] == '\\' && i + 1 < s.size())
                ++i;
            if (s[i] != '\r' && s[i] != '\n')
                out += s[i];
            ++i;
        }
        if (i < s.size())
            ++i;
        return out;
    }
};

struct section {
    bool encoded = false;
    std::string value;
};

std::string percent_decode(std::string_view v) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '%' && i + 2 < v.size() && hex_value(v[i + 1]) >= 0 && hex_value(v[i + 2]) >= 0) {
            out += char(hex_value(v[i + 1]) * 16 + hex_value(v[i + 2]));
            i += 2;
            continue;
        }
        out += v[i];
    }
    return out;
}

// A valid UTF-8 copy of s (invalid sequences become U+FFFD).
std::string clean_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        // A run of ASCII (most text), eight bytes at a time, copied at once.
        size_t j = i;
        for (uint64_t w; j + 8 <= s.size(); j += 8) {
            std::memcpy(&w, s.data() + j, 8);
            if (w & 0x8080808080808080ull)
                break;
        }
        while (j < s.size() && static_cast<unsigned char>(s[j]) < 0x80)
            ++j;
        if (j > i) {
            out.append(s.data() + i, j - i);
            i = j;
            continue;
        }
        const auto c = static_cast<unsigned char>(s[i]);
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = n > 0 && i + n <= s.size();
        for (size_t k = 1; ok && k < n; ++k)
            ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
        if (ok && n == 2 && c < 0xC2)
            ok = false;  // overlong
        if (ok && n == 3) {
            const auto c1 = static_cast<unsigned char>(s[i + 1]);
            ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);  // overlong, surrogates
        }
        if (ok && n == 4) {
            const auto c1 = static_cast<unsigned char>(s[i + 1]);
            ok = c <= 0xF4 && !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
        }
        if (!ok) {
            out += k_replacement;
            ++i;
            continue;
        }
        out.append(s.substr(i, n));
        i += n;
    }
    return out;
}

// Converters by charset, per thread (iconv_open loads modules; a
// descriptor is not safe to share).
struct converters {
    std::unordered_map<std::string, iconv_t> by_name;
    ~converters() {
        for (auto& [n, cd] : by_name)
            if (cd != iconv_t(-1))
                iconv_close(cd);
    }
    iconv_t get(const std::string& name) {
        auto it = by_name.find(name);
        if (it != by_name.end())
            return it->second;
        if (by_name.size() >= 256) {  // bounded: the names come from mail
            for (auto& [n, cd] : by_name)
                if (cd != iconv_t(-1))
                    iconv_close(cd);
            by_name.clear();
        }
        iconv_t cd = iconv_open("UTF-8", name.c_str());
        by_name.emplace(name, cd);
        return cd;
    }
};

}  // namespace

const std::string* field_value::param(std::string_view name) const {
    for (const auto& p : params)
        if (p.name == name)
            return &p.value;
    return nullptr;
}

std::optional<std::string> to_utf8(std::string_view charset, std::string_view bytes) {
    std::string cs = lower_ascii(charset);
    if (cs.empty() || cs == "utf-8" || cs == "utf8" || cs == "us-ascii" || cs == "ascii")
        return clean_utf8(bytes);
    // Names mail uses that iconv spells otherwise.
    if (cs == "latin1" || cs == "latin-1")
        cs = "iso-8859-1";
    if (cs.size() > 40 || cs.find_first_of("/ \t") != std::string::npos)
        return std::nullopt;
    static thread_local converters conv;
    iconv_t cd = conv.get(cs);
    if (cd == iconv_t(-1))
        return std::nullopt;
    iconv(cd, nullptr, nullptr, nullptr, nullptr);  // initial state
    std::string out;
    out.resize(bytes.size() * 4 + 16);
    char* in = const_cast<char*>(bytes.data());
    size_t in_left = bytes.size();
    char* o = out.data();
    size_t o_left = out.size();
    while (in_left > 0) {
        const size_t r = iconv(cd, &in, &in_left, &o, &o_left);
        if (r != size_t(-1))
            break;
        if (errno == E2BIG) {
            const size_t used = size_t(o - out.data());
            out.resize(out.size() * 2);
            o = out.data() + used;
            o_left = out.size() - used;
            continue;
        }
        // EILSEQ or EINVAL (a sequence cut at the end): one byte is lost.
        if (o_left < k_replacement.size()) {
            const size_t used = size_t(o - out.data());
            out.resize(out.size() + 16);
            o = out.data() + used;
            o_left = out.size() - used;
        }
        std::copy(k_replacement.begin(), k_replacement.end(), o);
        o += k_replacement.size();
        o_left -= k_replacement.size();
        ++in;
        --in_left;
        iconv(cd, nullptr, nullptr, nullptr, nullptr);
    }
    out.resize(size_t(o - out.data()));
    return out;
}

std::string decode_words(std::string_view v) {
    std::string out;
    size_t i = 0;
    bool last_was_word = false;
    size_t pending_ws = std::string::npos;  // where whitespace after a word began in out
    while (i < v.size()) {
        if (v.substr(i, 2) == "=?") {
            // =?charset?X?text?=
            const size_t q1 = v.find('?', i + 2);
            const size_t q2 = q1 == std::string_view::npos ? q1 : v.find('?', q1 + 1);
            const size_t end = q2 == std::string_view::npos ? q2 : v.find("?=", q2 + 1);
            if (end != std::string_view::npos && q2 == q1 + 2 && end - i <= 200) {
                std::string_view charset = v.substr(i + 2, q1 - i - 2);
                if (const size_t star = charset.find('*'); star != std::string_view::npos)
                    charset = charset.substr(0, star);  // RFC 2231 5: a language
                const char enc = lower(v[q1 + 1]);
                const std::string_view text = v.substr(q2 + 1, end - q2 - 1);
                std::optional<std::string> raw;
                if (text.find_first_of(" \t") == std::string_view::npos) {
                    if (enc == 'b') {
                        raw = base64_decode(text, base64_mode::lenient);
                    } else if (enc == 'q') {
                        std::string d;
                        for (size_t k = 0; k < text.size(); ++k) {
                            if (text[k] == '_') {
                                d += ' ';
                            } else if (text[k] == '=' && k + 2 < text.size() && hex_value(text[k + 1]) >= 0 &&
                                       hex_value(text[k + 2]) >= 0) {
                                d += char(hex_value(text[k + 1]) * 16 + hex_value(text[k + 2]));
                                k += 2;
                            } else {
                                d += text[k];
                            }
                        }
                        raw = std::move(d);
                    }
                }
                std::optional<std::string> utf = raw ? to_utf8(charset, *raw) : std::nullopt;
                if (utf) {
                    if (last_was_word && pending_ws != std::string::npos)
                        out.resize(pending_ws);  // RFC 2047 6.2: whitespace between words goes
                    out += *utf;
                    i = end + 2;
                    last_was_word = true;
                    pending_ws = std::string::npos;
                    continue;
                }
            }
        }
        const char c = v[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (pending_ws == std::string::npos)
                pending_ws = out.size();
        } else {
            last_was_word = false;
            pending_ws = std::string::npos;
        }
        out += c;
        ++i;
    }
    return out;
}

namespace {

// How many bytes at the end of s are the start of a UTF-8 sequence that
// the next piece may complete (0..3).
size_t incomplete_utf8_tail(std::string_view s) {
    const size_t n = s.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        const auto c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80)
            continue;  // a continuation byte: look further back
        const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
        return len > back ? back : 0;
    }
    return 0;
}

std::string canonical_charset(std::string_view charset) {
    std::string cs = lower_ascii(charset);
    if (cs == "latin1" || cs == "latin-1")
        cs = "iso-8859-1";
    return cs;
}

bool is_utf8_name(const std::string& cs) {
    return cs.empty() || cs == "utf-8" || cs == "utf8" || cs == "us-ascii" || cs == "ascii";
}

}  // namespace

utf8_stream::utf8_stream(std::string_view charset) {
    const std::string cs = canonical_charset(charset);
    if (is_utf8_name(cs))
        return;
    if (cs.size() > 40 || cs.find_first_of("/ \t") != std::string::npos) {
        _known = false;
        return;
    }
    iconv_t cd = iconv_open("UTF-8", cs.c_str());
    if (cd == iconv_t(-1)) {
        _known = false;
        return;
    }
    _cd = cd;
}

utf8_stream::~utf8_stream() {
    if (_cd)
        iconv_close(iconv_t(_cd));
}

void utf8_stream::feed(std::string_view in, std::string& out) { convert(in, out, false); }

void utf8_stream::finish(std::string& out) {
    convert({}, out, true);
    _carry.clear();
}

void utf8_stream::convert(std::string_view in, std::string& out, bool last) {
    std::string buf;
    std::string_view data = in;
    if (!_carry.empty()) {
        buf = _carry + std::string(in);
        data = buf;
        _carry.clear();
    }
    if (!_cd) {
        const size_t keep = last ? 0 : incomplete_utf8_tail(data);
        out += clean_utf8(data.substr(0, data.size() - keep));
        _carry.assign(data.substr(data.size() - keep));
        return;
    }
    char* ip = const_cast<char*>(data.data());
    size_t il = data.size();
    char tmp[4096];
    while (il > 0) {
        char* op = tmp;
        size_t ol = sizeof tmp;
        const size_t r = iconv(iconv_t(_cd), &ip, &il, &op, &ol);
        out.append(tmp, size_t(op - tmp));
        if (r != size_t(-1))
            break;
        if (errno == E2BIG)
            continue;
        if (errno == EINVAL && !last) {  // a sequence cut at the end: wait for the rest
            _carry.assign(ip, il);
            return;
        }
        out += k_replacement;  // EILSEQ, or cut at the very end
        ++ip;
        --il;
        iconv(iconv_t(_cd), nullptr, nullptr, nullptr, nullptr);
    }
    if (last) {  // a stateful charset's final shift sequence
        char* op = tmp;
        size_t ol = sizeof tmp;
        iconv(iconv_t(_cd), nullptr, nullptr, &op, &ol);
        out.append(tmp, size_t(op - tmp));
    }
}

field_value parse_field_value(std::string_view v) {
    field_value f;
    lexer lx{v};
    lx.skip_cfws();
    // The value: type/subtype for Content-Type, a token for the others.
    {
        std::string t(lx.token(true));  // (a type has no '=')
        lx.skip_cfws();
        if (lx.at('/')) {  // "text / plain"
            ++lx.i;
            lx.skip_cfws();
            t += '/';
            t += lx.token(true);
        }
        f.value = lower_ascii(t);
    }
    // RFC 2231 sections by base name, in order of first appearance.
    std::vector<std::string> order;
    std::map<std::string, std::map<unsigned, section>> sections;
    std::map<std::string, std::string> plain;
    while (lx.i < v.size()) {
        lx.skip_cfws();
        if (!lx.at(';')) {
            // Junk: skip to the next ';'.
            const size_t semi = v.find(';', lx.i);
            if (semi == std::string_view::npos)
                break;
            lx.i = semi;
        }
        ++lx.i;
        lx.skip_cfws();
        std::string name = lower_ascii(lx.token(true));
        lx.skip_cfws();
        if (name.empty() || !lx.at('=')) {
            continue;
        }
        ++lx.i;
        lx.skip_cfws();
        std::string value;
        if (lx.at('"'))
            value = lx.quoted();
        else
            value = std::string(lx.token(false));
        if (name.size() > 100 || order.size() >= 64)
            continue;
        // name*, name*N, name*N*
        const size_t star = name.find('*');
        if (star == std::string::npos) {
            if (!plain.contains(name)) {
                plain[name] = value;
                if (std::find(order.begin(), order.end(), name) == order.end())
                    order.push_back(name);
            }
            continue;
        }
        const std::string base = name.substr(0, star);
        std::string_view rest = std::string_view(name).substr(star + 1);
        section sec;
        unsigned n = 0;
        if (rest.empty()) {
            sec.encoded = true;  // name*=charset'lang'value
        } else {
            const bool enc = rest.back() == '*';
            if (enc)
                rest.remove_suffix(1);
            auto r = std::from_chars(rest.data(), rest.data() + rest.size(), n);
            if (r.ec != std::errc() || r.ptr != rest.data() + rest.size() || n > 1000)
                continue;
            sec.encoded = enc;
        }
        sec.value = std::move(value);
        if (std::find(order.begin(), order.end(), base) == order.end())
            order.push_back(base);
        sections[base].emplace(n, std::move(sec));
    }
    for (const auto& name : order) {
        auto s = sections.find(name);
        if (s == sections.end()) {
            f.params.push_back({name, plain[name]});
            continue;
        }
        // Joined in section order, up to the first gap (RFC 2231 3).
        std::string charset, joined;
        unsigned expect = 0;
        bool first = true;
        for (const auto& [n, sec] : s->second) {
            if (n != expect)
                break;
            ++expect;
            std::string_view val = sec.value;
            if (first && sec.encoded) {
                const size_t a = val.find('\'');
                const size_t b = a == std::string_view::npos ? a : val.find('\'', a + 1);
                if (b != std::string_view::npos) {
                    charset = std::string(val.substr(0, a));
                    val = val.substr(b + 1);
                }
            }
            first = false;
            joined += sec.encoded ? percent_decode(val) : std::string(val);
        }
        std::optional<std::string> utf = to_utf8(charset, joined);
        f.params.push_back({name, utf ? std::move(*utf) : clean_utf8(joined)});
    }
    return f;
}

}  // namespace rw::mail::mime
