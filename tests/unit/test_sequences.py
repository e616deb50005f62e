"""Sequence YAML: the model it loads into and every kind of mistake, located and explained."""

from __future__ import annotations

import textwrap
from datetime import time

import pytest

from sequencer.core.config import MailboxConfig, ProjectConfig, SenderConfig
from sequencer.core.delays import Delay, DelayUnit
from sequencer.core.model import (
    Channel,
    MailboxMode,
    OutOfOfficeAction,
    Template,
    TemplateKind,
    Threading,
    TimeRange,
    WhenExhausted,
)
from sequencer.core.problems import Problem, Severity
from sequencer.core.sequence_checks import ProjectContext
from sequencer.core.sequences import parse_sequence

PATH = "sequences/cold.yaml"

FOOTER = "\n{{ footer }}\n"


def _template(
    name: str, body: str = "Hi" + FOOTER, kind: TemplateKind = TemplateKind.EMAIL
) -> Template:
    return Template(
        name=name,
        path=f"templates/{name}.j2",
        subject="" if kind is TemplateKind.SCRIPT else f"About {name}",
        body=body,
        kind=kind,
        body_line=4,
    )


TEMPLATES = {
    t.name: t
    for t in [
        _template("intro"),
        _template("bump"),
        _template("case-study"),
        _template("benchmark"),
        _template("invite"),
        _template("no-optout", body="Hi {{ prospect.first_name | default('there') }}, thoughts?"),
        _template("call-script", body="Say hello", kind=TemplateKind.SCRIPT),
    ]
}
CONFIG = ProjectConfig(
    path="sequencer.yaml",
    sender=SenderConfig(company="Northwind", postal_address="500 Howard St, San Francisco"),
    mailboxes=(MailboxConfig(address="ana@northwind.example", name="Ana"),),
)
CONTEXT = ProjectContext(templates=TEMPLATES, template_names=frozenset(TEMPLATES), config=CONFIG)


def load(text: str, context: ProjectContext | None = CONTEXT):  # type: ignore[no-untyped-def]
    return parse_sequence("cold", PATH, textwrap.dedent(text).lstrip("\n"), context)


def only(problems: list[Problem], code: str) -> Problem:
    matching = [p for p in problems if p.code == code]
    assert len(matching) == 1, [p.format() for p in problems]
    return matching[0]


GOOD = """
description: Cold outbound for ops leaders.
schedule:
  timezone: prospect
  fallback_timezone: America/New_York
  days: [mon, tue, wed, thu, fri]
  hours: "08:30-11:30, 13:30-16:30"
  holidays: [US, no]
stop:
  reply: true
  company_reply: true
out_of_office:
  action: pause
  default_pause: 3 business days
  max_pause: 3 weeks
limits:
  min_gap: 1 day
  max_per_week: 2
fields: [industry]
pools:
  value-add:
    templates: [case-study, benchmark, invite]
    when_exhausted: reuse
steps:
  - id: intro
    delay: immediately
    email: intro
  - id: call-1
    delay: 1 business day
    call: call-script
    title: Call {{ prospect.first_name | default('them') }}
  - id: value-1
    delay: 2 business days
    email: {rotate: value-add}
  - id: linkedin
    delay: 4 hours
    linkedin:
      script: "Connect with {{ prospect.first_name | default('them') }}"
  - id: fresh
    delay: 1 week
    email: {template: bump}
    thread: new
"""


def test_a_good_sequence_loads_into_the_model() -> None:
    sequence, problems = load(GOOD)
    assert problems == []
    assert sequence is not None
    assert sequence.name == "cold"
    assert sequence.description == "Cold outbound for ops leaders."
    schedule = sequence.schedule
    assert schedule.timezone == "prospect"
    assert schedule.fallback_timezone == "America/New_York"
    assert schedule.window.days == frozenset({0, 1, 2, 3, 4})
    assert schedule.window.hours == (
        TimeRange(time(8, 30), time(11, 30)),
        TimeRange(time(13, 30), time(16, 30)),
    )
    # `no` is Norway, not YAML 1.1's false
    assert schedule.holidays == ("US", "NO")
    assert sequence.stop.company_reply is True
    assert sequence.out_of_office.action is OutOfOfficeAction.PAUSE
    assert sequence.out_of_office.default_pause == Delay(3, DelayUnit.BUSINESS_DAYS)
    assert sequence.limits.min_gap == Delay(1, DelayUnit.DAYS)
    assert sequence.limits.max_per_week == 2
    assert sequence.fields == ("industry",)
    assert sequence.pools["value-add"].when_exhausted is WhenExhausted.REUSE
    assert [s.id for s in sequence.steps] == ["intro", "call-1", "value-1", "linkedin", "fresh"]
    intro, call, value, linkedin, fresh = sequence.steps
    assert intro.delay.immediate and intro.template == "intro"
    assert call.channel is Channel.CALL and call.template == "call-script"
    assert call.title == "Call {{ prospect.first_name | default('them') }}"
    assert value.rotate == "value-add" and value.template is None
    assert linkedin.script is not None and linkedin.delay == Delay(4, DelayUnit.HOURS)
    assert fresh.thread is Threading.NEW and fresh.delay == Delay(1, DelayUnit.WEEKS)
    assert sequence.mailbox.mode is MailboxMode.OWNER
    assert len(sequence.content_hash) == 64


