// Reply classes (mta/delivery/classify.hh): the replies real servers send
// (texts as large providers and common MTAs word them) and the gateway's
// own reasons, each put in the class an operator would.
#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "mta/delivery/classify.hh"

using namespace rw::mta::delivery;

TEST_CASE("classify: enhanced codes that say it all") {
    CHECK(classify(550, "5.1.1", "") == reply_class::bad_mailbox);
    CHECK(classify(550, "5.1.10", "") == reply_class::dns);  // null MX
    CHECK(classify(550, "5.1.2", "") == reply_class::dns);
    CHECK(classify(452, "4.2.2", "") == reply_class::mailbox_full);
    CHECK(classify(550, "5.2.1", "") == reply_class::bad_mailbox);
    CHECK(classify(552, "5.3.4", "") == reply_class::policy);
    CHECK(classify(451, "4.4.1", "") == reply_class::network);
    CHECK(classify(451, "4.4.3", "") == reply_class::dns);
    CHECK(classify(554, "5.4.6", "") == reply_class::policy);
    CHECK(classify(554, "5.6.3", "") == reply_class::policy);
    CHECK(classify(530, "5.7.10", "") == reply_class::tls);
    CHECK(classify(550, "5.7.26", "") == reply_class::policy);
    CHECK(classify(550, "5.7.25", "") == reply_class::reputation);
    // A specific code wins over misleading words.
    CHECK(classify(550, "5.1.1", "spam filter says: no such user") == reply_class::bad_mailbox);
}

TEST_CASE("classify: what providers and MTAs say") {
    const std::vector<std::pair<std::string, reply_class>> cases = {
        {"550 5.1.1 The email account that you tried to reach does not exist.", reply_class::bad_mailbox},
        {"550 5.7.1 Our system has detected that this message is likely unsolicited mail.", reply_class::policy},
        {"421 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address.",
         reply_class::reputation},
        {"550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus.", reply_class::reputation},
        {"421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user "
         "complaints", reply_class::reputation},
        {"552 5.2.2 The email account that you tried to reach is over quota.", reply_class::mailbox_full},
        {"452 4.2.2 Mailbox full", reply_class::mailbox_full},
        {"550 5.7.1 Relaying denied", reply_class::policy},
        {"554 5.7.1 <x@example.test>: Relay access denied", reply_class::policy},
        {"550 Requested action not taken: mailbox unavailable", reply_class::bad_mailbox},
        {"550 User unknown in virtual mailbox table", reply_class::bad_mailbox},
        {"450 4.1.8 <a@example.test>: Sender address rejected: Domain not found", reply_class::policy},
        {"451 4.7.1 Please try again later (greylisted)", reply_class::policy},
        {"454 4.7.0 TLS not available due to local problem", reply_class::tls},
        {"550 5.7.23 SPF validation failed", reply_class::policy},
        {"554 5.7.5 permanent error evaluating DMARC policy", reply_class::tls},  // X.7.5 is cryptographic failure
        {"421 4.3.2 Service shutting down", reply_class::network},
        {"550 5.7.1 Message rejected due to content restrictions", reply_class::policy},
        {"451 4.3.0 Temporary local problem", reply_class::unknown},
        // The gateway's own reasons, without a code.
        {"mx.example.test: connection refused", reply_class::network},
        {"mx.example.test: timeout waiting for the server's reply", reply_class::network},
        {"mx.example.test: TLS handshake: certificate verify failed", reply_class::tls},
        {"451 4.4.3 cannot resolve mx.example.test: SERVFAIL", reply_class::dns},
        {"550 5.1.2 host mx.example.test has no address", reply_class::dns},
        {"451 4.4.3 no usable MX host", reply_class::dns},
        {"554 5.4.6 too many hops: 51 Received headers, more than 50 (mail loop?)", reply_class::policy},
        {"", reply_class::network},
    };
    for (const auto& [line, want] : cases) {
        INFO(line);
        CHECK(to_string(classify_line(line)) == to_string(want));
    }
}

TEST_CASE("classify: every class has a name, and garbage is unknown or network, never a crash") {
    for (size_t k = 0; k < k_reply_classes; ++k)
        CHECK(!to_string(reply_class(k)).empty());
    CHECK(classify_line("5") == reply_class::network);
    CHECK(classify_line("999 9.9.9 ?") == reply_class::unknown);
    CHECK(classify_line("550 5.x.1 odd") == reply_class::bad_mailbox);  // 550 with no usable code: mailbox unavailable
    CHECK(classify(550, "5.99999999999.1", "") == reply_class::bad_mailbox);
    CHECK(classify(250, "", "") == reply_class::unknown);
}
