// DMARC aggregate reports (RFC 7489 7.2, appendix C): what is recorded of
// each evaluated message, per policy domain and UTC day; the XML report;
// gzip; the rua= destinations and the report message itself. Pure: the
// daemon records on every core, gathers on one, and queues the messages.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/dmarc.hh"

namespace rw::policy::dmarc_report {

// A UTC day as days since 1970-01-01, and as "YYYY-MM-DD".
int64_t day_of(int64_t unix_seconds) noexcept;
std::string day_string(int64_t day);
std::optional<int64_t> parse_day(std::string_view yyyy_mm_dd);

// The record's published policy as the report repeats it.
struct published {
    std::string domain;  // where the record was found
    std::string p = "none", sp, np;
    bool strict_dkim = false, strict_spf = false;
    unsigned pct = 100;
    std::string fo = "0";
    std::vector<std::string> rua;

    friend auto operator<=>(const published&, const published&) = default;
};
published published_of(const dmarc::outcome& o);

struct dkim_result {
    std::string domain, selector, result;
    friend auto operator<=>(const dkim_result&, const dkim_result&) = default;
};

// One report row: messages that agree on every field are one row, counted.
struct row {
    std::string source_ip;
    std::string disposition;            // applied: none, quarantine, reject
    bool dkim_aligned = false, spf_aligned = false;
    std::string reason_type, reason_comment;  // a policy override, when there was one
    std::string header_from;
    std::vector<dkim_result> dkim;
    std::string spf_domain, spf_scope, spf_result;  // scope: mfrom or helo

    friend auto operator<=>(const row&, const row&) = default;
};

// One message's row, from its DMARC outcome, SPF check and DKIM verdicts.
row row_of(std::string_view source_ip, const dmarc::outcome& d, const spf::outcome* spf,
           const std::vector<dkim::verdict>* dkim);

// Everything recorded for one policy domain on one day.
struct domain_day {
    published policy;   // as last seen that day
    int64_t first = 0, last = 0;  // unix seconds of the first and last message
    std::map<row, uint64_t> rows;
    uint64_t messages() const;
};

// The recorded data: (day, policy domain) -> domain_day. Bounded: past
// max_rows rows a day, new rows are counted as dropped, not kept.
class store {
public:
    static constexpr size_t k_max_rows = 100000;

    void add(int64_t when, const published& p, const row& r, uint64_t count = 1);
    // Adds everything of other (which is left empty).
    void merge(store& other);
    // Takes the days before `day` out.
    std::map<std::pair<int64_t, std::string>, domain_day> take_before(int64_t day);
    // Takes out the (day, domain) entries pred selects.
    std::map<std::pair<int64_t, std::string>, domain_day> take_if(
        const std::function<bool(int64_t day, const std::string& domain)>& pred);
    void put(int64_t day, const std::string& domain, domain_day d);
    std::map<std::pair<int64_t, std::string>, domain_day>& data() { return _data; }
    const std::map<std::pair<int64_t, std::string>, domain_day>& data() const { return _data; }
    bool empty() const { return _data.empty(); }
    size_t rows() const { return _rows; }
    uint64_t dropped() const { return _dropped; }

private:
    std::map<std::pair<int64_t, std::string>, domain_day> _data;
    size_t _rows = 0;
    uint64_t _dropped = 0;
};

// Who reports.
struct reporter {
    std::string org_name;      // report_metadata/org_name
    std::string email;         // report_metadata/email, and the From: of the message
    std::string hostname;      // for Message-ID and the report id
};

// The report of one domain's day, RFC 7489 appendix C. The date range is
// the whole UTC day (to `until` when given: a report of the day so far).
std::string xml(const reporter& who, const std::string& report_id, int64_t day, const domain_day& d,
                std::optional<int64_t> until = std::nullopt);

// gzip (RFC 1952) of data, as a report attachment is sent.
std::string gzip(std::string_view data);
// The inverse, for tools and tests; nullopt when data is not gzip.
std::optional<std::string> gunzip(std::string_view data);

// A rua= URI: mailto:ADDRESS[!SIZE[k|m|g|t]] (RFC 7489 6.2). Nothing for
// other schemes or a malformed address.
struct destination {
    std::string address, domain;
    uint64_t max_bytes = 0;  // 0: no limit
};
std::optional<destination> parse_rua(std::string_view uri);

// Whether a destination outside the policy domain's organisational domain
// must confirm it takes the reports (RFC 7489 7.1), and the TXT name that
// confirms it: POLICY-DOMAIN._report._dmarc.DESTINATION-DOMAIN.
bool needs_confirmation(std::string_view policy_domain, std::string_view destination_domain);
std::string confirmation_name(std::string_view policy_domain, std::string_view destination_domain);
// Whether one TXT string of that name confirms (it begins with v=DMARC1).
bool confirms(std::string_view txt);

// The report message (RFC 7489 7.2.1.1): headers, a short text part and
// the gzip'd XML as an attachment named
// receiver!policy-domain!begin!end.xml.gz. CRLF line ends throughout.
std::string message(const reporter& who, const std::string& report_id, const std::string& policy_domain,
                    int64_t begin, int64_t end, std::string_view gz, const std::vector<std::string>& to,
                    int64_t now);

}  // namespace rw::policy::dmarc_report
