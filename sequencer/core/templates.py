"""Jinja2 templates: front matter parsing, the render context and sandboxed rendering."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import yaml
from jinja2 import Environment, StrictUndefined, Undefined, pass_environment
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.exceptions import TemplateSyntaxError as JinjaSyntaxError
from jinja2.filters import do_attr
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from sequencer.core.errors import TemplateRenderError, TemplateSecurityError, TemplateSyntaxError
from sequencer.core.model import Template, TemplateKind
from sequencer.core.problems import Location, Problem, did_you_mean, sort_problems
from sequencer.core.template_checks import (
    CONTEXT_NAMES,
    JINJA_GLOBALS,
    SENDER_FIELDS,
    STANDARD_PROSPECT_FIELDS,
    STEP_FIELDS,
    FieldUse,
    TemplateAnalysis,
    TemplatePart,
    analyze,
    check_template,
    html_path_for,
    syntax_problem,
    template_parts,
)
from sequencer.core.yamlnodes import CONSTRUCTOR_FAILURES, character_location, character_message

__all__ = [
    "CONTEXT_NAMES",
    "JINJA_GLOBALS",
    "SENDER_FIELDS",
    "STANDARD_PROSPECT_FIELDS",
    "STEP_FIELDS",
    "FieldUse",
    "RenderedMessage",
    "Renderer",
    "StepInfo",
    "TemplateAnalysis",
    "TemplateFields",
    "analyze",
    "build_context",
    "check_template",
    "parse_template",
]

FRONT_MATTER_KEYS = ("subject", "name", "tags", "kind", "description")
_FRONT_MATTER_EXAMPLE = (
    "start the file with front matter between two `---` lines:\n"
    "        ---\n"
    '        subject: "Quick question about {{ prospect.company }}"\n'
    "        ---"
)
_TEMPLATE_FILENAME = "<template>"  # what Jinja names code compiled from a string
_CACHE_SIZE = 512
# Keep one-line memory bombs like {{ 'x' * 10**10 }} from taking the worker down.
_MAX_REPEAT = 100_000
_MAX_EXPONENT = 1_000


# --- front matter ---------------------------------------------------------------------------


def _normalize(text: str) -> str:
    # Jinja counts \r\n, \r and \n as line ends; normalizing keeps our line numbers equal.
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _type_name(value: object) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list"}
    if value is None:
        return "empty"
    return names.get(type(value), "a mapping" if isinstance(value, dict) else "a value")


@dataclass
class _FrontMatter:
    path: str
    problems: list[Problem]
    values: dict[str, object] = field(default_factory=dict)
    places: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> its value's line, col

    def report(
        self, place: tuple[int, int | None], message: str, code: str, hint: str | None = None
    ) -> None:
        self.problems.append(Problem(Location(self.path, *place), message, hint=hint, code=code))

    def wrong_type(self, key: str, expected: str, hint: str) -> None:
        shown = _type_name(self.values[key])
        self.report(self.places[key], f"{key} must be {expected}, not {shown}", "wrong-type", hint)


def _read_front_matter(fm: _FrontMatter, lines: list[str], close: int) -> bool:
    """Fill ``fm`` from the YAML between line 1 and line ``close``; False if it is unusable."""
    source = "\n".join(lines[1:close])
    try:
        # The reader checks the characters up front: a NUL byte fails here already.
        loader = yaml.SafeLoader(source)
    except yaml.reader.ReaderError as exc:
        where = character_location("", source, exc)
        fm.report(
            ((where.line or 1) + 1, where.column),
            f"front matter is not valid YAML: {character_message(exc)}",
            "invalid-front-matter",
            "remove control characters (such as NUL bytes); save the file as UTF-8 text",
        )
        return False
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else {}
    except CONSTRUCTOR_FAILURES:
        # PyYAML's constructors raise these, not a YAMLError, for a scalar its `!!` tag
        # cannot read (`subject: !!int abc`); their own words say nothing useful.
        fm.report(
            (2, None),
            "front matter is not valid YAML: a value tagged with `!!` is not of that type",
            "invalid-front-matter",
            "remove the `!!` tag, or write a value of that type",
        )
        return False
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 2  # the YAML starts on file line 2
        # Unquoted Jinja is the usual culprit: YAML reads `{{` as the start of a mapping.
        hint = 'quote values that contain Jinja: subject: "{{ prospect.first_name }}, hi"'
        fm.report(
            (line, mark.column + 1 if mark is not None else None),
            f"front matter is not valid YAML: {getattr(exc, 'problem', None) or exc}",
            "invalid-front-matter",
            hint if "{" in lines[min(line, len(lines)) - 1] else None,
        )
        return False
    finally:
        loader.dispose()
    if root is None:
        return True
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        place = (root.start_mark.line + 2, root.start_mark.column + 1)
        message = "front matter must be `key: value` lines"
        fm.report(place, message, "invalid-front-matter", _FRONT_MATTER_EXAMPLE)
        return False
    for key_node, value_node in root.value:
        place = (key_node.start_mark.line + 2, key_node.start_mark.column + 1)
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
        if key not in FRONT_MATTER_KEYS:
            allowed = f"allowed keys: {', '.join(FRONT_MATTER_KEYS)}"
            hint = did_you_mean(key, FRONT_MATTER_KEYS) or allowed
            fm.report(place, f"unknown front matter key {key!r}", "unknown-key", hint)
        elif key in fm.places:
            first = fm.places[key][0]
            message = f"front matter key {key!r} is given twice (first on line {first})"
            fm.report(place, message, "duplicate-key", "keep one of them")
        else:
            fm.places[key] = (value_node.start_mark.line + 2, value_node.start_mark.column + 1)
            fm.values[key] = data.get(key)
    return True


def _read_kind(fm: _FrontMatter) -> TemplateKind | None:
    raw = fm.values.get("kind", TemplateKind.EMAIL.value)
    choices = [k.value for k in TemplateKind]
    if isinstance(raw, str) and raw in choices:
        return TemplateKind(raw)
    hint = did_you_mean(str(raw), choices) or "email needs a subject; script is a call script"
    fm.report(
        fm.places["kind"], f"kind must be 'email' or 'script', not {raw!r}", "invalid-kind", hint
    )
    return None


def _read_subject(fm: _FrontMatter, kind: TemplateKind | None) -> str | None:
    """The subject source; None when it is mistyped or an email has none."""
    raw = fm.values.get("subject")
    if raw is not None and not isinstance(raw, str):
        fm.wrong_type("subject", "text", 'write it in quotes: subject: "..."')
        return None
    subject = (raw or "").strip()
    if not subject and kind is TemplateKind.EMAIL:
        hint = 'add `subject: "..."`, or `kind: script` for a call or LinkedIn script'
        line = fm.places["subject"][0] if "subject" in fm.places else 1
        fm.report((line, 1), "email template has no subject", "missing-subject", hint)
        return None
    return subject


def _read_labels(fm: _FrontMatter) -> tuple[str, tuple[str, ...]]:
    """The display name and tags; mistyped ones are reported and left out."""
    title = fm.values.get("name")
    if title is not None and not isinstance(title, str):
        fm.wrong_type("name", "text", 'write it in quotes: name: "..."')
    description = fm.values.get("description")
    if description is not None and not isinstance(description, str):
        fm.wrong_type("description", "text", "write it in quotes")
    tags = fm.values.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        fm.wrong_type("tags", "a list of words", "write it like: tags: [intro, q3]")
        tags = None
    return (title if isinstance(title, str) else ""), tuple(tags or ())


def parse_template(
    name: str,
    path: str,
    text: str,
    *,
    html_text: str | None = None,
    html_path: str | None = None,
) -> tuple[Template | None, list[Problem]]:
    """Split a template file into front matter and body and check both.

    Reports, each at path:line:col: missing or unterminated front matter, YAML errors, unknown,
    duplicate or mistyped keys, a ``kind`` other than email/script, an email without a subject
    (``missing-subject``) and Jinja syntax errors in the subject, body or HTML part
    (``template-syntax``, at the real file line). The Template is None when it cannot be built
    or could never render; other problems come with a Template so later checks can still run.
    """
    fm = _FrontMatter(path, [])
    lines = _normalize(text).split("\n")
    close = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if lines[0].rstrip() != "---":
        message = "template has no front matter; its first line must be `---`"
        fm.report((1, 1), message, "missing-front-matter", _FRONT_MATTER_EXAMPLE)
        return None, fm.problems
    if close is None:
        message = "front matter starting on line 1 is never closed with a `---` line"
        fm.report((1, 1), message, "unterminated-front-matter", _FRONT_MATTER_EXAMPLE)
        return None, fm.problems
    if not _read_front_matter(fm, lines, close):
        return None, fm.problems
    kind = _read_kind(fm)
    subject = _read_subject(fm, kind)
    title, tags = _read_labels(fm)
    template = Template(
        name=name,
        path=path,
        subject=subject or "",
        body="\n".join(lines[close + 1 :]),
        html=None if html_text is None else _normalize(html_text),
        html_path=None if html_text is None else (html_path or html_path_for(path)),
        kind=kind or TemplateKind.EMAIL,
        title=title,
        tags=tags,
        body_line=close + 2,
        subject_line=fm.places.get("subject", (1, 1))[0],
    )
    fatal = kind is None or subject is None
    for part in template_parts(template):
        try:
            _CHECK_ENVS[part.label == "html"].compile(part.source)
        except JinjaSyntaxError as exc:
            fm.problems.append(syntax_problem(exc, part))
            fatal = True
    return (None if fatal else template), sort_problems(fm.problems)


# --- the render context ---------------------------------------------------------------------


class TemplateFields:
    """Read-only fields for templates: ``x.name`` and ``x['name']`` work, a missing field is
    undefined, and nothing else is reachable (no methods, so a field may be called ``items``)."""

    __slots__ = ("_label", "_values")
    _label: str
    _values: dict[str, object]

    def __init__(self, label: str, values: Mapping[str, object]) -> None:
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> object:
        if not name.startswith("_") and name in self._values:
            return self._values[name]
        raise AttributeError(name)

    def __getitem__(self, name: object) -> object:
        if isinstance(name, str) and not name.startswith("_") and name in self._values:
            return self._values[name]
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{self._label} fields are read-only")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{self._label} fields are read-only")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TemplateFields):
            return NotImplemented
        return (self._label, self._values) == (other._label, other._values)

    def __reduce__(self) -> tuple[type[TemplateFields], tuple[str, dict[str, object]]]:
        # The read-only __setattr__ would break the default copy and pickle protocol.
        return TemplateFields, (self._label, self._values)

    def __repr__(self) -> str:
        return f"<{self._label} fields: {', '.join(self._values)}>"


@dataclass(frozen=True)
class StepInfo:
    id: str
    attempt: int  # 1-based position of the step in the sequence
    total: int  # number of steps in the sequence
    channel: str


@dataclass(frozen=True)
class RenderedMessage:
    subject: str  # one line: runs of whitespace, CR/LF included, become one space
    text: str
    html: str | None


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _person(values: Mapping[str, object]) -> dict[str, object]:
    fields = {key: value for key, value in values.items() if _present(value)}
    if "name" not in fields:
        parts = [str(fields[k]).strip() for k in ("first_name", "last_name") if k in fields]
        if parts:
            fields["name"] = " ".join(parts)
    if "first_name" not in fields and "name" in fields:
        words = str(fields["name"]).split()
        if words:
            fields["first_name"] = words[0]
    return fields


def build_context(
    *,
    prospect: Mapping[str, str],
    sender: Mapping[str, str],
    step: StepInfo,
    unsubscribe_url: str,
) -> dict[str, object]:
    """The variables a template sees.

    ``prospect`` (standard and custom fields) and ``sender``: fields without a value (None or
    blank) are absent so ``default()`` applies; ``name`` comes from first_name + last_name and
    ``first_name`` from the first word of ``name`` when missing. Also ``step``,
    ``unsubscribe_url`` and ``footer``: "{company} · {postal_address}" of the sender and
    "Don't want to hear from me again? {unsubscribe_url}", with only the parts that exist.
    """
    sender_fields = _person(sender)
    address = " · ".join(
        str(sender_fields[k]) for k in ("company", "postal_address") if k in sender_fields
    )
    footer_lines = [address] if address else []
    if unsubscribe_url.strip():
        footer_lines.append(f"Don't want to hear from me again? {unsubscribe_url}")
    step_fields: dict[str, object] = {
        "id": step.id,
        "attempt": step.attempt,
        "total": step.total,
        "channel": step.channel,
    }
    return {
        "prospect": TemplateFields("prospect", _person(prospect)),
        "sender": TemplateFields("sender", sender_fields),
        "step": TemplateFields("step", step_fields),
        "unsubscribe_url": unsubscribe_url,
        "footer": "\n".join(footer_lines),
    }


# --- the sandbox ----------------------------------------------------------------------------


class _BlockedAccess(SecurityError):
    """An attribute the sandbox refused to touch."""

    def __init__(self, name: str) -> None:
        super().__init__(f"access to {name!r} is not allowed in templates")
        self.name = name


def _refuse_private(name: object) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise _BlockedAccess(name)


class _Undefined(StrictUndefined):
    """StrictUndefined whose message tells the template author how to fix it."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        name, obj = self._undefined_name, self._undefined_obj
        if self._undefined_hint or not isinstance(name, str):
            return super()._undefined_message
        if isinstance(obj, TemplateFields):
            label = obj._label
            shown = f"{label}.{name}" if name.isidentifier() else f"{label}[{name!r}]"
            return (
                f"{label} has no field {name!r}; give it a default: "
                f"{{{{ {shown} | default('...') }}}}"
            )
        if obj is missing:
            suggestion = did_you_mean(name, CONTEXT_NAMES)
            known = ", ".join(sorted(CONTEXT_NAMES))
            return f"{name!r} is not a variable templates can use; " + (
                suggestion or f"they can use {known}"
            )
        return super()._undefined_message


