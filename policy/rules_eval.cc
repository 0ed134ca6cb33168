// Content rules: one message's evaluation (rules.hh).
#include <algorithm>

#include "mail/domain.hh"
#include "policy/rules.hh"

namespace rw::policy::rules {

namespace {

bool same_ascii_caseless(std::string_view a, std::string_view b) {
    auto low = [](char c) { return c >= 'A' && c <= 'Z' ? char(c + 32) : c; };
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [&](char x, char y) { return low(x) == low(y); });
}

bool compare(uint64_t v, op how, uint64_t n) {
    switch (how) {
    case op::eq: return v == n;
    case op::ne: return v != n;
    case op::lt: return v < n;
    case op::le: return v <= n;
    case op::gt: return v > n;
    case op::ge: return v >= n;
    default: return false;
    }
}

}  // namespace

evaluator::evaluator(std::shared_ptr<const rule_set> rs, attachments::collector_options o)
    : _rs(std::move(rs)), _att(o), _mime(*this) {
    _matched.assign(_rs->_meta.size(), false);
}

evaluator::~evaluator() = default;

void evaluator::feed(std::string_view bytes) {
    if (_rs->_needs_message && !_finished)
        _mime.feed(bytes);
}

void evaluator::finish() {
    if (_finished)
        return;
    if (_rs->_needs_message)
        _mime.finish();
    _finished = true;
}

bool evaluator::is_attachment(const attachments::attachment& a) const {
    // The text the message is written in is its body; anything else (a
    // name, a disposition of attachment, a type other than text) is an
    // attachment.
    return !a.filename.empty() || a.disposition == "attachment" || !a.declared_type.starts_with("text/");
}

void evaluator::part_begin(const mail::mime::part& p) {
    // The text the message is written in is not an attachment
    // (is_attachment): it is not typed (libmagic costs 0.1 to 1 ms a part).
    const bool text_body = !p.multipart() && !p.message() && p.type.starts_with("text/") && p.filename.empty() &&
                           p.disposition != "attachment";
    if (_skip.size() <= p.index)
        _skip.resize(p.index + 1, false);
    _skip[p.index] = text_body;
    if (_rs->_needs_attachments && !text_body)
        _att.part_begin(p);
    if (p.index == 0 && !_rs->_header_names.empty()) {
        for (const auto& [name, value] : p.headers) {
            std::string lname = mail::lower_ascii(name);
            if (std::find(_rs->_header_names.begin(), _rs->_header_names.end(), lname) == _rs->_header_names.end())
                continue;
            if (_fields.size() >= 1000)
                break;
            std::string decoded = mail::mime::decode_words(value);
            if (scans(subject::header))
                scan_text(subject::header, lname, decoded);
            _fields.emplace_back(std::move(lname), std::move(decoded));
        }
    }
    if (_rs->_needs_body && scans(subject::body) && !p.multipart() && !p.message() && p.type.starts_with("text/") &&
        !_body) {
        _body = std::make_unique<patterns::scanner>(_rs->_db);
        _utf8 = std::make_unique<mail::mime::utf8_stream>(p.charset);
        _body_part = p.index;
    }
}

void evaluator::part_data(const mail::mime::part& p, std::string_view d) {
    if (_rs->_needs_attachments && !_skip[p.index])
        _att.part_data(p, d);
    if (_body && p.index == _body_part) {
        _conv.clear();
        _utf8->feed(d, _conv);
        _body->feed(_conv);
    }
}

void evaluator::part_end(const mail::mime::part& p) {
    if (_rs->_needs_attachments && !_skip[p.index])
        _att.part_end(p);
    if (_body && p.index == _body_part) {
        _conv.clear();
        _utf8->finish(_conv);
        _body->feed(_conv);
        _body->finish();
        record(*_body, subject::body, {});
        _body.reset();
        _utf8.reset();
        _conv = std::string();
    }
}

