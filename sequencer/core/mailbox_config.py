"""How a mailbox connects and how fast it may send: server settings, secrets by reference, caps."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from sequencer.core.delays import Delay, DelayUnit
from sequencer.core.yamlnodes import Node, YamlReader, describe

SERVER_KEYS = (
    "host",
    "port",
    "security",
    "username",
    "password_env",
    "password_file",
    "oauth2_token_env",
    "oauth2_token_file",
    "timeout",
)
IMAP_EXTRA_KEYS = ("folders", "sent_folder", "save_to_sent")
SECRET_KEYS = ("password", "oauth2_token", "token", "secret", "pass")
SENDING_KEYS = (
    "company_daily_limit",
    "bounce_pause_threshold",
    "max_attempts",
    "retry_after",
)
_E = TypeVar("_E", bound=StrEnum)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Security(StrEnum):
    TLS = "tls"  # implicit TLS (SMTP 465, IMAP 993)
    STARTTLS = "starttls"  # plain then upgraded (SMTP 587, IMAP 143)
    NONE = "none"  # unencrypted: only for a local development server


class UnknownOutcome(StrEnum):
    """What to do when the connection died after DATA and delivery is unknown."""

    HOLD = "hold"  # surface it to a human; never resend by itself
    CHECK_SENT_FOLDER = "check_sent_folder"  # look for the Message-ID in the Sent folder
    RESEND = "resend"  # resend (same Message-ID, so a duplicate threads as one)


@dataclass(frozen=True)
class ServerConfig:
    """One SMTP or IMAP server. Secrets are named (environment variable or file), never held."""

    host: str
    port: int
    security: Security
    username: str
    password_env: str | None = None
    password_file: str | None = None
    oauth2_token_env: str | None = None
    oauth2_token_file: str | None = None
    timeout: float = 30.0
    folders: tuple[str, ...] = ("INBOX",)  # IMAP: folders to watch
    sent_folder: str | None = None  # IMAP: where the provider keeps sent mail
    save_to_sent: bool = False  # IMAP: append a copy of each sent email to sent_folder


@dataclass(frozen=True)
class SendingLimits:
    """Limits that protect a mailbox's reputation and the prospects' patience."""

    daily_cap: int = 200  # emails per rolling 24 hours
    min_spacing: Delay = field(default_factory=lambda: Delay(1, DelayUnit.MINUTES))
    unknown_outcome: UnknownOutcome = UnknownOutcome.HOLD


@dataclass(frozen=True)
class SendingPolicy:
    """Project-wide sending rules (``sending:`` in sequencer.yaml)."""

    company_daily_limit: int | None = 3  # emails per company (domain) per rolling 24 hours
    bounce_pause_threshold: float = 0.05  # pause a mailbox above this 24-hour bounce rate
    max_attempts: int = 5  # tries for a temporary (4xx) failure before giving up
    retry_after: Delay = field(default_factory=lambda: Delay(5, DelayUnit.MINUTES))


DEFAULT_PORTS = {
    ("smtp", Security.TLS): 465,
    ("smtp", Security.STARTTLS): 587,
    ("smtp", Security.NONE): 25,
    ("imap", Security.TLS): 993,
    ("imap", Security.STARTTLS): 143,
    ("imap", Security.NONE): 143,
}


def _choice(r: YamlReader, node: Node | None, where: str, default: _E, hint: str) -> _E:
    """One of an enum's values, written in any case; an unknown word is reported with the
    hint and the default is kept. Empty means the default."""
    text = r.string(node, where)
    if not text:
        return default
    try:
        return type(default)(text.lower())
    except ValueError:
        r.error(r.at(node), f"{where}: unknown {text!r}", hint, code="bad-value")
        return default


def parse_server(
    r: YamlReader, node: Node | None, where: str, kind: str, address: str
) -> ServerConfig | None:
    """An ``smtp:`` or ``imap:`` block of a mailbox; ``None`` when absent or wrong."""
    allowed = SERVER_KEYS + (IMAP_EXTRA_KEYS if kind == "imap" else ())
    for secret in SECRET_KEYS:
        if node is not None and node.kind == "map" and secret in node.entries:
            r.error(
                r.at(node.key_node(secret)),
                f"{where}: never put a {secret} in sequencer.yaml",
                f"use `{secret}_env: VARIABLE` (an environment variable) or `{secret}_file: PATH`"
                " (a secrets file) instead; the file is shared and ends up in version control",
                code="secret-in-config",
            )
    m = r.mapping(node, where, tuple(allowed) + SECRET_KEYS)
    if m is None:
        return None
    host = r.string(m.get("host"), f"{where}.host")
    if not host:
        r.error(
            r.at(node), f"{where} has no host", f"e.g. host: {kind}.example.com", code="missing-key"
        )
        return None
    security = _choice(
        r,
        m.get("security"),
        f"{where}.security",
        Security.STARTTLS if kind == "smtp" else Security.TLS,
        "use tls (implicit TLS), starttls or none (local test servers only)",
    )
    port = DEFAULT_PORTS[(kind, security)]
    port_node = m.get("port")
    if port_node is not None:
        if isinstance(port_node.value, int) and 0 < port_node.value < 65536:
            port = port_node.value
        else:
            r.error(
                r.at(port_node),
                f"{where}.port must be a port number, not {describe(port_node)}",
                code="bad-value",
            )
    names: dict[str, str | None] = {}
    for key in ("password_env", "oauth2_token_env"):
        value = r.string(m.get(key), f"{where}.{key}")
        if value and not _ENV_NAME.match(value):
            r.error(
                r.at(m.get(key)),
                f"{where}.{key}: {value!r} is not an environment variable name",
                "name the variable that holds the secret, e.g. SMTP_PASSWORD_ANA",
                code="bad-value",
            )
        names[key] = value
    timeout = 30.0
    timeout_node = m.get("timeout")
    if timeout_node is not None:
        if isinstance(timeout_node.value, int | float) and timeout_node.value > 0:
            timeout = float(timeout_node.value)
        else:
            r.error(r.at(timeout_node), f"{where}.timeout must be seconds > 0", code="bad-value")
    folders: tuple[str, ...] = ("INBOX",)
    if kind == "imap" and m.get("folders") is not None:
        folders = (
            tuple(f for f, _ in r.string_list(m.get("folders"), f"{where}.folders")) or folders
        )
    return ServerConfig(
        host=host,
        port=port,
        security=security,
        username=r.string(m.get("username"), f"{where}.username") or address,
        password_env=names["password_env"],
        password_file=r.string(m.get("password_file"), f"{where}.password_file"),
        oauth2_token_env=names["oauth2_token_env"],
        oauth2_token_file=r.string(m.get("oauth2_token_file"), f"{where}.oauth2_token_file"),
        timeout=timeout,
        folders=folders,
        sent_folder=r.string(m.get("sent_folder"), f"{where}.sent_folder")
        if kind == "imap"
        else None,
        save_to_sent=(
            r.boolean(m.get("save_to_sent"), f"{where}.save_to_sent", False)
            if kind == "imap"
            else False
        ),
    )


def parse_limits(r: YamlReader, m: Node, where: str) -> SendingLimits:
    """``daily_cap``, ``min_spacing`` and ``unknown_outcome`` of a mailbox."""
    limits = SendingLimits()
    daily_cap = limits.daily_cap
    cap = m.get("daily_cap")
    if cap is not None:
        if isinstance(cap.value, int) and not isinstance(cap.value, bool) and cap.value > 0:
            daily_cap = cap.value
        else:
            r.error(r.at(cap), f"{where}.daily_cap must be a whole number > 0", code="bad-value")
    spacing = limits.min_spacing
    spacing_node = m.get("min_spacing")
    if spacing_node is not None:
        try:
            spacing = Delay.parse(spacing_node.text())
        except ValueError as exc:
            r.error(r.at(spacing_node), f"{where}.min_spacing: {exc}", code="bad-delay")
    outcome = _choice(
        r,
        m.get("unknown_outcome"),
        f"{where}.unknown_outcome",
        limits.unknown_outcome,
        "use hold (default), check_sent_folder or resend",
    )
    if outcome is UnknownOutcome.CHECK_SENT_FOLDER and m.get("imap") is None:
        r.error(
            r.at(m.get("unknown_outcome")),
            f"{where}: unknown_outcome check_sent_folder needs an `imap:` block",
            "add the mailbox's IMAP server, or use hold",
            code="bad-value",
        )
    return SendingLimits(daily_cap, spacing, outcome)


def parse_sending(r: YamlReader, node: Node | None) -> SendingPolicy:
    m = r.mapping(node, "sending", SENDING_KEYS)
    policy = SendingPolicy()
    if m is None:
        return policy
    company = policy.company_daily_limit
    company_node = m.get("company_daily_limit")
    if company_node is not None:
        if company_node.is_null or company_node.text().lower() == "none":
            company = None
        elif isinstance(company_node.value, int) and company_node.value > 0:
            company = company_node.value
        else:
            r.error(
                r.at(company_node),
                "sending.company_daily_limit must be a whole number > 0 or none",
                code="bad-value",
            )
    threshold = policy.bounce_pause_threshold
    threshold_node = m.get("bounce_pause_threshold")
    if threshold_node is not None:
        raw = threshold_node.text().strip()
        try:
            threshold = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
            if not 0 < threshold < 1:
                raise ValueError
        except ValueError:
            r.error(
                r.at(threshold_node),
                f"sending.bounce_pause_threshold: cannot read {raw!r}",
                "write a percentage like 5% (or 0.05)",
                code="bad-value",
            )
            threshold = policy.bounce_pause_threshold
    attempts = policy.max_attempts
    attempts_node = m.get("max_attempts")
    if attempts_node is not None:
        if isinstance(attempts_node.value, int) and 1 <= attempts_node.value <= 50:
            attempts = attempts_node.value
        else:
            r.error(r.at(attempts_node), "sending.max_attempts must be 1 to 50", code="bad-value")
    retry_after = policy.retry_after
    retry_node = m.get("retry_after")
    if retry_node is not None:
        try:
            retry_after = Delay.parse(retry_node.text())
        except ValueError as exc:
            r.error(r.at(retry_node), f"sending.retry_after: {exc}", code="bad-delay")
    return SendingPolicy(company, threshold, attempts, retry_after)
