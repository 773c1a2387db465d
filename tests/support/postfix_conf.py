"""The one writer of main.cf and master.cf for the tests' private Postfix instances, and their start and stop.

Each instance (MailStack's MailPlus stand-in, the relay tests' RelayPostfix, the "nothing
leaves" OutboundPostfix) lives under its own base dir: etc/ (main.cf, master.cf), queue/,
data/ and postfix.log. What every instance shares is written here once; each rig passes only
the smtpd listeners and the main.cf lines that make it what it is.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# {smtp_bind}: the instance's own smtpd listeners (one or more master.cf lines).
MASTER_CF = """\
{smtp_bind}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# main.cf lines every instance starts with ({base}: the instance's base dir).
COMMON_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {base}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, /tmp
# no DNS on the test machine: host names (localhost) come from /etc/hosts
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
biff = no
"""


def write_postfix_config(base: Path, smtp_bind: str, settings: str, comment: str = "") -> Path:
    """Create `base`'s etc/, queue/ and data/, write etc/main.cf and etc/master.cf, and return etc/.

    main.cf is `# comment` (if any), COMMON_MAIN_CF, then `settings` (the instance's own lines;
    a parameter set again there wins, as Postfix reads the last one).
    """
    etc = base / "etc"
    for sub in ("etc", "queue", "data"):
        (base / sub).mkdir(parents=True)
    shutil.chown(base / "data", "postfix", "postfix")
    (etc / "master.cf").write_text(MASTER_CF.format(smtp_bind=smtp_bind))
    head = f"# {comment}\n" if comment else ""
    (etc / "main.cf").write_text(head + COMMON_MAIN_CF.format(base=base) + settings)
    return etc


def start_postfix(etc: Path) -> None:
    """`postfix start` on the instance of `etc`; RuntimeError (with `postfix check`'s findings) if it fails."""
    proc = subprocess.run(["postfix", "-c", str(etc), "start"], capture_output=True, text=True)
    if proc.returncode != 0:
        # postfix check reports to a terminal only, hence script(1).
        check = subprocess.run(["script", "-qec", f"postfix -c {etc} check", "/dev/null"],
                               capture_output=True, text=True)
        raise RuntimeError(f"postfix did not start: {proc.stderr} {check.stdout}")


def stop_postfix(base: Path) -> None:
    """Stop the instance under `base` if its master runs (the caller removes the directory)."""
    if (base / "queue/pid/master.pid").exists():
        subprocess.run(["postfix", "-c", str(base / "etc"), "stop"], capture_output=True)
