// The shell's commands: names, arguments, help, how each becomes a control
// request and how its result is printed. One table drives parsing, `help`,
// tab completion and the usage line of every error.
#pragma once

#include <functional>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace rw::admin::shell {

class client;

struct arg_spec {
    // choice, domain, mid, word: positional. flag and keyword: in any order
    // after the command ("follow", "mid MID"), for commands with filters.
    // key: a configuration key (completed from the schema); number: a
    // positive integer; file: a file the shell reads and sends as "text";
    // rest: every remaining word, joined by spaces (last only).
    enum kind_t { choice, domain, mid, word, flag, keyword, key, number, file, rest };
    std::string name;  // shown in usage (DOMAIN, MID) and the request key
    kind_t kind = word;
    std::vector<std::string> choices;  // for choice
    bool optional = false;
    bool as_flag = false;  // a one-choice word sent as "name": true
};

// The outcome of one command line.
struct outcome {
    int status = 0;   // 0 ok, 1 refused or failed, 2 usage
    std::string out;  // for stdout
    std::string err;  // for stderr (one line)
    bool quit = false;
};

struct command {
    std::string name;
    std::string request;  // the control command ("" = handled by the shell)
    std::vector<arg_spec> args;
    std::string summary;  // one line, for `help`
    std::string help;     // more, for `help NAME`
    std::function<std::string(const nlohmann::json& result)> format;
    bool streams = false;  // events are printed as they come (tail)
    // Commands with their own parsing (the appliance's): the usage line,
    // and what runs them instead of a control request.
    std::string usage_text;
    std::function<outcome(const std::vector<std::string>& words, bool json_out,
                                 const std::function<bool()>& interrupted)>
        run;
    std::string usage() const;
};

const std::vector<command>& commands();
// The appliance's commands (admin/shell/appliance.cc): network, SSH, time,
// power, upgrades, the spool disk, and loadtest.
void add_appliance_commands(std::vector<command>& v);
const command* find_command(std::string_view name);

// Splits a line into words (double quotes group; no other expansion).
std::vector<std::string> split_words(std::string_view line);


// Runs words[0] with its arguments: help and quit here, the rest through
// the daemon (c may be null when there is no daemon: those say so).
// A streaming command prints its events to stdout as they come, until
// interrupted() (Ctrl-C while following) or the daemon ends it.
outcome run_words(client* c, const std::vector<std::string>& words, bool json_out,
                  const std::function<bool()>& interrupted = [] { return false; });

// "30m", "2h", "1d" (ago), Unix seconds, or "2026-12-04T21:00:00Z" /
// "2026-12-04 21:00" (UTC) -> Unix seconds; nullopt when unreadable.
std::optional<int64_t> parse_time(std::string_view s, int64_t now);

// Completion candidates for the word being typed, given the words before
// it. Domains come from the daemon (fetch may return an empty list).
std::vector<std::string> complete(const std::vector<std::string>& before, std::string_view prefix,
                                  const std::function<std::vector<std::string>()>& fetch_domains);

}  // namespace rw::admin::shell
