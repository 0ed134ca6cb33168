// dkim_bench: DKIM signatures made and checked per second on one core, by
// the gateway's own code path, against OpenSSL's raw rates for the same
// keys measured by `openssl speed` in the same run.
//
//   sign    header parse, relaxed body hash (SHA-256), canonical header
//           data, the signature, the DKIM-Signature field;
//   verify  header parse, DKIM-Signature parse, body hash, key record
//           parse (the DNS answer as the resolver's cache would give it),
//           the check.
//
// Rounds alternate ours and `openssl speed` (--rounds, medians reported),
// so both see the same machine state. A micro-benchmark of the policy
// layer, so it links policy (the load generator does not).
//
//   dkim_bench [--seconds 2] [--rounds 3] [--body-bytes 4096]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "mail/header.hh"
#include "policy/dkim.hh"
#include "policy/dkim_sign.hh"

using namespace rw;
using namespace rw::policy;
using clk = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

std::string make_message(size_t body_bytes) {
    std::string m =
        "From: \"Alice Example\" <alice@signer.test>\r\n"
        "To: bob@example.net, \"Carol\" <carol@example.org>\r\n"
        "Cc: dave@example.com\r\n"
        "Subject: The quarterly figures, as promised\r\n"
        "Date: Mon, 07 Dec 2026 06:00:00 +0000\r\n"
        "Message-ID: <20261207060000.12345@signer.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "List-Unsubscribe: <mailto:unsubscribe@signer.test>\r\n"
        "\r\n";
    const std::string line = "The quick brown fox jumps over the lazy dog, and then  some more words.\r\n";
    while (m.size() < body_bytes + 500)
        m += line;
    return m;
}

struct rates {
    double sign = 0, verify = 0;
};

// Our sign and verify rates for one key.
rates ours(const dkim::signing_key& key, const std::string& msg, double seconds) {
    dkim::sign_options o;
    o.headers = {"from", "to", "cc", "subject", "date", "message-id", "mime-version", "content-type",
                 "content-transfer-encoding", "list-unsubscribe"};
    o.oversign = {"from", "subject", "to", "cc"};
    o.now = 1'796'600'000;
    const std::vector<dkim::signing_key> keys{key};
    std::string signed_msg;
    rates r;
    {
        uint64_t n = 0;
        const auto t0 = clk::now();
        while (std::chrono::duration<double>(clk::now() - t0).count() < seconds) {
            mail::header_parser hp;
            const size_t used = hp.feed(msg);
            dkim::body_hasher bh(dkim::canon::relaxed, false, std::nullopt);
            bh.feed(std::string_view(msg).substr(used));
            auto sig = dkim::sign(hp.fields(), bh.finish(), keys, o);
            if (!sig) {
                std::fprintf(stderr, "sign failed: %s\n", sig.error().c_str());
                std::exit(1);
            }
            if (n++ == 0)
                signed_msg = sig.value() + msg;
        }
        r.sign = double(n) / std::chrono::duration<double>(clk::now() - t0).count();
    }
    dns_answer key_answer;
    key_answer.status = dns_status::ok;
    key_answer.names = {key.record()};
    {
        uint64_t n = 0;
        const auto t0 = clk::now();
        while (std::chrono::duration<double>(clk::now() - t0).count() < seconds) {
            mail::header_parser hp;
            const size_t used = hp.feed(signed_msg);
            dkim::verification v;
            v.header_section(hp.fields());
            v.body(std::string_view(signed_msg).substr(used));
            v.end();
            dns_answers answers;
            answers.put(dns_query{rrtype::txt, key.selector + "._domainkey." + key.domain}, key_answer);
            auto s = v.evaluate(answers);
            if (!s.done || s.done->size() != 1 || s.done->front().res != dkim::result::pass) {
                std::fprintf(stderr, "verify did not pass\n");
                std::exit(1);
            }
            ++n;
        }
        r.verify = double(n) / std::chrono::duration<double>(clk::now() - t0).count();
    }
    return r;
}

