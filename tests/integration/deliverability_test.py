#!/usr/bin/env python3
"""Deliverability: source-IP pools ([[source]], [[pool]]), providers
([[provider]]) and warm-up ([[warmup]]) against ringway-sink, which records
each connection's client address and the name of its first EHLO. Sources
are loopback addresses (any of 127.0.0.0/8 can be bound); providers are
found by MX names a DNS server on loopback serves.

    deliverability_test.py BUILD_DIR [unittest args]
"""
import json
import os
import re
import signal
import smtplib
import ssl
import subprocess
import sys
import time
import unittest
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import delivery_test  # noqa: E402
import sink_test  # noqa: E402
from delivery_test import DeliveryTest, load, restart, ringwayd_bin, retrying, send  # noqa: E402
from ringway_harness import free_port, wait_until  # noqa: E402
from zone_dns import ZoneServer  # noqa: E402


def sources_toml(sources, pools):
    """sources: (name, address, helo, extra dict); pools: (name, [members])."""
    out = ""
    for name, addr, helo, extra in sources:
        out += f'[[source]]\nname = "{name}"\naddress = "{addr}"\nhelo = "{helo}"\n'
        out += "".join(f"{k} = {v}\n" for k, v in (extra or {}).items())
    for name, members in pools:
        out += f'[[pool]]\nname = "{name}"\nsources = {json.dumps(members)}\n'
    return out


def send_from(port, source_ip, sender, rcpts, msg):
    """One transaction from a given client address; returns the queue id."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30,
                      source_address=(source_ip, 0)) as c:
        code, resp = c.ehlo()
        assert code == 250, (code, resp)
        code, resp = c.mail(sender)
        assert code == 250, (code, resp)
        for r in rcpts:
            code, resp = c.rcpt(r)
            assert code == 250, (r, code, resp)
        code, resp = c.data(msg)
        assert code == 250, (code, resp)
        return re.search(rb"queued as ([0-9A-Fa-f]+)", resp).group(1).decode()


class SourcePools(DeliveryTest):
    """A destination's connections come from its mail's pool, spread over
    the pool's sources by weight, each greeting with its own name."""

    def shell(self, g, *args):
        r = subprocess.run([os.path.join(delivery_test.BUILD, "admin", "ringway"), "--socket",
                            os.path.join(g.dir, "var", "ringway.sock"), "--json", *args],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r

    def test_connections_are_spread_by_weight(self):
        s = self.sink()
        tail = sources_toml([("out1", "127.0.0.2", "out1.pool.test", None),
                             ("out2", "127.0.0.3", "out2.pool.test", None)],
                            [("main", ["out1:3", "out2"])])
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"])],
                         delivery={"default_pool": "main", "max_messages_per_connection": 1,
                                   "connection_cache_time_ms": 0, "max_connections_per_destination": 4},
                         tail_extra=tail)
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "4", "-n", "80", "--to", "user@dst.test")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 80, timeout=60, what="80 messages at the sink")
        # The mail log names each connection's pool and source.
        conns = [e for e in g.journal() if e.get("event") == "connection"]
        self.assertTrue(conns)
        for e in conns:
            self.assertEqual(e["pool"], "main", e)
            self.assertIn((e["source"], e["source_ip"]), {("out1", "127.0.0.2"), ("out2", "127.0.0.3")}, e)
        hs = json.loads(self.shell(g, "hoststatus", "dst.test").stdout)["destinations"][0]
        self.assertEqual(hs["pool"], "main")
        made = {x["source"]: x["connections_made"] for x in hs["sources"]}
        rep = s.stop()
        self.assertEqual(rep["received"], 80)
        pc = rep["peer_connections"]
        self.assertEqual(set(pc), {"127.0.0.2", "127.0.0.3"}, pc)
        self.assertEqual(made, {"out1": pc["127.0.0.2"], "out2": pc["127.0.0.3"]})
        # Weighted 3:1. Smooth weighted round robin picks in the order
        # 1,1,2,1 per four connections; connections that found nothing left
        # to send skew it slightly, so the share is checked, not the count.
        share = pc["127.0.0.2"] / (pc["127.0.0.2"] + pc["127.0.0.3"])
        self.assertGreater(share, 0.65, pc)
        self.assertLess(share, 0.85, pc)
        self.assertEqual(rep["peers"]["127.0.0.2"] + rep["peers"]["127.0.0.3"], 80)
        # Every connection greeted with its source's name.
        self.assertEqual(rep["helos"], {"127.0.0.2 out1.pool.test": pc["127.0.0.2"],
                                        "127.0.0.3 out2.pool.test": pc["127.0.0.3"]})

    def test_rule_policy_and_route_choose_the_pool(self):
        """Precedence: a content rule's pool action, then the client's mail
        flow policy, then the route's pool, then delivery.default_pool."""
        s = self.sink()
        tail = sources_toml([("a", "127.0.0.4", "a.pool.test", None), ("b", "127.0.0.5", "b.pool.test", None),
                             ("c", "127.0.0.6", "c.pool.test", None), ("d", "127.0.0.7", "d.pool.test", None)],
                            [("pa", ["a"]), ("pb", ["b"]), ("pc", ["c"]), ("pd", ["d"])])
        tail += '[[route]]\ndomain = "routed.test"\nhosts = ["127.0.0.1:%d"]\npool = "pb"\n' % s.port
        tail += ('[[content_rule]]\nname = "bulk"\ncondition = \'mail-from ~ /^bulk@/\'\n'
                 'actions = ["pool pc"]\n')
        tail += '[[mail_flow_policy]]\nname = "NEWSLETTER"\naction = "relay"\npool = "pd"\n'
        tail += '[[sender_group]]\nname = "NEWS"\npolicy = "NEWSLETTER"\nnetworks = ["127.0.0.9/32"]\n'
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"])],
                         delivery={"default_pool": "pa"}, tail_extra=tail)
        cases = [
            ("127.0.0.1", "x@src.test", "r1@dst.test", "127.0.0.4", "a.pool.test"),      # default
            ("127.0.0.1", "x@src.test", "r2@routed.test", "127.0.0.5", "b.pool.test"),   # route
            ("127.0.0.1", "bulk@src.test", "r3@dst.test", "127.0.0.6", "c.pool.test"),   # rule
            ("127.0.0.9", "x@src.test", "r4@dst.test", "127.0.0.7", "d.pool.test"),      # flow policy
            ("127.0.0.9", "bulk@src.test", "r5@routed.test", "127.0.0.6", "c.pool.test"),  # rule over policy
        ]
        mids = {}
        for client, sender, rcpt, _, _ in cases:
            mids[rcpt] = send_from(g.port, client, sender, [rcpt], b"Subject: p\r\n\r\nx\r\n")
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= len(cases), timeout=30,
                   what="every message at the sink")
        by_rcpt = {}
        for e in g.journal():
            if e.get("event") == "delivery" and e.get("disposition") == "delivered" and "dcid" in e:
                by_rcpt[e["rcpt"]] = e["dcid"]
        sources = {e["dcid"]: (e["source_ip"], e["pool"]) for e in g.journal() if e.get("event") == "connection"}
        for _, _, rcpt, ip, _ in cases:
            self.assertIn(rcpt, by_rcpt, by_rcpt)
            self.assertEqual(sources[by_rcpt[rcpt]][0], ip, (rcpt, sources[by_rcpt[rcpt]]))
        # A rule's pool commits a second message under the new envelope
        # (the mail log's content line names it); a policy's pool is in
        # the first message's own envelope.
        derived = {e["mid"]: e for e in g.journal() if e.get("event") == "content" and e.get("action") == "pool"}
        self.assertEqual(set(derived), {mids["r3@dst.test"], mids["r5@routed.test"]}, derived)
        rep = s.stop()
        for _, _, _, ip, helo in cases:
            self.assertIn(f"{ip} {helo}", rep["helos"])
        self.assertEqual(sum(rep["peers"].values()), len(cases))

    def test_a_source_limits_its_own_connections(self):
        s = self.sink("--data-delay", "50")
        tail = sources_toml([("one", "127.0.0.2", "one.pool.test", {"max_connections_per_destination": 2})],
                            [("small", ["one"])])
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"])],
                         delivery={"default_pool": "small", "max_connections_per_destination": 10},
                         tail_extra=tail)
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "8", "-n", "60", "--to", "user@dst.test")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 60, timeout=60, what="60 messages at the sink")
        hs = json.loads(self.shell(g, "hoststatus", "dst.test").stdout)["destinations"][0]
        self.assertEqual(hs["connection_limit"], 2)
        rep = s.stop()
        self.assertEqual(rep["peers"], {"127.0.0.2": 60})
        self.assertLessEqual(rep["max_concurrent_connections"], 2)
        self.assertEqual(rep["max_concurrent_connections"], 2)  # and it used both

    def test_a_source_rate_limit_holds_per_destination(self):
        s = self.sink()
        tail = sources_toml([("slow", "127.0.0.2", "slow.pool.test", {"max_messages_per_minute": 5}),
                             ("fast", "127.0.0.3", "fast.pool.test", None)],
                            [("mixed", ["slow", "fast"])])
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"])],
                         delivery={"default_pool": "mixed", "max_messages_per_connection": 1,
                                   "connection_cache_time_ms": 0},
                         tail_extra=tail)
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "2", "-n", "30", "--to", "user@dst.test")
        self.assertEqual(rc, 0, err)
        # The slow source sends 5 in its minute; the fast one takes the rest
        # rather than the mail waiting for the slow one.
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 30, timeout=30, what="30 messages at the sink")
        rep = s.stop()
        self.assertEqual(rep["peers"].get("127.0.0.2", 0), 5, rep["peers"])
        self.assertEqual(rep["peers"]["127.0.0.3"], 25)


