"""Time as the rollups cut it: 15-minute UTC slots, UTC days, microseconds since the epoch.

Fifteen minutes because every UTC offset in use is a multiple of it, so every local hour,
day and month is a whole number of slots.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SLOT = timedelta(minutes=15)
SLOTS_PER_DAY = 96  # quarter hours
_SLOT_SECONDS = 900


def micros(moment: datetime) -> int:
    """Microseconds since the epoch (exact: no float on the way)."""
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def day_and_slot(moment: datetime) -> tuple[int, int]:
    """(UTC day number since the epoch, quarter-hour slot of that day)."""
    delta = moment - EPOCH
    return delta.days, delta.seconds // _SLOT_SECONDS


def slot_start(day: int, slot: int) -> datetime:
    return EPOCH + timedelta(days=day, minutes=15 * slot)


def slot_of(ts: datetime) -> datetime:
    """Start (UTC) of the 15-minute slot holding an aware instant: where its cell lives."""
    if ts.utcoffset() is None:
        raise ValueError("slot_of needs an aware datetime")
    return EPOCH + (ts - EPOCH) // SLOT * SLOT


def ceil_slot(ts: datetime) -> datetime:
    """The first slot boundary at or after an aware instant."""
    start = slot_of(ts)
    return start if start == ts else start + SLOT
