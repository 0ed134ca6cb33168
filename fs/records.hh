// Encoding and decoding of spool record bodies. Decoders take untrusted
// bytes (a device image may hold anything) and check every length.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fs/format.hh"
#include "fs/spool.hh"

namespace rw::fs::rec {

class writer {
public:
    explicit writer(std::string& out) : _o(out) {}
    void u8(uint8_t v) { _o.push_back(char(v)); }
    void u16(uint16_t v) { raw(&v, 2); }
    void u32(uint32_t v) { raw(&v, 4); }
    void u64(uint64_t v) { raw(&v, 8); }
    void i64(int64_t v) { raw(&v, 8); }
    void str(std::string_view s) {
        u32(uint32_t(s.size()));
        _o.append(s);
    }
    void raw(const void* p, size_t n) { _o.append(static_cast<const char*>(p), n); }

private:
    std::string& _o;
};

class reader {
public:
    reader(const char* p, size_t n) : _p(p), _n(n) {}
    bool u8(uint8_t& v) { return raw(&v, 1); }
    bool u16(uint16_t& v) { return raw(&v, 2); }
    bool u32(uint32_t& v) { return raw(&v, 4); }
    bool u64(uint64_t& v) { return raw(&v, 8); }
    bool i64(int64_t& v) { return raw(&v, 8); }
    bool str(std::string& s, size_t max = 1 << 20) {
        uint32_t n;
        if (!u32(n) || n > max || n > _n)
            return false;
        s.assign(_p, n);
        _p += n;
        _n -= n;
        return true;
    }
    bool raw(void* d, size_t n) {
        if (n > _n)
            return false;
        std::memcpy(d, _p, n);
        _p += n;
        _n -= n;
        return true;
    }
    size_t left() const { return _n; }
    const char* pos() const { return _p; }

private:
    const char* _p;
    size_t _n;
};

constexpr size_t k_max_rcpts = 100000;

inline void encode_state(writer& w, const rcpt_state& s) {
    w.u8(uint8_t(uint8_t(s.status) | uint8_t(s.flags << 2)));
    w.u32(s.attempts);
    w.i64(s.next_attempt_unix);
    w.u32(s.version);
    w.str(s.last_reply);
}

inline bool decode_state(reader& r, rcpt_state& s) {
    uint8_t st;
    if (!r.u8(st))
        return false;
    s.status = rcpt_status(st & 3);
    s.flags = uint8_t(st >> 2);
    return r.u32(s.attempts) && r.i64(s.next_attempt_unix) && r.u32(s.version) && r.str(s.last_reply, 4096);
}

// msg_begin body; states only in a relocated copy.
inline std::string encode_begin(const envelope& e, const std::vector<rcpt_state>* states) {
    std::string o;
    writer w(o);
    w.i64(e.received_unix);
    w.u32(uint32_t(e.rcpts.size()));
    w.str(e.mail_from);
    w.str(e.params);
    for (const auto& r : e.rcpts)
        w.str(r);
    if (states)
        for (const auto& s : *states)
            encode_state(w, s);
    return o;
}

inline bool decode_begin(const char* p, size_t n, bool relocated, envelope& e, std::vector<rcpt_state>& states) {
    reader r(p, n);
    uint32_t nr;
    if (!r.i64(e.received_unix) || !r.u32(nr) || nr > k_max_rcpts || !r.str(e.mail_from, 4096) ||
        !r.str(e.params, 65536))
        return false;
    e.rcpts.resize(nr);
    for (auto& a : e.rcpts)
        if (!r.str(a, 4096))
            return false;
    states.assign(nr, rcpt_state{});
    if (relocated)
        for (auto& s : states)
            if (!decode_state(r, s))
                return false;
    return r.left() == 0;
}

inline std::string encode_rcpt_state(uint32_t idx, const rcpt_state& s) {
    std::string o;
    writer w(o);
    w.u32(idx);
    encode_state(w, s);
    return o;
}

inline bool decode_rcpt_state(const char* p, size_t n, uint32_t& idx, rcpt_state& s) {
    reader r(p, n);
    return r.u32(idx) && decode_state(r, s) && r.left() == 0;
}

// msg_commit body: the body's length and CRC; from version 2, also the
// length and CRC32C of the message's msg_headers body (0 and 0: none), so a
// header record lost to damage is found like a lost chunk.
struct commit_info {
    uint64_t body_len = 0;
    uint32_t body_crc = 0;
    uint32_t added_len = 0;
    uint32_t added_crc = 0;
};

inline std::string encode_commit(const commit_info& c) {
    std::string o;
    writer w(o);
    w.u64(c.body_len);
    w.u32(c.body_crc);
    w.u32(c.added_len);
    w.u32(c.added_crc);
    return o;
}

inline bool decode_commit(const char* p, size_t n, commit_info& c) {
    reader r(p, n);
    c = commit_info{};
    if (!r.u64(c.body_len) || !r.u32(c.body_crc))
        return false;
    if (r.left() == 0)
        return true;  // version 1
    return r.u32(c.added_len) && r.u32(c.added_crc) && r.left() == 0;
}

// msg_headers body: the header block prepended at delivery, then the body
// ranges left out at delivery, in order and apart.
constexpr size_t k_max_added_headers = 256 << 10;
constexpr size_t k_max_omitted = 1000;

inline std::string encode_headers(const added_headers& a) {
    std::string o;
    writer w(o);
    w.str(a.prefix);
    w.u32(uint32_t(a.omit.size()));
    for (const auto& r : a.omit) {
        w.u64(r.offset);
        w.u32(r.length);
    }
    return o;
}

inline bool decode_headers(const char* p, size_t n, added_headers& a) {
    reader r(p, n);
    uint32_t no;
    if (!r.str(a.prefix, k_max_added_headers) || !r.u32(no) || no > k_max_omitted)
        return false;
    a.omit.resize(no);
    uint64_t end = 0;
    for (auto& o : a.omit) {
        if (!r.u64(o.offset) || !r.u32(o.length) || o.length == 0 || o.offset < end)
            return false;
        end = o.offset + o.length;
    }
    return r.left() == 0;
}

}  // namespace rw::fs::rec
