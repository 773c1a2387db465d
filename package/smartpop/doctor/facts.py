"""The doctor's facts: pure functions from a probe snapshot (plain data) to facts.

Each fact has an id, a title, a value, a status (ok, warn or unknown) and one sentence that
says what it means for SmartPop. Outside DSM every DSM fact reads NOT_DSM with status unknown.
How MailPlus's Postfix settings are read (restriction lists, master.cf) is postconf.py's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from smartpop.doctor.postconf import (
    RESTRICTION_LISTS,
    effective_filters,
    listener_for_port,
    network_covers,
    skipped_for_mynetworks,
)

OK = "ok"
WARN = "warn"
UNKNOWN = "unknown"
NOT_DSM = "not on a DSM NAS"


@dataclass
class Fact:
    """One observed fact and whether it holds."""

    id: str
    title: str
    value: str
    status: str
    note: str


def _fact(facts: List[Fact], id_: str, title: str, value: Any, status: str, note: str) -> None:
    facts.append(Fact(id_, title, "" if value is None else str(value), status, note))


def parse_properties(text: Optional[str]) -> Dict[str, str]:
    """key="value" lines (DSM's /etc.defaults/VERSION, a package INFO) as a dict."""
    result: Dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            result[key.strip()] = value.strip().strip('"')
    return result


def dsm_version(text: Optional[str]) -> Tuple[str, Optional[int]]:
    """'7.2.1-69057 Update 5' and the major version from /etc.defaults/VERSION's text."""
    props = parse_properties(text)
    version = props.get("productversion") or ".".join(
        p for p in (props.get("majorversion"), props.get("minorversion")) if p)
    if props.get("buildnumber"):
        version += "-" + props["buildnumber"]
    if props.get("smallfixnumber") not in (None, "", "0"):
        version += " Update " + props["smallfixnumber"]
    major = props.get("majorversion", "")
    return version, int(major) if major.isdigit() else None



def _loopback(host: str) -> Optional[str]:
    if host in ("localhost", "127.0.0.1", "::1"):
        return "::1" if host == "::1" else "127.0.0.1"
    return None


def _dsm_facts(snap: Mapping[str, Any], facts: List[Fact]) -> None:
    on_dsm = bool(snap.get("on_dsm"))
    if not on_dsm:
        for id_, title in (("dsm_version", "DSM version"), ("mailplus_version", "MailPlus Server version")):
            _fact(facts, id_, title, NOT_DSM, UNKNOWN, "Run `smartpop doctor` on the NAS to see this.")
        return
    version, major = dsm_version(snap.get("dsm_version_file"))
    if not version:
        _fact(facts, "dsm_version", "DSM version", "unreadable", UNKNOWN, "/etc.defaults/VERSION could not be read.")
    elif major is not None and major < 7:
        _fact(facts, "dsm_version", "DSM version", version, WARN, "SmartPop needs DSM 7 or newer.")
    else:
        _fact(facts, "dsm_version", "DSM version", version, OK, "A DSM 7 system, as SmartPop expects.")
    info = parse_properties(snap.get("mailplus_info"))
    if info.get("version"):
        _fact(facts, "mailplus_version", "MailPlus Server version", info["version"], OK,
              "MailPlus Server is installed; SmartPop delivers into it.")
    else:
        _fact(facts, "mailplus_version", "MailPlus Server version", "not installed", WARN,
              "SmartPop hands collected mail to MailPlus Server: install it from Package Center.")


def _python_facts(snap: Mapping[str, Any], facts: List[Fact]) -> None:
    python = snap.get("python") or {}
    version = str(python.get("version", ""))
    parts = version.split(".")
    old = len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit() and (int(parts[0]), int(parts[1])) < (3, 8)
    _fact(facts, "python", "Interpreter running SmartPop", f"{python.get('executable')} (Python {version})",
          WARN if old else OK, "SmartPop needs Python 3.8 or newer (DSM 7 ships 3.8).")
    system = snap.get("system_python") or {}
    if system.get("version"):
        root_owned = system.get("uid") == 0
        _fact(facts, "system_python", "Root task interpreter", f"{system.get('path')} (Python {system['version']})",
              OK if root_owned else WARN,
              "The relay's root task runs this interpreter isolated (-I -S)"
              + ("." if root_owned else "; it is not owned by root, so the root task should not trust it."))
    else:
        _fact(facts, "system_python", "Root task interpreter", f"{system.get('path')} missing",
              WARN if snap.get("on_dsm") else UNKNOWN,
              "The relay's root task line starts with this interpreter; without it the relay cannot be applied.")


def _users_facts(snap: Mapping[str, Any], facts: List[Fact]) -> None:
    proc = snap.get("process") or {}
    data = snap.get("data") or {}
    owner = data.get("user")
    _fact(facts, "doctor_user", "User running this doctor", proc.get("user"), OK,
          "Root may run the doctor too; it only reads.")
    service = snap.get("service") or {}
    if service.get("user") is None:
        _fact(facts, "service_user", "User running the service", "not running", UNKNOWN,
              "The SmartPop service (smartpop serve) is not running, so its user is not known.")
    else:
        same = service.get("user") == owner
        _fact(facts, "service_user", "User running the service", f"{service.get('user')} (pid {service.get('pid')})",
              OK if same else WARN, "The service must run as the owner of the data directory"
              + ("." if same else f" ({owner}): it cannot write its files otherwise."))
    cgi = snap.get("cgi") or {}
    if not cgi:
        _fact(facts, "cgi_user", "User running index.cgi", "no request recorded yet", UNKNOWN,
              "Open SmartPop from the DSM desktop once; index.cgi then records who runs it.")
    else:
        same = cgi.get("user") == owner
        _fact(facts, "cgi_user", "User running index.cgi", cgi.get("user"), OK if same else WARN,
              "DSM runs the app's CGI as this user; it must be the package user to reach the backend's socket"
              + ("." if same else f" (the data directory belongs to {owner})."))


def _mode(entry: Mapping[str, Any]) -> str:
    return f"{entry.get('user')} {entry.get('mode')}"


def _files_facts(snap: Mapping[str, Any], facts: List[Fact]) -> None:
    target = snap.get("target") or {}
    _fact(facts, "target", "Package code (target/)", f"{target.get('path')}: {_mode(target)}", OK,
          "DSM gives target/ to the package user, so root never runs code from it unverified.")
    data = snap.get("data") or {}
    if not data.get("exists"):
        _fact(facts, "data", "Data directory", f"{data.get('path')}: missing", WARN,
              "The data directory does not exist: reinstall SmartPop, or pass --data.")
        return
    mode = int(str(data.get("mode") or "0"), 8)
    open_to_others = bool(mode & 0o022)
    _fact(facts, "data", "Data directory", f"{data.get('path')}: {_mode(data)}", WARN if open_to_others else OK,
          "Others can write to it: the DSM CGI refuses to talk to the backend until it is closed (chmod go-w)."
          if open_to_others else "No other user can write to it.")
    foreign = [f"{f['name']} ({f['user']} {f['mode']})" for f in snap.get("data_files") or []
               if f.get("user") != data.get("user") and f.get("name") != "relay/state"]
    _fact(facts, "data_files", "Files in the data directory owned by others", ", ".join(foreign) or "none",
          WARN if foreign else OK,
          f"They lock the package out: chown -R {data.get('user')} {data.get('path')}" if foreign
          else "Every file SmartPop writes belongs to the data directory's owner (relay/state is root's).")


def _config_fact(snap: Mapping[str, Any], facts: List[Fact]) -> None:
    config = snap.get("config") or {}
    if config.get("ok"):
        _fact(facts, "config", "config.json", f"valid, {config.get('accounts')} account(s)", OK,
              "The configuration loads; `smartpop check` tests the accounts.")
    else:
        _fact(facts, "config", "config.json", config.get("error") or "unreadable", WARN,
              "Fix this first: nothing else works without a valid configuration.")


def _postfix_facts(snap: Mapping[str, Any], facts: List[Fact]) -> None:
    postfix = snap.get("postfix") or {}
    directory = postfix.get("dir")
    if not directory:
        _fact(facts, "postfix_dir", "MailPlus's Postfix configuration", NOT_DSM, UNKNOWN,
              "On the NAS this is /var/packages/MailPlus-Server/target/etc.")
    else:
        present = [name for name in ("main.cf", "master.cf") if postfix.get(name)]
        _fact(facts, "postfix_dir", "MailPlus's Postfix configuration", f"{directory}: {', '.join(present) or 'empty'}",
              OK if len(present) == 2 else WARN,
              "The relay patches main.cf (and master.cf for per-sender TLS relays) here."
              if len(present) == 2 else "main.cf or master.cf is missing: the relay cannot be applied.")
    customize = snap.get("customize") or {}
    if not snap.get("on_dsm"):
        _fact(facts, "customize", "MailPlus customize override", NOT_DSM, UNKNOWN,
              "On the NAS: /var/packages/MailPlus-Server/etc/customize/postfix.")
    else:
        found = [name for name, there in sorted(customize.get("files", {}).items()) if there]
        exists = customize.get("exists")
        shown = f"{customize.get('path')}: " + (", ".join(found) or "empty") if exists else "absent"
        _fact(facts, "customize", "MailPlus customize override", shown, OK if exists else UNKNOWN,
              "One community source says MailPlus keeps this override across restarts; not confirmed by Synology."
              if exists else "Not present on this NAS: the relay's settings live in main.cf, re-applied after drift.")


def _protection_facts(snap: Mapping[str, Any], facts: List[Fact]) -> None:
    postconf = snap.get("postconf") or {}
    delivery = snap.get("delivery") or {}
    host, port = str(delivery.get("host") or "127.0.0.1"), int(delivery.get("port") or 25)
    title = "MailPlus's filters for collected mail"
    if not postconf.get("params"):
        reason = postconf.get("error") or NOT_DSM
        for id_, name in (("filters", title), ("mynetworks", "Is SmartPop a trusted client (mynetworks)?"),
                          ("skipped_checks", "Checks skipped for collected mail")):
            _fact(facts, id_, name, reason, UNKNOWN,
                  "Needs MailPlus's postconf; on the NAS the doctor reads it from MailPlus's Postfix.")
        return
    params: Mapping[str, str] = postconf["params"]
    key, shown = listener_for_port(postconf.get("master") or [], port)
    filters = effective_filters(params, postconf.get("services") or {}, key)
    active = {name: value for name, value in filters.items() if value.strip()}
    where = f"port {port}, {shown or 'no master.cf service found'}"
    if active:
        _fact(facts, "filters", title, "; ".join(f"{k} = {v}" for k, v in active.items()) + f" ({where})", OK,
              "Postfix passes mail from every SMTP client, 127.0.0.1 included, through these, so MailPlus's "
              "spam and virus scanning sees collected mail (if that is where MailPlus hooks it in).")
    else:
        _fact(facts, "filters", title, f"no content_filter and no smtpd_milters ({where})", WARN,
              "Collected mail reaches the mailboxes without a spam or virus check by this Postfix: keep the "
              "provider's spam and virus filter on, and check MailPlus's Security settings.")
    client = _loopback(host)
    mynetworks = params.get("mynetworks", "")
    trusted = network_covers(mynetworks, client) if client else None
    skipped: List[str] = []
    if trusted is not False:
        for name in RESTRICTION_LISTS:
            skipped += [f"{name}: {item}" for item in skipped_for_mynetworks(params.get(name, ""))]
    if client is None:
        _fact(facts, "mynetworks", "Is SmartPop a trusted client (mynetworks)?", f"delivery.host {host}", UNKNOWN,
              "SmartPop delivers to another host; whether its address is in mynetworks is not checked.")
    elif trusted is None:
        _fact(facts, "mynetworks", "Is SmartPop a trusted client (mynetworks)?", f"cannot tell: mynetworks = "
              f"{mynetworks}", UNKNOWN, "mynetworks names a table the doctor cannot read.")
    else:
        _fact(facts, "mynetworks", "Is SmartPop a trusted client (mynetworks)?",
              f"{'yes' if trusted else 'no'}: mynetworks = {mynetworks}", WARN if skipped else OK,
              f"Mail from SmartPop ({client}) counts as trusted: checks after permit_mynetworks are skipped for it."
              if trusted else "Mail from SmartPop meets the same checks as mail from outside.")
    _fact(facts, "skipped_checks", "Checks skipped for collected mail", "; ".join(skipped) or "none",
          WARN if skipped else OK,
          "These sender and client checks never see collected mail, because it comes from a trusted "
          "address; the provider's own checks ran on the real sender." if skipped else
          "No restriction that MailPlus applies to incoming mail is skipped for mail from SmartPop.")


def _auth_facts(snap: Mapping[str, Any], facts: List[Fact]) -> None:
    dsm = snap.get("dsm_cgis") or {}
    cgi = snap.get("cgi") or {}
    if not snap.get("on_dsm"):
        _fact(facts, "authenticate_cgi", "DSM login check (authenticate.cgi)", NOT_DSM, UNKNOWN,
              "On the NAS index.cgi asks authenticate.cgi who is logged in.")
        _fact(facts, "synotoken", "SynoToken (login.cgi in the browser)", NOT_DSM, UNKNOWN,
              "On the NAS the page takes DSM's SynoToken in the browser.")
        return
    present = bool(dsm.get("authenticate.cgi"))
    result = cgi.get("result")
    if not present:
        _fact(facts, "authenticate_cgi", "DSM login check (authenticate.cgi)", "missing", WARN,
              "index.cgi cannot check DSM sessions: nobody can open the app.")
    elif not cgi:
        _fact(facts, "authenticate_cgi", "DSM login check (authenticate.cgi)", "present, not used yet", UNKNOWN,
              "Open SmartPop from the DSM desktop once, then run the doctor again.")
    else:
        good = result == "admin"
        _fact(facts, "authenticate_cgi", "DSM login check (authenticate.cgi)",
              f"last request {cgi.get('time')}: {result}", OK if good else WARN,
              "authenticate.cgi named an administrator." if good else
              "The last request was refused (no DSM session, or not an administrator); see the app's message.")
    token = cgi.get("token")
    how = {"header": "sent by the page as a header", "url": "in the page's URL (fetched in the browser)",
           "none": "none: the CGI served the page that asks DSM's login.cgi for it in the browser"}
    login = "present" if dsm.get("login.cgi") else "missing"
    _fact(facts, "synotoken", "SynoToken (login.cgi in the browser)",
          how.get(str(token), "no request recorded yet") + "; login.cgi " + login,
          OK if token in ("header", "url") else UNKNOWN,
          "DSM's CSRF token reached index.cgi from the browser." if token in ("header", "url") else
          "If the app keeps showing 'Please sign in', DSM did not give the page a SynoToken.")


def _relay_facts(snap: Mapping[str, Any], facts: List[Fact]) -> None:
    ca = snap.get("ca") or {}
    if ca.get("file"):
        _fact(facts, "ca_bundle", "CA bundle", f"{ca['file']} ({ca.get('count')} CAs in Python's default store)",
              OK if ca.get("count") else WARN, "Providers' certificates are verified against it (collector and relay).")
    else:
        _fact(facts, "ca_bundle", "CA bundle", ca.get("error") or "none found", WARN,
              "Without a CA bundle no TLS connection to a provider can be verified.")
    relay = snap.get("relay") or {}
    state = relay.get("task_state")
    enabled = bool(relay.get("enabled"))
    notes = {"current": (OK, "The root task runs this version's relay code."),
             "outdated": (WARN if enabled else UNKNOWN, "The root task's command is from another version: paste the "
                                                         "line from SmartPop > Relay into the task."),
             "never": (WARN if enabled else OK, "The root task has not run yet"
                       + (": create it in Task Scheduler." if enabled else " (the relay is off).")),
             "unavailable": (WARN if enabled or snap.get("on_dsm") else UNKNOWN,
                             "This installation has no relay bundle (a source tree has none; on the NAS, "
                             "reinstall SmartPop).")}
    status, note = notes.get(str(state), (UNKNOWN, relay.get("error") or "The relay state could not be read."))
    value = str(state or "unknown")
    if relay.get("task_version"):
        value += f" (last run {relay.get('task_last_run')}, SmartPop {relay.get('task_version')})"
    _fact(facts, "root_task", "Relay root task matches this version", value, status, note)


def build_facts(snap: Mapping[str, Any]) -> List[Fact]:
    """Every fact, in the order a bug report reads best."""
    facts: List[Fact] = []
    _fact(facts, "smartpop", "SmartPop version", snap.get("smartpop_version"), OK, "The version this report is about.")
    _dsm_facts(snap, facts)
    _python_facts(snap, facts)
    _users_facts(snap, facts)
    _files_facts(snap, facts)
    _config_fact(snap, facts)
    _postfix_facts(snap, facts)
    _auth_facts(snap, facts)
    _relay_facts(snap, facts)
    _protection_facts(snap, facts)
    return facts


def report(snap: Mapping[str, Any]) -> Dict[str, Any]:
    """The JSON form: facts plus a count per status."""
    facts = build_facts(snap)
    counts = {status: sum(1 for f in facts if f.status == status) for status in (OK, WARN, UNKNOWN)}
    return {"smartpop_version": snap.get("smartpop_version"), "on_dsm": bool(snap.get("on_dsm")),
            "counts": counts, "facts": [asdict(f) for f in facts]}


def format_text(data: Mapping[str, Any]) -> str:
    """The report as lines for a terminal or a bug report."""
    lines = [f"SmartPop doctor ({data['smartpop_version']}): {data['counts'][OK]} ok, {data['counts'][WARN]} warn, "
             f"{data['counts'][UNKNOWN]} unknown"]
    for fact in data["facts"]:
        lines.append(f"[{fact['status'].upper():7}] {fact['title']}: {fact['value']}")
        lines.append(f"          {fact['note']}")
    return "\n".join(lines)


def protection_summary(data: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The facts the overview shows about MailPlus's protection of collected mail."""
    return [f for f in data["facts"] if f["id"] in ("filters", "mynetworks", "skipped_checks")]
