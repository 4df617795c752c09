"""Org tenants and their API keys: create, authenticate, rotate, revoke, archive, purge.

Keys are random (`mk_` + 40 url-safe characters), shown once, and stored only as
their SHA-256 digest, which is also the entity's key name: authenticating is one
lookup by key, and the final comparison is constant-time. A key's first 12
characters are its public prefix, by which it is listed and revoked. A key holds
scopes (`app.core.scopes`) and may expire (issue 16): an expired key is refused like a
revoked one, saying so; a key issues keys with at most its own scopes and expiry.

An org is live, archived (its `namespace` entity soft-deleted and every key revoked:
nothing can read or write its data, which is kept), or purged (archived, and every
entity of its Datastore namespace deleted). An archived org's name is not free:
creating it again answers 409 until it is purged, so that an org's data can never
be handed to whoever registers its name next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeGuard, cast

from flask import has_app_context
from google.cloud import ndb

from app.core.names import ORG_NAME
from app.core.scopes import ALL_SCOPES, DEFAULT_SCOPES, held, ordered
from app.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from app.models import ApiKey, Namespace, PortalPolicy, ids, transactional, utcnow
from app.services.portal import policy as portal_policy
from app.storage import entities, rpc

KEY_PREFIX = "mk_"
PREFIX_LENGTH = 12
#: Entities deleted per commit by a purge (Datastore's limit on mutations per commit).
PURGE_PAGE = 500


@dataclass(frozen=True)
class Org:
    """What a request knows about its caller's org."""

    name: str
    int_id: int

    @property
    def namespace(self) -> str:
        return self.name


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created API key: the only time its secret is visible."""

    org: Org
    secret: str
    prefix: str
    key: ApiKey | None = None  # what is stored (scopes, expiry, name), issue 16
    scopes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Caller:
    """An authenticated API key: its org, what it may do (`scopes`), until when, and what
    the last-used recorder needs (`digest`, `last_used_at` as stored)."""

    org: Org
    scopes: frozenset[str]
    prefix: str
    digest: str
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


def is_valid_org_name(name: object) -> TypeGuard[str]:
    """Whether name is an org name this release accepts (the whole string)."""
    return isinstance(name, str) and ORG_NAME.fullmatch(name) is not None


def validate_org_name(name: object) -> str:
    """The org name, if it is a valid one; names become Datastore namespaces."""
    if not is_valid_org_name(name):
        raise ValidationFailed(
            "name must be 1 to 63 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit",
            param="name",
        )
    return name


#: Read options past both of NDB's caches (the request's and Redis): for entities
#: whose state decides who may do what, where a copy could be stale.
FRESH = {"use_cache": False, "use_global_cache": False}


def key_digest(secret: str) -> str:
    """The SHA-256 hex digest an API key is stored (and remembered) by."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _org_of(entity: Namespace) -> Org:
    ids.remember_namespace(entity.name, entity.int_id)
    return Org(name=entity.name, int_id=entity.int_id)


def create_org(name: str) -> IssuedKey:
    """Register an org and issue its first API key, holding every scope.

    409 if the name is taken, by a live org or by an archived one that still has its
    data; the name of a purged org is given out again (same `IntId`: nothing of the
    old org is left for its ids to name, and every process's id codec stays true).
    """
    validate_org_name(name)
    int_id = Namespace.allocate_ids(1)[0].id()

    @transactional(retries=5)
    def register() -> Namespace:
        entity: Namespace | None = Namespace.key_for(name).get(**FRESH)
        if entity is None:
            entity = Namespace(key=Namespace.key_for(name), name=name, int_id=int_id)
            entity.create()
            return entity
        if not entity.deleted:
            raise Conflict(f"org {name!r} already exists", param="name", code="org_exists")
        if not entity.purged_at:
            raise Conflict(
                f"org {name!r} is archived and keeps its data; purge it "
                f"(metering orgs delete {name} --purge) before reusing its name",
                param="name",
                code="org_archived",
            )
        entity.deleted = False
        # mypy: PurgedAt is an NDB property descriptor mypy reads as its class; None clears it
        entity.purged_at = None  # type: ignore[assignment]
        entity.update()
        _refuse_earlier_portal_tokens(name)
        return entity

    org = _org_of(register())
    if has_app_context():  # this process's copy of the purged org's portal policy
        portal_policy.forget(name)
    # The org's first key holds every scope, events:backfill included (issue 16): the one
    # key from which the org can hand out every other, backfill keys too, over HTTP.
    return issue_key(org.name, scopes=ALL_SCOPES)