void evaluator::record(const patterns::scanner& s, subject what, std::string_view header) {
    for (unsigned id : s.matched()) {
        if (id >= _rs->_meta.size())
            continue;
        const auto& m = _rs->_meta[id];
        if (m.what == what && (what != subject::header || m.header == header) && !_matched[id]) {
            _matched[id] = true;
            _matched_ids.push_back(id);
        }
    }
}

void evaluator::scan_text(subject what, std::string_view header, std::string_view text) {
    patterns::scanner s(_rs->_db);
    s.feed(text);
    s.finish();
    record(s, what, header);
}

bool evaluator::test_holds(const test& t, const message_facts& f) const {
    if (t.how == op::match)
        return t.pattern < _matched.size() && _matched[t.pattern];
    const auto& atts = _att.result();
    switch (t.what) {
    case subject::client_ip: {
        const bool in = t.net && t.net->contains(f.client);
        return t.how == op::ne ? !in : in;
    }
    case subject::size:
        return compare(f.size, t.how, t.number);
    case subject::attachment_size:
        for (const auto& a : atts)
            if (is_attachment(a) && compare(a.size, t.how, t.number))
                return true;
        return false;
    case subject::attachment_count: {
        uint64_t n = 0;
        for (const auto& a : atts)
            n += is_attachment(a) ? 1 : 0;
        return compare(n, t.how, t.number);
    }
    case subject::authenticated:
        return f.authenticated;
    case subject::archive_encrypted:
        for (const auto& a : atts)
            if (a.archive && a.archive->encrypted)
                return true;
        return false;
    case subject::mime_defect:
        return _mime.defects() != 0;
    default:
        break;
    }
    // Text subjects: == holds when any value is equal, != when none is.
    bool any = false;
    auto see = [&](std::string_view v) { any = any || same_ascii_caseless(v, t.text); };
    switch (t.what) {
    case subject::header:
        for (const auto& [n, v] : _fields)
            if (n == t.header)
                see(v);
        break;
    case subject::mail_from: see(f.mail_from); break;
    case subject::rcpt:
        for (const auto& r : f.rcpts)
            see(r);
        break;
    case subject::helo: see(f.helo); break;
    case subject::direction: see(f.inbound ? "inbound" : "outbound"); break;
    case subject::spf: see(f.spf); break;
    case subject::dmarc: see(f.dmarc); break;
    case subject::dmarc_disposition: see(f.dmarc_disposition); break;
    case subject::sender_group: see(f.sender_group); break;
    case subject::mail_flow_policy: see(f.mail_flow_policy); break;
    case subject::dkim:
        for (const auto& d : f.dkim)
            see(d);
        break;
    case subject::attachment_name:
    case subject::attachment_type:
    case subject::attachment_declared_type:
        for (const auto& a : atts)
            if (is_attachment(a))
                see(t.what == subject::attachment_name   ? a.filename
                    : t.what == subject::attachment_type ? a.true_type
                                                         : a.declared_type);
        break;
    case subject::archive_entry:
        for (const auto& a : atts)
            if (a.archive)
                for (const auto& e : a.archive->entries)
                    see(e.name);
        break;
    default:
        break;
    }
    return t.how == op::ne ? !any : any;
}

bool evaluator::holds(const rule& r, unsigned n, const message_facts& f) const {
    const node& nd = r.nodes[n];
    switch (nd.k) {
    case node::kind::leaf: return test_holds(r.tests[nd.leaf], f);
    case node::kind::negate: return !holds(r, nd.kids[0], f);
    case node::kind::all:
        for (unsigned k : nd.kids)
            if (!holds(r, k, f))
                return false;
        return true;
    case node::kind::any:
        for (unsigned k : nd.kids)
            if (holds(r, k, f))
                return true;
        return false;
    }
    return false;
}

