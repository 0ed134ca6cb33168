#!/usr/bin/env python3
"""Many idle connections: ringwayd holds them (each past its greeting)
while a fresh client still gets its greeting promptly; reports the memory
per idle connection. The count is 10,000, or fewer when the open-files limit
cannot hold both ends (the test says how many it used).

    idle_test.py BUILD_DIR [COUNT]
"""
import os
import resource
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ringway_harness import Raw, Ringwayd  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0


def main():
    build = os.path.abspath(sys.argv[1])
    want = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Both ends live on this machine: the daemon's and ours (same limit).
    count = min(want, hard - 200)
    d = Ringwayd(build, listener_extra=f"max_connections = {count + 100}\nmax_connections_per_ip = {count + 100}\n"
                                      "idle_timeout_s = 600\ngreeting_timeout_s = 600\n", cores=2,
                  # The clients' addresses are trusted, so the per-IP connection rate limit stays out of the way.
                  relay_networks='["127.0.0.2/32", "127.0.1.0/24"]')
    socks = []
    try:
        base = rss_kib(d.proc.pid)
        sel = selectors.DefaultSelector()
        sources = [f"127.0.1.{i}" for i in range(1, 51)]  # spread over source addresses (ephemeral ports)
        t0 = time.monotonic()
        for i in range(count):
            s = socket.socket()
            s.setblocking(False)
            s.bind((sources[i % len(sources)], 0))
            try:
                s.connect(("127.0.0.1", d.port))
            except BlockingIOError:
                pass
            socks.append(s)
            sel.register(s, selectors.EVENT_READ)
        greeted = 0
        other = {}
        deadline = time.monotonic() + 120
        pending = set(range(count))
        index = {s.fileno(): i for i, s in enumerate(socks)}
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                i = index[key.fileobj.fileno()]
                try:
                    data = key.fileobj.recv(512)
                except BlockingIOError:
                    continue
                sel.unregister(key.fileobj)
                pending.discard(i)
                if data.startswith(b"220 "):
                    greeted += 1
                else:
                    other[data[:40]] = other.get(data[:40], 0) + 1
        took = time.monotonic() - t0
        assert greeted == count, f"only {greeted} of {count} connections got a greeting; others: {other}"
        held = rss_kib(d.proc.pid)
        # With all of them open and idle, a new client is served at once.
        t1 = time.monotonic()
        r = Raw(d.port, "127.0.0.2")
        code, _ = r.reply()
        latency = time.monotonic() - t1
        r.send("EHLO fresh.test\r\n")
        assert r.reply()[0] == 250
        r.close()
        assert code == 220, code
        assert latency < 1.0, f"fresh client waited {latency:.3f}s for its greeting"
        assert d.proc.poll() is None, "ringwayd died"
        per_conn = (held - base) * 1024 / count
        print(f"ok: {count} idle connections greeted in {took:.1f}s; fresh greeting in {latency * 1000:.1f} ms; "
              f"ringwayd RSS {base} KiB -> {held} KiB = {per_conn:.0f} bytes per idle connection")
    except AssertionError:
        print(d.log_text()[-3000:])
        raise
    finally:
        for s in socks:
            s.close()
        d.cleanup()


if __name__ == "__main__":
    main()
