"""The JSON API over real HTTP: the token gate, each endpoint's happy path, and errors a client
can act on (status, message, hint, field), never a traceback."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from servers.smtp import RecordingSMTPServer
from web_support import (
    OWNER,
    SECRET,
    TOKEN,
    enrollments_of,
    make_project,
    person,
    touches_of,
    web_app,
)

from sequencer.core.unsubscribe import make_token
from sequencer.runtime.enrollment import enroll
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.sender import Sender
from sequencer.store import touches as tq
from sequencer.web.api import ROUTES
from sequencer.web.openapi import schema

DANA = "dana.kim@globex.example"


def error_of(answer: httpx.Response, status: int) -> dict[str, Any]:
    """The JSON error body, after checking the status and the shape every error has."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "hint" in body
    assert "Traceback" not in answer.text
    return body


def enrollment_body(*prospects: object, **extra: object) -> dict[str, Any]:
    return {"sequence": "email-then-call", "owner": OWNER, "prospects": list(prospects), **extra}


# --- the token gate -----------------------------------------------------------------------------


async def test_without_a_configured_token_the_api_is_off_and_the_rest_works(
    database_url: str, tmp_path: Path
) -> None:
    async with web_app(database_url, make_project(tmp_path), api_token=None) as web:
        answer = await web.api.get("/api/v1/tasks")  # even with a token offered
        body = error_of(answer, 503)
        assert "SEQUENCER_API_TOKEN" in body["hint"]
        assert (await web.client.get("/healthz")).status_code == 200
        assert (await web.client.get("/metrics")).status_code == 200
        assert (await web.client.get(f"/u/{make_token(SECRET, DANA)}")).status_code == 200


async def test_the_api_needs_the_right_bearer_token(database_url: str, tmp_path: Path) -> None:
    async with web_app(database_url, make_project(tmp_path)) as web:
        missing = await web.client.get("/api/v1/tasks")
        assert error_of(missing, 401)["error"] == "missing bearer token"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        for header in (
            f"Bearer {TOKEN}x",
            f"Bearer {TOKEN[:-1]}",
            "Bearer",
            f"Basic {TOKEN}",
            TOKEN,
            f"Bearer {TOKEN.lower()}",
        ):
            answer = await web.client.get("/api/v1/tasks", headers={"Authorization": header})
            body = error_of(answer, 401)
            assert TOKEN not in answer.text, "the token is never echoed"
            assert body["error"] in {"missing bearer token", "wrong bearer token"}
        right = await web.client.get("/api/v1/tasks", headers={"Authorization": f"bearer {TOKEN}"})
        assert right.status_code == 200
        assert right.json() == {"tasks": []}


# --- enrolling ------------------------------------------------------------------------------------


async def test_enroll_takes_the_valid_prospects_and_explains_the_rest(
    database_url: str, tmp_path: Path
) -> None:
    async with web_app(database_url, make_project(tmp_path)) as web:
        prospects = [
            {"Email Address": "Dana.Kim@Globex.example", "First Name": "Dana", "tz": "EST"},
            {"email": "not-an-email"},
            {"email": "lee@initech.example", "timezone": "Mars/Olympus"},
            "just a string",
            {"first_name": "No Email"},
            {"email": "dana.kim@globex.example"},  # the first one again
            {"email": "sam@initech.example", "company": ["a", "list"]},
            {"email": "kim@hooli.example", "company": "Hooli", "seats": 40, "note": None},
        ]
        answer = await web.api.post("/api/v1/enrollments", json=enrollment_body(*prospects))
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["received"] == 8
        assert report["enrolled"] == 2
        skipped = {row["index"]: row for row in report["skipped"]}
        assert sorted(skipped) == [1, 2, 3, 4, 5, 6]
        assert skipped[1]["field"] == "email" and "missing @" in skipped[1]["reason"]
        assert skipped[2]["field"] == "timezone" and "Mars/Olympus" in skipped[2]["reason"]
        assert skipped[3]["field"] is None and "JSON object" in skipped[3]["reason"]
        assert skipped[4]["field"] == "email"
        assert skipped[5]["field"] == "email"
        assert skipped[5]["reason"] == "duplicate: same email as index 0"
        assert skipped[6]["field"] == "company"

        dana = await web.api.get("/api/v1/prospects/dana.kim@globex.example/timeline")
        assert dana.json()["prospect"]["timezone"] == "America/New_York"  # EST, understood
        assert dana.json()["prospect"]["first_name"] == "Dana"
        (enrollment,) = await enrollments_of(web.engine, "kim@hooli.example")
        assert enrollment.owner == OWNER and enrollment.state == "active"

        # Sending the same request again enrolls nobody twice.
        again = await web.api.post("/api/v1/enrollments", json=enrollment_body(*prospects))
        assert again.json()["enrolled"] == 0
        assert {r["reason"].split(":")[0] for r in again.json()["skipped"]} >= {"already enrolled"}


