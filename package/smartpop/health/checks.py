"""The health checks: pure functions from look-up and probe results to findings (no I/O here).

Every finding's summary is one sentence: what was found, and what the admin should do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from smartpop.health.dnsquery import ERROR, FOUND, NXDOMAIN, Answer, MxHost, SpfEvaluation, is_spf
from smartpop.health.findings import OK, PROBLEM, WARNING, Finding, make, phrase, phrases, worst
from smartpop.health.probes import CertResult, LoginResult
from smartpop.health.providers import ProviderDns, base_domain, host_matches, provider_for_host

CERT_WARNING_DAYS = 14
DAY = 86400.0


@dataclass
class RelaySpf:
    """One relay that sends for a domain: its host's addresses and pyspf's verdict for each."""

    host: str
    addresses: Answer
    evaluations: List[SpfEvaluation] = field(default_factory=list)


def _dns_error(check: str, domain: str, answer: Answer) -> Finding:
    return make(check, domain, WARNING, "health.msg.dns_error", {"error": answer.error}, name=answer.name,
                rdtype=answer.rdtype, error=answer.error)


def _provider_label(hosts: Sequence[str]) -> str:
    labels = []
    for host in hosts:
        provider = provider_for_host(host)
        label = provider.label if provider else base_domain(host)
        if label not in labels:
            labels.append(label)
    return ", ".join(labels)


def check_mx(domain: str, answer: Answer, hosts: List[MxHost], account_hosts: Sequence[str]) -> Finding:
    """Where mail for `domain` goes; with SmartPop it should go to the provider SmartPop collects from."""
    details: Dict[str, object] = {"mx": answer.records, "account_hosts": list(account_hosts)}
    if answer.outcome == ERROR:
        return _dns_error("mx", domain, answer)
    if answer.outcome == NXDOMAIN:
        return make("mx", domain, PROBLEM, "health.msg.mx.nxdomain", details, domain=domain)
    if not hosts:
        return make("mx", domain, PROBLEM, "health.msg.mx.none", details, domain=domain)
    if any(h.host in ("", ".", "@") for h in hosts):
        return make("mx", domain, PROBLEM, "health.msg.mx.null", details, domain=domain)
    if not account_hosts:
        return make("mx", domain, WARNING, "health.msg.mx.no_account", details, domain=domain, host=hosts[0].host)
    suffixes: List[str] = []
    for host in account_hosts:
        provider = provider_for_host(host)
        suffixes.extend(provider.suffixes if provider else (base_domain(host),))
    matching = [h.host for h in hosts if host_matches(h.host, suffixes)]
    if len(matching) == len(hosts):
        return make("mx", domain, OK, "health.msg.mx.ok", details, domain=domain, host=hosts[0].host,
                    provider=_provider_label(account_hosts))
    elsewhere = [h.host for h in hosts if h.host not in matching]
    return make("mx", domain, WARNING, "health.msg.mx.elsewhere", details, domain=domain,
                hosts=", ".join(elsewhere), provider=_provider_label(account_hosts))


def spf_records(answer: Answer) -> List[str]:
    """The SPF records among a domain's TXT records."""
    return [r for r in answer.records if is_spf(r)] if answer.outcome == FOUND else []


def check_spf_record(domain: str, answer: Answer, probe: Optional[SpfEvaluation]) -> Finding:
    """One valid SPF record, within 10 DNS lookups, that does not allow everyone (+all/?all)."""
    records = spf_records(answer)
    details: Dict[str, object] = {"records": records}
    if answer.outcome == ERROR:
        return _dns_error("spf.record", domain, answer)
    if answer.outcome == NXDOMAIN:
        return make("spf.record", domain, PROBLEM, "health.msg.spf.nxdomain", details, domain=domain)
    if not records:
        return make("spf.record", domain, PROBLEM, "health.msg.spf.none", details, domain=domain)
    if len(records) > 1:
        return make("spf.record", domain, PROBLEM, "health.msg.spf.several", details, domain=domain,
                    count=len(records))
    if probe is None:
        return make("spf.record", domain, WARNING, "health.msg.spf.unevaluated", details, domain=domain)
    details.update(lookups=probe.lookups, verdict_for_other_hosts=probe.result, explanation=probe.explanation)
    if probe.result == "permerror":
        return make("spf.record", domain, PROBLEM, "health.msg.spf.invalid", details, domain=domain,
                    explanation=probe.explanation)
    if probe.result == "temperror":
        return make("spf.record", domain, WARNING, "health.msg.spf.temperror", details, domain=domain,
                    explanation=probe.explanation)
    if probe.result == "pass":
        return make("spf.record", domain, WARNING, "health.msg.spf.plus_all", details, domain=domain)
    if probe.result == "neutral":
        return make("spf.record", domain, WARNING, "health.msg.spf.neutral", details, domain=domain)
    return make("spf.record", domain, OK, "health.msg.spf.ok", details, domain=domain, lookups=probe.lookups,
                result=probe.result)


