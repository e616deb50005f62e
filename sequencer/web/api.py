"""``/api/v1``: enroll prospects, read a timeline, pause, resume and stop, list and finish tasks.

Every request needs ``Authorization: Bearer <SEQUENCER_API_TOKEN>``. Every error is JSON
``{"error": ..., "hint": ...}`` with a status that says whose move it is: 400 unreadable
request, 401 no or wrong token, 404 no such prospect/sequence/task, 409 not possible in the
current state, 413 too large, 422 a value is wrong (``field`` names it), 503 not ready.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import wraps
from pathlib import PurePath
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sequencer.core.errors import (
    ConfigError,
    DatabaseError,
    InvalidState,
    NotFound,
    SchemaMismatch,
    SequencerError,
)
from sequencer.core.prospects import email_problem, normalize_email
from sequencer.core.states import TaskOutcome
from sequencer.runtime import reports
from sequencer.runtime.engine import Engine
from sequencer.runtime.enrollment import enroll
from sequencer.web.http import BodyTooLarge, json_error, read_body
from sequencer.web.rows import MAX_PROSPECTS, one_line, parse_prospects, skipped_field
from sequencer.web.service import Service

log = logging.getLogger("sequencer.web")

#: Largest request body: 1000 prospects with a handful of fields fit comfortably.
MAX_BODY = 2 * 1024 * 1024
MAX_NOTE = 2000
PREFIX = "/api/v1"


class ApiError(Exception):
    """A request the API refuses, with the status, message, hint and the field at fault."""

    def __init__(
        self, status: int, error: str, hint: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.hint, self.field = status, error, hint, field


Handler = Callable[[Request, Engine], Awaitable[Any]]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Token check, a ready engine, JSON out, and every failure as a JSON error (never a
    traceback: unexpected errors are logged here and answered with a 500)."""

    @wraps(handler)
    async def run(request: Request) -> Response:
        service: Service = request.app.state.service
        refused = _refuse(service, request.headers.get("authorization"))
        if refused is not None:
            return refused
        try:
            engine = await service.ready()
            result = await handler(request, engine)
        except ApiError as exc:
            extra: dict[str, Any] = {"field": exc.field} if exc.field else {}
            return json_error(exc.status, exc.error, exc.hint, **extra)
        except BodyTooLarge as exc:
            return json_error(413, str(exc), "send fewer prospects per request")
        except NotFound as exc:
            return json_error(404, str(exc), _hint_for_missing(str(exc)))
        except InvalidState as exc:
            return json_error(409, str(exc), "read the prospect's timeline to see their state")
        except ConfigError as exc:
            return json_error(422, str(exc), None)
        except SchemaMismatch as exc:
            log.error("API: %s", exc)
            return json_error(503, "the database is not ready", "run `sequencer db upgrade`")
        except DatabaseError as exc:
            log.error("API: %s", exc)
            return json_error(503, "the database cannot be reached", "try again shortly")
        except SequencerError as exc:
            return json_error(422, str(exc), None)
        except Exception:
            log.exception("API %s %s failed", request.method, request.url.path)
            return json_error(500, "internal error", "the server log has the details")
        if isinstance(result, Response):
            return result
        return JSONResponse(result)

    return run


def _refuse(service: Service, header: str | None) -> Response | None:
    if not service.api_enabled:
        return json_error(
            503,
            "the API is switched off: no token is configured",
            "set SEQUENCER_API_TOKEN (or SEQUENCER_API_TOKEN_FILE) and restart `sequencer web`",
        )
    scheme, _, token = (header or "").partition(" ")
    challenge = 'Bearer realm="sequencer"'
    if scheme.lower() != "bearer" or not token.strip():
        return json_error(
            401,
            "missing bearer token",
            "send the header `Authorization: Bearer <SEQUENCER_API_TOKEN>`",
            headers={"WWW-Authenticate": challenge},
        )
    if not service.token_matches(token.strip()):
        return json_error(
            401,
            "wrong bearer token",
            "use the token the server was started with (SEQUENCER_API_TOKEN)",
            headers={"WWW-Authenticate": challenge + ', error="invalid_token"'},
        )
    return None


def _hint_for_missing(message: str) -> str | None:
    if message.startswith("no prospect"):
        return "enroll them first (POST /api/v1/enrollments)"
    if message.startswith("no task"):
        return "list open tasks with GET /api/v1/tasks"
    return None


# --- reading requests -----------------------------------------------------------------------


async def _json(request: Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await read_body(request, MAX_BODY)
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "the request has no body", "send a JSON object")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the body is not JSON: {exc}", "send a JSON object") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object", 'e.g. {"sequence": "..."}')
    return value


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(422, f"{name} is required", None, name)
        return None
    if not isinstance(value, str) or not one_line(value):
        raise ApiError(422, f"{name} must be a non-empty string", None, name)
    return one_line(value)


def _email(request: Request) -> str:
    email = normalize_email(request.path_params["email"])
    problem = email_problem(email)
    if problem:
        raise ApiError(422, f"{email!r} is not an email address ({problem})", None, "email")
    return email


