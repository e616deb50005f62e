"""Mailboxes at run time: secrets resolved from the environment or files, one SMTP pool each."""

from __future__ import annotations

from collections.abc import Mapping

from sequencer.core.config import MailboxConfig, ProjectConfig
from sequencer.core.errors import ConfigError
from sequencer.core.mailbox_config import ServerConfig
from sequencer.mail.credentials import resolve_secret
from sequencer.mail.smtp import SmtpPool, SmtpSettings


def smtp_settings(box: MailboxConfig, env: Mapping[str, str] | None = None) -> SmtpSettings:
    server: ServerConfig | None = box.smtp
    if server is None:
        raise ConfigError(
            f"mailbox {box.address} has no `smtp:` settings in sequencer.yaml; add host, port, "
            "security and password_env (see docs/mailboxes.md)"
        )
    what = f"mailbox {box.address} smtp"
    token = resolve_secret(server.oauth2_token_env, server.oauth2_token_file, what=what, env=env)
    password = None
    if token is None:
        password = resolve_secret(server.password_env, server.password_file, what=what, env=env)
    return SmtpSettings(
        host=server.host,
        port=server.port,
        security=server.security,
        username=server.username if (password or token) else None,
        password=password,
        oauth2_token=token,
        timeout=server.timeout,
    )


class Mailboxes:
    """The SMTP pools of a project's mailboxes, created on first use."""

    def __init__(self, config: ProjectConfig | None, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = env
        self._pools: dict[str, SmtpPool] = {}

    def box(self, address: str) -> MailboxConfig | None:
        return self.config.mailbox(address) if self.config else None

    def pool(self, address: str) -> SmtpPool:
        """The pool for a configured mailbox; ConfigError when it cannot be used."""
        if address not in self._pools:
            box = self.box(address)
            if box is None:
                raise ConfigError(f"mailbox {address} is not configured in sequencer.yaml")
            self._pools[address] = SmtpPool(
                smtp_settings(box, self.env),
                name=address,
                reload=lambda: smtp_settings(box, self.env),
            )
        return self._pools[address]

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
