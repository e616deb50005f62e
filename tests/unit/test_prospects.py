"""Tests for prospect import: header spellings, email checks, row cleaning and time zones."""

from __future__ import annotations

from zoneinfo import available_timezones

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.provisional import domains

from sequencer.core.prospects import (
    FREE_MAIL_DOMAINS,
    HEADER_ALIASES,
    MAX_VALUE_LENGTH,
    TIMEZONE_ALIASES,
    HeaderMapping,
    ProspectRow,
    RowProblem,
    account_domain,
    email_problem,
    map_headers,
    missing_fields,
    normalize_email,
    parse_row,
)
from sequencer.core.template_checks import STANDARD_PROSPECT_FIELDS

HEADER_FIELDS = ("first_name", "last_name", "name", "company", "title", "email")
BASIC = map_headers(["Email", "First Name", "Last Name", "Company", "Title", "Time Zone"])


def row(mapping: HeaderMapping, values: list[str], line: int = 2) -> ProspectRow:
    result = parse_row(mapping, values, line)
    assert isinstance(result, ProspectRow), result
    return result


def problem(mapping: HeaderMapping, values: list[str], line: int = 2) -> RowProblem:
    result = parse_row(mapping, values, line)
    assert isinstance(result, RowProblem), result
    return result


# --- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("Email", "email"),
        ("E-mail", "email"),
        ("Email Address", "email"),
        ("email_address", "email"),
        ("Work Email", "email"),
        ("\ufeffEmail", "email"),
        ("First Name", "first_name"),
        ("first_name", "first_name"),
        ("Given Name", "first_name"),
        ("Surname", "last_name"),
        ("Last-Name", "last_name"),
        ("Full Name", "name"),
        ("Company Name", "company"),
        ("Organisation", "company"),
        ("Account Name", "company"),
        ("Job Title", "title"),
        ("Role", "title"),
        ("Time Zone", "timezone"),
        ("TZ", "timezone"),
        ("time.zone", "timezone"),
        ("Phone Number", "phone"),
        ("Mobile", "phone"),
        ("LinkedIn URL", "linkedin"),
        ("City", "city"),
        ("Country", "country"),
        ("Website", "domain"),
        ("Company Domain", "domain"),
    ],
)
def test_header_spellings(header: str, field: str) -> None:
    assert map_headers([header]).fields == (field,)


def test_aliases_only_name_standard_fields_and_are_normalised() -> None:
    assert set(HEADER_ALIASES.values()) <= STANDARD_PROSPECT_FIELDS
    for key in HEADER_ALIASES:
        assert key == key.lower()
        assert not any(ch in key for ch in " _-.")


def test_custom_fields_become_identifiers() -> None:
    mapping = map_headers(["Email", "Pain Point", "2nd Contact", "Größe", "Notes (internal)"])
    assert mapping.fields[1:] == ("pain_point", "field_2nd_contact", "größe", "notes_internal")
    assert mapping.custom == ("pain_point", "field_2nd_contact", "größe", "notes_internal")
    assert all(name.isidentifier() for name in mapping.custom)


def test_empty_headers_are_ignored() -> None:
    mapping = map_headers(["Email", "", "  ", "Company"])
    assert mapping.fields == ("email", None, None, "company")
    assert parse_row(mapping, ["a@acme.com", "x", "y", "Acme"], 2) == ProspectRow(
        2, "a@acme.com", {"email": "a@acme.com", "company": "Acme", "domain": "acme.com"}
    )


def test_duplicates_are_reported_and_first_non_empty_wins() -> None:
    mapping = map_headers(["Email", "Work Email", "Company", "Organization"])
    assert mapping.duplicates == ("email", "company")
    assert mapping.email_column == 0
    got = row(mapping, ["", "b@acme.com", "Acme", "Other"])
    assert got.email == "b@acme.com"
    assert got.fields["company"] == "Acme"


def test_missing_email_column_problem() -> None:
    mapping = map_headers(["Name", "Company"])
    assert mapping.email_column is None
    message = mapping.problem()
    assert message is not None
    assert message.startswith("no email column; found headers: 'Name', 'Company'")
    assert "name one of email, Email Address, E-mail" in message
    assert problem(mapping, ["Dana", "Acme"]).reason == "no email column"
    assert map_headers(["Email"]).problem() is None


