"""The provider DNS table matches the presets: every preset has an entry that owns its servers."""

from __future__ import annotations

from smartpop.health.providers import PROVIDERS, base_domain, provider_for_host
from smartpop.web.presets import PRESETS


def test_every_preset_has_dns_facts_that_own_its_servers() -> None:
    """Each preset's POP3, IMAP and SMTP host maps back to that preset's entry."""
    assert sorted(p.preset for p in PROVIDERS) == sorted(p["id"] for p in PRESETS)
    for preset in PRESETS:
        for kind in ("pop3", "imap", "smtp"):
            provider = provider_for_host(preset[kind][0])
            assert provider is not None and provider.preset == preset["id"], (preset["id"], kind)


def test_known_includes() -> None:
    """The includes the issue names, where the table knows them."""
    includes = {p.preset: p.spf_includes for p in PROVIDERS}
    assert "_spf-eu.ionos.com" in includes["ionos"]
    assert "spf.kasserver.com" in includes["allinkl"]
    assert "spf.your-server.de" in includes["hetzner"]
    assert "_spf.google.com" in includes["gmail"]
    assert "spf.protection.outlook.com" in includes["outlook"]


def test_unknown_host() -> None:
    """A host of no known provider: compared by its last two labels."""
    assert provider_for_host("mail.example.org") is None
    assert base_domain("Mail.Example.ORG.") == "example.org"
