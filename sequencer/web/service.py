"""What the HTTP handlers share: the engine on the database, the signing secret, the API token."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

from sequencer.runtime.engine import Engine


class Service:
    """One per app. The database is checked lazily, so the server starts (and ``/healthz``
    can say what is wrong) even before ``sequencer db upgrade`` has run."""

    def __init__(self, engine: Engine, *, secret: bytes, api_token: str | None) -> None:
        if not secret:
            raise ValueError("secret: the web server needs the signing secret of `sequencer run`")
        self.engine = engine
        self.secret = secret
        # Only a digest is kept, so the token itself never sits in a traceback or a dump.
        self._token_digest = _digest(api_token) if api_token else None
        self._schema_ok = False
        self._ready = False
        self._lock = asyncio.Lock()

    @property
    def api_enabled(self) -> bool:
        return self._token_digest is not None

    def token_matches(self, offered: str) -> bool:
        """Constant-time comparison of digests: neither content nor length leaks by timing."""
        if self._token_digest is None:
            return False
        return hmac.compare_digest(_digest(offered), self._token_digest)

    @property
    def company(self) -> str:
        config = self.engine.catalog.config
        return config.sender.company if config else ""

    async def ready(self) -> Engine:
        """The engine, once the schema is known to be current and the project's sequences
        are recorded; raises SchemaMismatch or DatabaseError (with what to run) otherwise."""
        if self._ready:
            return self.engine
        async with self._lock:
            if not self._ready:
                await self.schema_current()
                await self.engine.sync_sequences()
                self._ready = True
        return self.engine

    async def schema_current(self) -> Engine:
        """The engine once the schema is current (without syncing sequences): enough for
        suppressions, which touch no sequence. A passed check is remembered."""
        if not self._schema_ok:
            await self.engine.db.check_schema()
            self._schema_ok = True
        return self.engine


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()