def test_missing_email_column_suggests_a_close_header() -> None:
    message = map_headers(["Emial", "Name"]).problem()
    assert message is not None
    assert "did you mean 'email'?" in message


# --- emails ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "dana@acme.com",
        "dana.kim+sequencer@acme.co.uk",
        "d_k-1@sub.acme.io",
        "o'brien@acme.com",
        "dana@bücher.de",
        "dana@xn--bcher-kva.de",
        "a@" + "b" * 63 + ".com",
        "x" * 64 + "@acme.com",
    ],
)
def test_plausible_emails(email: str) -> None:
    assert email_problem(email) is None


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("", "empty"),
        ("dana", "missing @"),
        ("dana@", "no domain"),
        ("@acme.com", "no local part"),
        ("dana@acme", "domain has no dot"),
        ("dana kim@acme.com", "contains spaces"),
        ("dana@acme.com\u00a0", "contains spaces"),
        ("dana@kim@acme.com", "more than one @"),
        ("a@" + "b" * 60 + "." + "c" * 200 + ".com", "too long"),
        ("x" * 65 + "@acme.com", "local part too long"),
        ("dana@acme.com\r\nBcc: x@evil.com", "invalid character '\\r'"),
        ("dana\x00@acme.com", "invalid character '\\x00'"),
        ("dana\u200b@acme.com", "invalid character '\\u200b'"),
        ("dana,kim@acme.com", "invalid character ','"),
        ("dana;kim@acme.com", "invalid character ';'"),
        ("<dana@acme.com", "invalid character '<'"),
        ('"dana"@acme.com', "invalid character '\"'"),
        (".dana@acme.com", "local part starts or ends with a dot"),
        ("dana.@acme.com", "local part starts or ends with a dot"),
        ("da..na@acme.com", "consecutive dots"),
        ("dana@acme..com", "consecutive dots"),
        ("dana@.acme.com", "domain starts or ends with a dot"),
        ("dana@acme.com.", "domain starts or ends with a dot"),
        ("dana@-acme.com", "domain label starts or ends with a hyphen"),
        ("dana@acme_corp.com", "invalid character '_' in domain"),
        ("dana@acme.c", "top-level domain too short"),
        ("dana@10.0.0.1", "domain is an IP address"),
        ("dana@" + "a" * 64 + ".com", "domain label too long"),
    ],
)
def test_implausible_emails(email: str, reason: str) -> None:
    assert email_problem(email) == reason


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("  Dana.Kim@Acme.COM ", "dana.kim@acme.com"),
        ("<dana@acme.com>", "dana@acme.com"),
        ("mailto:dana@acme.com", "dana@acme.com"),
        ("MAILTO:Dana@Acme.com", "dana@acme.com"),
        (" < mailto:dana+tag@acme.com > ", "dana+tag@acme.com"),
        ("mailto:<dana@acme.com>", "dana@acme.com"),
        ("d.a.n.a+x@gmail.com", "d.a.n.a+x@gmail.com"),
    ],
)
def test_normalize_email(raw: str, normalised: str) -> None:
    assert normalize_email(raw) == normalised
    assert normalize_email(normalised) == normalised


@given(st.emails(domains=domains(max_length=120)))
def test_generated_emails_are_plausible(email: str) -> None:
    normalised = normalize_email(email)
    assume(len(normalised) <= 254)
    assert email_problem(normalised) is None


def test_free_mail_domains() -> None:
    assert len(FREE_MAIL_DOMAINS) >= 40
    assert {"gmail.com", "yahoo.co.uk", "hotmail.de", "proton.me", "gmx.net"} <= FREE_MAIL_DOMAINS
    assert all(d == d.lower() and "*" not in d and "." in d for d in FREE_MAIL_DOMAINS)
    assert account_domain("dana@gmail.com") is None
    assert account_domain("dana@YAHOO.co.uk") is None
    assert account_domain("dana@Acme.com") == "acme.com"
    assert account_domain("dana@mail.acme.com") == "mail.acme.com"
    assert account_domain("dana") is None
    assert account_domain("dana@") is None


