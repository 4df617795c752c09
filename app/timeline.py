"""A timeline of the background delivery, for finding where a late webhook spent its time.

Off unless `METERING_TIMELINE=1` (`Config.timeline`): then each alert evaluation chunk,
each lease a dispatcher takes, each hand-off to a sender and each send attempt writes one
log line (logger `metering.timeline`, level DEBUG) with the wall-clock time `at` and the
webhook message ids involved. `benchmarks/alerts_exact.py --timeline` reads those lines
beside its receiver's and prints, for the latest crossings, when each step happened.

Off, a note costs one `isEnabledFor` check.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("metering.timeline")


def enable(on: bool) -> None:
    """Turn the timeline on or off for this process."""
    log.setLevel(logging.DEBUG if on else logging.NOTSET)


def enabled() -> bool:
    return log.isEnabledFor(logging.DEBUG)


def note(step: str, **fields: object) -> None:
    """One line of the timeline: `step` at now, with its fields (ids, counts, seconds)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    log.debug(
        step,
        extra={
            "timeline": {
                "step": step,
                "at": round(time.time(), 4),
                "pid": os.getpid(),
                "thread": threading.current_thread().name,
                **fields,
            }
        },
    )
