"""Calendar periods of alert rules, and which tally a contribution counts in."""

from __future__ import annotations

import base64
import functools
import hashlib
from datetime import UTC, datetime, timedelta
from datetime import date as date_type
from zoneinfo import ZoneInfo

from app.core.slots import slot_start


@functools.lru_cache(maxsize=4096)
def period_of(day: int, slot: int, period: str, zone: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the `period` ("day" or "month") in `zone` holding the UTC
    slot (`day`, `slot`). Every zone's offset is a multiple of 15 minutes, so a slot lies
    inside one local day."""
    return period_at(slot_start(day, slot), period, zone)


def period_at(moment: datetime, period: str, zone: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the calendar `period` in `zone` holding `moment`."""
    tz = ZoneInfo(zone)
    local = moment.astimezone(tz)
    if period == "day":
        first = local.date()
        following = first + timedelta(days=1)
    else:
        first = local.date().replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
    return _midnight(first, tz), _midnight(following, tz)


def _midnight(date: date_type, tz: ZoneInfo) -> datetime:
    return datetime(date.year, date.month, date.day, tzinfo=tz).astimezone(UTC)


def digest(*parts: object) -> bytes:
    """A stable hash of `parts` (each written with repr, separated by NUL)."""
    return hashlib.sha256("\x00".join(map(repr, parts)).encode()).digest()


_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
#: every 10 bits as their two base32 characters
_PAIRS = [first + second for first in _ALPHABET for second in _ALPHABET]


def base32(raw: bytes, length: int = 26) -> str:
    """`length` characters of base32 (lower case) of `raw`: what
    `base64.b32encode(raw).decode().lower()[:length]` gives (tests/test_alert_names.py),
    ten bits at a time from one integer. The standard library's encoder is written in
    Python, five bytes a turn: naming tallies and triggers with it was a tenth of an
    alert chunk's CPU (py-spy, session 11)."""
    groups = (length + 7) // 8  # 5-byte groups, 8 characters each
    if len(raw) < 5 * groups:  # padded: the library's answer
        return base64.b32encode(raw).decode("ascii").lower()[:length]
    number = int.from_bytes(raw[: 5 * groups], "big")
    pairs = _PAIRS
    text = "".join([pairs[(number >> shift) & 1023] for shift in _shifts(groups)])
    return text[:length]


@functools.lru_cache(maxsize=8)
def _shifts(groups: int) -> range:
    return range(40 * groups - 10, -1, -10)