class BusySources(DeliveryTest):
    """A connection that finds no source free (one at its limit, the other
    at its warm-up cap) ends quietly and no new one is tried at once: no
    spin, no crash, and the mail goes as sources allow."""

    def test_no_free_source_waits_instead_of_spinning(self):
        s = self.sink("--data-delay", "50")
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        tail = sources_toml([("one", "127.0.0.2", "one.pool.test", {"max_connections_per_destination": 1}),
                             ("new", "127.0.0.3", "new.pool.test", {"max_connections_per_destination": 1,
                                                                     "warmup": '"w"', "warmup_start": f'"{today}"'})],
                            [("p", ["one", "new"])])
        tail += '[[warmup]]\nname = "w"\ndaily = "1"\n'
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"])],
                         delivery={"default_pool": "p", "max_connections_per_destination": 10}, tail_extra=tail)
        def cpu_ticks():
            with open(f"/proc/{g.proc.pid}/stat") as f:
                return sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
        cpu0 = cpu_ticks()
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "4", "-n", "30", "--to", "user@dst.test")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 30, timeout=60, what="30 messages at the sink")
        cpu = cpu_ticks() - cpu0
        rep = s.stop()
        self.assertEqual(rep["peers"], {"127.0.0.2": 29, "127.0.0.3": 1})
        self.assertLessEqual(rep["max_concurrent_connections"], 2)
        # 30 messages at 50 ms each through one connection take about 1.5 s;
        # a spinning re-spawn would burn a core all that time.
        self.assertLess(cpu / os.sysconf("SC_CLK_TCK"), 1.0, "ringwayd CPU seconds")


