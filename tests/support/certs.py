"""A test CA and a server certificate for localhost / 127.0.0.1 / ::1 (openssl CLI)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple


class TestCerts(NamedTuple):
    """Paths of the generated CA and server certificate/key."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def make_certs(directory: Path) -> TestCerts:
    """Create (once) a CA and a server cert signed by it under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = TestCerts(directory / "ca.crt", directory / "ca.key", directory / "server.crt", directory / "server.key")
    if certs.server_cert.exists():
        return certs

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=SmartPop Test CA",
        "-keyout", str(certs.ca_key), "-out", str(certs.ca_cert),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(certs.server_key), "-out", str(directory / "server.csr"))
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    run("x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(certs.ca_cert), "-CAkey", str(certs.ca_key),
        "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", str(directory / "server.ext"),
        "-out", str(certs.server_cert))
    certs.server_key.chmod(0o644)  # read by unprivileged server processes in tests only
    return certs


def issue_cert(ca: TestCerts, directory: Path, names: str, days: int) -> TestCerts:
    """A server certificate signed by `ca`'s CA for `names` (an openssl subjectAltName), valid `days` days."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = TestCerts(ca.ca_cert, ca.ca_key, directory / "server.crt", directory / "server.key")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=health-test", "-keyout", str(certs.server_key),
        "-out", str(directory / "server.csr"))
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={names}\n")
    run("x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(ca.ca_cert), "-CAkey", str(ca.ca_key),
        "-CAcreateserial", "-days", str(days), "-sha256", "-extfile", str(directory / "server.ext"),
        "-out", str(certs.server_cert))
    return certs
