"""The aggregation types of a meter: the one list the model, schemas, rollups and the
window engine share."""

from __future__ import annotations

from enum import StrEnum


class Aggregation(StrEnum):
    """How a meter turns events into a number. A StrEnum: members equal (and hash as)
    their stored names, so `"sum" == Aggregation.SUM` and dicts keyed by members answer
    the plain strings that meters store."""

    SUM = "sum"
    COUNT = "count"
    LAST = "last"
    MIN = "min"
    MAX = "max"
    AVG = "avg"
    UNIQUE_COUNT = "unique_count"


#: The stored names, in the order the API documents them.
AGGREGATION_TYPES = tuple(member.value for member in Aggregation)
