#!/usr/bin/env python3
"""The admin plane from the outside: the `ringway` shell driven through a
real pseudo-terminal (pexpect) and as a one-shot command, against a running
ringwayd holding real mail: queued for a destination that refuses
connections (deferred), delivered to a ringway-sink, held by a suspension.
Also the control socket itself: its permissions (another Unix user is
refused), and what garbage, oversized and stalled clients get.

    admin_test.py BUILD_DIR [unittest args]
"""
import json
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import pexpect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import delivery_test  # noqa: E402
import sink_test  # noqa: E402
from delivery_test import DeliveryTest, send  # noqa: E402
from ringway_harness import free_port, wait_until  # noqa: E402

BUILD = None
MSG = b"From: a@client.test\r\nTo: x@y\r\nSubject: admin plane test\r\nMessage-ID: <adm@client.test>\r\n\r\nhello\r\n"


def shell_bin():
    return os.path.join(BUILD, "admin", "ringway")


class AdminTest(DeliveryTest):
    def setUp(self):
        self.sink_ = self.sink()
        self.down_port = free_port()  # nothing listens there: connection refused
        routes = [("down.test", [f"127.0.0.1:{self.down_port}"]),
                  ("sink.test", [f"127.0.0.1:{self.sink_.port}"]),
                  ("held.test", [f"127.0.0.1:{self.sink_.port}"])]
        self.g = self.gateway(routes=routes, delivery={"first_retry_ms": 3_600_000, "max_retry_ms": 3_600_000,
                                                       "destination_pause_ms": 3_600_000})
        self.sock = os.path.join(self.g.dir, "var", "ringway.sock")
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")

    def run_shell(self, *args, user=None, check=True):
        cmd = [shell_bin(), "--socket", self.sock, *args]
        if user:
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if check:
            self.assertEqual(r.returncode, 0, f"{args}: {r.stderr}")
        return r

    def json_of(self, *args):
        return json.loads(self.run_shell("--json", *args).stdout)

    def spawn_shell(self):
        env = {**os.environ, "HOME": self.tmpdir(), "TERM": "xterm"}
        p = pexpect.spawn(shell_bin(), ["--socket", self.sock], env=env, encoding="utf-8", timeout=20,
                          dimensions=(50, 200))
        self.addCleanup(p.terminate, True)
        p.expect_exact("Type help for the commands")
        p.expect_exact("ringway> ")
        return p

    def queue_mail(self):
        """One message for each kind of destination; returns their MIDs."""
        self.run_shell("suspend", "delivery", "held.test")
        mids = {d: send(self.g.port, "s@client.test", [f"u@{d}"], MSG) for d in ("down.test", "sink.test", "held.test")}
        # down.test: refused, deferred for an hour; sink.test: delivered.
        wait_until(lambda: any(e.get("disposition") == "deferred" for e in self.g.journal()), timeout=20,
                   what="the down destination's deferral")
        wait_until(lambda: any(e.get("disposition") == "delivered" for e in self.g.journal()), timeout=20,
                   what="the sink's delivery")
        return mids


