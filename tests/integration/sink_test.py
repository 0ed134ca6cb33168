#!/usr/bin/env python3
"""ringway-sink from the outside: real clients (smtplib, raw sockets)
against the real binary. Every fault mode is observed on the wire; the
integrity verdicts (ok, corrupt, duplicates, missing) are checked in the
JSON report, with messages marked by a Python port of bench/lib/digest.cc.

    sink_test.py BUILD_DIR [unittest args]
"""
import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ringway_harness import Raw, wait_until  # noqa: E402

BUILD = None

# ---- digest64, ported from bench/lib/digest.cc (slow, exact) ----
M64 = (1 << 64) - 1
K_M1, K_M2, K_M3 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
K_SEED = (0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89)


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def _avalanche(x):
    x ^= x >> 30
    x = (x * K_M2) & M64
    x ^= x >> 27
    x = (x * K_M3) & M64
    return x ^ (x >> 31)


def digest64(data: bytes) -> int:
    lanes = list(K_SEED)
    full = len(data) - len(data) % 32
    for off in range(0, full, 32):
        for i in range(4):
            w = int.from_bytes(data[off + 8 * i:off + 8 * i + 8], "little")
            lanes[i] = (_rotl(lanes[i] ^ ((w * K_M2) & M64), 29) * K_M1) & M64
    tail = data[full:]
    h = (_rotl(lanes[0], 1) + _rotl(lanes[1], 7) + _rotl(lanes[2], 12) + _rotl(lanes[3], 18)) & M64
    for lane in lanes:
        h = ((h ^ _avalanche(lane)) * K_M1 + K_M3) & M64
    h ^= (len(data) * K_M2) & M64
    i = 0
    while i + 8 <= len(tail):
        h = (_rotl(h ^ _avalanche(int.from_bytes(tail[i:i + 8], "little")), 27) * K_M1 + K_M2) & M64
        i += 8
    while i < len(tail):
        h = (_rotl(h ^ ((tail[i] * K_M3) & M64), 11) * K_M1) & M64
        i += 1
    return _avalanche(h)


def marked(mid, body: bytes, sent_body=None):
    """A message whose mark covers body; sent_body (same length) replaces it on the wire."""
    mark = f"X-Ringway-Load: id={mid}; size={len(body)}; digest={digest64(body):016x}\r\n".encode()
    return b"From: load@gen.test\r\nSubject: " + mid.encode() + b"\r\n" + mark + b"\r\n" + (
        body if sent_body is None else sent_body)


# ---- the sink under test ----

class Sink:
    def __init__(self, *args, cores=1, listen="127.0.0.1:0", seed=7):
        self.dir = tempfile.mkdtemp(prefix="rw_sink_", dir=os.environ.get("RINGWAY_TEST_TMP"))
        self.report_path = os.path.join(self.dir, "report.json")
        self.stats_path = os.path.join(self.dir, "stats.json")
        port_file = os.path.join(self.dir, "port")
        self.err = open(os.path.join(self.dir, "stderr"), "w+")
        cmd = [os.path.join(BUILD, "bench", "ringway-sink"), "--listen", listen, "--port-file", port_file,
               "--report", self.report_path, "--stats", self.stats_path, "--no-pin", "--cores", str(cores),
               "--hostname", "sink.test", "--seed", str(seed), "--text", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err)
        try:
            wait_until(self._listening, timeout=10, what="ringway-sink to listen")
            with open(port_file) as f:
                self.port = int(f.read())
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"ringway-sink exited: {self.stderr()}")
        return "ringway-sink: listening on" in self.stderr()

    def stderr(self):
        self.err.flush()
        with open(self.err.name) as f:
            return f.read()

    def stats(self):
        try:
            with open(self.stats_path) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def stop(self):
        """SIGTERM, then the report."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        assert rc == 0, f"exit {rc}: {self.stderr()}"
        with open(self.report_path) as f:
            return json.load(f)

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.stderr()
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        # An ASan/UBSan build reports here.
        assert "Sanitizer" not in err and "runtime error:" not in err, err
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}: {err}"


def smtp(port, timeout=10):
    return smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=timeout)


def raw_to_data(test, port, rcpt="x@sink.test"):
    """A raw client that is past DATA's 354."""
    r = test.raw(port)
    assert r.reply()[0] == 220
    r.send(f"EHLO raw.test\r\nMAIL FROM:<s@raw.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n")
    for want in (250, 250, 250, 354):
        code, lines = r.reply()
        assert code == want, lines
    return r


