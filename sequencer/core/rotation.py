"""Template rotation: which pool template a prospect gets next, and what if none is left."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from sequencer.core.model import Pool, WhenExhausted

# Module-level read-only defaults: a mutable ``{}`` default would be shared between calls.
_NO_TIMES: Mapping[str, datetime] = MappingProxyType({})
_NO_USAGE: Mapping[str, int] = MappingProxyType({})

_SIMULATION_START = datetime(2000, 1, 1)


class RotationAction(StrEnum):
    SEND = "send"
    SKIP = "skip"  # pool exhausted, policy skip: skip this step
    STOP = "stop"  # pool exhausted, policy stop: finish the enrollment


@dataclass(frozen=True)
class RotationChoice:
    """The outcome of one draw from a pool; ``template`` is set exactly when ``action`` is SEND."""

    action: RotationAction
    template: str | None
    reused: bool  # the prospect already received this template (reuse after exhaustion)
    reason: str  # short human explanation, shown in previews and the timeline


def _seed_rank(seed: str, template: str) -> str:
    # sha256 rather than hash(): string hashing is salted per process, and the same seed must
    # give the same answer in every worker and on every run.
    # The NUL separator keeps ("ab", "c") and ("a", "bc") from hashing alike.
    return hashlib.sha256(f"{seed}\0{template}".encode()).hexdigest()


def choose_template(
    pool: Pool,
    *,
    seed: str,
    received: Mapping[str, datetime],
    company_recent: Mapping[str, datetime] = _NO_TIMES,
    usage: Mapping[str, int] = _NO_USAGE,
    allow_reuse: bool = False,
) -> RotationChoice:
    """Pick the next template of ``pool`` for one prospect.

    Only templates the prospect never received are candidates. Among them the order of
    preference is: not sent to anyone at the company recently; otherwise sent there least
    recently; then least used overall; then a stable hash of ``seed`` and the name; then the
    name. When every template was received, the pool's ``when_exhausted`` policy decides;
    ``allow_reuse`` turns any policy into REUSE, which resends the template this prospect
    received least recently.

    ``received`` and ``company_recent`` map template names to when they were last sent;
    ``usage`` maps them to how often they were sent overall. Names not in the pool are
    ignored, and the result does not depend on the order of any mapping.

    Raises ``ValueError`` if the pool has no templates.
    """
    # dict.fromkeys drops duplicate names while keeping the pool's order for messages.
    templates = tuple(dict.fromkeys(pool.templates))
    if not templates:
        raise ValueError(f"pool {pool.name!r} has no templates to rotate through")

    candidates = [t for t in templates if t not in received]
    if candidates:
        return _choose_unsent(pool, candidates, seed, company_recent, usage)
    return _exhausted(pool, templates, seed, received, usage, allow_reuse)


def simulate(pool: Pool, draws: int, *, seed: str) -> list[RotationChoice]:
    """Draw ``draws`` times for one prospect with no history, as previews and tests need.

    Each SEND counts as received at ``2000-01-01`` plus the draw's index in minutes, so later
    draws see the earlier ones. The list always has ``draws`` entries; once a STOP or SKIP
    pool is exhausted, every further entry repeats that outcome.
    """
    if draws < 0:
        raise ValueError(f"draws must be zero or more, got {draws}")
    if not pool.templates:
        raise ValueError(f"pool {pool.name!r} has no templates to rotate through")
    received: dict[str, datetime] = {}
    choices: list[RotationChoice] = []
    for i in range(draws):
        choice = choose_template(pool, seed=seed, received=received)
        if choice.action is RotationAction.SEND and choice.template is not None:
            received[choice.template] = _SIMULATION_START + timedelta(minutes=i)
        choices.append(choice)
    return choices


def _choose_unsent(
    pool: Pool,
    candidates: list[str],
    seed: str,
    company_recent: Mapping[str, datetime],
    usage: Mapping[str, int],
) -> RotationChoice:
    prefix = "not yet sent to this prospect"
    if len(candidates) == 1:
        return _send(candidates[0], f"{prefix}; the only one left in pool {pool.name!r}")

    fresh = [t for t in candidates if t not in company_recent]
    if fresh:
        # Any template new to the company beats one it saw recently, however long ago that was.
        ranked = sorted(fresh, key=lambda t: (usage.get(t, 0), _seed_rank(seed, t), t))
        company_note = "nobody at the company received it recently"
        if len(fresh) == 1:
            return _send(ranked[0], f"{prefix}; {company_note}")
        return _send(ranked[0], _tie_note(prefix, company_note, ranked, seed, usage))

    by_company = sorted(
        candidates, key=lambda t: (company_recent[t], usage.get(t, 0), _seed_rank(seed, t), t)
    )
    best, runner_up = by_company[0], by_company[1]
    company_note = "sent at the company least recently"
    if company_recent[best] != company_recent[runner_up]:
        return _send(best, f"{prefix}; {company_note}")
    tied = [t for t in by_company if company_recent[t] == company_recent[best]]
    return _send(best, _tie_note(prefix, company_note, tied, seed, usage))


def _tie_note(
    prefix: str, company_note: str, ranked: list[str], seed: str, usage: Mapping[str, int]
) -> str:
    """Explain how ``ranked[0]`` won among templates the company criterion could not separate."""
    best = ranked[0]
    best_usage = usage.get(best, 0)
    if len(ranked) > 1 and usage.get(ranked[1], 0) != best_usage:
        sends = "send" if best_usage == 1 else "sends"
        return f"{prefix}; {company_note}; least used overall ({best_usage} {sends})"
    return f"{prefix}; {company_note}; picked by seed among equally used templates"


def _exhausted(
    pool: Pool,
    templates: tuple[str, ...],
    seed: str,
    received: Mapping[str, datetime],
    usage: Mapping[str, int],
    allow_reuse: bool,
) -> RotationChoice:
    if len(templates) == 1:
        prefix = f"the only template in pool {pool.name!r} already sent"
    else:
        prefix = f"all {len(templates)} templates in pool {pool.name!r} already sent"
    if allow_reuse or pool.when_exhausted is WhenExhausted.REUSE:
        oldest = min(
            templates, key=lambda t: (received[t], usage.get(t, 0), _seed_rank(seed, t), t)
        )
        suffix = (
            "" if pool.when_exhausted is WhenExhausted.REUSE else " (the sequence allows reuse)"
        )
        return RotationChoice(
            action=RotationAction.SEND,
            template=oldest,
            reused=True,
            reason=f"{prefix}; reusing the one this prospect received least recently{suffix}",
        )
    if pool.when_exhausted is WhenExhausted.STOP:
        return RotationChoice(
            action=RotationAction.STOP,
            template=None,
            reused=False,
            reason=f"{prefix}; stopping the enrollment",
        )
    return RotationChoice(
        action=RotationAction.SKIP,
        template=None,
        reused=False,
        reason=f"{prefix}; skipping step",
    )


def _send(template: str, reason: str) -> RotationChoice:
    return RotationChoice(
        action=RotationAction.SEND, template=template, reused=False, reason=reason
    )
