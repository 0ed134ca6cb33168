// The resolver: c-ares channel, io_uring polls for its sockets, one timer,
// the TTL cache, and the DNS message walker (dns_wire) that finds TTLs and
// rejects malformed answers.
//
// Event flow. c-ares calls on_sock_state() whenever it opens, closes or
// changes interest in a socket; we keep one watcher (a one-shot
// IORING_OP_POLL_ADD) per socket it uses. A poll or timer CQE only records
// what happened and wakes the driver coroutine; the driver then calls
// ares_process_fd, outside CQE reaping, so c-ares's callbacks (and the SQEs
// they cause) never run inside reactor::reap(). c-ares may close a socket and
// open another with the same fd number while the old poll is still being
// cancelled, so a watcher that c-ares has let go (inactive) is never reused:
// a new one is made, and the old one is freed once its CQE has arrived.
#include "runtime/net/dns.hh"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "runtime/base/log.hh"
#include "runtime/reactor/io.hh"

namespace rw::net {

namespace {

const logger lg{"dns"};

constexpr int k_class_in = 1;
constexpr int k_max_addresses = 64;          // A/AAAA records kept from one answer
constexpr size_t k_max_name_text_bytes = 253;  // RFC 1035 2.3.4, without the trailing dot
constexpr size_t k_max_label_bytes = 63;
constexpr int64_t k_max_ttl_s = 0x7fffffff;  // RFC 2181 8

using clock_type = std::chrono::steady_clock;

class dns_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "dns"; }
    std::string message(int c) const override { return std::string(to_string(dns_errc(c))); }
};

std::string_view type_name(uint16_t t) noexcept {
    switch (t) {
    case dns_wire::type_a:
        return "A";
    case dns_wire::type_aaaa:
        return "AAAA";
    case dns_wire::type_mx:
        return "MX";
    case dns_wire::type_txt:
        return "TXT";
    case dns_wire::type_ptr:
        return "PTR";
    case dns_wire::type_cname:
        return "CNAME";
    case dns_wire::type_soa:
        return "SOA";
    default:
        return "?";
    }
}

// Lower-case (ASCII only: DNS compares case-insensitively, RFC 4343) and
// drop one trailing dot, so "Example.ORG." and "example.org" share an entry.
std::string normalize(std::string_view n) {
    if (!n.empty() && n.back() == '.')
        n.remove_suffix(1);
    std::string out(n);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z')
            c = char(c - 'A' + 'a');
    return out;
}

// Empty when the name can be asked, else why not.
std::string_view check_name(std::string_view n) noexcept {
    if (n.empty())
        return "empty name";
    if (n.size() > k_max_name_text_bytes)
        return "name longer than 253 characters";
    if (n.find('\0') != std::string_view::npos)
        return "name contains a NUL byte";
    size_t start = 0;
    for (;;) {
        size_t dot = n.find('.', start);
        size_t len = (dot == std::string_view::npos ? n.size() : dot) - start;
        if (len == 0)
            return "empty label";
        if (len > k_max_label_bytes)
            return "label longer than 63 characters";
        if (dot == std::string_view::npos)
            return {};
        start = dot + 1;
    }
}

uint16_t rd16(std::span<const uint8_t> m, size_t off) noexcept { return uint16_t(unsigned(m[off]) << 8 | m[off + 1]); }
uint32_t rd32(std::span<const uint8_t> m, size_t off) noexcept {
    return uint32_t(m[off]) << 24 | uint32_t(m[off + 1]) << 16 | uint32_t(m[off + 2]) << 8 | uint32_t(m[off + 3]);
}

// RFC 2181 8: a TTL with the top bit set is treated as zero.
uint32_t clamp_ttl(uint32_t ttl) noexcept { return (ttl & 0x80000000u) ? 0 : ttl; }

struct rr_header {
    uint16_t type = 0;
    uint16_t klass = 0;
    uint32_t ttl = 0;
    size_t rdata = 0;  // offset of the rdata
    uint16_t rdlength = 0;
};

