"""Run every health check for a config, and keep the last result in DATA (for the CLI and the web page)."""

from __future__ import annotations

import functools
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

from smartpop.collector.policy import delivery_domains
from smartpop.collector.transport import tls_context
from smartpop.config.schema import Config
from smartpop.config.secret import Secret
from smartpop.errors import ConnectError, TemporaryError
from smartpop.fsutil import atomic_write
from smartpop.health import checks, openrelay, probes, roundtrip
from smartpop.health.dnsquery import NXDOMAIN, PROBE_IP, Answer, Resolver, SpfEvaluation, evaluate_spf
from smartpop.health.findings import PROBLEM, Finding, make, overall
from smartpop.health.providers import ProviderDns, provider_for_host
from smartpop.paths import Paths

log = logging.getLogger(__name__)


class _RelayTarget:
    """One relay to log in to: the main relay or a per-sender relay."""

    def __init__(self, label: str, host: str, port: int, security: str, username: str, password: Secret,
                 sender: Optional[str] = None) -> None:
        self.label, self.host, self.port, self.security = label, host, port, security
        self.username, self.password, self.sender = username, password, sender


def _relays(config: Config) -> List[_RelayTarget]:
    relay = config.relay
    if not relay.enabled or not relay.host:
        return []
    targets = [_RelayTarget("relay", relay.host, relay.port, relay.security, relay.username, relay.password)]
    for item in relay.sender_relays:
        targets.append(_RelayTarget(f"relay for {item.sender}", item.host, item.port, item.security, item.username,
                                    item.password, item.sender))
    return targets


def _sender_domain(sender: str) -> str:
    return sender.rpartition("@")[2].lower()


def health_domains(config: Config) -> List[str]:
    """The company's domains: local_domains, single-drop targets' domains and the per-sender relays' domains."""
    domains = set(delivery_domains(config))
    domains.update(_sender_domain(s.sender) for s in config.relay.sender_relays)
    return sorted(d for d in domains if d)


def _relays_for(domain: str, targets: List[_RelayTarget]) -> List[_RelayTarget]:
    """The relays that send mail from `domain`: a '@domain' sender relay takes all of it."""
    whole = [t for t in targets if t.sender and t.sender.lower() == "@" + domain]
    if whole:
        return whole
    return [t for t in targets if t.sender is None or _sender_domain(t.sender) == domain]


def check_domain(resolver: Resolver, domain: str, config: Config, helo: str = "localhost") -> List[Finding]:
    """The DNS findings for one domain: MX, SPF record, SPF for the relay, DKIM, DMARC."""
    targets = _relays(config)
    account_hosts = sorted({a.host for a in config.accounts if a.enabled})
    mx_answer, mx_hosts = resolver.mx(domain)
    findings = [checks.check_mx(domain, mx_answer, mx_hosts, account_hosts)]
    if mx_answer.outcome == NXDOMAIN:
        # The domain does not exist: SPF, DKIM and DMARC cannot exist either, and their
        # findings would only repeat the MX problem as noise.
        return findings

    txt = resolver.txt(domain)
    probe: Optional[SpfEvaluation] = None
    if len(checks.spf_records(txt)) == 1:
        probe = evaluate_spf(resolver, domain, PROBE_IP, helo)
    findings.append(checks.check_spf_record(domain, txt, probe))

    relay_spf: List[checks.RelaySpf] = []
    if probe is not None and probe.result not in ("permerror", "temperror"):
        for target in _relays_for(domain, targets):
            # The submission host's addresses stand in for the provider's outgoing servers,
            # which SmartPop cannot see (docs/HEALTH.md, SPF).
            addresses = resolver.addresses(target.host)
            item = checks.RelaySpf(target.host, addresses)
            for ip in addresses.records:
                item.evaluations.append(evaluate_spf(resolver, domain, ip, target.host))
            relay_spf.append(item)
    relay_finding = checks.check_spf_relay(domain, txt, probe, bool(targets), relay_spf)
    if relay_finding is not None:
        findings.append(relay_finding)

    # DKIM: the selectors of the providers that send (relays) or hold the mailboxes (accounts).
    providers: List[ProviderDns] = []
    for host in [t.host for t in _relays_for(domain, targets)] + account_hosts:
        provider = provider_for_host(host)
        if provider is not None and provider.dkim_selectors and provider not in providers:
            providers.append(provider)
    dkim_evidence = False
    for provider in providers:
        lookups: Dict[str, Answer] = {s: resolver.txt(f"{s}._domainkey.{domain}") for s in provider.dkim_selectors}
        finding = checks.check_dkim(domain, provider, lookups)
        dkim_evidence = dkim_evidence or any(checks.dkim_key_found(a) for a in lookups.values())
        findings.append(finding)
    findings.append(checks.check_dmarc(domain, resolver.txt(f"_dmarc.{domain}"), dkim_evidence))
    return findings


