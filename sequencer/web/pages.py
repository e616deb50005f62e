"""The few HTML pages people see: confirm an unsubscribe, it is done, a link that does not work.

Self-contained (inline CSS, no scripts, fonts or images from elsewhere), readable on a phone,
and accessible: real headings, a real form and button, large targets, visible focus, text
contrast above WCAG AA.
"""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse

#: The button's colour; white text on it has a contrast ratio of 6.1:1.
BUTTON_COLOUR = "#1a56db"

_STYLE = f"""
*,*::before,*::after{{box-sizing:border-box}}
html{{font-size:100%}}
body{{margin:0;min-height:100vh;background:#eef1f5;color:#1d2330;
font:1.0625rem/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}}
main{{max-width:34rem;margin:8vh auto 2rem;padding:2.25rem 2rem;background:#fff;
border-radius:14px;box-shadow:0 1px 3px rgba(16,24,40,.1),0 8px 24px rgba(16,24,40,.08)}}
.brand{{margin:0 0 1.25rem;font-size:.9rem;font-weight:600;letter-spacing:.04em;
text-transform:uppercase;color:#4a5568}}
h1{{margin:0 0 .75rem;font-size:1.6rem;line-height:1.25}}
p{{margin:0 0 1rem}}
.address{{font-weight:600;word-break:break-all}}
form{{margin:1.75rem 0 1.25rem}}
button{{min-height:2.9rem;padding:.75rem 1.6rem;border:0;border-radius:9px;
background:{BUTTON_COLOUR};color:#fff;font:inherit;font-weight:600;cursor:pointer}}
button:hover{{background:#1544b0}}
button:focus-visible{{outline:3px solid #f59e0b;outline-offset:3px}}
.note{{font-size:.95rem;color:#4a5568}}
@media (max-width:30rem){{main{{margin:0;min-height:100vh;border-radius:0}}}}
"""

#: Sent with every page: no caching of a personal page, no referrer carrying the token to
#: another site, not framable (nobody can overlay the button), nothing loaded from elsewhere.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def mask_email(email: str) -> str:
    """``dana.kim@acme.example`` -> ``da•••@acme.example``: enough for the owner to recognise,
    not enough for a shoulder-surfer or a screenshot to leak the address."""
    local, at, domain = email.partition("@")
    keep = 1 if len(local) <= 3 else 2
    return f"{local[:keep]}•••{at}{domain}"


def page(title: str, heading: str, body: str, *, company: str, status: int = 200) -> HTMLResponse:
    """A whole page; ``body`` is HTML the caller has escaped, the rest is escaped here."""
    brand = f'<p class="brand">{escape(company)}</p>' if company else ""
    full_title = f"{title} – {company}" if company else title
    html = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{escape(full_title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<main>\n{brand}<h1>{escape(heading)}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def confirm_page(email: str, company: str) -> HTMLResponse:
    """The page a link opens: nothing happens until the button is pressed (mail scanners
    follow links, people do not always mean to click)."""
    sender = escape(company) if company else "us"
    body = (
        f"<p>Press the button and {sender} will send no more emails to "
        f'<span class="address">{escape(mask_email(email))}</span>, '
        "from any sequence.</p>\n"
        '<form method="post">\n'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">\n'
        '<button type="submit">Unsubscribe</button>\n</form>\n'
        '<p class="note">Nothing changes until you press the button. '
        "Came here by mistake? Just close this page.</p>"
    )
    return page("Unsubscribe", "Unsubscribe from these emails?", body, company=company)


def done_page(email: str, company: str, *, already: bool = False) -> HTMLResponse:
    sender = escape(company) if company else "We"
    heading = "You were already unsubscribed" if already else "You are unsubscribed"
    body = (
        f'<p>{sender} will not email <span class="address">{escape(mask_email(email))}</span> '
        "again.</p>\n"
        '<p class="note">An email that was already on its way may still arrive; '
        "none will follow it. You can close this page.</p>"
    )
    return page("Unsubscribed", heading, body, company=company)


def not_found_page(company: str) -> HTMLResponse:
    """Every link that is not a working one gets exactly this page: a forged, altered or
    truncated token looks the same as any unknown address, so nothing can be learnt."""
    body = (
        "<p>This link is incomplete or out of date.</p>\n"
        '<p class="note">Copy the whole link from the email into your browser, or reply to '
        "the email and ask to be removed; a person will take care of it.</p>"
    )
    return page("Link not found", "This link does not work", body, company=company, status=404)


def unavailable_page(company: str, status: int = 503) -> HTMLResponse:
    body = (
        "<p>We could not take your request just now. Please try again in a few minutes.</p>\n"
        '<p class="note">If it keeps failing, reply to the email and ask to be removed.</p>'
    )
    return page("Try again later", "Something went wrong", body, company=company, status=status)


def bad_request_page(company: str) -> HTMLResponse:
    body = (
        "<p>The request did not say what to do. Open the link from the email again and "
        "press the button.</p>"
    )
    return page("Unsubscribe", "Nothing was changed", body, company=company, status=400)