// `openssl speed` for RSA-2048 and Ed25519: sign/s and verify/s.
std::pair<rates, rates> openssl_speed(double seconds) {
    const std::string cmd = "openssl speed -seconds " + std::to_string(std::max(1, int(seconds + 0.5))) +
                            " rsa2048 ed25519 2>/dev/null";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) {
        std::perror("popen openssl");
        std::exit(1);
    }
    std::string out;
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, p))
        out.append(buf, n);
    ::pclose(p);
    std::pair<rates, rates> r;
    std::smatch m;
    const std::regex rsa(R"(rsa 2048 bits\s+\S+\s+\S+\s+([0-9.]+)\s+([0-9.]+))");
    const std::regex ed(R"(EdDSA \(Ed25519\)\s+\S+\s+\S+\s+([0-9.]+)\s+([0-9.]+))");
    if (std::regex_search(out, m, rsa))
        r.first = {std::stod(m[1]), std::stod(m[2])};
    if (std::regex_search(out, m, ed))
        r.second = {std::stod(m[1]), std::stod(m[2])};
    if (r.first.sign == 0 || r.second.sign == 0) {
        std::fprintf(stderr, "cannot read openssl speed's output:\n%s\n", out.c_str());
        std::exit(1);
    }
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"DKIM sign and verify rates on one core against openssl speed"};
    double seconds = 2;
    int rounds = 3;
    size_t body_bytes = 4096;
    app.add_option("--seconds", seconds, "per measurement")->check(CLI::Range(0.2, 60.0));
    app.add_option("--rounds", rounds, "alternating rounds; medians are reported")->check(CLI::Range(1, 20));
    size_t keys = 0;
    app.add_option("--keys", keys, "also time loading a key directory of this many keys")
        ->check(CLI::Range(size_t(0), size_t(1000000)));
    app.add_option("--body-bytes", body_bytes, "message body size")->check(CLI::Range(size_t(0), size_t(64) << 20));
    CLI11_PARSE(app, argc, argv);

    auto rsa_pem = dkim::generate_key_pem(false, 2048);
    auto ed_pem = dkim::generate_key_pem(true);
    auto rsa = dkim::key_from_pem(rsa_pem.value(), "signer.test", "rsa");
    auto ed = dkim::key_from_pem(ed_pem.value(), "signer.test", "ed");
    if (!rsa || !ed) {
        std::fprintf(stderr, "cannot make keys\n");
        return 1;
    }
    const std::string msg = make_message(body_bytes);
    std::vector<double> rs, rv, es, ev, ors, orv, oes, oev;
    for (int i = 0; i < rounds; ++i) {
        const rates a = ours(rsa.value(), msg, seconds);
        const rates b = ours(ed.value(), msg, seconds);
        const auto [orsa, oed] = openssl_speed(seconds);
        rs.push_back(a.sign);
        rv.push_back(a.verify);
        es.push_back(b.sign);
        ev.push_back(b.verify);
        ors.push_back(orsa.sign);
        orv.push_back(orsa.verify);
        oes.push_back(oed.sign);
        oev.push_back(oed.verify);
        std::fprintf(stderr, "round %d: rsa %.0f/%.0f (openssl %.0f/%.0f), ed25519 %.0f/%.0f (openssl %.0f/%.0f)\n", i + 1,
                     a.sign, a.verify, orsa.sign, orsa.verify, b.sign, b.verify, oed.sign, oed.verify);
    }
    std::printf("message: %zu bytes (%zu-byte body), 10 signed header fields; %d rounds of %.1f s, medians\n",
                msg.size(), msg.size() - msg.find("\r\n\r\n") - 4, rounds, seconds);
    std::printf("%-16s %12s %12s %8s\n", "", "ringway/s", "openssl/s", "ratio");
    auto row = [](const char* what, double ours_v, double raw) {
        std::printf("%-16s %12.0f %12.0f %7.1f%%\n", what, ours_v, raw, 100.0 * ours_v / raw);
    };
    row("rsa-2048 sign", median(rs), median(ors));
    row("rsa-2048 verify", median(rv), median(orv));
    row("ed25519 sign", median(es), median(oes));
    row("ed25519 verify", median(ev), median(oev));
    if (keys > 0) {
        // A key directory of `keys` files, half RSA-2048 and half Ed25519
        // (copies of the two keys above under distinct names: loading
        // decodes each file whole either way), loaded as a commit or
        // `dkim reload` loads it.
        char tmpl[] = "/tmp/dkim_keys.XXXXXX";
        const char* dir = ::mkdtemp(tmpl);
        if (!dir) {
            std::perror("mkdtemp");
            return 1;
        }
        for (size_t i = 0; i < keys; ++i) {
            const std::string path = std::string(dir) + "/s" + std::to_string(i) + "._domainkey.d" +
                                     std::to_string(i) + ".test.pem";
            std::FILE* f = std::fopen(path.c_str(), "w");
            const std::string& pem = i % 2 ? ed_pem.value() : rsa_pem.value();
            if (!f || std::fwrite(pem.data(), 1, pem.size(), f) != pem.size() || std::fclose(f) != 0) {
                std::perror(path.c_str());
                return 1;
            }
        }
        std::vector<double> ms;
        size_t loaded = 0;
        for (int i = 0; i < rounds; ++i) {
            const auto t0 = clk::now();
            auto kr = dkim::keyring::load_dir(dir);
            ms.push_back(std::chrono::duration<double, std::milli>(clk::now() - t0).count());
            if (!kr) {
                std::fprintf(stderr, "load_dir: %s\n", kr.error().c_str());
                return 1;
            }
            loaded = kr.value().size();
        }
        std::filesystem::remove_all(dir);
        std::printf("key directory: %zu keys (half RSA-2048, half Ed25519) loaded in %.1f ms (median of %d)\n",
                    loaded, median(ms), rounds);
    }
    return 0;
}
