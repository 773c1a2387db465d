"""Smart POP: collect provider mail (POP3/IMAP) and hand it to MailPlus over SMTP.

Public entry points live in `service` (library API) and `commands` (CLI).
"""
