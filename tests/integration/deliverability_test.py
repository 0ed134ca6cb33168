#!/usr/bin/env python3
"""Deliverability: source-IP pools ([[source]], [[pool]]) against ringway-sink,
which records each connection's client address and the name of its first
EHLO. Sources are loopback addresses (any of 127.0.0.0/8 can be bound).

    deliverability_test.py BUILD_DIR [unittest args]
"""
import json
import os
import re
import smtplib
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import delivery_test  # noqa: E402
import sink_test  # noqa: E402
from delivery_test import DeliveryTest, load, ringwayd_bin, retrying, send  # noqa: E402
from ringway_harness import wait_until  # noqa: E402


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


if __name__ == "__main__":
    delivery_test.BUILD = os.path.abspath(sys.argv.pop(1))
    sink_test.BUILD = delivery_test.BUILD
    unittest.main(verbosity=2)
