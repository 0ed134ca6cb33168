// Upgrade bundles and the boot loader's slot switch.
//
// A bundle (made by image/bundle) is a tar archive of three members, in
// this order: `manifest` (format, version, the root image's SHA-256 and
// size), `manifest.sig` (an Ed25519 signature of the manifest) and
// `root.squashfs` (the new root slot). install_bundle reads it as a stream
// (a pipe from the shell: the appliance has no room to keep a copy) and
//   1. refuses it unless the manifest's signature verifies against the key
//      built into the running image, before a byte of the slot is written;
//   2. writes the root image to the inactive slot while hashing it, then
//      reads it back from the disk, and refuses it unless both hashes match
//      the signed manifest (a refused slot is wiped so it never boots).
// Only then may the caller point the boot loader at the slot.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "runtime/base/result.hh"

namespace rw::admin::appliance {

struct bundle_manifest {
    int format = 0;
    std::string version;
    std::string root_sha256;  // lower-case hex
    uint64_t root_bytes = 0;
};

result<bundle_manifest, std::string> parse_manifest(std::string_view text);

// Ed25519 over the whole message; pubkey_pem: a PEM public key.
result<void, std::string> verify_signature(std::string_view message, std::string_view signature,
                                           std::string_view pubkey_pem);

// progress(bytes written so far, bytes in all).
using progress_fn = std::function<void(uint64_t, uint64_t)>;
result<bundle_manifest, std::string> install_bundle(int in_fd, const std::string& slot_path,
                                                    std::string_view pubkey_pem, const progress_fn& progress);

// True when the device (or file) starts with a squashfs superblock.
bool holds_squashfs(const std::string& path);

// GRUB's environment block (grubenv): 1024 bytes, "# GRUB Environment
// Block", name=value lines, '#' padding. Written in place, never resized
// (GRUB's save_env writes the same blocks), and synced.
result<std::map<std::string, std::string>, std::string> read_grubenv(const std::string& path);
// Sets the given names ("" erases one) and keeps the others.
result<void, std::string> update_grubenv(const std::string& path, const std::map<std::string, std::string>& changes);

}  // namespace rw::admin::appliance
