// An SMTP reply as the parsing layer produces it: the basic code (RFC 5321
// 4.2), the enhanced status code (RFC 3463, without the leading space) and
// a human-readable reason. The parsers in mta/smtp/command.hh and
// mta/smtp/data_decoder.hh return one for every error; the session
// (mta/smtp/session.*) sends it, prefixing the enhanced code when
// ENHANCEDSTATUSCODES is in effect. `enhanced` always points at a string
// literal, so a reply can be copied around freely.
#pragma once

#include <string>
#include <string_view>

namespace rw::mta::smtp {

struct reply {
    int code;                   // e.g. 501
    std::string_view enhanced;  // e.g. "5.5.4"; refers to a string literal
    std::string text;           // e.g. "Syntax error in parameters"
};

}  // namespace rw::mta::smtp
