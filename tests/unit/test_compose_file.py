"""docker-compose.yml, the Dockerfile and the docs agree with the program they deploy.

Docker does not run where the tests run, so these tests read the files instead: every
command a container runs is a real `sequencer` command with real options, every
``SEQUENCER_*`` variable is one the settings read (with values they accept), the mounted
sequencer.yaml loads cleanly with the project's own loader and finds its secrets in the
environment, and the start-up order and health checks are wired. The docs are scanned for
`sequencer ...` commands and ``SEQUENCER_*`` names that do not exist.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from sequencer.catalog import Project, load_catalog
from sequencer.cli import cli
from sequencer.core.config import parse_config
from sequencer.core.problems import Severity
from sequencer.runtime.worker import COMPLETION_WAIT
from sequencer.settings import VARIABLES, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DEPLOY_CONFIG = REPO / "deploy" / "sequencer.yaml"
DOCS = sorted((REPO / "docs").glob("*.md"))

REQUIRED_SERVICES = {"postgres", "redis", "mail", "migrate", "worker", "web"}
#: GreenMail's "test" setup ports (the standard ports plus 3000).
GREENMAIL_PORTS = {"smtp": 3025, "imap": 3143}
#: ${NAME}, ${NAME:-default} and ${NAME-default}, as Compose interpolates them.
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
)
VARIABLE_NAME = re.compile(r"\bSEQUENCER_[A-Z0-9_]*[A-Z0-9]\b")


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml is not a YAML mapping"
    return document


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
#: The services that run the Sequencer image (built from the Dockerfile).
SEQUENCER_SERVICES = sorted(name for name, s in SERVICES.items() if "build" in s)


def interpolate(value: str) -> str:
    """A value as `docker compose up` sees it with nothing set in the shell or `.env`; a
    variable without a default would be empty, so it is refused here."""

    def default(match: re.Match[str]) -> str:
        if match["op"] is None:
            raise AssertionError(
                f"docker-compose.yml: ${{{match['name']}}} has no default; write "
                f"${{{match['name']}:-...}} so the file works without a .env"
            )
        return str(match["default"])

    return INTERPOLATION.sub(default, value).replace("$$", "$")


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolate(str(value)) for name, value in env.items()}


def command_of(service: str) -> list[str]:
    command = SERVICES[service].get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"service {service} has no command"
    return [str(part) for part in command]


def resolve(words: list[str], where: str) -> click.Command:
    """The click command ``sequencer WORDS...`` runs, its options checked; AssertionError
    naming ``where`` when a subcommand or an option does not exist."""
    command: click.Command = cli
    path = ["sequencer"]
    rest = list(words)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, (
            f"{where}: `{' '.join([*path, name])}` is not a command "
            f"(`{' '.join(path)}` has: {', '.join(sorted(command.commands))})"
        )
        command, path = sub, [*path, name]
    assert not isinstance(command, click.Group), f"{where}: `{' '.join(path)}` needs a subcommand"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    known |= {"--help", "-h"}
    for word in rest:
        if word.startswith("-") and word != "-":
            option = word.split("=", 1)[0]
            assert option in known, (
                f"{where}: `{' '.join(path)}` has no option {option} "
                f"(it has: {', '.join(sorted(known))})"
            )
    return command


def host_path(container_path: str, service: str) -> Path:
    """The file or folder of the repository mounted at ``container_path`` in ``service``."""
    target = PurePosixPath(container_path)
    for volume in SERVICES[service].get("volumes", []):
        source, mounted, *_ = str(volume).split(":")
        if not source.startswith("."):
            continue  # a named volume
        mounted_path = PurePosixPath(mounted)
        if target == mounted_path or mounted_path in target.parents:
            return REPO / source / target.relative_to(mounted_path)
    raise AssertionError(f"service {service}: nothing from the repository is mounted at {target}")


def published_ports(service: str) -> Iterator[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port."""
    for entry in SERVICES[service].get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) in (2, 3), f"service {service}: write ports as [IP:]HOST:CONTAINER"
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        yield address, int(parts[-2]), int(parts[-1].split("/")[0])


