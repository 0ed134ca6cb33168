#!/usr/bin/env python3
"""The appliance's first-boot setup (ringway-setup) against a running
ringwayd: from a seed file and interactively through a pseudo-terminal. The
system files it writes go to a scratch root; the mail settings go to the
daemon as a committed configuration version, and mail then flows by them
(to a ringway-sink standing in for the internal mail server).

    setup_test.py BUILD_DIR [unittest args]
"""
import base64
import io
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt
import json
import os
import struct
import subprocess
import sys
import unittest

import pexpect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import delivery_test  # noqa: E402
import sink_test  # noqa: E402
from delivery_test import DeliveryTest, send  # noqa: E402
from ringway_harness import wait_until  # noqa: E402

BUILD = None
MSG = b"From: a@outside.test\r\nTo: u@corp.test\r\nSubject: setup test\r\n\r\nhello\r\n"

def ed25519_pub(seed_byte):
    """An OpenSSH Ed25519 public key line (its blob names its type)."""
    def field(b):
        return struct.pack(">I", len(b)) + b
    blob = field(b"ssh-ed25519") + field(bytes([seed_byte]) * 32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " test@ringway"


KEY = ed25519_pub(7)
SHADOW = ("root:*:19000:0:99999:7:::\n"
          "admin:!:19000:0:99999:7:::\n"
          "ringway:!:19000::::::\n")


def setup_bin():
    return os.path.join(BUILD, "admin", "ringway-setup")


class Setup(DeliveryTest):
    def setUp(self):
        self.internal = self.sink()
        self.g = self.gateway()
        self.sock = os.path.join(self.g.dir, "var", "ringway.sock")
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")
        self.root = self.tmpdir()
        os.makedirs(os.path.join(self.root, "etc"))
        os.makedirs(os.path.join(self.root, "state"))
        with open(os.path.join(self.root, "etc", "shadow"), "w") as f:
            f.write(SHADOW)

    def args(self):
        return [setup_bin(), "--root", self.root, "--state", "/state", "--home", "/home/admin",
                "--socket", self.sock, "--socket-wait", "10", "--no-services"]

    def read(self, *path):
        with open(os.path.join(self.root, *path)) as f:
            return f.read()

    def committed(self):
        r = subprocess.run([os.path.join(BUILD, "admin", "ringway"), "--socket", self.sock, "--json",
                            "showconfig"], capture_output=True, text=True, timeout=30, check=True)
        return json.loads(r.stdout)

    def admin_hash(self):
        return [line.split(":")[1] for line in self.read("etc", "shadow").splitlines()
                if line.startswith("admin:")][0]

    def seed(self, text):
        path = os.path.join(self.root, "state", "seed.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_seed_file_sets_everything_and_mail_flows(self):
        seed = self.seed(f"""
hostname = "mx1.corp.test"
[network]
mode = "static"
address = "192.0.2.10/24"
gateway = "192.0.2.1"
dns = ["192.0.2.53", "2001:db8::53"]
[admin]
password = "correct horse battery"
ssh_keys = ["{KEY}"]
[mail]
accepted_domains = ["corp.test"]
internal_server = "127.0.0.1:{self.internal.port}"
relay_networks = ["10.0.0.0/8"]
""")
        r = subprocess.run(self.args() + ["--seed", seed], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assertFalse(os.path.exists(seed), "the seed (it holds a password) is removed once applied")
        self.assertIn("seed", self.read("state", "setup-done"))
        self.assertFalse(os.path.exists(os.path.join(self.root, "state", "setup-problem")))
        # The system's files.
        self.assertEqual(self.read("etc", "hostname"), "mx1.corp.test\n")
        self.assertIn("127.0.1.1\tmx1.corp.test mx1", self.read("etc", "hosts"))
        net = self.read("etc", "systemd", "network", "10-ringway-static.network")
        for line in ("Address=192.0.2.10/24", "Gateway=192.0.2.1", "DNS=192.0.2.53", "DNS=2001:db8::53"):
            self.assertIn(line, net)
        h = self.admin_hash()
        self.assertTrue(h.startswith("$y$"), h)
        self.assertEqual(crypt.crypt("correct horse battery", h), h)
        self.assertNotEqual(crypt.crypt("wrong password", h), h)
        self.assertIn("root:*:", self.read("etc", "shadow"), "other users' lines are kept")
        self.assertEqual(self.read("home", "admin", ".ssh", "authorized_keys"), KEY + "\n")
        self.assertEqual(os.stat(os.path.join(self.root, "home", "admin", ".ssh", "authorized_keys")).st_mode & 0o777,
                         0o600)
        # The mail settings: one committed version.
        toml = self.committed()["toml"]
        self.assertIn('hostname = "mx1.corp.test"', toml)
        self.assertIn('"corp.test"', toml)
        self.assertIn('"10.0.0.0/8"', toml)
        self.assertIn(f'127.0.0.1:{self.internal.port}', toml)
        # ... in force: mail for the accepted domain reaches the internal server.
        send(self.g.port, "a@outside.test", ["u@corp.test"], MSG)
        wait_until(lambda: (self.internal.stats() or {}).get("received", 0) >= 1, timeout=30,
                   what="the message at the internal server")
        # Back to DHCP: the static file goes.
        seed = self.seed(f'hostname = "mx1.corp.test"\n[admin]\nssh_keys = ["{KEY}"]\n')
        r = subprocess.run(self.args() + ["--seed", seed], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.root, "etc", "systemd", "network",
                                                     "10-ringway-static.network")))

    def test_a_bad_seed_is_refused_with_every_reason_and_nothing_changes(self):
        before = self.committed()["version"]
        seed = self.seed("""
hostname = "localhost"
colour = "blue"
[network]
mode = "static"
address = "192.0.2.10"
gateway = "192.0.2.300"
[admin]
password = "short"
ssh_keys = ["ssh-ed25519 bm90IGEga2V5"]
[mail]
accepted_domains = ["corp..test"]
relay_networks = ["0.0.0.0/0"]
""")
        r = subprocess.run(self.args() + ["--seed", seed], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        problem = self.read("state", "setup-problem")
        for why in ("hostname: not fully qualified", "colour: not a seed key", "network.address: give the prefix",
                    "network.gateway", "network.dns: give at least one", "admin.password: shorter than 8",
                    "admin.ssh_keys", "mail.accepted_domains \"corp..test\"", "mail.internal_server",
                    "open relay"):
            self.assertIn(why, problem)
            self.assertIn(why, r.stderr)
        self.assertTrue(os.path.exists(seed + ".refused"))
        self.assertFalse(os.path.exists(os.path.join(self.root, "state", "setup-done")))
        self.assertFalse(os.path.exists(os.path.join(self.root, "etc", "hostname")))
        self.assertEqual(self.admin_hash(), "!")
        self.assertEqual(self.committed()["version"], before)

    def test_interactive_asks_again_with_the_reason_and_ignores_ctrl_c(self):
        p = pexpect.spawn(self.args()[0], self.args()[1:], encoding="utf-8", timeout=30,
                          env={**os.environ, "TERM": "dumb"})
        self.addCleanup(p.terminate, True)
        seen = io.StringIO()
        p.logfile_read = seen  # everything the terminal showed
        p.expect_exact("Host name of this gateway (fully qualified) [ringway.localdomain]: ")
        p.sendintr()  # Ctrl-C: not a way out
        p.sendline("gateway")
        p.expect_exact("not accepted: not fully qualified")
        p.expect_exact("Host name of this gateway")
        p.sendline("gw.corp.test")
        p.expect_exact("Network: dhcp or static [dhcp]: ")
        p.sendline("")
        p.expect_exact("Admin password (Enter for none: SSH key only): ")
        p.sendline("secret")
        p.expect_exact("not accepted: shorter than 8 characters")
        p.expect_exact("Admin password")
        p.sendline("long enough secret")
        p.expect_exact("The same password again: ")
        p.sendline("long enough secret")
        p.expect_exact("Admin SSH public key (one line of a .pub file; Enter for none): ")
        p.sendline("")
        p.expect_exact("Domains this gateway accepts mail for")
        p.sendline("corp.test bad_domain..test")
        p.expect_exact('not accepted: "bad_domain..test"')
        p.sendline("corp.test")
        p.expect_exact("Internal mail server for them")
        p.sendline(f"127.0.0.1:{self.internal.port}")
        p.expect_exact("Networks allowed to relay through it")
        p.sendline("0.0.0.0/0")
        p.expect_exact("open relay")
        p.sendline("")
        p.expect_exact("accepted domains corp.test")
        p.expect_exact("Apply these settings? (yes/no) [yes]: ")
        p.sendline("yes")
        p.expect_exact("ringway-setup: done. Log in as admin.")
        p.expect(pexpect.EOF)
        p.close()
        self.assertEqual(p.exitstatus, 0)
        self.assertNotIn("long enough secret", seen.getvalue(), "the password is not echoed")
        self.assertIn("gw.corp.test", seen.getvalue())
        h = self.admin_hash()
        self.assertEqual(crypt.crypt("long enough secret", h), h)
        self.assertIn("console", self.read("state", "setup-done"))
        self.assertIn('"corp.test"', self.committed()["toml"])

    def test_two_consoles_the_first_to_finish_wins(self):
        other = pexpect.spawn(self.args()[0], self.args()[1:], encoding="utf-8", timeout=30,
                              env={**os.environ, "TERM": "dumb"})
        self.addCleanup(other.terminate, True)
        other.expect_exact("Host name of this gateway")
        seed = self.seed(f'hostname = "first.corp.test"\n[admin]\nssh_keys = ["{KEY}"]\n')
        r = subprocess.run(self.args() + ["--seed", seed], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        other.sendline("second.corp.test")
        other.expect_exact("The setup was finished on another console. Log in as admin.")
        other.expect(pexpect.EOF)
        other.close()
        self.assertEqual(other.exitstatus, 0)
        self.assertEqual(self.read("etc", "hostname"), "first.corp.test\n")

    def test_password_reset_sets_only_the_password(self):
        p = pexpect.spawn(self.args()[0], self.args()[1:] + ["--reset-password"], encoding="utf-8", timeout=30,
                          env={**os.environ, "TERM": "dumb"})
        self.addCleanup(p.terminate, True)
        p.expect_exact("New admin password: ")
        p.sendintr()
        p.sendline("new password 1")
        p.expect_exact("The same password again: ")
        p.sendline("new password 2")
        p.expect_exact("the two differ; again.")
        p.expect_exact("New admin password: ")
        p.sendline("new password 1")
        p.expect_exact("The same password again: ")
        p.sendline("new password 1")
        p.expect_exact("The admin password is set.")
        p.expect(pexpect.EOF)
        p.close()
        self.assertEqual(p.exitstatus, 0)
        h = self.admin_hash()
        self.assertEqual(crypt.crypt("new password 1", h), h)
        self.assertFalse(os.path.exists(os.path.join(self.root, "etc", "hostname")), "nothing else changes")


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    delivery_test.BUILD = BUILD
    sink_test.BUILD = BUILD
    unittest.main(verbosity=2)
