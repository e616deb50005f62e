"""Known Jinja2 sandbox escapes fail with TemplateSecurityError, run nothing and are flagged."""

from __future__ import annotations

import os
import subprocess

import pytest

from sequencer.core.errors import TemplateRenderError, TemplateSecurityError
from sequencer.core.model import Template
from sequencer.core.templates import (
    Renderer,
    StepInfo,
    analyze,
    build_context,
    check_template,
    parse_template,
)

PATH = "templates/evil.j2"
FRONT = '---\nsubject: "Hi"\nname: Evil\n---\n'
BODY_LINE = 5


class Canary:
    """Records every call of its private method; a sandbox escape would have to reach it."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def _fire(self, *args: object) -> str:
        self.calls.append(args)
        return "FIRED"

    def __str__(self) -> str:
        return "canary"


# (template source, the first private name it reaches for)
ESCAPES = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "__class__"),
    ("{{ prospect.__class__ }}", "__class__"),
    ("{{ prospect.__dict__ }}", "__dict__"),
    ("{{ prospect['__dict__'] }}", "__dict__"),
    ("{{ prospect._values }}", "_values"),
    ("{{ cycler.__init__.__globals__ }}", "__init__"),
    ("{{ joiner.__init__.__globals__.os }}", "__init__"),
    ("{{ joiner.__init__.__globals__.os.system('echo pwned') }}", "__init__"),
    ("{{ namespace.__init__.__globals__ }}", "__init__"),
    ("{{ lipsum.__globals__ }}", "__globals__"),
    ("{{ lipsum.__globals__['os'].popen('id').read() }}", "__globals__"),
    ("{{ range.__globals__ }}", "__globals__"),
    ("{{ ''|attr('__class__') }}", "__class__"),
    ("{{ (prospect|attr('__class__')).__mro__ }}", "__class__"),
    ("{{ prospect|attr('__dict__') }}", "__dict__"),
    ("{{ 'x'.__class__.__base__.__subclasses__() }}", "__class__"),
    ("{{ '{0.__class__}'.format(prospect) }}", "__class__"),
    ("{{ '{0.__class__.__mro__}'.format('') }}", "__class__"),
    ("{{ '{x.__class__}'.format_map({'x': prospect}) }}", "__class__"),
    ("{{ ('{0.__class__}'|attr('format'))(prospect) }}", "__class__"),
    ("{{ '{0:{1.__class__}}'.format(1, prospect) }}", "__class__"),
    ("{{ self._TemplateReference__context }}", "_TemplateReference__context"),
    ("{{ self.__dict__ }}", "__dict__"),
    ("{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}", "__class__"),
    ("{{ [prospect]|map(attribute='__class__')|list }}", "__class__"),
    ("{{ [prospect]|selectattr('__class__')|list }}", "__class__"),
    ("{{ [prospect, prospect]|sort(attribute='__class__.__name__')|list }}", "__class__"),
    ("{{ [prospect]|groupby('__class__')|list }}", "__class__"),
    ("{{ prospect.__class__ | default('safe') }}", "__class__"),
    ("{{ prospect.__class__ is defined }}", "__class__"),
    ("{% set x = prospect.__class__ %}", "__class__"),
    ("{% if prospect.__class__ %}yes{% endif %}", "__class__"),
    ("{{ prospect.first_name.__class__ }}", "__class__"),
    ("{{ prospect.missing.__class__ }}", "__class__"),
    ("{{ loop.__class__ }}", "__class__"),
    ("{% macro m() %}{% endmacro %}{{ m.__globals__ }}", "__globals__"),
    ("{{ step.__class__ }}", "__class__"),
    # The canary is reachable as data; none of these may reach its private method.
    ("{{ prospect.canary._fire() }}", "_fire"),
    ("{{ prospect['canary']['_fire']() }}", "_fire"),
    ("{{ (prospect.canary|attr('_fire'))() }}", "_fire"),
    ("{{ prospect.canary.__class__._fire(prospect.canary) }}", "__class__"),
    ("{{ prospect.canary.__getattribute__('_fire')() }}", "__getattribute__"),
    ("{{ '{0._fire}'.format(prospect.canary) }}", "_fire"),
    ("{{ '{c._fire.__call__}'.format_map({'c': prospect.canary}) }}", "_fire"),
    ("{{ [prospect.canary]|map(attribute='_fire')|list }}", "_fire"),
]
# Python objects printed as text: no private name, but nothing useful to show a reader either.
PRINTED_OBJECTS = [
    "{{ 'a'.format_map }}",
    "{{ 'a'.format }}",
    "{{ ''|attr('format_map') }}",
    "{{ cycler }}",
    "{{ dict }}",
    "{{ lipsum }}",
    "{{ namespace }}",
]
ESCAPE_IDS = [source for source, _ in ESCAPES]


@pytest.fixture
def canary() -> Canary:
    return Canary()


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Replaces the usual ways to run a program with recorders."""
    ran: list[object] = []

    def record(*args: object, **kwargs: object) -> int:
        ran.append(args)
        return 0

    monkeypatch.setattr(os, "system", record)
    monkeypatch.setattr(os, "popen", record)
    monkeypatch.setattr(subprocess, "Popen", record)
    return ran


def context(canary: Canary) -> dict[str, object]:
    return build_context(
        prospect={"email": "ada@example.com", "first_name": "Ada", "canary": canary},  # type: ignore[dict-item]
        sender={"name": "Sam", "company": "Acme"},
        step=StepInfo(id="s1", attempt=1, total=2, channel="email"),
        unsubscribe_url="https://example.com/u",
    )


