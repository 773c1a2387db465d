"""DNS look-ups for the health checks: a dnspython resolver wrapper and pyspf evaluation.

The nameserver and port are configurable so tests can point everything, pyspf included, at a
local authoritative server; by default the system's resolver configuration is used.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import dns.exception
import dns.rdatatype
import dns.resolver
import spf

from smartpop.errors import TemporaryError

log = logging.getLogger(__name__)

FOUND = "found"
NXDOMAIN = "nxdomain"
NODATA = "nodata"
ERROR = "error"

# A TEST-NET-1 address (RFC 5737) that no real SPF policy lists: evaluating it walks the whole
# record (every include and lookup), so pyspf reports the lookup count and the `all` verdict.
PROBE_IP = "192.0.2.1"
# pyspf's own limit on the time one evaluation may spend in DNS.
SPF_QUERY_TIME = 20.0


@dataclass
class Answer:
    """The outcome of one look-up: found (records), nxdomain, nodata or error (with the reason)."""

    name: str
    rdtype: str
    outcome: str
    records: List[str] = field(default_factory=list)
    error: str = ""


@dataclass
class MxHost:
    """One MX record."""

    preference: int
    host: str


@dataclass
class SpfEvaluation:
    """pyspf's verdict for one sending IP: pass, fail, softfail, neutral, none, permerror, temperror."""

    ip: str
    result: str
    explanation: str
    lookups: int


class Resolver:
    """dnspython's stub resolver, optionally pinned to one nameserver and port."""

    def __init__(self, nameservers: Optional[Sequence[str]] = None, port: int = 53, timeout: float = 5.0) -> None:
        try:
            self._resolver = dns.resolver.Resolver(configure=nameservers is None)
        except dns.resolver.NoResolverConfiguration as exc:
            raise TemporaryError(f"no DNS resolver configured on this system ({exc})") from exc
        if nameservers is not None:
            self._resolver.nameservers = list(nameservers)
            self._resolver.port = port
        self._resolver.lifetime = timeout
        # One check run asks for the same names several times (SPF includes, MX hosts).
        self._resolver.cache = dns.resolver.Cache()

    def _resolve(self, name: str, rdtype: str) -> Tuple[Answer, Optional[dns.resolver.Answer]]:
        try:
            answer = self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Answer(name, rdtype, NXDOMAIN), None
        except dns.exception.Timeout:
            return Answer(name, rdtype, ERROR, error=f"no answer from DNS within {self._resolver.lifetime:g} s"), None
        except dns.resolver.NoNameservers as exc:
            return Answer(name, rdtype, ERROR, error=f"DNS servers failed to answer ({exc.msg})"), None
        except dns.exception.DNSException as exc:
            return Answer(name, rdtype, ERROR, error=str(exc) or type(exc).__name__), None
        if answer.rrset is None:
            return Answer(name, rdtype, NODATA), None
        return Answer(name, rdtype, FOUND), answer

    def txt(self, name: str) -> Answer:
        """The TXT records of `name`, each one's strings joined (RFC 7208 3.3)."""
        result, answer = self._resolve(name, "TXT")
        if answer is not None:
            result.records = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return result

    def mx(self, name: str) -> Tuple[Answer, List[MxHost]]:
        """The MX records of `name`, lowest preference first."""
        result, answer = self._resolve(name, "MX")
        hosts: List[MxHost] = []
        if answer is not None:
            hosts = sorted((MxHost(r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in answer),
                           key=lambda m: (m.preference, m.host))
            result.records = [f"{m.preference} {m.host}" for m in hosts]
        return result, hosts

    def addresses(self, host: str) -> Answer:
        """The IPv4 and IPv6 addresses of `host` (records = the addresses)."""
        found: List[str] = []
        outcomes: List[Answer] = []
        for rdtype in ("A", "AAAA"):
            result, answer = self._resolve(host, rdtype)
            outcomes.append(result)
            if answer is not None:
                found.extend(r.address for r in answer)
        if found:
            return Answer(host, "A/AAAA", FOUND, found)
        error = next((o for o in outcomes if o.outcome == ERROR), None)
        if error is not None:
            return Answer(host, "A/AAAA", ERROR, error=error.error)
        nx = all(o.outcome == NXDOMAIN for o in outcomes)
        return Answer(host, "A/AAAA", NXDOMAIN if nx else NODATA)

    def spf_lookup(self, name: str, qtype: str, strict: Any, timeout: float) -> List[Tuple[Tuple[str, str], Any]]:
        """pyspf's DNSLookup contract: [((name, qtype), value)] with the values pyspf expects."""
        try:
            answer = self._resolver.resolve(name, qtype, search=False, raise_on_no_answer=False,
                                            lifetime=min(timeout, self._resolver.lifetime))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        except dns.exception.DNSException as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        if answer.rrset is None:
            return []
        values: List[Tuple[Tuple[str, str], Any]] = []
        for rdata in answer:
            if qtype in ("A", "AAAA"):
                values.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                values.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                values.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                values.append(((name, qtype), rdata.strings))
        return values


# pyspf looks up DNS through its module-level DNSLookup function, which uses dnspython's
# global default resolver. To give each evaluation its own Resolver without changing a process
# global per call (the web app runs checks in threads), DNSLookup is replaced once by a
# dispatcher that uses the Resolver bound to the current thread, else pyspf's own function.
_bound = threading.local()
_ORIGINAL_LOOKUP: Callable[..., Any] = spf.DNSLookup


def _dispatch(name: str, qtype: str, strict: Any = True, timeout: float = 30) -> List[Tuple[Tuple[str, str], Any]]:
    resolver: Optional[Resolver] = getattr(_bound, "resolver", None)
    if resolver is None:
        result: List[Tuple[Tuple[str, str], Any]] = _ORIGINAL_LOOKUP(name, qtype, strict, timeout)
        return result
    return resolver.spf_lookup(name, qtype, strict, timeout)


spf.DNSLookup = _dispatch


class _Bind:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    def __enter__(self) -> None:
        _bound.resolver = self.resolver

    def __exit__(self, *exc: object) -> None:
        _bound.resolver = None


def evaluate_spf(resolver: Resolver, domain: str, ip: str, helo: str) -> SpfEvaluation:
    """pyspf's check_host() for mail from postmaster@`domain` sent by `ip` (which said HELO `helo`)."""
    query = spf.query(i=ip, s=f"postmaster@{domain}", h=helo, querytime=SPF_QUERY_TIME)
    with _Bind(resolver):
        result, _code, explanation = query.check()
    log.debug("SPF %s for %s from %s: %s", result, domain, ip, explanation)
    return SpfEvaluation(ip, str(result), str(explanation), int(getattr(query, "lookups", 0)))


def is_spf(text: str) -> bool:
    """Whether a TXT record's text is an SPF record (RFC 7208 4.5: 'v=spf1' then a space or the end)."""
    lowered = text.lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


def spf_terms(text: str) -> Iterator[str]:
    """The record's terms, lowercased (for naming includes in findings; pyspf does the evaluation)."""
    for term in text.split()[1:]:
        yield term.lower()
