"""Recording usage events exactly once.

A batch is checked whole before anything is written: every event must name an
active meter of the org, carry only dimensions the meter declares, and have a
timestamp inside the allowed window. One bad event rejects the batch.

Exactly once comes from the keys, not from a query. An event with an
idempotency key gets a key id derived from (meter id, idempotency key), so every
retry and every racing request addresses the same entity; `app.services.ingest`
then stores the batch and its rollups in one commit that cannot store any key
twice.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from google.cloud import ndb

from app.core.bounds import MAX_ID
from app.models import Meter, utcnow
from app.models import ids
from app.schemas import failure
from app.services import ingest
from app.services import meters as meter_service


def idempotent_id(meter_id: str, idempotency: str) -> int:
    """The key id every copy of one (meter, idempotency key) event shares."""
    digest = hashlib.sha256(f"{meter_id}\x00{idempotency}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & MAX_ID or 1


# -- validation ------------------------------------------------------------------

def _resolve_meters(events: list[dict]) -> tuple[dict, dict]:
    """Meters named in the batch, by id and by event name (one lookup each kind)."""
    wanted_ids = {e["meterId"] for e in events if e.get("meterId")}
    by_id: dict[str, Meter | None] = {}
    keys = {}
    for public_id in wanted_ids:
        key = ids.decode_key(public_id, kind=Meter.KIND,
                             namespace=ndb.get_context().get_namespace())
        if key is None:
            by_id[public_id] = None
        else:
            keys[public_id] = key
    for public_id, meter in zip(keys, ndb.get_multi(list(keys.values()))):
        by_id[public_id] = meter
    by_name = {name: meter_service.find_by_event_name(name)
               for name in {e["eventName"] for e in events if e.get("eventName")}}
    return by_id, by_name


def _event_problems(index: int, event: dict, meter: Meter | None, now: datetime,
                    config) -> list[dict]:
    at = f"events[{index}]"
    if meter is None:
        field = "meterId" if event.get("meterId") else "eventName"
        return [{"param": f"{at}.{field}", "message": f"{at}.{field}: no such meter"}]
    problems = []
    if meter.deleted:
        problems.append({"param": f"{at}.meterId",
                         "message": f"{at}.meterId: meter is archived and accepts no events"})
    if "value" not in event and meter.aggregation_type != "count":
        problems.append({"param": f"{at}.value", "message": f"{at}.value is required"})
    declared = set(meter.dimensions)
    for name in sorted(event.get("dimensions", {})):
        if name not in declared:
            problems.append({"param": f"{at}.dimensions.{name}",
                             "message": f"{at}.dimensions.{name}: the meter declares no "
                                        f"dimension {name!r}"})
    timestamp = event.get("timestamp")
    if timestamp is not None and timestamp > now + config.max_event_lead:
        problems.append({"param": f"{at}.timestamp",
                         "message": f"{at}.timestamp is more than "
                                    f"{_span(config.max_event_lead)} in the future"})
    if timestamp is not None and timestamp < now - config.max_event_age:
        problems.append({"param": f"{at}.timestamp",
                         "message": f"{at}.timestamp is more than "
                                    f"{_span(config.max_event_age)} in the past"})
    return problems


def _span(delta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    if seconds % 60 == 0:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


def _check_batch(events: list[dict], now: datetime, config) -> list[Meter]:
    by_id, by_name = _resolve_meters(events)
    meters, problems = [], []
    for index, event in enumerate(events):
        meter = by_id.get(event["meterId"]) if event.get("meterId") else by_name.get(
            event["eventName"])
        meters.append(meter)
        problems += _event_problems(index, event, meter, now, config)
    if problems:
        raise failure(problems)
    return meters


# -- writing -----------------------------------------------------------------------

def _drafts(events: list[dict], meters: list[Meter], now: datetime) -> list[ingest.Draft]:
    drafts, meter_key_ids = [], {}
    for event, meter in zip(events, meters):
        if meter.id_ not in meter_key_ids:
            meter_key_ids[meter.id_] = meter.key.id()
        key_id = (idempotent_id(meter.id_, event["idempotency"])
                  if event.get("idempotency") else None)
        drafts.append(ingest.Draft(
            meter=meter, user_id=event["userId"], value=event.get("value", 1),
            timestamp=event.get("timestamp") or now,
            timestamp_given=event.get("timestamp") is not None,
            idempotency=event.get("idempotency", ""),
            dimensions=dict(event.get("dimensions", {})),
            metadata=dict(event.get("metadata", {})), key_id=key_id,
            meter_key_id=meter_key_ids[meter.id_]))
    return drafts


def record_events(events: list[dict], config) -> list[ingest.Outcome]:
    """Validate a whole batch, then store it exactly once; one outcome per event."""
    now = utcnow()
    meters = _check_batch(events, now, config)
    code = ids.namespace_code(ndb.get_context().get_namespace())
    return ingest.store(_drafts(events, meters, now), now, code)