def evil(body: str, *, html: bool = False) -> Template:
    if html:
        text, html_text = FRONT + "Hi\n", "<p>\n" + body + "\n</p>"
    else:
        text, html_text = FRONT + "Hi\n" + body + "\n", None
    template, problems = parse_template("evil", PATH, text, html_text=html_text)
    assert template is not None, [p.format() for p in problems]
    return template


@pytest.mark.parametrize(("body", "name"), ESCAPES, ids=ESCAPE_IDS)
def test_escape_fails_and_runs_nothing(
    body: str, name: str, canary: Canary, commands: list[object]
) -> None:
    with pytest.raises(TemplateSecurityError) as info:
        Renderer().render(evil(body), context(canary))
    message = str(info.value)
    assert message == (
        f"{PATH}:{BODY_LINE + 1}: template tried to reach Python internals ({name!r}); "
        "this is not allowed and nothing was run"
    )
    assert "<class" not in message
    assert canary.calls == []
    assert commands == []


@pytest.mark.parametrize(("body", "name"), ESCAPES, ids=ESCAPE_IDS)
def test_escape_fails_in_the_html_part_too(body: str, name: str, canary: Canary) -> None:
    with pytest.raises(TemplateSecurityError, match=rf"^templates/evil\.html\.j2:2: .*{name}"):
        Renderer().render(evil(body, html=True), context(canary))
    assert canary.calls == []


@pytest.mark.parametrize(("body", "name"), ESCAPES, ids=ESCAPE_IDS)
def test_escape_fails_in_inline_text(body: str, name: str, canary: Canary) -> None:
    with pytest.raises(TemplateSecurityError, match=r"^sequences/cold\.yaml:40: "):
        Renderer().render_text(body, context(canary), where="sequences/cold.yaml:40")
    assert canary.calls == []


@pytest.mark.parametrize("body", PRINTED_OBJECTS)
def test_printing_python_objects_fails(body: str, canary: Canary) -> None:
    with pytest.raises(TemplateSecurityError, match="nothing was run"):
        Renderer().render(evil(body), context(canary))


@pytest.mark.parametrize("body", ["{{ request }}", "{{ config }}", "{{ config.items() }}"])
def test_flask_style_globals_are_just_undefined(body: str, canary: Canary) -> None:
    with pytest.raises(TemplateRenderError, match="is not a variable templates can use"):
        Renderer().render(evil(body), context(canary))


def test_escape_in_subject_points_at_the_subject_line(canary: Canary) -> None:
    text = '---\nname: Evil\nsubject: "Hi {{ prospect.__class__ }}"\n---\nHi\n'
    template, _ = parse_template("evil", PATH, text)
    assert template is not None
    with pytest.raises(TemplateSecurityError, match=rf"^{PATH}:3: "):
        Renderer().render(template, context(canary))


def test_fields_cannot_be_mutated(canary: Canary) -> None:
    ctx = context(canary)
    renderer = Renderer()
    with pytest.raises(TemplateRenderError, match="prospect has no field 'update'"):
        renderer.render(evil("{{ prospect.update({'x': 1}) }}"), ctx)
    with pytest.raises(TemplateRenderError, match="prospect has no field 'x'"):
        renderer.render(evil("{{ prospect.x }}"), ctx)
    assert renderer.render_text("{{ prospect.first_name }}", ctx, where="x") == "Ada"


@pytest.mark.parametrize(
    "body",
    [
        "{% set d = {'a': 1} %}{{ d.update({'a': 2}) }}",
        "{% set d = {'a': 1} %}{% set _ = d.pop('a') %}",
        "{% set items = [1] %}{{ items.append(2) }}",
        "{% set items = [1] %}{{ items.clear() }}",
    ],
)
def test_literals_cannot_be_mutated(body: str, canary: Canary) -> None:
    with pytest.raises(TemplateSecurityError):
        Renderer().render(evil(body), context(canary))


def test_legitimate_use_of_the_same_objects_still_works(canary: Canary) -> None:
    body = (
        "{{ prospect.first_name }} {{ prospect.canary }} {{ '{0}!'.format(prospect.first_name) }} "
        "{{ [prospect]|map(attribute='first_name')|join }} "
        "{% set ns = namespace(n=1) %}{% set ns.n = ns.n + 1 %}{{ ns.n }} "
        "{{ cycler('a', 'b').next() }}"
    )
    out = Renderer().render(evil(body), context(canary)).text
    assert out == "Hi\nAda canary Ada! Ada 2 a\n"
    assert "<class" not in out
    assert canary.calls == []


@pytest.mark.parametrize(("body", "name"), ESCAPES, ids=ESCAPE_IDS)
def test_analysis_flags_the_private_name_on_its_line(body: str, name: str) -> None:
    template = evil(body)
    assert (name, BODY_LINE + 1) in analyze(template).unsafe_accesses
    problems = [p for p in check_template(template, ["canary"]) if p.code == "unsafe-template"]
    assert problems, body
    assert all(str(p.location) == f"{PATH}:{BODY_LINE + 1}" for p in problems)
    assert any(repr(name) in p.message for p in problems)


def test_analysis_flags_each_line() -> None:
    template = evil("ok\n{{ cycler.__init__ }}\nfine\n{{ ''|attr('__class__') }}")
    assert analyze(template).unsafe_accesses == (
        ("__init__", BODY_LINE + 2),
        ("__class__", BODY_LINE + 4),
    )


@pytest.mark.parametrize("body", ["{{ request }}", "{{ 'a'.format_map }}", "{{ '{0}'.format(1) }}"])
def test_analysis_does_not_flag_harmless_names(body: str) -> None:
    assert analyze(evil(body)).unsafe_accesses == ()
