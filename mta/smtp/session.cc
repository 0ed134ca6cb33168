// One SMTP session (RFC 5321 with ESMTP: PIPELINING, SIZE, 8BITMIME,
// SMTPUTF8, ENHANCEDSTATUSCODES, STARTTLS, AUTH, CHUNKING, DSN), from the
// greeting to the close. Runs on the core that accepted the connection; the
// message body streams into that core's spool shard as it arrives, and the
// client hears "250 queued" only once the spool has made it durable.
//
// Replies to pipelined commands are collected and written in one send when
// the client has nothing more buffered (RFC 2920 3.1).
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <random>

#include "mail/codec.hh"
#include "mail/domain.hh"
#include "mta/smtp/command.hh"
#include "mta/smtp/data_decoder.hh"
#include "mta/smtp/replies.hh"
#include "mta/smtp/message_pipeline.hh"
#include "mta/smtp/rule_actions.hh"
#include "mta/scan/milter.hh"
#include "mta/smtp/server.hh"
#include "mta/verify/dns.hh"
#include "mta/verify/feeds.hh"
#include "policy/auth_results.hh"
#include "runtime/base/journal.hh"
#include "runtime/base/log.hh"
#include "runtime/smp/offload.hh"

namespace rw::mta {

namespace {
const logger lg{"smtp"};

constexpr size_t k_max_line = 2048;         // command line incl. parameters (RFC 5321 4.5.3.1.4 + extensions)
constexpr size_t k_spool_chunk = 64 << 10;  // body bytes per spool append
constexpr size_t k_read_bytes = 16 << 10;

std::string mid_string(uint64_t id) { return fmt::format("{:016X}", id); }

std::string rfc5322_date() { return mail::date_time(int64_t(std::time(nullptr))); }


using smtp::reply;

class session {
public:
    session(net::accepted conn, const listener_options* lo, server_env* env, connection_limits* limits)
        : _tcp(conn.fd), _peer(conn.peer), _lo(lo), _env(env), _limits(limits) {}

    task<void> run();

private:
    // ---- I/O ----
    // Reads more input into _in. 0 = closed, <0 = -errno (-ETIMEDOUT).
    task<int> read_more(std::chrono::nanoseconds timeout);
    // Reads more before deadline; -ETIMEDOUT once it has passed.
    task<int> read_until(std::chrono::steady_clock::time_point deadline) {
        auto left = deadline - std::chrono::steady_clock::now();
        if (left <= std::chrono::nanoseconds(0))
            co_return -ETIMEDOUT;
        co_return co_await read_more(std::chrono::duration_cast<std::chrono::nanoseconds>(left));
    }
    task<bool> flush();
    void queue(int code, std::string_view enhanced, std::string_view text);
    void queue(const reply& r) { queue(r.code, r.enhanced, r.text); }
    void queue_raw(std::string_view s) { _out.append(s); }
    // Extracts one command line (without CRLF) from _in; false = need more.
    bool next_line(std::string& line, bool& too_long);
    size_t buffered() const { return _in.size() - _in_pos; }
    void compact() {
        if (_in_pos > 0 && (_in_pos == _in.size() || _in_pos > 65536)) {
            _in.erase(0, _in_pos);
            _in_pos = 0;
        }
    }

    // ---- commands ----
    task<bool> handle(const std::string& line);  // false = end the session
    void do_ehlo(const smtp::command& c, bool extended);
    task<void> do_mail(const smtp::command& c);
    task<void> do_rcpt(const smtp::command& c);
    task<bool> do_data();
    task<bool> do_bdat(const smtp::command& c);
    task<bool> do_starttls();
    task<bool> do_auth(const smtp::command& c);
    void reset_transaction();
    bool count_error();  // true = too many errors, close
    bool exempt() const { return limit_exempt(*_env, _peer); }
    // ---- sender group and mail flow policy ----
    // Classifies the client (at connect; again at MAIL once SPF is known,
    // when a group names SPF results) and puts it under its policy.
    task<void> classify(std::optional<policy::spf::result> spf);
    uint64_t max_size() const {
        return _policy && _policy->max_message_size ? _policy->max_message_size : _lo->max_message_size_bytes;
    }
    unsigned max_rcpts() const {
        return _policy && _policy->max_recipients_per_message ? _policy->max_recipients_per_message
                                                              : _lo->max_recipients;
    }
    bool sender_auth_on() const { return !_policy || _policy->sender_auth; }
    bool offers_tls() const { return _env->tls && !_tls && (!_policy || _policy->tls != policy::access::tls_mode::off); }
    bool offers_auth() const { return !_policy || _policy->auth; }
    const screening_options& screening() const {
        static const screening_options defaults;
        return _env->access ? _env->access->screening : defaults;
    }
    // A screening test failed: logged, remembered (enforce) or the session
    // ends (drop: true, with 521 queued).
    bool screen_failed(std::string_view test, screen_action a);
    policy::connection_facts connection_facts() const {
        policy::connection_facts cf;
        cf.peer = _peer;
        cf.helo = _helo;
        cf.tls = bool(_tls);
        cf.authenticated = _authenticated;
        cf.auth_user = _auth_user;
        cf.relay_granted = _policy && _policy->action == policy::access::flow_action::relay;
        return cf;
    }
    std::string received_header(uint64_t id);
    // What delivery adds to the message: our Received, our
    // Authentication-Results.
    fs::added_headers added_headers(uint64_t id);
    void journal_reject(int code, std::string_view what);
    // Sends a refusal and records it in the mail log with its cause.
    void refuse(const smtp::refusal& r) {
        queue(r.r);
        journal_reject(r.r.code, r.cause);
    }
    // Ends a transaction whose message was not queued.
    void refuse_message(const smtp::refusal& r) {
        refuse(r);
        reset_transaction();
    }
    // by: "DATA" or "BDAT", the command that carried the body.
    void message_queued(uint64_t id, uint64_t size, std::string_view by);
    task<result<uint64_t, fs::spool_error>> queue_message(std::string_view first_chunk);

    net::tcp_stream _tcp;
    std::unique_ptr<net::tls_stream> _tls;
    net::address _peer;
    const listener_options* _lo;
    server_env* _env;
    uint64_t _icid = 0;

    std::string _in;
    size_t _in_pos = 0;
    std::string _out;
    std::string _scratch;  // read buffer when no provided buffer is free

    // session state
    std::string _helo;
    bool _esmtp = false;
    bool _authenticated = false;
    std::string _auth_user;
    unsigned _errors = 0;
    // transaction
    bool _have_mail = false;
    bool _null_sender = false;
    std::string _mail_from;
    envelope_params _params;  // MAIL's BODY/SMTPUTF8/RET/ENVID, each RCPT's NOTIFY/ORCPT
    bool _smtputf8 = false;
    uint64_t _declared_size = 0;
    std::vector<std::string> _rcpts;
    // BDAT in progress
    std::optional<fs::message_writer> _bdat_writer;
    uint64_t _bdat_bytes = 0;
    std::optional<smtp::refusal> _bdat_error;  // the chunks so far failed: why
    // The message being received (DATA, or the BDAT chunks so far) streams
    // through this as it arrives.
    std::optional<smtp::message_pipeline> _pipeline;
    void start_pipeline();
    // DKIM verification of the message streaming in (arriving mail only),
    // fed by the pipeline; its verdicts once the message is complete.
    std::unique_ptr<verify::dkim_feed> _dkim_feed;
    // DKIM signing of relayed mail: the keys of the From: domain, found at
    // the end of the header section, and the body hash they share.
    struct sign_feed : smtp::body_consumer {
        std::string domain;  // whose keys: this one, or "" for the From: domain's
        std::shared_ptr<const policy::dkim::keyring> ring;
        std::span<const policy::dkim::signing_key> keys;
        std::unique_ptr<policy::dkim::body_hasher> hasher;
        std::string body_hash;
        const smtp::message_pipeline* p = nullptr;
        void headers_end(uint64_t) override {
            for (const auto& f : p->headers().fields()) {
                if (!domain.empty())
                    break;
                if (!mail::name_is(f, "From"))
                    continue;
                auto from = mail::parse_address_list(f.unfolded_value());
                if (from && !from->empty())
                    keys = ring->for_domain(from->front().domain);
                break;  // the first From: only
            }
            if (!domain.empty())
                keys = ring->for_domain(domain);
            if (!keys.empty())
                hasher = std::make_unique<policy::dkim::body_hasher>(policy::dkim::canon::relaxed, false, std::nullopt);
        }
        void body(std::string_view b) override {
            if (hasher)
                hasher->feed(b);
        }
        void end() override {
            if (hasher)
                body_hash = hasher->finish();
            hasher.reset();
        }
    };
    std::unique_ptr<sign_feed> _sign_feed;
    std::unique_ptr<sign_feed> _seal_feed;  // ARC sealing of arriving mail: the sealer's key, the body hash
    // ARC validation of arriving mail, fed by the pipeline.
    std::unique_ptr<verify::arc_feed> _arc_feed;
    std::optional<policy::arc::outcome> _arc;
    std::optional<std::vector<policy::dkim::verdict>> _dkim;
    std::optional<policy::dmarc::outcome> _dmarc;
    bool _arriving = false;  // this message's client may not relay: it is checked, not signed
    // After the message: the checks that need all of it (DKIM).
    task<void> verify_message();
    // The refusal a DMARC reject policy asks for, where the listener acts on it.
    std::optional<smtp::refusal> dmarc_refusal() const;
    // Content rules, fed by the pipeline; their decision at the end of the message.
    std::unique_ptr<verify::rules_feed> _rules_feed;
    std::optional<policy::rules::decision> _content;
    // The scanners of this message (clamd, rspamd), fed as the spool is.
    std::unique_ptr<scan::job> _scan;
    // Ends the scans and logs them (at the end of the message).
    task<void> finish_scans();
    // Puts the scanners' verdicts into the decision: a virus before the
    // content rules, spam after them (a rule's accept or refusal stands).
    void apply_scans(policy::rules::decision& d) const;

    // ---- milters ([[milter]]) ----
    // The session's milters, made at the first MAIL of a client whose
    // policy asks for them; each keeps its connection for the session.
    std::vector<std::unique_ptr<scan::milter::client>> _milters;
    bool _milters_made = false;
    // The header fields and body bytes the pipeline passed since the last
    // flush, for the milters (bounded: a header section, one spool piece).
    struct milter_feed : smtp::body_consumer {
        std::vector<std::pair<std::string, std::string>> fields;  // name, raw value
        bool eoh = false, eoh_sent = false;
        std::string pending;  // body bytes
        void header_field(const mail::header_field& f) override {
            fields.emplace_back(std::string(f.name()), std::string(f.raw_value()));
        }
        void headers_end(uint64_t) override { eoh = true; }
        void body(std::string_view b) override { pending.append(b); }
    };
    std::unique_ptr<milter_feed> _milter_feed;
    // The milters' verdict on the transaction and their changes.
    std::optional<scan::milter::answer> _milter_verdict;
    std::string _milter_by;  // the milter that gave it
    scan::milter::edits _milter_edits;
    std::string _milter_changed_by;  // the last milter that changed the envelope or the body
    bool any_milter() const {
        for (const auto& m : _milters)
            if (!m->failed() && !m->done())
                return true;
        return false;
    }
    // A milter's refusal of a command, or its failure under tempfail: the
    // reply (queued) and true.
    bool milter_refused(const scan::milter::client& m, const scan::milter::answer& a, std::string_view what);
    task<bool> milters_mail(const smtp::command& c);  // false: MAIL refused
    task<bool> milters_rcpt(const std::string& rcpt);  // false: the recipient refused
    task<bool> milters_data();                         // false: DATA refused
    task<void> milters_flush();                        // what the feed holds, to every milter
    task<void> milters_end(uint64_t id);               // the end of the message
    task<void> milters_quit();
    void apply_milters(policy::rules::decision& d) const;
    // Decides the content rules once the message is complete. True when
    // the message ends there (refused or dropped: answered, not queued).
    bool content_ends_message(fs::message_writer& mw, uint64_t size);
    // The recipients' first states: held, when a rule quarantines the
    // message; else none (pending).
    std::vector<fs::rcpt_state> first_states(size_t rcpts) const;
    // Commits the message with what the rules decided (bounced, or
    // handed to a message under a new envelope), writes the copies they
    // ask for, queues it all and answers the client.
    task<void> commit_message(fs::message_writer& mw, uint64_t size, std::string_view by);
    // The notices the rules ask for, about the message as it ends
    // (mid: 0 when not queued); written later by send_notices().
    void prepare_notices(std::string outcome, uint64_t mid, uint64_t size);
    task<void> send_notices();
    std::vector<smtp::notice> _notices;
    std::string _subject;  // of the message being queued, for the mail log
    std::optional<policy::spf::outcome> _spf;  // of this transaction, when checked
    // The HELO identity's own check (RFC 7208 2.3), once per HELO name of
    // the session; not for the null sender, whose MAIL FROM check is it.
    std::optional<policy::spf::outcome> _spf_helo;
    std::string _spf_helo_for;

