"""``/u/{token}``: the unsubscribe link of every email, one-click per RFC 8058.

GET shows a page with a button and changes nothing: mail scanners and link previews fetch
every link in a message, and an unsubscribe that happened on GET would remove people who never
asked. POST (the page's button, or a mail client's one-click request with the body
``List-Unsubscribe=One-Click``) suppresses the address everywhere and stops its sequences.
No cookie, no login: the signed token is the authorisation, and a token that is not ours
(forged, altered, truncated, signed with another secret) gets the same page as any unknown
address.
"""

from __future__ import annotations

import logging
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sequencer.core.errors import DatabaseError
from sequencer.core.states import SuppressionReason
from sequencer.core.unsubscribe import read_token
from sequencer.store import prospects as pq
from sequencer.web import pages
from sequencer.web.http import BodyTooLarge, read_body
from sequencer.web.service import Service

log = logging.getLogger("sequencer.web")

#: A one-click body is 26 bytes; a browser's form a few more.
MAX_BODY = 4096


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def show(request: Request) -> Response:
    """The confirmation page (or, when already suppressed, the done page)."""
    service = _service(request)
    email = read_token(service.secret, request.path_params["token"])
    if email is None:
        return pages.not_found_page(service.company)
    try:
        engine = await service.schema_current()
        async with engine.db.transaction() as s:
            already = bool(await pq.suppressed(s, [email]))
    except DatabaseError as exc:
        log.error("unsubscribe page: %s", exc)
        return pages.unavailable_page(service.company)
    if already:
        return pages.done_page(email, service.company, already=True)
    return pages.confirm_page(email, service.company)


async def unsubscribe(request: Request) -> Response:
    """Suppress the token's address and stop its sequences; idempotent."""
    service = _service(request)
    email = read_token(service.secret, request.path_params["token"])
    if email is None:
        return pages.not_found_page(service.company)
    try:
        body = await read_body(request, MAX_BODY)
    except BodyTooLarge:
        return pages.bad_request_page(service.company)
    if not one_click(request.headers.get("content-type", ""), body):
        return pages.bad_request_page(service.company)
    try:
        engine = await service.schema_current()
        changed = await engine.suppress(
            email,
            reason=SuppressionReason.UNSUBSCRIBED,
            note="unsubscribe link",
            how="link",
        )
    except DatabaseError as exc:
        log.error("unsubscribe of %s failed: %s", pages.mask_email(email), exc)
        return pages.unavailable_page(service.company)
    already = bool(changed.detail)
    if not already:
        log.info(
            "unsubscribed %s by link; stopped %d enrollment(s)",
            pages.mask_email(email),
            changed.enrollments,
        )
    return pages.done_page(email, service.company, already=already)


def one_click(content_type: str, body: bytes) -> bool:
    """Whether the body carries ``List-Unsubscribe=One-Click`` (RFC 8058 section 3.1), sent
    as ``application/x-www-form-urlencoded`` or as ``multipart/form-data``."""
    if content_type.lower().startswith("multipart/form-data"):
        return any(
            name == "List-Unsubscribe" and value.strip().lower() == "one-click"
            for name, value in _multipart_fields(content_type, body)
        )
    text = body.decode("utf-8", errors="replace")
    return any(
        name == "List-Unsubscribe" and value.strip().lower() == "one-click"
        for name, value in parse_qsl(text, keep_blank_values=True)
    )


def _multipart_fields(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """(name, value) of each text field of a multipart/form-data body, read with the
    standard library's MIME parser (the boundary comes from the Content-Type)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    fields: list[tuple[str, str]] = []
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields.append((name, payload.decode("utf-8", errors="replace")))
    return fields


ROUTES = [
    Route("/u/{token}", show, methods=["GET"]),
    Route("/u/{token}", unsubscribe, methods=["POST"]),
]
