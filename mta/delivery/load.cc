// Reading what a connection sends, on the core whose spool shard holds the
// message: the envelope and the head of the body first, the rest in chunks.
#include "mta/delivery/queue_impl.hh"

#include <algorithm>

#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/smp/smp.hh"

namespace rw::mta::delivery {

namespace {
logger lg("delivery");

}  // namespace

task<std::optional<loaded>> service::impl::load(fs::shard* sh, uint64_t id, std::vector<uint32_t> idx,
                                                bool with_body) {
    loaded L;
    uint64_t size = 0;
    {
        auto v = sh->find(id);
        if (!v)
            co_return std::nullopt;
        L.out.from = v->env.mail_from;
        for (uint32_t i : idx) {
            if (i >= v->rcpts.size())
                continue;
            auto s = v->rcpts[i].status;
            if (s == fs::rcpt_status::delivered || s == fs::rcpt_status::bounced)
                continue;
            L.out.rcpts.push_back(v->env.rcpts[i]);
            L.idx.push_back(i);
            L.attempts.push_back(v->rcpts[i].attempts);
        }
        const envelope_params p = read_params(id, v->env.params, v->rcpts.size());
        L.out.eight_bit = p.body == body_type::eight_bit_mime;
        L.out.smtputf8 = p.smtputf8;
        L.out.requiretls = p.requiretls;
        size = v->message_bytes;  // as delivered: with the header fields added
    }
    if (L.idx.empty())
        co_return std::nullopt;
    if (!with_body)
        co_return L;
    // The head (all of a small message) now, with the connection's
    // other work; the rest as the connection sends it.
    L.out.size = size;
    L.out.head.resize(std::min<uint64_t>(size, k_head_bytes));
    uint64_t off = 0;
    while (off < L.out.head.size()) {
        auto n = co_await sh->read_message(id, off, std::span<char>(L.out.head.data() + off, L.out.head.size() - off));
        if (!n || n.value() == 0) {
            lg.error("mid={} cannot read the body at {}: {}", mid_string(id), off,
                     n ? std::string("end of data") : n.error().detail);
            co_return std::nullopt;
        }
        off += n.value();
    }
    if (size > L.out.head.size()) {
        const unsigned origin = this_core();
        L.out.read_rest = [origin, sh, id](uint64_t at, std::span<char> out) {
            return read_from_origin(origin, sh, id, at, out);
        };
    }
    co_return L;
}

task<result<size_t, std::string>> service::impl::read_body_here(fs::shard* sh, uint64_t id, uint64_t off,
                                                                std::span<char> out) {
    auto n = co_await sh->read_message(id, off, out);
    if (!n) {
        lg.error("mid={} cannot read the body at {}: {}", mid_string(id), off, n.error().detail);
        co_return unexpected(n.error().detail);
    }
    co_return n.value();
}

task<result<size_t, std::string>> service::impl::read_from_origin(unsigned origin, fs::shard* sh, uint64_t id,
                                                                  uint64_t off, std::span<char> out) {
    auto fn = [sh, id, off, out]() { return read_body_here(sh, id, off, out); };
    auto t = submit_to(origin, std::move(fn));
    co_return co_await std::move(t);
}

task<std::optional<loaded>> service::impl::load_from_origin(unsigned origin, fs::shard* sh, uint64_t id,
                                                            std::vector<uint32_t> idx, bool with_body) {
    auto fn = [sh, id, idx = std::move(idx), with_body]() { return load(sh, id, idx, with_body); };
    auto t = submit_to(origin, std::move(fn));
    co_return co_await std::move(t);
}

}  // namespace rw::mta::delivery
