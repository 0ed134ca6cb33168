#!/usr/bin/env python3
"""Filtering policy end to end: content rules in a real ringwayd, mail
from smtplib and a raw BDAT client, delivery to ringway-sink saving what
arrives.

    filter_test.py BUILD_DIR [unittest args]

Asserts the replies (code, enhanced code, text) of rejecting rules, that
dropped and rejected mail never reaches the sink, that header actions
(add, remove, tag the subject) are what the sink receives with the body
byte-exact, the mail log's content and received lines, the refusal of a
bad rule at load with its line, a live commit of a rule, and `trace`.
"""
import email
import email.policy
import io
import json
import os
import smtplib
import subprocess
import sys
import time
import unittest
import zipfile
from email.message import EmailMessage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import delivery_test  # noqa: E402
from delivery_test import DeliveryTest, saved  # noqa: E402
from ringway_harness import Raw, wait_until  # noqa: E402

BUILD = None

RULES = r'''
[[content_rule]]
name = "no-exe"
condition = 'attachment-name ~ /\.(exe|scr)$/ or archive-entry ~ /\.exe$/'
actions = ["reject 550 5.7.1 Executables are not accepted here"]

[[content_rule]]
name = "drop-me"
condition = 'subject == "drop me"'
actions = ["drop"]

[[content_rule]]
name = "later"
condition = 'rcpt == "later@local.test"'
actions = ["reject 451 4.7.1 Try this one later"]

[[content_rule]]
name = "spammy"
condition = 'body ~ /cheap\s+pills/ and direction == "inbound"'
actions = ["tag-subject [SUSPECT]", "add-header X-Content-Rule: spammy"]

[[content_rule]]
name = "strip-internal"
condition = 'header "X-Internal" ~ /./'
actions = ["remove-header X-Internal"]
'''


def shell_bin():
    return os.path.join(BUILD, "admin", "ringway")


def zip_with(name, data):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr(name, data)
    return b.getvalue()


def message(subject, body, attachment=None, extra=()):
    m = EmailMessage()
    m["From"] = "alice@sender.test"
    m["To"] = "bob@local.test"
    m["Subject"] = subject
    for k, v in extra:
        m[k] = v
    m.set_content(body)
    if attachment:
        name, data = attachment
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return m.as_bytes(policy=email.policy.SMTP)


class FilterTest(DeliveryTest):
    def setUp(self):
        self.sink_ = self.sink(save=True)
        # 127.0.0.1 may not relay: its mail to local.test is inbound.
        self.g = self.gateway(routes=[("local.test", [f"127.0.0.1:{self.sink_.port}"])],
                              relay_networks='["127.0.0.2/32"]', tail_extra=RULES)
        self.sock = os.path.join(self.g.dir, "var", "ringway.sock")

    def transaction(self, msg, rcpts=("bob@local.test",)):
        """(code, text) of the reply to the end of DATA."""
        with smtplib.SMTP("127.0.0.1", self.g.port, local_hostname="client.test", timeout=30) as c:
            c.ehlo()
            self.assertEqual(c.mail("alice@sender.test")[0], 250)
            for r in rcpts:
                self.assertEqual(c.rcpt(r)[0], 250)
            code, text = c.data(msg)
            return code, text.decode()

    def delivered(self, n):
        wait_until(lambda: len(saved(self.sink_.save)) >= n, timeout=20, what=f"{n} messages at the sink")
        return saved(self.sink_.save)

    def events(self, kind):
        return [e for e in self.g.journal() if e.get("event") == kind]


