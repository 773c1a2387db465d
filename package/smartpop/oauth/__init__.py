"""OAuth2 sign-in (XOAUTH2) for Microsoft 365 / Outlook.com and Google mailboxes; see docs/OAUTH2.md."""
