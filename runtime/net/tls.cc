// TLS streams over memory BIOs, TLS contexts and self-signed certificates.
// See tls.hh for the model. The loops below follow OpenSSL's non-blocking
// contract: after SSL_ERROR_WANT_READ, first send whatever the write BIO
// holds (the peer may be waiting for it), then receive and retry.
#include "runtime/net/tls.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>

#include "runtime/base/log.hh"

namespace rw::net {

namespace {

const logger lg{"tls"};

// Drains this thread's OpenSSL error queue into one line (oldest first, the
// first few entries), e.g. "error:0A00010B:SSL routines::wrong version number".
std::string openssl_reasons() {
    constexpr int k_max_reasons = 4;
    std::string out;
    int n = 0;
    for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
        if (n++ >= k_max_reasons)
            continue;
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty())
            out += "; ";
        out += buf;
    }
    return out;
}

std::string reasons_or(std::string_view fallback) {
    std::string r = openssl_reasons();
    if (r.empty())
        r = fallback;
    return r;
}

bool is_ip_literal(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Settings shared by client and server contexts.
bool common_setup(SSL_CTX* ctx) {
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        return false;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
    return true;
}

struct ctx_free {
    void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
};
struct pkey_free {
    void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); }
};
struct x509_free {
    void operator()(X509* x) const noexcept { X509_free(x); }
};
struct bio_free {
    void operator()(BIO* b) const noexcept { BIO_free(b); }
};
struct bn_free {
    void operator()(BIGNUM* b) const noexcept { BN_free(b); }
};
struct ext_free {
    void operator()(X509_EXTENSION* e) const noexcept { X509_EXTENSION_free(e); }
};
struct names_free {
    void operator()(GENERAL_NAMES* g) const noexcept { GENERAL_NAMES_free(g); }
};

// Writes data to path through a temporary file in the same directory:
// created with mode 0600, chmod'ed to mode, synced, then renamed.
result<void, std::string> write_file_atomic(const std::string& path, const char* data, size_t len, mode_t mode) {
    std::string tmp = path + ".XXXXXX";
    int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
    if (fd < 0)
        return unexpected(fmt::format("cannot create a file next to {}: {}", path, std::strerror(errno)));
    auto fail = [&](const char* what, int e) -> result<void, std::string> {
        ::close(fd);
        ::unlink(tmp.c_str());
        return unexpected(fmt::format("cannot {} {}: {}", what, path, std::strerror(e)));
    };
    if (::fchmod(fd, mode) != 0)
        return fail("set the mode of", errno);
    size_t off = 0;
    while (off < len) {
        ssize_t n = ::write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return fail("write", n < 0 ? errno : EIO);
        off += size_t(n);
    }
    if (::fsync(fd) != 0)
        return fail("sync", errno);
    if (::close(fd) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return unexpected(fmt::format("cannot write {}: {}", path, std::strerror(e)));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return unexpected(fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(e)));
    }
    return {};
}

// A host name we are willing to put into a certificate: 1..64 bytes (the
// X.520 upper bound of a CN) of letters, digits, '-', '.', '_' and '*'.
bool valid_cert_name(const std::string& n) {
    constexpr size_t k_cn_bytes_max = 64;
    if (n.empty() || n.size() > k_cn_bytes_max)
        return false;
    return std::all_of(n.begin(), n.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
               c == '_' || c == '*';
    });
}

// Marks a flag busy for the life of a scope (an operation in progress).
class busy_flag {
public:
    explicit busy_flag(bool& f) noexcept : _f(f) { _f = true; }
    ~busy_flag() { _f = false; }
    busy_flag(const busy_flag&) = delete;
    busy_flag& operator=(const busy_flag&) = delete;

private:
    bool& _f;
};

}  // namespace

// ---- errors ----

std::string_view to_string(tls_errc e) noexcept {
    switch (e) {
    case tls_errc::io: return "io";
    case tls_errc::timeout: return "timeout";
    case tls_errc::cancelled: return "cancelled";
    case tls_errc::closed: return "closed";
    case tls_errc::protocol: return "protocol";
    case tls_errc::verify: return "verify";
    case tls_errc::state: return "state";
    }
    return "unknown";
}

