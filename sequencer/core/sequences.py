"""Sequence YAML parsed into the frozen model, with every problem located and explained."""

from __future__ import annotations

import hashlib
import itertools
import re
from datetime import time
from types import MappingProxyType

from sequencer.core.calendar import holiday_problem, timezone_problem
from sequencer.core.delays import Delay
from sequencer.core.model import (
    WEEKDAY_NAMES,
    Channel,
    Limits,
    MailboxChoice,
    MailboxMode,
    OutOfOfficeAction,
    OutOfOfficePolicy,
    Pool,
    Schedule,
    SendWindow,
    Sequence,
    Step,
    StopRules,
    Threading,
    TimeRange,
    WhenExhausted,
)
from sequencer.core.problems import Problem, did_you_mean, has_errors
from sequencer.core.sequence_checks import ProjectContext, ReferenceChecker, SequenceRef
from sequencer.core.yamlnodes import Node, YamlReader, describe

TOP_KEYS = (
    "description",
    "schedule",
    "stop",
    "out_of_office",
    "limits",
    "mailbox",
    "fields",
    "allow_reuse",
    "exclusive",
    "pools",
    "steps",
)
SCHEDULE_KEYS = ("timezone", "fallback_timezone", "days", "hours", "holidays")
STOP_KEYS = ("reply", "bounce", "unsubscribe", "company_reply")
OOO_KEYS = ("action", "default_pause", "max_pause")
LIMIT_KEYS = ("min_gap", "max_per_week")
POOL_KEYS = ("templates", "when_exhausted")
CHANNEL_KEYS = tuple(c.value for c in Channel)
STEP_KEYS = ("id", "delay", "thread", "anytime", "title", *CHANNEL_KEYS)
CHANNEL_VALUE_KEYS = ("template", "rotate", "script")

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DAY_ALIASES = {
    "weekdays": frozenset(range(5)),
    "every day": frozenset(range(7)),
    "everyday": frozenset(range(7)),
    "daily": frozenset(range(7)),
    "weekends": frozenset({5, 6}),
}
_LONG_DAYS = {
    "monday": 0,
    "tuesday": 1,
    "wednesday": 2,
    "thursday": 3,
    "friday": 4,
    "saturday": 5,
    "sunday": 6,
}


def parse_sequence(
    name: str, path: str, text: str, context: ProjectContext | None = None
) -> tuple[Sequence | None, list[Problem]]:
    """Read one sequence file's text. Returns the sequence (``None`` if it has errors) and all
    problems found. With a ``context`` it also checks template and pool references, pool sizes
    and the CAN-SPAM requirements (an unsubscribe path in every email, a postal address)."""
    parser = _SequenceParser(name, path)
    sequence = parser.parse(text)
    if sequence is not None and context is not None:
        ReferenceChecker(
            parser.reader, sequence, context, parser.refs, parser.pool_nodes, parser.mailbox_node
        ).check()
    if has_errors(parser.problems):
        return None, parser.problems
    return sequence, parser.problems


