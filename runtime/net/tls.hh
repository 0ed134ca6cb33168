// TLS over OpenSSL memory BIOs on the reactor. OpenSSL never touches the
// socket: it reads ciphertext from a memory "read BIO" that we fill from
// tcp_stream::recv and writes ciphertext into a memory "write BIO" that we
// drain with tcp_stream::send_all, so io_uring still performs every socket
// read and write, with its linked timeouts and cancellation.
//
//   tls_context  one SSL_CTX (server: certificate chain and key; client:
//                verification settings and default SNI host name). Shared
//                by every stream of a core; immutable after creation.
//   tls_stream   one TLS connection over a connected tcp_stream it owns.
//                Lives on the core that made it. Used by the SMTP server
//                (STARTTLS, RFC 3207) and the delivery client.
//   make_self_signed  writes a key and a self-signed certificate, so the
//                SMTP server can offer STARTTLS on first start with no
//                certificate configured.
//
// Concurrency on one stream: at most one reader (read) and one writer
// (write_all, shutdown) at a time, which may run concurrently (full duplex);
// handshake runs alone. Concurrent reader and writer must use different
// cancel tokens (a token carries one operation at a time).
//
// Renegotiation (TLS 1.2): our server refuses it; our client follows a
// server's request (secure renegotiation only). While one is in progress a
// write may need the peer's handshake messages: it receives them itself,
// or waits for the concurrent reader's receive. TLS 1.3 post-handshake
// messages (session tickets, KeyUpdate) are handled inside read().
//
// Deadlines: io_options::timeout bounds the whole call (a handshake of
// several round trips, a write of many records); each underlying recv/send
// gets the time that remains as its linked timeout. Expiry is reported as
// tls_errc::timeout with sys == ETIMEDOUT.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "runtime/base/assert.hh"
#include "runtime/base/result.hh"
#include "runtime/net/tcp.hh"
#include "runtime/reactor/io.hh"
#include "runtime/reactor/task.hh"

namespace rw::net {

// ---- errors ----

enum class tls_errc {
    io = 1,     // the socket failed (sys holds the errno)
    timeout,    // the deadline of the call passed (sys == ETIMEDOUT)
    cancelled,  // cancelled through the cancel token (sys == ECANCELED)
    closed,     // the peer closed the connection in the middle of the handshake
    protocol,   // TLS failure: not TLS, alert received, bad record, no shared cipher...
    verify,     // the peer's certificate failed verification
    state,      // the stream failed earlier, was shut down, or could not be set up
};

const std::error_category& tls_category() noexcept;
inline std::error_code make_error_code(tls_errc e) noexcept { return {int(e), tls_category()}; }
std::string_view to_string(tls_errc e) noexcept;

struct tls_error {
    tls_errc code = tls_errc::protocol;
    int sys = 0;         // errno for io / timeout / cancelled, else 0
    std::string reason;  // OpenSSL's reason(s) or the errno text, with what we were doing
    // "protocol: handshake: error:0A00010B:SSL routines::wrong version number"
    std::string message() const;
};

// ---- context ----

class tls_context {
public:
    struct client_config {
        bool verify_peer = true;  // check the chain and, if sni_host is set, the host name
        std::string ca_file;      // PEM trust anchors; empty = the system's default store
        std::string sni_host;     // default SNI / verification name; a stream may override it
    };

    // A server context. TLS 1.2 is the minimum. The error names the file and
    // OpenSSL's reason ("cannot load private key from /etc/rw/key.pem: ...").
    static result<tls_context, std::string> server(const std::string& cert_chain_file, const std::string& key_file);
    static result<tls_context, std::string> client(const client_config& c);

    tls_context(tls_context&& o) noexcept;
    tls_context& operator=(tls_context&& o) noexcept;
    tls_context(const tls_context&) = delete;
    tls_context& operator=(const tls_context&) = delete;
    ~tls_context();