async def test_enroll_dry_run_changes_nothing(database_url: str, tmp_path: Path) -> None:
    async with web_app(database_url, make_project(tmp_path)) as web:
        answer = await web.api.post(
            "/api/v1/enrollments", json=enrollment_body({"email": DANA}, dry_run=True)
        )
        assert answer.json()["enrolled"] == 1 and answer.json()["dry_run"] is True
        assert await enrollments_of(web.engine, DANA) == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"", 400, None),
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b"\xff\xfe", 400, None),
        (json.dumps({"owner": OWNER, "prospects": [{"email": DANA}]}).encode(), 422, "sequence"),
        (json.dumps({"sequence": "email-then-call", "prospects": [{}]}).encode(), 422, "owner"),
        (json.dumps(enrollment_body()).encode(), 422, "prospects"),
        (json.dumps({**enrollment_body({"email": DANA}), "prospects": "x"}).encode(), 422, None),
        (json.dumps(enrollment_body({"email": DANA}, owner="ana")).encode(), 422, "owner"),
        (
            json.dumps(enrollment_body({"email": DANA}, mailbox="who@else.example")).encode(),
            422,
            "mailbox",
        ),
        (json.dumps(enrollment_body({"email": DANA}, dry_run="yes")).encode(), 422, "dry_run"),
        (json.dumps(enrollment_body({"email": DANA}, sequence="cold-outbond")).encode(), 404, None),
        (
            json.dumps(
                enrollment_body(*[{"email": f"p{i}@x.example"} for i in range(1001)])
            ).encode(),
            422,
            "prospects",
        ),
    ],
)
async def test_enroll_refuses_bad_requests_with_the_reason(
    tmp_path: Path, body: bytes, status: int, field: str | None, database_url: str
) -> None:
    if "postgresql" in database_url and status == 400:
        pytest.skip("nothing database-specific about unreadable bodies")
    async with web_app(database_url, make_project(tmp_path)) as web:
        answer = await web.api.post(
            "/api/v1/enrollments", content=body, headers={"Content-Type": "application/json"}
        )
        error = error_of(answer, status)
        if field is not None:
            assert error["field"] == field, error
        if status == 404:
            assert "cold-outbound" in error["hint"]  # the known sequences are listed
        assert await enrollments_of(web.engine, DANA) == []


async def test_a_huge_body_is_refused_before_it_is_read(tmp_path: Path, sqlite_url: str) -> None:
    async with web_app(sqlite_url, make_project(tmp_path)) as web:
        answer = await web.api.post(
            "/api/v1/enrollments", content=b"[" + b" " * (3 * 1024 * 1024) + b"]"
        )
        error_of(answer, 413)


