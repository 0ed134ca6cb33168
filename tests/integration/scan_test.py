#!/usr/bin/env python3
"""Anti-virus and anti-spam with the real scanners: Debian's clamd with a
signature database made here (EICAR and a custom .ndb marker; nothing is
downloaded) and Debian's rspamd (GTUBE scores as spam, a plain message
does not), behind a real ringwayd; mail from smtplib and a raw BDAT
client, delivery to ringway-sink.

    scan_test.py BUILD_DIR [unittest args]

Asserts the codes of infected and spam mail (DATA and BDAT, a virus at
the end of a message of several MiB, so it crosses many streamed
pieces), clean mail arriving with X-Spam-Status and its body byte-exact,
a virus held in quarantine and released byte-exact, a TRUSTED client
skipping the spam scan, and a scanner that is down failing open or
closed as configured; the mail log's scan lines.
"""
import base64
import email
import email.policy
import json
import os
import smtplib
import subprocess
import sys
import unittest
from email.message import EmailMessage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import delivery_test  # noqa: E402
from delivery_test import DeliveryTest, saved  # noqa: E402
from ringway_harness import Raw, wait_until  # noqa: E402
from scanners import EICAR, EICAR_NAME, GTUBE, MARKER, MARKER_NAME, Clamd, Rspamd  # noqa: E402

BUILD = None
CLAMD = None
RSPAMD = None


def setUpModule():
    global CLAMD, RSPAMD
    CLAMD = Clamd()
    RSPAMD = Rspamd()


def tearDownModule():
    for d in (CLAMD, RSPAMD):
        if d:
            d.stop()


def message(subject, body, attachment=None):
    m = EmailMessage()
    m["From"] = "alice@sender.test"
    m["To"] = "bob@local.test"
    m["Subject"] = subject
    m["Message-ID"] = f"<{subject.replace(' ', '.')}@sender.test>"
    m["Date"] = "Mon, 07 Dec 2026 10:00:00 +0000"
    m.set_content(body)
    if attachment:
        name, data = attachment
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return m.as_bytes(policy=email.policy.SMTP)


class ScanTest(DeliveryTest):
    CLAMD = "{clamd}"
    RSPAMD = "127.0.0.1:{rspamd}"
    AV_EXTRA = ""    # more [antivirus] keys
    SPAM_EXTRA = ""  # more [antispam] keys
    TAIL = ""        # more tables

    def setUp(self):
        self.sink_ = self.sink(save=True)
        scan = (f'[antivirus]\nclamd = "{self.CLAMD.format(clamd=CLAMD.socket)}"\ntimeout_ms = 10000\n'
                f'{self.AV_EXTRA}'
                f'[antispam]\nrspamd = "{self.RSPAMD.format(rspamd=RSPAMD.port)}"\ntimeout_ms = 20000\n'
                f'{self.SPAM_EXTRA}')
        self.g = self.gateway(routes=[("local.test", [f"127.0.0.1:{self.sink_.port}"])],
                              relay_networks='["127.0.0.2/32"]', tail_extra=scan + self.TAIL)
        self.sock = os.path.join(self.g.dir, "var", "ringway.sock")
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")

    def transaction(self, msg, source="127.0.0.1"):
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="client.test", timeout=60,
                          source_address=(source, 0)) as c:
            c.ehlo()
            self.assertEqual(c.mail("alice@sender.test")[0], 250)
            self.assertEqual(c.rcpt("bob@local.test")[0], 250)
            code, text = c.data(msg)
            return code, text.decode()

    def scans(self, scanner):
        return [e for e in self.g.journal() if e.get("event") == "scan" and e["scanner"] == scanner]

    def delivered(self, n):
        wait_until(lambda: len(saved(self.sink_.save)) >= n, timeout=30, what=f"{n} messages at the sink")
        return saved(self.sink_.save)

    def shell(self, *args):
        r = subprocess.run([os.path.join(BUILD, "admin", "ringway"), "--socket", self.sock, "--json", *args],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, f"{args}: {r.stderr}")
        return json.loads(r.stdout)


