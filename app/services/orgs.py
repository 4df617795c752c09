"""Org tenants and their API keys: create, authenticate, rotate, revoke.

Keys are random (`mk_` + 40 url-safe characters), shown once, and stored only as
their SHA-256 digest, which is also the entity's key name: authenticating is one
lookup by key, and the final comparison is constant-time. A key's first 12
characters are its public prefix, by which it is listed and revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from google.cloud import ndb

from app.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from app.models import ApiKey, Namespace, utcnow
from app.models import ids

ORG_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
KEY_PREFIX = "mk_"
PREFIX_LENGTH = 12


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


def validate_org_name(name) -> str:
    """The org name, if it is a valid one; names become Datastore namespaces."""
    if not isinstance(name, str) or not ORG_NAME.match(name):
        raise ValidationFailed(
            "name must be 1 to 63 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit",
            param="name",
        )
    return name


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _org_of(entity: Namespace) -> Org:
    ids.remember_namespace(entity.name, entity.int_id)
    return Org(name=entity.name, int_id=entity.int_id)


def create_org(name: str) -> IssuedKey:
    """Register an org and issue its first API key; 409 if the name is taken."""
    validate_org_name(name)
    int_id = Namespace.allocate_ids(1)[0].id()

    @ndb.transactional(retries=5)
    def register() -> Namespace:
        if Namespace.key_for(name).get() is not None:
            raise Conflict(f"org {name!r} already exists", param="name", code="org_exists")
        entity = Namespace(key=Namespace.key_for(name), name=name, int_id=int_id)
        entity.create()
        return entity

    org = _org_of(register())
    return issue_key(org.name)


def get_org(name: str) -> Org:
    """The org of that name; 404 if there is none."""
    if not isinstance(name, str) or not ORG_NAME.match(name):
        raise NotFound(f"org {name!r} not found", param="org")
    entity = Namespace.key_for(name).get()
    if entity is None or entity.deleted:
        raise NotFound(f"org {name!r} not found", param="org")
    return _org_of(entity)


def issue_key(org_name: str) -> IssuedKey:
    """Create another API key for an existing org."""
    org = get_org(org_name)
    secret = KEY_PREFIX + secrets.token_urlsafe(30)
    prefix = secret[:PREFIX_LENGTH]
    ApiKey(key=ApiKey.key_for(_digest(secret)), org=org.name, prefix=prefix,
           created_at=utcnow()).put()
    return IssuedKey(org=org, secret=secret, prefix=prefix)


def revoke_key(org_name: str, prefix: str) -> int:
    """Revoke the org's keys that start with `prefix`; returns how many."""
    org = get_org(org_name)
    if not isinstance(prefix, str) or len(prefix) < PREFIX_LENGTH:
        raise ValidationFailed(f"the key prefix must be its first {PREFIX_LENGTH} characters",
                               param="prefix")
    matches = ApiKey.query(ApiKey.org == org.name, ApiKey.prefix == prefix,
                           namespace=ids.REGISTRY_NAMESPACE).fetch()
    matches = [k for k in matches if not k.revoked]
    if not matches:
        raise NotFound("no active key with that prefix", param="prefix")
    now = utcnow()
    for key in matches:
        key.revoked, key.revoked_at = True, now
    ndb.put_multi(matches)
    return len(matches)


def list_keys(org_name: str) -> list[ApiKey]:
    """The org's keys, revoked ones included, without their secrets."""
    org = get_org(org_name)
    return ApiKey.query(ApiKey.org == org.name, namespace=ids.REGISTRY_NAMESPACE).fetch()


def authenticate(secret: str | None) -> Org:
    """The org whose active key this is; 401 otherwise."""
    if not secret or not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        raise Unauthorized("missing or invalid API key")
    digest = _digest(secret)
    # Straight from the Datastore: neither the context cache nor Redis may hold a key
    # that was revoked since (app/cache.py).
    stored = ApiKey.key_for(digest).get(use_cache=False, use_global_cache=False)
    if stored is None or stored.revoked or not hmac.compare_digest(stored.key.id(), digest):
        raise Unauthorized("missing or invalid API key")
    return get_org(stored.org)
