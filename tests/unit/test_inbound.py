"""Inbound classification: labelled samples, return dates, stop requests, and garbage input."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sequencer.core import inbound
from sequencer.core.autoreplies import return_date
from sequencer.core.inbound import Classification, InboundKind, classify
from sequencer.core.replies import strip_quoted, unsubscribe_phrase

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inbound"
MANIFEST: dict[str, Any] = yaml.safe_load((FIXTURES / "labels.yaml").read_text(encoding="utf-8"))
TODAY: date = MANIFEST["today"]
OUR_DOMAINS: list[str] = MANIFEST["our_domains"]
LABELS: dict[str, dict[str, Any]] = MANIFEST["fixtures"]
SAMPLES = {name: (FIXTURES / name).read_bytes() for name in sorted(LABELS)}


def run(raw: bytes, today: date = TODAY) -> Classification:
    return classify(raw, today=today, our_domains=OUR_DOMAINS)


def mismatches(name: str, result: Classification) -> list[str]:
    """How ``result`` differs from the label of sample ``name``; empty when it matches."""
    label = LABELS[name]
    wrong = []
    if result.kind != label["kind"]:
        wrong.append(f"kind {result.kind.value!r} ({result.reason}), expected {label['kind']!r}")
    expected: dict[str, object] = {
        "recipients": tuple(label.get("recipients", ())),
        "status": label.get("status"),
        "permanent": label.get("permanent"),
        "return_date": label.get("return_date"),
    }
    if "original_message_id" in label:
        expected["original_message_id"] = label["original_message_id"]
    for field, value in expected.items():
        if getattr(result, field) != value:
            wrong.append(f"{field} {getattr(result, field)!r}, expected {value!r}")
    for word in label.get("reply_text_has", ()):
        if word not in result.reply_text:
            wrong.append(f"reply_text lacks {word!r}: {result.reply_text!r}")
    for word in label.get("reply_text_lacks", ()):
        if word in result.reply_text:
            wrong.append(f"reply_text keeps {word!r}: {result.reply_text!r}")
    return wrong


# --- the labelled samples ---------------------------------------------------------------------


def test_every_sample_is_labelled_and_every_label_has_a_sample() -> None:
    on_disk = {path.name for path in FIXTURES.glob("*.eml")}
    assert on_disk == set(LABELS)
    assert len(on_disk) >= 40


KNOWN_MISSES = {
    name: label["known_miss"] for name, label in LABELS.items() if "known_miss" in label
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            # Strict: when the classifier learns one of these, the label must be updated.
            marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[name]),
        )
        if name in KNOWN_MISSES
        else name
        for name in sorted(LABELS)
    ],
)
def test_sample_is_classified_as_labelled(name: str) -> None:
    assert mismatches(name, run(SAMPLES[name])) == []


def test_accuracy_per_kind(record_property: Callable[[str, object], None]) -> None:
    totals: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for name, raw in SAMPLES.items():
        kind = LABELS[name]["kind"]
        totals[kind] += 1
        right[kind] += not mismatches(name, run(raw))
    lines = [f"{kind:14} {right[kind]:3}/{totals[kind]:<3}" for kind in sorted(totals)]
    overall = sum(right.values()) / sum(totals.values())
    print(
        "\ninbound accuracy on labelled samples\n" + "\n".join(lines) + f"\noverall {overall:.1%}"
    )
    record_property("inbound_accuracy", round(overall, 4))
    for kind in totals:
        record_property(f"inbound_accuracy_{kind}", f"{right[kind]}/{totals[kind]}")
    assert set(totals) == {kind.value for kind in InboundKind}
    # Every sample is right except the documented misses (labels.yaml `known_miss`).
    assert sum(totals.values()) - sum(right.values()) == len(KNOWN_MISSES)


def test_as_dict_is_json_with_iso_dates() -> None:
    result = run(SAMPLES["ooo_de_zurueck_am.eml"]).as_dict()
    assert json.loads(json.dumps(result))["return_date"] == "2026-03-14"
    assert result["kind"] == "out_of_office"
    assert result["sender"] == "k.weber@example.de"
    bounce = run(SAMPLES["bounce_dsn_policy_two_recipients.eml"]).as_dict()
    assert bounce["recipients"] == ["buyer@example.net", "cfo@example.net"]


def test_threading_ids_come_references_first_without_repeats() -> None:
    result = run(SAMPLES["reply_outlook_top_posted.eml"])
    assert result.in_reply_to == (
        "<s71.intro.4455667788@northwind.example>",
        "<s71.bump.3344556677@northwind.example>",
    )
    assert result.message_id is not None and result.message_id.startswith("<DM6PR01MB9876")


def test_own_domain_counts_only_when_given() -> None:
    raw = SAMPLES["unrelated_own_sent_copy.eml"]
    assert run(raw).kind is InboundKind.UNRELATED
    assert classify(raw, today=TODAY).kind is InboundKind.REPLY


def test_text_is_capped() -> None:
    raw = b"From: a@example.com\nSubject: hi\n\n" + b"word " * 20_000
    assert len(run(raw).text) == 20_000


def message(headers: str, body: str = "Thanks, sounds good.\n") -> bytes:
    """A small message: ``headers`` (one per line) after a From line, then ``body``."""
    lines = [line.strip() for line in headers.strip().splitlines() if line.strip()]
    head = "\n".join(["From: Pat Doe <pat@example.com>", "To: ana.reyes@northwind.example", *lines])
    return f"{head}\n\n{body}".encode()


OUR_ID = "<s7.intro.0123456789@northwind.example>"


@pytest.mark.parametrize(
    ("headers", "body", "kind"),
    [
        # X-Auto-Response-Suppress is set on ordinary Outlook mail: not an auto-reply marker.
        (f"Subject: Re: Quick question\nX-Auto-Response-Suppress: All\nIn-Reply-To: {OUR_ID}",
         "Yes, call me.", InboundKind.REPLY),
        ("Subject: Re: Quick question\nAuto-Submitted: no", "Yes, call me.", InboundKind.REPLY),
        # A list (a Google group, say) may carry a person's reply to our message.
        (f"Subject: Re: Quick question\nList-Id: <sales.example.com>\nIn-Reply-To: {OUR_ID}",
         "Yes, call me.", InboundKind.REPLY),
        ("Subject: Weekly digest\nList-Id: <digest.example.com>", "Links.", InboundKind.UNRELATED),
        # Without any marker an answer to our message is a person's, whatever it says.
        (f"Subject: Re: Quick question\nIn-Reply-To: {OUR_ID}", "We got it.", InboundKind.REPLY),
        # Only "a machine sent this" markers: a notification unless it answers a thread.
        ("Subject: Your invoice\nPrecedence: bulk", "Invoice attached.", InboundKind.UNRELATED),
        (f"Subject: Re: Quick question\nPrecedence: bulk\nIn-Reply-To: {OUR_ID}",
         "Your request was logged.", InboundKind.AUTO_REPLY),
        # A reply marker wins over a machine marker, whatever the subject.
        ("Subject: Your message\nAuto-Submitted: auto-generated\n"
         "X-MS-Exchange-Inbox-Rules-Loop: pat@example.com", "Received.", InboundKind.AUTO_REPLY),
        ("Subject: Auto: Quick question", "I read mail twice a day.", InboundKind.AUTO_REPLY),
        ("Subject: Re: Quick question\nContent-Type: multipart/report; "
         "report-type=disposition-notification; boundary=b",
         "--b\nContent-Type: text/plain\n\nIt was read.\n--b--\n", InboundKind.AUTO_REPLY),
        ("Subject: unsubscribe", "", InboundKind.UNSUBSCRIBE),
        ("Subject: Unsubscribe!", "", InboundKind.UNSUBSCRIBE),
        ("Subject: How do I unsubscribe my whole team?", "Asking for our ops lead.",
         InboundKind.REPLY),
    ],
)  # fmt: skip
def test_decisions(headers: str, body: str, kind: InboundKind) -> None:
    result = run(message(headers, body))
    assert result.kind is kind, result.reason


def test_noreply_sender_answering_our_message_is_an_auto_reply() -> None:
    raw = message(f"Subject: Re: Quick question\nIn-Reply-To: {OUR_ID}", "Logged.")
    raw = raw.replace(b"pat@example.com", b"no-reply@example.com")
    assert run(raw).kind is InboundKind.AUTO_REPLY
    unthreaded = raw.replace(f"In-Reply-To: {OUR_ID}".encode(), b"X-A: b")
    assert run(unthreaded).kind is InboundKind.UNRELATED


def test_success_report_is_not_a_bounce() -> None:
    raw = message(
        "Subject: Delivery Status Notification (Success)\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
        "--b\nContent-Type: text/plain\n\nDelivered.\n--b\n"
        "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\n"
        "Final-Recipient: rfc822; jdoe@example.com\nAction: delivered\nStatus: 2.0.0\n--b--\n",
    )
    result = run(raw.replace(b"pat@example.com", b"mailer-daemon@example.com"))
    assert result.kind is InboundKind.UNRELATED
    assert result.reason == "delivery report: delivered"


def test_text_bounce_never_lists_our_own_mailbox() -> None:
    raw = b"""From: MAILER-DAEMON@mx.example.com
