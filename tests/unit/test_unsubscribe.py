"""Tests for unsubscribe tokens: round trips, forgery, enumeration and garbage input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sequencer.core.unsubscribe import (
    MAX_EMAIL_LENGTH,
    TAG_BYTES,
    make_token,
    read_token,
    unsubscribe_url,
)

SECRET = b"k3y-for-tests-only-0123456789abcdef"
OTHER_SECRET = b"another-key-entirely-9876543210"
EMAIL = "ana.lopez@northwind.example"
URLSAFE = re.compile(r"[A-Za-z0-9_-]+")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def encode(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


# --- round trips ----------------------------------------------------------------------------


def test_token_round_trips_to_the_email() -> None:
    assert read_token(SECRET, make_token(SECRET, EMAIL)) == EMAIL


def test_token_carries_the_normalised_email() -> None:
    token = make_token(SECRET, "  Ana.Lopez@NorthWind.Example \n")
    assert token == make_token(SECRET, EMAIL)
    assert read_token(SECRET, token) == EMAIL


def test_token_is_deterministic_urlsafe_and_unpadded() -> None:
    token = make_token(SECRET, EMAIL)
    assert token == make_token(SECRET, EMAIL)
    assert URLSAFE.fullmatch(token)


def test_token_layout_is_version_email_and_truncated_tag() -> None:
    payload = decode(make_token(SECRET, EMAIL))
    expected_tag = hmac.new(SECRET, b"unsubscribe\0" + EMAIL.encode(), hashlib.sha256).digest()
    assert payload == b"\x01" + EMAIL.encode() + expected_tag[:TAG_BYTES]


@given(st.emails())
def test_any_email_round_trips(email: str) -> None:
    assume(len(email) <= MAX_EMAIL_LENGTH)
    assert read_token(SECRET, make_token(SECRET, email)) == email.strip().lower()


@given(st.text(min_size=1, max_size=80))
def test_any_text_round_trips_as_normalised_text(email: str) -> None:
    normalized = email.strip().lower()
    assume(normalized and len(normalized) <= MAX_EMAIL_LENGTH)
    assert read_token(SECRET, make_token(SECRET, email)) == normalized


def test_international_email_round_trips() -> None:
    assert read_token(SECRET, make_token(SECRET, "José@Müller.Example")) == "josé@müller.example"


def test_unsubscribe_url_joins_base_and_token() -> None:
    token = make_token(SECRET, EMAIL)
    assert unsubscribe_url("https://go.example", token) == f"https://go.example/u/{token}"
    assert unsubscribe_url("https://go.example/app//", token) == f"https://go.example/app/u/{token}"


# --- forging ----------------------------------------------------------------------------------


def test_every_changed_character_is_rejected() -> None:
    token = make_token(SECRET, EMAIL)
    for position, original in enumerate(token):
        for replacement in ALPHABET:
            if replacement != original:
                forged = token[:position] + replacement + token[position + 1 :]
                assert read_token(SECRET, forged) is None, (position, replacement)


def test_every_flipped_payload_bit_is_rejected() -> None:
    payload = decode(make_token(SECRET, EMAIL))
    for position in range(len(payload)):
        for bit in range(8):
            forged = bytearray(payload)
            forged[position] ^= 1 << bit
            assert read_token(SECRET, encode(bytes(forged))) is None, (position, bit)


def test_swapping_the_email_inside_is_rejected() -> None:
    payload = decode(make_token(SECRET, EMAIL))
    tag = payload[-TAG_BYTES:]
    for other in (
        "ceo@northwind.example",
        "ana.lopez@northwind.exampl",
        "Ana.Lopez@northwind.example",
    ):
        assert read_token(SECRET, encode(b"\x01" + other.encode() + tag)) is None


def test_token_from_another_secret_is_rejected() -> None:
    assert read_token(OTHER_SECRET, make_token(SECRET, EMAIL)) is None
    assert read_token(SECRET, make_token(OTHER_SECRET, EMAIL)) is None


def test_truncated_and_extended_tokens_are_rejected() -> None:
    token = make_token(SECRET, EMAIL)
    for length in range(len(token)):
        assert read_token(SECRET, token[:length]) is None, length
    for suffix in ("A", "AA", "=", "==", " ", "\n", "/", "."):
        assert read_token(SECRET, token + suffix) is None, suffix
    assert read_token(SECRET, " " + token) is None


def test_other_versions_and_other_purposes_are_rejected() -> None:
    payload = decode(make_token(SECRET, EMAIL))
    assert read_token(SECRET, encode(b"\x02" + payload[1:])) is None
    # A tag over the bare email (no purpose prefix), e.g. from another use of the secret.
    bare = hmac.new(SECRET, EMAIL.encode(), hashlib.sha256).digest()[:TAG_BYTES]
    assert read_token(SECRET, encode(b"\x01" + EMAIL.encode() + bare)) is None


def test_standard_base64_spelling_is_rejected() -> None:
    # Find an email whose token contains '-' or '_' and present it with '+' or '/'.
    for n in range(200):
        token = make_token(SECRET, f"user{n}@northwind.example")
        if "-" in token or "_" in token:
            assert read_token(SECRET, token.replace("-", "+").replace("_", "/")) is None
            return
    pytest.fail("no token with '-' or '_' among 200 emails")


@given(st.text(max_size=400))
def test_garbage_never_raises_and_never_verifies(token: str) -> None:
    assert read_token(SECRET, token) is None


@given(st.text(alphabet=ALPHABET, min_size=20, max_size=400))
def test_well_formed_base64_garbage_never_verifies(token: str) -> None:
    assert read_token(SECRET, token) is None


@given(st.binary(max_size=300))
def test_arbitrary_payloads_never_verify(payload: bytes) -> None:
    assert read_token(SECRET, encode(payload)) is None
    assert read_token(SECRET, encode(b"\x01" + payload)) is None


@given(st.emails(), st.binary(min_size=1, max_size=64))
def test_token_made_with_another_secret_never_verifies(email: str, secret: bytes) -> None:
    assume(secret != SECRET and len(email) <= MAX_EMAIL_LENGTH)
    assert read_token(SECRET, make_token(secret, email)) is None


# --- enumeration ------------------------------------------------------------------------------


def test_tokens_of_sequential_emails_share_no_pattern() -> None:
    emails = [f"user{n}@northwind.example" for n in range(100)]
    tags = [decode(make_token(SECRET, email))[-TAG_BYTES:] for email in emails]
    assert len(set(tags)) == len(tags)
    for first, second in itertools.pairwise(tags):
        # Neighbouring emails get unrelated tags: about half of the 128 bits differ.
        distance = bin(int.from_bytes(first, "big") ^ int.from_bytes(second, "big")).count("1")
        assert 30 < distance < 98, distance
    # Knowing one token says nothing about the next: the next one can't be built from it.
    first_tag = tags[0]
    assert read_token(SECRET, encode(b"\x01" + emails[1].encode() + first_tag)) is None


def test_tokens_for_different_emails_differ() -> None:
    assert make_token(SECRET, "a@northwind.example") != make_token(SECRET, "b@northwind.example")


# --- misuse -----------------------------------------------------------------------------------


@pytest.mark.parametrize("email", ["", "   ", "\n"])
def test_empty_email_is_refused(email: str) -> None:
    with pytest.raises(ValueError, match="email"):
        make_token(SECRET, email)


def test_overlong_email_is_refused() -> None:
    with pytest.raises(ValueError, match="254"):
        make_token(SECRET, "a" * 250 + "@x.example")


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        make_token(b"", EMAIL)
    with pytest.raises(ValueError, match="secret"):
        read_token(b"", make_token(SECRET, EMAIL))
