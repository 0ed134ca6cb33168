// DKIM signing (RFC 6376 5, RFC 8463): the keyring of signing keys and the
// DKIM-Signature fields for an outgoing message. The body hash (relaxed,
// SHA-256, shared by every key) is computed while the message streams in
// by a dkim::body_hasher; signing needs only the header fields and that
// digest, so it never reads the body again.
//
// Keys are files named SELECTOR._domainkey.DOMAIN.pem (PKCS#8 PEM, RSA or
// Ed25519) in one directory; a domain may have several (an RSA and an
// Ed25519 key: dual signing, since not every receiver verifies Ed25519).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mail/header.hh"
#include "runtime/base/result.hh"

namespace rw::policy::dkim {

struct signing_key {
    std::string domain, selector;
    bool ed25519 = false;
    unsigned bits = 0;
    std::shared_ptr<void> pkey;  // EVP_PKEY, freed with it
    // The TXT record to publish at selector._domainkey.domain.
    std::string record() const;
};

// A PEM private key as a signing key (domain and selector given).
rw::result<signing_key, std::string> key_from_pem(std::string_view pem, std::string domain, std::string selector);

// A new key: PKCS#8 PEM. RSA of `bits` (2048 by default) or Ed25519.
rw::result<std::string, std::string> generate_key_pem(bool ed25519, unsigned bits = 2048);

class keyring {
public:
    // Every SELECTOR._domainkey.DOMAIN.pem in dir. A file that does not
    // load is an error naming it (nothing is half loaded). A missing
    // directory is an empty keyring.
    static rw::result<keyring, std::string> load_dir(const std::string& dir);
    void add(signing_key k);
    // The keys of domain, or of its closest parent domain that has keys.
    std::span<const signing_key> for_domain(std::string_view domain) const;
    size_t size() const noexcept { return _count; }
    // Every key, by domain then selector.
    std::vector<const signing_key*> all() const;

private:
    std::unordered_map<std::string, std::vector<signing_key>> _by_domain;
    size_t _count = 0;
};

// The keyring in force, replaced whole by a commit or a reload while
// sessions on every core read it (each message takes a reference).
class keyring_holder {
public:
    std::shared_ptr<const keyring> get() const { return _k.load(std::memory_order_acquire); }
    void set(std::shared_ptr<const keyring> k) { _k.store(std::move(k), std::memory_order_release); }

private:
    std::atomic<std::shared_ptr<const keyring>> _k;
};

struct sign_options {
    // Header fields to sign, each instance present; those in oversign once
    // more, so that an instance added later breaks the signature.
    std::vector<std::string> headers;
    std::vector<std::string> oversign;
    int64_t now = 0;
    int64_t expire_seconds = 0;  // x= now + this; 0: no x=
};

// The DKIM-Signature fields (CRLF-terminated, folded) for a message with
// these header fields and body hash (relaxed, SHA-256), one per key.
rw::result<std::string, std::string> sign(const std::vector<mail::header_field>& fields, std::string_view body_hash,
                                      std::span<const signing_key> keys, const sign_options& o);

// The signature over data with k (RSA: SHA-256; Ed25519: over data's
// SHA-256, RFC 8463 3); nothing if OpenSSL fails.
std::optional<std::string> sign_raw(const signing_key& k, std::string_view data);

// The canonical header data a signature covers: for each name, the lowest
// instance not yet taken (RFC 6376 5.4.2), the field at `exclude` never.
std::string signed_header_data(const std::vector<mail::header_field>& fields, const std::vector<std::string>& names,
                               bool relaxed, size_t exclude = SIZE_MAX);

}  // namespace rw::policy::dkim
