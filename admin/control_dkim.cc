// `dkim`: the signing keys (policy/dkim_sign.hh). genkey makes a key in
// authentication.dkim_key_dir and puts it in force at once; keys lists
// them with the record each needs in DNS; reload reads the directory
// again (after keys were copied in). Key generation and file I/O run off
// the reactor (offload); the keyring is replaced whole, so sessions on
// every core go on with the one they took.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "admin/control.hh"
#include "admin/control_commands.hh"
#include "admin/settings.hh"
#include "mail/domain.hh"
#include "policy/dkim_sign.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/smp/offload.hh"

namespace rw::admin::control_detail {

using json = nlohmann::json;

namespace {

const logger lg{"control"};

json key_json(const policy::dkim::signing_key& k) {
    return {{"domain", k.domain},
            {"selector", k.selector},
            {"type", k.ed25519 ? "ed25519" : "rsa"},
            {"bits", k.bits},
            {"dns_name", k.selector + "._domainkey." + k.domain},
            {"record", k.record()}};
}

std::string arg_string(const json& args, const char* name) {
    if (!args.contains(name))
        return {};
    if (!args[name].is_string())
        throw command_error(fmt::format("{} must be a string", name));
    return args[name].get<std::string>();
}

// Reads the directory off the reactor and puts the keyring in force.
task<size_t> reload(context& c) {
    const std::string dir = dkim_key_dir(in_force(c));
    auto load = [dir]() { return policy::dkim::keyring::load_dir(dir); };
    auto job = offload(std::move(load));
    auto kr = co_await std::move(job);
    if (!kr)
        throw command_error(kr.error());
    const size_t n = kr.value().size();
    c.reg->dkim_keys.set(std::make_shared<const policy::dkim::keyring>(std::move(kr.value())));
    co_return n;
}

}  // namespace

task<json> cmd_dkim(context& c, const peer_cred& who, const json& args) {
    const std::string action = arg_string(args, "action");
    if (action == "keys") {
        json keys = json::array();
        if (auto kr = c.reg->dkim_keys.get())
            for (const auto* k : kr->all())
                keys.push_back(key_json(*k));
        co_return json{{"dir", dkim_key_dir(in_force(c))}, {"keys", std::move(keys)}};
    }
    if (action == "reload") {
        auto t = reload(c);
        const size_t n = co_await std::move(t);
        lg.info("DKIM keys reloaded keys={} by {}", n, who.describe());
        co_return json{{"dir", dkim_key_dir(in_force(c))}, {"keys", n}};
    }
    if (action != "genkey")
        throw command_error("dkim: genkey, keys or reload");
    const std::string domain = mail::normalize_domain(arg_string(args, "domain"));
    const std::string selector = mail::lower_ascii(arg_string(args, "selector"));
    if (domain.empty() || selector.empty())
        throw command_error("dkim genkey DOMAIN SELECTOR [--type rsa|ed25519] [BITS]");
    if (const char* e = mail::check_domain(domain))
        throw command_error(fmt::format("{} is not a domain: {}", domain, e));
    if (const char* e = mail::check_domain(selector, {.utf8 = false, .underscore = true}))
        throw command_error(fmt::format("{} is not a selector: {}", selector, e));
    const std::string type = args.contains("type") ? arg_string(args, "type") : "rsa";
    if (type != "rsa" && type != "ed25519")
        throw command_error("type must be rsa or ed25519");
    const bool ed = type == "ed25519";
    int64_t bits = 2048;
    if (args.contains("bits")) {
        if (!args["bits"].is_number_integer() || ed)
            throw command_error("bits is a number, for RSA keys only");
        bits = args["bits"].get<int64_t>();
        if (bits < 1024 || bits > 4096)
            throw command_error("an RSA key has 1024..4096 bits (2048 is what receivers expect)");
    }
    const std::string dir = dkim_key_dir(in_force(c));
    const std::string path = fmt::format("{}/{}._domainkey.{}.pem", dir, selector, domain);
    // Generated and written off the reactor (an RSA key takes a while);
    // never over an existing key: a key in use must not change under DNS.
    auto make = [dir, path, ed, bits]() -> result<std::string, std::string> {
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec)
            return unexpected(fmt::format("cannot make {}: {}", dir, ec.message()));
        auto pem = policy::dkim::generate_key_pem(ed, unsigned(bits));
        if (!pem)
            return unexpected(pem.error());
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            return unexpected(errno == EEXIST ? fmt::format("{} exists: a key in use is not replaced (pick a new selector)", path)
                                              : fmt::format("cannot create {}: {}", path, std::strerror(errno)));
        const std::string& text = pem.value();
        const bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
        ::close(fd);
        if (!ok) {
            ::unlink(path.c_str());
            return unexpected(fmt::format("cannot write {}", path));
        }
        return text;
    };
    auto job = offload(std::move(make));
    auto made = co_await std::move(job);
    if (!made)
        throw command_error(made.error());
    auto key = policy::dkim::key_from_pem(made.value(), domain, selector);
    if (!key)
        throw command_error(key.error());
    auto t = reload(c);
    co_await std::move(t);
    lg.info("DKIM key made domain={} selector={} type={} file={} by {}", domain, selector, type, path, who.describe());
    journal::record("admin", {{"action", std::string_view("dkim genkey")},
                              {"domain", std::string_view(domain)},
                              {"selector", std::string_view(selector)},
                              {"uid", uint64_t(who.uid)}});
    json out = key_json(key.value());
    out["file"] = path;
    co_return out;
}

}  // namespace rw::admin::control_detail