def _refuse_earlier_portal_tokens(name: str) -> None:
    """A re-created org keeps its number, and portal tokens name the org by name and number
    only: tokens issued to the purged org (a day at most) would open the new one. A policy
    that refuses every token issued before now, written in the re-creation's commit, closes
    that (app/services/portal/policy.py)."""
    PortalPolicy(key=PortalPolicy.key_for(name), revoked_before_ms=portal_policy.now_ms()).put()


def get_org(name: str, fresh: bool = False) -> Org:
    """The live org of that name; 404 if there is none.

    `fresh` reads past NDB's caches: operator actions must not act on a copy that an
    archive written without the global cache left behind.
    """
    if not is_valid_org_name(name):
        raise NotFound(f"org {name!r} not found", param="org")
    entity = Namespace.key_for(name).get(**(FRESH if fresh else {}))
    if entity is None or entity.deleted:
        raise NotFound(f"org {name!r} not found", param="org")
    return _org_of(entity)


@contextlib.contextmanager
def inside(name: str) -> Iterator[Org]:
    """Run the block in the namespace of the live org of that name (404 if there is none):
    what a request's API key does for the HTTP API (`app.tenancy`), for operator commands.
    NDB models and the raw storage calls alike follow the context's namespace."""
    org = get_org(name)
    with ndb.get_context().new(namespace=org.namespace).use():
        yield org


def issue_key(
    org_name: str,
    scopes: Iterable[str] | None = None,
    expires_at: datetime | None = None,
    name: str | None = None,
    created_by: str | None = None,
) -> IssuedKey:
    """Create another API key for a live org, holding `scopes` (the defaults when None)
    until `expires_at` (never when None).

    One transaction reads the org and writes the key, so a key can never be issued
    to an org that an archive (which revokes every key after it commits) has closed.
    Whether the caller may grant those scopes and that expiry is `check_grant`'s
    question, asked before this.
    """
    secret = KEY_PREFIX + secrets.token_urlsafe(30)
    prefix = secret[:PREFIX_LENGTH]
    granted = ordered(DEFAULT_SCOPES if scopes is None else scopes)
    if not granted:
        raise ValidationFailed("a key needs at least one scope", param="scopes")

    @transactional(retries=5)
    def store() -> tuple[Org, ApiKey]:
        org = get_org(org_name, fresh=True)
        return org, ApiKey(
            key=ApiKey.key_for(key_digest(secret)),
            org=org.name,
            prefix=prefix,
            scopes=granted,
            expires_at=expires_at,
            name=name,
            created_by=created_by,
        ).create()

    org, stored = store()
    return IssuedKey(org=org, secret=secret, prefix=prefix, key=stored, scopes=granted)


def check_grant(caller: Caller, scopes: Iterable[str], expires_at: datetime | None) -> None:
    """Refuse (403) a key `caller` would issue with a scope it does not hold, or that would
    outlive it: a key can hand on at most what it has."""
    for index, scope_name in enumerate(scopes):
        if scope_name not in caller.scopes:
            raise Forbidden(
                f"this API key cannot grant the scope {scope_name!r}: it does not hold it",
                param=f"scopes[{index}]",
            )
    if caller.expires_at is not None and (expires_at is None or expires_at > caller.expires_at):
        raise Forbidden(
            "this API key expires at "
            f"{caller.expires_at.isoformat().replace('+00:00', 'Z')}: the keys it creates "
            "must expire by then (give expiresAt or expiresIn)",
            param="expiresAt",
            code="expiry_not_held",
        )


