#!/usr/bin/env python3
"""Sender authentication against a real DNS server on loopback.

- The OpenSPF RFC 7208 test suite (every case, from python3-spf's
  rfc7208-tests.yml.gz), each run through `trace` of a running ringwayd
  whose resolver asks zone_dns.ZoneServer serving that scenario's zone.
- SPF in SMTP sessions: the result of each transaction in the mail log,
  and the 550 5.7.23 / 451 4.7.24 replies when policy acts on a fail or a
  DNS failure; relay clients are not checked.

    auth_test.py BUILD_DIR
"""
import base64
import email
import email.policy
import gzip
import json
import os
import re
import smtplib
import socket
import subprocess
import sys
import time
import unittest
import xml.etree.ElementTree as ET

import dkim
import nacl.signing
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import delivery_test  # noqa: E402
from delivery_test import DeliveryTest, saved  # noqa: E402
from ringway_harness import wait_until  # noqa: E402
from zone_dns import ZoneServer  # noqa: E402

BUILD = None
SUITE = "/usr/share/doc/python3-spf/rfc7208-tests.yml.gz"


def control(sock_path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock_path)
    return s, s.makefile("rb")


def request(conn, cmd, args):
    s, f = conn
    s.sendall(json.dumps({"v": 1, "cmd": cmd, "args": args}).encode() + b"\n")
    while True:
        line = f.readline()
        if not line:
            raise AssertionError("the control socket closed")
        r = json.loads(line)
        if "event" not in r:
            return r


class AuthTest(DeliveryTest):
    def setUp(self):
        self.dns = ZoneServer()
        self.addCleanup(self.dns.close)

    def start(self, authentication="", relay_networks='["127.0.0.2/32"]', routes=()):
        dns = {"servers": [f"127.0.0.1:{self.dns.port}"], "timeout_ms": 300, "tries": 1, "cache_entries": 0}
        self.g = self.gateway(routes=list(routes), dns=dns, relay_networks=relay_networks,
                              tail_extra="[authentication]\n" + authentication)
        self.sock = os.path.join(self.g.dir, "var", "ringway.sock")
        # The socket's file appears at bind(), before listen(): connect until
        # it answers.
        conn = []

        def connected():
            try:
                conn.append(control(self.sock))
                return True
            except (FileNotFoundError, ConnectionRefusedError):
                return False

        wait_until(connected, timeout=20, what="the control socket")
        self.conn = conn[0]
        self.addCleanup(self.conn[0].close)

    def trace_spf(self, ip, helo, mail_from):
        r = request(self.conn, "trace", {"client_ip": ip, "helo": helo, "mail_from": mail_from,
                                         "rcpt": "postmaster@local.test"})
        self.assertTrue(r["ok"], r)
        return r["result"]


class OpenSPFSuite(AuthTest):
    def test_rfc7208_suite(self):
        self.assertTrue(os.path.exists(SUITE), f"{SUITE} is missing: install python3-spf")
        with gzip.open(SUITE) as f:
            scenarios = list(yaml.safe_load_all(f))
        self.start('spf_explanation = "DEFAULT"\n')
        failures, ran = [], 0
        for sc in scenarios:
            self.dns.set_zone(sc.get("zonedata"))
            for name, t in sc["tests"].items():
                ran += 1
                expected = t["result"] if isinstance(t["result"], list) else [t["result"]]
                out = self.trace_spf(t["host"], t["helo"], t["mailfrom"])
                spf = out.get("spf", {})
                got = spf.get("result")
                why = f"{name} ({t['spec']}): {t['mailfrom']!r} from {t['host']} helo {t['helo']!r}: "
                if got not in expected:
                    failures.append(why + f"{got}, expected {' or '.join(expected)}; {spf}")
                elif "explanation" in t and got == "fail" and spf.get("explanation") != t["explanation"]:
                    failures.append(why + f"explanation {spf.get('explanation')!r}, expected {t['explanation']!r}")
        self.assertEqual(ran, 203, "the RFC 7208 suite has 203 cases")
        self.assertEqual(failures, [], f"{len(failures)} of {ran} cases failed:\n" + "\n".join(failures))
        print(f"OpenSPF RFC 7208 suite: {ran} of {ran} cases pass", file=sys.stderr)


ZONE = {
    "pass.test": [{"TXT": "v=spf1 ip4:127.0.0.0/8 -all"}],
    "fail.test": [{"TXT": "v=spf1 -all exp=why.fail.test"}],
    "why.fail.test": [{"TXT": "%{i} may not send mail for %{d}"}],
    "soft.test": [{"TXT": "v=spf1 include:other.test ~all"}],
    "other.test": [{"TXT": "v=spf1 a -all"}, {"A": "192.0.2.1"}],
    "slow.test": [{"TXT": "TIMEOUT"}],
    "helo.test": [{"TXT": "v=spf1 a:helo.test -all"}, {"A": "127.0.0.1"}],
}

MSG = b"From: a@pass.test\r\nTo: x@local.test\r\nSubject: spf\r\n\r\nhello\r\n"


