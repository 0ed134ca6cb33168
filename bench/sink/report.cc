// The sink's output. stats_json() sums the per-core atomic counters while
// the cores run (the --stats thread calls it every 200 ms). make_report()
// runs once, on the main thread after every reactor has stopped: it merges
// the cores' plain counters, sorts all (id, recipient) records to count
// duplicates, and walks them against the sorted --expect keys to count
// missing and unexpected pairs. Field meanings are listed in main.cc.
#include "bench/sink/report.hh"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>

#include "bench/lib/json.hh"
#include "bench/sink/sink.hh"

namespace rw::bench::sink {

namespace {

std::string_view id_of(const std::string& key) {
    std::string_view k(key);
    return k.substr(0, k.find('\0'));
}

// Appends id to out unless it is the last one there (keys are sorted, so
// equal ids are adjacent) or out is full.
void list_id(std::vector<std::string>& out, std::string_view id) {
    if (out.size() >= k_max_listed_ids || (!out.empty() && out.back() == id))
        return;
    out.emplace_back(id);
}

}  // namespace

result<std::vector<std::string>, std::string> load_expect(const std::string& path) {
    std::ifstream in(path);
    if (!in)
        return unexpected(fmt::format("--expect: cannot read {}: {}", path, std::strerror(errno)));
    std::vector<std::string> keys;
    std::string line;
    size_t lineno = 0;
    while (std::getline(in, line)) {
        ++lineno;
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        std::string_view l(line);
        size_t sp = l.find(' ');
        std::string_view id = l.substr(0, sp);
        if (id.empty())
            continue;  // blank line
        if (sp == std::string_view::npos)
            return unexpected(fmt::format("--expect: {} line {}: expected \"<id> <rcpt>...\", got \"{}\"", path,
                                          lineno, line));
        l.remove_prefix(sp + 1);
        while (!l.empty()) {
            size_t e = l.find(' ');
            std::string_view r = l.substr(0, e);
            l = e == std::string_view::npos ? std::string_view() : l.substr(e + 1);
            if (r.empty())
                continue;
            std::string k;
            k.reserve(id.size() + 1 + r.size());
            k.append(id).push_back('\0');
            for (char c : r)
                k.push_back((c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c);
            keys.push_back(std::move(k));
        }
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    return keys;
}

std::string stats_json() {
    uint64_t received = 0, recipients = 0, ok = 0, corrupt = 0, unmarked = 0;
    for (const auto& c : g.cores) {
        received += c->received.load(std::memory_order_relaxed);
        recipients += c->recipients.load(std::memory_order_relaxed);
        ok += c->ok.load(std::memory_order_relaxed);
        corrupt += c->corrupt.load(std::memory_order_relaxed);
        unmarked += c->unmarked.load(std::memory_order_relaxed);
    }
    json_writer w;
    w.begin_object()
        .value("received", received)
        .value("recipients", recipients)
        .value("ok", ok)
        .value("corrupt", corrupt)
        .value("unmarked", unmarked)
        .value("connections", g.connections.load())
        .value("current_connections", g.current.load())
        .value("max_concurrent_connections", g.max_concurrent.load())
        .end_object();
    return w.str();
}

report make_report(std::vector<std::string>* expected, double elapsed_s) {
    uint64_t received = 0, recipients = 0, ok = 0, corrupt = 0, unmarked = 0, transactions = 0, bytes = 0;
    uint64_t max_per_conn = 0, fault_4xx = 0, fault_5xx = 0;
    std::array<uint64_t, k_faults> faults{};
    std::array<uint64_t, 6> replies{};
    std::map<std::string, uint64_t> peers, peer_connections, helos;
    std::vector<uint64_t> per_second;
    std::vector<std::string> records, corrupt_ids;
    histogram latency;
    for (auto& cp : g.cores) {
        core_state& c = *cp;
        latency.merge(c.latency);
        received += c.received.load();
        recipients += c.recipients.load();
        ok += c.ok.load();
        corrupt += c.corrupt.load();
        unmarked += c.unmarked.load();
        transactions += c.transactions;
        bytes += c.bytes;
        max_per_conn = std::max(max_per_conn, c.max_msgs_per_conn);
        fault_4xx += c.fault_4xx;
        fault_5xx += c.fault_5xx;
        for (size_t i = 0; i < k_faults; ++i)
            faults[i] += c.faults[i];
        for (size_t i = 0; i < replies.size(); ++i)
            replies[i] += c.replies[i];
        for (const auto& [ip, n] : c.peers)
            if (n > 0)
                peers[ip] += n;
        for (const auto& [ip, n] : c.peer_connections)
            peer_connections[ip] += n;
        for (const auto& [k, n] : c.helos)
            helos[k] += n;
        if (per_second.size() < c.per_second.size())
            per_second.resize(c.per_second.size(), 0);
        for (size_t i = 0; i < c.per_second.size(); ++i)
            per_second[i] += c.per_second[i];
        if (records.empty())
            records = std::move(c.records);
        else
            records.insert(records.end(), std::make_move_iterator(c.records.begin()),
                           std::make_move_iterator(c.records.end()));
        c.records.clear();
        for (auto& id : c.corrupt_ids)
            if (corrupt_ids.size() < k_max_listed_ids)
                corrupt_ids.push_back(id);
    }

    // Busiest minute: a sliding 60 s window over the per-second counts.
    uint64_t max_minute = 0, window = 0;
    for (size_t i = 0; i < per_second.size(); ++i) {
        window += per_second[i];
        if (i >= 60)
            window -= per_second[i - 60];
        max_minute = std::max(max_minute, window);
    }

    // Duplicates: the same (id, recipient) more than once; count the extra copies.
    std::sort(records.begin(), records.end());
    uint64_t duplicates = 0;
    std::vector<std::string> duplicate_ids;
    std::vector<std::string> unique;
    unique.reserve(records.size());
    for (size_t i = 0; i < records.size();) {
        size_t j = i + 1;
        while (j < records.size() && records[j] == records[i])
            ++j;
        if (j - i > 1) {
            duplicates += j - i - 1;
            list_id(duplicate_ids, id_of(records[i]));
        }
        unique.push_back(std::move(records[i]));
        i = j;
    }
    records.clear();
    records.shrink_to_fit();

    uint64_t missing = 0, unexpected_n = 0;
    std::vector<std::string> missing_ids;
    if (expected) {
        // Both sorted and unique: one merge pass.
        size_t a = 0, b = 0;
        while (a < expected->size() || b < unique.size()) {
            if (b == unique.size() || (a < expected->size() && (*expected)[a] < unique[b])) {
                ++missing;
                list_id(missing_ids, id_of((*expected)[a]));
                ++a;
            } else if (a == expected->size() || unique[b] < (*expected)[a]) {
                ++unexpected_n;
                ++b;
            } else {
                ++a;
                ++b;
            }
        }
    }

    json_writer w;
    w.begin_object()
        .value("received", received)
        .value("recipients", recipients)
        .value("ok", ok)
        .value("corrupt", corrupt)
        .value("unmarked", unmarked)
        .value("duplicates", duplicates);
    // json_writer has no null: write a sentinel string, replaced below.
    const char* k_null = "\x01null\x01";
    if (expected)
        w.value("missing", missing).value("unexpected", unexpected_n);
    else
        w.value("missing", k_null).value("unexpected", k_null);
    w.value("transactions", transactions)
        .value("connections", g.connections.load())
        .value("max_concurrent_connections", g.max_concurrent.load())
        .value("max_messages_per_connection", max_per_conn)
        .value("max_messages_in_any_minute", max_minute)
        .value("bytes", bytes);
    w.begin_object("faults");
    for (size_t i = 0; i < k_faults; ++i)
        if (faults[i] > 0)
            w.value(fault_name(fault(i)), faults[i]);
    w.end_object();
    w.begin_object("fault_replies").value("4xx", fault_4xx).value("5xx", fault_5xx).end_object();
    w.begin_object("replies");
    for (size_t i = 2; i < replies.size(); ++i)
        w.value(fmt::format("{}xx", i), replies[i]);
    w.end_object();
    w.begin_object("peers");
    for (const auto& [ip, n] : peers)
        w.value(ip, n);
    w.end_object();
    w.begin_object("peer_connections");
    for (const auto& [ip, n] : peer_connections)
        w.value(ip, n);
    w.end_object();
    w.begin_object("helos");
    for (const auto& [k, n] : helos)
        w.value(k, n);
    w.end_object();
    auto list = [&w](std::string_view key, const std::vector<std::string>& ids) {
        w.begin_array(key);
        for (const auto& id : ids)
            w.value("", id);
        w.end_array();
    };
    // End to end, from the generator's send to our acceptance (same clock).
    w.begin_object("latency_ms");
    w.value("count", latency.count());
    for (auto [name, q] : {std::pair<const char*, double>{"p50", 50}, {"p90", 90}, {"p99", 99}, {"p99.9", 99.9}})
        w.value(name, double(latency.percentile(q)) / 1e6);
    w.value("max", double(latency.max()) / 1e6);
    w.end_object();
    list("corrupt_ids", corrupt_ids);
    list("missing_ids", missing_ids);
    list("duplicate_ids", duplicate_ids);
    w.value("seed", g.opt.seed).value("elapsed_s", elapsed_s).end_object();

    report r;
    r.json = w.str();
    // Splice in the nulls ("\u0001null\u0001" once escaped).
    const std::string quoted_null = "\"\\u0001null\\u0001\"";
    for (size_t p; (p = r.json.find(quoted_null)) != std::string::npos;)
        r.json.replace(p, quoted_null.size(), "null");

    std::string exp = expected ? fmt::format("missing={} unexpected={}", missing, unexpected_n)
                               : std::string("missing=- unexpected=- (no --expect)");
    r.text = fmt::format(
        "ringway-sink: {} messages ({} recipients, {} bytes) in {:.1f} s, {:.0f} msg/s\n"
        "ringway-sink: ok={} corrupt={} unmarked={} duplicates={} {}\n"
        "ringway-sink: connections={} max_concurrent={} max_per_connection={} busiest_minute={}\n",
        received, recipients, bytes, elapsed_s, elapsed_s > 0 ? double(received) / elapsed_s : 0.0, ok, corrupt,
        unmarked, duplicates, exp, g.connections.load(), g.max_concurrent.load(), max_per_conn, max_minute);
    std::string f;
    for (size_t i = 0; i < k_faults; ++i)
        if (faults[i] > 0)
            f += fmt::format(" {}={}", fault_name(fault(i)), faults[i]);
    if (!f.empty())
        r.text += fmt::format("ringway-sink: faults:{}\n", f);
    return r;
}

}  // namespace rw::bench::sink
