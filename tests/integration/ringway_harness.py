"""Starts and stops a real ringwayd for integration tests.

A private directory per daemon: configuration, spool file, mail log, TLS
files. The daemon listens on a free loopback port; everything is torn down
at the end (SIGTERM, then SIGKILL after a bounded wait).
"""
import base64
import json
import resource
import os
import signal
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, step=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Ringwayd:
    def __init__(self, build_dir, listener_extra="", smtp_extra="", cores=2, users=None,
                 relay_networks='["127.0.0.2/32"]', tail="", nofile=None, shards=None, env=None):
        self.build = build_dir
        self.dir = tempfile.mkdtemp(prefix="rw_it_", dir=os.environ.get("RINGWAY_TEST_TMP", os.getcwd()))
        self.port = free_port()
        self.spool = os.path.join(self.dir, "spool.img")
        self.mail_log = os.path.join(self.dir, "mail.jsonl")
        self.creds = os.path.join(self.dir, "credentials")
        if users:
            for user, pw in users.items():
                subprocess.run([os.path.join(build_dir, "admin", "ringway-passwd"), "--file", self.creds, user],
                               input=pw + "\n", text=True, check=True, capture_output=True)
        self.config = os.path.join(self.dir, "ringway.toml")
        # Tests never let the gateway reach the real DNS: unless the test
        # brings its own [dns], point the resolver at a closed loopback port
        # (every lookup fails at once as temporary), so mail without a route
        # stays queued for the test to inspect.
        no_dns = "" if "[dns]" in tail + smtp_extra + listener_extra else \
            '[dns]\nservers = ["127.0.0.1:9"]\ntimeout_ms = 200\ntries = 1\n'
        # Many daemons run at once in the tests: no shared metrics port
        # unless the test asks for one.
        no_metrics = "" if "[metrics]" in tail else '[metrics]\nlisten = ""\n'
        # Tests that fill the small spool check its own 452 when full, so
        # resource conservation's spool levels stay off unless asked for.
        if "[conservation]" not in tail:
            no_metrics += "[conservation]\nspool_tarpit_percent = 0\nspool_refuse_percent = 0\n"
        with open(self.config, "w") as f:
            f.write(f"""
[runtime]
cores = {cores}
pin = false
log_level = "info"
mail_log = "{self.mail_log}"
drain_timeout_ms = 2000

[spool]
path = "{self.spool}"
size = "128M"

[[listener]]
name = "test"
address = "127.0.0.1"
port = {self.port}
{listener_extra}

[smtp]
hostname = "mx.ringway.test"
accepted_domains = ["local.test"]
relay_networks = {relay_networks}
credentials_file = "{self.creds}"
{smtp_extra}
{tail}
{no_dns}
{no_metrics}
""")
        self.log = open(os.path.join(self.dir, "ringwayd.log"), "w+")
        if shards:  # a spool formatted with this many shards (default: one per core)
            subprocess.run([os.path.join(build_dir, "admin", "ringwayd"), "--format-spool", self.spool,
                            "--size", "128M", "--shards", str(shards)], check=True, capture_output=True)
        # nofile: (soft, hard) open-files limit to start ringwayd with.
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)) if nofile else None
        self.proc = subprocess.Popen([os.path.join(build_dir, "admin", "ringwayd"), "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir, preexec_fn=limit,
                                     env={**os.environ, **(env or {})})
        wait_until(self._listening, timeout=30, what="ringwayd to listen")

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("ringwayd exited at start:\n" + self.log_text())
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def _greets(self):
        """ringwayd answers a connection with a greeting (220, or 421 for a
        suspended listener): a TCP connect alone can reach a socket the
        kernel holds before the daemon takes connections."""
        if self.proc.poll() is not None:
            raise AssertionError("ringwayd exited at start:\n" + self.log_text())
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                line = s.recv(512)
                return len(line) >= 4 and line[:3].isdigit() and line[3:4] in (b" ", b"-")
        except OSError:
            return False

    def log_text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def journal(self):
        try:
            with open(self.mail_log) as f:
                # A last line without its newline is still being written.
                return [json.loads(l) for l in f if l.strip() and l.endswith("\n")]
        except FileNotFoundError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("ringwayd did not stop on SIGTERM within 15 s")
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def spool_messages(self):
        """The live messages in the (stopped) spool, bodies decoded."""
        out = subprocess.run([os.path.join(self.build, "tests", "tools", "spool_dump"), "--path", self.spool],
                             capture_output=True, check=True)
        msgs = []
        for line in out.stdout.decode().splitlines():
            m = json.loads(line)
            m["body"] = base64.b64decode(m["body_b64"])
            msgs.append(m)
        return msgs

    def cleanup(self):
        self.kill()
        self.log.close()
        subprocess.run(["rm", "-rf", self.dir])


class Raw:
    """A raw SMTP client socket: send bytes, read reply lines."""

    def __init__(self, port, source="127.0.0.1", timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.buf = b""

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed; had " + repr(self.buf))
            self.buf += d
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l.decode("utf-8", "replace")

    def reply(self):
        """One (possibly multi-line) reply: (code, [lines])."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return int(lines[-1][:3]), lines

    def closed(self, timeout=5):
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()