class SessionSPF(AuthTest):
    def deliver(self, sender, helo="helo.test"):
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname=helo, timeout=30) as c:
            c.sendmail(sender, ["x@local.test"], MSG)

    def test_results_are_recorded_in_the_mail_log(self):
        sink = self.sink(save=True)
        self.dns.set_zone(ZONE)
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])])
        senders = ("a@pass.test", "b@fail.test", "c@soft.test", "d@slow.test", "e@none.test", "")
        for sender in senders:
            self.deliver(sender)
        wait_until(lambda: len(saved(sink.save)) == 6, timeout=30, what="six messages at the sink")
        got = {r["from"]: (r.get("spf"), r.get("spf_domain")) for r in self.g.journal()
               if r.get("event") == "received"}
        self.assertEqual(got, {
            "a@pass.test": ("pass", "pass.test"),
            "b@fail.test": ("fail", "fail.test"),   # recorded only: spf_fail = "none"
            "c@soft.test": ("softfail", "soft.test"),
            "d@slow.test": ("temperror", "slow.test"),
            "e@none.test": ("none", "none.test"),
            "": ("pass", "helo.test"),              # the null sender: the HELO identity
        })
        # Each delivered message starts with our Received, then our
        # Authentication-Results (RFC 8601) with the same findings; the
        # message as sent follows untouched.
        want = {
            "a@pass.test": 'spf=pass (mechanism "ip4:127.0.0.0/8" matched) smtp.mailfrom=a@pass.test',
            "b@fail.test": 'spf=fail (mechanism "-all" matched) smtp.mailfrom=b@fail.test',
            "c@soft.test": 'spf=softfail (mechanism "~all" matched) smtp.mailfrom=c@soft.test',
            "d@slow.test": "spf=temperror",
            "e@none.test": "spf=none",
            # RFC 7208 2.4: the null sender's MAIL FROM identity is postmaster@HELO.
            "": 'spf=pass (mechanism "a:helo.test" matched) smtp.mailfrom=postmaster@helo.test',
        }
        for eml, sender, _ in saved(sink.save):
            msg = email.message_from_bytes(eml, policy=email.policy.compat32)
            self.assertEqual(msg.keys()[:2], ["Received", "Authentication-Results"], eml)
            ar = msg["Authentication-Results"]
            self.assertTrue(ar.startswith("mx.ringway.test;\r\n\tspf="), ar)
            self.assertIn(want[sender], " ".join(ar.split()), eml)
            self.assertTrue(eml.endswith(MSG), eml)
            self.assertEqual(eml.count(b"Authentication-Results:"), 1, eml)

    def test_policy_refuses_a_fail_and_defers_a_dns_failure(self):
        self.dns.set_zone(ZONE)
        self.start('spf_fail = "reject"\nspf_temperror = "tempfail"\n')
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
            c.ehlo()
            code, text = c.mail("b@fail.test")
            self.assertEqual(code, 550, text)
            self.assertIn(b"5.7.23 SPF validation failed: 127.0.0.1 may not send mail for fail.test", text)
            code, text = c.mail("d@slow.test")
            self.assertEqual(code, 451, text)
            self.assertIn(b"4.7.24", text)
            code, text = c.mail("a@pass.test")
            self.assertEqual(code, 250, text)
        # trace says the same as the session, and that relay clients are not checked.
        spf = self.trace_spf("127.0.0.1", "helo.test", "b@fail.test")["spf"]
        self.assertEqual((spf["result"], spf["decision"]), ("fail", "reject"))
        self.assertIn("5.7.23", spf["reply"])
        spf = self.trace_spf("127.0.0.2", "helo.test", "b@fail.test")["spf"]
        self.assertNotIn("result", spf)
        self.assertIn("not checked", spf["note"])

    def test_the_helo_identity_is_checked_too(self):
        sink = self.sink(save=True)
        zone = dict(ZONE, **{"badhelo.test": [{"TXT": "v=spf1 -all"}]})
        self.dns.set_zone(zone)
        self.start('spf_fail = "reject"\n', routes=[("local.test", [f"127.0.0.1:{sink.port}"])])
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="badhelo.test", timeout=30) as c:
            c.ehlo()
            code, text = c.mail("a@pass.test")  # MAIL FROM would pass; the HELO fails first
            self.assertEqual(code, 550, text)
            self.assertIn(b"5.7.23", text)
            self.assertIn(b"badhelo.test", text)
        self.deliver("a@pass.test")  # HELO helo.test passes
        wait_until(lambda: len(saved(sink.save)) == 1, timeout=30, what="the message at the sink")
        ar = " ".join(email.message_from_bytes(saved(sink.save)[0][0], policy=email.policy.compat32)
                      ["Authentication-Results"].split())
        self.assertIn('spf=pass (mechanism "ip4:127.0.0.0/8" matched) smtp.mailfrom=a@pass.test', ar)
        self.assertIn('spf=pass (mechanism "a:helo.test" matched) smtp.helo=helo.test', ar)
        got = [r.get("spf_helo") for r in self.g.journal() if r.get("event") == "received"]
        self.assertEqual(got, ["pass"])

    def test_relay_clients_are_not_checked(self):
        self.dns.set_zone(ZONE)
        self.start('spf_fail = "reject"\n', relay_networks='["127.0.0.1/32"]')
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
            c.ehlo()
            code, text = c.mail("b@fail.test")
            self.assertEqual(code, 250, text)
        self.assertFalse([q for q in self.dns.queries if q[0] == "fail.test"], self.dns.queries)


FORGED = (b"Authentication-Results: MX.Ringway.Test; spf=pass smtp.mailfrom=ceo@pass.test\r\n"
          b"From: ceo@pass.test\r\n"
          b"Authentication-Results: (a comment) mx.ringway.test;\r\n\tdkim=pass header.d=pass.test\r\n"
          b"Authentication-Results: other.example; spf=fail\r\n"
          b"Subject: forged\r\n\r\nAuthentication-Results: mx.ringway.test; in the body\r\n")


