"""`sequencer demo`: about three weeks of the example sequences in about a minute.

Everything is the real engine: a SQLite database in a temporary folder, the example project,
the real sender talking SMTP to a capture server on loopback, the dispatcher's own claim and
housekeeping, and inbound mail (a reply, an out-of-office, a bounce, an unsubscribe request)
fed as raw messages through the classifier and actions the IMAP watcher uses. Only the clock
is simulated: it jumps to the next thing that is due, paced so the run takes ``duration``
seconds of real time.
"""

from __future__ import annotations

import asyncio
import heapq
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import yaml

from sequencer.catalog import CONFIG_NAME, Catalog, Project, load_catalog
from sequencer.core.errors import ConfigError, ProblemsFound
from sequencer.core.problems import Severity
from sequencer.core.prospects import ProspectRow
from sequencer.core.states import EventKind, TaskOutcome
from sequencer.mail.capture import Captured, CaptureServer
from sequencer.runtime import demo_checks as checks
from sequencer.runtime.clock import ManualClock
from sequencer.runtime.demo_checks import Check
from sequencer.runtime.demo_story import DEMO_REQUEST, DEMO_REQUEST_AT, STORY, Beat, render
from sequencer.runtime.dispatcher import Dispatcher
from sequencer.runtime.engine import Engine
from sequencer.runtime.enrollment import enroll, read_csv
from sequencer.runtime.inbox import InboxProcessor
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.reports import describe_event
from sequencer.runtime.sender import Sender
from sequencer.store import events as evq
from sequencer.store import touches as tq
from sequencer.store.database import Database

NEW_YORK = ZoneInfo("America/New_York")
#: Monday 2 March 2026, 07:00 in New York: the US clocks change on the 8th, Europe's on the 29th.
START = datetime(2026, 3, 2, 7, 0, tzinfo=NEW_YORK)
OUTBOUND = "cold-outbound"
INBOUND = "inbound-demo-request"
#: Signs the demo's unsubscribe links and Message-IDs; the demo's mail goes nowhere real.
SECRET = b"sequencer-demo-secret-not-for-production"
#: The clock never jumps further than this, so pauses end and tasks expire on time.
MAX_JUMP = timedelta(minutes=30)
#: The rep gets to a task this long after it is due...
REP_DELAY = timedelta(minutes=45)
#: ...except this prospect's: their tasks stay undone and move on by themselves.
REP_TOO_BUSY_FOR = "kenji.sato@tyrell.example"
MARKER = ".sequencer-demo"


@dataclass(frozen=True)
class DemoEvent:
    """One line of the story, in New York time."""

    at: datetime
    email: str
    sequence: str | None
    kind: str
    text: str
    data: dict[str, Any]
    #: The prospect's own wall-clock time, when it differs from New York's.
    local: datetime | None = None


@dataclass
class DemoResult:
    out: Path
    started: datetime
    ended: datetime
    counts: Counter[str]
    emails: list[Path] = field(default_factory=list)
    inbound: list[Path] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    report: Any = None
    html: Path | None = None


class Observer(Protocol):
    def event(self, event: DemoEvent) -> None: ...

    def progress(self, now: datetime, fraction: float, counts: Counter[str]) -> None: ...


def find_examples(start: Path | None = None) -> tuple[Project, Path]:
    """The example project and prospects: from a source checkout of Sequencer (the working
    directory, or the one this package was installed from in editable mode)."""
    here = Path(__file__).resolve().parents[2]
    for root in [start or Path.cwd(), here]:
        csv_path = root / "docs" / "examples" / "prospects.csv"
        if (root / "sequences" / f"{OUTBOUND}.yaml").is_file() and csv_path.is_file():
            project = Project(root, root / "sequences", root / "templates", root / CONFIG_NAME)
            return project, csv_path
    raise ConfigError(
        "the demo needs the example project (sequences/, templates/, sequencer.yaml and "
        "docs/examples/prospects.csv); run it from a checkout of the Sequencer repository"
    )