# --- services and start-up order ---------------------------------------------------------


def test_every_part_of_the_scaled_shape_is_a_service() -> None:
    assert set(SERVICES) >= REQUIRED_SERVICES
    assert set(SEQUENCER_SERVICES) == {"migrate", "worker", "web"}
    assert SERVICES["postgres"]["image"].startswith("postgres:16")
    assert SERVICES["redis"]["image"].startswith("redis:7")
    assert SERVICES["mail"]["image"].startswith("greenmail/standalone:")


def test_databases_have_health_checks_the_others_wait_for() -> None:
    assert "pg_isready" in SERVICES["postgres"]["healthcheck"]["test"]
    assert SERVICES["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    for name, service in SERVICES.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )


def test_migration_runs_once_before_workers_and_web() -> None:
    assert command_of("migrate") == ["db", "upgrade"]
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["migrate"].get("restart", "no") == "no"
    for name in ("worker", "web"):
        rule = SERVICES[name]["depends_on"]["migrate"]
        assert rule["condition"] == "service_completed_successfully", name
    assert SERVICES["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_two_workers_that_finish_their_sends_before_being_killed() -> None:
    worker = SERVICES["worker"]
    assert command_of("worker")[0] == "worker"
    assert worker["deploy"]["replicas"] == 2
    grace = str(worker["stop_grace_period"])
    match = re.fullmatch(r"(\d+)s", grace)
    assert match, f"stop_grace_period {grace!r}: write seconds, e.g. 100s"
    # Compose kills after the grace period; a worker may wait this long for a send.
    assert int(match[1]) > COMPLETION_WAIT


def test_web_listens_where_it_is_published_and_checked() -> None:
    command = command_of("web")
    assert command[0] == "web"
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from outside
    assert [p[2] for p in published_ports("web")] == [port]
    check = " ".join(SERVICES["web"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in check


def test_published_ports_do_not_collide() -> None:
    owners: dict[int, str] = {}
    for name in SERVICES:
        for _, host_port, _ in published_ports(name):
            assert host_port not in owners, (
                f"{name} and {owners[host_port]} both publish port {host_port}"
            )
            owners[host_port] = name
    assert owners, "nothing is published"


# --- commands and variables ----------------------------------------------------------------


@pytest.mark.parametrize("service", SEQUENCER_SERVICES)
def test_each_container_runs_a_real_command(service: str) -> None:
    resolve(command_of(service), f"docker-compose.yml service {service}")


@pytest.mark.parametrize("service", SEQUENCER_SERVICES)
def test_sequencer_variables_are_known_and_valid(service: str) -> None:
    env = environment(service)
    unknown = sorted(n for n in env if n.startswith("SEQUENCER_") and n not in VARIABLES)
    assert not unknown, f"service {service} sets variables nothing reads: {unknown}"
    # The settings' own validation: the defaults in the file must start the program.
    settings = Settings.from_env(env)
    assert settings.secret is not None and len(settings.secret) >= 16
    assert env.get("SEQUENCER_API_TOKEN") or env.get("SEQUENCER_API_TOKEN_FILE")


def test_database_and_redis_urls_point_at_their_services() -> None:
    env = environment("worker")
    database = urlsplit(env["SEQUENCER_DATABASE_URL"])
    assert database.scheme in ("postgresql", "postgres")
    assert database.hostname == "postgres" and (database.port or 5432) == 5432
    postgres = environment("postgres")
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path == "/" + postgres["POSTGRES_DB"]
    assert urlsplit(env["SEQUENCER_REDIS_URL"]).hostname == "redis"


def test_all_sequencer_services_share_one_configuration() -> None:
    """Workers and web must agree on the database and, above all, on the signing secret:
    the web service checks the unsubscribe links the workers sign."""
    first, *others = SEQUENCER_SERVICES
    for name in others:
        assert environment(name) == environment(first), f"{name} and {first} differ"


# --- the mounted project -------------------------------------------------------------------


def test_the_mounted_project_loads_without_problems() -> None:
    env = environment("worker")
    project = Project(
        root=REPO,
        sequences_dir=host_path(env["SEQUENCER_SEQUENCES_DIR"], "worker"),
        templates_dir=host_path(env["SEQUENCER_TEMPLATES_DIR"], "worker"),
        config_path=host_path(env["SEQUENCER_CONFIG"], "worker"),
    )
    assert project.config_path == DEPLOY_CONFIG
    catalog = load_catalog(project)
    errors = [str(p) for p in catalog.problems if p.severity is Severity.ERROR]
    assert errors == []
    assert catalog.sequences, "no sequences mounted"
    assert catalog.config is not None and catalog.config.mailboxes


def test_every_secret_the_config_names_is_in_the_environment() -> None:
    config, problems = parse_config(str(DEPLOY_CONFIG), DEPLOY_CONFIG.read_text(encoding="utf-8"))
    assert config is not None and problems == []
    env = environment("worker")
    names: set[str] = set()
    for box in config.mailboxes:
        for server in (box.smtp, box.imap):
            assert server is not None, f"{box.address} needs smtp and imap for the dev server"
            assert server.password_env or server.oauth2_token_env, box.address
            names |= {n for n in (server.password_env, server.oauth2_token_env) if n}
            assert server.password_file is None and server.oauth2_token_file is None
    missing = sorted(n for n in names if not env.get(n))
    assert not missing, f"deploy/sequencer.yaml names {missing}; set them in the environment"


def test_mailboxes_reach_the_dev_mail_server_as_its_users() -> None:
    config, _ = parse_config(str(DEPLOY_CONFIG), DEPLOY_CONFIG.read_text(encoding="utf-8"))
    assert config is not None
    options = environment("mail")["GREENMAIL_OPTS"].split()
    assert "-Dgreenmail.users.login=email" in options  # login with the full address
    users_option = next(o for o in options if o.startswith("-Dgreenmail.users="))
    users = {}
    for entry in users_option.split("=", 1)[1].split(","):
        login, rest = entry.split(":", 1)
        password, domain = rest.rsplit("@", 1)
        users[f"{login}@{domain}"] = password
    env = environment("worker")
    for box in config.mailboxes:
        assert box.smtp is not None and box.imap is not None
        assert (box.smtp.host, box.smtp.port) == ("mail", GREENMAIL_PORTS["smtp"])
        assert (box.imap.host, box.imap.port) == ("mail", GREENMAIL_PORTS["imap"])
        assert box.smtp.username == box.address == box.imap.username
        assert box.address in users, f"GreenMail has no user {box.address}"
        assert box.imap.password_env is not None
        assert users[box.address] == env[box.imap.password_env], box.address
    # Unsubscribe links in the emails must lead to the web service's published port.
    public = urlsplit(config.sender.public_url)
    assert public.port in {p[1] for p in published_ports("web")}


# --- the image ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_runs_the_console_script_as_a_user() -> None:
    instructions = dockerfile_instructions()
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^sequencer = "sequencer\.cli:main"$', pyproject, re.MULTILINE)
    entrypoints = [args for op, args in instructions if op == "ENTRYPOINT"]
    assert entrypoints == ['["sequencer"]']
    base = next(args for op, args in instructions if op == "FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base), base
    assert any(op == "RUN" and "pip install ." in args for op, args in instructions)
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for op, args in dockerfile_instructions():
        if op != "COPY":
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
            assert source.rstrip("/") not in ignored, f".dockerignore leaves out {source}"


# --- the docs ----------------------------------------------------------------------------------

_CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.DOTALL)
_COMMAND_SEPARATOR = re.compile(r"&&|\|\||[|;]|\$\(")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")
_COMPOSE_RUN = re.compile(r"docker compose (?:run --rm|exec) (\w+)([^\n#]*)")


def code_in(text: str) -> Iterator[str]:
    """The code of a Markdown file: fenced blocks and inline spans."""
    for match in _CODE.finditer(text):
        yield match[1] if match[1] is not None else match[2]


def mentions(code: str) -> Iterator[list[str]]:
    """The words after each shell command of code that runs `sequencer`: at the start of a
    line or after `&&`, `;`, `|` or `$(`, past a `$ ` prompt and `NAME=value` assignments;
    up to a comment."""
    for line in code.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*", "", line)
        for part in _COMMAND_SEPARATOR.split(line):
            words = part.split()
            if words[:1] == ["$"]:
                words = words[1:]
            while words and _ASSIGNMENT.match(words[0]):
                words = words[1:]
            if words[:1] == ["sequencer"] and len(words) > 1:  # not the bare program name
                cleaned = [w.strip("[]()") for w in words[1:]]
                yield [w for w in cleaned if w and w != "..."]


def test_mentions_are_found() -> None:
    """The scanner itself: a broken command in the docs would not slip through unseen."""
    sample = (
        "Run `sequencer db upgrade`, then:\n```sh\n$ sequencer status --json  # x\n"
        "SEQUENCER_SECRET=x sequencer run | tee log; pg_dump -U sequencer sequencer\n```\n"
    )
    found = [m for code in code_in(sample) for m in mentions(code)]
    assert found == [["db", "upgrade"], ["status", "--json"], ["run"]]
    with pytest.raises(AssertionError, match="no option --jsn"):
        resolve(["status", "--jsn"], "sample")
    with pytest.raises(AssertionError, match="is not a command"):
        resolve(["db", "upgrad"], "sample")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_mention_only_real_commands_and_variables(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    for code in code_in(text):
        for words in mentions(code):
            resolve(words, f"docs/{doc.name}")
        for match in _COMPOSE_RUN.finditer(code.replace("\\\n", " ")):
            if match[1] not in SEQUENCER_SERVICES:
                continue  # e.g. `docker compose exec postgres pg_dump`
            words = match[2].split() or command_of(match[1])  # no words: the service's own
            resolve(words, f"docs/{doc.name}: `{match[0].strip()}`")
    unknown = sorted(set(VARIABLE_NAME.findall(text)) - set(VARIABLES))
    assert not unknown, f"docs/{doc.name} names variables nothing reads: {unknown}"


def test_the_operations_guide_is_actually_scanned() -> None:
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    commands = {" ".join(m[:1]) for code in code_in(text) for m in mentions(code)}
    assert {"run", "worker", "web", "db", "status", "inbox"} <= commands


def test_metrics_named_in_the_docs_exist() -> None:
    exposed = (REPO / "sequencer" / "web" / "metrics.py").read_text(encoding="utf-8")
    for doc in DOCS:
        for name in set(re.findall(r"\bsequencer_[a-z_]+[a-z]\b", doc.read_text("utf-8"))):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert f'"{base}"' in exposed, f"docs/{doc.name} names metric {name}; /metrics has none"


@pytest.mark.parametrize("path", [COMPOSE_FILE, DOCKERFILE, DEPLOY_CONFIG], ids=lambda p: p.name)
def test_deployment_files_mention_only_real_commands_and_variables(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    unknown = sorted(set(VARIABLE_NAME.findall(text)) - set(VARIABLES))
    assert not unknown, f"{path.name} names variables nothing reads: {unknown}"
    for match in _COMPOSE_RUN.finditer(text.replace("\\\n#", " ")):
        if match[1] not in SEQUENCER_SERVICES:
            continue
        words = [w for w in match[2].split() if w != "\\"] or command_of(match[1])
        resolve(words, f"{path.name}: `{match[0].strip()}`")
