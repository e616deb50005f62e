"""The API described for machines (``/openapi.json``, OpenAPI 3.1) and people (``/docs``).

Written by hand next to the handlers in ``api.py``: the tests check that every route is
described and every described path is served, so the two cannot drift apart silently.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from sequencer import __version__
from sequencer.core.states import TaskOutcome

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "The body is not a JSON object",
        401: "No bearer token, or the wrong one",
        404: "No such prospect, sequence or task",
        409: "Not possible in the current state (e.g. resuming a stopped enrollment)",
        413: "The body is too large",
        422: "A value is wrong; `field` names it",
        503: "No API token configured, or the database is not ready",
    }
    return {
        str(code): {
            "description": meaning[code],
            "content": {"application/json": {"schema": _ERROR}},
        }
        for code in (401, *codes, 503)
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_EMAIL_PARAM = {
    "name": "email",
    "in": "path",
    "required": True,
    "description": "The prospect's email address (any case).",
    "schema": {"type": "string", "format": "email"},
}
_SEQUENCE_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "sequence": {
                        "type": "string",
                        "description": "Only this sequence (default: all of the prospect's).",
                    }
                },
            }
        }
    },
}
_CHANGE = {
    "type": "object",
    "properties": {
        "email": {"type": "string"},
        "sequence": {"type": ["string", "null"]},
    },
    "additionalProperties": {"type": ["integer", "string", "null"]},
}


def schema() -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``/api/v1``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sequencer API",
            "version": __version__,
            "description": (
                "Enroll prospects into email sequences, read what happened to them, pause, "
                "resume or stop them, and work through rep tasks. Every request needs "
                "`Authorization: Bearer <SEQUENCER_API_TOKEN>`. Errors are JSON objects "
                "`{error, hint}` (with `field` when one value is at fault)."
            ),
            "license": {"name": "GPL-3.0-or-later"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/enrollments": {
                "post": {
                    "summary": "Enroll prospects into a sequence",
                    "description": (
                        "The same checks as `sequencer enroll`: valid prospects are enrolled "
                        "even when others are refused; each refused one is listed with its "
                        "index in `prospects`, the field at fault and the reason. Sending the "
                        "same prospects again changes nothing. Control characters (CR, LF, "
                        "...) in any value become spaces. At most 1000 prospects per request."
                    ),
                    "operationId": "enroll",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EnrollRequest"},
                                "example": {
                                    "sequence": "cold-outbound",
                                    "owner": "ana.reyes@northwind.example",
                                    "prospects": [
                                        {
                                            "email": "dana.kim@globex.example",
                                            "first_name": "Dana",
                                            "company": "Globex",
                                            "timezone": "America/Chicago",
                                        }
                                    ],
                                },
                            }
                        },
                    },
                    "responses": {
                        "200": _ok(
                            "What happened to each prospect",
                            {"$ref": "#/components/schemas/EnrollReport"},
                        ),
                        **_errors(400, 404, 409, 413, 422),
                    },
                }
            },
            "/api/v1/prospects/{email}/timeline": {
                "get": {
                    "summary": "A prospect's timeline",
                    "description": (
                        "Every event (enrolled, sent attempt 3 of 8, replied, paused ...) in "
                        "the prospect's time zone, their enrollments and the next step due."
                    ),
                    "operationId": "timeline",
                    "parameters": [_EMAIL_PARAM],
                    "responses": {
                        "200": _ok("The timeline", {"$ref": "#/components/schemas/Timeline"}),
                        **_errors(404, 422),
                    },
                }
            },
            "/api/v1/prospects/{email}/pause": {
                "post": {
                    "summary": "Pause a prospect's active enrollments",
                    "operationId": "pause",
                    "parameters": [_EMAIL_PARAM],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "sequence": {"type": "string"},
                                        "until": {
                                            "type": "string",
                                            "format": "date-time",
                                            "description": "Resume by itself then "
                                            "(ISO 8601 with offset); default: until resumed.",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": _ok("Paused", _CHANGE), **_errors(404, 409, 422)},
                }
            },
            "/api/v1/prospects/{email}/resume": {
                "post": {
                    "summary": "Resume a prospect's paused enrollments",
                    "description": "The next step moves to the next sending window: never a "
                    "burst of overdue emails.",
                    "operationId": "resume",
                    "parameters": [_EMAIL_PARAM],
                    "requestBody": _SEQUENCE_BODY,
                    "responses": {"200": _ok("Resumed", _CHANGE), **_errors(404, 409, 422)},
                }
            },
            "/api/v1/prospects/{email}/stop": {
                "post": {
                    "summary": "Stop a prospect's live enrollments",
                    "description": "Pending emails and tasks are cancelled in the same "
                    "transaction.",
                    "operationId": "stop",
                    "parameters": [_EMAIL_PARAM],
                    "requestBody": _SEQUENCE_BODY,
                    "responses": {"200": _ok("Stopped", _CHANGE), **_errors(404, 409, 422)},
                }
            },
            "/api/v1/tasks": {
                "get": {
                    "summary": "Open rep tasks (calls, LinkedIn, ...), soonest first",
                    "operationId": "tasks",
                    "parameters": [
                        {
                            "name": "owner",
                            "in": "query",
                            "description": "Only this rep's tasks.",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "due_before",
                            "in": "query",
                            "description": "Only tasks due before this time (ISO 8601 with "
                            "offset).",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                    ],
                    "responses": {
                        "200": _ok(
                            "The tasks",
                            {
                                "type": "object",
                                "properties": {
                                    "tasks": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Task"},
                                    }
                                },
                            },
                        ),
                        **_errors(422),
                    },
                }
            },
            "/api/v1/tasks/{task_id}/complete": {
                "post": {
                    "summary": "Mark a task done; the sequence moves on",
                    "operationId": "completeTask",
                    "parameters": [
                        {
                            "name": "task_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["outcome"],
                                    "properties": {
                                        "outcome": {
                                            "type": "string",
                                            "enum": [o.value for o in TaskOutcome],
                                        },
                                        "note": {"type": "string", "maxLength": 2000},
                                    },
                                },
                                "example": {"outcome": "voicemail", "note": "left a message"},
                            }
                        },
                    },
                    "responses": {
                        "200": _ok(
                            "Done, and the next step planned (if any)",
                            {
                                "type": "object",
                                "properties": {
                                    "task": {"type": "integer"},
                                    "outcome": {"type": "string"},
                                    "next": {"type": ["object", "null"]},
                                },
                            },
                        ),
                        **_errors(400, 404, 409, 422),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The value of SEQUENCER_API_TOKEN on the server.",
                }
            },
            "schemas": _SCHEMAS,
        },
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "hint"],
        "properties": {
            "error": {"type": "string", "description": "What is wrong."},
            "hint": {"type": ["string", "null"], "description": "What to do about it."},
            "field": {"type": "string", "description": "The request field at fault."},
        },
    },
    "EnrollRequest": {
        "type": "object",
        "required": ["sequence", "owner", "prospects"],
        "properties": {
            "sequence": {"type": "string", "description": "A sequence name (file name)."},
            "owner": {"type": "string", "format": "email", "description": "The rep."},
            "mailbox": {
                "type": "string",
                "description": "Send from this configured mailbox (default: the sequence's).",
            },
            "dry_run": {"type": "boolean", "default": False},
            "prospects": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "required": ["email"],
                    "description": "email, first_name, last_name (or name), company, title, "
                    "timezone, phone, ... any other key becomes a custom field. Values are "
                    "text or numbers; CSV header spellings (Email Address, First Name) work.",
                    "additionalProperties": {"type": ["string", "number", "null"]},
                },
            },
        },
    },
    "EnrollReport": {
        "type": "object",
        "properties": {
            "sequence": {"type": "string"},
            "dry_run": {"type": "boolean"},
            "received": {"type": "integer"},
            "enrolled": {"type": "integer"},
            "skipped": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer", "description": "Position in prospects."},
                        "email": {"type": ["string", "null"]},
                        "field": {"type": ["string", "null"]},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    },
    "Timeline": {
        "type": "object",
        "properties": {
            "prospect": {"type": "object"},
            "enrollments": {"type": "array", "items": {"type": "object"}},
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "at": {"type": "string", "format": "date-time"},
                        "kind": {"type": "string"},
                        "sequence": {"type": ["string", "null"]},
                        "text": {"type": "string"},
                        "data": {"type": "object"},
                    },
                },
            },
        },
    },
    "Task": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "owner": {"type": "string"},
            "channel": {"type": "string"},
            "title": {"type": "string"},
            "script": {"type": "string"},
            "due": {"type": "string", "format": "date-time"},
            "state": {"type": "string"},
            "prospect": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "company": {"type": ["string", "null"]},
            "phone": {"type": ["string", "null"]},
            "sequence": {"type": "string"},
        },
    },
}


async def openapi_json(request: Request) -> Response:
    return JSONResponse(schema())


async def docs(request: Request) -> Response:
    """The API reference as one self-contained page (no scripts, nothing from elsewhere)."""
    return HTMLResponse(
        docs_html(schema()),
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


def docs_html(document: dict[str, Any]) -> str:
    info = document["info"]
    sections = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            params = "".join(
                f"<li><code>{escape(p['name'])}</code> ({escape(p['in'])}"
                f"{', required' if p.get('required') else ''}) "
                f"{escape(p.get('description', ''))}</li>"
                for p in op.get("parameters", [])
            )
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            example = body.get("example")
            responses = "".join(
                f"<li><code>{escape(code)}</code> {escape(r['description'])}</li>"
                for code, r in op["responses"].items()
            )
            sections.append(
                f'<section id="{escape(op["operationId"])}">'
                f'<h2><span class="method">{method.upper()}</span> <code>{escape(path)}</code></h2>'
                f"<p>{escape(op['summary'])}.</p>"
                + (f"<p>{escape(op['description'])}</p>" if op.get("description") else "")
                + (f"<h3>Parameters</h3><ul>{params}</ul>" if params else "")
                + (
                    f"<h3>Example body</h3><pre>{escape(json.dumps(example, indent=2))}</pre>"
                    if example
                    else ""
                )
                + f"<h3>Responses</h3><ul>{responses}</ul></section>"
            )
    toc = "".join(
        f'<li><a href="#{escape(op["operationId"])}">{method.upper()} {escape(path)}</a></li>'
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(info['title'])} {escape(info['version'])}</title><style>"
        "body{margin:0 auto;max-width:54rem;padding:1.5rem;color:#1d2330;"
        'font:1rem/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}'
        "code,pre{font-family:ui-monospace,Menlo,Consolas,monospace}"
        "pre{background:#f3f4f6;padding:.75rem;border-radius:6px;overflow:auto}"
        "section{border-top:1px solid #d8dde6;padding-top:.5rem;margin-top:1.5rem}"
        ".method{display:inline-block;min-width:3.5rem;color:#fff;background:#1a56db;"
        "border-radius:4px;padding:0 .4rem;font-size:.9rem;text-align:center}"
        "</style></head><body>"
        f"<h1>{escape(info['title'])} <small>{escape(info['version'])}</small></h1>"
        f"<p>{escape(info['description'])}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>. '
        "Also served: <code>GET /healthz</code>, <code>GET /metrics</code> (Prometheus), "
        "<code>GET|POST /u/{token}</code> (unsubscribe links).</p>"
        f"<ul>{toc}</ul>{''.join(sections)}</body></html>"
    )
