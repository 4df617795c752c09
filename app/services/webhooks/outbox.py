"""The outbox: messages stored in the same commit as the fact they announce.

Stub of the interface (docs: /work/briefs/contract14.md); the webhooks work replaces it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def targets(event_type: str) -> list[Any]:
    """The current org's enabled endpoints subscribed to `event_type` (outside a transaction)."""
    return []


def messages(
    targets: list[Any], event_type: str, event_id: str, data: dict, at: datetime
) -> list[Any]:
    """Unsaved messages, one per target, for the caller to put in its transaction."""
    return []


def wake() -> None:
    """Nudge this process's delivery loop."""