    bool is_server() const noexcept { return _server; }
    bool verify_peer() const noexcept { return _verify; }
    const std::string& sni_host() const noexcept { return _sni_host; }
    SSL_CTX* native() const noexcept { return _ctx; }

private:
    tls_context() = default;
    SSL_CTX* _ctx = nullptr;
    bool _server = false;
    bool _verify = false;
    std::string _sni_host;
};

// Generates an EC P-256 key and a self-signed X.509 v3 certificate for
// common_name (CN and subjectAltName DNS:common_name, valid ten years),
// then writes both as PEM: the key with mode 0600, the certificate 0644.
// Each file is written to a temporary name, synced and renamed into place.
// Blocking file I/O: call it at start-up, not from a reactor's hot path.
result<void, std::string> make_self_signed(const std::string& common_name, const std::string& key_path,
                                           const std::string& cert_path);

// ---- stream ----

class tls_stream {
public:
    // Per network direction: one TLS record (16 KiB of plaintext) plus the
    // largest record overhead (header, IV, MAC, padding), so one record
    // goes out in one send.
    static constexpr size_t k_record_plaintext_bytes = 16 * 1024;
    static constexpr size_t k_record_overhead_bytes = 512;
    static constexpr size_t k_net_buffer_bytes = k_record_plaintext_bytes + k_record_overhead_bytes;
    // One read() call gives up after this many network reads that brought
    // no application data (a peer sending endless tickets or empty records).
    static constexpr int k_max_reads_without_data = 1024;
    // shutdown() waits at most this long to send close_notify when the
    // caller gives no deadline.
    static constexpr std::chrono::milliseconds k_shutdown_timeout{5000};

    struct options {
        // Client: SNI and verification name for this connection; empty =
        // the context's sni_host. IP literals are verified but not sent as SNI.
        std::string sni_host;
        // Bytes already read from the socket into an application buffer that
        // belong to the TLS stream (e.g. the start of a ClientHello). They are
        // fed to the read BIO before anything is received. Copied. RFC 3207
        // servers: plaintext pipelined after STARTTLS is an injection
        // (CVE-2011-0411) to refuse, not to feed; that check is the caller's.
        std::span<const char> pre_read;
    };

    // Takes ownership of a connected socket. Setting up the SSL object fails
    // only when out of memory; that error is then returned by handshake().
    tls_stream(tcp_stream tcp, const tls_context& ctx, options o = {});
    // Moving is allowed only while no operation is in progress.
    tls_stream(tls_stream&& o) noexcept;
    tls_stream& operator=(tls_stream&& o) noexcept;
    tls_stream(const tls_stream&) = delete;
    tls_stream& operator=(const tls_stream&) = delete;
    ~tls_stream();

    // Feeds bytes already received from the peer to the read BIO (copied).
    // Same as options::pre_read; use before or between operations.
    void feed(std::span<const char> bytes) noexcept;
    // Ciphertext received from the network and not yet consumed by TLS.
    size_t buffered_input_bytes() const noexcept;

    // Runs the client or server handshake (the context decides which).
    task<result<void, tls_error>> handshake(io_options o = {});
    // Reads up to len bytes of application data: the count, or 0 once the
    // peer has closed (close_notify, or the connection closed without one:
    // see peer_sent_close_notify()). Session tickets, key updates and other
    // post-handshake messages are handled inside. A timeout or cancellation
    // leaves the stream usable.
    task<result<size_t, tls_error>> read(void* buf, size_t len, io_options o = {});
    // Encrypts and sends all len bytes, one record at a time, or fails. A
    // failure leaves the stream failed (a record may be half sent).
    task<result<void, tls_error>> write_all(const void* buf, size_t len, io_options o = {});
    // Sends close_notify and returns without waiting for the peer's; the
    // socket stays open (the caller closes it). Without a deadline in o,
    // k_shutdown_timeout applies. Does nothing after a failure or before a
    // completed handshake.
    task<result<void, tls_error>> shutdown(io_options o = {});