namespace {
class tls_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "rw.tls"; }
    std::string message(int ev) const override { return std::string(to_string(tls_errc(ev))); }
};
}  // namespace

const std::error_category& tls_category() noexcept {
    static const tls_category_impl cat;
    return cat;
}

std::string tls_error::message() const { return fmt::format("{}: {}", to_string(code), reason); }

// ---- context ----

tls_context::tls_context(tls_context&& o) noexcept
    : _ctx(std::exchange(o._ctx, nullptr)), _server(o._server), _verify(o._verify), _sni_host(std::move(o._sni_host)) {}

tls_context& tls_context::operator=(tls_context&& o) noexcept {
    if (this != &o) {
        SSL_CTX_free(_ctx);
        _ctx = std::exchange(o._ctx, nullptr);
        _server = o._server;
        _verify = o._verify;
        _sni_host = std::move(o._sni_host);
    }
    return *this;
}

tls_context::~tls_context() { SSL_CTX_free(_ctx); }

result<tls_context, std::string> tls_context::server(const std::string& cert_chain_file, const std::string& key_file) {
    ERR_clear_error();
    std::unique_ptr<SSL_CTX, ctx_free> ctx(SSL_CTX_new(TLS_server_method()));
    if (!ctx || !common_setup(ctx.get()))
        return unexpected("cannot create a TLS server context: " + reasons_or("unknown error"));
    // Client-initiated renegotiation costs us a handshake on the peer's
    // whim; refuse it. (A client of ours follows a server's request.)
    SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
    static const unsigned char k_sid_ctx[] = "ringway";
    SSL_CTX_set_session_id_context(ctx.get(), k_sid_ctx, sizeof k_sid_ctx - 1);
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_chain_file.c_str()) != 1)
        return unexpected(fmt::format("cannot load certificate chain from {}: {}", cert_chain_file,
                                      reasons_or("unknown error")));
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            return unexpected(fmt::format("private key {} does not match certificate {}: {}", key_file,
                                          cert_chain_file, reasons_or("key mismatch")));
        return unexpected(
            fmt::format("cannot load private key from {}: {}", key_file, reasons_or("unknown error")));
    }
    if (SSL_CTX_check_private_key(ctx.get()) != 1)
        return unexpected(fmt::format("private key {} does not match certificate {}: {}", key_file, cert_chain_file,
                                      reasons_or("key mismatch")));
    tls_context c;
    c._ctx = ctx.release();
    c._server = true;
    return c;
}

result<tls_context, std::string> tls_context::client(const client_config& cfg) {
    ERR_clear_error();
    std::unique_ptr<SSL_CTX, ctx_free> ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx || !common_setup(ctx.get()))
        return unexpected("cannot create a TLS client context: " + reasons_or("unknown error"));
    if (!cfg.ca_file.empty()) {
        if (SSL_CTX_load_verify_locations(ctx.get(), cfg.ca_file.c_str(), nullptr) != 1)
            return unexpected(
                fmt::format("cannot load CA file {}: {}", cfg.ca_file, reasons_or("unknown error")));
    } else if (cfg.verify_peer && SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
        return unexpected("cannot load the system's default CA store: " + reasons_or("unknown error"));
    }
    SSL_CTX_set_verify(ctx.get(), cfg.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
    tls_context c;
    c._ctx = ctx.release();
    c._server = false;
    c._verify = cfg.verify_peer;
    c._sni_host = cfg.sni_host;
    return c;
}

// ---- self-signed certificate ----