To: rep@sales.example
Subject: Undelivered Mail

Hi. This is the qmail-send program at mx.example.com.

<rep@sales.example>:
<gone@example.com>:
Sorry, no mailbox here by that name. (#5.1.1)
"""
    result = classify(raw, today=TODAY)
    assert result.kind is InboundKind.BOUNCE
    assert result.recipients == ("gone@example.com",)
    assert (result.status, result.permanent, result.reason) == (
        "5.1.1",
        True,
        "mailbox does not exist",
    )


@pytest.mark.parametrize(
    ("diagnostic", "permanent", "reason"),
    [
        ("552 mailbox full", True, "mailbox full"),
        ("mailbox is full, try later", False, "mailbox full"),
        ("user unknown", True, "mailbox does not exist"),
        ("this message is temporarily deferred", False, "temporary failure"),
        ("no such user here", True, "mailbox does not exist"),
        ("451 4.4.1 no answer from host", False, "no answer from the recipient's server"),
    ],
)
def test_bounce_permanence_without_or_with_codes(
    diagnostic: str, permanent: bool, reason: str
) -> None:
    raw = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\nTo: rep@sales.example\n"
        "Subject: Mail delivery failed\n\nYour message could not be delivered.\n\n"
        f"<gone@example.com>:\n{diagnostic}\n"
    ).encode()
    result = classify(raw, today=TODAY)
    assert result.kind is InboundKind.BOUNCE
    assert (result.recipients, result.permanent, result.reason) == (
        ("gone@example.com",),
        permanent,
        reason,
    )


def delivery_report(status_part: str, *, encoding: str = "7bit") -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\nTo: rep@sales.example\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=z\n\n"
        "--z\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
        f"--z\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: {encoding}\n\n"
        f"{status_part}\n--z--\n"
    ).encode()


def test_delivery_report_general_status_is_refined_by_the_server_reply() -> None:
    fields = (
        "Reporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; gone@example.com\n"
        "Action: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n"
    )
    result = classify(delivery_report(fields), today=TODAY)
    assert (result.kind, result.recipients, result.status) == (
        InboundKind.BOUNCE,
        ("gone@example.com",),
        "5.1.1",
    )


def test_damaged_delivery_report_falls_back_to_its_text() -> None:
    fields = "Reporting-MTA: dns; mx.example.com\n\nAction: failed\nStatus: 5.1.1\n"
    raw = delivery_report(fields).replace(
        b"could not be delivered.", b"could not be delivered.\n\n<gone@example.com>: unknown"
    )
    result = classify(raw, today=TODAY)
    assert (result.recipients, result.status, result.permanent) == (
        ("gone@example.com",),
        "5.1.1",
        True,
    )


def test_our_subject_saying_delay_does_not_make_a_bounce_temporary() -> None:
    raw = SAMPLES["bounce_exim_permanent.eml"].replace(
        b"Subject: Mail delivery failed: returning message to sender",
        b"Subject: Mail delivery failed: Re: Project delay",
    )
    assert run(raw).permanent is True


def test_base64_delivery_status_is_decoded() -> None:
    fields = b"Reporting-MTA: dns;x\r\n\r\nFinal-Recipient: rfc822;full@example.com\r\n"
    fields += b"Action: delayed\r\nStatus: 4.2.2\r\n"
    encoded = base64.encodebytes(fields).decode("ascii")
    result = classify(delivery_report(encoded, encoding="base64"), today=TODAY)
    assert (result.recipients, result.status, result.permanent) == (
        ("full@example.com",),
        "4.2.2",
        False,
    )
    assert result.reason.startswith("delivery delayed")


# --- never raises ----------------------------------------------------------------------------


def check_result(result: object) -> None:
    assert isinstance(result, Classification)
    assert isinstance(result.kind, InboundKind)
    assert not result.reason.startswith("unreadable message"), result.reason
    json.dumps(result.as_dict())
    assert len(result.text) <= 20_000


@given(st.binary(max_size=4000))
def test_classify_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    check_result(run(raw))


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 200)),
)


def mutate(raw: bytes, mutations: list[tuple[str, int, Any]]) -> bytes:
    data = bytearray(raw)
    for operation, position, argument in mutations:
        at = position % (len(data) + 1)
        if operation == "flip" and at < len(data):
            data[at] ^= argument
        elif operation == "cut":
            del data[at:]
        elif operation == "insert":
            data[at:at] = argument
        elif operation == "delete":
            del data[at : at + argument]
    return bytes(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SAMPLES)), st.lists(MUTATION, min_size=1, max_size=8))
def test_classify_never_raises_on_mutated_samples(name: str, mutations: list[Any]) -> None:
    check_result(run(mutate(SAMPLES[name], mutations)))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SAMPLES)), st.lists(MUTATION, min_size=1, max_size=8))
def test_no_detector_fails_on_mutated_samples(name: str, mutations: list[Any]) -> None:
    # classify() swallows a failing detector to stay up; here a failure must surface.
    def strict(step: Callable[[], object]) -> object:
        return step()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inbound, "_guard", strict)
        result = run(mutate(SAMPLES[name], mutations))
    assert not result.reason.startswith("unreadable message"), result.reason


@pytest.mark.parametrize(
    "raw",
    [
        b"Content-Type: multipart/mixed; boundary=x\n\n"
        + b"--x\nContent-Type: multipart/mixed; boundary=x\n\n" * 3000,
        b"Content-Type: message/rfc822\n\n" * 2000,
        b"From: " + b"<" * 50_000 + b"\n\n",
        b"Subject: =?utf-8?b?" + b"A" * 100_000 + b"?=\n\nhi",
        b"\x00\xff" * 100_000,
        b'Content-Type: text/plain; charset="\xff\xfe"\nContent-Transfer-Encoding: base64\n\n@@@',
    ],
    ids=["nested-multiparts", "nested-messages", "angle-brackets", "huge-header", "nul", "charset"],
)
def test_classify_survives_pathological_structure(raw: bytes) -> None:
    check_result(run(raw))


def test_classify_accepts_any_bytes_like_input() -> None:
    check_result(classify(bytearray(SAMPLES["reply_new_thread.eml"]), today=TODAY))
    check_result(classify(memoryview(SAMPLES["bounce_qmail.eml"]), today=TODAY))


# --- out-of-office is never a reply ----------------------------------------------------------

AWAY_TEXTS = [
    "I am out of the office until {en} with limited access to email.",
    "Thank you for your message. I'm on vacation and will be back on {en}.",
    "Vielen Dank für Ihre Nachricht. Ich bin im Urlaub und ab dem {de} wieder im Büro.",
    "Merci pour votre message. Je suis absente, de retour le {fr}.",
    "Gracias por su mensaje. Estoy fuera de la oficina hasta el {es}.",
    "Grazie per il suo messaggio. Sono in ferie fino al {it}.",
    "Bedankt voor uw bericht. Ik ben met vakantie tot {nl}.",
    "Obrigado pela sua mensagem. Estou de férias até {pt}.",
    "Tack för ditt mejl. Jag är på semester till {sv}.",
    "我正在休假，{zh}返回。",
]
MONTHS = {
    "en": "January February March April May June July August September October November December",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre "
    "diciembre",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
    "dicembre",
    "nl": "januari februari maart april mei juni juli augustus september oktober november december",
    "sv": "januari februari mars april maj juni juli augusti september oktober november december",
}


def spoken(when: date) -> dict[str, str]:
    def month(language: str) -> str:
        return MONTHS[language].split()[when.month - 1]

    return {
        "en": f"{month('en')} {when.day}",
        "de": f"{when.day:02}.{when.month:02}.",
        "fr": f"{when.day} {month('fr')}",
        "es": f"{when.day} de {month('es')}",
        "it": f"{when.day} {month('it')}",
        "nl": f"{when.day} {month('nl')}",
        "pt": f"{when.day:02}/{when.month:02}",
        "sv": f"{when.day} {month('sv')}",
        "zh": f"{when.month}月{when.day}日",
    }


MARKERS = [
    ("Auto-Submitted: auto-replied\n", ""),
    ("X-Autoreply: yes\n", ""),
    ("X-MS-Exchange-Inbox-Rules-Loop: someone@example.com\n", ""),
    ("Precedence: bulk\n", ""),
    ("", "Out of Office: "),
    ("", "Automatic reply: "),
    ("", "Abwesenheitsnotiz: "),
    ("", "Réponse automatique : "),
]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.sampled_from(AWAY_TEXTS),
    marker=st.sampled_from(MARKERS),
    ahead=st.integers(1, 300),
    today=st.dates(date(2020, 1, 1), date(2030, 12, 31)),
    subject=st.text(st.characters(codec="ascii", categories=["L", "N", "Zs"]), max_size=40),
    threaded=st.booleans(),
    greeting=st.sampled_from(["", "Hi,\n\n", "Hello Ana,\n\n", "Guten Tag,\n\n"]),
)
def test_out_of_office_is_never_a_reply(
    text: str,
    marker: tuple[str, str],
    ahead: int,
    today: date,
    subject: str,
    threaded: bool,
    greeting: str,
) -> None:
    back = today + timedelta(days=ahead)
    header, prefix = marker
    thread = "In-Reply-To: <s7.intro.0123456789@northwind.example>\n" if threaded else ""
    raw = (
        f"From: Pat Doe <pat@example.com>\nTo: ana.reyes@northwind.example\n{header}{thread}"
        f"Subject: {prefix}Re: {subject.strip()}\nContent-Type: text/plain; charset=utf-8\n\n"
        f"{greeting}{text.format(**spoken(back))}\n"
    ).encode()
    result = run(raw, today)
    assert result.kind is not InboundKind.REPLY
    assert result.kind is InboundKind.OUT_OF_OFFICE, result.reason
    assert result.return_date == back


@pytest.mark.parametrize(
    "name", [n for n in sorted(LABELS) if LABELS[n]["kind"] == "out_of_office"]
)
def test_out_of_office_stays_so_when_threaded_under_our_message(name: str) -> None:
    raw = SAMPLES[name]
    threaded = b"In-Reply-To: <s9.bump.0123456789@northwind.example>\n" + raw.replace(
        b"\nSubject: ", b"\nSubject: Re: ", 1
    )
    assert run(threaded).kind is InboundKind.OUT_OF_OFFICE


# --- return dates --------------------------------------------------------------------------

MONDAY = date(2026, 3, 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm out, back on Monday.", date(2026, 3, 9)),
        ("Out of office until 14 March.", date(2026, 3, 14)),
        ("Returning 3/14.", date(2026, 3, 14)),
        ("I will be back on 2026-03-14.", date(2026, 3, 14)),
        ("Ich bin zurück am 14.03. erreichbar.", date(2026, 3, 14)),
        ("Absente, de retour le 14 mars.", date(2026, 3, 14)),
        ("Estaré de vuelta el 14 de marzo.", date(2026, 3, 14)),
        ("Away until Friday 20th.", date(2026, 3, 20)),
        ("On leave through March 20.", date(2026, 3, 20)),
        ("At a conference, back next week.", date(2026, 3, 9)),
        ("Away from 10 March until 14 March.", date(2026, 3, 14)),
        ("Back on 14 January.", date(2027, 1, 14)),  # already past this year: next year's
        ("Back on 14 January 2026.", None),  # a past date is never returned
        ("Zurück am 04.03.", date(2026, 3, 4)),  # day first outside English
        ("Back 04/03.", date(2026, 4, 3)),  # month first in English
        ("Back Monday, 16 March.", date(2026, 3, 16)),
        ("Bis zum 16. März nicht im Haus. Ab dem 17. März bin ich wieder da.", date(2026, 3, 17)),
        ("Out until Tuesday, March 10. Back in the office Wednesday, March 11.", date(2026, 3, 11)),
        ("Ik ben afwezig en ben maandag weer terug.", date(2026, 3, 9)),
        ("Ich bin morgen zurück.", date(2026, 3, 3)),
        ("Guten Morgen, ich bin im Urlaub.", None),  # "Morgen" without a "back" word
        ("I have limited access to email.", None),
        ("Back on 31 February.", None),
    ],
)
def test_return_date_examples(text: str, expected: date | None) -> None:
    assert return_date(text, MONDAY) == expected


@given(st.text(max_size=300), st.dates(date(1990, 1, 1), date(2090, 12, 31)))
def test_return_date_is_never_in_the_past(text: str, today: date) -> None:
    when = return_date(text, today)
    assert when is None or today <= when <= today + timedelta(days=730)


@given(
    st.dates(date(2000, 1, 1), date(2090, 12, 31)),
    st.integers(0, 360),
    st.sampled_from(
        [
            "I will be back on {iso}.",
            "I am out of the office until {day} {month}.",
            "Returning {month} {day}.",
            "Back on {month} {day}, {year}.",
            "Ich bin zurück am {dd}.{mm}.{year}.",
        ]
    ),
)
def test_stated_return_dates_are_read_back(today: date, ahead: int, template: str) -> None:
    back = today + timedelta(days=ahead)
    text = template.format(
        iso=back.isoformat(),
        day=back.day,
        month=MONTHS["en"].split()[back.month - 1],
        year=back.year,
        dd=f"{back.day:02}",
        mm=f"{back.month:02}",
    )
    assert return_date(text, today) == back


# --- replies: quoted history and stop requests -------------------------------------------------

WORDS = st.text(st.characters(codec="ascii", categories=["Ll", "Lu"]), min_size=3, max_size=10)
SEPARATORS = [
    "On Mon, 2 Mar 2026 at 09:14, Ana Reyes <ana.reyes@northwind.example> wrote:\n",
    "On Mon, Mar 2, 2026 at 9:14 AM Ana Reyes <ana.reyes@northwind.example>\nwrote:\n",
    "-----Original Message-----\nFrom: Ana Reyes\nSent: Monday, March 2, 2026 9:14 AM\n",
    "________________________________\nFrom: Ana Reyes <ana.reyes@northwind.example>\n"
    "Sent: Monday, March 2, 2026 9:14 AM\nTo: Pat\nSubject: Quick question\n",
    "From: Ana Reyes <ana.reyes@northwind.example>\nDate: Monday, March 2, 2026\n",
    "Am 02.03.2026 um 09:14 schrieb Ana Reyes <ana.reyes@northwind.example>:\n",
    "Le lun. 2 mars 2026 à 09:14, Ana Reyes <ana.reyes@northwind.example> a écrit :\n",
    "El lun, 2 mar 2026 a las 09:14, Ana Reyes (<ana.reyes@northwind.example>) escribió:\n",
]


@given(
    st.lists(WORDS, min_size=1, max_size=12),
    st.sampled_from(SEPARATORS),
    st.booleans(),
)
def test_top_posted_reply_text_excludes_the_quoted_part(
    words: list[str], separator: str, quote_marks: bool
) -> None:
    top = " ".join(words)
    assume(unsubscribe_phrase(top) is None)  # "ABMELDEN" alone is a stop request
    quoted = "Hi Pat,\nQUOTEDHISTORY please unsubscribe here\n"
    if quote_marks:
        quoted = "".join(f"> {line}\n" for line in quoted.splitlines())
    raw = (
        "From: Pat Doe <pat@example.com>\nSubject: Re: Quick question\n"
        "In-Reply-To: <s7.intro.0123456789@northwind.example>\n\n"
        f"{top}\n\n{separator}\n{quoted}"
    ).encode()
    result = run(raw)
    assert result.reply_text.split() == top.split()
    assert "QUOTEDHISTORY" not in result.reply_text
    assert result.kind is InboundKind.REPLY


def test_bottom_posted_reply_keeps_the_answer_below_the_quote() -> None:
    text = "On Mon, Ana wrote:\n> Shall we talk?\n\nYes, Tuesday.\n> Or not?\nNo, yes.\n-- \nPat"
    assert strip_quoted(text) == "Yes, Tuesday.\nNo, yes."


@pytest.mark.parametrize(
    "text",
    [
        "unsubscribe",
        "Please remove me from your list.",
        "Take me off your mailing list",
        "Stop emailing me.",
        "Stop contacting me, thanks",
        "Not interested, please stop.",
        "Please opt me out.",
        "Not interested so please remove me",
        "We have no budget, so please take me off the list.",
        "Don't contact me again.",
        "Bitte abmelden.",
        "Bitte entfernen Sie mich aus dem Verteiler.",
        "Merci de me désabonner.",
        "Je ne veux plus recevoir ces messages, merci de ne plus recevoir rien.",
        "Por favor, darme de baja.",
        "No me escriba más, gracias.",
    ],
)
def test_stop_requests_are_found(text: str) -> None:
    assert unsubscribe_phrase(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "Please don't stop emailing me, this is useful.",
        "I don't want to unsubscribe, I just changed jobs.",
        "Don't remove me please!",
        "Sounds good, let's talk Thursday.",
        "Not interested right now, maybe next quarter.",
        "Je ne veux pas me désabonner.",
        "Ich möchte mich nicht abmelden.",
        "x" * 600 + " unsubscribe",  # past the first 500 characters of new text
    ],
)
def test_no_stop_request_where_there_is_none(text: str) -> None:
    assert unsubscribe_phrase(text) is None


def test_unsubscribe_in_quoted_footer_is_a_reply_not_a_stop_request() -> None:
    for name in ("reply_gmail_top_posted.eml", "reply_outlook_top_posted.eml"):
        assert b"unsubscribe" in SAMPLES[name]
        assert run(SAMPLES[name]).kind is InboundKind.REPLY
