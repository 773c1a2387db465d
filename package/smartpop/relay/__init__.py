"""Smart relay: patch MailPlus's Postfix for authenticated TLS relaying, reversibly."""
