"""Pure: the plain-mailbox guard (collector/mailboxcheck.py)."""

from __future__ import annotations

from smartpop.collector.addresslist import extract_addresses
from smartpop.collector.mailboxcheck import NO_SMTPUTF8, normalise, safe_reason, usable


def test_safe_reason_and_normalise() -> None:
    for good in ("anna@firma.de", "a.b-c_d+tag=x@firma.de", "A1@Firma.DE", "_x@firma.de", "+x@firma.de"):
        assert safe_reason(good, ("firma.de",)) is None, good
    assert safe_reason("anna@other.example", ("firma.de",)) == "domain other.example is not a local domain"
    assert safe_reason("anna@other.example") is None
    assert safe_reason("anna") is not None and safe_reason("@firma.de") is not None
    assert safe_reason("x" * 65 + "@firma.de") == "local part longer than 64 characters"
    assert safe_reason("anna@[127.0.0.1]") is not None and safe_reason("anna@localhost") is not None
    assert safe_reason("an na@firma.de") is not None and safe_reason("anna\r\n@firma.de") is not None
    assert normalise("<Anna@Firma.DE>") == "anna@firma.de"
    assert normalise("victim%evil.example@firma.de") is None
    assert extract_addresses("victim%evil.example@firma.de, anna@firma.de") == ["anna@firma.de"]


def test_usable_splits_plain_from_refused_and_drops_repeats() -> None:
    good, bad = usable(["Anna@Firma.DE", "anna@firma.de", "victim%x@firma.de", "r\u00fcben@firma.de"])
    assert good == ["anna@firma.de"]
    assert [written for written, _ in bad] == ["victim%x@firma.de", "r\u00fcben@firma.de"]
    assert bad[1][1] == NO_SMTPUTF8


def test_usable_sends_nfc_and_refuses_letters_that_stand_for_ascii() -> None:
    good, bad = usable(["ru\u0308ben@firma.de", "\u212anut@firma.de"], smtputf8=True)
    assert good == ["r\u00fcben@firma.de"]
    assert bad and bad[0][0] == "\u212anut@firma.de" and "KELVIN" in bad[0][1]


def test_the_local_part_reasons_name_the_first_fault() -> None:
    assert (safe_reason("a%b!c@firma.de") or "").startswith("'%' in the local part (percent hack")
    assert safe_reason(".anna@firma.de") == "local part starts with '.' or '-', ends with '.' or has '..'"
    assert safe_reason("an#na@firma.de") == "character '#' in the local part"
    assert safe_reason("anna@firma_de.example") == "domain 'firma_de.example' is not a plain domain name"
    # Without SMTPUTF8 the address's own fault still comes first.
    assert (safe_reason("\u0430nna\u00e9@firma.de") or "").startswith("mixed scripts in the local part")
