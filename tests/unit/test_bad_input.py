"""Bad input, generated: sequence YAML (arbitrary text and the real examples mutated), templates
(Jinja-ish sources with front matter, checked and rendered in the sandbox) and CSV files (odd
headers, cells and encodings). Whatever comes in, the only way out is the project's own
errors or problems, each located (file, line, column or field) - never a TypeError, KeyError,
RecursionError or UnicodeDecodeError, never a crash. The examples pinned with ``@example``
are bugs these properties found, kept as regressions.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from sequencer.catalog import CONFIG_NAME, Project, load_catalog
from sequencer.core.errors import ConfigError, TemplateError, TemplateSecurityError
from sequencer.core.model import Template
from sequencer.core.problems import Problem, Severity
from sequencer.core.prospects import ProspectRow, RowProblem, email_problem
from sequencer.core.sequence_checks import ProjectContext
from sequencer.core.sequences import parse_sequence
from sequencer.core.template_checks import check_template
from sequencer.core.templates import Renderer, StepInfo, build_context, parse_template
from sequencer.runtime.enrollment import read_csv

REPO = Path(__file__).resolve().parents[2]
SEQUENCE_PATH = "sequences/fuzz.yaml"
TEMPLATE_PATH = "templates/fuzz.j2"


@functools.cache
def project_context() -> ProjectContext:
    """The repository's own templates and sequencer.yaml, as `sequencer validate` sees them."""
    project = Project(REPO, REPO / "sequences", REPO / "templates", REPO / CONFIG_NAME)
    catalog = load_catalog(project)
    return ProjectContext(
        templates=catalog.templates,
        template_names=frozenset(catalog.templates),
        config=catalog.config,
        templates_dir="templates",
    )


def assert_located(problems: list[Problem], path: str) -> None:
    """Every problem names the file, and every error with a place names line and column or a
    field; the text of each formats without error."""
    for problem in problems:
        assert problem.location.path == path, problem
        assert problem.message.strip(), problem
        text = problem.format()
        assert text.startswith(f"{path}"), text
        if problem.location.line is not None:
            assert problem.location.line >= 1, problem


# --- sequence YAML ----------------------------------------------------------------------------

EXAMPLES = [p.read_text(encoding="utf-8") for p in sorted((REPO / "sequences").glob("*.yaml"))]
KEYS = [
    "description", "schedule", "timezone", "fallback_timezone", "days", "hours", "holidays",
    "stop", "reply", "company_reply", "out_of_office", "action", "default_pause", "max_pause",
    "limits", "min_gap", "max_per_week", "mailbox", "fields", "pools", "templates",
    "when_exhausted", "steps", "id", "delay", "email", "call", "linkedin", "task", "title",
    "script", "thread", "anytime", "rotate", "template", "allow_reuse", "exclusive",
    "stpes", "dealy", "emial", "-", "", "<<", "? x",
]  # fmt: skip
VALUES = [
    "", "~", "null", "yes", "no", "on", "0", "-1", "1e400", "99999999999999999999999", "0x1F",
    "[]", "{}", "[a, [b, [c]]]", "{rotate: }", "{template: }", "[mon, funday]", "'", '"',
    "'unclosed", "!!int abc", "!!float x", "!!timestamp soon", "!!binary a", "!!python/object x",
    "&a [*a]", "*nowhere", "&b {x: *b}", "2025-13-45", "09:00-08:00", "25:00-26:00", "9-5",
    "immediately", "-3 days", "0 days", "999999999 business days", "1e9 hours", "3 fortnights",
    "Mars/Olympus", "prospect", "UTC", "America/New_York", "[XX, US]", "{{ prospect.x }}",
    "|", ">", "%", "@", "`", "\t", "\x00", "\ufeff", "\u202e", "é" * 3,
    "value-add", "cold-intro", "call-cold-first", "new", "reuse", "stop", "pause", "ignore",
]  # fmt: skip


MUTATIONS = ["delete", "repeat", "swap", "indent", "dedent", "key", "value", "text"]


