#!/usr/bin/env python3
"""The scanners of bench/scan_e2e.sh: Debian's clamd and rspamd, started
privately by tests/integration/scanners.py (clamd with its own two-signature
database, rspamd with the stock rules and one normal worker on a loopback
port; nothing downloaded), kept up until stdin closes or a signal comes,
then stopped.

    scan_daemons.py

Once both answer, have scanned one message each (rspamd's first scan
loads what it loads lazily) and rspamd's process tree has gone quiet (its
hs_helper compiles the rules' Hyperscan databases for some seconds after
the start; at most 120 s are waited), prints one line:
    ready CLAMD_SOCKET RSPAMD_PORT CLAMD_PID RSPAMD_PID DNS_PORT
then reads commands from stdin, one per line:
    cpu   prints "cpu CLAMD_NS RSPAMD_NS RSPAMD_PROCS": the CPU time (user +
          system) so far of clamd (every thread) and of rspamd's process
          tree (the main process, its workers and helpers, and the children
          it has reaped), from /proc/PID/stat, in ns (clock-tick resolution)
    dns   prints "dns N NAME...": the queries that arrived so far on DNS_PORT
          (UDP on 127.0.0.1), a DNS server that never answers: pointed at
          by ringwayd's [dns] servers, it shows whether ringwayd asked
          anything (the names: the first 5)
"""
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from scanners import Clamd, Rspamd  # noqa: E402

TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def stat(pid):
    """(ppid, utime + stime, cutime + cstime) in clock ticks, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def tree_cpu(root):
    """CPU ticks of root and its descendants, and processes (of the tree) alive: a
    process that has exited counts in its parent's cutime once reaped."""
    procs = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            st = stat(int(e))
            if st:
                procs[int(e)] = st
    if root not in procs:
        return 0, 0
    children = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, n, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        _, own, reaped = procs[pid]
        total += own + reaped
        n += 1
        todo += children.get(pid, [])
    return total, n


def warm_up(c, r):
    msg = (b"From: warm@bench.test\r\nTo: up@bench.test\r\nSubject: warm-up\r\n"
           b"Message-ID: <warm-up@bench.test>\r\n\r\nOne message before the measurements.\r\n")
    c.scan(msg)
    with socket.create_connection(("127.0.0.1", r.port), timeout=60) as s:
        s.sendall(b"POST /checkv2 HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(msg) + msg)
        while s.recv(65536):
            pass
    # Quiet: less than 20 ms of CPU in each of 3 seconds in a row.
    quiet, last, end = 0, None, time.monotonic() + 120
    while quiet < 3 and time.monotonic() < end:
        now = tree_cpu(r.proc.pid)[0] + tree_cpu(c.proc.pid)[0]
        quiet = quiet + 1 if last is not None and (now - last) * TICK_NS < 20_000_000 else 0
        last = now
        time.sleep(1)


class DnsCounter:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.n, self.names = 0, []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            q = self.sock.recv(4096)
            self.n += 1
            if len(self.names) < 5:
                self.names.append(qname(q))


def qname(q):
    labels, i = [], 12
    try:
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
    except IndexError:
        return "?"
    return ".".join(labels) + "."


def stop(*_):
    raise SystemExit(0)


def start(cls):
    """cls() that stops what it started when interrupted (a signal) while it waits for it."""
    d = cls.__new__(cls)
    d.proc = None
    try:
        d.__init__()
    except BaseException:
        if getattr(d, "dir", None):
            d.stop()
        raise
    return d


def main():
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, stop)
    with start(Clamd) as c, start(Rspamd) as r:
        warm_up(c, r)
        dns = DnsCounter()
        print(f"ready {c.socket} {r.port} {c.proc.pid} {r.proc.pid} {dns.port}", flush=True)
        for line in sys.stdin:
            if line.strip() == "cpu":
                cl = tree_cpu(c.proc.pid)[0]
                rs, n = tree_cpu(r.proc.pid)
                print(f"cpu {cl * TICK_NS} {rs * TICK_NS} {n}", flush=True)
            elif line.strip() == "dns":
                print(" ".join(["dns", str(dns.n)] + dns.names), flush=True)
            elif line.strip():
                print(f"error unknown command {line.strip()!r}", flush=True)


if __name__ == "__main__":
    main()
