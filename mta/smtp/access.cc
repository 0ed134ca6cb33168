#include "mta/smtp/access.hh"

#include "policy/cidr.hh"

namespace rw::mta {

namespace {
std::string key_of(const net::address& a) {
    auto c = policy::canonicalize(a);
    return std::string(reinterpret_cast<const char*>(c.bytes.data()), c.family == 6 ? 16 : 4);
}
}  // namespace

bool pass_cache::passed(const net::address& peer, clock::time_point now) {
    std::lock_guard g(_lock);
    auto it = _index.find(key_of(peer));
    if (it == _index.end())
        return false;
    if (it->second->until <= now) {
        _lru.erase(it->second);
        _index.erase(it);
        return false;
    }
    _lru.splice(_lru.begin(), _lru, it->second);
    return true;
}

void pass_cache::add(const net::address& peer, clock::time_point until) {
    std::lock_guard g(_lock);
    std::string k = key_of(peer);
    if (auto it = _index.find(k); it != _index.end()) {
        it->second->until = until;
        _lru.splice(_lru.begin(), _lru, it->second);
        return;
    }
    _lru.push_front({k, until});
    _index.emplace(std::move(k), _lru.begin());
    trim();
}

void pass_cache::set_capacity(size_t n) {
    std::lock_guard g(_lock);
    _capacity = n ? n : 1;
    trim();
}

size_t pass_cache::size() {
    std::lock_guard g(_lock);
    return _index.size();
}

void pass_cache::trim() {
    while (_index.size() > _capacity) {
        _index.erase(_lru.back().key);
        _lru.pop_back();
    }
}

}  // namespace rw::mta
