#include "mta/smtp/message_pipeline.hh"

#include "mail/domain.hh"
#include "policy/auth_results.hh"

namespace rw::mta::smtp {

message_pipeline::message_pipeline(pipeline_options o) : _o(std::move(o)), _headers(_o.limits) {}

void message_pipeline::field(const mail::header_field& f) {
    if (mail::name_is(f, "Received")) {
        if (++_received > _o.max_received && !_failure)
            _failure = too_many_hops(_received, _o.max_received);
    } else if (!_have_subject && mail::name_is(f, "Subject")) {
        _have_subject = true;
        _subject = f.unfolded_value();
        if (_subject.size() > k_max_subject)
            _subject.resize(k_max_subject);
    } else if (!_o.omit_results_of.empty() && mail::name_is(f, "Authentication-Results") &&
               policy::names_authserv_id(f.unfolded_value(), _o.omit_results_of) && f.raw.size() <= UINT32_MAX) {
        _omit.push_back(fs::omit_range{f.offset, uint32_t(f.raw.size())});
    }
    for (body_consumer* c : _consumers)
        c->header_field(f);
}

void message_pipeline::feed(std::string_view bytes) {
    if (_failure)
        return;
    if (!_headers_ended) {
        const size_t used = _headers.feed(bytes);
        const auto& fs = _headers.fields();
        for (; _fields_seen < fs.size() && !_failure; ++_fields_seen)
            field(fs[_fields_seen]);
        if (!_headers.done()) {
            keep_first_line(bytes.substr(0, used));
            return;
        }
        if (!end_headers())
            return;
        bytes = _headers.section_bytes() == 0 ? bytes : bytes.substr(std::min(bytes.size(), used));
    }
    if (!bytes.empty())
        for (body_consumer* c : _consumers)
            c->body(bytes);
}

void message_pipeline::keep_first_line(std::string_view consumed) {
    // Until the first line is known to be a field, its bytes may turn out
    // to be body (a message without a header section); the line is short
    // (the DATA decoder limits lines), this is a bound all the same.
    if (_fields_seen != 0 || !_headers.fields().empty())
        return;
    if (_first_line.size() + consumed.size() > k_max_first_line) {
        // Only BDAT has no line length limit; a first line this long that
        // may yet be body is refused rather than passed on incomplete.
        if (!_failure)
            _failure = header_too_large("first line longer than 64 KiB");
        return;
    }
    _first_line.append(consumed);
}

bool message_pipeline::end_headers() {
    _headers_ended = true;
    if (_headers.error() != mail::header_error::none && !_failure)
        _failure = header_too_large(mail::to_string(_headers.error()));
    if (_failure)
        return false;
    for (body_consumer* c : _consumers)
        c->headers_end(_headers.section_bytes());
    // No header section: what was taken for the first field's name is body.
    if (_headers.section_bytes() == 0 && !_first_line.empty())
        for (body_consumer* c : _consumers)
            c->body(_first_line);
    _first_line.clear();
    _first_line.shrink_to_fit();
    return true;
}

void message_pipeline::finish() {
    if (_failure)
        return;
    if (!_headers_ended) {
        _headers.finish();
        const auto& fs = _headers.fields();
        for (; _fields_seen < fs.size() && !_failure; ++_fields_seen)
            field(fs[_fields_seen]);
        if (!end_headers())
            return;
    }
    for (body_consumer* c : _consumers)
        c->end();
}

}  // namespace rw::mta::smtp