// One resource record at off; returns the offset after its rdata.
result<size_t, std::string_view> read_rr(std::span<const uint8_t> msg, size_t off, rr_header& out) noexcept {
    auto n = dns_wire::skip_name(msg, off);
    if (!n)
        return unexpected(n.error());
    size_t p = n.value();
    if (msg.size() - p < 10)
        return unexpected(std::string_view("record header runs past the end"));
    out.type = rd16(msg, p);
    out.klass = rd16(msg, p + 2);
    out.ttl = clamp_ttl(rd32(msg, p + 4));
    out.rdlength = rd16(msg, p + 8);
    out.rdata = p + 10;
    if (msg.size() - out.rdata < out.rdlength)
        return unexpected(std::string_view("rdata runs past the end"));
    return out.rdata + out.rdlength;
}

// SOA rdata (RFC 1035 3.3.13): MNAME, RNAME, then SERIAL REFRESH RETRY
// EXPIRE MINIMUM. Returns MINIMUM.
result<uint32_t, std::string_view> soa_minimum(std::span<const uint8_t> msg, const rr_header& rr) noexcept {
    size_t end = rr.rdata + rr.rdlength;
    auto m = dns_wire::skip_name(msg, rr.rdata);
    if (!m)
        return unexpected(m.error());
    if (m.value() > end)
        return unexpected(std::string_view("SOA name runs past its rdata"));
    auto r = dns_wire::skip_name(msg, m.value());
    if (!r)
        return unexpected(r.error());
    if (r.value() > end || end - r.value() < 20)
        return unexpected(std::string_view("SOA rdata too short"));
    return rd32(msg, r.value() + 16);
}

}  // namespace

// ---- errors ----

const std::error_category& dns_category() noexcept {
    static const dns_category_impl c;
    return c;
}

std::string_view to_string(dns_errc e) noexcept {
    switch (e) {
    case dns_errc::nxdomain:
        return "nxdomain";
    case dns_errc::nodata:
        return "nodata";
    case dns_errc::temporary:
        return "temporary";
    case dns_errc::bad_name:
        return "bad_name";
    }
    return "unknown";
}

std::string dns_error::describe() const { return fmt::format("{}: {}", to_string(code), message); }

// ---- wire format ----

namespace dns_wire {

result<size_t, std::string_view> skip_name(std::span<const uint8_t> msg, size_t off) noexcept {
    // RFC 1035 4.1.4. Every pointer must point before the start of the
    // piece of name that contains it, so the pieces visited move strictly
    // backwards and no loop is possible; the jump count and the 255-byte
    // length are further bounds.
    size_t pos = off;
    size_t piece_start = off;
    size_t end = 0;
    bool jumped = false;
    unsigned jumps = 0;
    size_t wire_len = 0;
    for (;;) {
        if (pos >= msg.size())
            return unexpected(std::string_view("name runs past the end"));
        uint8_t len = msg[pos];
        uint8_t kind = len & 0xC0;
        if (kind == 0xC0) {
            if (msg.size() - pos < 2)
                return unexpected(std::string_view("compression pointer runs past the end"));
            size_t target = size_t(len & 0x3F) << 8 | msg[pos + 1];
            if (target >= piece_start)
                return unexpected(std::string_view("compression pointer does not point backwards"));
            if (++jumps > max_pointer_jumps)
                return unexpected(std::string_view("too many compression pointers"));
            if (!jumped) {
                end = pos + 2;
                jumped = true;
            }
            pos = target;
            piece_start = target;
            continue;
        }
        if (kind != 0)
            return unexpected(std::string_view("reserved label type"));
        wire_len += size_t(len) + 1;
        if (wire_len > max_name_bytes)
            return unexpected(std::string_view("name longer than 255 bytes"));
        if (len == 0)
            return jumped ? end : pos + 1;
        pos += size_t(len) + 1;
    }
}

result<summary, std::string_view> summarize(std::span<const uint8_t> msg) noexcept {
    if (msg.size() < header_bytes)
        return unexpected(std::string_view("message shorter than its header"));
    summary s;
    s.id = rd16(msg, 0);
    uint16_t flags = rd16(msg, 2);
    if (!(flags & 0x8000))
        return unexpected(std::string_view("not a response"));
    s.truncated = flags & 0x0200;
    s.rcode = uint8_t(flags & 0x000F);
    s.qdcount = rd16(msg, 4);
    s.ancount = rd16(msg, 6);
    s.nscount = rd16(msg, 8);
    s.arcount = rd16(msg, 10);

    size_t pos = header_bytes;
    for (unsigned i = 0; i < s.qdcount; ++i) {
        auto n = skip_name(msg, pos);
        if (!n)
            return unexpected(n.error());
        pos = n.value();
        if (msg.size() - pos < 4)
            return unexpected(std::string_view("question runs past the end"));
        pos += 4;
    }
    rr_header rr;
    for (unsigned i = 0; i < s.ancount; ++i) {
        auto n = read_rr(msg, pos, rr);
        if (!n)
            return unexpected(n.error());
        pos = n.value();
        s.min_answer_ttl = s.min_answer_ttl ? std::min(*s.min_answer_ttl, rr.ttl) : rr.ttl;
    }
    for (unsigned i = 0; i < s.nscount; ++i) {
        auto n = read_rr(msg, pos, rr);
        if (!n)
            return unexpected(n.error());
        pos = n.value();
        if (rr.type == type_soa && !s.negative_ttl) {
            // RFC 2308 5: a negative answer lives min(SOA TTL, SOA MINIMUM).
            auto m = soa_minimum(msg, rr);
            if (!m)
                return unexpected(m.error());
            s.negative_ttl = std::min(rr.ttl, clamp_ttl(m.value()));
        }
    }
    for (unsigned i = 0; i < s.arcount; ++i) {
        auto n = read_rr(msg, pos, rr);
        if (!n)
            return unexpected(n.error());
        pos = n.value();
    }
    return s;
}

}  // namespace dns_wire