def _certificate_targets(config: Config) -> List[Tuple[str, str, int, str, Optional[str]]]:
    """(protocol, host, port, security, ca_file) of each enabled account's server, once each."""
    seen = set()
    result: List[Tuple[str, str, int, str, Optional[str]]] = []
    for account in config.accounts:
        if not account.enabled or account.security == "none":
            continue
        key = (account.host, account.port)
        if key not in seen:
            seen.add(key)
            result.append((account.protocol, account.host, account.port, account.security, account.ca_file))
    return result


Progress = Callable[[Dict[str, Any]], None]
# Probes run at once: each waits on a server (up to TIMEOUT when it does not answer), so a few in
# parallel keep "Run checks now" short while a 2-core NAS stays responsive.
PARALLEL = 4
_single_run = threading.Lock()


def run_all(paths: Paths, config: Config, resolver: Optional[Resolver] = None, ca_file: Optional[str] = None,
            now: Optional[float] = None, timeout: float = probes.TIMEOUT, store: bool = True,
            progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Run every health check and return the report; also keep it in DATA/health.json when `store`."""
    started = time.time()
    moment = started if now is None else now
    helo = socket.gethostname() or "localhost"
    targets = _relays(config)
    steps: List[Tuple[str, Callable[[], List[Finding]]]] = []
    try:
        dns = resolver if resolver is not None else Resolver()
    except TemporaryError as exc:
        dns = None
        error = make("dns", "-", "warning", "health.msg.dns.no_resolver", error=str(exc))
        steps.append(("DNS", lambda: [error]))
    if dns is not None:
        for domain in health_domains(config):
            steps.append((f"DNS of {domain}", functools.partial(check_domain, dns, domain, config, helo)))
    if targets and ca_file is None:
        from smartpop.relay.trust import find_ca_file

        ca_file = find_ca_file()
    for target in targets:
        steps.append((f"login at {target.host}:{target.port}",
                      functools.partial(_relay_findings, target, str(ca_file), timeout, helo, moment)))
    for protocol, host, port, security, account_ca in _certificate_targets(config):
        steps.append((f"certificate of {host}:{port}", functools.partial(_certificate_findings, protocol, host, port,
                                                                         security, account_ca, timeout, moment)))
    steps.append(("MailPlus relay rules",
                  lambda: [f for f in [openrelay.check_open_relay(openrelay.load_facts(paths), config.relay.enabled)]
                           if f is not None]))
    # The last round trip (sent on request) stays in every report: one that never came back is a problem.
    steps.append(("round trip", lambda: [f for f in [roundtrip.latest_finding(paths, moment)] if f is not None]))
    findings = _run_steps(steps, progress)
    report = {
        "checked_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "duration_seconds": round(time.time() - started, 2),
        "status": overall(findings),
        "findings": [f.as_dict() for f in findings],
    }
    if store:
        save_report(paths, report)
    return report


def _run_steps(steps: List[Tuple[str, Callable[[], List[Finding]]]], progress: Optional[Progress]) -> List[Finding]:
    """Run the steps on a bounded pool; findings keep the steps' order; progress after each step."""
    done = 0
    lock = threading.Lock()

    def one(step: Tuple[str, Callable[[], List[Finding]]]) -> List[Finding]:
        nonlocal done
        try:
            return step[1]()
        finally:
            with lock:
                done += 1
                current = done
            if progress is not None:
                try:
                    progress({"done": current, "total": len(steps), "step": step[0]})
                except Exception:  # a UI callback must never break the checks
                    log.exception("health progress callback failed")

    if progress is not None:
        progress({"done": 0, "total": len(steps), "step": ""})
    with ThreadPoolExecutor(max(1, min(PARALLEL, len(steps))), thread_name_prefix="smartpop-health") as pool:
        results = list(pool.map(one, steps))
    return [finding for group in results for finding in group]


def _relay_findings(target: _RelayTarget, ca_file: str, timeout: float, helo: str, moment: float) -> List[Finding]:
    result = probes.probe_relay_login(target.host, target.port, target.security, target.username, target.password,
                                      ca_file, timeout=timeout, local_hostname=helo)
    findings = [checks.check_relay_login(target.label, result)]
    if result.cert_not_after is not None:
        cert = probes.CertResult(target.host, target.port, "smtp", target.security, verified=True,
                                 not_after=result.cert_not_after)
        findings.append(checks.check_certificate(f"{target.host}:{target.port}", cert, moment))
    return findings


def _certificate_findings(protocol: str, host: str, port: int, security: str, account_ca: Optional[str],
                          timeout: float, moment: float) -> List[Finding]:
    try:
        context = tls_context(account_ca)
    except ConnectError as exc:
        return [make("certificate", f"{host}:{port}", "problem", "health.msg.cert.ca_file",
                     {"host": host, "port": port}, error=str(exc))]
    cert = probes.probe_certificate(host, port, protocol, security, context, timeout=timeout)
    return [checks.check_certificate(f"{host}:{port}", cert, moment)]


def turned_bad(before: Optional[Dict[str, Any]], after: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The findings of `after` that are a problem and were not one in `before` (absent counts as not)."""
    earlier = {(f.get("check"), f.get("subject")): f.get("status") for f in (before or {}).get("findings", [])}
    return [f for f in after.get("findings", [])
            if f.get("status") == PROBLEM and earlier.get((f.get("check"), f.get("subject"))) != PROBLEM]


def run_checks(paths: Paths, config: Config, progress: Optional[Progress] = None,
               **options: Any) -> Optional[Dict[str, Any]]:
    """run_all, stored, with an alert for each check that turned into a problem; None if a run is going on."""
    if not _single_run.acquire(blocking=False):
        return None  # the daily run and "Run checks now" never run twice at once
    try:
        before = load_report(paths)
        report = run_all(paths, config, progress=progress, **options)
        for finding in turned_bad(before, report):
            from smartpop.alerts import notify

            # One alert per check and subject when it turns bad; none while it stays a problem.
            notify(paths, config, "health", f"Mail health: {finding['check']} of {finding['subject']} is a problem",
                   f"{finding['summary']}\n\nOpen SmartPop > Health for the details.",
                   key=f"{finding['check']}:{finding['subject']}")
        return report
    finally:
        _single_run.release()


def running() -> bool:
    """Whether a check run is going on in this process."""
    if _single_run.acquire(blocking=False):
        _single_run.release()
        return False
    return True


def report_epoch(report: Optional[Dict[str, Any]]) -> Optional[float]:
    """When `report` ran (seconds since the epoch), or None."""
    try:
        return datetime.fromisoformat(str((report or {})["checked_at"])).timestamp()
    except (KeyError, ValueError):
        return None


def save_report(paths: Paths, report: Dict[str, Any]) -> None:
    """Replace DATA/health.json with `report` (atomic; the web page reads it)."""
    atomic_write(paths.health_file, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def load_report(paths: Paths) -> Optional[Dict[str, Any]]:
    """The last stored report, or None when there is none or it is unreadable."""
    try:
        data = json.loads(paths.health_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
