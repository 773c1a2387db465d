"""The health checks: pure functions from look-up and probe results to findings (no I/O here).

Every finding's summary is one sentence: what was found, and what the admin should do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from smartpop.health.dnsquery import ERROR, FOUND, NXDOMAIN, Answer, MxHost, SpfEvaluation, is_spf
from smartpop.health.findings import OK, PROBLEM, WARNING, Finding, worst
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
    return Finding(check, domain, WARNING,
                   f"{answer.name} ({answer.rdtype}) could not be looked up: {answer.error}; check the NAS's DNS "
                   "settings and run the check again.", {"error": answer.error})


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
        return Finding("mx", domain, PROBLEM, f"{domain} does not exist in DNS, so no mail can reach it; check the "
                       "spelling in local_domains or register the domain.", details)
    if not hosts:
        return Finding("mx", domain, PROBLEM, f"{domain} has no MX record, so senders cannot find the provider's "
                       "mail server; add the MX records your provider gives in its DNS settings.", details)
    if any(h.host in ("", ".", "@") for h in hosts):
        return Finding("mx", domain, PROBLEM, f"{domain} publishes a null MX (it accepts no mail); replace it with "
                       "your provider's MX records.", details)
    if not account_hosts:
        return Finding("mx", domain, WARNING, f"Mail for {domain} goes to {hosts[0].host}; no account is configured "
                       "to collect it, so add the provider mailbox on the Accounts page.", details)
    suffixes: List[str] = []
    for host in account_hosts:
        provider = provider_for_host(host)
        suffixes.extend(provider.suffixes if provider else (base_domain(host),))
    matching = [h.host for h in hosts if host_matches(h.host, suffixes)]
    if len(matching) == len(hosts):
        return Finding("mx", domain, OK, f"Mail for {domain} goes to {hosts[0].host}, your provider "
                       f"({_provider_label(account_hosts)}), where SmartPop collects it; no port needs to be open "
                       "on the NAS.", details)
    elsewhere = [h.host for h in hosts if h.host not in matching]
    return Finding("mx", domain, WARNING, f"Mail for {domain} goes (also) to {', '.join(elsewhere)}, not to the "
                   f"provider SmartPop collects from ({_provider_label(account_hosts)}); mail delivered there never "
                   "reaches SmartPop, so point the MX records at the provider unless that server forwards to it.",
                   details)


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
        return Finding("spf.record", domain, PROBLEM, f"{domain} does not exist in DNS, so it has no SPF record; "
                       "check the spelling in local_domains.", details)
    if not records:
        return Finding("spf.record", domain, PROBLEM, f"{domain} has no SPF record, so many receivers treat its mail "
                       "as spam or refuse it; add a TXT record like 'v=spf1 include:<your provider's SPF> ~all'.",
                       details)
    if len(records) > 1:
        return Finding("spf.record", domain, PROBLEM, f"{domain} has {len(records)} SPF records; receivers then "
                       "treat SPF as broken (permerror), so merge them into one TXT record.", details)
    if probe is None:
        return Finding("spf.record", domain, WARNING, f"The SPF record of {domain} could not be evaluated; run the "
                       "check again.", details)
    details.update(lookups=probe.lookups, verdict_for_other_hosts=probe.result, explanation=probe.explanation)
    if probe.result == "permerror":
        return Finding("spf.record", domain, PROBLEM, f"The SPF record of {domain} is invalid ({probe.explanation}); "
                       "receivers ignore it or refuse the mail, so fix it (at most 10 DNS lookups: replace includes "
                       "you do not need with ip4:/ip6: ranges).", details)
    if probe.result == "temperror":
        return Finding("spf.record", domain, WARNING, f"The SPF record of {domain} could not be evaluated "
                       f"({probe.explanation}); run the check again, and check the DNS of the included domains.",
                       details)
    if probe.result == "pass":
        return Finding("spf.record", domain, WARNING, f"The SPF record of {domain} allows every server in the "
                       "world to send as your domain (+all or an equally wide range); end it with ~all or -all "
                       "instead.", details)
    if probe.result == "neutral":
        return Finding("spf.record", domain, WARNING, f"The SPF record of {domain} says nothing about servers it "
                       "does not list (?all or no 'all'), which protects nothing; end it with ~all or -all.", details)
    return Finding("spf.record", domain, OK, f"{domain} has one valid SPF record ({probe.lookups} of 10 DNS "
                   f"lookups) that refuses other servers ({probe.result}).", details)


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
        return Finding("spf.relay", domain, WARNING, f"The relay is off, so MailPlus sends mail for {domain} "
                       "straight from the NAS's public IP address, which SmartPop cannot see from here: the SPF "
                       "record must list it (ip4:<your public address>), and a dynamic address cannot be listed "
                       "reliably; turn on the relay to send through your provider instead.", {"record": record})
    includes = _includes(record)
    verdicts: List[str] = []
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
            verdicts.append(f"{relay.host}: includes {provider.label if provider else ''}'s {known[0]}")
            continue
        if not relay.evaluations:
            status = WARNING
            verdicts.append(f"{relay.host}: its address could not be resolved "
                            f"({relay.addresses.error or relay.addresses.outcome})")
        elif "fail" in results or "permerror" in results:
            status = PROBLEM
            verdicts.append(f"{relay.host} ({', '.join(relay.addresses.records)}): not authorised (fail)")
        elif results == ["pass"]:
            status = OK
            verdicts.append(f"{relay.host}: authorised (pass)")
        else:
            status = WARNING
            verdicts.append(f"{relay.host}: {'/'.join(results)}")
        if status != OK and provider and provider.spf_includes:
            verdicts[-1] += f"; {provider.label} usually needs include:{provider.spf_includes[0]}"
        statuses.append(status)
    worst_status = worst(statuses)
    details = {"record": record, "relays": notes}
    if worst_status == OK:
        return Finding("spf.relay", domain, OK, f"The SPF record of {domain} authorises the relay "
                       f"({'; '.join(verdicts)}).", details)
    action = "add the provider's include (or the relay's addresses) to the SPF record"
    return Finding("spf.relay", domain, worst_status, f"The SPF record of {domain} may not authorise the relay "
                   f"({'; '.join(verdicts)}); {action}, or receivers may reject mail sent through it.", details)


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
        return Finding("dmarc", domain, WARNING, f"{domain} has no DMARC record, so receivers decide alone what to "
                       f"do with forged mail; add a TXT record at _dmarc.{domain} such as 'v=DMARC1; p=none; "
                       f"rua=mailto:postmaster@{domain}' and tighten it later.", details)
    if len(records) > 1:
        return Finding("dmarc", domain, PROBLEM, f"{domain} has {len(records)} DMARC records, so receivers ignore "
                       "DMARC for it; keep one.", details)
    tags = dmarc_tags(records[0])
    policy = tags.get("p", "").lower()
    details["policy"] = policy
    if policy not in ("none", "quarantine", "reject"):
        return Finding("dmarc", domain, PROBLEM, f"The DMARC record of {domain} has no valid policy (p=none, "
                       "quarantine or reject), so receivers ignore it; fix the p= tag.", details)
    if policy in ("quarantine", "reject") and not dkim_evidence:
        return Finding("dmarc", domain, WARNING, f"{domain}'s DMARC policy is p={policy}, but nothing shows that "
                       "your provider signs its mail with DKIM, so any SPF hiccup (a forwarded message) sends mail "
                       "to spam or back; enable DKIM at the provider, or use p=none until it is on.", details)
    return Finding("dmarc", domain, OK, f"{domain} has a DMARC record with policy p={policy}.", details)


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
        return Finding("dkim", domain, OK, f"{provider.label} signs mail of {domain} with DKIM: a key is published "
                       f"for selector {', '.join(found)}.", details)
    errors = [a for a in lookups.values() if a.outcome == ERROR]
    if errors:
        return _dns_error("dkim", domain, errors[0])
    names = ", ".join(f"{s}._domainkey.{domain}" for s in lookups)
    return Finding("dkim", domain, WARNING, f"No DKIM key of {provider.label} is published for {domain} ({names}), "
                   f"so its mail is not signed or cannot be verified; enable DKIM for the domain in "
                   f"{provider.label}'s settings.", details)


def check_relay_login(subject: str, result: LoginResult) -> Finding:
    """Whether the relay accepts the stored credentials over a verified TLS connection."""
    details = result.as_details()
    where = f"{result.host}:{result.port}"
    if result.logged_in:
        return Finding("relay.login", subject, OK, f"{where} accepted the login of {result.username} over "
                       f"{result.tls_version or 'TLS'} (server: {result.reply_code} {result.reply}).", details)
    if result.verify_failed:
        return Finding("relay.login", subject, PROBLEM, f"{result.error}, so Postfix will not hand mail to "
                       f"{result.host} either; check the host name against the provider's documentation, or the "
                       "CA bundle (docs/RELAY.md, TLS).", details)
    if result.stage == "starttls" and not result.auth_sent:
        return Finding("relay.login", subject, PROBLEM, f"{where} {result.error}: Postfix will keep the mail "
                       "queued, and SmartPop did not send the credentials; use the port for STARTTLS (587) or "
                       "switch to ssl (465), or check for a firewall that strips STARTTLS.", details)
    if result.auth_sent:
        return Finding("relay.login", subject, PROBLEM, f"{where} refused the login of {result.username} "
                       f"(server: {result.reply_code} {result.reply}); check the user name and password on the "
                       "Relay page.", details)
    return Finding("relay.login", subject, PROBLEM, f"Could not log in to {where}: {result.error}; check host, port "
                   "and security on the Relay page.", details)


def check_certificate(subject: str, result: CertResult, now: float) -> Finding:
    """Days until the server's certificate expires; a problem when verification fails."""
    details = result.as_details()
    where = f"{result.host}:{result.port} ({result.protocol})"
    if result.verify_failed:
        return Finding("certificate", subject, PROBLEM, f"{result.error}, so SmartPop cannot connect securely to "
                       f"{where}; ask the provider, or check the host name you configured.", details)
    if not result.verified:
        return Finding("certificate", subject, WARNING, f"The certificate of {where} could not be checked: "
                       f"{result.error}; run the check again.", details)
    if result.not_after is None:
        return Finding("certificate", subject, WARNING, f"The certificate of {where} names no expiry date; ask the "
                       "provider.", details)
    days = int((result.not_after - now) // DAY)
    details["days_left"] = days
    if days < 0:
        return Finding("certificate", subject, PROBLEM, f"The certificate of {where} has expired, so connections "
                       "will fail; tell the provider.", details)
    if days < CERT_WARNING_DAYS:
        return Finding("certificate", subject, WARNING, f"The certificate of {where} expires in {days} days; "
                       "providers usually renew in time, tell yours if it is still the same in a few days.", details)
    return Finding("certificate", subject, OK, f"The certificate of {where} is valid for {days} more days.", details)
