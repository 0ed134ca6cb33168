#!/usr/bin/env python3
"""Real third-party SMTP clients against ringwayd: swaks (plain, STARTTLS,
AUTH, pipelining) and Postfix's smtp-source for concurrency, checked
against the mail log and the spool.

    clients_test.py BUILD_DIR
"""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ringway_harness import Ringwayd, wait_until  # noqa: E402

BUILD = None


def received(d):
    return [e for e in d.journal() if e["event"] == "received"]


class Clients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Ringwayd(BUILD, users={"carol": "s3cret-pass"}, relay_networks='["127.0.0.0/8"]')

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def swaks(self, *args):
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.d.port), "--helo", "swaks.test",
                            "--from", "s@swaks.test", "--to", "r@local.test", "--timeout", "20", *args],
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout + r.stderr

    def test_swaks_plain(self):
        rc, out = self.swaks()
        self.assertEqual(rc, 0, out)
        self.assertIn("250 2.0.0 Ok: queued as", out)

    def test_swaks_pipelining(self):
        rc, out = self.swaks("--pipeline")
        self.assertEqual(rc, 0, out)
        self.assertIn("queued as", out)

    def test_swaks_starttls_auth(self):
        rc, out = self.swaks("--tls", "--auth", "PLAIN", "--auth-user", "carol", "--auth-password", "s3cret-pass")
        self.assertEqual(rc, 0, out)
        self.assertIn("235 2.7.0", out)
        self.assertIn("queued as", out)
        rc, out = self.swaks("--tls", "--auth", "LOGIN", "--auth-user", "carol", "--auth-password", "nope")
        self.assertNotEqual(rc, 0)
        self.assertIn("535 5.7.8", out)

    def test_smtp_source_concurrency(self):
        before = len(received(self.d))
        # 20 parallel sessions, 2000 messages of 4 KiB, connection reuse (-d).
        r = subprocess.run(["smtp-source", "-s", "20", "-m", "2000", "-l", "4096", "-d", "-f", "load@source.test",
                            "-t", "sink@local.test", f"127.0.0.1:{self.d.port}"],
                           capture_output=True, text=True, timeout=240)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_until(lambda: len(received(self.d)) >= before + 2000, timeout=30, what="2000 received events")
        self.assertEqual(len(received(self.d)), before + 2000)
        # And one message per connection.
        r = subprocess.run(["smtp-source", "-s", "10", "-m", "300", "-l", "1024", "-f", "load@source.test",
                            "-t", "sink@local.test", f"127.0.0.1:{self.d.port}"],
                           capture_output=True, text=True, timeout=240)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_until(lambda: len(received(self.d)) >= before + 2300, timeout=30, what="2300 received events")


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
