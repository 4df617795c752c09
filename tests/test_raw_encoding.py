"""The hand-built event protobuf is exactly what the NDB model stores."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.cloud import ndb
from google.cloud.ndb import model as ndb_model

from app.models import MeterEvent, ids, root_key
from app.models.webhook import WebhookEndpoint
from app.services.webhooks import dispatch, outbox
from app.storage import entities
from tests.support.encoding import event_entity


@pytest.fixture
def org_context(ndb_context, org):
    with ndb_context.new(namespace=org["namespace"]).use() as context:
        yield context


@pytest.mark.parametrize(
    "dimensions, metadata, idempotency",
    [
        ({}, {}, ""),
        ({"model": "gpt-4", "region": "eu"}, {"trace": {"id": [1, 2]}}, "req-1"),
        ({"ü": "☃"}, {"n": None}, "k" * 500),
    ],
)
def test_raw_event_protobuf_equals_ndb_model_protobuf(
    org_context, dimensions, metadata, idempotency
):
    now = datetime(2026, 11, 27, 12, 30, 15, 123456, tzinfo=UTC)
    stamp = datetime(2026, 11, 27, 12, 0, 0, 999999, tzinfo=UTC)
    key = ndb.Key(MeterEvent.KIND, 4611686018427387904, parent=root_key())
    model = MeterEvent(
        key=key,
        meter_id="meter-x",
        user_id="user-1",
        value=-(1 << 63),
        timestamp=stamp,
        idempotency=idempotency,
        dimensions=dimensions,
        metadata=metadata,
        created_at=now,
        updated_at=now,
    )
    model.id_ = ids.encode_key(key)
    expected = ndb_model._entity_to_protobuf(model)
    raw = event_entity(
        key_pb=entities.key(MeterEvent.KIND, key.id()),
        public_id=model.id_,
        meter_id="meter-x",
        user_id="user-1",
        value=-(1 << 63),
        timestamp=stamp,
        idempotency=idempotency,
        dimensions=dimensions,
        metadata=metadata,
        now=now,
    )
    assert type(expected).pb(expected) == raw


def test_raw_written_events_read_back_through_ndb(org_context):
    from app.storage import rpc

    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    key = ndb.Key(MeterEvent.KIND, 77, parent=root_key())
    raw = event_entity(
        key_pb=entities.key(MeterEvent.KIND, 77),
        public_id=ids.encode_key(key),
        meter_id="m",
        user_id="u",
        value=9,
        timestamp=now,
        idempotency="i",
        dimensions={"a": "b"},
        metadata={},
        now=now,
    )
    rpc.commit([rpc.Mutation(insert=raw)])
    event = key.get(use_cache=False)
    assert (
        event.meter_id,
        event.user_id,
        event.value,
        event.timestamp,
        event.idempotency,
        event.dimensions,
        event.metadata,
        event.deleted,
        event.created_at,
    ) == ("m", "u", 9, now, "i", {"a": "b"}, {}, False, now)


def test_events_built_in_place_from_one_template_equal_ndb_models(org_context):
    """The ingest path fills each event of a batch from one shared template inside its
    Mutation; every one must still equal its NDB model, nothing left from the last."""
    from app.storage import rpc

    now = datetime(2026, 11, 27, 12, 30, 15, 123456, tzinfo=UTC)
    template = entities.event_template(now)
    request = rpc.new_commit()
    cases = [
        (11, "u-1", 5, {"model": "a"}, {"trace": [1]}, "k-1"),
        (12, "u-2", -7, {}, {}, ""),
        (13, "ü", 1 << 40, {"region": "eu", "model": "b"}, {}, "k-3"),
    ]
    for key_id, user, value, dimensions, metadata, idempotency in cases:
        key = ndb.Key(MeterEvent.KIND, key_id, parent=root_key())
        stamp = datetime(2026, 11, 27, 12, key_id, tzinfo=UTC)
        entities.fill_event(
            request.mutations.add().insert,
            template,
            key_id=key_id,
            public_id=ids.encode_key(key),
            meter_id="meter-x",
            user_id=user,
            value=value,
            timestamp=stamp,
            idempotency=idempotency,
            dimensions=dimensions,
            metadata=metadata,
        )
        model = MeterEvent(
            key=key,
            meter_id="meter-x",
            user_id=user,
            value=value,
            timestamp=stamp,
            idempotency=idempotency,
            dimensions=dimensions,
            metadata=metadata,
            created_at=now,
            updated_at=now,
        )
        model.id_ = ids.encode_key(key)
        expected = ndb_model._entity_to_protobuf(model)
        assert type(expected).pb(expected) == request.mutations[-1].insert
    rpc.send_commit(request)
    stored = ndb.get_multi(
        [ndb.Key(MeterEvent.KIND, k, parent=root_key()) for k, *_ in cases], use_cache=False
    )
    assert [(e.user_id, e.value, e.dimensions) for e in stored] == [
        (user, value, dimensions) for _, user, value, dimensions, _, _ in cases
    ]


@pytest.mark.parametrize("user_id", ["user-1", None])
def test_a_chunks_raw_trigger_equals_the_ndb_model(org_context, user_id):
    """The alert evaluator writes its triggers by hand (`evaluate.Crossing.upsert`): the
    same entity `AlertTrigger.put()` stores, for a user's tally and for the org's."""
    from app.models import AlertTrigger
    from app.services.alerts.evaluate import Crossing

    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = datetime(2026, 12, 1, tzinfo=UTC)
    at = datetime(2026, 11, 27, 12, 30, 15, 123456, tzinfo=UTC)
    fields = dict(
        alert_id="alr_x",
        type="alert.triggered",
        meter_id="meter-x",
        user_id=user_id,
        threshold=1000,
        value=str(1 << 70),
        period_start=start,
        period_end=end,
        at=at,
        message_id="msg_abc",
        generation=2,
    )
    model = AlertTrigger(key=ndb.Key("alert-trigger", "atr_abc", parent=root_key()), **fields)
    expected = ndb_model._entity_to_protobuf(model)
    raw = Crossing(key_name="atr_abc", **fields).upsert().upsert
    assert type(expected).pb(expected) == raw


@pytest.mark.parametrize("whole", [None, datetime(2026, 11, 2, 3, 4, 5, 6, tzinfo=UTC)])
def test_a_chunks_raw_bucket_equals_the_ndb_model(org_context, whole):
    """Tally buckets are written by hand too (`tallies._bucket_upsert`)."""
    from app.models import AlertTallyBucket
    from app.services.alerts import tallies

    start = datetime(2026, 11, 1, tzinfo=UTC)
    blob = b'\n["u",5,null,1,{}]'
    model = AlertTallyBucket(
        key=ndb.Key(AlertTallyBucket, "b_x", parent=root_key()),
        meter_id="meter-x",
        period_start=start,
        subjects=blob,
        full=True,
        whole=whole,
        whole_at=whole,
    )
    expected = ndb_model._entity_to_protobuf(model)
    raw = tallies._bucket_upsert("b_x", "meter-x", start, blob, True, whole, whole).upsert
    assert type(expected).pb(expected) == raw


@pytest.mark.parametrize("state", ["built", "leased", "settled"])
def test_a_chunks_raw_message_equals_the_ndb_model(org_context, state):
    """(Session 15) The evaluator's messages are written raw (`outbox.upsert_of`): the
    same protobuf as NDB's, as built, leased for their first attempt, and with a null
    lease and due time and an attempt logged."""
    at = datetime(2026, 12, 7, 21, 30, 15, 123456, tzinfo=UTC)
    endpoint = WebhookEndpoint(key=ndb.Key(WebhookEndpoint, 5629499534213120, parent=root_key()))
    data = {"alertId": "a", "userId": "ü☃", "value": "12", "threshold": 10}
    [message] = outbox.messages([endpoint], "alert.triggered", "msg_x", data, at)
    outbox.forget_built()  # built only to be encoded: no commit will wake anyone for it
    if state == "leased":
        dispatch.lease_at_creation([message], [endpoint], at, dispatch.Settings())
    if state == "settled":
        message.log_attempt({"at": "t", "statusCode": 500, "error": "HTTP 500"})
        message.lease, message.next_attempt_at, message.status = None, None, "failed"
    assert outbox.upsert_of(message) == entities.upsert_of(message)
