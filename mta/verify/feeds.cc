#include "mta/verify/feeds.hh"

#include <algorithm>

#include <fmt/format.h>

namespace rw::mta::verify {

std::string dmarc_from_domain(const std::vector<mail::header_field>& fields) {
    std::string domain;
    int froms = 0;
    for (const auto& f : fields) {
        if (!mail::name_is(f, "From"))
            continue;
        if (++froms > 1)
            return {};
        auto list = mail::parse_address_list(f.unfolded_value());
        if (list && list->size() == 1)
            domain = list->front().domain;
    }
    return domain;
}

bool trusted_arc_override(policy::dmarc::outcome& d, const policy::arc::outcome* arc,
                          const std::vector<std::string>& trusted_sealers) {
    if (d.res != policy::dmarc::result::fail || !arc || arc->res != policy::arc::result::pass ||
        std::find(trusted_sealers.begin(), trusted_sealers.end(), arc->sealer) == trusted_sealers.end())
        return false;
    d.applied = policy::dmarc::disposition::none;
    d.override_by = "arc, sealed by " + arc->sealer;
    return true;
}

}  // namespace rw::mta::verify

namespace rw::mta::verify {

namespace {
mail::header_field make_field(std::string_view name, std::string_view value_after_colon) {
    mail::header_field f;
    f.raw = fmt::format("{}:{}\r\n", name, value_after_colon);
    f.name_len = name.size();
    return f;
}
}  // namespace

header_edit edit_header(const policy::rules::decision& d, const std::vector<mail::header_field>& fields,
                        std::vector<fs::omit_range>& omit) {
    header_edit e;
    if (d.add_headers.empty() && d.remove_headers.empty() && d.subject_tag.empty() && d.change_headers.empty())
        return e;
    e.changed = true;
    std::vector<mail::header_field> added;
    for (const auto& [name, value] : d.add_headers)
        added.push_back(make_field(name, " " + value));
    bool tagged = false;
    std::vector<const mail::header_field*> kept;
    std::vector<uint32_t> seen(d.change_headers.size(), 0);  // fields of each change's name so far
    for (const auto& f : fields) {
        bool drop = false;
        for (const auto& r : d.remove_headers)
            drop = drop || mail::name_is(f, r);
        for (size_t c = 0; c < d.change_headers.size() && !drop; ++c) {
            const auto& ch = d.change_headers[c];
            if (!mail::name_is(f, ch.name) || ++seen[c] != ch.index)
                continue;
            drop = true;  // changed: the new value goes with the added fields
            if (!ch.value.empty())
                added.push_back(make_field(ch.name, " " + ch.value));
        }
        if (!drop && !tagged && !d.subject_tag.empty() && mail::name_is(f, "Subject")) {
            // The first Subject, with the tag in front of its value as written.
            std::string_view v = f.raw_value();
            while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
                v.remove_prefix(1);
            added.push_back(make_field("Subject", v.empty() ? fmt::format(" {}", d.subject_tag)
                                                            : fmt::format(" {} {}", d.subject_tag, v)));
            tagged = true;
            drop = true;
        }
        if (drop)
            omit.push_back(fs::omit_range{f.offset, uint32_t(f.raw.size())});
        else
            kept.push_back(&f);
    }
    if (!tagged && !d.subject_tag.empty())
        added.push_back(make_field("Subject", fmt::format(" {}", d.subject_tag)));
    // In order and apart, as the spool takes them (a forged
    // Authentication-Results removed by a rule too is one range).
    std::sort(omit.begin(), omit.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
    omit.erase(std::unique(omit.begin(), omit.end()), omit.end());
    for (const auto& f : added)
        e.prefix += f.raw;
    e.fields = std::move(added);
    for (const auto* f : kept)
        e.fields.push_back(*f);
    return e;
}

}  // namespace rw::mta::verify
