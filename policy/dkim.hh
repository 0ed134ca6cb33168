// DKIM verification (RFC 6376, RFC 8463 Ed25519, RFC 8301 crypto updates)
// in two halves:
//
// - While the message streams in: verification::header_section() parses
//   the DKIM-Signature fields once the header section is complete and
//   starts one body hash per distinct (canonicalization, hash, l=); body()
//   feeds them; end() finishes them. No second pass over the body.
// - After it: evaluate() is a DNS stage (policy/dns_facts.hh): it asks for
//   each signature's key record (selector._domainkey.domain TXT) and, with
//   the answers, checks the body hash and the signature over the signed
//   header fields.
//
//   rsa-sha256 and ed25519-sha256; rsa-sha1 and RSA keys under 1024 bits
//   fail (RFC 8301); simple and relaxed canonicalization; several
//   signatures per message (the first k_max_signatures); a signature with
//   l= is checked but gives "policy" unless options.trust_length_limit.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mail/header.hh"
#include "policy/dns_facts.hh"

namespace rw::policy::dkim {

enum class algorithm { rsa_sha256, ed25519_sha256, rsa_sha1 };
enum class canon { simple, relaxed };
std::string_view to_string(algorithm a) noexcept;

// RFC 8601 2.7.1 result values.
enum class result { none, pass, fail, policy, neutral, temperror, permerror };
std::string_view to_string(result r) noexcept;

// A tag=value list (RFC 6376 3.2): names and values with the folding
// white space around them removed; offsets of each value in the input.
struct tag {
    std::string_view name, value;
    size_t value_begin = 0, value_end = 0;
};
// Nothing on a syntax error or a repeated tag.
std::optional<std::vector<tag>> parse_tags(std::string_view text);

struct signature {
    algorithm a = algorithm::rsa_sha256;
    canon header_canon = canon::simple, body_canon = canon::simple;
    std::string d, s, i;                // domain, selector, identity (default "@d")
    std::vector<std::string> h;         // signed header field names, as listed
    std::string b, bh;                  // decoded signature and body hash
    std::string b_text;                 // b= as written, without white space (header.b)
    std::optional<uint64_t> l;          // body length limit
    int64_t t = -1, x = -1;             // signed at, expires at (-1: absent)
};
// The value of a DKIM-Signature field (after the colon). Nothing, with why
// in `why`, when it is not a usable signature (a permerror).
std::optional<signature> parse_signature(std::string_view value, std::string& why);

struct key {
    bool ed25519 = false;    // else RSA
    std::string p;           // decoded: SubjectPublicKeyInfo (RSA) or 32 raw octets (Ed25519)
    bool testing = false;    // t=y
    bool strict = false;     // t=s: i= must be d= itself
    bool sha256 = true;      // h= allows sha256 (or no h=)
    bool sha1 = true;
};
// A key record's text. Nothing, with why, when it is unusable; an empty
// p= (revoked) is one of those.
std::optional<key> parse_key(std::string_view txt, std::string& why);

// Checks sig over data with the key (RFC 6376 3.7 for RSA; RFC 8463 3 for
// Ed25519: over data's SHA-256): pass, or fail or permerror with why. For
// ARC as well as DKIM.
result verify_data(const key& k, std::string_view data, std::string_view sig, std::string& why);

// Canonicalized header field, CRLF-terminated (RFC 6376 3.4.1, 3.4.2).
std::string canon_header(std::string_view raw_field, size_t name_len, canon c);

// The body hash of one canonicalization, fed the body in pieces.
class body_hasher {
public:
    body_hasher(canon c, bool sha1, std::optional<uint64_t> limit);
    ~body_hasher();
    body_hasher(const body_hasher&) = delete;
    body_hasher& operator=(const body_hasher&) = delete;
    void feed(std::string_view bytes);
    // The digest; feed() no more after it.
    std::string finish();
    uint64_t canonical_bytes() const noexcept { return _total; }  // the whole canonical body, past l=
    bool matches(canon c, bool sha1, std::optional<uint64_t> limit) const noexcept {
        return c == _c && sha1 == _sha1 && limit == _limit;
    }

private:
    void out(std::string_view s);
    void out_crlfs();
    void put(std::string_view run);  // content bytes (no CR, LF or, relaxed, white space)
    void line_end();
    canon _c;
    bool _sha1;
    std::optional<uint64_t> _limit;
    uint64_t _total = 0, _hashed = 0;
    // Held back until a later byte shows they are not trailing.
    uint64_t _empty_lines = 0;
    bool _wsp = false;      // relaxed: white space seen in this line
    bool _cr = false;       // a CR waiting for its LF
    bool _content = false;  // this line has content
    struct ctx;
    std::unique_ptr<ctx> _ctx;
};

struct verdict {
    result res = result::none;
    std::string domain, selector, identity;
    std::string b_prefix;  // header.b: the first 8 characters of b=
    algorithm a = algorithm::rsa_sha256;
    bool testing = false;
    std::string reason;
};

struct options {
    bool trust_length_limit = false;  // l= signatures may pass
    unsigned max_signatures = 5;      // the ones after these are not checked
    int64_t now = 0;                  // for x=
};

// One message's signatures: fed while it streams in, then evaluated.
class verification {
public:
    static constexpr unsigned k_max_signatures = 8;

    explicit verification(options o = {}) : _o(o) {}
    ~verification();
    // The complete header section.
    void header_section(const std::vector<mail::header_field>& fields);
    void body(std::string_view bytes);
    void end();
    bool has_signatures() const noexcept { return !_sigs.empty(); }
    // What the signatures give with the key records in `answers`, or the
    // queries still needed.
    step<std::vector<verdict>> evaluate(const dns_answers& answers) const;

private:
    struct one {
        std::optional<signature> sig;
        std::string error;       // parse failure
        size_t field = 0;        // index of its DKIM-Signature field
        int hasher = -1;         // index in _hashers
        std::string signed_data; // canonical header data to verify
    };
    options _o;
    std::vector<one> _sigs;
    std::vector<std::unique_ptr<body_hasher>> _hashers;
    std::vector<std::string> _digests;  // per hasher, after end()
    std::vector<uint64_t> _lengths;     // canonical body length per hasher
    bool _ended = false;
};

// The query that finds a signature's key.
dns_query key_query(const signature& s);

}  // namespace rw::policy::dkim