class _SequenceParser:
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self.reader = YamlReader(path)
        self.refs: list[SequenceRef] = []
        self.pool_nodes: dict[str, tuple[Node, list[tuple[str, Node]]]] = {}
        self.mailbox_node: Node | None = None

    @property
    def problems(self) -> list[Problem]:
        return self.reader.problems

    def parse(self, text: str) -> Sequence | None:
        r = self.reader
        root = r.load(text)
        if r.problems:
            return None
        if root is None or root.is_null:
            r.error(
                r.at(None),
                "the sequence is empty",
                "a sequence needs at least `steps:` with one step; see docs/sequences.md",
                code="empty-sequence",
            )
            return None
        top = r.mapping(root, "the sequence", TOP_KEYS)
        if top is None:
            return None
        description = r.string(top.get("description"), "description") or ""
        schedule = self._schedule(top.get("schedule"))
        stop = self._stop(top.get("stop"))
        ooo = self._out_of_office(top.get("out_of_office"))
        limits = self._limits(top.get("limits"))
        mailbox = self._mailbox(top.get("mailbox"))
        fields = tuple(self._fields(top.get("fields")))
        pools = self._pools(top.get("pools"))
        steps = self._steps(top, top.get("steps"))
        return Sequence(
            name=self.name,
            path=self.path,
            steps=tuple(steps),
            description=description,
            schedule=schedule,
            stop=stop,
            out_of_office=ooo,
            limits=limits,
            mailbox=mailbox,
            pools=MappingProxyType(pools),
            fields=fields,
            allow_reuse=r.boolean(top.get("allow_reuse"), "allow_reuse", False),
            exclusive=r.boolean(top.get("exclusive"), "exclusive", False),
            content_hash=hashlib.sha256(text.encode()).hexdigest(),
        )

    # --- schedule ---------------------------------------------------------------------------

    def _schedule(self, node: Node | None) -> Schedule:
        r = self.reader
        m = r.mapping(node, "schedule", SCHEDULE_KEYS)
        if m is None:
            return Schedule()
        timezone = r.string(m.get("timezone"), "schedule.timezone") or "prospect"
        if timezone != "prospect":
            self._check_zone(timezone, m.get("timezone"), "schedule.timezone")
        fallback = r.string(m.get("fallback_timezone"), "schedule.fallback_timezone") or "UTC"
        self._check_zone(fallback, m.get("fallback_timezone"), "schedule.fallback_timezone")
        days = self._days(m.get("days"))
        hours = self._hours(m.get("hours"))
        holidays: list[str] = []
        for code, item in r.string_list(m.get("holidays"), "schedule.holidays"):
            problem = holiday_problem(code)
            if problem:
                r.error(r.at(item), problem[0], problem[1], code="unknown-holiday-country")
            else:
                holidays.append(code.upper())
        return Schedule(
            timezone=timezone,
            fallback_timezone=fallback,
            window=SendWindow(days=days, hours=hours),
            holidays=tuple(holidays),
        )

    def _check_zone(self, zone: str, node: Node | None, where: str) -> None:
        problem = timezone_problem(zone)
        if problem:
            hint = problem[1]
            if where == "schedule.timezone":
                hint = f"{hint}; or write `prospect` to use each prospect's own zone"
            self.reader.error(
                self.reader.at(node), f"{where}: {problem[0]}", hint, code="unknown-timezone"
            )

    def _days(self, node: Node | None) -> frozenset[int]:
        r = self.reader
        default = SendWindow().days
        if node is None or node.is_null:
            return default
        if node.kind == "scalar" and node.text().strip().lower() in _DAY_ALIASES:
            return _DAY_ALIASES[node.text().strip().lower()]
        days: set[int] = set()
        choices = [*WEEKDAY_NAMES, *_DAY_ALIASES]
        for word, item in r.string_list(node, "schedule.days"):
            key = word.lower()
            if key in WEEKDAY_NAMES:
                days.add(WEEKDAY_NAMES.index(key))
            elif key in _LONG_DAYS:
                days.add(_LONG_DAYS[key])
            elif key[:3] in WEEKDAY_NAMES and len(key) <= 4:  # "tues", "thur"
                days.add(WEEKDAY_NAMES.index(key[:3]))
            else:
                hint = did_you_mean(key, choices) or "use mon, tue, wed, thu, fri, sat, sun"
                r.error(r.at(item), f"schedule.days: unknown day {word!r}", hint, code="bad-day")
        if not days and not r.problems:
            r.error(
                r.at(node),
                "schedule.days is empty, so nothing could ever be sent",
                "list at least one day, e.g. days: [mon, tue, wed, thu, fri]",
                code="bad-day",
            )
        return frozenset(days) or default

    def _hours(self, node: Node | None) -> tuple[TimeRange, ...]:
        r = self.reader
        default = SendWindow().hours
        if node is None or node.is_null:
            return default
        pieces: list[tuple[str, Node]] = []
        for text, item in r.string_list(node, "schedule.hours"):
            pieces.extend((p, item) for p in text.split(",") if p.strip())
        ranges: list[TimeRange] = []
        for piece, item in pieces:
            match = _HOURS.match(piece)
            parsed = None
            if match:
                h1, m1, h2, m2 = (int(g) for g in match.groups())
                if h2 == 24 and m2 == 0:
                    h2, m2 = 23, 59
                if h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60:
                    parsed = TimeRange(time(h1, m1), time(h2, m2))
            if parsed is None:
                r.error(
                    r.at(item),
                    f"schedule.hours: cannot read {piece.strip()!r}",
                    'write hours as "HH:MM-HH:MM", e.g. "09:00-17:00" or '
                    '"08:30-11:30, 13:30-16:30"',
                    code="bad-hours",
                )
            elif parsed.start >= parsed.end:
                r.error(
                    r.at(item),
                    f"schedule.hours: {piece.strip()!r} ends before it starts",
                    "windows cannot cross midnight; split it into two ranges",
                    code="bad-hours",
                )
            else:
                ranges.append(parsed)
        ranges.sort(key=lambda t: t.start)
        for before, after in itertools.pairwise(ranges):
            if after.start < before.end:
                r.error(
                    r.at(node),
                    f"schedule.hours: ranges {before} and {after} overlap",
                    "merge them into one range",
                    code="bad-hours",
                )
        return tuple(ranges) or default

    # --- rules ------------------------------------------------------------------------------

    def _stop(self, node: Node | None) -> StopRules:
        r = self.reader
        m = r.mapping(node, "stop", STOP_KEYS)
        if m is None:
            return StopRules()
        for always in ("bounce", "unsubscribe"):
            if r.boolean(m.get(always), f"stop.{always}", True) is False:
                r.error(
                    r.at(m.get(always)),
                    f"stop.{always} cannot be false",
                    f"{'a hard bounce' if always == 'bounce' else 'an unsubscribe request'} always "
                    "stops a sequence (the law and sender reputation require it); remove this line",
                    code="bad-value",
                )
        return StopRules(
            reply=r.boolean(m.get("reply"), "stop.reply", True),
            company_reply=r.boolean(m.get("company_reply"), "stop.company_reply", False),
        )

    def _delay(self, node: Node | None, where: str) -> Delay | None:
        r = self.reader
        if node is None or node.is_null:
            return None
        if node.kind != "scalar":
            r.error(r.at(node), f"{where} must be a delay, not {describe(node)}", code="bad-delay")
            return None
        try:
            return Delay.parse(node.text())
        except ValueError as exc:
            message, _, hint = str(exc).partition("; ")
            r.error(r.at(node), f"{where}: {message}", hint or None, code="bad-delay")
            return None

    def _out_of_office(self, node: Node | None) -> OutOfOfficePolicy:
        r = self.reader
        m = r.mapping(node, "out_of_office", OOO_KEYS)
        default = OutOfOfficePolicy()
        if m is None:
            return default
        action = default.action
        text = r.string(m.get("action"), "out_of_office.action")
        if text is not None:
            try:
                action = OutOfOfficeAction(text.lower())
            except ValueError:
                r.error(
                    r.at(m.get("action")),
                    f"out_of_office.action: unknown action {text!r}",
                    "use `pause` (wait until they are back) or `ignore`",
                    code="bad-value",
                )
        default_pause = self._delay(m.get("default_pause"), "out_of_office.default_pause")
        max_pause = self._delay(m.get("max_pause"), "out_of_office.max_pause")
        policy = OutOfOfficePolicy(
            action=action,
            default_pause=default_pause or default.default_pause,
            max_pause=max_pause or default.max_pause,
        )
        if policy.default_pause.approximate() > policy.max_pause.approximate():
            r.warning(
                r.at(m.get("default_pause")),
                f"out_of_office.default_pause ({policy.default_pause}) is longer than "
                f"max_pause ({policy.max_pause}); max_pause wins",
                code="bad-value",
            )
        return policy

    def _limits(self, node: Node | None) -> Limits:
        r = self.reader
        m = r.mapping(node, "limits", LIMIT_KEYS)
        default = Limits()
        if m is None:
            return default
        min_gap = default.min_gap
        gap_node = m.get("min_gap")
        if gap_node is not None:
            if gap_node.is_null or gap_node.text().strip().lower() in ("none", "false", "no"):
                min_gap = None
            else:
                min_gap = self._delay(gap_node, "limits.min_gap")
        max_per_week = default.max_per_week
        week_node = m.get("max_per_week")
        if week_node is not None:
            raw = week_node.text().strip().lower()
            if week_node.is_null or raw in ("none", "false", "no"):
                max_per_week = None
            elif (
                isinstance(week_node.value, int)
                and not isinstance(week_node.value, bool)
                and week_node.value >= 1
            ):
                max_per_week = week_node.value
            else:
                r.error(
                    r.at(week_node),
                    f"limits.max_per_week must be a whole number of 1 or more, not "
                    f"{describe(week_node)}",
                    "e.g. max_per_week: 3, or `none` for no weekly limit",
                    code="bad-value",
                )
        return Limits(min_gap=min_gap, max_per_week=max_per_week)

    def _mailbox(self, node: Node | None) -> MailboxChoice:
        r = self.reader
        self.mailbox_node = node
        if node is None or node.is_null:
            return MailboxChoice()
        if node.kind == "scalar" and node.text().strip().lower() == "owner":
            return MailboxChoice()
        addresses = []
        for address, item in r.string_list(node, "mailbox"):
            if "@" not in address or address.startswith("@") or address.endswith("@"):
                r.error(
                    r.at(item),
                    f"mailbox: {address!r} is not an email address",
                    "write `owner` (the enrolling rep's mailbox) or a list of sending addresses",
                    code="bad-value",
                )
            else:
                addresses.append(address.lower())
        return MailboxChoice(MailboxMode.LIST, tuple(addresses))

    def _fields(self, node: Node | None) -> list[str]:
        names = []
        for name, item in self.reader.string_list(node, "fields"):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.reader.error(
                    self.reader.at(item),
                    f"fields: {name!r} is not a usable field name",
                    "use letters, digits and underscores, e.g. pain_point",
                    code="bad-value",
                )
            else:
                names.append(name)
        return names

    # --- pools and steps --------------------------------------------------------------------

    def _pools(self, node: Node | None) -> dict[str, Pool]:
        r = self.reader
        if node is None or node.is_null:
            return {}
        if node.kind != "map":
            r.error(
                r.at(node),
                f"pools must be a mapping of pool name to templates, not {describe(node)}",
                "e.g. `value-add: {templates: [case-study, benchmark]}`",
                code="wrong-type",
            )
            return {}
        pools: dict[str, Pool] = {}
        for name, (_, value) in node.entries.items():
            where = f"pool {name!r}"
            policy = WhenExhausted.SKIP
            if value.kind == "list":
                names = r.string_list(value, f"{where} templates")
            else:
                m = r.mapping(value, where, POOL_KEYS)
                if m is None:
                    continue
                names = r.string_list(m.get("templates"), f"{where} templates")
                text = r.string(m.get("when_exhausted"), f"{where} when_exhausted")
                if text is not None:
                    try:
                        policy = WhenExhausted(text.lower())
                    except ValueError:
                        hint = did_you_mean(text.lower(), [w.value for w in WhenExhausted])
                        r.error(
                            r.at(m.get("when_exhausted")),
                            f"{where}: unknown when_exhausted {text!r}",
                            hint or "use skip, stop or reuse",
                            code="bad-value",
                        )
            seen: set[str] = set()
            for template, item in names:
                if template in seen:
                    r.error(
                        r.at(item),
                        f"{where} lists template {template!r} twice",
                        "remove the repeat",
                        code="duplicate-template",
                    )
                seen.add(template)
            if not names:
                r.error(
                    r.at(value),
                    f"{where} has no templates",
                    "list the value-add templates it rotates through",
                    code="empty-pool",
                )
            pools[name] = Pool(name, tuple(dict.fromkeys(t for t, _ in names)), policy)
            self.pool_nodes[name] = (value, names)
        return pools

    def _steps(self, top: Node, node: Node | None) -> list[Step]:
        r = self.reader
        if node is None or node.is_null or (node.kind == "list" and not node.items):
            r.error(
                r.at(node or top.key_node("steps") or top),
                "the sequence has no steps",
                "add `steps:` with at least one step, e.g.\n"
                "      steps:\n        - id: intro\n          delay: immediately\n"
                "          email: intro",
                code="empty-sequence",
            )
            return []
        if node.kind != "list":
            r.error(
                r.at(node),
                f"steps must be a list (each step starts with `- id:`), not {describe(node)}",
                code="wrong-type",
            )
            return []
        steps: list[Step] = []
        first_line: dict[str, int] = {}
        for index, item in enumerate(node.items):
            step = self._step(index, item)
            if step is None:
                continue
            if step.id in first_line:
                r.error(
                    r.at(item.get("id")),
                    f"duplicate step id {step.id!r} (first used on line {first_line[step.id]})",
                    "every step needs its own id; ids are how sent steps are remembered",
                    code="duplicate-step",
                )
                continue
            first_line[step.id] = step.line
            steps.append(step)
        return steps

    def _step(self, index: int, node: Node) -> Step | None:
        r = self.reader
        label = f"step {index + 1}"
        m = r.mapping(node, label, STEP_KEYS)
        if m is None:
            if node.is_null:
                r.error(r.at(node), f"{label} is empty", code="wrong-type")
            return None
        step_id = r.string(m.get("id"), f"{label} id")
        if not step_id:
            r.error(
                r.at(node),
                f"{label} has no id",
                "give every step a stable id, e.g. `- id: intro`",
                code="missing-key",
            )
            return None
        label = f"step {step_id!r}"
        if not _ID.match(step_id):
            r.error(
                r.at(m.get("id")),
                f"{label}: ids may use lowercase letters, digits, '-' and '_' only",
                f"e.g. {re.sub(r'[^a-z0-9_-]+', '-', step_id.lower()).strip('-') or 'intro'}",
                code="bad-value",
            )
        delay = self._delay(m.get("delay"), f"{label} delay")
        if m.get("delay") is None:
            if index == 0:
                delay = Delay(0)
            else:
                r.error(
                    r.at(node),
                    f"{label} has no delay",
                    "say how long after the previous step it goes out, "
                    "e.g. `delay: 2 business days`",
                    code="missing-key",
                )
        channels = [c for c in CHANNEL_KEYS if c in m.entries]
        if not channels:
            r.error(
                r.at(node),
                f"{label} has no channel",
                "add one of `email: TEMPLATE`, `email: {rotate: POOL}`, `call: SCRIPT`, "
                "`linkedin: SCRIPT` or `task: SCRIPT`",
                code="missing-key",
            )
            return None
        if len(channels) > 1:
            r.error(
                r.at(m.key_node(channels[1])),
                f"{label} has more than one channel ({', '.join(channels)})",
                "split it into separate steps",
                code="bad-value",
            )
            return None
        channel = Channel(channels[0])
        template, rotate, script = self._channel_value(label, channel, m.get(channel.value))
        thread = Threading.REPLY
        thread_text = r.string(m.get("thread"), f"{label} thread")
        if thread_text is not None:
            if channel.is_task:
                r.error(
                    r.at(m.get("thread")),
                    f"{label}: `thread` applies to email steps only",
                    "remove it from this task",
                    code="bad-value",
                )
            try:
                thread = Threading(thread_text.lower())
            except ValueError:
                r.error(
                    r.at(m.get("thread")),
                    f"{label}: unknown thread {thread_text!r}",
                    "use `reply` (default: answer in the current thread) or `new`",
                    code="bad-value",
                )
        title = r.string(m.get("title"), f"{label} title")
        if title is not None and not channel.is_task:
            r.error(
                r.at(m.get("title")),
                f"{label}: `title` applies to tasks only",
                "an email's subject comes from its template's front matter",
                code="bad-value",
            )
        return Step(
            id=step_id,
            delay=delay or Delay(0),
            channel=channel,
            template=template,
            rotate=rotate,
            script=script,
            title=title,
            thread=thread,
            anytime=r.boolean(m.get("anytime"), f"{label} anytime", False),
            line=node.line,
        )

    def _channel_value(
        self, label: str, channel: Channel, node: Node | None
    ) -> tuple[str | None, str | None, str | None]:
        template, rotate, script, ref = self._channel_ref(label, channel, node)
        if ref is not None and (template or rotate):
            self.refs.append(SequenceRef(label, channel, template, rotate, ref))
        return template, rotate, script

    def _channel_ref(
        self, label: str, channel: Channel, node: Node | None
    ) -> tuple[str | None, str | None, str | None, Node | None]:
        """(template, rotate, script) from `email: NAME`, `email: {rotate: POOL}`, ..."""
        r = self.reader
        where = f"{label} {channel.value}"
        if node is None or node.is_null:
            if channel.is_task:
                return None, None, None, None  # a bare task: the title says what to do
            r.error(
                r.at(node),
                f"{where}: say which template to send",
                "e.g. `email: intro` or `email: {rotate: value-add}`",
                code="missing-key",
            )
            return None, None, None, None
        if node.kind == "scalar":
            return node.text().strip(), None, None, node
        m = r.mapping(node, where, CHANNEL_VALUE_KEYS)
        if m is None:
            return None, None, None, None
        given = [k for k in CHANNEL_VALUE_KEYS if k in m.entries]
        if len(given) != 1:
            r.error(
                r.at(node),
                f"{where}: give exactly one of template, rotate or script"
                + (f" (found {', '.join(given)})" if given else ""),
                code="bad-value",
            )
            return None, None, None, None
        key = given[0]
        value = r.string(m.get(key), f"{where} {key}")
        if not value:
            r.error(r.at(m.get(key) or node), f"{where} {key} is empty", code="missing-key")
            return None, None, None, None
        if key == "rotate" and channel.is_task:
            r.error(
                r.at(m.key_node(key)),
                f"{where}: only email steps can rotate through a pool",
                "use `template:` or `script:` for tasks",
                code="bad-value",
            )
        if key == "script" and not channel.is_task:
            r.error(
                r.at(m.key_node(key)),
                f"{where}: emails need a template file (subject and body)",
                "create templates/NAME.j2 and write `email: NAME`",
                code="bad-value",
            )
        ref = m.get(key)
        if key == "template":
            return value, None, None, ref
        if key == "rotate":
            return None, value, None, ref
        return None, None, value, None
