"""Reads a project's sequences, templates and ``sequencer.yaml`` from disk into checked models."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sequencer.core.config import ProjectConfig, parse_config
from sequencer.core.errors import SequenceNotFound
from sequencer.core.model import Sequence, Template
from sequencer.core.problems import Location, Problem, did_you_mean, sort_problems
from sequencer.core.sequence_checks import ProjectContext
from sequencer.core.sequences import parse_sequence
from sequencer.core.templates import STANDARD_PROSPECT_FIELDS, check_template, parse_template

SEQUENCE_SUFFIXES = (".yaml", ".yml")
TEMPLATE_SUFFIX = ".j2"
HTML_SUFFIX = ".html.j2"
CONFIG_NAME = "sequencer.yaml"


@dataclass(frozen=True)
class Project:
    """Where a project's files live. Paths are shown relative to the working directory."""

    root: Path
    sequences_dir: Path
    templates_dir: Path
    config_path: Path

    @classmethod
    def discover(cls, start: Path | None = None) -> Project:
        """The project around ``start`` (a file or folder; default the working directory).

        The root is the nearest folder holding ``sequencer.yaml``, else one holding ``sequences/``
        or ``templates/``, else the working directory. ``SEQUENCER_CONFIG``,
        ``SEQUENCER_SEQUENCES_DIR`` and ``SEQUENCER_TEMPLATES_DIR`` override the guesses.
        """
        cwd = Path.cwd()
        origin = (start or cwd).resolve()
        if origin.is_file() or origin.suffix in (*SEQUENCE_SUFFIXES, TEMPLATE_SUFFIX):
            origin = origin.parent
        candidates = [origin, *origin.parents]
        root = next((d for d in candidates if (d / CONFIG_NAME).is_file()), None)
        if root is None:
            root = next(
                (d for d in candidates if (d / "sequences").is_dir() or (d / "templates").is_dir()),
                cwd,
            )
        env = os.environ
        return cls(
            root=root,
            sequences_dir=Path(env.get("SEQUENCER_SEQUENCES_DIR") or root / "sequences"),
            templates_dir=Path(env.get("SEQUENCER_TEMPLATES_DIR") or root / "templates"),
            config_path=Path(env.get("SEQUENCER_CONFIG") or root / CONFIG_NAME),
        )

    def sequence_files(self) -> list[Path]:
        if not self.sequences_dir.is_dir():
            return []
        return sorted(p for p in self.sequences_dir.iterdir() if p.suffix in SEQUENCE_SUFFIXES)

    def resolve_sequence(self, name_or_path: str) -> Path:
        """A sequence file from its name (``cold-outbound``) or a path to it."""
        as_path = Path(name_or_path)
        if as_path.suffix in SEQUENCE_SUFFIXES or os.sep in name_or_path:
            if as_path.is_file():
                return as_path
            raise SequenceNotFound(f"{name_or_path}: no such sequence file")
        for suffix in SEQUENCE_SUFFIXES:
            candidate = self.sequences_dir / f"{name_or_path}{suffix}"
            if candidate.is_file():
                return candidate
        names = [p.stem for p in self.sequence_files()]
        hint = did_you_mean(name_or_path, names)
        known = f"known sequences: {', '.join(names)}" if names else "no sequences found"
        raise SequenceNotFound(
            f"no sequence named {name_or_path!r} in {display(self.sequences_dir)}/"
            f" ({hint or known})"
        )


