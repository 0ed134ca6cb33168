// Content rules: conditions on a message's envelope, header, decoded
// body, attachments and authentication results, combined with and/or/not,
// and the actions taken when they hold. Every regular expression of a rule
// set is compiled into one Hyperscan database (patterns.hh) and matched
// while the message streams in: the body's text parts once, decoded and in
// UTF-8, whatever the number of rules.
//
// A condition, as written in [[content_rule]] condition:
//
//   attachment-name ~ /\.(exe|scr|js)$/ or archive-entry ~ /\.exe$/
//   subject ~ "invoice" and not direction == "outbound"
//   size > 10M and client-ip in "192.0.2.0/24"
//
//   expr   := term ("or" term)*
//   term   := factor ("and" factor)*
//   factor := "not" factor | "(" expr ")" | test
//   test   := SUBJECT OP VALUE | BOOLEAN-SUBJECT
//
// Subjects, and the operators each takes:
//   body                         ~          text parts, transfer-decoded, in UTF-8
//   header "Name", subject       ~ == !=    top-level fields, RFC 2047 decoded
//   mail-from, rcpt, helo        ~ == !=    the envelope (rcpt: any recipient)
//   client-ip                    == != in   in: a CIDR ("192.0.2.0/24")
//   direction                    == !=      "inbound" (arriving) or "outbound" (relayed)
//   spf, dmarc, dkim             ~ == !=    results ("pass", "fail", ...; dkim: any signature)
//   dmarc-disposition            ~ == !=    what the From: domain's policy asks: "none", "quarantine", "reject"
//   sender-group, mail-flow-policy ~ == !=  the client's sender group and its policy ("SUSPECTLIST", "THROTTLED")
//   attachment-name, attachment-type, attachment-declared-type, archive-entry
//                                ~ == !=    any attachment (type: libmagic's; entry: in an archive)
//   size, attachment-size, attachment-count
//                                == != < <= > >=   bytes (10K, 5M, 1G) or a count
//   authenticated, archive-encrypted, mime-defect   (booleans, alone)
//
// A regular expression is /.../ (as written; \/ for a slash) or "..."
// (\" and \\ are escapes; any other backslash is kept). Matching is
// case-insensitive. == and != compare whole values, ignoring ASCII case.
// A multi-valued subject (rcpt, attachments, dkim, a repeated header)
// holds when any value does; != holds when none is equal.
//
// Actions, in [[content_rule]] actions, in order:
//   accept                       stop: later rules are not evaluated
//   reject [CODE [X.Y.Z]] [TEXT] stop: refused at the end of DATA (default
//                                550 5.7.1 Message content rejected)
//   drop                         stop: accepted (250) and discarded
//   quarantine NAME              stop: accepted (250) and held in the
//                                quarantine NAME, not delivered
//   add-header NAME: VALUE       add a header field at delivery
//   remove-header NAME           leave every NAME field out at delivery
//   tag-subject TEXT             prefix the Subject with TEXT
//   bounce [CODE [X.Y.Z]] [TEXT] stop: accepted (250), not delivered, and a
//                                failure report (RFC 3464) goes to the
//                                sender (default 550 5.7.1 Message bounced
//                                by policy; CODE is 5xx)
//   redirect ADDRESS             deliver to ADDRESS instead of the recipients
//                                (a later redirect replaces an earlier one)
//   copy ADDRESS                 also send the message, as delivered, to
//                                ADDRESS (from the null sender)
//   route HOST[:PORT]            deliver through HOST (a name, an IPv4
//                                address or [IPv6]; port 25 by default)
//                                instead of the recipients' MX or route
//   notify ADDRESS [TEXT]        send ADDRESS a notice naming the rule, the
//                                message and what was done with it
//   pool NAME                    deliver from the sources of this pool
//                                (a later pool replaces an earlier one)
// Rules run in order; every rule whose condition holds fires, until one
// with a stopping action.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mail/mime.hh"
#include "policy/attachments.hh"
#include "policy/cidr.hh"
#include "policy/patterns.hh"
#include "runtime/base/result.hh"
#include "runtime/net/addr.hh"

