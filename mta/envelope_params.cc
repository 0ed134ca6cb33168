// Envelope parameters: encoding, decoding, text form (envelope_params.hh).
#include "mta/envelope_params.hh"

#include "mail/codec.hh"
#include "mail/domain.hh"

#include <fmt/format.h>

#include <cstring>

namespace rw::mta {

namespace {
constexpr uint8_t k_version = 1;
constexpr uint8_t k_version_next_hop = 2;
constexpr uint8_t k_version_pool = 3;

void put_u16(std::string& o, uint16_t v) {
    o += char(v & 0xFF);
    o += char(v >> 8);
}
void put_u32(std::string& o, uint32_t v) {
    for (int i = 0; i < 4; ++i)
        o += char((v >> (8 * i)) & 0xFF);
}

struct reader {
    std::string_view s;
    size_t pos = 0;
    bool ok = true;
    uint8_t u8() {
        if (pos + 1 > s.size()) {
            ok = false;
            return 0;
        }
        return uint8_t(s[pos++]);
    }
    uint16_t u16() {
        uint16_t lo = u8(), hi = u8();
        return uint16_t(lo | hi << 8);
    }
    uint32_t u32() {
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i)
            v |= uint32_t(u8()) << (8 * i);
        return v;
    }
    std::string bytes(size_t n) {
        if (!ok || n > s.size() - pos) {
            ok = false;
            return {};
        }
        std::string out(s.substr(pos, n));
        pos += n;
        return out;
    }
};

bool valid_notify(uint8_t n) {
    if (n > (k_notify_never | k_notify_success | k_notify_failure | k_notify_delay))
        return false;
    return !(n & k_notify_never) || n == k_notify_never;
}

// Each space-separated word of a line, split at its first '='.
template <typename F>
void for_each_word(std::string_view line, F f) {
    size_t pos = 0;
    while (pos < line.size()) {
        size_t sp = line.find(' ', pos);
        std::string_view w = line.substr(pos, sp == std::string_view::npos ? std::string_view::npos : sp - pos);
        pos = sp == std::string_view::npos ? line.size() : sp + 1;
        if (w.empty())
            continue;
        size_t eq = w.find('=');
        f(w.substr(0, eq), eq == std::string_view::npos ? std::string_view() : w.substr(eq + 1));
    }
}

uint8_t notify_bits(std::string_view v) {
    uint8_t bits = 0;
    size_t pos = 0;
    while (pos <= v.size()) {
        size_t c = v.find(',', pos);
        std::string_view w = v.substr(pos, c == std::string_view::npos ? std::string_view::npos : c - pos);
        if (mail::iequals(w, "NEVER"))
            bits |= k_notify_never;
        else if (mail::iequals(w, "SUCCESS"))
            bits |= k_notify_success;
        else if (mail::iequals(w, "FAILURE"))
            bits |= k_notify_failure;
        else if (mail::iequals(w, "DELAY"))
            bits |= k_notify_delay;
        if (c == std::string_view::npos)
            break;
        pos = c + 1;
    }
    return valid_notify(bits) ? bits : 0;  // unreadable: the default, so no report is suppressed
}

std::string decode_orcpt(std::string_view v) {
    size_t semi = v.find(';');
    if (semi == std::string_view::npos)
        return mail::xtext_decode_lenient(v);
    return std::string(v.substr(0, semi + 1)) + mail::xtext_decode_lenient(v.substr(semi + 1));
}

// The text form older spools hold; keywords match whole words only.
envelope_params decode_text(std::string_view s, size_t rcpts) {
    envelope_params p;
    p.rcpts.resize(rcpts);
    size_t nl = s.find('\n');
    for_each_word(s.substr(0, nl), [&](std::string_view k, std::string_view v) {
        if (mail::iequals(k, "BODY"))
            p.body = mail::iequals(v, "8BITMIME")     ? body_type::eight_bit_mime
                     : mail::iequals(v, "BINARYMIME") ? body_type::binary_mime
                     : mail::iequals(v, "7BIT")       ? body_type::seven_bit
                                            : body_type::unspecified;
        else if (mail::iequals(k, "SMTPUTF8"))
            p.smtputf8 = true;
        else if (mail::iequals(k, "RET"))
            p.ret = mail::iequals(v, "FULL") ? dsn_ret::full : mail::iequals(v, "HDRS") ? dsn_ret::hdrs : dsn_ret::unspecified;
        else if (mail::iequals(k, "ENVID"))
            p.envid = mail::xtext_decode_lenient(v);
    });
    for (size_t i = 0; nl != std::string_view::npos && i < rcpts; ++i) {
        size_t next = s.find('\n', nl + 1);
        std::string_view line =
            s.substr(nl + 1, next == std::string_view::npos ? std::string_view::npos : next - nl - 1);
        for_each_word(line, [&](std::string_view k, std::string_view v) {
            if (mail::iequals(k, "NOTIFY"))
                p.rcpts[i].notify = notify_bits(v);
            else if (mail::iequals(k, "ORCPT"))
                p.rcpts[i].orcpt = decode_orcpt(v);
        });
        nl = next;
    }
    return p;
}
}  // namespace

