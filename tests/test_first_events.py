"""The record of when each meter's first event was written (`app.storage.first_events`),
which lets the alert evaluator skip reading a new meter's rollups: its states, its
writers racing, and the paths that write it (a meter's creation, a batch, a backfill)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from app.core.slots import EPOCH
from app.models import Meter
from app.services import ingest
from app.storage import first_events, rpc


def _key_id(ndb_client, org, meter) -> int:
    with ndb_client.context(namespace=org["namespace"]):
        return Meter.get_by_public_id(meter["id"]).key.id()


def _first_written(ndb_client, org, meter_key_id):
    with ndb_client.context(namespace=org["namespace"]):
        return first_events.first_written(meter_key_id)


def test_a_new_meter_has_no_event_until_its_first_batch_which_sets_it_once(api, ndb_client, org):
    meter = api.create_meter()
    meter_key_id = _key_id(ndb_client, org, meter)
    assert _first_written(ndb_client, org, meter_key_id) is None
    before = datetime.now(UTC)
    api.record({"meterId": meter["id"], "userId": "u", "value": 1})
    first = _first_written(ndb_client, org, meter_key_id)
    assert isinstance(first, datetime) and before <= first <= datetime.now(UTC)
    api.record({"meterId": meter["id"], "userId": "u", "value": 1})
    with ndb_client.context(namespace=org["namespace"]):
        first_events._noted.clear()  # as a new process would: it looks, and keeps it
        first_events.note_written({meter_key_id}, datetime.now(UTC) + timedelta(hours=1))
        assert first_events.first_written(meter_key_id) == first


def test_of_writers_racing_on_a_new_meter_the_first_to_commit_sets_it(api, ndb_client, org):
    """Each that found it unset writes its own time, taken before its lookup: whichever
    lands last, it is one of theirs, earlier than any of their commits."""
    meter = api.create_meter()
    meter_key_id = _key_id(ndb_client, org, meter)
    start = datetime.now(UTC)
    moments = [start + timedelta(seconds=n) for n in range(6)]
    barrier = threading.Barrier(len(moments))

    def writer(moment):
        with ndb_client.context(namespace=org["namespace"]):
            barrier.wait()
            first_events.note_written({meter_key_id}, moment)

    first_events._noted.clear()
    threads = [threading.Thread(target=writer, args=(m,)) for m in moments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _first_written(ndb_client, org, meter_key_id) in moments


def test_a_backfill_sets_it_to_the_epoch_for_good(api, app, ndb_client, org):
    meter = api.create_meter()
    meter_key_id = _key_id(ndb_client, org, meter)
    api.record({"meterId": meter["id"], "userId": "u", "value": 1})
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        found = Meter.get_by_public_id(meter["id"])
        old = datetime(2020, 1, 5, tzinfo=UTC)
        draft = ingest.Draft(found, "u", 2, old, True, "backfilled-1", {}, {})
        ingest.store([draft], datetime.now(UTC), 1, 1, alert_feeds=False)
        assert first_events.first_written(meter_key_id) == EPOCH
        first_events._noted.clear()
        first_events.note_written({meter_key_id}, datetime.now(UTC))
        assert first_events.first_written(meter_key_id) == EPOCH


def test_a_backfills_mark_is_written_once_per_meter_and_process(api, ndb_client, org, monkeypatch):
    """An import's many batches of one meter do not rewrite the same entity each time."""
    meter = api.create_meter()
    meter_key_id = _key_id(ndb_client, org, meter)
    commits: list[int] = []
    real = rpc.commit

    def counting(mutations, transaction=None):
        commits.append(len(mutations))
        return real(mutations, transaction)

    monkeypatch.setattr(rpc, "commit", counting)
    with ndb_client.context(namespace=org["namespace"]):
        for _ in range(3):
            first_events.note_unfed({meter_key_id})
        assert first_events.first_written(meter_key_id) == EPOCH
    assert commits == [1]


def test_a_meter_without_the_record_is_unknown_and_batches_leave_it_so(api, ndb_client, org):
    meter = api.create_meter()
    meter_key_id = _key_id(ndb_client, org, meter)
    with ndb_client.context(namespace=org["namespace"]):  # as if never written
        rpc.commit([rpc.Mutation(delete=first_events._key(meter_key_id))])
        first_events._noted.clear()
    api.record({"meterId": meter["id"], "userId": "u", "value": 1})
    assert isinstance(_first_written(ndb_client, org, meter_key_id), first_events.Unknown)