def test_the_model_is_frozen() -> None:
    sequence, _ = load(GOOD)
    assert sequence is not None
    with pytest.raises(AttributeError):
        sequence.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        sequence.pools["x"] = sequence.pools["value-add"]  # type: ignore[index]


def test_yaml_syntax_error_is_located() -> None:
    sequence, problems = load(
        """
        steps:
          - id: intro
            email: intro
           delay: 2 days
        """
    )
    assert sequence is None
    problem = only(problems, "yaml-syntax")
    assert problem.location.path == PATH
    assert problem.location.line == 4
    assert problem.location.column is not None


def test_unknown_keys_get_did_you_mean_at_their_position() -> None:
    sequence, problems = load(
        """
        shedule:
          timezone: prospect
        steps:
          - id: intro
            delya: 2 days
            email: intro
        """
    )
    assert sequence is None
    messages = {(p.location.line, p.location.column): p for p in problems}
    top = messages[(1, 1)]
    assert "unknown key 'shedule'" in top.message
    assert top.hint == "did you mean 'schedule'?"
    step = messages[(5, 5)]
    assert "unknown key 'delya'" in step.message
    assert step.hint == "did you mean 'delay'?"


def test_unknown_template_and_pool_are_named_with_suggestions() -> None:
    sequence, problems = load(
        """
        pools:
          value-add: [case-study, benchmark]
        steps:
          - id: intro
            email: intor
          - id: value
            delay: 2 days
            email: {rotate: valueadd}
        """
    )
    assert sequence is None
    template = only(problems, "unknown-template")
    assert template.location.line == 5 and template.location.column == 12
    assert "step 'intro': unknown template 'intor'" in template.message
    assert template.hint == "did you mean 'intro'?"
    pool = only(problems, "unknown-pool")
    assert pool.location.line == 8
    assert pool.hint == "did you mean 'value-add'?"


def test_unknown_template_inside_a_pool() -> None:
    _, problems = load(
        """
        pools:
          value-add: [case-study, benchmrk]
        steps:
          - id: value
            email: {rotate: value-add}
        """
    )
    problem = only(problems, "unknown-template")
    assert problem.location.line == 2
    assert problem.hint == "did you mean 'benchmark'?"


def test_duplicate_step_ids() -> None:
    _, problems = load(
        """
        steps:
          - id: intro
            email: intro
          - id: intro
            delay: 2 days
            email: bump
        """
    )
    problem = only(problems, "duplicate-step")
    assert problem.location.line == 4
    assert "first used on line 2" in problem.message


@pytest.mark.parametrize("delay", ["2 buisness days", "soon", "3 fortnights", "-1 days", "[1]"])
def test_unparseable_delays(delay: str) -> None:
    _, problems = load(
        f"""
        steps:
          - id: intro
            email: intro
          - id: bump
            delay: {delay}
            email: bump
        """
    )
    problem = only(problems, "bad-delay")
    assert problem.location.line == 5 and problem.location.column == 12
    assert "step 'bump' delay" in problem.message


def test_delay_hint_lists_accepted_forms() -> None:
    _, problems = load(
        """
        steps:
          - id: intro
            delay: in a bit
            email: intro
        """
    )
    problem = only(problems, "bad-delay")
    assert problem.hint is not None and "business days" in problem.hint


def test_unknown_time_zone_and_holiday_country() -> None:
    _, problems = load(
        """
        schedule:
          timezone: Europe/Berln
          fallback_timezone: America/NewYork
          holidays: [US, XX]
        steps:
          - id: intro
            email: intro
        """
    )
    zones = [p for p in problems if p.code == "unknown-timezone"]
    assert [(p.location.line, p.location.column) for p in zones] == [(2, 13), (3, 22)]
    assert "'Europe/Berlin'" in (zones[0].hint or "")
    assert "'America/New_York'" in (zones[1].hint or "")
    holiday = only(problems, "unknown-holiday-country")
    assert holiday.location.line == 4 and holiday.location.column == 18


