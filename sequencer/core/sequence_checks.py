"""Checks of a sequence against the rest of its project: templates, pools, CAN-SPAM compliance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sequencer.core.config import ProjectConfig
from sequencer.core.model import (
    Channel,
    MailboxMode,
    Sequence,
    Template,
    TemplateKind,
    WhenExhausted,
)
from sequencer.core.problems import did_you_mean
from sequencer.core.templates import analyze
from sequencer.core.yamlnodes import Node, YamlReader


@dataclass(frozen=True)
class ProjectContext:
    """What a sequence is checked against: the project's templates and sender configuration."""

    templates: Mapping[str, Template]  # templates that parsed, by name
    template_names: frozenset[str]  # every template file present, including broken ones
    config: ProjectConfig | None = None
    templates_dir: str = "templates"


@dataclass(frozen=True)
class SequenceRef:
    """A place where a step names a template or a pool."""

    label: str
    channel: Channel
    template: str | None
    rotate: str | None
    node: Node


class ReferenceChecker:
    """Checks that need the rest of the project: templates, pools, compliance."""

    def __init__(
        self,
        reader: YamlReader,
        sequence: Sequence,
        context: ProjectContext,
        refs: list[SequenceRef],
        pool_nodes: dict[str, tuple[Node, list[tuple[str, Node]]]],
        mailbox_node: Node | None,
    ) -> None:
        self.r = reader
        self.sequence = sequence
        self.context = context
        self.refs = refs
        self.pool_nodes = pool_nodes
        self.mailbox_node = mailbox_node
        self._unsubscribe_cache: dict[str, bool] = {}

    def check(self) -> None:
        for ref in self.refs:
            if ref.template is not None:
                self._template_ref(ref, ref.template)
            elif ref.rotate is not None:
                self._pool_ref(ref, ref.rotate)
        self._pool_members()
        self._pool_sizes()
        self._postal_address()

    def _offers_unsubscribe(self, template: Template) -> bool:
        if template.name not in self._unsubscribe_cache:
            self._unsubscribe_cache[template.name] = analyze(template).offers_unsubscribe
        return self._unsubscribe_cache[template.name]

    def _template_path(self, name: str) -> str:
        return f"{self.context.templates_dir.rstrip('/')}/{name}.j2"

    def _template_ref(self, ref: SequenceRef, name: str, *, where: str | None = None) -> None:
        r = self.r
        where = where or ref.label
        if name not in self.context.template_names:
            hint = did_you_mean(name, self.context.template_names)
            hint = hint or f"create {self._template_path(name)} or fix the name"
            r.error(
                r.at(ref.node), f"{where}: unknown template {name!r}", hint, code="unknown-template"
            )
            return
        template = self.context.templates.get(name)
        if template is None:
            return  # the template itself has errors, reported against its own file
        if ref.channel is Channel.EMAIL:
            if template.kind is TemplateKind.SCRIPT:
                r.error(
                    r.at(ref.node),
                    f"{where}: template {name!r} is a task script (kind: script), not an email",
                    "point the step at an email template, or make it a call/linkedin/task step",
                    code="wrong-template-kind",
                )
            elif not self._offers_unsubscribe(template):
                r.error(
                    r.at(ref.node),
                    f"{where}: template {name!r} offers no way to unsubscribe",
                    f"add {{{{ footer }}}} or {{{{ unsubscribe_url }}}} to {template.path} "
                    "(CAN-SPAM requires an opt-out in every commercial email)",
                    code="no-unsubscribe",
                )

    def _pool_ref(self, ref: SequenceRef, pool: str) -> None:
        if pool not in self.sequence.pools:
            hint = did_you_mean(pool, self.sequence.pools)
            if hint is None:
                hint = (
                    "define it under `pools:` in this file"
                    if not self.sequence.pools
                    else f"pools in this sequence: {', '.join(sorted(self.sequence.pools))}"
                )
            self.r.error(
                self.r.at(ref.node),
                f"{ref.label}: unknown pool {pool!r}",
                hint,
                code="unknown-pool",
            )

    def _pool_members(self) -> None:
        used = {ref.rotate for ref in self.refs if ref.rotate}
        for pool, (_, entries) in self.pool_nodes.items():
            if pool not in used:
                continue  # an unused pool is harmless; its names are still checked below
            for name, node in entries:
                self._template_ref(
                    SequenceRef(f"pool {pool!r}", Channel.EMAIL, name, None, node),
                    name,
                    where=f"pool {pool!r}",
                )
        for pool, (_, entries) in self.pool_nodes.items():
            if pool in used:
                continue
            for name, node in entries:
                if name not in self.context.template_names:
                    hint = did_you_mean(name, self.context.template_names)
                    self.r.error(
                        self.r.at(node),
                        f"pool {pool!r}: unknown template {name!r}",
                        hint or f"create {self._template_path(name)} or fix the name",
                        code="unknown-template",
                    )

    def _pool_sizes(self) -> None:
        draws: dict[str, int] = {}
        for ref in self.refs:
            if ref.rotate is not None and ref.rotate in self.sequence.pools:
                draws[ref.rotate] = draws.get(ref.rotate, 0) + 1
        for name, count in draws.items():
            pool = self.sequence.pools[name]
            if len(pool.templates) >= count:
                continue
            node = self.pool_nodes[name][0]
            message = (
                f"pool {name!r} has {len(pool.templates)} template"
                f"{'s' if len(pool.templates) != 1 else ''} but {count} steps rotate through it"
            )
            reuse = pool.when_exhausted is WhenExhausted.REUSE or self.sequence.allow_reuse
            if reuse:
                self.r.warning(
                    self.r.at(node),
                    message,
                    f"prospects will get repeats; add {count - len(pool.templates)} more "
                    "template(s) so every touch brings something new",
                    code="pool-too-small",
                )
            else:
                self.r.error(
                    self.r.at(node),
                    message,
                    f"add {count - len(pool.templates)} more template(s), remove rotating steps, "
                    "or set `when_exhausted: reuse`",
                    code="pool-too-small",
                )

    def _postal_address(self) -> None:
        config = self.context.config
        node = self.mailbox_node
        config_name = config.path if config and config.path else "sequencer.yaml"
        if self.sequence.mailbox.mode is MailboxMode.LIST:
            addresses: list[str | None] = list(self.sequence.mailbox.addresses)
        else:
            addresses = [m.address for m in config.mailboxes] if config else []
            addresses = addresses or [None]
        if config is not None and self.sequence.mailbox.mode is MailboxMode.LIST:
            for address in self.sequence.mailbox.addresses:
                if config.mailbox(address) is None:
                    known = [m.address for m in config.mailboxes]
                    self.r.error(
                        self.r.at(node),
                        f"mailbox {address!r} is not configured",
                        did_you_mean(address, known)
                        or f"add it under `mailboxes:` in {config_name}",
                        code="unknown-mailbox",
                    )
        missing = [a for a in addresses if not (config and config.postal_address_for(a))]
        if missing and any(ref.channel is Channel.EMAIL for ref in self.refs):
            who = "the sender" if missing == [None] else ", ".join(str(a) for a in missing)
            self.r.error(
                self.r.at(node) if node is not None else self.r.at(None),
                f"no postal address is configured for {who}",
                f"set `sender: postal_address:` in {config_name} "
                "(CAN-SPAM requires a valid postal address in every commercial email)",
                code="no-postal-address",
            )
