"""What a person wrote: bodies decoded to text, quoted history cut, stop requests found."""

from __future__ import annotations

import re
import unicodedata
from html import unescape
from html.parser import HTMLParser

_MAX_HTML = 200_000  # characters of an HTML body read

#: How far into the new text a stop request counts; a long message that mentions
#: "unsubscribe" further down is discussing something else.
UNSUBSCRIBE_WINDOW = 500

# "On Mon, 2 Mar 2026 at 10:00, Ana <ana@example.com> wrote:" and its translations. Clients
# wrap the line, so these are matched against up to three lines joined by a space.
_ATTRIBUTION = re.compile(
    r"""^\W{0,3}(?:
        on\b.{0,300}\bwrote\s*:
      | am\b.{0,300}\bschrieb\b.{0,200}:
      | le\b.{0,300}\ba\s+écrit\s*:
      | el\b.{0,300}\bescribió\s*:
      | il\b.{0,300}\bha\s+scritto\s*:
      | op\b.{0,300}\bschreef\b.{0,200}:
      | em\b.{0,300}\bescreveu\s*:
      | den\b.{0,300}\bskrev\b.{0,200}:
      | .{0,300}\b(?:wrote|schrieb|a\s+écrit|escribió|ha\s+scritto|schreef|escreveu|skrev)\s*:
      | .{0,200}写道\s*[:：]
      )\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_ATTRIBUTION_START = re.compile(r"^\W{0,3}(?:on|am|le|el|il|op|em|den)\b", re.IGNORECASE)
_ORIGINAL_MESSAGE = re.compile(
    r"""^\s*[-_=*]{2,}\s*(?:
        original\s+message | ursprüngliche\s+nachricht | message\s+d'origine
      | mensaje\s+original | messaggio\s+originale | oorspronkelijk\s+bericht
      | mensagem\s+original | ursprungligt\s+meddelande | oprindelig\s+meddelelse
      | opprinnelig\s+melding | forwarded\s+message | weitergeleitete\s+nachricht
      | message\s+transféré | mensaje\s+reenviado
      )\s*[-_=*]{2,}\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_FORWARDED = re.compile(r"^\s*begin\s+forwarded\s+message\s*:?\s*$", re.IGNORECASE)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
# Outlook's unquoted header block: "From: ...", then "Sent: ..." within a few lines.
_HEADER_FROM = re.compile(
    r"^\s*\*?(?:from|von|de|van|da|från|fra|od|发件人|差出人)\s*\*?\s*[:：]", re.IGNORECASE
)
_HEADER_NEXT = re.compile(
    r"^\s*\*?(?:sent|date|to|subject|gesendet|datum|an|betreff|envoyé|date|à|objet|enviado"
    r"|fecha|para|asunto|inviato|data|a|oggetto|verzonden|aan|onderwerp|skickat|till|ämne"
    r"|sendt|til|emne|发送时间|收件人|主题|送信日時|宛先|件名)\s*\*?\s*[:：]",
    re.IGNORECASE,
)
_SIGNOFF = re.compile(
    r"^\s*(?:sent\s+from\s+my\s+\w+|get\s+outlook\s+for\s+\w+|von\s+meinem\s+\w+\s+gesendet"
    r"|envoyé\s+de\s+mon\s+\w+|enviado\s+desde\s+mi\s+\w+)\b.{0,40}$",
    re.IGNORECASE,
)

# Stop requests. Each entry is a regex on the folded text (lowercase, straight apostrophes,
# single spaces). Verbs that a negation would turn around are checked for one just before.
_STOP_REQUESTS: tuple[tuple[str, bool], ...] = (
    # (pattern, negatable)
    (r"\bunsubscribe\b", True),
    (r"\bremove\s+(?:me|my\s+(?:e-?mail|address|name)|us)\b", True),
    (r"\bplease\s+remove\b", True),
    (r"\btake\s+(?:me|us|my\s+(?:e-?mail|address|name))\s+off\b", True),
    (r"\bstop\s+(?:e-?mailing|emailing|contacting|messaging|writing|sending|spamming)\b", True),
    (r"\bplease\s+stop\s*(?:[.!]|$|\s+(?:it|this|now|these|the\s+e-?mails))", True),
    (r"\bopt(?:\s|-)?(?:me\s+)?out\b", True),
    (
        r"\b(?:don't|do\s+not|dont)\s+(?:contact|e-?mail|email|write\s+to|message)\s+(?:me|us)\b",
        False,
    ),
    (r"\bno\s+more\s+(?:e-?mails|emails|messages)\b", False),
    (r"\bnot\s+interested[,.;!\s-]+(?:please\s+)?stop\b", False),
    # German
    (r"\babmelden\b|\babbestellen\b|\baustragen\b", True),
    (r"\bbitte\s+(?:entfernen|löschen|austragen)\b", True),
    (r"\bentfernen\s+sie\s+mich\b|\bkeine\s+(?:e-?mails|nachrichten|werbung)\s+mehr\b", False),
    (r"\bnicht\s+mehr\s+(?:kontaktieren|anschreiben|schreiben)\b", False),
    # French
    (r"\bdésabonn|\bdésinscri|\bme\s+retirer\b|\bretirez[- ]moi\b|\bsupprimez[- ]moi\b", True),
    (r"\bne\s+(?:plus|pas)\s+(?:recevoir|me\s+contacter)\b|\bne\s+me\s+contactez\s+plus\b", False),
    # Spanish
    (
        r"\bdarme\s+de\s+baja\b|\bdar\s+de\s+baja\b|\bdenme\s+de\s+baja\b|\bbaja\s+de\s+la\s+lista\b",
        False,
    ),
    (r"\bno\s+me\s+(?:escriba|escriban|escribas|contacte|contacten|contactes|envíe|envíen)", False),
    (r"\b(?:elimínenme|eliminarme|quitarme\s+de)\b", False),
    # Italian, Dutch, Portuguese, Swedish
    (r"\bdisiscriv|\bcancellami\b|\bnon\s+(?:contattatemi|scrivetemi|contattarmi)\b", False),
    (r"\bafmelden\b|\buitschrijven\b|\bverwijder\s+mij\b|\bgeen\s+e-?mails\s+meer\b", True),
    (r"\bdescadastr|\bremova-me\b|\bnão\s+quero\s+(?:mais\s+)?receber\b", False),
    (r"\bavregistrera\b|\bavsluta\s+prenumeration|\bsluta\s+(?:maila|mejla|skicka)\b", False),
)
_STOP_PATTERNS = tuple((re.compile(p), negatable) for p, negatable in _STOP_REQUESTS)
# A negation right before a request turns it around: "don't stop emailing", "I don't really
# want to unsubscribe", "nicht abmelden", "ne veux pas me désabonner".
_NEGATION = re.compile(
    r"(?:\b(?:don't|dont|do\s+not|never|not|nicht|niet|não|no\s+need)"
    r"(?:\s+(?:really|actually|want|wish|need|mean|plan|intend|going|have|mich|me))*"
    r"(?:\s+to)?(?:\s+please)?|\bpas(?:\s+me)?)\s*$"
)
_CLAUSE_END = re.compile(r"[.,;:!?\n]")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})