class PoolConfiguration(DeliveryTest):
    """What bad pool configurations get: refused at start and at commit."""

    def check(self, text):
        d = self.tmpdir()
        path = os.path.join(d, "bad.toml")
        with open(path, "w") as f:
            f.write(text)
        r = retrying(lambda: subprocess.run([ringwayd_bin(), "--check-config", path],
                                            capture_output=True, text=True, timeout=30), ringwayd_bin())
        return r.returncode, r.stdout + r.stderr

    base = ('[[listener]]\nname = "in"\nport = 2525\n[smtp]\nhostname = "mx.test"\n')

    def test_an_address_the_machine_lacks_is_refused(self):
        rc, out = self.check(self.base + '[[source]]\nname = "x"\naddress = "192.0.2.77"\n'
                                         '[[pool]]\nname = "p"\nsources = ["x"]\n')
        self.assertNotEqual(rc, 0)
        self.assertIn("source[0].address", out)
        self.assertIn("not configured on this machine", out)

    def test_unknown_names_and_bad_weights_are_refused(self):
        rc, out = self.check(self.base + '[[source]]\nname = "x"\naddress = "127.0.0.2"\n'
                                         '[[pool]]\nname = "p"\nsources = ["x:0", "y", "x:2", "x"]\n'
                                         '[delivery]\ndefault_pool = "nope"\n'
                                         '[[route]]\ndomain = "a.test"\npool = "q"\n')
        self.assertNotEqual(rc, 0)
        self.assertIn('pool[0].sources[0]: "x:0" is not a source and weight', out)
        self.assertIn('pool[0].sources[1]: there is no source "y"', out)
        self.assertIn('pool[0].sources[3]: "x" is in the pool already', out)
        self.assertIn('delivery.default_pool: there is no pool "nope"', out)
        self.assertIn('route[0].pool: there is no pool "q"', out)

    def test_a_commit_naming_a_missing_address_is_refused_and_changes_nothing(self):
        s = self.sink()
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"])])
        sock = os.path.join(g.dir, "var", "ringway.sock")
        ringway = os.path.join(delivery_test.BUILD, "admin", "ringway")
        cand = os.path.join(self.tmpdir(), "cand.toml")
        with open(g.config) as f:
            text = f.read()
        with open(cand, "w") as f:
            f.write(text + '[[source]]\nname = "gone"\naddress = "192.0.2.77"\n'
                           '[[pool]]\nname = "p"\nsources = ["gone"]\n')
        r = subprocess.run([ringway, "--socket", sock, "load", cand], capture_output=True, text=True, timeout=30)
        out = r.stdout + r.stderr
        if r.returncode == 0:
            r = subprocess.run([ringway, "--socket", sock, "commit"], capture_output=True, text=True, timeout=30)
            out += r.stdout + r.stderr
        self.assertNotEqual(r.returncode, 0, out)
        self.assertIn("not configured on this machine", out)
        # The running configuration is unchanged: mail still flows.
        mid = send(g.port, "a@src.test", ["r@dst.test"], b"Subject: s\r\n\r\nx\r\n")
        self.wait_disposition(g, mid, "r@dst.test", {"delivered"})


class ShellMixin:
    def shell(self, g, *args, check=True):
        r = subprocess.run([os.path.join(delivery_test.BUILD, "admin", "ringway"), "--socket",
                            os.path.join(g.dir, "var", "ringway.sock"), "--json", *args],
                           capture_output=True, text=True, timeout=30)
        if check:
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return json.loads(r.stdout) if r.returncode == 0 else r


def bigmail_zone(domains, extra=None):
    """dN.test -> MX mxN.bigmail.test -> 127.0.0.1, and other.test -> mx.elsewhere.test."""
    zone = {}
    for i in range(1, domains + 1):
        zone[f"d{i}.test"] = [{"MX": [10, f"mx{i}.bigmail.test"]}]
        zone[f"mx{i}.bigmail.test"] = [{"A": "127.0.0.1"}]
    zone["other.test"] = [{"MX": [10, "mx.elsewhere.test"]}]
    zone["mx.elsewhere.test"] = [{"A": "127.0.0.1"}]
    zone.update(extra or {})
    return zone


class Providers(DeliveryTest, ShellMixin):
    """A provider's limits hold over all its destinations, whichever core
    owns each."""

    def setUp(self):
        super().setUp()
        self.dns = ZoneServer()
        self.addCleanup(self.dns.close)
        self.dns.set_zone(bigmail_zone(4))

    def start(self, s, provider, delivery=None):
        dns = {"servers": [f"127.0.0.1:{self.dns.port}"], "timeout_ms": 500, "tries": 2}
        d = {"smtp_port": s.port, "max_connections_per_destination": 10, "starttls": False}
        d.update(delivery or {})
        return self.gateway(dns=dns, delivery=d, tail_extra=provider)

    def test_a_connection_limit_holds_over_the_providers_destinations(self):
        s = self.sink("--data-delay", "150")
        g = self.start(s, '[[provider]]\nname = "bigmail"\nmx_suffixes = ["bigmail.test"]\nmax_connections = 2\n')
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "8", "-n", "48", "--domains", "4",
                            "--to", "u{n}@d{d}.test")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 48, timeout=90, what="48 messages at the sink")
        # The four destinations are owned by both cores; together they
        # never had more than two connections.
        cores = {d["core"] for i in range(1, 5) for d in self.shell(g, "hoststatus", f"d{i}.test")["destinations"]}
        self.assertEqual(cores, {0, 1})
        for i in range(1, 5):
            self.assertEqual(self.shell(g, "hoststatus", f"d{i}.test")["destinations"][0]["provider"], "bigmail")
        p = {x["provider"]: x for x in self.shell(g, "providers")["providers"]}
        self.assertEqual((p["bigmail"]["max_connections"], p["bigmail"]["sent_last_hour"]), (2, 48))
        self.assertIn("gmail", p)  # the built-in table is there too
        self.assertEqual(p["gmail"]["mx_suffixes"], ["google.com", "googlemail.com"])
        rep = s.stop()
        self.assertEqual(rep["received"], 48)
        self.assertEqual(rep["max_concurrent_connections"], 2)
        wait_until(lambda: {x["provider"]: x for x in self.shell(g, "providers")["providers"]}["bigmail"][
            "connections"] == 0, timeout=10, what="the provider's connections to be released")

    def test_an_hourly_limit_holds_and_the_rest_waits(self):
        s = self.sink()
        g = self.start(s, '[[provider]]\nname = "bigmail"\nmx_suffixes = ["bigmail.test"]\n'
                          'max_messages_per_hour = 10\n')
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "4", "-n", "16", "--domains", "3",
                            "--to", "u{n}@d{d}.test")
        self.assertEqual(rc, 0, err)
        # Mail for a domain of no provider is not held back.
        mid = send(g.port, "a@src.test", ["x@other.test"], b"Subject: o\r\n\r\nx\r\n")
        self.wait_disposition(g, mid, "x@other.test", {"delivered"})
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 11, timeout=30, what="11 messages at the sink")
        time.sleep(2)  # nothing more comes
        self.assertEqual(s.stats()["received"], 11)
        p = {x["provider"]: x for x in self.shell(g, "providers")["providers"]}
        self.assertEqual(p["bigmail"]["sent_last_hour"], 10)
        # The six others wait in the queue, not failed: no deferral was logged.
        queued = sum(d["ready_recipients"] for i in range(1, 4)
                     for d in self.shell(g, "hoststatus", f"d{i}.test")["destinations"])
        self.assertEqual(queued, 6)
        self.assertFalse([e for e in g.journal() if e.get("event") == "delivery" and e["disposition"] != "delivered"])