def revoke_key(org_name: str, prefix: str) -> int:
    """Revoke the org's keys that start with `prefix`; returns how many."""
    org = get_org(org_name, fresh=True)
    if not isinstance(prefix, str) or len(prefix) < PREFIX_LENGTH:
        raise ValidationFailed(
            f"the key prefix must be its first {PREFIX_LENGTH} characters", param="prefix"
        )
    matches = []
    if len(prefix) == PREFIX_LENGTH:  # a longer text names no key (and may be too long to query)
        matches = ApiKey.query(
            ApiKey.org == org.name, ApiKey.prefix == prefix, namespace=ids.REGISTRY_NAMESPACE
        ).fetch()
    matches = [k for k in matches if not k.revoked]
    if not matches:
        raise NotFound("no active key with that prefix", param="prefix")
    now = utcnow()
    ApiKey.update_multi([key.revoke(now) for key in matches])
    return len(matches)


def list_keys(org_name: str) -> list[ApiKey]:
    """The org's keys, revoked ones included, without their secrets."""
    org = get_org(org_name)
    return cast(
        list[ApiKey], ApiKey.query(ApiKey.org == org.name, namespace=ids.REGISTRY_NAMESPACE).fetch()
    )


def authenticate(secret: str | None, now: datetime | None = None) -> Caller:
    """The org whose active key this is, with what the key holds; 401 otherwise (an
    expired key is told so)."""
    if not secret or not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        raise Unauthorized("missing or invalid API key")
    digest = key_digest(secret)
    # Straight from the Datastore: neither the context cache nor Redis may hold a key
    # that was revoked since (app/cache.py).
    stored = ApiKey.key_for(digest).get(**FRESH)
    if stored is None or stored.revoked or not hmac.compare_digest(stored.key.id(), digest):
        raise Unauthorized("missing or invalid API key")
    if stored.expired(now or utcnow()):
        raise _expired(stored.expires_at)
    return Caller(
        org=_org_of_key(stored),
        scopes=held(stored.scopes),
        prefix=stored.prefix,
        digest=digest,
        expires_at=stored.expires_at,
        last_used_at=stored.last_used_at,
    )


def _expired(expires_at: datetime) -> Unauthorized:
    return Unauthorized(
        f"this API key expired at {expires_at.isoformat().replace('+00:00', 'Z')}",
        code="key_expired",
    )


# -- issue 16, limit checks: the key read in the request's own lookup ------------------


def api_key_lookup_key(digest: str) -> entities.KeyPb:
    """The raw key of the `api-key` entity stored by `digest` (in the registry's
    namespace), for a caller that reads it in its own lookup with other keys."""
    client = ndb.get_context().client
    key = entities.Key()
    key.partition_id.project_id = client.project
    if client.database:
        key.partition_id.database_id = client.database
    key.partition_id.namespace_id = ids.REGISTRY_NAMESPACE
    element = key.path.add()
    element.kind, element.name = ApiKey._get_kind(), digest
    return key


def read_api_key(key: entities.KeyPb) -> entities.EntityPb | None:
    """The `api-key` entity of that raw key, read fresh (no cache holds api-key)."""
    return next(iter(rpc.lookup([key]).values()), None)


def confirm(known: Caller, stored: entities.EntityPb | None, now: datetime) -> Caller:
    """`known` (a caller this process authenticated before: its org, scopes, prefix and
    expiry never change), confirmed by its `api-key` entity `stored` as read fresh just
    now; 401 when it is gone, revoked, expired, or names another org (no key's org ever
    changes: a mismatch is a wrong memory, and nothing is answered from it). The answer
    carries what is stored (scopes, expiry, and `LastUsedAt` for the last-used
    recorder): what `authenticate` would have answered."""
    if stored is None or _flag(stored, "Revoked"):
        raise Unauthorized("missing or invalid API key")
    org = stored.properties["Org"].string_value if "Org" in stored.properties else ""
    if not hmac.compare_digest(org.encode(), known.org.name.encode()):
        raise Unauthorized("missing or invalid API key")
    expires_at = entities.get_time(stored, "ExpiresAt")  # as stored, like `authenticate`
    if expires_at is not None and expires_at <= now:
        raise _expired(expires_at)
    return dataclasses.replace(
        known,
        scopes=held(_strings(stored, "Scopes")),
        expires_at=expires_at,
        last_used_at=entities.get_time(stored, "LastUsedAt"),
    )


