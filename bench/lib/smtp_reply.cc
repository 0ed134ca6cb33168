#include "bench/lib/smtp_reply.hh"

#include <cctype>

namespace rw::bench {

namespace {
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// "2.0.0 Ok" -> "2.0.0"; "" when the text does not start with class.subject.detail.
std::string enhanced_of(std::string_view t, int code) {
    size_t i = 0;
    auto digits = [&](size_t maxn) {
        size_t n = 0;
        while (i < t.size() && is_digit(t[i]) && n < maxn)
            ++i, ++n;
        return n;
    };
    if (t.empty() || t[0] != char('0' + code / 100))
        return {};
    i = 1;
    if (i >= t.size() || t[i++] != '.' || digits(3) == 0 || i >= t.size() || t[i++] != '.' || digits(3) == 0)
        return {};
    if (i < t.size() && t[i] != ' ')
        return {};
    return std::string(t.substr(0, i));
}
}  // namespace

reply_status parse_reply(std::string_view buf, smtp_reply& out, size_t& consumed) {
    out = smtp_reply{};
    size_t pos = 0;
    for (size_t n = 0;; ++n) {
        if (n >= k_max_reply_lines)
            return reply_status::garbage;
        size_t nl = buf.find('\n', pos);
        if (nl == std::string_view::npos) {
            if (buf.size() - pos > k_max_reply_line)
                return reply_status::garbage;
            return reply_status::incomplete;
        }
        if (nl - pos > k_max_reply_line)
            return reply_status::garbage;
        std::string_view line = buf.substr(pos, nl - pos);
        if (!line.empty() && line.back() == '\r')
            line.remove_suffix(1);
        pos = nl + 1;
        if (line.size() < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]) || line[0] < '1' ||
            line[0] > '5')
            return reply_status::garbage;
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (n == 0)
            out.code = code;
        else if (code != out.code)
            return reply_status::garbage;
        bool last = true;
        if (line.size() > 3) {
            if (line[3] == '-')
                last = false;
            else if (line[3] != ' ')
                return reply_status::garbage;
        }
        std::string_view text = line.size() > 4 ? line.substr(4) : std::string_view();
        if (n == 0)
            out.enhanced = enhanced_of(text, code);
        out.lines.emplace_back(text);
        if (last) {
            consumed = pos;
            return reply_status::complete;
        }
    }
}

std::vector<std::string> ehlo_keywords(const smtp_reply& r) {
    std::vector<std::string> out;
    for (size_t i = 1; i < r.lines.size(); ++i) {
        std::string k = r.lines[i];
        for (auto& c : k)
            c = char(std::toupper(static_cast<unsigned char>(c)));
        out.push_back(std::move(k));
    }
    return out;
}

bool has_keyword(const std::vector<std::string>& kws, std::string_view kw) {
    for (auto& k : kws)
        if (k.size() >= kw.size() && std::string_view(k).substr(0, kw.size()) == kw &&
            (k.size() == kw.size() || k[kw.size()] == ' ' || k[kw.size()] == '='))
            return true;
    return false;
}

}  // namespace rw::bench