class Warmup(DeliveryTest, ShellMixin):
    """A warming source stops at its daily cap; the pool's warm sources or
    the overflow pool take the rest; the counts survive a restart."""

    def today(self):
        return datetime.now(timezone.utc).strftime("%Y-%m-%d")

    def config(self, pools, extra=""):
        return (sources_toml([("new1", "127.0.0.2", "new1.pool.test", {"warmup": '"new-ip"',
                                                                       "warmup_start": f'"{self.today()}"'}),
                              ("warm1", "127.0.0.3", "warm1.pool.test", None)], pools) +
                '[[warmup]]\nname = "new-ip"\ndaily = "5, 50"\nproviders = ["gmail: 3, 30"]\n' + extra)

    def test_cap_then_the_warm_source_and_a_restart_keeps_the_count(self):
        s = self.sink()
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"])],
                         delivery={"default_pool": "mixed", "max_messages_per_connection": 1,
                                   "connection_cache_time_ms": 0},
                         tail_extra=self.config([("mixed", ["new1:100", "warm1"])]))
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "2", "-n", "20", "--to", "user@dst.test")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 20, timeout=30, what="20 messages at the sink")
        st = self.shell(g, "warmup", "status")
        self.assertEqual(st["date"], self.today())
        self.assertEqual(len(st["sources"]), 1)
        src = st["sources"][0]
        self.assertEqual((src["source"], src["day"], src["warm"]), ("new1", 1, False))
        groups = {x["provider"]: (x["cap"], x["used"]) for x in src["providers"]}
        self.assertEqual(groups, {"gmail": (3, 0), "*": (5, 5)})
        # A clean restart: the day's count is still 5, so new1 sends nothing more.
        g.proc.send_signal(signal.SIGTERM)
        self.assertEqual(g.proc.wait(timeout=30), 0)
        restart(g)
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "2", "-n", "10", "--to", "user@dst.test")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 30, timeout=30, what="30 messages at the sink")
        src = self.shell(g, "warmup", "status")["sources"][0]
        self.assertEqual({x["provider"]: x["used"] for x in src["providers"]}["*"], 5)
        rep = s.stop()
        self.assertEqual(rep["peers"], {"127.0.0.2": 5, "127.0.0.3": 25})

    def test_overflow_pool_takes_the_rest_and_without_one_mail_waits(self):
        s = self.sink()
        pools = [("cold", ["new1"]), ("warmp", ["warm1"]), ("coldwith", ["new1"])]
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"]), ("wait.test", [f"127.0.0.1:{s.port}"])],
                         delivery={"default_pool": "coldwith"},
                         tail_extra=self.config(pools).replace('name = "coldwith"\n',
                                                               'name = "coldwith"\noverflow = "warmp"\n') +
                         '[[route]]\ndomain = "*.pool.test"\npool = "cold"\nhosts = ["127.0.0.1:%d"]\n' % s.port)
        # dst.test: new1 for 5, then the overflow pool's warm1.
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "2", "-n", "12", "--to", "user@dst.test")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 12, timeout=30, what="12 messages at the sink")
        # x.pool.test goes from "cold", whose only source is at its cap and
        # which has no overflow: the mail waits, no attempt is made.
        mid = send(g.port, "a@src.test", ["r@x.pool.test"], b"Subject: w\r\n\r\nx\r\n")
        time.sleep(2)
        self.assertEqual(s.stats()["received"], 12)
        self.assertFalse(self.deliveries(g, mid))
        hs = self.shell(g, "hoststatus", "*.pool.test")["destinations"][0]
        self.assertEqual((hs["pool"], hs["ready_recipients"]), ("cold", 1))
        rep = s.stop()
        self.assertEqual(rep["peers"], {"127.0.0.2": 5, "127.0.0.3": 7})

    def test_bad_warmup_configuration_is_refused(self):
        d = self.tmpdir()
        path = os.path.join(d, "bad.toml")
        with open(path, "w") as f:
            f.write('[[listener]]\nname = "in"\nport = 2525\n'
                    '[[warmup]]\nname = "w"\ndaily = "5, x"\nproviders = ["nosuch: 1", "gmail 3"]\n'
                    '[[source]]\nname = "s"\naddress = "127.0.0.2"\nwarmup = "w"\n'
                    '[[source]]\nname = "t"\naddress = "127.0.0.3"\nwarmup = "none"\nwarmup_start = "2026-02-30"\n'
                    '[[pool]]\nname = "p"\nsources = ["s"]\noverflow = "p"\n')
        r = retrying(lambda: subprocess.run([ringwayd_bin(), "--check-config", path], capture_output=True, text=True,
                                            timeout=30), ringwayd_bin())
        out = r.stdout + r.stderr
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('warmup[0].daily: "5, x"', out)
        self.assertIn('warmup[0].providers[0]: there is no provider "nosuch"', out)
        self.assertIn('warmup[0].providers[1]: "gmail 3" is not a provider and its caps', out)
        self.assertIn("source[0].warmup_start: missing", out)
        self.assertIn('source[1].warmup: there is no warm-up schedule "none"', out)
        self.assertIn('source[1].warmup_start: "2026-02-30"', out)
        self.assertIn("pool[0].overflow: names the pool itself", out)


