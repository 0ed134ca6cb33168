// The streaming MIME parser (mime.hh).
#include "mail/mime.hh"

#include "mail/codec.hh"
#include "mail/domain.hh"

namespace rw::mail::mime {

namespace {

constexpr size_t k_max_line = 1024;        // a body line longer than this streams through in pieces
constexpr size_t k_max_boundary = 200;     // RFC 2046 says 70; some mailers make longer ones
constexpr size_t k_flush_bytes = 16 * 1024;

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

bool is_field_line(std::string_view t) {
    size_t i = 0;
    while (i < t.size() && t[i] != ':') {
        const auto c = static_cast<unsigned char>(t[i]);
        if (c < 33 || c > 126)
            return false;
        ++i;
    }
    return i > 0 && i < t.size();
}

}  // namespace

// Content-Transfer-Encoding, undone as the body streams in.
struct parser::decoder {
    enum class kind { identity, base64, qp } k = kind::identity;
    base64_decoder b64;
    // quoted-printable (RFC 2045 6.7): a state machine over bytes, so a
    // line may arrive in pieces.
    enum class qs { normal, cr, eq, eq1, eq_ws, eq_cr } q = qs::normal;
    char h1 = 0;
    std::string ws;  // whitespace that ends the line is dropped (rule 3)
    bool qp_bad = false;

