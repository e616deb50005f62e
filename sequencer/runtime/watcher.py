"""Watching a mailbox's IMAP folders: one watcher per mailbox (a database lease), IDLE or
polling, a catch-up by UID after every (re)connect, and each new message processed once.

How a folder is followed:

- The stored cursor (UIDVALIDITY, last UID processed) says where to go on. It moves only
  with a result: in the transaction that acts on a message (``InboxProcessor.process``; for a
  backlog, one transaction acts on a batch of messages, ``InboxProcessor.batch``), or when a
  message is deliberately passed over (see below). So a crash never loses a message, and a
  message is never acted on twice.
- First watch of a folder (no cursor): start after the newest message, so years of old mail
  are not acted on; ``catch_up_all=True`` processes the whole folder instead.
- UIDVALIDITY changed (the folder was recreated or migrated; every UID means something new):
  the folder is checked again from the first message that arrived since two days before the
  cursor last moved. Messages whose Message-ID this mailbox already recorded are skipped,
  always, not only then: a message seen under its old UID, or in another watched folder, is
  never acted on twice, even when the re-check was cut short by a crash.
- A message whose processing fails is tried again (after ``backoff``, then twice that); after
  ``MAX_ATTEMPTS`` failures it is recorded as not processed (with the error), logged as an
  error and passed over, so one poisonous message cannot block the mailbox forever. Failures
  of the database or the connection are not the message's fault and never count: the watcher
  backs off and tries again, however long the outage.

IDLE watches only the folder that is open, so each watched folder has its own connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from sqlalchemy import exc as sa_exc

from sequencer.core.config import MailboxConfig
from sequencer.core.errors import ConfigError, DatabaseError, InvalidState, MailboxUnavailable
from sequencer.core.inbound import InboundKind
from sequencer.mail.imap import FolderState, ImapSession, ImapSettings, imap_settings, session
from sequencer.runtime.dispatcher import holder_name
from sequencer.runtime.engine import Engine
from sequencer.runtime.inbox import Handled, InboxProcessor
from sequencer.store import inbound as iq
from sequencer.store import mailboxes as mq

log = logging.getLogger("sequencer.watcher")

#: Servers may end an IDLE after 30 minutes (RFC 2177 says re-issue it within 29).
IDLE_LIMIT = 29 * 60.0
IDLE_TIMEOUT = 25 * 60.0
POLL_INTERVAL = 60.0
BACKOFF = 1.0
MAX_BACKOFF = 60.0
LEASE_TTL = timedelta(seconds=60)
#: Messages fetched per round trip.
BATCH = 25
#: Bytes of a message read at all (the classifier reads no more).
MAX_MESSAGE_BYTES = 10_000_000
#: Failed tries of one message before it is passed over.
MAX_ATTEMPTS = 3
#: How far before the cursor's last move a re-check after a UIDVALIDITY change begins.
RESCAN_MARGIN = timedelta(days=2)
#: How long a stopping watcher waits for its folders to finish what they are doing.
STOP_GRACE = 10.0
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_BRACKETED_ID = re.compile(r"<[^<>\s]{1,250}>")
_HEADER_BYTES = 256_000


def lease_name(address: str) -> str:
    """The lease that makes one process the watcher of a mailbox."""
    return f"watcher:{address}"


@dataclass
class WatcherStats:
    """What a watcher did since it was made."""

    processed: int = 0
    skipped: int = 0  # already recorded under another UID or folder (same Message-ID)
    given_up: int = 0  # failed MAX_ATTEMPTS times and passed over
    connections: int = 0
    #: The last messages processed, newest last (a long-running watcher keeps no more).
    handled: deque[Handled] = field(default_factory=lambda: deque(maxlen=100))


class _TryAgain(Exception):
    """A message failed; the folder's catch-up starts again from it after a short wait."""

    def __init__(self, attempts: int) -> None:
        super().__init__(attempts)
        self.attempts = attempts


