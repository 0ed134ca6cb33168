// The store of committed configuration versions ([control] config_dir):
// version N is N.toml (the configuration as committed) and N.json (when,
// who, the comment and the diff against the version before). Each file is
// written to a temporary name, fsynced and renamed, then the directory is
// fsynced, so a crash leaves the old version or the new one, never half of
// one. start.json remembers the text ringwayd was last started from, so
// that a changed --config file wins over the store at the next start.
//
// Plain blocking file I/O: call at start-up, or through offload() from a
// reactor. Not thread-safe: the control socket serialises commits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "admin/config.hh"
#include "runtime/base/result.hh"

namespace rw::admin {

struct version_info {
    uint64_t number = 0;
    int64_t time = 0;       // Unix seconds
    std::string who;        // "uid=0(root) pid=123", or "ringwayd" for start-up
    std::string comment;
    std::string diff;       // format_diff() against the version before
};

class config_store {
public:
    config_store(std::string dir, unsigned keep) : _dir(std::move(dir)), _keep(keep) {}

    const std::string& dir() const { return _dir; }
    // How many versions commit() keeps (control.history_versions).
    void set_keep(unsigned keep) { _keep = keep; }
    // Creates the directory (and its parents) if missing.
    result<void, std::string> open();
    // The newest version number; 0 when there is none.
    uint64_t latest() const;
    result<std::string, std::string> text(uint64_t n) const;
    result<version_info, std::string> info(uint64_t n) const;
    // Newest first, at most `max`.
    std::vector<version_info> history(size_t max) const;
    // Writes version latest()+1 and deletes those beyond `keep`. Returns its number.
    result<uint64_t, std::string> commit(const std::string& text, version_info meta);

    // The hash of the text ringwayd was last started from ("" when unknown).
    std::string start_hash() const;
    result<void, std::string> set_start_hash(const std::string& hash);

    // A fingerprint of text for change detection (FNV-1a 64, hex; not a MAC).
    static std::string hash_of(const std::string& text);

private:
    std::string path(uint64_t n, const char* ext) const;
    std::string _dir;
    unsigned _keep;
};

// What ringwayd starts on, given the configuration it was started with
// (the --config file or the embedded default, and its text): the newest
// committed version, unless that text changed since the last start (or
// the store is empty), in which case the text is committed as a new
// version and used. `note` says which, for the log. A store that cannot
// be used is a warning in `note`; the given configuration runs.
struct start_config {
    config cfg;
    uint64_t version = 0;  // 0: not in the store
    std::string note;
};
start_config choose_start_config(config given, const std::string& given_text);

}  // namespace rw::admin