def _strings(stored: entities.EntityPb, name: str) -> list[str]:
    value = stored.properties.get(name)
    if value is None:
        return []
    if value.HasField("array_value"):
        return [item.string_value for item in value.array_value.values]
    return [value.string_value] if value.HasField("string_value") else []


def _flag(stored: entities.EntityPb, name: str) -> bool:
    value = stored.properties.get(name)
    return bool(value is not None and value.boolean_value)


def _org_of_key(stored: ApiKey) -> Org:
    try:
        # May come from the global cache: an archived org's keys are revoked anyway.
        return get_org(stored.org)
    except NotFound:
        pass
    try:  # an active key of a deleted org: a cached copy from before it was re-created?
        return get_org(stored.org, fresh=True)
    except NotFound:  # archived while its keys were being revoked, or a refused name
        raise Unauthorized("missing or invalid API key") from None


# -- archive, purge, check -------------------------------------------------------


@dataclass(frozen=True)
class Archived:
    """The outcome of archiving an org: how many of its keys this call revoked, and
    whether an earlier purge already emptied it."""

    name: str
    revoked_keys: int
    purged: bool


@dataclass(frozen=True)
class Purged:
    """The outcome of one purge call: entities deleted, and whether none is left."""

    name: str
    deleted: int
    complete: bool


@dataclass(frozen=True)
class InvalidEntry:
    """A registry entry whose name this release refuses (written by an older one)."""

    kind: str
    name: str
    live: bool
    prefix: str | None = None


def _registry_entry(name: str) -> Namespace | None:
    """The org's registry entity, read past the global cache, whatever its state.

    A name this release refuses may still be registered (an older release accepted
    `evil\n`): such a name is looked for among the registry's keys rather than
    built into a key, since it may not even be a legal key name.
    """
    if is_valid_org_name(name):
        return cast(Namespace | None, Namespace.key_for(name).get(**FRESH))
    if not isinstance(name, str) or not name or len(name) > 256:
        return None
    query = Namespace.query(namespace=ids.REGISTRY_NAMESPACE)
    found = next((key for key in query.iter(keys_only=True) if key.id() == name), None)
    return found.get(**FRESH) if found is not None else None


def _entry_or_404(name: str) -> Namespace:
    entity = _registry_entry(name)
    if entity is None:
        raise NotFound(f"org {name!r} not found", param="org")
    return entity


def archive_org(name: str) -> Archived:
    """Archive an org: mark it deleted, then revoke every key it has; keeps its data.

    Safe to repeat (a repeat revokes keys a crashed run left active). The archive
    commits first: from then on no key can be issued (`issue_key` reads the org in
    its transaction), so the revocation that follows sees every key there will be.
    """
    key = _entry_or_404(name).key

    @transactional(retries=5)
    def close() -> Namespace:
        entity: Namespace = key.get(**FRESH)
        if not entity.deleted:
            entity.delete()
        return entity

    purged = bool(close().purged_at)
    return Archived(name=key.id(), revoked_keys=_revoke_all(key.id()), purged=purged)


def _revoke_all(org_name: str) -> int:
    """Revoke every active key of the org, PURGE_PAGE per commit; how many."""
    keys = ApiKey.query(ApiKey.org == org_name, namespace=ids.REGISTRY_NAMESPACE).fetch()
    active = [k for k in keys if not k.revoked]
    now = utcnow()
    for start in range(0, len(active), PURGE_PAGE):
        ApiKey.update_multi([api_key.revoke(now) for api_key in active[start : start + PURGE_PAGE]])
    return len(active)


