"""Debian's clamd and rspamd, started privately for tests and benchmarks:
each in its own directory, on its own socket or loopback port, with
nothing downloaded. clamd loads only the signature database made here
(the EICAR test string and a custom marker, as .ndb hex signatures);
rspamd runs Debian's stock rules with one normal worker.

    with Clamd() as c, Rspamd() as r:
        c.socket, r.port
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARKER = b"RINGWAY-CUSTOM-MALWARE-MARKER-7f3a"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# The names clamd reports (.UNOFFICIAL: a database that is not ClamAV's own).
EICAR_NAME = "Ringway.Test.EICAR.UNOFFICIAL"
MARKER_NAME = "Ringway.Test.Custom.UNOFFICIAL"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout, what, proc, log):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if cond():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start in {timeout} s:\n{_tail(log)}")


def _tail(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-3000:]
    except OSError:
        return ""


class _Daemon:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # rspamd's main process takes its workers down with it.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "out", None):
            self.out.close()
            self.out = None
        shutil.rmtree(self.dir, ignore_errors=True)


class Clamd(_Daemon):
    """clamd on a Unix socket (and a loopback TCP port)."""

    def __init__(self, timeout=120):
        exe = shutil.which("clamd") or "/usr/sbin/clamd"
        if not os.access(exe, os.X_OK):
            raise RuntimeError("clamd is a test dependency (Debian's clamav-daemon; scripts/deps.sh test)")
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix="rw_clamd_")
        db = os.path.join(self.dir, "db")
        os.mkdir(db)
        with open(os.path.join(db, "ringway-test.ndb"), "w") as f:
            f.write(f"Ringway.Test.EICAR:0:*:{EICAR.hex()}\n")
            f.write(f"Ringway.Test.Custom:0:*:{MARKER.hex()}\n")
        self.socket = os.path.join(self.dir, "clamd.sock")
        self.port = free_port()
        self.log = os.path.join(self.dir, "clamd.log")
        conf = os.path.join(self.dir, "clamd.conf")
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "root")
        with open(conf, "w") as f:
            f.write(f"Foreground yes\nLocalSocket {self.socket}\nTCPSocket {self.port}\nTCPAddr 127.0.0.1\n"
                    f"DatabaseDirectory {db}\nLogFile {self.log}\nPidFile {self.dir}/clamd.pid\nUser {user}\n"
                    "StreamMaxLength 100M\nMaxThreads 4\nSelfCheck 0\n")
        self.exe, self.conf, self.timeout = exe, conf, timeout
        self.out = open(self.log + ".out", "w")
        self.proc = subprocess.Popen([exe, "-c", conf], stdout=self.out, stderr=subprocess.STDOUT)
        _wait(self._pings, timeout, "clamd", self.proc, self.log + ".out")

    def restart(self):
        """Stops clamd (closing every connection to it) and starts it again
        on the same socket and database."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.proc = subprocess.Popen([self.exe, "-c", self.conf], stdout=self.out, stderr=subprocess.STDOUT)
        _wait(self._pings, self.timeout, "clamd", self.proc, self.log + ".out")

    def _pings(self):
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(self.socket)
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def scan(self, data):
        """clamd's own answer for data (for checks of the test itself)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.socket)
            s.sendall(b"zINSTREAM\0" + struct.pack(">I", len(data)) + data + struct.pack(">I", 0))
            return s.recv(4096).rstrip(b"\0").decode()


class Rspamd(_Daemon):
    """rspamd's normal worker on a loopback port, Debian's rules."""

    CONF = """
.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
}
logging {
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "error";
}
worker "normal" {
    bind_socket = "127.0.0.1:%d";
    count = 1;
    .include "$CONFDIR/worker-normal.inc"
}
"""

    def __init__(self, timeout=120):
        exe = shutil.which("rspamd") or "/usr/bin/rspamd"
        if not os.access(exe, os.X_OK):
            raise RuntimeError("rspamd is a test dependency (Debian's rspamd; scripts/deps.sh test)")
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix="rw_rspamd_")
        for d in ("db", "run", "local"):
            os.mkdir(os.path.join(self.dir, d))
        self.port = free_port()
        conf = os.path.join(self.dir, "rspamd.conf")
        with open(conf, "w") as f:
            f.write(self.CONF % self.port)
        self.log = os.path.join(self.dir, "rspamd.log")
        args = [exe, "-f", "-c", conf, f"--var=DBDIR={self.dir}/db", f"--var=RUNDIR={self.dir}/run",
                f"--var=LOGDIR={self.dir}", f"--var=LOCAL_CONFDIR={self.dir}/local"]
        if os.geteuid() == 0:
            args += ["-u", "root", "-g", "root", "-i"]
        self.out = open(self.log + ".out", "w")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(self._answers, timeout, "rspamd", self.proc, self.log + ".out")

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
                return b"pong" in s.recv(4096)
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        super().stop()