@st.composite
def mutated_sequences(draw: st.DrawFn) -> str:
    """A real example sequence with a few lines deleted, repeated, swapped, re-indented or
    given another key or value."""
    lines = draw(st.sampled_from(EXAMPLES)).split("\n")
    for _ in range(draw(st.integers(1, 5))):
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        action = draw(
            st.sampled_from(
                ["delete", "repeat", "swap", "indent", "dedent", "key", "value", "text"]
            )
        )
        if action == "delete" and len(lines) > 1:
            del lines[index]
        elif action == "repeat":
            lines.insert(index, line)
        elif action == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], line
        elif action == "indent":
            lines[index] = " " * draw(st.integers(1, 5)) + line
        elif action == "dedent":
            lines[index] = line[draw(st.integers(1, 4)) :]
        elif action == "key" and ":" in line:
            head, _, rest = line.partition(":")
            indent = head[: len(head) - len(head.lstrip(" -"))]
            lines[index] = f"{indent}{draw(st.sampled_from(KEYS))}:{rest}"
        elif action == "value" and ":" in line:
            head = line.partition(":")[0]
            value = draw(st.sampled_from(VALUES) | st.text(max_size=12))
            lines[index] = f"{head}: {value}"
        else:
            lines.insert(index, draw(st.text(max_size=30)))
    return "\n".join(lines)


def check_sequence_text(text: str) -> None:
    sequence, problems = parse_sequence("fuzz", SEQUENCE_PATH, text, project_context())
    assert_located(problems, SEQUENCE_PATH)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    # Either a sequence or the errors that explain why not: never both, never neither.
    assert (sequence is None) == bool(errors), [p.format() for p in problems]


@given(mutated_sequences())
@example("steps: &a [*a]\n")  # an alias inside its own anchor recursed forever
@example("description: !!int abc\nsteps: []\n")  # PyYAML's ValueError leaked
@example("description: !!timestamp soon\n")  # ... and its AttributeError
@example("description: a\x00b\n")  # a NUL byte failed before parsing began
def test_mutated_sequences_get_located_problems(text: str) -> None:
    check_sequence_text(text)


@given(st.text(max_size=300))
def test_any_text_as_a_sequence_gets_located_problems(text: str) -> None:
    check_sequence_text(text)


def test_billion_laughs_is_read_once_not_expanded() -> None:
    """Nine levels of nine aliases: 9**9 scalars if expanded; each anchor is read once."""
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 10):
        levels.append(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]")
    text = "\n".join(levels) + "\nsteps: *l9\n"
    sequence, problems = parse_sequence("fuzz", SEQUENCE_PATH, text, project_context())
    assert sequence is None
    assert any(p.code == "unknown-key" and p.location.line == 1 for p in problems)


def test_a_recursive_alias_is_named_at_its_place() -> None:
    _, problems = parse_sequence("fuzz", SEQUENCE_PATH, "steps: &a [*a]\n")
    assert [p.format().splitlines()[0] for p in problems] == [
        f"{SEQUENCE_PATH}:1:8: error: this anchor (&name) contains an alias (*name) to itself"
    ]


def test_a_value_its_tag_cannot_read_is_named_at_its_place() -> None:
    _, problems = parse_sequence("fuzz", SEQUENCE_PATH, "description: !!int abc\nsteps: []\n")
    first = problems[0].format()
    assert first.startswith(f"{SEQUENCE_PATH}:1:14: error: 'abc' cannot be read"), first


def test_a_control_character_is_named_at_its_line_and_column() -> None:
    _, problems = parse_sequence("fuzz", SEQUENCE_PATH, "steps:\n  - id: a\x00b\n")
    (problem,) = problems
    assert str(problem.location) == f"{SEQUENCE_PATH}:2:10"
    assert "U+0000" in problem.message and "NUL" in (problem.hint or "")


# --- templates --------------------------------------------------------------------------------

