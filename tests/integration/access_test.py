#!/usr/bin/env python3
"""Sender groups, mail flow policies and connection screening in a real
ringwayd, with clients on several loopback addresses (127.0.0.x), a real
DNS server on loopback serving PTR, A, SPF and DNSBL/DNSWL zones
(zone_dns.ZoneServer), and ringway-sink receiving.

    access_test.py BUILD_DIR [unittest args]

Asserts which group and policy each client gets (the mail log's
sender_group records), that a client matched by address costs no DNS
lookup, the codes of refusals at connect, MAIL and RCPT, each policy
limit, TLS required, AUTH not offered, relaying granted by a group, the
screening tests (pregreet, pipelining before EHLO, bare LF, non-SMTP)
with enforce and drop, and the pass cache.
"""
import os
import json
import smtplib
import socket
import subprocess
import ssl
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import delivery_test  # noqa: E402
from delivery_test import DeliveryTest, saved  # noqa: E402
from ringway_harness import Raw, wait_until  # noqa: E402
from zone_dns import ZoneServer  # noqa: E402

BUILD = None

POLICY = r'''
[screening]
dnsbl_sites = ["bl.test*2", "bl2.test=127.0.0.[2..3]", "wl.test*-5"]
pregreet = "drop"
pipelining = "enforce"
bare_lf = "enforce"
non_smtp = "drop"

[[mail_flow_policy]]
name = "THROTTLED"
max_messages_per_session = 2
max_recipients_per_message = 3
max_recipients_per_hour = 5
max_message_size = "4K"

[[mail_flow_policy]]
name = "TLSONLY"
tls = "required"
auth = false

[[sender_group]]
name = "ALLOWLIST"
policy = "TRUSTED"
networks = ["127.0.0.10"]
dnsbl_max_score = -5

[[sender_group]]
name = "BLOCKLIST"
policy = "BLOCKED"
networks = ["127.0.0.66"]
dnsbl_min_score = 3

[[sender_group]]
name = "RELAYLIST"
policy = "RELAYED"
networks = ["127.0.0.20"]

[[sender_group]]
name = "SECURE"
policy = "TLSONLY"
rdns = ["*.secure.test"]

[[sender_group]]
name = "SUSPECTLIST"
policy = "THROTTLED"
rdns_unconfirmed = true

[[sender_group]]
name = "SPFFAIL"
policy = "BLOCKED"
spf = ["fail"]

[[content_rule]]
name = "suspect-tag"
condition = 'sender-group == "SUSPECTLIST" and mail-flow-policy == "THROTTLED"'
actions = ["add-header X-Sender-Group: suspect"]
'''


def ptr(ip):
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


def rev(ip, zone):
    return ".".join(reversed(ip.split("."))) + "." + zone


# Every client but the suspect one (127.0.0.50) has a forward-confirmed name.
ZONE = {
    ptr("127.0.0.30"): [{"PTR": "mx.secure.test"}], "mx.secure.test": [{"A": "127.0.0.30"}],
    ptr("127.0.0.40"): [{"PTR": "mx.plain.test"}], "mx.plain.test": [{"A": "127.0.0.40"}],
    ptr("127.0.0.41"): [{"PTR": "mx41.plain.test"}], "mx41.plain.test": [{"A": "127.0.0.41"}],
    ptr("127.0.0.42"): [{"PTR": "mx42.plain.test"}], "mx42.plain.test": [{"A": "127.0.0.42"}],
    ptr("127.0.0.43"): [{"PTR": "mx43.plain.test"}], "mx43.plain.test": [{"A": "127.0.0.43"}],
    ptr("127.0.0.7"): [{"PTR": "mx7.plain.test"}], "mx7.plain.test": [{"A": "127.0.0.7"}],
    ptr("127.0.0.8"): [{"PTR": "mx8.plain.test"}], "mx8.plain.test": [{"A": "127.0.0.8"}],
    ptr("127.0.0.9"): [{"PTR": "mx9.plain.test"}], "mx9.plain.test": [{"A": "127.0.0.9"}],
    # 127.0.0.50 claims a name that does not lead back to it.
    ptr("127.0.0.50"): [{"PTR": "liar.plain.test"}], "liar.plain.test": [{"A": "127.0.0.99"}],
    # .7 is listed by both blocklists (2 + 1: blocked), .8 by one (2: not),
    # .9 by the allowlist (-5: trusted).
    rev("127.0.0.7", "bl.test"): [{"A": "127.0.0.2"}], rev("127.0.0.7", "bl2.test"): [{"A": "127.0.0.3"}],
    rev("127.0.0.8", "bl.test"): [{"A": "127.0.0.2"}], rev("127.0.0.8", "bl2.test"): [{"A": "127.0.0.9"}],
    rev("127.0.0.9", "wl.test"): [{"A": "127.0.0.2"}],
    "fail.test": [{"TXT": "v=spf1 -all"}],
    "pass.test": [{"TXT": "v=spf1 ip4:127.0.0.0/8 -all"}],
}


