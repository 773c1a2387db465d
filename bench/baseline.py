"""The plain baseline of issue 6: poplib RETR + smtplib on one connection each, serial.

Run as its own process (so its peak RSS is its own):
    python bench/baseline.py HOST POP3S_PORT CA_FILE USER PASSWORD SMTP_PORT
For every message: RETR, take the envelope recipient from the first Delivered-To header
and MAIL FROM from Return-Path, send it, DELE; QUIT at the end. No state, no journal,
no safety: this is the floor a careful collector is measured against.
"""

from __future__ import annotations

import poplib
import re
import smtplib
import ssl
import sys
import time

_RCPT = re.compile(rb"^delivered-to:\s*<?([^>\s]+)", re.IGNORECASE)
_FROM = re.compile(rb"^return-path:\s*<([^>]*)>", re.IGNORECASE)


def envelope(lines: list[bytes]) -> tuple[str, str | None]:
    """(sender, recipient) from the header lines of one message."""
    sender, rcpt = "", None
    for line in lines:
        if not line:
            break
        if rcpt is None and (m := _RCPT.match(line)):
            rcpt = m.group(1).decode()
        elif not sender and (m := _FROM.match(line)):
            sender = m.group(1).decode()
    return sender, rcpt


def main(argv: list[str]) -> int:
    """Collect everything once; print how many and how long."""
    host, port, ca, user, password, smtp_port = argv
    poplib._MAXLINE = 1 << 20  # type: ignore[attr-defined]  # long lines in generated bodies are fine
    start = time.perf_counter()
    pop = poplib.POP3_SSL(host, int(port), context=ssl.create_default_context(cafile=ca), timeout=120)
    pop.user(user)
    pop.pass_(password)
    count, _ = pop.stat()
    smtp = smtplib.SMTP("127.0.0.1", int(smtp_port), local_hostname="baseline.test", timeout=120)
    for number in range(1, count + 1):
        _, lines, _ = pop.retr(number)
        sender, rcpt = envelope(lines)
        smtp.sendmail(sender, [rcpt or "postmaster@firma.test"], b"\r\n".join(lines) + b"\r\n")
        pop.dele(number)
    pop.quit()
    smtp.quit()
    print(f"baseline: {count} messages in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
