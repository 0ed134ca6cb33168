// The control socket's commands (not for use outside admin/control*.cc):
// each takes the request's "args" object and returns its "result", or
// throws command_error with a one-line reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <nlohmann/json_fwd.hpp>
#include <stdexcept>
#include <string>

#include "admin/config.hh"
#include "admin/config_store.hh"
#include "admin/registry.hh"
#include "policy/dmarc_report.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/sync.hh"
#include "runtime/reactor/task.hh"

namespace rw::admin {
struct peer_cred;
}

namespace rw::admin::control_detail {

struct command_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Counters summed over every core at one moment.
struct totals {
    uint64_t sessions = 0, messages = 0, recipients = 0, rejected = 0;
    uint64_t delivered = 0, deferred = 0, bounced = 0, dsn = 0, connections_out = 0;
    std::map<int, uint64_t> rejected_by_code;
};

struct context {
    registry* reg = nullptr;
    const config* cfg = nullptr;
    std::string state_dir;  // suspensions.json lives here (beside the spool)
    // The persistent suspensions.
    std::set<std::string> suspended_delivery;  // "" = all
    // Suspended listeners by name, each with the token of its pending
    // close of open sessions (a resume or a new suspend makes it stale).
    std::map<std::string, uint64_t> suspended_listeners;
    uint64_t suspension_seq = 0;
    bool saving_suspensions = false;  // one save at a time, each of the newest state
    // Samples for the 1/5/15-minute rates, every k_sample_period, newest last.
    std::deque<std::pair<std::chrono::steady_clock::time_point, totals>> samples;
    totals base;  // `counters reset` subtracts this
    // Configuration: the candidate every shell shares (TOML text; none
    // until a set or load), the version store and the version in force.
    std::optional<std::string> candidate;
    std::string candidate_by;  // who changed it last
    std::unique_ptr<config_store> store;  // null: no version history
    uint64_t version = 0;
    bool committing = false;  // commits are applied one at a time
    bool stopping = false;
    // DMARC aggregate-report data gathered from the cores (control_dmarc.cc).
    policy::dmarc_report::store dmarc;
    bool dmarc_saving = false;
    cancel_token dmarc_stop;  // a token holds one wait at a time: the reporter's own
    cancel_token sampler_stop;
    gate tasks;
};

// The configuration in force (the last commit applied; the start-up one
// before any).
inline const config& in_force(const context& c) { return c.reg->running ? *c.reg->running : *c.cfg; }

// Writes text to path through a temporary file, fsync and rename, then
// fsyncs the directory: the old file or the new one survives a crash,
// never a part. Blocking: call through offload(). "" or why not.
std::string write_file_durably(const std::string& path, const std::string& text);

// Loads the persisted suspensions and applies them; starts the sampler.
task<void> start(context& c);
// Ends the sampler (the reactor is stopping).
void stop(context& c);
// Waits for what start() spawned.
task<void> stopped(context& c);

// The configuration commands (control_config.cc): showconfig, set, load,
// diff, commit, abandon, history, rollback. is_config_command says which.
bool is_config_command(const std::string& cmd);
task<nlohmann::json> config_command(context& c, const peer_cred& who, const std::string& cmd,
                                    const nlohmann::json& args);
// "pending_restart": the committed keys that wait for a restart.
nlohmann::json pending_restart(const context& c);

// `trace` (control_trace.cc): one imagined transaction through every
// policy stage, nothing queued.
task<nlohmann::json> trace(context& c, const nlohmann::json& args);

// DMARC aggregate reports (admin/control_dmarc.cc): dmarc_load reads the
// saved data at start; dmarc_reporter gathers, saves and sends the daily
// reports until the control plane stops; `dmarc show|xml|send`.
void dmarc_load(context& c);
task<void> dmarc_reporter(context* c);
task<nlohmann::json> cmd_dmarc(context& c, const peer_cred& who, const nlohmann::json& args);

// `warmup status` and `providers` (admin/control_delivery.cc).
task<nlohmann::json> cmd_warmup(context& c, const peer_cred& who, const nlohmann::json& args);
task<nlohmann::json> cmd_providers(context& c, const peer_cred& who, const nlohmann::json& args);

// dkim genkey|keys|reload (admin/control_dkim.cc).
task<nlohmann::json> cmd_dkim(context& c, const peer_cred& who, const nlohmann::json& args);
task<nlohmann::json> dispatch(context& c, const peer_cred& who, const std::string& cmd, const nlohmann::json& args);

// `tail`: the last `lines` records of the mail log matching the filters,
// each passed to send(); with follow, then every new one until gone()
// says the client left, send() fails or the daemon stops. Returns the
// closing result.
using event_sink = std::function<task<bool>(const nlohmann::json& event)>;
task<nlohmann::json> tail(context& c, const nlohmann::json& args, event_sink send, std::function<bool()> gone,
                          cancel_token* stop);

}  // namespace rw::admin::control_detail
