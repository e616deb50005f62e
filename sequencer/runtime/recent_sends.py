"""What this process remembers of each mailbox's sends in the last 24 hours, for its daily cap.

Reading a day of sends for every email makes sending quadratic in the day's volume (a mailbox
with a cap of 10,000 would read up to 10,000 rows per email). The memory is only trusted while
the mailbox's `last_sent_at`, read under the mailbox's lock, is still the value this process
wrote with its own last send: then no other process has sent from the mailbox since (another
process's send comes later under the same lock, so on a running clock it writes a later time;
on a clock stopped for tests or demos two sends write the same time, so the memory is only
used with the system clock). Sends
that later fail or go back to the queue stay counted, so the memory over-counts, never
under-counts; and once it says the cap may be reached, the database is read again and decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.store import mailboxes as mq

DAY = timedelta(hours=24)


@dataclass
class _Known:
    #: The mailbox's `last_sent_at` when ``times`` was last known to be complete.
    stamp: datetime | None
    times: list[datetime] = field(default_factory=list)  # oldest first


class RecentSends:
    """Per-mailbox send times of the last 24 hours, as far as the daily cap needs them."""

    def __init__(self, *, remember: bool = True) -> None:
        #: False: read the database every time (a stopped clock cannot tell sends apart).
        self.remember = remember
        self._known: dict[str, _Known] = {}

    async def at_cap(
        self,
        s: AsyncSession,
        address: str,
        cap: int,
        last_sent_at: datetime | None,
        now: datetime,
    ) -> Sequence[datetime]:
        """The mailbox's sends that bear on its cap, read under the mailbox's lock: none when
        there are fewer than ``cap`` (the cap cannot hold anything back then), else the
        newest ``cap`` from the database."""
        known = self._known.get(address) if self.remember else None
        if known is not None and known.stamp == last_sent_at:
            cutoff = now - DAY
            if known.times and known.times[0] <= cutoff:
                known.times = [t for t in known.times if t > cutoff]
            if len(known.times) < cap:
                return []
        times = await mq.mailbox_sends(s, address, now, cap)
        if self.remember:
            self._known[address] = _Known(last_sent_at, sorted(times))
        return times if len(times) >= cap else []

    def add(self, address: str, at: datetime) -> None:
        """This process marked one email `sending` at ``at`` and wrote ``at`` as the
        mailbox's `last_sent_at` (if that is rolled back, the stamp no longer matches)."""
        known = self._known.get(address)
        if known is None:
            return
        known.times.append(at)
        known.stamp = at
