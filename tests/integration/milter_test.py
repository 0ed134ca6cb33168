#!/usr/bin/env python3
"""Milters behind a real ringwayd: a milter written with pymilter
(test_milter.py, on Debian's libmilter) and Debian's opendkim in milter
mode, signing; mail from smtplib and raw clients, delivery to
ringway-sink.

    milter_test.py BUILD_DIR [unittest args]

Asserts refusals at MAIL, RCPT and the end of the message with the
milter's own replies, tempfail and discard, the header the milter adds
(carrying the MD5 of the body it saw: every byte streamed through),
a changed and a deleted field, quarantine, a new sender, recipients
added and deleted and a replaced body (the message delivered under its
new envelope, its header as sent), a DKIM signature added by
opendkim that dkimpy verifies, and a milter that is down failing open or
closed.
"""
import email
import email.policy
import hashlib
import json
import os
import smtplib
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import delivery_test  # noqa: E402
from delivery_test import DeliveryTest, saved  # noqa: E402
from ringway_harness import wait_until  # noqa: E402

BUILD = None
HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def message(subject, body="Hello.\r\nA second line.\r\n", extra=""):
    return (f"From: alice@sender.test\r\nTo: bob@local.test\r\nSubject: {subject}\r\n"
            f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@sender.test>\r\n{extra}\r\n{body}").encode()


class MilterTest(DeliveryTest):
    MILTERS = ""  # [[milter]] tables; {port} is the test milter's port
    ON_FAILURE = "accept"
    LISTENER_EXTRA = ""

    def start_milter(self):
        self.mport = free_port()
        p = subprocess.Popen([PYTHON, os.path.join(HERE, "test_milter.py"), str(self.mport)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: (p.kill(), p.wait(), p.stdout.close()))
        wait_until(lambda: listening(self.mport), timeout=20, what="the test milter")

    def setUp(self):
        self.start_milter()
        self.sink_ = self.sink(save=True)
        tail = self.MILTERS.format(port=self.mport, on_failure=self.ON_FAILURE)
        self.g = self.gateway(routes=[("local.test", [f"127.0.0.1:{self.sink_.port}"]),
                                      ("sender.test", [f"127.0.0.1:{self.sink_.port}"])],
                              relay_networks='["127.0.0.2/32"]', tail_extra=tail,
                              listener_extra=self.LISTENER_EXTRA)
        self.sock = os.path.join(self.g.dir, "var", "ringway.sock")

    def send(self, msg, sender="alice@sender.test", rcpts=("bob@local.test",), source="127.0.0.1"):
        """(MAIL code, [RCPT codes], DATA (code, text) or None)."""
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="client.test", timeout=60,
                          source_address=(source, 0)) as c:
            c.ehlo()
            code, _ = c.mail(sender)
            if code != 250:
                return code, [], None
            rc = [c.rcpt(r)[0] for r in rcpts]
            if 250 not in rc:
                return code, rc, None
            d = c.data(msg)
            return code, rc, (d[0], d[1].decode())

    def events(self, kind):
        return [e for e in self.g.journal() if e.get("event") == kind]

    def delivered(self, n):
        wait_until(lambda: len(saved(self.sink_.save)) >= n, timeout=30, what=f"{n} messages at the sink")
        return saved(self.sink_.save)


class TestMilterSteps(MilterTest):
    MILTERS = '[[milter]]\nname = "test"\naddress = "127.0.0.1:{port}"\non_failure = "{on_failure}"\n'

    def test_replies_at_each_step(self):
        self.assertEqual(self.send(message("x"), sender="blocked-sender@sender.test")[0], 550)
        rejects = [(e["code"], e["what"]) for e in self.events("reject")]
        self.assertEqual(rejects, [(550, "milter test: MAIL")])
        mail, rc, data = self.send(message("two"), rcpts=("nobody@local.test", "bob@local.test"))
        self.assertEqual((mail, rc, data[0]), (250, [550, 250], 250))
        self.assertEqual(self.send(message("milter-reject"))[2],
                         (550, "5.7.1 Content refused by the test milter"))
        self.assertEqual(self.send(message("milter-tempfail"))[2][0], 451)
        self.assertEqual(self.send(message("milter-discard"))[2][0], 250)  # accepted, dropped
        got = self.delivered(1)
        time.sleep(1)
        self.assertEqual(len(saved(self.sink_.save)), 1)  # only "two"
        m = email.message_from_bytes(got[0][0], policy=email.policy.default)
        self.assertEqual(m["Subject"], "two")

    def test_added_header_proves_the_body_streamed_through(self):
        body = "".join(f"line {i:06d} of a long body, to cross the 64 KiB chunks\r\n" for i in range(30000))
        sent = message("long", body)
        self.assertEqual(self.send(sent)[2][0], 250)
        got = self.delivered(1)[0][0]
        m = email.message_from_bytes(got, policy=email.policy.default)
        expect = hashlib.md5(body.encode()).hexdigest()
        self.assertEqual(m["X-Milter"], f"fields=5 body={len(body)} md5={expect}")
        self.assertTrue(got.endswith(sent.split(b"\r\n\r\n", 1)[1]))
        milter = [(e["milter"], e["result"], e["added"]) for e in self.events("milter")]
        self.assertEqual(milter, [("test", "accept", 1)])

    def test_changed_and_deleted_fields_and_quarantine(self):
        self.assertEqual(self.send(message("milter-change", extra="X-Remove-Me: yes\r\nX-Keep: yes\r\n"))[2][0], 250)
        got = self.delivered(1)[0][0]
        m = email.message_from_bytes(got, policy=email.policy.default)
        self.assertEqual(m.get_all("Subject"), ["changed by the test milter"])
        self.assertIsNone(m["X-Remove-Me"])
        self.assertEqual(m["X-Keep"], "yes")
        self.assertEqual(self.send(message("milter-quarantine"))[2][0], 250)
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")
        r = subprocess.run([os.path.join(BUILD, "admin", "ringway"), "--socket", self.sock, "--json",
                            "quarantine", "list"], capture_output=True, text=True, timeout=60)
        held = json.loads(r.stdout)["messages"]
        self.assertEqual([(h["quarantine"], h["rule"]) for h in held], [("policy", "milter test")])


class MilterChanges(MilterTest):
    MILTERS = '[[milter]]\nname = "test"\naddress = "127.0.0.1:{port}"\non_failure = "{on_failure}"\n'

    # A small size limit, so that a replaced body can exceed it.
    LISTENER_EXTRA = 'max_message_size = "1M"'

    def test_envelope_changes_deliver_under_the_new_envelope(self):
        sent = message("milter-envelope")
        _, _, data = self.send(sent, rcpts=("bob@local.test", "carol@local.test"))
        self.assertEqual(data[0], 250, (data, self.g.log_text()[-3000:]))
        got = self.delivered(1)
        time.sleep(0.5)
        self.assertEqual(len(saved(self.sink_.save)), 1)
        eml, sender, rcpts = got[0]
        self.assertEqual((sender, sorted(rcpts)), ("bounces@milter.test", ["added@local.test", "carol@local.test"]))
        self.assertTrue(eml.endswith(sent.split(b"\r\n\r\n", 1)[1]))
        m = [(e["rcpts_added"], e["rcpts_deleted"], e["from_changed"], e["body_replaced"]) for e in self.events("milter")]
        self.assertEqual(m, [(1, 1, True, False)])
        c = [(e["action"], e["rule"], e["to"]) for e in self.events("content")]
        self.assertEqual(c, [("milter", "milter test", "carol@local.test,added@local.test")])

    def test_a_replaced_body_follows_the_original_header(self):
        sent = message("milter-body", extra="X-Keep: yes\r\n")
        self.assertEqual(self.send(sent)[2][0], 250)
        eml, sender, rcpts = self.delivered(1)[0]
        self.assertEqual((sender, rcpts), ("alice@sender.test", ["bob@local.test"]))
        head, body = eml.split(b"\r\n\r\n", 1)
        expect = b"".join(f"Replaced line {i} by the test milter.\r\n".encode() * 2000 for i in range(3))
        self.assertEqual(body, expect)
        self.assertTrue(head.endswith(sent.split(b"\r\n\r\n", 1)[0]), head)
        self.assertIn(b"X-Keep: yes", head)
        # A message that is all header (no empty line): the new body still
        # comes after an empty line, never glued to the last field.
        headless = b"From: alice@sender.test\r\nTo: bob@local.test\r\nSubject: milter-body\r\n"
        self.assertEqual(self.send(headless)[2][0], 250)
        eml = self.delivered(2)[1][0]
        head, body = eml.split(b"\r\n\r\n", 1)
        self.assertEqual(body, expect)
        self.assertTrue(head.endswith(headless.rstrip(b"\r\n")), head)
        # Past the size limit: the milter fails, and fails open here
        # (the message goes as it came).
        sent = message("milter-big-body")
        self.assertEqual(self.send(sent)[2][0], 250)
        eml = self.delivered(3)[2][0]
        self.assertTrue(eml.endswith(sent.split(b"\r\n\r\n", 1)[1]))
        failed = [e for e in self.events("milter") if e["result"] == "failed"]
        self.assertEqual(len(failed), 1)
        self.assertIn("replaced the body with more than 1048576 bytes", failed[0]["why"])


class MilterDown(MilterTest):
    MILTERS = '[[milter]]\nname = "gone"\naddress = "127.0.0.1:9"\non_failure = "{on_failure}"\n'

    def test_fail_open(self):
        self.assertEqual(self.send(message("hello"))[2][0], 250)
        self.delivered(1)
        failed = [(e["milter"], e["result"]) for e in self.events("milter")]
        self.assertEqual(failed, [("gone", "failed")])


class MilterDownClosed(MilterTest):
    MILTERS = MilterDown.MILTERS
    ON_FAILURE = "tempfail"

    def test_fail_closed(self):
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="client.test", timeout=60) as c:
            c.ehlo()
            self.assertEqual(c.mail("alice@sender.test"), (451, b"4.7.1 Mail filter unavailable; try again later"))


