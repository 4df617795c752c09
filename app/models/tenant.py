"""The tenant registry: org namespaces and their API keys, in namespace `_namespaces`.

An org is a kind `namespace` entity keyed by its name (so two creates of one name
cannot both succeed); its `IntId` is the number that public ids carry. API keys are
kind `api-key` entities keyed by the SHA-256 of the key, so a request's key is found
by one lookup and the key itself is never stored.
"""

from __future__ import annotations

from datetime import timezone

from google.cloud import ndb

from app.models import ids
from app.models.base import Model, OptionalProperty

REGISTRY_NAMESPACE = ids.REGISTRY_NAMESPACE


class Namespace(Model):
    """An org tenant: its data lives in the Datastore namespace of the same name.

    Archiving an org is the mixin's soft delete (`Deleted`); `PurgedAt` (RFC 3339,
    stored only once set) records that a purge left its namespace empty, which frees
    the name (app/services/orgs.py).
    """

    KIND = "namespace"

    name = ndb.StringProperty("Name")
    int_id = ndb.IntegerProperty("IntId")
    purged_at = OptionalProperty("PurgedAt")

    @classmethod
    def key_for(cls, name: str) -> ndb.Key:
        return ndb.Key(cls.KIND, name, namespace=REGISTRY_NAMESPACE)

    def ensure_key(self) -> ndb.Key:
        if self.key is None:
            self.key = self.key_for(self.name)
        return self.key

    def public_id(self) -> str:
        return ids.encode_numbers(ids.KIND_CODES["namespace"], self.int_id, 0)

    @property
    def namespace(self) -> str:
        return self.name


class ApiKey(ndb.Model):
    """One API key of an org, stored by its hash only.

    Never in NDB's global cache: a revocation written without that cache (the CLI on
    an operator's laptop, an instance whose Redis is down) must still be seen by the
    next request. See app/cache.py.
    """

    _use_global_cache = False

    org = ndb.StringProperty("Org")
    prefix = ndb.StringProperty("Prefix")
    revoked = ndb.BooleanProperty("Revoked", default=False)
    created_at = ndb.DateTimeProperty("CreatedAt", tzinfo=timezone.utc)
    revoked_at = ndb.DateTimeProperty("RevokedAt", tzinfo=timezone.utc)

    @classmethod
    def _get_kind(cls) -> str:
        return "api-key"

    @classmethod
    def key_for(cls, digest: str) -> ndb.Key:
        return ndb.Key(cls._get_kind(), digest, namespace=REGISTRY_NAMESPACE)