class SinkTest(unittest.TestCase):
    def sink(self, *args, **kw):
        s = Sink(*args, **kw)
        self.addCleanup(s.cleanup)
        return s

    def raw(self, port):
        r = Raw(port)
        self.addCleanup(r.close)
        return r


class Protocol(SinkTest):
    def test_greeting_ehlo_and_commands(self):
        s = self.sink("--max-size", "1m")
        r = self.raw(s.port)
        self.assertEqual(r.reply(), (220, ["220 sink.test ESMTP ringway-sink"]))
        r.send("MAIL FROM:<a@b.test>\r\n")
        self.assertEqual(r.line(), "503 5.5.1 Error: send HELO/EHLO first")
        r.send("HELO c.test\r\n")
        self.assertEqual(r.line(), "250 sink.test")
        r.send("EHLO c.test\r\n")
        code, lines = r.reply()
        self.assertEqual(code, 250)
        self.assertEqual([l[4:] for l in lines[1:]],
                         ["PIPELINING", "SIZE 1048576", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"])
        for cmd, want in [("RCPT TO:<x@y.test>", "503 5.5.1 Error: need MAIL command"),
                          ("DATA", "503 5.5.1 Error: need MAIL command"),
                          ("MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>"),
                          ("MAIL TO:<a@b.test>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
                          ("MAIL FROM:<a@b.test> SIZE=2000000", "552 5.3.4 Error: message size exceeds fixed limit"),
                          ("MAIL FROM:<a@b.test>", "250 2.1.0 Ok"),
                          ("MAIL FROM:<a@b.test>", "503 5.5.1 Error: nested MAIL command"),
                          ("DATA", "503 5.5.1 Error: need RCPT command"),
                          ("RCPT TO:<>", "501 5.5.4 Syntax: RCPT TO:<address>"),
                          ("RCPT TO:<x@y.test>", "250 2.1.5 Ok"),
                          ("DATA extra", "501 5.5.4 Syntax: DATA"),
                          ("RSET", "250 2.0.0 Ok"),
                          ("NOOP", "250 2.0.0 Ok"),
                          ("VRFY someone", "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"),
                          ("BDAT 10 LAST", "502 5.5.1 Error: command not implemented"),
                          ("STARTTLS", "502 5.5.1 Error: command not implemented"),
                          ("FROB", "500 5.5.2 Error: command not recognized"),
                          ("NOOP " + "x" * 5000, "500 5.5.2 Line too long"),
                          ("NOOP", "250 2.0.0 Ok"),
                          ("QUIT", "221 2.0.0 Bye")]:
            r.send(cmd + "\r\n")
            self.assertEqual(r.line(), want, cmd)
        self.assertTrue(r.closed())

    def test_too_many_errors_close_the_connection(self):
        s = self.sink()
        r = self.raw(s.port)
        r.reply()
        r.send("BOGUS\r\n" * 25)
        for _ in range(20):
            self.assertEqual(r.reply()[0], 500)
        self.assertEqual(r.line(), "421 4.7.0 sink.test Error: too many errors")
        self.assertTrue(r.closed())

    def test_pipelined_commands_get_one_batch_of_replies(self):
        s = self.sink()
        r = self.raw(s.port)
        r.reply()
        # A whole session in one write, message included (stricter than
        # RFC 2920 asks of clients): every reply comes back, in order.
        body = marked("pipe-1", b"one\r\n.two\r\n")
        stuffed = body.replace(b"\r\n.", b"\r\n..")
        r.send(b"EHLO p.test\r\nMAIL FROM:<a@p.test>\r\nRCPT TO:<x@sink.test>\r\nRCPT TO:<y@sink.test>\r\nDATA\r\n"
               + stuffed + b".\r\nNOOP\r\nQUIT\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual([r.reply()[0] for _ in range(7)], [250, 250, 250, 354, 250, 250, 221])
        # Forty pipelined commands: their replies come back in one read.
        r2 = self.raw(s.port)
        r2.reply()
        r2.send("EHLO p.test\r\n" + "NOOP\r\n" * 40)
        time.sleep(0.2)
        data = r2.s.recv(65536)
        self.assertEqual(data.count(b"250 2.0.0 Ok\r\n"), 40)
        r2.close()
        rep = s.stop()
        self.assertEqual((rep["received"], rep["recipients"], rep["ok"]), (1, 2, 1))

    def test_message_too_large_is_refused_after_data(self):
        s = self.sink("--max-size", "1k")
        with smtp(s.port) as c:
            c.ehlo()
            c.mail("a@b.test")  # no SIZE=: the limit bites after the dot
            c.rcpt("x@sink.test")
            self.assertEqual(c.data(b"Subject: big\r\n\r\n" + b"y" * 2000 + b"\r\n"),
                             (552, b"5.3.4 Error: message too large"))
        self.assertEqual(s.stop()["received"], 0)

    def test_idle_timeout(self):
        s = self.sink("--timeout", "1s")
        r = self.raw(s.port)
        r.reply()
        t0 = time.monotonic()
        self.assertEqual(r.line(), "421 4.4.2 sink.test Error: timeout exceeded")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertTrue(r.closed())

    def test_sigterm_closes_open_connections_and_reports(self):
        s = self.sink()
        r = self.raw(s.port)
        r.reply()
        t0 = time.monotonic()
        rep = s.stop()
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertTrue(r.closed(timeout=1))
        self.assertEqual(rep["connections"], 1)
        self.assertIn("ringway-sink: 0 messages", s.stderr())  # --text

    def test_starttls(self):
        self.assertTrue(shutil.which("openssl"), "openssl is a test dependency (scripts/deps.sh)")
        d = tempfile.mkdtemp(prefix="rw_sink_tls_")
        self.addCleanup(shutil.rmtree, d, True)
        key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=sink.test"],
                       check=True, capture_output=True)
        s = self.sink("--tls-cert", cert, "--tls-key", key)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtp(s.port) as c:
            c.ehlo()
            self.assertTrue(c.has_extn("starttls"))
            c.starttls(context=ctx)
            c.ehlo()
            self.assertFalse(c.has_extn("starttls"))
            c.sendmail("a@b.test", ["x@sink.test"], marked("tls-1", b"secret\r\n"))
        rep = s.stop()
        self.assertEqual((rep["received"], rep["ok"]), (1, 1))

    def test_ipv6_listener(self):
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))  # the loopback interface's ::1 is needed here
        s = self.sink(listen="[::1]:0")
        self.assertIn("listening on [::1]:", s.stderr())
        with smtplib.SMTP("::1", s.port, timeout=10) as c:
            c.sendmail("a@b.test", ["x@sink.test"], b"Subject: v6\r\n\r\nhi\r\n")
        self.assertEqual(s.stop()["peers"], {"::1": 1})


class Verification(SinkTest):
    def test_ok_corrupt_duplicates_missing_unexpected(self):
        # Bodies around the digest's 32-byte blocks and 8-byte words, dot
        # lines, a blank first body line, a large one.
        sizes = [0, 2, 7, 8, 9, 29, 30, 31, 32, 33, 62, 64, 65, 100, 1000, 70000]
        good = [(f"v-size-{n}", b"z" * (n - 2) + b"\r\n" if n else b"") for n in sizes]
        good.append(("v-dots", b".\r\n..\r\n.x\r\n\r\n.\r\nend\r\n"))
        good.append(("v-blank-first", b"\r\nafter a blank line\r\n"))
        good.append(("v-big", b"".join(b".%07d line of a big body\r\n" % i for i in range(20000))))
        expect = os.path.join(tempfile.mkdtemp(prefix="rw_sink_exp_"), "accepted.log")
        self.addCleanup(shutil.rmtree, os.path.dirname(expect), True)
        with open(expect, "w") as f:
            for mid, _ in good:
                f.write(f"{mid} a@sink.test b@sink.test\n")
            f.write("v-bad a@sink.test\nv-dup a@sink.test\nv-missing a@sink.test m@sink.test\n")
        s = self.sink("--expect", expect)

        with smtp(s.port) as c:
            for mid, body in good:
                self.assertEqual(c.sendmail("l@gen.test", ["A@Sink.Test", "b@sink.test"], marked(mid, body)), {})
            # One byte changed after marking: corrupt.
            c.sendmail("l@gen.test", ["a@sink.test"], marked("v-bad", b"payload\r\n", b"paylOad\r\n"))
            # Sent twice: one duplicate.
            c.sendmail("l@gen.test", ["a@sink.test"], marked("v-dup", b"twice\r\n"))
            c.sendmail("l@gen.test", ["a@sink.test"], marked("v-dup", b"twice\r\n"))
            # Not in the accepted log.
            c.sendmail("l@gen.test", ["a@sink.test"], marked("v-extra", b"extra\r\n"))
            # No mark at all.
            c.sendmail("l@gen.test", ["a@sink.test"], b"Subject: plain\r\n\r\nno mark\r\n")
        # Byte by byte from a raw socket: every split of the header end,
        # a stuffed dot and the terminator.
        r = raw_to_data(self, s.port, "a@sink.test")
        msg = marked("v-trickle", b".\r\nx\r\n").replace(b"\r\n.", b"\r\n..") + b".\r\n"
        for i in range(len(msg)):
            r.send(msg[i:i + 1])
            time.sleep(0.002)
        self.assertEqual(r.reply()[0], 250)
        r.close()

        rep = s.stop()
        n_good = len(good)
        self.assertEqual(rep["received"], n_good + 6)
        self.assertEqual(rep["recipients"], 2 * n_good + 6)
        self.assertEqual(rep["ok"], n_good + 4)  # good, 2 x dup, extra, trickle
        self.assertEqual(rep["corrupt"], 1)
        self.assertEqual(rep["unmarked"], 1)
        self.assertEqual(rep["corrupt_ids"], ["v-bad"])
        self.assertEqual(rep["duplicates"], 1)
        self.assertEqual(rep["duplicate_ids"], ["v-dup"])
        self.assertEqual(rep["missing"], 2)
        self.assertEqual(rep["missing_ids"], ["v-missing"])
        self.assertEqual(rep["unexpected"], 2)  # v-extra, v-trickle
        self.assertEqual(rep["connections"], 2)
        self.assertEqual(rep["max_messages_per_connection"], n_good + 5)
        self.assertEqual(rep["max_messages_in_any_minute"], n_good + 6)
        self.assertEqual(rep["peers"], {"127.0.0.1": n_good + 6})
        self.assertEqual(rep["faults"], {})

    def test_without_expect_missing_is_null(self):
        s = self.sink()
        with smtp(s.port) as c:
            c.sendmail("l@gen.test", ["a@sink.test"], marked("n-1", b"x\r\n"))
        rep = s.stop()
        self.assertIsNone(rep["missing"])
        self.assertIsNone(rep["unexpected"])
        self.assertEqual(rep["ok"], 1)

    def test_save_dir_keeps_unstuffed_bytes_and_envelope(self):
        save = tempfile.mkdtemp(prefix="rw_sink_save_")
        self.addCleanup(shutil.rmtree, save, True)
        s = self.sink("--save-dir", save)
        msg = marked("s/1", b".leading dot\r\n..two\r\nend\r\n")
        with smtp(s.port) as c:
            c.sendmail("From@Gen.test", ["X@sink.test", "y@sink.test"], msg)
            c.sendmail("f@gen.test", ["z@sink.test"], b"Subject: none\r\n\r\nbody\r\n")
        rep = s.stop()
        self.assertEqual(rep["ok"], 1)
        files = sorted(os.listdir(save))
        self.assertEqual(files, ["1-s_1.eml", "1-s_1.env", "2-nomark.eml", "2-nomark.env"])
        with open(os.path.join(save, "1-s_1.eml"), "rb") as f:
            self.assertEqual(f.read(), msg)
        with open(os.path.join(save, "1-s_1.env")) as f:
            self.assertEqual(f.read(), "MAIL FROM:<From@Gen.test>\nRCPT TO:<x@sink.test>\nRCPT TO:<y@sink.test>\n")
        self.assertEqual(rep["bytes"], len(msg) + len(b"Subject: none\r\n\r\nbody\r\n"))

    def test_two_cores_many_connections_and_stats_file(self):
        s = self.sink(cores=2)
        errors = []

        def client(k):
            try:
                with smtp(s.port) as c:
                    for i in range(20):
                        c.sendmail("l@gen.test", ["a@sink.test"], marked(f"mc-{k}-{i}", b"b%d\r\n" % i))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        def settled():
            st = s.stats() or {}
            return st if st.get("received") == 160 and st.get("current_connections") == 0 else None
        st = wait_until(settled, timeout=5, what="stats file to show 160 received and no connection")
        self.assertEqual(st["ok"], 160)
        rep = s.stop()
        self.assertEqual((rep["received"], rep["ok"], rep["duplicates"], rep["connections"]), (160, 160, 0, 8))
        self.assertEqual(rep["max_messages_per_connection"], 20)
        self.assertGreaterEqual(rep["max_concurrent_connections"], 1)
        self.assertLessEqual(rep["max_concurrent_connections"], 8)


class Faults(SinkTest):
    def test_magic_recipients_rcpt_and_data_replies(self):
        s = self.sink()
        with smtp(s.port) as c:
            c.ehlo()
            c.mail("a@b.test")
            self.assertEqual(c.rcpt("tempfail@sink.test"), (451, b"4.3.0 Error: temporary failure (injected)"))
            self.assertEqual(c.rcpt("permfail+x@sink.test"), (550, b"5.1.1 Error: mailbox unavailable (injected)"))
            self.assertEqual(c.rcpt("ok@sink.test")[0], 250)
            self.assertEqual(c.data(b"Subject: x\r\n\r\nx\r\n")[0], 250)
            for rcpt, code, enh in [("data-tempfail@sink.test", 451, b"4.3.0"),
                                    ("data-permfail+t@sink.test", 554, b"5.6.0")]:
                with self.assertRaises(smtplib.SMTPDataError) as e:
                    c.sendmail("a@b.test", [rcpt], b"Subject: x\r\n\r\nx\r\n")
                self.assertEqual(e.exception.smtp_code, code)
                self.assertTrue(e.exception.smtp_error.startswith(enh), e.exception.smtp_error)
        rep = s.stop()
        self.assertEqual(rep["received"], 1)
        self.assertEqual(rep["faults"], {"rcpt-tempfail": 1, "rcpt-permfail": 1, "data-tempfail": 1,
                                         "data-permfail": 1})
        self.assertEqual(rep["fault_replies"], {"4xx": 2, "5xx": 2})

    def test_flag_probabilities_of_one(self):
        s = self.sink("--rcpt-tempfail", "1")
        with smtp(s.port) as c:
            c.ehlo()
            c.mail("a@b.test")
            self.assertEqual(c.rcpt("x@sink.test")[0], 451)
        s = self.sink("--rcpt-permfail", "100%")
        with smtp(s.port) as c:
            c.ehlo()
            c.mail("a@b.test")
            self.assertEqual(c.rcpt("x@sink.test")[0], 550)
        for flag, code in [("--data-tempfail", 451), ("--data-permfail", 554)]:
            s = self.sink(flag, "1")
            with smtp(s.port) as c:
                with self.assertRaises(smtplib.SMTPDataError) as e:
                    c.sendmail("a@b.test", ["x@sink.test"], b"Subject: x\r\n\r\nx\r\n")
                self.assertEqual(e.exception.smtp_code, code)
            self.assertEqual(s.stop()["received"], 0)
        s = self.sink("--rcpt-tempfail", "0.5", seed=3)
        codes = []
        with smtp(s.port) as c:
            c.ehlo()
            c.mail("a@b.test")
            codes = [c.rcpt(f"r{i}@sink.test")[0] for i in range(200)]
        self.assertEqual(set(codes), {250, 451})
        self.assertTrue(60 < codes.count(451) < 140, codes.count(451))

    def test_reply_421_to_mail(self):
        s = self.sink("--reply-421", "1")
        r = self.raw(s.port)
        r.reply()
        r.send("EHLO x.test\r\nMAIL FROM:<a@b.test>\r\n")
        r.reply()
        self.assertEqual(r.line(), "421 4.3.2 sink.test Service not available, closing transmission channel")
        self.assertTrue(r.closed())
        self.assertEqual(s.stop()["faults"], {"reply-421": 1})

    def test_greylist_flag_is_global_across_cores(self):
        s = self.sink("--greylist", "1", cores=2)
        with smtp(s.port) as c:
            c.ehlo()
            c.mail("Sender@b.test")
            code, msg = c.rcpt("x@sink.test")
            self.assertEqual((code, msg), (450, b"4.7.1 Greylisted, try again in 1 seconds"))
            self.assertEqual(c.rcpt("x@sink.test")[0], 450)
        time.sleep(1.1)
        # Whichever core takes the connection, the triplet has waited enough.
        for _ in range(6):
            with smtp(s.port) as c:
                self.assertEqual(c.sendmail("sender@b.test", ["x@sink.test"], b"Subject: g\r\n\r\ng\r\n"), {})
        # Another sender is a new triplet.
        with smtp(s.port) as c:
            c.ehlo()
            c.mail("other@b.test")
            self.assertEqual(c.rcpt("x@sink.test")[0], 450)
        rep = s.stop()
        self.assertEqual(rep["received"], 6)
        self.assertEqual(rep["faults"], {"greylist": 3})

    def test_greylist_magic_recipient(self):
        s = self.sink()
        with smtp(s.port) as c:
            c.ehlo()
            c.mail("a@b.test")
            self.assertEqual(c.rcpt("greylist@sink.test"), (450, b"4.7.1 Greylisted, try again in 2 seconds"))
            self.assertEqual(c.rcpt("plain@sink.test")[0], 250)

    def test_delays(self):
        s = self.sink("--delay", "300")
        r = self.raw(s.port)
        t0 = time.monotonic()
        r.reply()
        r.send("NOOP\r\n")
        r.reply()
        self.assertGreaterEqual(time.monotonic() - t0, 0.55)
        r.close()
        for args, rcpt, want in [(("--data-delay", "400"), "x@sink.test", 0.38),
                                 ((), "delay-500@sink.test", 0.48)]:
            s = self.sink(*args)
            with smtp(s.port) as c:
                c.ehlo()
                c.mail("a@b.test")
                c.rcpt(rcpt)
                t0 = time.monotonic()
                self.assertEqual(c.data(b"Subject: d\r\n\r\nd\r\n")[0], 250)
                self.assertGreaterEqual(time.monotonic() - t0, want)
            self.assertEqual(s.stop()["faults"], {"data-delay": 1})

    def test_disconnect_in_data(self):
        for args, rcpt in [((), "disconnect@sink.test"), (("--disconnect-in-data", "1"), "x@sink.test")]:
            s = self.sink(*args)
            r = raw_to_data(self, s.port, rcpt)
            r.send("Subject: cut\r\n\r\nsome body\r\n")
            self.assertTrue(r.closed())
            self.assertEqual(r.buf, b"")
            with smtp(s.port) as c:
                with self.assertRaises((smtplib.SMTPServerDisconnected, ConnectionError)):
                    c.sendmail("a@b.test", [rcpt], b"Subject: x\r\n\r\n" + b"y" * 100000 + b"\r\n")
            rep = s.stop()
            self.assertEqual(rep["received"], 0)
            self.assertEqual(rep["faults"], {"disconnect": 2})

    def test_garbage_reply(self):
        s = self.sink()
        r = raw_to_data(self, s.port, "garbage@sink.test")
        r.send("Subject: g\r\n\r\ng\r\n.\r\n")
        self.assertTrue(r.closed())
        self.assertEqual(r.buf, b"hello there\r\n")
        s2 = self.sink("--garbage", "1")
        with smtp(s2.port) as c:
            with self.assertRaises(smtplib.SMTPException):
                c.sendmail("a@b.test", ["x@sink.test"], b"Subject: g\r\n\r\ng\r\n")
        self.assertEqual(s.stop()["received"], 0)

    def test_endless_reply(self):
        s = self.sink("--endless", "1")
        r = raw_to_data(self, s.port)
        r.send("Subject: e\r\n\r\ne\r\n.\r\n")
        data = b""
        while len(data) <= (1 << 20) + 1000:
            d = r.s.recv(1 << 16)
            self.assertTrue(d, "closed early")
            data += d
        self.assertNotIn(b"\n", data)
        self.assertNotIn(b"\r", data)
        r.close()
        s2 = self.sink()
        r2 = raw_to_data(self, s2.port, "endless@sink.test")
        r2.send("Subject: e\r\n\r\ne\r\n.\r\n")
        self.assertNotIn(b"\n", r2.s.recv(4096))
        r2.close()
        self.assertEqual(s.stop()["faults"], {"endless": 1})

    def test_stall_after_dot(self):
        for args, rcpt in [((), "stall@sink.test"), (("--stall", "1"), "x@sink.test")]:
            s = self.sink(*args)
            r = raw_to_data(self, s.port, rcpt)
            r.send("Subject: s\r\n\r\ns\r\n.\r\n")
            r.s.settimeout(1.0)
            with self.assertRaises(socket.timeout):
                r.s.recv(100)
            r.close()
            wait_until(lambda: (s.stats() or {}).get("current_connections") == 0, timeout=5,
                       what="the stalled connection to end after the client closed")
            rep = s.stop()
            self.assertEqual(rep["faults"], {"stall": 1})
            self.assertEqual(rep["received"], 0)

    def test_slow_read(self):
        body = b"x" * 1022 + b"\r\n"
        s = self.sink()  # slow@: 16 KiB/s
        with smtp(s.port) as c:
            t0 = time.monotonic()
            c.sendmail("a@b.test", ["slow@sink.test"], b"Subject: s\r\n\r\n" + body * 24)
            self.assertGreaterEqual(time.monotonic() - t0, 1.0)
        self.assertEqual(s.stop()["faults"], {"slow-read": 1})
        s = self.sink("--slow-read", "32k")
        with smtp(s.port) as c:
            t0 = time.monotonic()
            c.sendmail("a@b.test", ["x@sink.test"], b"Subject: s\r\n\r\n" + body * 48)
            self.assertGreaterEqual(time.monotonic() - t0, 1.0)
        rep = s.stop()
        self.assertEqual((rep["received"], rep["faults"]), (1, {"slow-read": 1}))

    def test_refuse_after_and_max_connections(self):
        s = self.sink("--refuse-after", "2")
        for want in (220, 220, 421, 421):
            r = self.raw(s.port)
            code, lines = r.reply()
            self.assertEqual(code, want, lines)
            if code == 421:
                self.assertEqual(lines, ["421 4.7.0 sink.test Too busy, closing connection"])
                self.assertTrue(r.closed())
            r.close()
        self.assertEqual(s.stop()["faults"], {"refuse-after": 2})

        s = self.sink("--max-connections", "2")
        a, b = self.raw(s.port), self.raw(s.port)
        self.assertEqual(a.reply()[0], 220)
        self.assertEqual(b.reply()[0], 220)
        c = self.raw(s.port)
        self.assertEqual(c.reply(), (421, ["421 4.7.0 sink.test Too many connections, closing connection"]))
        self.assertTrue(c.closed())
        a.send("QUIT\r\n")
        self.assertTrue(a.closed())
        wait_until(lambda: (s.stats() or {}).get("current_connections") == 1, timeout=5, what="a to be gone")
        d = self.raw(s.port)
        self.assertEqual(d.reply()[0], 220)
        rep = s.stop()
        self.assertEqual(rep["faults"], {"max-connections": 1})
        self.assertEqual(rep["max_concurrent_connections"], 3)
        self.assertEqual(rep["connections"], 4)


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
