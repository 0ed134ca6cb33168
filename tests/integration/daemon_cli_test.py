#!/usr/bin/env python3
"""ringwayd's command line and start-up errors: every bad input gives one
clear line and a non-zero exit, never a stack trace or a silent exit; a
clean stop on SIGTERM exits 0.

    daemon_cli_test.py BUILD_DIR
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ringway_harness import Ringwayd, free_port  # noqa: E402

BUILD = None


def ringwayd(*args, cwd=None, timeout=30):
    return subprocess.run([os.path.join(BUILD, "admin", "ringwayd"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


class Cli(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="rw_cli_", dir=os.getcwd())

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.dir])

    def write(self, name, text):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def test_version_and_help(self):
        r = ringwayd("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^ringwayd \d+\.\d+\.\d+")
        r = ringwayd("--help")
        self.assertEqual(r.returncode, 0)
        for opt in ("--config", "--check-config", "--format-spool", "--print-default-config"):
            self.assertIn(opt, r.stdout)

    def test_unknown_option(self):
        r = ringwayd("--frobnicate")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("frobnicate", r.stderr + r.stdout)

    def test_default_config_checks(self):
        r = ringwayd("--print-default-config")
        p = self.write("default.toml", r.stdout)
        r = ringwayd("--check-config", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration is valid", r.stdout)

    def test_bad_config_names_file_line_and_key(self):
        p = self.write("bad.toml", '[runtime]\ncores = 1\n\n[[listener]]\nname = "x"\nport = "smtp"\n')
        r = ringwayd("--check-config", p)
        self.assertEqual(r.returncode, 2)
        self.assertIn("bad.toml:6: listener[0].port", r.stderr)
        self.assertIn("allowed", r.stderr)
        self.assertNotIn("terminate", r.stderr)

    def test_missing_config_file(self):
        r = ringwayd("--check-config", os.path.join(self.dir, "nope.toml"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("nope.toml", r.stderr)

    def test_port_in_use_is_one_clear_line(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            p = self.write("r.toml", f'[runtime]\nmail_log = ""\n[spool]\npath = "{self.dir}/spool.img"\nsize = "64M"\n'
                                     f'[[listener]]\nname = "smtp"\nport = {port}\n')
            r = ringwayd("--config", p, cwd=self.dir)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"127.0.0.1:{port}", r.stderr)
        self.assertIn("Address already in use", r.stderr)

    def test_spool_that_is_not_a_spool_is_refused(self):
        img = os.path.join(self.dir, "foreign.img")
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        p = self.write("r.toml", f'[runtime]\nmail_log = ""\n[spool]\npath = "{img}"\nsize = "64M"\n'
                                 f'[[listener]]\nname = "smtp"\nport = {free_port()}\n')
        r = ringwayd("--config", p, cwd=self.dir)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a Ringway spool", r.stderr)
        self.assertIn(img, r.stderr)
        # The same file formatted explicitly then works, and is not
        # formatted twice.
        r = ringwayd("--format-spool", img, "--shards", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = ringwayd("--format-spool", img)
        self.assertEqual(r.returncode, 1)
        self.assertIn("already holds a spool", r.stderr)

    def test_spool_in_use_by_another_daemon(self):
        d = Ringwayd(BUILD, cores=1)
        try:
            p = self.write("r.toml", f'[runtime]\nmail_log = ""\n[spool]\npath = "{d.spool}"\nsize = "128M"\n'
                                     f'[[listener]]\nname = "smtp"\nport = {free_port()}\n')
            r = ringwayd("--config", p, cwd=self.dir, timeout=60)
            self.assertEqual(r.returncode, 1)
            self.assertIn("in use by another process", r.stderr)
        finally:
            d.cleanup()

    def test_sigterm_stops_cleanly(self):
        d = Ringwayd(BUILD)
        try:
            self.assertEqual(d.stop(), 0)
            self.assertIn("stopped cleanly", d.log_text())
        finally:
            d.cleanup()


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
