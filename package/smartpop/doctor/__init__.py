"""`smartpop doctor`: every platform fact SmartPop relies on, and whether it holds on this machine.

probes.py gathers raw observations (files, stat, postconf; read-only, never raises); facts.py
turns them into facts, pure logic (postconf.py reads the Postfix settings for it); command.py
prints them as text or JSON. Nothing secret is gathered: no password, web.secret, SynoToken or
DSM user name ever enters a snapshot.
"""
