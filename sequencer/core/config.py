"""The project file ``sequencer.yaml``: sender details and mailboxes, with located problems."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sequencer.core.mailbox_config import (
    SECRET_KEYS,
    SendingLimits,
    SendingPolicy,
    ServerConfig,
    parse_limits,
    parse_sending,
    parse_server,
)
from sequencer.core.problems import Problem, has_errors
from sequencer.core.yamlnodes import YamlReader

CONFIG_KEYS = ("sender", "mailboxes", "sending")
SENDER_KEYS = ("company", "postal_address", "public_url")
MAILBOX_KEYS = (
    "address",
    "name",
    "title",
    "phone",
    "signature",
    "postal_address",
    "company",
    "smtp",
    "imap",
    "daily_cap",
    "min_spacing",
    "unknown_outcome",
)

_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class MailboxConfig:
    """One rep's sending mailbox and the details their emails are signed with."""

    address: str
    name: str = ""
    title: str = ""
    phone: str = ""
    signature: str = ""
    company: str = ""
    postal_address: str = ""
    line: int = 0
    smtp: ServerConfig | None = None
    imap: ServerConfig | None = None
    limits: SendingLimits = field(default_factory=SendingLimits)

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[-1]


@dataclass(frozen=True)
class SenderConfig:
    company: str = ""
    postal_address: str = ""
    public_url: str = ""


@dataclass(frozen=True)
class ProjectConfig:
    path: str = ""
    sender: SenderConfig = SenderConfig()
    mailboxes: tuple[MailboxConfig, ...] = ()
    sending: SendingPolicy = field(default_factory=SendingPolicy)

    def mailbox(self, address: str | None) -> MailboxConfig | None:
        """The mailbox with this address (any case), or the first one when ``address`` is None."""
        if address is None:
            return self.mailboxes[0] if self.mailboxes else None
        wanted = address.strip().lower()
        return next((m for m in self.mailboxes if m.address == wanted), None)

    def postal_address_for(self, address: str | None) -> str:
        box = self.mailbox(address)
        return (box.postal_address if box else "") or self.sender.postal_address

    def sender_fields(self, address: str | None) -> dict[str, str]:
        """The ``sender`` variables a template sees for mail from this mailbox."""
        box = self.mailbox(address)
        fields = {
            "company": self.sender.company,
            "postal_address": self.sender.postal_address,
        }
        if box is not None:
            fields.update(
                email=box.address,
                name=box.name,
                title=box.title,
                phone=box.phone,
                signature=box.signature or "\n".join(p for p in (box.name, box.title) if p),
            )
            if box.company:
                fields["company"] = box.company
            if box.postal_address:
                fields["postal_address"] = box.postal_address
        return {k: v for k, v in fields.items() if v}


def parse_config(path: str, text: str) -> tuple[ProjectConfig | None, list[Problem]]:
    """Read ``sequencer.yaml``; returns ``None`` with the problems when it has errors."""
    r = YamlReader(path)
    root = r.load(text)
    if root is None:
        return (None if r.problems else ProjectConfig(path=path)), r.problems
    top = r.mapping(root, "sequencer.yaml", CONFIG_KEYS)
    if top is None:
        return None, r.problems
    sender = SenderConfig()
    s = r.mapping(top.get("sender"), "sender", SENDER_KEYS)
    if s is not None:
        public_url = r.string(s.get("public_url"), "sender.public_url") or ""
        if public_url and not public_url.startswith(("https://", "http://")):
            r.error(
                r.at(s.get("public_url")),
                f"sender.public_url {public_url!r} is not a web address",
                "write the address unsubscribe links point to, e.g. https://mail.example.com",
                code="bad-value",
            )
        sender = SenderConfig(
            company=r.string(s.get("company"), "sender.company") or "",
            postal_address=r.string(s.get("postal_address"), "sender.postal_address") or "",
            public_url=public_url.rstrip("/"),
        )
    mailboxes: list[MailboxConfig] = []
    boxes = top.get("mailboxes")
    if boxes is not None and not boxes.is_null:
        if boxes.kind != "list":
            r.error(r.at(boxes), "mailboxes must be a list (each starts with `- address:`)")
        else:
            seen: dict[str, int] = {}
            for index, item in enumerate(boxes.items):
                m = r.mapping(item, f"mailbox {index + 1}", MAILBOX_KEYS + SECRET_KEYS)
                if m is not None:
                    for secret in SECRET_KEYS:
                        if secret in m.entries:
                            r.error(
                                r.at(m.key_node(secret)),
                                f"mailbox {index + 1}: never put a {secret} in sequencer.yaml",
                                f"put it under smtp:/imap: as `{secret}_env: VARIABLE` or "
                                f"`{secret}_file: PATH`",
                                code="secret-in-config",
                            )
                if m is None:
                    continue
                address = (r.string(m.get("address"), "mailbox address") or "").lower()
                if not _ADDRESS.match(address):
                    r.error(
                        r.at(m.get("address") or item),
                        f"mailbox {index + 1}: "
                        + (f"{address!r} is not an email address" if address else "no address"),
                        "e.g. address: ana@example.com",
                        code="bad-value",
                    )
                    continue
                if address in seen:
                    r.error(
                        r.at(m.get("address")),
                        f"mailbox {address} is listed twice (first on line {seen[address]})",
                        code="duplicate-mailbox",
                    )
                    continue
                seen[address] = item.line
                mailboxes.append(
                    MailboxConfig(
                        address=address,
                        name=r.string(m.get("name"), "mailbox name") or "",
                        title=r.string(m.get("title"), "mailbox title") or "",
                        phone=r.string(m.get("phone"), "mailbox phone") or "",
                        signature=(r.string(m.get("signature"), "mailbox signature") or ""),
                        company=r.string(m.get("company"), "mailbox company") or "",
                        postal_address=r.string(m.get("postal_address"), "mailbox postal_address")
                        or "",
                        line=item.line,
                        smtp=parse_server(r, m.get("smtp"), f"{address} smtp", "smtp", address),
                        imap=parse_server(r, m.get("imap"), f"{address} imap", "imap", address),
                        limits=parse_limits(r, m, address),
                    )
                )
    sending = parse_sending(r, top.get("sending"))
    if has_errors(r.problems):
        return None, r.problems
    config = ProjectConfig(path=path, sender=sender, mailboxes=tuple(mailboxes), sending=sending)
    return config, r.problems