def bdat(port, sender, rcpt, data, pieces=3):
    """Sends data with BDAT in pieces over a raw socket; returns the last reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        f = c.makefile("rb")

        def reply():
            lines = []
            while True:
                line = f.readline()
                lines.append(line)
                if line[3:4] != b"-":
                    return b"".join(lines)

        reply()
        for cmd in (b"EHLO helo.test", b"MAIL FROM:<" + sender + b">", b"RCPT TO:<" + rcpt + b">"):
            c.sendall(cmd + b"\r\n")
            r = reply()
            assert r.startswith(b"250"), r
        step = max(1, len(data) // pieces)
        chunks = [data[i:i + step] for i in range(0, len(data), step)]
        for i, ch in enumerate(chunks):
            last = b" LAST" if i == len(chunks) - 1 else b""
            c.sendall(b"BDAT %d%s\r\n" % (len(ch), last) + ch)
            r = reply()
        c.sendall(b"QUIT\r\n")
        return r


class AddedHeaders(AuthTest):
    """What the gateway adds and leaves out at delivery, through the spool."""

    def test_forged_results_with_our_id_do_not_pass(self):
        sink = self.sink(save=True)
        self.dns.set_zone(ZONE)
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])], relay_networks='["127.0.0.2/32"]')
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
            c.sendmail("a@pass.test", ["x@local.test"], FORGED)
        r = bdat(self.g.port, b"a@pass.test", b"y@local.test", FORGED)
        self.assertTrue(r.startswith(b"250"), r)
        wait_until(lambda: len(saved(sink.save)) == 2, timeout=30, what="two messages at the sink")
        for eml, _, _ in saved(sink.save):
            # Ours (one, on top), the other ADMD's kept, the forged two gone,
            # the body untouched.
            self.assertEqual(eml.count(b"mx.ringway.test;\r\n\tspf=pass"), 1, eml)
            self.assertNotIn(b"ceo@pass.test; ", eml)
            self.assertNotIn(b"dkim=pass", eml)
            self.assertIn(b"Authentication-Results: other.example; spf=fail\r\n", eml)
            self.assertTrue(eml.endswith(b"From: ceo@pass.test\r\nAuthentication-Results: other.example; spf=fail\r\n"
                                         b"Subject: forged\r\n\r\nAuthentication-Results: mx.ringway.test; in the body\r\n"),
                            eml)

    def test_our_own_clients_results_pass(self):
        sink = self.sink(save=True)
        self.dns.set_zone(ZONE)
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])], relay_networks='["127.0.0.1/32"]')
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
            c.sendmail("a@pass.test", ["x@local.test"], FORGED)
        wait_until(lambda: len(saved(sink.save)) == 1, timeout=30, what="the message at the sink")
        eml = saved(sink.save)[0][0]
        # Relayed mail is not checked: no findings of ours, theirs untouched.
        self.assertTrue(eml.startswith(b"Received: "), eml)
        self.assertTrue(eml.endswith(FORGED), eml)

    def test_header_limits_and_messages_without_header(self):
        sink = self.sink(save=True)
        self.dns.set_zone(ZONE)
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])])
        many = b"".join(b"X-Many: %d\r\n" % i for i in range(1001)) + b"\r\nbody\r\n"
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                c.sendmail("a@pass.test", ["x@local.test"], many)
            self.assertEqual(cm.exception.smtp_code, 552)
            self.assertIn(b"5.3.4 Message header too large: too many header fields", cm.exception.smtp_error)
            # No header section at all: the message passes as it is.
            c.sendmail("a@pass.test", ["x@local.test"], b"just a body line\r\n")
        r = bdat(self.g.port, b"a@pass.test", b"x@local.test", many)
        self.assertTrue(r.startswith(b"552 5.3.4"), r)
        wait_until(lambda: len(saved(sink.save)) == 1, timeout=30, what="the message at the sink")
        eml = saved(sink.save)[0][0]
        # Our fields, then an empty line, so the first line stays body.
        head, body = eml.split(b"\r\n\r\n", 1)
        self.assertEqual(body, b"just a body line\r\n", eml)
        self.assertIn(b"\r\nAuthentication-Results: mx.ringway.test;\r\n\tspf=pass", head)
        self.assertTrue(head.endswith(b"\tarc=none"), eml)


def rsa_key(bits):
    """A new RSA key: (PEM private key, base64 SubjectPublicKeyInfo)."""
    pem = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER"], input=pem, check=True,
                         capture_output=True).stdout
    return pem, base64.b64encode(der).decode()


def ed25519_key():
    """A new Ed25519 key as dkimpy wants it: (base64 seed, base64 public key)."""
    sk = nacl.signing.SigningKey.generate()
    return base64.b64encode(bytes(sk)), base64.b64encode(bytes(sk.verify_key)).decode()


BODY = b"Hello,\r\n\r\n  a line  with   spaces \t\r\nlast line\r\n\r\n\r\n"
HEAD = (b"From: Alice <alice@signer.test>\r\nTo: x@local.test\r\nSubject: signed\r\n"
        b"Date: Mon, 07 Dec 2026 06:00:00 +0000\r\nMessage-ID: <1@signer.test>\r\n\r\n")


class SessionDKIM(AuthTest):
    """DKIM verification of arriving mail, against dkimpy's signatures."""

    @classmethod
    def setUpClass(cls):
        cls.rsa_pem, rsa_pub = rsa_key(2048)
        cls.weak_pem, weak_pub = rsa_key(512)
        cls.ed_seed, ed_pub = ed25519_key()
        cls.records = {
            "rsa._domainkey.signer.test": f"v=DKIM1; k=rsa; p={rsa_pub}",
            "ed._domainkey.signer.test": f"v=DKIM1; k=ed25519; p={ed_pub}",
            "weak._domainkey.signer.test": f"v=DKIM1; k=rsa; p={weak_pub}",
            "gone._domainkey.signer.test": "v=DKIM1; k=rsa; p=",
        }

    def dnsfunc(self, name, timeout=5):
        rec = self.records.get(name.decode().rstrip("."))
        return rec.encode() if rec else None

    def sign(self, msg, selector, key, **kw):
        kw.setdefault("include_headers", [b"from", b"to", b"subject", b"date", b"message-id"])
        return dkim.sign(msg, selector.encode(), b"signer.test", key, **kw) + msg

    def test_signatures_are_verified_as_the_message_streams_in(self):
        sink = self.sink(save=True)
        zone = dict(ZONE)
        for name, txt in self.records.items():
            zone[name] = [{"TXT": txt}]
        zone["signer.test"] = [{"TXT": "v=spf1 ip4:127.0.0.0/8 -all"}]
        self.dns.set_zone(zone)
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])])
        msg = HEAD + BODY
        rsa = self.sign(msg, "rsa", self.rsa_pem, canonicalize=(b"relaxed", b"relaxed"))
        both = self.sign(self.sign(msg, "rsa", self.rsa_pem), "ed", self.ed_seed,
                         signature_algorithm=b"ed25519-sha256")
        cases = {
            "relaxed": (rsa, ["pass"]),
            "simple": (self.sign(msg, "rsa", self.rsa_pem, canonicalize=(b"simple", b"simple")), ["pass"]),
            "ed25519": (self.sign(msg, "ed", self.ed_seed, signature_algorithm=b"ed25519-sha256"), ["pass"]),
            "dual": (both, ["pass", "pass"]),
            "body changed": (rsa.replace(b"last line", b"last  lime"), ["fail (body hash did not verify)"]),
            "subject changed": (rsa.replace(b"Subject: signed", b"Subject: signeD"),
                                ["fail (signature did not verify)"]),
            "rsa-sha1": (self.sign(msg, "rsa", self.rsa_pem, signature_algorithm=b"rsa-sha1"),
                         ["fail (rsa-sha1 is not accepted (RFC 8301))"]),
            "no key": (self.sign(msg, "nokey", self.rsa_pem), ["permerror (no key for signature)"]),
            "revoked": (self.sign(msg, "gone", self.rsa_pem), ["permerror (key revoked (empty p=))"]),
            "length": (self.sign(msg, "rsa", self.rsa_pem, length=True) + b"appended\r\n",
                       ["policy (l= leaves part of the body unsigned)"]),
            "unsigned": (msg, ["none (no signature)"]),
        }
        for name, (m, _) in cases.items():
            with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
                c.sendmail("alice@signer.test", ["x@local.test"], m)
        # The weak key's message through BDAT: the same pipeline.
        r = bdat(self.g.port, b"alice@signer.test", b"x@local.test", self.sign(msg, "weak", self.weak_pem))
        self.assertTrue(r.startswith(b"250"), r)
        cases["weak"] = (None, ["fail (RSA key of 512 bits, under 1024 (RFC 8301))"])
        wait_until(lambda: len(saved(sink.save)) == len(cases), timeout=60, what="every message at the sink")
        got = []
        for eml, _, _ in saved(sink.save):
            ar = email.message_from_bytes(eml, policy=email.policy.compat32)["Authentication-Results"]
            got.append(" ".join(ar.split()))
        for (name, (sent, want)), ar in zip(cases.items(), got):
            with self.subTest(case=name):
                results = re.findall(r"dkim=(\w+(?: \((?:[^()]|\([^()]*\))*\))?)", ar)
                self.assertEqual(results, want, ar)
                if want[0] != "none (no signature)":
                    self.assertIn("header.d=signer.test", ar)
        # dkimpy agrees on what it can tell: the signatures that pass here
        # pass there, on the message as delivered (our fields on top).
        for eml, _, _ in saved(sink.save)[:4]:
            self.assertTrue(dkim.verify(eml, dnsfunc=self.dnsfunc), eml[:600])
        journal = [r.get("dkim") for r in self.g.journal() if r.get("event") == "received"]
        self.assertEqual(journal[:4], ["pass:signer.test", "pass:signer.test", "pass:signer.test",
                                       "pass:signer.test pass:signer.test"])
        self.assertIn("none", journal)

    def test_relay_clients_are_not_verified(self):
        sink = self.sink(save=True)
        self.dns.set_zone(ZONE)
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])], relay_networks='["127.0.0.1/32"]')
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
            c.sendmail("alice@signer.test", ["x@local.test"], self.sign(HEAD + BODY, "rsa", self.rsa_pem))
        wait_until(lambda: len(saved(sink.save)) == 1, timeout=30, what="the message at the sink")
        self.assertNotIn(b"Authentication-Results", saved(sink.save)[0][0])
        self.assertFalse([q for q in self.dns.queries if "_domainkey" in q[0]], self.dns.queries)


