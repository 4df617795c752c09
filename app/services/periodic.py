"""The periodic work of the service, bounded per call so one cron request fits its deadline.

Compaction of every org: rollups get dirty only where ingestion's fast path wrote,
and ingestion accepts events of the last `max_event_age` days only, so the dirty
rollups are always the recent days. One call folds at most `budget` rollups, at
most one page per org, visiting the orgs in a random order: over repeated calls
every org gets its turn even when a few busy orgs could use the whole budget.

A call also stops, cleanly, when its request nears its deadline (`app.deadline`):
each rollup is folded in its own transaction, so stopping between two rollups (or
inside one, which rolls it back) loses nothing; the answer reports what was done
with `complete: false`, and the next call goes on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from google.api_core import exceptions as core_exceptions
from google.cloud import ndb

from app import deadline
from app.errors import DeadlineExceeded
from app.models import Namespace
from app.models import ids
from app.services import compact


@dataclass
class CompactionRun:
    """What one bounded compaction call did."""

    orgs: int = 0
    visited: int = 0
    compacted: int = 0
    complete: bool = True


#: Seconds before the deadline at which no further rollup is started.
STOP_MARGIN_SECONDS = 1.0


def _time_is_short() -> bool:
    left = deadline.remaining()
    return left is not None and left < STOP_MARGIN_SECONDS


def org_names() -> list[str]:
    """Names of every live org."""
    query = Namespace.query(Namespace.deleted == False,  # noqa: E712
                            namespace=ids.REGISTRY_NAMESPACE)
    return [key.id() for key in query.iter(keys_only=True)]


def compact_all_orgs(budget: int, per_org: int = compact.PAGE) -> CompactionRun:
    """Fold up to `budget` dirty rollups, over all orgs; `complete` if none was left."""
    names = org_names()
    random.shuffle(names)
    run = CompactionRun(orgs=len(names))
    for name in names:
        left = budget - run.visited
        if left <= 0:
            run.complete = False
            break
        with ndb.get_context().new(namespace=name).use():
            try:
                keys = _compact_page(run, min(per_org, left))
            except (DeadlineExceeded, core_exceptions.DeadlineExceeded):
                # out of time mid-rollup: its transaction is rolled back, nothing lost
                keys = None
        if keys is None:
            run.complete = False
            break
        if len(keys) == min(per_org, left):  # maybe more in this org
            run.complete = False
    return run


def _compact_page(run: CompactionRun, limit: int) -> list | None:
    """Fold one page of the current org's dirty rollups; None if time ran short."""
    keys = compact.dirty_keys(limit=limit)
    for key in keys:
        if _time_is_short():
            return None
        run.compacted += compact.compact_one(key)
        run.visited += 1
    return keys
