// A configuration turned into each layer's options: listener options for
// mta's sessions, the relay policy for policy, delivery options (routes,
// internal hosts) for mta/delivery. Used by ringwayd when it starts and
// at every commit, and by `trace` to judge facts against a configuration
// without running it.
#pragma once

#include "admin/config.hh"
#include "mta/delivery/delivery.hh"
#include "mta/smtp/server.hh"
#include "policy/relay.hh"
#include "runtime/base/result.hh"

namespace rw::admin {

mta::listener_options to_options(const listener_config& l);

// Hosts were validated by the loader; IP literals are resolved here once,
// names at delivery time.
mta::delivery::route_host to_route_host(const std::string& s, uint16_t default_port);

// Routes first, then the accepted domains to the internal hosts (unless a
// route names them).
mta::delivery::options delivery_options(const config& cfg);
// [authentication] for the SMTP server.
mta::authentication_options authentication_options(const config& cfg);
// Where the DKIM signing keys are: authentication.dkim_key_dir, or
// control.config_dir/dkim.
std::string dkim_key_dir(const config& cfg);

// The relay policy of [smtp]. An error for a network policy cannot use
// (the loader has already refused those).
result<policy::relay_config, std::string> relay_options(const config& cfg);

// Sender groups, mail flow policies and screening ([[sender_group]],
// [[mail_flow_policy]], [screening]) for the SMTP server; the built-in
// groups and policies are added here. `passed`: the pass cache, which
// outlives configurations. An error for what the loader has already refused.
// [antivirus] and [antispam] for the SMTP server.
result<std::unique_ptr<mta::scan::options>, std::string> scan_options(const config& cfg);

// `answers`: the call-ahead cache, likewise.
result<std::unique_ptr<mta::access_env>, std::string> access_options(const config& cfg, mta::pass_cache* passed,
                                                                     mta::call_ahead_cache* answers);

}  // namespace rw::admin