    // ---- state after the handshake ----
    bool handshake_done() const noexcept { return _handshake_done; }
    bool failed() const noexcept { return _failed; }
    bool peer_sent_close_notify() const noexcept;
    std::string_view protocol() const noexcept;  // "TLSv1.3"; "" before the handshake
    std::string_view cipher() const noexcept;    // "TLS_AES_256_GCM_SHA384"
    // The peer certificate's subject, RFC 2253 ("CN=x.test"); "" if none.
    std::string peer_subject() const;
    // Chain and host name checks passed (client with verify_peer, or a
    // server that asked for client certificates).
    bool peer_verified() const noexcept;
    // Server side: the SNI host name the client sent; "" if none.
    std::string_view sni_name() const noexcept;
    bool is_server() const noexcept { return _server; }

    tcp_stream& tcp() noexcept { return _tcp; }
    SSL* native() const noexcept { return _ssl; }

private:
    using clock = std::chrono::steady_clock;
    struct deadline;

    // One direction of the socket. The coroutine holding it is the only one
    // sending (or receiving), so records stay in order and the buffer of
    // that direction has one user; at most one other coroutine waits.
    struct wire_lock {
        bool held = false;
        std::coroutine_handle<> waiter;
        struct awaiter {
            wire_lock& l;
            bool await_ready() const noexcept { return !l.held; }
            void await_suspend(std::coroutine_handle<> h) noexcept {
                RW_ASSERT(!l.waiter, "a third coroutine waits on one tls_stream direction");
                l.waiter = h;
            }
            void await_resume() const noexcept {}
        };
        awaiter released() noexcept { return awaiter{*this}; }
        void release() noexcept {
            held = false;
            if (waiter)
                reactor::local().schedule(std::exchange(waiter, {}));
        }
    };

    void free_ssl() noexcept;
    void mark_moved_from() noexcept;
    bool busy() const noexcept;
    tls_error fail(tls_errc code, std::string_view doing, int ssl_ret, int ssl_err);
    tls_error sys_fail(int neg_errno, std::string_view doing, bool fatal);
    // Moves up to budget pending bytes (at most one buffer) from the write
    // BIO into the output buffer; returns the count.
    size_t take_output(size_t budget) noexcept;
    // Hands n bytes received into the input buffer to the read BIO; n == 0
    // records end of stream. Returns n or -ENOMEM.
    int take_input(int n) noexcept;
    // Sends up to budget bytes from the write BIO; the caller holds _send.
    task<int> send_pending(deadline d, size_t budget);
    // Sends everything the write BIO holds, waiting for _send if another
    // coroutine is sending. 0 or -errno.
    task<int> flush_all(deadline d);
    // The reader's flush: sends what is pending now, unless someone is
    // sending already (they drain the write BIO, our bytes included). Never
    // waits for _send, so a reader is never stuck behind a writer.
    task<int> flush_some(deadline d);
    // One recv fed to the read BIO: bytes (> 0), 0 at end of stream, or
    // -errno. If another coroutine is receiving, waits for it instead and
    // returns 1: the read BIO may have grown, so retry the TLS call.
    task<int> receive(deadline d);

    tcp_stream _tcp;
    SSL* _ssl = nullptr;
    BIO* _rbio = nullptr;  // network -> TLS (owned by _ssl)
    BIO* _wbio = nullptr;  // TLS -> network (owned by _ssl)
    std::unique_ptr<char[]> _bufs;  // input buffer, then output buffer
    std::string _init_error;
    bool _server = false;
    bool _handshake_done = false;
    bool _failed = false;
    bool _net_eof = false;   // recv returned 0
    bool _read_eof = false;  // read() reported 0
    bool _shut = false;      // close_notify queued
    bool _reading = false;
    bool _writing = false;
    bool _handshaking = false;
    wire_lock _send;
    wire_lock _recv;
};

}  // namespace rw::net

template <>
struct std::is_error_code_enum<rw::net::tls_errc> : std::true_type {};
