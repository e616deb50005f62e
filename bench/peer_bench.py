"""Peer benchmark: the send workload (N one-step emails due now, into Postfix's smtp-sink)
through django-drip-campaigns, the open-source drip engine closest to ours, and through
`sequencer run`, on the same sink; messages per second and the ratio engine/peer.

The peer runs from its own virtualenv (bench/.peer-venv, made on first use with pip from
PyPI, never part of the project's dependencies): a minimal Django project on SQLite in a temp
dir, N users, one enabled drip with one email (rule: `is_active` is True, so every user
matches), unsubscribe links on (DRIP_UNSUBSCRIBE_USERS), Django's SMTP email backend pointed at
the sink. Timed: `manage.py send_drips` from process start to exit. Per message it renders the
Django template (with three signed unsubscribe links), opens a new SMTP connection (Django's
EmailMessage.send() without a shared connection), sends, and inserts a SentDrip row. The
users already sent this drip and the unsubscribed ones are excluded by one query up front.

What the peer does not do per message, and the engine does: no per-recipient sending window,
time zone or holidays; no mailbox caps, spacing or per-prospect nuisance limits; no
suppression check right before the send; no reply, bounce or out-of-office checking (nothing
stops a drip when someone answers); no state written before the SMTP call and no deterministic
Message-ID, so a crash between the send and the SentDrip insert, or two send_drips at once,
sends twice; no retry or 4xx/5xx handling (a failure is logged and the user is tried again
on the next run); no threading headers or List-Unsubscribe header; no template rotation.

Engine: `engine_embedded` from bench/send_bench.py (`sequencer run` on SQLite, one process,
timed from process start until the database says all are sent; enrolling is not timed).

Usage: .venv/bin/python bench/peer_bench.py [--count 5000] [--no-record]
Appends the figures to bench/RESULTS.md (unless --no-record). Needs the Debian package postfix
(smtp-sink) and PyPI access the first time (to build bench/.peer-venv).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from common import REPO, heading, machine, record, run_measured
from send_bench import engine_embedded
from sink import Sink

VENV = REPO / "bench" / ".peer-venv"
#: The versions measured; pinned so a figure says what it was measured against.
PEER_PACKAGES = ["django-drip-campaigns==1.16.2", "Django==5.2.*"]
SENDER = "ana.reyes@northwind.example"

SETTINGS = """\
SECRET_KEY = "peer-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "drip",
    "drip.campaigns",
]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {database!r}}}}}
ROOT_URLCONF = "peer_urls"
TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}}]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = {port}
EMAIL_TIMEOUT = 30
DEFAULT_FROM_EMAIL = {sender!r}
DRIP_FROM_EMAIL = {sender!r}
DRIP_UNSUBSCRIBE_USERS = True
"""
URLS = """\
from django.urls import include, path

urlpatterns = [path("", include("drip.urls"))]
"""
SUBJECT = "A note for {{ user.first_name|default:'you' }} at {{ user.last_name }}"
BODY = """\
Hi {{ user.first_name|default:"there" }},

We help freight teams at companies like {{ user.last_name }} cut dwell time. One short
note, sent once and only once.

Ana Reyes
Account Executive, Northwind Analytics

Unsubscribe: https://sequencer.northwind.example{{ unsubscribe_link }}
"""
#: Users and the drip, made through the ORM (not timed).
SETUP = """\
import sys
import django
django.setup()
from django.contrib.auth.models import User
from drip.models import Drip, QuerySetRule

count = int(sys.argv[1])
User.objects.bulk_create(
    [
        User(username=f"user{{i}}", email=f"person{{i}}@company{{i % 997}}.example",
             first_name=f"First{{i}}", last_name=f"Co {{i}}", is_active=True)
        for i in range(count)
    ],
    batch_size=1000,
)
drip = Drip.objects.create(
    name="bench-note", enabled=True, from_email={sender!r}, from_email_name="Ana Reyes",
    subject_template={subject!r}, body_html_template={body!r},
)
QuerySetRule.objects.create(
    drip=drip, method_type="filter", field_name="is_active", lookup_type="exact",
    field_value="True", rule_type="and",
)
print(User.objects.count())
"""
#: After the run: how many SentDrip rows the peer recorded.
COUNT_SENT = """\
import django
django.setup()
from drip.models import SentDrip
print(SentDrip.objects.count())
"""


def peer_python() -> Path:
    """The peer's virtualenv, made (and the peer installed from PyPI) on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"Creating {VENV} with {', '.join(PEER_PACKAGES)} (first run only)")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import drip, django"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"could not install {' '.join(PEER_PACKAGES)} into {VENV} "
                f"(PyPI must be reachable):\n{done.stderr[-2000:]}"
            )
    return python


