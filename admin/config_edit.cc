// set_config_key: one key of a candidate configuration changed in its TOML
// tree, typed by the schema.
#include <charconv>
#include <sstream>

#include "admin/config_loader.hh"

namespace rw::admin {

using namespace detail;

namespace {

std::string trim(std::string_view s) {
    size_t b = s.find_first_not_of(" \t");
    if (b == std::string_view::npos)
        return {};
    size_t e = s.find_last_not_of(" \t");
    return std::string(s.substr(b, e - b + 1));
}

std::vector<std::string> list_items(std::string_view v) {
    std::string t = trim(v);
    if (t.size() >= 2 && t.front() == '[' && t.back() == ']')
        t = t.substr(1, t.size() - 2);
    std::vector<std::string> out;
    std::string cur;
    for (char ch : t) {
        if (ch == ',' || ch == ' ' || ch == '\t') {
            if (!cur.empty())
                out.push_back(std::exchange(cur, {}));
        } else if (ch != '"') {
            cur += ch;
        }
    }
    if (!cur.empty())
        out.push_back(cur);
    return out;
}

std::string key_names() {
    std::string s;
    for (const auto& sec : config_sections())
        s += fmt::format("{}{}", s.empty() ? "" : ", ", sec.array ? fmt::format("{}[N]", sec.name) : std::string(sec.name));
    return s;
}

}  // namespace

result<std::string, std::string> set_config_key(const std::string& text, std::string_view key,
                                                std::string_view value) {
    // KEY: section, an optional [selector], a dot, the key name.
    size_t dot = key.rfind('.');
    size_t bracket = key.find('[');
    if (dot == std::string_view::npos || dot == 0 || dot + 1 == key.size() ||
        (bracket != std::string_view::npos && bracket > dot))
        return unexpected(fmt::format("{}: not a key; keys are section.key ({}), e.g. delivery.max_connections_per_destination",
                                      key, key_names()));
    std::string_view name = key.substr(dot + 1);
    std::string_view head = key.substr(0, dot);
    std::string_view section = head, selector;
    if (bracket != std::string_view::npos) {
        if (head.back() != ']')
            return unexpected(fmt::format("{}: expected section[N].key", key));
        section = head.substr(0, bracket);
        selector = head.substr(bracket + 1, head.size() - bracket - 2);
    } else if (size_t d = head.find('.'); d != std::string_view::npos) {
        return unexpected(fmt::format("{}: not a key; keys are section.key ({})", key, key_names()));
    }
    const section_spec* sec = nullptr;
    for (const auto& s : config_sections())
        if (s.name == section)
            sec = &s;
    if (!sec) {
        std::string what = fmt::format("{}: unknown section {}", key, quote(section));
        if (auto m = closest(section, section_names()))
            what += fmt::format(" (did you mean {}?)", *m);
        return unexpected(what);
    }
    if (sec->array && selector.empty())
        return unexpected(fmt::format("{}: [[{}]] is a list: say which, as {}[0].{} or by name", key, section, section,
                                      name));
    if (!sec->array && !selector.empty())
        return unexpected(fmt::format("{}: [{}] is a single table: {}.{}", key, section, section, name));
    const key_spec* spec = find_key(section, name);
    if (!spec) {
        std::string what = fmt::format("{}: unknown key {} in [{}]", key, quote(name), section);
        if (auto m = closest(name, keys_of(section)))
            what += fmt::format(" (did you mean {}?)", *m);
        return unexpected(fmt::format("{}; allowed: {}", what, join(keys_of(section))));
    }

    // The value, typed by the schema.
    const std::string v = trim(value);
    std::unique_ptr<toml::node> node;
    auto integer = [&](std::string_view t) -> std::optional<int64_t> {
        int64_t x = 0;
        auto r = std::from_chars(t.data(), t.data() + t.size(), x);
        if (r.ec != std::errc() || r.ptr != t.data() + t.size())
            return std::nullopt;
        return x;
    };
    switch (spec->type) {
    case key_type::integer: {
        auto x = integer(v);
        if (!x)
            return unexpected(fmt::format("{}: expected an integer, got {}", key, quote(v)));
        node = std::make_unique<toml::value<int64_t>>(*x);
        break;
    }
    case key_type::boolean: {
        std::string l = to_lower(v);
        if (l == "true" || l == "yes" || l == "on")
            node = std::make_unique<toml::value<bool>>(true);
        else if (l == "false" || l == "no" || l == "off")
            node = std::make_unique<toml::value<bool>>(false);
        else
            return unexpected(fmt::format("{}: expected true or false, got {}", key, quote(v)));
        break;
    }
    case key_type::size:
        if (auto x = integer(v))
            node = std::make_unique<toml::value<int64_t>>(*x);
        else
            node = std::make_unique<toml::value<std::string>>(v);
        break;
    case key_type::string:
    case key_type::path:
    case key_type::enumeration: {
        std::string t = v;
        if (t.size() >= 2 && t.front() == '"' && t.back() == '"')
            t = t.substr(1, t.size() - 2);
        node = std::make_unique<toml::value<std::string>>(t);
        break;
    }
    case key_type::string_list: {
        auto arr = std::make_unique<toml::array>();
        for (auto& item : list_items(v))
            arr->push_back(item);
        node = std::move(arr);
        break;
    }
    }

    try {
        toml::table root = toml::parse(text, std::string_view("candidate"));
        toml::table* target = nullptr;
        if (!sec->array) {
            toml::node* n = root.get(section);
            if (!n) {
                root.insert_or_assign(section, toml::table{});
                n = root.get(section);
            }
            target = n->as_table();
            if (!target)
                return unexpected(fmt::format("{}: [{}] is not a table in the candidate", key, section));
        } else {
            toml::array* a = root.get(section) ? root.get(section)->as_array() : nullptr;
            size_t count = a ? a->size() : 0;
            auto index = integer(selector);
            if (index) {
                if (*index < 0 || size_t(*index) >= count)
                    return unexpected(fmt::format("{}: there is no {}[{}] (the candidate has {}); add one with load FILE",
                                                  key, section, *index, count));
                target = a->get(size_t(*index))->as_table();
            } else {
                // By name: a route's domain, a listener's or a content rule's name.
                const char* by = section == "route" ? "domain" : "name";
                for (size_t i = 0; i < count && !target; ++i)
                    if (auto* t = a->get(i)->as_table())
                        if (auto* nm = t->get(by); nm && nm->as_string() && nm->as_string()->get() == selector)
                            target = t;
                if (!target)
                    return unexpected(fmt::format("{}: no [[{}]] with {} = {}", key, section, by, quote(selector)));
            }
            if (!target)
                return unexpected(fmt::format("{}: {}[{}] is not a table", key, section, selector));
        }
        std::move(*node).visit([&](auto&& n) { target->insert_or_assign(name, std::move(n)); });
        std::ostringstream out;
        out << root << "\n";
        return out.str();
    } catch (const toml::parse_error& e) {
        return unexpected(fmt::format("the candidate is not valid TOML: {}", e.description()));
    } catch (const std::exception& e) {
        return unexpected(fmt::format("{}: {}", key, e.what()));
    }
}

}  // namespace rw::admin