class Signing(AuthTest):
    """DKIM signing of relayed mail with keys made by `ringway dkim genkey`."""

    def shell(self, *args, ok=True):
        r = subprocess.run([os.path.join(delivery_test.BUILD, "admin", "ringway"), "--socket", self.sock, *args],
                           capture_output=True, text=True, timeout=120)
        if ok:
            self.assertEqual(r.returncode, 0, f"{args}: {r.stderr}")
        return r

    def test_a_committed_key_directory_is_the_one_used(self):
        self.dns.set_zone(ZONE)
        self.start()
        newdir = os.path.join(self.tmpdir(), "keys")
        for cmd, args in (("set", {"key": "authentication.dkim_key_dir", "value": newdir}), ("commit", {})):
            r = request(self.conn, cmd, args)
            self.assertTrue(r["ok"], r)
        self.shell("dkim", "genkey", "signer.test", "ed", "--type", "ed25519")
        self.assertTrue(os.path.exists(os.path.join(newdir, "ed._domainkey.signer.test.pem")))
        r = request(self.conn, "dkim", {"action": "keys"})
        self.assertEqual((r["result"]["dir"], [k["dns_name"] for k in r["result"]["keys"]]),
                         (newdir, ["ed._domainkey.signer.test"]))

    def test_dual_signatures_verify_here_and_in_dkimpy(self):
        sink = self.sink(save=True)
        self.dns.set_zone(ZONE)
        # 127.0.0.1 relays (its mail is signed); 127.0.0.3 is outside (its mail is verified).
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])], relay_networks='["127.0.0.1/32"]')
        out = self.shell("dkim", "genkey", "signer.test", "rsa2026").stdout
        self.assertIn("made rsa key rsa2026._domainkey.signer.test (2048 bits), in force now", out)
        self.assertIn('rsa2026._domainkey.signer.test. IN TXT (\n    "v=DKIM1; k=rsa; p=', out)
        self.shell("dkim", "genkey", "signer.test", "ed2026", "--type", "ed25519")
        keys = json.loads(self.shell("--json", "dkim", "keys").stdout)["keys"]
        self.assertEqual([(k["selector"], k["type"]) for k in keys], [("ed2026", "ed25519"), ("rsa2026", "rsa")])
        again = self.shell("dkim", "genkey", "signer.test", "rsa2026", ok=False)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("exists", again.stderr)
        records = {f'{k["selector"]}._domainkey.signer.test': k["record"] for k in keys}
        zone = dict(ZONE)
        zone.update({name: [{"TXT": txt}] for name, txt in records.items()})
        self.dns.set_zone(zone)

        msg = HEAD.replace(b"Subject: signed", b"Subject: signed\r\nSubject: second") + BODY
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
            c.sendmail("alice@signer.test", ["x@local.test"], msg)
            # Not ours to sign: no key for other.test.
            c.sendmail("bob@other.test", ["x@local.test"], msg.replace(b"alice@signer.test", b"bob@other.test"))
        wait_until(lambda: len(saved(sink.save)) == 2, timeout=30, what="two messages at the sink")
        signed, unsigned = saved(sink.save)[0][0], saved(sink.save)[1][0]
        self.assertNotIn(b"DKIM-Signature", unsigned)
        self.assertEqual(signed.count(b"DKIM-Signature: "), 2, signed)
        self.assertTrue(signed.endswith(msg), signed)
        head = signed.split(b"\r\n\r\n", 1)[0].decode()
        self.assertIn("a=rsa-sha256", head)
        self.assertIn("a=ed25519-sha256", head)
        # Both subjects signed and one more (over-signing): an added one breaks it.
        self.assertIn("subject:subject:subject", " ".join(head.split()).replace(": ", ":"))

        def dnsfunc(name, timeout=5):
            rec = records.get(name.decode().rstrip("."))
            return rec.encode() if rec else None

        d = dkim.DKIM(signed)
        for idx in range(2):
            self.assertTrue(d.verify(idx=idx, dnsfunc=dnsfunc), f"signature {idx}: {signed[:1500]}")
        # An added Subject breaks the over-signed signature.
        self.assertFalse(dkim.DKIM(b"Subject: added\r\n" + signed).verify(idx=0, dnsfunc=dnsfunc))

        # The gateway verifies what it signed, arriving from outside.
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30,
                          source_address=("127.0.0.3", 0)) as c:
            c.sendmail("alice@signer.test", ["x@local.test"], signed)
        wait_until(lambda: len(saved(sink.save)) == 3, timeout=30, what="the message back at the sink")
        ar = email.message_from_bytes(saved(sink.save)[2][0], policy=email.policy.compat32)["Authentication-Results"]
        ar = " ".join(ar.split())
        self.assertEqual(re.findall(r"dkim=(\w+) header.d=signer.test header.s=(\w+)", ar),
                         [("pass", "ed2026"), ("pass", "rsa2026")], ar)
        # reload reads the directory again; the keys stay.
        self.assertIn("2 signing keys in force", self.shell("dkim", "reload").stdout)

    def opendkim(self, conf_lines, message):
        """Runs opendkim's test mode on message; returns its output."""
        d = self.tmpdir()
        conf, path = os.path.join(d, "opendkim.conf"), os.path.join(d, "msg.eml")
        with open(conf, "w") as f:
            f.write("Syslog no\nRequireSafeKeys no\n" + "".join(line + "\n" for line in conf_lines))
        with open(path, "wb") as f:
            f.write(message)
        r = subprocess.run(["opendkim", "-x", conf, "-t", path, "-vvvvv"], capture_output=True, text=True, timeout=60)
        return r.stdout + r.stderr

    def test_opendkim_interop(self):
        sink = self.sink(save=True)
        self.dns.set_zone(ZONE)
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])], relay_networks='["127.0.0.1/32"]')
        self.shell("dkim", "genkey", "signer.test", "ours")
        ours = json.loads(self.shell("--json", "dkim", "keys").stdout)["keys"][0]["record"]
        pem, theirs = rsa_key(2048)
        keyfile = os.path.join(self.tmpdir(), "theirs.pem")
        with open(keyfile, "wb") as f:
            f.write(pem)
        dnsdata = os.path.join(self.tmpdir(), "dns.txt")
        with open(dnsdata, "w") as f:
            f.write(f"ours._domainkey.signer.test {ours}\ntheirs._domainkey.signer.test v=DKIM1; k=rsa; p={theirs}\n")
        zone = dict(ZONE)
        zone["ours._domainkey.signer.test"] = [{"TXT": ours}]
        zone["theirs._domainkey.signer.test"] = [{"TXT": f"v=DKIM1; k=rsa; p={theirs}"}]
        self.dns.set_zone(zone)
        msg = HEAD + BODY
        # Ours, verified by opendkim.
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
            c.sendmail("alice@signer.test", ["x@local.test"], msg)
        wait_until(lambda: len(saved(sink.save)) == 1, timeout=30, what="our signed message")
        out = self.opendkim([f"TestDNSData file:{dnsdata}", "Mode v"], saved(sink.save)[0][0])
        self.assertIn("verification (s=ours, d=signer.test, 2048-bit key) succeeded", out)
        # Theirs, in both canonicalizations and with a folded header, verified
        # here. (opendkim's test mode hands the signer a field's value without
        # the white space after the colon and at the end, so a field spaced
        # otherwise would be signed as something the message does not hold:
        # dkimpy refuses those as well.)
        shapes = [msg, HEAD.replace(b"Subject: signed", b"Subject: signed,\r\n\t folded") + BODY]
        signed = []
        for canon in ("relaxed/relaxed", "simple/simple", "relaxed/simple"):
            for m in shapes:
                out = self.opendkim(["Mode s", "Domain signer.test", "Selector theirs", f"KeyFile {keyfile}",
                                     f"Canonicalization {canon}"], m)
                hit = re.search(r"INSHEADER: idx=0 hname='([^']+)' hvalue='(.*?)'\n", out, re.S)
                self.assertTrue(hit, out)
                field = (hit.group(1) + ": " + hit.group(2)).replace("\n", "\r\n") + "\r\n"
                signed.append(field.encode() + m)
        for m in signed:
            with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30,
                              source_address=("127.0.0.3", 0)) as c:
                c.sendmail("alice@signer.test", ["x@local.test"], m)
        wait_until(lambda: len(saved(sink.save)) == 1 + len(signed), timeout=30, what="their signed messages")
        for eml, _, _ in saved(sink.save)[1:]:
            ar = " ".join(email.message_from_bytes(eml, policy=email.policy.compat32)["Authentication-Results"].split())
            self.assertIn("dkim=pass header.d=signer.test header.s=theirs", ar)


