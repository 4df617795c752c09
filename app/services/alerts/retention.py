"""Retention of the alert state of periods long over: a bounded sweep per org and visit.

Nothing deleted the evaluator's state of ended periods: a tenant with per-user daily
rules grew by `tallies.BUCKETS` buckets per spec and day, forever. What is kept, and why
deleting it never makes a crossing fire twice (docs/design.md, "Alert retention"):

- **Tallies** (`alert-tally-bucket`, `alert-tally-spill`) are the evaluator's memory of
  which thresholds a subject crossed in a period. Deleted, a later contribution to that
  period would start a new tally (re-read from the rollups) and detect its crossings
  again, with the same trigger and message keys: the message would be stored pending and
  sent a second time. So a period is first closed to the evaluator, then deleted:
  - `tally_horizon`: a period that began before it is over for the evaluator, which
    drops every contribution to it (`evaluate._touches`). That is `tally_keep` after
    its start: the longest period (a month, plus a day for time zones), then how far
    back an event's timestamp may lie (`max_event_age`), then how long a recorded event
    can be cancelled (`dedupe_window`: a cancel's feed reaches the period of the event),
    then a week for a feed that waited. Only feeds past all of that are dropped: a
    cancel of a backfilled event (years-old timestamps are cancellable for
    `dedupe_window` after their import) or a feed left pending for a week; an ended
    period has no alert due (backfills write no feed for the same reason).
  - `sweep` deletes the tallies of periods that began SWEEP_LAG before the horizon:
    the day covers processes whose clocks differ.
- **Triggers** (`alert-trigger`) are the tenant's history (the dashboard's recent
  triggers, the triggers API): kept `alert_trigger_retention` (400 days) after they
  fired. A trigger's deletion changes nothing for the evaluator, whose tally states
  are what stop a second crossing.
- **Leases** (`alert-lease`) are deleted by their holder; one left by a killed evaluator
  is deleted once it has been expired for LEASE_LEFTOVER.

Finding them is bounded: `PeriodStart` of buckets and spills, and a trigger's `At`, are
indexed (built-in single-property indexes: a namespace query with one inequality, see
`_delete_found`), so each kind costs one keys-only query of at most `limit` keys per
visit, whatever the org holds. Buckets and spills written before `PeriodStart` was
indexed are not in that index: a one-time scan per org (`_scan_unindexed`, SCAN_PAGE
entities a visit, where it stopped kept in the org's `alert-retention` entity) deletes
those over and rewrites the others unchanged, in a transaction, so that they are
indexed from then on.

The evaluator calls `sweep` on each visit of an org; it runs at most once per process,
org and RECHECK_SECONDS, and logs (never raises) a failure: the next visit tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from flask import current_app, has_app_context
from google.cloud import ndb

from app.config import Config
from app.models import (
    AlertLease,
    AlertRetention,
    AlertTallyBucket,
    AlertTallySpill,
    AlertTrigger,
    root_key,
    transactional,
)

log = logging.getLogger(__name__)

#: From a period's start to its end at most: a month of 31 days, plus a day for the
#: time zone (a period starts at local midnight, up to 14 hours from UTC's) and DST.
LONGEST_PERIOD = timedelta(days=32)
#: Beyond the last cancel that may reach a period: for a feed that waited (an evaluator
#: down for days) before the period is closed to the evaluator.
FEED_MARGIN = timedelta(days=7)
#: The sweep deletes tallies this long after the evaluator stopped touching them: a
#: process whose clock is behind never applies a contribution to a deleted tally.
SWEEP_LAG = timedelta(days=1)
#: How often a process sweeps one org (the evaluator visits it every second).
RECHECK_SECONDS = 600.0
#: Keys deleted per kind and visit.
PAGE = 200
#: Entities read per visit by the one-time scan (a bucket may hold up to 900 KB).
SCAN_PAGE = 20
#: An expired lease is a leftover (its holder was killed) this long after it expired.
LEASE_LEFTOVER = timedelta(hours=1)
#: The kinds the one-time scan visits, in order.
_SCANNED = (AlertTallyBucket, AlertTallySpill)


def _now() -> datetime:
    """The sweep's and the horizon's clock (one function: tests move it forward)."""
    return datetime.now(UTC)


def _config() -> Config:
    config: Config = current_app.config["METERING"] if has_app_context() else Config.from_env()
    return config


def tally_keep(config: Config) -> timedelta:
    """How long after its start a period's tallies may still change (module docstring)."""
    return LONGEST_PERIOD + config.max_event_age + config.dedupe_window + FEED_MARGIN


def tally_horizon(now: datetime | None = None, config: Config | None = None) -> datetime:
    """Periods that began before this are over for the evaluator: it applies nothing to
    their tallies any more, so deleting them cannot make a crossing fire again."""
    return (now or _now()) - tally_keep(config or _config())


@dataclass
class Swept:
    """What one sweep of an org deleted (and rewrote, in the one-time scan)."""

    buckets: int = 0
    spills: int = 0
    triggers: int = 0
    leases: int = 0
    scanned: int = 0
    rewritten: int = 0
    #: The page of each kind this sweep could delete.
    limit: int = field(default=PAGE, compare=False, repr=False)

    @property
    def full(self) -> bool:
        """Whether a kind filled its page: maybe more left for the next visit."""
        return max(self.buckets, self.spills, self.triggers) >= self.limit


#: namespace -> when this process may sweep the org again (monotonic)
_next_sweep: dict[str, float] = {}
_lock = threading.Lock()