class MailboxWatcher:
    """Follows one mailbox's watched folders and processes each new message once.

    ``run`` keeps going until its stop event is set: it holds the mailbox's lease (another
    process's watcher takes over only once the lease has expired), keeps an IDLE open on every
    folder (re-issued every ``idle_timeout`` seconds) or polls every ``poll_interval`` seconds
    when the server has no IDLE, and after any failure logs it, closes the connection, waits
    (``backoff`` seconds, doubling up to ``max_backoff``), reconnects and catches up.
    """

    def __init__(
        self,
        engine: Engine,
        processor: InboxProcessor,
        box: MailboxConfig,
        *,
        folders: Iterable[str] | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        poll_interval: float = POLL_INTERVAL,
        backoff: float = BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        lease_ttl: timedelta = LEASE_TTL,
        catch_up_all: bool = False,
        use_idle: bool = True,
        batch: int = BATCH,
        holder: str | None = None,
        settings: ImapSettings | None = None,
    ) -> None:
        if box.imap is None:
            raise ConfigError(
                f"mailbox {box.address} has no `imap:` settings in sequencer.yaml, so its "
                "replies cannot be watched; add host, port, security and password_env"
            )
        if not 0 < idle_timeout < IDLE_LIMIT:
            raise ConfigError(
                f"watcher of {box.address}: idle_timeout must be more than 0 and under 29 "
                f"minutes (servers end longer IDLEs), not {idle_timeout:g} s"
            )
        if poll_interval <= 0 or backoff <= 0 or max_backoff < backoff:
            raise ConfigError(
                f"watcher of {box.address}: poll_interval and backoff must be more than 0 "
                "seconds, and max_backoff at least backoff"
            )
        if lease_ttl <= timedelta(0) or batch < 1:
            raise ConfigError(f"watcher of {box.address}: lease_ttl and batch must be positive")
        self.engine = engine
        self.processor = processor
        self.box = box
        self.address = box.address
        self.folders = tuple(dict.fromkeys(folders if folders is not None else box.imap.folders))
        self.idle_timeout = idle_timeout
        self.poll_interval = poll_interval
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.lease_ttl = lease_ttl
        self.catch_up_all = catch_up_all
        self.use_idle = use_idle
        self.batch = batch
        self.holder = holder or holder_name()
        self.settings = settings
        self.lease = lease_name(box.address)
        self.stats = WatcherStats()
        #: What each folder's loop is doing: connecting, catching up, idle, polling,
        #: reconnecting (after a failure) or stopped.
        self.folder_states: dict[str, str] = {}
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._holding = False
        self._running = False

    def __repr__(self) -> str:
        return f"MailboxWatcher({self.address!r}, folders={list(self.folders)!r})"

    # --- running ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set, holding the mailbox's lease meanwhile; the lease is
        given back on the way out. Never raises for a failing server, database or message."""
        self._running = True
        log.info("%s: watching %s", self.address, ", ".join(self.folders))
        try:
            while not stop.is_set():
                if not await self._take_lease():
                    await _wait(stop, self._renew_every)
                    continue
                await self._watch_while_leased(stop)
        finally:
            self._running = False
            await self._release_lease()
            log.info("%s: no longer watching", self.address)

    async def catch_up_once(self) -> list[Handled]:
        """Process what is new in every watched folder once and return what was processed.
        Takes the mailbox's lease meanwhile: InvalidState when another watcher holds it
        (that watcher catches up by itself)."""
        if not await self._take_lease():
            async with self.engine.db.transaction() as s:
                holder = await mq.lease_holder(s, self.lease, self.engine.now())
            raise InvalidState(
                f"{self.address} is being watched by {holder or 'another process'}; "
                "its watcher processes new mail by itself"
            )
        handled: list[Handled] = []
        try:
            async with self._session() as imap:
                for folder in self.folders:
                    uidvalidity = await self._open(imap, folder)
                    try:
                        handled += await self._catch_up(imap, folder, uidvalidity)
                    except _TryAgain:
                        continue  # logged; the next catch-up tries it again
        finally:
            if not self._running:
                await self._release_lease()
        return handled

    async def _watch_while_leased(self, stop: asyncio.Event) -> None:
        """Watch every folder until ``stop`` is set or the lease is lost."""
        halt = asyncio.Event()
        folders = [
            asyncio.create_task(self._watch_folder(folder, halt), name=f"{self.lease}:{folder}")
            for folder in self.folders
        ]
        try:
            while not halt.is_set():
                await _wait(stop, self._renew_every)
                if stop.is_set():
                    break
                if not await self._take_lease():
                    log.warning(
                        "%s: lost the watcher lease (another process watches now); stopping",
                        self.address,
                    )
                    break
        finally:
            halt.set()
            _, late = await asyncio.wait(folders, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*folders, return_exceptions=True)

    async def _watch_folder(self, folder: str, halt: asyncio.Event) -> None:
        """Connect, catch up, wait for mail, catch up, ...; after a failure, back off and
        start over. Returns only once ``halt`` is set."""
        delay = self.backoff
        while not halt.is_set():
            try:
                self.folder_states[folder] = "connecting"
                async with self._session() as imap:
                    uidvalidity = await self._open(imap, folder)
                    while not halt.is_set():
                        self.folder_states[folder] = "catching up"
                        try:
                            await self._catch_up(imap, folder, uidvalidity, halt, keep=False)
                        except _TryAgain as again:
                            await _wait(halt, self.backoff * 2 ** (again.attempts - 1))
                            continue
                        delay = self.backoff  # connected and caught up: healthy again
                        await self._wait_for_mail(imap, folder, halt)
                self.folder_states[folder] = "stopped"
                return
            except (MailboxUnavailable, ConfigError, DatabaseError) as exc:
                # These say what failed and where, and never hold a secret.
                text = str(exc)
                if not text.startswith(self.address):
                    text = f"{self.address}: {text}"
                log.warning("%s (folder %s); trying again in %g s", text, folder, delay)
            except Exception as exc:
                if not _not_the_message(exc):
                    log.exception("%s: watching %s failed", self.address, folder)
                else:
                    log.warning(
                        "%s: watching %s: %s; trying again in %g s",
                        self.address,
                        folder,
                        _describe(exc),
                        delay,
                    )
            self.folder_states[folder] = "reconnecting"
            await _wait(halt, delay)
            delay = min(delay * 2, self.max_backoff)
        self.folder_states[folder] = "stopped"

    async def _wait_for_mail(self, imap: ImapSession, folder: str, halt: asyncio.Event) -> None:
        if self.use_idle and imap.has_idle:
            self.folder_states[folder] = "idle"
            if await imap.idle(self.idle_timeout, wake=halt):
                log.debug("%s: new mail announced in %s", self.address, folder)
        else:
            self.folder_states[folder] = "polling"
            await _wait(halt, self.poll_interval)

    # --- one folder -------------------------------------------------------------------------

    async def _open(self, imap: ImapSession, folder: str) -> int:
        """EXAMINE the folder (read-only) and settle where its catch-up starts; returns its
        UIDVALIDITY. A new cursor (first watch, or a new UIDVALIDITY) is stored at once, so a
        restart before the next message still starts from the same place."""
        state = await imap.examine(folder)
        if state.uidvalidity is None:
            raise MailboxUnavailable(
                f"{self.address}: the server gave no UIDVALIDITY for folder {folder!r}, so "
                "new messages cannot be told from old ones"
            )
        async with self.engine.db.transaction() as s:
            stored = await iq.cursor(s, self.address, folder)
            moved_at = await iq.cursor_moved_at(s, self.address, folder)
        if stored is not None and stored[0] == state.uidvalidity:
            return state.uidvalidity
        if stored is None:
            start = 0 if self.catch_up_all else await _highest_uid(imap, state)
            log.info(
                "%s: first watch of %s; %s",
                self.address,
                folder,
                "processing every message in it"
                if self.catch_up_all
                else f"starting after UID {start} (mail already there is not acted on)",
            )
        else:
            since = (moved_at - RESCAN_MARGIN).date() if moved_at is not None else None
            found = await imap.uid_search(*(("SINCE", imap_date(since)) if since else ("ALL",)))
            start = found[0] - 1 if found else await _highest_uid(imap, state)
            log.warning(
                "%s: folder %s has a new UIDVALIDITY (%d, was %d): checking its %d message(s) "
                "since %s again; those already processed are recognised by Message-ID",
                self.address,
                folder,
                state.uidvalidity,
                stored[0],
                len(found),
                since.isoformat() if since else "the start",
            )
        async with self.engine.db.transaction() as s:
            await iq.set_cursor(
                s, self.address, folder, state.uidvalidity, start, self.engine.now()
            )
        return state.uidvalidity

    async def _catch_up(
        self,
        imap: ImapSession,
        folder: str,
        uidvalidity: int,
        halt: asyncio.Event | None = None,
        *,
        keep: bool = True,
    ) -> list[Handled]:
        """Process every message after the stored cursor, oldest first (until ``halt``): the
        new UIDs are asked for once, then fetched and processed ``batch`` at a time; then asked
        for again, for what arrived meanwhile. Returns what was processed, unless ``keep`` is
        false (a long-running watcher catching up on a large backlog keeps nothing)."""
        async with self.engine.db.transaction() as s:
            stored = await iq.cursor(s, self.address, folder)
        if stored is None or stored[0] != uidvalidity:
            raise MailboxUnavailable(
                f"{self.address}: the cursor of folder {folder!r} changed under the watcher; "
                "opening the folder again"
            )
        last = stored[1]
        handled: list[Handled] = []
        while True:
            uids = await imap.new_uids(last)
            if not uids:
                return handled
            for start in range(0, len(uids), self.batch):
                if halt is not None and halt.is_set():
                    return handled  # the rest waits for the next catch-up
                chunk = uids[start : start + self.batch]
                fetched = await imap.uid_fetch(chunk, max_bytes=MAX_MESSAGE_BYTES)
                if fetched:
                    done = await self._handle(folder, uidvalidity, fetched, halt)
                    if keep:
                        handled += done
                last = chunk[-1]

    async def _handle(
        self,
        folder: str,
        uidvalidity: int,
        fetched: list[tuple[int, bytes]],
        halt: asyncio.Event | None,
    ) -> list[Handled]:
        """Process fetched messages: together in one transaction when there are several (a
        backlog), one at a time when there is one, or when processing them together failed
        (then the one at fault is found, retried and, in the end, passed over)."""
        ids = {uid: message_id_of(raw) for uid, raw in fetched}
        if len(fetched) > 1:
            try:
                return await self._handle_together(folder, uidvalidity, fetched, ids)
            except Exception as exc:
                if _not_the_message(exc):
                    raise
                log.info(
                    "%s: %s: %d messages could not be processed together (%s); one at a time",
                    self.address,
                    folder,
                    len(fetched),
                    _describe(exc),
                )
        return await self._handle_one_by_one(folder, uidvalidity, fetched, ids, halt)

    async def _handle_together(
        self,
        folder: str,
        uidvalidity: int,
        fetched: list[tuple[int, bytes]],
        ids: dict[int, str | None],
    ) -> list[Handled]:
        done: list[tuple[int, Handled | None]] = []  # None: already processed, skipped
        async with self.processor.batch(self.address, folder, uidvalidity, fetched) as batch:
            seen = await iq.seen_message_ids(
                batch.session, self.address, [i for i in ids.values() if i is not None]
            )
            for uid, raw in fetched:
                message_id = ids[uid]
                if message_id is not None and message_id in seen:
                    batch.pass_over(uid)
                    done.append((uid, None))
                    continue
                done.append(
                    (uid, await self.processor.process(self.address, folder, uidvalidity, uid, raw))
                )
                if message_id is not None:
                    seen.add(message_id)
        # Committed: only now does any of it count.
        for uid, result in done:
            if result is None:
                self._skipped(folder, uid, ids[uid])
            else:
                self._attempts.pop((folder, uidvalidity, uid), None)
                self._processed(folder, uid, result)
        return [result for _, result in done if result is not None]

    async def _handle_one_by_one(
        self,
        folder: str,
        uidvalidity: int,
        fetched: list[tuple[int, bytes]],
        ids: dict[int, str | None],
        halt: asyncio.Event | None,
    ) -> list[Handled]:
        async with self.engine.db.transaction() as s:
            seen = await iq.seen_message_ids(
                s, self.address, [i for i in ids.values() if i is not None]
            )
        handled: list[Handled] = []
        for uid, raw in fetched:
            if halt is not None and halt.is_set():
                break  # the rest waits for the next catch-up
            message_id = ids[uid]
            if message_id is not None and message_id in seen:
                await self._pass_over(folder, uidvalidity, uid)
                self._skipped(folder, uid, message_id)
            else:
                result = await self._process(folder, uidvalidity, uid, raw, message_id)
                if result is not None:
                    handled.append(result)
                if message_id is not None:
                    seen.add(message_id)
        return handled

    def _skipped(self, folder: str, uid: int, message_id: str | None) -> None:
        self.stats.skipped += 1
        log.info(
            "%s: %s UID %d: %s was already processed; skipped",
            self.address,
            folder,
            uid,
            message_id,
        )

    def _processed(self, folder: str, uid: int, handled: Handled) -> None:
        self.stats.processed += 1
        self.stats.handled.append(handled)
        log.info(
            "%s: %s UID %d: %s, %s",
            self.address,
            folder,
            uid,
            handled.classification.kind.value,
            "already processed" if handled.duplicate else handled.action,
        )

    async def _process(
        self, folder: str, uidvalidity: int, uid: int, raw: bytes, message_id: str | None
    ) -> Handled | None:
        """Process one message; _TryAgain when it failed and has tries left, None when it
        was passed over for good."""
        key = (folder, uidvalidity, uid)
        try:
            handled = await self.processor.process(self.address, folder, uidvalidity, uid, raw)
        except Exception as exc:
            if _not_the_message(exc):
                raise
            attempts = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempts
            if attempts < MAX_ATTEMPTS:
                log.warning(
                    "%s: %s UID %d could not be processed (try %d of %d); trying again",
                    self.address,
                    folder,
                    uid,
                    attempts,
                    MAX_ATTEMPTS,
                    exc_info=True,
                )
                raise _TryAgain(attempts) from exc
            del self._attempts[key]
            log.error(
                "%s: %s UID %d (Message-ID %s) failed %d times and is passed over; it was "
                "NOT acted on: look at it by hand",
                self.address,
                folder,
                uid,
                message_id or "none",
                attempts,
                exc_info=True,
            )
            await self._pass_over(folder, uidvalidity, uid, message_id, failure=_describe(exc))
            self.stats.given_up += 1
            return None
        self._attempts.pop(key, None)
        self._processed(folder, uid, handled)
        return handled

    async def _pass_over(
        self,
        folder: str,
        uidvalidity: int,
        uid: int,
        message_id: str | None = None,
        *,
        failure: str | None = None,
    ) -> None:
        """Move the cursor past a message without acting on it; one that kept failing is
        recorded as not processed, so it shows up and is not tried again after a re-scan."""
        now = self.engine.now()
        if failure is not None:
            try:
                async with self.engine.db.transaction() as s:
                    await iq.record_message(
                        s,
                        {
                            "mailbox": self.address,
                            "folder": folder,
                            "uidvalidity": uidvalidity,
                            "uid": uid,
                            "message_id": (message_id or "")[:998] or None,
                            "subject": "",
                            "kind": InboundKind.UNRELATED.value,
                            "details": {
                                "reason": f"not processed: {failure}"[:500],
                                "attempts": MAX_ATTEMPTS,
                            },
                            "processed_at": now,
                        },
                    )
                    await iq.set_cursor(s, self.address, folder, uidvalidity, uid, now)
                return
            except Exception as exc:
                if _not_the_message(exc):
                    raise
                log.warning("%s: could not record the failed message: %s", self.address, exc)
        async with self.engine.db.transaction() as s:
            await iq.set_cursor(s, self.address, folder, uidvalidity, uid, now)

    # --- the lease and connections ----------------------------------------------------------

    @property
    def _renew_every(self) -> float:
        return self.lease_ttl.total_seconds() / 3

    async def _take_lease(self) -> bool:
        """Take or renew the mailbox's lease; False when another process holds it or the
        database cannot be reached."""
        try:
            async with self.engine.db.transaction() as s:
                held = await mq.acquire_lease(
                    s, self.lease, self.holder, self.engine.now(), self.lease_ttl
                )
        except Exception as exc:
            if not _not_the_message(exc):
                raise
            log.warning("%s: cannot renew the watcher lease: %s", self.address, _describe(exc))
            held = False
        if held and not self._holding:
            log.info("%s: watcher lease taken by %s", self.address, self.holder)
        self._holding = held
        return held

    async def _release_lease(self) -> None:
        if not self._holding:
            return
        self._holding = False
        try:
            async with self.engine.db.transaction() as s:
                await mq.release_lease(s, self.lease, self.holder)
        except Exception as exc:
            # It runs out by itself; another watcher takes over then.
            log.warning("%s: could not give the watcher lease back: %s", self.address, exc)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[ImapSession]:
        # Secrets are read again for every connection: a rotated token file takes effect.
        settings = self.settings or imap_settings(self.box)
        async with session(settings, name=self.address) as imap:
            self.stats.connections += 1
            yield imap


def start_watchers(
    engine: Engine, processor: InboxProcessor, stop: asyncio.Event, **options: Any
) -> list[asyncio.Task[None]]:
    """A running watcher for every configured mailbox with an ``imap:`` block; each ends when
    ``stop`` is set. ``options`` go to every MailboxWatcher."""
    config = engine.catalog.config
    tasks: list[asyncio.Task[None]] = []
    for box in config.mailboxes if config else ():
        if box.imap is None:
            continue
        watcher = MailboxWatcher(engine, processor, box, **options)
        tasks.append(asyncio.create_task(watcher.run(stop), name=watcher.lease))
    return tasks


# --- what `sequencer inbox check` shows ---------------------------------------------------------


@dataclass(frozen=True)
class FolderStatus:
    """One watched folder: its UID epoch, the stored cursor and what waits after it."""

    folder: str
    uidvalidity: int | None = None
    cursor: int | None = None  # last UID processed; None before the first watch
    unprocessed: int | None = None  # messages after the cursor; None when it cannot be told
    note: str = ""
    ok: bool = True


@dataclass(frozen=True)
class InboxStatus:
    """A mailbox's IMAP server as the watcher sees it."""

    address: str
    server: str
    capabilities: tuple[str, ...]
    idle: bool
    folders: tuple[str, ...]
    watched: tuple[FolderStatus, ...]
    watcher: str | None  # the process holding the watcher lease, if any

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.watched)


