#include "mail/codec.hh"

#include <array>

namespace rw::mail {

namespace {

constexpr char k_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char k_hex[] = "0123456789ABCDEF";

constexpr std::array<int8_t, 256> make_sextets() {
    std::array<int8_t, 256> t{};
    for (auto& v : t)
        v = -1;
    for (int i = 0; i < 64; ++i)
        t[static_cast<unsigned char>(k_alphabet[i])] = int8_t(i);
    return t;
}
constexpr auto k_sextet = make_sextets();

int sextet(char c) { return k_sextet[static_cast<unsigned char>(c)]; }

constexpr bool is_wsp(char c) { return c == ' ' || c == '\t'; }
constexpr bool is_base64_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }


void put_hex(std::string& out, char lead, unsigned char c) {
    out += lead;
    out += k_hex[c >> 4];
    out += k_hex[c & 15];
}

std::optional<std::string> base64_decode_strict(std::string_view t) {
    if (t.size() % 4 != 0)
        return std::nullopt;
    std::string out;
    out.reserve(t.size() / 4 * 3);
    for (size_t i = 0; i < t.size(); i += 4) {
        const bool last = i + 4 == t.size();
        uint32_t bits = 0;
        unsigned pad = 0;
        for (size_t k = 0; k < 4; ++k) {
            const char c = t[i + k];
            int v = 0;
            if (c == '=') {
                if (!last || k < 2)
                    return std::nullopt;
                ++pad;
            } else {
                v = sextet(c);
                if (v < 0 || pad > 0)
                    return std::nullopt;
            }
            bits = bits << 6 | uint32_t(v);
        }
        // The bits after the last whole byte must be zero (RFC 4648 3.5).
        if ((pad == 2 && (bits & 0xFFFF) != 0) || (pad == 1 && (bits & 0xFF) != 0))
            return std::nullopt;
        out += char(bits >> 16);
        if (pad < 2)
            out += char(bits >> 8);
        if (pad < 1)
            out += char(bits);
    }
    return out;
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= bytes.size(); i += 3) {
        const uint32_t n = uint32_t(static_cast<unsigned char>(bytes[i])) << 16 |
                           uint32_t(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                           uint32_t(static_cast<unsigned char>(bytes[i + 2]));
        out += k_alphabet[n >> 18 & 63];
        out += k_alphabet[n >> 12 & 63];
        out += k_alphabet[n >> 6 & 63];
        out += k_alphabet[n & 63];
    }
    const size_t rest = bytes.size() - i;
    if (rest > 0) {
        uint32_t n = uint32_t(static_cast<unsigned char>(bytes[i])) << 16;
        if (rest == 2)
            n |= uint32_t(static_cast<unsigned char>(bytes[i + 1])) << 8;
        out += k_alphabet[n >> 18 & 63];
        out += k_alphabet[n >> 12 & 63];
        out += rest == 2 ? k_alphabet[n >> 6 & 63] : '=';
        out += '=';
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view text, base64_mode mode) {
    if (mode == base64_mode::strict)
        return base64_decode_strict(text);
    std::string out;
    out.reserve(text.size() / 4 * 3);
    base64_decoder d;
    d.feed(text, out);
    if (!d.finish(out))
        return std::nullopt;
    return out;
}

void base64_decoder::feed(std::string_view chunk, std::string& out) {
    for (const char c : chunk) {
        if (is_base64_space(c))
            continue;
        if (c == '=') {
            if (_want_pad) {
                _want_pad = false;
                _padded = true;
            } else if (_padded || _count < 2) {
                _bad = true;  // padding where none can be: skipped
            } else if (_count == 2) {
                out += char(_bits >> 4);
                _bits = 0;
                _count = 0;
                _want_pad = true;
            } else {
                out += char(_bits >> 10);
                out += char(_bits >> 2);
                _bits = 0;
                _count = 0;
                _padded = true;
            }
            continue;
        }
        const int v = sextet(c);
        if (v < 0) {
            _bad = true;
            continue;
        }
        if (_want_pad || _padded) {
            _bad = true;
            _want_pad = false;
            _padded = false;
        }
        _bits = _bits << 6 | uint32_t(v);
        if (++_count == 4) {
            out += char(_bits >> 16);
            out += char(_bits >> 8);
            out += char(_bits);
            _bits = 0;
            _count = 0;
        }
    }
}

bool base64_decoder::finish(std::string& out) {
    if (_want_pad || _count == 1)
        _bad = true;
    if (_count == 2) {
        out += char(_bits >> 4);
        _bad = true;
    } else if (_count == 3) {
        out += char(_bits >> 10);
        out += char(_bits >> 2);
        _bad = true;
    }
    _bits = 0;
    _count = 0;
    _want_pad = false;
    _padded = false;
    return !_bad;
}

bool qp_decode(std::string_view in, std::string& out) {
    bool clean = true;
    while (!in.empty()) {
        const size_t nl = in.find('\n');
        std::string_view line = in.substr(0, nl);
        std::string_view line_break;
        if (nl == std::string_view::npos) {
            in = {};
        } else {
            in.remove_prefix(nl + 1);
            if (!line.empty() && line.back() == '\r') {
                line.remove_suffix(1);
                line_break = "\r\n";
            } else {
                line_break = "\n";
            }
        }
        while (!line.empty() && is_wsp(line.back()))
            line.remove_suffix(1);
        const bool soft = !line.empty() && line.back() == '=';
        if (soft)
            line.remove_suffix(1);
        for (size_t i = 0; i < line.size(); ++i) {
            if (line[i] != '=') {
                out += line[i];
                continue;
            }
            const int a = i + 1 < line.size() ? hex_value(line[i + 1], false) : -1;
            const int b = i + 2 < line.size() ? hex_value(line[i + 2], false) : -1;
            if (a >= 0 && b >= 0) {
                out += char(a << 4 | b);
                i += 2;
            } else {
                out += '=';
                clean = false;
            }
        }
        if (!soft)
            out += line_break;
    }
    return clean;
}

std::string qp_encode(std::string_view in) {
    std::string out;
    out.reserve(in.size() + in.size() / 8);
    size_t col = 0;  // characters on the current output line
    for (size_t i = 0; i < in.size(); ++i) {
        const auto c = static_cast<unsigned char>(in[i]);
        if (c == '\r' && i + 1 < in.size() && in[i + 1] == '\n') {
            out += "\r\n";
            col = 0;
            ++i;
            continue;
        }
        const std::string_view after = in.substr(i + 1);
        const bool line_ends = after.empty() || after.starts_with("\r\n");
        const bool literal = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !line_ends);
        const size_t width = literal ? 1 : 3;
        // A line that goes on needs room for the soft break's '='.
        if (col + width > (line_ends ? 76 : 75)) {
            out += "=\r\n";
            col = 0;
        }
        if (literal)
            out += char(c);
        else
            put_hex(out, '=', c);
        col += width;
    }
    return out;
}

std::string xtext_encode(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    for (const char ch : bytes) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= '!' && c <= '~' && c != '+' && c != '=')
            out += ch;
        else
            put_hex(out, '+', c);
    }
    return out;
}

std::optional<std::string> xtext_decode(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c < '!' || c > '~' || c == '=')
            return std::nullopt;
        if (c != '+') {
            out += char(c);
            continue;
        }
        const int a = i + 1 < text.size() ? hex_value(text[i + 1], true) : -1;
        const int b = i + 2 < text.size() ? hex_value(text[i + 2], true) : -1;
        if (a < 0 || b < 0)
            return std::nullopt;
        out += char(a << 4 | b);
        i += 2;
    }
    return out;
}

std::string xtext_decode_lenient(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        const int a = text[i] == '+' && i + 1 < text.size() ? hex_value(text[i + 1], true) : -1;
        const int b = a >= 0 && i + 2 < text.size() ? hex_value(text[i + 2], true) : -1;
        if (b >= 0) {
            out += char(a << 4 | b);
            i += 2;
        } else {
            out += text[i];
        }
    }
    return out;
}

int hex_value(char c, bool upper_only) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (!upper_only && c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

}  // namespace rw::mail
