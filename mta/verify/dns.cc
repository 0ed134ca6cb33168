#include "mta/verify/dns.hh"

#include <fmt/format.h>

#include "runtime/reactor/sync.hh"

namespace rw::mta::verify {

namespace {

struct batch {
    size_t left = 0;
    event done;
};

template <typename T>
void fill_status(const net::dns_result<T>& r, policy::dns_answer& out) {
    if (r) {
        out.status = policy::dns_status::ok;
        return;
    }
    out.error = r.error().describe();
    switch (r.error().code) {
    case net::dns_errc::nxdomain: out.status = policy::dns_status::nxdomain; break;
    case net::dns_errc::nodata: out.status = policy::dns_status::nodata; break;
    case net::dns_errc::bad_name: out.status = policy::dns_status::bad_name; break;
    default: out.status = policy::dns_status::temporary; break;
    }
}

// g++ 12: every task is bound to a local before it is awaited (a
// temporary in a co_await operand is miscompiled).
task<void> ask(net::resolver& r, policy::dns_query q, policy::dns_answer* out, batch* b) {
    if (q.type == policy::rrtype::a || q.type == policy::rrtype::aaaa) {
        task<net::dns_result<net::address>> t =
            q.type == policy::rrtype::a ? r.resolve_a(q.name) : r.resolve_aaaa(q.name);
        net::dns_result<net::address> res = co_await std::move(t);
        fill_status(res, *out);
        if (res)
            out->addrs = std::move(res.value());
    } else if (q.type == policy::rrtype::mx) {
        task<net::dns_result<net::mx_record>> t = r.resolve_mx(q.name);
        net::dns_result<net::mx_record> res = co_await std::move(t);
        fill_status(res, *out);
        if (res)
            for (auto& m : res.value())
                out->names.push_back(std::move(m.host));
    } else {
        task<net::dns_result<std::string>> t =
            q.type == policy::rrtype::txt ? r.resolve_txt(q.name) : r.resolve_ptr(q.name);
        net::dns_result<std::string> res = co_await std::move(t);
        fill_status(res, *out);
        if (res)
            out->names = std::move(res.value());
    }
    if (--b->left == 0)
        b->done.set();
}

}  // namespace

task<void> resolve(net::resolver& r, std::span<const policy::dns_query> queries, policy::dns_answers& answers) {
    if (queries.empty())
        co_return;
    std::vector<policy::dns_answer> out(queries.size());
    batch b;
    b.left = queries.size();
    for (size_t i = 0; i < queries.size(); ++i) {
        task<void> t = ask(r, queries[i], &out[i], &b);
        spawn(std::move(t));
    }
    co_await b.done.wait();
    for (size_t i = 0; i < queries.size(); ++i)
        answers.put(queries[i], std::move(out[i]));
}

task<policy::spf::outcome> check_spf(net::resolver& r, policy::spf::request rq, const policy::spf::options& o,
                                     policy::dns_answers& answers) {
    for (unsigned round = 0;; ++round) {
        policy::step<policy::spf::outcome> s = policy::spf::evaluate(rq, answers, o);
        if (s.done)
            co_return std::move(*s.done);
        if (round >= k_max_rounds || s.need.empty()) {
            policy::spf::outcome out;
            out.res = policy::spf::result::temperror;
            out.identity = rq.helo_identity ? "helo" : "mailfrom";
            out.reason = fmt::format("SPF evaluation did not finish in {} rounds of DNS lookups", k_max_rounds);
            co_return out;
        }
        std::vector<policy::dns_query> need = std::move(s.need);
        co_await resolve(r, need, answers);
    }
}

task<std::vector<policy::dkim::verdict>> check_dkim(net::resolver& r, const policy::dkim::verification& v,
                                                    policy::dns_answers& answers) {
    for (unsigned round = 0;; ++round) {
        policy::step<std::vector<policy::dkim::verdict>> s = v.evaluate(answers);
        if (s.done)
            co_return std::move(*s.done);
        if (round >= 2 || s.need.empty())
            break;  // one round asks every key; a second is only a retry
        std::vector<policy::dns_query> need = std::move(s.need);
        co_await resolve(r, need, answers);
    }
    // Keys still missing (the answers were not kept): temperror for those.
    std::vector<policy::dkim::verdict> out;
    policy::step<std::vector<policy::dkim::verdict>> s = v.evaluate(answers);
    for (const auto& q : s.need) {
        policy::dns_answer a;
        a.status = policy::dns_status::temporary;
        a.error = "no answer";
        answers.put(q, std::move(a));
    }
    s = v.evaluate(answers);
    co_return s.done ? std::move(*s.done) : out;
}

task<policy::dmarc::outcome> check_dmarc(net::resolver& r, policy::dmarc::request rq, policy::dns_answers& answers) {
    for (unsigned round = 0; round < 4; ++round) {
        policy::step<policy::dmarc::outcome> s = policy::dmarc::evaluate(rq, answers);
        if (s.done)
            co_return std::move(*s.done);
        std::vector<policy::dns_query> need = std::move(s.need);
        co_await resolve(r, need, answers);
    }
    policy::dmarc::outcome out;
    out.res = policy::dmarc::result::temperror;
    out.from_domain = rq.from_domain;
    out.reason = "DMARC evaluation did not finish";
    co_return out;
}

task<policy::arc::outcome> check_arc(net::resolver& r, const policy::arc::verification& v, policy::dns_answers& answers) {
    for (unsigned round = 0; round < 2; ++round) {
        policy::step<policy::arc::outcome> s = v.evaluate(answers);
        if (s.done)
            co_return std::move(*s.done);
        std::vector<policy::dns_query> need = std::move(s.need);
        co_await resolve(r, need, answers);
    }
    policy::step<policy::arc::outcome> s = v.evaluate(answers);
    if (s.done)
        co_return std::move(*s.done);
    policy::arc::outcome o;
    o.res = policy::arc::result::fail;
    o.reason = "the chain's keys could not be found";
    co_return o;
}

task<policy::access::classification> classify_client(net::resolver* r, const policy::access::table& t,
                                                     policy::access::facts f, policy::dns_answers& answers) {
    for (unsigned round = 0;; ++round) {
        policy::step<policy::access::classification> s = t.classify(f, answers);
        if (s.done)
            co_return std::move(*s.done);
        std::vector<policy::dns_query> need = std::move(s.need);
        if (!r || round >= 4) {
            // No resolver, or the walk keeps asking: what is missing failed.
            for (const auto& q : need) {
                policy::dns_answer a;
                a.status = policy::dns_status::temporary;
                a.error = r ? "too many rounds of lookups" : "no resolver";
                answers.put(q, std::move(a));
            }
            continue;
        }
        co_await resolve(*r, need, answers);
    }
}

}  // namespace rw::mta::verify