async def test_header_injection_through_api_data_never_reaches_headers(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    project = make_project(tmp_path, smtp_port=smtp.port)
    async with web_app(database_url, project) as web:
        nasty = {
            "email": DANA,
            "first_name": "Dana\r\nBcc: thief@evil.example",
            "last_name": "Kim\nX-Injected: yes",
            "company": "Globex\r\n\r\n<html>body</html>",
            "title": "VP\u2028Subject: replaced",
            "industry": "freight\x00\x1b[31m\rCc: also@evil.example",
        }
        answer = await web.api.post("/api/v1/enrollments", json=enrollment_body(nasty))
        assert answer.json()["enrolled"] == 1, answer.text
        timeline = (await web.api.get(f"/api/v1/prospects/{DANA}/timeline")).json()
        assert timeline["prospect"]["first_name"] == "Dana Bcc: thief@evil.example"
        assert timeline["prospect"]["company"] == "Globex <html>body</html>"

        assert web.engine.catalog.config is not None
        boxes = Mailboxes(web.engine.catalog.config)
        try:
            sender = Sender(web.engine, boxes, secret=SECRET)
            async with web.engine.db.transaction() as s:
                ids = await tq.claim_due(s, web.engine.now(), 10)
            assert len(ids) == 1
            await sender.send_touch(ids[0])
        finally:
            await boxes.close()
    (message,) = smtp.wait_for(1)
    assert message.rcpt_tos == (DANA,)
    headers = message.parsed
    for name in ("Bcc", "Cc", "X-Injected"):
        assert name not in headers
    assert headers.get_all("Subject") is not None and len(headers.get_all("Subject")) == 1
    assert "evil" not in "".join(f"{k}: {v}" for k, v in headers.items() if k != "To")
    assert "\n" not in str(headers["To"]) and "\r" not in str(headers["To"])


# --- timeline, pause, resume, stop ----------------------------------------------------------------


async def test_timeline_pause_resume_and_stop(database_url: str, tmp_path: Path) -> None:
    async with web_app(database_url, make_project(tmp_path)) as web:
        await enroll(web.engine, "email-then-call", [person(DANA)], owner=OWNER)
        base = f"/api/v1/prospects/{DANA}"

        timeline = (await web.api.get(f"{base}/timeline")).json()
        assert timeline["events"][0]["kind"] == "enrolled"
        assert timeline["enrollments"][0]["state"] == "active"
        assert timeline["enrollments"][0]["next"]["step"] == "intro"

        until = (web.clock.now() + timedelta(days=3)).isoformat()
        paused = await web.api.post(f"{base}/pause", json={"until": until})
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] == 1 and paused.json()["until"] is not None
        error_of(await web.api.post(f"{base}/pause"), 409)  # nothing active any more
        assert [e.state for e in await enrollments_of(web.engine, DANA)] == ["paused"]

        resumed = await web.api.post(f"{base}/resume", json={"sequence": "email-then-call"})
        assert resumed.json()["resumed"] == 1
        error_of(await web.api.post(f"{base}/resume"), 409)

        stopped = await web.api.post(f"{base}/stop")
        assert stopped.status_code == 200
        assert stopped.json()["stopped"] == 1 and stopped.json()["touches_cancelled"] == 1
        assert {t.state for t in await touches_of(web.engine, DANA)} == {"cancelled"}
        error_of(await web.api.post(f"{base}/stop"), 409)

        kinds = [e["kind"] for e in (await web.api.get(f"{base}/timeline")).json()["events"]]
        assert kinds[-3:] == ["paused", "resumed", "stopped"]


async def test_addresses_with_unusual_characters_reach_their_prospect(
    tmp_path: Path, sqlite_url: str
) -> None:
    odd = "o'brien/sales+eu@globex.example"  # legal in a local part, awkward in a URL
    async with web_app(sqlite_url, make_project(tmp_path)) as web:
        await enroll(web.engine, "email-then-call", [person(odd)], owner=OWNER)
        answer = await web.api.get(f"/api/v1/prospects/{quote(odd, safe='')}/timeline")
        assert answer.status_code == 200, answer.text
        assert answer.json()["prospect"]["email"] == odd
        stopped = await web.api.post(f"/api/v1/prospects/{quote(odd, safe='')}/stop")
        assert stopped.json()["stopped"] == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        (f"/api/v1/prospects/{DANA}/timeline", None, 404, None),
        ("/api/v1/prospects/nobody@nowhere.example/pause", {}, 404, None),
        ("/api/v1/prospects/not-an-email/timeline", None, 422, "email"),
        (f"/api/v1/prospects/{DANA}/pause", {"sequence": "no-such-sequence"}, 404, None),
        (f"/api/v1/prospects/{DANA}/pause", {"sequence": "cold-outbound"}, 409, None),
        (f"/api/v1/prospects/{DANA}/pause", {"until": "next week"}, 422, "until"),
        (f"/api/v1/prospects/{DANA}/pause", {"until": "2025-03-10T09:00:00"}, 422, "until"),
        (f"/api/v1/prospects/{DANA}/pause", {"until": "2020-01-01T09:00:00+00:00"}, 422, "until"),
        (f"/api/v1/prospects/{DANA}/stop", {"sequence": 7}, 422, "sequence"),
        (f"/api/v1/prospects/{DANA}/stop", ["x"], 400, None),
    ],
)
async def test_prospect_actions_refuse_with_the_reason(
    tmp_path: Path, sqlite_url: str, path: str, body: object, status: int, field: str | None
) -> None:
    async with web_app(sqlite_url, make_project(tmp_path)) as web:
        if not path.endswith("timeline") or status != 404:
            await enroll(web.engine, "email-then-call", [person(DANA)], owner=OWNER)
        if body is None:
            answer = await web.api.get(path)
        else:
            answer = await web.api.post(path, json=body)
        error = error_of(answer, status)
        if field:
            assert error["field"] == field
        if status == 404 and "timeline" in path:
            assert "enrollments" in error["hint"]