result<void, std::string> make_self_signed(const std::string& common_name, const std::string& key_path,
                                           const std::string& cert_path) {
    if (!valid_cert_name(common_name))
        return unexpected(fmt::format("cannot make a certificate for '{}': not a host name of 1 to 64 characters",
                                      common_name));
    ERR_clear_error();
    auto fail = [](std::string_view what) -> result<void, std::string> {
        return unexpected(fmt::format("cannot make a self-signed certificate: {}: {}", what,
                                      reasons_or("unknown error")));
    };
    std::unique_ptr<EVP_PKEY, pkey_free> key(EVP_EC_gen("P-256"));
    if (!key)
        return fail("generating a P-256 key");
    std::unique_ptr<X509, x509_free> x(X509_new());
    if (!x)
        return fail("X509_new");
    if (X509_set_version(x.get(), X509_VERSION_3) != 1)
        return fail("setting the version");

    // A random positive 63-bit serial (RFC 5280 4.1.2.2: unique per issuer).
    unsigned char serial[8];
    if (RAND_bytes(serial, sizeof serial) != 1)
        return fail("random serial");
    serial[0] &= 0x7f;
    std::unique_ptr<BIGNUM, bn_free> bn(BN_bin2bn(serial, sizeof serial, nullptr));
    if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x.get())))
        return fail("setting the serial");

    // Valid from an hour ago (clock skew between peers) for ten years.
    constexpr long k_skew_s = 3600;
    constexpr int k_valid_days = 3650;
    if (!X509_gmtime_adj(X509_getm_notBefore(x.get()), -k_skew_s) ||
        !X509_time_adj_ex(X509_getm_notAfter(x.get()), k_valid_days, 0, nullptr))
        return fail("setting the validity");
    if (X509_set_pubkey(x.get(), key.get()) != 1)
        return fail("setting the public key");
    X509_NAME* name = X509_get_subject_name(x.get());
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0) != 1)
        return fail("setting the subject");
    if (X509_set_issuer_name(x.get(), name) != 1)
        return fail("setting the issuer");

    // subjectAltName DNS:<name>, built directly (no config-string parsing).
    {
        std::unique_ptr<GENERAL_NAMES, names_free> names(sk_GENERAL_NAME_new_null());
        GENERAL_NAME* gn = GENERAL_NAME_new();
        ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
        if (!names || !gn || !ia5 || ASN1_STRING_set(ia5, common_name.data(), int(common_name.size())) != 1) {
            GENERAL_NAME_free(gn);
            ASN1_IA5STRING_free(ia5);
            return fail("building subjectAltName");
        }
        GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
        if (sk_GENERAL_NAME_push(names.get(), gn) <= 0) {
            GENERAL_NAME_free(gn);
            return fail("building subjectAltName");
        }
        if (X509_add1_ext_i2d(x.get(), NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1)
            return fail("adding subjectAltName");
    }
    // The rest are constant strings.
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x.get(), x.get(), nullptr, nullptr, 0);
    const std::pair<int, const char*> exts[] = {
        {NID_basic_constraints, "critical,CA:FALSE"},
        {NID_ext_key_usage, "serverAuth,clientAuth"},
        {NID_subject_key_identifier, "hash"},
        {NID_authority_key_identifier, "keyid:always"},
    };
    for (const auto& [nid, value] : exts) {
        std::unique_ptr<X509_EXTENSION, ext_free> ext(X509V3_EXT_conf_nid(nullptr, &v3, nid, value));
        if (!ext || X509_add_ext(x.get(), ext.get(), -1) != 1)
            return fail(fmt::format("adding extension {}", OBJ_nid2sn(nid)));
    }
    if (X509_sign(x.get(), key.get(), EVP_sha256()) <= 0)
        return fail("signing");

    std::unique_ptr<BIO, bio_free> kb(BIO_new(BIO_s_mem()));
    std::unique_ptr<BIO, bio_free> cb(BIO_new(BIO_s_mem()));
    if (!kb || !cb)
        return fail("BIO_new");
    if (PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
        return fail("encoding the key");
    if (PEM_write_bio_X509(cb.get(), x.get()) != 1)
        return fail("encoding the certificate");
    char* kdata = nullptr;
    long klen = BIO_get_mem_data(kb.get(), &kdata);
    char* cdata = nullptr;
    long clen = BIO_get_mem_data(cb.get(), &cdata);
    RW_ASSERT(klen > 0 && kdata != nullptr, "empty PEM key");
    RW_ASSERT(clen > 0 && cdata != nullptr, "empty PEM certificate");
    auto kw = write_file_atomic(key_path, kdata, size_t(klen), 0600);
    OPENSSL_cleanse(kdata, size_t(klen));
    if (!kw)
        return kw;
    return write_file_atomic(cert_path, cdata, size_t(clen), 0644);
}

