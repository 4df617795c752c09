"""One rule decides `duplicate` against `conflict`, whoever holds the key first.

A repeated idempotency key meets either the stored event (a retry of an earlier batch) or
an earlier copy in the same batch. `Draft.repeats` judges both, so a change to the rule
cannot make one retry a duplicate on one path and a conflict on the other. The paths
themselves are driven end to end in tests/test_meter_events.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from app.services.ingest import Draft
from app.storage.entities import StoredEvent

AT = datetime(2026, 11, 3, 10, 7, tzinfo=UTC)
METER = SimpleNamespace(id_="meter-1", aggregation_type="sum")


def draft(**changes) -> Draft:
    fields = dict(
        meter=METER,
        user_id="u1",
        value=5,
        timestamp=AT,
        timestamp_given=True,
        idempotency="req-1",
        dimensions={"model": "a"},
        metadata={},
        key_id=7,
        meter_key_id=1,
    )
    fields.update(changes)
    return Draft(**fields)  # type: ignore[arg-type]


def stored(earlier: Draft) -> StoredEvent:
    """The event `earlier` would have stored, as `entities.decode_event` gives it back."""
    return StoredEvent(
        key_id=7,
        public_id="x",
        meter_id=earlier.meter.id_,
        user_id=earlier.user_id,
        value=earlier.value,
        timestamp=earlier.timestamp,
        created_at=AT,
        deleted=False,
        dimensions=dict(earlier.dimensions),
        entity=None,
    )


CASES = [
    ({}, True),
    ({"metadata": {"note": "metadata is not the payload"}}, True),
    ({"timestamp": AT + timedelta(seconds=1), "timestamp_given": False}, True),
    ({"timestamp": AT + timedelta(seconds=1)}, False),
    ({"value": 6}, False),
    ({"user_id": "u2"}, False),
    ({"dimensions": {"model": "b"}}, False),
    ({"dimensions": {}}, False),
    ({"meter": SimpleNamespace(id_="meter-2", aggregation_type="sum")}, False),
]


@pytest.mark.parametrize("changes, duplicate", CASES)
def test_a_repeat_is_judged_alike_against_the_batch_and_the_store(changes, duplicate):
    earlier, repeat = draft(), draft(**changes)
    assert repeat.repeats(earlier) is duplicate
    assert repeat.repeats(stored(earlier)) is duplicate
