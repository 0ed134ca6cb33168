#!/usr/bin/env python3
"""The appliance image, booted under QEMU and driven as an operator would:
over its serial console (pexpect) and SSH, with mail sent through the
forwarded SMTP port to a ringway-sink on this machine, which the appliance
reaches through QEMU's user network (10.0.2.2 is this machine's loopback).

    image_test.py BUILD_DIR [unittest args]

The image is built from BUILD_DIR's binaries with image/build into
BUILD_DIR/image, unless RINGWAY_IMAGE_DIR names a folder that holds one
(ringway.img). Under TCG each boot takes about a minute.
"""
import json
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
from appliance import REPO, Appliance  # noqa: E402
import sink_test  # noqa: E402
from ringway_harness import wait_until  # noqa: E402

BUILD = None
IMAGE_DIR = None
PASSWORD = "appliance test password"
TIMINGS = {}


def build_image():
    out = os.environ.get("RINGWAY_IMAGE_DIR") or os.path.join(BUILD, "image")
    img = os.path.join(out, "ringway.img")
    if os.environ.get("RINGWAY_IMAGE_DIR") and os.path.exists(img):
        return out
    started = time.monotonic()
    env = {**os.environ, "RINGWAY_BUILD_DIR": BUILD}
    r = subprocess.run([os.path.join(REPO, "image", "build"), out], env=env, capture_output=True, text=True,
                       timeout=1800)
    if r.returncode != 0:
        raise AssertionError(f"image/build failed:\n{r.stderr[-5000:]}")
    TIMINGS["image_build_s"] = round(time.monotonic() - started, 1)
    return out


