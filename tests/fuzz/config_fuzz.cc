// Fuzz target: arbitrary bytes as a configuration file (admin/config.hh).
// Checked, besides never crashing or throwing: an error names the source
// and ends each problem on its own line; an accepted configuration has what
// every loaded one has (a listener, a hostname, a spool path) and loading
// the same text again gives the same configuration.
//
// Built with clang's libFuzzer in the fuzz mode; otherwise fuzz_main.cc
// replays the corpus in tests/data/fuzz/config as a ctest.
#include <cstdint>
#include <string_view>

#include "admin/config.hh"
#include "runtime/base/assert.hh"

using namespace rw::admin;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto c = load_config_text(text, "fuzz.toml");
    if (!c) {
        const std::string& e = c.error();
        RW_ASSERT(!e.empty());
        RW_ASSERT(e.starts_with("fuzz.toml"), "error without its source: {}", e.substr(0, 200));
        return 0;
    }
    const config& v = c.value();
    RW_ASSERT(!v.listeners.empty(), "a loaded configuration has a listener");
    RW_ASSERT(!v.smtp.hostname.empty(), "a loaded configuration has a hostname");
    RW_ASSERT(!v.spool.path.empty());
    RW_ASSERT(v.source == "fuzz.toml");
    for (const auto& l : v.listeners) {
        RW_ASSERT(l.max_line_length_bytes >= 1000 && l.max_line_length_bytes <= (64u << 20));
        RW_ASSERT(l.max_connections >= 1);
    }
    auto again = load_config_text(text, "fuzz.toml");
    RW_ASSERT(again.has_value());
    const config& w = again.value();
    RW_ASSERT(w.runtime == v.runtime && w.dns == v.dns && w.spool == v.spool && w.listeners == v.listeners &&
                  w.smtp == v.smtp && w.delivery == v.delivery && w.routes == v.routes && w.notes == v.notes,
              "loading the same text twice gave two configurations");
    return 0;
}
