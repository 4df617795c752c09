"""The byte filter in front of ingestion's fold check: it may let a commit answer through
for nothing, but never hide a sum accumulator 2**62 or more from zero. Pure: no Datastore."""

from __future__ import annotations

import pytest
from google.cloud.datastore_v1.types import datastore as ds
from hypothesis import given, settings
from hypothesis import strategies as st

from app.services import ingest
from app.storage import rollups, rpc
from tests.support.flavour import firestore_only  # noqa: F401

pytestmark = pytest.mark.usefixtures("firestore_only")

FOLD = rollups.FOLD_AT
EDGES = [
    FOLD,
    FOLD + 1,
    FOLD - 1,
    -FOLD,
    -FOLD - 1,
    -FOLD + 1,
    rollups.INT64_MAX,
    rollups.INT64_MIN,
    0,
    1,
    -1,
    (1 << 56) - 1,
    1 << 56,
    -(1 << 56),
    1_765_000_000_000_000,
]
VALUES = st.one_of(
    st.sampled_from(EDGES),
    st.integers(rollups.INT64_MIN, rollups.INT64_MAX),
    st.integers(-(1 << 57), 1 << 57),
)


def _answer(results: list[list[int]], events: int):
    """A CommitResponse as the emulator answers: events first (no transform results), then
    one result per rollup, each with a version and an update time."""
    response = ds.CommitResponse.pb()()
    response.index_updates = 3 * events
    response.commit_time.seconds, response.commit_time.nanos = 1_765_000_000, 123_456_789
    for values in [[]] * events + results:  # type: ignore[var-annotated]
        result = response.mutation_results.add()
        result.version = 1_765_000_000_123_456
        result.update_time.seconds, result.update_time.nanos = 1_765_000_000, 999_999_999
        for value in values:
            result.transform_results.add().integer_value = value
    return response


def _large(value: int) -> bool:
    return value >= FOLD or value < -FOLD


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(VALUES, max_size=6), max_size=20), st.integers(0, 100))
def test_the_filter_never_hides_a_large_result(results, events):
    if any(_large(value) for values in results for value in values):
        assert ingest._may_need_folding(_answer(results, events))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(-(1 << 56) + 1, (1 << 56) - 1), max_size=6), max_size=20),
    st.integers(0, 100),
)
def test_an_ordinary_answer_is_not_read_value_by_value(results, events):
    """Counts, sums, minimums, maximums and microsecond timestamps well inside 2**56."""
    assert not ingest._may_need_folding(_answer(results, events))


def test_only_sum_accumulators_are_folded():
    """A maximum at INT64_MAX is an event's value, not a clamped sum: no fold for it."""
    request = rpc.new_commit()
    cases = {
        "sum": (("C7", 3), ("S7", FOLD)),
        "refunds": (("C7", 3), ("M7", -FOLD - 1)),
        "max": (("C7", 3), ("X7", rollups.INT64_MAX)),
        "small": (("C7", 3), ("S7", 9)),
        "min": (("C7", 1), ("N7", rollups.INT64_MIN)),
    }
    for name, transforms in cases.items():
        mutation = request.mutations.add()
        mutation.upsert.key.path.add(kind="meter-rollup", name=name)
        for prop, _ in transforms:
            mutation.property_transforms.add(property=prop).increment.integer_value = 1
    response = _answer([[value for _, value in t] for t in cases.values()], 0)
    folded = [key.path[0].name for key in ingest._keys_to_fold(request, response)]
    assert folded == ["sum", "refunds"]
