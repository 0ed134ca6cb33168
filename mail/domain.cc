#include "mail/domain.hh"

namespace rw::mail {

const char* check_domain(std::string_view d, domain_rules rules) {
    if (d.empty())
        return "empty domain";
    if (d.size() > rules.max_length)
        return "domain too long";
    size_t start = 0;
    for (;;) {
        const size_t dot = d.find('.', start);
        const std::string_view label = d.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (label.empty())
            return "empty domain label";
        bool non_ascii = false;
        size_t code_points = 0;
        for (const char ch : label) {
            const auto c = static_cast<unsigned char>(ch);
            if ((c & 0xC0) != 0x80)
                ++code_points;
            if (c >= 0x80) {
                if (!rules.utf8)
                    return "non-ASCII domain";
                non_ascii = true;
                continue;
            }
            if (is_alpha(c) || is_digit(c) || c == '-' || (c == '_' && rules.underscore))
                continue;
            return "invalid character in domain";
        }
        if (label.front() == '-' || label.back() == '-')
            return "domain label begins or ends with '-'";
        if (!non_ascii && label.size() > k_max_label)
            return "domain label too long";
        if (non_ascii && code_points > k_max_label - 4)
            return "domain label too long";
        if (dot == std::string_view::npos)
            return nullptr;
        start = dot + 1;
    }
}

std::string lower_ascii(std::string_view s) {
    std::string out(s);
    for (auto& c : out)
        c = lower(c);
    return out;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size())
        return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i]))
            return false;
    return true;
}

std::string normalize_domain(std::string_view d) {
    if (!d.empty() && d.back() == '.')
        d.remove_suffix(1);
    return lower_ascii(d);
}

}  // namespace rw::mail
