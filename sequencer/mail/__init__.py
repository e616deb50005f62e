"""The only code that speaks mail protocols: SMTP sending and IMAP watching."""