# --- rows -----------------------------------------------------------------------------------


def test_row_is_cleaned() -> None:
    got = row(BASIC, [" Dana@Acme.com ", " Dana ", "Kim", "Acme ", " VP Sales", "Europe/Berlin"])
    assert got.line == 2
    assert got.email == "dana@acme.com"
    assert dict(got.fields) == {
        "email": "dana@acme.com",
        "first_name": "Dana",
        "last_name": "Kim",
        "company": "Acme",
        "title": "VP Sales",
        "timezone": "Europe/Berlin",
        "domain": "acme.com",
    }


def test_short_and_long_rows_are_fine() -> None:
    assert dict(row(BASIC, ["dana@acme.com"]).fields) == {
        "email": "dana@acme.com",
        "domain": "acme.com",
    }
    assert row(BASIC, ["dana@acme.com", "Dana", "", "", "", "", "extra", "cells"]).fields == {
        "email": "dana@acme.com",
        "first_name": "Dana",
        "domain": "acme.com",
    }


@pytest.mark.parametrize("values", [[], [""], ["", " ", "\t"], [""] * 10])
def test_empty_row(values: list[str]) -> None:
    assert problem(BASIC, values, 7) == RowProblem(7, None, "empty row")


def test_missing_and_invalid_email() -> None:
    assert problem(BASIC, ["", "Dana"]).reason == "missing email"
    bad = problem(BASIC, ["dana@", "Dana"], 5)
    assert bad == RowProblem(5, "dana@", "invalid email 'dana@': no domain")


def test_too_long_value_names_the_column() -> None:
    mapping = map_headers(["Email", "Pain Point"])
    reason = problem(mapping, ["dana@acme.com", "x" * (MAX_VALUE_LENGTH + 1)]).reason
    assert "'Pain Point'" in reason
    assert "too long" in reason
    assert row(mapping, ["dana@acme.com", "x" * MAX_VALUE_LENGTH]).fields["pain_point"]


def test_ignored_columns_are_not_length_checked() -> None:
    mapping = map_headers(["Email", ""])
    assert row(mapping, ["dana@acme.com", "x" * 5000]).email == "dana@acme.com"


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("Dana Kim", "Dana", "Kim"),
        ("Dana", "Dana", None),
        ("  Dana   Kim  ", "Dana", "Kim"),
        ("Ludwig van Beethoven", "Ludwig", "van Beethoven"),
        ("Kim, Dana", "Dana", "Kim"),
        ("Dr. Dana Kim", "Dana", "Kim"),
        ("Dana Kim Jr.", "Dana", "Kim"),
        ("Dana Kim, PhD", "Dana", "Kim"),
        ("Kim, Dana, Jr.", "Dana", "Kim"),
        ("Dr.", "Dr.", None),
    ],
)
def test_name_is_split(full: str, first: str, last: str | None) -> None:
    got = row(map_headers(["Email", "Name"]), ["dana@acme.com", full])
    assert got.fields.get("first_name") == first
    assert got.fields.get("last_name") == last


def test_name_does_not_override_given_parts() -> None:
    mapping = map_headers(["Email", "Name", "First Name"])
    got = row(mapping, ["dana@acme.com", "Dana Kim", "Danielle"])
    assert got.fields["first_name"] == "Danielle"
    assert got.fields["last_name"] == "Kim"
    assert got.fields["name"] == "Dana Kim"


@pytest.mark.parametrize(
    ("website", "email", "domain"),
    [
        ("https://www.Acme.io/about?x=1", "dana@acme.com", "acme.io"),
        ("http://acme.io:8080", "dana@acme.com", "acme.io"),
        ("www.acme.io", "dana@acme.com", "acme.io"),
        ("", "dana@acme.com", "acme.com"),
        ("N/A", "dana@acme.com", "acme.com"),
        ("", "dana@gmail.com", None),
        ("acme.io", "dana@gmail.com", "acme.io"),
    ],
)
def test_domain(website: str, email: str, domain: str | None) -> None:
    got = row(map_headers(["Email", "Website"]), [email, website])
    assert got.fields.get("domain") == domain


