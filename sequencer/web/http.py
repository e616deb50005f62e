"""What every endpoint shares: JSON errors a client can act on, bounded request bodies."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class BodyTooLarge(Exception):
    """The request body is longer than the endpoint accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit


def json_error(
    status: int,
    error: str,
    hint: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """``{"error": ..., "hint": ...}`` with ``status``: the one error shape of the API."""
    body: dict[str, Any] = {"error": error, "hint": hint, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes before more is read: a client cannot
    make the server hold an unbounded upload in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
