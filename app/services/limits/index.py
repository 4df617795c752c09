"""Which meters have limits, as ingestion needs to know: the org's `limit-meters` entity.

Every limit write rewrites it in its transaction; ingestion reads it once per
METERING_LIMIT_CACHE_SECONDS per process (a change made here clears this process's copy
at once). A batch of a meter without limits reads and writes what it did before.

A process may commit a batch without counting it for up to the cache period plus a
request's deadline after a meter's first limit; `counting_since` (stored in each limit)
is past that, and a check trusts the counters only from then on (`check`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from flask import current_app, has_app_context
from google.cloud import ndb

from app.models import LimitMeters, UsageLimit, root_key
from app.storage import entities, rpc
from app.storage.counters import Spec

INDEX_KIND, INDEX_NAME = "limit-meters", "active"
DEFAULT_CACHE_SECONDS = 1.0

#: namespace -> (expires at, monotonic; meter key id -> Spec)
_cache: dict[str, tuple[float, dict[int, Spec]]] = {}
_lock = threading.Lock()


def cache_seconds() -> float:
    if has_app_context():
        return float(current_app.config["METERING"].limit_cache_seconds)
    return DEFAULT_CACHE_SECONDS


def trust_delay() -> timedelta:
    """How long after a meter's first limit every process surely counts its batches:
    its cache period, plus a request's deadline (a batch that read a stale cache may
    commit until then), plus a second."""
    if not has_app_context():
        return timedelta(seconds=DEFAULT_CACHE_SECONDS + 60.0 + 1.0)
    config = current_app.config["METERING"]
    if config.limit_counting_delay is not None:
        return timedelta(seconds=config.limit_counting_delay)
    deadline = float(config.request_deadline_seconds) or 60.0
    return timedelta(seconds=cache_seconds() + deadline + 1.0)


def forget() -> None:
    """Drop this process's copy: a limit was written here."""
    with _lock:
        _cache.clear()


def update(meter_key_id: int, limit: UsageLimit | None) -> None:
    """Set (or, with None, remove) one meter's entry of the org's `limit-meters` entity,
    from `limit`; inside the limit write's transaction (a read and a put of one entity,
    however many limits the org has)."""
    key = ndb.Key(INDEX_KIND, INDEX_NAME, parent=root_key())
    stored = key.get()
    specs = json.loads(stored.specs or "{}") if stored is not None else {}
    if limit is None:
        specs.pop(str(meter_key_id), None)
    else:
        specs[str(meter_key_id)] = [
            limit.period,
            limit.time_zone,
            int(limit.counting_since.timestamp() * 1_000_000),
            limit.aggregation,
        ]
    LimitMeters(key=key, specs=json.dumps(specs, sort_keys=True)).put()


def _load(namespace: str) -> dict[int, Spec]:
    now = time.monotonic()
    with _lock:
        known = _cache.get(namespace)
    if known is not None and known[0] > now:
        return known[1]
    found = rpc.lookup([entities.key(INDEX_KIND, INDEX_NAME)])
    specs: dict[int, Spec] = {}
    if found:
        entity = next(iter(found.values()))
        for key_id, (period, zone, since, aggregation) in json.loads(
            entity.properties["Specs"].string_value or "{}"
        ).items():
            moment = datetime.fromtimestamp(since / 1_000_000, UTC)
            specs[int(key_id)] = Spec(period, zone, aggregation, moment)
    with _lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[namespace] = (now + cache_seconds(), specs)
    return specs


def spec_guess(meter_key_id: int) -> Spec | None:
    """The meter's limit spec as this process last read it, however old (read again only
    when the copy has none, and has expired): a guess, for a reader that checks it
    against the limit itself (the limit check), so that an expired copy costs it no
    extra round trip."""
    namespace = ndb.get_context().get_namespace() or ""
    with _lock:
        known = _cache.get(namespace)
    if known is not None and meter_key_id in known[1]:
        return known[1][meter_key_id]
    return _load(namespace).get(meter_key_id)


def specs_for(meter_key_ids: Iterable[int]) -> dict[int, Spec]:
    """The limit specs of those of `meter_key_ids` (current org) that have limits."""
    namespace = ndb.get_context().get_namespace() or ""
    specs = _load(namespace)
    if not specs:
        return {}
    return {key_id: specs[key_id] for key_id in meter_key_ids if key_id in specs}