def strip_quoted(text: str) -> str:
    """The new text of a reply: quoted history, forwarded copies and the signature removed.

    History starts at an attribution line ("On ... wrote:", "Am ... schrieb ...:", "Le ... a
    écrit :", "El ... escribió:"), an "-----Original Message-----" separator or an Outlook
    "From: ... Sent: ..." block; the signature at a "-- " line. When the history comes first
    (a bottom-posted reply) only the quoted lines go, so the answer below them is kept.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if _separator(lines, index):
            break  # unquoted history runs to the end
        span = _attribution(lines, index)
        if span:
            if any(old.strip() for old in kept):
                break  # top-posted: everything from here on is history
            index += span  # quoted history above the answer: drop the line, keep reading
            continue
        if line.rstrip() == "--" or _SIGNOFF.match(line):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line)
        index += 1
    return _trim("\n".join(kept))


def unsubscribe_phrase(reply_text: str) -> str | None:
    """The stop request ("remove me", "abmelden", "darme de baja", ...) at the start of the
    new text of a reply, or None. Negated requests ("don't remove me") don't count."""
    folded = _fold(reply_text[: UNSUBSCRIBE_WINDOW * 2])[:UNSUBSCRIBE_WINDOW]
    for pattern, negatable in _STOP_PATTERNS:
        for match in pattern.finditer(folded):
            if negatable and _negated(folded, match.start()):
                continue
            return match.group(0).strip()
    return None


