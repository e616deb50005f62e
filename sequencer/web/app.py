"""The Starlette application: routes, health, and one error shape per audience (JSON for the
API, a plain page for people)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sequencer.catalog import Catalog
from sequencer.core.errors import DatabaseError, SchemaMismatch
from sequencer.runtime.clock import Clock, ManualClock, SystemClock
from sequencer.runtime.engine import Engine
from sequencer.settings import Settings
from sequencer.store.database import Database, head_revision
from sequencer.web import api, pages, unsubscribe
from sequencer.web.http import json_error
from sequencer.web.metrics import metrics
from sequencer.web.openapi import docs, openapi_json
from sequencer.web.service import Service

log = logging.getLogger("sequencer.web")

#: A database that has not answered the health check by then counts as down.
HEALTH_TIMEOUT = 5.0


def create_app(
    settings: Settings, catalog: Catalog, *, secret: bytes, clock: Clock | None = None
) -> Starlette:
    """The web app on ``settings.database_url`` for the project in ``catalog``.

    ``secret`` must be the one ``sequencer run`` signs unsubscribe links with. Nothing
    connects before the first request: a database that is down or not migrated yet shows up
    in ``/healthz`` and as 503 answers, not as a server that refuses to start.
    """
    database = Database(settings.database_url)
    if clock is None:
        clock = ManualClock(settings.now) if settings.now else SystemClock()
    engine = Engine(database, catalog, clock=clock, settings=settings)
    service = Service(engine, secret=secret, api_token=settings.api_token)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await database.close()

    app = Starlette(
        routes=[
            Route("/", home, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            *unsubscribe.ROUTES,
            *api.ROUTES,
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.service = service
    return app


async def home(request: Request) -> Response:
    return RedirectResponse("/docs")


async def healthz(request: Request) -> Response:
    """200 when the database answers and its schema is this version's; 503 with the reason
    otherwise (the database's address stays in the server log, not in a public answer)."""
    service: Service = request.app.state.service
    try:
        await asyncio.wait_for(service.engine.db.check_schema(), HEALTH_TIMEOUT)
    except SchemaMismatch as exc:
        log.warning("health: %s", exc)
        return JSONResponse(
            {
                "status": "unavailable",
                "reason": "the database schema is not this version's",
                "hint": "run `sequencer db upgrade`",
            },
            status_code=503,
        )
    except (DatabaseError, TimeoutError) as exc:
        log.warning("health: %s", exc or f"no answer within {HEALTH_TIMEOUT:g} s")
        return JSONResponse(
            {
                "status": "unavailable",
                "reason": "the database cannot be reached",
                "hint": "check SEQUENCER_DATABASE_URL and that the database server is up",
            },
            status_code=503,
        )
    return JSONResponse({"status": "ok", "schema": head_revision()})


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods: JSON under /api, the one plain page elsewhere."""
    assert isinstance(exc, HTTPException)
    service: Service = request.app.state.service
    if request.url.path.startswith(api.PREFIX + "/") or request.url.path == api.PREFIX:
        if exc.status_code == 405:
            return json_error(405, f"{request.method} is not allowed here", "see /docs")
        return json_error(exc.status_code, "no such endpoint", "see /docs for the API")
    if exc.status_code == 405 and request.url.path.startswith("/u/"):
        return pages.not_found_page(service.company)
    if exc.status_code == 404:
        return pages.not_found_page(service.company)
    return Response(str(exc.detail), status_code=exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    service: Service = request.app.state.service
    if request.url.path.startswith(api.PREFIX):
        return json_error(500, "internal error", "the server log has the details")
    return pages.unavailable_page(service.company, status=500)