async def inbox_status(
    engine: Engine, box: MailboxConfig, *, settings: ImapSettings | None = None
) -> InboxStatus:
    """Connect to the mailbox's IMAP server and say what the watcher would do; read-only.
    ConfigError or MailboxUnavailable when it cannot connect."""
    if box.imap is None:
        raise ConfigError(
            f"mailbox {box.address} has no `imap:` settings in sequencer.yaml; add host, port, "
            "security and password_env (see docs/mailboxes.md)"
        )
    settings = settings or imap_settings(box)
    watched: list[FolderStatus] = []
    async with session(settings, name=box.address) as imap:
        capabilities, idle = tuple(sorted(imap.capabilities)), imap.has_idle
        folders = tuple(await imap.list_folders())
        for folder in dict.fromkeys(box.imap.folders):
            try:
                state = await imap.examine(folder)
            except MailboxUnavailable as exc:
                watched.append(FolderStatus(folder, note=str(exc), ok=False))
                continue
            watched.append(await _folder_status(engine, box.address, imap, state))
    async with engine.db.transaction() as s:
        holder = await mq.lease_holder(s, lease_name(box.address), engine.now())
    return InboxStatus(
        address=box.address,
        server=f"{settings.host}:{settings.port}",
        capabilities=capabilities,
        idle=idle,
        folders=folders,
        watched=tuple(watched),
        watcher=holder,
    )