FRONTS = [
    "subject: \"Hi {{ prospect.first_name | default('there') }}\"",
    "subject: Quick question",
    "subject: {{ prospect.first_name }}",
    "subject: !!int abc",
    "subject: !!timestamp soon",
    "subject: a\x00b",
    "subject: &a [*a]",
    "subject: [a, b]",
    "kind: script",
    "kind: postcard\nsubject: x",
    "subject: x\nsubject: y",
    "subject: x\ntags: [a, [b]]",
    "sbject: x",
    "? [a]\n: b",
    "",
]
PIECES = [
    "Hi ", "\n", "{{ prospect.first_name }}", "{{ prospect.first_name | default('there') }}",
    "{{ prospect.industry }}", "{{ prospect['company'] }}", "{{ prospect.missing_field }}",
    "{{ sender.signature }}", "{{ footer }}", "{{ unsubscribe_url }}", "{{ step.number }}",
    "{% if prospect.company %}at {{ prospect.company }}{% endif %}",
    "{% for i in range(3) %}{{ i }}{% endfor %}", "{% set x = 5 %}{{ x * 2 }}",
    "{{ nowhere }}", "{{ 1 / 0 }}", "{{ 'x' * 100000000 }}", "{{ prospect.first_name[9] }}",
    "{{ ''.__class__ }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ prospect.__class__ }}", "{{ cycler.__init__.__globals__ }}", "{{ lipsum }}",
    "{{ prospect|attr('__dict__') }}", "{{ '%s' | format(prospect) }}", "{{ self }}",
    "{{ range }}", "{{ prospect.first_name.upper }}", "{{ config }}", "{{ namespace() }}",
    "{% include 'other.j2' %}", "{% extends 'base.j2' %}", "{% import 'm.j2' as m %}",
    "{% macro m() %}x{% endmacro %}{{ m() }}", "{# note #}", "{{", "}}", "{%", "%}",
    "{% if %}", "{% endfor %}", "{{ prospect.first_name | nofilter }}", "{% raw %}{{{% endraw %}",
]  # fmt: skip
#: What leaks when a sandbox does not hold: a Python object's repr.
LEAK = re.compile(r"<(class|function|module|built-in|bound method|method)\b|object at 0x")


@st.composite
def template_texts(draw: st.DrawFn) -> str:
    front = draw(st.sampled_from(FRONTS) | st.text(max_size=30))
    pieces = draw(st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=8))
    opening = draw(st.sampled_from(["---\n", "---\n", "--\n", ""]))
    closing = draw(st.sampled_from(["\n---\n", "\n---\n", "\n"]))
    return f"{opening}{front}{closing}{''.join(pieces)}"


def render_context(with_industry: bool) -> dict[str, object]:
    prospect = {"email": "dana@globex.example", "first_name": "Dana", "company": "Globex"}
    if with_industry:
        prospect["industry"] = "Logistics"
    return build_context(
        prospect=prospect,
        sender={"name": "Ana Reyes", "signature": "Ana", "company": "Northwind"},
        step=StepInfo("intro", 1, 3, "email"),
        unsubscribe_url="https://example.invalid/u/token",
    )


@given(template_texts(), st.booleans())
@example("---\nsubject: !!int abc\n---\nHi\n", False)  # PyYAML's ValueError leaked
@example("---\nsubject: !!timestamp soon\n---\nHi\n", False)  # ... and its AttributeError
@example("---\nsubject: a\x00b\n---\nHi\n", False)  # a NUL byte failed before parsing began
def test_templates_fail_only_with_located_template_errors(text: str, industry: bool) -> None:
    template, problems = parse_template("fuzz", TEMPLATE_PATH, text)
    assert_located(problems, TEMPLATE_PATH)
    if template is None:
        assert any(p.severity is Severity.ERROR for p in problems)
        return
    assert_located(check_template(template, ["industry"]), TEMPLATE_PATH)
    render_in_the_sandbox(template, industry)


