// Hyperscan pattern sets (patterns.hh).
#include "policy/patterns.hh"

#include <hs/hs.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>


namespace rw::policy::patterns {

namespace {

// The scratch space of this thread, grown (hs_alloc_scratch enlarges an
// existing one as needed) when a scan of a database starts. Scans use it
// only inside feed()/finish(), never across a suspension, so the scans of
// every session on the thread share it.
//
// hs_alloc_scratch costs far more than scanning a message (it re-checks
// the database every call): a thread remembers the databases, by serial,
// its scratch already fits.
struct thread_scratch {
    hs_scratch_t* s = nullptr;
    std::vector<uint64_t> fitted;
    ~thread_scratch() {
        if (s)
            hs_free_scratch(s);
    }
    bool fit(const hs_database_t* db, uint64_t serial) {
        if (std::find(fitted.begin(), fitted.end(), serial) != fitted.end())
            return true;
        if (hs_alloc_scratch(db, &s) != HS_SUCCESS)
            return false;
        if (fitted.size() >= 64)
            fitted.clear();  // bounded: fitting again is correct, only slower
        fitted.push_back(serial);
        return true;
    }
};

std::atomic<uint64_t> g_serial{0};

thread_local thread_scratch t_scratch;

int on_match_cb(unsigned int id, unsigned long long, unsigned long long, unsigned int, void* ctx) {
    static_cast<scanner*>(ctx)->on_match(id);
    return 0;  // go on: other patterns may match too
}

}  // namespace

std::optional<std::string> check(const pattern& p) {
    unsigned f = HS_FLAG_SINGLEMATCH | HS_FLAG_ALLOWEMPTY;
    if (p.caseless)
        f |= HS_FLAG_CASELESS;
    if (p.utf8)
        f |= HS_FLAG_UTF8;
    hs_expr_info_t* info = nullptr;
    hs_compile_error_t* err = nullptr;
    if (hs_expression_info(p.expr.c_str(), f, &info, &err) == HS_SUCCESS) {
        std::free(info);
        return std::nullopt;
    }
    std::string why = err && err->message ? err->message : "does not compile";
    hs_free_compile_error(err);
    return why;
}

result<std::shared_ptr<const database>, std::string> database::compile(const std::vector<pattern>& set) {
    auto db = std::shared_ptr<database>(new database());
    db->_count = set.size();
    db->_serial = ++g_serial;
    if (set.empty())
        return std::shared_ptr<const database>(std::move(db));
    std::vector<const char*> exprs;
    std::vector<unsigned> flags, ids;
    exprs.reserve(set.size());
    for (const auto& p : set) {
        exprs.push_back(p.expr.c_str());
        // SINGLEMATCH: a pattern reports once per stream, which is all a
        // rule needs and keeps hot patterns cheap.
        unsigned f = HS_FLAG_SINGLEMATCH | HS_FLAG_ALLOWEMPTY;
        if (p.caseless)
            f |= HS_FLAG_CASELESS;
        if (p.utf8)
            f |= HS_FLAG_UTF8;  // not UCP: Hyperscan has no \b under it
        flags.push_back(f);
        ids.push_back(p.id);
    }
    hs_database_t* out = nullptr;
    hs_compile_error_t* err = nullptr;
    const hs_error_t rc = hs_compile_multi(exprs.data(), flags.data(), ids.data(), unsigned(exprs.size()),
                                           HS_MODE_STREAM | HS_MODE_SOM_HORIZON_SMALL, nullptr, &out, &err);
    if (rc != HS_SUCCESS) {
        std::string why = err && err->message ? err->message : "compile failed";
        std::string msg;
        if (err && err->expression >= 0 && size_t(err->expression) < set.size())
            msg = fmt::format("pattern {} (\"{}\"): {}", err->expression, set[size_t(err->expression)].expr, why);
        else
            msg = why;
        hs_free_compile_error(err);
        return unexpected(std::move(msg));
    }
    db->_db = out;
    return std::shared_ptr<const database>(std::move(db));
}

database::~database() {
    if (_db)
        hs_free_database(static_cast<hs_database_t*>(_db));
}

size_t database::bytes() const noexcept {
    size_t n = 0;
    if (_db)
        hs_database_size(static_cast<const hs_database_t*>(_db), &n);
    return n;
}

size_t database::stream_bytes() const noexcept {
    size_t n = 0;
    if (_db)
        hs_stream_size(static_cast<const hs_database_t*>(_db), &n);
    return n;
}

scanner::scanner(std::shared_ptr<const database> db) : _db(std::move(db)) {
    if (!_db || !_db->_db)
        return;
    hs_stream_t* st = nullptr;
    if (hs_open_stream(static_cast<const hs_database_t*>(_db->_db), 0, &st) != HS_SUCCESS) {
        _ok = false;
        return;
    }
    _stream = st;
    if (!t_scratch.fit(static_cast<const hs_database_t*>(_db->_db), _db->_serial))
        _ok = false;
}

scanner::~scanner() {
    if (_stream)
        hs_close_stream(static_cast<hs_stream_t*>(_stream), nullptr, nullptr, nullptr);  // no callbacks: discarded
}

void scanner::on_match(unsigned id) {
    const size_t word = id / 64;
    if (word < 4096) {  // ids up to 262,143 tracked in the bitmap
        if (_seen.size() <= word)
            _seen.resize(word + 1, 0);
        const uint64_t bit = uint64_t(1) << (id % 64);
        if (_seen[word] & bit)
            return;
        _seen[word] |= bit;
    } else {
        for (unsigned m : _matched)
            if (m == id)
                return;
    }
    _matched.push_back(id);
}

void scanner::feed(std::string_view bytes) {
    if (!_stream || bytes.empty())
        return;
    hs_scratch_t* s = t_scratch.s;
    if (!_ok || !s)
        return;
    // Hyperscan takes at most 4 GiB a call.
    while (!bytes.empty()) {
        const size_t n = std::min<size_t>(bytes.size(), size_t(1) << 30);
        if (hs_scan_stream(static_cast<hs_stream_t*>(_stream), bytes.data(), unsigned(n), 0, s, on_match_cb, this) !=
            HS_SUCCESS) {
            _ok = false;
            return;
        }
        bytes.remove_prefix(n);
    }
}

void scanner::finish() {
    if (!_stream)
        return;
    hs_scratch_t* s = _ok ? t_scratch.s : nullptr;
    if (!s) {
        hs_close_stream(static_cast<hs_stream_t*>(_stream), nullptr, nullptr, nullptr);
    } else if (hs_close_stream(static_cast<hs_stream_t*>(_stream), s, on_match_cb, this) != HS_SUCCESS) {
        _ok = false;
    }
    _stream = nullptr;
}

}  // namespace rw::policy::patterns
