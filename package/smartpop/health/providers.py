"""What is known about the preset providers' mail DNS: host suffixes, SPF include, DKIM selectors.

One entry per preset id of smartpop.web.presets (the presets hold the servers; this table the
DNS facts a health check compares against). Where each fact comes from is noted per entry;
"not verified" marks a value that the providers' pages available while writing this did not
confirm, so a finding built on it says "usual", never "required".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Tuple


@dataclass(frozen=True)
class ProviderDns:
    """DNS facts of one provider."""

    preset: str
    label: str
    # A server or MX host ending in one of these (after a dot, or equal) belongs to the provider.
    suffixes: Tuple[str, ...]
    # Targets of the include: (or redirect=) that authorises the provider's outgoing servers.
    spf_includes: Tuple[str, ...]
    # DKIM selectors the provider publishes keys under for a customer's domain.
    dkim_selectors: Tuple[str, ...]


PROVIDERS: Tuple[ProviderDns, ...] = (
    # IONOS help "SPF-Record" (include:_spf-eu.ionos.com) and "E-Mail-Authentifizierung mit DKIM"
    # (CNAMEs s1-ionos._domainkey, s2-ionos._domainkey); MX mx00/mx01.ionos.de.
    ProviderDns("ionos", "IONOS", ("ionos.de", "ionos.com", "kundenserver.de", "perfora.net"),
                ("_spf-eu.ionos.com", "_spf.perfora.net", "_spf.kundenserver.de"), ("s1-ionos", "s2-ionos")),
    # Strato: strato.de's own record redirects to smtp.strato.de; MX smtpin.rzone.de. Not verified.
    ProviderDns("strato", "Strato", ("strato.de", "rzone.de"), ("strato.de", "smtp.strato.de"), ()),
    # all-inkl.com KAS documentation: include:spf.kasserver.com; servers w0xxxxxx.kasserver.com.
    ProviderDns("allinkl", "all-inkl.com", ("kasserver.com", "all-inkl.com"), ("spf.kasserver.com",), ()),
    # Hetzner Docs "SPF": include:spf.your-server.de; servers mail.your-server.de.
    ProviderDns("hetzner", "Hetzner", ("your-server.de",), ("spf.your-server.de",), ()),
    # GMX and WEB.DE offer mailboxes under their own domains; no include for a customer's domain is published.
    ProviderDns("gmx", "GMX", ("gmx.net", "gmx.de"), (), ()),
    ProviderDns("webde", "WEB.DE", ("web.de",), (), ()),
    # Telekom Homepage Center help "Wird ein SPF-Record verwendet?": include:_spf.hier-im-netz.de
    # (set by default for domains registered there; older domains list Telekom's IP ranges).
    ProviderDns("tonline", "T-Online", ("t-online.de", "hier-im-netz.de"), ("_spf.hier-im-netz.de",), ()),
    # Google Workspace admin help: include:_spf.google.com, default DKIM selector "google".
    ProviderDns("gmail", "Gmail", ("gmail.com", "google.com", "googlemail.com"), ("_spf.google.com",),
                ("google",)),
    # Microsoft 365 (Exchange Online) docs: include:spf.protection.outlook.com, DKIM selector1/selector2.
    # The preset is Outlook.com; a company domain there is Microsoft 365.
    ProviderDns("outlook", "Microsoft 365 / Outlook.com", ("outlook.com", "office365.com", "outlook.office365.com"),
                ("spf.protection.outlook.com",), ("selector1", "selector2")),
)


def host_matches(host: str, suffixes: Iterable[str]) -> bool:
    """Whether `host` is one of `suffixes` or a name under one of them."""
    name = host.lower().rstrip(".")
    return any(name == s or name.endswith("." + s) for s in suffixes)


def provider_for_host(host: Optional[str]) -> Optional[ProviderDns]:
    """The known provider that runs `host`, if any."""
    if not host:
        return None
    for provider in PROVIDERS:
        if host_matches(host, provider.suffixes):
            return provider
    return None


def base_domain(host: str) -> str:
    """The last two labels of `host`: a stand-in for the provider's domain when it is not in PROVIDERS.

    Wrong for names under a two-label public suffix (co.uk); good enough for German providers.
    """
    labels = host.lower().rstrip(".").split(".")
    return ".".join(labels[-2:])
