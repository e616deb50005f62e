"""Signed per-recipient unsubscribe tokens and the one-click link (RFC 8058) built from them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

#: First byte of every token, so a later layout can be told apart from this one.
TOKEN_VERSION = 1
#: Bytes of HMAC-SHA256 kept: 128 bits is far beyond guessing, and keeps links short.
TAG_BYTES = 16
#: Longest email a token is made for (RFC 5321 path limit); it also bounds what we decode.
MAX_EMAIL_LENGTH = 254

# Domain separation: the same secret may sign other things (Message-IDs), and a tag made
# for one purpose must never verify for another.
_PURPOSE = b"unsubscribe\0"
# Worst case is every character taking four UTF-8 bytes.
_MAX_PAYLOAD = 1 + 4 * MAX_EMAIL_LENGTH + TAG_BYTES
_MAX_TOKEN_CHARS = (_MAX_PAYLOAD * 4 + 2) // 3
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")


def make_token(secret: bytes, email: str) -> str:
    """The unsubscribe token for ``email``: deterministic, unforgeable without ``secret``.

    Raises ValueError for an empty secret, an empty email or one longer than 254 characters.
    """
    _check_secret(secret)
    normalized = email.strip().lower()
    if not normalized:
        raise ValueError("email: an unsubscribe token needs an email address, got an empty one")
    if len(normalized) > MAX_EMAIL_LENGTH:
        raise ValueError(
            f"email: {len(normalized)} characters is longer than the {MAX_EMAIL_LENGTH} an "
            "email address can have"
        )
    address = normalized.encode("utf-8")
    payload = bytes([TOKEN_VERSION]) + address + _tag(secret, address)
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def read_token(secret: bytes, token: str) -> str | None:
    """The email a token was made for, or None when it was not made with ``secret``.

    Never raises for any token string: links arrive from the open internet.
    """
    _check_secret(secret)
    # Only the canonical spelling is accepted, so each email has exactly one valid link
    # (base64 decoders otherwise skip stray characters and ignore a final character's
    # spare bits, which would let many strings stand for one token).
    if len(token) > _MAX_TOKEN_CHARS or len(token) % 4 == 1:
        return None
    if _TOKEN_CHARS.fullmatch(token) is None:
        return None
    try:
        payload = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii") != token:
        return None
    if len(payload) < 1 + 1 + TAG_BYTES or payload[0] != TOKEN_VERSION:
        return None
    address, tag = payload[1:-TAG_BYTES], payload[-TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(secret, address)):
        return None
    try:
        return address.decode("utf-8")
    except UnicodeDecodeError:
        # Only reachable with a tag made elsewhere with our secret over non-UTF-8 bytes.
        return None


def unsubscribe_url(public_url: str, token: str) -> str:
    """The one-click link for a token under the service's public base URL."""
    return f"{public_url.rstrip('/')}/u/{token}"


def _tag(secret: bytes, address: bytes) -> bytes:
    return hmac.new(secret, _PURPOSE + address, hashlib.sha256).digest()[:TAG_BYTES]


def _check_secret(secret: bytes) -> None:
    # An empty key makes every tag computable by anyone: a configuration mistake, not input.
    if not secret:
        raise ValueError("secret: unsubscribe tokens need a non-empty secret key")
