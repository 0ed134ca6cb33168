#!/usr/bin/env python3
"""The observer of bench/admin_bench.sh: asks ringwayd's control socket
(JSON lines, protocol 1) and its /metrics endpoint, timing each answer.

    admin_observe.py poll SOCKET METRICS_ADDR HELD_LOG STOP_FILE
        every second until STOP_FILE exists: GET /metrics, status, and
        showmessage of a held message; prints "kind milliseconds" lines.
    admin_observe.py once SOCKET ACCEPTED_LOG
        with a queue in place: showmessage x 20, workqueue x 10, status x 10;
        prints the latency of each kind.
"""
import json
import os
import random
import socket
import statistics
import sys
import time
import urllib.request


class Control:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(120)
        self.s.connect(path)
        self.buf = b""

    def call(self, cmd, **args):
        t0 = time.perf_counter()
        self.s.sendall(json.dumps({"v": 1, "cmd": cmd, "args": args}).encode() + b"\n")
        while b"\n" not in self.buf:
            d = self.s.recv(1 << 20)
            if not d:
                raise ConnectionError("control socket closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        ms = (time.perf_counter() - t0) * 1000
        return json.loads(line), ms


def held_mids(ctl, counters):
    """MIDs are the shard (top byte) and a per-shard counter from 1: the
    ones of these that are queued now."""
    found = []
    for shard in (0, 1):
        for n in counters:
            mid = f"{(shard << 56) | n:016X}"
            r, _ = ctl.call("showmessage", mid=mid)
            if r.get("ok"):
                found.append(mid)
    return found


def poll(sock, metrics_addr, _held_log, stop):
    ctl = Control(sock)
    mids = held_mids(ctl, range(1, 11))
    if not mids:
        raise SystemExit("admin_observe: no held message found")
    url = f"http://{metrics_addr}/metrics"
    with open(stop + ".ready", "w"):
        pass  # the load starts now
    i = 0
    while not os.path.exists(stop):
        t0 = time.perf_counter()
        urllib.request.urlopen(url, timeout=30).read()
        print(f"metrics {(time.perf_counter() - t0) * 1000:.3f}")
        r, ms = ctl.call("status")
        assert r.get("ok"), r
        print(f"status {ms:.3f}")
        r, ms = ctl.call("showmessage", mid=mids[i % len(mids)])
        assert r.get("ok"), r
        print(f"showmessage {ms:.3f}")
        sys.stdout.flush()
        i += 1
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))


def once(sock, _accepted_log):
    ctl = Control(sock)
    st, _ = ctl.call("status")
    queued = st["result"]["gauges"]["queued_messages"]
    rng = random.Random(7)
    mids = held_mids(ctl, [rng.randint(1, max(1, queued // 4)) for _ in range(10)])
    if not mids:
        raise SystemExit("admin_observe: no queued message found")
    lat = {"showmessage": [], "workqueue": [], "status": []}
    for i in range(20):
        r, ms = ctl.call("showmessage", mid=mids[i % len(mids)])
        assert r.get("ok"), r
        lat["showmessage"].append(ms)
    rows = 0
    for _ in range(10):
        r, ms = ctl.call("workqueue")
        assert r.get("ok"), r
        rows = sum(d.get("queued_recipients", 0) for d in r["result"]["destinations"])
        lat["workqueue"].append(ms)
        r, ms = ctl.call("status")
        assert r.get("ok"), r
        lat["status"].append(ms)
    print(f"with {queued} messages queued ({rows} recipients in workqueue):")
    for k, v in lat.items():
        v.sort()
        print(f"  {k:<12} n={len(v)} median {statistics.median(v):.2f} ms, max {v[-1]:.2f} ms")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "poll":
        poll(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "once":
        once(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)
