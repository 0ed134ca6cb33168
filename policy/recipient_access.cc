#include "policy/recipient_access.hh"

#include <fmt/format.h>

#include "mail/domain.hh"

namespace rw::policy {

result<recipient_table, std::string> recipient_table::build(std::vector<recipient_entry> entries) {
    recipient_table t;
    for (size_t i = 0; i < entries.size(); ++i) {
        const std::string& m = entries[i].match;
        std::unordered_map<std::string, size_t>* into;
        std::string key;
        if (size_t at = m.rfind('@'); at != std::string::npos) {
            std::string local = m.substr(0, at);
            if (local.empty())
                return unexpected(fmt::format("{}: no local part", m));
            if (at + 1 == m.size()) {
                into = &t._local;
                key = local;
            } else {
                std::string d = mail::normalize_domain(std::string_view(m).substr(at + 1));
                if (mail::check_domain(d))
                    return unexpected(fmt::format("{}: {}", m, mail::check_domain(d)));
                into = &t._address;
                key = local + "@" + d;
            }
        } else {
            std::string_view d = m;
            bool below = d.starts_with("*.") || d.starts_with('.');
            if (below)
                d.remove_prefix(d.front() == '*' ? 2 : 1);
            key = mail::normalize_domain(d);
            if (const char* why = mail::check_domain(key))
                return unexpected(fmt::format("{}: {}", m, why));
            into = below ? &t._below : &t._domain;
        }
        if (!into->emplace(key, i).second)
            return unexpected(fmt::format("{}: a second entry for the same recipients", m));
    }
    t._entries = std::move(entries);
    return t;
}

const recipient_entry* recipient_table::find(std::string_view local, std::string_view domain) const {
    if (_entries.empty())
        return nullptr;
    const std::string d = mail::normalize_domain(domain);
    std::string key(local);
    key += '@';
    key += d;
    if (auto it = _address.find(key); it != _address.end())
        return &_entries[it->second];
    if (auto it = _local.find(std::string(local)); it != _local.end())
        return &_entries[it->second];
    if (auto it = _domain.find(d); it != _domain.end())
        return &_entries[it->second];
    // The longest parent domain first.
    for (size_t dot = d.find('.'); dot != std::string::npos; dot = d.find('.', dot + 1))
        if (auto it = _below.find(d.substr(dot + 1)); it != _below.end())
            return &_entries[it->second];
    return nullptr;
}

}  // namespace rw::policy
