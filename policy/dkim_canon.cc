// DKIM canonicalization (RFC 6376 3.4) of header fields and the streaming
// body hash (dkim.hh).
#include <openssl/evp.h>

#include "policy/dkim.hh"
#include "runtime/base/assert.hh"

namespace rw::policy::dkim {

namespace {
constexpr bool is_wsp(char c) { return c == ' ' || c == '\t'; }
constexpr char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c + 32) : c; }
}  // namespace

std::string canon_header(std::string_view raw, size_t name_len, canon c) {
    if (c == canon::simple) {
        std::string o(raw);
        if (o.size() < 2 || o.compare(o.size() - 2, 2, "\r\n") != 0) {
            while (!o.empty() && (o.back() == '\r' || o.back() == '\n'))
                o.pop_back();
            o += "\r\n";
        }
        return o;
    }
    // relaxed: the name in lower case without white space before the
    // colon; the value unfolded, runs of WSP as one space, none at either
    // end.
    std::string o;
    o.reserve(raw.size());
    std::string_view name = raw.substr(0, name_len);
    while (!name.empty() && is_wsp(name.back()))
        name.remove_suffix(1);
    for (char ch : name)
        o += lower(ch);
    o += ':';
    size_t i = name_len;
    while (i < raw.size() && raw[i] != ':')
        ++i;
    ++i;  // past the colon
    bool wsp = false, any = false;
    for (; i < raw.size(); ++i) {
        const char ch = raw[i];
        if (ch == '\r' || ch == '\n')
            continue;
        if (is_wsp(ch)) {
            wsp = true;
            continue;
        }
        if (wsp && any)
            o += ' ';
        wsp = false;
        any = true;
        o += ch;
    }
    o += "\r\n";
    return o;
}

struct body_hasher::ctx {
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    std::string buf;
    ~ctx() { EVP_MD_CTX_free(md); }
};

body_hasher::body_hasher(canon c, bool sha1, std::optional<uint64_t> limit)
    : _c(c), _sha1(sha1), _limit(limit), _ctx(std::make_unique<ctx>()) {
    RW_ASSERT(_ctx->md && EVP_DigestInit_ex(_ctx->md, sha1 ? EVP_sha1() : EVP_sha256(), nullptr) == 1,
              "cannot start a digest");
    _ctx->buf.reserve(8192);
}

body_hasher::~body_hasher() = default;

void body_hasher::out(std::string_view s) {
    _total += s.size();
    size_t take = s.size();
    if (_limit)
        take = size_t(std::min<uint64_t>(take, *_limit > _hashed ? *_limit - _hashed : 0));
    _hashed += take;
    // Small pieces gather in a buffer; large ones go to the digest as they are.
    if (_ctx->buf.size() + take > 8192) {
        EVP_DigestUpdate(_ctx->md, _ctx->buf.data(), _ctx->buf.size());
        _ctx->buf.clear();
    }
    if (take >= 4096)
        EVP_DigestUpdate(_ctx->md, s.data(), take);
    else
        _ctx->buf.append(s.substr(0, take));
}

void body_hasher::out_crlfs() {
    for (; _empty_lines > 0; --_empty_lines)
        out("\r\n");
}

void body_hasher::put(std::string_view run) {
    if (!_content) {
        out_crlfs();
        _content = true;
    }
    if (_c == canon::relaxed && _wsp) {
        out(" ");
        _wsp = false;
    }
    out(run);
}

void body_hasher::line_end() {
    _wsp = false;  // relaxed: white space at the end of a line goes
    if (_content) {
        out("\r\n");
        _content = false;
    } else {
        ++_empty_lines;  // held back: trailing empty lines go
    }
}

void body_hasher::feed(std::string_view bytes) {
    const bool relaxed = _c == canon::relaxed;
    // Runs of content go out whole; only CR, LF and (relaxed) white space
    // that canonicalization changes take the byte-by-byte path. A single
    // space between two content bytes stays as it is in relaxed too.
    auto run_end = [&](size_t i) {
        size_t e = i;
        const size_t n = bytes.size();
        while (e < n) {
            const char c = bytes[e];
            if (c == '\r' || c == '\n')
                break;
            if (relaxed && (c == ' ' || c == '\t')) {
                if (c == ' ' && e > i && e + 1 < n) {
                    const char d = bytes[e + 1];
                    if (d != ' ' && d != '\t' && d != '\r' && d != '\n') {
                        e += 2;
                        continue;
                    }
                }
                break;
            }
            ++e;
        }
        return e;
    };
    size_t i = 0;
    while (i < bytes.size()) {
        const char ch = bytes[i];
        if (_cr) {
            _cr = false;
            if (ch == '\n') {
                line_end();
                ++i;
                continue;
            }
            put("\r");  // a lone CR is content
        }
        if (ch == '\r') {
            _cr = true;
            ++i;
        } else if (ch == '\n') {
            line_end();
            ++i;
        } else if (relaxed && is_wsp(ch)) {
            _wsp = true;
            ++i;
        } else {
            const size_t end = run_end(i);
            put(bytes.substr(i, end - i));
            i = end;
        }
    }
}

std::string body_hasher::finish() {
    if (_cr) {
        _cr = false;
        put("\r");
    }
    if (_content) {
        out("\r\n");  // a last line without CRLF gets one
        _content = false;
    }
    if (_c == canon::simple && _total == 0)
        out("\r\n");  // simple: an empty body is one CRLF
    if (!_ctx->buf.empty())
        EVP_DigestUpdate(_ctx->md, _ctx->buf.data(), _ctx->buf.size());
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(_ctx->md, d, &n);
    return std::string(reinterpret_cast<const char*>(d), n);
}

}  // namespace rw::policy::dkim