class Shell(AdminTest):
    def test_status_workqueue_and_hosts_show_the_mail(self):
        mids = self.queue_mail()
        st = self.json_of("status")
        self.assertEqual(st["counters"]["messages_received"], 3)
        self.assertEqual(st["counters"]["recipients_delivered"], 1)
        self.assertGreaterEqual(st["counters"]["recipients_deferred"], 1)
        self.assertEqual(st["gauges"]["queued_messages"], 2)  # down and held; the delivered one is gone
        q = st["gauges"]["queued_recipients"]
        self.assertEqual(q["retry"], 1)       # down.test, waiting an hour
        self.assertEqual(q["active"], 1)      # held.test, ready but suspended
        self.assertEqual(q["never_attempted"], 1)  # held.test again
        self.assertEqual(st["gauges"]["delivery_suspended"], ["held.test"])
        self.assertGreater(st["gauges"]["memory_rss_bytes"], 1 << 20)
        self.assertGreater(st["gauges"]["spool"]["bytes_total"], st["gauges"]["spool"]["bytes_free"])
        detail = self.json_of("status", "detail")
        self.assertEqual(len(detail["per_core"]), 2)
        self.assertNotIn("per_core", st)
        # The text form says the same.
        text = self.run_shell("status").stdout
        self.assertRegex(text, r"messages received\s+3\b")
        self.assertRegex(text, r"recipients queued\s+1 active, 1 waiting for retry, 1 never attempted")
        self.assertIn("delivery suspended", text)

        wq = self.json_of("workqueue")
        by = {d["destination"]: d for d in wq["destinations"]}
        # (sink.test may still be listed while its connection idles, with nothing queued.)
        self.assertEqual(set(by) - {"route:sink.test"}, {"route:down.test", "route:held.test"})
        if "route:sink.test" in by:
            self.assertEqual(by["route:sink.test"]["queued_recipients"], 0)
        down = by["route:down.test"]
        self.assertEqual(down["retry_recipients"], 1)
        self.assertIn("connect to", down["last_error"])
        self.assertGreater(down["paused_until_unix_ms"], time.time() * 1000)
        self.assertTrue(by["route:held.test"]["suspended"])
        self.assertEqual(by["route:held.test"]["ready_recipients"], 1)
        text = self.run_shell("workqueue").stdout
        self.assertRegex(text, r"route:down\.test\s+1\s+1\s")
        self.assertRegex(text, r"route:held\.test\s+1\s+0\s.*suspended")

        top = self.json_of("tophosts", "delivered")
        self.assertEqual(top["destinations"][0]["destination"], "route:sink.test")
        self.assertEqual(top["destinations"][0]["delivered"], 1)
        hs = self.json_of("hoststatus", "sink.test")["destinations"][0]
        self.assertEqual(hs["last_ip"], "127.0.0.1")
        self.assertEqual(hs["connections_made"], 1)
        self.assertIn("127.0.0.1", self.run_shell("hoststatus", "sink.test").stdout)
        r = self.run_shell("hoststatus", "nowhere.test", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no destination nowhere.test", r.stderr)

        # showmessage: envelope, per-recipient state and headers.
        m = self.json_of("showmessage", mids["down.test"])
        self.assertEqual(m["mail_from"], "s@client.test")
        self.assertEqual(m["recipients"][0]["rcpt"], "u@down.test")
        self.assertEqual(m["recipients"][0]["state"], "deferred")
        self.assertEqual(m["recipients"][0]["attempts"], 1)
        self.assertIn("Subject: admin plane test", m["headers"])
        self.assertIn("Received: from client.test", m["headers"])
        self.assertNotIn("hello", m["headers"])  # the header section only
        text = self.run_shell("showmessage", mids["down.test"]).stdout
        self.assertIn("<u@down.test>", text)
        self.assertIn("deferred", text)
        r = self.run_shell("showmessage", mids["sink.test"], check=False)  # delivered: gone from the spool
        self.assertEqual(r.returncode, 1)
        self.assertIn("no message", r.stderr)

    def test_suspend_resume_delivernow_and_delete(self):
        mids = self.queue_mail()
        deliveries = lambda: sum(1 for e in self.g.journal() if e.get("disposition") == "delivered")
        self.assertEqual(deliveries(), 1)
        time.sleep(0.5)
        self.assertEqual(deliveries(), 1, "a suspended destination delivered")
        r = self.run_shell("resume", "delivery", "held.test")
        self.assertIn("resumed for held.test", r.stdout)
        wait_until(lambda: deliveries() == 2, timeout=20, what="the held message after resume")
        # down.test now listens: delivernow retries it without waiting the hour.
        with open(os.path.join(self.g.dir, "ringway.toml")) as f:
            self.assertIn(str(self.down_port), f.read())
        late = sink_test.Sink(listen=f"127.0.0.1:{self.down_port}")
        self.addCleanup(late.cleanup)
        time.sleep(0.3)
        self.assertEqual(deliveries(), 2)
        out = self.json_of("delivernow", "down.test")
        self.assertEqual(out["released"], 1)
        wait_until(lambda: deliveries() == 3, timeout=20, what="the deferred message after delivernow")
        self.assertEqual(self.json_of("status")["gauges"]["queued_messages"], 0)
        # deletemessage: a queued message goes, with a mail-log record.
        self.run_shell("suspend", "delivery")
        mid = send(self.g.port, "s@client.test", ["u@sink.test"], MSG)
        self.assertEqual(self.json_of("showmessage", mid)["mid"], mid)
        self.assertIn(f"Message {mid} deleted", self.run_shell("deletemessage", mid).stdout)
        self.assertEqual(self.run_shell("showmessage", mid, check=False).returncode, 1)
        self.assertTrue(any(e.get("action") == "deletemessage" and e.get("mid") == mid for e in self.g.journal()))
        self.assertEqual(self.json_of("status")["gauges"]["queued_messages"], 0)

    def test_a_suspension_survives_a_restart(self):
        self.run_shell("suspend", "delivery", "sink.test")
        self.g.stop()
        delivery_test.restart(self.g)
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket again")
        self.assertEqual(self.json_of("status")["gauges"]["delivery_suspended"], ["sink.test"])
        send(self.g.port, "s@client.test", ["u@sink.test"], MSG)
        time.sleep(1.0)
        self.assertFalse(any(e.get("disposition") == "delivered" for e in self.g.journal()))
        self.run_shell("resume", "delivery")
        wait_until(lambda: any(e.get("disposition") == "delivered" for e in self.g.journal()), timeout=20,
                   what="delivery after resume")
        self.assertIn("delivery suspended domain=sink.test (from", self.g.log_text())

    def test_interactive_completion_help_history_and_errors(self):
        self.queue_mail()
        p = self.spawn_shell()
        # Tab completes a command and its argument: "stat" and "det" alone
        # are an unknown command and a bad argument.
        p.send("stat\t")
        p.send("det\t\r")
        p.expect(r"Per core")
        p.expect_exact("ringway> ")
        # ... a choice, and a domain the daemon knows.
        p.send("tophosts deliv\t\r")
        p.expect(r"Sorted by delivered")
        p.expect_exact("ringway> ")
        p.send("hoststatus dow\t\r")
        p.expect(r"route:down\.test")
        p.expect(r"connect to")
        p.expect_exact("ringway> ")
        # help, and help COMMAND.
        p.sendline("help")
        p.expect(r"workqueue\s+what is queued, per destination")
        p.expect_exact("ringway> ")
        p.sendline("help suspend")
        p.expect_exact("usage: suspend delivery [DOMAIN]")
        p.expect_exact("survives a restart")
        p.expect_exact("ringway> ")
        # An unknown command and a bad argument: one line each, the shell goes on.
        p.sendline("frobnicate")
        p.expect_exact("unknown command frobnicate; type help for the list")
        p.expect_exact("ringway> ")
        p.sendline("showmessage xyz")
        p.expect_exact("xyz is not a message ID")
        p.expect_exact("usage: showmessage MID")
        p.expect_exact("ringway> ")
        # Ctrl-C, Ctrl-Z and Ctrl-\ do not leave the shell.
        p.sendcontrol("c")
        p.sendcontrol("z")
        p.sendcontrol("\\")
        p.sendline("")
        p.sendline("uptime")
        p.expect(r"up \d+")
        p.expect_exact("ringway> ")
        self.assertTrue(p.isalive())
        # History: up-arrow brings back the last command.
        p.send("\x1b[A")
        p.expect_exact("uptime")
        p.send("\r")
        p.expect(r"up \d+")
        p.expect_exact("ringway> ")
        p.sendline("workqueue")
        p.expect(r"route:down\.test\s+1")
        p.expect_exact("ringway> ")
        p.sendline("quit")
        p.expect(pexpect.EOF)
        p.wait()
        self.assertEqual(p.exitstatus, 0)
        hist = os.path.join(p.env["HOME"], ".ringway_history")
        with open(hist) as f:
            self.assertIn("workqueue", f.read())

    def test_findevent_and_tail(self):
        mids = self.queue_mail()
        r = self.json_of("findevent", "mid", mids["down.test"])
        self.assertEqual(r["messages"], [mids["down.test"]])
        kinds = [e["event"] for e in r["events"]]
        self.assertEqual(kinds[0], "received")
        self.assertIn("delivery", kinds)
        self.assertTrue(all(e.get("mid") == mids["down.test"] for e in r["events"]))
        r = self.json_of("findevent", "rcpt", "u@SINK.test")  # part of an address, any case
        self.assertEqual(r["messages"], [mids["sink.test"]])
        self.assertIn("delivered", [e.get("disposition") for e in r["events"]])
        r = self.json_of("findevent", "from", "s@client.test", "since", "1h")
        self.assertEqual(sorted(r["messages"]), sorted(mids.values()))
        self.assertEqual(self.json_of("findevent", "from", "s@client.test", "until", "1d")["messages"], [])
        text = self.run_shell("findevent", "mid", mids["held.test"]).stdout
        self.assertIn(f"received   ", text)
        self.assertIn("to=u@held.test", text)
        r = self.run_shell("findevent", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("say what to find", r.stderr)
        # tail: the last N records; filtered by event.
        out = self.run_shell("--json", "tail", "lines", "2", "event", "received").stdout.splitlines()
        self.assertEqual(len(out), 2)
        self.assertTrue(all(json.loads(l)["event"] == "received" for l in out))
        self.assertEqual(json.loads(out[-1])["mid"], mids["held.test"])
        # tail follow in the shell: a new message shows up; Ctrl-C ends it.
        p = self.spawn_shell()
        p.sendline("tail follow lines 0 event received")
        time.sleep(0.5)
        mid = send(self.g.port, "late@client.test", ["v@down.test"], MSG)
        p.expect(rf"received\s.*from=late@client\.test.*mid={mid}")
        p.sendcontrol("c")
        p.expect_exact("ringway> ")
        p.sendline("version")
        p.expect(r"control protocol 1")
        p.expect_exact("ringway> ")
        self.assertTrue(p.isalive())

    def test_one_shot_errors_and_exit_codes(self):
        r = self.run_shell("nosuch", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.strip(), "unknown command nosuch; type help for the list")
        r = self.run_shell("tophosts", "loudest", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("loudest is not active or connections or delivered or soft or hard", r.stderr)
        r = self.run_shell("hoststatus", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: hoststatus DOMAIN", r.stderr)
        r = self.run_shell("resume", "delivery", "never.test", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not suspended", r.stderr)
        h = self.json_of("help")
        self.assertIn("workqueue", [c["command"] for c in h])
        # Commands from a non-terminal stdin, one per line.
        r = subprocess.run([shell_bin(), "--socket", self.sock], input="version\n# a comment\nuptime\n",
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"ringwayd \S+ \(control protocol 1\)\nup \d+")
        # No daemon: a clear line.
        r = subprocess.run([shell_bin(), "--socket", os.path.join(self.g.dir, "nothing.sock"), "status"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("is ringwayd running?", r.stderr)


class ControlSocket(AdminTest):
    def raw(self):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(self.sock)
        self.addCleanup(s.close)
        return s

    def lines(self, s):
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return [json.loads(l) for l in data.split(b"\n") if l]
            data += chunk

    def test_only_the_daemon_user_and_root_may_connect(self):
        mode = stat.S_IMODE(os.stat(self.sock).st_mode)
        self.assertEqual(mode, 0o600)
        # Let another user reach the directory, so that the socket's own
        # mode is what refuses it.
        os.chmod(self.g.dir, 0o755)
        os.chmod(os.path.dirname(self.sock), 0o755)
        nobody = pwd.getpwnam("nobody").pw_uid
        r = self.run_shell("status", user=str(nobody), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("Permission denied", r.stderr)
        self.assertIn("workqueue", self.run_shell("help").stdout)  # and we still can
        self.assertEqual(self.json_of("version")["protocol"], 1)

    def test_garbage_oversized_and_stalled_clients(self):
        s = self.raw()
        s.sendall(b'{"v":1,"cmd":"version"}\n{"v":1,"cmd":"nosuch"}\nthis is not json\n{"v":1,"cmd":"version"}\n')
        replies = self.lines(s)  # the daemon closes after the garbage
        self.assertEqual(len(replies), 3)
        self.assertTrue(replies[0]["ok"])
        self.assertEqual(replies[1], {"v": 1, "ok": False, "error": "unknown command nosuch"})
        self.assertFalse(replies[2]["ok"])
        self.assertIn("not a JSON object", replies[2]["error"])
        for bad, why in ((b'{"v":7,"cmd":"version"}\n', "unsupported protocol version"),
                         (b'{"v":1}\n', 'no "cmd"'), (b'[1,2]\n', "not a JSON object"),
                         (b'{"v":1,"cmd":"status","args":[1]}\n', '"args" is not an object'),
                         (b'{"v":1,"cmd":"showmessage","args":{"mid":12}}\n', "must be a string")):
            with self.subTest(bad=bad):
                s = self.raw()
                s.sendall(bad)
                r = self.lines(s) if why != "must be a string" else [json.loads(s.recv(65536))]
                self.assertFalse(r[0]["ok"])
                self.assertIn(why, r[0]["error"])
        # A stalled client (half a request) and a flood without a newline
        # do not hold up anyone else.
        stalled = self.raw()
        stalled.sendall(b'{"v":1,"cmd":"ver')
        flood = self.raw()
        try:
            flood.sendall(b"x" * (3 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = self.lines(flood)
        self.assertIn("longer than", r[0]["error"])
        t0 = time.monotonic()
        self.assertEqual(self.json_of("version")["protocol"], 1)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertIsNone(self.g.proc.poll())


class Conservation(DeliveryTest):
    def test_queue_depth_tarpits_then_refuses_and_recovers(self):
        down = free_port()
        g = self.gateway(routes=[("down.test", [f"127.0.0.1:{down}"])],
                         delivery={"first_retry_ms": 3_600_000, "destination_pause_ms": 3_600_000},
                         tail_extra="[conservation]\nqueue_tarpit_messages = 2\nqueue_refuse_messages = 4\n"
                                    "tarpit_ms = 400\nhysteresis_percent = 0\n")
        sock = os.path.join(g.dir, "var", "ringway.sock")
        wait_until(lambda: os.path.exists(sock), timeout=10, what="the control socket")

        def level():
            r = subprocess.run([shell_bin(), "--socket", sock, "--json", "status"], capture_output=True, text=True,
                               timeout=30)
            return json.loads(r.stdout)["gauges"]["conservation_level"]
        mids = [send(g.port, "s@client.test", ["u@down.test"], MSG) for _ in range(2)]
        wait_until(lambda: level() == 1, timeout=10, what="the tarpit level")
        t0 = time.monotonic()
        mids.append(send(g.port, "s@client.test", ["u@down.test"], MSG))
        self.assertGreater(time.monotonic() - t0, 5 * 0.4, "replies were not delayed")  # greeting, EHLO, MAIL, RCPT, DATA, dot
        mids.append(send(g.port, "s@client.test", ["u@down.test"], MSG))
        wait_until(lambda: level() == 2, timeout=10, what="the refusing level")
        # New connections: 421 4.3.2 instead of the greeting.
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as c:
            greeting = c.recv(512)
        self.assertTrue(greeting.startswith(b"421 4.3.2 "), greeting)
        self.assertIn(b"system resources low", greeting)
        log = g.log_text()
        self.assertIn("resource conservation level 1 (tarpit) from 0: queue 2 messages", log)
        self.assertIn("resource conservation level 2 (refuse) from 1: queue 4 messages", log)
        self.assertTrue(any(e.get("event") == "conservation" and e.get("level") == 2 for e in g.journal()))
        self.assertTrue(any(e.get("event") == "reject" and e.get("code") == 421 for e in g.journal()))
        # Draining the queue lowers the level again and mail is accepted.
        for mid in mids[:3]:
            subprocess.run([shell_bin(), "--socket", sock, "deletemessage", mid], check=True, capture_output=True,
                           timeout=30)
        wait_until(lambda: level() == 0, timeout=10, what="the normal level")
        t0 = time.monotonic()
        send(g.port, "s@client.test", ["u@down.test"], MSG)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertIn("resource conservation level 0 (normal)", g.log_text())


class Metrics(DeliveryTest):
    """The /metrics endpoint, checked by promtool and scraped by a real
    Prometheus on loopback."""

    def test_prometheus_scrapes_the_endpoint(self):
        sink = self.sink()
        mport = free_port()
        g = self.gateway(routes=[("sink.test", [f"127.0.0.1:{sink.port}"])],
                         tail_extra=f'[metrics]\nlisten = "127.0.0.1:{mport}"\n')
        for _ in range(3):
            send(g.port, "s@client.test", ["u1@sink.test", "u2@sink.test"], MSG)
        wait_until(lambda: sum(1 for e in g.journal() if e.get("disposition") == "delivered") == 6, timeout=20,
                   what="six deliveries")
        url = f"http://127.0.0.1:{mport}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        self.assertIn('ringway_listener_messages_total{listener="test"} 3', text)
        self.assertIn('ringway_listener_recipients_total{listener="test"} 6', text)
        self.assertIn('ringway_destination_deliveries_total{destination="route:sink.test"} 6', text)
        self.assertIn('ringway_destination_delivery_seconds_count{destination="route:sink.test"} 6', text)
        self.assertIn('ringway_delivery_recipients_total{outcome="delivered"} 6', text)
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        # Not /metrics, not GET: the right status, and the daemon goes on.
        for path, method, code in (("/", "GET", 404), ("/metrics", "POST", 405)):
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{mport}{path}", method=method,
                                                              data=b"x" if method == "POST" else None), timeout=10)
            self.assertEqual(e.exception.code, code)
        # A real Prometheus scraping every second.
        d = self.tmpdir()
        with open(os.path.join(d, "prometheus.yml"), "w") as f:
            f.write(f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ringway\n"
                    f"    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n")
        pport = free_port()
        log = open(os.path.join(d, "prometheus.log"), "w+")
        prom = subprocess.Popen(["prometheus", f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
                                 f"--web.listen-address=127.0.0.1:{pport}"], stdout=log, stderr=subprocess.STDOUT)

        def end():
            prom.terminate()
            try:
                prom.wait(timeout=20)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
            log.close()
        self.addCleanup(end)

        def query(q):
            try:
                r = json.loads(urllib.request.urlopen(
                    f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": q}), timeout=5).read())
            except OSError:
                return None
            res = r.get("data", {}).get("result", [])
            return res[0]["value"][1] if res else None
        wait_until(lambda: query("up{job='ringway'}") == "1", timeout=60, step=0.5, what="Prometheus to scrape ringway")
        self.assertEqual(query('ringway_listener_messages_total{listener="test"}'), "3")
        self.assertEqual(query('ringway_destination_deliveries_total{destination="route:sink.test"}'), "6")
        send(g.port, "s@client.test", ["u3@sink.test"], MSG)
        wait_until(lambda: query('ringway_listener_messages_total{listener="test"}') == "4", timeout=30, step=0.5,
                   what="the next scrape to see the fourth message")


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    delivery_test.BUILD = BUILD
    sink_test.BUILD = BUILD
    unittest.main(verbosity=2)
