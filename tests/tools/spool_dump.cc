// spool_dump: prints every live message of a (stopped) spool as one JSON
// line: {"id":"…","from":"…","rcpts":[…],"params":"…","states":[…],"body_b64":"…"}.
// Integration tests use it to check byte-exact what the SMTP server queued.
// With --finish it first records every pending or deferred recipient as
// delivered, without removing the message: the state a crash leaves between
// a message's last recipient state and its removal.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "fs/spool.hh"
#include "mta/envelope_params.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"

using namespace rw;

namespace {
std::string b64(std::string_view in) {
    static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string o;
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
        o += t[v >> 18], o += t[(v >> 12) & 63], o += t[(v >> 6) & 63], o += t[v & 63];
    }
    if (i + 1 == in.size()) {
        uint32_t v = uint8_t(in[i]) << 16;
        o += t[v >> 18], o += t[(v >> 12) & 63], o += "==";
    } else if (i + 2 == in.size()) {
        uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
        o += t[v >> 18], o += t[(v >> 12) & 63], o += t[(v >> 6) & 63], o += '=';
    }
    return o;
}
std::string js(std::string_view s) {
    std::string o = "\"";
    journal::escape_json(o, s);
    return o + "\"";
}

task<int> dump(std::string path, bool finish) {
    auto dev = fs::file_device::open(path, fs::flush_mode::automatic);
    if (!dev) {
        std::fprintf(stderr, "%s\n", dev.error().c_str());
        co_return 1;
    }
    auto g = co_await fs::read_superblock(*dev.value());
    if (!g) {
        std::fprintf(stderr, "%s\n", g.error().c_str());
        co_return 1;
    }
    for (uint32_t sh = 0; sh < g.value().shard_count; ++sh) {
        auto s = co_await fs::shard::open(*dev.value(), g.value(), {.index = sh, .cleaner = false});
        if (!s) {
            std::fprintf(stderr, "%s\n", s.error().c_str());
            co_return 1;
        }
        for (uint64_t id : s.value()->live_ids()) {
            const size_t n = finish ? s.value()->find(id)->rcpts.size() : 0;
            for (uint32_t i = 0; i < n; ++i) {
                const auto st0 = s.value()->find(id)->rcpts[i].status;  // (re-found: the view may move meanwhile)
                if (st0 == fs::rcpt_status::delivered || st0 == fs::rcpt_status::bounced)
                    continue;
                // (A local, not a temporary in the co_await operand: g++ 12
                // frees such temporaries twice.)
                fs::rcpt_state done{fs::rcpt_status::delivered, 1, 0, "250 (spool_dump --finish)"};
                auto t = s.value()->set_rcpt_state(id, i, std::move(done));
                auto st = co_await std::move(t);
                if (!st) {
                    std::fprintf(stderr, "message %016llX: %s\n", (unsigned long long)id, st.error().detail.c_str());
                    co_return 1;
                }
            }
            auto v = s.value()->find(id);
            std::string body(v->message_bytes, '\0');
            auto r = co_await s.value()->read_message(id, 0, std::span<char>(body.data(), body.size()));
            if (!r) {
                std::fprintf(stderr, "message %016llX unreadable: %s\n", (unsigned long long)id, r.error().detail.c_str());
                co_return 1;
            }
            std::string line = fmt::format("{{\"id\":\"{:016X}\",\"from\":{},\"rcpts\":[", id, js(v->env.mail_from));
            for (size_t i = 0; i < v->env.rcpts.size(); ++i)
                line += (i ? "," : "") + js(v->env.rcpts[i]);
            // The parameters in their text form (mta/envelope_params.hh);
            // "?" plus the raw bytes when they do not decode.
            auto p = rw::mta::decode_params(v->env.params, v->env.rcpts.size());
            line += "],\"params\":" + js(p ? rw::mta::describe_params(*p) : "?" + v->env.params) + ",\"states\":[";
            for (size_t i = 0; i < v->rcpts.size(); ++i)
                line += fmt::format("{}{}", i ? "," : "", int(v->rcpts[i].status));
            line += "],\"body_b64\":\"" + b64(body) + "\"}\n";
            std::fwrite(line.data(), 1, line.size(), stdout);
        }
        co_await s.value()->close();
    }
    co_return 0;
}
}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Print a stopped spool's live messages as JSON lines"};
    std::string path;
    bool finish = false;
    app.add_option("--path", path)->required();
    app.add_flag("--finish", finish, "record every unfinished recipient as delivered first (the message stays)");
    CLI11_PARSE(app, argc, argv);
    set_log_level(log_level::warn);
    return run_local(dump(path, finish));
}