def _includes(record: str) -> List[str]:
    targets = []
    for term in record.split()[1:]:
        lowered = term.lower().lstrip("+")
        for prefix in ("include:", "redirect="):
            if lowered.startswith(prefix):
                targets.append(lowered[len(prefix):].rstrip("."))
    return targets


def check_spf_relay(domain: str, answer: Answer, probe: Optional[SpfEvaluation], relay_enabled: bool,
                    relays: Sequence[RelaySpf]) -> Optional[Finding]:
    """Whether the SPF record authorises the servers that send for `domain` (the relay, or the NAS itself)."""
    records = spf_records(answer)
    if len(records) != 1 or probe is None or probe.result in ("permerror", "temperror"):
        return None  # no, several or a broken record: check_spf_record already said what to do
    record = records[0]
    if not relay_enabled:
        return make("spf.relay", domain, WARNING, "health.msg.spf_relay.off", {"record": record}, domain=domain)
    includes = _includes(record)
    verdicts: List[Dict[str, object]] = []
    statuses: List[str] = []
    notes: List[Dict[str, object]] = []
    for relay in relays:
        provider: Optional[ProviderDns] = provider_for_host(relay.host)
        known = [i for i in (provider.spf_includes if provider else ()) if i in includes]
        results = sorted({e.result for e in relay.evaluations})
        note: Dict[str, object] = {"host": relay.host, "addresses": relay.addresses.records, "results": results,
                                   "provider": provider.label if provider else None,
                                   "usual_include": list(provider.spf_includes) if provider else []}
        notes.append(note)
        if known:
            # The submission host's address only stands in for the provider's outgoing servers,
            # which may differ: the provider's documented include is the better evidence.
            verdicts.append(phrase("health.part.spf.includes", host=relay.host,
                                   provider=provider.label if provider else "", include=known[0]))
            continue
        if not relay.evaluations:
            status = WARNING
            verdict = phrase("health.part.spf.unresolved", host=relay.host,
                             error=relay.addresses.error or relay.addresses.outcome)
        elif "fail" in results or "permerror" in results:
            status = PROBLEM
            verdict = phrase("health.part.spf.fail", host=relay.host, addresses=", ".join(relay.addresses.records))
        elif results == ["pass"]:
            status = OK
            verdict = phrase("health.part.spf.pass", host=relay.host)
        else:
            status = WARNING
            verdict = phrase("health.part.spf.other", host=relay.host, results="/".join(results))
        if status != OK and provider and provider.spf_includes:
            verdict = phrase("health.part.spf.usual", verdict=verdict, provider=provider.label,
                             include=provider.spf_includes[0])
        verdicts.append(verdict)
        statuses.append(status)
    worst_status = worst(statuses)
    details = {"record": record, "relays": notes}
    key = "health.msg.spf_relay.ok" if worst_status == OK else "health.msg.spf_relay.doubt"
    return make("spf.relay", domain, worst_status, key, details, domain=domain, verdicts=phrases(verdicts))


def dmarc_tags(record: str) -> Dict[str, str]:
    """The tag=value pairs of a DMARC record (RFC 7489 6.4), tag names lowercased."""
    tags: Dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = value.strip()
    return tags