def sweep(limit: int = PAGE) -> Swept | None:
    """Sweep the current org (`sweep_now`) if this process has not in RECHECK_SECONDS;
    what it deleted, or None when not due or failed (logged: the next visit retries)."""
    namespace = ndb.get_context().get_namespace() or ""
    moment = time.monotonic()
    with _lock:
        if _next_sweep.get(namespace, 0.0) > moment:
            return None
        if len(_next_sweep) > 10_000:
            _next_sweep.clear()
        _next_sweep[namespace] = moment + RECHECK_SECONDS
    try:
        return sweep_now(limit)
    except Exception:
        log.exception("alert retention sweep failed for org %r; the next visit retries", namespace)
        return None


def forget() -> None:
    """Drop this process's memory of when each org was swept (tests)."""
    with _lock:
        _next_sweep.clear()


def sweep_now(limit: int = PAGE) -> Swept:
    """Delete up to `limit` tally buckets, spills and triggers each of the current org
    whose retention is over, its leftover leases, and go on with the one-time scan."""
    now = _now()
    config = _config()
    tallies_before = tally_horizon(now, config) - SWEEP_LAG
    swept = Swept(limit=limit)
    swept.buckets = _delete_found(
        AlertTallyBucket.query(AlertTallyBucket.period_start < tallies_before), limit
    )
    swept.spills = _delete_found(
        AlertTallySpill.query(AlertTallySpill.period_start < tallies_before), limit
    )
    swept.triggers = _delete_found(
        AlertTrigger.query(AlertTrigger.at < now - config.alert_trigger_retention), limit
    )
    swept.leases = _delete_leftover_leases(now, limit)
    swept.scanned, swept.rewritten = _scan_unindexed(tallies_before, SCAN_PAGE)
    if swept.buckets or swept.spills or swept.triggers or swept.leases or swept.scanned:
        log.info("alert retention: %s", swept)
    return swept


def _delete_found(query: ndb.Query, limit: int) -> int:
    """Delete the first `limit` keys `query` finds. It is a query of the org's namespace,
    not an ancestor query: one inequality is then served by the built-in index of the
    property (with the org root as ancestor it would need a composite index per kind).
    Every entity of these kinds lives under the org root, so it finds the same ones; on
    Cloud Datastore it is eventually consistent, which a sweep does not mind (a key just
    deleted and still listed is deleted again, a no-op; one just written waits a visit)."""
    keys = query.fetch(limit, keys_only=True)
    ndb.delete_multi(keys)
    return len(keys)


def _delete_leftover_leases(now: datetime, limit: int) -> int:
    """Leases expired LEASE_LEFTOVER ago (at most one per meter with rules), each deleted
    in a transaction that finds it still expired: a lease just taken again stays."""
    leftover_before = now - LEASE_LEFTOVER

    def expired(lease: AlertLease | None) -> bool:
        return lease is not None and (lease.until is None or lease.until < leftover_before)

    @transactional(retries=3)
    def delete_if_expired(key: ndb.Key) -> bool:
        if not expired(key.get()):
            return False
        key.delete()
        return True

    leases = AlertLease.query(ancestor=root_key()).fetch(limit)
    return sum(1 for lease in leases if expired(lease) and delete_if_expired(lease.key))


def _state_key() -> ndb.Key:
    return ndb.Key(AlertRetention, "scan", parent=root_key())


def _scan_unindexed(tallies_before: datetime, page: int) -> tuple[int, int]:
    """One page of the org's one-time scan of buckets and spills (those written before
    `PeriodStart` was indexed are found by no query on it): the ones over are deleted,
    the others rewritten unchanged in transactions of REWRITE_BYTES at most (a concurrent
    evaluator's commit is never overwritten), which indexes them. (entities read, rewritten)."""
    state = _state_key().get()
    if state is None:
        state = AlertRetention(key=_state_key(), kind=_SCANNED[0]._get_kind())
    if state.done:
        return 0, 0
    model = next((m for m in _SCANNED if m._get_kind() == state.kind), _SCANNED[0])
    cursor = ndb.Cursor(urlsafe=state.cursor) if state.cursor else None
    found, next_cursor, more = model.query(ancestor=root_key()).fetch_page(
        page, start_cursor=cursor
    )
    over = {e.key for e in found if e.period_start is None or e.period_start < tallies_before}
    ndb.delete_multi(list(over))
    kept = [e for e in found if e.key not in over]
    for keys in _by_size(kept):
        _rewrite(keys)
    if more and next_cursor is not None:
        state.cursor = next_cursor.urlsafe().decode()
    else:
        following = _SCANNED.index(model) + 1
        state.cursor = None
        if following < len(_SCANNED):
            state.kind = _SCANNED[following]._get_kind()
        else:
            state.done = True
    state.put()
    return len(found), len(kept)


#: Bytes of tallies rewritten per transaction by the scan (a commit holds at most 10 MiB).
REWRITE_BYTES = 4_000_000


def _by_size(entities: list[AlertTallyBucket | AlertTallySpill]) -> list[list[ndb.Key]]:
    """The keys of `entities` in groups of at most REWRITE_BYTES of tallies each."""
    groups: list[list[ndb.Key]] = [[]]
    size = 0
    for entity in entities:
        weight = len(getattr(entity, "subjects", None) or b"") + 1_000  # and its key, fields
        if groups[-1] and size + weight > REWRITE_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(entity.key)
        size += weight
    return [group for group in groups if group]


@transactional(retries=5)
def _rewrite(keys: list[ndb.Key]) -> None:
    """Put the entities back as they are now (one entity group: the org root's)."""
    ndb.put_multi([entity for entity in ndb.get_multi(keys) if entity is not None])