class Scanning(ScanTest):
    def test_viruses_and_spam_are_refused_clean_mail_passes(self):
        code, text = self.transaction(message("invoice", "see attached", ("invoice.com", EICAR)))
        self.assertEqual((code, text), (554, f"5.7.0 Message contains a virus: {EICAR_NAME}"))
        code, text = self.transaction(message("marker", f"plain text with {MARKER.decode()} inside\n"))
        self.assertEqual((code, text), (554, f"5.7.0 Message contains a virus: {MARKER_NAME}"))
        code, text = self.transaction(message("offer", f"Buy now.\n{GTUBE.decode()}\n"))
        self.assertEqual((code, text), (550, "5.7.1 Message rejected as spam"))
        clean = message("minutes", "The minutes of Tuesday's meeting are below.\nNothing to see.\n")
        self.assertEqual(self.transaction(clean)[0], 250)
        got = self.delivered(1)
        self.assertEqual(len(got), 1)
        m = email.message_from_bytes(got[0][0], policy=email.policy.default)
        self.assertTrue(m["X-Spam-Status"].startswith("No, score="), m["X-Spam-Status"])
        self.assertIn('action="no action"', m["X-Spam-Status"])
        self.assertTrue(got[0][0].endswith(clean.split(b"\r\n\r\n", 1)[1]))
        av = [(e["result"], e["virus"]) for e in self.scans("clamd")]
        self.assertEqual(av, [("infected", EICAR_NAME), ("infected", MARKER_NAME), ("clean", ""), ("clean", "")])
        spam = [(e["result"], e["action"]) for e in self.scans("rspamd")]
        self.assertEqual([s[0] for s in spam], ["scanned"] * 4)
        self.assertEqual(spam[2][1], "reject")
        self.assertEqual(spam[3][1], "no action")
        content = [(e["rule"], e["action"]) for e in self.g.journal() if e.get("event") == "content"]
        self.assertEqual(content, [("antivirus", "reject"), ("antivirus", "reject"), ("antispam", "reject")])

    def test_a_virus_deep_in_a_large_message_over_bdat(self):
        # 6 MiB of text, the virus in an attachment at the end: the body
        # crosses the scanners in many pieces.
        filler = ("A line of perfectly ordinary text, repeated to make the message large.\n" * 90000)
        msg = message("big", filler, ("tool.com", EICAR))
        self.assertGreater(len(msg), 6 << 20)
        c = Raw(self.g.port, timeout=60)
        self.assertEqual(c.reply()[0], 220)
        c.send("EHLO client.test\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.send("MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@local.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)
        third = len(msg) // 3
        for piece, last in ((msg[:third], False), (msg[third:2 * third], False), (msg[2 * third:], True)):
            c.send(f"BDAT {len(piece)}{' LAST' if last else ''}\r\n".encode() + piece)
            code, lines = c.reply()
            if not last:
                self.assertEqual(code, 250)
        self.assertEqual((code, lines), (554, [f"554 5.7.0 Message contains a virus: {EICAR_NAME}"]))
        c.send("QUIT\r\n")
        c.close()
        av = self.scans("clamd")
        self.assertEqual(av[-1]["result"], "infected")
        # rspamd's max_size (10 MiB) is above the message: it was scanned too.
        self.assertEqual(self.scans("rspamd")[-1]["result"], "scanned")


class Pooled(ScanTest):
    def test_clamd_sessions_are_reused_and_a_dead_one_is_not(self):
        n = 6
        for i in range(n):
            self.assertEqual(self.transaction(message(f"clean {i}", f"Nothing in message {i}.\n"))[0], 250)
        av = self.scans("clamd")
        self.assertEqual([e["result"] for e in av], ["clean"] * n)
        # Sequential messages: each core opens one session at most, then
        # takes it from its pool.
        reused = sum(1 for e in av if e["reused"])
        cores = 2
        self.assertGreaterEqual(reused, n - cores, av)
        # An infected message keeps its session too; the next is scanned on it.
        code, _ = self.transaction(message("bad", "see attached", ("x.com", EICAR)))
        self.assertEqual(code, 554)
        # clamd restarts: the idle sessions are dead, found so before use,
        # and the next messages are scanned on new ones, never failed.
        CLAMD.restart()
        for i in range(3):
            self.assertEqual(self.transaction(message(f"after {i}", "Still clean.\n"))[0], 250)
        after = self.scans("clamd")[n + 1:]
        self.assertEqual([e["result"] for e in after], ["clean"] * 3, after)
        self.assertFalse(after[0]["reused"])
        self.delivered(n + 3)


class Quarantined(ScanTest):
    AV_EXTRA = 'action = "quarantine"\n'
    TAIL = '[[sender_group]]\nname = "ALLOWLIST"\npolicy = "TRUSTED"\nnetworks = ["127.0.0.9"]\n'

    def test_a_virus_is_held_and_released_byte_exact(self):
        infected = message("held", "see attached\n", ("a.com", EICAR))
        code, text = self.transaction(infected)
        self.assertEqual(code, 250, text)
        held = wait_until(lambda: self.shell("quarantine", "list")["messages"], timeout=10, what="the held message")
        self.assertEqual((held[0]["quarantine"], held[0]["rule"]), ("virus", "antivirus"))
        self.shell("quarantine", "release", held[0]["mid"])
        got = self.delivered(1)
        self.assertTrue(got[0][0].endswith(infected.split(b"\r\n\r\n", 1)[1]))
        self.assertIn(b"\r\nSubject: held\r\n", got[0][0])

    def test_a_trusted_client_skips_the_spam_scan(self):
        code, text = self.transaction(message("from a friend", f"{GTUBE.decode()}\n"), source="127.0.0.9")
        self.assertEqual(code, 250, text)
        got = self.delivered(1)
        self.assertNotIn(b"X-Spam-Status", got[0][0])
        self.assertEqual(self.scans("rspamd"), [])
        self.assertEqual([e["result"] for e in self.scans("clamd")], ["clean"])


class ScannerDown(ScanTest):
    CLAMD = "/nonexistent/clamd.sock"
    RSPAMD = "127.0.0.1:9"

    def test_fail_open_accepts_and_logs(self):
        self.assertEqual(self.transaction(message("hello", "hi\n"))[0], 250)
        self.delivered(1)
        av, sp = self.scans("clamd"), self.scans("rspamd")
        self.assertEqual((av[0]["result"], sp[0]["result"]), ("failed", "failed"))
        self.assertIn("connect to /nonexistent/clamd.sock failed", av[0]["why"])
        self.assertIn("connect to 127.0.0.1:9 failed", sp[0]["why"])


class ScannerDownClosed(ScanTest):
    CLAMD = "/nonexistent/clamd.sock"
    AV_EXTRA = 'on_failure = "tempfail"\n'

    def test_fail_closed_is_a_temporary_failure(self):
        self.assertEqual(self.transaction(message("hello", "hi\n")),
                         (451, "4.7.1 Virus scanning is unavailable; try again later"))
        self.assertEqual(self.scans("clamd")[0]["result"], "failed")


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    import sink_test
    delivery_test.BUILD = BUILD
    sink_test.BUILD = BUILD
    unittest.main(verbosity=2)
