"""Enrolling prospects into a sequence: in batches, idempotent, every skipped row explained."""

from __future__ import annotations

import codecs
import csv
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sequencer.catalog import templates_of
from sequencer.core.errors import ConfigError, InvalidState, NotFound
from sequencer.core.model import MailboxMode, Sequence
from sequencer.core.prospects import (
    ProspectRow,
    RowProblem,
    email_problem,
    map_headers,
    normalize_email,
    parse_row,
)
from sequencer.core.states import ENROLLMENT_LIVE, EnrollmentState, EventKind
from sequencer.core.templates import analyze
from sequencer.runtime.engine import Engine
from sequencer.store import enrollments as eq
from sequencer.store import prospects as pq
from sequencer.store.events import NewEvent, add_events
from sequencer.store.models import Enrollment, Prospect

# Fields a template can rely on because the engine derives them from others.
_DERIVED = {"name": ("first_name", "last_name"), "first_name": ("name",)}


@dataclass(frozen=True)
class RowResult:
    line: int
    email: str | None
    enrolled: bool
    reason: str = ""


@dataclass
class EnrollReport:
    """What happened to every row."""

    sequence: str
    dry_run: bool
    rows: int = 0
    enrolled: int = 0
    skipped: list[RowResult] = field(default_factory=list)

    def reasons(self) -> Counter[str]:
        """Skipped rows by reason, with the detail after ':' removed."""
        return Counter(r.reason.split(":")[0] for r in self.skipped)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "enrolled": self.enrolled,
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(self.reasons()),
            "skipped_rows": [
                {"line": r.line, "email": r.email, "reason": r.reason} for r in self.skipped
            ],
        }


class _DryRun(Exception):
    """Raised inside a batch's transaction so a dry run leaves nothing behind."""


def required_fields(sequence: Sequence, engine: Engine) -> frozenset[str]:
    """Prospect fields some template of the sequence uses without a default."""
    templates = engine.catalog.templates
    needed: set[str] = set()
    for name in templates_of(sequence):
        if name in templates:
            needed |= analyze(templates[name]).required_fields()
    return frozenset(needed)


def _missing(row: ProspectRow, needed: Iterable[str]) -> list[str]:
    have = {k for k, v in row.fields.items() if v} | {"email"}
    missing = []
    for name in sorted(needed):
        if name in have or any(d in have for d in _DERIVED.get(name, ())):
            continue
        missing.append(name)
    return missing


def read_csv(path: Path) -> Iterator[ProspectRow | RowProblem]:
    """Stream a CSV file's rows (any common header spelling); never loads the whole file."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise NotFound(f"{path}: cannot open ({exc.strerror})") from exc
    with handle:
        try:
            sample = handle.read(64 * 1024)
        except UnicodeDecodeError as exc:
            raise _not_utf8(path) from exc
        handle.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|") if sample else csv.excel
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(handle, dialect)
        try:
            headers = next(reader)
        except StopIteration:
            raise ConfigError(
                f"{path}: the file is empty; the first line must name the columns"
            ) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}:1: cannot read the header line: {exc}") from exc
        mapping = map_headers(headers)
        problem = mapping.problem()
        if problem:
            raise ConfigError(f"{path}:1: {problem}")
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise _not_utf8(path) from exc
            except csv.Error as exc:
                yield RowProblem(reader.line_num, None, f"unreadable row: {exc}")
                continue
            if not any(v.strip() for v in values):
                continue  # blank lines are not rows
            yield parse_row(mapping, values, reader.line_num)


def _not_utf8(path: Path) -> ConfigError:
    """The error for a file that is not UTF-8, at the line of its first undecodable byte.
    Excel's plain "CSV" and "Unicode text" exports (Windows-1252, UTF-16) are the usual ones."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, shown = 1, ""
    with path.open("rb") as raw:
        while chunk := raw.read(64 * 1024):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += exc.object[: exc.start].count(b"\n")
                shown = f" (byte 0x{exc.object[exc.start]:02x})"
                break
            line += chunk.count(b"\n")
    return ConfigError(
        f"{path}:{line}: not UTF-8 text{shown}; save the file as CSV UTF-8 "
        "(in Excel: Save As > CSV UTF-8) and import it again"
    )