// ---- completions ----

// One socket c-ares uses. Owned by the resolver; lives until c-ares has let
// go of the socket and the last poll's CQE has arrived.
struct resolver::watcher final : completion {
    resolver* owner;
    int fd;
    bool want_read = false;
    bool want_write = false;
    bool active = true;  // c-ares still uses this fd for this socket
    bool armed = false;  // a poll is in flight
    unsigned armed_mask = 0;
    bool cancel_requested = false;
    bool stalled = false;  // a poll failed: leave the socket to c-ares's timeouts
    bool queued = false;   // on the driver's ready list
    unsigned events = 0;   // readiness not yet handed to c-ares

    watcher(resolver* o, int f) noexcept : owner(o), fd(f) {}

    void complete(int res, uint32_t) noexcept override {
        resolver& r = *owner;
        armed = false;
        cancel_requested = false;
        RW_ASSERT(r._ops_in_flight > 0);
        --r._ops_in_flight;
        if (res > 0) {
            events |= unsigned(res);
        } else if (res < 0 && res != -ECANCELED) {
            // EBADF and the like: re-arming would spin. c-ares's timeout
            // ends whatever waits on this socket.
            stalled = true;
            lg.warn("poll on DNS socket fd={} failed: {}", fd, std::strerror(-res));
        }
        // ECANCELED: we asked (interest changed, socket closed) or the
        // reactor is draining; the driver re-arms if c-ares still wants it.
        if (!queued) {
            queued = true;
            r._ready.push_back(this);
        }
        r.wake_driver();
        if (r._ops_in_flight == 0)
            r._ops_idle.set();
    }
};

// The one timer for ares_timeout().
struct resolver::timer final : completion {
    resolver* owner;
    __kernel_timespec ts{};
    clock_type::time_point deadline{};
    bool armed = false;
    bool cancel_requested = false;

    explicit timer(resolver* o) noexcept : owner(o) {}

    void complete(int, uint32_t) noexcept override {
        resolver& r = *owner;
        armed = false;
        cancel_requested = false;
        RW_ASSERT(r._ops_in_flight > 0);
        --r._ops_in_flight;
        // Expired, or cancelled to be re-armed earlier: either way let
        // c-ares look at its deadlines and arm again.
        r._timer_due = true;
        r.wake_driver();
        if (r._ops_in_flight == 0)
            r._ops_idle.set();
    }
};

// One c-ares query. The lookup coroutine owns it; if that coroutine's frame
// is destroyed while the query is pending, the query is orphaned and freed
// by on_answer (c-ares calls every callback exactly once, at the latest from
// ares_destroy).
struct resolver::query_ctx {
    resolver* owner;
    std::coroutine_handle<> waiter;
    bool done = false;
    bool orphaned = false;
    int status = ARES_ENOMEM;
    std::vector<uint8_t> answer;
};

namespace {
struct query_release {
    template <typename Q>
    void operator()(Q* q) const noexcept {
        if (q->done)
            delete q;
        else
            q->orphaned = true;
    }
};
}  // namespace