def shaping_toml(name, pattern, action, threshold=1, period_s=60, duration_s=3600, scope=None, provider=None):
    out = (f'[[shaping_rule]]\nname = "{name}"\npattern = \'{pattern}\'\naction = "{action}"\n'
           f"threshold = {threshold}\nperiod_s = {period_s}\nduration_s = {duration_s}\n")
    if scope:
        out += f'scope = "{scope}"\n'
    if provider:
        out += f'provider = "{provider}"\n'
    return out


class Shaping(DeliveryTest, ShellMixin):
    """Shaping rules: replies of the destination's servers that match set
    overrides for a while; the gateway's own replies never do."""

    def send_wait(self, g, rcpt, dispositions, timeout=10):
        mid = send(g.port, "s@src.test", [rcpt], b"Subject: s\r\n\r\nx\r\n")
        self.wait_disposition(g, mid, rcpt, dispositions, timeout=timeout)
        return mid

    def overrides(self, g):
        return self.shell(g, "shaping", "list")["overrides"]

    def test_suspend_fires_expires_and_is_lifted(self):
        s = self.sink("--max-size", "2000")
        mport = free_port()
        tail = shaping_toml("slowdown", r"^451 4\.3\.0 ", "suspend", threshold=3, duration_s=6)
        tail += shaping_toml("never", r"^552 5\.3\.4 ", "bounce")  # our own reply: must not fire
        tail += f'[metrics]\nlisten = "127.0.0.1:{mport}"\n'
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"])], tail_extra=tail)
        # A message larger than the server's SIZE: the gateway itself says 552.
        big = send(g.port, "s@src.test", ["r@dst.test"], b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n")
        self.wait_disposition(g, big, "r@dst.test", {"bounced"})
        # Two 451s: below the threshold.
        for i in range(2):
            self.send_wait(g, f"tempfail+{i}@dst.test", {"deferred"})
        self.assertEqual(self.overrides(g), [])
        self.send_wait(g, "tempfail+2@dst.test", {"deferred"})
        # Suspended: a message sent now waits (checked at once: the override lasts 6 s).
        mid = send(g.port, "s@src.test", ["ok@dst.test"], b"Subject: w\r\n\r\nx\r\n")
        time.sleep(0.5)
        self.assertFalse(self.deliveries(g, mid, "ok@dst.test"))
        ov = self.overrides(g)
        self.assertEqual([(o["destination"], o["rule"], o["action"], o["source"]) for o in ov],
                         [("route:dst.test", "slowdown", "suspend", "")], ov)
        self.assertTrue(ov[0]["reply"].startswith("451 4.3.0 "), ov)
        text = subprocess.run([os.path.join(delivery_test.BUILD, "admin", "ringway"), "--socket",
                               os.path.join(g.dir, "var", "ringway.sock"), "hoststatus", "dst.test"],
                              capture_output=True, text=True, timeout=30).stdout
        self.assertRegex(text, r"shaping override\s+suspend by rule slowdown until ")
        table = subprocess.run([os.path.join(delivery_test.BUILD, "admin", "ringway"), "--socket",
                                os.path.join(g.dir, "var", "ringway.sock"), "shaping", "list"],
                               capture_output=True, text=True, timeout=30).stdout
        self.assertRegex(table, r"route:dst\.test\s+slowdown\s+suspend\s+-\s+")
        self.assertTrue([e for e in g.journal() if e.get("event") == "shaping" and e["rule"] == "slowdown"
                         and e["action"] == "suspend"])
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        self.assertIn('ringway_shaping_overrides_total 1\n', text)
        self.assertIn('ringway_shaping_override_expiry_seconds{destination="route:dst.test",rule="slowdown",'
                      'action="suspend",source=""}', text)
        # ...until the override expires (6 s after it was set), not before.
        self.wait_disposition(g, mid, "ok@dst.test", {"delivered"}, timeout=10)
        until = [e for e in g.journal() if e.get("event") == "shaping" and e["action"] == "suspend"][0]["until_ms"]
        done = [e for e in self.deliveries(g, mid, "ok@dst.test") if e["disposition"] == "delivered"][0]
        done_ms = datetime.strptime(done["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp() * 1000
        self.assertGreaterEqual(done_ms, until - 50, (done, until))
        wait_until(lambda: self.overrides(g) == [], timeout=5, what="the expired override to go")
        self.assertTrue([e for e in g.journal() if e.get("event") == "shaping" and e["action"] == "expired"])
        # Set off again, then lifted in the shell: mail flows at once.
        for i in range(3, 6):
            self.send_wait(g, f"tempfail+{i}@dst.test", {"deferred"})
        self.assertEqual(len(self.overrides(g)), 1)
        mid = send(g.port, "s@src.test", ["ok2@dst.test"], b"Subject: w\r\n\r\nx\r\n")
        time.sleep(0.5)
        self.assertFalse(self.deliveries(g, mid, "ok2@dst.test"))
        self.assertEqual(self.shell(g, "shaping", "lift", "dst.test")["lifted"], 1)
        self.wait_disposition(g, mid, "ok2@dst.test", {"delivered"}, timeout=3)
        self.assertEqual(self.overrides(g), [])
        self.assertFalse([e for e in g.journal() if e.get("event") == "shaping" and e["rule"] == "never"])

    def test_rate_and_connections_overrides_set_the_limits(self):
        s = self.sink()
        tail = shaping_toml("rate", r"^451 ", "rate 7") + shaping_toml("conns", r"^451 ", "connections 2")
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"])], tail_extra=tail)
        self.send_wait(g, "tempfail@dst.test", {"deferred"})
        hs = self.shell(g, "hoststatus", "dst.test")["destinations"][0]
        self.assertEqual((hs["rate_limit_per_minute"], hs["connection_limit"]), (7, 2))
        self.assertEqual(sorted((o["rule"], o["action"], o["value"]) for o in self.overrides(g)),
                         [("conns", "connections", 2), ("rate", "rate", 7)])
        # The rate holds: of 12 messages, 7 go in the first minute.
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "4", "-n", "12", "--to", "user@dst.test")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 7, timeout=20, what="7 messages at the sink")
        time.sleep(2)
        self.assertEqual(s.stats()["received"], 7)
        self.assertLessEqual(s.stats()["max_concurrent_connections"], 2)
        self.shell(g, "shaping", "lift", "*")
        wait_until(lambda: s.stats()["received"] >= 12, timeout=20, what="the rest once lifted")

    def test_a_source_is_suspended_for_the_destination_and_the_other_takes_over(self):
        s = self.sink()
        tail = sources_toml([("s1", "127.0.0.2", "s1.pool.test", None), ("s2", "127.0.0.3", "s2.pool.test", None)],
                            [("two", ["s1", "s2"])])
        tail += shaping_toml("blocked-ip", r"^451 ", "suspend", scope="source")
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"])],
                         delivery={"default_pool": "two", "max_messages_per_connection": 1,
                                   "connection_cache_time_ms": 0},
                         tail_extra=tail)
        self.send_wait(g, "tempfail@dst.test", {"deferred"})
        ov = self.overrides(g)
        self.assertEqual(len(ov), 1, ov)
        self.assertEqual((ov[0]["rule"], ov[0]["action"]), ("blocked-ip", "suspend"))
        bad = ov[0]["source"]
        self.assertIn(bad, ("s1", "s2"))
        good_ip = "127.0.0.3" if bad == "s1" else "127.0.0.2"
        rep, err, rc = load("-s", f"127.0.0.1:{g.port}", "-c", "2", "-n", "10", "--to", "user@dst.test")
        self.assertEqual(rc, 0, err)
        wait_until(lambda: (s.stats() or {}).get("received", 0) >= 10, timeout=20, what="10 messages at the sink")
        rep = s.stop()
        self.assertEqual(rep["peers"], {good_ip: 10}, (bad, rep["peers"]))

    def test_bounce_fails_queued_mail_with_a_report(self):
        s = self.sink(save=True)
        tail = shaping_toml("dead", r"^550 5\.1\.1 ", "bounce", threshold=2)
        g = self.gateway(routes=[("dst.test", [f"127.0.0.1:{s.port}"]), ("src.test", [f"127.0.0.1:{s.port}"])],
                         tail_extra=tail)
        for i in range(2):
            self.send_wait(g, f"permfail+{i}@dst.test", {"bounced"})
        self.assertEqual([o["action"] for o in self.overrides(g)], ["bounce"])
        mid = self.send_wait(g, "fine@dst.test", {"bounced"})
        d = [e for e in self.deliveries(g, mid, "fine@dst.test") if e["disposition"] == "bounced"][0]
        self.assertIn("bounced by shaping rule dead", d["reply"])
        self.assertEqual(d["code"], 554)
        # Its sender has a report (besides the two for the permfails).
        self.wait_dsn(s, "s@src.test", n=3)


