#!/usr/bin/env python3
"""The shell's appliance commands against their privileged helper.

ringway-appliance is started for each connection by systemd-socket-activate
(as systemd's ringway-appliance.socket does on the appliance), on a
scratch root: the files it writes (network, SSH, time, spool confirmations,
the boot loader's environment, the root slots as plain files) are checked
there. It runs no system program here (--no-services): rebooting into an
upgraded slot, and the network actually changing, are the image test's.
loadtest runs the real load generator against a real sink.

    appliance_commands_test.py BUILD_DIR [unittest args]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import delivery_test  # noqa: E402
import sink_test  # noqa: E402
from delivery_test import DeliveryTest, saved  # noqa: E402
from ringway_harness import wait_until  # noqa: E402
from setup_test import ed25519_pub  # noqa: E402

BUILD = None
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SLOT_BYTES = 8 << 20


def grubenv_block(**kv):
    body = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in kv.items())
    return (body + "#" * (1024 - len(body))).encode()


def grubenv(path):
    with open(path, "rb") as f:
        block = f.read()
    assert len(block) == 1024, len(block)
    lines = block.decode().split("\n")
    assert lines[0] == "# GRUB Environment Block", lines[0]
    return dict(line.split("=", 1) for line in lines[1:] if line and not line.startswith("#"))


class Appliance(DeliveryTest):
    def setUp(self):
        self.root = self.tmpdir()
        r = self.root
        for d in ("etc/systemd/network", "etc/ssh/sshd_config.d", "data/ringway", "data/home/admin", "proc",
                  "run/ringway/esp/grub", "dev/disk/by-partlabel", "sys/class/net/eth0", "usr/share/ringway"):
            os.makedirs(os.path.join(r, d))
        self.write("proc/cmdline", "BOOT_IMAGE=(hd0,gpt3)/boot/vmlinuz root=PARTLABEL=ringway-root-a ringway.slot=a quiet\n")
        self.write("usr/share/ringway/version", "1.0-test\n")
        with open(self.path("run/ringway/esp/grub/grubenv"), "wb") as f:
            f.write(grubenv_block(slot="a"))
        for s in "ab":
            with open(self.path(f"dev/disk/by-partlabel/ringway-root-{s}"), "wb") as f:
                if s == "a":
                    f.write(b"hsqs")  # the system that runs; b is empty until an upgrade
                f.truncate(SLOT_BYTES)
        self.key = self.path("upgrade.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", self.key], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", self.key, "-pubout", "-out",
                        self.path("usr/share/ringway/upgrade-key.pub")], check=True, capture_output=True)
        self.sock = self.path("appliance.sock")
        self.helper_log = open(self.path("helper.log"), "w+")
        self.activator = subprocess.Popen(
            ["systemd-socket-activate", "--inetd", "--accept", "-l", self.sock,
             os.path.join(BUILD, "admin", "ringway-appliance"), "--root", r, "--no-services"],
            stdout=self.helper_log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_activator)
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the appliance socket")

    def stop_activator(self):
        self.activator.terminate()
        self.activator.wait(timeout=10)
        self.helper_log.close()

    def path(self, rel):
        return os.path.join(self.root, rel)

    def write(self, rel, text):
        with open(self.path(rel), "w") as f:
            f.write(text)

    def read(self, rel):
        with open(self.path(rel)) as f:
            return f.read()

    def shell(self, *words, stdin=None, env=None):
        e = dict(os.environ, RINGWAY_APPLIANCE_SOCKET=self.sock, RINGWAY_SOCKET=self.path("no-daemon.sock"))
        e.update(env or {})
        return subprocess.run([os.path.join(BUILD, "admin", "ringway"), *words], capture_output=True,
                              timeout=120, env=e, stdin=stdin if stdin is not None else subprocess.DEVNULL)

    def ok(self, *words, **kw):
        r = self.shell(*words, **kw)
        self.assertEqual(r.returncode, 0, r.stderr.decode() + r.stdout.decode())
        return r.stdout.decode()

    def refused(self, *words, code=1):
        r = self.shell(*words)
        self.assertEqual(r.returncode, code, r.stdout.decode())
        self.assertTrue(r.stderr.strip(), "a refusal says why")
        return r.stderr.decode()

    def as_json(self, *words):
        return json.loads(self.ok("--json", *words))

    # ---- network ----

    def test_static_address_gateway_and_dns(self):
        net = "etc/systemd/network/10-ringway-static.network"
        self.assertEqual(self.as_json("interfaceconfig")["mode"], "dhcp")
        self.assertIn("the gateway comes from DHCP", self.refused("setgateway", "192.0.2.1"))
        self.assertIn("not", self.refused("interfaceconfig", "192.0.2.300/24"))
        self.assertFalse(os.path.exists(self.path(net)), "a refused answer writes nothing")
        r = self.as_json("interfaceconfig", "192.0.2.10/24")
        self.assertEqual((r["mode"], r["address"]), ("static", "192.0.2.10/24"))
        self.assertEqual([a["command"] for a in r["actions"]],
                         ["/usr/bin/networkctl reload", "/usr/bin/networkctl reconfigure eth0"])
        self.ok("setgateway", "192.0.2.1")
        self.ok("dnsconfig", "192.0.2.53", "2001:db8::53")
        text = self.read(net)
        for line in ("DHCP=no", "Address=192.0.2.10/24", "Gateway=192.0.2.1", "DNS=192.0.2.53", "DNS=2001:db8::53"):
            self.assertIn(line + "\n", text)
        self.assertIn("not an IPv4 or IPv6 address", self.refused("dnsconfig", "192.0.2.53", "ns.example"))
        self.assertIn("at most three", self.refused("dnsconfig", "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"))
        self.assertEqual(self.read(net), text)
        # Back to DHCP, keeping the operator's name servers.
        self.ok("interfaceconfig", "dhcp")
        text = self.read(net)
        self.assertIn("DHCP=yes\n", text)
        self.assertIn("DNS=192.0.2.53\n", text)
        self.assertIn("UseDNS=no\n", text)
        self.assertNotIn("Address=", text)
        self.ok("dnsconfig", "dhcp")
        self.assertFalse(os.path.exists(self.path(net)), "plain DHCP is the appliance's default file")
        with open(self.path("helper.log")) as f:
            self.assertIn("interfaceconfig dhcp by uid", f.read(), "changes are logged with who")

    # ---- ssh ----

    def test_ssh_keys_and_password_logins(self):
        k1, k2 = ed25519_pub(1), ed25519_pub(2)
        keys_file = "data/home/admin/.ssh/authorized_keys"
        pw_conf = "etc/ssh/sshd_config.d/50-ringway-password.conf"
        self.assertEqual(self.as_json("sshconfig"), {"keys": [], "password_authentication": False})
        self.assertIn("would lock out SSH", self.refused("sshconfig", "password", "off"))
        self.assertIn("not an SSH public key", self.refused("sshconfig", "addkey", "ssh-ed25519", "AAAAnotakey"))
        self.ok("sshconfig", "addkey", *k1.split(" "))
        self.ok("sshconfig", "addkey", k2)  # one quoted word works as well
        self.assertEqual(self.read(keys_file), k1 + "\n" + k2 + "\n")
        self.assertEqual(os.stat(self.path(keys_file)).st_mode & 0o777, 0o600)
        self.assertIn("already there", self.refused("sshconfig", "addkey", k1))
        r = self.as_json("sshconfig", "password", "on")
        self.assertTrue(r["password_authentication"])
        self.assertIn("PasswordAuthentication yes\n", self.read(pw_conf))
        self.assertEqual(r["actions"][0]["command"], "/usr/bin/systemctl reload ssh.service")
        self.ok("sshconfig", "password", "off")
        self.assertIn("PasswordAuthentication no\n", self.read(pw_conf))
        self.ok("sshconfig", "delkey", "1")
        self.assertEqual(self.read(keys_file), k2 + "\n")
        self.assertIn("last key", self.refused("sshconfig", "delkey", "1"))
        self.assertIn("no key 5", self.refused("sshconfig", "delkey", "5"))
        self.assertEqual(self.shell("sshconfig", "delkey", "one").returncode, 2)
        self.assertEqual(self.read(keys_file), k2 + "\n")

    # ---- time ----

    def test_time_servers(self):
        conf = "etc/systemd/timesyncd.conf.d/ringway.conf"
        self.assertEqual(self.as_json("ntpconfig")["servers"], [])
        self.ok("ntpconfig", "ntp1.example.net", "192.0.2.123")
        self.assertIn("NTP=ntp1.example.net 192.0.2.123\n", self.read(conf))
        self.assertEqual(self.as_json("ntpconfig")["servers"], ["ntp1.example.net", "192.0.2.123"])
        self.assertIn("neither an address nor a host name", self.refused("ntpconfig", "bad_name!"))
        self.ok("ntpconfig", "default")
        self.assertFalse(os.path.exists(self.path(conf)))

    # ---- upgrades ----

    def bundle(self, version, key=None, root=None, tamper=False):
        if root is None:
            root = b"hsqs" + os.urandom(3 << 20)
        src = self.path(f"root-{version}.squashfs")
        with open(src, "wb") as f:
            f.write(root)
        out = self.path(f"ringway-{version}.bundle")
        subprocess.run([os.path.join(REPO, "image", "bundle"), src, key or self.key, version, out], check=True)
        if tamper:  # one byte of the root changed after signing
            with open(out, "r+b") as f:
                data = f.read()
                at = data.index(root[1000:1064]) + 32  # inside root.squashfs
                f.seek(at)
                f.write(bytes([data[at] ^ 1]))
        return out, root

    def slot(self, s):
        with open(self.path(f"dev/disk/by-partlabel/ringway-root-{s}"), "rb") as f:
            return f.read()

    def env(self):
        return grubenv(self.path("run/ringway/esp/grub/grubenv"))

    def test_upgrade_verifies_before_it_switches(self):
        status = self.as_json("upgrade", "status")
        self.assertEqual((status["running"], status["boots"], status["trial"]), ("a", "a", ""))
        self.assertIn("no system to go back to", self.refused("upgrade", "rollback"))
        # Signed by another key: refused before a byte of the slot is written.
        other = self.path("other.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", other], check=True, capture_output=True)
        bad, _ = self.bundle("2.0-other", key=other)
        with open(bad, "rb") as f:
            r = self.shell("upgrade", "-", stdin=f)
        self.assertEqual(r.returncode, 1)
        self.assertIn("signature does not verify", r.stderr.decode())
        self.assertEqual(self.slot("b"), bytes(SLOT_BYTES), "nothing written")
        # Altered after signing: written, found out, wiped, not switched to.
        tampered, _ = self.bundle("2.0-tampered", tamper=True)
        self.assertIn("does not match its signed manifest", self.refused("upgrade", tampered))
        self.assertEqual(self.slot("b")[:1 << 20], bytes(1 << 20), "a refused slot is wiped")
        # Cut short.
        good, root = self.bundle("2.0")
        cut = self.path("cut.bundle")
        with open(good, "rb") as f, open(cut, "wb") as g:
            g.write(f.read(2 << 20))
        self.assertIn("ends early", self.refused("upgrade", cut))
        # Not a bundle at all.
        self.write("junk.bundle", "hello\n" * 200)
        self.assertIn("not an upgrade bundle", self.refused("upgrade", self.path("junk.bundle")))
        # Too large for the slot.
        big, _ = self.bundle("9.9-big", root=b"hsqs" + bytes(SLOT_BYTES))
        self.assertIn("does not fit", self.refused("upgrade", big))
        self.assertEqual(self.env(), {"slot": "a"}, "no refused bundle touched the boot loader")
        # A good one, from standard input as over SSH.
        with open(good, "rb") as f:
            r = self.shell("--json", "upgrade", "-", stdin=f)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.decode().splitlines()
        events = [json.loads(x) for x in lines if x.startswith("{\"")]
        self.assertTrue(any("verified" in e.get("text", "") for e in events), events)
        self.assertEqual(self.slot("b")[:len(root)], root)
        self.assertEqual(self.env(), {"slot": "a", "trial": "b", "trial_tries": "2"})
        status = self.as_json("upgrade", "status")
        self.assertEqual([(s["slot"], s["version"]) for s in status["slots"]], [("a", "1.0-test"), ("b", "2.0")])
        self.assertIn("/usr/bin/systemctl reboot --no-block", self.ok("upgrade", "status") + self.ok("reboot"))
        self.assertTrue(any("refused" in x for x in status["log"]) and any("probation" in x for x in status["log"]))
        # Back to the slot that ran before, also on probation.
        self.write("proc/cmdline", "ringway.slot=b\n")
        self.ok("upgrade", "rollback")
        self.assertEqual(self.env(), {"slot": "a", "trial": "a", "trial_tries": "2"})
        # Interactive sessions cannot feed a bundle through the terminal.
        self.assertEqual(self.shell("upgrade", "one", "two").returncode, 2)

    # ---- the spool disk ----

    def test_spool_confirmations(self):
        self.assertIn("no other appliance's spool", self.refused("spool", "adopt"))
        self.assertIn("is not a device name", self.refused("spool", "format", "../../etc/passwd"))
        self.assertIn("not a block device", self.refused("spool", "format", "/dev/vdz"))
        # The boot disk (the one holding the data partition) is refused.
        os.makedirs(self.path("sys/devices/pci0/block/vda/vda5"))
        os.makedirs(self.path("sys/class/block"))
        os.symlink("../../devices/pci0/block/vda/vda5", self.path("sys/class/block/vda5"))
        self.write("dev/vda", "")
        self.write("dev/vda5", "")
        os.symlink("../../vda5", self.path("dev/disk/by-partlabel/ringway-data"))
        self.assertIn("boots from", self.refused("spool", "format", "/dev/vda"))
        self.assertIn("boots from", self.refused("spool", "format", "/dev/vda5"))
        self.assertFalse(os.path.exists(self.path("data/ringway/spool-format")))
        self.write("dev/vdc", "")
        self.ok("spool", "format", "/dev/vdc")
        self.assertEqual(self.read("data/ringway/spool-format"), "/dev/vdc\n")
        self.assertEqual(self.read("data/ringway/spool-device"), "/dev/vdc\n")
        self.write("run/ringway/spool-problem",
                   "/dev/vdb holds another Ringway spool (uuid 0123abcd-0000-4000-8000-00000000cafe) that this "
                   "appliance did not format; its queued mail is kept until you choose\n")
        r = self.as_json("spool", "adopt")
        self.assertEqual(r["actions"][0]["command"], "/usr/bin/systemctl restart ringwayd.service")
        self.assertEqual(self.read("data/ringway/spool-adopt"), "0123abcd-0000-4000-8000-00000000cafe\n")

    def test_without_the_helper_the_commands_say_where_they_work(self):
        r = self.shell("interfaceconfig", env={"RINGWAY_APPLIANCE_SOCKET": self.path("nothing.sock")})
        self.assertEqual(r.returncode, 1)
        self.assertIn("works on the Ringway appliance", r.stderr.decode())


class LoadTest(DeliveryTest):
    def test_loadtest_runs_the_load_generator_and_reports(self):
        s = self.sink(save=True)
        env = dict(os.environ, RINGWAY_LOAD=os.path.join(BUILD, "bench", "ringway-load"))
        sh = os.path.join(BUILD, "admin", "ringway")
        r = subprocess.run([sh, "--json", "loadtest", f"127.0.0.1:{s.port}", "--count", "40", "--connections", "2",
                            "--size", "2k"], capture_output=True, timeout=120, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = json.loads(r.stdout)
        self.assertEqual(rep["accepted"], 40)
        wait_until(lambda: len(saved(s.save)) == 40, timeout=20, what="40 messages at the sink")
        # Every option is one of the load generator's, every value one word.
        for words in (["loadtest", "127.0.0.1:1", "--exec", "/bin/sh"], ["loadtest", "127.0.0.1:1", "--to", "-x"],
                      ["loadtest", "--server", "x"], ["loadtest"]):
            r = subprocess.run([sh, *words], capture_output=True, timeout=30, env=env)
            self.assertEqual(r.returncode, 2, words)
            self.assertIn("usage: loadtest", r.stderr.decode())
        # A server that refuses: the report is printed and the status says so.
        r = subprocess.run([sh, "loadtest", "127.0.0.1:1", "--count", "3", "--connections", "1"], capture_output=True,
                           timeout=60, env=env)
        self.assertNotEqual(r.returncode, 0)


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    delivery_test.BUILD = BUILD
    sink_test.BUILD = BUILD
    unittest.main(verbosity=2)
