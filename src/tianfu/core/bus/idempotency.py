"""Make a consumer idempotent: apply an event's changes and remember its id in one transaction."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tianfu.core.bus import Event
from tianfu.core.bus.models import ProcessedEvent


def claim(session: Session, consumer: str, event: Event) -> bool:
    """True the first time ``consumer`` sees ``event`` (the caller then applies it and commits);
    False for a redelivery of an event already applied, which the caller should just acknowledge."""
    if session.get(ProcessedEvent, (consumer, event.id)) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(ProcessedEvent(consumer=consumer, event_id=event.id))
    except IntegrityError:  # a concurrent delivery of the same event won the race
        return False
    return True