namespace rw::policy::rules {

enum class subject : uint8_t {
    body,
    header,
    mail_from,
    rcpt,
    helo,
    client_ip,
    direction,
    spf,
    dkim,
    dmarc,
    dmarc_disposition,
    sender_group,
    mail_flow_policy,
    attachment_name,
    attachment_type,
    attachment_declared_type,
    archive_entry,
    size,
    attachment_size,
    attachment_count,
    authenticated,
    archive_encrypted,
    mime_defect,
};

enum class op : uint8_t { match, eq, ne, lt, le, gt, ge, in, holds };

struct test {
    subject what = subject::body;
    std::string header;   // subject::header: the field name, lower case
    op how = op::holds;
    std::string text;     // eq/ne: the value; match: the expression
    uint64_t number = 0;  // numeric comparisons
    std::optional<cidr> net;  // in
    unsigned pattern = 0;     // match: the pattern's id in the rule set
};

// A condition as a tree: nodes[0] is the root.
struct node {
    enum class kind : uint8_t { all, any, negate, leaf } k = kind::leaf;
    std::vector<unsigned> kids;  // all/any/negate
    unsigned leaf = 0;           // leaf: index into rule::tests
};

enum class action_kind : uint8_t {
    accept,
    reject,
    drop,
    quarantine,
    add_header,
    remove_header,
    tag_subject,
    bounce,
    redirect,
    copy,
    route,
    notify,
    pool,
};
std::string_view to_string(action_kind a);

struct action {
    action_kind kind = action_kind::accept;
    int code = 0;          // reject, bounce
    std::string enhanced;  // reject, bounce
    std::string text;      // reject, bounce: the reply text; add/remove-header: the name; tag-subject: the
                           // tag; quarantine: its name; redirect, copy, notify: the address; route: the
                           // next hop, "host:port" ("[v6]:port"); pool: its name
    std::string value;     // add-header: the value; notify: the text (may be empty)
};

struct rule {
    std::string name;
    std::vector<test> tests;
    std::vector<node> nodes;
    std::vector<action> actions;
    // Gated: the condition cannot hold unless one of its own patterns
    // matched (set by rule_set::compile), so a message that matched none
    // of them skips the rule without evaluating it.
    bool gated = false;
};

// Whether an action stops the evaluation (accept, reject, drop, quarantine,
// bounce).
bool stops(action_kind a);
// An address a rule may send to: local@domain, printable ASCII without
// spaces, quotes or angle brackets, and a valid domain.
bool is_rule_address(std::string_view s);
// A quarantine's name: letters, digits, '-', '_', '.', 1..32 of them.
bool is_quarantine_name(std::string_view s);

// Parses one rule; the error says where ("condition: at 14: expected an
// operator after attachment-name; allowed: ...") and names the key.
// Regular expressions are checked (patterns::check) but not compiled.
result<rule, std::string> parse_rule(std::string_view name, std::string_view condition,
                                     const std::vector<std::string>& actions);
// A parsed condition alone (tests and nodes of the returned rule).
result<rule, std::string> parse_condition(std::string_view condition);
result<action, std::string> parse_action(std::string_view text);

// A compiled rule set: the rules, in order, and one database holding every
// regular expression of them. Immutable; shared by every core.
class rule_set {
public:
    struct source {
        std::string name, condition;
        std::vector<std::string> actions;
    };
    static result<std::shared_ptr<const rule_set>, std::string> compile(const std::vector<source>& rules);