def lines(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


def send(port, rcpt, subject, sender="someone@outside.test"):
    msg = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhello from the host\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("outside.test")
        s.sendmail(sender, [rcpt], msg)


class ImageTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="rw_image_", dir=os.environ.get("RINGWAY_TEST_TMP"))
        self.addCleanup(self.keep_or_remove)
        self.img = os.path.join(self.work, "ringway.img")
        subprocess.run(["cp", "--sparse=always", os.path.join(IMAGE_DIR, "ringway.img"), self.img], check=True)
        self.app = Appliance(self.img, self.work)
        self.addCleanup(self.app.stop)
        self.sink_port = None

    def keep_or_remove(self):
        res = self._outcome.result
        failed = any(t is self for t, _ in res.failures + res.errors)
        if failed and self.app.boots:
            sys.stderr.write(f"\n[image test] the last console, its end:\n{self.app.console_text()[-4000:]}\n")
        if os.environ.get("RINGWAY_KEEP_IMAGE_TEST"):
            sys.stderr.write(f"\n[image test] consoles and disks kept in {self.work}\n")
        else:
            shutil.rmtree(self.work, True)

    def sink(self, *args):
        """A ringway-sink on this machine: the appliance's internal mail server."""
        listen = f"127.0.0.1:{self.sink_port}" if self.sink_port else "127.0.0.1:0"
        s = sink_test.Sink(*args, listen=listen)
        self.addCleanup(s.cleanup)
        self.sink_port = s.port
        return s

    def seed(self, key_pub):
        seed = os.path.join(self.work, "seed.toml")
        with open(seed, "w") as f:
            f.write(f"""hostname = "mx.appliance.test"
[admin]
password = "{PASSWORD}"
ssh_keys = ["{key_pub}"]
[mail]
accepted_domains = ["sink.test"]
internal_server = "10.0.2.2:{self.sink_port}"
relay_networks = ["10.0.2.0/24"]
""")
        r = subprocess.run([os.path.join(REPO, "image", "seed"), self.img, seed], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def ssh_key(self):
        key = os.path.join(self.work, "admin_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key, "-C", "image-test"], check=True)
        with open(key + ".pub") as f:
            return key, f.read().strip()

    def status(self):
        r = self.app.ssh("--json", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def received(self, s):
        return (s.stats() or {}).get("received", 0)

    def test_seeded_appliance_relays_keeps_its_queue_and_survives_a_power_cut(self):
        app = self.app
        s = self.sink()
        key, pub = self.ssh_key()
        app.ssh_key = key
        self.seed(pub)

        # First boot (BIOS): the spool disk is blank and gets formatted; the
        # seed is applied; SMTP answers through the forwarded port.
        app.boot()
        TIMINGS["first_boot_to_greeting_bios_s"] = round(app.wait_greeting(), 1)
        app.console.expect_exact("ringway-setup: done", timeout=300)
        self.assertNotIn("was refused", app.console_text())

        # The serial console: admin logs in to the ringway shell.
        app.serial_login("admin", PASSWORD)
        out = app.serial_command("status")
        self.assertIn("queued", out)
        out = app.serial_command("showconfig smtp")
        self.assertIn('hostname = "mx.appliance.test"', out)
        app.console.sendline("exit")
        app.console.expect("login: ", timeout=60)

        # SSH: the key works and lands in the shell; passwords are refused.
        st = self.status()
        self.assertIn("queued_messages", st["gauges"])
        r = app.ssh("status", key="/dev/null", extra=("-o", "PubkeyAuthentication=no",
                                                      "-o", "PreferredAuthentications=password,keyboard-interactive"))
        self.assertEqual(r.returncode, 255)
        self.assertIn("Permission denied (publickey)", r.stderr)
        r = app.ssh("/bin/sh", "-c", "id")
        self.assertEqual(r.returncode, 2, "no way to a Unix shell over SSH")
        self.assertNotIn("uid=", r.stdout)

        # Mail through the appliance to the internal server on this machine.
        for i in range(10):
            send(app.smtp_port, "u@sink.test", f"relayed {i}")
        wait_until(lambda: self.received(s) >= 10, timeout=120, what="10 messages at the sink")

        # Queued mail and a suspension survive a clean reboot.
        r = app.ssh("suspend", "delivery")
        self.assertEqual(r.returncode, 0, r.stderr)
        for i in range(5):
            send(app.smtp_port, "u@sink.test", f"held {i}")
        wait_until(lambda: self.status()["gauges"]["queued_messages"] == 5, timeout=60, what="5 queued messages")
        time.sleep(2)
        self.assertEqual(self.received(s), 10)
        app.power_button()
        # This boot goes through the boot menu: entries cannot be edited
        # (no init=/bin/sh), and its second entry resets the admin password.
        app.boot()
        c = app.console
        c.expect_exact("reset the admin password", timeout=120)
        c.send("e")
        c.expect_exact("Enter username:", timeout=30)
        c.send("\r")
        c.expect_exact("Enter password:", timeout=30)
        c.send("\r")
        # Refused; GRUB may ask for a key before it shows the menu again.
        while c.expect_exact(["reset the admin password", "Press any key"], timeout=30) == 1:
            c.send("\r")
        c.send("\x1b[B")  # down: the reset entry
        c.send("\r")
        c.expect_exact("New admin password: ", timeout=300)
        c.sendline("a new password")
        c.expect_exact("The same password again: ", timeout=30)
        c.sendline("a new password")
        c.expect_exact("The admin password is set.", timeout=30)
        TIMINGS["reboot_to_greeting_bios_s"] = round(app.wait_greeting(), 1)
        app.serial_login("admin", "a new password")
        app.console.sendline("exit")
        wait_until(lambda: app.ssh("status").returncode == 0, timeout=180, what="SSH after the reboot")
        self.assertEqual(self.status()["gauges"]["queued_messages"], 5)
        time.sleep(3)
        self.assertEqual(self.received(s), 10, "delivery stayed suspended across the reboot")
        r = app.ssh("resume", "delivery")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_until(lambda: self.received(s) >= 15, timeout=120, what="the held messages after resume")
        s.stop()

        # A power cut under load: every message the appliance acknowledged
        # is delivered after the next boot (this one by UEFI).
        log = os.path.join(self.work, "accepted.log")
        s2 = self.sink("--expect", log)
        load = subprocess.Popen(
            [os.path.join(BUILD, "bench", "ringway-load"), "-s", f"127.0.0.1:{app.smtp_port}", "-c", "4",
             "--per-conn", "10", "-d", "40s", "--to", "u{n}@sink.test", "--mix", "1k:70,4k:30",
             "--timeout", "10s", "--accepted-log", log, "--json", "-q"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # ringway-load writes its accepted log when it ends: mail arriving
        # at the sink says the load is flowing, in and out, when the plug goes.
        wait_until(lambda: self.received(s2) >= 20, timeout=120, what="mail flowing under load")
        app.pull_the_plug()
        self.assertIsNone(load.poll(), "the load was still running at the power cut")
        out, err = load.communicate(timeout=120)
        acknowledged = lines(log)
        self.assertGreaterEqual(acknowledged, 20)
        app.boot(uefi=True)
        TIMINGS["power_cut_to_greeting_uefi_s"] = round(app.wait_greeting(), 1)
        try:
            wait_until(lambda: self.received(s2) >= acknowledged, timeout=300,
                       what=f"{acknowledged} acknowledged messages at the sink after the power cut")
        except AssertionError:
            st = app.ssh("--json", "status").stdout
            tail = app.ssh("tail", "lines", "60").stdout
            raise AssertionError(f"the sink has {self.received(s2)} of {acknowledged}; status: {st}\n"
                                 f"mail log:\n{tail}")
        rep = s2.stop()
        self.assertEqual((rep["missing"], rep["corrupt"]), (0, 0), rep)
        TIMINGS["power_cut_acknowledged"] = acknowledged
        TIMINGS["power_cut_duplicates"] = rep["duplicates"]

    def test_first_boot_setup_on_the_serial_console(self):
        app = self.app
        self.sink()
        app.boot()
        c = app.console
        c.expect_exact("Ringway first-boot setup", timeout=600)
        c.expect_exact("Host name of this gateway (fully qualified) [ringway.localdomain]: ", timeout=60)
        c.sendline("not a name")
        c.expect_exact("not accepted:", timeout=30)
        c.sendline("gw.appliance.test")
        c.expect_exact("Network: dhcp or static [dhcp]: ", timeout=30)
        c.sendline("")
        c.expect_exact("Admin password (Enter for none: SSH key only): ", timeout=30)
        c.sendline(PASSWORD)
        c.expect_exact("The same password again: ", timeout=30)
        c.sendline(PASSWORD)
        c.expect_exact("Enter for none): ", timeout=30)
        c.sendline("")
        c.expect_exact("Domains this gateway accepts mail for", timeout=30)
        c.sendline("sink.test")
        c.expect_exact("Internal mail server for them", timeout=30)
        c.sendline(f"10.0.2.2:{self.sink_port}")
        c.expect_exact("Networks allowed to relay through it", timeout=30)
        c.sendline("")
        c.expect_exact("Apply these settings? (yes/no) [yes]: ", timeout=30)
        c.sendline("yes")
        c.expect_exact("ringway-setup: done. Log in as admin.", timeout=300)
        app.serial_login("admin", PASSWORD)
        out = app.serial_command("showconfig smtp")
        self.assertIn('hostname = "gw.appliance.test"', out)
        self.assertIn('"sink.test"', out)


    # ---- upgrades ----

    def make_bundle(self, root, version):
        out = os.path.join(self.work, f"ringway-{version}.bundle")
        key = os.environ.get("RINGWAY_SIGNING_KEY") or os.path.join(IMAGE_DIR, "keys", "upgrade-signing.pem")
        subprocess.run([os.path.join(REPO, "image", "bundle"), root, key, version, out], check=True)
        return out

    def upgrade_status(self):
        try:  # the appliance may be rebooting
            r = self.app.ssh("--json", "upgrade", "status", timeout=60)
        except subprocess.TimeoutExpired:
            return None
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_slot(self, slot, timeout, log_has=None):
        """Until the appliance runs slot, boots it, has no trial (and its
        upgrade log mentions log_has): the status then."""
        seen = {}

        def settled():
            self.app.drain()
            st = self.upgrade_status()
            if st:
                seen["last"] = st
            return st if (st and st["running"] == slot and st["boots"] == slot and not st["trial"]
                          and (log_has is None or any(log_has in x for x in st["log"]))) else None
        try:
            return wait_until(settled, timeout=timeout, step=5, what=f"slot {slot} running and confirmed")
        except AssertionError:
            raise AssertionError(f"last upgrade status: {seen.get('last')}\nconsole:\n{self.app.console_text()[-3000:]}")

    def test_upgrade_rollback_and_a_broken_upgrade_that_falls_back(self):
        app = self.app
        s = self.sink()
        key, pub = self.ssh_key()
        app.ssh_key = key
        self.seed(pub)
        # The bundles: the image's own root as version 2, and a broken one
        # (a kernel and initramfs but no system: it panics at every boot).
        root = os.path.join(self.work, "root.squashfs")
        subprocess.run(["tar", "-xf", os.path.join(IMAGE_DIR, "ringway.bundle"), "-C", self.work, "root.squashfs"],
                       check=True)
        good = self.make_bundle(root, "2.0-test")
        tiny = os.path.join(self.work, "tiny")
        subprocess.run(["unsquashfs", "-q", "-n", "-d", tiny, root, "boot/vmlinuz", "boot/initrd.img"], check=True,
                       capture_output=True)
        broken_root = os.path.join(self.work, "broken.squashfs")
        subprocess.run(["mksquashfs", tiny, broken_root, "-comp", "gzip", "-noappend", "-quiet"], check=True,
                       capture_output=True)
        broken = self.make_bundle(broken_root, "3.0-broken")

        app.boot()
        app.wait_greeting()
        app.console.expect_exact("ringway-setup: done", timeout=300)
        wait_until(lambda: app.ssh("status").returncode == 0, timeout=180, what="SSH")
        st = self.wait_slot("a", timeout=300)
        self.assertEqual([x["holds_system"] for x in st["slots"]], [True, False])

        # The appliance's own commands: a load test from the appliance to a
        # sink on the host, then name servers, SSH keys and time servers.
        load_sink = sink_test.Sink(listen="127.0.0.1:0")
        self.addCleanup(load_sink.cleanup)
        r = app.ssh("--json", "loadtest", f"10.0.2.2:{load_sink.port}", "--count", "50", "--connections", "2",
                    timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["accepted"], 50)
        wait_until(lambda: (load_sink.stats() or {}).get("received", 0) >= 50, timeout=60,
                   what="the load test's mail at the sink")
        r = app.ssh("dnsconfig", "10.0.2.3")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)

        def network():
            r = app.ssh("--json", "interfaceconfig")
            return json.loads(r.stdout) if r.returncode == 0 else None
        net = wait_until(network, timeout=120, step=2, what="interfaceconfig after dnsconfig")
        self.assertEqual((net["mode"], net["dns"]), ("dhcp", ["10.0.2.3"]))
        self.assertTrue(any(a.startswith("10.0.2.15/") for link in net["links"] for a in link.get("addresses", [])),
                        net)
        ssh_conf = json.loads(app.ssh("--json", "sshconfig").stdout)
        self.assertEqual((len(ssh_conf["keys"]), ssh_conf["password_authentication"]), (1, False))
        r = app.ssh("--json", "ntpconfig", "10.0.2.2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["servers"], ["10.0.2.2"])
        # State that must survive: queued mail (delivery suspended) and the
        # configuration's versions.
        self.assertEqual(app.ssh("suspend", "delivery").returncode, 0)
        for i in range(3):
            send(app.smtp_port, "u@sink.test", f"queued across upgrades {i}")
        wait_until(lambda: self.status()["gauges"]["queued_messages"] == 3, timeout=60, what="3 queued messages")
        history = json.loads(app.ssh("--json", "history").stdout)

        # Upgrade over SSH, the bundle on standard input.
        started = time.monotonic()
        with open(good, "rb") as f:
            r = app.ssh("upgrade", "-", stdin=f, timeout=1200)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assertIn("verified against the signed manifest", r.stdout)
        self.assertIn("rebooting into slot b", r.stdout)
        TIMINGS["upgrade_upload_s"] = round(time.monotonic() - started, 1)
        st = self.wait_slot("b", timeout=600, log_has="slot b healthy")
        TIMINGS["upgrade_to_confirmed_s"] = round(time.monotonic() - started, 1)
        self.assertEqual([(x["slot"], x["holds_system"]) for x in st["slots"]], [("a", True), ("b", True)])
        self.assertEqual(json.loads(app.ssh("--json", "history").stdout), history)
        self.assertEqual(self.status()["gauges"]["queued_messages"], 3)

        # Back to slot a on request.
        r = app.ssh("upgrade", "rollback")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.wait_slot("a", timeout=600, log_has="slot a healthy")
        self.assertEqual(self.status()["gauges"]["queued_messages"], 3)

        # A signed bundle whose system never comes up: two tries on
        # probation, then the boot loader returns to slot a by itself.
        started = time.monotonic()
        with open(broken, "rb") as f:
            r = app.ssh("upgrade", "-", stdin=f, timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        st = self.wait_slot("a", timeout=900, log_has="never became healthy")
        TIMINGS["broken_upgrade_to_fallback_s"] = round(time.monotonic() - started, 1)
        # "never became healthy" is logged only once GRUB has booted the
        # trial slot with both tries and none was confirmed (GRUB could
        # load it: a slot it cannot load is logged as such). The console
        # cannot tell: QEMU drops what nobody reads while it is written.
        self.assertFalse([x for x in st["log"] if "could not load" in x], st["log"])
        self.assertEqual(json.loads(app.ssh("--json", "history").stdout), history)
        self.assertEqual(self.status()["gauges"]["queued_messages"], 3)
        self.assertEqual(self.received(s), 0)
        self.assertEqual(app.ssh("resume", "delivery").returncode, 0)
        wait_until(lambda: self.received(s) >= 3, timeout=120, what="the queued mail delivered after it all")
        # The settings made before the upgrades are still there.
        self.assertEqual(json.loads(app.ssh("--json", "interfaceconfig").stdout)["dns"], ["10.0.2.3"])
        # shutdown powers the machine off: QEMU ends.
        r = app.ssh("shutdown")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_until(lambda: app.proc.poll() is not None, timeout=300, step=1, what="QEMU to end at power-off")


def tearDownModule():
    if TIMINGS:
        sys.stderr.write("\n[image test] timings: " + json.dumps(TIMINGS) + "\n")
        path = os.path.join(BUILD, "image-test-timings.json")
        with open(path, "w") as f:
            json.dump(TIMINGS, f, indent=1)


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    sink_test.BUILD = BUILD
    IMAGE_DIR = build_image()
    unittest.main(verbosity=2)