DMARC_ZONE = dict(ZONE, **{
    "dmarc.test": [{"TXT": "v=spf1 ip4:127.0.0.0/8 -all"}, {"A": "192.0.2.10"}],
    "_dmarc.dmarc.test": [{"TXT": "v=DMARC1; p=reject; sp=none; np=reject; rua=mailto:dmarc@dmarc.test"}],
    "mail.dmarc.test": [{"A": "192.0.2.11"}],
    "quarantine.test": [{"TXT": "v=spf1 -all"}],
    "_dmarc.quarantine.test": [{"TXT": "v=DMARC1; p=quarantine"}],
    "strict.test": [{"TXT": "v=spf1 ip4:127.0.0.0/8 -all"}],
    "_dmarc.strict.test": [{"TXT": "v=DMARC1; p=reject; aspf=s"}],
    "bounce.strict.test": [{"TXT": "v=spf1 ip4:127.0.0.0/8 -all"}],
})


def from_msg(addr, subject="dmarc"):
    return (f"From: {addr}\r\nTo: x@local.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@test>\r\n\r\nbody\r\n").encode()


class SessionDMARC(AuthTest):
    """DMARC: policy discovery, alignment, p/sp/np/pct, and the reject action."""

    def send(self, mail_from, msg):
        """The final reply to the message: (code, text)."""
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
            c.ehlo()
            self.assertEqual(c.mail(mail_from)[0], 250)
            self.assertEqual(c.rcpt("x@local.test")[0], 250)
            return c.data(msg)

    def test_policies_and_alignment(self):
        sink = self.sink(save=True)
        pem, pub = rsa_key(1024)
        zone = dict(DMARC_ZONE)
        zone["k._domainkey.dmarc.test"] = [{"TXT": f"v=DKIM1; k=rsa; p={pub}"}]
        self.dns.set_zone(zone)
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])])
        signed = dkim.sign(from_msg("ceo@dmarc.test", "dkim aligned"), b"k", b"dmarc.test", pem,
                           include_headers=[b"from", b"subject"]) + from_msg("ceo@dmarc.test", "dkim aligned")
        cases = [
            # (name, MAIL FROM, message, final code, dmarc= in Authentication-Results or None when refused)
            ("spf aligned", "a@dmarc.test", from_msg("ceo@dmarc.test", "spf aligned"), 250,
             "dmarc=pass (p=reject dis=none) header.from=dmarc.test"),
            ("spf relaxed from a subdomain", "a@dmarc.test", from_msg("ceo@mail.dmarc.test", "relaxed"), 250,
             "dmarc=pass (p=reject dis=none) header.from=mail.dmarc.test"),
            ("dkim aligned", "a@other.test", signed, 250, "dmarc=pass (p=reject dis=none) header.from=dmarc.test"),
            ("neither", "a@pass.test", from_msg("ceo@dmarc.test", "neither"), 550, None),
            ("sp=none for an existing subdomain", "a@pass.test", from_msg("ceo@mail.dmarc.test", "sp"), 250,
             "dmarc=fail (p=reject dis=none) header.from=mail.dmarc.test"),
            ("np=reject for a missing subdomain", "a@pass.test", from_msg("ceo@ghost.dmarc.test", "np"), 550, None),
            ("quarantine", "a@pass.test", from_msg("ceo@quarantine.test", "quarantine"), 250,
             "dmarc=fail (p=quarantine dis=quarantine) header.from=quarantine.test"),
            ("strict spf", "a@bounce.strict.test", from_msg("ceo@strict.test", "strict"), 550, None),
            ("no policy", "a@pass.test", from_msg("ceo@pass.test", "no policy"), 250,
             "dmarc=none (no DMARC record) header.from=pass.test"),
        ]
        delivered = []
        for name, mail_from, msg, code, want in cases:
            with self.subTest(case=name):
                got = self.send(mail_from, msg)
                self.assertEqual(got[0], code, got)
                if code == 550:
                    self.assertIn(b"5.7.1 Rejected by the DMARC policy of", got[1])
                else:
                    delivered.append((name, want))
        wait_until(lambda: len(saved(sink.save)) == len(delivered), timeout=30, what="the accepted messages")
        for (name, want), (eml, _, _) in zip(delivered, saved(sink.save)):
            with self.subTest(case=name):
                ar = " ".join(email.message_from_bytes(eml, policy=email.policy.compat32)
                              ["Authentication-Results"].split())
                self.assertIn(want, ar)
        log = [(r.get("dmarc"), r.get("dmarc_domain"), r.get("dmarc_disposition")) for r in self.g.journal()
               if r.get("event") == "received"]
        self.assertIn(("fail", "quarantine.test", "quarantine"), log)
        rejects = [r for r in self.g.journal() if r.get("event") == "reject" and "dmarc" in json.dumps(r)]
        self.assertEqual(len(rejects), 3, rejects)

    def test_a_content_rule_acts_on_the_dmarc_disposition(self):
        sink = self.sink(save=True)
        self.dns.set_zone(dict(DMARC_ZONE))
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])],
                   authentication='\n[[content_rule]]\nname = "dmarc-quarantine"\n'
                                  'condition = \'dmarc-disposition == "quarantine"\'\nactions = ["quarantine spam"]\n')
        held = self.send("a@pass.test", from_msg("ceo@quarantine.test", "to be held"))
        self.assertEqual(held[0], 250, held)
        passed = self.send("a@pass.test", from_msg("ceo@pass.test", "no policy"))
        self.assertEqual(passed[0], 250, passed)
        r = request(self.conn, "quarantine", {"action": "list", "target": "spam"})
        self.assertTrue(r["ok"], r)
        self.assertEqual([(m["quarantine"], m["rule"]) for m in r["result"]["messages"]],
                         [("spam", "dmarc-quarantine")])
        wait_until(lambda: len(saved(sink.save)) == 1, timeout=30, what="the message without a policy")
        self.assertIn(b"Subject: no policy", saved(sink.save)[0][0])
        log = [(e.get("dmarc_disposition"), e.get("quarantine")) for e in self.g.journal()
               if e.get("event") == "received"]
        self.assertEqual(sorted(log), [("none", ""), ("quarantine", "spam")])

    def test_trace_shows_dkim_and_dmarc(self):
        pem, pub = rsa_key(1024)
        zone = dict(DMARC_ZONE)
        zone["k._domainkey.dmarc.test"] = [{"TXT": f"v=DKIM1; k=rsa; p={pub}"}]
        self.dns.set_zone(zone)
        self.start()
        msg = from_msg("ceo@dmarc.test", "traced")
        signed = dkim.sign(msg, b"k", b"dmarc.test", pem, include_headers=[b"from", b"subject"]) + msg

        def trace(mail_from, message):
            r = request(self.conn, "trace", {"client_ip": "127.0.0.1", "helo": "helo.test", "mail_from": mail_from,
                                             "rcpt": "x@local.test", "message": message.decode()})
            self.assertTrue(r["ok"], r)
            return r["result"]

        t = trace("a@other.test", signed)
        self.assertEqual([(d["result"], d["d"], d["s"], d["a"]) for d in t["dkim"]],
                         [("pass", "dmarc.test", "k", "rsa-sha256")])
        self.assertEqual((t["dmarc"]["result"], t["dmarc"]["policy_domain"], t["dmarc"]["dkim_aligned"]),
                         ("pass", "dmarc.test", True))
        self.assertEqual(t["verdict"]["decision"], "accept")
        t = trace("a@pass.test", msg)
        self.assertEqual(t["dkim"], [])
        d = t["dmarc"]
        self.assertEqual((d["result"], d["policy"], d["disposition"], d["decision"]), ("fail", "reject", "reject", "reject"))
        self.assertEqual((t["verdict"]["stage"], t["verdict"]["reply"][:9]), ("dmarc", "550 5.7.1"))
        # The shell prints the same.
        path = os.path.join(self.g.dir, "traced.eml")
        with open(path, "wb") as f:
            f.write(signed)
        out = subprocess.run([os.path.join(delivery_test.BUILD, "admin", "ringway"), "--socket", self.sock, "trace",
                              "--client-ip", "127.0.0.1", "--helo", "helo.test", "--mail-from", "a@other.test",
                              "--rcpt", "x@local.test", "--message", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("dkim        pass    d=dmarc.test s=k rsa-sha256", out.stdout)
        self.assertIn("pass for dmarc.test (policy of dmarc.test: none, disposition none)", out.stdout)

    def test_a_listener_may_only_record(self):
        sink = self.sink(save=True)
        self.dns.set_zone(DMARC_ZONE)
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])])
        for cmd, args in (("set", {"key": "listener[0].dmarc_reject", "value": "false"}), ("commit", {})):
            r = request(self.conn, cmd, args)
            self.assertTrue(r["ok"], r)
        self.assertEqual(self.send("a@pass.test", from_msg("ceo@dmarc.test", "recorded"))[0], 250)
        wait_until(lambda: len(saved(sink.save)) == 1, timeout=30, what="the message at the sink")
        ar = " ".join(email.message_from_bytes(saved(sink.save)[0][0], policy=email.policy.compat32)
                      ["Authentication-Results"].split())
        self.assertIn("dmarc=fail (p=reject dis=reject) header.from=dmarc.test", ar)