def check_dmarc(domain: str, answer: Answer, dkim_evidence: bool) -> Finding:
    """A DMARC record exists and its policy does not reject mail that nothing signs with DKIM."""
    if answer.outcome == ERROR:
        return _dns_error("dmarc", domain, answer)
    records = [r for r in answer.records if r.lower().replace(" ", "").startswith("v=dmarc1")]
    details: Dict[str, object] = {"records": records, "dkim_evidence": dkim_evidence}
    if not records:
        return make("dmarc", domain, WARNING, "health.msg.dmarc.none", details, domain=domain)
    if len(records) > 1:
        return make("dmarc", domain, PROBLEM, "health.msg.dmarc.several", details, domain=domain,
                    count=len(records))
    tags = dmarc_tags(records[0])
    policy = tags.get("p", "").lower()
    details["policy"] = policy
    if policy not in ("none", "quarantine", "reject"):
        return make("dmarc", domain, PROBLEM, "health.msg.dmarc.invalid", details, domain=domain)
    if policy in ("quarantine", "reject") and not dkim_evidence:
        return make("dmarc", domain, WARNING, "health.msg.dmarc.no_dkim", details, domain=domain, policy=policy)
    return make("dmarc", domain, OK, "health.msg.dmarc.ok", details, domain=domain, policy=policy)


def dkim_key_found(answer: Answer) -> bool:
    """Whether a DKIM look-up found a published key (p= not empty; an empty p= is a revoked key)."""
    for record in answer.records if answer.outcome == FOUND else []:
        tags = dmarc_tags(record.replace(" ", ""))
        if tags.get("p"):
            return True
    return False


def check_dkim(domain: str, provider: ProviderDns, lookups: Dict[str, Answer]) -> Finding:
    """The preset provider's DKIM selectors: is a key published for `domain`?"""
    found = [s for s, a in lookups.items() if dkim_key_found(a)]
    details: Dict[str, object] = {"provider": provider.label, "selectors": {s: a.outcome for s, a in lookups.items()}}
    if found:
        return make("dkim", domain, OK, "health.msg.dkim.ok", details, provider=provider.label, domain=domain,
                    selectors=", ".join(found))
    errors = [a for a in lookups.values() if a.outcome == ERROR]
    if errors:
        return _dns_error("dkim", domain, errors[0])
    names = ", ".join(f"{s}._domainkey.{domain}" for s in lookups)
    return make("dkim", domain, WARNING, "health.msg.dkim.none", details, provider=provider.label, domain=domain,
                names=names)


def check_relay_login(subject: str, result: LoginResult) -> Finding:
    """Whether the relay accepts the stored credentials over a verified TLS connection."""
    details = result.as_details()
    where = f"{result.host}:{result.port}"
    if result.logged_in:
        return make("relay.login", subject, OK, "health.msg.relay_login.ok", details, where=where,
                    username=result.username, tls=result.tls_version or "TLS",
                    reply=f"{result.reply_code} {result.reply}")
    if result.verify_failed:
        return make("relay.login", subject, PROBLEM, "health.msg.relay_login.verify", details, error=result.error,
                    host=result.host)
    if result.stage == "starttls" and not result.auth_sent:
        return make("relay.login", subject, PROBLEM, "health.msg.relay_login.starttls", details, where=where,
                    error=result.error)
    if result.auth_sent:
        return make("relay.login", subject, PROBLEM, "health.msg.relay_login.refused", details, where=where,
                    username=result.username, reply=f"{result.reply_code} {result.reply}")
    return make("relay.login", subject, PROBLEM, "health.msg.relay_login.failed", details, where=where,
                error=result.error)


def check_certificate(subject: str, result: CertResult, now: float) -> Finding:
    """Days until the server's certificate expires; a problem when verification fails."""
    details = result.as_details()
    where = f"{result.host}:{result.port} ({result.protocol})"
    if result.verify_failed:
        return make("certificate", subject, PROBLEM, "health.msg.cert.verify", details, error=result.error,
                    where=where)
    if not result.verified:
        return make("certificate", subject, WARNING, "health.msg.cert.unchecked", details, where=where,
                    error=result.error)
    if result.not_after is None:
        return make("certificate", subject, WARNING, "health.msg.cert.no_expiry", details, where=where)
    days = int((result.not_after - now) // DAY)
    details["days_left"] = days
    if days < 0:
        return make("certificate", subject, PROBLEM, "health.msg.cert.expired", details, where=where)
    if days < CERT_WARNING_DAYS:
        return make("certificate", subject, WARNING, "health.msg.cert.soon", details, where=where, days=days)
    return make("certificate", subject, OK, "health.msg.cert.ok", details, where=where, days=days)