    connection_limits* _limits;
    std::shared_ptr<const policy::access::table> _table;  // kept while the session lasts
    const policy::access::flow_policy* _policy = nullptr;  // null: the listener's limits only
    std::optional<policy::access::classification> _class;
    unsigned _session_messages = 0;
    bool _screening = true;       // the screening tests apply to this session
    bool _helo_answered = false;  // the first HELO/EHLO has been answered
    bool _bare_lf = false;        // the last command line ended with LF alone
    std::string _screen_failed;   // the first test failed under enforce: every RCPT is refused
    bool _end_session = false;    // a reply ended the session
    bool _screen_dropped = false;  // a screening test ended the session
    // Outbound spam control: the sender keys of this transaction's relayed
    // mail ("user:NAME", "domain:DOMAIN"; empty when not relayed).
    std::string _out_user, _out_domain;
};

task<int> session::read_more(std::chrono::nanoseconds timeout) {
    compact();
    io_options o{.timeout = timeout};
    if (_tls) {
        // Into the session's own buffer: a local array would live in this
        // coroutine's frame, 16 KiB per idle connection.
        if (_scratch.size() < k_read_bytes)
            _scratch.resize(k_read_bytes);
        auto r = co_await _tls->read(_scratch.data(), _scratch.size(), o);
        if (!r)
            co_return r.error().code == net::tls_errc::timeout ? -ETIMEDOUT : -EIO;
        _in.append(_scratch.data(), r.value());
        co_return int(r.value());
    }
    if (_env->rx) {
        auto s = co_await net::recv_select(_tcp.fd(), *_env->rx, o);
        if (s.has_buffer) {
            if (s.res > 0)
                _in.append(_env->rx->buffer(s.bid).data(), size_t(s.res));
            _env->rx->recycle(s.bid);
        }
        if (s.res != -ENOBUFS)
            co_return s.res;
        // Every provided buffer is in use: fall back to our own.
    }
    if (_scratch.size() < k_read_bytes)
        _scratch.resize(k_read_bytes);
    auto op = io::recv(_tcp.fd(), _scratch.data(), _scratch.size(), o);
    int n = co_await op;
    if (n > 0)
        _in.append(_scratch.data(), size_t(n));
    co_return n;
}

task<bool> session::flush() {
    if (_out.empty())
        co_return true;
    if (_env->conservation_level >= 1 && _env->tarpit.count() > 0)
        co_await io::sleep(_env->tarpit);  // resource conservation: slow every client down
    io_options o{.timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(_lo->command_timeout)};
    bool ok;
    if (_tls) {
        auto r = co_await _tls->write_all(_out.data(), _out.size(), o);
        ok = bool(r);
    } else {
        int n = co_await _tcp.send_all(_out.data(), _out.size(), o);
        ok = n >= 0;
    }
    _out.clear();
    co_return ok;
}

void session::queue(int code, std::string_view enhanced, std::string_view text) {
    // RFC 2034: every reply line carries the enhanced code (but not 220/221
    // greetings before EHLO... harmless either way; we always include it).
    fmt::format_to(std::back_inserter(_out), "{} {}{}{}\r\n", code, enhanced, enhanced.empty() ? "" : " ", text);
}

bool session::next_line(std::string& line, bool& too_long) {
    too_long = false;
    size_t nl = _in.find('\n', _in_pos);
    if (nl == std::string::npos) {
        if (buffered() > k_max_line) {
            // Discard what we have; the rest of the line is dropped too.
            too_long = true;
            _in_pos = _in.size();
            return true;
        }
        return false;
    }
    size_t end = nl;
    _bare_lf = !(end > _in_pos && _in[end - 1] == '\r');
    if (!_bare_lf)
        --end;
    if (end - _in_pos > k_max_line) {
        too_long = true;
        _in_pos = nl + 1;
        return true;
    }
    line.assign(_in, _in_pos, end - _in_pos);
    _in_pos = nl + 1;
    return true;
}

bool session::count_error() {
    ++_errors;
    if (_errors >= _lo->max_errors) {
        queue(421, "4.7.0", fmt::format("{} Error: too many errors", _env->hostname));
        return true;
    }
    return false;
}

void session::journal_reject(int code, std::string_view what) {
    _env->rejected++;
    _env->rejected_by_code[code]++;
    journal::record("reject", {{"icid", _icid}, {"peer", std::string_view(_peer.ip_string())},
                               {"code", int64_t(code)}, {"what", what}});
}

void session::reset_transaction() {
    _have_mail = false;
    _null_sender = false;
    _mail_from.clear();
    _params = {};
    _smtputf8 = false;
    _declared_size = 0;
    _rcpts.clear();
    _bdat_writer.reset();
    _scan.reset();
    _milter_feed.reset();
    _milter_verdict.reset();
    _milter_by.clear();
    _milter_edits = {};
    _milter_changed_by.clear();
    _bdat_bytes = 0;
    _bdat_error.reset();
    _pipeline.reset();
    _dkim_feed.reset();
    _dkim.reset();
    _dmarc.reset();
    _sign_feed.reset();
    _seal_feed.reset();
    _arc_feed.reset();
    _arc.reset();
    _rules_feed.reset();
    _content.reset();
    _spf.reset();
}

void session::do_ehlo(const smtp::command& c, bool extended) {
    reset_transaction();
    _helo = c.domain;
    _esmtp = extended;
    if (!extended) {
        queue(250, "", _env->hostname);
        return;
    }
    std::string r;
    auto line = [&](std::string_view s) { r += fmt::format("250-{}\r\n", s); };
    line(_env->hostname);
    line("PIPELINING");
    line(fmt::format("SIZE {}", max_size()));
    line("8BITMIME");
    line("SMTPUTF8");
    line("ENHANCEDSTATUSCODES");
    line("CHUNKING");
    line("DSN");
    if (offers_tls())
        line("STARTTLS");
    if (_tls)
        line("REQUIRETLS");  // RFC 8689: only where the session itself is protected
    bool auth_ok = _env->creds && _lo->auth != auth_mode::none && !_authenticated && offers_auth() &&
                   (_tls || _lo->allow_auth_without_tls);
    if (auth_ok)
        line("AUTH PLAIN LOGIN");
    r.back() = '\n';
    // Turn the last "250-" into "250 ".
    size_t last = r.rfind("250-");
    r[last + 3] = ' ';
    queue_raw(r);
}

task<void> session::do_mail(const smtp::command& c) {
    if (_helo.empty()) {
        queue(503, "5.5.1", "Error: send HELO/EHLO first");
        (void)count_error();
        co_return;
    }
    if (_have_mail) {
        queue(503, "5.5.1", "Error: nested MAIL command");
        (void)count_error();
        co_return;
    }
    if (_env->conservation_level >= 2) {
        auto r = smtp::conserving_mail();
        queue(r.r.code, r.r.enhanced, r.r.text);
        journal_reject(r.r.code, r.cause);
        co_return;
    }
    if (_lo->auth == auth_mode::required && !_authenticated) {
        queue(530, "5.7.0", "Authentication required");
        co_return;
    }
    if (_policy && _policy->tls == policy::access::tls_mode::required && !_tls) {
        queue(530, "5.7.0", "Must issue a STARTTLS command first");
        journal_reject(530, "TLS required");
        co_return;
    }
    if (_policy && _policy->max_messages_per_session && _session_messages >= _policy->max_messages_per_session) {
        queue(421, "4.7.0", fmt::format("{} Error: too many messages in one session; send the rest in a new one",
                                        _env->hostname));
        journal_reject(421, "messages per session");
        _end_session = true;
        co_return;
    }
    if (auto h = _env->spool->health(); h != fs::spool_health::ok) {
        refuse(smtp::spool_unhealthy(h));
        co_return;
    }
    if (_env->msg_rate && !exempt() && !_env->msg_rate->allow(_peer, std::chrono::steady_clock::now())) {
        queue(450, "4.7.1", "Error: too many messages from your address; slow down");
        journal_reject(450, "message rate");
        co_return;
    }
    if (c.has_size) {
        if (c.size > max_size()) {
            refuse(smtp::message_too_big());  // RFC 1870 6.1
            co_return;
        }
        _declared_size = c.size;
    }
    // SPF of the MAIL FROM identity (HELO for the null sender), for clients
    // that may not relay: the mail of relay clients is our own.
    if (_env->auth && _env->auth->spf && _env->dns && sender_auth_on() && !_env->relay->may_relay(connection_facts())) {
        const authentication_options* ao = _env->auth;
        // The HELO identity first (RFC 7208 2.3): a fail there is decided
        // without the MAIL FROM record, and the result is cached for the
        // session's later transactions.
        if (ao->spf_helo && !c.null_path && _helo.find('.') != std::string::npos && !mail::check_domain(_helo)) {
            if (_spf_helo_for != _helo) {
                policy::spf::request hq;
                hq.ip = _peer;
                hq.helo = _helo;
                hq.helo_identity = true;
                hq.receiver = _env->hostname;
                hq.now = int64_t(std::time(nullptr));
                policy::dns_answers ha;
                task<policy::spf::outcome> ht = verify::check_spf(*_env->dns, std::move(hq), ao->spf_options, ha);
                _spf_helo = co_await std::move(ht);
                _spf_helo_for = _helo;
            }
            if (_spf_helo && _spf_helo->res == policy::spf::result::fail) {
                if (auto r = smtp::spf_refusal(*_spf_helo, ao->spf_reject_fail, false)) {
                    refuse(*r);
                    co_return;
                }
            }
        }
        policy::spf::request rq;
        rq.ip = _peer;
        rq.sender = c.null_path ? std::string() : smtp::to_string(c.path);
        rq.helo = _helo;
        rq.receiver = _env->hostname;
        rq.now = int64_t(std::time(nullptr));
        policy::dns_answers answers;
        task<policy::spf::outcome> t = verify::check_spf(*_env->dns, std::move(rq), ao->spf_options, answers);
        policy::spf::outcome o = co_await std::move(t);
        if (auto r = smtp::spf_refusal(o, ao->spf_reject_fail, ao->spf_tempfail_temperror)) {
            refuse(*r);
            co_return;
        }
        _spf = std::move(o);
        if (_table && _table->needs_spf()) {
            // A group may hold this client by its SPF result: the
            // transaction is under that group's policy.
            task<void> ct = classify(_spf->res);
            co_await std::move(ct);
            if (_policy->action == policy::access::flow_action::reject) {
                queue(550, "5.7.1", _policy->reject_text);
                journal_reject(550, fmt::format("sender group {}", _table->groups()[_class->group].name));
                _spf.reset();
                co_return;
            }
        }
    }
    if (c.requiretls && !_tls) {
        // RFC 8689 4.1: REQUIRETLS is offered on TLS sessions only.
        queue(530, "5.7.10", "REQUIRETLS needs a TLS session: STARTTLS first");
        co_return;
    }
    _smtputf8 = c.smtputf8;
    _params = {};
    _params.body = c.body;
    _params.smtputf8 = c.smtputf8;
    _params.ret = c.ret;
    _params.envid = mail::xtext_decode_lenient(c.envid);
    _params.requiretls = c.requiretls;
    if (_policy)
        _params.pool = _policy->pool;
    _have_mail = true;
    _null_sender = c.null_path;
    _mail_from = c.null_path ? std::string() : smtp::to_string(c.path);
    _out_user.clear();
    _out_domain.clear();
    if (_env->outbound && _env->relay->may_relay(connection_facts())) {
        if (_authenticated)
            _out_user = "user:" + _auth_user;
        if (!c.null_path)
            _out_domain = "domain:" + mail::normalize_domain(c.path.domain);
        auto d = _env->outbound->check(_out_user, _out_domain, std::chrono::system_clock::now());
        if (d.v != outbound_control::decision::verdict::ok) {
            const bool suspended = d.v == outbound_control::decision::verdict::suspended;
            if (suspended)
                queue(550, "5.7.1", fmt::format("Sender {} is suspended: {}; ask the administrator", d.key, d.reason));
            else
                queue(452, "4.7.1", fmt::format("Sender {} has sent too much: {}; try later", d.key, d.reason));
            journal_reject(suspended ? 550 : 452, fmt::format("outbound {}: {}", d.key, d.reason));
            _have_mail = false;
            _mail_from.clear();
            co_return;
        }
    }
    if (_env->scanning && !_env->scanning->milters.empty() && (!_policy || _policy->milters)) {
        bool ok = co_await milters_mail(c);
        if (!ok) {
            _have_mail = false;
            _mail_from.clear();
            co_return;
        }
    }
    queue(250, "2.1.0", "Ok");
}

task<void> session::do_rcpt(const smtp::command& c) {
    if (!_have_mail) {
        queue(503, "5.5.1", "Error: need MAIL command");
        (void)count_error();
        co_return;
    }
    if (!_screen_failed.empty()) {
        // Screening, enforced: the envelope is heard (and logged), nothing accepted.
        queue(550, "5.5.1", fmt::format("Error: protocol error ({}); mail from this client is refused", _screen_failed));
        journal_reject(550, fmt::format("screening: {}", _screen_failed));
        co_return;
    }
    if (_rcpts.size() >= _lo->max_recipients) {
        // RFC 5321 4.5.3.1.10: 452 lets the client send the rest later.
        queue(452, "4.5.3", "Error: too many recipients");
        co_return;
    }
    const policy::connection_facts cf = connection_facts();
    policy::sender_facts sf;
    sf.null_sender = _null_sender;
    if (!_null_sender) {
        size_t at = _mail_from.rfind('@');
        sf.local = at == std::string::npos ? _mail_from : _mail_from.substr(0, at);
        sf.domain = at == std::string::npos ? "" : _mail_from.substr(at + 1);
    }
    policy::recipient_facts rf;
    rf.local = c.path.local;
    rf.domain = c.path.domain;
    rf.domain_literal = c.path.domain_literal;
    rf.has_relay_chars = smtp::has_relay_chars(c.path);
    rf.had_source_route = c.had_source_route;
    policy::verdict v = _env->relay->check_recipient(cf, sf, rf);
    const std::string rcpt = smtp::to_string(c.path);
    if (v.act != policy::action::accept) {
        queue(v.code, v.enhanced, v.reason);
        journal_reject(v.code, rcpt);
        co_return;
    }
    // The recipient access table.
    const policy::recipient_entry* ra = _env->access ? _env->access->recipients.find(rf.local, rf.domain) : nullptr;
    if (ra && ra->reject) {
        queue(ra->code, ra->enhanced, fmt::format("<{}>: {}", rcpt, ra->text));
        journal_reject(ra->code, fmt::format("recipient access: {}", ra->match));
        co_return;
    }
    const bool bypass = ra && ra->bypass_throttles;
    if (!bypass && _rcpts.size() >= max_rcpts()) {
        queue(452, "4.5.3", "Error: too many recipients");
        co_return;
    }
    if (!bypass && _policy && _policy->max_recipients_per_hour && !exempt()) {
        const auto& bucket = _env->access->per_hour[_class->policy];
        if (bucket && !bucket->allow(_peer, std::chrono::steady_clock::now())) {
            queue(452, "4.7.1", "Error: too many recipients from your address this hour; try later");
            journal_reject(452, "recipients per hour");
            co_return;
        }
    }
    // Call-ahead to the internal server, unless the table knows the mailbox.
    const call_ahead_env* ca = _env->access ? _env->access->call_ahead.get() : nullptr;
    if (!ra && ca && !rf.domain_literal && ca->covers(mail::normalize_domain(rf.domain))) {
        task<call_ahead_result> t = call_ahead(ca, rcpt);
        call_ahead_result r = co_await std::move(t);
        const char* verdict = r.v == call_ahead_result::verdict::valid     ? "valid"
                              : r.v == call_ahead_result::verdict::invalid ? "invalid"
                                                                           : "unknown";
        const std::string said = r.reply.line();
        journal::record("call_ahead", {{"icid", _icid},
                                       {"rcpt", std::string_view(rcpt)},
                                       {"result", verdict},
                                       {"cached", r.cached},
                                       {"reply", std::string_view(said)},
                                       {"why", std::string_view(r.why)}});
        if (r.v == call_ahead_result::verdict::invalid) {
            // The internal server's own code and reason; 5.1.1 when it gave
            // no enhanced code of its class.
            const int code = r.reply.code / 100 == 5 ? r.reply.code : 550;
            std::string enh = r.reply.enhanced.starts_with("5.") ? r.reply.enhanced : std::string("5.1.1");
            std::string text = r.reply.text;
            if (!r.reply.enhanced.empty() && text.starts_with(r.reply.enhanced))
                text.erase(0, r.reply.enhanced.size() + 1);
            if (text.size() > 200)
                text.resize(200);
            for (char& ch : text)  // another server's words, repeated to our client: printable ASCII only
                if (uint8_t(ch) < 0x20 || uint8_t(ch) > 0x7e)
                    ch = '?';
            queue(code, enh, fmt::format("<{}>: Recipient address rejected: {}", rcpt, text));
            journal_reject(code, fmt::format("call-ahead: {}", rcpt));
            co_return;
        }
        if (r.v == call_ahead_result::verdict::unknown && !ca->options.fail_open) {
            queue(451, "4.4.3", fmt::format("<{}>: Recipient address verification failed for now; try later", rcpt));
            journal_reject(451, fmt::format("call-ahead: {}", rcpt));
            co_return;
        }
    }
    rcpt_params rp;
    rp.notify = c.notify;
    if (size_t semi = c.orcpt.find(';'); semi != std::string::npos)  // addr-type ";" xtext (RFC 3461 4.2)
        rp.orcpt = c.orcpt.substr(0, semi + 1) + mail::xtext_decode_lenient(std::string_view(c.orcpt).substr(semi + 1));
    if (any_milter()) {
        bool ok = co_await milters_rcpt(rcpt);
        if (!ok)
            co_return;
    }
    _rcpts.push_back(rcpt);
    _params.rcpts.push_back(std::move(rp));
    queue(250, "2.1.5", "Ok");
}

std::string session::received_header(uint64_t id) {
    // RFC 5321 4.4: a trace line for every hop.
    std::string with = _esmtp ? "ESMTP" : "SMTP";
    if (_esmtp && _smtputf8)
        with = "UTF8SMTP";
    if (_tls)
        with += "S";
    if (_authenticated)
        with += "A";
    std::string h = fmt::format("Received: from {} ({} [{}])\r\n\tby {} (Ringway) with {} id {}", _helo,
                                _peer.ip_string(), _peer.ip_string(), _env->hostname, with, mid_string(id));
    if (_tls)
        h += fmt::format("\r\n\t(using {} with cipher {})", _tls->protocol(), _tls->cipher());
    if (_rcpts.size() == 1)
        h += fmt::format("\r\n\tfor <{}>", _rcpts.front());
    h += fmt::format("; {}\r\n", rfc5322_date());
    return h;
}

void session::start_pipeline() {
    smtp::pipeline_options o;
    o.max_received = _env->max_received_headers;
    // RFC 8601 5: an Authentication-Results field with our authserv-id
    // that comes from outside was not written by us; it does not pass.
    // Our own clients' mail may carry one from an inner hop.
    _arriving = !_env->relay->may_relay(connection_facts());
    // A mail flow policy without sender_auth skips the checks.
    const bool arriving = _arriving && sender_auth_on();
    _dmarc.reset();
    if (_env->auth && !_env->auth->authserv_id.empty() && _arriving)
        o.omit_results_of = _env->auth->authserv_id;
    _pipeline.emplace(std::move(o));
    _dkim_feed.reset();
    _dkim.reset();
    if (_env->auth && _env->auth->dkim_verify && arriving) {
        policy::dkim::options d = _env->auth->dkim_options;
        d.now = int64_t(std::time(nullptr));
        _dkim_feed = std::make_unique<verify::dkim_feed>(d, &*_pipeline);
        _pipeline->add(_dkim_feed.get());
    }
    _arc_feed.reset();
    _arc.reset();
    if (_env->auth && _env->auth->arc_verify && arriving) {
        _arc_feed = std::make_unique<verify::arc_feed>(&*_pipeline);
        _pipeline->add(_arc_feed.get());
    }
    _seal_feed.reset();
    if (_env->auth && !_env->auth->arc_seal_domain.empty() && _env->dkim_keys && arriving) {
        auto ring = _env->dkim_keys->get();
        if (ring && !ring->for_domain(_env->auth->arc_seal_domain).empty()) {
            _seal_feed = std::make_unique<sign_feed>();
            _seal_feed->domain = _env->auth->arc_seal_domain;
            _seal_feed->ring = std::move(ring);
            _seal_feed->p = &*_pipeline;
            _pipeline->add(_seal_feed.get());
        }
    }
    _rules_feed.reset();
    _content.reset();
    if (_env->rules && (!_policy || _policy->content_rules)) {
        _rules_feed = std::make_unique<verify::rules_feed>(_env->rules);
        _pipeline->add(_rules_feed.get());
    }
    _milter_feed.reset();
    if (any_milter()) {
        _milter_feed = std::make_unique<milter_feed>();
        _pipeline->add(_milter_feed.get());
    }
    _scan.reset();
    if (const scan::options* so = _env->scanning) {
        const scan::clamd_options* av = so->clamd && (!_policy || _policy->antivirus) ? &*so->clamd : nullptr;
        const scan::rspamd_options* as = so->rspamd && (!_policy || _policy->antispam) ? &*so->rspamd : nullptr;
        if (av || as) {
            scan::message_info info;
            info.ip = _peer.ip_string();
            info.helo = _helo;
            info.from = _mail_from;
            info.rcpts = _rcpts;
            info.hostname = _class && _class->rdns ? *_class->rdns : std::string();
            info.user = _auth_user;
            _scan = std::make_unique<scan::job>(av, as, std::move(info));
        }
    }
    _sign_feed.reset();
    if (_env->auth && _env->auth->dkim_sign && _env->dkim_keys && !_arriving) {
        auto ring = _env->dkim_keys->get();
        if (ring && ring->size()) {
            _sign_feed = std::make_unique<sign_feed>();
            _sign_feed->ring = std::move(ring);
            _sign_feed->p = &*_pipeline;
            _pipeline->add(_sign_feed.get());
        }
    }
}

task<void> session::finish_scans() {
    if (!_scan)
        co_return;
    task<void> t = _scan->finish();
    co_await std::move(t);
    const scan::av_result& av = _scan->av;
    if (av.st != scan::status::none)
        journal::record("scan", {{"icid", _icid},
                                 {"scanner", "clamd"},
                                 {"result", scan::to_string(av.st)},
                                 {"virus", std::string_view(av.virus)},
                                 {"us", int64_t(av.took.count())},
                                 {"reused", av.reused},
                                 {"why", std::string_view(av.why)}});
    const scan::spam_result& sp = _scan->spam;
    if (sp.st != scan::status::none) {
        const std::string score = fmt::format("{:.2f}", sp.score);
        journal::record("scan", {{"icid", _icid},
                                 {"scanner", "rspamd"},
                                 {"result", scan::to_string(sp.st)},
                                 {"action", std::string_view(sp.action)},
                                 {"score", std::string_view(score)},
                                 {"us", int64_t(sp.took.count())},
                                 {"reused", sp.reused},
                                 {"why", std::string_view(sp.why)}});
    }
    if (av.st == scan::status::failed || sp.st == scan::status::failed)
        lg.warn("icid={} scanner failed: {}{}", _icid, av.st == scan::status::failed ? av.why : std::string(),
                sp.st == scan::status::failed ? " " + sp.why : std::string());
}

void session::apply_scans(policy::rules::decision& d) const {
    if (!_scan || !_env->scanning)
        return;
    using outcome = policy::rules::decision::outcome;
    const scan::options& o = *_env->scanning;
    const scan::av_result& av = _scan->av;
    const scan::spam_result& sp = _scan->spam;
    auto tempfail = [&](std::string_view rule, std::string_view what) {
        d.final = outcome::reject;
        d.final_rule = std::string(rule);
        d.code = 451;
        d.enhanced = "4.7.1";
        d.text = fmt::format("{} scanning is unavailable; try again later", what);
    };
    if (av.st == scan::status::failed && o.clamd && o.clamd->on_failure == scan::failure_mode::tempfail)
        return tempfail("antivirus", "Virus");
    if (av.st == scan::status::infected) {
        d.final_rule = "antivirus";
        d.fired.push_back("antivirus");
        switch (o.virus) {
        case scan::options::virus_action::reject:
            d.final = outcome::reject;
            d.code = o.virus_code;
            d.enhanced = o.virus_enhanced;
            d.text = fmt::format("{}: {}", o.virus_text, av.virus);
            break;
        case scan::options::virus_action::quarantine:
            d.final = outcome::quarantine;
            d.quarantine = "virus";
            break;
        case scan::options::virus_action::drop: d.final = outcome::drop; break;
        }
        return;
    }
    if (d.final == outcome::reject || d.final == outcome::drop)
        return;  // a content rule decided first
    if (sp.st == scan::status::failed && o.rspamd && o.rspamd->on_failure == scan::failure_mode::tempfail)
        return tempfail("antispam", "Spam");
    if (sp.st != scan::status::scanned)
        return;
    const bool spam = sp.action != "no action";
    if (o.spam_headers) {
        std::string syms;
        for (size_t i = 0; i < sp.symbols.size() && syms.size() < 600; ++i)
            syms += (i ? "," : "") + sp.symbols[i];
        d.add_headers.emplace_back("X-Spam-Status", fmt::format("{}, score={:.2f} required={:.2f} action=\"{}\" "
                                                                "symbols={}",
                                                                spam ? "Yes" : "No", sp.score, sp.required,
                                                                sp.action, syms));
    }
    if (d.final != outcome::none)
        return;  // a rule accepted or held it already
    if (sp.action == "reject") {
        d.final_rule = "antispam";
        d.fired.push_back("antispam");
        if (o.spam_quarantine) {
            d.final = outcome::quarantine;
            d.quarantine = "spam";
        } else {
            d.final = outcome::reject;
            d.code = o.spam_code;
            d.enhanced = o.spam_enhanced;
            d.text = o.spam_text;
        }
    } else if (sp.action == "soft reject" || sp.action == "greylist") {
        d.final_rule = "antispam";
        d.fired.push_back("antispam");
        d.final = outcome::reject;
        d.code = 451;
        d.enhanced = "4.7.1";
        d.text = "Try again later";
    } else if (sp.action == "rewrite subject") {
        d.fired.push_back("antispam");
        if (d.subject_tag.empty())
            d.subject_tag = o.subject_tag;
    } else if (sp.action == "add header") {
        d.fired.push_back("antispam");
        d.add_headers.emplace_back("X-Spam", "Yes");
    }
}

bool session::milter_refused(const scan::milter::client& m, const scan::milter::answer& a, std::string_view what) {
    if (m.failed()) {
        if (m.opts().on_failure == scan::failure_mode::tempfail) {
            queue(451, "4.7.1", "Mail filter unavailable; try again later");
            journal_reject(451, fmt::format("milter {} failed", m.opts().name));
            return true;
        }
        return false;
    }
    if (a.v != scan::milter::verdict::reject && a.v != scan::milter::verdict::tempfail)
        return false;
    const bool perm = a.v == scan::milter::verdict::reject;
    const int code = a.code ? a.code : perm ? 550 : 451;
    const std::string enh = !a.enhanced.empty() ? a.enhanced : perm ? "5.7.1" : "4.7.1";
    const std::string text = !a.text.empty() ? a.text : perm ? "Command rejected" : "Try again later";
    queue(code, enh, text);
    journal_reject(code, fmt::format("milter {}: {}", m.opts().name, what));
    return true;
}

// A milter that failed in the step just run: said once, in both logs.
static void milter_failed(uint64_t icid, const scan::milter::client& m) {
    lg.warn("icid={} {}", icid, m.why());
    journal::record("milter", {{"icid", icid},
                               {"milter", std::string_view(m.opts().name)},
                               {"result", "failed"},
                               {"why", std::string_view(m.why())}});
}

task<bool> session::milters_mail(const smtp::command& c) {
    if (!_milters_made) {
        _milters_made = true;
        scan::milter::session_info info;
        info.our_hostname = _env->hostname;
        info.client_name = _class && _class->rdns ? *_class->rdns : fmt::format("[{}]", _peer.ip_string());
        info.client = _peer;
        info.helo = _helo;
        for (const auto& o : _env->scanning->milters)
            _milters.push_back(std::make_unique<scan::milter::client>(&o, info));
    }
    std::vector<std::string> args;
    for (const auto& p : c.params)
        args.push_back(p.value.empty() ? p.key : fmt::format("{}={}", p.key, p.value));
    for (auto& m : _milters) {
        if (m->failed())
            continue;
        task<scan::milter::answer> t = m->mail(_mail_from, args, _auth_user, std::string());
        scan::milter::answer a = co_await std::move(t);
        if (m->failed())
            milter_failed(_icid, *m);
        if (milter_refused(*m, a, "MAIL"))
            co_return false;
        if (a.v == scan::milter::verdict::discard && !_milter_verdict) {
            _milter_verdict = a;
            _milter_by = m->opts().name;
        }
    }
    co_return true;
}

task<bool> session::milters_rcpt(const std::string& rcpt) {
    for (auto& m : _milters) {
        if (m->failed() || m->done())
            continue;
        task<scan::milter::answer> t = m->rcpt(rcpt);
        scan::milter::answer a = co_await std::move(t);
        if (m->failed())
            milter_failed(_icid, *m);
        if (milter_refused(*m, a, rcpt))
            co_return false;
        if (a.v == scan::milter::verdict::discard && !_milter_verdict) {
            _milter_verdict = a;
            _milter_by = m->opts().name;
        }
    }
    co_return true;
}

task<bool> session::milters_data() {
    for (auto& m : _milters) {
        if (m->failed() || m->done())
            continue;
        task<scan::milter::answer> t = m->data();
        scan::milter::answer a = co_await std::move(t);
        if (m->failed())
            milter_failed(_icid, *m);
        if (milter_refused(*m, a, "DATA"))
            co_return false;
    }
    co_return true;
}

task<void> session::milters_flush() {
    milter_feed& f = *_milter_feed;
    const bool headers_now = f.eoh && !f.eoh_sent;
    for (auto& m : _milters) {
        scan::milter::answer a;
        if (headers_now) {
            for (const auto& [name, value] : f.fields) {
                if (m->failed() || m->done())
                    break;
                task<scan::milter::answer> t = m->header(name, value);
                a = co_await std::move(t);
            }
            if (!m->failed() && !m->done()) {
                task<scan::milter::answer> t = m->end_of_headers();
                a = co_await std::move(t);
            }
        }
        if (f.eoh && !f.pending.empty() && !m->failed() && !m->done()) {
            task<scan::milter::answer> t = m->body(f.pending);
            a = co_await std::move(t);
        }
        if (m->failed())
            milter_failed(_icid, *m);
        if (a.v != scan::milter::verdict::cont && a.v != scan::milter::verdict::accept && !_milter_verdict) {
            _milter_verdict = a;
            _milter_by = m->opts().name;
        }
    }
    if (headers_now) {
        f.eoh_sent = true;
        f.fields.clear();
        f.fields.shrink_to_fit();
    }
    if (f.eoh)
        f.pending.clear();
}

task<void> session::milters_end(uint64_t id) {
    if (!_milter_feed)
        co_return;
    {
        task<void> t = milters_flush();
        co_await std::move(t);
    }
    for (auto& m : _milters) {
        if (m->failed() || m->done())
            continue;
        scan::milter::edits e;
        task<scan::milter::answer> t = m->end_of_message(&e, mid_string(id), size_t(max_size()));
        scan::milter::answer a = co_await std::move(t);
        if (m->failed()) {
            milter_failed(_icid, *m);
            if (m->opts().on_failure == scan::failure_mode::tempfail && !_milter_verdict) {
                scan::milter::answer tf;
                tf.v = scan::milter::verdict::tempfail;
                tf.code = 451;
                tf.enhanced = "4.7.1";
                tf.text = "Mail filter unavailable; try again later";
                _milter_verdict = tf;
                _milter_by = m->opts().name;
            }
            continue;
        }
        for (auto& h : e.add)
            _milter_edits.add.push_back(std::move(h));
        for (auto& c : e.changes)
            _milter_edits.changes.push_back(std::move(c));
        if (e.quarantine && !_milter_edits.quarantine) {
            _milter_edits.quarantine = e.quarantine;
            if (_milter_by.empty())
                _milter_by = m->opts().name;
        }
        // The envelope and the body: each milter saw the message as it
        // came; their changes add up (the last new sender or body wins).
        const bool replaced_body = e.body.has_value(), from_changed = e.from.has_value();
        if (from_changed)
            _milter_edits.from = std::move(e.from);
        for (auto& r : e.add_rcpts)
            _milter_edits.add_rcpts.push_back(std::move(r));
        for (auto& r : e.del_rcpts)
            _milter_edits.del_rcpts.push_back(std::move(r));
        if (e.body)
            _milter_edits.body = std::move(e.body);
        if (from_changed || !e.add_rcpts.empty() || !e.del_rcpts.empty() || replaced_body)
            _milter_changed_by = m->opts().name;
        journal::record("milter", {{"icid", _icid},
                                   {"milter", std::string_view(m->opts().name)},
                                   {"result", a.v == scan::milter::verdict::reject     ? "reject"
                                              : a.v == scan::milter::verdict::tempfail ? "tempfail"
                                              : a.v == scan::milter::verdict::discard  ? "discard"
                                              : e.quarantine                           ? "quarantine"
                                                                                       : "accept"},
                                   {"added", uint64_t(e.add.size())},
                                   {"changed", uint64_t(e.changes.size())},
                                   {"rcpts_added", uint64_t(e.add_rcpts.size())},
                                   {"rcpts_deleted", uint64_t(e.del_rcpts.size())},
                                   {"from_changed", from_changed},
                                   {"body_replaced", replaced_body},
                                   {"why", std::string_view()}});
        if (a.v != scan::milter::verdict::cont && a.v != scan::milter::verdict::accept && !_milter_verdict) {
            _milter_verdict = a;
            _milter_by = m->opts().name;
        }
    }
    // A new body: what DKIM signs and ARC seals is hashed again.
    if (_milter_edits.body)
        for (auto* f : {_sign_feed.get(), _seal_feed.get()})
            if (f && !f->body_hash.empty()) {
                policy::dkim::body_hasher h(policy::dkim::canon::relaxed, false, std::nullopt);
                h.feed(*_milter_edits.body);
                f->body_hash = h.finish();
            }
}

task<void> session::milters_quit() {
    for (auto& m : _milters) {
        task<void> t = m->quit();
        co_await std::move(t);
    }
}

void session::apply_milters(policy::rules::decision& d) const {
    using outcome = policy::rules::decision::outcome;
    if (d.final == outcome::reject || d.final == outcome::drop)
        return;
    for (const auto& h : _milter_edits.add)
        d.add_headers.push_back(h);
    for (const auto& c : _milter_edits.changes)
        d.change_headers.push_back({c.name, c.index, c.value});
    const std::string rule = fmt::format("milter {}", _milter_by);
    if (_milter_verdict) {
        const auto& a = *_milter_verdict;
        d.final_rule = rule;
        d.fired.push_back(rule);
        if (a.v == scan::milter::verdict::discard) {
            d.final = outcome::drop;
            return;
        }
        const bool perm = a.v == scan::milter::verdict::reject;
        d.final = outcome::reject;
        d.code = a.code ? a.code : perm ? 550 : 451;
        d.enhanced = !a.enhanced.empty() ? a.enhanced : perm ? "5.7.1" : "4.7.1";
        d.text = !a.text.empty() ? a.text : perm ? "Message rejected by a mail filter" : "Try again later";
        return;
    }
    if (_milter_edits.quarantine && d.final != outcome::quarantine) {
        d.final = outcome::quarantine;
        d.quarantine = "policy";
        d.final_rule = rule;
        d.fired.push_back(rule);
    }
}

task<void> session::verify_message() {
    {
        task<void> t = finish_scans();
        co_await std::move(t);
    }
    policy::dns_answers answers;
    if (_dkim_feed) {
        if (!_dkim_feed->v.has_signatures() || !_env->dns) {
            _dkim.emplace();  // checked: no signature
        } else {
            auto t = verify::check_dkim(*_env->dns, _dkim_feed->v, answers);
            _dkim = co_await std::move(t);
        }
    }
    if (_arc_feed && _env->dns) {
        if (_arc_feed->v.has_sets()) {
            auto t = verify::check_arc(*_env->dns, _arc_feed->v, answers);
            _arc = co_await std::move(t);
        } else {
            _arc.emplace();  // validated: no chain
        }
    }
    if (!_env->auth || !_env->auth->dmarc || !_arriving || !sender_auth_on() || !_env->dns || !_pipeline)
        co_return;
    // RFC 7489 6.6.1: the one RFC5322.From domain; none when the message
    // has several From: fields or addresses (no policy applies then).
    policy::dmarc::request rq;
    rq.from_domain = verify::dmarc_from_domain(_pipeline->headers().fields());
    rq.spf = _spf ? &*_spf : nullptr;
    rq.dkim = _dkim ? &*_dkim : nullptr;
    // pct= sampling: each message draws (RFC 7489 6.6.4).
    static thread_local std::minstd_rand draw{std::random_device{}()};
    rq.sample = unsigned(draw() % 100);
    auto t = verify::check_dmarc(*_env->dns, rq, answers);
    _dmarc = co_await std::move(t);
    // RFC 7489 6.7 local policy: a passing ARC chain sealed by a sealer we
    // trust vouches for mail its forwarding broke (mailing lists).
    verify::trusted_arc_override(*_dmarc, _arc ? &*_arc : nullptr, _env->auth->arc_trusted_sealers);
    // Aggregate-report data (RFC 7489 7.2), for domains that ask for it.
    if (_env->auth->dmarc_reports && _env->dmarc_reports && _dmarc->rec && !_dmarc->rec->rua.empty() &&
        !_dmarc->policy_domain.empty())
        _env->dmarc_reports->add(int64_t(std::time(nullptr)), policy::dmarc_report::published_of(*_dmarc),
                                 policy::dmarc_report::row_of(_peer.ip_string(), *_dmarc, _spf ? &*_spf : nullptr,
                                                              _dkim ? &*_dkim : nullptr));
}

std::optional<smtp::refusal> session::dmarc_refusal() const {
    if (_dmarc && _dmarc->applied == policy::dmarc::disposition::reject && _lo->dmarc_reject)
        return smtp::dmarc_rejected(_dmarc->from_domain);
    return std::nullopt;
}

bool session::content_ends_message(fs::message_writer& mw, uint64_t size) {
    if (!_rules_feed && !_scan && !_milter_feed)
        return false;
    policy::rules::message_facts f;
    f.mail_from = _mail_from;
    f.rcpts = _rcpts;
    f.helo = _helo;
    f.client = _peer;
    f.inbound = _arriving;
    f.authenticated = _authenticated;
    f.size = size;
    if (_spf)
        f.spf = policy::spf::to_string(_spf->res);
    if (_dmarc) {
        f.dmarc = policy::dmarc::to_string(_dmarc->res);
        f.dmarc_disposition = policy::dmarc::to_string(_dmarc->applied);
    }
    if (_class && _table) {
        f.sender_group = _table->groups()[_class->group].name;
        f.mail_flow_policy = _policy->name;
    }
    if (_dkim) {
        for (const auto& v : *_dkim)
            f.dkim.emplace_back(policy::dkim::to_string(v.res));
        if (_dkim->empty())
            f.dkim.emplace_back("none");
    }
    _content = _rules_feed ? _rules_feed->ev.decide(f) : policy::rules::decision{};
    apply_scans(*_content);
    apply_milters(*_content);
    // Relayed mail rspamd would reject counts against its sender.
    if (_env->outbound && _scan && _scan->spam.st == scan::status::scanned && _scan->spam.action == "reject" &&
        (!_out_user.empty() || !_out_domain.empty()))
        _env->outbound->strike(_out_user, _out_domain, std::chrono::system_clock::now());
    using outcome = policy::rules::decision::outcome;
    if (_content->final != outcome::reject && _content->final != outcome::drop)
        return false;
    mw.abort();
    const bool reject = _content->final == outcome::reject;
    // A temporary refusal comes back with every retry of the client: no
    // notice for it, or one per retry.
    if (!reject || _content->code / 100 != 4)
        prepare_notices(reject ? fmt::format("rejected: {} {} {}", _content->code, _content->enhanced, _content->text)
                               : std::string("dropped"),
                        0, size);
    journal::record("content", {{"icid", _icid}, {"rule", std::string_view(_content->final_rule)},
                                {"action", std::string_view(reject ? "reject" : "drop")},
                                {"from", std::string_view(_mail_from)}, {"rcpts", uint64_t(_rcpts.size())},
                                {"size", size}});
    if (reject)
        refuse_message(smtp::content_rejected(_content->code, _content->enhanced, _content->text));
    else {
        // Dropped: the client is told what it would be told of any
        // message, so that the rule is not probed from outside.
        queue(250, "2.0.0", "Ok");
        reset_transaction();
    }
    return true;
}

std::vector<fs::rcpt_state> session::first_states(size_t rcpts) const {
    if (!_content || _content->final != policy::rules::decision::outcome::quarantine || !_env->delivery)
        return {};
    return _env->delivery->hold_states(rcpts, _content->quarantine, _content->final_rule,
                                       int64_t(std::time(nullptr)));
}

task<void> session::commit_message(fs::message_writer& mw, uint64_t size, std::string_view by) {
    using outcome = policy::rules::decision::outcome;
    const policy::rules::decision* d = _content ? &*_content : nullptr;
    const bool bounce = d && d->final == outcome::bounce;
    const fs::added_headers added = added_headers(mw.id());
    // Where the message goes, after the milters' changes and the rules'
    // redirect and route; a message under a new envelope (or with a new
    // body) when that differs from what the spool holds.
    fs::envelope out{_mail_from, _rcpts, {}, int64_t(std::time(nullptr))};
    envelope_params params = _params;
    std::string why;  // the original's recipients' final reply, when it is replaced
    if (!bounce && !_milter_changed_by.empty()) {
        const auto& e = _milter_edits;
        if (e.from)
            out.mail_from = *e.from;
        for (const auto& del : e.del_rcpts)
            for (size_t i = out.rcpts.size(); i-- > 0;)
                if (mail::iequals(out.rcpts[i], del)) {
                    out.rcpts.erase(out.rcpts.begin() + long(i));
                    if (i < params.rcpts.size())
                        params.rcpts.erase(params.rcpts.begin() + long(i));
                }
        params.rcpts.resize(out.rcpts.size());
        for (const auto& add : e.add_rcpts)
            if (std::none_of(out.rcpts.begin(), out.rcpts.end(), [&](const std::string& r) { return mail::iequals(r, add); })) {
                out.rcpts.push_back(add);
                params.rcpts.emplace_back();
            }
        why = fmt::format("250 2.0.0 changed by milter {}", _milter_changed_by);
    }
    if (d && !bounce && !d->redirect.empty()) {
        out.rcpts = {d->redirect};
        params.rcpts = {rcpt_params{}};
        why = fmt::format("250 2.1.5 redirected to <{}> by rule {}", d->redirect, d->redirect_rule);
    }
    if (d && !bounce && !d->route.empty()) {
        params.next_hop = d->route;
        if (why.empty())
            why = fmt::format("250 2.0.0 routed through {} by rule {}", d->route, d->route_rule);
    }
    if (d && !bounce && !d->pool.empty() && d->pool != params.pool) {
        params.pool = d->pool;
        if (why.empty())
            why = fmt::format("250 2.0.0 sent from pool {} by rule {}", d->pool, d->pool_rule);
    }
    const bool replaced = !why.empty();
    std::vector<fs::rcpt_state> states;
    std::string bounce_reply;
    if (bounce) {
        // Accepted, then failed at once: the sender gets a failure report
        // as for any recipient refused for good, unless NOTIFY says not.
        bounce_reply = fmt::format("{} {} {}", d->code, d->enhanced, d->text);
        std::vector<bool> report(_rcpts.size(), !_mail_from.empty());
        for (size_t i = 0; i < report.size() && i < _params.rcpts.size(); ++i)
            report[i] = report[i] && notify_wants(_params.rcpts[i].notify, k_notify_failure);
        states = delivery::service::bounce_states(report, bounce_reply);
    } else if (replaced) {
        // Handed over to the message under the new envelope, below.
        fs::rcpt_state done;
        done.status = fs::rcpt_status::delivered;
        done.last_reply = why;
        states.assign(_rcpts.size(), done);
    } else {
        states = first_states(_rcpts.size());
    }
    auto id = co_await mw.commit(added, states);
    if (!id) {
        refuse_message(smtp::spool_failed(id.error()));
        co_return;
    }
    _subject = _pipeline->subject();
    // What the rules and milters derive from the message, each committed
    // before the client hears 250; if one cannot be, none of it stays.
    struct derived {
        uint64_t id;
        std::string action, to, rule;
    };
    std::vector<derived> made;
    std::optional<fs::spool_error> failed;
    const int64_t now = out.received_unix;
    // A replaced body follows the message's own header section (ended
    // with an empty line if the message had none).
    if (_milter_edits.body && !bounce)
        _milter_edits.body->insert(0, _pipeline->headers().unterminated_end());
    const std::string* body = _milter_edits.body && !bounce ? &*_milter_edits.body : nullptr;
    const uint64_t keep = body ? _pipeline->headers().section_bytes() : UINT64_MAX;
    if (replaced && !out.rcpts.empty()) {
        std::vector<fs::rcpt_state> first = first_states(out.rcpts.size());
        out.params = encode_params(params);
        std::string to;
        for (const auto& r : out.rcpts)
            to += (to.empty() ? "" : ",") + r;
        std::string action = d && !d->redirect.empty() ? "redirect"
                             : !_milter_changed_by.empty() ? "milter"
                             : d && !d->route.empty()      ? "route"
                                                           : "pool";
        std::string rule = d && !d->redirect.empty() ? d->redirect_rule
                           : !_milter_changed_by.empty() ? "milter " + _milter_changed_by
                           : d && !d->route.empty()      ? d->route_rule
                                                         : d->pool_rule;
        auto t = smtp::spool_copy(*_env->spool, id.value(), std::move(out), added, std::move(first), keep, body);
        auto c = co_await std::move(t);
        if (c)
            made.push_back({c.value(), std::move(action), std::move(to), std::move(rule)});
        else
            failed = c.error();
    } else if (replaced) {
        journal::record("content", {{"icid", _icid}, {"mid", std::string_view(mid_string(id.value()))},
                                    {"rule", std::string_view("milter " + _milter_changed_by)},
                                    {"action", std::string_view("milter")}, {"to", std::string_view()},
                                    {"derived_mid", std::string_view()}});
    }
    // A copy of mail a scanner or a milter quarantined (a virus, spam) is
    // held with it; a rule's own quarantine sends copies at once (for
    // review).
    const bool scanner_hold = d && d->final == outcome::quarantine &&
                              (d->final_rule == "antivirus" || d->final_rule == "antispam" ||
                               d->final_rule.starts_with("milter "));
    if (d && !bounce)
        for (const auto& cp : d->copies) {
            if (failed)
                break;
            envelope_params p;
            p.body = _params.body;
            p.smtputf8 = _params.smtputf8;
            p.rcpts = {rcpt_params{}};
            // From the null sender: a copy that fails tells no one.
            auto t = smtp::spool_copy(*_env->spool, id.value(), fs::envelope{"", {cp.to}, encode_params(p), now}, added,
                                      scanner_hold ? first_states(1) : std::vector<fs::rcpt_state>{}, keep, body);
            auto c = co_await std::move(t);
            if (c)
                made.push_back({c.value(), "copy", cp.to, cp.rule});
            else
                failed = c.error();
        }
    if (failed) {
        lg.error("icid={} a message made by a rule or milter could not be queued: {}; the message is refused", _icid,
                 failed->detail);
        // (A removal that fails leaves a message that recovery would
        // deliver after a restart: logged, for the spool is failing.)
        {
            auto r = co_await _env->spool->remove(id.value());
            if (!r)
                lg.error("icid={} mid={} cannot be removed: {}", _icid, mid_string(id.value()), r.error().detail);
        }
        for (const auto& m : made) {
            auto r = co_await _env->spool->remove(m.id);
            if (!r)
                lg.error("icid={} mid={} cannot be removed: {}", _icid, mid_string(m.id), r.error().detail);
        }
        refuse_message(smtp::spool_failed(*failed));
        co_return;
    }
    for (const auto& m : made) {
        journal::record("content", {{"icid", _icid}, {"mid", std::string_view(mid_string(id.value()))},
                                    {"rule", std::string_view(m.rule)}, {"action", std::string_view(m.action)},
                                    {"to", std::string_view(m.to)},
                                    {"derived_mid", std::string_view(mid_string(m.id))}});
        if (_env->delivery)
            _env->delivery->queued(_env->spool, m.id);
    }
    if (bounce)
        journal::record("content", {{"icid", _icid}, {"mid", std::string_view(mid_string(id.value()))},
                                    {"rule", std::string_view(d->final_rule)}, {"action", std::string_view("bounce")},
                                    {"reply", std::string_view(bounce_reply)}});
    if (d && !d->notices.empty()) {
        std::string what = bounce ? "bounced: " + bounce_reply
                           : d->final == outcome::quarantine ? "held in quarantine " + d->quarantine
                                                             : std::string("queued for delivery");
        for (const auto& m : made)
            if (m.action != "copy")
                what = fmt::format("{} ({}) as {}", why.substr(10), m.to, mid_string(m.id)) +
                       (d->final == outcome::quarantine ? ", held in quarantine " + d->quarantine : "");
        prepare_notices(std::move(what), id.value(), size);
    }
    message_queued(id.value(), size, by);
    task<void> t = send_notices();
    co_await std::move(t);
}

void session::prepare_notices(std::string outcome, uint64_t mid, uint64_t size) {
    if (!_content)
        return;
    static thread_local uint64_t serial = 0;
    for (const auto& n : _content->notices) {
        smtp::notice x;
        x.hostname = _env->hostname;
        x.to = n.to;
        x.rule = n.rule;
        x.text = n.text;
        x.outcome = outcome;
        x.mid = mid ? mid_string(mid) : std::string();
        x.client = _peer.ip_string();
        x.helo = _helo;
        x.sender = _mail_from;
        x.subject = _pipeline ? _pipeline->subject() : std::string();
        x.rcpts = _rcpts;
        x.fired = _content->fired;
        x.size = size;
        x.now_unix = int64_t(std::time(nullptr));
        x.serial = ++serial;
        _notices.push_back(std::move(x));
    }
}

task<void> session::send_notices() {
    // A notice is news about a message, not the message: one that cannot
    // be queued (the spool full) is logged, and the client's reply stands.
    std::vector<smtp::notice> list = std::move(_notices);
    _notices.clear();
    for (auto& n : list) {
        envelope_params p;
        p.rcpts = {rcpt_params{}};
        std::string text = smtp::build_notice(n);
        if (std::any_of(text.begin(), text.end(), [](char c) { return uint8_t(c) >= 0x80; }))
            p.body = body_type::eight_bit_mime;  // UTF-8 from the client or the rule
        auto t = smtp::spool_text(*_env->spool, fs::envelope{"", {n.to}, encode_params(p), n.now_unix},
                                  std::move(text));
        auto c = co_await std::move(t);
        if (!c) {
            lg.error("icid={} rule {}: the notice to <{}> could not be queued: {}", _icid, n.rule, n.to,
                     c.error().detail);
            continue;
        }
        journal::record("content", {{"icid", _icid}, {"mid", std::string_view(n.mid)},
                                    {"rule", std::string_view(n.rule)}, {"action", std::string_view("notify")},
                                    {"to", std::string_view(n.to)},
                                    {"derived_mid", std::string_view(mid_string(c.value()))}});
        if (_env->delivery)
            _env->delivery->queued(_env->spool, c.value());
    }
}

fs::added_headers session::added_headers(uint64_t id) {
    // Prepended at delivery, in the order a reader expects: the newest
    // trace field first (RFC 5321 4.4), our findings below it, then what
    // the content rules add.
    fs::added_headers a;
    if (_pipeline)
        a.omit = _pipeline->omitted();
    verify::header_edit edit;
    if (_content && _pipeline)
        edit = verify::edit_header(*_content, _pipeline->headers().fields(), a.omit);
    // What DKIM signs and ARC seals: the header as delivered.
    const std::vector<mail::header_field>* fields = nullptr;
    if (_pipeline)
        fields = edit.changed ? &edit.fields : &_pipeline->headers().fields();
    if (_sign_feed && !_sign_feed->body_hash.empty()) {
        policy::dkim::sign_options o = _env->auth->sign_options;
        o.now = int64_t(std::time(nullptr));
        auto sig = policy::dkim::sign(*fields, _sign_feed->body_hash, _sign_feed->keys, o);
        if (sig)
            a.prefix = std::move(sig.value());
        else
            lg.error("icid={} {}: the message goes unsigned", _icid, sig.error());
    }
    a.prefix += received_header(id);
    if (_env->auth && !_env->auth->authserv_id.empty() && (_spf || _dkim || _dmarc || _arc)) {
        policy::auth_findings f;
        f.spf = _spf ? &*_spf : nullptr;
        f.spf_helo = _spf_helo && _spf_helo_for == _helo && !_null_sender ? &*_spf_helo : nullptr;
        f.dkim = _dkim ? &*_dkim : nullptr;
        f.dmarc = _dmarc ? &*_dmarc : nullptr;
        f.arc = _arc ? &*_arc : nullptr;
        const std::string ar = policy::authentication_results(_env->auth->authserv_id, f);
        // ARC sealing: our results travel in the new set (RFC 8617 4.1.1).
        // RFC 8617 seals with rsa-sha256 only: the sealer's first RSA key.
        const policy::dkim::signing_key* sealer = nullptr;
        if (_seal_feed)
            for (const auto& k : _seal_feed->keys)
                if (!k.ed25519 && !sealer)
                    sealer = &k;
        if (_seal_feed && !_seal_feed->body_hash.empty() && sealer) {
            policy::arc::seal_options so;
            so.authserv_id = _env->auth->authserv_id;
            so.headers = _env->auth->sign_options.headers;
            so.now = int64_t(std::time(nullptr));
            const std::string_view value =
                std::string_view(ar).substr(std::string_view("Authentication-Results: ").size(),
                                            ar.size() - std::string_view("Authentication-Results: ").size() - 2);
            auto s = policy::arc::seal(*fields, _seal_feed->body_hash,
                                       _arc ? *_arc : policy::arc::outcome{}, value, *sealer, so);
            if (s)
                a.prefix = s.value() + a.prefix;
            else
                lg.info("icid={} ARC: {}", _icid, s.error());
        }
        a.prefix += ar;
    }
    a.prefix += edit.prefix;
    // A message without a header section: the fields added on top would
    // make its first lines header; an empty line keeps them body.
    if (_pipeline && _pipeline->headers().done() && _pipeline->headers().section_bytes() == 0)
        a.prefix += "\r\n";
    return a;
}

void session::message_queued(uint64_t id, uint64_t size, std::string_view by) {
    _env->messages++;
    _session_messages++;
    if (_env->outbound && (!_out_user.empty() || !_out_domain.empty()))
        _env->outbound->record(_out_user, _out_domain, std::chrono::system_clock::now());
    _env->recipients += _rcpts.size();
    if (_env->delivery)
        _env->delivery->queued(_env->spool, id);
    std::string mid = mid_string(id);
    // The recipients, for finding a message by any of them (the first 100).
    std::string to;
    for (size_t i = 0; i < _rcpts.size() && i < 100; ++i) {
        if (i)
            to += ',';
        to += _rcpts[i];
    }
    const std::string_view spf = _spf ? policy::spf::to_string(_spf->res) : std::string_view();
    const std::string_view spf_domain = _spf ? std::string_view(_spf->domain) : std::string_view();
    // "none", or "result:domain" per signature; empty when not checked.
    std::string dkim;
    if (_dkim) {
        for (const auto& v : *_dkim) {
            if (!dkim.empty())
                dkim += ' ';
            dkim += fmt::format("{}:{}", policy::dkim::to_string(v.res), v.domain);
        }
        if (_dkim->empty())
            dkim = "none";
    }
    // The content rules that fired, "a,b"; empty when none did.
    std::string rules;
    if (_content)
        for (const auto& r : _content->fired)
            rules += (rules.empty() ? "" : ",") + r;
    journal::record("received", {{"icid", _icid}, {"mid", std::string_view(mid)},
                                 {"from", std::string_view(_mail_from)}, {"to", std::string_view(to)},
                                 {"rcpts", uint64_t(_rcpts.size())},
                                 {"size", size}, {"body", by}, {"tls", bool(_tls)},
                                 {"subject", std::string_view(_subject)},
                                 {"spf", spf}, {"spf_domain", spf_domain},
                                 {"dkim", std::string_view(dkim)},
                                 {"spf_helo", _spf_helo && _spf_helo_for == _helo && !_null_sender
                                                  ? policy::spf::to_string(_spf_helo->res)
                                                  : std::string_view()},
                                 {"arc", _arc ? policy::arc::to_string(_arc->res) : std::string_view()},
                                 {"dmarc", _dmarc ? policy::dmarc::to_string(_dmarc->res) : std::string_view()},
                                 {"dmarc_domain", _dmarc ? std::string_view(_dmarc->from_domain) : std::string_view()},
                                 {"dmarc_disposition",
                                  _dmarc ? policy::dmarc::to_string(_dmarc->applied) : std::string_view()},
                                 {"rules", std::string_view(rules)},
                                 {"quarantine", _content && _content->final == policy::rules::decision::outcome::quarantine
                                                    ? std::string_view(_content->quarantine)
                                                    : std::string_view()}});
    queue(250, "2.0.0", fmt::format("Ok: queued as {}", mid));
    reset_transaction();
}

task<bool> session::do_data() {
    if (!_have_mail) {
        queue(503, "5.5.1", "Error: need MAIL command");
        co_return !count_error();
    }
    if (_rcpts.empty()) {
        queue(554, "5.5.1", "Error: no valid recipients");
        co_return true;
    }
    if (any_milter()) {
        bool ok = co_await milters_data();
        if (!ok) {
            reset_transaction();
            co_return true;
        }
    }
    fs::envelope env{_mail_from, _rcpts, encode_params(_params), int64_t(std::time(nullptr))};
    auto w = _env->spool->begin(std::move(env));
    if (!w) {
        refuse_message(smtp::spool_failed(w.error()));
        co_return true;
    }
    fs::message_writer& mw = w.value();
    queue(354, "", "End data with <CR><LF>.<CR><LF>");
    if (!co_await flush())
        co_return false;
    std::string body;
    smtp::data_decoder dec(_lo->max_line_length_bytes);
    start_pipeline();
    // The first reason the message is not queued, found while it streams
    // in; the decoder's own (bare LF, line length) are in dec.error(). The
    // rest of the data is read and dropped either way.
    std::optional<smtp::refusal> failure;
    // The data block timeout (RFC 5321 4.5.3.2.5) runs per kilobyte, not per
    // recv: a client trickling a byte at a time is still cut off.
    auto deadline = std::chrono::steady_clock::now() + _lo->data_block_timeout;
    uint64_t progress_mark = 0;
    for (;;) {
        if (dec.bytes_out() >= progress_mark + 1024) {
            progress_mark = dec.bytes_out();
            deadline = std::chrono::steady_clock::now() + _lo->data_block_timeout;
        }
        if (buffered() > 0) {
            const size_t before = body.size();
            auto st = dec.feed(std::string_view(_in).substr(_in_pos), body);
            _in_pos += st.consumed;
            if (!failure) {
                _pipeline->feed(std::string_view(body).substr(before));
                if (_pipeline->failure())
                    failure = _pipeline->failure();
            }
            if (!failure && st.st == smtp::data_decoder::status::done) {
                _pipeline->finish();
                if (_pipeline->failure())
                    failure = _pipeline->failure();
            }
            if (!failure && dec.bytes_out() > max_size())
                failure = smtp::message_too_big();
            if (failure || st.st == smtp::data_decoder::status::failed)
                body.clear();  // keep reading to the end, keep nothing
            if (body.size() >= k_spool_chunk || (st.st == smtp::data_decoder::status::done && !body.empty())) {
                if (!failure && _scan) {
                    task<void> t = _scan->feed(body);
                    co_await std::move(t);
                }
                if (!failure && _milter_feed) {
                    task<void> t = milters_flush();
                    co_await std::move(t);
                }
                if (!failure) {
                    auto a = co_await mw.append(std::span<const char>(body.data(), body.size()));
                    if (!a)
                        failure = smtp::spool_failed(a.error());
                }
                body.clear();
            }
            if (st.st == smtp::data_decoder::status::done)
                break;
            compact();
        }
        int n = co_await read_until(deadline);
        if (n <= 0) {
            // Dropped or timed out mid-DATA: nothing is queued (the writer
            // aborts when it goes out of scope).
            if (n == -ETIMEDOUT) {
                queue(421, "4.4.2", fmt::format("{} Error: timeout exceeded", _env->hostname));
                co_await flush();
            }
            lg.info("icid={} connection lost in DATA", _icid);
            co_return false;
        }
    }
    if (auto e = dec.error()) {
        mw.abort();
        queue(*e);
        journal_reject(e->code, e->text);
        reset_transaction();
        co_return !count_error();
    }
    if (failure) {
        mw.abort();
        refuse_message(*failure);
        co_return true;
    }
    uint64_t size = dec.bytes_out();
    co_await verify_message();
    {
        task<void> t = milters_end(mw.id());
        co_await std::move(t);
    }
    if (auto r = dmarc_refusal()) {
        mw.abort();
        refuse_message(*r);
        co_return true;
    }
    if (content_ends_message(mw, size)) {
        task<void> t = send_notices();
        co_await std::move(t);
        co_return true;
    }
    task<void> t = commit_message(mw, size, "DATA");
    co_await std::move(t);
    co_return true;
}

task<bool> session::do_bdat(const smtp::command& c) {
    // RFC 3030: the chunk is exactly bdat_size octets, taken verbatim.
    uint64_t left = c.bdat_size;
    bool usable = _have_mail && !_rcpts.empty();
    if (usable && !_bdat_writer && !_bdat_error) {
        fs::envelope env{_mail_from, _rcpts, encode_params(_params), int64_t(std::time(nullptr))};
        auto w = _env->spool->begin(std::move(env));
        if (!w) {
            _bdat_error = smtp::spool_failed(w.error());
        } else {
            _bdat_writer.emplace(std::move(w.value()));
            // (Milters get no DATA step for BDAT: its refusal would need a
            // reply of its own. They judge the message at its end.)
            start_pipeline();
        }
    }
    auto deadline = std::chrono::steady_clock::now() + _lo->data_block_timeout;
    uint64_t mark = 0;
    while (left > 0) {
        if (c.bdat_size - left >= mark + 1024) {
            mark = c.bdat_size - left;
            deadline = std::chrono::steady_clock::now() + _lo->data_block_timeout;
        }
        if (buffered() == 0) {
            int n = co_await read_until(deadline);
            if (n <= 0)
                co_return false;  // dropped mid-chunk: nothing queued
        }
        size_t take = size_t(std::min<uint64_t>(left, buffered()));
        std::string_view piece(_in.data() + _in_pos, take);
        _in_pos += take;
        left -= take;
        _bdat_bytes += take;
        if (!usable || _bdat_error)
            continue;
        if (_bdat_bytes > max_size()) {
            _bdat_error = smtp::message_too_big();
            continue;
        }
        _pipeline->feed(piece);
        if (_pipeline->failure()) {
            _bdat_error = _pipeline->failure();
            continue;
        }
        if (_scan) {
            task<void> t = _scan->feed(piece);
            co_await std::move(t);
        }
        if (_milter_feed) {
            task<void> t = milters_flush();
            co_await std::move(t);
        }
        auto a = co_await _bdat_writer->append(std::span<const char>(piece.data(), piece.size()));
        if (!a)
            _bdat_error = smtp::spool_failed(a.error());
        compact();
    }
    if (!_have_mail) {
        queue(503, "5.5.1", "Error: need MAIL command");
        co_return !count_error();
    }
    if (_rcpts.empty()) {
        queue(554, "5.5.1", "Error: no valid recipients");
        co_return true;
    }
    if (!c.bdat_last) {
        // RFC 3030 2: a chunk after a failed one still gets its reply; the
        // transaction is over only at LAST or RSET.
        if (_bdat_error)
            queue(_bdat_error->r);
        else
            queue(250, "2.0.0", fmt::format("{} octets received", c.bdat_size));
        co_return true;
    }
    if (!_bdat_error && _pipeline) {
        _pipeline->finish();
        if (_pipeline->failure())
            _bdat_error = _pipeline->failure();
    }
    if (_bdat_error) {
        refuse_message(*_bdat_error);
        co_return true;
    }
    uint64_t size = _bdat_bytes;
    co_await verify_message();
    {
        task<void> t = milters_end(_bdat_writer->id());
        co_await std::move(t);
    }
    if (auto r = dmarc_refusal()) {
        _bdat_writer->abort();
        refuse_message(*r);
        co_return true;
    }
    if (content_ends_message(*_bdat_writer, size)) {
        task<void> t = send_notices();
        co_await std::move(t);
        co_return true;
    }
    task<void> t = commit_message(*_bdat_writer, size, "BDAT");
    co_await std::move(t);
    co_return true;
}

task<bool> session::do_starttls() {
    if (!offers_tls()) {
        queue(502, "5.5.1", "Error: command not implemented");
        co_return !count_error();
    }
    queue(220, "2.0.0", "Ready to start TLS");
    if (!co_await flush())
        co_return false;
    if (buffered() > 0) {
        // RFC 3207 5 / CVE-2011-0411: commands pipelined after STARTTLS were
        // sent in clear and must not be acted on once TLS is up.
        lg.warn("icid={} peer={} discarded {} plaintext bytes pipelined after STARTTLS", _icid, _peer.ip_string(),
                buffered());
        _in.clear();
        _in_pos = 0;
    }
    _tls = std::make_unique<net::tls_stream>(std::move(_tcp), *_env->tls);
    io_options o{.timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(_lo->command_timeout)};
    auto h = co_await _tls->handshake(o);
    if (!h) {
        lg.info("icid={} peer={} TLS handshake failed: {}", _icid, _peer.ip_string(), h.error().message());
        co_return false;
    }
    // RFC 3207 4.2: forget everything learned before TLS.
    _helo.clear();
    _esmtp = false;
    reset_transaction();
    co_return true;
}

task<bool> session::do_auth(const smtp::command& c) {
    if (!_env->creds || _lo->auth == auth_mode::none || !_esmtp || !offers_auth()) {
        queue(503, "5.5.1", "Error: authentication not enabled");
        co_return !count_error();
    }
    if (_authenticated) {
        queue(503, "5.5.1", "Error: already authenticated");
        co_return !count_error();
    }
    if (_have_mail) {
        queue(503, "5.5.1", "Error: MAIL transaction in progress");
        co_return !count_error();
    }
    if (!_tls && !_lo->allow_auth_without_tls) {
        queue(538, "5.7.11", "Encryption required for requested authentication mechanism");
        co_return !count_error();
    }
    // Every attempt from outside the trusted networks costs a token: a
    // password guesser gets a few tries, then one every few seconds.
    if (_env->auth_fail_rate && !exempt() && !_env->auth_fail_rate->allow(_peer, std::chrono::steady_clock::now(), 1)) {
        queue(454, "4.7.0", "Too many authentication attempts; try later");
        journal_reject(454, "auth rate");
        co_return !count_error();
    }
    std::string mech = c.auth_mechanism;
    for (auto& ch : mech)
        ch = char(std::toupper(uint8_t(ch)));
    auto read_response = [](session* s) -> task<std::optional<std::string>> {
        for (;;) {
            std::string line;
            bool too_long = false;
            if (s->next_line(line, too_long)) {
                if (too_long)
                    co_return std::nullopt;
                co_return line;
            }
            int n = co_await s->read_more(s->_lo->command_timeout);
            if (n <= 0)
                co_return std::nullopt;
        }
    };
    std::string user, pass;
    if (mech == "PLAIN") {
        std::string resp = c.auth_initial;
        if (resp.empty()) {
            _out += "334 \r\n";  // an empty challenge (RFC 4954 4)
            if (!co_await flush())
                co_return false;
            auto r = co_await read_response(this);
            if (!r)
                co_return false;
            resp = *r;
        }
        if (resp == "*") {
            queue(501, "5.0.0", "Authentication cancelled");
            co_return !count_error();
        }
        auto dec = resp == "=" ? std::optional<std::string>("") : mail::base64_decode(resp);
        size_t z1 = dec ? dec->find('\0') : std::string::npos;
        size_t z2 = z1 == std::string::npos ? z1 : dec->find('\0', z1 + 1);
        if (!dec || z2 == std::string::npos) {
            queue(501, "5.5.2", "Cannot decode response");
            co_return !count_error();
        }
        std::string authz = dec->substr(0, z1);
        user = dec->substr(z1 + 1, z2 - z1 - 1);
        pass = dec->substr(z2 + 1);
        if (!authz.empty() && authz != user) {
            queue(535, "5.7.8", "Authentication credentials invalid");
            co_return !count_error();
        }
    } else if (mech == "LOGIN") {
        std::string u = c.auth_initial;
        if (u.empty()) {
            _out += "334 " + mail::base64_encode("Username:") + "\r\n";
            if (!co_await flush())
                co_return false;
            auto r = co_await read_response(this);
            if (!r)
                co_return false;
            u = *r;
        }
        if (u == "*") {
            queue(501, "5.0.0", "Authentication cancelled");
            co_return !count_error();
        }
        auto du = mail::base64_decode(u);
        _out += "334 " + mail::base64_encode("Password:") + "\r\n";
        if (!co_await flush())
            co_return false;
        auto r = co_await read_response(this);
        if (!r)
            co_return false;
        if (*r == "*") {
            queue(501, "5.0.0", "Authentication cancelled");
            co_return !count_error();
        }
        auto dp = mail::base64_decode(*r);
        if (!du || !dp) {
            queue(501, "5.5.2", "Cannot decode response");
            co_return !count_error();
        }
        user = *du;
        pass = *dp;
    } else {
        queue(504, "5.5.4", "Unrecognized authentication mechanism");
        co_return !count_error();
    }
    // The slow hash runs on a helper thread; this core goes on serving.
    const policy::credentials* creds = _env->creds;
    auto check = offload([creds, user, pass] { return creds->verify(user, pass); });
    bool ok = co_await std::move(check);
    if (!ok) {
        lg.warn("icid={} peer={} authentication failed user={}", _icid, _peer.ip_string(), user);
        journal::record("auth_failed", {{"icid", _icid}, {"peer", std::string_view(_peer.ip_string())},
                                        {"user", std::string_view(user)}});
        queue(535, "5.7.8", "Authentication credentials invalid");
        co_return !count_error();
    }
    _authenticated = true;
    _auth_user = user;
    journal::record("auth", {{"icid", _icid}, {"user", std::string_view(user)}});
    queue(235, "2.7.0", "Authentication successful");
    co_return true;
}

task<void> session::classify(std::optional<policy::spf::result> spf) {
    policy::access::facts f;
    f.peer = _peer;
    f.spf = spf;
    policy::dns_answers answers;
    task<policy::access::classification> t = verify::classify_client(_env->dns, *_table, std::move(f), answers);
    policy::access::classification c = co_await std::move(t);
    const bool changed = !_class || _class->group != c.group;
    _class = std::move(c);
    _policy = &_table->policies()[_class->policy];
    if (!spf && !_policy->screening)
        _screening = false;
    if (!changed)
        co_return;
    std::string listed;
    for (const auto& z : _class->listed) {
        if (!listed.empty())
            listed += ',';
        listed += z;
    }
    const std::string rdns = _class->rdns.value_or("");
    journal::record("sender_group", {{"icid", _icid},
                                     {"group", std::string_view(_table->groups()[_class->group].name)},
                                     {"policy", std::string_view(_policy->name)},
                                     {"matched", std::string_view(_class->matched)},
                                     {"rdns", std::string_view(rdns)},
                                     {"dnsbl_score", int64_t(_class->dnsbl_score.value_or(0))},
                                     {"listed", std::string_view(listed)}});
}

bool session::screen_failed(std::string_view test, screen_action a) {
    if (a == screen_action::drop) {
        queue(521, "5.5.1", fmt::format("Error: protocol error ({}); closing", test));
        journal_reject(521, fmt::format("screening: {}", test));
        _screen_dropped = true;
        return true;
    }
    journal::record("screen", {{"icid", _icid},
                               {"test", test},
                               {"action", a == screen_action::enforce ? "enforce" : "ignore"}});
    if (a == screen_action::enforce && _screen_failed.empty())
        _screen_failed = std::string(test);
    return false;
}

task<bool> session::handle(const std::string& line) {
    if (_screening && smtp::looks_non_smtp(line) && screen_failed("non-SMTP command", screening().non_smtp))
        co_return false;
    auto parsed = smtp::parse_command(line, true);
    if (!parsed) {
        queue(parsed.error());
        co_return !count_error();
    }
    const smtp::command& c = parsed.value();
    // Without SMTPUTF8 on this transaction, non-ASCII addresses are refused
    // (RFC 6531 3.5): check the parsed address against the transaction.
    if ((c.v == smtp::verb::rcpt && c.path.utf8 && !_smtputf8) ||
        (c.v == smtp::verb::mail && c.path.utf8 &&
         std::none_of(c.params.begin(), c.params.end(), [](const smtp::esmtp_param& p) { return p.key == "SMTPUTF8"; }))) {
        queue(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8");
        co_return !count_error();
    }
    switch (c.v) {
    case smtp::verb::ehlo:
    case smtp::verb::helo:
        // Commands sent before the first EHLO/HELO is answered: the client
        // cannot know of PIPELINING yet (RFC 2920 3.1).
        if (_screening && !_helo_answered && buffered() > 0 &&
            screen_failed("pipelining before EHLO", screening().pipelining))
            co_return false;
        _helo_answered = true;
        do_ehlo(c, c.v == smtp::verb::ehlo);
        co_return true;
    // Sequence errors count towards max_errors like syntax errors do.
    case smtp::verb::mail: {
        task<void> t = do_mail(c);
        co_await std::move(t);
        co_return _errors < _lo->max_errors && !_end_session;
    }
    case smtp::verb::rcpt: {
        task<void> t = do_rcpt(c);
        co_await std::move(t);
        co_return _errors < _lo->max_errors;
    }
    case smtp::verb::data: co_return co_await do_data();
    case smtp::verb::bdat: co_return co_await do_bdat(c);
    case smtp::verb::rset:
        reset_transaction();
        queue(250, "2.0.0", "Ok");
        co_return true;
    case smtp::verb::noop: queue(250, "2.0.0", "Ok"); co_return true;
    case smtp::verb::quit:
        queue(221, "2.0.0", "Bye");
        co_return false;
    case smtp::verb::vrfy:
        // RFC 5321 3.5.3: 252 when we will not verify.
        queue(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
        co_return true;
    case smtp::verb::expn: queue(502, "5.5.1", "Error: command not implemented"); co_return true;
    case smtp::verb::help: queue(214, "2.0.0", "See RFC 5321"); co_return true;
    case smtp::verb::starttls: co_return co_await do_starttls();
    case smtp::verb::auth: co_return co_await do_auth(c);
    case smtp::verb::unknown: break;
    }
    queue(500, "5.5.2", "Error: command not recognized");
    co_return !count_error();
}

task<void> session::run() {
    // Known to the listener while open, so a suspension can end it.
    struct tracked {
        server_env* env;
        int fd;
        tracked(server_env* e, int f) : env(e), fd(f) { env->session_fds.insert(fd); }
        ~tracked() { env->session_fds.erase(fd); }
    } track(_env, _tcp.fd());
    _icid = ++_env->icid_seq * _env->cores + _env->core;
    _env->sessions++;
    std::string peer = _peer.ip_string();
    journal::record("connect", {{"icid", _icid}, {"peer", std::string_view(peer)},
                                {"listener", std::string_view(_lo->name)}});
    if (_env->conn_rate && !exempt() && !_env->conn_rate->allow(_peer, std::chrono::steady_clock::now())) {
        queue(421, "4.7.0", fmt::format("{} Error: too many connections from your address; try later", _env->hostname));
        co_await flush();
        journal_reject(421, "connection rate");
        co_return;
    }
    // The sender group, before anything else is said.
    const auto connected = std::chrono::steady_clock::now();
    if (_env->access) {
        _table = _env->access->table;
        task<void> ct = classify(std::nullopt);
        co_await std::move(ct);
        if (_env->access->passed && _screening && _env->access->passed->passed(_peer, connected))
            _screening = false;  // passed before: no pause, no tests
    }
    if (_lo->implicit_tls) {
        if (!_env->tls)
            co_return;
        _tls = std::make_unique<net::tls_stream>(std::move(_tcp), *_env->tls);
        io_options o{.timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(_lo->command_timeout)};
        auto h = co_await _tls->handshake(o);
        if (!h)
            co_return;
    }
    if (_policy && _policy->action == policy::access::flow_action::reject) {
        queue(_policy->reject_code, _policy->reject_enhanced, _policy->reject_text);
        co_await flush();
        journal_reject(_policy->reject_code, fmt::format("sender group {}", _table->groups()[_class->group].name));
        co_return;
    }
    if (_policy && _policy->max_connections_per_client && !exempt() &&
        _limits->count(_peer) > _policy->max_connections_per_client) {
        queue(421, "4.7.0", fmt::format("{} Error: too many connections from your address; try later", _env->hostname));
        co_await flush();
        journal_reject(421, "connections per client");
        co_return;
    }
    // Early talkers (RFC 5321 4.3.1: the client waits for the greeting).
    bool talked = false;
    if (!_tls && _screening) {
        if (_lo->greet_pause.count() > 0) {
            auto p = io::poll(_tcp.fd(), POLLIN, {.timeout = _lo->greet_pause});
            int r = co_await p;
            (void)r;
        }
        char b;
        talked = ::recv(_tcp.fd(), &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
        if (talked && screening().pregreet != screen_action::drop) {
            (void)screen_failed("pregreet", screening().pregreet);
        } else if (talked) {
            queue(554, "5.5.1", "Error: SMTP protocol synchronization (talked before the greeting)");
            co_await flush();
            journal_reject(554, "early talker");
            // Read what it sent, so closing does not reset the connection
            // and destroy our reply on its way (bounded: 64 KiB).
            char sink[4096];
            for (int i = 0; i < 16 && ::recv(_tcp.fd(), sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
            }
            ::shutdown(_tcp.fd(), SHUT_WR);
            co_return;
        }
    }
    queue(220, "", fmt::format("{} ESMTP Ringway", _env->hostname));
    if (!co_await flush())
        co_return;
    std::string line;
    bool first = true;
    // One deadline per command line (RFC 5321 4.5.3.2.7), so bytes trickled
    // one at a time do not keep a session alive.
    std::optional<std::chrono::steady_clock::time_point> deadline;
    for (;;) {
        bool too_long = false;
        if (!next_line(line, too_long)) {
            if (!co_await flush())
                break;
            if (!deadline) {
                auto t = first ? _lo->greeting_timeout : (_have_mail ? _lo->command_timeout : _lo->idle_timeout);
                deadline = std::chrono::steady_clock::now() + t;
            }
            int n = co_await read_until(*deadline);
            if (n == -ETIMEDOUT) {
                queue(421, "4.4.2", fmt::format("{} Error: timeout exceeded", _env->hostname));
                co_await flush();
                break;
            }
            if (n == 0 && _env->closing) {
                // Ended by a listener suspension (close_sessions shut our reading side).
                refuse(smtp::listener_suspended(_env->hostname));
                co_await flush();
                break;
            }
            if (n <= 0)
                break;
            continue;
        }
        first = false;
        deadline.reset();
        if (_bare_lf && _screening && screen_failed("bare LF", screening().bare_lf))
            break;
        if (too_long) {
            // RFC 5321 4.5.3.1.4
            queue(500, "5.5.6", "Error: line too long");
            if (count_error())
                break;
            continue;
        }
        bool go_on = co_await handle(line);
        if (!go_on)
            break;
    }
    co_await flush();
    if (_tls)
        (void)co_await _tls->shutdown();
    // A client that was screened and failed nothing is remembered.
    if (_env->access && _env->access->passed && _screening && _helo_answered && _screen_failed.empty() &&
        !_screen_dropped && _env->access->screening.pass_ttl.count() > 0)
        _env->access->passed->add(_peer, std::chrono::steady_clock::now() + _env->access->screening.pass_ttl);
    {
        task<void> t = milters_quit();
        co_await std::move(t);
    }
    journal::record("disconnect", {{"icid", _icid}, {"errors", uint64_t(_errors)}});
}

}  // namespace

bool limit_exempt(const server_env& env, const net::address& peer) {
    if (!env.limit_exempt)
        return false;
    for (const auto& c : *env.limit_exempt)
        if (c.contains(peer))
            return true;
    return false;
}

connection_limits::verdict connection_limits::enter(const net::address& peer, unsigned max_total, unsigned max_per_ip,
                                                     bool exempt) {
    if (_total.fetch_add(1, std::memory_order_relaxed) >= max_total) {
        _total.fetch_sub(1, std::memory_order_relaxed);
        return verdict::over_total;
    }
    if (exempt)
        return verdict::ok;
    std::lock_guard g(_lock);
    unsigned& n = _per_ip[peer.ip_string()];
    if (n >= max_per_ip) {
        _total.fetch_sub(1, std::memory_order_relaxed);
        return verdict::over_per_ip;
    }
    ++n;
    return verdict::ok;
}

void connection_limits::leave(const net::address& peer, bool exempt) {
    _total.fetch_sub(1, std::memory_order_relaxed);
    if (exempt)
        return;
    std::lock_guard g(_lock);
    auto it = _per_ip.find(peer.ip_string());
    if (it != _per_ip.end() && --it->second == 0)
        _per_ip.erase(it);
}

unsigned connection_limits::count(const net::address& peer) {
    std::lock_guard g(_lock);
    auto it = _per_ip.find(peer.ip_string());
    return it == _per_ip.end() ? 0 : it->second;
}

size_t close_sessions(server_env& env) {
    env.closing = true;
    for (int fd : env.session_fds)
        ::shutdown(fd, SHUT_RD);
    return env.session_fds.size();
}

task<void> run_session(net::accepted conn, const listener_options* lo, server_env* env, connection_limits* limits) {
    net::address peer = conn.peer;
    const bool exempt = limit_exempt(*env, peer);
    if (env->suspended || env->conservation_level >= 2) {
        auto r = env->suspended ? smtp::listener_suspended(env->hostname) : smtp::conserving_connect(env->hostname);
        env->rejected++;
        env->rejected_by_code[r.r.code]++;
        journal::record("reject", {{"peer", std::string_view(peer.ip_string())},
                                   {"listener", std::string_view(lo->name)},
                                   {"code", int64_t(r.r.code)},
                                   {"what", r.cause}});
        net::tcp_stream s(conn.fd);
        std::string l = smtp::wire(r.r);
        auto w = s.send_all(l.data(), l.size(), {.timeout = std::chrono::seconds(5)});
        co_await w;
        co_return;
    }
    if (auto v = limits->enter(peer, lo->max_connections, lo->max_connections_per_ip, exempt);
        v != connection_limits::verdict::ok) {
        // Over a limit: one line, one mail-log record, and close, without a
        // session.
        const bool total = v == connection_limits::verdict::over_total;
        auto r = total ? smtp::too_many_connections(env->hostname) : smtp::too_many_from_address(env->hostname);
        env->rejected++;
        env->rejected_by_code[r.r.code]++;
        journal::record("reject", {{"peer", std::string_view(peer.ip_string())},
                                   {"listener", std::string_view(lo->name)},
                                   {"code", int64_t(r.r.code)},
                                   {"what", r.cause}});
        net::tcp_stream s(conn.fd);
        std::string l = smtp::wire(r.r);
        auto w = s.send_all(l.data(), l.size(), {.timeout = std::chrono::seconds(5)});
        co_await w;
        co_return;
    }
    {
        session s(std::move(conn), lo, env, limits);
        co_await s.run();
    }
    limits->leave(peer, exempt);
}

}  // namespace rw::mta
