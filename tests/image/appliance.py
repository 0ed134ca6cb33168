"""Drives the appliance image under QEMU (image/run): its serial console
through pexpect on a Unix socket, its monitor for power buttons, and its
forwarded SMTP and SSH ports."""
import os
import signal
import socket
import subprocess
import time

import pexpect
import pexpect.fdpexpect

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smtp_greeting(port, timeout=2.0):
    """The 220 line, or None while nothing answers (QEMU's forwarder accepts
    and then drops connections until the appliance listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            line = s.recv(512).decode("ascii", "replace")
            return line if line.startswith("220") else None
    except OSError:
        return None


class Appliance:
    """One appliance: a disk image, a spool disk, forwarded ports; booted
    and stopped as often as a test needs."""

    def __init__(self, image, workdir, spool=None):
        self.image = image
        self.dir = workdir
        self.spool = spool or os.path.join(workdir, "spool.img")
        self.smtp_port = free_port()
        self.ssh_port = free_port()
        self.boots = 0
        self.proc = None
        self.console = None
        self.started = None
        self.ssh_key = None

    # ---- power ----
    def boot(self, uefi=False, memory=1024):
        self.boots += 1
        n = self.boots
        self.serial_path = os.path.join(self.dir, f"serial-{n}.sock")
        self.monitor_path = os.path.join(self.dir, f"monitor-{n}.sock")
        cmd = [os.path.join(REPO, "image", "run"), self.image, "--spool", self.spool,
               "--smtp-port", str(self.smtp_port), "--ssh-port", str(self.ssh_port), "--memory", str(memory),
               "--serial", f"unix:{self.serial_path},server=on,wait=off",
               "--", "-monitor", f"unix:{self.monitor_path},server=on,wait=off"]
        if uefi:
            cmd.insert(2, "--uefi")
        self.qemu_log = open(os.path.join(self.dir, f"qemu-{n}.log"), "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.qemu_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited at start: {self.qemu_text()}")
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(self.serial_path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise AssertionError("QEMU's serial socket did not appear")
                time.sleep(0.05)
        self.console_log = open(os.path.join(self.dir, f"console-{n}.log"), "w")
        self.console = pexpect.fdpexpect.fdspawn(self.sock.fileno(), encoding="utf-8", codec_errors="replace",
                                                 timeout=60)
        self.console.logfile_read = self.console_log

    def wait_greeting(self, timeout=600):
        """Seconds from QEMU's start to the first SMTP greeting."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited: {self.qemu_text()}")
            if smtp_greeting(self.smtp_port):
                return time.monotonic() - self.started
            time.sleep(0.5)
        raise AssertionError(f"no SMTP greeting within {timeout}s; console:\n{self.console_text()[-3000:]}")

    def monitor(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.monitor_path)
            s.settimeout(5)
            s.sendall(command.encode() + b"\n")
            time.sleep(0.3)

    def power_button(self, timeout=300):
        """ACPI power button: the appliance shuts down cleanly."""
        self.monitor("system_powerdown")
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no clean shutdown within {timeout}s:\n{self.console_text()[-3000:]}")
        self._closed()

    def pull_the_plug(self):
        """kill -9 QEMU: what a power cut does to the appliance."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._closed()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.pull_the_plug()

    def _closed(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.console_log.close()
        self.qemu_log.close()

    # ---- what it said ----
    def drain(self):
        """Reads what the console has printed so far into its log (the
        log holds only what has been read)."""
        try:
            for _ in range(1000):
                self.console.read_nonblocking(65536, timeout=0.05)
        except (pexpect.TIMEOUT, pexpect.EOF):
            pass

    def console_text(self):
        if self.console_log and not self.console_log.closed:
            self.console_log.flush()
        with open(os.path.join(self.dir, f"console-{self.boots}.log"), errors="replace") as f:
            return f.read()

    def qemu_text(self):
        self.qemu_log.flush()
        with open(self.qemu_log.name, errors="replace") as f:
            return f.read()

    # ---- the consoles ----
    def serial_login(self, user, password, timeout=300):
        c = self.console
        c.sendline("")
        c.expect("login: ", timeout=timeout)
        c.sendline(user)
        c.expect_exact("Password: ", timeout=60)
        c.sendline(password)
        c.expect_exact("ringway> ", timeout=120)

    def serial_command(self, command, timeout=60):
        """Runs one shell command on the logged-in serial console; its output."""
        c = self.console
        c.sendline(command)
        c.expect_exact("ringway> ", timeout=timeout)
        out = c.before
        # The terminal echoes the command line first.
        return out.split("\n", 1)[1] if "\n" in out else out

    def ssh(self, *command, key=None, extra=(), timeout=120, stdin=subprocess.DEVNULL):
        cmd = ["ssh", "-p", str(self.ssh_port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", *extra]
        if key or self.ssh_key:
            cmd += ["-i", key or self.ssh_key, "-o", "IdentitiesOnly=yes"]
        cmd += ["--", "admin@127.0.0.1", *command]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=stdin)
