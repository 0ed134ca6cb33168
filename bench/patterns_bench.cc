// Content-rule matching: N patterns compiled into one Hyperscan database
// (policy/patterns.hh), scanned in one streaming pass per message, against
// the same patterns matched one regular expression at a time with PCRE2's
// JIT over the whole message, in the same run. Both must find the same
// patterns in every message (checked); the rates are messages per second
// on one core, medians of the rounds.
//
//   patterns_bench [--patterns 1000,10000] [--sizes 4096,65536] [--seconds 1] [--rounds 3]
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "policy/patterns.hh"

namespace pt = rw::policy::patterns;
using clk = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

// Words made of syllables: text that looks like text to a matcher.
std::string word(std::mt19937_64& r) {
    static const char* syl[] = {"ka", "lo", "mi", "ra", "te", "su", "on", "el", "an", "is", "or", "ve",
                                "ba", "di", "fu", "ge", "ho", "ju", "ne", "pa", "qui", "st", "tr", "wy"};
    std::string w;
    const int n = 1 + int(r() % 4);
    for (int i = 0; i < n; ++i)
        w += syl[r() % (sizeof syl / sizeof *syl)];
    return w;
}

std::vector<pt::pattern> make_patterns(size_t n, std::mt19937_64& r) {
    std::vector<pt::pattern> out;
    for (size_t i = 0; i < n; ++i) {
        const std::string a = word(r) + word(r), b = word(r);
        std::string e;
        switch (i % 5) {
        case 0: e = a; break;                                        // a literal phrase
        case 1: e = "\\b" + a + "\\s+" + b + "\\b"; break;           // words with spacing
        case 2: e = a + "[0-9]{2,6}"; break;                         // a word with a number
        case 3: e = "(?:buy|get|cheap)\\s+" + a; break;              // alternation
        case 4: e = a + ".{0,20}" + b; break;                        // near each other
        }
        out.push_back({e, unsigned(i), true, true});
    }
    return out;
}

std::string make_message(size_t bytes, std::mt19937_64& r, const std::vector<std::string>& plant) {
    std::string m = "From: sender@example.org\r\nTo: someone@example.net\r\nSubject: " + word(r) + " " + word(r) +
                    "\r\n\r\n";
    size_t line = 0;
    while (m.size() < bytes) {
        m += word(r);
        m += (++line % 12 == 0) ? "\r\n" : " ";
    }
    for (size_t i = 0; i < plant.size(); ++i) {
        const size_t at = (i + 1) * m.size() / (plant.size() + 2);
        m.insert(at, " " + plant[i] + " ");
    }
    m.resize(std::max(bytes, m.size()));
    return m;
}

struct pcre_set {
    std::vector<pcre2_code*> codes;
    pcre2_match_data* md = nullptr;
    explicit pcre_set(const std::vector<pt::pattern>& ps) {
        for (const auto& p : ps) {
            int err = 0;
            PCRE2_SIZE off = 0;
            pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.expr.c_str()), p.expr.size(),
                                          PCRE2_CASELESS | PCRE2_UTF | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
            if (!c) {
                std::fprintf(stderr, "pcre2 cannot compile %s\n", p.expr.c_str());
                std::exit(1);
            }
            pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
            codes.push_back(c);
        }
        md = pcre2_match_data_create(4, nullptr);
    }
    ~pcre_set() {
        for (auto* c : codes)
            pcre2_code_free(c);
        pcre2_match_data_free(md);
    }
    std::set<unsigned> match(const std::string& m) {
        std::set<unsigned> out;
        for (size_t i = 0; i < codes.size(); ++i)
            if (pcre2_jit_match(codes[i], reinterpret_cast<PCRE2_SPTR>(m.data()), m.size(), 0, 0, md, nullptr) >= 0)
                out.insert(unsigned(i));
        return out;
    }
};

std::set<unsigned> hs_match(const std::shared_ptr<const pt::database>& db, const std::string& m) {
    pt::scanner s(db);
    for (size_t i = 0; i < m.size(); i += 16384)
        s.feed(std::string_view(m).substr(i, 16384));
    s.finish();
    return {s.matched().begin(), s.matched().end()};
}

template <typename F>
double rate(F&& f, size_t messages, double seconds) {
    size_t n = 0;
    const auto t0 = clk::now();
    do {
        f(n % messages);
        ++n;
    } while (std::chrono::duration<double>(clk::now() - t0).count() < seconds);
    return double(n) / std::chrono::duration<double>(clk::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Content-rule matching: one Hyperscan pass against one PCRE2 regex at a time"};
    std::vector<size_t> counts{1000, 10000}, sizes{4096, 65536};
    double seconds = 1;
    int rounds = 3;
    app.add_option("--patterns", counts, "pattern counts")->delimiter(',');
    app.add_option("--sizes", sizes, "message sizes in bytes")->delimiter(',');
    app.add_option("--seconds", seconds, "per measurement")->check(CLI::Range(0.05, 60.0));
    app.add_option("--rounds", rounds, "alternating rounds; medians")->check(CLI::Range(1, 20));
    CLI11_PARSE(app, argc, argv);

    std::printf("%9s %9s %12s %12s %10s %11s %11s %10s %9s\n", "patterns", "bytes", "hyperscan/s", "pcre2/s",
                "ratio", "compile ms", "db KiB", "stream B", "matched");
    for (size_t n : counts) {
        std::mt19937_64 r(42 + n);
        auto set = make_patterns(n, r);
        const auto c0 = clk::now();
        auto db = pt::database::compile(set);
        const double compile_ms = std::chrono::duration<double, std::milli>(clk::now() - c0).count();
        if (!db) {
            std::fprintf(stderr, "%s\n", db.error().c_str());
            return 1;
        }
        pcre_set pcre(set);
        for (size_t bytes : sizes) {
            // 8 messages, each with a few planted hits from the set.
            std::vector<std::string> msgs;
            for (int i = 0; i < 8; ++i) {
                std::vector<std::string> plant;
                for (int k = 0; k < 3; ++k) {
                    const size_t pi = r() % n;
                    std::string lit = set[pi].expr;
                    if (pi % 5 == 0)
                        plant.push_back(lit);  // a literal: matches as is
                }
                msgs.push_back(make_message(bytes, r, plant));
            }
            // Both find the same patterns in every message.
            size_t matched = 0;
            for (const auto& m : msgs) {
                auto a = hs_match(db.value(), m);
                auto b = pcre.match(m);
                if (a != b) {
                    std::fprintf(stderr, "hyperscan and pcre2 disagree on a %zu-byte message (%zu vs %zu matches)\n",
                                 bytes, a.size(), b.size());
                    return 1;
                }
                matched += a.size();
            }
            std::vector<double> hs, pc;
            for (int i = 0; i < rounds; ++i) {
                hs.push_back(rate([&](size_t k) { (void)hs_match(db.value(), msgs[k]); }, msgs.size(), seconds));
                pc.push_back(rate([&](size_t k) { (void)pcre.match(msgs[k]); }, msgs.size(), seconds));
            }
            std::printf("%9zu %9zu %12.0f %12.1f %9.0fx %11.0f %11zu %10zu %9zu\n", n, bytes, median(hs), median(pc),
                        median(hs) / median(pc), compile_ms, db.value()->bytes() / 1024, db.value()->stream_bytes(),
                        matched);
        }
    }
    return 0;
}