def _moment(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(
            422, f"{name} {value!r} is not an ISO 8601 time", "e.g. 2026-03-09T09:00:00-05:00", name
        ) from None
    if moment.tzinfo is None:
        raise ApiError(
            422, f"{name} {value!r} has no UTC offset", "e.g. 2026-03-09T09:00:00-05:00", name
        )
    return moment


# --- endpoints ------------------------------------------------------------------------------


@endpoint
async def enroll_prospects(request: Request, engine: Engine) -> dict[str, Any]:
    """Enroll prospects into a sequence; the valid ones go in even when others are refused."""
    body = await _json(request)
    sequence = _text(body, "sequence", required=True)
    owner = _text(body, "owner", required=True)
    mailbox = _text(body, "mailbox")
    assert sequence is not None and owner is not None
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ApiError(422, "dry_run must be true or false", None, "dry_run")
    items = body.get("prospects")
    if not isinstance(items, list) or not items:
        raise ApiError(422, "prospects must be a non-empty list of objects", None, "prospects")
    if len(items) > MAX_PROSPECTS:
        raise ApiError(
            422,
            f"{len(items)} prospects in one request; the limit is {MAX_PROSPECTS}",
            "split them over several requests",
            "prospects",
        )
    if sequence not in engine.catalog.sequences:
        broken = any(PurePath(p.location.path).stem == sequence for p in engine.catalog.problems)
        if broken:
            raise ApiError(
                422, f"sequence {sequence!r} has problems", "run `sequencer validate`", "sequence"
            )
        known = ", ".join(sorted(engine.catalog.sequences)) or "none"
        raise ApiError(
            404, f"no sequence named {sequence!r}", f"known sequences: {known}", "sequence"
        )
    rows, fields = parse_prospects(items)
    try:
        report = await enroll(engine, sequence, rows, owner=owner, mailbox=mailbox, dry_run=dry_run)
    except ConfigError as exc:
        message = str(exc).removeprefix("--")
        field = next((f for f in ("owner", "mailbox") if message.startswith(f)), None)
        raise ApiError(422, message, None, field) from None
    skipped = [
        {
            "index": r.line,
            "email": r.email,
            "field": fields.get(r.line) or skipped_field(r.reason),
            "reason": r.reason.replace("same email as line", "same email as index"),
        }
        for r in report.skipped
    ]
    return {
        "sequence": sequence,
        "dry_run": dry_run,
        "received": report.rows,
        "enrolled": report.enrolled,
        "skipped": skipped,
    }


@endpoint
async def timeline(request: Request, engine: Engine) -> dict[str, Any]:
    """Everything that happened to a prospect, in their time zone, and what comes next."""
    result = await reports.timeline(engine, _email(request))
    return result.as_dict()


@endpoint
async def pause(request: Request, engine: Engine) -> dict[str, Any]:
    email = _email(request)
    body = await _json(request, optional=True)
    sequence = _text(body, "sequence")
    until = _moment(_text(body, "until"), "until")
    if until is not None and until <= engine.now():
        raise ApiError(422, "until is in the past", "give a later time, or leave it out", "until")
    changed = await engine.pause(email, sequence=sequence, until=until)
    return {
        "email": email,
        "sequence": sequence,
        "paused": changed.enrollments,
        "until": until.isoformat() if until else None,
    }


@endpoint
async def resume(request: Request, engine: Engine) -> dict[str, Any]:
    email = _email(request)
    sequence = _text(await _json(request, optional=True), "sequence")
    changed = await engine.resume(email, sequence=sequence)
    return {"email": email, "sequence": sequence, "resumed": changed.enrollments}


@endpoint
async def stop(request: Request, engine: Engine) -> dict[str, Any]:
    email = _email(request)
    sequence = _text(await _json(request, optional=True), "sequence")
    changed = await engine.stop(email, sequence=sequence)
    return {
        "email": email,
        "sequence": sequence,
        "stopped": changed.enrollments,
        "touches_cancelled": changed.touches_cancelled,
    }


@endpoint
async def list_tasks(request: Request, engine: Engine) -> dict[str, Any]:
    """Open tasks, soonest first; ``owner`` and ``due_before`` narrow the list."""
    owner = request.query_params.get("owner")
    due_before = _moment(request.query_params.get("due_before"), "due_before")
    lines = await reports.task_list(
        engine, owner=normalize_email(owner) if owner else None, due_before=due_before
    )
    return {"tasks": [line.as_dict() for line in lines]}


@endpoint
async def complete_task(request: Request, engine: Engine) -> dict[str, Any]:
    task_id: int = request.path_params["task_id"]
    body = await _json(request)
    outcome = body.get("outcome")
    choices = [o.value for o in TaskOutcome]
    if outcome not in choices:
        raise ApiError(422, f"outcome must be one of {', '.join(choices)}", None, "outcome")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise ApiError(422, f"note must be text of at most {MAX_NOTE} characters", None, "note")
    if note is not None:
        # A note is shown on timelines: line breaks may stay, other control characters not.
        note = "\n".join(one_line(line) for line in note.splitlines()).strip() or None
    following = await engine.complete_task(task_id, TaskOutcome(outcome), note)
    return {
        "task": task_id,
        "outcome": outcome,
        "next": (
            {
                "step": following.step_id,
                "channel": following.channel,
                "due": following.due_at.isoformat(),
            }
            if following is not None
            else None
        ),
    }


ROUTES = [
    Route(f"{PREFIX}/enrollments", enroll_prospects, methods=["POST"]),
    Route(f"{PREFIX}/prospects/{{email:path}}/timeline", timeline, methods=["GET"]),
    Route(f"{PREFIX}/prospects/{{email:path}}/pause", pause, methods=["POST"]),
    Route(f"{PREFIX}/prospects/{{email:path}}/resume", resume, methods=["POST"]),
    Route(f"{PREFIX}/prospects/{{email:path}}/stop", stop, methods=["POST"]),
    Route(f"{PREFIX}/tasks", list_tasks, methods=["GET"]),
    Route(f"{PREFIX}/tasks/{{task_id:int}}/complete", complete_task, methods=["POST"]),
]