class ContentRules(FilterTest):
    def test_reject_drop_tempfail_and_header_actions(self):
        # An executable inside a zip: refused at the end of DATA.
        code, text = self.transaction(message("tools", "see attached",
                                              ("tools.zip", zip_with("bin/setup.exe", b"MZ\x90\x00"))))
        self.assertEqual((code, text), (550, "5.7.1 Executables are not accepted here"))
        # An executable by name.
        code, text = self.transaction(message("game", "fun", ("game.scr", b"MZ")))
        self.assertEqual(code, 550)
        # Dropped: answered as any message, never delivered.
        code, text = self.transaction(message("drop me", "bye"))
        self.assertEqual((code, text), (250, "2.0.0 Ok"))
        # A temporary refusal with the rule's own code.
        code, text = self.transaction(message("hello", "hi"), rcpts=("later@local.test",))
        self.assertEqual((code, text), (451, "4.7.1 Try this one later"))
        # Header actions: tagged, a field added, one removed; the body as sent.
        body = "Buy cheap   pills now.\nSecond line.\n"
        sent = message("offer", body, extra=[("X-Internal", "build 7 secret")])
        code, text = self.transaction(sent)
        self.assertEqual(code, 250, text)
        # A clean message passes untouched by the rules.
        clean = message("minutes", "The minutes of the meeting.\n")
        self.assertEqual(self.transaction(clean)[0], 250)
        got = self.delivered(2)
        self.assertEqual(len(got), 2)
        tagged = email.message_from_bytes(got[0][0], policy=email.policy.default)
        self.assertEqual(tagged["Subject"], "[SUSPECT] offer")
        self.assertEqual(tagged["X-Content-Rule"], "spammy")
        self.assertIsNone(tagged["X-Internal"])
        self.assertEqual(tagged.get_all("Subject"), ["[SUSPECT] offer"])
        sent_body = sent.split(b"\r\n\r\n", 1)[1]
        self.assertTrue(got[0][0].endswith(sent_body), got[0][0])
        plain = email.message_from_bytes(got[1][0], policy=email.policy.default)
        self.assertEqual(plain["Subject"], "minutes")
        self.assertIsNone(plain["X-Content-Rule"])
        self.assertTrue(got[1][0].endswith(clean.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + clean.split(b"\r\n\r\n", 1)[1]))
        # The mail log: what each rule did.
        content = [(e["rule"], e["action"]) for e in self.events("content")]
        self.assertEqual(content, [("no-exe", "reject"), ("no-exe", "reject"), ("drop-me", "drop"),
                                   ("later", "reject")])
        received = [e.get("rules") for e in self.events("received")]
        self.assertEqual(received, ["spammy,strip-internal", ""])
        rejects = [(e["code"], e["what"]) for e in self.events("reject")]
        self.assertEqual(rejects, [(550, "content rule"), (550, "content rule"), (451, "content rule")])

    def test_bdat_is_judged_like_data(self):
        msg = message("tools", "see attached", ("run.exe", b"MZ\x90\x00"))
        c = Raw(self.g.port)
        self.assertEqual(c.reply()[0], 220)
        c.send("EHLO client.test\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.send("MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@local.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)
        half = len(msg) // 2
        c.send(f"BDAT {half}\r\n".encode() + msg[:half])
        self.assertEqual(c.reply()[0], 250)
        c.send(f"BDAT {len(msg) - half} LAST\r\n".encode() + msg[half:])
        self.assertEqual(c.reply(), (550, ["550 5.7.1 Executables are not accepted here"]))
        # The session goes on: a clean message through BDAT is queued.
        ok = message("fine", "nothing to see\n")
        c.send("MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@local.test>\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)
        c.send(f"BDAT {len(ok)} LAST\r\n".encode() + ok)
        self.assertEqual(c.reply()[0], 250)
        c.send("QUIT\r\n")
        c.close()
        got = self.delivered(1)
        self.assertEqual(email.message_from_bytes(got[0][0])["Subject"], "fine")


class RuleConfiguration(FilterTest):
    def shell(self, *args, check=True):
        r = subprocess.run([shell_bin(), "--socket", self.sock, "--json", *args], capture_output=True, text=True,
                           timeout=120)
        if check:
            self.assertEqual(r.returncode, 0, f"{args}: {r.stderr}")
        return r

    def test_a_bad_rule_is_refused_with_its_line(self):
        path = os.path.join(self.tmpdir(), "bad.toml")
        with open(self.g.config) as f:
            text = f.read()
        bad = text + '\n[[content_rule]]\nname = "broken"\ncondition = \'attachment-nmae ~ /x/\'\nactions = ["reject"]\n' \
                     '\n[[content_rule]]\nname = "worse"\ncondition = \'body ~ /(unclosed/\'\nactions = ["quarantine x", "explode"]\n'
        with open(path, "w") as f:
            f.write(bad)
        line = bad.splitlines().index("condition = 'attachment-nmae ~ /x/'") + 1
        r = subprocess.run([os.path.join(BUILD, "admin", "ringwayd"), "--check-config", path], capture_output=True,
                           text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"bad.toml:{line}: content_rule[5].condition: at 1: unknown subject \"attachment-nmae\"",
                      r.stderr)
        self.assertIn("content_rule[6].condition: at 8: the regular expression \"(unclosed\" does not compile",
                      r.stderr)
        self.assertIn("content_rule[6].actions[0]: there is no quarantine \"x\"", r.stderr)
        self.assertIn("content_rule[6].actions[1]: unknown action \"explode\"", r.stderr)
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")
        loaded = json.loads(self.shell("load", path).stdout)
        self.assertFalse(loaded["valid"])
        self.assertTrue(any("unknown subject" in p for p in loaded["problems"]), loaded)

    def test_a_committed_rule_applies_to_the_next_message(self):
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")
        self.assertEqual(self.transaction(message("quarterly report", "numbers\n"))[0], 250)
        path = os.path.join(self.tmpdir(), "more.toml")
        with open(self.g.config) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text + '\n[[content_rule]]\nname = "reports"\ncondition = \'subject ~ /^quarterly/\'\n'
                           'actions = ["reject 554 5.7.1 No reports today"]\n')
        loaded = json.loads(self.shell("load", path).stdout)
        self.assertTrue(loaded["valid"], loaded)
        self.assertIn("content_rule[5].name", [c["key"] for c in loaded["changes"]])
        self.assertTrue(all(c["apply"] == "live" for c in loaded["changes"]), loaded)
        self.shell("commit", "a rule for reports")
        self.assertEqual(self.transaction(message("quarterly report", "numbers\n")),
                         (554, "5.7.1 No reports today"))
        self.assertIn('name = "reports"', json.loads(self.shell("showconfig", "content_rule").stdout)["toml"])

    def test_trace_shows_the_rules_that_fire(self):
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")
        path = os.path.join(self.tmpdir(), "m.eml")
        with open(path, "wb") as f:
            f.write(message("offer", "cheap pills\n", extra=[("X-Internal", "x")]))
        facts = ["--client-ip", "127.0.0.1", "--helo", "client.test", "--mail-from", "alice@sender.test",
                 "--rcpt", "bob@local.test", "--message", path]
        t = json.loads(self.shell("trace", *facts).stdout)
        r = t["rules"]
        self.assertEqual(r["fired"], ["spammy", "strip-internal"])
        self.assertEqual(r["decision"], "accept")
        self.assertEqual(r["add_headers"], ["X-Content-Rule: spammy"])
        self.assertEqual(r["remove_headers"], ["x-internal"])
        self.assertEqual(r["subject_tag"], "[SUSPECT]")
        with open(path, "wb") as f:
            f.write(message("tools", "x", ("a.exe", b"MZ")))
        t = json.loads(self.shell("trace", *facts).stdout)
        self.assertEqual((t["rules"]["decision"], t["rules"]["rule"], t["rules"]["reply"]),
                         ("reject", "no-exe", "550 5.7.1 Executables are not accepted here"))
        self.assertEqual(t["verdict"]["stage"], "rules")
        out = subprocess.run([shell_bin(), "--socket", self.sock, "trace", *facts], capture_output=True, text=True,
                             timeout=60).stdout
        self.assertIn("rules       reject  550 5.7.1 Executables are not accepted here", out)
        self.assertIn("fired: no-exe", out)


