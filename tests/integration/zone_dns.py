"""An authoritative DNS server on loopback (UDP and TCP) for tests, serving
zone data that a test can replace at any moment.

The zone format is the OpenSPF test suite's (RFC 7208 suite, as shipped in
python3-spf): {name: [{TYPE: value}, ..., "TIMEOUT"]} with TYPE one of A,
AAAA, MX ([preference, host]), TXT and SPF (a string or a list of
character-strings), PTR, CNAME. Its rules are the suite's:
  - an SPF entry is served as TXT too, unless a TXT entry comes before it;
  - {TYPE: "TIMEOUT"} drops queries of that type; a bare "TIMEOUT" drops
    every query of the name that no earlier entry answered;
  - a name that is not in the zone is NXDOMAIN ("error.*" times out);
  - a name in the zone without the type asked is NOERROR with no answer.
Every answer has TTL 0 and negative answers carry an SOA whose MINIMUM is 0,
so a resolver's cache keeps nothing from one zone to the next.
"""
import socket
import socketserver
import struct
import threading

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord

TYPES = {"A": QTYPE.A, "AAAA": QTYPE.AAAA, "MX": QTYPE.MX, "TXT": QTYPE.TXT, "PTR": QTYPE.PTR,
         "CNAME": QTYPE.CNAME, "SPF": 99}


def _norm(name):
    """A name as the zone keys it: its labels' octets as text, lower case."""
    if hasattr(name, "label"):  # a DNSLabel: str() would escape spaces as \032
        return ".".join(l.decode("utf-8", "replace") for l in name.label).lower()
    return str(name).rstrip(".").lower()


def _chunks(v):
    strings = [v] if isinstance(v, str) else list(v)
    out = []
    for s in strings:
        b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
        if not b:
            out.append(b)
        while b:
            out.append(b[:255])
            b = b[255:]
    return out


def load_zone(zonedata):
    """The suite's zonedata as {name: [(type, value) or "TIMEOUT", ...]}."""
    zone = {}
    for name, entries in (zonedata or {}).items():
        out, txt_generated, gen = [], [], True
        for e in entries:
            if isinstance(e, str):  # "TIMEOUT"
                out.append(e)
                continue
            for t, v in e.items():
                if t == "TXT":
                    gen = False
                elif t == "SPF" and gen and v != "NONE":
                    txt_generated.append(("TXT", v))
                if v != "NONE":
                    out.append((t, v))
        if gen:
            out.extend(txt_generated)
        zone[_norm(name)] = out
    return zone


class ZoneServer:
    def __init__(self):
        self.zone = {}
        self.lock = threading.Lock()
        self.queries = []  # (name, type) asked, for tests that count them
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        # UDP and TCP on one port: the UDP port the kernel picks may be
        # taken for TCP by another test running at the same time; then
        # pick again (a bounded number of times).
        for attempt in range(50):
            self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), self._udp_handler())
            self.port = self.udp.server_address[1]
            try:
                self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), self._tcp_handler())
                break
            except OSError:
                self.udp.server_close()
                if attempt == 49:
                    raise
        for srv in (self.udp, self.tcp):
            srv.daemon_threads = True
            threading.Thread(target=srv.serve_forever, daemon=True).start()

    def set_zone(self, zonedata):
        with self.lock:
            self.zone = load_zone(zonedata)
            self.queries = []

    def close(self):
        for srv in (self.udp, self.tcp):
            srv.shutdown()
            srv.server_close()

    # ---- answering ----

    def _records(self, name, qtype, level=0, qname=None):
        """(rrs, status): status "ok", "nxdomain", "nodata" or "timeout"."""
        entries = self.zone.get(name)
        if entries is None:
            return [], "timeout" if name.startswith("error.") else "nxdomain"
        rrs, seen = [], False
        for e in entries:
            if e == "TIMEOUT":
                if not seen:
                    return [], "timeout"
                break
            t, v = e
            tcode = TYPES.get(t)
            if tcode == qtype:
                seen = True
            if v == "TIMEOUT":
                if tcode == qtype:
                    return [], "timeout"
                continue
            owner = qname if qname is not None else name
            if tcode == qtype:
                rrs.append(self._rr(owner, t, v))
            elif t == "CNAME" and qtype != QTYPE.CNAME:
                rrs.append(self._rr(owner, t, v))
                if level == 0:
                    more, st = self._records(_norm(v), qtype, 1)
                    if st == "timeout":
                        return [], st
                    rrs.extend(more)
        return rrs, "ok" if rrs else "nodata"

    @staticmethod
    def _rr(name, t, v):
        if t == "A":
            rd = A(v)
        elif t == "AAAA":
            rd = AAAA(v)
        elif t == "MX":
            rd = MX(v[1], v[0])
        elif t in ("TXT", "SPF"):
            rd = TXT(_chunks(v))
        elif t == "PTR":
            rd = PTR(v)
        elif t == "CNAME":
            rd = CNAME(v)
        else:
            raise ValueError(t)
        return RR(name, TYPES[t], rdata=rd, ttl=0)

    def answer(self, data):
        """The reply to one query (bytes), or None to stay silent."""
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        q = req.q
        name = _norm(q.qname)
        qname = q.qname
        with self.lock:
            self.queries.append((name, QTYPE.get(q.qtype)))
            rrs, status = self._records(name, q.qtype, qname=qname)
        if status == "timeout":
            return None
        reply = req.reply()
        for rr in rrs:
            reply.add_answer(rr)
        if status == "nxdomain":
            reply.header.rcode = RCODE.NXDOMAIN
        if status != "ok":
            reply.add_auth(RR(qname, QTYPE.SOA, ttl=0, rdata=SOA("ns.zone.test", "hostmaster.zone.test",
                                                                 (1, 3600, 600, 86400, 0))))
        return reply

    def _udp_handler(self):
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                reply = server.answer(data)
                if reply is None:
                    return
                packed = reply.pack()
                if len(packed) > 1232:
                    reply = DNSRecord.parse(data).reply()
                    reply.header.tc = 1
                    packed = reply.pack()
                sock.sendto(packed, self.client_address)
        return Handler

    def _tcp_handler(self):
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.settimeout(5)
                try:
                    while True:
                        head = self._read(2)
                        if not head:
                            return
                        data = self._read(struct.unpack("!H", head)[0])
                        reply = server.answer(data)
                        if reply is None:
                            return
                        packed = reply.pack()
                        self.request.sendall(struct.pack("!H", len(packed)) + packed)
                except (OSError, socket.timeout):
                    return

            def _read(self, n):
                buf = b""
                while len(buf) < n:
                    chunk = self.request.recv(n - len(buf))
                    if not chunk:
                        return b""
                    buf += chunk
                return buf
        return Handler