# --- tasks ----------------------------------------------------------------------------------------


async def test_list_and_complete_tasks(database_url: str, tmp_path: Path) -> None:
    async with web_app(database_url, make_project(tmp_path)) as web:
        await enroll(web.engine, "call-first", [person(DANA, phone="+1 555 0100")], owner=OWNER)
        listed = (await web.api.get("/api/v1/tasks")).json()["tasks"]
        assert len(listed) == 1
        task = listed[0]
        assert (task["prospect"], task["channel"], task["owner"]) == (DANA, "call", OWNER)
        assert task["title"] == "Call Dana" and task["phone"] == "+1 555 0100"
        assert task["script"]

        others = await web.api.get("/api/v1/tasks", params={"owner": "marcus@northwind.example"})
        assert others.json() == {"tasks": []}
        before = (web.clock.now() - timedelta(hours=1)).isoformat()
        assert (await web.api.get("/api/v1/tasks", params={"due_before": before})).json() == {
            "tasks": []
        }
        error_of(await web.api.get("/api/v1/tasks", params={"due_before": "soon"}), 422)

        path = f"/api/v1/tasks/{task['id']}/complete"
        error_of(await web.api.post(path, json={"outcome": "great"}), 422)
        error_of(await web.api.post(path, json={"outcome": "voicemail", "note": 5}), 422)
        done = await web.api.post(
            path, json={"outcome": "voicemail", "note": "left a message\r\nBcc: x"}
        )
        assert done.status_code == 200, done.text
        assert done.json()["next"]["step"] == "intro"
        assert done.json()["next"]["channel"] == "email"
        assert (await web.api.get("/api/v1/tasks")).json() == {"tasks": []}
        error_of(await web.api.post(path, json={"outcome": "voicemail"}), 409)
        missing = await web.api.post("/api/v1/tasks/99999/complete", json={"outcome": "skipped"})
        assert "GET /api/v1/tasks" in error_of(missing, 404)["hint"]

        events = (await web.api.get(f"/api/v1/prospects/{DANA}/timeline")).json()["events"]
        done_event = next(e for e in events if e["kind"] == "task_done")
        assert done_event["data"]["note"] == "left a message\nBcc: x"


# --- the shape of the API ------------------------------------------------------------------------


async def test_unknown_endpoints_and_methods_answer_json(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/none.db"
    async with web_app(url, make_project(tmp_path), migrate_check=False) as web:
        error_of(await web.api.get("/api/v1/nothing"), 404)
        error_of(await web.api.get("/api/v1/enrollments"), 405)
        error_of(await web.api.delete("/api/v1/tasks"), 405)


async def test_openapi_describes_exactly_the_served_endpoints(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/none.db"
    async with web_app(url, make_project(tmp_path), migrate_check=False) as web:
        document = (await web.client.get("/openapi.json")).json()
        assert document == json.loads(json.dumps(schema()))
        assert document["openapi"].startswith("3.")
        described = {
            (method.upper(), path)
            for path, methods in document["paths"].items()
            for method in methods
        }
        served = {
            (method, re.sub(r":\w+\}", "}", route.path))
            for route in ROUTES
            for method in (route.methods or ()) - {"HEAD"}
        }
        assert described == served
        for methods in document["paths"].values():
            for op in methods.values():
                assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
        docs = await web.client.get("/docs")
        assert docs.status_code == 200
        assert "<script" not in docs.text and "http" not in docs.text.split("<body>")[0]
        for _, path in served:
            assert path in docs.text
