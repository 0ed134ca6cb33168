// The configuration loader's walk over a parsed TOML tree (config_walk.cc:
// tables, keys and typed values with their diagnostics) and its section
// readers (config_sections.cc). Included only by the loader's files: toml++
// is header-heavy. Not for use outside admin/.
#pragma once

#include <sys/un.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

// The tomlplusplus CMake target links Debian's shared libtomlplusplus
// (TOML_HEADER_ONLY=0), so only declarations are compiled here. Its
// configuration macros must match the library's, so none are set here.
#include <toml++/toml.h>

#include "admin/config.hh"
#include "admin/config_schema.hh"
#include "admin/config_values.hh"

namespace rw::admin::detail {

// The sections and the keys of each table, in schema order (and "allowed:"
// lists them in that order).
key_list section_names();
key_list keys_of(std::string_view section);
// "[runtime], [dns], ..., [[listener]], ..."
const std::string& sections_allowed();

inline bool contains(key_list l, std::string_view k) {
    return std::find(l.begin(), l.end(), k) != l.end();
}

// What a TOML node is, for "expected X, got Y".
std::string describe(const toml::node& n);

inline uint32_t line_of(const toml::node& n, uint32_t fallback) {
    uint32_t l = n.source().begin.line;
    return l != 0 ? l : fallback;
}

// A table being read: where it is and how to name its keys.
struct section {
    const toml::table* t = nullptr;  // null: absent (defaults apply)
    std::string path;                // "runtime", "listener[1]"
    uint32_t line = 0;               // of its header; 0 if absent

    std::string_view name() const {  // "listener" for "listener[1]"
        std::string_view p = path;
        return p.substr(0, p.find('['));
    }

    std::string key(std::string_view k) const { return fmt::format("{}.{}", path, k); }
    const toml::node* get(std::string_view k) const { return t ? t->get(k) : nullptr; }
};

struct diagnostic {
    uint32_t line;  // 0: about the file as a whole
    std::string text;
};

// Walks a parsed document and fills a config, collecting diagnostics.
class loader {
public:
    explicit loader(std::string_view source) : _source(source) {}

    result<config, std::string> run(const toml::table& root);

private:
    // -- diagnostics --
    std::string format(uint32_t line, std::string_view key, std::string_view what, std::string_view allowed) const {
        std::string s(_source);
        if (line != 0)
            s += fmt::format(":{}", line);
        s += ": ";
        if (!key.empty()) {
            s += key;
            s += ": ";
        }
        s += what;
        if (!allowed.empty()) {
            s += "; allowed: ";
            s += allowed;
        }
        return s;
    }
    void error(uint32_t line, std::string_view key, std::string_view what, std::string_view allowed) {
        _errors.push_back({line, format(line, key, what, allowed)});
    }
    void note(uint32_t line, std::string_view key, std::string_view what) {
        _notes.push_back({line, format(line, key, what, {})});
    }
    void type_error(const section& s, std::string_view k, const toml::node& n, std::string_view expected,
                    std::string_view allowed) {
        error(line_of(n, s.line), s.key(k), fmt::format("expected {}, got {}", expected, describe(n)), allowed);
    }
    void missing(const section& s, std::string_view k, std::string_view allowed) {
        if (s.t && !s.get(k))
            error(s.line, s.key(k), "missing (required)", allowed);
    }

    // -- tables --
    section open_table(const toml::table& root, std::string_view name);
    void check_root_keys(const toml::table& root);
    void check_keys(const section& s, key_list allowed);

    // Each table of the array of tables `name` ([[name]]), as a section
    // with its keys checked ("name[i]"), in file order; an absent array
    // is no error, one that is not an array of tables is, as is one longer
    // than max.
    template <typename F>
    void for_each_table(const toml::table& root, std::string_view name, std::string_view allowed, size_t max, F each);

    // -- values; each leaves `out` alone when the key is absent or bad --
    std::optional<int64_t> read_int(const section& s, std::string_view k, int64_t lo, int64_t hi,
                                    std::string_view allowed);
    template <typename T>
    void set_int(const section& s, std::string_view k, int64_t lo, int64_t hi, std::string_view allowed, T& out) {
        if (auto v = read_int(s, k, lo, hi, allowed))
            out = T(*v);
    }
    // An integer key with the range and "allowed" of its schema entry.
    const key_spec& spec(const section& s, std::string_view k) const;
    template <typename T>
    void set_int(const section& s, std::string_view k, T& out) {
        const key_spec& ks = spec(s, k);
        if (auto v = read_int(s, k, ks.lo, ks.hi, ks.allowed))
            out = T(*v);
    }
    template <typename R, typename P>
    void set_int(const section& s, std::string_view k, std::chrono::duration<R, P>& out) {
        const key_spec& ks = spec(s, k);
        if (auto v = read_int(s, k, ks.lo, ks.hi, ks.allowed))
            out = std::chrono::duration<R, P>(*v);
    }
    // Every integer, boolean, size and enumeration key of the section,
    // checked and set as its schema entry says; `out` is the section's
    // struct. The section readers then do what is particular to them.
    void read_simple(const section& s, void* out);
    void set_size(const section& s, std::string_view k, uint64_t& out) {
        const key_spec& ks = spec(s, k);
        set_size(s, k, uint64_t(ks.lo), uint64_t(ks.hi), out);
    }
    void set_bool(const section& s, std::string_view k, bool& out);
    std::optional<std::string> read_string(const section& s, std::string_view k, std::string_view allowed);
    void set_path(const section& s, std::string_view k, bool allow_empty, std::string_view allowed,
                  std::string& out);
    void set_size(const section& s, std::string_view k, uint64_t lo, uint64_t hi, uint64_t& out);
    template <typename E>
    void set_enum(const section& s, std::string_view k, std::initializer_list<std::pair<std::string_view, E>> choices,
                  E& out);
    // Calls each(line, key path, value) for every string in an array; reports
    // the elements that are not strings.
    template <typename F>
    void for_each_string(const section& s, std::string_view k, size_t max, std::string_view allowed, F each);

