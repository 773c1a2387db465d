"""The mail trail: what happened to every collected message, and charts of it."""
