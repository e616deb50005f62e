"""YAML read into nodes that remember their line and column, so problems point at their place."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from sequencer.core.problems import Location, Problem, Severity, did_you_mean


@dataclass
class Node:
    """One YAML value with its position (1-based). Mappings keep their keys' positions too."""

    kind: str  # "scalar", "list" or "map"
    line: int
    column: int
    value: Any = None  # the constructed Python value for scalars
    raw: str = ""  # the scalar exactly as written (YAML 1.1 would read `no` or `09:00` oddly)
    quoted: bool = False
    items: list[Node] = field(default_factory=list)
    entries: dict[str, tuple[Node, Node]] = field(default_factory=dict)  # key -> (key node, value)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.items)

    @property
    def is_null(self) -> bool:
        return self.kind == "scalar" and self.value is None

    def text(self) -> str:
        """The scalar as the author wrote it, whatever YAML 1.1 would make of it."""
        return self.raw if self.kind == "scalar" else ""

    def get(self, key: str) -> Node | None:
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def key_node(self, key: str) -> Node | None:
        entry = self.entries.get(key)
        return entry[0] if entry else None


def _mark(problem_mark: yaml.Mark | None) -> tuple[int | None, int | None]:
    if problem_mark is None:
        return None, None
    return problem_mark.line + 1, problem_mark.column + 1


