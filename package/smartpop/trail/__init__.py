"""The mail trail: what happened to each collected message, kept for a while and searchable (docs/TRAIL.md)."""
