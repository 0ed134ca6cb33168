#include "policy/rate_limit.hh"

#include <algorithm>
#include <cstring>
#include <random>

#include "runtime/base/assert.hh"

namespace rw::policy {

namespace {

// splitmix64's finalizer: every input bit affects every output bit.
uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t random_u64() {
    std::random_device rd;  // getrandom(2); once per limiter, not on the data path
    return (uint64_t(rd()) << 32) ^ uint64_t(rd());
}

}  // namespace

size_t rate_limiter::key_hash::operator()(const canonical_ip& ip) const noexcept {
    uint64_t a, b;
    std::memcpy(&a, ip.bytes.data(), 8);
    std::memcpy(&b, ip.bytes.data() + 8, 8);
    uint64_t h = mix(a ^ k0);
    h = mix(h ^ b ^ k1);
    return size_t(mix(h ^ ip.family));
}

rate_limiter::rate_limiter(double per_second, double burst, size_t max_entries, unsigned ipv6_prefix_len)
    : _per_second(per_second),
      _burst(burst),
      _max_entries(max_entries),
      _ipv6_prefix_len(ipv6_prefix_len),
      _index(0, key_hash{random_u64(), random_u64()}) {
    RW_ASSERT(per_second >= 0, "rate_limiter: per_second {} < 0", per_second);
    RW_ASSERT(burst > 0, "rate_limiter: burst {} <= 0", burst);
    RW_ASSERT(max_entries > 0, "rate_limiter: max_entries is 0");
    RW_ASSERT(ipv6_prefix_len >= 1, "rate_limiter: ipv6_prefix_len is 0");
    RW_ASSERT(ipv6_prefix_len <= 128, "rate_limiter: ipv6_prefix_len {} > 128", ipv6_prefix_len);
    _index.reserve(max_entries);
}

canonical_ip rate_limiter::key_of(const rw::net::address& who) const noexcept {
    canonical_ip k = canonicalize(who);
    if (k.family == 6) {
        for (unsigned i = 0; i < 16; ++i) {
            unsigned keep = _ipv6_prefix_len > i * 8 ? std::min(8u, _ipv6_prefix_len - i * 8) : 0;
            k.bytes[i] &= static_cast<uint8_t>(keep == 0 ? 0 : 0xFF << (8 - keep));
        }
    }
    return k;
}

bool rate_limiter::allow(const rw::net::address& who, clock::time_point now, double cost) noexcept {
    RW_ASSERT(cost >= 0, "rate_limiter: cost {} < 0", cost);
    canonical_ip key = key_of(who);
    lru_list::iterator it;
    if (auto found = _index.find(key); found != _index.end()) {
        it = found->second;
        _lru.splice(_lru.begin(), _lru, it);  // now the most recently seen
        if (now > it->last) {
            double elapsed_s = std::chrono::duration<double>(now - it->last).count();
            it->tokens = std::min(_burst, it->tokens + elapsed_s * _per_second);
            it->last = now;
        }
    } else if (_index.size() < _max_entries) {
        _lru.push_front(entry{key, _burst, now});
        it = _lru.begin();
        _index.emplace(key, it);
    } else {
        // At the cap: reuse the least recently seen client's list node and
        // map node for the newcomer, so a flood of new addresses does not
        // allocate.
        it = std::prev(_lru.end());
        auto node = _index.extract(it->key);
        RW_ASSERT(!node.empty(), "rate_limiter: LRU entry missing from the index");
        *it = entry{key, _burst, now};
        _lru.splice(_lru.begin(), _lru, it);
        node.key() = key;
        node.mapped() = it;
        _index.insert(std::move(node));
    }
    RW_DASSERT(_index.size() == _lru.size(), "rate_limiter: index {} != lru {}", _index.size(), _lru.size());
    if (it->tokens < cost)
        return false;
    it->tokens -= cost;
    return true;
}

}  // namespace rw::policy
