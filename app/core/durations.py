"""Durations written the way people say them: `90d`, `12h`, `30m`, `45s`, `2w` (issue 16:
`metering keys create ORG --expires 90d`)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^([1-9][0-9]{0,8})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """`90d` -> 90 days; ValueError naming the accepted forms for anything else."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write a positive whole number and a unit, "
            "s, m, h, d or w (90d, 12h)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