class SessionARC(AuthTest):
    """ARC chains made by dkimpy validated here, ours validated by dkimpy, and trusted sealers."""

    def test_chains_seals_and_trusted_sealers(self):
        sink = self.sink(save=True)
        list_pem, list_pub = rsa_key(1024)
        fwd_pem, fwd_pub = rsa_key(1024)  # RFC 8617 signs with rsa-sha256 only
        zone = dict(DMARC_ZONE)
        zone["l._domainkey.lists.test"] = [{"TXT": f"v=DKIM1; k=rsa; p={list_pub}"}]
        zone["f._domainkey.fwd.test"] = [{"TXT": f"v=DKIM1; k=rsa; p={fwd_pub}"}]
        zone["lists.test"] = [{"TXT": "v=spf1 ip4:127.0.0.0/8 -all"}]
        self.dns.set_zone(zone)
        self.start('arc_trusted_sealers = ["fwd.test"]\narc_seal_domain = "mx.test"\n',
                   routes=[("local.test", [f"127.0.0.1:{sink.port}"])])
        gen = subprocess.run([os.path.join(delivery_test.BUILD, "admin", "ringway"), "--socket", self.sock, "--json",
                              "dkim", "genkey", "mx.test", "arc"], capture_output=True, text=True, timeout=120)
        self.assertEqual(gen.returncode, 0, gen.stderr)
        ours = json.loads(gen.stdout)["record"]
        zone["arc._domainkey.mx.test"] = [{"TXT": ours}]
        self.dns.set_zone(zone)

        def hop(msg, sel, dom, key, srv):
            # dkimpy takes cv= from the arc= result in its own A-R (first).
            arc = "arc=pass; " if b"ARC-Seal:" in msg else ""
            ar = f"Authentication-Results: {srv}; {arc}spf=pass smtp.mailfrom=x@{srv}\r\n".encode()
            msg = ar + msg
            return b"".join(dkim.arc_sign(msg, sel, dom, key, srv.encode())) + msg

        # A list post from dmarc.test (p=reject), resent by lists.test, then
        # fwd.test: DMARC fails (nothing aligned), the chain passes, and
        # fwd.test is trusted.
        post = from_msg("ceo@dmarc.test", "list post")
        one = hop(post, b"l", b"lists.test", list_pem, "lists.test")
        two = hop(one, b"f", b"fwd.test", fwd_pem, "fwd.test")
        # Sealed only by lists.test (not trusted): DMARC's reject stands.
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="helo.test", timeout=30) as c:
            c.sendmail("bounce@lists.test", ["x@local.test"], two)
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                c.sendmail("bounce@lists.test", ["x@local.test"], one)
            self.assertEqual(cm.exception.smtp_code, 550)
            # A hop changed the body after sealing: the chain fails (From: a
            # domain without DMARC policy, so that the message is kept).
            plain = hop(hop(from_msg("ceo@pass.test", "broken"), b"l", b"lists.test", list_pem, "lists.test"),
                        b"f", b"fwd.test", fwd_pem, "fwd.test")
            c.sendmail("bounce@lists.test", ["x@local.test"], plain.replace(b"body\r\n", b"b0dy\r\n"))
        wait_until(lambda: len(saved(sink.save)) == 2, timeout=30, what="two messages at the sink")
        good, broken = saved(sink.save)[0][0], saved(sink.save)[1][0]

        def ar_of(eml):
            return " ".join(email.message_from_bytes(eml, policy=email.policy.compat32)["Authentication-Results"].split())

        self.assertIn("arc=pass (2 instances, sealed by fwd.test)", ar_of(good))
        self.assertIn("dmarc=fail (p=reject dis=none; override: arc, sealed by fwd.test) header.from=dmarc.test",
                      ar_of(good))
        self.assertIn("arc=fail (ARC-Message-Signature of instance 2: body hash did not verify)", ar_of(broken))
        # We sealed what we passed on, as instance 3, and dkimpy validates
        # the whole chain; the broken one we did not seal.
        records = {"l._domainkey.lists.test": f"v=DKIM1; k=rsa; p={list_pub}",
                   "f._domainkey.fwd.test": f"v=DKIM1; k=rsa; p={fwd_pub}",
                   "arc._domainkey.mx.test": ours}

        def dnsfunc(name, timeout=5):
            rec = records.get(name.decode().rstrip("."))
            return rec.encode() if rec else None

        self.assertIn(b"ARC-Seal: i=3; a=rsa-sha256; cv=pass; d=mx.test; s=arc;", good)
        cv, results = dkim.arc_verify(good, dnsfunc=dnsfunc)[:2]
        self.assertEqual(cv, b"pass", results)
        self.assertEqual([r["instance"] for r in results], [3, 2, 1])
        self.assertNotIn(b"ARC-Seal: i=3", broken)
        journal = [r.get("arc") for r in self.g.journal() if r.get("event") == "received"]
        self.assertEqual(journal, ["pass", "fail"])


