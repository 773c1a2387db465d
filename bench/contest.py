"""One contender, one run: fresh provider mailbox, fill, run the tool, wait for Postfix, census.

Shared by the throughput and memory benches so that every tool gets exactly the same
treatment: the same messages (new Message-IDs per run), emptied local maildirs, and the
same definition of "done" (all files in the maildirs and Postfix's queue empty).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import proc
from bench.corpus import Sample
from bench.peers import Command, Job
from bench.stack import PROVIDER_DOMAIN, MailStack, empty_local, wait_local
from bench.verify import Check, census


@dataclass
class Outcome:
    """What one run of one tool measured."""

    name: str
    measured: proc.Measured | None = None
    delivered_after: float | None = None
    check: Check | None = None
    note: str = ""
    extra: str = ""

    @property
    def done_time(self) -> float | None:
        """Seconds from start until every message was in its maildir (None if never)."""
        return self.delivered_after


@dataclass
class Bench:
    """What every bench needs: the stack, a scratch dir, the SmartPop interpreter, a log dir."""

    stack: MailStack
    smartpop_python: str
    logs: Path
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bn", dir="/tmp")))
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]

    def tag(self, prefix: str) -> str:
        """A name unique within this harness run."""
        return f"{prefix}{next(self._ids)}"

    def mailbox(self, prefix: str) -> tuple[str, str]:
        """A new, empty provider mailbox: (address, password)."""
        address = f"{self.tag(prefix)}@{PROVIDER_DOMAIN}"
        password = f"{address.split('@')[0]}-pw"
        self.stack.add_users([(address, password)])
        return address, password

    def workdir(self, name: str) -> Path:
        """A fresh per-run dir for a tool's state and rc files."""
        path = self.scratch / self.tag(name.replace(" ", "_").replace("(", "").replace(")", ""))
        path.mkdir(parents=True)
        return path

    def cleanup(self) -> None:
        """Remove the scratch dir."""
        shutil.rmtree(self.scratch, ignore_errors=True)


def attempt(bench: Bench, name: str, build: Callable[[Job], Command], make: Callable[[str], list[Sample]],
            *, timeout: float = 1800.0, settle: float = 120.0,
            inspect: Callable[[list[Sample]], str] | None = None) -> Outcome:
    """Run `build`'s command on a fresh mailbox holding make(tag)'s messages; measure and verify."""
    user, password = bench.mailbox("src")
    samples = make(user.split("@")[0])
    bench.stack.fill(user, [s.data for s in samples])
    recipients = sorted({s.recipient for s in samples})
    empty_local(bench.stack, recipients)
    job = Job(bench.stack, user, password, bench.workdir(name))
    cmd, env = build(job)
    log = bench.logs / f"{job.workdir.name}.log"
    measured = proc.run(cmd, env=env, timeout=timeout, log=log)
    expected = dict(Counter(s.recipient for s in samples))
    done = wait_local(bench.stack, expected, settle)
    outcome = Outcome(name, measured, None if done is None else done - measured.started)
    if done is None:
        bench.stack.drain(10)
    outcome.check = census(bench.stack, samples, server_user=user)
    if inspect is not None:
        outcome.extra = inspect(samples)
    if measured.timed_out:
        outcome.note = f"killed after {timeout:.0f} s"
    elif measured.returncode != 0:
        outcome.note = f"exit {measured.returncode}: {last_line(measured.output)}"
    empty_local(bench.stack, recipients)  # do not leave 200 MB files behind between runs
    time.sleep(0.2)
    return outcome


def last_line(text: str) -> str:
    """The last non-empty output line, shortened for a table cell."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no output").replace("|", "/")[:160]