class YamlReader:
    """Parses one YAML document and collects problems against one file path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def load(self, text: str) -> Node | None:
        """The root node, or ``None`` (with a problem recorded) when the text is not valid YAML."""
        try:
            # The reader checks the characters up front: a NUL byte fails here already.
            loader = yaml.SafeLoader(text)
        except yaml.reader.ReaderError as exc:
            self.error(
                character_location(self.path, text, exc),
                character_message(exc),
                _CHARACTERS_HINT,
                code="yaml-syntax",
            )
            return None
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            return _Converter(self, loader).convert(root)
        except yaml.MarkedYAMLError as exc:
            line, column = _mark(exc.problem_mark or exc.context_mark)
            message = exc.problem or "YAML syntax error"
            if exc.context:
                message = f"{message} ({exc.context})"
            hint = "check the indentation and that every `key: value` is on its own line"
            if "tab" in message.lower():
                hint = "YAML does not allow tabs for indentation; use spaces"
            elif "mapping values are not allowed" in message:
                hint = "a value containing ': ' must be quoted, e.g. title: \"Re: pricing\""
            self.error(Location(self.path, line, column), message, hint, code="yaml-syntax")
            return None
        except yaml.YAMLError as exc:
            self.error(Location(self.path), f"YAML error: {exc}", None, code="yaml-syntax")
            return None
        finally:
            loader.dispose()

    # --- reporting -------------------------------------------------------------------------

    def at(self, node: Node | None) -> Location:
        if node is None:
            return Location(self.path)
        return Location(self.path, node.line, node.column)

    def error(
        self, location: Location, message: str, hint: str | None = None, *, code: str = "invalid"
    ) -> None:
        self.problems.append(Problem(location, message, hint, Severity.ERROR, code))

    def warning(
        self, location: Location, message: str, hint: str | None = None, *, code: str = "invalid"
    ) -> None:
        self.problems.append(Problem(location, message, hint, Severity.WARNING, code))

    # --- shape checks ----------------------------------------------------------------------

    def mapping(
        self, node: Node | None, where: str, allowed: tuple[str, ...] | frozenset[str]
    ) -> Node | None:
        """``node`` if it is a mapping, reporting unknown keys with did-you-mean; else ``None``."""
        if node is None or node.is_null:
            return None
        if node.kind != "map":
            self.error(
                self.at(node),
                f"{where} must be a mapping of `key: value` lines, not {describe(node)}",
                f"allowed keys: {', '.join(sorted(allowed))}",
                code="wrong-type",
            )
            return None
        for key, (key_node, _) in node.entries.items():
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f"allowed keys: {', '.join(sorted(allowed))}"
                self.error(
                    self.at(key_node), f"{where}: unknown key {key!r}", hint, code="unknown-key"
                )
        return node

    def string(self, node: Node | None, where: str) -> str | None:
        if node is None or node.is_null:
            return None
        if node.kind != "scalar":
            self.error(
                self.at(node), f"{where} must be text, not {describe(node)}", code="wrong-type"
            )
            return None
        return node.text().strip()

    def boolean(self, node: Node | None, where: str, default: bool) -> bool:
        if node is None or node.is_null:
            return default
        if node.kind == "scalar" and isinstance(node.value, bool):
            return node.value
        self.error(
            self.at(node),
            f"{where} must be true or false, not {describe(node)}",
            code="wrong-type",
        )
        return default

    def string_list(self, node: Node | None, where: str) -> list[tuple[str, Node]]:
        """A list of texts; a single text counts as a one-item list."""
        if node is None or node.is_null:
            return []
        if node.kind == "scalar":
            return [(node.text().strip(), node)]
        if node.kind != "list":
            self.error(
                self.at(node), f"{where} must be a list, not {describe(node)}", code="wrong-type"
            )
            return []
        result: list[tuple[str, Node]] = []
        for item in node.items:
            text = self.string(item, f"each entry of {where}")
            if text is not None:
                result.append((text, item))
        return result


def describe(node: Node) -> str:
    """How a node looks, for 'must be X, not Y' messages."""
    if node.kind == "map":
        return "a mapping"
    if node.kind == "list":
        return "a list"
    if node.value is None:
        return "empty"
    if isinstance(node.value, bool):
        return f"{node.raw!r} (a yes/no value)"
    if isinstance(node.value, int | float):
        return f"the number {node.raw}"
    return repr(node.raw)


_CHARACTERS_HINT = "remove control characters (such as NUL bytes); save the file as UTF-8 text"
#: PyYAML's own constructors fail with these on explicitly tagged scalars it cannot read
#: (`!!int abc`, `!!float x`, `!!timestamp soon`) instead of a YAMLError.
CONSTRUCTOR_FAILURES = (ValueError, TypeError, AttributeError, OverflowError)


def character_location(path: str, text: str, exc: yaml.reader.ReaderError) -> Location:
    position = min(max(exc.position, 0), len(text))
    line = text.count("\n", 0, position) + 1
    return Location(path, line, position - text.rfind("\n", 0, position))


def character_message(exc: yaml.reader.ReaderError) -> str:
    character = exc.character  # a code point for text, a byte for undecodable input
    if isinstance(character, str):
        character = ord(character[:1] or "\0")
    shown = f"U+{character:04X}" if isinstance(character, int) else repr(character)
    return f"character {shown} is not allowed in YAML"


class _Converter:
    """Turns PyYAML's node graph into ``Node``s. An anchor used many times is converted once
    and shared (so a "billion laughs" file stays small), and an alias inside its own anchor
    is reported instead of recursing forever."""

    def __init__(self, reader: YamlReader, loader: yaml.SafeLoader) -> None:
        self.reader = reader
        self.loader = loader
        self.done: dict[int, Node] = {}
        self.open: set[int] = set()

    def convert(self, node: yaml.Node) -> Node:
        key = id(node)
        if key in self.done:
            return self.done[key]
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if key in self.open:
            self.reader.error(
                Location(self.reader.path, line, column),
                "this anchor (&name) contains an alias (*name) to itself",
                "an anchor cannot contain itself; copy the value out instead",
                code="yaml-syntax",
            )
            return Node("scalar", line, column)
        self.open.add(key)
        try:
            result = self._convert(node, line, column)
        finally:
            self.open.discard(key)
        self.done[key] = result
        return result

    def _convert(self, node: yaml.Node, line: int, column: int) -> Node:
        if isinstance(node, yaml.ScalarNode):
            try:
                value = self.loader.construct_object(node, deep=True)
            except CONSTRUCTOR_FAILURES:
                value = str(node.value)
                self.reader.error(
                    Location(self.reader.path, line, column),
                    f"{node.value!r} cannot be read as the type its tag {node.tag!r} asks for",
                    "remove the `!!` tag, or write a value of that type",
                    code="yaml-syntax",
                )
            return Node(
                "scalar", line, column, value=value, raw=str(node.value), quoted=bool(node.style)
            )
        if isinstance(node, yaml.SequenceNode):
            return Node("list", line, column, items=[self.convert(n) for n in node.value])
        assert isinstance(node, yaml.MappingNode)
        result = Node("map", line, column)
        for key_node, value_node in node.value:
            key = self.convert(key_node)
            name = key.text() if key.kind == "scalar" else ""
            if name in result.entries:
                first = result.entries[name][0]
                self.reader.error(
                    self.reader.at(key),
                    f"duplicate key {name!r} (first on line {first.line})",
                    "remove one of them; YAML keeps only the last",
                    code="duplicate-key",
                )
            result.entries[name] = (key, self.convert(value_node))
        return result
