"""What is stored is exactly the original's entity shape, and Go-written entities read back.

These tests look at the raw entities in the emulator through the plain Datastore
client (not NDB), so they check the stored protobufs: property names, value
types and indexed flags, as ORIGINAL.md's tables give them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import datastore
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.cells import series_of
from app.models import ids
from app.storage import rollups

MIXIN = {
    "Id_": (str, True),
    "CreatedAt": (datetime, True),
    "UpdatedAt": (datetime, True),
    "Deleted": (bool, True),
}
METER = {
    **MIXIN,
    "Name": (str, True),
    "EventName": (str, True),
    "AggregationType": (str, True),
    "Currency": (str, True),
    "Dimensions_": (str, False),
    "Metadata_": (str, False),
}
METER_EVENT = {
    **MIXIN,
    "MeterId": (str, True),
    "UserId": (str, True),
    "Value": (int, True),
    "Timestamp": (datetime, True),
    "Idempotency": (str, True),
    "Dimensions_": (str, False),
    "Metadata_": (str, False),
}


@pytest.fixture
def raw(config, org):
    """A plain Datastore client in the org's namespace."""
    # The emulator address comes from DATASTORE_EMULATOR_HOST, which the app set.
    return datastore.Client(project=config.project, namespace=org["namespace"])


def _only(raw, kind):
    entities = list(raw.query(kind=kind).fetch())
    assert len(entities) == 1, entities
    return entities[0]


def _assert_shape(entity, table):
    assert set(entity) == set(table)
    for name, (value_type, indexed) in table.items():
        assert isinstance(entity[name], value_type), (name, entity[name])
        assert (name not in entity.exclude_from_indexes) == indexed, name


def test_meter_is_stored_with_the_original_properties(api, raw):
    meter = api.create_meter(dimensions=["model", "region"], metadata={"team": "ml"})
    entity = _only(raw, "meter")
    _assert_shape(entity, METER)
    assert entity.key.flat_path[:2] == ("synckey", 1)
    assert entity["Dimensions_"] == '["model","region"]'
    assert entity["Metadata_"] == '{"team":"ml"}'
    assert entity["Id_"] == meter["id"]
    assert entity["Deleted"] is False


def test_meter_event_is_stored_with_the_original_properties(api, raw):
    meter = api.create_meter(dimensions=["model"])
    api.record(
        {
            "meterId": meter["id"],
            "userId": "u1",
            "value": 3,
            "idempotency": "k1",
            "dimensions": {"model": "gpt-4"},
            "timestamp": "2026-11-20T10:00:00.123456Z",
        }
    )
    entity = _only(raw, "meter-event")
    _assert_shape(entity, METER_EVENT)
    assert entity.key.flat_path[:2] == ("synckey", 1)
    assert entity["Dimensions_"] == '{"model":"gpt-4"}'
    assert entity["Metadata_"] == "null"
    assert entity["Timestamp"] == datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)
    assert entity["MeterId"] == meter["id"]


def test_empty_shadow_fields_are_stored_as_json_null_like_go(api, raw):
    api.create_meter()
    entity = _only(raw, "meter")
    assert entity["Dimensions_"] == "null"
    assert entity["Metadata_"] == "null"


def test_event_without_idempotency_key_stores_an_empty_string(api, raw):
    meter = api.create_meter()
    api.record({"meterId": meter["id"], "userId": "u1", "value": 1})
    assert _only(raw, "meter-event")["Idempotency"] == ""


def test_public_id_decodes_to_the_stored_key(api, raw, org, ndb_context):
    meter = api.create_meter()
    entity = _only(raw, "meter")
    key = ids.decode_key(meter["id"], kind="meter", namespace=org["namespace"])
    assert key.flat() == entity.key.flat_path
    assert ids.decode_key(meter["id"], kind="meter-event", namespace=org["namespace"]) is None


@pytest.mark.parametrize("shadow", ["", "null", "[]"])
def test_meters_written_by_the_go_side_are_read(api, raw, org, shadow, ndb_context):
    """Go writes `null` for empty lists; older rows may hold "" or []."""
    key = raw.key("synckey", 1, "meter", 4242)
    entity = datastore.Entity(key, exclude_from_indexes=("Dimensions_", "Metadata_"))
    now = datetime.now(UTC)
    public_id = ids.encode_key(
        ids.decode_key(
            ids.encode_numbers(202, 4242, 59, 1, ids.namespace_code(org["namespace"])),
            kind="meter",
            namespace=org["namespace"],
        )
    )
    entity.update(
        {
            "Id_": public_id,
            "CreatedAt": now,
            "UpdatedAt": now,
            "Deleted": False,
            "Name": "Go meter",
            "EventName": "go_calls",
            "AggregationType": "sum",
            "Currency": "usd",
            "Dimensions_": shadow,
            "Metadata_": "{}" if shadow == "[]" else shadow,
        }
    )
    raw.put(entity)
    got = api.get(f"/v1/billing/meters/{public_id}")
    assert got.status_code == 200, got.text
    assert got.json()["dimensions"] == [] and got.json()["metadata"] == {}
    listed = api.get("/v1/billing/meters").json()
    assert [m["eventName"] for m in listed["meters"]] == ["go_calls"]


def test_events_written_by_the_go_side_are_counted_after_a_rebuild(api, raw, org, ndb_context):
    meter = api.create_meter(aggregationType="sum", dimensions=["model"])
    now = datetime.now(UTC)
    for number, (dims, value) in enumerate([("null", 5), ("", 6), ('{"model":"x"}', 7)], 1):
        entity = datastore.Entity(
            raw.key("synckey", 1, "meter-event", 9000 + number),
            exclude_from_indexes=("Dimensions_", "Metadata_"),
        )
        entity.update(
            {
                "Id_": f"go-{number}",
                "CreatedAt": now,
                "UpdatedAt": now,
                "Deleted": False,
                "MeterId": meter["id"],
                "UserId": "u1",
                "Value": value,
                "Timestamp": now - timedelta(minutes=number),
                "Idempotency": "",
                "Dimensions_": dims,
                "Metadata_": "null",
            }
        )
        raw.put(entity)
    # The Go side writes no rollups: `metering rollups rebuild` brings its events in.
    from app.services import meters as meter_service
    from app.services import rebuild

    with ndb_context.new(namespace=org["namespace"]).use():
        assert rebuild.rebuild_meter(meter_service.get_meter(meter["id"])) >= 2  # two series
    summary = api.summary(meterId=meter["id"], userId="u1")
    assert (summary["value"], summary["eventCount"]) == (18, 3)


def test_unique_count_meters_add_one_unindexed_property(api, raw):
    api.create_meter(aggregationType="unique_count", uniqueBy="userId")
    entity = _only(raw, "meter")
    _assert_shape(entity, {**METER, "UniqueBy": (str, False)})
    assert entity["UniqueBy"] == "userId"


@given(
    user=st.text(min_size=1, max_size=30),
    dimensions=st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=5),
)
@settings(max_examples=400, deadline=None)
def test_a_series_is_described_exactly_as_json_dumps_would(user, dimensions):
    """`Series_` and the rollup key's hash: the hand-written encoding must not move by a
    byte from json.dumps's, or existing rollups would get other keys."""
    series = series_of(user, dimensions)
    expected = json.dumps(
        {"u": user, "d": dict(series.dimensions)}, separators=(",", ":"), sort_keys=True
    )
    assert rollups.series_json.__wrapped__(series) == expected