def make_ca(d):
    key, cert = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=Ringway Test CA",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
                   check=True, capture_output=True)
    return key, cert


def make_cert(d, name, ca=None, more=()):
    """A key and certificate for `name` (and `more` names: subjectAltName
    DNS), signed by ca (key, cert) or self-signed."""
    key, cert, csr = (os.path.join(d, f"{name}.{x}") for x in ("key", "pem", "csr"))
    ext = os.path.join(d, f"{name}.ext")
    sans = ",".join(f"DNS:{n}" for n in (name, *more))
    with open(ext, "w") as f:
        f.write(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
                        "-addext", f"subjectAltName=DNS:{name}"], check=True, capture_output=True)
        return key, cert
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", f"/CN={name}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-CAcreateserial",
                    "-out", cert, "-days", "2", "-extfile", ext], check=True, capture_output=True)
    return key, cert


class TlsPolicy(DeliveryTest, ShellMixin):
    """Per-destination TLS policy (none, opportunistic, required, verify)
    and REQUIRETLS (RFC 8689), against real OpenSSL peers: ringway-sink
    with certificates a test CA signed, or self-signed, and a second
    ringwayd."""

    def setUp(self):
        super().setUp()
        d = self.tmpdir()
        self.ca = make_ca(d)
        self.good = make_cert(d, "good.verify.test", self.ca)
        self.selfsigned = make_cert(d, "self.verify.test")
        self.dns = ZoneServer()
        self.addCleanup(self.dns.close)
        self.dns.set_zone({n: [{"A": "127.0.0.1"}] for n in
                           ("good.verify.test", "bad.verify.test", "self.verify.test")})

    def gw(self, routes_toml, **kw):
        dns = {"servers": [f"127.0.0.1:{self.dns.port}"], "timeout_ms": 500, "tries": 2}
        return self.gateway(dns=dns, delivery={"tls_ca_file": self.ca[1]}, tail_extra=routes_toml, **kw)

    @staticmethod
    def route(domain, host, tls):
        return f'[[route]]\ndomain = "{domain}"\nhosts = ["{host}"]\ntls = "{tls}"\n'

    def test_each_policy_accepts_and_refuses_what_it_should(self):
        s1 = self.sink("--tls-cert", self.good[1], "--tls-key", self.good[0])      # CA-signed, good.verify.test
        s2 = self.sink("--tls-cert", self.selfsigned[1], "--tls-key", self.selfsigned[0])
        s3 = self.sink()                                                           # no STARTTLS
        g = self.gw(self.route("ok.test", f"good.verify.test:{s1.port}", "verify") +
                    self.route("name.test", f"bad.verify.test:{s1.port}", "verify") +
                    self.route("self.test", f"self.verify.test:{s2.port}", "verify") +
                    self.route("req.test", f"self.verify.test:{s2.port}", "required") +
                    self.route("plain.test", f"good.verify.test:{s3.port}", "required") +
                    self.route("none.test", f"good.verify.test:{s1.port}", "none") +
                    self.route("opp.test", f"good.verify.test:{s3.port}", "opportunistic"))
        mids = {d: send(g.port, "a@src.test", [f"r@{d}"], b"Subject: t\r\n\r\nx\r\n")
                for d in ("ok.test", "name.test", "self.test", "req.test", "plain.test", "none.test", "opp.test")}
        for d in ("ok.test", "req.test", "none.test", "opp.test"):
            self.wait_disposition(g, mids[d], f"r@{d}", {"delivered"})
        for d in ("name.test", "self.test", "plain.test"):
            e = self.wait_disposition(g, mids[d], f"r@{d}", {"deferred"})[0]
            self.assertEqual((e["code"], e["class"]), (451, "tls"), e)
            self.assertIn("4.7.5 TLS required", e["reply"])
        by_dest = {}
        for e in g.journal():
            if e.get("event") == "connection":
                by_dest.setdefault(e["destination"], []).append(e["tls"])
        self.assertTrue(all(t.startswith("TLSv1.") for t in by_dest["route:ok.test"]), by_dest)
        self.assertTrue(all(t.startswith("TLSv1.") for t in by_dest["route:req.test"]), by_dest)
        self.assertEqual(set(by_dest["route:none.test"]), {""}, by_dest)  # s1 offers TLS; none does not use it
        self.assertEqual(set(by_dest["route:opp.test"]), {""}, by_dest)
        plain = self.deliveries(g, mids["plain.test"])[0]["reply"]
        self.assertIn("does not offer STARTTLS", plain)
        wait_until(lambda: s3.stats()["received"] >= 1, timeout=5, what="the sink's stats")
        self.assertEqual(s3.stop()["received"], 1)  # opp.test only: plain.test never went in clear

    def test_requiretls_is_offered_and_kept_only_over_tls(self):
        s3 = self.sink()  # no STARTTLS
        s1 = self.sink("--tls-cert", self.good[1], "--tls-key", self.good[0])  # TLS, but no REQUIRETLS
        # The next hop that offers REQUIRETLS: a second ringwayd with the CA-signed certificate.
        g2 = self.gateway(listener_extra=f'tls_cert = "{self.good[1]}"\ntls_key = "{self.good[0]}"\n')
        g = self.gw(self.route("clear.test", f"good.verify.test:{s3.port}", "opportunistic") +
                    self.route("noreq.test", f"good.verify.test:{s1.port}", "opportunistic") +
                    self.route("secure.test", f"good.verify.test:{g2.port}", "opportunistic") +
                    '[[route]]\ndomain = "src.test"\nhosts = ["127.0.0.1:%d"]\n' % s1.port)
        ctx = ssl.create_default_context(cafile=self.ca[1])
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", g.port, local_hostname="client.test", timeout=30) as c:
            code, ehlo = c.ehlo()
            self.assertNotIn(b"REQUIRETLS", ehlo)
            code, resp = c.mail("a@src.test", ["REQUIRETLS"])
            self.assertEqual(code, 530, resp)
            self.assertIn(b"5.7.10", resp)
            c.starttls(context=ctx)
            code, ehlo = c.ehlo()
            self.assertIn(b"REQUIRETLS", ehlo)
            mids = {}
            for d in ("clear.test", "noreq.test", "secure.test"):
                code, resp = c.mail("a@src.test", ["REQUIRETLS"])
                self.assertEqual(code, 250, resp)
                self.assertEqual(c.rcpt(f"r@{d}")[0], 250)
                code, resp = c.data(b"Subject: secret\r\n\r\nx\r\n")
                self.assertEqual(code, 250, resp)
                mids[d] = re.search(rb"queued as ([0-9A-Fa-f]+)", resp).group(1).decode()
        # No STARTTLS, or no REQUIRETLS at the next hop: returned, 5.7.30.
        for d, why in (("clear.test", "does not offer STARTTLS"), ("noreq.test", "does not offer REQUIRETLS")):
            e = self.wait_disposition(g, mids[d], f"r@{d}", {"bounced"})[0]
            self.assertEqual(e["code"], 550, e)
            self.assertIn("5.7.30 REQUIRETLS support required", e["reply"])
            self.assertIn(why, e["reply"])
        # Verified TLS to a server that offers REQUIRETLS: delivered, and
        # the next hop got REQUIRETLS with it (it offers it only over TLS).
        self.wait_disposition(g, mids["secure.test"], "r@secure.test", {"delivered"})
        self.assertEqual(s3.stop()["received"], 0)  # nothing went in clear
        conns = [e for e in g.journal() if e.get("event") == "connection" and "secure.test" in e["destination"]]
        self.assertTrue(conns and all(e["destination"].endswith("!requiretls") and e["tls"].startswith("TLSv1.")
                                      for e in conns), conns)
        rec = [e for e in g2.journal() if e.get("event") == "received"]
        self.assertEqual(len(rec), 1)
        self.assertTrue(rec[0]["tls"], rec)
        # g2 has no DNS: the message waits there, and kept REQUIRETLS.
        shown = self.shell(g2, "showmessage", rec[0]["mid"])
        self.assertTrue(shown["params"].startswith("REQUIRETLS") or " REQUIRETLS" in shown["params"], shown)


