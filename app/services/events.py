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
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from google.cloud import ndb

from app.config import Config
from app.core.bounds import MAX_ID
from app.models import Meter, ids, utcnow
from app.schemas import failure
from app.services import ingest
from app.services import meters as meter_service


def idempotent_id(meter_id: str, idempotency: str) -> int:
    """The key id every copy of one (meter, idempotency key) event shares."""
    digest = hashlib.sha256(f"{meter_id}\x00{idempotency}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_ID or 1


# -- validation ------------------------------------------------------------------


def resolve_meters(named: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Meter | None]:
    """The meters named `("id", meterId)` or `("name", eventName)`, keyed so, None for no
    such meter; archived meters included (callers decide). One batched lookup for the ids,
    one cached lookup per event name. Ids and event names stay apart: an event name
    spelled like another meter's id never resolves to that meter. Recording and
    cancellation both resolve their meters here."""
    wanted = set(named)
    found: dict[tuple[str, str], Meter | None] = {}
    keys = {}
    namespace = ndb.get_context().get_namespace()
    for kind, value in wanted:
        if kind == "name":
            found[kind, value] = meter_service.find_by_event_name(value)
            continue
        key = ids.decode_key(value, kind=Meter.KIND, namespace=namespace)
        if key is None:
            found[kind, value] = None
        else:
            keys[kind, value] = key
    for named_by, meter in zip(keys, ndb.get_multi(list(keys.values()))):
        found[named_by] = meter
    return found


def _named_meter(event: dict[str, Any]) -> tuple[str, str]:
    """How an event names its meter, as `resolve_meters` takes it."""
    return ("id", event["meterId"]) if event.get("meterId") else ("name", event["eventName"])


def _event_problems(
    index: int, event: dict[str, Any], meter: Meter | None, now: datetime, config: Config
) -> list[dict[str, Any]]:
    at = f"events[{index}]"
    if meter is None:
        field = "meterId" if event.get("meterId") else "eventName"
        return [{"param": f"{at}.{field}", "message": f"{at}.{field}: no such meter"}]
    problems = []
    if meter.deleted:
        problems.append(
            {
                "param": f"{at}.meterId",
                "message": f"{at}.meterId: meter is archived and accepts no events",
            }
        )
    if "value" not in event and meter.aggregation_type != "count":
        problems.append({"param": f"{at}.value", "message": f"{at}.value is required"})
    declared = set(meter.dimensions)
    for name in sorted(event.get("dimensions", {})):
        if name not in declared:
            problems.append(
                {
                    "param": f"{at}.dimensions.{name}",
                    "message": f"{at}.dimensions.{name}: the meter declares no dimension {name!r}",
                }
            )
    timestamp = event.get("timestamp")
    if timestamp is not None and timestamp > now + config.max_event_lead:
        problems.append(
            {
                "param": f"{at}.timestamp",
                "message": f"{at}.timestamp is more than "
                f"{_span(config.max_event_lead)} in the future",
            }
        )
    if timestamp is not None and timestamp < now - config.max_event_age:
        problems.append(
            {
                "param": f"{at}.timestamp",
                "message": f"{at}.timestamp is more than {_span(config.max_event_age)} in the past",
            }
        )
    return problems


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    if seconds % 60 == 0:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


def _check_batch(events: list[dict[str, Any]], now: datetime, config: Config) -> list[Meter]:
    named = [_named_meter(event) for event in events]
    found = resolve_meters(named)
    meters, problems = [], []
    for index, (event, named_by) in enumerate(zip(events, named)):
        meter = found[named_by]
        meters.append(meter)
        problems += _event_problems(index, event, meter, now, config)
    if problems:
        raise failure(problems)
    # mypy: no None left: a missing meter is a problem raised above
    return meters  # type: ignore[return-value]


# -- writing -----------------------------------------------------------------------


def _drafts(events: list[dict[str, Any]], meters: list[Meter], now: datetime) -> list[ingest.Draft]:
    drafts, meter_key_ids = [], {}
    for event, meter in zip(events, meters):
        if meter.id_ not in meter_key_ids:
            meter_key_ids[meter.id_] = meter.key.id()
        key_id = (
            idempotent_id(meter.id_, event["idempotency"]) if event.get("idempotency") else None
        )
        drafts.append(
            ingest.Draft(
                meter=meter,
                user_id=event["userId"],
                value=event.get("value", 1),
                timestamp=event.get("timestamp") or now,
                timestamp_given=event.get("timestamp") is not None,
                idempotency=event.get("idempotency", ""),
                dimensions=dict(event.get("dimensions", {})),
                metadata=dict(event.get("metadata", {})),
                key_id=key_id,
                meter_key_id=meter_key_ids[meter.id_],
            )
        )
    return drafts


def record_events(events: list[dict[str, Any]], config: Config) -> list[ingest.Outcome]:
    """Validate a whole batch, then store it exactly once; one outcome per event."""
    now = utcnow()
    meters = _check_batch(events, now, config)
    code = ids.namespace_code(ndb.get_context().get_namespace())
    return ingest.store(_drafts(events, meters, now), now, code, config.rollup_shards)