@pytest.mark.parametrize(
    ("written", "zone"),
    [
        ("America/New_York", "America/New_York"),
        ("EST", "America/New_York"),
        ("est", "America/New_York"),
        ("PST", "America/Los_Angeles"),
        ("CET", "Europe/Berlin"),
        ("GMT", "UTC"),
        ("UTC", "UTC"),
        ("america/new_york", "America/New_York"),
    ],
)
def test_timezone_aliases(written: str, zone: str) -> None:
    assert row(BASIC, ["dana@acme.com", "", "", "", "", written]).fields["timezone"] == zone


def test_timezone_aliases_are_iana_names() -> None:
    assert set(TIMEZONE_ALIASES.values()) <= available_timezones()


@pytest.mark.parametrize(
    ("written", "suggestion"),
    [
        ("America/New_Yrok", "did you mean 'America/New_York'?"),
        ("New York", "did you mean 'America/New_York'?"),
        ("CST", "ambiguous; write the IANA name, e.g. 'America/Chicago'"),
        ("IST", "'Asia/Kolkata'"),
    ],
)
def test_unknown_timezone(written: str, suggestion: str) -> None:
    bad = problem(BASIC, ["dana@acme.com", "", "", "", "", written])
    assert bad.email == "dana@acme.com"
    assert bad.reason.startswith(f"unknown time zone {written!r} in column 'Time Zone'")
    assert suggestion in bad.reason


def test_line_breaks_in_header_fields_are_collapsed() -> None:
    values = ["dana@acme.com", "Dana\r\nBcc: x@evil.com", "Kim\n", "Acme\rInc", "VP\u2028Sales"]
    got = row(BASIC, values)
    assert got.fields["first_name"] == "Dana Bcc: x@evil.com"
    assert got.fields["last_name"] == "Kim"
    assert got.fields["company"] == "Acme Inc"
    assert got.fields["title"] == "VP Sales"


def test_line_breaks_in_email_are_rejected() -> None:
    bad = problem(BASIC, ["dana@acme.com\r\nBcc: x@evil.com"])
    assert bad.reason.endswith("contains spaces")


def test_line_breaks_in_body_fields_are_kept() -> None:
    mapping = map_headers(["Email", "Notes"])
    assert row(mapping, ["dana@acme.com", "line one\nline two"]).fields["notes"] == (
        "line one\nline two"
    )


def test_missing_fields() -> None:
    got = row(BASIC, ["dana@acme.com", "Dana"])
    assert missing_fields(got, ["email", "first_name", "company", "title", "company"]) == [
        "company",
        "title",
    ]
    assert missing_fields(got, []) == []


# --- properties -----------------------------------------------------------------------------

ALL_HEADERS = [
    "Email", "First Name", "Last Name", "Full Name", "Company", "Title", "Time Zone",
    "Website", "Notes", "", "Work Email",
]  # fmt: skip
MAPPING = map_headers(ALL_HEADERS)
CELLS = st.one_of(
    st.text(),
    st.text(alphabet="abc@. \r\n\t<>,;", max_size=12),
    st.sampled_from(["dana@acme.com", " Dana@Acme.com\r\n", "EST", "Europe/Berlin", "x" * 1001]),
)


@given(st.lists(CELLS, max_size=len(ALL_HEADERS) + 2), st.integers(min_value=2, max_value=10**6))
def test_parse_row_never_raises_and_rows_are_safe(values: list[str], line: int) -> None:
    result = parse_row(MAPPING, values, line)
    assert result.line == line
    if isinstance(result, RowProblem):
        assert result.reason
        return
    assert email_problem(result.email) is None
    assert normalize_email(result.email) == result.email
    assert result.fields["email"] == result.email
    for field in HEADER_FIELDS:
        value = result.fields.get(field, "")
        assert "\r" not in value and "\n" not in value
        assert value == value.strip()
    assert all(value for value in result.fields.values())
    assert all(len(value) <= 1000 for value in result.fields.values())
