"""Recording usage events exactly once.

A batch is checked whole before anything is written: every event must name an
active meter of the org, carry only dimensions the meter declares, and have a
timestamp inside the allowed window. One bad event rejects the batch.

Exactly once comes from the keys, not from a query. An event with an
idempotency key gets a key id derived from (meter id, idempotency key), so every
retry and every racing request addresses the same entity. The whole batch is
written in one transaction that first looks its keys up: a key that exists is a
`duplicate` (same payload) or a `conflict` (different payload) and is not
written again. Two racing transactions on one key cannot both commit; the loser
is retried by NDB, sees the winner's event and answers `duplicate` with its id.
Events without a key get a random 63-bit id, checked the same way.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from google.cloud import ndb

from app.errors import ValidationFailed
from app.models import Meter, MeterEvent, root_key, utcnow
from app.models import ids
from app.services import meters as meter_service

MAX_ID = (1 << 63) - 1
TRANSACTION_RETRIES = 10


@dataclass(frozen=True)
class Outcome:
    """What happened to one event of a batch."""

    id: str
    status: str  # created | duplicate | conflict


def idempotent_id(meter_id: str, idempotency: str) -> int:
    """The key id every copy of one (meter, idempotency key) event shares."""
    digest = hashlib.sha256(f"{meter_id}\x00{idempotency}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & MAX_ID or 1


def _random_id() -> int:
    return secrets.randbelow(MAX_ID) + 1


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
        raise ValidationFailed(problems[0]["message"], param=problems[0]["param"],
                               details=problems if len(problems) > 1 else None)
    return meters


# -- writing -----------------------------------------------------------------------

@dataclass
class _Draft:
    event: dict
    meter: Meter
    timestamp: datetime
    key_id: int | None  # fixed for idempotent events; random ones are drawn per try

    def entity(self, key_id: int) -> MeterEvent:
        return MeterEvent(
            key=ndb.Key(MeterEvent.KIND, key_id, parent=root_key()),
            meter_id=self.meter.id_,
            user_id=self.event["userId"],
            value=self.event.get("value", 1),
            timestamp=self.timestamp,
            idempotency=self.event.get("idempotency", ""),
            dimensions=dict(self.event.get("dimensions", {})),
            metadata=dict(self.event.get("metadata", {})),
        )

    def same_payload(self, stored: MeterEvent) -> bool:
        given = self.event.get("timestamp")
        return (stored.meter_id == self.meter.id_
                and stored.user_id == self.event["userId"]
                and stored.value == self.event.get("value", 1)
                and dict(stored.dimensions) == dict(self.event.get("dimensions", {}))
                and (given is None or stored.timestamp == given))


def _drafts(events: list[dict], meters: list[Meter], now: datetime) -> list[_Draft]:
    drafts = []
    for event, meter in zip(events, meters):
        key_id = (idempotent_id(meter.id_, event["idempotency"])
                  if event.get("idempotency") else None)
        drafts.append(_Draft(event, meter, event.get("timestamp") or now, key_id))
    return drafts


def _write(drafts: list[_Draft]) -> list[Outcome]:
    """One transaction: look every key up, store the new events, report the rest."""
    key_ids = [d.key_id or _random_id() for d in drafts]
    for _attempt in range(5):
        keys = [ndb.Key(MeterEvent.KIND, k, parent=root_key()) for k in key_ids]
        stored = ndb.get_multi(keys, use_cache=False)
        collided = [i for i, (d, s) in enumerate(zip(drafts, stored))
                    if s is not None and d.key_id is None]
        if not collided:
            break
        for i in collided:  # a random id that is taken: draw another
            key_ids[i] = _random_id()
    else:
        raise RuntimeError("could not draw free event ids")
    outcomes: list[Outcome | None] = [None] * len(drafts)
    fresh: dict[int, tuple[_Draft, MeterEvent]] = {}
    for i, (draft, found) in enumerate(zip(drafts, stored)):
        earlier = fresh.get(key_ids[i])
        if found is None and earlier is None:
            entity = draft.entity(key_ids[i])
            fresh[key_ids[i]] = (draft, entity)
            continue
        first = found if found is not None else earlier[1]
        status = "duplicate" if draft.same_payload(first) else "conflict"
        outcomes[i] = Outcome(ids.encode_key(first.key), status)
    ndb.put_multi([entity for _draft, entity in fresh.values()])
    for i in range(len(drafts)):
        if outcomes[i] is None:
            outcomes[i] = Outcome(fresh[key_ids[i]][1].id_, "created")
    return outcomes


def record_events(events: list[dict], config) -> list[Outcome]:
    """Validate a whole batch, then store it exactly once; one outcome per event."""
    now = utcnow()
    meters = _check_batch(events, now, config)
    drafts = _drafts(events, meters, now)
    return ndb.transaction(lambda: _write(drafts), retries=TRANSACTION_RETRIES)
