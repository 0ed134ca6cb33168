// MIME (RFC 2045, 2046, 2047, 2231): a streaming parser of a message's
// part tree, with each leaf part's body transfer-decoded (base64,
// quoted-printable) as it streams in, and the structured fields content
// policy reads: Content-Type with its parameters, Content-Disposition and
// the attachment's file name. Nothing is held whole: a line at a time
// (bounded), and the decoded bytes go to the handler in pieces.
//
// Bad input is bounded and recorded as a defect, never an exception:
// nesting past max_depth makes the part opaque (a leaf), parts past
// max_parts are not opened, part headers past max_header_bytes are cut,
// a multipart never closed is closed at the end, bad base64 or
// quoted-printable is decoded as far as it goes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rw::mail::mime {

// ---- structured field values ----

struct parameter {
    std::string name;   // lower case, without RFC 2231's "*" and section numbers
    std::string value;  // RFC 2231 sections joined and %-decoded, converted to UTF-8
};

// A Content-Type or Content-Disposition value: the first token (for
// Content-Type "type/subtype"), lower case, and the parameters in order.
struct field_value {
    std::string value;
    std::vector<parameter> params;
    const std::string* param(std::string_view name) const;  // null when absent
};
// Lenient, as receivers must be: comments are skipped, a parameter without
// a value or with a broken quoted string is kept as far as it goes.
field_value parse_field_value(std::string_view v);

// RFC 2047 encoded-words ("=?charset?B?...?=", "=?charset?Q?...?=") in v
// decoded to UTF-8; whitespace between adjacent encoded-words dropped
// (6.2). What is not an encoded-word stays as it is.
std::string decode_words(std::string_view v);

// bytes in charset (a MIME charset name) as UTF-8. Nothing when the
// charset is unknown; invalid sequences become U+FFFD.
std::optional<std::string> to_utf8(std::string_view charset, std::string_view bytes);

// The same, for a body that arrives in pieces: a multibyte sequence split
// between two pieces is carried over. An unknown charset is read as UTF-8
// (known() says so).
class utf8_stream {
public:
    explicit utf8_stream(std::string_view charset);
    ~utf8_stream();
    utf8_stream(const utf8_stream&) = delete;
    utf8_stream& operator=(const utf8_stream&) = delete;
    void feed(std::string_view in, std::string& out);
    // The body ended: a sequence left incomplete becomes U+FFFD.
    void finish(std::string& out);
    bool known() const noexcept { return _known; }

private:
    void convert(std::string_view in, std::string& out, bool last);
    void* _cd = nullptr;  // iconv_t; null: UTF-8 (checked, not converted)
    std::string _carry;   // an incomplete sequence from the last piece
    bool _known = true;
};

// ---- the part tree ----

enum defect : uint32_t {
    too_deep = 1u << 0,              // nesting past max_depth: the part was not opened
    too_many_parts = 1u << 1,        // parts past max_parts were not opened
    header_too_large = 1u << 2,      // a part's header section past max_header_bytes: the rest dropped
    unterminated_multipart = 1u << 3,  // a multipart without its close delimiter
    missing_boundary = 1u << 4,      // multipart/* without a usable boundary parameter: read as a leaf
    bad_base64 = 1u << 5,
    bad_quoted_printable = 1u << 6,
    nested_boundary_missing = 1u << 7,  // an outer boundary closed an inner multipart
    bad_header_line = 1u << 8,       // a line in a part's header that is not a field
    boundary_too_long = 1u << 9,     // over 200 characters: read as a leaf
};
// "too_deep, bad_base64" for a set of defects.
std::string describe(uint32_t defects);

struct part {
    unsigned index = 0;   // in the order parts begin; 0 is the message itself
    int parent = -1;      // the index of the enclosing part
    unsigned depth = 0;   // 0 for the message
    std::string type = "text/plain";  // lower case; RFC 2045 5.2's default (message/rfc822 in a digest)
    std::vector<parameter> type_params;
    std::string charset;          // the charset parameter, lower case ("us-ascii" for text by default)
    std::string encoding = "7bit";  // Content-Transfer-Encoding, lower case
    std::string disposition;      // "inline", "attachment", or "" when absent
    std::string filename;         // the disposition's filename, else the type's name, decoded to UTF-8
    std::vector<std::pair<std::string, std::string>> headers;  // (name, unfolded value) of the part's header
    uint64_t header_offset = 0, body_offset = 0, end_offset = 0;  // in the bytes fed
    uint64_t decoded_bytes = 0;   // leaves: the body after transfer decoding
    uint32_t defects = 0;         // of this part
    bool multipart() const { return type.starts_with("multipart/"); }
    bool message() const { return type == "message/rfc822" || type == "message/global"; }
    bool leaf = true;             // its body went to part_data (false: multipart or message container)
};

struct limits {
    unsigned max_depth = 20;
    unsigned max_parts = 1000;
    size_t max_header_bytes = 64 * 1024;  // per part
};

class handler {
public:
    virtual ~handler() = default;
    // The part's header has been read: type, encoding, name are known.
    virtual void part_begin(const part&) {}
    // A leaf's body, transfer-decoded, in pieces (each non-empty).
    virtual void part_data(const part&, std::string_view) {}
    // After its last byte (a container: after its last child's end).
    virtual void part_end(const part&) {}
};

class parser {
public:
    explicit parser(handler& h, limits l = {});
    ~parser();
    parser(const parser&) = delete;
    parser& operator=(const parser&) = delete;
    // The message as stored (CRLF or LF line ends), in chunks split anywhere.
    void feed(std::string_view bytes);
    // The message ended: the last line, then every open part, is closed.
    void finish();

    // Every part begun so far, by index (their fields are final once ended).
    const std::vector<part>& parts() const { return _parts; }
    uint32_t defects() const { return _defects; }

private:
    enum class state { headers, body, preamble, epilogue, skip };
    struct frame {
        unsigned index;
        std::string boundary;  // multipart: the delimiter's text after "--"
        bool closed = false;   // multipart: its close delimiter was seen
    };
    struct decoder;

    void line(std::string_view text, std::string_view eol);
    bool header_line(std::string_view text);
    void headers_done();
    void body_line(std::string_view text, std::string_view eol);
    bool boundary_line(std::string_view text);
    void open_part(int parent, unsigned depth);
    void close_top();
    void emit(std::string_view decoded);
    void flush();
    void add_defect(part& p, uint32_t d);

    handler& _h;
    limits _l;
    std::vector<part> _parts;
    std::vector<frame> _stack;
    state _state = state::headers;
    std::string _line;         // the line being read (bounded)
    bool _long_line = false;   // the current body line outgrew the buffer and is streaming through
    uint64_t _pos = 0;         // bytes fed
    uint64_t _line_start = 0;  // offset of _line's first byte
    std::string _field;        // the header field being read (unfolded lines joined)
    size_t _header_bytes = 0;
    std::string _eol;          // the line end owed to the body, unless a boundary follows
    std::string _out;          // decoded bytes not yet handed over
    std::unique_ptr<decoder> _dec;  // the current leaf's transfer decoding
    uint32_t _defects = 0;
    bool _finished = false;
};

}  // namespace rw::mail::mime