def is_unsubscribe_subject(subject: str) -> bool:
    """True for the subject a List-Unsubscribe mailto link sends: "unsubscribe"."""
    return _fold(subject).strip(" .!:") in {"unsubscribe", "abmelden", "désabonner"}


def decode_text(data: bytes, charset: str | None) -> str:
    """``data`` as text in its declared charset; UTF-8 (else Windows-1252) when the charset is
    missing, unknown or wrong. Never raises."""
    # Some codecs (UTF-7) can yield lone surrogates, which no output could print.
    return _decode_raw(data, charset).encode("utf-8", "replace").decode("utf-8")


def _decode_raw(data: bytes, charset: str | None) -> str:
    declared = (charset or "").strip().lower()
    if declared in {"", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1", "windows-1252"}:
        try:
            return data.decode("utf-8")  # UTF-8 that decodes cleanly is almost never Latin-1
        except UnicodeDecodeError:
            pass
    try:
        return data.decode(declared or "utf-8")
    except (LookupError, UnicodeDecodeError, ValueError):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", "replace")


class _TextFromHtml(HTMLParser):
    """Text of an HTML body, line by line, with lines inside a <blockquote> marked quoted."""

    _BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "table", "hr"})
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[str, bool]] = []
        self.line: list[str] = []
        self.line_quoted = False
        self.quoted = 0
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self.hidden += 1
        if tag == "blockquote":
            self.newline()
            self.quoted += 1
        elif tag in self._BLOCKS:
            self.newline()

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        if tag == "blockquote":
            self.newline()
            self.quoted = max(0, self.quoted - 1)
        elif tag in self._BLOCKS:
            self.newline()

    def handle_data(self, data: str) -> None:
        if self.hidden or not data:
            return
        if data.strip():
            self.line_quoted = self.line_quoted or self.quoted > 0
        self.line.append(data)

    def newline(self) -> None:
        self.lines.append((" ".join("".join(self.line).split()), self.line_quoted))
        self.line, self.line_quoted = [], False


def html_to_text(html: str) -> str:
    """Crude text of an HTML body: tags dropped, blocks on their own lines, quotes as "> "."""
    parser = _TextFromHtml()
    try:
        parser.feed(html[:_MAX_HTML])
        parser.close()
        parser.newline()
        lines = [f"> {text}" if quoted and text else text for text, quoted in parser.lines]
        joined = "\n".join(lines)
    except Exception:
        joined = unescape(re.sub(r"<[^>]*>", " ", html))
    return re.sub(r"\n{3,}", "\n\n", joined).strip()


def _separator(lines: list[str], index: int) -> bool:
    """True when unquoted history ("-----Original Message-----", "From: ... Sent: ...")
    starts at ``index``."""
    line = lines[index]
    if _ORIGINAL_MESSAGE.match(line) or _FORWARDED.match(line):
        return True
    return _outlook_block(lines, index) or (
        _UNDERSCORES.match(line) is not None and _outlook_block(lines, index + 1)
    )


def _attribution(lines: list[str], index: int) -> int:
    """How many lines the "On ... wrote:" line at ``index`` spans (clients wrap it), or 0."""
    line = lines[index]
    if not line.strip() or len(line) > 400:
        return 0
    if _ATTRIBUTION.match(line.strip()):
        return 1
    if not _ATTRIBUTION_START.match(line):
        return 0
    for span in (2, 3):
        parts = [part.strip() for part in lines[index : index + span]]
        if len(parts) == span and all(parts) and _ATTRIBUTION.match(" ".join(parts)):
            return span
    return 0


def _outlook_block(lines: list[str], index: int) -> bool:
    if index >= len(lines) or not _HEADER_FROM.match(lines[index]):
        return False
    following = [line for line in lines[index + 1 : index + 6] if line.strip()]
    return sum(1 for line in following[:4] if _HEADER_NEXT.match(line)) >= 1


def _negated(folded: str, start: int) -> bool:
    before = folded[max(0, start - 40) : start]
    clause = _CLAUSE_END.split(before)[-1]
    return _NEGATION.search(clause) is not None


def _fold(text: str) -> str:
    normal = unicodedata.normalize("NFC", text).translate(_APOSTROPHES).casefold()
    return " ".join(normal.split())


def _trim(text: str) -> str:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
