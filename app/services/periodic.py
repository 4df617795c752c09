"""The periodic work of the service, bounded per call so one cron request fits its deadline.

Compaction of every org: rollups get dirty only where ingestion's fast path wrote,
and ingestion accepts events of the last `max_event_age` days only, so the dirty
rollups are always the recent days. One call folds at most `budget` rollups, at
most one page per org, visiting the orgs in a random order: over repeated calls
every org gets its turn even when a few busy orgs could use the whole budget.

One org's failure is that org's alone: it is logged with the org's name, listed in
the answer's `failed`, and the loop goes on with the others. A registry name this
release refuses (an older release accepted `evil\n`) is listed without being tried,
since Datastore refuses it as a namespace; `metering orgs check` lists such entries.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from google.cloud import ndb

from app.errors import ApiError
from app.models import Namespace
from app.models import ids
from app.services import compact
from app.services.orgs import is_valid_org_name

log = logging.getLogger(__name__)


@dataclass
class CompactionRun:
    """What one bounded compaction call did."""

    orgs: int = 0
    visited: int = 0
    compacted: int = 0
    complete: bool = True
    failed: list[str] = field(default_factory=list)


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
        if not is_valid_org_name(name):
            log.error("compaction skipped org %r: not a valid org name", name)
            run.failed.append(name)
            continue
        try:
            _compact_page(name, min(per_org, left), run)
        except ApiError:
            raise  # the request's own failure (its deadline, say), not this org's
        except Exception:
            log.exception("compaction failed for org %r; continuing with the others", name)
            run.failed.append(name)
            run.complete = False
    return run


def _compact_page(name: str, limit: int, run: CompactionRun) -> None:
    """Fold up to `limit` dirty rollups of one org, counting into run."""
    with ndb.get_context().new(namespace=name).use():
        keys = compact.dirty_keys(limit=limit)
        run.visited += len(keys)
        run.compacted += sum(compact.compact_one(key) for key in keys)
    if len(keys) == limit:  # maybe more in this org
        run.complete = False
