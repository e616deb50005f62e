"""Static checks of Jinja2 templates: the fields they use, unknown names and unsafe accesses."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateSyntaxError as JinjaSyntaxError

from sequencer.core.errors import TemplateSyntaxError
from sequencer.core.model import Template
from sequencer.core.problems import Location, Problem, Severity, did_you_mean, sort_problems

STANDARD_PROSPECT_FIELDS: frozenset[str] = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "name",
        "company",
        "title",
        "timezone",
        "domain",
        "phone",
        "linkedin",
        "city",
        "country",
    }
)
SENDER_FIELDS: frozenset[str] = frozenset(
    {"name", "first_name", "email", "title", "company", "phone", "signature", "postal_address"}
)
STEP_FIELDS: frozenset[str] = frozenset({"id", "attempt", "total", "channel"})
CONTEXT_NAMES: frozenset[str] = frozenset(
    {"prospect", "sender", "step", "unsubscribe_url", "footer"}
)
JINJA_GLOBALS: frozenset[str] = frozenset(
    {"range", "loop", "dict", "namespace", "cycler", "joiner", "lipsum"}
)

# Jinja defines these itself inside templates, macros, call blocks and blocks.
_JINJA_SCOPED_NAMES = frozenset({"self", "caller", "varargs", "kwargs", "super"})
_FIELD_ROOTS = ("prospect", "sender", "step")
_DEFAULT_FILTERS = frozenset({"default", "d"})
_DEFINED_TESTS = frozenset({"defined", "undefined"})
_UNSUBSCRIBE_NAMES = frozenset({"unsubscribe_url", "footer"})
_OPT_OUT = re.compile(
    r"unsubscribe|opt[ -]?out|reply\s+[\"'“]?(stop|remove|unsubscribe|no)"
    r"|let me know if you['’]d rather not hear",
    re.IGNORECASE,
)
# Filters that look up attributes by name, and the position of that name among their arguments.
_ATTRIBUTE_ARGUMENT = {
    "selectattr": 0,
    "rejectattr": 0,
    "groupby": 0,
    "sum": 0,
    "sort": 2,
    "unique": 1,
    "min": 1,
    "max": 1,
    "map": None,
}
_FORMAT_FIELD = re.compile(r"\{([^{}]*)\}")
_NO_SUCH_CALLABLE = re.compile(r"No (filter|test) named '([^']+)'")

# Parsing does not depend on sandboxing or escaping, only on the lexer settings.
_PARSE_ENV = Environment(keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)

_Guards = frozenset[tuple[str, str]]
_NO_GUARDS: _Guards = frozenset()


@dataclass(frozen=True)
class FieldUse:
    """One use of a field of ``prospect``, ``sender`` or ``step`` in a template."""

    field: str
    line: int  # line in the file
    column: int | None
    has_default: bool  # guarded by ``| default`` or an ``is defined`` test


@dataclass(frozen=True)
class TemplateAnalysis:
    """What a template uses, found without rendering it."""

    prospect_fields: tuple[FieldUse, ...]
    unknown_names: tuple[tuple[str, int], ...]
    unsafe_accesses: tuple[tuple[str, int], ...]
    offers_unsubscribe: bool
    sender_fields: tuple[FieldUse, ...] = ()
    step_fields: tuple[FieldUse, ...] = ()

    def required_fields(self) -> frozenset[str]:
        """Prospect fields used without a default somewhere, so every prospect needs them."""
        return frozenset(use.field for use in self.prospect_fields if not use.has_default)


@dataclass(frozen=True)
class TemplatePart:
    """One Jinja source of a template (subject, body or HTML) and where it sits in its file."""

    label: str
    path: str
    source: str
    first_line: int  # line in ``path`` of the source's first line
    same_columns: bool  # the source's lines are the file's lines, so columns carry over

    def file_line(self, line: int) -> int:
        return self.first_line + line - 1


def html_path_for(path: str) -> str:
    """The conventional HTML companion of a template file: ``x.j2`` -> ``x.html.j2``."""
    return path[: -len(".j2")] + ".html.j2" if path.endswith(".j2") else path + ".html"


def template_parts(template: Template) -> list[TemplatePart]:
    """The subject (when there is one), the body and the HTML part (when there is one)."""
    parts: list[TemplatePart] = []
    if template.subject:
        # The subject is a YAML value; its columns are shifted by the key and quotes.
        parts.append(
            TemplatePart("subject", template.path, template.subject, template.subject_line, False)
        )
    parts.append(TemplatePart("body", template.path, template.body, template.body_line, True))
    if template.html is not None:
        html_path = template.html_path or html_path_for(template.path)
        parts.append(TemplatePart("html", html_path, template.html, 1, True))
    return parts


def syntax_problem(exc: JinjaSyntaxError, part: TemplatePart) -> Problem:
    """A ``template-syntax`` problem at the file line of a Jinja syntax error."""
    hint = None
    match = _NO_SUCH_CALLABLE.search(exc.message or "")
    if match:
        known = _PARSE_ENV.filters if match.group(1) == "filter" else _PARSE_ENV.tests
        hint = did_you_mean(match.group(2), known)
    where = "" if part.label == "body" else f" in the {part.label}"
    return Problem(
        Location(part.path, part.file_line(exc.lineno or 1)),
        f"template syntax error{where}: {exc.message}",
        hint=hint,
        code="template-syntax",
    )


def parse_part(part: TemplatePart) -> nodes.Template:
    """The Jinja AST of a part; syntax errors become ``TemplateSyntaxError`` with path:line."""
    try:
        return _PARSE_ENV.parse(part.source)
    except JinjaSyntaxError as exc:
        raise TemplateSyntaxError(syntax_problem(exc, part).format()) from exc


@dataclass
class _PartFindings:
    part: TemplatePart
    uses: dict[str, list[FieldUse]] = field(default_factory=lambda: {r: [] for r in _FIELD_ROOTS})
    unknown_names: list[tuple[str, int]] = field(default_factory=list)
    unsafe: list[tuple[str, int]] = field(default_factory=list)
    uses_unsubscribe: bool = False
    text: list[str] = field(default_factory=list)


def _field_ref(node: nodes.Node) -> tuple[str, str] | None:
    """``(root, field)`` for ``prospect.x``, ``prospect['x']`` and ``prospect|attr('x')``."""
    target: nodes.Node | None = None
    name: object = None
    if isinstance(node, nodes.Getattr):
        target, name = node.node, node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        target, name = node.node, node.arg.value
    elif (
        isinstance(node, nodes.Filter)
        and node.name == "attr"
        and len(node.args) == 1
        and not node.kwargs
        and isinstance(node.args[0], nodes.Const)
    ):
        target, name = node.node, node.args[0].value
    if (
        isinstance(target, nodes.Name)
        and target.ctx == "load"
        and target.name in _FIELD_ROOTS
        and isinstance(name, str)
        and not name.startswith("_")
    ):
        return target.name, name
    return None


def _guards(test: nodes.Node) -> tuple[_Guards, _Guards]:
    """Fields known to be defined when ``test`` is true, and when it is false."""
    if isinstance(test, nodes.Test) and test.name in _DEFINED_TESTS:
        ref = _field_ref(test.node)
        if ref is None:
            return _NO_GUARDS, _NO_GUARDS
        found = frozenset({ref})
        return (found, _NO_GUARDS) if test.name == "defined" else (_NO_GUARDS, found)
    if isinstance(test, nodes.Not):
        when_true, when_false = _guards(test.node)
        return when_false, when_true
    if isinstance(test, nodes.And | nodes.Or):
        left_true, left_false = _guards(test.left)
        right_true, right_false = _guards(test.right)
        if isinstance(test, nodes.And):
            return left_true | right_true, left_false & right_false
        return left_true & right_true, left_false | right_false
    return _NO_GUARDS, _NO_GUARDS


def _is_guarding(node: nodes.Node) -> bool:
    """``x | default(...)`` and ``x is defined`` make a missing ``x`` harmless."""
    if isinstance(node, nodes.Filter):
        return node.name in _DEFAULT_FILTERS
    return isinstance(node, nodes.Test) and node.name in _DEFINED_TESTS


def _private_parts(name: str) -> list[str]:
    """Parts of a dotted or indexed lookup path that start with an underscore."""
    return [p for p in re.split(r"[.\[\]]", name) if p.startswith("_")]


class _Walker:
    def __init__(self, findings: _PartFindings, known_names: frozenset[str]) -> None:
        self.found = findings
        self.known_names = known_names
        self.lines = findings.part.source.split("\n")

    def walk(self, node: nodes.Node, guards: _Guards) -> None:
        ref = _field_ref(node)
        if ref is not None:
            self._use(ref, node.lineno, ref in guards)
            return
        self._inspect(node)
        if isinstance(node, nodes.Filter | nodes.Test) and _is_guarding(node) and node.node:
            inner = _field_ref(node.node)
            if inner is not None:
                self._use(inner, node.node.lineno, True)
                others = [c for c in node.iter_child_nodes() if c is not node.node]
                self._walk_all(others, guards)
                return
        if isinstance(node, nodes.If):
            self._walk_if(node, guards)
            return
        if isinstance(node, nodes.CondExpr):
            self.walk(node.test, guards)
            when_true, when_false = _guards(node.test)
            self.walk(node.expr1, guards | when_true)
            if node.expr2 is not None:
                self.walk(node.expr2, guards | when_false)
            return
        if isinstance(node, nodes.And | nodes.Or):
            # Jinja short-circuits, so the right side only runs when the left allows it.
            self.walk(node.left, guards)
            when_true, when_false = _guards(node.left)
            self.walk(
                node.right, guards | (when_true if isinstance(node, nodes.And) else when_false)
            )
            return
        self._walk_all(node.iter_child_nodes(), guards)

    def _walk_all(self, children: Iterable[nodes.Node], guards: _Guards) -> None:
        for child in children:
            self.walk(child, guards)

    def _walk_if(self, node: nodes.If, guards: _Guards) -> None:
        self.walk(node.test, guards)
        when_true, when_false = _guards(node.test)
        self._walk_all(node.body, guards | when_true)
        otherwise = guards | when_false
        for branch in node.elif_:
            self.walk(branch.test, otherwise)
            branch_true, branch_false = _guards(branch.test)
            self._walk_all(branch.body, otherwise | branch_true)
            otherwise = otherwise | branch_false
        self._walk_all(node.else_, otherwise)

    def _inspect(self, node: nodes.Node) -> None:
        found = self.found
        line = found.part.file_line(node.lineno)
        if isinstance(node, nodes.Name) and node.ctx == "load":
            if node.name not in self.known_names:
                found.unknown_names.append((node.name, line))
            if node.name in _UNSUBSCRIBE_NAMES:
                found.uses_unsubscribe = True
        elif isinstance(node, nodes.TemplateData):
            found.text.append(node.data)
        elif isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            found.unsafe.append((node.attr, line))
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            if isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
                found.unsafe.append((node.arg.value, line))
        elif isinstance(node, nodes.Filter):
            for name in _filter_attribute_names(node):
                found.unsafe.extend((part, line) for part in _private_parts(name))
        elif isinstance(node, nodes.Call):
            fmt = _format_string(node.node)
            if fmt is not None:
                for match in _FORMAT_FIELD.finditer(fmt):
                    field_name = re.split(r"[:!]", match.group(1), maxsplit=1)[0]
                    found.unsafe.extend((part, line) for part in _private_parts(field_name))

    def _use(self, ref: tuple[str, str], lineno: int, has_default: bool) -> None:
        root, name = ref
        part = self.found.part
        column = self._column(root, name, lineno) if part.same_columns else None
        self.found.uses[root].append(FieldUse(name, part.file_line(lineno), column, has_default))

    def _column(self, root: str, name: str, lineno: int) -> int | None:
        if not 0 < lineno <= len(self.lines):
            return None
        quoted = rf"['\"]{re.escape(name)}['\"]"
        pattern = (
            rf"\b{root}\s*(?:\.\s*{re.escape(name)}\b|\[\s*{quoted}\s*\]"
            rf"|\|\s*attr\(\s*{quoted})"
        )
        match = re.search(pattern, self.lines[lineno - 1])
        return match.start() + 1 if match else None


def _filter_attribute_names(node: nodes.Filter) -> list[str]:
    """Constant attribute names a filter will look up (``attr``, ``map(attribute=...)``...)."""
    names: list[str] = []
    if node.name == "attr" and node.args and isinstance(node.args[0], nodes.Const):
        names.append(str(node.args[0].value))
    if node.name in _ATTRIBUTE_ARGUMENT:
        index = _ATTRIBUTE_ARGUMENT[node.name]
        if index is not None and index < len(node.args):
            arg = node.args[index]
            if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                names.append(arg.value)
        for keyword in node.kwargs:
            if keyword.key == "attribute" and isinstance(keyword.value, nodes.Const):
                names.append(str(keyword.value.value))
    return names


def _format_string(callee: nodes.Node) -> str | None:
    """The literal of ``'...'.format`` / ``'...'.format_map`` (or via ``|attr``), else None."""
    receiver: nodes.Node | None = None
    if isinstance(callee, nodes.Getattr):
        receiver = callee.node if callee.attr in ("format", "format_map") else None
    elif isinstance(callee, nodes.Filter) and callee.name == "attr" and callee.args:
        name = callee.args[0]
        is_format = isinstance(name, nodes.Const) and name.value in ("format", "format_map")
        receiver = callee.node if is_format else None
    if isinstance(receiver, nodes.Const) and isinstance(receiver.value, str):
        return receiver.value
    return None


def _assigned_names(tree: nodes.Template) -> set[str]:
    """Every name the template defines itself, wherever its scope ends."""
    names = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")} | {
        m.name for m in tree.find_all(nodes.Macro)
    }
    names.update(i.target for i in tree.find_all(nodes.Import))
    for imported in tree.find_all(nodes.FromImport):
        names.update(n if isinstance(n, str) else n[1] for n in imported.names)
    return names


def _analyze_part(part: TemplatePart) -> _PartFindings:
    tree = parse_part(part)
    known = CONTEXT_NAMES | JINJA_GLOBALS | _JINJA_SCOPED_NAMES | _assigned_names(tree)
    findings = _PartFindings(part)
    _Walker(findings, frozenset(known)).walk(tree, _NO_GUARDS)
    return findings


def _offers_unsubscribe(findings: Iterable[_PartFindings]) -> bool:
    for found in findings:
        if found.part.label == "subject":
            continue
        if found.uses_unsubscribe or _OPT_OUT.search("".join(found.text)):
            return True
    return False


def _merge(findings: list[_PartFindings]) -> TemplateAnalysis:
    return TemplateAnalysis(
        prospect_fields=tuple(u for f in findings for u in f.uses["prospect"]),
        unknown_names=tuple(n for f in findings for n in f.unknown_names),
        unsafe_accesses=tuple(a for f in findings for a in f.unsafe),
        offers_unsubscribe=_offers_unsubscribe(findings),
        sender_fields=tuple(u for f in findings for u in f.uses["sender"]),
        step_fields=tuple(u for f in findings for u in f.uses["step"]),
    )


def analyze(template: Template) -> TemplateAnalysis:
    """Walk the Jinja AST of the subject, body and HTML part and report what they use.

    Raises ``TemplateSyntaxError`` (with path:line) when a part is not valid Jinja.
    """
    return _merge([_analyze_part(part) for part in template_parts(template)])


def _shown(root: str, name: str) -> str:
    return f"{root}.{name}" if name.isidentifier() else f"{root}[{name!r}]"


def _unique(items: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    return list(dict.fromkeys(items))


def check_template(template: Template, known_fields: Iterable[str]) -> list[Problem]:
    """Validate-time problems of a template, each at its real path:line.

    Unknown top-level variables (``unknown-variable``), prospect fields that no prospect
    defines used without a default (``undefined-field``), unknown sender or step fields
    (``unknown-sender-field``, ``unknown-step-field``; errors without a default, warnings
    with one) and accesses to names starting with '_' (``unsafe-template``).
    """
    problems: list[Problem] = []
    known_prospect = STANDARD_PROSPECT_FIELDS | frozenset(known_fields)
    for part in template_parts(template):
        try:
            found = _analyze_part(part)
        except TemplateSyntaxError as exc:
            cause = exc.__cause__
            if isinstance(cause, JinjaSyntaxError):
                problems.append(syntax_problem(cause, part))
            continue
        problems.extend(_variable_problems(found))
        problems.extend(_prospect_problems(found, known_prospect))
        problems.extend(_context_field_problems(found, "sender", SENDER_FIELDS))
        problems.extend(_context_field_problems(found, "step", STEP_FIELDS))
        for name, line in _unique(found.unsafe):
            problems.append(
                Problem(
                    Location(part.path, line),
                    f"template reaches for {name!r}, a Python internal; names starting with "
                    "'_' are not allowed in templates",
                    hint="remove it: rendering this template fails with a security error",
                    code="unsafe-template",
                )
            )
    return sort_problems(problems)


def _variable_problems(found: _PartFindings) -> list[Problem]:
    problems = []
    allowed = ", ".join(sorted(CONTEXT_NAMES))
    for name, line in _unique(found.unknown_names):
        suggestion = did_you_mean(name, CONTEXT_NAMES)
        hint = f"templates can use {allowed}, and names they set themselves"
        problems.append(
            Problem(
                Location(found.part.path, line),
                f"template uses {name!r}, which is not a variable templates can use",
                hint=f"{suggestion} ({hint})" if suggestion else hint,
                code="unknown-variable",
            )
        )
    return problems


def _prospect_problems(found: _PartFindings, known: frozenset[str]) -> list[Problem]:
    problems = []
    seen: set[tuple[str, int]] = set()
    for use in found.uses["prospect"]:
        if use.has_default or use.field in known or (use.field, use.line) in seen:
            continue
        seen.add((use.field, use.line))
        shown = _shown("prospect", use.field)
        suggestion = did_you_mean(use.field, known)
        advice = (
            "or declare it under `fields:` in the sequence, "
            f"or write {{{{ {shown} | default('...') }}}}"
        )
        problems.append(
            Problem(
                Location(found.part.path, use.line, use.column),
                f"template uses {shown}, which no prospect field defines, without a default",
                hint=f"{suggestion} {advice}" if suggestion else advice,
                code="undefined-field",
            )
        )
    return problems


def _context_field_problems(
    found: _PartFindings, root: str, fields: frozenset[str]
) -> list[Problem]:
    problems = []
    seen: set[tuple[str, int]] = set()
    for use in found.uses[root]:
        if use.field in fields or (use.field, use.line) in seen:
            continue
        seen.add((use.field, use.line))
        shown = _shown(root, use.field)
        suggestion = did_you_mean(use.field, fields)
        listed = f"{root} fields are: {', '.join(sorted(fields))}"
        problems.append(
            Problem(
                Location(found.part.path, use.line, use.column),
                f"template uses {shown}, which is not a {root} field",
                hint=f"{suggestion} ({listed})" if suggestion else listed,
                severity=Severity.WARNING if use.has_default else Severity.ERROR,
                code=f"unknown-{root}-field",
            )
        )
    return problems
