"""Checks shared by the SMTP and IMAP server settings: security mode, host, port, timeout."""

from __future__ import annotations

import re

from sequencer.core.errors import ConfigError
from sequencer.core.mailbox_config import Security

NOT_IN_HOSTNAME = re.compile(r"[\s\x00-\x1f\x7f]")


def check_server(
    protocol: str, host: str, port: int, security: Security | str, timeout: float
) -> Security:
    """Validate the parts every mail server setting has; returns ``security`` as the enum.
    ``protocol`` is "SMTP" or "IMAP", for the messages."""
    where = f"{protocol} server {host}:{port}"
    try:
        mode = Security(security)
    except ValueError:
        choices = ", ".join(repr(s.value) for s in Security)
        raise ConfigError(f"{where}: security {security!r} is not one of {choices}") from None
    if not host or NOT_IN_HOSTNAME.search(host):
        raise ConfigError(
            f"{protocol} host {host!r} is not a host name; set e.g. {protocol.lower()}.gmail.com"
        )
    if not 0 < port < 65536:
        raise ConfigError(f"{where}: the port must be between 1 and 65535")
    if timeout <= 0:
        raise ConfigError(f"{where}: the timeout must be more than 0 seconds")
    return mode