// ---- stream ----

// The deadline of one call, handed to each recv/send as a linked timeout.
struct tls_stream::deadline {
    std::optional<clock::time_point> at;
    cancel_token* cancel = nullptr;

    deadline() = default;
    explicit deadline(const io_options& o) noexcept : cancel(o.cancel) {
        if (o.timeout)
            at = clock::now() + *o.timeout;
    }
    // The same deadline, but no later than `cap` from now.
    deadline capped(std::chrono::nanoseconds cap) const noexcept {
        deadline d = *this;
        auto limit = clock::now() + cap;
        if (!d.at || *d.at > limit)
            d.at = limit;
        return d;
    }
    // Options for the next operation; false once the deadline has passed.
    bool next(io_options& out) const noexcept {
        out.cancel = cancel;
        out.timeout.reset();
        if (!at)
            return true;
        auto left = *at - clock::now();
        if (left <= clock::duration::zero())
            return false;
        out.timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(left);
        return true;
    }
};

tls_stream::tls_stream(tcp_stream tcp, const tls_context& ctx, options o)
    : _tcp(std::move(tcp)), _server(ctx.is_server()) {
    RW_ASSERT(ctx.native() != nullptr, "tls_stream made from an empty tls_context");
    _bufs.reset(new (std::nothrow) char[2 * k_net_buffer_bytes]);
    if (!_bufs) {
        _init_error = "out of memory for the network buffers";
        return;
    }
    ERR_clear_error();
    _ssl = SSL_new(ctx.native());
    if (!_ssl) {
        _init_error = "cannot create an SSL object: " + reasons_or("out of memory");
        return;
    }
    _rbio = BIO_new(BIO_s_mem());
    _wbio = BIO_new(BIO_s_mem());
    if (!_rbio || !_wbio) {
        BIO_free(_rbio);
        BIO_free(_wbio);
        _rbio = _wbio = nullptr;
        free_ssl();
        _init_error = "cannot create memory BIOs: " + reasons_or("out of memory");
        return;
    }
    // An empty memory BIO means "retry later", not end of file.
    BIO_set_mem_eof_return(_rbio, -1);
    BIO_set_mem_eof_return(_wbio, -1);
    SSL_set_bio(_ssl, _rbio, _wbio);  // _ssl owns both from here
    if (_server) {
        SSL_set_accept_state(_ssl);
    } else {
        SSL_set_connect_state(_ssl);
        const std::string& host = o.sni_host.empty() ? ctx.sni_host() : o.sni_host;
        if (!host.empty()) {
            bool ip = is_ip_literal(host);
            // RFC 6066 3: literal IP addresses are not permitted in SNI.
            if (!ip && SSL_set_tlsext_host_name(_ssl, host.c_str()) != 1)
                _init_error = fmt::format("cannot set SNI host name '{}': {}", host, reasons_or("invalid"));
            if (ctx.verify_peer()) {
                int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(_ssl), host.c_str())
                            : SSL_set1_host(_ssl, host.c_str());
                if (ok != 1)
                    _init_error = fmt::format("cannot set verification name '{}': {}", host, reasons_or("invalid"));
                SSL_set_hostflags(_ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            }
        }
    }
    if (!o.pre_read.empty())
        feed(o.pre_read);
}

tls_stream::tls_stream(tls_stream&& o) noexcept
    : _tcp(std::move(o._tcp)),
      _ssl(std::exchange(o._ssl, nullptr)),
      _rbio(std::exchange(o._rbio, nullptr)),
      _wbio(std::exchange(o._wbio, nullptr)),
      _bufs(std::move(o._bufs)),
      _init_error(std::move(o._init_error)),
      _server(o._server),
      _handshake_done(o._handshake_done),
      _failed(o._failed),
      _net_eof(o._net_eof),
      _read_eof(o._read_eof),
      _shut(o._shut) {
    RW_ASSERT(!o.busy(), "tls_stream moved while an operation is in progress");
    o.mark_moved_from();
}

