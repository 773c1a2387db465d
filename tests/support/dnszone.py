"""A tiny authoritative DNS server on 127.0.0.1 (dnslib) that serves zone-file text, for the health tests.

Unlike dnslib's ZoneResolver it answers like a real server: NOERROR without records for a name
that exists with other types (NODATA), NXDOMAIN only for names it does not know, and it follows
CNAMEs inside its own data (a stub resolver such as dnspython expects the chain in the answer).
"""

from __future__ import annotations

from typing import Any, List, Set

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: str) -> None:
        self.records: List[RR] = RR.fromZone(zone)
        self.names: Set[str] = {str(rr.rname).lower() for rr in self.records}

    def _add(self, reply: Any, name: str, qtype: str, depth: int = 0) -> None:
        for rr in self.records:
            if str(rr.rname).lower() != name:
                continue
            rtype = QTYPE[rr.rtype]
            if qtype in (rtype, "ANY"):
                reply.add_answer(rr)
            elif rtype == "CNAME" and depth < 8:
                reply.add_answer(rr)
                self._add(reply, str(rr.rdata.label).lower(), qtype, depth + 1)

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).lower()
        self._add(reply, name, QTYPE[request.q.qtype])
        if not reply.rr and name not in self.names:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class ZoneServer:
    """Serves `zone` over UDP and TCP on 127.0.0.1 at a free port (`.port`)."""

    def __init__(self, zone: str) -> None:
        resolver = _ZoneResolver(zone)
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self.udp = DNSServer(resolver, address="127.0.0.1", port=0, logger=quiet)
        self.port: int = self.udp.server.server_address[1]
        # dnspython retries over TCP when a UDP answer is truncated (long TXT sets).
        self.tcp = DNSServer(resolver, address="127.0.0.1", port=self.port, tcp=True, logger=quiet)

    def start(self) -> ZoneServer:
        """Serve in background threads."""
        self.udp.start_thread()
        self.tcp.start_thread()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.udp.stop()
        self.tcp.stop()
