"""The report as one self-contained HTML page: inline CSS, charts as inline SVG, no script and
nothing fetched, every value escaped by Jinja2's autoescape. Readable on screen and on paper."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jinja2 import Environment

from sequencer import __version__
from sequencer.runtime.analytics import (
    AttemptFigure,
    Report,
    SequenceFigures,
    TemplateFigures,
    later_share,
)

#: Chart geometry, in SVG user units (the SVG scales to the page width).
WIDTH = 640
LABEL = 190  # room for the labels left of horizontal bars
ROW = 26
BAR = 16


def percent(value: float | None) -> str:
    """``40%``; ``-`` when there is nothing to divide by."""
    if value is None:
        return "-"
    return f"{value:.0%}" if value >= 0.1 or value == 0 else f"{value:.1%}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class Bar:
    """One bar of a chart, placed: ``x``, ``y``, ``w``, ``h`` in SVG units."""

    label: str
    value: str  # what is written next to it
    x: float
    y: float
    w: float
    h: float
    tone: str = "sent"  # a CSS class: sent, won, rate


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    labels_left: bool  # horizontal bars have their labels on the left


def attempt_chart(attempts: tuple[AttemptFigure, ...]) -> Chart | None:
    """Vertical bars: replies won by the 1st, 2nd, 3rd... email of an enrollment."""
    if not attempts:
        return None
    top = max(a.replies for a in attempts) or 1
    plot = 150
    slot = min(90.0, (WIDTH - 40) / len(attempts))
    bars = []
    for i, a in enumerate(attempts):
        h = plot * a.replies / top
        bars.append(
            Bar(
                label=f"{ordinal(a.attempt)} email",
                value=str(a.replies),
                x=20 + i * slot + slot * 0.15,
                y=20 + plot - h,
                w=slot * 0.7,
                h=h,
                tone="won",
            )
        )
    return Chart("Replies by attempt", WIDTH, plot + 60, tuple(bars), labels_left=False)


def funnel_chart(sequence: SequenceFigures) -> Chart | None:
    """Horizontal bars per step: how many went out (or were done), and the replies it won."""
    steps = [s for s in sequence.steps if s.sent or s.done or s.signals.replied]
    if not steps:
        return None
    top = max(max(s.sent, s.done) for s in steps) or 1
    span = WIDTH - LABEL - 120
    bars: list[Bar] = []
    for i, s in enumerate(steps):
        out = s.sent if s.channel == "email" else s.done
        verb = "sent" if s.channel == "email" else "done"
        y = 10 + i * ROW * 1.6
        bars.append(Bar(s.step, f"{out} {verb}", LABEL, y, span * out / top, BAR))
        if s.channel == "email":
            won = s.signals.replied
            bars.append(
                Bar(
                    "",
                    f"{won} replied ({percent(s.reply_rate)})",
                    LABEL,
                    y + BAR + 2,
                    max(span * won / top, 1.5 if won else 0),
                    BAR * 0.6,
                    "won",
                )
            )
    height = int(20 + len(steps) * ROW * 1.6)
    return Chart(f"{sequence.name}: steps", WIDTH, height, tuple(bars), labels_left=True)


def template_chart(templates: tuple[TemplateFigures, ...]) -> Chart | None:
    """Horizontal bars: reply rate of each template that went out (value-add ones when any)."""
    shown = [t for t in templates if t.sent and t.value_add] or [t for t in templates if t.sent]
    if not shown:
        return None
    top = max((t.reply_rate or 0.0) for t in shown) or 1.0
    span = WIDTH - LABEL - 120
    bars = tuple(
        Bar(
            t.template,
            f"{percent(t.reply_rate)} ({t.replied}/{t.sent})",
            LABEL,
            10 + i * ROW,
            max(span * (t.reply_rate or 0.0) / top, 1.5),
            BAR,
            "rate",
        )
        for i, t in enumerate(shown)
    )
    title = "Reply rate per value-add template" if shown[0].value_add else "Reply rate per template"
    return Chart(title, WIDTH, 20 + len(shown) * ROW, bars, labels_left=True)


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%a %d %b %Y %H:%M %Z")


def _day(moment: datetime) -> str:
    """Short, for table cells: ``04 Mar 2025 15:00``."""
    return moment.astimezone().strftime("%d %b %Y %H:%M")


def render_html(report: Report) -> str:
    """The whole page as a string; write it to a ``.html`` file and open it in a browser."""
    environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    environment.filters["percent"] = percent
    environment.filters["when"] = _when
    environment.filters["day"] = _day
    environment.filters["n"] = lambda value: f"{value:.1f}"
    page = environment.from_string(PAGE)
    return page.render(
        report=report,
        version=__version__,
        later=later_share(report.replies_by_attempt),
        attempts=attempt_chart(report.replies_by_attempt),
        funnels={q.name: funnel_chart(q) for q in report.sequences},
        templates=template_chart(report.templates),
        emailed=sum(q.contacted for q in report.sequences),
        sent=sum(q.sent for q in report.sequences),
    )


PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sequencer report{% if report.sequence %}: {{ report.sequence }}{% endif %}</title>
<style>
  :root { --ink: #1f2933; --muted: #616e7c; --line: #d9dee3; --sent: #3d6fb6;
          --won: #2f8f4e; --rate: #b7791f; --warn: #b42318; --paper: #ffffff; }
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--ink); background: var(--paper); margin: 0 auto; max-width: 980px;
         padding: 24px 28px 60px; }
  h1 { font-size: 26px; margin: 0 0 4px; }
  h2 { font-size: 20px; margin: 36px 0 8px; border-bottom: 2px solid var(--line);
       padding-bottom: 4px; }
  p.meta, .muted { color: var(--muted); } p.meta { margin: 0 0 18px; }
  .cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
  .card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 120px; }
  .card b { display: block; font-size: 24px; } .card span { color: var(--muted); font-size: 13px; }
  table { border-collapse: collapse; width: 100%; margin: 8px 0 4px; font-size: 14px; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
           vertical-align: top; }
  th { font-weight: 600; background: #f5f7f9; }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
  td { overflow-wrap: anywhere; } td.n, td.name, td.when { white-space: nowrap; }
  table.steps { font-size: 13px; } table.steps th { padding: 5px 5px; }
  tr.removed td { color: var(--muted); font-style: italic; }
  svg { width: 100%; height: auto; max-width: 760px; display: block; margin: 6px 0 10px; }
  svg text { font: 12px system-ui, sans-serif; fill: var(--ink); }
  .sent { fill: var(--sent); } .won { fill: var(--won); } .rate { fill: var(--rate); }
  .state-unknown { color: var(--rate); font-weight: 600; }
  .state-failed { color: var(--warn); font-weight: 600; }
  .none { color: var(--won); } dl { margin: 6px 0; } dt { font-weight: 600; }
  dd { margin: 0 0 6px 0; color: var(--muted); }
  @media print { body { max-width: none; padding: 0; font-size: 12px; }
    section, table, svg { break-inside: avoid; } th { background: none; }
    a { color: inherit; text-decoration: none; } }
</style>
</head>
<body>
<h1>Sequencer report{% if report.sequence %}: {{ report.sequence }}{% endif %}</h1>
<p class="meta">Generated {{ report.generated_at | when }} by Sequencer {{ version }}.
{% if not report.sequence %}All sequences with enrollments.{% endif %}</p>

{% if not report.sequences or not report.sequences | map(attribute='enrollments') | sum %}
<p>No enrollments yet. Enroll prospects with <code>sequencer enroll SEQUENCE FILE.csv</code>
and run <code>sequencer run</code>; this report fills in as emails go out and replies come back.</p>
{% endif %}
<div class="cards">
  <div class="card"><b>{{ emailed }}</b><span>people emailed</span></div>
  <div class="card"><b>{{ sent }}</b><span>emails sent</span></div>
  <div class="card"><b>{{ report.replied }}</b><span>replied</span></div>
  <div class="card"><b>{{ later | percent }}</b>
    <span>of replies came after the 1st email</span></div>
  <div class="card"><b>{{ report.idle_total }}</b><span>leads not being worked</span></div>
  <div class="card"><b>{{ report.stuck_totals.values() | sum }}</b>
    <span>touches need a human</span></div>
</div>

{% macro chart(c) %}
<svg viewBox="0 0 {{ c.width }} {{ c.height }}" role="img" aria-label="{{ c.title }}"
     xmlns="http://www.w3.org/2000/svg"><title>{{ c.title }}</title>
{% for b in c.bars %}
  <rect class="{{ b.tone }}" x="{{ b.x | n }}" y="{{ b.y | n }}"
        width="{{ b.w | n }}" height="{{ b.h | n }}" rx="2"/>
  {% if c.labels_left %}
  {% if b.label %}
  <text x="{{ (b.x - 8) | n }}" y="{{ (b.y + b.h - 4) | n }}" text-anchor="end">
    {{- b.label }}</text>
  {% endif %}
  <text x="{{ (b.x + b.w + 6) | n }}" y="{{ (b.y + b.h - 3) | n }}">{{ b.value }}</text>
  {% else %}
  <text x="{{ (b.x + b.w / 2) | n }}" y="{{ (b.y - 5) | n }}" text-anchor="middle">
    {{- b.value }}</text>
  <text x="{{ (b.x + b.w / 2) | n }}" y="{{ c.height - 18 }}" text-anchor="middle">
    {{- b.label }}</text>
  {% endif %}
{% endfor %}
</svg>
{% endmacro %}

<section>
<h2>Replies by attempt</h2>
<p class="muted">Which email of an enrollment the reply answered (1st = the first email it got).
Every reply after the 1st email is one that following up won.</p>
{% if attempts %}{{ chart(attempts) }}{% else %}<p>No replies yet.</p>{% endif %}
</section>

{% for q in report.sequences %}
<section>
<h2>{{ q.name }}{% if q.archived %} (archived){% endif %}</h2>
{% if q.description %}<p class="muted">{{ q.description }}</p>{% endif %}
{% if not q.in_project %}
<p class="muted">The sequence file is gone; figures come from the database.</p>
{% endif %}
<p>{{ q.enrollments }} enrolled:
{% for state, n in q.states.items() %} {{ n }} {{ state }}{{ "," if not loop.last }}{% endfor -%}
.
{% if q.stop_reasons %}Stopped because:
{% for reason, n in q.stop_reasons.items() %}
 {{ reason | replace('_', ' ') }} {{ n }}{{ "," if not loop.last }}
{%- endfor -%}
.
{% endif %}<br>
{{ q.contacted }} {{ "person" if q.contacted == 1 else "people" }} emailed,
{{ q.sent }} email{{ "" if q.sent == 1 else "s" }} sent; <b>{{ q.signals.replied }} replied
({{ q.reply_rate | percent }} of people emailed)</b>, {{ q.signals.bounced }} bounced,
{{ q.signals.unsubscribed }} unsubscribed, {{ q.signals.out_of_office }} out of office.</p>
{% if funnels[q.name] %}{{ chart(funnels[q.name]) }}{% endif %}
<table class="steps">
<tr><th class="n">#</th><th>step</th><th>channel</th><th>content</th><th class="n">sent / done</th>
<th class="n">replied</th><th class="n">reply rate</th><th class="n">bounced</th>
<th class="n">unsub&shy;scribed</th><th class="n">out of office</th><th class="n">failed</th>
<th class="n">unknown</th><th class="n">to come</th></tr>
{% for s in q.steps %}
<tr{% if not s.in_sequence %} class="removed"{% endif %}><td class="n">{{ s.position }}</td>
<td class="name">{{ s.step }}{% if not s.in_sequence %} (removed){% endif %}</td>
<td>{{ s.channel }}</td><td class="name">{{ s.content }}</td>
<td class="n">{{ s.sent if s.channel == 'email' else s.done }}</td>
<td class="n">{{ s.signals.replied }}</td><td class="n">{{ s.reply_rate | percent }}</td>
<td class="n">{{ s.signals.bounced }}</td><td class="n">{{ s.signals.unsubscribed }}</td>
<td class="n">{{ s.signals.out_of_office }}</td><td class="n">{{ s.failed }}</td>
<td class="n">{{ s.unknown }}</td><td class="n">{{ s.pending }}</td></tr>
{% endfor %}
</table>
{% if q.unattributed.as_dict().values() | sum %}
<p class="muted">Before any email went out: {{ q.unattributed.replied }} replied,
{{ q.unattributed.bounced }} bounced, {{ q.unattributed.unsubscribed }} unsubscribed,
{{ q.unattributed.out_of_office }} out of office (counted in the totals above, in no step).</p>
{% endif %}
</section>
{% endfor %}

<section>
<h2>Templates</h2>
{% if templates %}{{ chart(templates) }}{% endif %}
{% if report.templates %}
<table>
<tr><th>template</th><th>name</th><th>value-add</th><th class="n">sent</th>
<th class="n">replied</th><th class="n">reply rate</th></tr>
{% for t in report.templates %}
<tr><td>{{ t.template }}</td><td>{{ t.title }}</td><td>{{ "yes" if t.value_add else "" }}</td>
<td class="n">{{ t.sent }}</td><td class="n">{{ t.replied }}</td>
<td class="n">{{ t.reply_rate | percent }}</td></tr>
{% endfor %}
</table>
{% else %}<p>No email has gone out yet.</p>{% endif %}
</section>

<section>
<h2>Leads not being worked: {{ report.idle_total }}</h2>
<p class="muted">Live enrollments with no touch to come, no open task and no stop reason.
The engine should never leave one like this; each needs a look.</p>
{% if report.idle %}
<table>
<tr><th>prospect</th><th>name</th><th>sequence</th><th>why</th><th>since</th></tr>
{% for i in report.idle %}
<tr><td>{{ i.email }}</td><td>{{ i.name }}</td><td>{{ i.sequence }}</td><td>{{ i.why }}</td>
<td class="when">{{ i.since | day }}</td></tr>
{% endfor %}
</table>
{% if report.idle_total > report.idle | length %}
<p class="muted">The oldest {{ report.idle | length }} are listed.</p>
{% endif %}
{% else %}<p class="none">None: every live lead has something planned.</p>{% endif %}
</section>

<section>
<h2>Touches that need a human: {{ report.stuck_totals.get('failed', 0) }} failed,
{{ report.stuck_totals.get('unknown', 0) }} unknown</h2>
{% if report.stuck %}
<table>
<tr><th>state</th><th>prospect</th><th>sequence / step</th><th>error</th><th>since</th>
<th>what to do</th></tr>
{% for s in report.stuck %}
<tr><td class="name state-{{ s.state }}">{{ s.state }}</td><td>{{ s.email }}</td>
<td>{{ s.sequence }} / {{ s.step }}</td>
<td>{{ s.error }}</td><td class="when">{{ s.since | day }}</td><td>{{ s.todo }}</td></tr>
{% endfor %}
</table>
{% else %}<p class="none">None.</p>{% endif %}
</section>

<section>
<h2>What the figures mean</h2>
<dl>
<dt>sent</dt><dd>Emails that went out (the SMTP server accepted them). Tasks count as done.</dd>
<dt>replied</dt><dd>Enrollments that got a human reply, counted once, on the email the reply
answered (its In-Reply-To), else the last email before it.</dd>
<dt>reply rate</dt><dd>Replies / emails sent, for a step or a template; replies / people emailed
for a sequence.</dd>
<dt>bounced, unsubscribed</dt><dd>Once per enrollment, on the email they followed.</dd>
<dt>out of office</dt><dd>Every automatic absence reply; never counted as a reply.</dd>
<dt>unknown</dt><dd>The connection dropped after the email was handed over: it may have arrived.
Sequencer never resends one silently.</dd>
</dl>
<p class="muted">See docs/reports.md.</p>
</section>
</body>
</html>
"""