// A moved-from stream refuses every operation with a state error.
void tls_stream::mark_moved_from() noexcept {
    _handshake_done = false;
    _failed = true;
    _init_error = "the stream was moved from";
}

tls_stream& tls_stream::operator=(tls_stream&& o) noexcept {
    if (this == &o)
        return *this;
    RW_ASSERT(!o.busy(), "tls_stream moved while an operation is in progress");
    RW_ASSERT(!busy(), "tls_stream assigned to while an operation is in progress");
    free_ssl();
    _tcp = std::move(o._tcp);
    _ssl = std::exchange(o._ssl, nullptr);
    _rbio = std::exchange(o._rbio, nullptr);
    _wbio = std::exchange(o._wbio, nullptr);
    _bufs = std::move(o._bufs);
    _init_error = std::move(o._init_error);
    _server = o._server;
    _handshake_done = o._handshake_done;
    _failed = o._failed;
    _net_eof = o._net_eof;
    _read_eof = o._read_eof;
    _shut = o._shut;
    o.mark_moved_from();
    return *this;
}

tls_stream::~tls_stream() {
    RW_ASSERT(!busy(), "tls_stream destroyed while an operation is in progress");
    free_ssl();
}

bool tls_stream::busy() const noexcept {
    return _reading || _writing || _handshaking || _send.held || _recv.held || _send.waiter || _recv.waiter;
}

void tls_stream::free_ssl() noexcept {
    if (_ssl)
        SSL_free(_ssl);  // frees both BIOs
    _ssl = nullptr;
    _rbio = _wbio = nullptr;
}

void tls_stream::feed(std::span<const char> bytes) noexcept {
    if (!_rbio)
        return;  // setup failed; handshake() reports it
    while (!bytes.empty()) {
        int n = int(std::min<size_t>(bytes.size(), INT_MAX));
        if (BIO_write(_rbio, bytes.data(), n) != n) {
            _init_error = "out of memory while feeding pre-read bytes";
            _failed = true;
            return;
        }
        bytes = bytes.subspan(size_t(n));
    }
}

size_t tls_stream::buffered_input_bytes() const noexcept { return _rbio ? BIO_ctrl_pending(_rbio) : 0; }

tls_error tls_stream::fail(tls_errc code, std::string_view doing, int ssl_ret, int ssl_err) {
    _failed = true;
    std::string why = openssl_reasons();
    if (why.empty()) {
        if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_SSL)
            why = "unexpected end of the TLS stream";
        else
            why = fmt::format("SSL error {} (return {})", ssl_err, ssl_ret);
    }
    if (_ssl && (SSL_get_verify_mode(_ssl) & SSL_VERIFY_PEER) && !_handshake_done) {
        long v = SSL_get_verify_result(_ssl);
        if (v != X509_V_OK) {
            code = tls_errc::verify;
            why = fmt::format("certificate verify failed ({}): {}", X509_verify_cert_error_string(v), why);
        }
    }
    return tls_error{code, 0, fmt::format("{}: {}", doing, why)};
}

tls_error tls_stream::sys_fail(int neg_errno, std::string_view doing, bool fatal) {
    int e = -neg_errno;
    tls_errc code = tls_errc::io;
    if (e == ETIMEDOUT)
        code = tls_errc::timeout;
    else if (e == ECANCELED)
        code = tls_errc::cancelled;
    if (fatal)
        _failed = true;
    return tls_error{code, e, fmt::format("{}: {}", doing, std::strerror(e))};
}

size_t tls_stream::take_output(size_t budget) noexcept {
    size_t pending = BIO_ctrl_pending(_wbio);
    int want = int(std::min({pending, budget, k_net_buffer_bytes}));
    if (want == 0)
        return 0;
    int n = BIO_read(_wbio, _bufs.get() + k_net_buffer_bytes, want);
    RW_ASSERT(n == want, "memory BIO gave {} of {} pending bytes", n, want);
    return size_t(n);
}

int tls_stream::take_input(int n) noexcept {
    if (n > 0) {
        if (BIO_write(_rbio, _bufs.get(), n) != n)
            return -ENOMEM;
    } else if (n == 0) {
        _net_eof = true;
    }
    return n;
}

