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
        mem = st["gauges"]["system_memory"]
        self.assertGreater(mem["total_bytes"], mem["available_bytes"])
        self.assertGreater(mem["available_bytes"], 0)
        disk = st["gauges"]["state_disk"]
        self.assertEqual(disk["path"], self.g.dir)  # the spool file's directory (no control.state_dir)
        self.assertGreater(disk["bytes_total"], disk["bytes_free"])
        self.assertGreater(disk["bytes_free"], 0)
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
        # The mail-log record is written when the reply arrives; the message
        # leaves the queue when its last recipient's state is retired just after.
        wait_until(lambda: self.json_of("status")["gauges"]["queued_messages"] == 0,
                   timeout=5, what="the queue to empty after the last delivery")
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
        p.send("showconfig deliv\t\r")
        p.expect_exact("[delivery]")
        p.expect_exact("ringway> ")
        p.send("set delivery.max_messages_per_m\t 7\r")
        p.expect_exact("~ delivery.max_messages_per_minute: 0 -> 7")
        p.expect_exact("ringway> ")
        p.sendline("abandon")
        p.expect_exact("candidate abandoned")
        p.expect_exact("ringway> ")
        p.sendline("help suspend")
        p.expect_exact("usage: suspend delivery|listener [NAME] [DELAY]")
        p.expect_exact("Suspensions survive a restart")
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
        # By subject (the received record carries it); one that was never sent finds nothing.
        other = send(self.g.port, "s@client.test", ["u@held.test"],
                     b"Subject: =?utf-8?q?Quarterly?= numbers \"Q3\"\r\n\r\nx\r\n")
        r = self.json_of("findevent", "subject", "numbers \"q3\"")
        self.assertEqual(r["messages"], [other])
        self.assertEqual(r["events"][0]["subject"], "=?utf-8?q?Quarterly?= numbers \"Q3\"")
        self.assertEqual(sorted(self.json_of("findevent", "subject", "ADMIN PLANE")["messages"]),
                         sorted(mids.values()))
        self.assertEqual(self.json_of("findevent", "subject", "never sent")["messages"], [])
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
        self.assertEqual(json.loads(out[-1])["mid"], other)
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

    def test_login_shell_command_as_sshd_runs_it(self):
        # sshd runs the login shell as: ringway -c 'COMMAND ARGS'.
        env = {**os.environ, "RINGWAY_SOCKET": self.sock}
        r = subprocess.run([shell_bin(), "-c", "--json status"], capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("queued_messages", json.loads(r.stdout)["gauges"])
        r = subprocess.run([shell_bin(), "-c", "nosuch thing"], capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command nosuch", r.stderr)
        # No way to a Unix shell through -c either.
        r = subprocess.run([shell_bin(), "-c", "/bin/sh -c id"], capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 2)
        self.assertNotIn("uid=", r.stdout)

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
        send(g.port, "", ["permfail@sink.test"], MSG)  # 550 5.1.1: a bad mailbox (no report: null sender)
        wait_until(lambda: sum(1 for e in g.journal() if e.get("disposition") == "delivered") == 6, timeout=20,
                   what="six deliveries")
        wait_until(lambda: any(e.get("disposition") == "bounced" for e in g.journal()), timeout=20,
                   what="the bounce")
        url = f"http://127.0.0.1:{mport}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        self.assertIn('ringway_listener_messages_total{listener="test"} 4', text)
        self.assertIn('ringway_listener_recipients_total{listener="test"} 7', text)
        self.assertIn('ringway_destination_deliveries_total{destination="route:sink.test"} 6', text)
        self.assertIn('ringway_destination_delivery_seconds_count{destination="route:sink.test"} 7', text)
        self.assertIn('ringway_delivery_recipients_total{outcome="delivered"} 6', text)
        self.assertIn('ringway_delivery_failures_total{class="bad-mailbox"} 1', text)
        self.assertIn('ringway_delivery_failures_total{class="reputation"} 0', text)
        # Spool group commit: at least one batch per message made durable, each timed.
        def value(name):
            m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
            self.assertIsNotNone(m, name)
            return float(m.group(1))
        batches = value("ringway_spool_batches_total")
        self.assertGreaterEqual(batches, 3)
        self.assertEqual(value("ringway_spool_commit_seconds_count"), batches)
        self.assertGreater(value("ringway_spool_commit_seconds_sum"), 0)
        self.assertEqual(value('ringway_spool_commit_seconds_bucket{le="+Inf"}'), batches)
        self.assertEqual(value("ringway_spool_batch_records_count"), batches)
        self.assertGreaterEqual(value("ringway_spool_batch_records_sum"), 3)
        # Runtime per core: idle time grows, queues are read.
        self.assertGreater(value('ringway_core_idle_seconds_total{core="0"}'), 0)
        self.assertGreaterEqual(value('ringway_core_cross_core_queue_depth{core="1"}'), 0)
        self.assertIn("# TYPE ringway_dns_query_seconds histogram", text)
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
        self.assertEqual(query('ringway_listener_messages_total{listener="test"}'), "4")
        self.assertEqual(query('ringway_destination_deliveries_total{destination="route:sink.test"}'), "6")
        self.assertEqual(query('ringway_delivery_failures_total{class="bad-mailbox"}'), "1")
        send(g.port, "s@client.test", ["u3@sink.test"], MSG)
        wait_until(lambda: query('ringway_listener_messages_total{listener="test"}') == "5", timeout=30, step=0.5,
                   what="the next scrape to see the fifth message")


class Configuration(AdminTest):
    """set, diff, commit, history, rollback and showconfig against a
    running daemon; the version store on disk and across a restart."""

    def test_set_diff_commit_history_rollback(self):
        before = self.json_of("showconfig", "delivery")
        self.assertIn("max_connections_per_destination = 20\n", before["toml"])
        self.assertEqual(self.json_of("diff")["candidate"], False)
        r = self.json_of("set", "delivery.max_connections_per_destination", "4")
        self.assertEqual(r["changes"], [{"key": "delivery.max_connections_per_destination", "before": "20",
                                         "after": "4", "apply": "live"}])
        self.json_of("set", "runtime.cores", "1")
        self.json_of("set", "smtp.accepted_domains", "a.test, b.test")
        text = self.run_shell("diff").stdout
        self.assertIn("~ runtime.cores: 2 -> 1  (at restart)", text)
        self.assertIn('~ smtp.accepted_domains: ["local.test"] -> ["a.test", "b.test"]', text)
        # Nothing is in force before the commit.
        self.assertIn("max_connections_per_destination = 20\n", self.json_of("showconfig", "delivery")["toml"])
        c = self.json_of("commit", "fewer", "connections")
        self.assertEqual(c["version"], 2)
        self.assertEqual(len(c["changes"]), 3)
        self.assertEqual(c["pending_restart"], ["runtime.cores"])
        self.assertIn("max_connections_per_destination = 4\n", self.json_of("showconfig", "delivery")["toml"])
        st = self.json_of("status")
        self.assertEqual((st["config_version"], st["pending_restart"]), (2, ["runtime.cores"]))
        self.assertIn("waiting for a restart of ringwayd: runtime.cores", self.run_shell("status").stdout)
        # The version is on disk, with who made it and why.
        store = os.path.join(self.g.dir, "var", "config")
        with open(os.path.join(store, "2.json")) as f:
            rec = json.load(f)
        self.assertEqual(rec["comment"], "fewer connections")
        self.assertRegex(rec["who"], r"^uid=\d+\(\w+\) pid=\d+$")
        self.assertIn("delivery.max_connections_per_destination: 20 -> 4", rec["diff"])
        with open(os.path.join(store, "2.toml")) as f:
            self.assertIn("max_connections_per_destination = 4", f.read())
        self.assertIn("configuration version 2 committed by uid=", self.g.log_text())
        hist = self.json_of("history")
        self.assertEqual([v["version"] for v in hist["versions"]], [2, 1])
        self.assertEqual(hist["running"], 2)
        self.assertRegex(self.run_shell("history").stdout, r"\*\s+2 .* fewer connections")
        # Rollback commits version 1's text as version 3.
        rb = self.json_of("rollback")
        self.assertEqual((rb["version"], rb["rolled_back_to"]), (3, 1))
        self.assertIn("max_connections_per_destination = 20\n", self.json_of("showconfig", "delivery")["toml"])
        self.assertEqual(self.json_of("status")["pending_restart"], [])
        self.assertEqual(self.json_of("history", "1")["versions"][0]["comment"], "rollback to version 1")
        # A rollback to a version that is not there.
        r = self.run_shell("rollback", "99", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no version 99", r.stderr)

    def test_an_invalid_candidate_is_refused_with_every_problem(self):
        self.json_of("set", "listener[0].port", "70000")
        self.json_of("set", "delivery.max_retry_ms", "20")
        d = self.json_of("diff")
        self.assertFalse(d["valid"])
        self.assertEqual(len(d["problems"]), 2, d["problems"])
        r = self.run_shell("commit", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("the candidate is invalid; nothing was changed", r.stderr)
        self.assertIn("listener[0].port: 70000 is out of range; allowed: 1..65535", r.stderr)
        self.assertIn("delivery.max_retry_ms: 20 is below first_retry_ms", r.stderr)
        self.assertEqual(self.json_of("status")["config_version"], 1)
        self.assertEqual(len(self.json_of("history")["versions"]), 1)
        # abandon throws it away; commit then has nothing to do.
        self.assertEqual(self.json_of("abandon")["abandoned"], True)
        r = self.run_shell("commit", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nothing to commit", r.stderr)
        # Bad keys and values at set.
        for args, why in ((("set", "delivery.max_conections_per_destination", "3"), "did you mean"),
                          (("set", "delivery.starttls", "perhaps"), "expected true or false"),
                          (("set", "listener[9].port", "25"), "there is no listener[9]"),
                          (("set", "delivery.starttls"), "missing KEY VALUE; usage: set KEY VALUE")):
            r = self.run_shell(*args, check=False)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn(why, r.stderr, args)

    def test_load_a_file_and_restart_on_the_committed_version(self):
        path = os.path.join(self.tmpdir(), "candidate.toml")
        with open(self.g.config) as f:
            text = f.read().replace("[delivery]", "[delivery]\nmax_messages_per_connection = 3", 1)
        with open(path, "w") as f:
            f.write(text)
        r = self.json_of("load", path)
        self.assertTrue(r["valid"], r)
        self.assertEqual([c["key"] for c in r["changes"]], ["delivery.max_messages_per_connection"])
        self.assertEqual(self.json_of("commit", "from a file")["version"], 2)
        # A restart with the same --config file runs the newest version ...
        self.g.stop()
        delivery_test.restart(self.g)
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")
        wait_until(lambda: self.run_shell("status", check=False).returncode == 0, timeout=10, what="the shell")
        self.assertEqual(self.json_of("status")["config_version"], 2)
        self.assertIn("max_messages_per_connection = 3\n", self.json_of("showconfig", "delivery")["toml"])
        self.assertIn("running configuration version 2", self.g.log_text())

    def test_a_session_keeps_its_limits_new_sessions_get_the_new_ones(self):
        import smtplib
        old = smtplib.SMTP("127.0.0.1", self.g.port, timeout=20)
        old.ehlo("old.client.test")
        self.json_of("set", "listener[0].max_recipients", "2")
        self.json_of("commit")
        new = smtplib.SMTP("127.0.0.1", self.g.port, timeout=20)
        new.ehlo("new.client.test")
        for conn in (old, new):
            conn.mail("s@client.test")
            for n in (1, 2):
                self.assertEqual(conn.rcpt(f"u{n}@sink.test")[0], 250)
        code, msg = new.rcpt("u3@sink.test")
        self.assertEqual(code, 452, msg)
        self.assertEqual(old.rcpt("u3@sink.test")[0], 250)  # the session began under the old limit
        for conn in (old, new):
            conn.rset()
            conn.quit()


class ListenerSuspension(AdminTest):
    def test_suspend_refuses_new_then_closes_open_sessions_and_survives_a_restart(self):
        from ringway_harness import Raw
        old = Raw(self.g.port)
        self.assertEqual(old.reply()[0], 220)
        old.send("EHLO old.client.test\r\n")
        self.assertEqual(old.reply()[0], 250)
        r = self.json_of("suspend", "listener", "test", "2")
        self.assertEqual((r["suspended"], r["delay_seconds"]), ("test", 2))
        self.assertGreaterEqual(r["open_sessions"], 1)
        # New connections: 421 4.3.2 instead of a greeting, in the mail log.
        new = Raw(self.g.port)
        code, lines = new.reply()
        self.assertEqual(code, 421, lines)
        self.assertIn("4.3.2", lines[0])
        self.assertIn("suspended", lines[0])
        self.assertTrue(new.closed())
        self.assertTrue(any(e.get("event") == "reject" and e.get("what") == "listener suspended"
                            for e in self.g.journal()))
        # The open session goes on until the delay is over ...
        old.send("NOOP\r\n")
        self.assertEqual(old.reply()[0], 250)
        # ... then it is told 421 and closed.
        old.s.settimeout(10)
        code, lines = old.reply()
        self.assertEqual(code, 421, lines)
        self.assertIn("suspended", lines[0])
        self.assertTrue(old.closed())
        self.assertEqual(self.json_of("status")["gauges"]["listeners_suspended"], ["test"])
        self.assertIn("listeners suspended", self.run_shell("status").stdout)
        # It survives a restart.
        self.g.stop()
        delivery_test.restart(self.g)
        again = Raw(self.g.port)
        self.assertEqual(again.reply()[0], 421)
        wait_until(lambda: self.run_shell("status", check=False).returncode == 0, timeout=10, what="the shell")
        self.assertIn("listener test is suspended", self.g.log_text())
        # resume: mail again.
        self.assertIn("Listener test resumed", self.run_shell("resume", "listener", "test").stdout)
        back = Raw(self.g.port)
        self.assertEqual(back.reply()[0], 220)
        back.send("QUIT\r\n")
        self.assertEqual(back.reply()[0], 221)
        # Errors: no such listener, not suspended.
        r = self.run_shell("suspend", "listener", "nosuch", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no listener nosuch (listeners: test)", r.stderr)
        r = self.run_shell("resume", "listener", "test", check=False)
        self.assertIn("listener test is not suspended", r.stderr)


class BounceAndRedirect(AdminTest):
    def test_bounce_by_domain_and_redirect_a_held_message(self):
        mids = self.queue_mail()
        # down.test's recipient is deferred for an hour: bounce it now.
        r = self.json_of("bouncerecipients", "domain", "down.test")
        self.assertEqual(r["bounced"], 1)
        wait_until(lambda: any(e.get("event") == "dsn" and e.get("mid") == mids["down.test"]
                               for e in self.g.journal()), timeout=10, what="the bounce's report")
        self.assertTrue(any(e.get("event") == "delivery" and e.get("mid") == mids["down.test"] and
                            e.get("disposition") == "bounced" and "administrator" in e.get("reply", "")
                            for e in self.g.journal()))
        self.assertIn("bouncerecipients domain=down.test recipients=1 by uid=", self.g.log_text())
        # held.test is suspended: redirect its mail straight to the sink.
        text = self.run_shell("redirectrecipients", "to", f"127.0.0.1:{self.sink_.port}", "mid",
                              mids["held.test"]).stdout
        self.assertIn(f"1 recipients redirected to 127.0.0.1:{self.sink_.port}", text)
        # The sink then has sink.test's message and the redirected one.
        wait_until(lambda: (self.sink_.stats() or {}).get("received", 0) == 2, timeout=20,
                   what="the redirected message at the sink")
        wait_until(lambda: any(e.get("event") == "delivery" and e.get("mid") == mids["held.test"] and
                               e.get("disposition") == "delivered" for e in self.g.journal()),
                   timeout=10, what="the redirected delivery in the mail log")
        # Nothing left to bounce for these; a selection is required.
        self.assertEqual(self.json_of("bouncerecipients", "mid", mids["held.test"])["bounced"], 0)
        r = self.run_shell("bouncerecipients", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("say which recipients", r.stderr)
        r = self.run_shell("redirectrecipients", "to", "bad host!", "all", check=False)
        self.assertNotEqual(r.returncode, 0)


class Trace(AdminTest):
    def test_trace_each_stage_committed_and_candidate(self):
        facts = ["--client-ip", "192.0.2.7", "--helo", "outside.test", "--mail-from", "a@outside.test"]
        # An outside client to a domain we do not accept: relay denied.
        t = self.json_of("trace", *facts, "--rcpt", "x@example.test")
        self.assertEqual(set(t), {"configuration", "connection", "sender_group", "helo", "mail_from", "spf", "rcpt",
                                  "routing", "verdict"})
        self.assertEqual((t["sender_group"]["group"], t["sender_group"]["policy"], t["sender_group"]["decision"]),
                         ("UNKNOWNLIST", "ACCEPTED", "accept"))
        # The test resolver refuses every query: SPF cannot be evaluated, and
        # policy (spf_temperror = "accept") lets the mail pass.
        self.assertEqual((t["spf"]["result"], t["spf"]["domain"], t["spf"]["decision"]),
                         ("temperror", "outside.test", "accept"))
        self.assertEqual(t["connection"]["decision"], "accept")
        self.assertIn("per-client limits", t["connection"]["note"])
        self.assertEqual(t["rcpt"][0]["reply"], "554 5.7.1 <x@example.test>: Relay access denied")
        self.assertEqual((t["verdict"]["decision"], t["verdict"]["stage"]), ("reject", "rcpt"))
        # The candidate accepts example.test: trace --candidate says so, the committed one still refuses.
        self.json_of("set", "smtp.accepted_domains", "local.test, example.test")
        t = self.json_of("trace", *facts, "--rcpt", "x@example.test", "--candidate")
        self.assertEqual(t["configuration"], "candidate")
        self.assertEqual(t["rcpt"][0]["decision"], "accept")
        self.assertEqual(t["routing"][0]["destination"], "mx:example.test")
        self.assertEqual(t["verdict"]["decision"], "accept")
        self.assertEqual(self.json_of("trace", *facts, "--rcpt", "x@example.test")["verdict"]["decision"], "reject")
        # A message that has looped: refused at the message stage, as the session would.
        msg = os.path.join(self.tmpdir(), "loop.eml")
        with open(msg, "w") as f:
            f.write("".join(f"Received: from hop{i}.test\n" for i in range(60)) + "Subject: loop\n\nbody\n")
        t = self.json_of("trace", "--client-ip", "127.0.0.1", "--helo", "in.test", "--mail-from", "a@client.test",
                         "--rcpt", "u@sink.test", "--message", msg)
        self.assertEqual(t["routing"][0]["destination"], "route:sink.test")
        self.assertEqual(t["message"]["decision"], "reject")
        self.assertTrue(t["message"]["reply"].startswith("554 5.4.6"), t["message"])
        self.assertEqual(t["verdict"]["stage"], "message")
        # The text form, and nothing was queued.
        text = self.run_shell("trace", "--client-ip", "127.0.0.1", "--helo", "in.test", "--mail-from", "a@client.test",
                              "--rcpt", "u@sink.test").stdout
        self.assertIn("verdict: accept (1 recipients)", text)
        self.assertRegex(text, r"route u@sink\.test route:sink\.test via 127\.0\.0\.1:\d+")
        self.assertEqual(self.json_of("status")["counters"]["messages_received"], 0)
        # Bad input: one line saying what is missing or wrong.
        r = self.run_shell("trace", "--client-ip", "127.0.0.1", "--helo", "x", "--mail-from", "a@b.test", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing argument rcpt", r.stderr)
        r = self.run_shell("trace", "--client-ip", "not-an-ip", "--helo", "x", "--mail-from", "a@b.test",
                           "--rcpt", "u@sink.test", check=False)
        self.assertIn("client_ip: not-an-ip is not an IP address", r.stderr)
        r = self.run_shell("trace", "--bogus", "1", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unexpected --bogus", r.stderr)


class TraceMIME(AdminTest):
    def test_trace_lists_the_parts_attachments_and_archives(self):
        import io
        import zipfile
        from email.message import EmailMessage
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as z:
            z.writestr("payload.js", "alert(1)")
        outer = io.BytesIO()
        with zipfile.ZipFile(outer, "w") as z:
            z.writestr("docs/readme.txt", "see the other file")
            z.writestr("inner.zip", inner.getvalue())
        m = EmailMessage()
        m["From"] = "a@client.test"
        m["Subject"] = "invoice"
        m.set_content("Please find the invoice attached.")
        # The name and declared type lie; the bytes say zip.
        m.add_attachment(outer.getvalue(), maintype="application", subtype="pdf", filename="facture \u00e9t\u00e9.pdf")
        path = os.path.join(self.tmpdir(), "attach.eml")
        with open(path, "wb") as f:
            f.write(m.as_bytes())
        facts = ["--client-ip", "127.0.0.1", "--helo", "in.test", "--mail-from", "a@client.test", "--rcpt",
                 "u@sink.test", "--message", path]
        t = self.json_of("trace", *facts)
        mime = t["mime"]
        self.assertEqual((mime["parts"], mime["defects"]), (3, ""))
        text, att = mime["attachments"]
        self.assertEqual((text["type"], text["true_type"]), ("text/plain", "text/plain"))
        self.assertEqual((att["filename"], att["type"], att["true_type"], att["disposition"], att["size"]),
                         ("facture \u00e9t\u00e9.pdf", "application/pdf", "application/zip", "attachment",
                          len(outer.getvalue())))
        self.assertEqual([(e["name"], e["depth"]) for e in att["archive"]["entries"]],
                         [("docs/readme.txt", 1), ("inner.zip", 1), ("inner.zip/payload.js", 2)])
        out = self.run_shell("trace", *facts).stdout
        self.assertIn("mime        3 parts", out)
        self.assertIn(f"#2 facture \u00e9t\u00e9.pdf (application/pdf, really application/zip), {len(outer.getvalue())} bytes",
                      out)
        self.assertIn("holds docs/readme.txt, inner.zip, inner.zip/payload.js", out)


class ListenerMove(AdminTest):
    def test_a_commit_moves_a_listener_open_sessions_finish_on_the_old_socket(self):
        from ringway_harness import Raw
        old_port = self.g.port
        old = Raw(old_port)
        self.assertEqual(old.reply()[0], 220)
        old.send("EHLO before.client.test\r\n")
        self.assertEqual(old.reply()[0], 250)
        new_port = free_port()
        r = self.json_of("set", "listener[test].port", str(new_port))
        self.assertEqual(r["changes"][0]["apply"], "live")
        c = self.json_of("commit", "move the listener")
        self.assertEqual(c["pending_restart"], [])
        self.assertIn(f"listener test moved from 127.0.0.1:{old_port} to 127.0.0.1:{new_port}", self.g.log_text())
        # The new port greets; the old one is closed.
        moved = Raw(new_port)
        self.assertEqual(moved.reply()[0], 220)
        moved.send("QUIT\r\n")
        self.assertEqual(moved.reply()[0], 221)
        moved.close()
        wait_until(lambda: not self._accepts(old_port), timeout=10, what="the old port to close")
        # The session opened before the commit goes on and queues mail.
        old.send("MAIL FROM:<s@client.test>\r\nRCPT TO:<u@sink.test>\r\nDATA\r\n")
        self.assertEqual([old.reply()[0] for _ in range(3)], [250, 250, 354])
        old.send("Subject: across a move\r\n\r\nstill here\r\n.\r\n")
        self.assertEqual(old.reply()[0], 250)
        old.send("QUIT\r\n")
        self.assertEqual(old.reply()[0], 221)
        old.close()
        wait_until(lambda: any(e.get("disposition") == "delivered" for e in self.g.journal()), timeout=20,
                   what="the message from the old session delivered")
        # A port in use refuses the commit, and nothing changes.
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        self.json_of("set", "listener[test].port", str(busy.getsockname()[1]))
        r = self.run_shell("commit", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot apply the candidate; nothing was changed", r.stderr)
        self.assertEqual(self.json_of("status")["config_version"], 2)
        self.assertTrue(self._accepts(new_port))
        self.json_of("abandon")
        # Rollback puts it back where it was.
        self.json_of("rollback", "1")
        wait_until(lambda: self._accepts(old_port), timeout=10, what="the listener back on its old port")
        wait_until(lambda: not self._accepts(new_port), timeout=10, what="the moved port to close")
        self.g.port = old_port

    @staticmethod
    def _accepts(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False


class CommitUnderLoad(DeliveryTest):
    """A commit and a rollback while ringway-load is sending: no message
    lost, no connection dropped, and the sink sees the new limit."""

    def test_commit_and_rollback_under_load(self):
        log = os.path.join(self.tmpdir(), "accepted.log")
        s = self.sink("--expect", log, "--data-delay", "40")
        g = self.gateway(routes=delivery_test.route_all(s), delivery={"max_connections_per_destination": 8})
        sock = os.path.join(g.dir, "var", "ringway.sock")
        wait_until(lambda: os.path.exists(sock), timeout=10, what="the control socket")

        def shell(*args):
            r = subprocess.run([shell_bin(), "--socket", sock, "--json", *args], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, f"{args}: {r.stderr}")
            return json.loads(r.stdout)

        n = 1200
        exe = os.path.join(BUILD, "bench", "ringway-load")
        load = subprocess.Popen([exe, "--json", "-q", "--seed", "5", "-s", f"127.0.0.1:{g.port}", "-c", "8",
                                 "--per-conn", "25", "-n", str(n), "--mix", "1k:70,4k:30", "--accepted-log", log],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: load.poll() is None and load.kill())

        def current():
            return (s.stats() or {}).get("current_connections", 0)

        wait_until(lambda: current() >= 5, timeout=30, what="delivery to reach several connections")
        shell("set", "delivery.max_connections_per_destination", "2")
        self.assertEqual(shell("commit", "throttle")["version"], 2)
        # Connections over the new limit end after their message.
        time.sleep(1.0)
        seen = []
        for _ in range(20):
            seen.append(current())
            time.sleep(0.1)
        self.assertLessEqual(max(seen), 2, f"connections after the commit: {seen}")
        self.assertLess((s.stats() or {}).get("received", 0), n, "the load ended before the check")
        self.assertEqual(shell("rollback")["rolled_back_to"], 1)
        wait_until(lambda: current() >= 4, timeout=20, what="the rolled-back limit to allow more connections")
        out, err = load.communicate(timeout=180)
        self.assertEqual(load.returncode, 0, err)
        rep = json.loads(out)
        self.assertEqual(rep["accepted"], n, rep)
        self.wait_received(s, n, 120)
        sink = s.stop()
        self.assertEqual((sink["missing"], sink["corrupt"], sink["duplicates"]), (0, 0, 0))

    def wait_received(self, s, n, timeout):
        return wait_until(lambda: (s.stats() or {}).get("received", 0) >= n, timeout=timeout,
                          what=f"{n} messages at the sink (have {(s.stats() or {}).get('received')})")


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    delivery_test.BUILD = BUILD
    sink_test.BUILD = BUILD
    unittest.main(verbosity=2)
