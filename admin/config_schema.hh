// The configuration schema: one entry per key, saying its section, name,
// type, range, unit, documentation, whether a commit applies it live, and
// how to read its value out of a loaded `config`. From it come the loader's
// key lists and ranges, the embedded default (--print-default-config), the
// reference (docs/config.md, --print-config-reference), the canonical TOML
// of a running configuration (`showconfig`) and the key-by-key `diff` of
// two configurations.
//
// Adding a key: a member in admin/config.hh with its default and an entry
// in config_schema.cc. Integers, booleans, sizes and enumerations are then
// read, range-checked and set by the loader from the entry alone
// (loader::read_simple); strings, paths and lists, whose checks are their
// own (domains, networks, next hops), and checks across keys are coded in
// config_sections.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "admin/config.hh"
#include "runtime/base/result.hh"

namespace rw::admin {

// A key's value as TOML sees it: absent (not set, nothing shown), a
// boolean, an integer, a string or an array of strings.
using key_value = std::variant<std::monostate, bool, int64_t, std::string, std::vector<std::string>>;

enum class key_type { integer, boolean, string, path, size, enumeration, string_list };
std::string_view to_string(key_type t);

// What a commit does with a changed key.
enum class apply_mode {
    live,     // every core takes it at once; new sessions and deliveries use it
    restart,  // kept with the version; takes effect when ringwayd next starts
};
std::string_view to_string(apply_mode a);

struct key_spec {
    std::string_view section;  // "runtime", "listener", ...
    std::string_view name;     // "cores", "max_connections"
    key_type type;
    int64_t lo = 0, hi = 0;    // integer: the range; size: in bytes
    std::string_view allowed;  // what an error says is allowed; empty: "lo..hi"
    std::string_view unit;     // "ms", "s", "bytes", "messages", ... (for the reference)
    apply_mode apply;
    std::string_view doc;      // what it means (plain sentences; wrapped when printed)
    bool required = false;
    std::string_view example;  // a TOML value shown commented out when the default is absent
    std::span<const std::string_view> choices{};  // enumeration
    // The value in its section's struct (runtime_config, listener_config...:
    // what section_spec::of gives), and the loader's way to set it once
    // validated. Lists keep their own reading (each element is checked);
    // their setter does nothing.
    key_value (*get)(const void* section_struct) = nullptr;
    void (*set)(void* section_struct, const key_value& v) = nullptr;

    std::string path() const;  // "runtime.cores"
    // The value in a loaded config; `index` picks the [[listener]] / [[route]].
    key_value value_in(const config& c, size_t index) const;
};

struct section_spec {
    std::string_view name;
    bool array;             // [[listener]], [[route]]
    std::string_view doc;
};

std::span<const section_spec> config_sections();
std::span<const key_spec> config_keys();
// The keys of one section, in schema order.
std::vector<const key_spec*> section_keys(std::string_view section);
const key_spec* find_key(std::string_view section, std::string_view name);

// The TOML text of a value ("2525", "true", "\"50M\"", "[\"a\", \"b\"]").
std::string toml_text(const key_value& v);

// A configuration as a flat list of (key path, TOML value) in schema order,
// listeners and routes by index: ("listener[0].port", "2525"). Absent
// values are left out.
using flat_config = std::vector<std::pair<std::string, std::string>>;
flat_config flatten(const config& c);

// The canonical TOML of a configuration: every section, every key with a
// value, no comments. Loading it gives the same configuration.
std::string to_toml(const config& c);
// Only one section ("smtp", "listener", ...); empty when there is none.
std::string to_toml(const config& c, std::string_view section);

// One changed key between two configurations.
struct key_change {
    std::string key;              // "delivery.max_connections_per_destination"
    std::string before, after;    // TOML text; empty when absent on that side
    apply_mode apply;
};
std::vector<key_change> diff(const config& before, const config& after);
// "  delivery.max_connections_per_destination: 20 -> 5" lines.
std::string format_diff(const std::vector<key_change>& changes);

// What a commit of `committed` makes of the running configuration: its
// live keys, with every restart key kept as `running` has it (and the
// listeners as they are, when the commit adds, removes or renames one). A unit test
// holds this to the schema's apply flags.
config effective_config(const config& running, const config& committed);
// Whether two configurations have the same listeners by name, in order.
bool same_listener_names(const config& a, const config& b);

// Sets one key in a configuration's TOML text and returns the new text (as
// toml++ writes it: comments are not kept). KEY is "section.key",
// "listener[N].key" / "route[N].key", or by name: "listener[smtp].key",
// "route[example.test].hosts". VALUE is read by the key's type: an
// integer, true/false, a size ("50M" or bytes), a string as it is, or a
// list of strings separated by commas or spaces ("a.test, b.test";
// brackets and double quotes are optional; "" or [] is the empty list).
// The result is not validated: load it to see its problems.
result<std::string, std::string> set_config_key(const std::string& text, std::string_view key,
                                                std::string_view value);

// The embedded default (every key, documented), generated from the schema.
std::string render_default_toml();
// The reference in Markdown (docs/config.md).
std::string render_reference_markdown();

}  // namespace rw::admin
