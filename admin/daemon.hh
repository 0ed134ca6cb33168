// The daemon's start-up and run loop, shared by ringwayd and its tests:
// validate the configuration, prepare ./var, bind every listener on every
// core (SO_REUSEPORT), run the engine until SIGTERM/SIGINT, drain, exit 0.
#pragma once

#include <string>

#include "admin/config.hh"

namespace rw::admin {

// Runs the daemon until a stop signal. Returns the process exit status;
// start-up problems are logged as one clear line and give status 1.
// start_note (which configuration version runs, and why) is logged first.
int run_daemon(const config& cfg, const std::string& start_note = {});

}  // namespace rw::admin