def prepare_out(out: Path) -> None:
    """Make ``out`` ready for this run's files; only ever empties a folder an earlier demo
    made (it holds a marker file), never one of the user's."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ConfigError(
            f"{out} already exists and was not made by `sequencer demo`; "
            "choose another folder with --out"
        )
    for sub in ("emails", "inbound"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    (out / MARKER).write_text("files written by `sequencer demo`; safe to delete\n")


def _project_copy(source: Project, work: Path, smtp_port: int) -> Project:
    """The example project in ``work``, its mailboxes sending to the capture server."""
    shutil.copytree(source.sequences_dir, work / "sequences")
    shutil.copytree(source.templates_dir, work / "templates")
    config = yaml.safe_load(source.config_path.read_text(encoding="utf-8")) or {}
    for box in config.get("mailboxes", []):
        box["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none"}
        box.pop("imap", None)
        box["min_spacing"] = "1 minute"
    (work / CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return Project(work, work / "sequences", work / "templates", work / CONFIG_NAME)


def _load(project: Project) -> Catalog:
    catalog = load_catalog(project)
    errors = [p for p in catalog.problems if p.severity is Severity.ERROR]
    if errors:
        raise ProblemsFound(errors)
    if catalog.config is None or not catalog.config.mailboxes:
        raise ConfigError(f"{project.config_path}: the demo needs at least one mailbox")
    return catalog


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "message"


class Demo:
    """One run of the demo. ``duration`` is the real time it should take (0: as fast as it
    can); ``days`` how much simulated time it covers."""

    def __init__(
        self,
        out: Path,
        observer: Observer,
        *,
        source: Project | None = None,
        prospects_csv: Path | None = None,
        days: int = 21,
        duration: float = 60.0,
    ) -> None:
        if source is None or prospects_csv is None:
            source, prospects_csv = find_examples()
        self.source = source
        self.prospects_csv = prospects_csv
        self.out = out
        self.observer = observer
        self.end = START + timedelta(days=days)
        self.duration = duration
        self.clock = ManualClock(START)
        self.counts: Counter[str] = Counter()
        self.story: list[DemoEvent] = []
        self.sent: list[tuple[datetime, Captured]] = []
        self.fed: list[tuple[datetime, Beat, bytes]] = []
        self._last_event = 0
        self._received: Counter[str] = Counter()
        self._queue: list[tuple[datetime, int, Beat, int]] = []
        self._beats = {(b.prospect, b.after_emails): b for b in STORY}
        self._request_at = (START + timedelta(days=DEMO_REQUEST_AT[0])).replace(
            hour=DEMO_REQUEST_AT[1], minute=DEMO_REQUEST_AT[2]
        )
        self._requested = False
        self._rep_turn = 0
        self.prospects = self._read_prospects()
        everyone = [*self.prospects, DEMO_REQUEST]
        self.names = {
            row.email: f"{row.fields.get('first_name', '')} {row.fields.get('last_name', '')}"
            for row in everyone
        }
        self._zone_names = {row.email: row.fields.get("timezone", "") for row in everyone}
        self._zones = {email: ZoneInfo(name) for email, name in self._zone_names.items() if name}

    async def run(self) -> DemoResult:
        prepare_out(self.out)
        with tempfile.TemporaryDirectory(prefix="sequencer-demo-") as tmp:
            work = Path(tmp)
            async with CaptureServer() as smtp:
                project = _project_copy(self.source, work, smtp.port)
                catalog = _load(project)
                database = Database(f"sqlite+aiosqlite:///{work / 'demo.db'}")
                try:
                    await database.upgrade()
                    engine = Engine(database, catalog, clock=self.clock)
                    await engine.sync_sequences()
                    result = await self._simulate(engine, catalog, smtp)
                finally:
                    await database.close()
        return result

    async def _simulate(self, engine: Engine, catalog: Catalog, smtp: CaptureServer) -> DemoResult:
        assert catalog.config is not None
        owner = catalog.config.mailboxes[0].address
        await enroll(engine, OUTBOUND, self.prospects, owner=owner)
        mailboxes = Mailboxes(catalog.config, env={})
        sender = Sender(engine, mailboxes, secret=SECRET)
        processor = InboxProcessor(engine, secret=SECRET)

        async def send(touch_id: int) -> bool:
            await sender.send_touch(touch_id)
            return True

        # Housekeeping (pauses ending, tasks expiring) runs each time the clock moves, below.
        dispatcher = Dispatcher(
            engine, send, sender=sender, housekeeping_every=float("inf"), holder="sequencer-demo"
        )
        try:
            await self._loop(engine, dispatcher, processor, smtp, owner)
        finally:
            await mailboxes.close()
        result = DemoResult(self.out, START, self.clock.now().astimezone(NEW_YORK), self.counts)
        result.emails = self._write_emails()
        result.inbound = self._write_inbound()
        result.checks = self._checks(engine)
        await self._report(engine, result)
        return result

    # --- the loop -------------------------------------------------------------------------

    async def _loop(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        processor: InboxProcessor,
        smtp: CaptureServer,
        owner: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        span = (self.end - START).total_seconds()
        uid = 0
        moved = True
        while True:
            now = self.clock.now()
            if moved:
                await dispatcher.housekeeping()
                moved = False
            if not self._requested and now >= self._request_at:
                self._requested = True
                await enroll(engine, INBOUND, [DEMO_REQUEST], owner=owner)
            while self._queue and self._queue[0][0] <= now:
                _, _, beat, index = heapq.heappop(self._queue)
                uid += 1
                raw = render(beat, self.sent[index][1], self.names.get(beat.prospect, ""), now)
                self.fed.append((now, beat, raw))
                await processor.process(owner, "INBOX", 1, uid, raw)
            await self._rep_does_tasks(engine, now)
            handed = await dispatcher.tick()
            self._watch(smtp, now)
            await self._drain(engine)
            if handed:
                continue
            fraction = (now - START).total_seconds() / span
            self.observer.progress(now.astimezone(NEW_YORK), min(fraction, 1.0), self.counts)
            if now >= self.end:
                return
            target = await self._next_moment(engine, now)
            if self.duration > 0:
                ahead = (target - START).total_seconds() / span * self.duration
                wait = ahead - (loop.time() - began)
                if wait > 0:
                    await asyncio.sleep(min(wait, 2.0))
            self.clock.set(target)
            moved = True

    async def _next_moment(self, engine: Engine, now: datetime) -> datetime:
        candidates = [now + MAX_JUMP, self.end]
        async with engine.db.transaction() as s:
            due = await tq.next_due_at(s)
        if due is not None and due > now:
            candidates.append(due)
        if self._queue:
            candidates.append(self._queue[0][0])
        if not self._requested:
            candidates.append(self._request_at)
        return max(min(candidates), now + timedelta(seconds=1))

    async def _rep_does_tasks(self, engine: Engine, now: datetime) -> None:
        """The rep works through open tasks a little after they are due (calls go unanswered
        or to voicemail; LinkedIn requests are sent), except for one prospect's."""
        async with engine.db.transaction() as s:
            due = await tq.list_tasks(s, due_before=now - REP_DELAY)
        for task, prospect, _ in due:
            if prospect.email == REP_TOO_BUSY_FOR:
                continue
            if task.channel == "call":
                self._rep_turn += 1
                outcome = TaskOutcome.VOICEMAIL if self._rep_turn % 2 else TaskOutcome.NO_ANSWER
                note = "left the voicemail from the script" if self._rep_turn % 2 else None
            else:
                outcome, note = TaskOutcome.CONNECTED, "request sent with the note"
            await engine.complete_task(task.id, outcome, note)

    def _watch(self, smtp: CaptureServer, now: datetime) -> None:
        """New mail at the capture server: remember when it went, and line up the reaction the
        story has for it."""
        for message in smtp.messages[len(self.sent) :]:
            self.sent.append((now, message))
            for recipient in message.recipients:
                self._received[recipient] += 1
                beat = self._beats.get((recipient, self._received[recipient]))
                if beat is not None:
                    heapq.heappush(
                        self._queue, (now + beat.delay, len(self.sent), beat, len(self.sent) - 1)
                    )

    async def _drain(self, engine: Engine) -> None:
        while True:
            async with engine.db.transaction() as s:
                rows = await evq.events_after(s, self._last_event)
            if not rows:
                return
            for event, email, sequence in rows:
                self._last_event = event.id
                data = event.data or {}
                zone = self._zones.get(email)
                item = DemoEvent(
                    event.at.astimezone(NEW_YORK),
                    email,
                    sequence,
                    event.kind,
                    describe_event(event.kind, data, NEW_YORK),
                    data,
                    event.at.astimezone(zone) if zone and zone != NEW_YORK else None,
                )
                self.story.append(item)
                self.counts[event.kind] += 1
                self.observer.event(item)

    # --- after the run --------------------------------------------------------------------

    def _write_emails(self) -> list[Path]:
        paths = []
        for number, (_, message) in enumerate(self.sent, start=1):
            subject = str(message.message.get("Subject", ""))
            name = f"{number:03d}-{_slug(message.recipients[0], 30)}-{_slug(subject)}.eml"
            path = self.out / "emails" / name
            path.write_bytes(message.data)
            paths.append(path)
        return paths

    def _write_inbound(self) -> list[Path]:
        paths = []
        for number, (_, beat, raw) in enumerate(self.fed, start=1):
            name = f"{number:02d}-{_slug(beat.prospect, 30)}-{beat.reaction.value}.eml"
            path = self.out / "inbound" / name
            path.write_bytes(raw)
            paths.append(path)
        return paths

    def _checks(self, engine: Engine) -> list[Check]:
        return [
            checks.sent_once(self.sent, self.counts[EventKind.SENT]),
            checks.nothing_after_a_stop(self.sent, self.story),
            checks.no_repeats(self.story),
            checks.inside_windows(self.story, engine.sequences, self._zone_names),
        ]

    def _read_prospects(self) -> list[ProspectRow]:
        """The example prospects; the examples are ours, so a bad row is a bug worth a stop."""
        rows = list(read_csv(self.prospects_csv))
        problems = [row for row in rows if not isinstance(row, ProspectRow)]
        if problems:
            raise ConfigError(f"{self.prospects_csv}: {problems[0]}")
        return [row for row in rows if isinstance(row, ProspectRow)]

    async def _report(self, engine: Engine, result: DemoResult) -> None:
        """The same report `sequencer report` shows, and its HTML file."""
        try:
            from sequencer.runtime.analytics import build_report
            from sequencer.runtime.report_html import render_html
        except ImportError:  # reports not available in this build
            return
        result.report = await build_report(engine)
        result.html = self.out / "report.html"
        result.html.write_text(render_html(result.report), encoding="utf-8")
