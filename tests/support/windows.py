"""Window bounds as the engine cuts them, in the request's zone: for tests that check
the cut itself (clock changes, Lord Howe's half hours) without cells."""

from __future__ import annotations

from datetime import datetime

from app.core import windows


def window_bounds(request: windows.SummaryRequest) -> list[tuple[datetime, datetime]]:
    """[start, end) of every window of the period, clipped to it, in the request's zone.

    Without a window size the whole period is the one window (what groups span).
    """
    zone = request.zone
    return [(s.astimezone(zone), e.astimezone(zone)) for s, e in windows._utc_bounds(request)]
