#include "policy/dns_facts.hh"

#include "mail/domain.hh"

namespace rw::policy {

std::string_view to_string(rrtype t) noexcept {
    switch (t) {
    case rrtype::a: return "A";
    case rrtype::ptr: return "PTR";
    case rrtype::mx: return "MX";
    case rrtype::txt: return "TXT";
    case rrtype::aaaa: return "AAAA";
    }
    return "?";
}

std::string dns_answers::key(rrtype t, std::string_view name) {
    std::string k = std::to_string(unsigned(t));
    k += ':';
    k += mail::normalize_domain(name);
    return k;
}

const dns_answer* dns_answers::find(rrtype t, std::string_view name) const {
    auto it = _answers.find(key(t, name));
    return it == _answers.end() ? nullptr : &it->second;
}

void dns_answers::put(const dns_query& q, dns_answer a) { _answers[key(q.type, q.name)] = std::move(a); }

}  // namespace rw::policy