def display(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read(path: Path, problems: list[Problem]) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(
            Problem(
                Location(display(path)),
                f"not UTF-8 text (byte {exc.start})",
                "save the file as UTF-8",
                code="encoding",
            )
        )
    except OSError as exc:
        problems.append(Problem(Location(display(path)), f"cannot read: {exc.strerror}", code="io"))
    return None


@dataclass
class Catalog:
    """Everything loaded from a project, with every problem found on the way."""

    project: Project
    config: ProjectConfig | None
    templates: dict[str, Template] = field(default_factory=dict)
    template_files: dict[str, Path] = field(default_factory=dict)
    sequences: dict[str, Sequence] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # sequence name -> file text
    problems: list[Problem] = field(default_factory=list)

    def sorted_problems(self) -> list[Problem]:
        # The same problem can be found through two sequences that share a template.
        return sort_problems(dict.fromkeys(self.problems))


def load_templates(
    project: Project, problems: list[Problem]
) -> tuple[dict[str, Template], dict[str, Path]]:
    """Every template in the templates folder (with its optional HTML part)."""
    templates: dict[str, Template] = {}
    files: dict[str, Path] = {}
    folder = project.templates_dir
    if not folder.is_dir():
        return templates, files
    for path in sorted(folder.glob(f"*{TEMPLATE_SUFFIX}")):
        if path.name.endswith(HTML_SUFFIX):
            if not (folder / (path.name[: -len(HTML_SUFFIX)] + TEMPLATE_SUFFIX)).is_file():
                problems.append(
                    Problem(
                        Location(display(path)),
                        "HTML part without a text template",
                        f"create {path.name[: -len(HTML_SUFFIX)]}{TEMPLATE_SUFFIX} with the "
                        "front matter and the plain-text body",
                        code="orphan-html",
                    )
                )
            continue
        name = path.name[: -len(TEMPLATE_SUFFIX)]
        files[name] = path
        text = _read(path, problems)
        if text is None:
            continue
        html_path = folder / f"{name}{HTML_SUFFIX}"
        html_text = _read(html_path, problems) if html_path.is_file() else None
        template, found = parse_template(
            name,
            display(path),
            text,
            html_text=html_text,
            html_path=display(html_path) if html_text is not None else None,
        )
        problems.extend(found)
        if template is not None:
            templates[name] = template
    return templates, files


def load_config(project: Project, problems: list[Problem]) -> ProjectConfig | None:
    if not project.config_path.is_file():
        return None
    text = _read(project.config_path, problems)
    if text is None:
        return None
    config, found = parse_config(display(project.config_path), text)
    problems.extend(found)
    return config


def load_catalog(
    project: Project,
    sequence_files: Iterable[Path] | None = None,
    template_names: Iterable[str] | None = None,
) -> Catalog:
    """Load and check a project. ``sequence_files`` limits which sequences are read (default
    all); ``template_names`` limits which template problems are reported (default: those the
    loaded sequences use, or all when every sequence is loaded)."""
    problems: list[Problem] = []
    config = load_config(project, problems)
    templates, files = load_templates(project, problems)
    template_problems = [p for p in problems if p.location.path != display(project.config_path)]
    catalog = Catalog(project, config, templates, files, problems=[])
    catalog.problems.extend(p for p in problems if p not in template_problems)
    context = ProjectContext(
        templates=templates,
        template_names=frozenset(files),
        config=config,
        templates_dir=display(project.templates_dir),
    )
    every_sequence = sequence_files is None
    paths = project.sequence_files() if sequence_files is None else list(sequence_files)
    for path in paths:
        text = _read(path, catalog.problems)
        if text is None:
            continue
        sequence, found = parse_sequence(path.stem, display(path), text, context)
        catalog.problems.extend(found)
        if sequence is not None:
            catalog.sequences[sequence.name] = sequence
            catalog.sources[sequence.name] = text
    used = templates_used(catalog.sequences.values())
    if template_names is not None:
        wanted = set(template_names) | used
    elif every_sequence:
        wanted = set(files)
    else:
        wanted = used
    wanted_paths = {display(files[n]) for n in wanted if n in files}
    wanted_paths |= {
        t.html_path for n, t in templates.items() if n in wanted and t.html_path is not None
    }
    catalog.problems.extend(
        p for p in template_problems if p.location.path in wanted_paths or p.code == "orphan-html"
    )
    catalog.problems.extend(_field_problems(catalog, wanted))
    return catalog


def templates_of(sequence: Sequence) -> set[str]:
    """Names of every template a sequence can send, its pools included."""
    names: set[str] = set()
    for step in sequence.steps:
        if step.template:
            names.add(step.template)
        if step.rotate and step.rotate in sequence.pools:
            names.update(sequence.pools[step.rotate].templates)
    return names


def templates_used(sequences: Iterable[Sequence]) -> set[str]:
    """Every template any of these sequences can send."""
    used: set[str] = set()
    for sequence in sequences:
        used |= templates_of(sequence)
    return used


def _field_problems(catalog: Catalog, wanted: set[str]) -> list[Problem]:
    """Check each template against the fields declared by every sequence that uses it: a field
    one of those sequences does not declare would be missing for its prospects."""
    fields_for: dict[str, set[str]] = {}
    for sequence in catalog.sequences.values():
        declared = STANDARD_PROSPECT_FIELDS | set(sequence.fields)
        for name in templates_of(sequence):
            fields_for[name] = fields_for[name] & declared if name in fields_for else set(declared)
    all_declared = set(STANDARD_PROSPECT_FIELDS)
    for sequence in catalog.sequences.values():
        all_declared.update(sequence.fields)
    problems: list[Problem] = []
    for name in sorted(wanted):
        template = catalog.templates.get(name)
        if template is None:
            continue
        problems.extend(check_template(template, fields_for.get(name, all_declared)))
    return problems


def sequence_names(project: Project) -> Mapping[str, Path]:
    return {p.stem: p for p in project.sequence_files()}
