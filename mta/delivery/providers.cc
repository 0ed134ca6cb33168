// Providers (MX suffixes) and warm-up schedules.
#include <algorithm>

#include "mta/delivery/delivery.hh"

namespace rw::mta::delivery {

const std::vector<provider>& builtin_providers() {
    // The MX host names each one's domains publish (hosted domains
    // included: a company on Google Workspace has Google's MX hosts).
    static const std::vector<provider> k_table = {
        {"gmail", {"google.com", "googlemail.com"}, 0, 0},
        {"microsoft", {"outlook.com", "hotmail.com"}, 0, 0},
        {"yahoo", {"yahoodns.net"}, 0, 0},  // Yahoo and AOL
        {"apple", {"icloud.com", "me.com"}, 0, 0},
        {"comcast", {"comcast.net"}, 0, 0},
        {"att", {"prodigy.net", "att.net"}, 0, 0},
        {"gmx", {"gmx.net", "web.de", "1and1.com", "ionos.com"}, 0, 0},
        {"mailru", {"mail.ru"}, 0, 0},
        {"yandex", {"yandex.net", "yandex.ru"}, 0, 0},
        {"zoho", {"zoho.com", "zoho.eu"}, 0, 0},
        {"proton", {"protonmail.ch"}, 0, 0},
        {"fastmail", {"messagingengine.com"}, 0, 0},
        {"orange", {"orange.fr"}, 0, 0},
        {"qq", {"qq.com"}, 0, 0},
        {"mimecast", {"mimecast.com"}, 0, 0},
        {"proofpoint", {"pphosted.com", "ppe-hosted.com"}, 0, 0},
    };
    return k_table;
}

const provider* find_provider(const options& o, std::string_view host) {
    std::string h(host);
    for (auto& c : h)
        if (c >= 'A' && c <= 'Z')
            c = char(c + 32);
    if (!h.empty() && h.back() == '.')
        h.pop_back();
    const provider* best = nullptr;
    size_t best_len = 0;
    for (const auto& p : o.providers)
        for (const auto& sfx : p.mx_suffixes) {
            const bool match = h == sfx || (h.size() > sfx.size() && h.ends_with(sfx) && h[h.size() - sfx.size() - 1] == '.');
            if (match && sfx.size() > best_len) {
                best = &p;
                best_len = sfx.size();
            }
        }
    return best;
}

const provider* provider_named(const options& o, std::string_view name) {
    for (const auto& p : o.providers)
        if (p.name == name)
            return &p;
    return nullptr;
}

std::string warmup_schedule::group_of(std::string_view provider) const {
    for (const auto& [name, caps] : providers)
        if (name == provider)
            return name;
    return "*";
}

unsigned warmup_schedule::cap(std::string_view group, int64_t day) const {
    const std::vector<unsigned>* caps = &default_caps;
    for (const auto& [name, c] : providers)
        if (name == group)
            caps = &c;
    if (day < 1)
        day = 1;
    return size_t(day) <= caps->size() ? (*caps)[size_t(day - 1)] : 0;
}

}  // namespace rw::mta::delivery