def _require_archived(key: ndb.Key) -> Namespace:
    entity: Namespace | None = key.get(**FRESH)
    if entity is None or not entity.deleted:
        raise Conflict(
            f"org {key.id()!r} is live: archive it before purging", param="org", code="org_live"
        )
    return entity


def _reserved(key: ndb.Key) -> bool:
    """Whether the key is of a kind Datastore writes itself (`__Stat_Ns_Kind__`...):
    such entities cannot be deleted and are not the org's data."""
    kind = key.kind()
    return bool(kind.startswith("__") and kind.endswith("__"))


def _org_keys(namespace: str) -> ndb.Query:
    """Every key of any kind in the org's namespace: a kindless query (built-in index)."""
    return ndb.Query(namespace=namespace)


def count_org_entities(name: str) -> int:
    """How many entities the org's namespace holds (keys only, for a progress bar)."""
    key = _entry_or_404(name).key
    if not is_valid_org_name(key.id()):
        return 0
    return sum(1 for k in _org_keys(key.id()).iter(keys_only=True) if not _reserved(k))


def purge_org(
    name: str, progress: Callable[[int], object] | None = None, max_entities: int | None = None
) -> Purged:
    """Delete every entity of an archived org's namespace, PURGE_PAGE per commit.

    Resumable: each page is its own commit and a run starts from whatever is left,
    so a run killed midway is finished by running it again. The org must stay
    archived (checked before every page): nothing can write to it meanwhile. With
    `max_entities`, one call stops after that many (the HTTP API's bound per
    request) and says whether it finished. Once nothing is left, the org is marked
    purged, which frees its name.
    """
    key = _entry_or_404(name).key
    _require_archived(key)
    namespace, deleted, cursor = key.id(), 0, None
    # A name Datastore refuses as a namespace cannot have any data to delete.
    while is_valid_org_name(namespace):
        if max_entities is not None and deleted >= max_entities:
            return Purged(name=namespace, deleted=deleted, complete=False)
        room = PURGE_PAGE if max_entities is None else min(PURGE_PAGE, max_entities - deleted)
        _require_archived(key)
        # The cursor only steps over reserved kinds' keys, which stay where they are.
        keys, cursor, more = _org_keys(namespace).fetch_page(
            room, start_cursor=cursor, keys_only=True
        )
        doomed = [k for k in keys if not _reserved(k)]
        if doomed:
            ndb.delete_multi(doomed)
            deleted += len(doomed)
            if progress is not None:
                progress(len(doomed))
        if not more or not keys:
            break
    _mark_purged(key)
    return Purged(name=namespace, deleted=deleted, complete=True)


def _mark_purged(key: ndb.Key) -> None:
    @transactional(retries=5)
    def mark() -> None:
        entity = _require_archived(key)
        if not entity.purged_at:
            # mypy: an ndb property takes its value (the class sees the descriptor)
            entity.purged_at = utcnow().isoformat()  # type: ignore[assignment]
            entity.update()

    mark()


def invalid_registry_entries() -> list[InvalidEntry]:
    """Registry entries whose names this release refuses: orgs, and keys naming them.

    `live` ones (an org not archived, a key not revoked) still answer requests with
    errors; `metering orgs delete NAME` archives such an org and revokes its keys.
    """
    found = []
    for entity in Namespace.query(namespace=ids.REGISTRY_NAMESPACE):
        name = entity.key.id()
        if not is_valid_org_name(name) or entity.name != name:
            found.append(InvalidEntry("namespace", str(name), live=not entity.deleted))
    for api_key in ApiKey.query(namespace=ids.REGISTRY_NAMESPACE):
        if not is_valid_org_name(api_key.org):
            found.append(
                InvalidEntry(
                    "api-key", str(api_key.org), live=not api_key.revoked, prefix=api_key.prefix
                )
            )
    return found