    const std::vector<rule>& rules() const { return _rules; }
    bool empty() const { return _rules.empty(); }
    // Whether any condition looks at the message itself (body, header,
    // attachments): otherwise nothing needs to parse it.
    bool needs_message() const { return _needs_message; }
    bool needs_attachments() const { return _needs_attachments; }
    size_t pattern_count() const { return _meta.size(); }

private:
    friend class evaluator;
    struct pattern_meta {
        subject what;
        std::string header;
    };
    std::vector<rule> _rules;
    std::shared_ptr<const patterns::database> _db;
    std::vector<pattern_meta> _meta;  // by pattern id
    std::vector<unsigned> _rule_of;   // by pattern id: the rule it belongs to
    std::vector<unsigned> _ungated;   // rules evaluated for every message
    std::vector<std::string> _header_names;  // lower case: the fields any condition reads
    uint32_t _pattern_kinds = 0;  // bit (1 << subject): some pattern is about it
    bool _needs_message = false, _needs_attachments = false, _needs_body = false;
};

// What the evaluator cannot see in the message: the envelope and the
// session's findings, given at the end of DATA.
struct message_facts {
    std::string mail_from;  // "" for the null sender
    std::vector<std::string> rcpts;
    std::string helo;
    net::address client;
    bool inbound = true;  // arriving mail; false: relayed for a client that may relay
    bool authenticated = false;
    uint64_t size = 0;  // bytes as received
    std::string spf, dmarc;  // results, "" when not checked
    std::string dmarc_disposition;  // "none", "quarantine", "reject"; "" when not checked
    std::string sender_group, mail_flow_policy;  // the client's (access.hh); "" when none applies
    std::vector<std::string> dkim;
};

struct decision {
    enum class outcome : uint8_t { none, accept, reject, drop, quarantine, bounce } final = outcome::none;
    std::string final_rule;  // the rule whose action stopped evaluation
    std::string quarantine;  // outcome::quarantine: which one
    int code = 0;
    std::string enhanced, text;  // reject, bounce
    // The envelope changed: the recipients replaced by one address, the
    // next hop set ("host:port"); empty when not.
    std::string redirect, redirect_rule, route, route_rule;
    // The source pool the message goes from (a pool action); empty when none.
    std::string pool, pool_rule;
    // Copies and notices to send, each with the rule that asked.
    struct send {
        std::string to, rule, text;
    };
    std::vector<send> copies, notices;
    std::vector<std::string> fired;  // every rule whose condition held, in order
    std::vector<std::pair<std::string, std::string>> add_headers;  // (name, value)
    std::vector<std::string> remove_headers;  // lower case
    std::string subject_tag;
    // One field changed in place (a milter's SMFIR_CHGHEADER): the index-th
    // (from 1) field of that name gets value, or is removed when it is empty.
    struct change {
        std::string name;
        uint32_t index = 1;
        std::string value;
    };
    std::vector<change> change_headers;
};

// One message's evaluation: fed the message as stored (as it streams in),
// then decide() once it is complete. No I/O; bounded memory (attachments
// are held only while an archive is listed, up to the collector's limit).
class evaluator : private mail::mime::handler {
public:
    explicit evaluator(std::shared_ptr<const rule_set> rs, attachments::collector_options o = {});
    ~evaluator() override;
    evaluator(const evaluator&) = delete;
    evaluator& operator=(const evaluator&) = delete;

    void feed(std::string_view bytes);
    void finish();
    decision decide(const message_facts& f);

    const mail::mime::parser& mime() const { return _mime; }
    const std::vector<attachments::attachment>& attachment_list() const { return _att.result(); }

private:
    void part_begin(const mail::mime::part& p) override;
    void part_data(const mail::mime::part& p, std::string_view d) override;
    void part_end(const mail::mime::part& p) override;
    bool scans(subject what) const { return _rs->_pattern_kinds & (1u << unsigned(what)); }
    void scan_text(subject what, std::string_view header, std::string_view text);
    bool is_attachment(const attachments::attachment& a) const;
    void record(const patterns::scanner& s, subject what, std::string_view header);
    bool holds(const rule& r, unsigned node, const message_facts& f) const;
    bool test_holds(const test& t, const message_facts& f) const;

    std::shared_ptr<const rule_set> _rs;
    attachments::collector _att;
    mail::mime::parser _mime;
    std::vector<bool> _matched;  // by pattern id
    std::vector<unsigned> _matched_ids;
    // Top-level header fields the conditions read: (lower-case name, decoded value).
    std::vector<std::pair<std::string, std::string>> _fields;
    std::unique_ptr<patterns::scanner> _body;  // the text part being read
    std::unique_ptr<mail::mime::utf8_stream> _utf8;
    unsigned _body_part = 0;
    std::vector<bool> _skip;  // by part index: a text body, not given to the collector
    std::string _conv;
    bool _finished = false;
};

}  // namespace rw::policy::rules