REPORT_ZONE = dict(DMARC_ZONE, **{
    "rep.test": [{"TXT": "v=spf1 ip4:127.0.0.0/8 -all"}],
    "_dmarc.rep.test": [{"TXT": "v=DMARC1; p=none; adkim=s; rua=mailto:agg@rep.test, "
                                "mailto:ext@collector.test!50k, mailto:nope@unconfirmed.test, https://x.test/"}],
    # collector.test takes rep.test's reports (RFC 7489 7.1); unconfirmed.test does not.
    "rep.test._report._dmarc.collector.test": [{"TXT": "v=DMARC1"}],
    "unconfirmed.test": [{"TXT": "v=spf1 -all"}],
})


class DMARCReports(AuthTest):
    """Aggregate reports: recorded per domain and day, kept across a restart, sent as RFC 7489 XML in gzip."""

    def send(self, mail_from, msg):
        return SessionDMARC.send(self, mail_from, msg)[0]

    def reconnect(self):
        self.conn = control(self.sock)
        self.addCleanup(self.conn[0].close)

    def test_reports_are_recorded_kept_and_sent(self):
        sink = self.sink(save=True)
        self.dns.set_zone(REPORT_ZONE)
        to_sink = [f"127.0.0.1:{sink.port}"]
        self.start(routes=[(d, to_sink) for d in ("local.test", "rep.test", "collector.test", "unconfirmed.test",
                                                  "dmarc.test")])
        self.assertEqual(self.send("a@rep.test", from_msg("ceo@rep.test", "aligned one")), 250)
        self.assertEqual(self.send("b@rep.test", from_msg("ceo@rep.test", "aligned two")), 250)
        self.assertEqual(self.send("c@pass.test", from_msg("ceo@rep.test", "not aligned")), 250)  # p=none
        self.assertEqual(self.send("c@pass.test", from_msg("ceo@dmarc.test", "refused")), 550)  # p=reject
        self.assertEqual(self.send("c@pass.test", from_msg("ceo@pass.test", "no policy")), 250)  # nothing to record
        # Kept across a restart: recorded on the session's core, saved when
        # ringwayd stops, read at start.
        self.assertEqual(self.g.stop(), 0)
        delivery_test.restart(self.g)
        self.reconnect()
        r = request(self.conn, "dmarc", {"action": "show"})
        self.assertTrue(r["ok"], r)
        days = {d["domain"]: d for d in r["result"]["days"]}
        self.assertEqual(set(days), {"rep.test", "dmarc.test"})
        today = days["rep.test"]["day"]
        self.assertEqual((days["rep.test"]["messages"], days["rep.test"]["rows"]), (3, 2))
        self.assertEqual((days["dmarc.test"]["messages"], days["dmarc.test"]["rows"]), (1, 1))
        self.assertEqual(days["rep.test"]["policy"]["adkim"], "s")

        # The XML preview is RFC 7489 appendix C.
        r = request(self.conn, "dmarc", {"action": "xml", "day": "today", "domain": "rep.test"})
        self.assertTrue(r["ok"], r)
        self.assertEqual(ET.fromstring(r["result"]["xml"]).findtext("policy_published/domain"), "rep.test")
        r = request(self.conn, "dmarc", {"action": "xml", "day": "today", "domain": "none.test"})
        self.assertFalse(r["ok"])
        r = request(self.conn, "dmarc", {"action": "show", "day": "someday"})
        self.assertFalse(r["ok"])
        self.assertIn("YYYY-MM-DD", r["error"])

        # The shell prints the table.
        out = subprocess.run([os.path.join(delivery_test.BUILD, "admin", "ringway"), "--socket", self.sock, "dmarc",
                              "show", "today"], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"rep\.test\s+3\s+2\s+mailto:agg@rep\.test")
        self.assertRegex(out.stdout, r"127\.0\.0\.1\s+2\s+none\s+dkim=fail spf=pass from=rep\.test")

        # Send today's so far.
        r = request(self.conn, "dmarc", {"action": "send", "day": "today"})
        self.assertTrue(r["ok"], r)
        reports = {x["domain"]: x for x in r["result"]["reports"]}
        status = {d["uri"]: d["status"] for d in reports["rep.test"]["destinations"]}
        self.assertEqual(status, {"mailto:agg@rep.test": "queued", "mailto:ext@collector.test": "queued",
                                  "mailto:nope@unconfirmed.test": "unconfirmed"})  # (https: is not for us)
        self.assertEqual({d["uri"]: d["status"] for d in reports["dmarc.test"]["destinations"]},
                         {"mailto:dmarc@dmarc.test": "queued"})
        r = request(self.conn, "dmarc", {"action": "show"})
        self.assertEqual(r["result"]["days"], [])  # sent: taken out

        # At the sink: rep.test's report to both destinations that take it,
        # dmarc.test's to its own; nothing to unconfirmed.test.
        wait_until(lambda: sum(len(x[2]) for x in saved(sink.save) if x[1] == "postmaster@mx.ringway.test") == 3,
                   timeout=30, what="the reports at the sink")
        got = [x for x in saved(sink.save) if x[1] == "postmaster@mx.ringway.test"]
        rcpts = sorted(r for x in got for r in x[2])
        self.assertEqual(rcpts, ["agg@rep.test", "dmarc@dmarc.test", "ext@collector.test"])
        by_domain = {}
        for eml, _, _ in got:
            m = email.message_from_bytes(eml, policy=email.policy.default)
            subject = " ".join(m["Subject"].split())
            domain = re.match(r"Report Domain: (\S+) Submitter: mx\.ringway\.test Report-ID: <(\S+)>$", subject)
            self.assertTrue(domain, subject)
            self.assertEqual(domain.group(2), reports[domain.group(1)]["report_id"])
            parts = [p for p in m.walk() if p.get_content_type() == "application/gzip"]
            self.assertEqual(len(parts), 1)
            name = parts[0].get_filename()
            self.assertRegex(name, rf"^mx\.ringway\.test!{re.escape(domain.group(1))}!\d+!\d+\.xml\.gz$")
            by_domain[domain.group(1)] = ET.fromstring(gzip.decompress(parts[0].get_content()))
        x = by_domain["rep.test"]
        begin = int(x.findtext("report_metadata/date_range/begin"))
        self.assertEqual(time.strftime("%Y-%m-%d", time.gmtime(begin)), today)
        self.assertEqual(begin % 86400, 0)
        self.assertEqual(x.findtext("report_metadata/org_name"), "mx.ringway.test")
        self.assertEqual(x.findtext("report_metadata/email"), "postmaster@mx.ringway.test")
        self.assertEqual([x.findtext(f"policy_published/{k}") for k in ("domain", "adkim", "aspf", "p", "pct")],
                         ["rep.test", "s", "r", "none", "100"])
        rows = {}
        for rec in x.findall("record"):
            key = (rec.findtext("row/source_ip"), rec.findtext("row/policy_evaluated/spf"),
                   rec.findtext("auth_results/spf/domain"), rec.findtext("auth_results/spf/result"))
            rows[key] = int(rec.findtext("row/count"))
            self.assertEqual(rec.findtext("row/policy_evaluated/disposition"), "none")
            self.assertEqual(rec.findtext("row/policy_evaluated/dkim"), "fail")
            self.assertEqual(rec.findtext("identifiers/header_from"), "rep.test")
            self.assertEqual(rec.findtext("auth_results/spf/scope"), "mfrom")
        self.assertEqual(rows, {("127.0.0.1", "pass", "rep.test", "pass"): 2,
                                ("127.0.0.1", "fail", "pass.test", "pass"): 1})
        d = by_domain["dmarc.test"].find("record")
        self.assertEqual((d.findtext("row/count"), d.findtext("row/policy_evaluated/disposition")), ("1", "reject"))
        events = [e for e in self.g.journal() if e.get("event") == "dmarc_report"]
        self.assertEqual(sorted(e["domain"] for e in events), ["dmarc.test", "rep.test"])

    def test_an_ended_day_goes_out_by_itself(self):
        sink = self.sink(save=True)
        self.dns.set_zone(REPORT_ZONE)
        self.start(routes=[("rep.test", [f"127.0.0.1:{sink.port}"])])
        self.assertEqual(self.g.stop(), 0)
        # Yesterday's data, as a stopped ringwayd left it: at start the day
        # has ended, and its report is sent without being asked.
        yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
        row = {"source_ip": "192.0.2.9", "count": 7, "disposition": "none", "dkim_aligned": False,
               "spf_aligned": True, "header_from": "rep.test", "dkim": [],
               "spf": {"domain": "rep.test", "scope": "mfrom", "result": "pass"}}
        data = {"v": 1, "days": [{"day": yesterday, "domain": "rep.test", "first": 1, "last": 2,
                                  "policy": {"p": "none", "adkim": "r", "aspf": "r", "pct": 100, "fo": "0",
                                             "rua": ["mailto:agg@rep.test"]}, "records": [row]}]}
        with open(os.path.join(self.g.dir, "dmarc-reports.json"), "w") as f:
            json.dump(data, f)
        delivery_test.restart(self.g)
        wait_until(lambda: len(saved(sink.save)) == 1, timeout=30, what="yesterday's report at the sink")
        m = email.message_from_bytes(saved(sink.save)[0][0], policy=email.policy.default)
        part = [p for p in m.walk() if p.get_content_type() == "application/gzip"][0]
        x = ET.fromstring(gzip.decompress(part.get_content()))
        self.assertEqual(time.strftime("%Y-%m-%d", time.gmtime(int(x.findtext("report_metadata/date_range/begin")))),
                         yesterday)
        self.assertEqual((x.findtext("record/row/source_ip"), x.findtext("record/row/count")), ("192.0.2.9", "7"))
        # Sent once: the saved data no longer has the day.
        def saved_days():
            with open(os.path.join(self.g.dir, "dmarc-reports.json")) as f:
                return json.load(f)["days"]
        wait_until(lambda: saved_days() == [], timeout=10, what="the sent day out of the saved data")

    def test_off_records_nothing(self):
        self.dns.set_zone(REPORT_ZONE)
        self.start("dmarc_reports = false\n", routes=[("local.test", ["127.0.0.1:9"])])
        self.assertEqual(self.send("a@rep.test", from_msg("ceo@rep.test", "unrecorded")), 250)
        r = request(self.conn, "dmarc", {"action": "show"})
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["result"]["days"], [])
        self.assertFalse(r["result"]["enabled"])


