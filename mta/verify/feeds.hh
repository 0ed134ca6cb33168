// The checks that read the message as it streams in, as body consumers of
// a message pipeline (mta/smtp/message_pipeline.hh): DKIM verification and
// ARC validation. A session and `trace` use the same ones.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "mail/header.hh"
#include "mta/smtp/message_pipeline.hh"
#include "policy/arc.hh"
#include "policy/dmarc.hh"
#include "policy/dkim.hh"
#include "policy/rules.hh"
#include "fs/spool.hh"

namespace rw::mta::verify {

// DKIM: the signatures' header fields at the end of the header section,
// then every body byte.
struct dkim_feed : smtp::body_consumer {
    policy::dkim::verification v;
    const smtp::message_pipeline* p;
    dkim_feed(const policy::dkim::options& o, const smtp::message_pipeline* pipe) : v(o), p(pipe) {}
    void headers_end(uint64_t) override { v.header_section(p->headers().fields()); }
    void body(std::string_view b) override { v.body(b); }
    void end() override { v.end(); }
};

// ARC: the sets at the end of the header section, then the body.
struct arc_feed : smtp::body_consumer {
    policy::arc::verification v;
    const smtp::message_pipeline* p;
    explicit arc_feed(const smtp::message_pipeline* pipe) : p(pipe) {}
    void headers_end(uint64_t) override { v.header_section(p->headers().fields()); }
    void body(std::string_view b) override { v.body(b); }
    void end() override { v.end(); }
};

// Content rules: the message as stored, rebuilt from the fields (their
// exact bytes), the empty line and the body, for the rules' own MIME pass.
struct rules_feed : smtp::body_consumer {
    policy::rules::evaluator ev;
    explicit rules_feed(std::shared_ptr<const policy::rules::rule_set> rs) : ev(std::move(rs)) {}
    void header_field(const mail::header_field& f) override { ev.feed(f.raw); }
    void headers_end(uint64_t) override { ev.feed("\r\n"); }
    void body(std::string_view b) override { ev.feed(b); }
    void end() override { ev.finish(); }
};

// What the content rules' decision does to the header as delivered: the
// fields they add (CRLF-terminated, for the spool's prefix), the ranges of
// the fields they remove (a tagged Subject is removed and added again with
// its tag) merged into `omit`, and the header below the gateway's own
// fields as a receiver will see it (added fields, then the originals
// kept), which is what DKIM signing and ARC sealing must cover.
struct header_edit {
    std::string prefix;
    std::vector<mail::header_field> fields;
    bool changed = false;
};
header_edit edit_header(const policy::rules::decision& d, const std::vector<mail::header_field>& fields,
                        std::vector<fs::omit_range>& omit);

// The RFC5322.From domain DMARC evaluates (RFC 7489 6.6.1): the domain of
// the one address of the one From: field; "" when there are several
// fields or addresses, or none (no policy applies then).
std::string dmarc_from_domain(const std::vector<mail::header_field>& fields);

// RFC 7489 6.7 local policy: a DMARC fail whose ARC chain passes, sealed
// by one of the trusted sealers, keeps disposition none (mailing lists and
// forwarders whose changes broke the signatures); d says so in
// override_by. Whether it applied.
bool trusted_arc_override(policy::dmarc::outcome& d, const policy::arc::outcome* arc,
                          const std::vector<std::string>& trusted_sealers);

}  // namespace rw::mta::verify