def peer_versions(python: Path) -> str:
    script = (
        "from importlib.metadata import version as v; "
        "print(f\"django-drip-campaigns {v('django-drip-campaigns')}, Django {v('Django')}\")"
    )
    return subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()


def peer_project(work: Path, port: int) -> None:
    work.mkdir(parents=True)
    (work / "peer_settings.py").write_text(
        SETTINGS.format(database=str(work / "peer.db"), port=port, sender=SENDER)
    )
    (work / "peer_urls.py").write_text(URLS)
    (work / "manage.py").write_text(
        textwrap.dedent(
            """\
            import sys
            from django.core.management import execute_from_command_line
            execute_from_command_line(sys.argv)
            """
        )
    )
    (work / "setup_peer.py").write_text(SETUP.format(sender=SENDER, subject=SUBJECT, body=BODY))
    (work / "count_sent.py").write_text(COUNT_SENT)


def peer_run(count: int, sink: Sink, work: Path) -> tuple[float, int, int, int]:
    """(seconds, peak RSS MiB, messages the sink accepted, SentDrip rows) of send_drips."""
    python = str(peer_python())
    peer_project(work, sink.port)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTHON"))},
        "DJANGO_SETTINGS_MODULE": "peer_settings",
        "PYTHONPATH": str(work),
    }
    run_measured([python, "manage.py", "migrate", "-v", "0"], env, work)
    _, _, made = run_measured([python, "setup_peer.py", str(count)], env, work)
    if int(made.strip()) != count:
        raise SystemExit(f"the peer project has {made.strip()} users, expected {count}")
    before = sink.count()
    seconds, rss, _ = run_measured([python, "manage.py", "send_drips"], env, work)
    received = sink.wait_for(before + count, timeout=10) - before
    _, _, rows = run_measured([python, "count_sent.py"], env, work)
    return seconds, rss, received, int(rows.strip())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()
    count = args.count
    versions = peer_versions(peer_python())
    with Sink() as sink, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"peer: {versions}, send_drips of {count:,} users")
        peer_s, peer_rss, peer_received, peer_rows = peer_run(count, sink, work / "peer")
        print(f"peer: {peer_s:.1f} s; engine: sequencer run of {count:,} touches")
        before = sink.count()
        engine_s = engine_embedded(count, sink.port, work / "engine")
        engine_received = sink.wait_for(before + count, timeout=10) - before
    engine_rate, peer_rate = count / engine_s, count / peer_s
    problems = []
    if peer_received != count or peer_rows != count:
        problems.append(f"peer: sink got {peer_received}, SentDrip rows {peer_rows}")
    if engine_received != count:
        problems.append(f"engine: sink got {engine_received}")
    lines = [
        heading(f"Peer, {count:,} one-step emails into smtp-sink"),
        "",
        f"Machine: {machine()}",
        "",
        "| run | messages | seconds | msgs/s | received by the sink | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| sequencer run (SQLite, one process) | {count:,} | {engine_s:.1f} "
        f"| {engine_rate:,.0f} | {engine_received:,} | - |",
        f"| peer: {versions}, manage.py send_drips (SQLite) | {count:,} | {peer_s:.1f} "
        f"| {peer_rate:,.0f} | {peer_received:,} | {peer_rss} |",
        "",
        f"Throughput ratio engine/peer: {engine_rate / peer_rate:.2f}x. Both timed from process "
        "start; the peer opens one SMTP connection per message and keeps no per-message "
        "state before sending, and checks no window, cap, limit, reply or suppression "
        "(see bench/peer_bench.py).",
        "",
    ]
    if problems:
        lines.insert(-1, "Problems: " + "; ".join(problems))
    record("\n".join(lines), enabled=not args.no_record)
    if problems:
        raise SystemExit("; ".join(problems))


if __name__ == "__main__":
    main()
