// DMARC aggregate reports (dmarc_report.hh).
#include "policy/dmarc_report.hh"

#include <fmt/format.h>
#include <zlib.h>

#include <charconv>
#include <chrono>

#include "mail/codec.hh"
#include "mail/domain.hh"
#include "mail/header.hh"

namespace rw::policy::dmarc_report {

int64_t day_of(int64_t unix_seconds) noexcept {
    return unix_seconds >= 0 ? unix_seconds / 86400 : (unix_seconds - 86399) / 86400;
}

std::string day_string(int64_t day) {
    const std::chrono::year_month_day ymd{std::chrono::sys_days{std::chrono::days{day}}};
    return fmt::format("{:04}-{:02}-{:02}", int(ymd.year()), unsigned(ymd.month()), unsigned(ymd.day()));
}

std::optional<int64_t> parse_day(std::string_view s) {
    if (s.size() != 10 || s[4] != '-' || s[7] != '-')
        return std::nullopt;
    int y = 0;
    unsigned m = 0, d = 0;
    auto num = [](std::string_view t, auto& v) {
        auto r = std::from_chars(t.data(), t.data() + t.size(), v);
        return r.ec == std::errc() && r.ptr == t.data() + t.size();
    };
    if (!num(s.substr(0, 4), y) || !num(s.substr(5, 2), m) || !num(s.substr(8, 2), d))
        return std::nullopt;
    const std::chrono::year_month_day ymd{std::chrono::year{y}, std::chrono::month{m}, std::chrono::day{d}};
    if (!ymd.ok())
        return std::nullopt;
    return int64_t(std::chrono::sys_days{ymd}.time_since_epoch().count());
}

published published_of(const dmarc::outcome& o) {
    published p;
    p.domain = o.policy_domain;
    if (!o.rec)
        return p;
    const dmarc::record& r = *o.rec;
    p.p = std::string(dmarc::to_string(r.p));
    if (r.sp)
        p.sp = std::string(dmarc::to_string(*r.sp));
    if (r.np)
        p.np = std::string(dmarc::to_string(*r.np));
    p.strict_dkim = r.strict_dkim;
    p.strict_spf = r.strict_spf;
    p.pct = r.pct;
    p.fo = r.fo;
    p.rua = r.rua;
    return p;
}

row row_of(std::string_view source_ip, const dmarc::outcome& d, const spf::outcome* spf,
           const std::vector<dkim::verdict>* dkim) {
    row r;
    r.source_ip = std::string(source_ip);
    r.disposition = std::string(dmarc::to_string(d.applied));
    r.dkim_aligned = d.dkim_aligned;
    r.spf_aligned = d.spf_aligned;
    if (!d.override_by.empty()) {
        // RFC 7489 appendix C PolicyOverrideType: a trusted ARC sealer is
        // local policy.
        r.reason_type = "local_policy";
        r.reason_comment = d.override_by;
    } else if (d.applied != d.policy) {
        r.reason_type = "sampled_out";  // pct= left this message out
    }
    r.header_from = mail::normalize_domain(d.from_domain);
    if (dkim)
        for (const auto& v : *dkim)
            if (!v.domain.empty())
                r.dkim.push_back({mail::normalize_domain(v.domain), v.selector, std::string(dkim::to_string(v.res))});
    if (spf) {
        r.spf_domain = mail::normalize_domain(spf->domain);
        r.spf_scope = spf->identity == "helo" ? "helo" : "mfrom";
        r.spf_result = std::string(spf::to_string(spf->res));
    } else {
        r.spf_result = "none";
        r.spf_scope = "mfrom";
    }
    return r;
}

uint64_t domain_day::messages() const {
    uint64_t n = 0;
    for (const auto& [r, c] : rows)
        n += c;
    return n;
}

void store::add(int64_t when, const published& p, const row& r, uint64_t count) {
    const int64_t day = day_of(when);
    domain_day& d = _data[{day, p.domain}];
    if (d.first == 0 || when < d.first)
        d.first = when;
    d.last = std::max(d.last, when);
    d.policy = p;
    auto it = d.rows.find(r);
    if (it != d.rows.end()) {
        it->second += count;
        return;
    }
    if (_rows >= k_max_rows) {
        _dropped += count;
        return;
    }
    d.rows.emplace(r, count);
    ++_rows;
}

void store::merge(store& other) {
    for (auto& [key, od] : other._data) {
        auto [it, fresh] = _data.try_emplace(key);
        domain_day& d = it->second;
        if (fresh || od.last >= d.last)
            d.policy = od.policy;
        d.first = d.first ? std::min(d.first, od.first) : od.first;
        d.last = std::max(d.last, od.last);
        for (auto& [r, c] : od.rows) {
            if (auto ri = d.rows.find(r); ri != d.rows.end()) {
                ri->second += c;
            } else if (_rows >= k_max_rows) {
                _dropped += c;  // the same bound as add(): a botnet's addresses cannot grow it without end
            } else {
                d.rows.emplace(r, c);
                ++_rows;
            }
        }
        if (d.rows.empty())
            _data.erase(it);
    }
    _dropped += other._dropped;
    other._data.clear();
    other._rows = 0;
    other._dropped = 0;
}

std::map<std::pair<int64_t, std::string>, domain_day> store::take_before(int64_t day) {
    return take_if([day](int64_t d, const std::string&) { return d < day; });
}

std::map<std::pair<int64_t, std::string>, domain_day> store::take_if(
    const std::function<bool(int64_t day, const std::string& domain)>& pred) {
    std::map<std::pair<int64_t, std::string>, domain_day> out;
    for (auto it = _data.begin(); it != _data.end();) {
        if (!pred(it->first.first, it->first.second)) {
            ++it;
            continue;
        }
        _rows -= it->second.rows.size();
        auto node = _data.extract(it++);
        out.insert(std::move(node));
    }
    return out;
}

void store::put(int64_t day, const std::string& domain, domain_day d) {
    store one;
    one._data.emplace(std::make_pair(day, domain), std::move(d));
    one._rows = one._data.begin()->second.rows.size();
    merge(one);
}

namespace {

// XML character data and attribute text.
std::string esc(std::string_view s) {
    std::string o;
    o.reserve(s.size());
    for (char ch : s) {
        switch (ch) {
        case '&': o += "&amp;"; break;
        case '<': o += "&lt;"; break;
        case '>': o += "&gt;"; break;
        case '"': o += "&quot;"; break;
        case '\'': o += "&apos;"; break;
        default:
            // Control characters are not XML 1.0 characters at all.
            if (static_cast<unsigned char>(ch) < 0x20 && ch != '\t' && ch != '\n')
                o += '?';
            else
                o += ch;
        }
    }
    return o;
}

}  // namespace

std::string xml(const reporter& who, const std::string& report_id, int64_t day, const domain_day& d,
                std::optional<int64_t> until) {
    const int64_t begin = day * 86400;
    const int64_t end = until ? *until : begin + 86399;
    std::string o;
    o += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n";
    o += "  <report_metadata>\n";
    o += fmt::format("    <org_name>{}</org_name>\n", esc(who.org_name));
    o += fmt::format("    <email>{}</email>\n", esc(who.email));
    o += fmt::format("    <report_id>{}</report_id>\n", esc(report_id));
    o += fmt::format("    <date_range>\n      <begin>{}</begin>\n      <end>{}</end>\n    </date_range>\n", begin, end);
    o += "  </report_metadata>\n";
    const published& p = d.policy;
    o += "  <policy_published>\n";
    o += fmt::format("    <domain>{}</domain>\n", esc(p.domain));
    o += fmt::format("    <adkim>{}</adkim>\n", p.strict_dkim ? "s" : "r");
    o += fmt::format("    <aspf>{}</aspf>\n", p.strict_spf ? "s" : "r");
    o += fmt::format("    <p>{}</p>\n", esc(p.p));
    o += fmt::format("    <sp>{}</sp>\n", esc(p.sp.empty() ? p.p : p.sp));
    o += fmt::format("    <pct>{}</pct>\n", p.pct);
    o += fmt::format("    <fo>{}</fo>\n", esc(p.fo));
    o += "  </policy_published>\n";
    for (const auto& [r, count] : d.rows) {
        o += "  <record>\n    <row>\n";
        o += fmt::format("      <source_ip>{}</source_ip>\n", esc(r.source_ip));
        o += fmt::format("      <count>{}</count>\n", count);
        o += "      <policy_evaluated>\n";
        o += fmt::format("        <disposition>{}</disposition>\n", esc(r.disposition));
        o += fmt::format("        <dkim>{}</dkim>\n", r.dkim_aligned ? "pass" : "fail");
        o += fmt::format("        <spf>{}</spf>\n", r.spf_aligned ? "pass" : "fail");
        if (!r.reason_type.empty()) {
            o += fmt::format("        <reason>\n          <type>{}</type>\n", esc(r.reason_type));
            if (!r.reason_comment.empty())
                o += fmt::format("          <comment>{}</comment>\n", esc(r.reason_comment));
            o += "        </reason>\n";
        }
        o += "      </policy_evaluated>\n    </row>\n";
        o += fmt::format("    <identifiers>\n      <header_from>{}</header_from>\n    </identifiers>\n",
                         esc(r.header_from));
        o += "    <auth_results>\n";
        for (const auto& k : r.dkim) {
            o += "      <dkim>\n";
            o += fmt::format("        <domain>{}</domain>\n", esc(k.domain));
            if (!k.selector.empty())
                o += fmt::format("        <selector>{}</selector>\n", esc(k.selector));
            o += fmt::format("        <result>{}</result>\n", esc(k.result));
            o += "      </dkim>\n";
        }
        o += "      <spf>\n";
        o += fmt::format("        <domain>{}</domain>\n", esc(r.spf_domain));
        o += fmt::format("        <scope>{}</scope>\n", esc(r.spf_scope));
        o += fmt::format("        <result>{}</result>\n", esc(r.spf_result));
        o += "      </spf>\n";
        o += "    </auth_results>\n  </record>\n";
    }
    o += "</feedback>\n";
    return o;
}

std::string gzip(std::string_view data) {
    z_stream z{};
    // 15 + 16: a gzip wrapper, not zlib's.
    if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return {};
    std::string out(deflateBound(&z, uLong(data.size())) + 32, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = uInt(data.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = uInt(out.size());
    const int rc = deflate(&z, Z_FINISH);
    out.resize(z.total_out);
    deflateEnd(&z);
    return rc == Z_STREAM_END ? out : std::string();
}

std::optional<std::string> gunzip(std::string_view data) {
    z_stream z{};
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return std::nullopt;
    std::string out;
    char buf[16384];
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = uInt(data.size());
    int rc = Z_OK;
    while (rc == Z_OK) {
        z.next_out = reinterpret_cast<Bytef*>(buf);
        z.avail_out = sizeof buf;
        rc = inflate(&z, Z_NO_FLUSH);
        out.append(buf, sizeof buf - z.avail_out);
        if (out.size() > (64u << 20))
            rc = Z_DATA_ERROR;  // bounded: no report is that large
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END)
        return std::nullopt;
    return out;
}

std::optional<destination> parse_rua(std::string_view uri) {
    while (!uri.empty() && (uri.front() == ' ' || uri.front() == '\t'))
        uri.remove_prefix(1);
    if (uri.size() < 8 || !mail::iequals(uri.substr(0, 7), "mailto:"))
        return std::nullopt;
    uri.remove_prefix(7);
    destination d;
    if (const size_t bang = uri.find('!'); bang != std::string_view::npos) {
        std::string_view sz = uri.substr(bang + 1);
        uri = uri.substr(0, bang);
        uint64_t mult = 1;
        if (!sz.empty()) {
            switch (mail::lower(sz.back())) {
            case 'k': mult = 1ull << 10; break;
            case 'm': mult = 1ull << 20; break;
            case 'g': mult = 1ull << 30; break;
            case 't': mult = 1ull << 40; break;
            default: break;
            }
            if (mult != 1)
                sz.remove_suffix(1);
        }
        uint64_t n = 0;
        auto r = std::from_chars(sz.data(), sz.data() + sz.size(), n);
        if (r.ec != std::errc() || r.ptr != sz.data() + sz.size() || n == 0 || n > (1ull << 40))
            return std::nullopt;
        d.max_bytes = n * mult;
    }
    // RFC 6068: %-encoding may appear; a report address does not need it,
    // and one with it (or with headers, "?") is not used.
    if (uri.find_first_of("%?,<> \t\"") != std::string_view::npos)
        return std::nullopt;
    const size_t at = uri.rfind('@');
    if (at == std::string_view::npos || at == 0 || at + 1 >= uri.size())
        return std::nullopt;
    if (mail::check_domain(uri.substr(at + 1)) != nullptr)
        return std::nullopt;
    d.address = std::string(uri);
    d.domain = mail::normalize_domain(uri.substr(at + 1));
    return d;
}

bool needs_confirmation(std::string_view policy_domain, std::string_view destination_domain) {
    return dmarc::organizational_domain(policy_domain) != dmarc::organizational_domain(destination_domain);
}

std::string confirmation_name(std::string_view policy_domain, std::string_view destination_domain) {
    return fmt::format("{}._report._dmarc.{}", mail::normalize_domain(policy_domain),
                       mail::normalize_domain(destination_domain));
}

bool confirms(std::string_view txt) {
    if (txt.size() < 8 || txt.substr(0, 8) != "v=DMARC1")
        return false;
    return txt.size() == 8 || txt[8] == ';' || txt[8] == ' ' || txt[8] == '\t';
}

std::string message(const reporter& who, const std::string& report_id, const std::string& policy_domain,
                    int64_t begin, int64_t end, std::string_view gz, const std::vector<std::string>& to,
                    int64_t now) {
    const std::string boundary = fmt::format("=_dmarc_{:x}_{:x}", uint64_t(now), std::hash<std::string>{}(report_id));
    const std::string file = fmt::format("{}!{}!{}!{}.xml.gz", who.hostname, policy_domain, begin, end);
    std::string m;
    m += fmt::format("From: <{}>\r\n", who.email);
    m += "To: ";
    for (size_t i = 0; i < to.size(); ++i)
        m += fmt::format("{}<{}>", i ? ",\r\n " : "", to[i]);
    m += "\r\n";
    // RFC 7489 7.2.1.1: "Report Domain:", "Submitter:", "Report-ID:".
    m += fmt::format("Subject: Report Domain: {} Submitter: {} Report-ID: <{}>\r\n", policy_domain, who.org_name,
                     report_id);
    m += fmt::format("Date: {}\r\n", mail::date_time(now));
    m += fmt::format("Message-ID: <{}@{}>\r\n", report_id, who.hostname);
    m += "MIME-Version: 1.0\r\n";
    m += fmt::format("Content-Type: multipart/mixed; boundary=\"{}\"\r\n\r\n", boundary);
    m += "This is a DMARC aggregate report in MIME format.\r\n\r\n";
    m += fmt::format("--{}\r\n", boundary);
    m += "Content-Type: text/plain; charset=us-ascii\r\n\r\n";
    m += fmt::format("This is an aggregate report from {} for {}, covering {} to {} (UTC).\r\n\r\n", who.org_name,
                     policy_domain, mail::date_time(begin), mail::date_time(end));
    m += fmt::format("--{}\r\n", boundary);
    m += fmt::format("Content-Type: application/gzip; name=\"{}\"\r\n", file);
    m += "Content-Transfer-Encoding: base64\r\n";
    m += fmt::format("Content-Disposition: attachment; filename=\"{}\"\r\n\r\n", file);
    const std::string b64 = mail::base64_encode(gz);
    for (size_t i = 0; i < b64.size(); i += 76) {
        m.append(b64, i, 76);
        m += "\r\n";
    }
    m += fmt::format("--{}--\r\n", boundary);
    return m;
}

}  // namespace rw::policy::dmarc_report