class OpenDKIM(MilterTest):
    """Debian's opendkim as a signing milter: the gateway passes it the
    message, it adds DKIM-Signature, and the signature verifies."""

    def setUp(self):
        import dkim  # python3-dkim
        self.dkim = dkim
        d = self.tmpdir()
        key = os.path.join(d, "sel.private")
        subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
        pub = subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-outform", "DER"], check=True,
                             capture_output=True).stdout
        import base64
        self.txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(pub)
        port = free_port()
        conf = os.path.join(d, "opendkim.conf")
        with open(conf, "w") as f:
            f.write(f"Mode s\nDomain sender.test\nSelector sel\nKeyFile {key}\nSocket inet:{port}@127.0.0.1\n"
                    f"Canonicalization relaxed/relaxed\nSignatureAlgorithm rsa-sha256\nBackground no\n"
                    f"PidFile {d}/opendkim.pid\nSyslog no\nInternalHosts 0.0.0.0/0\nRequireSafeKeys false\n")
        exe = "/usr/sbin/opendkim"
        self.assertTrue(os.access(exe, os.X_OK), "opendkim is a test dependency (scripts/deps.sh test)")
        p = subprocess.Popen([exe, "-f", "-x", conf], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: (p.kill(), p.wait(), p.stdout.close()))
        wait_until(lambda: listening(port) or p.poll() is not None, timeout=20, what="opendkim")
        self.assertIsNone(p.poll(), p.stdout.read() if p.poll() is not None else "")
        self.sink_ = self.sink(save=True)
        self.g = self.gateway(routes=[("local.test", [f"127.0.0.1:{self.sink_.port}"])],
                              relay_networks='["127.0.0.2/32"]',
                              tail_extra=f'[[milter]]\nname = "opendkim"\naddress = "127.0.0.1:{port}"\n')

    def test_opendkim_signs_through_the_gateway(self):
        sent = message("signed", "A message to sign.\r\n")
        self.assertEqual(self.send(sent)[2][0], 250)
        got = self.delivered(1)[0][0]
        self.assertIn(b"DKIM-Signature:", got)
        m = email.message_from_bytes(got, policy=email.policy.default)
        self.assertIn("d=sender.test", m["DKIM-Signature"])
        self.assertIn("s=sel", m["DKIM-Signature"])
        txt = self.txt
        ok = self.dkim.verify(got, dnsfunc=lambda name, timeout=5: txt if name == b"sel._domainkey.sender.test." else None)
        self.assertTrue(ok, got[:2000])


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    import sink_test
    delivery_test.BUILD = BUILD
    sink_test.BUILD = BUILD
    unittest.main(verbosity=2)