decision evaluator::decide(const message_facts& f) {
    finish();
    // The short subjects' patterns, now that the envelope is known.
    if (scans(subject::mail_from))
        scan_text(subject::mail_from, {}, f.mail_from);
    if (scans(subject::rcpt))
        for (const auto& r : f.rcpts)
            scan_text(subject::rcpt, {}, r);
    if (scans(subject::helo))
        scan_text(subject::helo, {}, f.helo);
    if (scans(subject::direction))
        scan_text(subject::direction, {}, f.inbound ? "inbound" : "outbound");
    if (scans(subject::spf))
        scan_text(subject::spf, {}, f.spf);
    if (scans(subject::dmarc))
        scan_text(subject::dmarc, {}, f.dmarc);
    if (scans(subject::dmarc_disposition))
        scan_text(subject::dmarc_disposition, {}, f.dmarc_disposition);
    if (scans(subject::sender_group))
        scan_text(subject::sender_group, {}, f.sender_group);
    if (scans(subject::mail_flow_policy))
        scan_text(subject::mail_flow_policy, {}, f.mail_flow_policy);
    if (scans(subject::dkim))
        for (const auto& d : f.dkim)
            scan_text(subject::dkim, {}, d);
    for (const auto& a : _att.result()) {
        if (is_attachment(a)) {
            if (scans(subject::attachment_name) && !a.filename.empty())
                scan_text(subject::attachment_name, {}, a.filename);
            if (scans(subject::attachment_type))
                scan_text(subject::attachment_type, {}, a.true_type);
            if (scans(subject::attachment_declared_type))
                scan_text(subject::attachment_declared_type, {}, a.declared_type);
        }
        if (scans(subject::archive_entry) && a.archive)
            for (const auto& e : a.archive->entries)
                scan_text(subject::archive_entry, {}, e.name);
    }
    // The rules that can hold: those not gated by patterns, and those
    // whose patterns matched; in file order.
    std::vector<unsigned> candidates = _rs->_ungated;
    for (unsigned id : _matched_ids)
        candidates.push_back(_rs->_rule_of[id]);
    std::sort(candidates.begin(), candidates.end());
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
    decision d;
    for (unsigned ri : candidates) {
        const rule& r = _rs->_rules[ri];
        if (r.nodes.empty() || !holds(r, 0, f))
            continue;
        d.fired.push_back(r.name);
        for (const auto& a : r.actions) {
            switch (a.kind) {
            case action_kind::accept:
                d.final = decision::outcome::accept;
                d.final_rule = r.name;
                return d;
            case action_kind::reject:
            case action_kind::bounce:
                d.final = a.kind == action_kind::reject ? decision::outcome::reject : decision::outcome::bounce;
                d.final_rule = r.name;
                d.code = a.code;
                d.enhanced = a.enhanced;
                d.text = a.text;
                return d;
            case action_kind::drop:
                d.final = decision::outcome::drop;
                d.final_rule = r.name;
                return d;
            case action_kind::quarantine:
                d.final = decision::outcome::quarantine;
                d.final_rule = r.name;
                d.quarantine = a.text;
                return d;
            case action_kind::add_header:
                d.add_headers.emplace_back(a.text, a.value);
                break;
            case action_kind::remove_header:
                if (std::find(d.remove_headers.begin(), d.remove_headers.end(), a.text) == d.remove_headers.end())
                    d.remove_headers.push_back(a.text);
                break;
            case action_kind::tag_subject:
                if (!d.subject_tag.empty())
                    d.subject_tag += ' ';
                d.subject_tag += a.text;
                break;
            case action_kind::redirect:
                d.redirect = a.text;
                d.redirect_rule = r.name;
                break;
            case action_kind::route:
                d.route = a.text;
                d.route_rule = r.name;
                break;
            case action_kind::pool:
                d.pool = a.text;
                d.pool_rule = r.name;
                break;
            case action_kind::copy:
                d.copies.push_back({a.text, r.name, {}});
                break;
            case action_kind::notify:
                d.notices.push_back({a.text, r.name, a.value});
                break;
            }
        }
    }
    return d;
}

}  // namespace rw::policy::rules
