"""Orgs that have webhook endpoints or alert rules: the delivery loop's list to visit.

One `delivery-org` entity per org, in the registry namespace, keyed by the org's
namespace. Registering is idempotent and, once done in this process, costs nothing:
the set of namespaces already registered is remembered in-process (an entity is never
removed, so a remembered registration never goes stale).
"""

from __future__ import annotations

import threading

from google.cloud import ndb

from app.models import ids, utcnow
from app.models.webhook import DELIVERY_ORG_KIND, DeliveryOrg
from app.storage import queries, rpc

_registered: set[str] = set()
_lock = threading.Lock()


def register_org() -> None:
    """Remember that the current org has endpoints or alert rules."""
    namespace = ndb.get_context().get_namespace() or ""
    if not namespace or namespace in _registered:
        return
    key = DeliveryOrg.key_for(namespace)
    if key.get() is None:
        DeliveryOrg(key=key, registered_at=utcnow()).put()
    with _lock:
        _registered.add(namespace)


def orgs() -> list[str]:
    """Namespaces of the registered orgs: one raw keys-only query (each background loop
    of each worker asks it every second; through NDB it cost a few times the CPU)."""
    query = queries.Query()
    query.kind.add().name = DELIVERY_ORG_KIND
    query.projection.add().property.name = "__key__"

    def names() -> list[str]:
        found = rpc.run_query(query, ids.REGISTRY_NAMESPACE)
        return [entity.key.path[-1].name for entity in found]

    return rpc.retry_aborted(names, "the list of delivery orgs")  # as NDB retried
