"""Silent when idle (issue 14, points 1, 2 and 5): what `smartpop serve` costs while nothing arrives.

`smartpop serve` (collector daemon and web backend) with 8 POP3S accounts polled every 60 s
and 2 IMAP accounts with "idle": true, all on empty provider mailboxes. After a settling time
(first polls, logins) the bench measures over a window of N minutes:

- bytes written by SmartPop's processes: /proc/PID/io write_bytes (what reached the page
  cache for a disk, mmap writes such as SQLite's -shm included) and wchar (every write()
  call, pipes and sockets included), start vs end of the window, the service plus its
  children (living ones from /proc, reaped ones from getrusage(RUSAGE_CHILDREN));
- writes to files under DATA: a recursive inotify watch (libc through ctypes) counting
  IN_MODIFY, IN_ATTRIB, IN_CREATE, IN_DELETE, IN_MOVED_TO and IN_CLOSE_WRITE per file.
  inotify does not see writes through mmap (SQLite's -shm), hence write_bytes as well;
- context switches: getrusage() inside the service at both ends (bench/launch.py, on
  SIGUSR2: every thread the process had, the ones that ended included), and per thread
  from /proc/PID/task/*/status, by thread name (bench/launch.py names the OS threads after
  the Python threads), sampled every few seconds so that short-lived threads show up too;
- VmRSS and VmHWM of the service at the end, its thread count, the Python that ran it;
- the logins Dovecot logged for these accounts within the window: the polls.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import shutil
import signal
import struct
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench import machine, peers, proc
from bench.contest import Bench
from bench.stack import LOCAL_DOMAIN, PROVIDER_DOMAIN
from bench.table import NA, table

POP3_ACCOUNTS = 8
IMAP_ACCOUNTS = 2
INTERVAL = 60
SAMPLE_EVERY = 2.0  # seconds between looks at the threads and children of the service
RSS_LIMIT_MB = 32.0
# "At most a few context switches per poll" (issue 14 §2): our reading of "a few", for the
# threads that live through the window (scheduler, web loop, workers waiting): what SmartPop's
# own scheduling costs. A poll's worker thread also switches once per network round trip of
# its POP3S session (connect, TLS, greeting, USER, PASS, UIDL, QUIT): shown beside it.
FEW_PER_POLL = 5
# A long-lived thread that woke this often per poll (or, with no polls, this often a minute)
# has a timer of its own: it does not wake because of the work.
TICK_PER_POLL = FEW_PER_POLL
TICK_PER_MIN = 30.0
FILE_ROWS = 25
LAUNCH = Path(__file__).resolve().parent / "launch.py"

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
KINDS = [(IN_MODIFY, "modify"), (IN_ATTRIB, "attrib"), (IN_CREATE, "create"), (IN_DELETE, "delete"),
         (IN_MOVED_TO, "moved_to"), (IN_CLOSE_WRITE, "close_write")]
WATCH_MASK = IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_CLOSE_WRITE
EVENT = struct.Struct("iIII")


class DirWatch:
    """Recursive inotify watch of a directory tree: counts events per (file, kind)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.inotify_init1.argtypes = [ctypes.c_int]
        self.libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = self.libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1: " + os.strerror(ctypes.get_errno()))
        self.dirs: dict[int, Path] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self.overflows = 0
        for path, _subdirs, _files in os.walk(root):
            self._add(Path(path))

    def _add(self, path: Path) -> None:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), WATCH_MASK)
        if wd >= 0:
            self.dirs[wd] = path
        elif ctypes.get_errno() not in (errno.ENOENT, errno.ENOTDIR):  # gone already: nothing to watch
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}: {os.strerror(ctypes.get_errno())}")

    def drain(self, timeout: float) -> None:
        """Wait up to `timeout` s for events and count every one that is there."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        while ready:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            offset = 0
            while offset + EVENT.size <= len(buf):
                wd, mask, _cookie, length = EVENT.unpack_from(buf, offset)
                name = buf[offset + EVENT.size:offset + EVENT.size + length].rstrip(b"\0").decode(errors="replace")
                offset += EVENT.size + length
                self._count(wd, mask, name)

    def _count(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self.overflows += 1
            return
        if mask & IN_IGNORED:
            self.dirs.pop(wd, None)
            return
        where = self.dirs.get(wd, self.root)
        path = where / name if name else where
        rel = os.path.relpath(path, self.root)
        if mask & IN_ISDIR:
            rel += "/"
            if mask & (IN_CREATE | IN_MOVED_TO):
                self._add(path)
        for bit, kind in KINDS:
            if mask & bit:
                self.counts[(rel, kind)] += 1

    def total(self) -> int:
        """Events counted so far."""
        return sum(self.counts.values())

    def close(self) -> None:
        """Drop the watches."""
        os.close(self.fd)


@dataclass
class Task:
    """One thread of the service as /proc shows it."""

    name: str
    voluntary: int
    involuntary: int


@dataclass
class Look:
    """The service at one moment."""

    at: float
    io: dict[str, int]
    status: dict[str, str]
    tasks: dict[int, Task]
    children: dict[int, dict[str, int]]
    rusage: list[int] | None = None  # nvcsw nivcsw oublock, then the same for reaped children
    wchan: dict[int, str] = field(default_factory=dict)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def _io(pid: int) -> dict[str, int]:
    return {k: int(v) for k, v in _fields(_read(f"/proc/{pid}/io")).items() if v.isdigit()}


def _tasks(pid: int) -> dict[int, Task]:
    tasks = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return {}
    for tid in tids:
        status = _fields(_read(f"/proc/{pid}/task/{tid}/status"))
        if "voluntary_ctxt_switches" not in status:
            continue  # ended meanwhile
        tasks[tid] = Task(_read(f"/proc/{pid}/task/{tid}/comm").strip() or "?",
                          int(status["voluntary_ctxt_switches"]), int(status["nonvoluntary_ctxt_switches"]))
    return tasks


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def look(pid: int, wchan: bool = False) -> Look:
    """/proc of the service and its children, now."""
    here = Look(time.monotonic(), _io(pid), _fields(_read(f"/proc/{pid}/status")), _tasks(pid),
                {child: _io(child) for child in descendants(pid)})
    if wchan:
        here.wchan = {tid: _read(f"/proc/{pid}/task/{tid}/wchan").strip() or "-" for tid in here.tasks}
    return here


class Rusage:
    """Asks bench/launch.py inside the service for getrusage() (SIGUSR2 -> one line on a pipe)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.buffer = b""

    def ask(self, pid: int, timeout: float = 5.0) -> list[int] | None:
        """The service's counters, or None when it does not answer within `timeout`."""
        try:
            os.kill(pid, signal.SIGUSR2)
        except ProcessLookupError:
            return None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                return None
            chunk = os.read(self.read_fd, 4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return [int(x) for x in line.split()]

    def close(self) -> None:
        """Close both ends."""
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def filesystem(path: Path) -> str:
    """The file system type holding `path` (tmpfs would hide every write_bytes)."""
    best, kind = "", "unknown"
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and str(path).startswith(parts[1].rstrip("/") + "/") and len(parts[1]) >= len(best):
            best, kind = parts[1], parts[2]
    return kind


def logins(log: Path, offset: int, tag: str) -> tuple[Counter[str], int]:
    """Dovecot's 'Login:' lines for this scenario's users after `offset`: per protocol; new offset."""
    counts: Counter[str] = Counter()
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return counts, offset
    end = offset + data.rfind(b"\n") + 1
    for line in data[:end - offset].decode(errors="replace").splitlines():
        if "-login: " in line and " Login: " in line and f"user=<{tag}" in line:
            counts["pop3" if "pop3-login" in line else "imap"] += 1
    return counts, end


def errors(log: Path, offset: int) -> tuple[list[str], int]:
    """SmartPop's ERROR lines in its log after `offset`; the new offset."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = offset + data.rfind(b"\n") + 1
    lines = data[:end - offset].decode(errors="replace").splitlines()
    return [line for line in lines if len(line.split(None, 3)) > 2 and line.split(None, 3)[2] == "ERROR"], end


@dataclass
class Threads:
    """Per-thread switch counts over the window, by /proc/PID/task, sampled."""

    first: dict[int, Task] = field(default_factory=dict)  # at the start (0 for threads born later)
    last: dict[int, Task] = field(default_factory=dict)  # the last look at each thread
    born: set[int] = field(default_factory=set)
    most: int = 0

    def start(self, tasks: dict[int, Task]) -> None:
        self.first = dict(tasks)
        self.last = dict(tasks)
        self.most = len(tasks)

    def see(self, tasks: dict[int, Task]) -> None:
        for tid, task in tasks.items():
            if tid not in self.first:
                self.first[tid] = Task(task.name, 0, 0)
                self.born.add(tid)
            self.last[tid] = task
        self.most = max(self.most, len(tasks))


def _accounts(bench: Bench, tag: str) -> list[dict[str, object]]:
    users, docs = [], []
    for i in range(POP3_ACCOUNTS + IMAP_ACCOUNTS):
        imap = i >= POP3_ACCOUNTS
        name = f"imap{i - POP3_ACCOUNTS + 1}" if imap else f"pop{i + 1}"
        user = f"{tag}{name}@{PROVIDER_DOMAIN}"
        local = f"{tag}{name}@{LOCAL_DOMAIN}"
        users += [(user, f"{name}-pw"), (local, "x")]
        over: dict[str, object] = {"mode": "single", "deliver_to": local, "interval": INTERVAL}
        if imap:
            over.update(protocol="imap", idle=True)
        docs.append(peers.account_doc(bench.stack, name, user, f"{name}-pw", **over))
    bench.stack.add_users([*users, (peers.FALLBACK, "x")])
    return docs


def run(bench: Bench, minutes: float, settle: float) -> str:
    """Start `serve`, let it settle, watch it for `minutes`; the markdown section."""
    from support.ports import free_ports

    tag = bench.tag("q")
    data = bench.scratch / tag
    peers.write_smartpop_config(bench.stack, data, _accounts(bench, tag), web_port=free_ports(1)[0])
    dovecot_log = bench.stack.root / "dovecot/dovecot.log"
    rusage = Rusage()
    env = dict(peers.smartpop_env(), BENCH_RUSAGE_FD=str(rusage.write_fd))
    server = proc.start([bench.smartpop_python, str(LAUNCH), "--data", str(data), "serve"], env=env,
                        log=bench.logs / f"{tag}-serve.log", pass_fds=(rusage.write_fd,))
    watch: DirWatch | None = None
    try:
        print(f"  quiet: `smartpop serve` (pid {server.pid}) with {POP3_ACCOUNTS} POP3S + {IMAP_ACCOUNTS} IMAP IDLE "
              f"accounts; settling {settle:.0f} s, then watching {minutes:g} min", flush=True)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and server.poll() is None:
            time.sleep(1)
        if server.poll() is not None:
            return _failed(minutes, f"`smartpop serve` exited with {server.returncode} while settling")
        watch = DirWatch(data)
        offset = dovecot_log.stat().st_size if dovecot_log.exists() else 0
        # Failed polls (a server that refuses, a broken home) would make a quiet service of a broken one.
        settle_errors, log_offset = errors(data / "smartpop.log", 0)
        usage_start = rusage.ask(server.pid)
        begin = look(server.pid)
        begin.rusage = usage_start
        threads = Threads()
        threads.start(begin.tasks)
        children_seen: dict[int, dict[str, int]] = {}
        end_at = begin.at + minutes * 60
        next_sample = begin.at + SAMPLE_EVERY
        next_report = begin.at + 60
        while time.monotonic() < end_at and server.poll() is None:
            watch.drain(min(next_sample, end_at) - time.monotonic())
            now = time.monotonic()
            if now >= next_sample:
                threads.see(_tasks(server.pid))
                for child in descendants(server.pid):
                    children_seen[child] = _io(child) or children_seen.get(child, {})
                next_sample = now + SAMPLE_EVERY
            if now >= next_report:
                print(f"    minute {(now - begin.at) / 60:.0f}/{minutes:g}: {watch.total()} inotify events under "
                      f"DATA, write_bytes +{_io(server.pid).get('write_bytes', 0) - begin.io.get('write_bytes', 0)}",
                      flush=True)
                next_report += 60
        if server.poll() is not None:
            return _failed(minutes, f"`smartpop serve` exited with {server.returncode} during the window")
        usage_end = rusage.ask(server.pid)
        end = look(server.pid, wchan=True)
        end.rusage = usage_end
        watch.drain(0)
        threads.see(end.tasks)
        polls, _ = logins(dovecot_log, offset, tag)
        window_errors, _ = errors(data / "smartpop.log", log_offset)
        python = machine.interpreter_version(bench.smartpop_python)
        report = _report(minutes, settle, begin, end, threads, watch, polls, children_seen, python,
                         filesystem(data))
        return report + _errors_note(settle_errors, window_errors)
    finally:
        if watch is not None:
            watch.close()
        proc.stop(server)
        rusage.close()
        if (data / "smartpop.log").exists():  # kept with --keep-logs: what the service said
            shutil.copyfile(data / "smartpop.log", bench.logs / f"{tag}-smartpop.log")


def _errors_note(settle: list[str], window: list[str]) -> str:
    """A warning when SmartPop logged errors: then the figures are those of failing polls."""
    if not settle and not window:
        return "\nSmartPop logged no error while settling or within the window: every poll worked.\n"
    first = (window or settle)[0].split(None, 2)[-1].replace("|", "/")[:200]
    return (f"\n**Warning: SmartPop logged {len(settle)} error(s) while settling and {len(window)} within the "
            f"window, so these are the figures of failing polls**, e.g. `{first}`\n")


def _failed(minutes: float, note: str) -> str:
    return "\n".join([_head(minutes), "", f"- {NA}: {note}", ""])


def _head(minutes: float) -> str:
    return (f"#### Quiet `smartpop serve`: {POP3_ACCOUNTS} POP3S accounts (interval {INTERVAL} s) + "
            f"{IMAP_ACCOUNTS} IMAP with IDLE, nothing new, {minutes:g} min")


def _per_hour(value: float, seconds: float) -> float:
    return value * 3600.0 / seconds if seconds > 0 else 0.0


def _report(minutes: float, settle: float, begin: Look, end: Look, threads: Threads, watch: DirWatch,
            polls: Counter[str], children_seen: dict[int, dict[str, int]], python: str, fs: str) -> str:
    seconds = end.at - begin.at
    per_min = 60.0 / seconds if seconds > 0 else 0.0

    # Bytes: the service itself (all its threads, ended ones included) ...
    written = end.io.get("write_bytes", 0) - begin.io.get("write_bytes", 0)
    wchar = end.io.get("wchar", 0) - begin.io.get("wchar", 0)
    cancelled = end.io.get("cancelled_write_bytes", 0) - begin.io.get("cancelled_write_bytes", 0)
    # ... plus its children: living ones from /proc, reaped ones from getrusage(RUSAGE_CHILDREN).
    kids_written = sum(io.get("write_bytes", 0) - begin.children.get(pid, {}).get("write_bytes", 0)
                       for pid, io in end.children.items())
    if begin.rusage and end.rusage:
        kids_written += (end.rusage[5] - begin.rusage[5]) * 512
    all_written = written + kids_written
    children = len(set(children_seen) | set(end.children) | set(begin.children))

    # Context switches: exact totals from getrusage inside the service, else the /proc threads.
    proc_vol = sum(threads.last[t].voluntary - threads.first[t].voluntary for t in threads.last)
    proc_invol = sum(threads.last[t].involuntary - threads.first[t].involuntary for t in threads.last)
    exact = bool(begin.rusage and end.rusage)
    vol = end.rusage[0] - begin.rusage[0] if begin.rusage and end.rusage else proc_vol
    invol = end.rusage[1] - begin.rusage[1] if begin.rusage and end.rusage else proc_invol
    total_polls = sum(polls.values())
    events = watch.total()
    rss = _kb(end.status.get("VmRSS"))
    hwm = _kb(end.status.get("VmHWM"))

    per_poll = f"{vol / total_polls:.1f}" if total_polls else NA
    own = _long_lived(threads, end)
    own_per_poll = f"{own / total_polls:.1f}" if total_polls else NA
    worker_per_poll = f"{(vol - own) / total_polls:.1f}" if total_polls else NA
    expected_polls = POP3_ACCOUNTS * seconds / INTERVAL
    rows = [
        ["bytes written by SmartPop (write_bytes)",
         f"**{_per_hour(all_written, seconds):,.0f} B/h** ({all_written:,} B in {seconds / 60:.1f} min"
         + (f"; children {kids_written:,} B" if kids_written else "") + ")",
         "0 B to DATA between two hourly flushes"],
        ["write() calls' bytes (wchar: files, pipes, sockets)",
         f"{_per_hour(wchar, seconds):,.0f} B/h ({wchar:,} B)", "-"],
        ["inotify events on files under DATA", f"**{_per_hour(events, seconds):,.0f}/h** ({events} in the window"
         + (f"; {watch.overflows} queue overflows" if watch.overflows else "") + ")", "0"],
        ["polls: Dovecot logins (POP3 / IMAP)", f"{total_polls} ({polls.get('pop3', 0)} / {polls.get('imap', 0)}); "
         f"{total_polls * per_min:.1f}/min", f"POP3 {expected_polls:.0f} ({POP3_ACCOUNTS}/min); IMAP 0 with IDLE"],
        ["inotify events per poll", f"{events / total_polls:.1f}" if total_polls else NA, "0"],
        ["voluntary context switches / min (all threads)", f"**{vol * per_min:,.0f}**" + ("" if exact else " (/proc)"),
         f"a few per poll: <= {FEW_PER_POLL * POP3_ACCOUNTS * 60 / INTERVAL:.0f}"],
        ["voluntary context switches per poll (all threads)", f"**{per_poll}**", "-"],
        ["... of them in long-lived threads (scheduler, web loop, alert watcher)", f"**{own_per_poll}**",
         f"a few (<= {FEW_PER_POLL})"],
        ["... of them in the poll's own worker thread (one per network round trip)", worker_per_poll, "-"],
        ["involuntary context switches / min", f"{invol * per_min:,.0f}", "-"],
        ["threads (start / end / most seen)", f"{len(begin.tasks)} / {len(end.tasks)} / {threads.most}", "-"],
        ["RSS at the end (VmRSS / VmHWM; of VmRSS: RssAnon, RssFile)",
         f"**{_mb(rss)} MB** / {_mb(hwm)} MB; {_mb(_kb(end.status.get('RssAnon')))} MB, "
         f"{_mb(_kb(end.status.get('RssFile')))} MB",
         f"< {RSS_LIMIT_MB:.0f} MB under Python 3.8"],
        ["Python running SmartPop", python, "3.8 (DSM 7)"],
    ]
    out = [_head(minutes), "",
           f"Window of {seconds / 60:.1f} min after {settle:.0f} s of settling; DATA on {fs}; "
           f"{children} child process(es) seen.", "",
           table(["figure", "value", "target"], rows), ""]

    verdicts = [
        f"- DATA written within the window: {all_written:,} B, {events} inotify events (target 0) -> "
        + ("met" if all_written == 0 and events == 0 else "NOT met"),
        f"- voluntary context switches per poll in SmartPop's long-lived threads: {own_per_poll} (target a few, "
        f"<= {FEW_PER_POLL}) -> " + ("met" if total_polls and own / total_polls <= FEW_PER_POLL else "NOT met")
        + f"; all threads: {per_poll} per poll, {worker_per_poll} of them the poll's network round trips",
    ]
    tickers = _tickers(threads, end, seconds, total_polls)
    verdicts.append("- no periodic tick (no thread that lived through the window woke more than "
                    f"{TICK_PER_POLL} times per poll): " + ("met" if not tickers else "NOT met: " + ", ".join(tickers)))
    under = rss is not None and rss / 1024 < RSS_LIMIT_MB
    verdicts.append(f"- RSS {_mb(rss)} MB under Python {python} (target < {RSS_LIMIT_MB:.0f} MB under 3.8) -> "
                    + ("met" if under else "NOT met") + ("" if python.startswith("3.8.") else
                                                         " (not a 3.8 run: pass --smartpop-python)"))
    if cancelled:
        verdicts.append(f"- cancelled_write_bytes (dirty pages truncated or deleted before writeback): {cancelled:,} B")
    if exact and proc_vol != vol:
        verdicts.append(f"- of the {vol:,} voluntary switches, {vol - proc_vol:,} were in threads that ended between "
                        f"two looks ({SAMPLE_EVERY:.0f} s apart)")
    if not exact:
        verdicts.append("- getrusage from inside the service not available: switches summed from /proc "
                        "(threads that ended between two looks are missing)")
    out += [*verdicts, ""]
    out += [_thread_table(threads, end, seconds), "", _file_table(watch, seconds), ""]
    return "\n".join(out)


def _tickers(threads: Threads, end: Look, seconds: float, polls: int) -> list[str]:
    """Threads alive through the window that woke more often than the polls explain."""
    names = []
    for tid, last in threads.last.items():
        if tid in threads.born or tid not in end.tasks or seconds <= 0:
            continue
        woke = last.voluntary - threads.first[tid].voluntary
        rate = woke * 60.0 / seconds
        if (polls and woke / polls > TICK_PER_POLL) or (not polls and rate >= TICK_PER_MIN):
            names.append(f"{last.name} {rate:.0f}/min ({woke / polls:.1f} per poll)" if polls
                         else f"{last.name} {rate:.0f}/min")
    return names


def _long_lived(threads: Threads, end: Look) -> int:
    """Voluntary switches in the threads that lived through the window."""
    return sum(last.voluntary - threads.first[tid].voluntary for tid, last in threads.last.items()
               if tid not in threads.born and tid in end.tasks)


def _thread_table(threads: Threads, end: Look, seconds: float) -> str:
    """Switches by thread name (threads of the same name, e.g. one worker per poll, summed)."""
    by_name: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    states: dict[str, Counter[str]] = defaultdict(Counter)
    for tid, last in threads.last.items():
        row = by_name[last.name]
        row[0] += 1
        row[1] += last.voluntary - threads.first[tid].voluntary
        row[2] += last.involuntary - threads.first[tid].involuntary
        row[3] += tid in end.tasks
        if tid in end.wchan:
            states[last.name][end.wchan[tid]] += 1
    per_min = 60.0 / seconds if seconds > 0 else 0.0
    rows = []
    for name, (count, vol, invol, alive) in sorted(by_name.items(), key=lambda kv: (-kv[1][1], kv[0])):
        every = f"{60.0 / (vol * per_min):.1f}" if vol else "-"
        waits = ", ".join(f"{w}" + (f" x{n}" if n > 1 else "") for w, n in states[name].most_common())
        rows.append([name, f"{count} ({alive} at the end)", f"{vol * per_min:.1f}", every,
                     f"{invol * per_min:.1f}", waits or "-"])
    head = ["thread (OS name)", "threads seen", "voluntary / min", "one per (s)", "involuntary / min",
            "waiting in (kernel, at the end)"]
    return "\n".join([f"Context switches by thread (sampled every {SAMPLE_EVERY:.0f} s; threads that start and end "
                      "between two looks are only in the total):", "", table(head, rows)])


def _file_table(watch: DirWatch, seconds: float) -> str:
    """What was written under DATA, by file."""
    per_file: dict[str, Counter[str]] = defaultdict(Counter)
    for (path, kind), n in watch.counts.items():
        per_file[path][kind] += n
    if not per_file:
        return "Files under DATA written within the window: none."
    ordered = sorted(per_file.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    rows = []
    for path, kinds in ordered[:FILE_ROWS]:
        total = sum(kinds.values())
        rows.append([f"`{path}`", str(total), f"{_per_hour(total, seconds):,.0f}",
                     ", ".join(f"{k} {n}" for k, n in kinds.most_common())])
    more = f"\n\n{len(ordered) - FILE_ROWS} more file(s)." if len(ordered) > FILE_ROWS else ""
    return "\n".join(["Files under DATA written within the window (inotify):", "",
                      table(["file", "events", "per hour", "kinds"], rows)]) + more


def _kb(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value.split()[0])
    except ValueError:
        return None


def _mb(kb: int | None) -> str:
    return NA if kb is None else f"{kb / 1024:.1f}"

