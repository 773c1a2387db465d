"""How each contender is invoked on the same provider mailbox: command line, env, config files.

Every tool gets a fresh work dir (state, rc files), so no run inherits another's UIDL list.
All of them verify the server certificate against the stack's CA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stack import LOCAL_DOMAIN, MailStack, postfix_etc

ROOT = Path(__file__).resolve().parents[1]
FETCHMAIL = "/usr/bin/fetchmail"
GETMAIL = "/usr/bin/getmail"
SENDMAIL = "/usr/sbin/sendmail"
FALLBACK = f"postmaster@{LOCAL_DOMAIN}"


@dataclass
class Job:
    """One provider mailbox to collect, and where the tool may keep its files."""

    stack: MailStack
    user: str
    password: str
    workdir: Path


Command = tuple[list[str], dict[str, str]]


def account_doc(stack: MailStack, name: str, user: str, password: str, **over: Any) -> dict[str, Any]:
    """A config.json account pointing at the stack (POP3S multidrop unless `over` says otherwise)."""
    doc: dict[str, Any] = {"name": name, "protocol": "pop3", "host": "localhost", "port": stack.pop3s_port,
                           "security": "ssl", "username": user, "password": password, "ca_file": stack.ca_file,
                           "mode": "multidrop", "keep_on_server": False}
    doc.update(over)
    if doc["protocol"] == "imap" and "port" not in over:
        doc["port"] = stack.imaps_port
    return doc


def write_smartpop_config(stack: MailStack, data: Path, accounts: list[dict[str, Any]],
                          web_port: int | None = None) -> Path:
    """Write DATA/config.json (schema of docs/CONFIG.md, mode 0600)."""
    data.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"schema_version": 1, "accounts": accounts, "local_domains": [LOCAL_DOMAIN],
                           "aliases": {}, "fallback_recipient": FALLBACK,
                           "delivery": {"host": "127.0.0.1", "port": stack.smtp_port}}
    if web_port is not None:
        doc["web"] = {"port": web_port}
    path = data / "config.json"
    path.write_text(json.dumps(doc, indent=1))
    path.chmod(0o600)
    return path


def smartpop_env() -> dict[str, str]:
    """Environment for `python -m smartpop` from this checkout (package/ on sys.path)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "package")
    env.pop("SMARTPOP_DATA", None)
    # On the NAS bin/smartpop runs Python with -I (PYTHON* variables ignored) from target/,
    # which the package user owns, so the bytecode is cached after the first run. A shell
    # with PYTHONDONTWRITEBYTECODE set would make every benched run compile ~60 modules.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_bytecode(python: str) -> None:
    """Cache SmartPop's bytecode for `python`, as the NAS has it after the first run."""
    subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "package" / "smartpop")],
                   env=smartpop_env(), check=False, stdout=subprocess.DEVNULL)


def smartpop(job: Job, python: str, *args: str) -> Command:
    """`smartpop --data DIR fetch` for the job's mailbox (the real CLI, multidrop)."""
    data = job.workdir / "data"
    write_smartpop_config(job.stack, data, [account_doc(job.stack, "bench", job.user, job.password)])
    return [python, *args, "-m", "smartpop", "--data", str(data), "fetch"], smartpop_env()


def smartpop_fetch(python: str, data: Path, *args: str) -> Command:
    """`smartpop --data DATA fetch` with a config.json already written."""
    return [python, *args, "-m", "smartpop", "--data", str(data), "fetch"], smartpop_env()


def baseline(job: Job, python: str = sys.executable) -> Command:
    """The plain poplib+smtplib loop (bench/baseline.py)."""
    return ([python, str(ROOT / "bench/baseline.py"), "127.0.0.1", str(job.stack.pop3s_port), job.stack.ca_file,
             job.user, job.password, str(job.stack.smtp_port)], dict(os.environ))


def fetchmail(job: Job, mode: str) -> Command:
    """fetchmail multidrop on Delivered-To; mode 'mda' (sendmail per message) or 'smtp'."""
    home = job.workdir / "fetchmail"
    home.mkdir(parents=True, exist_ok=True)
    if mode == "mda":
        sink = f'    mda "{SENDMAIL} -C {postfix_etc(job.stack)} -oi -f %F %T"\n'
    else:
        sink = f"    smtphost 127.0.0.1/{job.stack.smtp_port}\n    smtpaddress {LOCAL_DOMAIN}\n"
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\nset no syslog\n"
        f'set postmaster "{FALLBACK}"\n\n'
        f"poll 127.0.0.1 with proto POP3 port {job.stack.pop3s_port} uidl\n"
        '    envelope "Delivered-To:"\n'
        f"    localdomains {LOCAL_DOMAIN}\n"
        f'    user "{job.user}" there with password "{job.password}" to * here\n'
        # fetchmail checks the certificate's CN, not its 127.0.0.1 IP SAN: give it the name
        f"    ssl sslproto TLS1.2+ sslcertck sslcertfile {job.stack.ca_file} sslcommonname localhost\n"
        f"{sink}    fetchall nokeep\n")
    rc.chmod(0o600)
    env = dict(os.environ, FETCHMAILHOME=str(home))
    return [FETCHMAIL, "-f", str(rc), "-i", str(home / "fetchids")], env


def getmail(job: Job) -> Command:
    """getmail6 multidrop POP3S -> Postfix's sendmail (getmail6 has no SMTP destination)."""
    home = job.workdir / "getmail"
    home.mkdir(parents=True, exist_ok=True)
    rc = home / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = MultidropPOP3SSLRetriever\nserver = 127.0.0.1\n"
        f"port = {job.stack.pop3s_port}\nusername = {job.user}\npassword = {job.password}\n"
        f"envelope_recipient = delivered-to:1\nca_certs = {job.stack.ca_file}\nssl_cert_hostname = localhost\n\n"
        f"[destination]\ntype = MDA_external\npath = {SENDMAIL}\n"
        f'arguments = ("-C", "{postfix_etc(job.stack)}", "-oi", "-f", "%(sender)", "%(recipient)")\n'
        "allow_root_commands = true\n\n"
        "[options]\nread_all = true\ndelete = true\nverbose = 0\ndelivered_to = false\nreceived = false\n")
    return [GETMAIL, f"--getmaildir={home}", f"--rcfile={rc}", "--quiet"], dict(os.environ)


def version(cmd: list[str]) -> str:
    """First line a tool prints about its version ('missing' if it is not installed)."""
    import subprocess

    if not Path(cmd[0]).exists():
        return "missing"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"
