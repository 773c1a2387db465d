"""Mail health: DNS (MX, SPF, DMARC, DKIM), relay login and certificate checks (docs/HEALTH.md).

Small I/O helpers (dnsquery, probes) return plain result objects; the checks (checks.py) are
pure functions over those results; service.run_all() ties them together for the CLI and the web.
"""