async def _folder_status(
    engine: Engine, address: str, imap: ImapSession, state: FolderState
) -> FolderStatus:
    async with engine.db.transaction() as s:
        stored = await iq.cursor(s, address, state.name)
        moved_at = await iq.cursor_moved_at(s, address, state.name)
    if stored is None:
        return FolderStatus(
            state.name,
            state.uidvalidity,
            note="not watched yet: the watcher starts with mail that arrives after it starts",
        )
    uidvalidity, last = stored
    if uidvalidity != state.uidvalidity:
        since = (moved_at - RESCAN_MARGIN).date() if moved_at is not None else None
        found = await imap.uid_search(*(("SINCE", imap_date(since)) if since else ("ALL",)))
        return FolderStatus(
            state.name,
            state.uidvalidity,
            None,
            len(found),
            note=f"UIDVALIDITY changed (was {uidvalidity}): {len(found)} message(s) will be "
            "checked again; those already processed are skipped",
        )
    found = await imap.uid_search("UID", f"{last + 1}:*")
    return FolderStatus(
        state.name, state.uidvalidity, last, len([uid for uid in found if uid > last])
    )


# --- helpers ------------------------------------------------------------------------------------


def message_id_of(raw: bytes) -> str | None:
    """The message's Message-ID as ``<id@host>`` (as the classifier records it), or None."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw[: end if 0 <= end < _HEADER_BYTES else _HEADER_BYTES]
    try:
        values = BytesHeaderParser(policy=compat32).parsebytes(head).get_all("Message-ID") or []
    except Exception:
        return None
    for value in values:
        text = str(value)
        found = _BRACKETED_ID.search(text)
        if found is not None:
            return found.group(0)
        for word in text.split():
            if "@" in word and len(word) < 250:
                return f"<{word}>"
    return None


def imap_date(day: date) -> str:
    """A date as IMAP searches take it (RFC 3501 ``date``): ``4-Mar-2025``."""
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


async def _highest_uid(imap: ImapSession, state: FolderState) -> int:
    if state.uidnext is not None:
        return max(0, state.uidnext - 1)
    return max(await imap.uid_search("ALL"), default=0)


def _not_the_message(exc: BaseException) -> bool:
    """Whether a failure lies with the database, the network or the server rather than with
    the message being processed: such failures are waited out, never counted against it."""
    if isinstance(
        exc,
        DatabaseError
        | MailboxUnavailable
        | OSError
        | TimeoutError
        | sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.DisconnectionError,
    ):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``event`` is set."""
    if event.is_set():
        return
    with suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