QUARANTINE_RULES = r'''
[[quarantine]]
name = "short"
retention_s = 3
expire = "release"

[[quarantine]]
name = "gone"
retention_s = 6

[[content_rule]]
name = "invoices"
condition = 'subject ~ /^invoice/'
actions = ["quarantine policy"]

[[content_rule]]
name = "short-hold"
condition = 'subject == "brief"'
actions = ["add-header X-Held: briefly", "quarantine short"]

[[content_rule]]
name = "gone-hold"
condition = 'subject == "forget me"'
actions = ["quarantine gone"]
'''


class Quarantines(DeliveryTest):
    def setUp(self):
        self.sink_ = self.sink(save=True)
        self.g = self.gateway(routes=[("local.test", [f"127.0.0.1:{self.sink_.port}"])],
                              relay_networks='["127.0.0.2/32"]', tail_extra=QUARANTINE_RULES)
        self.sock = os.path.join(self.g.dir, "var", "ringway.sock")
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")

    def shell(self, *args, check=True):
        r = subprocess.run([shell_bin(), "--socket", self.sock, "--json", *args], capture_output=True, text=True,
                           timeout=60)
        if check:
            self.assertEqual(r.returncode, 0, f"{args}: {r.stderr}")
        return json.loads(r.stdout) if check else r

    def send(self, msg, rcpts=("bob@local.test", "carol@local.test")):
        with smplib_client(self.g.port) as c:
            c.ehlo()
            self.assertEqual(c.mail("alice@sender.test")[0], 250)
            for r in rcpts:
                self.assertEqual(c.rcpt(r)[0], 250)
            code, text = c.data(msg)
            self.assertEqual(code, 250, text)
            return text.decode().rsplit(" ", 1)[1]

    def held(self):
        return self.shell("quarantine", "list")["messages"]

    def test_held_listed_released_byte_exact_and_deleted(self):
        sent = message("invoice 42", "Please pay.\nLine two.\n")
        mid = self.send(sent)
        other = self.send(message("invoice 43", "Other.\n"))
        # Held: listed with its rule, never delivered.
        # (Oldest first; two messages of the same second in either order.)
        h = sorted(self.held(), key=lambda m: m["mid"] != mid)
        self.assertEqual([(m["mid"], m["quarantine"], m["rule"]) for m in h],
                         [(mid, "policy", "invoices"), (other, "policy", "invoices")])
        self.assertEqual(h[0]["recipients"], ["bob@local.test", "carol@local.test"])
        self.assertEqual(h[0]["mail_from"], "alice@sender.test")
        self.assertGreater(h[0]["expires_unix"] - h[0]["received_unix"], 13 * 86400)
        q = {x["name"]: x for x in self.shell("quarantine", "list")["quarantines"]}
        self.assertEqual((q["policy"]["messages"], q["virus"]["messages"]), (2, 0))
        shown = self.shell("quarantine", "show", mid)
        self.assertIn("Subject: invoice 42", shown["headers"])
        received = [e for e in self.g.journal() if e.get("event") == "received"]
        self.assertEqual(sorted((e["mid"], e["quarantine"], e["rules"]) for e in received),
                         sorted([(mid, "policy", "invoices"), (other, "policy", "invoices")]))
        # A restart keeps them held.
        self.g.stop()
        delivery_test.restart(self.g)
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")
        wait_until(lambda: self.shell("status", check=False).returncode == 0, timeout=10, what="the shell")
        self.assertEqual(sorted(m["mid"] for m in self.held()), sorted([mid, other]))
        time.sleep(1.5)
        self.assertEqual(saved(self.sink_.save), [])
        # Released: delivered to both recipients, the body as sent.
        self.assertEqual(self.shell("quarantine", "release", mid), {"released": mid})
        got = self.delivered_msgs(1)
        eml, sender, rcpts = got[0]
        self.assertEqual((sender, sorted(rcpts)), ("alice@sender.test", ["bob@local.test", "carol@local.test"]))
        head, body = sent.split(b"\r\n\r\n", 1)
        self.assertTrue(eml.endswith(head + b"\r\n\r\n" + body), eml)
        self.assertEqual([m["mid"] for m in self.held()], [other])
        # Deleted: gone, never delivered.
        self.assertEqual(self.shell("quarantine", "delete", other), {"deleted": other})
        self.assertEqual(self.held(), [])
        r = self.shell("quarantine", "release", other, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not held in a quarantine", r.stderr)
        time.sleep(1)
        self.assertEqual(len(saved(self.sink_.save)), 1)
        events = [(e["event"], e["mid"]) for e in self.g.journal() if e.get("event", "").startswith("quarantine_")]
        self.assertEqual(events, [("quarantine_release", mid), ("quarantine_delete", other)])

    def test_expiry_releases_or_deletes_as_configured(self):
        brief = message("brief", "Short stay.\n")
        b = self.send(brief, rcpts=("bob@local.test",))
        f = self.send(message("forget me", "Never arrives.\n"), rcpts=("bob@local.test",))
        self.assertEqual(sorted(m["mid"] for m in self.held()), sorted([b, f]))
        got = self.delivered_msgs(1, timeout=20)
        self.assertEqual(len(got), 1)
        eml = got[0][0]
        self.assertIn(b"X-Held: briefly\r\n", eml)
        self.assertTrue(eml.endswith(brief.split(b"\r\n\r\n", 1)[1]))
        wait_until(lambda: self.held() == [], timeout=20, what="the deleted one to go")
        events = [(e["event"], e["mid"], e["by"]) for e in self.g.journal() if e.get("event", "").startswith("quarantine_")]
        self.assertEqual(sorted(events), sorted([("quarantine_release", b, "expiry"), ("quarantine_delete", f, "expiry")]))
        time.sleep(1)
        self.assertEqual(len(saved(self.sink_.save)), 1)

    def test_a_quarantine_removed_from_the_configuration_still_expires(self):
        f = self.send(message("forget me", "Held in gone.\n"), rcpts=("bob@local.test",))
        self.assertEqual([m["mid"] for m in self.held()], [f])
        # The quarantine and the rule that used it go, by a live commit.
        with open(self.g.config) as fh:
            text = fh.read()
        start = text.index('[[quarantine]]\nname = "gone"')
        text = text[:start] + text[text.index('[[content_rule]]', start):]
        start = text.index('[[content_rule]]\nname = "gone-hold"')
        end = text.find('[[', start + 2)
        text = text[:start] + (text[end:] if end >= 0 else "")
        path = os.path.join(self.tmpdir(), "less.toml")
        with open(path, "w") as fh:
            fh.write(text)
        r = subprocess.run([shell_bin(), "--socket", self.sock, "--json", "load", path], capture_output=True,
                           text=True, timeout=60)
        self.assertTrue(json.loads(r.stdout)["valid"], r.stdout + r.stderr)
        self.shell("commit", "no more gone")
        listed = self.shell("quarantine", "list")
        self.assertNotIn("gone", [q["name"] for q in listed["quarantines"]])
        self.assertEqual([m["mid"] for m in listed["messages"]], [f])  # still held: before its expiry
        # Its message expires when its hold said, and is deleted.
        wait_until(lambda: self.held() == [], timeout=20, what="the orphaned message to expire")
        events = [(e["event"], e["mid"], e["by"]) for e in self.g.journal() if e.get("event", "").startswith("quarantine_")]
        self.assertEqual(events, [("quarantine_delete", f, "expiry")])
        time.sleep(1)
        self.assertEqual(saved(self.sink_.save), [])

    def delivered_msgs(self, n, timeout=20):
        wait_until(lambda: len(saved(self.sink_.save)) >= n, timeout=timeout, what=f"{n} messages at the sink")
        return saved(self.sink_.save)

def actions_rules(route_port):
    return f"""
[[content_rule]]
name = "bounce-it"
condition = 'subject == "bounce me"'
actions = ["notify audit@audit.test Bounced by the gateway", "bounce 550 5.7.1 Not wanted here"]

[[content_rule]]
name = "redirect-it"
condition = 'subject ~ /^redirect/'
actions = ["redirect legal@audit.test"]

[[content_rule]]
name = "copy-it"
condition = 'subject ~ /copy/'
actions = ["copy archive@audit.test"]

[[content_rule]]
name = "route-it"
condition = 'subject ~ /^route/'
actions = ["route 127.0.0.1:{route_port}"]

[[content_rule]]
name = "hold-it"
condition = 'subject == "redirect and hold"'
actions = ["quarantine policy"]

[[content_rule]]
name = "tell-on-reject"
condition = 'subject == "reject me"'
actions = ["notify audit@audit.test", "reject"]
"""


class EnvelopeActions(DeliveryTest):
    """bounce, redirect, copy, route and notify: each message they make
    is checked at a sink (envelope and bytes), and a route survives a
    kill -9."""

    def setUp(self):
        self.sink_ = self.sink(save=True)
        self.other = self.sink(save=True)
        a = f"127.0.0.1:{self.sink_.port}"
        self.g = self.gateway(routes=[("local.test", [a]), ("audit.test", [a]), ("sender.test", [a])],
                              relay_networks='["127.0.0.2/32"]', tail_extra=actions_rules(self.other.port),
                              delivery={"first_retry_ms": 500, "max_retry_ms": 1000, "destination_pause_ms": 10})
        self.sock = os.path.join(self.g.dir, "var", "ringway.sock")
        wait_until(lambda: os.path.exists(self.sock), timeout=10, what="the control socket")

    def shell(self, *args):
        r = subprocess.run([shell_bin(), "--socket", self.sock, "--json", *args], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, f"{args}: {r.stderr}")
        return json.loads(r.stdout)

    def send(self, subject, body="Text of the message.\n", rcpts=("bob@local.test", "carol@local.test"),
             expect=250):
        msg = message(subject, body)
        with smplib_client(self.g.port) as c:
            c.ehlo()
            self.assertEqual(c.mail("alice@sender.test")[0], 250)
            for r in rcpts:
                self.assertEqual(c.rcpt(r)[0], 250)
            code, text = c.data(msg)
            self.assertEqual(code, expect, text)
            return msg, text.decode()

    def at(self, sink, n):
        wait_until(lambda: len(saved(sink.save)) >= n, timeout=20, what=f"{n} messages at the sink")
        time.sleep(0.5)  # and nothing more comes
        got = saved(sink.save)
        self.assertEqual(len(got), n, [(s, r) for _, s, r in got])
        return got

    def content(self):
        return [e for e in self.g.journal() if e.get("event") == "content"]

    def test_bounce_sends_a_report_and_delivers_nothing(self):
        _, text = self.send("bounce me")
        self.assertTrue(text.startswith("2.0.0 Ok: queued as "), text)
        mid = text.rsplit(" ", 1)[1]
        got = self.at(self.sink_, 2)
        by_rcpt = {r[0]: (eml, s) for eml, s, r in got}
        self.assertEqual(sorted(by_rcpt), ["alice@sender.test", "audit@audit.test"])
        dsn, sender = by_rcpt["alice@sender.test"]
        self.assertEqual(sender, "")
        report = email.message_from_bytes(dsn, policy=email.policy.default)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertIn(b"Final-Recipient: rfc822; bob@local.test", dsn)
        self.assertIn(b"Final-Recipient: rfc822; carol@local.test", dsn)
        self.assertIn(b"Status: 5.7.1", dsn)
        self.assertIn(b"550 5.7.1 Not wanted here", dsn)
        notice, sender = by_rcpt["audit@audit.test"]
        self.assertEqual(sender, "")
        n = email.message_from_bytes(notice, policy=email.policy.default)
        self.assertEqual(n["Subject"], f"Content rule bounce-it: message {mid}")
        self.assertEqual(n["Auto-Submitted"], "auto-generated")
        body = n.get_content()
        self.assertIn("Bounced by the gateway", body)
        self.assertIn("Outcome:    bounced: 550 5.7.1 Not wanted here", body)
        self.assertIn("Recipients: <bob@local.test>\r\n            <carol@local.test>\r\n", body)
        self.assertIn("Sender:     <alice@sender.test>", body)
        wait_until(lambda: any(e.get("event") == "removed" and e.get("mid") == mid for e in self.g.journal()),
                   timeout=10, what="the bounced message to be removed")
        actions = [(e["rule"], e["action"]) for e in self.content()]
        self.assertEqual(actions, [("bounce-it", "bounce"), ("bounce-it", "notify")])

    def test_redirect_copy_and_their_bytes(self):
        sent, _ = self.send("redirect this")
        got = self.at(self.sink_, 1)
        eml, sender, rcpts = got[0]
        self.assertEqual((sender, rcpts), ("alice@sender.test", ["legal@audit.test"]))
        self.assertTrue(eml.endswith(sent), eml)
        # A copy: the message as delivered to its recipients, and the same
        # bytes to the archive, from the null sender.
        sent, _ = self.send("please copy", rcpts=("bob@local.test",))
        got = self.at(self.sink_, 3)[1:]
        by_rcpt = {r[0]: (eml, s) for eml, s, r in got}
        self.assertEqual(sorted(by_rcpt), ["archive@audit.test", "bob@local.test"])
        self.assertEqual(by_rcpt["bob@local.test"][1], "alice@sender.test")
        self.assertEqual(by_rcpt["archive@audit.test"][1], "")
        self.assertEqual(by_rcpt["archive@audit.test"][0], by_rcpt["bob@local.test"][0])
        self.assertTrue(by_rcpt["bob@local.test"][0].endswith(sent))
        # Redirected and copied: the copy goes, the recipients get nothing.
        self.send("redirect and copy")
        got = self.at(self.sink_, 5)[3:]
        self.assertEqual(sorted((s, r[0]) for _, s, r in got),
                         [("", "archive@audit.test"), ("alice@sender.test", "legal@audit.test")])
        c = [(e["rule"], e["action"], e["to"]) for e in self.content()]
        self.assertEqual(c, [("redirect-it", "redirect", "legal@audit.test"), ("copy-it", "copy", "archive@audit.test"),
                             ("redirect-it", "redirect", "legal@audit.test"), ("copy-it", "copy", "archive@audit.test")])
        self.assertTrue(all(len(e["derived_mid"]) == 16 for e in self.content()))

    def test_redirect_then_quarantine_holds_the_redirected_message(self):
        self.send("redirect and hold")
        held = self.shell("quarantine", "list")["messages"]
        self.assertEqual([(m["rule"], m["recipients"]) for m in held], [("hold-it", ["legal@audit.test"])])
        time.sleep(1)
        self.assertEqual(saved(self.sink_.save), [])
        self.shell("quarantine", "release", held[0]["mid"])
        got = self.at(self.sink_, 1)
        self.assertEqual((got[0][1], got[0][2]), ("alice@sender.test", ["legal@audit.test"]))

    def test_a_reject_can_notify(self):
        self.send("reject me", expect=550)
        got = self.at(self.sink_, 1)
        eml, sender, rcpts = got[0]
        self.assertEqual((sender, rcpts), ("", ["audit@audit.test"]))
        body = email.message_from_bytes(eml, policy=email.policy.default).get_content()
        self.assertIn("Outcome:    rejected: 550 5.7.1 Message content rejected", body)
        self.assertIn("Message:    not queued", body)

    def test_route_goes_to_its_host_and_survives_a_crash(self):
        sent, _ = self.send("route now")
        got = self.at(self.other, 1)
        self.assertEqual((got[0][1], sorted(got[0][2])), ("alice@sender.test", ["bob@local.test", "carol@local.test"]))
        self.assertTrue(got[0][0].endswith(sent))
        # The route's host is down: the message waits for it, through a
        # kill -9, and then goes to it, never to the recipients' own route.
        port = self.other.port
        self.other.proc.terminate()
        self.other.proc.wait(timeout=10)
        sent, _ = self.send("route later", rcpts=("bob@local.test",))
        wait_until(lambda: any(e.get("event") == "delivery" and e.get("disposition") == "deferred"
                               for e in self.g.journal()), timeout=20, what="a deferral")
        self.g.kill()
        delivery_test.restart(self.g)
        back = self.sink(save=True, listen=f"127.0.0.1:{port}")
        got = self.at(back, 1)
        self.assertEqual((got[0][1], got[0][2]), ("alice@sender.test", ["bob@local.test"]))
        self.assertTrue(got[0][0].endswith(sent))
        self.assertEqual(saved(self.sink_.save), [])


class ReleasedLifetime(DeliveryTest):
    """A message held longer than the queue lifetime and then released
    gets the whole lifetime of retries from its release."""

    def test_time_held_does_not_count(self):
        sink = self.sink(save=True)
        rules = '[[content_rule]]\nname = "hold"\ncondition = \'subject == "hold"\'\nactions = ["quarantine policy"]\n'
        g = self.gateway(routes=[("local.test", [f"127.0.0.1:{sink.port}"])], relay_networks='["127.0.0.2/32"]',
                         tail_extra=rules,
                         delivery={"max_queue_lifetime_s": 2, "first_retry_ms": 250, "max_retry_ms": 250,
                                   "destination_pause_ms": 10})
        sock = os.path.join(g.dir, "var", "ringway.sock")
        wait_until(lambda: os.path.exists(sock), timeout=10, what="the control socket")
        with smplib_client(g.port) as c:
            c.ehlo()
            c.mail("alice@sender.test")
            c.rcpt("tempfail@local.test")
            code, text = c.data(message("hold", "Held past the lifetime.\n"))
        self.assertEqual(code, 250, text)
        mid = text.decode().rsplit(" ", 1)[1]
        time.sleep(3)  # longer than max_queue_lifetime_s
        r = subprocess.run([shell_bin(), "--socket", sock, "--json", "quarantine", "release", mid],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(json.loads(r.stdout), {"released": mid}, r.stderr)

        def dispositions():
            return [e["disposition"] for e in g.journal() if e.get("event") == "delivery" and e.get("mid") == mid]
        wait_until(lambda: "expired" in dispositions(), timeout=30, what="the lifetime to run out")
        d = dispositions()
        # Retried for the lifetime from the release: about 2 s of 250 ms
        # retries, not bounced at the first deferral.
        self.assertEqual(d[-1], "expired")
        self.assertGreaterEqual(d.count("deferred"), 5, d)
        self.assertEqual(set(d[:-1]), {"deferred"}, d)


def smplib_client(port):
    return smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30)


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv.pop(1))
    import sink_test
    delivery_test.BUILD = BUILD
    sink_test.BUILD = BUILD
    unittest.main(verbosity=2)