std::string encode_params(const envelope_params& p) {
    std::string o;
    o += char(!p.pool.empty() ? k_version_pool : p.next_hop.empty() ? k_version : k_version_next_hop);
    o += char(uint8_t(p.body) | (p.smtputf8 ? 4 : 0) | uint8_t(p.ret) << 3 | (p.requiretls ? 0x20 : 0));
    const size_t envid = std::min(p.envid.size(), k_max_envid_bytes);
    o += char(envid);
    o.append(p.envid, 0, envid);
    put_u32(o, uint32_t(p.rcpts.size()));
    for (const auto& r : p.rcpts) {
        o += char(r.notify);
        const size_t n = std::min(r.orcpt.size(), k_max_orcpt_bytes);
        put_u16(o, uint16_t(n));
        o.append(r.orcpt, 0, n);
    }
    if (!p.next_hop.empty() || !p.pool.empty()) {
        const size_t n = std::min(p.next_hop.size(), k_max_next_hop_bytes);
        o += char(n);
        o.append(p.next_hop, 0, n);
    }
    if (!p.pool.empty()) {
        const size_t n = std::min(p.pool.size(), k_max_pool_bytes);
        o += char(n);
        o.append(p.pool, 0, n);
    }
    return o;
}

std::optional<envelope_params> decode_params(std::string_view bytes, size_t rcpts) {
    if (bytes.empty() || (uint8_t(bytes[0]) != k_version && uint8_t(bytes[0]) != k_version_next_hop &&
                          uint8_t(bytes[0]) != k_version_pool)) {
        if (!bytes.empty() && uint8_t(bytes[0]) < 0x20 && bytes[0] != '\n')
            return std::nullopt;  // a version we do not know
        return decode_text(bytes, rcpts);
    }
    reader r{bytes, 1};
    envelope_params p;
    const uint8_t flags = r.u8();
    const uint8_t body = flags & 3, ret = (flags >> 3) & 3;
    if ((flags & ~uint8_t(0x3F)) || ret > uint8_t(dsn_ret::hdrs))
        return std::nullopt;
    p.body = body_type(body);
    p.smtputf8 = flags & 4;
    p.requiretls = flags & 0x20;
    p.ret = dsn_ret(ret);
    const uint8_t envid = r.u8();
    if (envid > k_max_envid_bytes)
        return std::nullopt;
    p.envid = r.bytes(envid);
    const uint32_t n = r.u32();
    if (!r.ok || n > rcpts)
        return std::nullopt;
    p.rcpts.resize(rcpts);
    for (uint32_t i = 0; i < n; ++i) {
        auto& rp = p.rcpts[i];
        rp.notify = r.u8();
        const uint16_t len = r.u16();
        if (!r.ok || !valid_notify(rp.notify) || len > k_max_orcpt_bytes)
            return std::nullopt;
        rp.orcpt = r.bytes(len);
    }
    if (uint8_t(bytes[0]) == k_version_next_hop) {
        const uint8_t len = r.u8();
        p.next_hop = r.bytes(len);
        if (!r.ok || p.next_hop.empty())
            return std::nullopt;
    }
    if (uint8_t(bytes[0]) == k_version_pool) {
        const uint8_t hop = r.u8();
        p.next_hop = r.bytes(hop);
        const uint8_t len = r.u8();
        p.pool = r.bytes(len);
        if (!r.ok || p.pool.empty() || len > k_max_pool_bytes)
            return std::nullopt;
    }
    if (!r.ok || r.pos != bytes.size())
        return std::nullopt;
    return p;
}

std::string describe_params(const envelope_params& p) {
    std::string o;
    auto word = [&](std::string_view w) {
        if (!o.empty() && o.back() != '\n')
            o += ' ';
        o += w;
    };
    if (p.body != body_type::unspecified)
        word(p.body == body_type::seven_bit        ? "BODY=7BIT"
             : p.body == body_type::eight_bit_mime ? "BODY=8BITMIME"
                                                   : "BODY=BINARYMIME");
    if (p.smtputf8)
        word("SMTPUTF8");
    if (p.requiretls)
        word("REQUIRETLS");
    if (p.ret != dsn_ret::unspecified)
        word(p.ret == dsn_ret::full ? "RET=FULL" : "RET=HDRS");
    if (!p.envid.empty())
        word("ENVID=" + mail::xtext_encode(p.envid));
    if (!p.next_hop.empty())
        word("NEXT-HOP=" + p.next_hop);
    if (!p.pool.empty())
        word("POOL=" + p.pool);
    for (const auto& r : p.rcpts) {
        o += '\n';
        if (r.notify) {
            std::string n;
            for (auto [bit, name] : {std::pair{k_notify_never, "NEVER"}, std::pair{k_notify_success, "SUCCESS"},
                                     std::pair{k_notify_failure, "FAILURE"}, std::pair{k_notify_delay, "DELAY"}})
                if (r.notify & bit)
                    n += (n.empty() ? "" : ",") + std::string(name);
            word("NOTIFY=" + n);
        }
        if (!r.orcpt.empty()) {
            size_t semi = r.orcpt.find(';');
            word(semi == std::string::npos ? "ORCPT=" + mail::xtext_encode(r.orcpt)
                                           : "ORCPT=" + r.orcpt.substr(0, semi + 1) +
                                                 mail::xtext_encode(std::string_view(r.orcpt).substr(semi + 1)));
        }
    }
    return o;
}

bool notify_wants(uint8_t notify, uint8_t kind) {
    if (notify == 0)
        return kind == k_notify_failure || kind == k_notify_delay;
    return (notify & kind) != 0;
}

}  // namespace rw::mta
