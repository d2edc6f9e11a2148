"""The running kernel: one object per process that owns the database, bus, audit log and keys.

Created from :class:`Settings`; the web app, the CLI, listeners and workers all build one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from tianfu.core.audit.service import AuditLog
from tianfu.core.bus import Event, make_bus
from tianfu.core.bus.outbox import OutboxRelay
from tianfu.core.db import make_engine, make_session_factory
from tianfu.core.deadletter import service as deadletters
from tianfu.core.identity.service import Authenticator
from tianfu.core.identity.totp import SecretBox
from tianfu.core.settings import Settings

log = logging.getLogger(__name__)


class Kernel:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secret_key = settings.resolved_secret_key()
        self.engine = make_engine(settings.database_url)
        self.sessions = make_session_factory(self.engine)
        self.audit = AuditLog(self._audit_key())
        self.secret_box = SecretBox(self.secret_key)
        self.auth = Authenticator(settings, self.audit, self.secret_box)
        self.bus = make_bus(settings.bus_url, stream=settings.bus_stream, namespace=settings.bus_namespace)
        self.bus.dead_letter_sink = self._dead_letter_event
        self.outbox = OutboxRelay(self.sessions, self.bus)
        self.started = False
        # Runtime objects modules share within this process (e.g. monitoring's live ward view).
        self.extensions: dict[str, Any] = {}

        @event.listens_for(self.sessions, "after_commit")
        def _wake_relay(session: Session) -> None:
            if session.info.pop("outbox_pending", False):
                self.outbox.notify()

    def _audit_key(self) -> bytes:
        if self.settings.audit_key is not None and self.settings.audit_key.get_secret_value():
            return self.settings.audit_key.get_secret_value().encode()
        return hmac.new(self.secret_key.encode(), b"tianfu-audit-chain-v1", hashlib.sha256).digest()

    async def start(self) -> None:
        """Connect the bus and start publishing the outbox."""
        await self.bus.start()
        await self.outbox.start()
        self.started = True

    async def stop(self) -> None:
        if self.started:
            await self.outbox.stop()
            await self.bus.close()
            self.started = False
        self.engine.dispose()

    async def _dead_letter_event(self, event: Event, consumer: str, error: str) -> None:
        import asyncio

        def store() -> None:
            with self.sessions() as session, session.begin():
                deadletters.store(
                    session,
                    source="bus",
                    reason=f"consumer {consumer}: {error}",
                    payload=event.to_bytes(),
                    meta={"subject": event.subject, "event_id": event.id, "consumer": consumer},
                )

        await asyncio.to_thread(store)

    def database_ready(self) -> dict[str, Any]:
        """Whether the database answers and its schema is at the newest migration."""
        from tianfu.core.migrate import current_revision, head_revision

        with self.engine.connect() as connection:
            current = current_revision(connection)
        head = head_revision()
        return {"ok": current == head, "current": current, "head": head}