    // -- sections --
    void read_runtime(const section& s, runtime_config& out);
    void read_dns(const section& s, dns_config& out);
    void read_spool(const section& s, spool_config& out);
    void read_listeners(const toml::table& root, config& c);
    void read_listener(const section& s, listener_config& out);
    void check_listeners(const config& c);
    void read_smtp(const section& s, smtp_config& out);
    void read_control(const section& s, control_config& out);
    void read_metrics(const section& s, metrics_config& out);
    void read_conservation(const section& s, conservation_config& out);
    void read_authentication(const section& s, authentication_config& out);
    void read_delivery(const section& s, delivery_config& out);
    void read_sources(const toml::table& root, config& c);  // [[source]], [[pool]], delivery.default_pool
    static bool pool_exists(const config& c, std::string_view name);
    // A key naming a pool: absent, empty, or a [[pool]] name.
    void read_pool_ref(const section& s, const config& c, std::string& out);
    void read_routes(const toml::table& root, config& c);
    void read_content_rules(const toml::table& root, config& c);
    void read_quarantines(const toml::table& root, config& c);
    static bool quarantine_exists(const config& c, std::string_view name);
    void read_screening(const section& s, screening_config& out);
    void read_flow_policies(const toml::table& root, config& c);
    void read_sender_groups(const toml::table& root, config& c);
    void read_recipient_access(const toml::table& root, config& c);
    void read_call_ahead(const section& s, config& c);
    void read_scanners(const toml::table& root, config& c);
    // A [[...]] table's name: letters, digits, '-', '_', '.'; unique among `taken`.
    template <typename T>
    bool read_name(const section& s, const std::vector<T>& taken, std::string_view what, std::string& out);
    void check_hosts(const section& s, std::string_view k, std::vector<std::string>& out);

    std::string_view _source;
    std::vector<diagnostic> _errors;
    std::vector<diagnostic> _notes;
    // Lines of each listener's table and keys, for cross-listener checks.
    struct listener_lines {
        size_t index = 0;  // in the [[listener]] array (elements that are not tables are skipped)
        uint32_t table = 0, name = 0, port = 0, max_message_size = 0;
    };
    std::vector<listener_lines> _listener_lines;
};

template <typename F>
void loader::for_each_table(const toml::table& root, std::string_view name, std::string_view allowed, size_t max,
                            F each) {
    const toml::node* n = root.get(name);
    if (!n)
        return;
    const toml::array* a = n->as_array();
    if (!a) {
        error(line_of(*n, 0), name,
              fmt::format("expected an array of tables ([[{}]], with two brackets), got {}", name, describe(*n)),
              allowed);
        return;
    }
    if (a->size() > max) {
        error(line_of(*n, 0), name, fmt::format("{} tables", a->size()), fmt::format("at most {}", max));
        return;
    }
    for (size_t i = 0; i < a->size(); ++i) {
        const toml::node& e = *a->get(i);
        std::string path = fmt::format("{}[{}]", name, i);
        const toml::table* t = e.as_table();
        if (!t) {
            error(line_of(e, line_of(*n, 0)), path, fmt::format("expected a table, got {}", describe(e)), allowed);
            continue;
        }
        section s{t, path, line_of(*t, line_of(*n, 0))};
        check_keys(s, keys_of(s.name()));
        each(s);
    }
}

template <typename E>
void loader::set_enum(const section& s, std::string_view k,
                      std::initializer_list<std::pair<std::string_view, E>> choices, E& out) {
    std::vector<std::string_view> names;
    for (const auto& c : choices)
        names.push_back(c.first);
    key_list name_list(names);
    std::string allowed = quote_list(name_list);
    auto v = read_string(s, k, allowed);
    if (!v)
        return;
    for (const auto& c : choices)
        if (*v == c.first) {
            out = c.second;
            return;
        }
    std::string what = fmt::format("unknown value {}", quote(*v));
    if (auto m = closest(to_lower(*v), name_list))
        what += fmt::format(" (did you mean \"{}\"?)", *m);
    error(line_of(*s.get(k), s.line), s.key(k), what, allowed);
}

template <typename F>
void loader::for_each_string(const section& s, std::string_view k, size_t max, std::string_view allowed, F each) {
    const toml::node* n = s.get(k);
    if (!n)
        return;
    const toml::array* a = n->as_array();
    std::string list_allowed = fmt::format("an array of up to {} strings, each {}", max, allowed);
    if (!a) {
        type_error(s, k, *n, "an array of strings", list_allowed);
        return;
    }
    if (a->size() > max) {
        error(line_of(*n, s.line), s.key(k), fmt::format("{} entries", a->size()), list_allowed);
        return;
    }
    for (size_t i = 0; i < a->size(); ++i) {
        const toml::node& e = *a->get(i);
        std::string path = fmt::format("{}.{}[{}]", s.path, k, i);
        uint32_t line = line_of(e, line_of(*n, s.line));
        if (const auto* str = e.as_string())
            each(line, path, str->get());
        else
            error(line, path, fmt::format("expected a string, got {}", describe(e)), allowed);
    }
}

}  // namespace rw::admin::detail
