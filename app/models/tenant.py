"""The tenant registry: org namespaces and their API keys, in namespace `_namespaces`.

An org is a kind `namespace` entity keyed by its name (so two creates of one name
cannot both succeed); its `IntId` is the number that public ids carry. API keys are
kind `api-key` entities keyed by the SHA-256 of the key, so a request's key is found
by one lookup and the key itself is never stored.
"""

from __future__ import annotations

from datetime import UTC

from google.cloud import ndb

from app.core.scopes import ALL_SCOPES, held, ordered
from app.models import ids
from app.models.base import Lifecycle, Model, OptionalProperty, utcnow

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

    def validate(self) -> list[tuple[str, str]]:
        """The registry's invariants: numbered, purged only once archived. The name's rules
        are the org service's, checked before any write; entries an older release wrote
        under names this one refuses must still be archived and purged."""
        problems = []
        if not self.name:
            problems.append(("name", "an org has a name"))
        if not isinstance(self.int_id, int) or self.int_id <= 0:
            problems.append(("name", "an org needs the positive number its ids carry"))
        if self.purged_at and not self.deleted:
            problems.append(("name", "only an archived org can be purged"))
        return problems


class ApiKey(Lifecycle, ndb.Model):
    """One API key of an org, stored by its hash only.

    Never in NDB's global cache: a revocation written without that cache (the CLI on
    an operator's laptop, an instance whose Redis is down) must still be seen by the
    next request. See app/cache.py. Written through the mixin's lifecycle, without
    the mixin's properties: the kind keeps the registry's shape.
    """

    _use_global_cache = False

    org = ndb.StringProperty("Org")
    prefix = ndb.StringProperty("Prefix")
    revoked = ndb.BooleanProperty("Revoked", default=False)
    created_at = ndb.DateTimeProperty("CreatedAt", tzinfo=UTC)
    revoked_at = ndb.DateTimeProperty("RevokedAt", tzinfo=UTC)
    # issue 16, keys: what the key may do, until when, and when it was last used. Not
    # indexed: nothing queries them. A key stored without `Scopes` (every key before
    # scopes existed) holds `scopes.DEFAULT_SCOPES`; keys issued since always store theirs.
    scopes = ndb.TextProperty("Scopes", repeated=True)
    expires_at = ndb.DateTimeProperty("ExpiresAt", tzinfo=UTC, indexed=False)
    last_used_at = ndb.DateTimeProperty("LastUsedAt", tzinfo=UTC, indexed=False)
    name = ndb.TextProperty("Name")
    #: the prefix of the key that issued it over HTTP; unset when an operator did
    created_by = ndb.TextProperty("CreatedBy")

    @classmethod
    def _get_kind(cls) -> str:
        return "api-key"

    @classmethod
    def key_for(cls, digest: str) -> ndb.Key:
        return ndb.Key(cls._get_kind(), digest, namespace=REGISTRY_NAMESPACE)

    def defaults(self) -> None:
        if self.created_at is None:
            self.created_at = utcnow()
        if self.revoked and self.revoked_at is None:
            self.revoked_at = utcnow()

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if self.key is None or self.key.namespace() != REGISTRY_NAMESPACE:
            problems.append(("key", "an API key is stored in the registry, by its digest"))
        if not self.org:
            problems.append(("org", "an API key belongs to an org"))
        if not self.prefix:
            problems.append(("prefix", "an API key is listed by its prefix"))
        if set(self.scopes or ()) - ALL_SCOPES:
            problems.append(("scopes", "an API key holds only known scopes"))
        return problems

    def expired(self, now) -> bool:
        """Whether the key's expiry has come (a key without one never expires)."""
        return self.expires_at is not None and self.expires_at <= now

    @property
    def held_scopes(self) -> list[str]:
        """The scopes the key holds, in the documentation's order."""
        return ordered(held(self.scopes))

    @property
    def status_now(self) -> str:
        return self.status(utcnow())

    def status(self, now) -> str:
        """`revoked`, `expired` or `active`: what a request with the key gets."""
        if self.revoked:
            return "revoked"
        return "expired" if self.expired(now) else "active"

    def revoke(self, now) -> ApiKey:
        """Mark revoked at `now`; stored by `update` (or `update_multi`)."""
        self.revoked, self.revoked_at = True, now
        return self
