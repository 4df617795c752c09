"""The periodic work of the service, bounded per call so one cron request fits its deadline.

Compaction of every org: rollups get dirty only where ingestion's fast path wrote,
and ingestion accepts events of the last `max_event_age` days only, so the dirty
rollups are always the recent days. One call folds at most `budget` rollups, at
most one page per org, visiting the orgs in a random order: over repeated calls
every org gets its turn even when a few busy orgs could use the whole budget.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from google.cloud import ndb

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
            keys = compact.dirty_keys(limit=min(per_org, left))
            run.visited += len(keys)
            run.compacted += sum(compact.compact_one(key) for key in keys)
        if len(keys) == min(per_org, left):  # maybe more in this org
            run.complete = False
    return run