def render_in_the_sandbox(template: Template, industry: bool) -> None:
    try:
        rendered = Renderer().render(template, render_context(industry))
    except TemplateError as exc:
        # Named by file and line, or by file alone for a failure with no line of its own.
        assert str(exc).startswith(f"{TEMPLATE_PATH}:") or TEMPLATE_PATH in str(exc), exc
        return
    for part in (rendered.subject, rendered.text, rendered.html or ""):
        assert not LEAK.search(part), part
    assert "\n" not in rendered.subject


@given(st.lists(st.sampled_from([p for p in PIECES if "__" in p or "attr(" in p]), min_size=1))
def test_reaching_for_python_internals_is_refused(pieces: list[str]) -> None:
    template, problems = parse_template(
        "fuzz", TEMPLATE_PATH, "---\nsubject: x\n---\n" + "".join(pieces)
    )
    assert template is not None, problems
    try:
        rendered = Renderer().render(template, render_context(True))
    except TemplateSecurityError as exc:
        assert "nothing was run" in str(exc) and str(exc).startswith(TEMPLATE_PATH)
        return
    except TemplateError:
        return  # refused on the way (an undefined name), which is as good
    raise AssertionError(f"rendered {pieces!r} as {rendered.text!r}")


# --- CSV files --------------------------------------------------------------------------------

HEADERS = [
    "email", "Email Address", "E-mail", "Work Email", "first_name", "First Name", "Name",
    "last_name", "company", "Company Name", "timezone", "Time Zone", "title", "Industry",
    "domain", "Website", "", " ", "email", "\ufeffEmail", "1st", "__dunder__", "a\x00b",
]  # fmt: skip
CELLS = [
    "dana@globex.example", "DANA@Globex.Example", " ben@initech.example ", "not-an-email",
    "a@b", "@globex.example", "dana@", "dana@globex.example, ben@initech.example",
    "dana@globex..example", "dana@-globex.example", "dánа@glóbex.example", "x" * 1200,
    "", " ", "Dana", "Kim, Dana", "Dr. Dana Kim PhD", "America/New_York", "EST", "CET", "Mars",
    "\r\nBcc: victim@evil.example", "a\x00b", "=cmd|' /C calc'!A0", '"quoted"', "N/A",
]  # fmt: skip
ENCODINGS = ["utf-8", "utf-8-sig", "cp1252", "utf-16", "latin-1"]


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, str]:
    width = draw(st.integers(1, 5))
    header = [draw(st.sampled_from(HEADERS) | st.text(max_size=10)) for _ in range(width)]
    rows = draw(
        st.lists(
            st.lists(st.sampled_from(CELLS) | st.text(max_size=15), max_size=width + 1),
            max_size=8,
        )
    )
    out = io.StringIO(newline="")
    dialect = draw(st.sampled_from(["excel", "excel-tab"]))
    writer = csv.writer(out, dialect=dialect)
    writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.booleans()):
        text = text.replace("\r\n", "\n")
    encoding = draw(st.sampled_from(ENCODINGS))
    return text.encode(encoding, errors="replace"), encoding


@given(csv_files())
@example((b"email,name\nj\xe9@x.example,Jos\xe9\n", "cp1252"))  # UnicodeDecodeError leaked
@example(("email\n".encode("utf-16"), "utf-16"))  # ... as it did for UTF-16
def test_csv_rows_are_each_imported_or_explained(data: tuple[bytes, str]) -> None:
    raw, _ = data
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "prospects.csv"
        path.write_bytes(raw)
        try:
            items = list(read_csv(path))
        except ConfigError as exc:
            # The whole file is unusable (no email column, not UTF-8, empty): said once, with
            # the file (and the line where there is one) and what to do.
            assert str(exc).startswith(str(path)), exc
            return
    lines = raw.count(b"\n") + 1
    for item in items:
        assert isinstance(item, ProspectRow | RowProblem), item
        assert 2 <= item.line <= lines, (item, lines)
        if isinstance(item, RowProblem):
            assert item.reason.strip(), item
            continue
        assert email_problem(item.email) is None, item
        assert item.fields["email"] == item.email
        for value in item.fields.values():
            assert "\x00" not in value
            assert len(value) <= 1000
