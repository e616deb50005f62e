"""Tests for template rotation: candidate order, exhaustion policies, determinism and spread."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.core.model import Pool, WhenExhausted
from sequencer.core.rotation import RotationAction, RotationChoice, choose_template, simulate

T0 = datetime(2024, 3, 1, 9, 0)
SIX = ("case-study", "roi-calc", "webinar", "benchmark", "checklist", "teardown")


def pool(*templates: str, when: WhenExhausted = WhenExhausted.SKIP) -> Pool:
    return Pool(name="value-add", templates=templates, when_exhausted=when)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def rank(seed: str, template: str) -> str:
    """The seed tie-break, computed independently: sha256 of the seed, a NUL and the name."""
    return hashlib.sha256(f"{seed}\0{template}".encode()).hexdigest()


# --- concrete examples ------------------------------------------------------------------------


def test_empty_pool_is_an_error_naming_the_pool() -> None:
    with pytest.raises(ValueError, match="value-add"):
        choose_template(pool(), seed="enr-1:v1", received={})


def test_only_unreceived_templates_are_candidates() -> None:
    p = pool("a", "b", "c")
    received = {"a": at(0), "c": at(1)}
    # "b" is used far more and sent at the company, yet it is the only one not yet received.
    choice = choose_template(
        p, seed="s", received=received, company_recent={"b": at(5)}, usage={"b": 1000}
    )
    assert choice == RotationChoice(
        RotationAction.SEND,
        "b",
        False,
        "not yet sent to this prospect; the only one left in pool 'value-add'",
    )


def test_prefers_a_template_nobody_at_the_company_received_recently() -> None:
    p = pool("a", "b", "c")
    choice = choose_template(
        p,
        seed="s",
        received={},
        company_recent={"a": at(0), "c": at(1)},
        usage={"a": 0, "b": 50, "c": 0},
    )
    assert choice.action is RotationAction.SEND
    assert choice.template == "b"
    assert not choice.reused
    assert "nobody at the company" in choice.reason


def test_among_company_templates_the_one_sent_there_least_recently_wins() -> None:
    p = pool("a", "b", "c")
    company = {"a": at(30), "b": at(10), "c": at(20)}
    choice = choose_template(p, seed="s", received={}, company_recent=company, usage={"b": 99})
    assert choice.template == "b"
    assert "least recently" in choice.reason


def test_lowest_usage_breaks_ties_after_company() -> None:
    p = pool("a", "b", "c", "d")
    usage = {"a": 5, "b": 2, "c": 3, "d": 2, "zzz": 0}
    # "d" is unreceived but was sent at the company, so "b" (fresh, least used) wins.
    choice = choose_template(p, seed="s", received={}, company_recent={"d": at(0)}, usage=usage)
    assert choice.template == "b"
    assert "least used overall (2 sends)" in choice.reason


def test_usage_breaks_ties_between_equally_old_company_sends() -> None:
    p = pool("a", "b")
    company = {"a": at(0), "b": at(0)}
    choice = choose_template(p, seed="s", received={}, company_recent=company, usage={"a": 1})
    assert choice.template == "b"


def test_seed_hash_breaks_remaining_ties() -> None:
    p = pool(*SIX)
    for seed in ("enr-1:v1", "enr-2:v1", "enr-3:v7"):
        choice = choose_template(p, seed=seed, received={})
        assert choice.template == min(SIX, key=lambda t: rank(seed, t))
        assert "picked by seed" in choice.reason


def test_same_seed_same_answer_different_seeds_differ() -> None:
    p = pool(*SIX)
    first = choose_template(p, seed="enr-42:value-1", received={})
    assert choose_template(p, seed="enr-42:value-1", received={}) == first
    others = {choose_template(p, seed=f"enr-{i}:value-1", received={}).template for i in range(50)}
    assert len(others) > 1


def test_names_outside_the_pool_are_ignored() -> None:
    p = pool("a", "b")
    noise = {"x": at(0), "y": at(1)}
    plain = choose_template(p, seed="s", received={})
    noisy = choose_template(
        p, seed="s", received=noise, company_recent=noise, usage={"x": -5, "y": 7}
    )
    assert noisy == plain


def test_received_names_outside_the_pool_do_not_prevent_exhaustion() -> None:
    p = pool("a", when=WhenExhausted.SKIP)
    choice = choose_template(p, seed="s", received={"a": at(0), "other": at(1)})
    assert choice.action is RotationAction.SKIP


def test_duplicate_names_in_a_pool_count_once() -> None:
    p = pool("a", "a", "b", when=WhenExhausted.SKIP)
    choice = choose_template(p, seed="s", received={"a": at(0), "b": at(1)})
    assert choice.reason.startswith("all 2 templates")


# --- exhaustion -------------------------------------------------------------------------------


def test_exhausted_skip() -> None:
    p = pool(*SIX, when=WhenExhausted.SKIP)
    received = {t: at(i) for i, t in enumerate(SIX)}
    choice = choose_template(p, seed="s", received=received)
    assert choice == RotationChoice(
        RotationAction.SKIP,
        None,
        False,
        "all 6 templates in pool 'value-add' already sent; skipping step",
    )


def test_exhausted_stop() -> None:
    p = pool(*SIX, when=WhenExhausted.STOP)
    received = {t: at(i) for i, t in enumerate(SIX)}
    choice = choose_template(p, seed="s", received=received)
    assert choice.action is RotationAction.STOP
    assert choice.template is None
    assert not choice.reused
    assert "stopping" in choice.reason


def test_exhausted_single_template_pool_reason() -> None:
    choice = choose_template(pool("a"), seed="s", received={"a": at(0)})
    assert choice.action is RotationAction.SKIP
    assert "only template in pool 'value-add'" in choice.reason


def test_exhausted_reuse_sends_the_least_recently_received() -> None:
    p = pool("a", "b", "c", when=WhenExhausted.REUSE)
    received = {"a": at(20), "b": at(5), "c": at(10)}
    # Company and usage do not outrank how long ago this prospect saw it.
    choice = choose_template(
        p, seed="s", received=received, company_recent={"b": at(30)}, usage={"b": 100}
    )
    assert choice.action is RotationAction.SEND
    assert choice.template == "b"
    assert choice.reused
    assert "received least recently" in choice.reason


def test_exhausted_reuse_ties_go_to_lowest_usage_then_seed() -> None:
    p = pool("a", "b", "c", when=WhenExhausted.REUSE)
    received = {"a": at(0), "b": at(0), "c": at(0)}
    choice = choose_template(p, seed="s", received=received, usage={"a": 3, "b": 1, "c": 3})
    assert choice.template == "b"
    for seed in ("s1", "s2", "s3", "s4"):
        tied = choose_template(p, seed=seed, received=received)
        assert tied.template == min(("a", "b", "c"), key=lambda t: rank(seed, t))


@pytest.mark.parametrize("policy", [WhenExhausted.SKIP, WhenExhausted.STOP])
def test_allow_reuse_overrides_skip_and_stop(policy: WhenExhausted) -> None:
    p = pool("a", "b", when=policy)
    received = {"a": at(9), "b": at(3)}
    choice = choose_template(p, seed="s", received=received, allow_reuse=True)
    assert choice.action is RotationAction.SEND
    assert choice.template == "b"
    assert choice.reused
    assert "the sequence allows reuse" in choice.reason


def test_allow_reuse_does_not_reuse_while_candidates_remain() -> None:
    p = pool("a", "b", when=WhenExhausted.REUSE)
    choice = choose_template(p, seed="s", received={"a": at(0)}, allow_reuse=True)
    assert choice.template == "b"
    assert not choice.reused


def test_choice_is_immutable() -> None:
    choice = choose_template(pool("a"), seed="s", received={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        choice.template = "b"  # type: ignore[misc]


# --- simulate ---------------------------------------------------------------------------------


def test_simulate_walks_the_whole_pool_then_applies_the_policy() -> None:
    choices = simulate(pool(*SIX, when=WhenExhausted.SKIP), 8, seed="enr-1")
    assert len(choices) == 8
    assert sorted(c.template for c in choices[:6] if c.template) == sorted(SIX)
    assert [c.action for c in choices[6:]] == [RotationAction.SKIP, RotationAction.SKIP]


def test_simulate_reuse_cycles_in_the_same_order() -> None:
    choices = simulate(pool(*SIX, when=WhenExhausted.REUSE), 18, seed="enr-1")
    names = [c.template for c in choices]
    assert names[:6] == names[6:12] == names[12:18]
    assert not any(c.reused for c in choices[:6])
    assert all(c.reused for c in choices[6:])


def test_simulate_edge_cases() -> None:
    assert simulate(pool("a"), 0, seed="s") == []
    with pytest.raises(ValueError, match="draws"):
        simulate(pool("a"), -1, seed="s")
    with pytest.raises(ValueError, match="value-add"):
        simulate(pool(), 3, seed="s")


def test_different_seeds_spread_over_the_pool() -> None:
    p = pool(*SIX)
    chosen = [choose_template(p, seed=f"enr-{i}:value-1", received={}).template for i in range(200)]
    assert set(chosen) == set(SIX)
    # Far from uniform would mean the hash is not doing its job; 200/6 is about 33 each.
    assert min(chosen.count(t) for t in SIX) >= 10


# --- properties -------------------------------------------------------------------------------

NAMES = st.sampled_from([f"t{i}" for i in range(10)])
TIMES = st.integers(min_value=0, max_value=5).map(at)  # few values so ties are common
POOLS = st.builds(
    Pool,
    name=st.just("value-add"),
    templates=st.lists(NAMES, min_size=1, max_size=8, unique=True).map(tuple),
    when_exhausted=st.sampled_from(list(WhenExhausted)),
)
TIMESTAMPS = st.dictionaries(NAMES, TIMES, max_size=10)
USAGE = st.dictionaries(NAMES, st.integers(min_value=0, max_value=3), max_size=10)
SEEDS = st.text(max_size=12)
V = TypeVar("V")


def reordered(mapping: Mapping[str, V]) -> dict[str, V]:
    """The same entries, inserted in the opposite order."""
    return dict(reversed(list(mapping.items())))


@settings(max_examples=300, deadline=None)
@given(POOLS, SEEDS, TIMESTAMPS, TIMESTAMPS, USAGE, st.booleans())
def test_never_repeats_while_an_unused_template_remains(
    p: Pool,
    seed: str,
    received: dict[str, datetime],
    company: dict[str, datetime],
    usage: dict[str, int],
    allow_reuse: bool,
) -> None:
    choice = choose_template(
        p,
        seed=seed,
        received=received,
        company_recent=company,
        usage=usage,
        allow_reuse=allow_reuse,
    )
    if any(t not in received for t in p.templates):
        assert choice.action is RotationAction.SEND
        assert choice.template not in received
        assert not choice.reused


@settings(max_examples=300, deadline=None)
@given(POOLS, SEEDS, TIMESTAMPS, TIMESTAMPS, USAGE, st.booleans())
def test_result_is_a_pool_member_exactly_when_sending(
    p: Pool,
    seed: str,
    received: dict[str, datetime],
    company: dict[str, datetime],
    usage: dict[str, int],
    allow_reuse: bool,
) -> None:
    choice = choose_template(
        p,
        seed=seed,
        received=received,
        company_recent=company,
        usage=usage,
        allow_reuse=allow_reuse,
    )
    if choice.action is RotationAction.SEND:
        assert choice.template in p.templates
    else:
        assert choice.template is None
    assert choice.reason


@settings(max_examples=300, deadline=None)
@given(POOLS, SEEDS, TIMESTAMPS, TIMESTAMPS, USAGE, st.booleans())
def test_deterministic_and_independent_of_mapping_order(
    p: Pool,
    seed: str,
    received: dict[str, datetime],
    company: dict[str, datetime],
    usage: dict[str, int],
    allow_reuse: bool,
) -> None:
    first = choose_template(
        p,
        seed=seed,
        received=received,
        company_recent=company,
        usage=usage,
        allow_reuse=allow_reuse,
    )
    again = choose_template(
        p,
        seed=seed,
        received=received,
        company_recent=company,
        usage=usage,
        allow_reuse=allow_reuse,
    )
    flipped = choose_template(
        p,
        seed=seed,
        received=reordered(received),
        company_recent=reordered(company),
        usage=reordered(usage),
        allow_reuse=allow_reuse,
    )
    assert first == again == flipped


@settings(max_examples=300, deadline=None)
@given(POOLS, SEEDS)
def test_n_draws_give_n_distinct_templates(p: Pool, seed: str) -> None:
    choices = simulate(p, len(p.templates), seed=seed)
    names = [c.template for c in choices]
    assert all(c.action is RotationAction.SEND and not c.reused for c in choices)
    assert sorted(n for n in names if n is not None) == sorted(p.templates)


@settings(max_examples=300, deadline=None)
@given(POOLS, SEEDS, TIMESTAMPS, TIMESTAMPS, USAGE)
def test_company_preference(
    p: Pool,
    seed: str,
    received: dict[str, datetime],
    company: dict[str, datetime],
    usage: dict[str, int],
) -> None:
    choice = choose_template(p, seed=seed, received=received, company_recent=company, usage=usage)
    fresh = [t for t in p.templates if t not in received and t not in company]
    unreceived = [t for t in p.templates if t not in received]
    if fresh:
        assert choice.template in fresh
    elif unreceived:
        oldest = min(company[t] for t in unreceived)
        assert choice.template is not None
        assert company[choice.template] == oldest


@settings(max_examples=300, deadline=None)
@given(POOLS, SEEDS, TIMESTAMPS, USAGE, st.booleans())
def test_exhausted_policy(
    p: Pool,
    seed: str,
    extra: dict[str, datetime],
    usage: dict[str, int],
    allow_reuse: bool,
) -> None:
    received = {**extra, **{t: extra.get(t, at(i)) for i, t in enumerate(p.templates)}}
    choice = choose_template(p, seed=seed, received=received, usage=usage, allow_reuse=allow_reuse)
    if allow_reuse or p.when_exhausted is WhenExhausted.REUSE:
        assert choice.action is RotationAction.SEND
        assert choice.reused
        assert choice.template is not None
        assert received[choice.template] == min(received[t] for t in p.templates)
    elif p.when_exhausted is WhenExhausted.SKIP:
        assert (choice.action, choice.template, choice.reused) == (RotationAction.SKIP, None, False)
    else:
        assert (choice.action, choice.template, choice.reused) == (RotationAction.STOP, None, False)
