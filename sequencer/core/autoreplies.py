"""Mail from machines: auto-replies, out-of-office notices and their return dates, list mail."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

#: Header name (lowercase) -> every value of that header, decoded.
Headers = Mapping[str, Sequence[str]]

#: A stated return date further ahead than this is taken for a misreading.
MAX_AHEAD = timedelta(days=730)


@dataclass(frozen=True)
class AutoReply:
    """Why a message was sent by a machine, and whether it says the person is away."""

    reason: str
    out_of_office: bool
    #: False for markers that also sit on newsletters and notifications ("Auto-Submitted:
    #: auto-generated", "Precedence: bulk"): those only mean "a machine sent this".
    replying: bool


# Subjects of automatic replies, in English, German, French, Spanish, Italian, Dutch,
# Portuguese, Swedish, Danish/Norwegian, Chinese and Japanese. Out-of-office ones say so.
_SUBJECTS: tuple[tuple[str, str, bool], ...] = (
    # (pattern, name shown in the reason, out of office)
    (r"out\s+of\s+(?:the\s+)?office|\booo\b", "Out of Office", True),
    (r"automatic\s+reply|auto(?:matic)?[- ]?response", "Automatic reply", False),
    (r"^\W*auto\s*:", "Auto:", False),
    (r"\bauto[- ]?reply\b|\bautoreply\b", "Autoreply", False),
    (r"abwesenheitsnotiz|\babwesend\b", "Abwesenheitsnotiz", True),
    (r"automatische\s+antwort", "Automatische Antwort", False),
    (r"réponse\s+automatique|reponse\s+automatique", "Réponse automatique", False),
    (r"^\W*absen(?:ce|t|te)\b", "Absence", True),
    (r"respuesta\s+automática|respuesta\s+automatica", "Respuesta automática", False),
    (r"fuera\s+de\s+(?:la\s+)?oficina", "Fuera de la oficina", True),
    (r"risposta\s+automatica", "Risposta automatica", False),
    (r"fuori\s+(?:sede|ufficio)", "Fuori sede", True),
    (r"automatisch\s+antwoord", "Automatisch antwoord", False),
    (r"^\W*afwezig\b|\bafwezigheid\b", "Afwezig", True),
    (r"resposta\s+automática|resposta\s+automatica", "Resposta automática", False),
    (r"^\W*ausente\b|\bfora\s+do\s+escritório", "Ausente", True),
    (r"automatiskt\s+svar", "Automatiskt svar", False),
    (r"^\W*frånvar", "Frånvaro", True),
    (r"\bautosvar\b|automatisk\s+svar", "Autosvar", False),
    (r"^\W*(?:fravær|ferie)\b", "Fravær", True),
    (r"自动回复|自動回覆|自动答复", "自动回复", False),
    (r"自動応答|自動返信", "自動応答", False),
    (r"不在|休暇|休假", "不在", True),
    (r"^\W*(?:vacation|holiday)\s+(?:reply|notice|message)\b", "vacation notice", True),
)
_SUBJECT_PATTERNS = tuple((re.compile(p, re.IGNORECASE), name, away) for p, name, away in _SUBJECTS)

_MACHINE_SENDER = re.compile(
    r"^(?:no-?reply|no_reply|do-?not-?reply|donotreply|notifications?|notify|alerts?|newsletters?"
    r"|bounces?|mailer|calendar-notification|automated|system)(?:[-+._].*)?$"
)
# "I am away" in the languages above.
_AWAY = re.compile(
    r"""out\s+of\s+(?:the\s+)?office | \booo\b | \bon\s+(?:annual\s+|parental\s+|maternity\s+
    |paternity\s+|sick\s+|medical\s+)?leave\b | \bon\s+(?:vacation|holiday|holidays|sabbatical)\b
    | \b(?:i\s+am|i'm|i\s+will\s+be|currently)\s+(?:away|travel+ing|out\b|off\b|on\s+a\s+trip)
    | \baway\s+(?:from\s+(?:the\s+|my\s+)?(?:office|desk|e-?mail)|until|till|through)
    | \blimited\s+access\s+to\s+(?:my\s+)?e-?mail | \bout\s+of\s+town\b
    | \babwesend\b | nicht\s+im\s+büro | au(?:ß|ss)er\s+haus | \bim\s+urlaub\b | \burlaub\b
    | \bnicht\s+erreichbar\b | \belternzeit\b | \bdienstreise\b | \babwesenheit\b
    | \babsente?\b | \ben\s+congés?\b | \ben\s+vacances\b | hors\s+du\s+bureau
    | \ben\s+déplacement\b | fuera\s+de\s+(?:la\s+)?oficina | \bde\s+vacaciones\b
    | \bausente\b | \bde\s+permiso\b | fuori\s+(?:sede|ufficio) | \bin\s+ferie\b | \bassente\b
    | \bin\s+vacanza\b | \bafwezig\b | \b(?:met|op)\s+vakantie\b | niet\s+op\s+kantoor
    | \bde\s+férias\b | fora\s+do\s+escritório | \bfrånvarande\b | \bpå\s+semester\b
    | \bledig\b | \bfraværende\b | \bpå\s+ferie\b | \bi\s+ferie\b | 休假 | 不在办公室 | 出差
    | 不在 | 休暇 | 出張""",
    re.IGNORECASE | re.VERBOSE,
)
# Words of which every match of _AWAY holds one (once case and spacing are set aside, see
# _plain): a text with none of them cannot match, and is not searched. Searching ~45 words is
# some twenty times faster than the regular expression's alternatives at every position.
_AWAY_WORDS = (
    "office", "ooo", "leave", "vacation", "holiday", "sabbatical", "i am", "i'm", "i will be",
    "currently", "away", "limited", "town", "abwesend", "büro", "haus", "urlaub", "erreichbar",
    "elternzeit", "dienstreise", "abwesenheit", "absent", "congé", "vacances", "bureau",
    "déplacement", "oficina", "vacaciones", "ausente", "permiso", "fuori", "ferie", "assente",
    "vacanza", "afwezig", "vakantie", "kantoor", "férias", "escritório", "frånvarande",
    "semester", "ledig", "fraværende", "休假", "不在", "出差", "休暇", "出張",
)  # fmt: skip
# Case-insensitive matching takes these for their plain letters; casefold() does not.
_CASE_EXTRAS = str.maketrans({"ı": "i", "\u0307": None})
# What makes a text a canned notice rather than a person saying they are away.
_TEMPLATE = re.compile(
    r"""thank\s+you\s+for\s+your\s+(?:e-?mail|message|mail) | limited\s+access\s+to
    | (?:upon|on|after)\s+my\s+return | when\s+i\s+(?:return|get\s+back|am\s+back)
    | for\s+(?:anything\s+)?urgent | in\s+urgent\s+cases | danke\s+für\s+ihre
    | please\s+(?:contact|write\s+to|reach\s+out\s+to)\s+(?:my\s+colleague|our\s|\S+@)
    | vielen\s+dank\s+für\s+ihre | in\s+dringenden\s+fällen | wenden\s+sie\s+sich
    | merci\s+pour\s+votre | en\s+cas\s+d'urgence | gracias\s+por\s+su | para\s+asuntos\s+urgentes
    | grazie\s+per\s+(?:la\s+sua|il\s+suo) | per\s+urgenze | bedankt\s+voor\s+uw
    | obrigad[oa]\s+pela | tack\s+för\s+ditt""",
    re.IGNORECASE | re.VERBOSE,
)

# Month and weekday names in the languages above, each line one number, January and Monday
# first. Abbreviations that are also common words ("set", "out", "gen") are left out.
_MONTH_NAMES = """
january jan januar jänner janvier janv enero ene gennaio januari janeiro
february feb februar février fevrier févr febrero febbraio februari fevereiro fev
march mar märz maerz mär mrz mars marzo maart mrt março marco marts
april apr avril avr abril abr aprile
may mai mayo maggio mei maio maj
june jun juni juin junio giugno junho
july jul juli juillet juil julio luglio julho
august aug août aout agosto augustus augusti
september sep sept septembre septiembre setiembre settembre setembro
october oct oktober okt octobre octubre ottobre outubro
november nov novembre noviembre novembro
december dec dezember dez décembre decembre déc diciembre dic dicembre dezembro desember
"""
_WEEKDAY_NAMES = """
monday montag lundi lunes lunedì lunedi maandag segunda-feira måndag mandag
tuesday dienstag mardi martes martedì martedi dinsdag terça-feira terca-feira tisdag tirsdag
wednesday mittwoch mercredi miércoles miercoles mercoledì mercoledi woensdag quarta-feira onsdag
thursday donnerstag jeudi jueves giovedì giovedi donderdag quinta-feira torsdag
friday freitag vendredi viernes venerdì venerdi vrijdag sexta-feira fredag
saturday samstag sonnabend samedi sábado sabado sabato zaterdag lördag lørdag
sunday sonntag dimanche domingo domenica zondag söndag søndag
"""
_ENGLISH_MONTHS = """january february march april may june july august september october november
december jan feb mar apr jun jul aug sep sept oct nov dec"""


def _numbered(table: str, start: int) -> dict[str, int]:
    lines = table.strip().splitlines()
    return {name: number for number, line in enumerate(lines, start) for name in line.split()}


_MONTH = _numbered(_MONTH_NAMES, 1)
_WEEKDAY = _numbered(_WEEKDAY_NAMES, 0)


def _alternation(names: Iterable[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


_M = _alternation(_MONTH)
_W = _alternation(_WEEKDAY)
_EN_M = _alternation(_ENGLISH_MONTHS.split())  # "March 14" is English only
_ORDINAL = r"(?:st|nd|rd|th|er|e|º|°|\.)?"
_LEAD = rf"(?:(?:{_W})\.?,?\s+(?:the\s+|den\s+|le\s+|el\s+|il\s+)?)?"
_YEAR = r"(?:,?\s*(\d{4})\b)?"
_NO_DIGIT_BEFORE = r"(?<![\d.:/-])"
_NO_DIGIT_AFTER = r"(?![\d:/-]|\.\d)"
_DATE_FORMS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("iso", re.compile(rf"{_NO_DIGIT_BEFORE}(\d{{4}})-(\d{{1,2}})-(\d{{1,2}})(?!\d)")),
    ("cjk", re.compile(r"(?:(\d{4})\s*年\s*)?(\d{1,2})\s*月\s*(\d{1,2})\s*日")),
    (
        "day-month",
        re.compile(
            rf"\b{_LEAD}(\d{{1,2}}){_ORDINAL}\s*(?:of\s+|de\s+|-)?({_M})\b\.?{_YEAR}",
            re.IGNORECASE,
        ),
    ),
    (
        "month-day",
        re.compile(
            rf"\b{_LEAD}({_EN_M})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b{_YEAR}",
            re.IGNORECASE,
        ),
    ),
    (
        "numeric",
        re.compile(
            rf"{_NO_DIGIT_BEFORE}(\d{{1,2}})([./-])(\d{{1,2}})\2(\d{{4}}|\d{{2}}){_NO_DIGIT_AFTER}"
        ),
    ),
    ("weekday-day", re.compile(rf"\b({_W}),?\s+(?:the\s+)?(\d{{1,2}})(?:st|nd|rd|th)\b", re.I)),
    # Less certain forms: only counted right after a "back"/"until" word.
    (
        "short-numeric",
        re.compile(rf"{_NO_DIGIT_BEFORE}(\d{{1,2}})([./])(\d{{1,2}})\.?{_NO_DIGIT_AFTER}"),
    ),
    ("weekday", re.compile(rf"\b(?:next\s+|this\s+|nächsten\s+|kommenden\s+)?({_W})\b", re.I)),
    (
        "next-week",
        re.compile(
            r"\bnext\s+week\b|nächste[nr]?\s+woche|semaine\s+prochaine|próxima\s+semana"
            r"|semana\s+que\s+viene|prossima\s+settimana|volgende\s+week|nästa\s+vecka"
            r"|neste\s+uke|næste\s+uge|下周|来週",
            re.IGNORECASE,
        ),
    ),
    (
        "tomorrow",
        re.compile(
            r"\btomorrow\b|\bmorgen\b|\bdemain\b|\bmañana\b|\bdomani\b"
            r"|\bamanhã\b|\bi\s?morgon\b|明天|明日",
            re.I,
        ),
    ),
)
_ANCHORED_ONLY = frozenset({"short-numeric", "weekday", "next-week", "tomorrow"})
# Words that say a date is the return ("back on", "wieder ab", "de retour le"), before or
# just after it; and words that say it is the last day away ("until", "bis", "hasta").
_RETURN_WORDS = re.compile(
    r"""\b(?:back|return|returning|returns|resume|resuming|in\s+the\s+office|available|zurück
    |wieder|retour|reviens|reprendrai|vuelta|regreso|regresaré|volveré|rientro|rientrerò|torno
    |terug|weer|retorno|volto|regresso|tillbaka|åter|tilbake|tilbage)\b | 返回 | 回来 | 出社""",
    re.IGNORECASE | re.VERBOSE,
)
_UNTIL_WORDS = re.compile(
    r"\b(?:until|till|til|through|thru|bis|jusqu|hasta|fino|tot|até)\b|まで|至", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"[.!?;]\s|\n\s*\n")
_ENGLISH_WORDS = re.compile(r"\b(?:the|and|i|i'm|will|be|my|office|until|back|you|your)\b")
_OTHER_WORDS = re.compile(
    r"\b(?:ich|bin|und|der|die|das|je|suis|le|la|et|les|yo|estoy|el|los|sono|il|ik|ben|het"
    r"|een|eu|estou|jag|är|och|jeg|er|og)\b"
)


def detect_auto_reply(headers: Headers, subject: str, text: str) -> AutoReply | None:
    """Why this message is an automatic reply, or None; ``text`` is its new (unquoted) text."""
    marker, replying = _header_marker(headers)
    away = out_of_office_phrase(text)
    for pattern, name, subject_away in _SUBJECT_PATTERNS:
        if pattern.search(subject):
            reason = marker or f"subject matches {name!r}"
            if away is None and subject_away:
                away = name
            return AutoReply(_with_away(reason, away), away is not None, True)
    if marker is not None:
        return AutoReply(_with_away(marker, away), away is not None, replying)
    if away is not None and _TEMPLATE.search(text[:1500]):
        # No marker at all, but the text is a canned away notice: some responders set none.
        return AutoReply(f"text reads as an away notice ({away!r})", True, True)
    return None


def list_mail(headers: Headers) -> str | None:
    """Why a message looks like a newsletter or mailing-list mail, or None."""
    for name in ("list-id", "list-unsubscribe", "list-post"):
        if headers.get(name):
            return f"newsletter or list mail ({name.title()})"
    if any(value.strip().lower() == "list" for value in headers.get("precedence", ())):
        return "list mail (Precedence: list)"
    return None


def noreply_sender(sender: str | None) -> str | None:
    """Why a sender address looks like a machine's (noreply@, notifications@, ...), or None."""
    if sender is not None and _MACHINE_SENDER.match(sender.partition("@")[0]):
        return f"notification from {sender}"
    return None


def out_of_office_phrase(text: str) -> str | None:
    """The words in ``text`` saying its writer is away ("out of the office", "im Urlaub")."""
    text = text[:3000]
    plain = _plain(text)
    if not any(word in plain for word in _AWAY_WORDS):
        return None
    match = _AWAY.search(text)
    return " ".join(match.group(0).split()) if match else None


def _plain(text: str) -> str:
    """``text`` case-folded with every run of whitespace one space: a word that a
    case-insensitive pattern (``\\s+`` between words) finds in ``text`` is a substring of it."""
    return " ".join(text.casefold().translate(_CASE_EXTRAS).split())


def return_date(text: str, today: date) -> date | None:
    """The return date an away notice states, relative to ``today``; None if none is stated.

    A date said to be the return ("back on 16 March", "ab 17. März wieder da") wins, then one
    after an "until" word, taken as written ("away from 10 March until 14 March" gives 14
    March), then the first date found. Never a date before ``today``: a day and month already
    past this year mean next year. Weekdays ("back on Monday"), "tomorrow" and "next week" (its
    Monday) count only next to a "back" or "until" word. Numeric dates are read month first in
    English text (3/14) and day first otherwise (14/03), and always day first with dots (14.03.).
    """
    text = text[:5000]
    day_first = not _is_english(text)
    found: list[tuple[int, int, int, date]] = []  # start, end, anchor rank, date
    for form, pattern in _DATE_FORMS:
        for match in pattern.finditer(text):
            rank = _anchor_rank(text, match.start(), match.end())
            if form in _ANCHORED_ONLY and rank == _UNANCHORED:
                continue
            when = _resolve(form, match, today, day_first)
            if when is not None and today <= when <= today + MAX_AHEAD:
                found.append((match.start(), match.end(), rank, when))
    # A date inside a longer one ("Monday" in "Monday, 16 March") is part of it.
    whole = [c for c in found if not any(o[0] <= c[0] and c[1] <= o[1] and o != c for o in found)]
    whole.sort(key=lambda c: (c[2], c[0]))
    return whole[0][3] if whole else None


def _header_marker(headers: Headers) -> tuple[str | None, bool]:
    """The header that marks an automatic message, and whether it marks a reply; a marker of
    a reply wins over one that only says a machine sent the message."""
    markers = list(_header_markers(headers))
    replying = [reason for reason, is_reply in markers if is_reply]
    if replying:
        return replying[0], True
    return (markers[0][0], False) if markers else (None, False)


def _header_markers(headers: Headers) -> Iterable[tuple[str, bool]]:
    for value in headers.get("auto-submitted", ()):
        keyword = value.split(";")[0].strip().lower()
        if keyword and keyword != "no":
            yield f"Auto-Submitted: {keyword}", keyword != "auto-generated"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Autogenerated"):
        values = headers.get(name.lower(), ())
        if values and values[0].strip().lower() not in {"no", "false", "0"}:
            yield f"{name}: {values[0].strip()[:40]}", name != "X-Autogenerated"
    if headers.get("x-ms-exchange-inbox-rules-loop"):
        yield "X-MS-Exchange-Inbox-Rules-Loop", True
    for value in headers.get("x-ms-exchange-generated-message-source", ()):
        if "mailbox rules agent" in value.lower():
            yield "X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent", True
    for value in [*headers.get("precedence", ()), *headers.get("x-precedence", ())]:
        keyword = value.strip().lower()
        if keyword in {"auto_reply", "auto-reply"}:
            yield f"Precedence: {keyword}", True
        elif keyword in {"bulk", "junk"}:
            yield f"Precedence: {keyword}", False


def _with_away(reason: str, away: str | None) -> str:
    return reason if away is None or away.lower() in reason.lower() else f"{reason}; {away!r}"


_UNANCHORED = 2


def _anchor_rank(text: str, start: int, end: int) -> int:
    """0 for a return date ("back on X", "X wieder da"), 1 for a last day away ("until X"),
    2 for a date with neither word in its sentence."""
    before = _SENTENCE_END.split(text[max(0, start - 60) : start])[-1]
    after = _SENTENCE_END.split(text[end : end + 40])[0]
    if _RETURN_WORDS.search(before) or _RETURN_WORDS.search(after):
        return 0
    return 1 if _UNTIL_WORDS.search(before) else _UNANCHORED


def _is_english(text: str) -> bool:
    sample = text[:2000].lower()
    return len(_ENGLISH_WORDS.findall(sample)) >= len(_OTHER_WORDS.findall(sample))


def _resolve(form: str, match: re.Match[str], today: date, day_first: bool) -> date | None:
    groups = match.groups()
    if form == "iso":
        return _make(int(groups[0]), int(groups[1]), int(groups[2]))
    if form == "cjk":
        return _dated(today, groups[0], int(groups[1]), int(groups[2]))
    if form == "day-month":
        return _dated(today, groups[2], _MONTH[groups[1].lower()], int(groups[0]))
    if form == "month-day":
        return _dated(today, groups[2], _MONTH[groups[0].lower()], int(groups[1]))
    if form in {"numeric", "short-numeric"}:
        first, second = int(groups[0]), int(groups[2])
        year = groups[3] if form == "numeric" else None
        if year is not None and len(year) == 2:
            year = str(2000 + int(year))
        # Dotted dates (14.03.) are day first everywhere; slashes follow the language.
        day, month = (first, second) if day_first or groups[1] == "." else (second, first)
        if month > 12 >= day:
            day, month = month, day
        return _dated(today, year, month, day)
    if form == "weekday-day":
        return _day_of_month(today, _WEEKDAY[groups[0].lower()], int(groups[1]))
    if form == "weekday":
        return _next_weekday(today, _WEEKDAY[groups[0].lower()])
    if form == "next-week":
        return _next_weekday(today, 0)
    return today + timedelta(days=1)  # tomorrow


def _dated(today: date, year: str | None, month: int, day: int) -> date | None:
    if year is not None:
        return _make(int(year), month, day)
    when = _make(today.year, month, day)
    if when is None or when < today:  # past this year, or 29 February in a common year
        when = _make(today.year + 1, month, day)
    return when


def _make(year: int, month: int, day: int) -> date | None:
    if 1 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]:
        return date(year, month, day)
    return None


def _next_weekday(today: date, weekday: int) -> date:
    return today + timedelta(days=(weekday - today.weekday() - 1) % 7 + 1)


def _day_of_month(today: date, weekday: int, day: int) -> date | None:
    """The next ``day`` of a month from today, preferring one that falls on ``weekday``."""
    candidates = []
    year, month = today.year, today.month
    for _ in range(12):
        when = _make(year, month, day)
        if when is not None and when >= today:
            candidates.append(when)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    matching = [c for c in candidates if c.weekday() == weekday]
    found = matching or candidates
    return found[0] if found else None
