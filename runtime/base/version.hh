// The version every binary prints for --version.
#pragma once

#ifndef RINGWAY_VERSION
#define RINGWAY_VERSION "0.1.0"
#endif