// ---- resolver ----

resolver::resolver(resolver_options o) : _opts(std::move(o)), _reactor(&reactor::local()) {}

resolver::~resolver() {
    RW_ASSERT(_channel == nullptr, "resolver destroyed without close()");
    RW_ASSERT(_ops_in_flight == 0, "resolver destroyed with {} polls/timers in flight; await close() first",
              _ops_in_flight);
    RW_ASSERT(!_driver_running, "resolver destroyed while its driver runs; await close() first");
    RW_ASSERT(_lookups.count() == 0, "resolver destroyed with {} lookups in progress", _lookups.count());
}

result<std::unique_ptr<resolver>, std::string> resolver::create(resolver_options o) {
    static std::once_flag once;
    static int lib_status = ARES_SUCCESS;
    std::call_once(once, [] { lib_status = ares_library_init(ARES_LIB_INIT_ALL); });
    if (lib_status != ARES_SUCCESS)
        return unexpected(fmt::format("cannot initialise c-ares: {}", ares_strerror(lib_status)));
    if (o.tries < 1)
        return unexpected(fmt::format("DNS tries must be at least 1, got {}", o.tries));
    if (o.timeout.count() < 1 || o.timeout.count() > 600'000)
        return unexpected(fmt::format("DNS timeout must be 1 ms to 600 s, got {} ms", o.timeout.count()));

    std::vector<address> servers;
    for (const std::string& s : o.servers) {
        auto a = address::parse_host_port(s);
        if (!a || a->port() == 0)
            return unexpected(fmt::format("cannot use DNS server '{}': expected IP:port or [IPv6]:port", s));
        servers.push_back(*a);
    }

    std::unique_ptr<resolver> r(new resolver(std::move(o)));
    const resolver_options& opts = r->_opts;

    ares_options ao{};
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS;
    ao.sock_state_cb = &resolver::on_sock_state;
    ao.sock_state_cb_data = r.get();
    ao.timeout = int(opts.timeout.count());
    ao.tries = opts.tries;
    ao.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    if (opts.edns_udp_size_bytes > 0) {
        ao.flags |= ARES_FLAG_EDNS;
        ao.ednspsz = opts.edns_udp_size_bytes;
        mask |= ARES_OPT_EDNSPSZ;
    }
    ares_channel ch = nullptr;
    int st = ares_init_options(&ch, &ao, mask);
    if (st != ARES_SUCCESS)
        return unexpected(fmt::format("cannot initialise the DNS resolver: {}", ares_strerror(st)));

    if (!servers.empty()) {
        std::vector<ares_addr_port_node> nodes(servers.size());
        for (size_t i = 0; i < servers.size(); ++i) {
            ares_addr_port_node& n = nodes[i];
            n.next = i + 1 < nodes.size() ? &nodes[i + 1] : nullptr;
            if (servers[i].is_v6()) {
                n.family = AF_INET6;
                auto* sin6 = reinterpret_cast<const sockaddr_in6*>(servers[i].sa());
                std::memcpy(&n.addr.addr6, &sin6->sin6_addr, sizeof n.addr.addr6);
            } else {
                n.family = AF_INET;
                n.addr.addr4 = reinterpret_cast<const sockaddr_in*>(servers[i].sa())->sin_addr;
            }
            n.udp_port = servers[i].port();
            n.tcp_port = servers[i].port();
        }
        st = ares_set_servers_ports(ch, nodes.data());
        if (st != ARES_SUCCESS) {
            ares_destroy(ch);
            return unexpected(fmt::format("cannot set the DNS servers: {}", ares_strerror(st)));
        }
    }
    r->_channel = ch;
    r->_timer = std::make_unique<timer>(r.get());
    spawn(r->drive());
    return r;
}

void resolver::wake_driver() noexcept {
    if (_driver_running)
        _wake.set();
}

void resolver::on_sock_state(void* data, int fd, int readable, int writable) noexcept {
    auto* r = static_cast<resolver*>(data);
    watcher* w = nullptr;
    for (auto& p : r->_watchers) {
        if (p->active && p->fd == fd) {
            w = p.get();
            break;
        }
    }
    if (!readable && !writable) {
        // c-ares closes the socket right after this; the poll must go.
        if (w) {
            w->active = false;
            r->update_watcher(*w);
        }
        return;
    }
    if (!w) {
        if (r->_closed)
            return;
        r->_watchers.push_back(std::make_unique<watcher>(r, fd));
        w = r->_watchers.back().get();
    }
    w->want_read = readable != 0;
    w->want_write = writable != 0;
    r->update_watcher(*w);
}

void resolver::update_watcher(watcher& w) noexcept {
    unsigned mask = (w.want_read ? unsigned(POLLIN) : 0u) | (w.want_write ? unsigned(POLLOUT) : 0u);
    bool wanted = w.active && !w.stalled && !_closed && mask != 0;
    if (w.armed) {
        // A poll is in flight: cancel it if it is no longer right; its CQE
        // brings the watcher back to the driver, which re-arms it.
        if ((!wanted || mask != w.armed_mask) && !w.cancel_requested) {
            w.cancel_requested = true;
            _reactor->cancel(&w);
        }
        return;
    }
    if (!wanted || w.queued)
        return;  // a queued watcher is re-armed by the driver after c-ares has seen its events
    io_uring_sqe* sqe = _reactor->get_sqe();
    io_uring_prep_poll_add(sqe, w.fd, mask);
    _reactor->track(sqe, &w);
    w.armed = true;
    w.armed_mask = mask;
    ++_ops_in_flight;
}

void resolver::update_timer() noexcept {
    if (_channel == nullptr || _closed)
        return;
    timeval tv{};
    timeval* t = ares_timeout(_channel, nullptr, &tv);
    if (t == nullptr)
        return;  // no query pending; an armed timer just lapses
    auto d = std::chrono::seconds(t->tv_sec) + std::chrono::microseconds(t->tv_usec);
    auto deadline = clock_type::now() + d;
    timer& tm = *_timer;
    if (tm.armed) {
        // A later deadline is served by the earlier timer firing first and
        // re-arming; an earlier one needs the timer moved.
        if (deadline + std::chrono::milliseconds(1) < tm.deadline && !tm.cancel_requested) {
            tm.cancel_requested = true;
            _reactor->cancel(&tm);
        }
        return;
    }
    tm.ts = io::to_timespec(d);
    tm.deadline = deadline;
    io_uring_sqe* sqe = _reactor->get_sqe();
    io_uring_prep_timeout(sqe, &tm.ts, 0, 0);
    _reactor->track(sqe, &tm);
    tm.armed = true;
    ++_ops_in_flight;
}

task<void> resolver::drive() {
    _driver_running = true;
    std::vector<watcher*> batch;
    for (;;) {
        if (_ready.empty() && !_timer_due && !_stop_driver) {
            _wake.reset();
            auto w = _wake.wait();
            co_await w;
            continue;
        }
        if (_stop_driver)
            break;
        batch.swap(_ready);
        for (watcher* w : batch) {
            w->queued = false;
            unsigned ev = std::exchange(w->events, 0u);
            if (!w->active || _channel == nullptr)
                continue;
            if (ev != 0) {
                bool err = ev & unsigned(POLLERR | POLLHUP | POLLNVAL);
                // Errors go to c-ares as readiness: its recv/send sees the
                // error (ECONNREFUSED from an ICMP port unreachable) and it
                // moves on to the next server or try.
                ares_socket_t rfd = w->want_read && ((ev & POLLIN) || err) ? w->fd : ARES_SOCKET_BAD;
                ares_socket_t wfd = w->want_write && ((ev & POLLOUT) || err) ? w->fd : ARES_SOCKET_BAD;
                if (rfd != ARES_SOCKET_BAD || wfd != ARES_SOCKET_BAD)
                    ares_process_fd(_channel, rfd, wfd);
            }
            // c-ares may have closed this socket, or want other events now.
            update_watcher(*w);
        }
        batch.clear();
        if (std::exchange(_timer_due, false) && _channel != nullptr)
            ares_process_fd(_channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        update_timer();
        std::erase_if(_watchers, [](const std::unique_ptr<watcher>& w) { return !w->active && !w->armed && !w->queued; });
    }
    _driver_running = false;
    _driver_exited.set();
}

void resolver::on_answer(void* arg, int status, int, unsigned char* abuf, int alen) noexcept {
    auto* q = static_cast<query_ctx*>(arg);
    resolver* r = q->owner;
    RW_ASSERT(r->_queries_in_flight > 0);
    --r->_queries_in_flight;
    if (q->orphaned) {
        delete q;
        return;
    }
    q->status = status;
    if (abuf != nullptr && alen > 0)
        q->answer.assign(abuf, abuf + alen);
    q->done = true;
    if (q->waiter)
        r->_reactor->schedule(std::exchange(q->waiter, {}));
}

task<void> resolver::close() {
    _closed = true;
    if (_channel != nullptr) {
        // Pending queries call back with ARES_EDESTRUCTION (their lookups
        // resume with a temporary error) and every socket is reported
        // closed, which cancels its poll.
        ares_channel ch = std::exchange(_channel, nullptr);
        ares_destroy(ch);
    }
    for (auto& w : _watchers) {
        w->active = false;
        update_watcher(*w);
    }
    if (_timer && _timer->armed && !_timer->cancel_requested) {
        _timer->cancel_requested = true;
        _reactor->cancel(_timer.get());
    }
    if (_driver_running) {
        _stop_driver = true;
        _wake.set();
        auto exited = _driver_exited.wait();
        co_await exited;
    }
    while (_ops_in_flight > 0) {
        _ops_idle.reset();
        auto idle = _ops_idle.wait();
        co_await idle;
    }
    auto lookups_done = _lookups.wait_idle();
    co_await std::move(lookups_done);
    _ready.clear();
    _watchers.clear();
}

void resolver::clear_cache() noexcept {
    _cache.clear();
    _lru.clear();
    _stats.cache_entries = 0;
}

const resolver::cache_entry* resolver::cache_find(const std::string& key) {
    auto it = _cache.find(key);
    if (it == _cache.end())
        return nullptr;
    if (clock_type::now() >= it->second->expires) {
        _lru.erase(it->second);
        _cache.erase(it);
        _stats.cache_entries = _cache.size();
        return nullptr;
    }
    _lru.splice(_lru.begin(), _lru, it->second);
    return &*it->second;
}

void resolver::cache_put(cache_entry e, std::chrono::seconds ttl) {
    if (ttl.count() <= 0 || _opts.cache_max_entries == 0)
        return;  // TTL 0: use once, keep nothing (RFC 1035 3.2.1)
    e.expires = clock_type::now() + ttl;
    auto it = _cache.find(e.key);
    if (it != _cache.end()) {
        *it->second = std::move(e);
        _lru.splice(_lru.begin(), _lru, it->second);
        return;
    }
    // Least recently used first; expired entries are never refreshed by a
    // hit, so they drift to the back and go first.
    while (_cache.size() >= _opts.cache_max_entries) {
        _cache.erase(_lru.back().key);
        _lru.pop_back();
        ++_stats.cache_evictions;
    }
    _lru.push_front(std::move(e));
    _cache.emplace(_lru.front().key, _lru.begin());
    _stats.cache_entries = _cache.size();
}

// ---- lookups ----

namespace {

// Each returns an ARES_* status; ARES_ENODATA when no record of the type
// is in the answer (a CNAME alone, say).
int parse_records(std::span<const uint8_t> a, uint16_t, std::vector<mx_record>& out) {
    ares_mx_reply* mx = nullptr;
    int st = ares_parse_mx_reply(a.data(), int(a.size()), &mx);
    if (st != ARES_SUCCESS)
        return st;
    for (ares_mx_reply* p = mx; p != nullptr; p = p->next)
        out.push_back(mx_record{p->priority, p->host ? std::string(p->host) : std::string()});
    ares_free_data(mx);
    std::sort(out.begin(), out.end(), [](const mx_record& x, const mx_record& y) {
        return x.preference != y.preference ? x.preference < y.preference : x.host < y.host;
    });
    return ARES_SUCCESS;
}

int parse_records(std::span<const uint8_t> a, uint16_t qtype, std::vector<address>& out) {
    int n = k_max_addresses;
    if (qtype == dns_wire::type_a) {
        ares_addrttl ttls[k_max_addresses];
        int st = ares_parse_a_reply(a.data(), int(a.size()), nullptr, ttls, &n);
        if (st != ARES_SUCCESS)
            return st;
        for (int i = 0; i < n; ++i) {
            sockaddr_in sin{};
            sin.sin_family = AF_INET;
            sin.sin_addr = ttls[i].ipaddr;
            out.push_back(address::from_sockaddr(reinterpret_cast<const sockaddr*>(&sin), sizeof sin));
        }
    } else {
        ares_addr6ttl ttls[k_max_addresses];
        int st = ares_parse_aaaa_reply(a.data(), int(a.size()), nullptr, ttls, &n);
        if (st != ARES_SUCCESS)
            return st;
        for (int i = 0; i < n; ++i) {
            sockaddr_in6 sin6{};
            sin6.sin6_family = AF_INET6;
            std::memcpy(&sin6.sin6_addr, &ttls[i].ip6addr, sizeof sin6.sin6_addr);
            out.push_back(address::from_sockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6));
        }
    }
    return n > 0 ? ARES_SUCCESS : ARES_ENODATA;
}

int parse_ptr(std::span<const uint8_t> a, std::vector<std::string>& out) {
    hostent* h = nullptr;
    int st = ares_parse_ptr_reply(a.data(), int(a.size()), nullptr, 0, AF_INET, &h);
    if (st != ARES_SUCCESS)
        return st;
    auto add = [&](const char* n) {
        if (n == nullptr || *n == 0)
            return;
        std::string s(n);
        if (std::find(out.begin(), out.end(), s) == out.end())
            out.push_back(std::move(s));
    };
    add(h->h_name);
    for (char** p = h->h_aliases; p != nullptr && *p != nullptr; ++p)
        add(*p);
    ares_free_hostent(h);
    return out.empty() ? ARES_ENODATA : ARES_SUCCESS;
}

int parse_records(std::span<const uint8_t> a, uint16_t qtype, std::vector<std::string>& out) {
    if (qtype == dns_wire::type_ptr)
        return parse_ptr(a, out);
    ares_txt_ext* txt = nullptr;
    int st = ares_parse_txt_reply_ext(a.data(), int(a.size()), &txt);
    if (st != ARES_SUCCESS)
        return st;
    // A record's character-strings are joined without a separator
    // (RFC 7208 3.3, RFC 6376 3.6.2.2).
    for (ares_txt_ext* p = txt; p != nullptr; p = p->next) {
        std::string_view chunk(reinterpret_cast<const char*>(p->txt), p->txt ? p->length : 0);
        if (p->record_start || out.empty())
            out.emplace_back(chunk);
        else
            out.back().append(chunk);
    }
    ares_free_data(txt);
    return ARES_SUCCESS;
}

}  // namespace

dns_error resolver::negative_answer(dns_errc code, const std::string& what, std::span<const uint8_t> answer,
                                    const std::string& key) {
    std::chrono::seconds ttl = _opts.fallback_negative_ttl;
    if (!answer.empty()) {
        auto s = dns_wire::summarize(answer);
        if (!s) {
            ++_stats.malformed;
            ++_stats.failures_temporary;
            lg.debug("malformed negative answer for {}: {}", what, s.error());
            return dns_error{dns_errc::temporary, fmt::format("{}: malformed answer: {}", what, s.error())};
        }
        if (s.value().negative_ttl)
            ttl = std::chrono::seconds(*s.value().negative_ttl);
    }
    ttl = std::min(ttl, _opts.max_negative_ttl);
    dns_error err{code, fmt::format("{}: {}", what,
                                    code == dns_errc::nxdomain ? "no such domain" : "no record of this type")};
    ++_stats.answers_negative;
    cache_entry e;
    e.key = key;
    e.negative = err;
    cache_put(std::move(e), ttl);
    return err;
}

template <typename T>
dns_result<T> resolver::finish(const std::string& what, const std::string& key, uint16_t qtype, int status,
                               std::span<const uint8_t> answer) {
    auto temporary = [&](std::string why) -> dns_result<T> {
        ++_stats.failures_temporary;
        lg.debug("lookup {} failed: {}", what, why);
        return unexpected(dns_error{dns_errc::temporary, fmt::format("{}: {}", what, why)});
    };
    switch (status) {
    case ARES_SUCCESS:
        break;
    case ARES_ENODATA:
        return unexpected(negative_answer(dns_errc::nodata, what, answer, key));
    case ARES_ENOTFOUND:
        return unexpected(negative_answer(dns_errc::nxdomain, what, answer, key));
    case ARES_EBADNAME:
        return unexpected(dns_error{dns_errc::bad_name, fmt::format("{}: {}", what, ares_strerror(status))});
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        return temporary("resolver closed");
    case ARES_EBADRESP:
        ++_stats.malformed;
        return temporary(ares_strerror(status));
    default:  // ETIMEOUT, ECONNREFUSED, ESERVFAIL, EREFUSED, ENOTIMP, EFORMERR, ENOMEM...
        return temporary(ares_strerror(status));
    }

    auto s = dns_wire::summarize(answer);
    if (!s) {
        ++_stats.malformed;
        return temporary(fmt::format("malformed answer: {}", s.error()));
    }
    if (s.value().truncated)
        return temporary("truncated answer");
    std::vector<T> records;
    int st = parse_records(answer, qtype, records);
    if (st == ARES_ENODATA || (st == ARES_SUCCESS && records.empty()))
        return unexpected(negative_answer(dns_errc::nodata, what, answer, key));
    if (st != ARES_SUCCESS) {
        ++_stats.malformed;
        return temporary(fmt::format("malformed answer: {}", ares_strerror(st)));
    }
    ++_stats.answers_positive;
    int64_t ttl_s = std::min<int64_t>(s.value().min_answer_ttl.value_or(0), k_max_ttl_s);
    std::chrono::seconds ttl = std::min(std::chrono::seconds(ttl_s), _opts.max_ttl);
    cache_entry e;
    e.key = key;
    e.records = records;
    cache_put(std::move(e), ttl);
    return records;
}

template <typename T>
task<dns_result<T>> resolver::lookup(std::string name, uint16_t qtype) {
    gate::holder hold(_lookups);
    RW_DASSERT(reactor::local_or_null() == _reactor, "resolver used from another core");
    std::string norm = normalize(name);
    if (_closed) {
        ++_stats.failures_temporary;
        co_return unexpected(dns_error{dns_errc::temporary, fmt::format("{} {}: resolver closed", norm, type_name(qtype))});
    }
    if (std::string_view why = check_name(norm); !why.empty())
        co_return unexpected(dns_error{dns_errc::bad_name, fmt::format("{} {}: {}", norm, type_name(qtype), why)});

    std::string key = fmt::format("{}/{}", qtype, norm);
    if (const cache_entry* e = cache_find(key)) {
        ++_stats.cache_hits;
        if (e->negative)
            co_return unexpected(*e->negative);
        co_return std::get<std::vector<T>>(e->records);
    }
    ++_stats.cache_misses;
    std::string what = fmt::format("{} {}", norm, type_name(qtype));  // for messages
    if (_queries_in_flight >= _opts.max_queries_in_flight) {
        ++_stats.failures_temporary;
        co_return unexpected(dns_error{dns_errc::temporary, what + ": too many DNS queries in flight"});
    }

    std::unique_ptr<query_ctx, query_release> q(new query_ctx{this});
    ++_queries_in_flight;
    ++_stats.queries_sent;
    const auto sent = std::chrono::steady_clock::now();
    // May call on_answer at once (out of memory, say).
    ares_query(_channel, norm.c_str(), k_class_in, qtype, &resolver::on_answer, q.get());
    update_timer();

    struct answer_awaiter {
        query_ctx* q;
        bool await_ready() const noexcept { return q->done; }
        void await_suspend(std::coroutine_handle<> h) noexcept { q->waiter = h; }
        void await_resume() const noexcept {}
    };
    answer_awaiter aw{q.get()};
    co_await aw;
    _stats.latency_seconds.add(std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count());
    co_return finish<T>(what, key, qtype, q->status, q->answer);
}

task<dns_result<mx_record>> resolver::resolve_mx(std::string name) {
    return lookup<mx_record>(std::move(name), dns_wire::type_mx);
}
task<dns_result<address>> resolver::resolve_a(std::string name) {
    return lookup<address>(std::move(name), dns_wire::type_a);
}
task<dns_result<address>> resolver::resolve_aaaa(std::string name) {
    return lookup<address>(std::move(name), dns_wire::type_aaaa);
}
task<dns_result<std::string>> resolver::resolve_txt(std::string name) {
    return lookup<std::string>(std::move(name), dns_wire::type_txt);
}

task<dns_result<std::string>> resolver::resolve_ptr(std::string name) {
    return lookup<std::string>(std::move(name), dns_wire::type_ptr);
}

}  // namespace rw::net