@pass_environment
def _attr_filter(environment: Environment, obj: Any, name: str) -> Any:
    # The stock filter probes the object with hasattr first, which runs __getattr__.
    _refuse_private(name)
    return do_attr(environment, obj, name)


def _finalize(value: object) -> object:
    # Printing a class or function shows Python internals (names, addresses) to the reader.
    if not isinstance(value, Undefined) and (isinstance(value, type) or callable(value)):
        raise SecurityError(f"the template prints a Python {type(value).__name__}, not text")
    return value


def _check_size(operator: str, left: object, right: object) -> None:
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                size = len(seq) * times
                if size > _MAX_REPEAT:
                    raise OverflowError(f"'*' would build a value {size:,} long")
    elif (
        operator == "**"
        and isinstance(left, int)
        and isinstance(right, int)
        and abs(left) > 1
        and right > _MAX_EXPONENT
    ):
        raise OverflowError(f"'**' with an exponent over {_MAX_EXPONENT:,} is not allowed")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, refusing every name starting with '_' before touching the object,
    so no descriptor or __getattr__ runs on the way to a refusal."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, *, html: bool) -> None:
        super().__init__(
            autoescape=html,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=_Undefined,
            finalize=_finalize,
        )
        self.filters["attr"] = _attr_filter

    def getattr(self, obj: Any, attribute: str) -> Any:
        _refuse_private(attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _refuse_private(argument)
        return super().getitem(obj, argument)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # The stock sandbox returns an undefined, which `| default` would quietly swallow.
        raise _BlockedAccess(attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_size(operator, left, right)
        return super().call_binop(context, operator, left, right)


# For compile checks while parsing; the Renderer has its own so its cache stays its own.
_CHECK_ENVS = {False: _Sandbox(html=False), True: _Sandbox(html=True)}


# --- rendering ------------------------------------------------------------------------------


def _template_line(exc: BaseException) -> int | None:
    """The innermost template line in the traceback Jinja rewrote for ``exc``."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None:
        lineno = getattr(exc, "lineno", None)
        line = lineno if isinstance(lineno, int) else None
    return line


class Renderer:
    """Renders templates in an immutable Jinja2 sandbox where a missing field is an error
    unless the template gives a default. The text parts are not escaped; the HTML part is.
    Compiled templates are cached by source."""

    def __init__(self) -> None:
        self._envs = {False: _Sandbox(html=False), True: _Sandbox(html=True)}
        self._cache: dict[tuple[bool, str], JinjaTemplate] = {}

    def render(self, template: Template, context: Mapping[str, object]) -> RenderedMessage:
        """Render subject, text and HTML; errors name the template file and line."""
        rendered: dict[str, str] = {}
        for part in template_parts(template):
            rendered[part.label] = self._render(part, context)
        return RenderedMessage(
            subject=" ".join(rendered.get("subject", "").split()),
            text=rendered["body"],
            html=rendered.get("html"),
        )

    def render_text(self, source: str, context: Mapping[str, object], *, where: str) -> str:
        """Render inline text (a task script); ``where`` names its place in error messages."""
        return self._render(TemplatePart("text", where, _normalize(source), 1, True), context)

    def _compile(self, part: TemplatePart) -> JinjaTemplate:
        html = part.label == "html"
        key = (html, part.source)
        compiled = self._cache.get(key)
        if compiled is None:
            try:
                compiled = self._envs[html].from_string(part.source)
            except JinjaSyntaxError as exc:
                raise TemplateSyntaxError(syntax_problem(exc, part).format()) from exc
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[key] = compiled
        return compiled

    def _render(self, part: TemplatePart, context: Mapping[str, object]) -> str:
        compiled = self._compile(part)
        try:
            return compiled.render(dict(context))
        except SecurityError as exc:
            name = f" ({exc.name!r})" if isinstance(exc, _BlockedAccess) else ""
            raise TemplateSecurityError(
                f"{_where(part, exc)}: template tried to reach Python internals{name}; "
                "this is not allowed and nothing was run"
            ) from exc
        except UndefinedError as exc:
            raise TemplateRenderError(f"{_where(part, exc)}: {exc.message}") from exc
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            raise TemplateRenderError(f"{_where(part, exc)}: rendering failed: {reason}") from exc


def _where(part: TemplatePart, exc: BaseException) -> str:
    line = _template_line(exc)
    if part.label == "text":
        # ``where`` already holds a line; a position inside the text is added in words.
        return part.path if line is None or line == 1 else f"{part.path} (line {line} of the text)"
    return f"{part.path}:{part.file_line(line or 1)}"
