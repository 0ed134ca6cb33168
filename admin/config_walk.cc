// The loader's walk: tables, unknown keys ("did you mean"), and typed
// values, each problem reported with its line.
#include "admin/config_loader.hh"

#include <algorithm>
#include <limits>

namespace rw::admin::detail {

std::string describe(const toml::node& n) {
    switch (n.type()) {
    case toml::node_type::string: return quote(n.as_string()->get());
    case toml::node_type::integer: return fmt::format("an integer ({})", n.as_integer()->get());
    case toml::node_type::floating_point: {
        std::string v = fmt::format("{}", n.as_floating_point()->get());
        if (v.find_first_of(".eEn") == std::string::npos)
            v += ".0";
        return fmt::format("a float ({})", v);
    }
    case toml::node_type::boolean: return fmt::format("a boolean ({})", n.as_boolean()->get());
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
    }
    return "nothing";
}

// "512M" for whole multiples of a unit, else a number of bytes.
key_list section_names() {
    static const std::vector<std::string_view> names = [] {
        std::vector<std::string_view> v;
        for (const auto& s : config_sections())
            v.push_back(s.name);
        return v;
    }();
    return names;
}

key_list keys_of(std::string_view section) {
    static const std::vector<std::pair<std::string_view, std::vector<std::string_view>>> table = [] {
        std::vector<std::pair<std::string_view, std::vector<std::string_view>>> t;
        for (const auto& s : config_sections()) {
            std::vector<std::string_view> ks;
            for (const key_spec* k : section_keys(s.name))
                ks.push_back(k->name);
            t.emplace_back(s.name, std::move(ks));
        }
        return t;
    }();
    for (const auto& [name, ks] : table)
        if (name == section)
            return ks;
    return {};
}

const std::string& sections_allowed() {
    static const std::string text = [] {
        std::string t;
        for (const auto& s : config_sections())
            t += fmt::format("{}{}", t.empty() ? "" : ", ",
                             s.array ? fmt::format("[[{}]]", s.name) : fmt::format("[{}]", s.name));
        return t;
    }();
    return text;
}

const key_spec& loader::spec(const section& s, std::string_view k) const {
    const key_spec* ks = find_key(s.name(), k);
    RW_ASSERT(ks != nullptr, "no schema entry for {}.{}", s.name(), k);
    return *ks;
}

void loader::read_simple(const section& s, void* out) {
    for (const key_spec* k : section_keys(s.name())) {
        const toml::node* n = s.get(k->name);
        if (!n || !k->set)
            continue;
        switch (k->type) {
        case key_type::integer:
            if (auto v = read_int(s, k->name, k->lo, k->hi, k->allowed))
                k->set(out, *v);
            break;
        case key_type::boolean:
            if (const auto* b = n->as_boolean())
                k->set(out, b->get());
            else
                type_error(s, k->name, *n, "a boolean", "true, false");
            break;
        case key_type::size: {
            constexpr uint64_t unset = ~uint64_t(0);
            uint64_t bytes = unset;
            set_size(s, k->name, uint64_t(k->lo), uint64_t(k->hi), bytes);
            if (bytes != unset)
                k->set(out, int64_t(bytes));
            break;
        }
        case key_type::enumeration: {
            const std::string allowed = quote_list(k->choices);
            auto v = read_string(s, k->name, allowed);
            if (!v)
                break;
            if (contains(k->choices, *v)) {
                k->set(out, *v);
                break;
            }
            std::string what = fmt::format("unknown value {}", quote(*v));
            if (auto m = closest(to_lower(*v), k->choices))
                what += fmt::format(" (did you mean \"{}\"?)", *m);
            error(line_of(*n, s.line), s.key(k->name), what, allowed);
            break;
        }
        default:
            break;  // strings, paths, lists: each section's own reading
        }
    }
}

section loader::open_table(const toml::table& root, std::string_view name) {
    const toml::node* n = root.get(name);
    if (!n)
        return section{nullptr, std::string(name), 0};
    const toml::table* t = n->as_table();
    if (!t) {
        error(line_of(*n, 0), name, fmt::format("expected a table ([{}]), got {}", name, describe(*n)),
              fmt::format("a [{}] section with the keys {}", name, join(keys_of(name))));
        return section{nullptr, std::string(name), 0};
    }
    return section{t, std::string(name), line_of(*t, 0)};
}

void loader::check_root_keys(const toml::table& root) {
    const std::string& allowed = sections_allowed();
    for (auto&& [k, v] : root) {
        std::string_view name = k.str();
        if (contains(section_names(), name))
            continue;
        uint32_t line = line_of(v, 0);
        if (v.is_table() || v.is_array_of_tables()) {
            std::string what = "unknown section";
            if (auto m = closest(name, section_names()))
                what += fmt::format(" (did you mean [{}]?)", *m);
            error(line, name, what, allowed);
            continue;
        }
        // A key outside any section: say which section it belongs in.
        std::string what = "key outside any section";
        for (auto sec : section_names())
            if (contains(keys_of(sec), name)) {
                what += fmt::format(" (it belongs in [{}])", sec);
                break;
            }
        error(line, name, what, allowed);
    }
}

void loader::check_keys(const section& s, key_list allowed) {
    if (!s.t)
        return;
    for (auto&& [k, v] : *s.t) {
        std::string_view name = k.str();
        if (contains(allowed, name))
            continue;
        std::string what = "unknown key";
        if (auto m = closest(name, allowed))
            what += fmt::format(" (did you mean \"{}\"?)", *m);
        error(line_of(v, s.line), s.key(name), what, join(allowed));
    }
}

std::optional<int64_t> loader::read_int(const section& s, std::string_view k, int64_t lo, int64_t hi,
                                        std::string_view allowed) {
    const toml::node* n = s.get(k);
    if (!n)
        return std::nullopt;
    std::string range = allowed.empty() ? fmt::format("{}..{}", lo, hi) : std::string(allowed);
    const auto* v = n->as_integer();
    if (!v) {
        type_error(s, k, *n, "an integer", range);
        return std::nullopt;
    }
    int64_t x = v->get();
    if (x < lo || x > hi) {
        error(line_of(*n, s.line), s.key(k), fmt::format("{} is out of range", x), range);
        return std::nullopt;
    }
    return x;
}

void loader::set_bool(const section& s, std::string_view k, bool& out) {
    const toml::node* n = s.get(k);
    if (!n)
        return;
    if (const auto* v = n->as_boolean())
        out = v->get();
    else
        type_error(s, k, *n, "a boolean", "true, false");
}

std::optional<std::string> loader::read_string(const section& s, std::string_view k, std::string_view allowed) {
    const toml::node* n = s.get(k);
    if (!n)
        return std::nullopt;
    const auto* v = n->as_string();
    if (!v) {
        type_error(s, k, *n, "a string", allowed);
        return std::nullopt;
    }
    return v->get();
}

void loader::set_path(const section& s, std::string_view k, bool allow_empty, std::string_view allowed,
                      std::string& out) {
    auto v = read_string(s, k, allowed);
    if (!v)
        return;
    uint32_t line = line_of(*s.get(k), s.line);
    if (v->empty() && !allow_empty)
        error(line, s.key(k), "empty", allowed);
    else if (v->find('\0') != std::string::npos)
        error(line, s.key(k), "contains a NUL character", allowed);
    else if (v->size() > k_max_path_bytes)
        error(line, s.key(k), fmt::format("{} bytes long", v->size()), allowed);
    else
        out = std::move(*v);
}

void loader::set_size(const section& s, std::string_view k, uint64_t lo, uint64_t hi, uint64_t& out) {
    const toml::node* n = s.get(k);
    if (!n)
        return;
    uint32_t line = line_of(*n, s.line);
    std::string allowed = fmt::format(
        "a size with a unit K, M, G or T (powers of 1024), or an integer number of bytes, {}..{}",
        format_size(lo), format_size(hi));
    std::optional<uint64_t> bytes;
    std::string given;
    if (const auto* i = n->as_integer()) {
        given = fmt::format("{}", i->get());
        if (i->get() >= 0)
            bytes = uint64_t(i->get());
    } else if (const auto* str = n->as_string()) {
        given = quote(str->get());
        bytes = parse_size(str->get());
        if (!bytes) {
            error(line, s.key(k), fmt::format("expected a size such as \"64K\", \"512M\" or \"1G\", got {}", given),
                  allowed);
            return;
        }
    } else {
        type_error(s, k, *n, "a size string or an integer", allowed);
        return;
    }
    if (!bytes || *bytes < lo || *bytes > hi) {
        error(line, s.key(k), fmt::format("{} is out of range", given), allowed);
        return;
    }
    out = *bytes;
}

}  // namespace rw::admin::detail
