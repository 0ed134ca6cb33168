// A milter client (the Sendmail mail filter protocol, version 6), so that
// existing milters (opendkim, spam and virus filters, home-made ones
// written with libmilter or pymilter) plug into the gateway.
//
// One connection per SMTP session and milter, opened at the first MAIL:
// option negotiation (SMFIC_OPTNEG: the steps the milter wants and the
// actions we allow), then connect and HELO, and per transaction MAIL,
// each RCPT, DATA, every header field, the end of headers, the body in
// chunks of at most 64 KiB as it streams in, and the end of the message,
// whose answer carries the milter's modifications. Macros (j, _,
// {daemon_name}, {client_addr}, {client_name}, i, {mail_addr},
// {rcpt_addr}, {auth_authen}) go before the steps that use them.
//
// What the gateway takes from a milter:
//   replies      continue, accept (no more steps this transaction),
//                reject, tempfail (or the reply it sets with SMFIR_REPLYCODE),
//                discard (accepted and dropped); at RCPT they are about
//                that recipient only
//   actions      add a header (SMFIR_ADDHEADER, SMFIR_INSHEADER), change or
//                delete one (SMFIR_CHGHEADER), quarantine (SMFIR_QUARANTINE),
//                change the sender (SMFIR_CHGFROM), add and delete recipients
//                (SMFIR_ADDRCPT, SMFIR_ADDRCPT_PAR, SMFIR_DELRCPT), replace
//                the body (SMFIR_REPLBODY, in chunks, up to the message size
//                limit), progress (keeps the end-of-message wait alive)
// ESMTP arguments given with CHGFROM and ADDRCPT_PAR are not applied: the
// message keeps its own parameters and an added recipient gets defaults.
// Setting the macro list (SMFIF_SETSYMLIST) is not offered, so a milter
// that needs it says so when it starts rather than being silently ignored.
//
// Pure protocol code here: packets in and out of a buffer (`codec`), and
// the client that runs them over a socket. A milter that cannot be reached,
// times out or answers garbage fails the session's milter: `failed` says
// why, and the caller fails open or tempfails.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mta/scan/scanners.hh"
#include "runtime/net/tcp.hh"
#include "runtime/reactor/task.hh"