def message(subject="hello", body="Hello there.\r\n", size=None):
    text = f"From: a@pass.test\r\nTo: b@local.test\r\nSubject: {subject}\r\n\r\n{body}"
    if size:
        text += "x" * (size - len(text)) + "\r\n"
    return text.encode()


class AccessTest(DeliveryTest):
    def setUp(self):
        self.dns = ZoneServer()
        self.addCleanup(self.dns.close)
        self.dns.set_zone(ZONE)
        self.sink_ = self.sink(save=True)
        # A server that takes connections and never says a word.
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(16)
        self.addCleanup(self.silent.close)
        dns = {"servers": [f"127.0.0.1:{self.dns.port}"], "timeout_ms": 500, "tries": 2, "cache_entries": 0}
        self.g = self.gateway(routes=[("local.test", [f"127.0.0.1:{self.sink_.port}"]),
                                      ("other.test", [f"127.0.0.1:{self.sink_.port}"])],
                              dns=dns, relay_networks='["127.0.0.2/32"]',
                              listener_extra=getattr(self, "LISTENER", ""),
                              tail_extra=POLICY + getattr(self, "EXTRA", "").format(
                                  sink=self.sink_.port, silent=self.silent.getsockname()[1]) +
                              "[authentication]\nspf_helo = false\n")

    def connect(self, source):
        c = Raw(self.g.port, source=source, timeout=15)
        self.addCleanup(c.close)
        return c

    def groups(self):
        return {e["icid"]: e for e in self.g.journal() if e.get("event") == "sender_group"}

    def group_of(self, source):
        """The last sender_group record of a connection from source."""
        connects = [e["icid"] for e in self.g.journal() if e.get("event") == "connect" and e["peer"] == source]
        self.assertTrue(connects, f"no connection from {source}")
        wait_until(lambda: connects[-1] in self.groups(), timeout=10, what=f"the group of {source}")
        return self.groups()[connects[-1]]

    def ehlo(self, c):
        self.assertEqual(c.reply()[0], 220)
        c.send("EHLO client.test\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 250)
        return lines

    def events(self, kind):
        return [e for e in self.g.journal() if e.get("event") == kind]


class SenderGroups(AccessTest):
    def test_a_client_matched_by_address_costs_no_lookup(self):
        c = self.connect("127.0.0.10")
        self.ehlo(c)
        g = self.group_of("127.0.0.10")
        self.assertEqual((g["group"], g["policy"], g["matched"]), ("ALLOWLIST", "TRUSTED", "network 127.0.0.10/32"))
        self.assertEqual([q for q in self.dns.queries if "10.0.0.127" in q[0]], [])

    def test_blocked_by_address_and_by_dnsbl_score(self):
        for ip, matched in (("127.0.0.66", "network 127.0.0.66/32"), ("127.0.0.7", "dnsbl score 3")):
            c = self.connect(ip)
            self.assertEqual(c.reply(), (554, ["554 5.7.1 Access denied"]))
            self.assertTrue(c.closed())
            g = self.group_of(ip)
            self.assertEqual((g["group"], g["policy"], g["matched"]), ("BLOCKLIST", "BLOCKED", matched))
        self.assertEqual(self.group_of("127.0.0.7")["listed"], "bl.test,bl2.test")
        rejects = [(e["code"], e["what"]) for e in self.events("reject")]
        self.assertEqual(rejects, [(554, "sender group BLOCKLIST")] * 2)
        # The filter of bl2.test leaves 127.0.0.9 out: .8 scores 2, stays in.
        c = self.connect("127.0.0.8")
        self.ehlo(c)
        g = self.group_of("127.0.0.8")
        self.assertEqual((g["group"], g["dnsbl_score"], g["listed"]), ("UNKNOWNLIST", 2, "bl.test"))
        self.assertEqual(g["rdns"], "mx8.plain.test")

    def test_an_allowlisted_client_skips_screening(self):
        # wl.test weighs -5: trusted, and not screened (pipelining is fine).
        c = self.connect("127.0.0.9")
        self.assertEqual(c.reply()[0], 220)
        c.send("EHLO client.test\r\nMAIL FROM:<a@pass.test>\r\nRCPT TO:<b@local.test>\r\nDATA\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 354)
        c.send(message() + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        g = self.group_of("127.0.0.9")
        self.assertEqual((g["group"], g["matched"], g["dnsbl_score"]), ("ALLOWLIST", "dnsbl score -5", -5))
        self.assertEqual(self.events("screen"), [])

    def test_unconfirmed_rdns_is_throttled(self):
        c = self.connect("127.0.0.50")
        lines = self.ehlo(c)
        g = self.group_of("127.0.0.50")
        self.assertEqual((g["group"], g["policy"], g["matched"], g["rdns"]),
                         ("SUSPECTLIST", "THROTTLED", "rdns unconfirmed", ""))
        self.assertIn("250-SIZE 4096", lines)
        # 3 recipients per message, then 452 4.5.3.
        c.send("MAIL FROM:<a@pass.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        for i in range(3):
            c.send(f"RCPT TO:<u{i}@local.test>\r\n")
            self.assertEqual(c.reply()[0], 250)
        c.send("RCPT TO:<u3@local.test>\r\n")
        self.assertEqual(c.reply(), (452, ["452 4.5.3 Error: too many recipients"]))
        # Over the policy's size.
        c.send("DATA\r\n")
        self.assertEqual(c.reply()[0], 354)
        c.send(message(size=6000) + b".\r\n")
        self.assertEqual(c.reply()[0], 552)
        # Two messages a session, then 421 and the end of it.
        for i in range(2):
            c.send("MAIL FROM:<a@pass.test>\r\nRCPT TO:<b@local.test>\r\nDATA\r\n")
            self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
            c.send(message(f"m{i}") + b".\r\n")
            self.assertEqual(c.reply()[0], 250)
        c.send("MAIL FROM:<a@pass.test>\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 421)
        self.assertIn("4.7.0", lines[0])
        self.assertTrue(c.closed())
        # 5 recipients an hour: 3 + 2 used (the refused 4th and the big
        # message's recipients were taken: 3 accepted + 2 accepted = 5).
        c = self.connect("127.0.0.50")
        self.ehlo(c)
        c.send("MAIL FROM:<a@pass.test>\r\nRCPT TO:<b@local.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply(), (452, ["452 4.7.1 Error: too many recipients from your address this hour; "
                                           "try later"]))
        wait_until(lambda: len(saved(self.sink_.save)) >= 2, timeout=20, what="2 messages at the sink")
        # A content rule on the sender group tagged both.
        for eml, *_ in saved(self.sink_.save):
            self.assertIn(b"\r\nX-Sender-Group: suspect\r\n", b"\r\n" + eml)

    def test_tls_required_and_no_auth(self):
        c = self.connect("127.0.0.30")
        lines = self.ehlo(c)
        self.assertTrue([l for l in lines if l[4:] == "STARTTLS"], lines)
        self.assertFalse([l for l in lines if "AUTH" in l], lines)
        g = self.group_of("127.0.0.30")
        self.assertEqual((g["group"], g["policy"], g["matched"]), ("SECURE", "TLSONLY", "rdns mx.secure.test"))
        c.send("MAIL FROM:<a@pass.test>\r\n")
        self.assertEqual(c.reply(), (530, ["530 5.7.0 Must issue a STARTTLS command first"]))
        c.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        self.assertEqual(c.reply()[0], 503)
        # With TLS (smtplib, bound to the same address) the mail goes through.
        s = smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="client.test", timeout=30,
                         source_address=("127.0.0.30", 0))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s.starttls(context=ctx)
        s.ehlo()
        s.sendmail("a@pass.test", ["b@local.test"], message("secure"))
        s.quit()
        got = None
        wait_until(lambda: len(saved(self.sink_.save)) >= 1, timeout=20, what="the message at the sink")
        got = saved(self.sink_.save)[0][0]
        self.assertIn(b"Subject: secure", got)
        self.assertNotIn(b"X-Sender-Group", got)

    def test_a_relay_group_may_relay(self):
        for ip, code in (("127.0.0.20", 250), ("127.0.0.40", 554)):
            c = self.connect(ip)
            self.ehlo(c)
            c.send("MAIL FROM:<a@pass.test>\r\nRCPT TO:<someone@other.test>\r\n")
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.reply()[0], code, ip)
        self.assertEqual(self.group_of("127.0.0.20")["group"], "RELAYLIST")

    def test_an_spf_group_decides_at_mail(self):
        c = self.connect("127.0.0.40")
        self.ehlo(c)
        self.assertEqual(self.group_of("127.0.0.40")["group"], "UNKNOWNLIST")
        c.send("MAIL FROM:<someone@fail.test>\r\n")
        self.assertEqual(c.reply(), (550, ["550 5.7.1 Access denied"]))
        g = self.group_of("127.0.0.40")
        self.assertEqual((g["group"], g["matched"]), ("SPFFAIL", "spf fail"))
        # A passing sender in the same session is accepted again.
        c.send("MAIL FROM:<someone@pass.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(self.group_of("127.0.0.40")["group"], "UNKNOWNLIST")

    def test_trace_shows_the_group(self):
        sock = os.path.join(self.g.dir, "var", "ringway.sock")
        wait_until(lambda: os.path.exists(sock), timeout=10, what="the control socket")

        def trace(ip):
            r = subprocess.run([os.path.join(BUILD, "admin", "ringway"), "--socket", sock, "--json", "trace",
                                "--client-ip", ip, "--helo", "client.test", "--mail-from", "a@pass.test",
                                "--rcpt", "b@local.test"], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)

        t = trace("127.0.0.7")
        g = t["sender_group"]
        self.assertEqual((g["group"], g["policy"], g["matched"], g["dnsbl_score"], g["decision"], g["reply"]),
                         ("BLOCKLIST", "BLOCKED", "dnsbl score 3", 3, "reject", "554 5.7.1 Access denied"))
        self.assertEqual(t["verdict"]["stage"], "sender_group")
        g = trace("127.0.0.50")["sender_group"]
        self.assertEqual((g["group"], g["decision"], g["limits"]["max_recipients_per_message"]),
                         ("SUSPECTLIST", "accept", 3))
        g = trace("127.0.0.20")["sender_group"]
        self.assertEqual(g["action"], "relay")


RECIPIENTS = r"""
[[recipient_access]]
recipient = "postmaster@"
action = "accept"

[[recipient_access]]
recipient = "closed@local.test"
action = "reject"
reply = "550 5.7.1 This mailbox takes no mail"

[[recipient_access]]
recipient = "vip@local.test"
action = "accept"
bypass_throttles = true

[[recipient_access]]
recipient = "*.gone.test"
action = "reject"
reply = "554 5.1.2 Those domains are gone"

[call_ahead]
domains = ["local.test"]
timeout_ms = 700
"""


class RecipientAccess(AccessTest):
    EXTRA = RECIPIENTS + 'hosts = ["127.0.0.1:{sink}"]\n'

    def calls(self):
        return [(e["rcpt"], e["result"], e["cached"]) for e in self.events("call_ahead")]

    def test_table_and_call_ahead(self):
        # 127.0.0.20: RELAYED (gone.test is then a domain it may send to).
        c = self.connect("127.0.0.20")
        self.ehlo(c)
        c.send("MAIL FROM:<a@pass.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        expect = [
            ("bob@local.test", 250, None),
            ("permfail@local.test", 550, "550 5.1.1 <permfail@local.test>: Recipient address rejected: "
                                         "Error: mailbox unavailable (injected)"),
            ("permfail@local.test", 550, None),  # from the cache
            ("closed@local.test", 550, "550 5.7.1 <closed@local.test>: This mailbox takes no mail"),
            ("x@a.gone.test", 554, "554 5.1.2 <x@a.gone.test>: Those domains are gone"),
            ("postmaster@local.test", 250, None),
            ("tempfail@local.test", 250, None),     # 451 from the server: fail-open
        ]
        for rcpt, code, line in expect:
            c.send(f"RCPT TO:<{rcpt}>\r\n")
            got, lines = c.reply()
            self.assertEqual(got, code, (rcpt, lines))
            if line:
                self.assertEqual(lines, [line])
        c.send("DATA\r\n")
        self.assertEqual(c.reply()[0], 354)
        c.send(message("validated") + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(self.calls(), [("bob@local.test", "valid", False), ("permfail@local.test", "invalid", False),
                                        ("permfail@local.test", "invalid", True),
                                        ("tempfail@local.test", "unknown", False)])
        rejects = [(e["code"], e["what"]) for e in self.events("reject")]
        self.assertEqual(rejects, [(550, "call-ahead: permfail@local.test"), (550, "call-ahead: permfail@local.test"),
                                   (550, "recipient access: closed@local.test"),
                                   (554, "recipient access: *.gone.test")])
        # No bounce for the refused ones: the message went to the accepted only.
        wait_until(lambda: saved(self.sink_.save), timeout=20, what="the message at the sink")
        received = [e for e in self.events("received")]
        self.assertEqual(len(received), 1)
        self.assertEqual(received[0]["rcpts"], 3)

    def test_bypass_throttles(self):
        # 127.0.0.50: THROTTLED, 3 recipients a message; vip@ does not count.
        c = self.connect("127.0.0.50")
        self.ehlo(c)
        c.send("MAIL FROM:<a@pass.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        codes = []
        for rcpt in ("a@local.test", "b@local.test", "c@local.test", "vip@local.test", "d@local.test"):
            c.send(f"RCPT TO:<{rcpt}>\r\n")
            codes.append(c.reply()[0])
        self.assertEqual(codes, [250, 250, 250, 250, 452])


class RecipientAccessFailClosed(AccessTest):
    # The silent server first: each call-ahead waits for it, then asks the sink.
    EXTRA = RECIPIENTS + 'hosts = ["127.0.0.1:{silent}", "127.0.0.1:{sink}"]\nfail_open = false\n'

    def test_an_unanswered_call_ahead_is_a_temporary_failure(self):
        c = self.connect("127.0.0.40")
        self.ehlo(c)
        t0 = time.monotonic()
        c.send("MAIL FROM:<a@pass.test>\r\nRCPT TO:<tempfail@local.test>\r\nRCPT TO:<bob@local.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply(), (451, ["451 4.4.3 <tempfail@local.test>: Recipient address verification failed "
                                           "for now; try later"]))
        self.assertEqual(c.reply()[0], 250)
        # Each waited for the silent one's greeting (0.7 s) before the sink answered.
        self.assertGreaterEqual(time.monotonic() - t0, 1.3)
        calls = [(e["rcpt"], e["result"]) for e in self.events("call_ahead")]
        self.assertEqual(calls, [("tempfail@local.test", "unknown"), ("bob@local.test", "valid")])


class OutboundControl(AccessTest):
    # 127.0.0.20 is RELAYLIST (may relay): its mail to other.test is outbound.
    EXTRA = "[outbound]\ndomain_messages_per_hour = 2\n"

    def relay(self, sender, rcpt="someone@other.test"):
        """The MAIL reply (code, line), and the message sent when it was 250."""
        c = self.connect("127.0.0.20")
        self.ehlo(c)
        c.send(f"MAIL FROM:<{sender}>\r\n")
        code, lines = c.reply()
        if code == 250:
            c.send(f"RCPT TO:<{rcpt}>\r\nDATA\r\n")
            self.assertEqual([c.reply()[0], c.reply()[0]], [250, 354])
            c.send(message("outbound") + b".\r\n")
            self.assertEqual(c.reply()[0], 250)
        c.send("QUIT\r\n")
        return code, lines[0]

    def shell(self, *args):
        sock = os.path.join(self.g.dir, "var", "ringway.sock")
        wait_until(lambda: os.path.exists(sock), timeout=10, what="the control socket")
        r = subprocess.run([os.path.join(BUILD, "admin", "ringway"), "--socket", sock, "--json", *args],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def test_a_sender_over_its_limit_is_suspended_until_lifted(self):
        self.assertEqual(self.relay("a@big.test")[0], 250)
        self.assertEqual(self.relay("b@big.test")[0], 250)
        self.assertEqual(self.relay("c@small.test")[0], 250)  # another domain, its own count
        self.assertEqual(self.relay("d@big.test"),
                         (452, "452 4.7.1 Sender domain:big.test has sent too much: 2 messages in the last hour "
                               "(limit 2); try later"))
        code, line = self.relay("e@big.test")
        self.assertEqual(code, 550)
        self.assertTrue(line.startswith("550 5.7.1 Sender domain:big.test is suspended: 2 messages"), line)
        listed = self.shell("outbound", "list")
        self.assertEqual([(e["key"], e["by"]) for e in listed["suspended"]], [("domain:big.test", "limit")])
        self.assertEqual({e["key"]: e["last_hour"] for e in listed["senders"]},
                         {"domain:big.test": 2, "domain:small.test": 1})
        # Mail to our own domains is not outbound: it is not counted or refused.
        c = self.connect("127.0.0.40")
        self.ehlo(c)
        c.send("MAIL FROM:<f@big.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        # A restart keeps the suspension.
        self.g.kill()
        delivery_test.restart(self.g)
        self.assertEqual(self.relay("g@big.test")[0], 550)
        self.assertEqual(self.shell("outbound", "lift", "domain:big.test"), {"lifted": "domain:big.test"})
        self.assertEqual(self.relay("h@big.test")[0], 250)
        # Suspended by hand.
        self.shell("outbound", "suspend", "domain:small.test", "complaints")
        self.assertEqual(self.relay("i@small.test"),
                         (550, "550 5.7.1 Sender domain:small.test is suspended: complaints; ask the administrator"))
        rejects = [e["what"] for e in self.events("reject") if e["what"].startswith("outbound")]
        self.assertEqual(rejects[0], "outbound domain:big.test: 2 messages in the last hour (limit 2)")


class Screening(AccessTest):
    LISTENER = "greet_pause_ms = 1500\n"

    def test_pipelining_before_ehlo_is_enforced(self):
        c = self.connect("127.0.0.41")
        self.assertEqual(c.reply()[0], 220)
        c.send("EHLO client.test\r\nMAIL FROM:<a@pass.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)
        c.send("RCPT TO:<b@local.test>\r\n")
        self.assertEqual(c.reply(), (550, ["550 5.5.1 Error: protocol error (pipelining before EHLO); mail from "
                                           "this client is refused"]))
        screen = [(e["test"], e["action"]) for e in self.events("screen")]
        self.assertEqual(screen, [("pipelining before EHLO", "enforce")])
        self.assertIn((550, "screening: pipelining before EHLO"),
                      [(e["code"], e["what"]) for e in self.events("reject")])

    def test_bare_lf_is_enforced_and_http_is_dropped(self):
        c = self.connect("127.0.0.42")
        self.assertEqual(c.reply()[0], 220)
        c.send("EHLO client.test\n")
        self.assertEqual(c.reply()[0], 250)
        c.send("MAIL FROM:<a@pass.test>\r\nRCPT TO:<b@local.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 550)
        c = self.connect("127.0.0.43")
        self.assertEqual(c.reply()[0], 220)
        c.send("GET / HTTP/1.1\r\nHost: mx.ringway.test\r\n\r\n")
        self.assertEqual(c.reply(), (521, ["521 5.5.1 Error: protocol error (non-SMTP command); closing"]))
        self.assertTrue(c.closed())

    def test_a_client_that_passed_skips_the_pause(self):
        # The first time: the pause is kept, and talking early is refused.
        c = self.connect("127.0.0.40")
        c.send("EHLO early.test\r\n")
        self.assertEqual(c.reply()[0], 554)
        self.assertTrue(c.closed())
        # A clean session: the pause, then the greeting.
        t0 = time.monotonic()
        c = self.connect("127.0.0.40")
        self.ehlo(c)
        self.assertGreaterEqual(time.monotonic() - t0, 1.4)
        c.send("QUIT\r\n")
        self.assertEqual(c.reply()[0], 221)
        self.assertTrue(c.closed())
        # Passed: greeted at once, and the screening tests are off.
        t0 = time.monotonic()
        c = self.connect("127.0.0.40")
        self.assertEqual(c.reply()[0], 220)
        self.assertLess(time.monotonic() - t0, 1.0)
        c.send("EHLO client.test\r\nMAIL FROM:<a@pass.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)
        c.send("RCPT TO:<b@local.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(self.events("screen"), [])


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    import sink_test
    delivery_test.BUILD = BUILD
    sink_test.BUILD = BUILD
    unittest.main(verbosity=2)
