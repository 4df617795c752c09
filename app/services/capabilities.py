"""What the Datastore behind the current NDB client can do, probed once per process.

Firestore in Datastore mode applies property transforms (server-side increments,
minimum, maximum); the legacy emulator accepts them and silently ignores them.
Rollup writes depend on the difference, so it is measured, not assumed: one
upsert with an increment on a probe entity in the registry namespace, whose
answer carries a transform result only where transforms work.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from google.cloud import ndb

from app.models.ids import REGISTRY_NAMESPACE
from app.storage import entities, rpc

_known: dict[tuple[Any, ...], bool] = {}
_lock = threading.Lock()


def transforms() -> bool:
    """Whether commits apply property transforms."""
    client = ndb.get_context().client
    ident = (os.environ.get("DATASTORE_EMULATOR_HOST"), client.project, client.database)
    with _lock:
        if ident not in _known:
            _known[ident] = _probe()
        return _known[ident]


def _probe() -> bool:
    mutation = rpc.Mutation()
    mutation.upsert.key.CopyFrom(
        entities.key("capability-probe", "transforms", namespace=REGISTRY_NAMESPACE)
    )
    mutation.property_mask.SetInParent()
    transform = mutation.property_transforms.add()
    transform.property = "Probes"
    transform.increment.integer_value = 1
    response = rpc.commit([mutation])
    return len(response.mutation_results[0].transform_results) == 1


def consistent_snapshots() -> bool:
    """Whether a read-only transaction may run the queries of a summary (issue 14, alert
    seeding): Firestore in Datastore mode, the one that applies transforms. The legacy
    emulator refuses non-ancestor queries in transactions and locks what it reads."""
    return transforms()