class MtaSts(DeliveryTest):
    """MTA-STS (RFC 8461): policies served over HTTPS on 127.0.0.77:443 with
    a certificate a test CA signed, found through TXT records a DNS server
    on loopback serves."""

    POLICIES = {
        "enf.test": "version: STSv1\nmode: enforce\nmx: mx.enf.test\nmax_age: 86400\n",
        "bad.test": "version: STSv1\r\nmode: enforce\r\nmx: *.bad.test\r\nmax_age: 86400\r\n",
        "tst.test": "version: STSv1\nmode: testing\nmx: mx.tst.test\nmax_age: 86400\n",
        "nl.test": "version: STSv1\nmode: enforce\nmx: other.nl.test\nmax_age: 86400\n",
        "mal.test": "version: STSv2\nmode: enforce\nmx: mx.mal.test\n",
    }

    def setUp(self):
        super().setUp()
        d = self.tmpdir()
        self.ca = make_ca(d)
        doms = list(self.POLICIES)
        web = make_cert(d, "mta-sts.enf.test", self.ca, more=[f"mta-sts.{x}" for x in doms])
        self.mx = make_cert(d, "mx.enf.test", self.ca)  # the sink's: right for enf.test only
        self.fetched = []
        policies, fetched = self.POLICIES, self.fetched

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").removeprefix("mta-sts.")
                fetched.append((host, self.path))
                body = policies.get(host)
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(web[1], web[0])
        self.web = ThreadingHTTPServer(("127.0.0.77", 443), Handler)
        self.web.socket = ctx.wrap_socket(self.web.socket, server_side=True)
        threading.Thread(target=self.web.serve_forever, daemon=True).start()
        self.addCleanup(lambda: (self.web.shutdown(), self.web.server_close()))
        self.dns = ZoneServer()
        self.addCleanup(self.dns.close)
        zone = {}
        for dom in doms:
            zone[dom] = [{"MX": [10, f"mx.{dom}"]}]
            zone[f"mx.{dom}"] = [{"A": "127.0.0.1"}]
            zone[f"_mta-sts.{dom}"] = [{"TXT": "v=STSv1; id=20261207;"}]
            zone[f"mta-sts.{dom}"] = [{"A": "127.0.0.77"}]
        zone["plain.test"] = [{"MX": [10, "mx.plain.test"]}]  # no policy at all
        zone["mx.plain.test"] = [{"A": "127.0.0.1"}]
        self.dns.set_zone(zone)

    def test_enforce_refuses_a_wrong_certificate_or_mx_and_accepts_the_right_one(self):
        s = self.sink("--tls-cert", self.mx[1], "--tls-key", self.mx[0])
        dns = {"servers": [f"127.0.0.1:{self.dns.port}"], "timeout_ms": 500, "tries": 2}
        g = self.gateway(dns=dns, delivery={"smtp_port": s.port, "tls_ca_file": self.ca[1]})
        mids = {dom: send(g.port, "a@src.test", [f"r@{dom}"], b"Subject: sts\r\n\r\nx\r\n")
                for dom in ("enf.test", "bad.test", "tst.test", "nl.test", "mal.test", "plain.test")}
        # Enforce, the MX in the policy, its certificate verified: delivered over TLS.
        self.wait_disposition(g, mids["enf.test"], "r@enf.test", {"delivered"})
        # Enforce, but the certificate names another host: not sent.
        e = self.wait_disposition(g, mids["bad.test"], "r@bad.test", {"deferred"})[0]
        self.assertIn("4.7.5 TLS required", e["reply"])
        # Enforce, and no MX host the policy names: not sent.
        e = self.wait_disposition(g, mids["nl.test"], "r@nl.test", {"deferred"})[0]
        self.assertIn("matches its MTA-STS policy", e["reply"])
        # Testing mode: the same mismatch is logged, the mail goes.
        self.wait_disposition(g, mids["tst.test"], "r@tst.test", {"delivered"})
        # A malformed policy is ignored (and logged), no policy means as usual.
        self.wait_disposition(g, mids["mal.test"], "r@mal.test", {"delivered"})
        self.wait_disposition(g, mids["plain.test"], "r@plain.test", {"delivered"})
        log = g.log_text()
        self.assertIn("domain=mal.test MTA-STS policy malformed, ignored", log)
        self.assertIn("domain=tst.test MTA-STS policy id=20261207 mode=testing", log)
        self.assertEqual(sorted({h for h, _ in self.fetched}),
                         ["bad.test", "enf.test", "mal.test", "nl.test", "tst.test"])
        modes = {e["domain"]: e["mode"] for e in g.journal() if e.get("event") == "mta_sts"}
        self.assertEqual(modes, {"enf.test": "enforce", "bad.test": "enforce", "tst.test": "testing",
                                 "nl.test": "enforce"})
        conns = {e["destination"]: e["tls"] for e in g.journal() if e.get("event") == "connection"}
        self.assertTrue(conns["mx:enf.test"].startswith("TLSv1."), conns)
        # The cached policy is used: another message fetches nothing more.
        n = len(self.fetched)
        mid = send(g.port, "a@src.test", ["r2@enf.test"], b"Subject: sts\r\n\r\nx\r\n")
        self.wait_disposition(g, mid, "r2@enf.test", {"delivered"})
        self.assertEqual(len(self.fetched), n)


if __name__ == "__main__":
    delivery_test.BUILD = os.path.abspath(sys.argv.pop(1))
    sink_test.BUILD = delivery_test.BUILD
    unittest.main(verbosity=2)
