#include "mta/verify/feeds.hh"

#include <algorithm>

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