task<int> tls_stream::send_pending(deadline d, size_t budget) {
    RW_DASSERT(_send.held);
    while (budget > 0) {
        size_t n = take_output(budget);
        if (n == 0)
            break;
        budget -= n;
        io_options io;
        if (!d.next(io))
            co_return -ETIMEDOUT;
        auto op = _tcp.send_all(_bufs.get() + k_net_buffer_bytes, n, io);
        int r = co_await op;
        if (r < 0)
            co_return r;
    }
    co_return 0;
}

task<int> tls_stream::flush_all(deadline d) {
    for (int i = 0; _send.held; ++i) {
        RW_ASSERT(i < 1000, "tls_stream send lock starved");
        auto w = _send.released();
        co_await w;
    }
    _send.held = true;
    auto op = send_pending(d, SIZE_MAX);
    int r = co_await std::move(op);
    _send.release();
    co_return r;
}

task<int> tls_stream::flush_some(deadline d) {
    if (_send.held)
        co_return 0;
    _send.held = true;
    auto op = send_pending(d, BIO_ctrl_pending(_wbio));
    int r = co_await std::move(op);
    _send.release();
    co_return r;
}

task<int> tls_stream::receive(deadline d) {
    if (_recv.held) {
        auto w = _recv.released();
        co_await w;
        co_return 1;
    }
    io_options io;
    if (!d.next(io))
        co_return -ETIMEDOUT;
    _recv.held = true;
    auto op = _tcp.recv(_bufs.get(), k_net_buffer_bytes, io);
    int n = co_await op;
    _recv.release();
    co_return take_input(n);
}

task<result<void, tls_error>> tls_stream::handshake(io_options o) {
    RW_ASSERT(!_reading && !_writing && !_handshaking, "handshake while another operation is in progress");
    if (!_init_error.empty()) {
        _failed = true;
        co_return unexpected(tls_error{tls_errc::state, 0, "setup: " + _init_error});
    }
    if (_failed)
        co_return unexpected(tls_error{tls_errc::state, 0, "handshake: the stream failed earlier"});
    if (_handshake_done)
        co_return result<void, tls_error>{};
    busy_flag busy(_handshaking);
    const deadline d(o);
    for (int rounds = 0;; ++rounds) {
        ERR_clear_error();
        int r = SSL_do_handshake(_ssl);
        if (r == 1) {
            // Our last flight (client Finished, server tickets) may be queued.
            auto fl = flush_all(d);
            int f = co_await std::move(fl);
            if (f < 0)
                co_return unexpected(sys_fail(f, "handshake: sending", true));
            _handshake_done = true;
            lg.debug("handshake done side={} version={} cipher={}", _server ? "server" : "client",
                     SSL_get_version(_ssl), SSL_get_cipher_name(_ssl));
            co_return result<void, tls_error>{};
        }
        int e = SSL_get_error(_ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            tls_error err = fail(tls_errc::protocol, "handshake", r, e);
            // Best effort: tell the peer why (the alert OpenSSL queued).
            if (BIO_ctrl_pending(_wbio) > 0) {
                constexpr auto k_alert_send_timeout = std::chrono::seconds(1);
                auto fl = flush_all(d.capped(k_alert_send_timeout));
                int ignored = co_await std::move(fl);
                (void)ignored;
            }
            co_return unexpected(std::move(err));
        }
        // Send our flight before waiting for the peer's.
        if (BIO_ctrl_pending(_wbio) > 0) {
            auto fl = flush_all(d);
            int f = co_await std::move(fl);
            if (f < 0)
                co_return unexpected(sys_fail(f, "handshake: sending", true));
        }
        if (_net_eof) {
            _failed = true;
            co_return unexpected(
                tls_error{tls_errc::closed, 0, "handshake: the peer closed the connection during the handshake"});
        }
        if (rounds >= k_max_reads_without_data) {
            _failed = true;
            co_return unexpected(tls_error{tls_errc::protocol, 0, "handshake: too many network reads"});
        }
        auto rv = receive(d);
        int n = co_await std::move(rv);
        if (n < 0)
            co_return unexpected(sys_fail(n, "handshake: receiving", true));
    }
}

