"""Tests for template parsing, the render context, rendering and static analysis."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequencer.core.errors import TemplateRenderError, TemplateSecurityError, TemplateSyntaxError
from sequencer.core.model import Template, TemplateKind
from sequencer.core.problems import Problem, Severity
from sequencer.core.templates import (
    CONTEXT_NAMES,
    STANDARD_PROSPECT_FIELDS,
    FieldUse,
    Renderer,
    StepInfo,
    analyze,
    build_context,
    check_template,
    parse_template,
)

PATH = "templates/intro.j2"
STEP = StepInfo(id="intro", attempt=1, total=3, channel="email")


def source(body: str, *front: str) -> str:
    """A template file: front matter lines (a subject by default) and a body."""
    lines = list(front) or ["subject: \"Hello {{ prospect.first_name | default('there') }}\""]
    return "---\n" + "".join(f"{line}\n" for line in lines) + "---\n" + body


def parsed(text: str, **kwargs: str) -> Template:
    template, problems = parse_template("intro", PATH, text, **kwargs)
    assert template is not None, [p.format() for p in problems]
    assert problems == []
    return template


def problems_of(text: str, **kwargs: str) -> tuple[Template | None, list[Problem]]:
    return parse_template("intro", PATH, text, **kwargs)


def only(problems: list[Problem], code: str) -> Problem:
    found = [p for p in problems if p.code == code]
    assert len(found) == 1, [p.format() for p in problems]
    return found[0]


def context(
    prospect: Mapping[str, str] | None = None,
    sender: Mapping[str, str] | None = None,
    unsubscribe_url: str = "https://example.com/u/abc",
) -> dict[str, object]:
    return build_context(
        prospect={"email": "ada@example.com", **(prospect or {})},
        sender=sender if sender is not None else {"name": "Sam Seller", "company": "Acme"},
        step=STEP,
        unsubscribe_url=unsubscribe_url,
    )


def render_body(body: str, prospect: Mapping[str, str] | None = None) -> str:
    return Renderer().render(parsed(source(body)), context(prospect)).text


# --- front matter ---------------------------------------------------------------------------


def test_parses_front_matter_and_body() -> None:
    text = (
        "---\n"
        'subject: "{{ prospect.company }}\'s onboarding backlog"\n'
        "name: Intro for inbound demo requests\n"
        "tags: [intro, inbound]\n"
        "description: first touch\n"
        "---\n"
        'Hi {{ prospect.first_name | default("there") }},\n'
        "{{ footer }}\n"
    )
    template = parsed(text, html_text="<p>Hi</p>\n")
    assert template.name == "intro"
    assert template.path == PATH
    assert template.subject == "{{ prospect.company }}'s onboarding backlog"
    assert template.title == "Intro for inbound demo requests"
    assert template.tags == ("intro", "inbound")
    assert template.kind is TemplateKind.EMAIL
    assert template.subject_line == 2
    assert template.body_line == 7
    assert template.body == 'Hi {{ prospect.first_name | default("there") }},\n{{ footer }}\n'
    assert template.html == "<p>Hi</p>\n"
    assert template.html_path == "templates/intro.html.j2"


def test_script_needs_no_subject() -> None:
    template = parsed(source("Ask {{ prospect.first_name }} about Q3.\n", "kind: script"))
    assert template.kind is TemplateKind.SCRIPT
    assert template.subject == ""


def test_explicit_html_path_is_kept() -> None:
    template = parsed(source("Hi\n"), html_text="<p>Hi</p>", html_path="t/other.html.j2")
    assert template.html_path == "t/other.html.j2"


def test_crlf_files_parse_with_the_same_lines() -> None:
    text = source("Hi\n{{ prospect.first_name }\n").replace("\n", "\r\n")
    _, problems = problems_of(text)
    assert only(problems, "template-syntax").location.line == 5


def test_missing_front_matter_hint_shows_the_three_lines() -> None:
    template, problems = problems_of("Hi {{ prospect.first_name }}\n")
    assert template is None
    problem = only(problems, "missing-front-matter")
    assert (problem.location.line, problem.location.column) == (1, 1)
    assert problem.hint is not None
    hint_lines = [line.strip() for line in problem.hint.splitlines()]
    assert hint_lines[-3:] == [
        "---",
        'subject: "Quick question about {{ prospect.company }}"',
        "---",
    ]


def test_unterminated_front_matter() -> None:
    template, problems = problems_of('---\nsubject: "Hi"\nHi there\n')
    assert template is None
    problem = only(problems, "unterminated-front-matter")
    assert problem.location.line == 1
    assert problem.hint is not None
    assert [line.strip() for line in problem.hint.splitlines()][-1] == "---"


def test_yaml_error_points_at_the_file_line() -> None:
    template, problems = problems_of(source("Hi\n", 'subject: "Hi"', "tags: [intro"))
    assert template is None
    problem = only(problems, "invalid-front-matter")
    assert problem.location.path == PATH
    assert problem.location.line is not None and problem.location.line >= 3
    assert "not valid YAML" in problem.message


def test_unquoted_jinja_subject_gets_a_quoting_hint() -> None:
    template, problems = problems_of(source("Hi\n", "subject: {{ prospect.company }} rocks"))
    assert template is None
    problem = only(problems, "invalid-front-matter")
    assert problem.location.line == 2
    assert problem.hint is not None and "quote" in problem.hint


def test_front_matter_must_be_a_mapping() -> None:
    template, problems = problems_of(source("Hi\n", "- subject", "- name"))
    assert template is None
    assert only(problems, "invalid-front-matter").location.line == 2


def test_unknown_key_suggests_the_close_one() -> None:
    template, problems = problems_of(source("Hi\n", 'subject: "Hi"', "tag: [intro]"))
    problem = only(problems, "unknown-key")
    assert (problem.location.line, problem.location.column) == (3, 1)
    assert problem.hint == "did you mean 'tags'?"
    assert template is not None  # the rest of the template is fine, so later checks can run


def test_unknown_key_without_a_close_match_lists_the_allowed_keys() -> None:
    _, problems = problems_of(source("Hi\n", 'subject: "Hi"', "owner: sam"))
    hint = only(problems, "unknown-key").hint
    assert hint is not None and "subject, name, tags, kind, description" in hint


def test_duplicate_key() -> None:
    _, problems = problems_of(source("Hi\n", 'subject: "Hi"', 'subject: "Hello"'))
    problem = only(problems, "duplicate-key")
    assert problem.location.line == 3
    assert "first on line 2" in problem.message


@pytest.mark.parametrize(
    ("line", "key", "fatal"),
    [
        ("subject: 42", "subject", True),
        ("subject: [a, b]", "subject", True),
        ("tags: intro", "tags", False),
        ("tags: [intro, 3]", "tags", False),
        ("name: [a]", "name", False),
        ("description: {a: 1}", "description", False),
    ],
)
def test_wrong_types(line: str, key: str, fatal: bool) -> None:
    front = [line] if key == "subject" else ['subject: "Hi"', line]
    template, problems = problems_of(source("Hi\n", *front))
    problem = only(problems, "wrong-type")
    assert problem.message.startswith(f"{key} must be")
    assert problem.location.line == len(front) + 1
    assert (template is None) is fatal


@pytest.mark.parametrize(("value", "suggestion"), [("Email", "'email'"), ("scrpt", "'script'")])
def test_invalid_kind(value: str, suggestion: str) -> None:
    template, problems = problems_of(source("Hi\n", 'subject: "Hi"', f"kind: {value}"))
    assert template is None
    problem = only(problems, "invalid-kind")
    assert problem.location.line == 3
    assert problem.hint == f"did you mean {suggestion}?"


@pytest.mark.parametrize(
    "front", [["name: Intro"], ['subject: ""'], ["subject:"], ['subject: "  "']]
)
def test_email_without_subject(front: list[str]) -> None:
    template, problems = problems_of(source("Hi\n", *front))
    assert template is None
    problem = only(problems, "missing-subject")
    assert problem.severity is Severity.ERROR
    assert problem.hint is not None and "kind: script" in problem.hint


def test_empty_front_matter_is_an_email_without_subject() -> None:
    _, problems = problems_of("---\n---\nHi\n")
    only(problems, "missing-subject")


def test_syntax_error_on_body_line_3_maps_to_the_file_line() -> None:
    front = ['subject: "Hi"', "name: Intro", "tags: [intro]"]
    front_matter_lines = len(front) + 2  # the two --- lines
    body = "Hi {{ prospect.first_name }},\n\nSee {% endif %}\nBye\n"
    template, problems = problems_of(source(body, *front))
    assert template is None
    problem = only(problems, "template-syntax")
    assert problem.location.path == PATH
    assert problem.location.line == front_matter_lines + 3


def test_syntax_error_in_subject_points_at_the_subject_line() -> None:
    _, problems = problems_of(source("Hi\n", "name: Intro", 'subject: "Hi {{ prospect.x "'))
    problem = only(problems, "template-syntax")
    assert problem.location.line == 3
    assert "subject" in problem.message


def test_syntax_error_in_html_points_at_the_html_file() -> None:
    _, problems = problems_of(source("Hi\n"), html_text="<p>\n{% if x %}\n</p>\n")
    problem = only(problems, "template-syntax")
    assert problem.location.path == "templates/intro.html.j2"
    assert problem.location.line is not None and problem.location.line >= 2


def test_unknown_filter_suggests_a_known_one() -> None:
    _, problems = problems_of(source("Hi {{ prospect.first_name | defualt('there') }}\n"))
    problem = only(problems, "template-syntax")
    assert problem.location.line == 4
    assert problem.hint == "did you mean 'default'?"


def test_problems_come_in_file_order() -> None:
    text = source("{% if %}\n", "owner: sam", 'subject: "Hi"', "tags: x")
    _, problems = problems_of(text)
    lines = [p.location.line or 0 for p in problems]
    assert lines == sorted(lines)
    assert {p.code for p in problems} == {"unknown-key", "wrong-type", "template-syntax"}


@given(st.text(max_size=200))
def test_parse_never_crashes(text: str) -> None:
    template, problems = parse_template("x", "x.j2", text)
    assert template is not None or problems


# --- the render context ---------------------------------------------------------------------


def test_empty_fields_are_absent_and_names_are_derived() -> None:
    ctx = build_context(
        prospect={"first_name": "", "last_name": "  ", "name": "Ada Lovelace", "industry": ""},
        sender={"first_name": "Sam", "last_name": "Seller"},
        step=STEP,
        unsubscribe_url="https://u",
    )
    r = Renderer()
    text = "{{ prospect.first_name }}|{{ prospect.industry | default('-') }}|{{ sender.name }}"
    assert r.render_text(text, ctx, where="x") == "Ada|-|Sam Seller"
    assert r.render_text("{{ prospect.last_name is defined }}", ctx, where="x") == "False"


def test_name_from_first_and_last_name() -> None:
    ctx = context({"first_name": "Ada", "last_name": "Lovelace"})
    assert Renderer().render_text("{{ prospect.name }}", ctx, where="x") == "Ada Lovelace"


@pytest.mark.parametrize(
    ("sender", "url", "footer"),
    [
        (
            {"company": "Acme", "postal_address": "1 Main St"},
            "https://u",
            "Acme · 1 Main St\nDon't want to hear from me again? https://u",
        ),
        ({"company": "Acme"}, "https://u", "Acme\nDon't want to hear from me again? https://u"),
        ({"postal_address": "1 Main St"}, "", "1 Main St"),
        ({}, "https://u", "Don't want to hear from me again? https://u"),
        ({}, "", ""),
    ],
)
def test_footer_has_only_the_parts_that_exist(
    sender: dict[str, str], url: str, footer: str
) -> None:
    assert context(sender=sender, unsubscribe_url=url)["footer"] == footer


def test_context_is_read_only_and_copyable() -> None:
    ctx = context({"industry": "logistics"})
    prospect = ctx["prospect"]
    with pytest.raises(AttributeError):
        prospect.industry = "x"  # type: ignore[attr-defined]
    assert copy.deepcopy(ctx) == ctx
    assert pickle.loads(pickle.dumps(prospect)) == prospect
    assert "industry" in repr(prospect) and "logistics" not in repr(prospect)


def test_step_fields() -> None:
    out = Renderer().render_text(
        "{{ step.id }} {{ step.attempt }}/{{ step.total }} {{ step.channel }}"
        "{% if step.attempt > 1 %} again{% endif %}",
        context(),
        where="x",
    )
    assert out == "intro 1/3 email"


# --- rendering ------------------------------------------------------------------------------


def test_render_with_defaults() -> None:
    body = "Hi {{ prospect.first_name | default('there') }}, {{ prospect.company | d('team') }}\n"
    assert render_body(body) == "Hi there, team\n"
    assert render_body(body, prospect={"first_name": "Ada"}) == "Hi Ada, team\n"


def test_text_env_trims_blocks_and_keeps_the_trailing_newline() -> None:
    body = (
        "Hi\n{% if prospect.company is defined %}\n  at {{ prospect.company }}\n{% endif %}\nBye\n"
    )
    assert render_body(body, prospect={"company": "Acme"}) == "Hi\n  at Acme\nBye\n"


def test_missing_field_error_names_file_line_and_fix() -> None:
    template = parsed(source("Hi,\nIn {{ prospect.industry }} you know...\n"))
    with pytest.raises(TemplateRenderError) as info:
        Renderer().render(template, context())
    assert str(info.value) == (
        f"{PATH}:{template.body_line + 1}: prospect has no field 'industry'; give it a default: "
        "{{ prospect.industry | default('...') }}"
    )


def test_missing_field_inside_a_loop_reports_the_inner_line() -> None:
    body = "a\n{% for i in range(2) %}\nx {{ i }}\n{{ prospect.industry }}\n{% endfor %}\n"
    template = parsed(source(body))
    with pytest.raises(TemplateRenderError, match=rf"^{PATH}:{template.body_line + 3}: "):
        Renderer().render(template, context())


def test_missing_field_in_subject_points_at_the_subject_line() -> None:
    template = parsed(source("Hi\n", "name: x", 'subject: "About {{ prospect.industry }}"'))
    with pytest.raises(TemplateRenderError, match=rf"^{PATH}:3: prospect has no field"):
        Renderer().render(template, context())


def test_missing_field_with_an_odd_name_suggests_item_syntax() -> None:
    with pytest.raises(TemplateRenderError, match=r"prospect\['job title'\] \| default"):
        render_body("{{ prospect['job title'] }}")


def test_missing_top_level_name_suggests_a_context_name() -> None:
    with pytest.raises(TemplateRenderError, match=r"'prospects' is not a variable.*'prospect'"):
        render_body("{{ prospects.first_name }}")


def test_custom_fields_by_attribute_and_item() -> None:
    out = render_body(
        "{{ prospect.industry }}/{{ prospect['industry'] }}/{{ prospect['seat count'] }}",
        prospect={"industry": "logistics", "seat count": "40"},
    )
    assert out == "logistics/logistics/40"


@pytest.mark.parametrize("name", ["items", "keys", "values", "get", "update", "copy", "pop"])
def test_fields_named_like_dict_methods_work(name: str) -> None:
    out = render_body(
        f"{{{{ prospect.{name} }}}}={{{{ prospect['{name}'] }}}}", prospect={name: "v"}
    )
    assert out == "v=v"


@pytest.mark.parametrize("name", ["items", "keys", "get", "update", "copy", "setdefault"])
def test_fields_expose_no_methods(name: str) -> None:
    with pytest.raises(TemplateRenderError, match=f"prospect has no field '{name}'"):
        render_body(f"{{{{ prospect.{name} }}}}")


def test_in_test_on_fields() -> None:
    body = "{{ 'company' in prospect }} {{ 'industry' in prospect }}"
    assert render_body(body, prospect={"company": "Acme"}) == "True False"


def test_subject_is_one_line() -> None:
    template = parsed(source("Hi\n", 'subject: "  Re:   {{ prospect.company }}  "'))
    prospect = {"company": "Acme\r\nBcc: victim@example.com\n\tInc\u2028"}
    message = Renderer().render(template, context(prospect))
    assert message.subject == "Re: Acme Bcc: victim@example.com Inc"


def test_html_part_escapes_prospect_data_and_text_part_does_not() -> None:
    template = parsed(
        source("Hi {{ prospect.company }}\n"), html_text="<p>Hi {{ prospect.company }}</p>\n"
    )
    message = Renderer().render(template, context({"company": "<script>alert(1)</script>"}))
    assert message.text == "Hi <script>alert(1)</script>\n"
    assert message.html == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>\n"


def test_html_missing_field_error_names_the_html_file() -> None:
    template = parsed(source("Hi\n"), html_text="<p>\n{{ prospect.industry }}</p>")
    with pytest.raises(TemplateRenderError, match=r"^templates/intro\.html\.j2:2: prospect has"):
        Renderer().render(template, context())


def test_script_renders_without_subject() -> None:
    template = parsed(source("Call {{ prospect.first_name | default('them') }}\n", "kind: script"))
    message = Renderer().render(template, context())
    assert (message.subject, message.text, message.html) == ("", "Call them\n", None)


def test_render_text_names_the_place() -> None:
    r = Renderer()
    assert r.render_text("Call {{ prospect.email }}", context(), where="s.yaml:40") == (
        "Call ada@example.com"
    )
    with pytest.raises(TemplateRenderError, match=r"^s\.yaml:40: prospect has no field 'phone'"):
        r.render_text("Call {{ prospect.phone }}", context(), where="s.yaml:40")
    with pytest.raises(TemplateRenderError, match=r"^s\.yaml:40 \(line 2 of the text\): "):
        r.render_text("Call\n{{ prospect.phone }}", context(), where="s.yaml:40")


def test_render_text_syntax_error() -> None:
    with pytest.raises(TemplateSyntaxError, match=r"^s\.yaml:40"):
        Renderer().render_text("{% if %}", context(), where="s.yaml:40")


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        ("{{ 1 / 0 }}", ZeroDivisionError),
        ("{{ prospect.email | wordwrap(0) }}", ValueError),
        ("{{ [1, 'a'] | sort }}", TypeError),
        ("{{ 'x' * 1000000 }}", OverflowError),
        ("{{ 3 ** 100000 }}", OverflowError),
        ("{{ range(10) | list * 100000 }}", OverflowError),
        ("{{ prospect.email + 1 }}", TypeError),
    ],
)
def test_other_errors_become_render_errors(body: str, cause: type[Exception]) -> None:
    template = parsed(source("ok\n" + body))
    with pytest.raises(TemplateRenderError) as info:
        Renderer().render(template, context())
    assert str(info.value).startswith(f"{PATH}:{template.body_line + 1}: rendering failed")
    assert isinstance(info.value.__cause__, cause)


def test_printing_python_objects_is_refused() -> None:
    with pytest.raises(TemplateSecurityError):
        render_body("{{ dict }}")


def test_renderer_reuses_compiled_templates_without_leaking_state() -> None:
    r = Renderer()
    template = parsed(source("Hi {{ prospect.first_name | default('there') }}"))
    assert r.render(template, context({"first_name": "Ada"})).text == "Hi Ada"
    assert r.render(template, context()).text == "Hi there"
    assert r.render(template, context({"first_name": "Grace"})).text == "Hi Grace"


# --- analysis -------------------------------------------------------------------------------


def uses(body: str) -> dict[str, bool]:
    """Field -> whether every use has a default."""
    result: dict[str, bool] = {}
    for use in analyze(parsed(source(body, 'subject: "Hi"'))).prospect_fields:
        result[use.field] = result.get(use.field, True) and use.has_default
    return result


def test_analysis_finds_required_and_defaulted_fields() -> None:
    template = parsed(
        source(
            "Hi {{ prospect.first_name | default('there') }},\n"
            "{{ prospect.title }} at {{ prospect['company_size'] | d(10) }}\n"
            "{{ prospect.city | lower | default('') }}\n",
            'subject: "{{ prospect.company }}"',
        )
    )
    analysis = analyze(template)
    assert analysis.required_fields() == {"company", "title", "city"}
    assert FieldUse("first_name", 4, 7, True) in analysis.prospect_fields
    assert FieldUse("title", 5, 4, False) in analysis.prospect_fields
    assert FieldUse("company", 2, None, False) in analysis.prospect_fields


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{% if prospect.x is defined %}{{ prospect.x }}{% endif %}", {"x": True}),
        ("{% if prospect.x is defined and prospect.x %}{{ prospect.x }}{% endif %}", {"x": True}),
        ("{% if prospect.x is not defined %}hi{% else %}{{ prospect.x }}{% endif %}", {"x": True}),
        ("{% if prospect.x is undefined %}hi{% else %}{{ prospect.x }}{% endif %}", {"x": True}),
        ("{% if prospect.x is not defined %}{{ prospect.x }}{% endif %}", {"x": False}),
        ("{% if prospect.x is defined %}{% endif %}{{ prospect.x }}", {"x": False}),
        ("{% if prospect.x %}{{ prospect.x }}{% endif %}", {"x": False}),
        (
            "{% if prospect.a is not defined %}{% elif prospect.x is defined %}{{ prospect.x }}"
            "{{ prospect.a }}{% else %}{{ prospect.a }}{% endif %}",
            {"a": True, "x": True},
        ),
        ("{{ prospect.x if prospect.x is defined else 'there' }}", {"x": True}),
        ("{{ 'there' if prospect.x is not defined else prospect.x }}", {"x": True}),
        ("{{ prospect.x if prospect.y is defined else 'there' }}", {"x": False, "y": True}),
        ("{{ prospect.x is defined or prospect.y }}", {"x": True, "y": False}),
        ("{{ prospect.x is not defined or prospect.x }}", {"x": True}),
        ("{{ (prospect|attr('x')) | default('') }}", {"x": True}),
        ("{{ prospect['x'] is defined }}", {"x": True}),
    ],
)
def test_defaults_and_defined_guards(body: str, expected: dict[str, bool]) -> None:
    assert uses(body) == expected


def test_unknown_names_skip_context_globals_and_assignments() -> None:
    body = (
        "{% set greeting = 'Hi' %}{% for i in range(2) %}{{ loop.index }}{{ i }}{% endfor %}\n"
        "{% macro sig(who) %}{{ who }}{{ varargs }}{% endmacro %}{{ sig('x') }}{{ greeting }}\n"
        "{% set ns = namespace(n=0) %}{{ cycler('a').next() }}{{ joiner() }}{{ lipsum(1) }}\n"
        "{{ dict(a=1) }}{{ prospct.first_name }}{{ footer }}{{ sender.name }}{{ step.id }}\n"
        "{{ unsubscribe_url }} {{ senders }}\n"
    )
    template = parsed(source(body))
    assert analyze(template).unknown_names == (("prospct", 7), ("senders", 8))


def test_check_reports_unknown_variables_with_a_suggestion() -> None:
    template = parsed(source("Hi\n{{ prospct.first_name }}\n"))
    [problem] = check_template(template, [])
    assert problem.code == "unknown-variable"
    assert problem.severity is Severity.ERROR
    assert str(problem.location) == f"{PATH}:5"
    assert problem.hint is not None and problem.hint.startswith("did you mean 'prospect'?")


def test_check_reports_undefined_fields() -> None:
    template = parsed(source("Hi\nIn {{ prospect.industy }}\n"))
    [problem] = check_template(template, ["industry"])
    assert problem.code == "undefined-field"
    assert str(problem.location) == f"{PATH}:5:7"
    assert problem.message == (
        "template uses prospect.industy, which no prospect field defines, without a default"
    )
    assert problem.hint == (
        "did you mean 'industry'? or declare it under `fields:` in the sequence, "
        "or write {{ prospect.industy | default('...') }}"
    )


def test_check_accepts_declared_standard_and_defaulted_fields() -> None:
    body = (
        "{{ prospect.first_name }} {{ prospect.industry }} {{ prospect.region | default('') }}\n"
        "{% if prospect.plan is defined %}{{ prospect.plan }}{% endif %}\n"
    )
    assert check_template(parsed(source(body)), ["industry"]) == []
    assert {"first_name", "company"} <= STANDARD_PROSPECT_FIELDS


def test_check_reports_unknown_sender_and_step_fields() -> None:
    body = "{{ sender.signatur }}\n{{ step.atempt }}\n{{ sender.calendar | default('') }}\n"
    problems = check_template(parsed(source(body)), [])
    by_code = {p.code: p for p in problems if p.severity is Severity.ERROR}
    assert by_code["unknown-sender-field"].location.line == 4
    assert by_code["unknown-sender-field"].hint is not None
    assert by_code["unknown-sender-field"].hint.startswith("did you mean 'signature'?")
    assert by_code["unknown-step-field"].location.line == 5
    assert by_code["unknown-step-field"].hint is not None
    assert by_code["unknown-step-field"].hint.startswith("did you mean 'attempt'?")
    [warning] = [p for p in problems if p.severity is Severity.WARNING]
    assert (warning.code, warning.location.line) == ("unknown-sender-field", 6)


def test_check_covers_subject_and_html_with_their_paths() -> None:
    template = parsed(
        source("Hi\n", "name: x", 'subject: "{{ prospect.industry }}"'),
        html_text="<p>\n{{ prospect.segment }}</p>",
    )
    problems = check_template(template, [])
    assert {(p.location.path, p.location.line) for p in problems} == {
        (PATH, 3),
        ("templates/intro.html.j2", 2),
    }


def test_check_reports_syntax_errors_of_hand_built_templates() -> None:
    template = Template(name="x", path="x.j2", subject="Hi", body="a\n{% if %}", body_line=4)
    [problem] = check_template(template, [])
    assert (problem.code, problem.location.line) == ("template-syntax", 5)
    with pytest.raises(TemplateSyntaxError, match=r"^x\.j2:5: "):
        analyze(template)


@pytest.mark.parametrize(
    "body",
    [
        "{{ footer }}",
        "Stop here: {{ unsubscribe_url }}",
        "Not interested? Unsubscribe any time.",
        "Reply STOP to opt out.",
        "You can opt-out here.",
        "Optout below",
        "Just reply 'no' and I'll stop.",
        "Reply “remove” and you won't hear from me.",
        "Let me know if you'd rather not hear from me.",
        "{% if false %}{{ footer }}{% endif %}",
    ],
)
def test_offers_unsubscribe(body: str) -> None:
    assert analyze(parsed(source(body + "\n"))).offers_unsubscribe


@pytest.mark.parametrize(
    ("body", "subject"),
    [
        ("Thanks, talk soon.", '"Hi"'),
        ("Reply when you can.", '"Hi"'),
        ("{{ prospect.first_name }}", '"Reply STOP to unsubscribe {{ unsubscribe_url }}"'),
    ],
)
def test_does_not_offer_unsubscribe(body: str, subject: str) -> None:
    assert not analyze(parsed(source(body, f"subject: {subject}"))).offers_unsubscribe


def test_unsubscribe_in_the_html_part_counts() -> None:
    template = parsed(source("Hi\n"), html_text='<a href="{{ unsubscribe_url }}">x</a>')
    assert analyze(template).offers_unsubscribe


def test_context_names_are_the_documented_ones() -> None:
    ctx = context()
    assert set(ctx) == CONTEXT_NAMES
