"""Prospect rows from CSV files: header mapping, email checks and per-row cleaning."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from zoneinfo import available_timezones

from sequencer.core.problems import did_you_mean
from sequencer.core.template_checks import STANDARD_PROSPECT_FIELDS

#: Mailbox providers anyone can sign up to: their domain says nothing about the employer.
FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    {
        "gmail.com", "googlemail.com",
        "yahoo.com", "yahoo.co.uk", "yahoo.co.in", "yahoo.co.jp", "yahoo.ca", "yahoo.com.au",
        "yahoo.com.br", "yahoo.fr", "yahoo.de", "yahoo.es", "yahoo.it", "ymail.com",
        "rocketmail.com",
        "outlook.com", "outlook.fr", "outlook.de",
        "hotmail.com", "hotmail.co.uk", "hotmail.fr", "hotmail.de", "hotmail.it", "hotmail.es",
        "live.com", "live.co.uk", "live.fr", "msn.com",
        "icloud.com", "me.com", "mac.com",
        "aol.com", "mail.com",
        "proton.me", "protonmail.com", "pm.me", "tutanota.com", "tuta.io",
        "gmx.com", "gmx.net", "gmx.de", "gmx.at", "gmx.ch", "web.de", "t-online.de",
        "mail.ru", "yandex.ru", "yandex.com", "ya.ru",
        "qq.com", "163.com", "126.com", "naver.com",
        "zoho.com", "fastmail.com", "hey.com",
        "free.fr", "orange.fr", "laposte.net", "libero.it", "btinternet.com",
        "comcast.net", "verizon.net", "att.net", "sbcglobal.net",
    }
)  # fmt: skip

#: Longest cell accepted; anything longer is a broken export or pasted document, not a field.
MAX_VALUE_LENGTH = 1000
_MAX_EMAIL = 254  # RFC 5321 path limit minus the angle brackets
_MAX_LOCAL = 64
_MAX_LABEL = 63


def _normalize_header(header: str) -> str:
    # Excel writes a byte-order mark before the first header; it must not hide "Email".
    lowered = header.replace("\ufeff", "").lower()
    return "".join(ch for ch in lowered if ch not in "_-." and not ch.isspace())


_SPELLINGS: Mapping[str, tuple[str, ...]] = {
    "email": (
        "email", "emailaddress", "e-mail", "mail", "workemail", "businessemail", "contactemail",
        "primaryemail", "workemailaddress", "emailid",
    ),
    "first_name": ("firstname", "first", "givenname", "fname"),
    "last_name": ("lastname", "last", "surname", "familyname", "lname"),
    "name": ("name", "fullname", "contactname"),
    "company": (
        "company", "companyname", "organization", "organisation", "account", "accountname",
        "employer",
    ),
    "title": ("title", "jobtitle", "position", "role"),
    "timezone": ("timezone", "tz", "time zone"),
    "phone": ("phone", "phonenumber", "mobile", "directphone", "tel"),
    "linkedin": ("linkedin", "linkedinurl", "linkedinprofile"),
    "city": ("city", "town"),
    "country": ("country",),
    "domain": ("domain", "website", "companydomain", "companywebsite"),
}  # fmt: skip

#: Normalised header spelling (lowercase, no spaces, underscores, hyphens or dots) -> field.
HEADER_ALIASES: Mapping[str, str] = MappingProxyType(
    {_normalize_header(s): field for field, spellings in _SPELLINGS.items() for s in spellings}
)

#: Abbreviations reps write instead of IANA names, checked before the IANA list: tzdata's own
#: "EST" is a fixed UTC-5 without daylight saving, never what a rep in New York means.
#: Ambiguous ones (CST: US Central or China; IST: India, Ireland or Israel) are left out on
#: purpose, so they fail loudly instead of scheduling mail at 3 a.m.
TIMEZONE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "EST": "America/New_York", "EDT": "America/New_York",
        "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles",
        "CET": "Europe/Berlin", "CEST": "Europe/Berlin",
        "GMT": "UTC", "UTC": "UTC",
    }
)  # fmt: skip

_AMBIGUOUS_ZONES: Mapping[str, str] = {
    "CST": "'America/Chicago' (US Central) or 'Asia/Shanghai' (China)",
    "IST": "'Asia/Kolkata' (India), 'Europe/Dublin' (Ireland) or 'Asia/Jerusalem' (Israel)",
}

# Fields whose values end up in message headers (To display name, Subject via templates).
_HEADER_BOUND = frozenset({"first_name", "last_name", "name", "company", "title", "email"})
_NAME_PREFIXES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof"})
_NAME_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md"})
# RFC 5322 "specials" plus the quote: none belongs in a plain mailbox we would send to.
_BAD_LOCAL_CHARS = frozenset('(),:;<>[\\]"')
_SHOWN_HEADERS = 12


# --- emails ---------------------------------------------------------------------------------


def normalize_email(raw: str) -> str:
    """Strip whitespace, ``<...>`` and ``mailto:`` wrappers and lowercase the address.

    Dots and ``+tags`` are kept: on most providers they name different mailboxes.
    """
    text = raw.strip()
    while True:
        before = text
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1].strip()
        if text[:7].lower() == "mailto:":
            text = text[7:].strip()
        if text == before:
            return text.lower()


def _is_invisible(ch: str) -> bool:
    # Control, format (zero-width), surrogate and unassigned characters: never in a mailbox,
    # and CR/LF here could smuggle extra headers into a message.
    return unicodedata.category(ch).startswith("C")


def _domain_char_ok(ch: str) -> bool:
    # Letters and combining marks of any script keep IDN domains (bücher.de) valid.
    if ch.isascii():
        return ch.isalnum() or ch == "-"
    return ch.isalpha() or unicodedata.category(ch).startswith("M")


def _domain_problem(domain: str) -> str | None:
    if domain.startswith(".") or domain.endswith("."):
        return "domain starts or ends with a dot"
    if ".." in domain:
        return "consecutive dots"
    if "." not in domain:
        return "domain has no dot"
    labels = domain.split(".")
    for label in labels:
        if len(label) > _MAX_LABEL:
            return "domain label too long"
        if label.startswith("-") or label.endswith("-"):
            return "domain label starts or ends with a hyphen"
        bad = [ch for ch in label if not _domain_char_ok(ch)]
        if bad:
            return f"invalid character {bad[0]!r} in domain"
    tld = labels[-1]
    if tld.isdigit():
        return "domain is an IP address"
    if len(tld) < 2:
        return "top-level domain too short"
    return None


def email_problem(email: str) -> str | None:
    """``None`` if ``email`` looks like a deliverable address; otherwise a short reason."""
    if not email:
        return "empty"
    if len(email) > _MAX_EMAIL:
        return "too long"
    for ch in email:
        if _is_invisible(ch):
            return f"invalid character {ch!r}"
    if any(ch.isspace() for ch in email):
        return "contains spaces"
    if "@" not in email:
        return "missing @"
    if email.count("@") > 1:
        return "more than one @"
    local, _, domain = email.partition("@")
    if not local:
        return "no local part"
    if not domain:
        return "no domain"
    if len(local) > _MAX_LOCAL:
        return "local part too long"
    for ch in local:
        if ch in _BAD_LOCAL_CHARS:
            return f"invalid character {ch!r}"
    if local.startswith(".") or local.endswith("."):
        return "local part starts or ends with a dot"
    if ".." in local:
        return "consecutive dots"
    return _domain_problem(domain)


def account_domain(email: str) -> str | None:
    """The company domain of ``email``; ``None`` for free-mail providers or no domain."""
    domain = email.rpartition("@")[2].strip().lower().rstrip(".")
    if "@" not in email or not domain or domain in FREE_MAIL_DOMAINS:
        return None
    return domain


def _clean_domain(value: str) -> str:
    # People paste whole URLs into a "Website" column; keep only the host.
    text = value.strip().lower()
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = re.split(r"[/?#]", text, maxsplit=1)[0]
    text = text.rpartition("@")[2].split(":", 1)[0].rstrip(".")
    return text.removeprefix("www.")


# --- headers --------------------------------------------------------------------------------


def _as_written(header: str) -> str:
    return header.replace("\ufeff", "").strip()


def _identifier(header: str) -> str:
    text = unicodedata.normalize("NFKC", header).lower()
    # Keep what may continue a Python identifier (letters, digits, marks of any script) so
    # templates can write {{ prospect.pain_point }}; everything else becomes "_".
    kept = "".join(ch if ch != "_" and ("a" + ch).isidentifier() else "_" for ch in text)
    name = re.sub("_+", "_", kept).strip("_")
    if name and not name.isidentifier():
        name = f"field_{name}"  # starts with a digit
    return name


@dataclass(frozen=True)
class HeaderMapping:
    """How the columns of a prospect file map to prospect fields."""

    fields: tuple[str | None, ...]
    custom: tuple[str, ...]
    duplicates: tuple[str, ...]
    email_column: int | None
    headers: tuple[str, ...] = ()  # the header row as written, for messages

    def column_name(self, index: int) -> str:
        """The header of column ``index`` as written in the file, for messages."""
        written = _as_written(self.headers[index]) if index < len(self.headers) else ""
        return written or self.fields[index] or f"column {index + 1}"

    def problem(self) -> str | None:
        """Why the file cannot be imported, or ``None``."""
        if self.email_column is not None:
            return None
        written = [_as_written(h) for h in self.headers if _as_written(h)]
        shown = ", ".join(repr(h) for h in written[:_SHOWN_HEADERS])
        if len(written) > _SHOWN_HEADERS:
            shown += f" and {len(written) - _SHOWN_HEADERS} more"
        message = f"no email column; found headers: {shown or '(none)'}"
        message += "; name one of email, Email Address, E-mail"
        email_spellings = [k for k, v in HEADER_ALIASES.items() if v == "email"]
        for header in written:
            key = _normalize_header(header)
            close = did_you_mean(key, email_spellings) if key not in HEADER_ALIASES else None
            if close:
                return f"{message} ({header!r}: {close})"
        return message


def map_headers(headers: Sequence[str]) -> HeaderMapping:
    """Map a header row to standard fields (via :data:`HEADER_ALIASES`) or custom fields."""
    fields: list[str | None] = []
    custom: list[str] = []
    duplicates: list[str] = []
    seen: set[str] = set()
    for index, header in enumerate(headers):
        key = _normalize_header(header)
        if not key:
            fields.append(None)
            continue
        field = HEADER_ALIASES.get(key) or _identifier(header) or f"column_{index + 1}"
        if field in seen:
            if field not in duplicates:
                duplicates.append(field)
        elif field not in STANDARD_PROSPECT_FIELDS:
            custom.append(field)
        seen.add(field)
        fields.append(field)
    email_column = fields.index("email") if "email" in fields else None
    return HeaderMapping(
        fields=tuple(fields),
        custom=tuple(custom),
        duplicates=tuple(duplicates),
        email_column=email_column,
        headers=tuple(headers),
    )


# --- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProspectRow:
    """One importable prospect: a normalised email and its cleaned fields."""

    line: int
    email: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class RowProblem:
    """A row that cannot be imported, and why."""

    line: int
    email: str | None
    reason: str


def _one_line(value: str) -> str:
    # Control characters (CR/LF above all) become spaces and runs of whitespace collapse, so a
    # cell can never end a header line and start a new one such as "Bcc:".
    spaced = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in value)
    return " ".join(spaced.split())


@functools.cache
def _zones() -> Mapping[str, str]:
    return {name.lower(): name for name in available_timezones()}


def _timezone(value: str) -> str | None:
    """The IANA name ``value`` stands for, or ``None`` when unknown."""
    alias = TIMEZONE_ALIASES.get(value.upper())
    if alias:
        return alias
    # IANA names are case-sensitive, but "america/new_york" can only mean one zone.
    return _zones().get(value.lower())


def _timezone_hint(value: str) -> str:
    ambiguous = _AMBIGUOUS_ZONES.get(value.upper())
    if ambiguous:
        return f"{value!r} is ambiguous; write the IANA name, e.g. {ambiguous}"
    key = value.strip().lower().replace(" ", "_")
    by_city = sorted(name for low, name in _zones().items() if low.rpartition("/")[2] == key)
    if by_city:
        return f"did you mean {by_city[0]!r}?"
    close = did_you_mean(value, sorted(_zones().values()))
    return close or "use an IANA name like 'America/New_York'"


def _is_suffix(word: str) -> bool:
    return word.lower().replace(".", "").strip() in _NAME_SUFFIXES


def _split_name(full: str) -> tuple[str | None, str | None]:
    parts = full.split(",")
    while len(parts) > 1 and _is_suffix(parts[-1]):
        parts.pop()  # "Dana Kim, PhD"
    if len(parts) == 2:
        # "Kim, Dana" is the last-name-first form CRMs export.
        return parts[1].strip() or None, parts[0].strip() or None
    words = " ".join(parts).split()
    while len(words) > 1 and words[0].lower().rstrip(".") in _NAME_PREFIXES:
        words.pop(0)
    while len(words) > 1 and _is_suffix(words[-1]):
        words.pop()
    if not words:
        return None, None
    # First word is the given name; the rest keeps "van Beethoven" or "de la Cruz" together.
    return words[0], " ".join(words[1:]) or None


def _collect(
    mapping: HeaderMapping, values: Sequence[str], line: int, sources: dict[str, int]
) -> dict[str, str] | RowProblem:
    collected: dict[str, str] = {}
    for index, field in enumerate(mapping.fields):
        if field is None or index >= len(values):
            continue
        # NUL is never data in a CSV and databases such as PostgreSQL refuse to store it.
        value = values[index].replace("\x00", "").strip()
        if len(value) > MAX_VALUE_LENGTH:
            column = mapping.column_name(index)
            return RowProblem(
                line,
                None,
                f"value in column {column!r} is too long "
                f"({len(value)} characters; the limit is {MAX_VALUE_LENGTH})",
            )
        if field in _HEADER_BOUND:
            value = _one_line(value)
        # First non-empty column wins, so a blank "Email" next to a filled "Work Email" works.
        if value and field not in collected:
            collected[field] = value
            sources[field] = index
    return collected


def parse_row(mapping: HeaderMapping, values: Sequence[str], line: int) -> ProspectRow | RowProblem:
    """Clean one data row; ``line`` is its 1-based line in the file (the header is line 1).

    Short rows count missing cells as empty and extra cells are ignored. Header-bound fields
    are collapsed to one line, ``name`` fills absent ``first_name``/``last_name``, ``domain``
    comes from the email unless given, and time zone abbreviations become IANA names.
    """
    if not any(v.strip() for v in values):
        return RowProblem(line, None, "empty row")
    sources: dict[str, int] = {}
    collected = _collect(mapping, values, line, sources)
    if isinstance(collected, RowProblem):
        return collected
    if mapping.email_column is None:
        return RowProblem(line, None, "no email column")
    raw_email = collected.get("email")
    if raw_email is None:
        return RowProblem(line, None, "missing email")
    email = normalize_email(raw_email)
    reason = email_problem(email)
    if reason is not None:
        return RowProblem(line, email or None, f"invalid email {raw_email!r}: {reason}")
    collected["email"] = email

    if "timezone" in collected:
        written = collected["timezone"]
        zone = _timezone(written)
        if zone is None:
            column = mapping.column_name(sources["timezone"])
            hint = _timezone_hint(written)
            message = f"unknown time zone {written!r} in column {column!r}; {hint}"
            return RowProblem(line, email, message)
        collected["timezone"] = zone

    if "name" in collected:
        first, last = _split_name(collected["name"])
        if first and "first_name" not in collected:
            collected["first_name"] = first
        if last and "last_name" not in collected:
            collected["last_name"] = last

    domain = _clean_domain(collected.get("domain", ""))
    if not domain or _domain_problem(domain):
        # "N/A" or "-" in a Website column: the email's own domain is the better guess.
        domain = account_domain(email) or ""
    if domain:
        collected["domain"] = domain
    else:
        collected.pop("domain", None)
    return ProspectRow(line=line, email=email, fields=MappingProxyType(collected))


def missing_fields(row: ProspectRow, required: Iterable[str]) -> list[str]:
    """The ``required`` fields ``row`` has no value for, in order, without repeats."""
    missing: list[str] = []
    for field in required:
        if not row.fields.get(field) and field not in missing:
            missing.append(field)
    return missing