def test_pool_smaller_than_rotating_steps() -> None:
    text = """
        pools:
          value-add: [case-study, benchmark]
        steps:
          - id: v1
            email: {rotate: value-add}
          - id: v2
            delay: 2 days
            email: {rotate: value-add}
          - id: v3
            delay: 2 days
            email: {rotate: value-add}
        """
    sequence, problems = load(text)
    assert sequence is None
    problem = only(problems, "pool-too-small")
    assert problem.severity is Severity.ERROR
    assert problem.location.line == 2
    assert "2 templates but 3 steps" in problem.message
    # With an explicit reuse policy it is only a warning.
    reused = text.replace(
        "value-add: [case-study, benchmark]",
        "value-add: {templates: [case-study, benchmark], when_exhausted: reuse}",
    )
    sequence, problems = load(reused)
    assert sequence is not None
    assert only(problems, "pool-too-small").severity is Severity.WARNING


@pytest.mark.parametrize(
    "text",
    ["", "# nothing but a comment\n", "description: hello\n", "steps: []\n", "steps:\n"],
)
def test_empty_sequence(text: str) -> None:
    sequence, problems = load(text)
    assert sequence is None
    assert only(problems, "empty-sequence").severity is Severity.ERROR


def test_email_without_unsubscribe_path_is_a_compliance_error() -> None:
    _, problems = load(
        """
        steps:
          - id: intro
            email: no-optout
        """
    )
    problem = only(problems, "no-unsubscribe")
    assert problem.location.line == 3
    assert "templates/no-optout.j2" in (problem.hint or "")
    assert "CAN-SPAM" in (problem.hint or "")


def test_missing_postal_address_is_a_compliance_error() -> None:
    context = ProjectContext(
        templates=TEMPLATES,
        template_names=frozenset(TEMPLATES),
        config=ProjectConfig(path="sequencer.yaml", mailboxes=CONFIG.mailboxes),
    )
    _, problems = load(
        """
        mailbox: owner
        steps:
          - id: intro
            email: intro
        """,
        context,
    )
    problem = only(problems, "no-postal-address")
    assert problem.location.line == 1
    assert "sequencer.yaml" in (problem.hint or "")


def test_missing_config_also_reports_postal_address() -> None:
    context = ProjectContext(templates=TEMPLATES, template_names=frozenset(TEMPLATES))
    _, problems = load("steps:\n  - id: intro\n    email: intro\n", context)
    assert only(problems, "no-postal-address")


def test_all_problems_are_reported_in_one_run() -> None:
    _, problems = load(
        """
        schedule:
          timezone: Mars/Olympus
          hours: "17:00-09:00"
        steps:
          - id: intro
            email: intor
          - id: intro
            delay: whenever
            email: bump
          - id: next
            emial: bump
        """
    )
    codes = {p.code for p in problems}
    assert {
        "unknown-timezone",
        "bad-hours",
        "unknown-template",
        "duplicate-step",
        "bad-delay",
        "unknown-key",
    } <= codes


def test_structural_mistakes() -> None:
    _, problems = load(
        """
        stop:
          unsubscribe: false
        steps:
          - id: Intro Step
            email: intro
            call: call-script
          - id: two
            delay: 1 day
            email: {script: "hi"}
          - id: three
            delay: 1 day
          - email: intro
            delay: 1 day
          - id: five
            email: intro
        """
    )
    text = "\n".join(p.format() for p in problems)
    assert "stop.unsubscribe cannot be false" in text
    assert "ids may use lowercase letters" in text
    assert "more than one channel" in text
    assert "emails need a template file" in text
    assert "step 'three' has no channel" in text
    assert "step 4 has no id" in text
    assert "step 'five' has no delay" in text


def test_script_template_cannot_be_sent_as_email() -> None:
    _, problems = load("steps:\n  - id: intro\n    email: call-script\n")
    assert only(problems, "wrong-template-kind").location.line == 3


def test_unconfigured_mailbox_in_list() -> None:
    _, problems = load(
        """
        mailbox: [ana@northwind.example, bob@northwind.example]
        steps:
          - id: intro
            email: intro
        """
    )
    problem = only(problems, "unknown-mailbox")
    assert "bob@northwind.example" in problem.message


def test_days_and_hours_forms() -> None:
    sequence, problems = load(
        """
        schedule:
          days: every day
          hours: ["07:00-09:00", "18:00-20:00"]
        steps:
          - id: intro
            email: intro
        """
    )
    assert problems == [] and sequence is not None
    assert sequence.schedule.window.days == frozenset(range(7))
    assert len(sequence.schedule.window.hours) == 2
    _, problems = load(
        """
        schedule:
          days: [mon, funday]
        steps:
          - id: intro
            email: intro
        """
    )
    assert only(problems, "bad-day").location.line == 2


def test_limits_can_be_turned_off() -> None:
    sequence, problems = load(
        """
        limits:
          min_gap: none
          max_per_week: none
        steps:
          - id: intro
            email: intro
        """
    )
    assert problems == [] and sequence is not None
    assert sequence.limits.min_gap is None
    assert sequence.limits.max_per_week is None


def test_without_context_references_are_not_checked() -> None:
    sequence, problems = load("steps:\n  - id: intro\n    email: anything\n", None)
    assert problems == [] and sequence is not None