    void feed(std::string_view in, std::string& out) {
        switch (k) {
        case kind::identity: out.append(in); return;
        case kind::base64: b64.feed(in, out); return;
        case kind::qp:
            for (char c : in)
                qp_byte(c, out);
            return;
        }
    }
    void qp_byte(char c, std::string& out) {
        for (;;) {
            switch (q) {
            case qs::normal:
                if (c == '=') {
                    out += ws;
                    ws.clear();
                    q = qs::eq;
                } else if (c == ' ' || c == '\t') {
                    ws += c;
                } else if (c == '\r') {
                    q = qs::cr;
                } else if (c == '\n') {
                    ws.clear();
                    out += "\r\n";
                } else {
                    out += ws;
                    ws.clear();
                    out += c;
                }
                return;
            case qs::cr:
                q = qs::normal;
                if (c == '\n') {
                    ws.clear();
                    out += "\r\n";
                    return;
                }
                out += ws;
                ws.clear();
                out += '\r';
                continue;  // c again, in normal
            case qs::eq:
                if (hex_value(c) >= 0) {
                    h1 = c;
                    q = qs::eq1;
                } else if (c == '\r') {
                    q = qs::eq_cr;
                } else if (c == '\n') {
                    q = qs::normal;  // a soft line break
                } else if (c == ' ' || c == '\t') {
                    q = qs::eq_ws;  // "=" then whitespace before the line end: soft, padded
                } else {
                    qp_bad = true;
                    out += '=';
                    q = qs::normal;
                    continue;
                }
                return;
            case qs::eq1:
                q = qs::normal;
                if (hex_value(c) >= 0) {
                    out += char(hex_value(h1) * 16 + hex_value(c));
                    return;
                }
                qp_bad = true;
                out += '=';
                out += h1;
                continue;
            case qs::eq_ws:
                if (c == ' ' || c == '\t')
                    return;
                if (c == '\r') {
                    q = qs::eq_cr;
                    return;
                }
                if (c == '\n') {
                    q = qs::normal;
                    return;
                }
                qp_bad = true;
                out += '=';
                q = qs::normal;
                continue;
            case qs::eq_cr:
                q = qs::normal;
                if (c == '\n')
                    return;
                qp_bad = true;
                out += "=";
                continue;
            }
        }
    }
    // The body ended (its last line end belonged to the boundary).
    void finish(std::string& out) {
        if (k == kind::base64) {
            b64.finish(out);
        } else if (k == kind::qp) {
            if (q == qs::eq || q == qs::eq_ws || q == qs::eq_cr) {
                qp_bad = q == qs::eq ? true : qp_bad;  // "=" at the very end: a soft break into nothing
            } else if (q == qs::eq1) {
                qp_bad = true;
                out += '=';
                out += h1;
            } else if (q == qs::cr) {
                out += '\r';
            }
            ws.clear();  // trailing whitespace of the last line
            q = qs::normal;
        }
    }
    bool bad() const { return k == kind::base64 ? b64.bad() : qp_bad; }
};

std::string describe(uint32_t d) {
    static constexpr std::pair<uint32_t, const char*> names[] = {
        {too_deep, "too_deep"},
        {too_many_parts, "too_many_parts"},
        {header_too_large, "header_too_large"},
        {unterminated_multipart, "unterminated_multipart"},
        {missing_boundary, "missing_boundary"},
        {bad_base64, "bad_base64"},
        {bad_quoted_printable, "bad_quoted_printable"},
        {nested_boundary_missing, "nested_boundary_missing"},
        {bad_header_line, "bad_header_line"},
        {boundary_too_long, "boundary_too_long"},
    };
    std::string out;
    for (const auto& [bit, name] : names)
        if (d & bit) {
            if (!out.empty())
                out += ", ";
            out += name;
        }
    return out;
}

parser::parser(handler& h, limits l) : _h(h), _l(l) { open_part(-1, 0); }

parser::~parser() = default;

void parser::add_defect(part& p, uint32_t d) {
    p.defects |= d;
    _defects |= d;
}

void parser::open_part(int parent, unsigned depth) {
    if (_parts.size() >= _l.max_parts) {
        if (parent >= 0)
            add_defect(_parts[size_t(parent)], too_many_parts);
        _state = state::skip;
        return;
    }
    part p;
    p.index = unsigned(_parts.size());
    p.parent = parent;
    p.depth = depth;
    p.header_offset = _pos;
    if (parent >= 0 && _parts[size_t(parent)].type == "multipart/digest")
        p.type = "message/rfc822";  // RFC 2046 5.1.5
    _parts.push_back(std::move(p));
    _stack.push_back(frame{unsigned(_parts.size() - 1), {}, false});
    _state = state::headers;
    _field.clear();
    _header_bytes = 0;
}

void parser::feed(std::string_view bytes) {
    if (_finished)
        return;
    size_t i = 0;
    while (i < bytes.size()) {
        const size_t lf = bytes.find('\n', i);
        const std::string_view piece = bytes.substr(i, lf == std::string_view::npos ? std::string_view::npos : lf - i);
        if (_line.empty() && !_long_line)
            _line_start = _pos;
        if (lf == std::string_view::npos) {
            _line.append(piece);
            _pos += piece.size();
            i = bytes.size();
            // Bounded: a long body line streams through; a long header
            // line is a defect, cut.
            if (_line.size() > k_max_line) {
                if (_state == state::headers) {
                    if (_line.size() > _l.max_header_bytes) {
                        add_defect(_parts[_stack.back().index], header_too_large);
                        _line.resize(k_max_line);
                    }
                } else {
                    const std::string_view keep = std::string_view(_line).substr(0, _line.size() - 1);
                    body_line(keep, {});  // the last byte may be the CR of a CRLF: kept back
                    _line.erase(0, keep.size());
                    _long_line = true;
                }
            }
            break;
        }
        _line.append(piece);
        _pos += piece.size() + 1;
        i = lf + 1;
        std::string_view text = _line;
        std::string_view eol = "\n";
        if (!text.empty() && text.back() == '\r') {
            text.remove_suffix(1);
            eol = "\r\n";
        }
        line(text, eol);
        _line.clear();
        _long_line = false;
    }
}

void parser::line(std::string_view text, std::string_view eol) {
    if (_long_line) {  // the rest of a line that began as body
        body_line(text, eol);
        return;
    }
    if (boundary_line(text))
        return;
    if (_state == state::headers && header_line(text))
        return;
    body_line(text, eol);
}

// One line of a part's header section. False when it ended the section
// without being part of it (a line that is not a field, first): it is
// then body.
bool parser::header_line(std::string_view text) {
    part& p = _parts[_stack.back().index];
    auto commit = [&] {
        if (_field.empty())
            return;
        const size_t colon = _field.find(':');
        std::string name = lower_ascii(trim(std::string_view(_field).substr(0, colon)));
        std::string value(trim(std::string_view(_field).substr(colon + 1)));
        if (p.headers.size() < 1000)
            p.headers.emplace_back(std::move(name), std::move(value));
        _field.clear();
    };
    if (text.empty()) {
        commit();
        headers_done();
        return true;
    }
    _header_bytes += text.size() + 2;
    const bool over = _header_bytes > _l.max_header_bytes;
    if (over)
        add_defect(p, header_too_large);
    if (text.front() == ' ' || text.front() == '\t') {
        if (!_field.empty() && !over) {
            _field += ' ';
            _field.append(trim(text));
        }
        return true;
    }
    if (!is_field_line(text)) {
        add_defect(p, bad_header_line);
        if (p.headers.empty() && _field.empty()) {
            // No header section: the part's body begins here.
            headers_done();
            return false;
        }
        return true;  // skipped, as a header parser skips it
    }
    commit();
    if (!over)
        _field.assign(text);
    return true;
}

void parser::headers_done() {
    const unsigned index = _stack.back().index;
    part& p = _parts[index];
    p.body_offset = _pos;
    const mail::mime::field_value* disposition_v = nullptr;
    field_value ct, cd;
    for (const auto& [name, value] : p.headers) {
        if (name == "content-type") {
            ct = parse_field_value(value);
            if (ct.value.find('/') != std::string::npos && ct.value.front() != '/' && ct.value.back() != '/') {
                p.type = ct.value;
                p.type_params = ct.params;
            }
        } else if (name == "content-transfer-encoding") {
            p.encoding = parse_field_value(value).value;
        } else if (name == "content-disposition") {
            cd = parse_field_value(value);
            p.disposition = cd.value;
            disposition_v = &cd;
        }
    }
    if (const std::string* c = ct.param("charset"))
        p.charset = lower_ascii(*c);
    else if (p.type.starts_with("text/"))
        p.charset = "us-ascii";
    const std::string* fname = disposition_v ? disposition_v->param("filename") : nullptr;
    if (!fname || fname->empty())
        fname = ct.param("name");
    if (fname)
        p.filename = fname->find("=?") != std::string::npos ? decode_words(*fname) : *fname;
    std::string boundary;
    if (const std::string* b = ct.param("boundary"))
        boundary = *b;
    const bool container_encoding = p.encoding == "7bit" || p.encoding == "8bit" || p.encoding == "binary";
    if (p.multipart()) {
        if (boundary.empty()) {
            add_defect(p, missing_boundary);
        } else if (boundary.size() > k_max_boundary) {
            add_defect(p, boundary_too_long);
        } else if (p.depth >= _l.max_depth) {
            add_defect(p, too_deep);
        } else {
            p.leaf = false;
            _stack.back().boundary = std::move(boundary);
            _state = state::preamble;
            _h.part_begin(p);
            return;
        }
    } else if (p.message() && container_encoding) {
        if (p.depth >= _l.max_depth) {
            add_defect(p, too_deep);
        } else {
            p.leaf = false;
            _h.part_begin(p);
            open_part(int(index), _parts[index].depth + 1);
            return;
        }
    }
    // A leaf.
    _dec = std::make_unique<decoder>();
    if (p.encoding == "base64")
        _dec->k = decoder::kind::base64;
    else if (p.encoding == "quoted-printable")
        _dec->k = decoder::kind::qp;
    _eol.clear();
    _state = state::body;
    _h.part_begin(_parts[index]);
}

void parser::body_line(std::string_view text, std::string_view eol) {
    if (_state != state::body || !_dec)
        return;  // preamble, epilogue, a part not opened
    if (!_eol.empty()) {
        _dec->feed(_eol, _out);
        _eol.clear();
    }
    _dec->feed(text, _out);
    _eol.assign(eol);  // owed, unless a boundary comes next (RFC 2046 5.1.1)
    if (_out.size() >= k_flush_bytes)
        flush();
}

void parser::flush() {
    if (_out.empty() || _stack.empty())
        return;
    part& p = _parts[_stack.back().index];
    p.decoded_bytes += _out.size();
    _h.part_data(p, _out);
    _out.clear();
}

bool parser::boundary_line(std::string_view text) {
    if (text.size() < 3 || text[0] != '-' || text[1] != '-')
        return false;
    const std::string_view rest = text.substr(2);
    for (size_t m = _stack.size(); m-- > 0;) {
        const std::string& b = _stack[m].boundary;
        if (b.empty() || !rest.starts_with(b))
            continue;
        std::string_view tail = rest.substr(b.size());
        const bool close = tail.starts_with("--");
        if (close)
            tail.remove_prefix(2);
        if (!trim(tail).empty())
            continue;  // "--boundaryX": not this boundary
        _eol.clear();  // the line end before a delimiter is the delimiter's
        while (_stack.size() > m + 1) {
            frame& top = _stack.back();
            if (!top.boundary.empty() && !top.closed) {
                add_defect(_parts[top.index], nested_boundary_missing);
                top.closed = true;  // (said once: not unterminated too)
            }
            close_top();
        }
        if (close) {
            _stack.back().closed = true;
            _state = state::epilogue;
        } else {
            open_part(int(_stack.back().index), _parts[_stack.back().index].depth + 1);
        }
        return true;
    }
    return false;
}

void parser::close_top() {
    const frame f = _stack.back();
    part& p = _parts[f.index];
    if (_dec && p.leaf) {
        if (!_eol.empty()) {  // the message ended: its last line end is body
            _dec->feed(_eol, _out);
            _eol.clear();
        }
        _dec->finish(_out);
        if (_dec->bad())
            add_defect(p, _dec->k == decoder::kind::base64 ? bad_base64 : bad_quoted_printable);
        flush();
        _dec.reset();
    }
    if (_state == state::headers && f.index == _stack.back().index) {
        // Ended inside its header section: the part has no body.
        if (!_field.empty()) {
            const size_t colon = _field.find(':');
            p.headers.emplace_back(lower_ascii(trim(std::string_view(_field).substr(0, colon))),
                                   std::string(trim(std::string_view(_field).substr(colon + 1))));
            _field.clear();
        }
        p.body_offset = _line_start;
        _h.part_begin(p);
    }
    if (!f.boundary.empty() && !f.closed)
        add_defect(p, unterminated_multipart);
    p.end_offset = _finished ? _pos : _line_start;
    _h.part_end(p);
    _stack.pop_back();
    _state = state::epilogue;  // the enclosing part's own text until its next boundary
}

void parser::finish() {
    if (_finished)
        return;
    if (!_line.empty() || _long_line) {
        std::string_view text = _line;
        line(text, {});
        _line.clear();
        _long_line = false;
    }
    _finished = true;
    _line_start = _pos;
    while (!_stack.empty())
        close_top();
}

}  // namespace rw::mail::mime
