#!/usr/bin/env python3
"""Delivery to many destinations with mixed behaviour: throughput, fairness
between destinations, and how fast the queue settles; and the cost of
provider limits (counters every core shares, behind one lock) against
destination limits alone, in the same run.

    deliverability_bench.py BUILD_DIR [--domains 1000] [--messages 20000] [--runs 3]

Each of the N recipient domains dI.test has one MX host, mxI.bench.test,
served by a DNS server on loopback (tests/integration/zone_dns.py). The MX
host's address picks how it behaves, one ringway-sink per address, all on
one port (delivery.smtp_port):

    I % 10 in 0..5  127.0.0.1  accepts                                  (60 %)
    I % 10 == 6     127.0.0.2  greylists every triple for 3 s           (10 %)
    I % 10 == 7     127.0.0.3  451 to 30 % of RCPTs                     (10 %)
    I % 10 == 8     127.0.0.4  waits 300 ms before answering the dot    (10 %)
    I % 10 == 9     127.0.0.5  nothing listens: connection refused      (10 %)

ringway-load sends M messages, one recipient each, spread over the domains
(closed loop, 32 connections). Retries come after 1 s (greylisting after
2 s), so the queue settles in seconds, not hours. Measured per run:

    accept_s      ringway-load's time to have every message accepted
    settle_s      from the first message until every deliverable message
                  (all but the refusing 10 %) has reached a sink
    delivered/s   deliverable messages / settle_s
    fairness      per accepting domain (class 0..5): the time its last
                  message was delivered, from the start; median, p90, max,
                  and max / median (1 = every destination finished together)
    cpu_ms/msg    ringwayd's CPU time (user + system) / deliverable messages

Variants, alternated within each run: `local` (destination limits only) and
`provider` (every MX host is one [[provider]] with limits too high to bind:
each connection and message also takes the shared counters' lock).
Medians of the runs are printed last, as JSON.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from zone_dns import ZoneServer  # noqa: E402

CLASSES = {  # I % 10 -> (sink address, sink flags, deliverable)
    0: ("127.0.0.1", [], True), 1: ("127.0.0.1", [], True), 2: ("127.0.0.1", [], True),
    3: ("127.0.0.1", [], True), 4: ("127.0.0.1", [], True), 5: ("127.0.0.1", [], True),
    6: ("127.0.0.2", ["--greylist", "3"], True),
    7: ("127.0.0.3", ["--rcpt-tempfail", "0.3"], True),
    8: ("127.0.0.4", ["--data-delay", "300"], True),
    9: ("127.0.0.5", None, False),
}


def free_port():
    """A port free on every sink address."""
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for addr in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            t = socket.socket()
            try:
                t.bind((addr, port))
            except OSError:
                ok = False
            t.close()
        if ok:
            return port
    raise RuntimeError("no free port")


def cpu_ns(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * (1_000_000_000 // os.sysconf("SC_CLK_TCK"))


def run_once(build, domains, messages, variant, work):
    d = tempfile.mkdtemp(prefix=f"dlv_{variant}_", dir=work)
    zone = {}
    for i in range(1, domains + 1):
        zone[f"d{i}.test"] = [{"MX": [10, f"mx{i}.bench.test"]}]
        zone[f"mx{i}.bench.test"] = [{"A": CLASSES[i % 10][0]}]
    dns = ZoneServer()
    dns.set_zone(zone)
    port = free_port()
    sinks = []
    for addr, flags in {(c[0], tuple(c[1])) for c in CLASSES.values() if c[1] is not None}:
        stats = os.path.join(d, f"sink-{addr}.json")
        p = subprocess.Popen([os.path.join(build, "bench", "ringway-sink"), "--listen", f"{addr}:{port}",
                              "--cores", "1", "--no-pin", "--stats", stats, "--seed", "7", *flags],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sinks.append((p, stats))
    gport = free_port()
    mail_log = os.path.join(d, "mail.jsonl")
    provider = ('[[provider]]\nname = "bench"\nmx_suffixes = ["bench.test"]\nmax_connections = 100000\n'
                'max_messages_per_hour = 1000000000\n') if variant == "provider" else ""
    cfg = os.path.join(d, "ringway.toml")
    with open(cfg, "w") as f:
        f.write(f"""[runtime]