class LoadSigning(AuthTest):
    """ringway-load --dkim-key signs what it sends, and the signatures verify here."""

    def test_every_message_of_the_load_verifies(self):
        sink = self.sink()
        pem, pub = rsa_key(2048)
        key = os.path.join(self.tmpdir(), "load.pem")
        with open(key, "wb") as f:
            f.write(pem)
        zone = dict(REPORT_ZONE)
        zone["load._domainkey.rep.test"] = [{"TXT": f"v=DKIM1; k=rsa; p={pub}"}]
        self.dns.set_zone(zone)
        self.start(routes=[("local.test", [f"127.0.0.1:{sink.port}"])])  # 127.0.0.1 may not relay: checked
        load, err, rc = delivery_test.load("-s", f"127.0.0.1:{self.g.port}", "-n", "20", "-c", "2",
                                           "--from", "load{c}@rep.test", "--to", "rcpt{n}@local.test",
                                           "--ehlo", "rep.test", "--dkim-key", key)
        self.assertEqual(rc, 0, err)
        self.assertEqual(load["accepted"], 20, load)
        got = [(r.get("dkim"), r.get("dmarc")) for r in self.g.journal() if r.get("event") == "received"]
        self.assertEqual(got, [("pass:rep.test", "pass")] * 20)


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    import delivery_test
    import sink_test
    delivery_test.BUILD = BUILD
    sink_test.BUILD = BUILD
    unittest.main(verbosity=2)