task<result<size_t, tls_error>> tls_stream::read(void* buf, size_t len, io_options o) {
    RW_ASSERT(!_reading && !_handshaking, "two concurrent readers on one tls_stream");
    RW_ASSERT(len > 0, "read into an empty buffer");
    if (!_handshake_done)
        co_return unexpected(tls_error{tls_errc::state, 0, "read: the handshake has not completed"});
    if (_failed)
        co_return unexpected(tls_error{tls_errc::state, 0, "read: the stream failed earlier"});
    if (_read_eof)
        co_return size_t(0);
    busy_flag busy(_reading);
    const deadline d(o);
    for (int idle_reads = 0;; ++idle_reads) {
        size_t got = 0;
        ERR_clear_error();
        int r = SSL_read_ex(_ssl, buf, len, &got);
        if (r == 1) {
            // Reading may have queued a reply (KeyUpdate, renegotiation).
            if (BIO_ctrl_pending(_wbio) > 0) {
                auto fl = flush_some(d);
                int f = co_await std::move(fl);
                if (f < 0)
                    _failed = true;  // keep the data; the next call reports the failure
            }
            co_return got;
        }
        int e = SSL_get_error(_ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) {  // close_notify
            _read_eof = true;
            co_return size_t(0);
        }
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            co_return unexpected(fail(tls_errc::protocol, "read", r, e));
        if (BIO_ctrl_pending(_wbio) > 0) {
            auto fl = flush_some(d);
            int f = co_await std::move(fl);
            if (f < 0)
                co_return unexpected(sys_fail(f, "read: sending", f != -ETIMEDOUT && f != -ECANCELED));
        }
        if (_net_eof) {  // closed without close_notify: also end of stream
            _read_eof = true;
            co_return size_t(0);
        }
        if (idle_reads >= k_max_reads_without_data) {
            _failed = true;
            co_return unexpected(tls_error{tls_errc::protocol, 0,
                                           fmt::format("read: {} network reads without application data",
                                                       k_max_reads_without_data)});
        }
        if (_recv.held) {  // a writer in a renegotiation is receiving: let it feed the BIO
            auto w = _recv.released();
            co_await w;
            continue;
        }
        // receive(), inline: no coroutine frame per network read.
        io_options io;
        if (!d.next(io))
            co_return unexpected(sys_fail(-ETIMEDOUT, "read: receiving", false));
        _recv.held = true;
        auto op = _tcp.recv(_bufs.get(), k_net_buffer_bytes, io);
        int got_bytes = co_await op;
        _recv.release();
        int n = take_input(got_bytes);
        if (n < 0)
            co_return unexpected(sys_fail(n, "read: receiving", n != -ETIMEDOUT && n != -ECANCELED));
    }
}