cores = 2
pin = false
log_level = "warn"
mail_log = "{mail_log}"
[spool]
path = "{d}/spool.img"
size = "1G"
[[listener]]
name = "in"
address = "127.0.0.1"
port = {gport}
[smtp]
hostname = "mx.bench.test"
relay_networks = ["127.0.0.0/8"]
[dns]
servers = ["127.0.0.1:{dns.port}"]
timeout_ms = 1000
tries = 2
cache_entries = 100000
[delivery]
smtp_port = {port}
starttls = false
max_connections_per_destination = 4
connection_cache_time_ms = 500
first_retry_ms = 1000
max_retry_ms = 2000
greylist_retry_ms = 2000
destination_pause_ms = 1000
backoff_after_tempfails = 0
[metrics]
listen = ""
{provider}""")
    log = open(os.path.join(d, "ringwayd.log"), "w")
    g = subprocess.Popen([os.path.join(build, "admin", "ringwayd"), "--config", cfg], stdout=log,
                         stderr=subprocess.STDOUT, cwd=d)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", gport), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        accepted_log = os.path.join(d, "accepted.log")
        cpu0 = cpu_ns(g.pid)
        t0 = time.monotonic()
        ld = subprocess.run([os.path.join(build, "bench", "ringway-load"), "--json", "-q", "--seed", "3",
                             "-s", f"127.0.0.1:{gport}", "-c", "32", "-n", str(messages), "--domains",
                             str(domains), "--to", "u{n}@d{d}.test", "--accepted-log", accepted_log],
                            capture_output=True, text=True, timeout=600)
        accept_s = time.monotonic() - t0
        rep = json.loads(ld.stdout)
        # The deliverable: accepted recipients at domains whose MX takes mail.
        deliverable = 0
        with open(accepted_log) as f:
            for line in f:
                for rcpt in line.split()[1:]:
                    i = int(rcpt.rsplit("@", 1)[1][1:].split(".")[0])
                    deliverable += CLASSES[i % 10][2]

        def received():
            total = 0
            for _, stats in sinks:
                try:
                    with open(stats) as f:
                        total += json.load(f).get("received", 0)
                except (OSError, ValueError):
                    pass
            return total
        deadline = time.monotonic() + 600
        while received() < deliverable and time.monotonic() < deadline:
            time.sleep(0.05)
        settle_s = time.monotonic() - t0
        got = received()
        cpu = cpu_ns(g.pid) - cpu0
    finally:
        g.send_signal(signal.SIGTERM)
        try:
            g.wait(timeout=30)
        except subprocess.TimeoutExpired:
            g.kill()
        for p, _ in sinks:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
        dns.close()
    # Fairness: when each accepting domain's last message was delivered.
    start = None
    last = {}
    with open(mail_log) as f:
        for line in f:
            e = json.loads(line)
            if start is None and e.get("event") == "received":
                start = e["ts"]
            if e.get("event") == "delivery" and e.get("disposition") == "delivered":
                dom = e["rcpt"].rsplit("@", 1)[1]
                i = int(dom[1:].split(".")[0])
                if i % 10 <= 5:
                    last[dom] = e["ts"]
    done = sorted(ts_seconds(v) - ts_seconds(start) for v in last.values())
    med = statistics.median(done)
    out = {"variant": variant, "accepted": rep.get("accepted"), "accept_s": round(accept_s, 2),
           "deliverable": deliverable, "delivered": got, "settle_s": round(settle_s, 2),
           "delivered_per_s": round(got / settle_s, 1),
           "fair_median_s": round(med, 2), "fair_p90_s": round(done[int(len(done) * 0.9) - 1], 2),
           "fair_max_s": round(done[-1], 2), "fair_max_over_median": round(done[-1] / med, 2),
           "cpu_ms_per_msg": round(cpu / 1e6 / max(got, 1), 3)}
    shutil.rmtree(d, ignore_errors=True)
    return out


def ts_seconds(ts):
    # "2026-12-07T21:00:00.123456Z"
    from datetime import datetime
    return datetime.strptime(ts.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--domains", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="dlv_bench_")
    results = {"local": [], "provider": []}
    try:
        for r in range(a.runs):
            for v in (("local", "provider") if r % 2 == 0 else ("provider", "local")):
                res = run_once(os.path.abspath(a.build), a.domains, a.messages, v, work)
                print(json.dumps(res), flush=True)
                results[v].append(res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {}
    for v, rs in results.items():
        med[v] = {k: statistics.median(x[k] for x in rs) for k in rs[0] if isinstance(rs[0][k], (int, float))}
    print(json.dumps({"medians": med}, indent=1))


if __name__ == "__main__":
    main()