namespace rw::mta::scan::milter {

// Commands (MTA to milter) and replies (milter to MTA), as on the wire.
namespace cmd {
inline constexpr char abort = 'A', body = 'B', connect = 'C', macro = 'D', eom = 'E', helo = 'H', quit_nc = 'K',
                      header = 'L', mail = 'M', eoh = 'N', optneg = 'O', quit = 'Q', rcpt = 'R', data = 'T';
}
namespace rep {
inline constexpr char addrcpt = '+', addrcpt_par = '2', delrcpt = '-', accept = 'a', replbody = 'b', cont = 'c',
                      discard = 'd',
                      chgfrom = 'e', addheader = 'h', insheader = 'i', chgheader = 'm', progress = 'p',
                      quarantine = 'q', reject = 'r', skip = 's', tempfail = 't', replycode = 'y', optneg = 'O';
}
// SMFIP_* protocol flags (steps the milter does not want; replies it will not send).
inline constexpr uint32_t p_noconnect = 0x1, p_nohelo = 0x2, p_nomail = 0x4, p_norcpt = 0x8, p_nobody = 0x10,
                          p_nohdrs = 0x20, p_noeoh = 0x40, p_nr_hdr = 0x80, p_nounknown = 0x100, p_nodata = 0x200,
                          p_skip = 0x400, p_rcpt_rej = 0x800, p_nr_conn = 0x1000, p_nr_helo = 0x2000,
                          p_nr_mail = 0x4000, p_nr_rcpt = 0x8000, p_nr_data = 0x10000, p_nr_unkn = 0x20000,
                          p_nr_eoh = 0x40000, p_nr_body = 0x80000, p_hdr_leadspc = 0x100000;
// SMFIF_* actions we allow.
inline constexpr uint32_t f_addhdrs = 0x1, f_chgbody = 0x2, f_addrcpt = 0x4, f_delrcpt = 0x8, f_chghdrs = 0x10,
                          f_quarantine = 0x20, f_chgfrom = 0x40, f_addrcpt_par = 0x80;
inline constexpr uint32_t k_allowed_actions =
    f_addhdrs | f_chgbody | f_addrcpt | f_delrcpt | f_chghdrs | f_quarantine | f_addrcpt_par | f_chgfrom;
inline constexpr uint32_t k_version = 6;
inline constexpr size_t k_max_packet = 1 << 20;  // a milter's packet larger than this is garbage
inline constexpr size_t k_chunk = 65535;         // MILTER_CHUNK_SIZE
inline constexpr size_t k_max_modifications = 1000;  // header and recipient changes of one message

struct packet {
    char code = 0;
    std::string data;
};

// Framing: a 4-byte big-endian length (code included), the code, the data.
void append_packet(std::string& out, char code, std::string_view data);
// Takes one packet off the front of `in`; nullopt: more bytes needed.
// A length of 0 or above k_max_packet sets `bad`.
std::optional<packet> take_packet(std::string& in, bool& bad);

// What a step's answer means for the gateway.
enum class verdict { cont, accept, reject, tempfail, discard };
struct answer {
    verdict v = verdict::cont;
    int code = 0;  // a reply the milter set (SMFIR_REPLYCODE), else 0
    std::string enhanced, text;
};
// Parses SMFIR_REPLYCODE's text ("550 5.7.1 Go away" or "550 Go away").
std::optional<answer> parse_replycode(std::string_view data);

// The modifications of one message's end.
struct edits {
    std::vector<std::pair<std::string, std::string>> add;  // fields to add
    struct change {
        std::string name;
        uint32_t index = 0;  // 1-based among fields of that name
        std::string value;   // empty: delete the field
    };
    std::vector<change> changes;
    std::optional<std::string> quarantine;  // the reason
    // The envelope: a new sender ("" = the null sender), recipients added
    // and deleted (addresses without angle brackets).
    std::optional<std::string> from;
    std::vector<std::string> add_rcpts, del_rcpts;
    // The new body (everything after the header section), CRLF line
    // ends; nullopt when the milter left it alone.
    std::optional<std::string> body;
    size_t count() const { return add.size() + changes.size() + add_rcpts.size() + del_rcpts.size(); }
};
// Applies one modification packet to e. false: not a modification we
// know or allow, or malformed. A replaced body longer than max_body is
// refused.
bool apply_modification(const packet& p, edits& e, size_t max_body = 64 << 20);
// An address as a milter gives it ("<a@b>", "a@b", "<>"): without the
// brackets; nullopt when it is not one (spaces, control bytes, too long).
std::optional<std::string> milter_address(std::string_view s, bool allow_null);

using options = milter_options;

// What the milter is told about the client and us.
struct session_info {
    std::string our_hostname;
    std::string client_name;  // its forward-confirmed name, or "[ip]"
    net::address client;
    std::string helo;
};

class client {
public:
    client(const options* o, session_info info);

    // Each step: the milter's answer (cont when the milter asked not to
    // get the step or not to answer it). After a failure every step
    // answers cont and failed() says why.
    task<answer> mail(std::string from, std::vector<std::string> esmtp_args, std::string auth_user,
                      std::string queue_id);
    task<answer> rcpt(std::string rcpt);
    task<answer> data();
    task<answer> header(std::string name, std::string value);
    task<answer> end_of_headers();
    task<answer> body(std::string_view chunk);
    // max_body: the largest replaced body taken (the message size limit).
    task<answer> end_of_message(edits* e, std::string queue_id, size_t max_body);
    // Ends the transaction (RSET, a refused message); the connection stays.
    task<void> abort();
    task<void> quit();

    bool failed() const { return !_why.empty(); }
    const std::string& why() const { return _why; }
    // The milter accepted or discarded the transaction: no more steps until the next MAIL.
    bool done() const { return _done; }
    const options& opts() const { return *_o; }

private:
    task<bool> open();
    task<bool> send(char code, std::string_view data);
    task<std::optional<packet>> receive(std::chrono::milliseconds timeout);
    task<answer> step(char code, std::string_view data, uint32_t no_step, uint32_t no_reply);
    answer fail(std::string why);
    void macros(char for_cmd, std::initializer_list<std::pair<std::string_view, std::string_view>> kv);

    const options* _o;
    session_info _info;
    net::tcp_stream _s;
    std::string _out, _in;
    uint32_t _protocol = 0;  // the milter's SMFIP flags
    uint32_t _version = 0;
    bool _open = false, _done = false, _skip_body = false, _in_transaction = false;
    answer _session;  // the answer to connect and HELO
    std::string _why;
};

}  // namespace rw::mta::scan::milter