task<result<void, tls_error>> tls_stream::write_all(const void* buf, size_t len, io_options o) {
    RW_ASSERT(!_writing && !_handshaking, "two concurrent writers on one tls_stream");
    if (!_handshake_done)
        co_return unexpected(tls_error{tls_errc::state, 0, "write: the handshake has not completed"});
    if (_failed)
        co_return unexpected(tls_error{tls_errc::state, 0, "write: the stream failed earlier"});
    if (_shut)
        co_return unexpected(tls_error{tls_errc::state, 0, "write: the stream was shut down"});
    busy_flag busy(_writing);
    const deadline d(o);
    const char* p = static_cast<const char*>(buf);
    size_t off = 0;
    int stalls = 0;
    while (off < len) {
        // One record at a time, so the write BIO never holds more than one.
        size_t chunk = std::min(len - off, k_record_plaintext_bytes);
        size_t written = 0;
        ERR_clear_error();
        int r = SSL_write_ex(_ssl, p + off, chunk, &written);
        if (r == 1) {
            off += written;
        } else {
            int e = SSL_get_error(_ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                co_return unexpected(fail(tls_errc::protocol, "write", r, e));
            // A renegotiation the server started is in progress: send our
            // part, then receive (or let the reader receive), then retry
            // SSL_write with the same arguments, as OpenSSL requires.
            if (++stalls > k_max_reads_without_data) {
                _failed = true;
                co_return unexpected(tls_error{tls_errc::protocol, 0, "write: renegotiation does not progress"});
            }
        }
        // flush_all(), inline: no coroutine frame per record.
        for (int i = 0; _send.held; ++i) {
            RW_ASSERT(i < 1000, "tls_stream send lock starved");
            auto w = _send.released();
            co_await w;
        }
        _send.held = true;
        int f = 0;
        while (f == 0) {
            size_t n = take_output(SIZE_MAX);
            if (n == 0)
                break;
            io_options io;
            if (!d.next(io)) {
                f = -ETIMEDOUT;
                break;
            }
            auto op = _tcp.send_all(_bufs.get() + k_net_buffer_bytes, n, io);
            int sr = co_await op;
            if (sr < 0)
                f = sr;
        }
        _send.release();
        if (f < 0)
            co_return unexpected(sys_fail(f, "write: sending", true));
        if (r != 1) {
            if (_net_eof) {
                _failed = true;
                co_return unexpected(
                    tls_error{tls_errc::closed, 0, "write: the peer closed the connection during a renegotiation"});
            }
            auto rv = receive(d);
            int n = co_await std::move(rv);
            if (n < 0)
                co_return unexpected(sys_fail(n, "write: receiving", true));
        }
    }
    co_return result<void, tls_error>{};
}

task<result<void, tls_error>> tls_stream::shutdown(io_options o) {
    RW_ASSERT(!_writing && !_handshaking, "shutdown while a write is in progress");
    if (!_handshake_done || _failed || _shut)
        co_return result<void, tls_error>{};
    busy_flag busy(_writing);
    _shut = true;
    if (!o.timeout)
        o.timeout = k_shutdown_timeout;
    const deadline d(o);
    ERR_clear_error();
    int r = SSL_shutdown(_ssl);  // queues close_notify; we do not wait for the peer's
    if (r < 0) {
        int e = SSL_get_error(_ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            co_return unexpected(fail(tls_errc::protocol, "shutdown", r, e));
    }
    auto fl = flush_all(d);
    int f = co_await std::move(fl);
    if (f < 0)
        co_return unexpected(sys_fail(f, "shutdown: sending close_notify", true));
    co_return result<void, tls_error>{};
}

bool tls_stream::peer_sent_close_notify() const noexcept {
    return _ssl && (SSL_get_shutdown(_ssl) & SSL_RECEIVED_SHUTDOWN) != 0;
}

std::string_view tls_stream::protocol() const noexcept {
    if (!_ssl || !_handshake_done)
        return {};
    return SSL_get_version(_ssl);
}

std::string_view tls_stream::cipher() const noexcept {
    if (!_ssl || !_handshake_done)
        return {};
    const char* c = SSL_get_cipher_name(_ssl);
    return c ? std::string_view(c) : std::string_view();
}

std::string tls_stream::peer_subject() const {
    if (!_ssl)
        return {};
    X509* cert = SSL_get0_peer_certificate(_ssl);
    if (!cert)
        return {};
    std::unique_ptr<BIO, bio_free> b(BIO_new(BIO_s_mem()));
    if (!b || X509_NAME_print_ex(b.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0)
        return {};
    char* data = nullptr;
    long n = BIO_get_mem_data(b.get(), &data);
    return n > 0 ? std::string(data, size_t(n)) : std::string();
}

bool tls_stream::peer_verified() const noexcept {
    return _ssl && _handshake_done && (SSL_get_verify_mode(_ssl) & SSL_VERIFY_PEER) &&
           SSL_get0_peer_certificate(_ssl) != nullptr && SSL_get_verify_result(_ssl) == X509_V_OK;
}

std::string_view tls_stream::sni_name() const noexcept {
    if (!_ssl)
        return {};
    const char* n = SSL_get_servername(_ssl, TLSEXT_NAMETYPE_host_name);
    return n ? std::string_view(n) : std::string_view();
}

}  // namespace rw::net
