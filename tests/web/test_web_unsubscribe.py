"""The unsubscribe link over real HTTP: one click (RFC 8058) stops everything, a visit does not,
and a token that is not ours teaches nothing."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx
from web_support import (
    COMPANY,
    OWNER,
    SECRET,
    enrollments_of,
    events_of,
    make_project,
    person,
    suppressions,
    touches_of,
    web_app,
)

from sequencer.core.unsubscribe import make_token
from sequencer.runtime.enrollment import enroll

DANA = "dana.kim@globex.example"
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_one_click_suppresses_and_stops_every_sequence_once(
    database_url: str, tmp_path: Path
) -> None:
    async with web_app(database_url, make_project(tmp_path)) as web:
        for sequence in ("email-then-call", "cold-outbound"):
            report = await enroll(web.engine, sequence, [person(DANA)], owner=OWNER)
            assert report.enrolled == 1, report.skipped
        token = make_token(SECRET, DANA)

        answer = await web.client.post(
            f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
        )

        assert answer.status_code == 200
        assert "You are unsubscribed" in answer.text
        assert [(e.state, e.stop_reason) for e in await enrollments_of(web.engine, DANA)] == [
            ("stopped", "unsubscribed"),
            ("stopped", "unsubscribed"),
        ]
        assert {t.state for t in await touches_of(web.engine, DANA)} == {"cancelled"}
        assert (await suppressions(web.engine))[DANA] == "unsubscribed"
        kinds = [(e.kind, e.data) for e in await events_of(web.engine, DANA)]
        asked = [data for kind, data in kinds if kind == "unsubscribed"]
        assert asked == [{"how": "link"}, {"how": "link"}]
        assert [d for k, d in kinds if k == "stopped"] == [{"reason": "unsubscribed"}] * 2
        events_after_first = len(kinds)

        # A mail client retrying, or the person clicking again: same answer, nothing new.
        again = await web.client.post(
            f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
        )
        assert again.status_code == 200
        assert "already unsubscribed" in again.text
        assert len(await events_of(web.engine, DANA)) == events_after_first

        # And nobody can enroll them again.
        report = await enroll(web.engine, "call-first", [person(DANA)], owner=OWNER)
        assert report.enrolled == 0
        assert report.skipped[0].reason.startswith("suppressed")


async def test_a_visit_shows_a_button_and_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with web_app(database_url, make_project(tmp_path)) as web:
        await enroll(web.engine, "email-then-call", [person(DANA)], owner=OWNER)
        token = make_token(SECRET, DANA)

        # Mail scanners and link previews fetch links with GET (and HEAD), several times.
        for _ in range(3):
            page = await web.client.get(f"/u/{token}")
            assert page.status_code == 200
        head = await web.client.head(f"/u/{token}")
        assert head.status_code == 200

        assert [e.state for e in await enrollments_of(web.engine, DANA)] == ["active"]
        assert await suppressions(web.engine) == {}
        assert "unsubscribed" not in [e.kind for e in await events_of(web.engine, DANA)]

        html = page.text
        assert '<form method="post">' in html
        assert '<button type="submit">Unsubscribe</button>' in html
        assert COMPANY in html
        assert "da•••@globex.example" in html
        assert DANA not in html  # masked: a screenshot of the page does not leak the address
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_the_page_button_unsubscribes(database_url: str, tmp_path: Path) -> None:
    """What a browser does with the page's form: post its fields back to the same URL."""
    async with web_app(database_url, make_project(tmp_path)) as web:
        await enroll(web.engine, "email-then-call", [person(DANA)], owner=OWNER)
        token = make_token(SECRET, DANA)
        page = await web.client.get(f"/u/{token}")
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text

        answer = await web.client.post(
            f"/u/{token}", data={"List-Unsubscribe": "One-Click"}
        )  # httpx encodes it as a browser does

        assert answer.status_code == 200
        assert "You are unsubscribed" in answer.text
        assert [e.stop_reason for e in await enrollments_of(web.engine, DANA)] == ["unsubscribed"]
        # Coming back to the link later shows the outcome, not the button again.
        later = await web.client.get(f"/u/{token}")
        assert "already unsubscribed" in later.text
        assert "<form" not in later.text


async def test_multipart_one_click_works_and_a_post_without_it_does_nothing(
    tmp_path: Path, database_url: str
) -> None:
    async with web_app(database_url, make_project(tmp_path)) as web:
        people = [person(DANA), person("lee@initech.example")]
        await enroll(web.engine, "email-then-call", people, owner=OWNER)
        empty = await web.client.post(f"/u/{make_token(SECRET, DANA)}", content=b"")
        wrong = await web.client.post(
            f"/u/{make_token(SECRET, DANA)}", content=b"List-Unsubscribe=Yes", headers=ONE_CLICK
        )
        assert empty.status_code == wrong.status_code == 400
        assert await suppressions(web.engine) == {}

        # RFC 8058 allows multipart/form-data too.
        answer = await web.client.post(
            f"/u/{make_token(SECRET, 'lee@initech.example')}",
            files={"List-Unsubscribe": (None, "One-Click")},
        )
        assert answer.request.headers["content-type"].startswith("multipart/form-data")
        assert answer.status_code == 200
        assert await suppressions(web.engine) == {"lee@initech.example": "unsubscribed"}
        assert [e.state for e in await enrollments_of(web.engine, DANA)] == ["active"]


async def test_tokens_that_are_not_ours_all_get_the_same_page(
    database_url: str, tmp_path: Path
) -> None:
    async with web_app(database_url, make_project(tmp_path)) as web:
        await enroll(web.engine, "email-then-call", [person(DANA)], owner=OWNER)
        good = make_token(SECRET, DANA)
        flipped = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
        bad_tokens = [
            make_token(b"another-secret-0123456789abcdef", DANA),  # signed elsewhere
            make_token(b"another-secret-0123456789abcdef", "nobody@nowhere.example"),
            flipped,  # altered
            good[:-4],  # truncated by a mail client
            good + "A",  # lengthened
            good.upper(),
            quote("dana.kim@globex.example"),  # an address instead of a token
            "x",
            "%00",
        ]
        answers: list[httpx.Response] = []
        for token in bad_tokens:
            answers.append(await web.client.get(f"/u/{token}"))
            answers.append(
                await web.client.post(
                    f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
                )
            )
        answers.append(await web.client.get("/no/such/page"))
        answers.append(await web.client.get(f"/u/{good}/extra"))

        assert {a.status_code for a in answers} == {404}
        assert len({a.content for a in answers}) == 1, "every refusal must be byte-identical"
        assert "This link does not work" in answers[0].text
        assert "globex" not in answers[0].text.lower()
        assert await suppressions(web.engine) == {}
        assert [e.state for e in await enrollments_of(web.engine, DANA)] == ["active"]


async def test_a_token_for_an_address_never_enrolled_is_still_honoured(
    database_url: str, tmp_path: Path
) -> None:
    """Signed by us means we wrote to them (perhaps from a database since reset): the request
    is honoured and the answer is the same as for anyone, revealing nothing about our data."""
    async with web_app(database_url, make_project(tmp_path)) as web:
        stranger = "sam@elsewhere.example"
        page = await web.client.get(f"/u/{make_token(SECRET, stranger)}")
        assert page.status_code == 200 and "<form" in page.text
        answer = await web.client.post(
            f"/u/{make_token(SECRET, stranger)}",
            content=b"List-Unsubscribe=One-Click",
            headers=ONE_CLICK,
        )
        assert answer.status_code == 200
        assert await suppressions(web.engine) == {stranger: "unsubscribed"}
