#include "bench/lib/args.hh"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace rw::bench {

namespace {

bool parse_number(std::string_view s, double& out) {
    if (s.empty() || s.size() > 32)
        return false;
    std::string tmp(s);
    char* end = nullptr;
    out = std::strtod(tmp.c_str(), &end);
    return end == tmp.c_str() + tmp.size() && std::isfinite(out) && !(tmp[0] == ' ' || tmp[0] == '+');
}

rw::unexpected<std::string> bad(std::string_view opt, std::string_view form, std::string_view v) {
    return rw::unexpected<std::string>(fmt::format("{}: expected {}, got \"{}\"", opt, form, v));
}

// "12k" -> 12 * kilo; "3" -> 3.
bool number_with_suffix(std::string_view s, double kilo, double& out) {
    double mul = 1;
    if (!s.empty()) {
        char c = s.back();
        if (c == 'k' || c == 'K')
            mul = kilo;
        else if (c == 'm' || c == 'M')
            mul = kilo * kilo;
        else if (c == 'g' || c == 'G')
            mul = kilo * kilo * kilo;
        if (mul != 1)
            s.remove_suffix(1);
    }
    if (!parse_number(s, out) || out < 0)
        return false;
    out *= mul;
    return true;
}

}  // namespace

result<double, std::string> parse_rate(std::string_view opt, std::string_view v) {
    constexpr std::string_view form = "N/s, N/m or N/h (N may end in k or m)";
    auto slash = v.find('/');
    if (slash == std::string_view::npos)
        return bad(opt, form, v);
    double n = 0;
    if (!number_with_suffix(v.substr(0, slash), 1000, n) || n <= 0)
        return bad(opt, form, v);
    std::string_view unit = v.substr(slash + 1);
    if (unit == "s")
        return n;
    if (unit == "m" || unit == "min")
        return n / 60;
    if (unit == "h")
        return n / 3600;
    return bad(opt, form, v);
}

result<uint64_t, std::string> parse_size(std::string_view opt, std::string_view v) {
    double n = 0;
    if (!number_with_suffix(v, 1024, n) || n < 1 || n > double(uint64_t(1) << 40) || n != std::floor(n))
        return bad(opt, "a size in bytes such as 512, 4k or 1m", v);
    return uint64_t(n);
}

result<uint64_t, std::string> parse_count(std::string_view opt, std::string_view v) {
    double n = 0;
    if (!number_with_suffix(v, 1000, n) || n > 1e15 || n != std::floor(n))
        return bad(opt, "a whole number such as 5000 or 10k", v);
    return uint64_t(n);
}

result<std::chrono::milliseconds, std::string> parse_duration(std::string_view opt, std::string_view v) {
    constexpr std::string_view form = "a duration such as 30s, 500ms, 2m or 1h";
    double mul = 1000;
    std::string_view num = v;
    if (num.ends_with("ms")) {
        mul = 1;
        num.remove_suffix(2);
    } else if (num.ends_with("s")) {
        num.remove_suffix(1);
    } else if (num.ends_with("m")) {
        mul = 60'000;
        num.remove_suffix(1);
    } else if (num.ends_with("h")) {
        mul = 3'600'000;
        num.remove_suffix(1);
    }
    double n = 0;
    if (!parse_number(num, n) || n < 0 || n * mul > 1e12)
        return bad(opt, form, v);
    return std::chrono::milliseconds(int64_t(std::llround(n * mul)));
}

result<double, std::string> parse_fraction(std::string_view opt, std::string_view v) {
    std::string_view num = v;
    double div = 1;
    if (num.ends_with("%")) {
        num.remove_suffix(1);
        div = 100;
    }
    double n = 0;
    if (!parse_number(num, n) || n < 0 || n / div > 1)
        return bad(opt, "a fraction between 0 and 1, or a percentage such as 10%", v);
    return n / div;
}

result<std::vector<size_share>, std::string> parse_mix(std::string_view opt, std::string_view v) {
    constexpr std::string_view form = "SIZE[:WEIGHT],... such as 1k:50,4k:30,64k:15,1m:5";
    std::vector<size_share> out;
    if (v.empty())
        return bad(opt, form, v);
    size_t pos = 0;
    while (pos <= v.size()) {
        size_t comma = v.find(',', pos);
        std::string_view item = v.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
        size_share s;
        auto colon = item.find(':');
        auto sz = parse_size(opt, item.substr(0, colon));
        if (!sz)
            return bad(opt, form, v);
        s.bytes = sz.value();
        s.weight = 1;
        if (colon != std::string_view::npos) {
            auto w = item.substr(colon + 1);
            unsigned wv = 0;
            auto [p, ec] = std::from_chars(w.data(), w.data() + w.size(), wv);
            if (ec != std::errc() || p != w.data() + w.size() || wv == 0 || wv > 1'000'000)
                return bad(opt, form, v);
            s.weight = wv;
        }
        out.push_back(s);
        if (comma == std::string_view::npos)
            break;
        pos = comma + 1;
    }
    return out;
}

}  // namespace rw::bench