def pick_mailbox(sequence: Sequence, owner: str, email: str, mailbox: str | None) -> str:
    """The sending mailbox for a new enrollment: the one asked for, else the sequence's choice.
    A list spreads prospects over its mailboxes, the same prospect always on the same one."""
    if mailbox:
        return mailbox
    if sequence.mailbox.mode is MailboxMode.LIST and sequence.mailbox.addresses:
        digest = hashlib.sha256(email.encode()).digest()
        addresses = sequence.mailbox.addresses
        return addresses[int.from_bytes(digest[:4], "big") % len(addresses)]
    return owner


async def enroll(
    engine: Engine,
    sequence_name: str,
    rows: Iterable[ProspectRow | RowProblem],
    *,
    owner: str,
    mailbox: str | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> EnrollReport:
    """Enroll rows into a sequence. Valid rows go in even when others fail; a row whose
    prospect is already enrolled in this sequence is skipped, so re-running is harmless."""
    owner_problem = email_problem(normalize_email(owner))
    if owner_problem:
        raise ConfigError(f"--owner {owner!r} is not an email address ({owner_problem})")
    owner = normalize_email(owner)
    if mailbox is not None:
        mailbox = normalize_email(mailbox)
        config = engine.catalog.config
        if config is not None and config.mailboxes and config.mailbox(mailbox) is None:
            known = ", ".join(m.address for m in config.mailboxes)
            raise ConfigError(f"--mailbox {mailbox} is not configured in sequencer.yaml ({known})")
    sequence = engine.sequence_of(sequence_name)
    if sequence_name not in engine.sequence_ids:
        await engine.sync_sequences()
    sequence_id = engine.sequence_ids[sequence_name]
    async with engine.db.transaction() as s:
        record = await eq.sequence_record(s, sequence_name)
        if record is not None and record.archived_at is not None:
            raise InvalidState(f"sequence {sequence_name!r} is archived; nobody can be enrolled")
        exclusive_ids = set(
            (
                await eq.sequence_ids(s, [n for n, q in engine.sequences.items() if q.exclusive])
            ).values()
        )
    needed = required_fields(sequence, engine)
    report = EnrollReport(sequence_name, dry_run)
    seen: dict[str, int] = {}
    batch: list[ProspectRow] = []
    size = engine.settings.batch_size

    async def flush() -> None:
        if batch:
            results = await _enroll_batch(
                engine, sequence, sequence_id, exclusive_ids, batch, owner, mailbox, dry_run
            )
            for result in results:
                if result.enrolled:
                    report.enrolled += 1
                else:
                    report.skipped.append(result)
            if progress:
                progress(len(batch))
            batch.clear()

    for row in rows:
        report.rows += 1
        if isinstance(row, RowProblem):
            report.skipped.append(RowResult(row.line, row.email, False, row.reason))
            if progress:
                progress(1)
            continue
        if row.email in seen:
            report.skipped.append(
                RowResult(
                    row.line, row.email, False, f"duplicate: same email as line {seen[row.email]}"
                )
            )
            if progress:
                progress(1)
            continue
        seen[row.email] = row.line
        missing = _missing(row, needed)
        if missing:
            report.skipped.append(
                RowResult(
                    row.line,
                    row.email,
                    False,
                    f"missing field: the templates need {', '.join(missing)}",
                )
            )
            if progress:
                progress(1)
            continue
        batch.append(row)
        if len(batch) >= size:
            await flush()
    await flush()
    report.skipped.sort(key=lambda r: r.line)
    return report


async def _enroll_batch(
    engine: Engine,
    sequence: Sequence,
    sequence_id: int,
    exclusive_ids: set[int],
    rows: list[ProspectRow],
    owner: str,
    mailbox: str | None,
    dry_run: bool,
) -> list[RowResult]:
    results: list[RowResult] = []
    try:
        async with engine.db.transaction() as s:
            now = engine.now()
            blocked = await pq.suppressed(s, [r.email for r in rows])
            for row in rows:
                if row.email in blocked:
                    results.append(
                        RowResult(row.line, row.email, False, f"suppressed: {blocked[row.email]}")
                    )
            allowed = [r for r in rows if r.email not in blocked]
            ids = await pq.upsert_prospects(s, [(r.email, r.fields) for r in allowed], now)
            existing = await eq.existing_enrollments(s, ids.values(), sequence_id)
            elsewhere = await eq.live_elsewhere(s, ids.values(), sequence_id)
            names = await eq.sequence_names(s, {i for v in elsewhere.values() for i in v})
            version = await eq.record_version(
                s,
                sequence.name,
                sequence.content_hash,
                engine.catalog.sources.get(sequence.name, ""),
                [st.id for st in sequence.steps],
                now,
            )
            new_rows: list[dict[str, Any]] = []
            row_of: dict[int, ProspectRow] = {}
            for row in allowed:
                pid = ids[row.email]
                reason = _skip_reason(
                    existing.get(pid), elsewhere.get(pid, []), names, sequence, exclusive_ids
                )
                if reason:
                    results.append(RowResult(row.line, row.email, False, reason))
                    continue
                row_of[pid] = row
                new_rows.append(
                    {
                        "prospect_id": pid,
                        "sequence_id": sequence_id,
                        "version_id": version.version_id,
                        "owner": owner,
                        "mailbox": pick_mailbox(sequence, owner, row.email, mailbox),
                        "state": EnrollmentState.ACTIVE.value,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            inserted = await eq.insert_enrollments(s, new_rows)
            for pid, row in row_of.items():
                if pid not in inserted:  # another import enrolled them a moment ago
                    results.append(
                        RowResult(
                            row.line, row.email, False, "already enrolled: active in this sequence"
                        )
                    )
            enrollments = await eq.get_enrollments(s, inserted.values())
            prospects = await pq.get_prospects(s, inserted.keys())
            await add_events(
                s,
                [
                    NewEvent(
                        pid,
                        EventKind.ENROLLED,
                        now,
                        eid,
                        data={
                            "sequence": sequence.name,
                            "owner": owner,
                            "mailbox": enrollments[eid].mailbox,
                            "steps": len(sequence.steps),
                        },
                    )
                    for pid, eid in inserted.items()
                ],
            )
            await engine.planner.plan(
                s,
                sequence,
                [(enrollments[eid], prospects[pid], now) for pid, eid in inserted.items()],
                now,
                done={eid: [] for eid in inserted.values()},
            )
            results.extend(RowResult(row_of[pid].line, row_of[pid].email, True) for pid in inserted)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return results


def _skip_reason(
    existing: Enrollment | None,
    elsewhere: list[int],
    names: dict[int, str],
    sequence: Sequence,
    exclusive_ids: set[int],
) -> str | None:
    if existing is not None:
        if existing.state in {s.value for s in ENROLLMENT_LIVE}:
            return f"already enrolled: {existing.state} in this sequence"
        detail = f" ({existing.stop_reason})" if existing.stop_reason else ""
        return f"already enrolled: {existing.state}{detail} in this sequence"
    if elsewhere and sequence.exclusive:
        return f"in another sequence: {names.get(elsewhere[0], '?')} (this one is exclusive)"
    clash = [i for i in elsewhere if i in exclusive_ids]
    if clash:
        return f"in an exclusive sequence: {names.get(clash[0], '?')}"
    return None


def prospect_label(prospect: Prospect) -> str:
    name = " ".join(p for p in (prospect.first_name, prospect.last_name) if p)
    return f"{name} <{prospect.email}>" if name else prospect.email
