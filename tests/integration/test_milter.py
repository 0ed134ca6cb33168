#!/usr/bin/env python3
"""A milter written with pymilter (Debian's python3-milter, on libmilter)
for the gateway's milter tests. It listens on inet:PORT@127.0.0.1 and:

  - refuses MAIL from a sender containing "blocked-sender" (550 5.7.1);
  - refuses RCPT to a local part "nobody" (550 5.1.1);
  - at the end of the message adds X-Milter with the number of header
    fields and body bytes it saw and the body's MD5 (so a test can tell
    that every byte streamed through), and by Subject:
      milter-reject      550 5.7.1 Content refused by the test milter
      milter-tempfail    TEMPFAIL
      milter-discard     DISCARD
      milter-quarantine  quarantine("held by the test milter")
      milter-change      Subject changed, X-Remove-Me deleted
      milter-envelope    sender changed to bounces@milter.test, bob@local.test
                         deleted, added@local.test added (with ADDRCPT_PAR)
      milter-body        the body replaced by a text of its own, given in
                         chunks with bare LF line ends
      milter-big-body    a replaced body far past the gateway's size limit

    test_milter.py PORT
"""
import hashlib
import sys

import Milter


class TestMilter(Milter.Base):
    def __init__(self):
        self.fields = 0
        self.subject = ""
        self.digest = hashlib.md5()
        self.size = 0

    def envfrom(self, mailfrom, *args):
        self.fields, self.subject, self.digest, self.size = 0, "", hashlib.md5(), 0
        if "blocked-sender" in mailfrom:
            self.setreply("550", "5.7.1", "Sender refused by the test milter")
            return Milter.REJECT
        return Milter.CONTINUE

    def envrcpt(self, to, *args):
        if to.strip("<>").split("@")[0] == "nobody":
            self.setreply("550", "5.1.1", "No such user here")
            return Milter.REJECT
        return Milter.CONTINUE

    def header(self, name, value):
        self.fields += 1
        if name.lower() == "subject":
            self.subject = value
        return Milter.CONTINUE

    def body(self, chunk):
        self.digest.update(chunk)
        self.size += len(chunk)
        return Milter.CONTINUE

    def eom(self):
        self.addheader("X-Milter", f"fields={self.fields} body={self.size} md5={self.digest.hexdigest()}")
        if self.subject == "milter-reject":
            self.setreply("550", "5.7.1", "Content refused by the test milter")
            return Milter.REJECT
        if self.subject == "milter-tempfail":
            return Milter.TEMPFAIL
        if self.subject == "milter-discard":
            return Milter.DISCARD
        if self.subject == "milter-quarantine":
            self.quarantine("held by the test milter")
        if self.subject == "milter-change":
            self.chgheader("Subject", 1, "changed by the test milter")
            self.chgheader("X-Remove-Me", 1, "")
        if self.subject == "milter-envelope":
            self.chgfrom("<bounces@milter.test>")
            self.delrcpt("<bob@local.test>")
            self.addrcpt("<added@local.test>", "NOTIFY=NEVER")
        if self.subject == "milter-body":
            for i in range(3):
                self.replacebody(f"Replaced line {i} by the test milter.\n".encode() * 2000)
        if self.subject == "milter-big-body":
            chunk = b"x" * 65535
            for _ in range(40):  # 2.6 MB, past the 1 MB limit of the test's gateway
                self.replacebody(chunk)
        return Milter.ACCEPT


def main():
    port = int(sys.argv[1])
    Milter.factory = TestMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.QUARANTINE | Milter.CHGFROM | Milter.ADDRCPT |
                     Milter.ADDRCPT_PAR | Milter.DELRCPT | Milter.MODBODY)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    Milter.runmilter("ringwaytest", f"inet:{port}@127.0.0.1", 240)


if __name__ == "__main__":
    main()
