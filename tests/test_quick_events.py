"""The fast batch loader agrees with the schema: it returns exactly what the schema
loads, or None (the caller then loads with the schema); it never accepts a batch the
schema refuses. Generated events mix valid fields with near-misses at every limit."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app.schemas.events import batch_schema
from app.schemas.quick_events import load_batch
from tests.support.flavour import firestore_only  # noqa: F401

pytestmark = pytest.mark.usefixtures("firestore_only")

MAX_EVENTS = 5


def _text(low: int, high: int):
    return st.one_of(
        st.text(min_size=low, max_size=high),
        st.text(alphabet="aé€😀", min_size=max(0, high - 2), max_size=high + 2),  # multi-byte
        st.sampled_from(["", "x" * (high + 1), "a\n", " "]),
    )


def _anything():
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )


_valid_name = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,20}", fullmatch=True)
_timestamps = st.one_of(
    st.sampled_from(
        [
            "2026-11-28T09:00:00Z",
            "2026-11-28t09:00:00.123456789+05:30",
            "2026-11-28 09:00:00-00:30",
            "2026-02-30T00:00:00Z",
            "2026-11-28",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
        ]
    ),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)
_values = st.one_of(
    st.integers(-(1 << 64), 1 << 64),
    st.sampled_from([(1 << 63) - 1, -(1 << 63), 1 << 63, -(1 << 63) - 1, True, 1.0, "5"]),
)
_dimensions = st.dictionaries(_text(0, 64), st.one_of(_text(0, 200), _anything()), max_size=17)
_metadata = st.one_of(
    st.dictionaries(_text(0, 100), _anything(), max_size=51),
    st.just({"big": "x" * 8200}),
    st.just({"": 1}),
)
_FIELDS = {
    "meterId": _text(1, 200),
    "eventName": st.one_of(_valid_name, _text(1, 100)),
    "userId": _text(1, 500),
    "value": _values,
    "timestamp": _timestamps,
    "idempotency": _text(0, 500),
    "dimensions": _dimensions,
    "metadata": _metadata,
    "unknown": _anything(),
}


@st.composite
def events(draw):
    names = draw(st.sets(st.sampled_from(sorted(_FIELDS)), max_size=len(_FIELDS)))
    event = {
        name: draw(
            st.one_of(_FIELDS[name], _anything()) if draw(st.integers(0, 9)) == 0 else _FIELDS[name]
        )
        for name in names
    }
    if draw(st.booleans()):  # mostly well-formed: one meter reference and a user
        event.pop("meterId" if draw(st.booleans()) else "eventName", None)
        event.setdefault("eventName", draw(_valid_name))
        event.setdefault("userId", draw(st.text(min_size=1, max_size=20)))
        event.pop("unknown", None)
    return event


@st.composite
def plausible_events(draw):
    """Events a client would send, with values near every limit: most of them load."""
    event = {
        "eventName" if draw(st.booleans()) else "meterId": draw(_valid_name),
        "userId": draw(st.one_of(st.text(min_size=1, max_size=30), _text(1, 500))),
    }
    for name in ("value", "timestamp", "idempotency", "dimensions", "metadata"):
        if draw(st.booleans()):
            event[name] = draw(_FIELDS[name])
    return event


def _schema_load(body):
    try:
        return batch_schema(MAX_EVENTS).load(body)
    except ValidationError:
        return "refused"


def _check(body) -> bool:
    quick = load_batch(body, MAX_EVENTS)
    if quick is not None:
        assert quick == _schema_load(body)
    return quick is not None


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(events(), min_size=0, max_size=MAX_EVENTS + 1))
def test_quick_loader_returns_what_the_schema_loads_or_nothing(items):
    _check({"events": items})


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(plausible_events(), min_size=1, max_size=MAX_EVENTS))
def test_quick_loader_loads_plausible_batches_exactly_as_the_schema(items):
    _check({"events": items})


def test_the_generated_batches_exercise_both_outcomes():
    """Guard against a generator drift that would leave one side of the check untested."""
    from hypothesis import find

    find(
        st.lists(plausible_events(), min_size=1, max_size=MAX_EVENTS),
        lambda items: load_batch({"events": items}, MAX_EVENTS) is not None,
    )
    find(
        st.lists(plausible_events(), min_size=1, max_size=MAX_EVENTS),
        lambda items: load_batch({"events": items}, MAX_EVENTS) is None,
    )


def test_quick_loader_takes_the_usual_batch():
    body = {
        "events": [
            {
                "eventName": "input_tokens",
                "userId": "user-1",
                "value": 12,
                "timestamp": "2026-11-28T09:00:00.5+01:00",
                "idempotency": "k-1",
                "dimensions": {"model": "small"},
                "metadata": {"trace": [1, {"a": None}]},
            },
            {"meterId": "m" * 200, "userId": "u" * 500, "idempotency": ""},
            {"eventName": "api_calls", "userId": "é" * 500},  # 1000 bytes: fits the index
        ]
    }
    assert _check(body)


@pytest.mark.parametrize(
    "body",
    [
        {"events": []},
        {"events": [{"eventName": "x", "userId": "u"}] * (MAX_EVENTS + 1)},
        {"events": [{"eventName": "x", "userId": "u"}], "extra": 1},
        {"events": [{"eventName": "x", "meterId": "m", "userId": "u"}]},
        {"events": [{"eventName": "x", "meterId": None, "userId": "u"}]},
        {"events": [{"eventName": "x\n", "userId": "u"}]},
        {"events": [{"eventName": "x", "userId": "😀" * 376}]},  # 1504 bytes
        {"events": [{"eventName": "x", "userId": "u", "value": True}]},
        {"events": [{"eventName": "x", "userId": "u", "value": 1 << 63}]},
        {"events": [{"eventName": "x", "userId": "u", "timestamp": "2026-11-28"}]},
        {"events": [{"eventName": "x", "userId": "u", "dimensions": {"": "a"}}]},
        {"events": [{"eventName": "x", "userId": "u", "metadata": {"k": "x" * 8200}}]},
        {"events": [{"eventName": "x", "userId": "u", "idempotency": None}]},
        {"events": [{"eventName": "x", "userId": ""}]},
        {"events": "nope"},
    ],
)
def test_quick_loader_leaves_every_refusal_to_the_schema(body):
    assert load_batch(body, MAX_EVENTS) is None
    assert _schema_load(body) == "refused"
