"""The original's "Model mixin", on NDB.

Every model written through NDB runs the mixin's lifecycle (`Lifecycle`): a
defaults step, a validator, and hooks before and after create and update. The
models of an org's data and the registry's orgs (`Model`) also get the mixin's
properties (`Id_`, `CreatedAt`, `UpdatedAt`, `Deleted`), a Kind name, a soft delete
with its own hooks, and the org-scoped query (`query_org`). API keys keep the
registry's own shape and take the lifecycle only. `JsonShadowProperty` reproduces the Go
side's shadow fields: an unindexed string property (`Dimensions_`, `Metadata_`)
holding JSON, seen from Python as a list or dict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar, ParamSpec, Self, TypeVar, cast

from google.cloud import ndb

from app.errors import ValidationFailed
from app.models import ids

ROOT_KIND = "synckey"
ROOT_ID = 1


def utcnow() -> datetime:
    """Now, in UTC, at the microsecond precision Datastore keeps."""
    return datetime.now(UTC)


def root_key(namespace: str | None = None) -> ndb.Key:
    """The ancestor of every meter and event of an org: `synckey/1`."""
    if namespace is None:
        return ndb.Key(ROOT_KIND, ROOT_ID)
    return ndb.Key(ROOT_KIND, ROOT_ID, namespace=namespace or None)


class JsonShadowProperty(ndb.TextProperty):
    """A list or dict stored as an unindexed JSON string.

    Reads accept what either side writes: a missing property, `""`, `null`,
    `[]` and `{}` all read as an empty list or dict. Writes always store a
    string, `null` when empty, exactly as the Go side does.
    """

    def __init__(self, name: str, *, empty: Callable[[], list | dict]):
        super().__init__(name)
        self._empty = empty

    def _validate(self, value):
        if not isinstance(value, type(self._empty())):
            raise TypeError(f"{self._name} holds a {type(self._empty()).__name__}")

    def _to_base_type(self, value):
        if not value:
            return "null"
        return json.dumps(value, separators=(",", ":"), sort_keys=True)

    def _from_base_type(self, value):
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if value in ("", "null"):
            return self._empty()
        decoded = json.loads(value)
        return decoded if decoded is not None else self._empty()

    def _get_user_value(self, entity):
        value = super()._get_user_value(entity)
        if value is None:
            value = self._empty()
            self._set_value(entity, value)
        return value


class OptionalProperty(ndb.TextProperty):
    """An unindexed string stored only when set, so the original kinds keep their shape."""

    def _to_datastore(self, entity, data, prefix="", repeated=False):
        if self._get_user_value(entity) is None:
            return set()
        return super()._to_datastore(entity, data, prefix=prefix, repeated=repeated)


class OptionalFlag(ndb.BooleanProperty):
    """An unindexed boolean stored only when true, so the original kinds keep their shape
    (issue 17: a meter's `AllowBackfill`)."""

    def __init__(self, name: str):
        super().__init__(name, indexed=False, default=False)

    def _to_datastore(self, entity, data, prefix="", repeated=False):
        if not self._get_user_value(entity):
            return set()
        return super()._to_datastore(entity, data, prefix=prefix, repeated=repeated)


P = ParamSpec("P")
R = TypeVar("R")
L = TypeVar("L", bound="Lifecycle")


def transactional(retries: int) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """`ndb.transactional(retries=...)` with the decorated function's own signature
    (NDB's decorator is untyped, which would make every transaction body `Any`)."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        return cast(Callable[P, R], ndb.transactional(retries=retries)(function))

    return decorate


class Lifecycle:
    """The mixin's lifecycle, for any NDB model: defaults, validation, and hooks before
    and after create and update. Services write models only through `create`, `update`
    (or `update_multi`), never a bare `put`, so no write skips them."""

    # -- the hooks models extend -----------------------------------------------

    def defaults(self) -> None:
        """Fill defaults before validation; models extend this."""

    def validate(self) -> list[tuple[str, str]]:
        """Problems as (param, message) pairs; empty when the entity is valid."""
        return []

    def before_create(self) -> None:
        """Runs inside create(), after validation, before the put."""

    def after_create(self) -> None:
        """Runs after create() stored the entity."""

    def before_update(self) -> None:
        """Runs inside update(), after validation, before the put."""

    def after_update(self) -> None:
        """Runs after update() stored the entity."""

    # -- the writes that run them ----------------------------------------------

    def _check(self) -> None:
        self.defaults()
        problems = self.validate()
        if problems:
            param, message = problems[0]
            raise ValidationFailed(message, param=param)

    def create(self) -> Self:
        """Validate and store a new entity, running the create hooks."""
        self._check()
        self.before_create()
        self.put()  # type: ignore[attr-defined]  # a mixin of ndb.Model
        self.after_create()
        return self

    def update(self) -> Self:
        """Validate and store changes to an existing entity, running the update hooks."""
        self._check()
        self.before_update()
        self.put()  # type: ignore[attr-defined]  # a mixin of ndb.Model
        self.after_update()
        return self

    @staticmethod
    def update_multi(entities: list[L]) -> list[L]:
        """`update` of several entities in one batch put (one RPC): every one is
        validated and its before-hook run before anything is stored."""
        for entity in entities:
            entity._check()
            entity.before_update()
        ndb.put_multi(entities)
        for entity in entities:
            entity.after_update()
        return entities


class Model(Lifecycle, ndb.Model):
    """Base of every model of an org's data and of the registry's orgs: the lifecycle,
    plus the mixin's properties, its soft delete and its helpers."""

    KIND: ClassVar[str] = ""

    id_ = ndb.StringProperty("Id_")
    created_at = ndb.DateTimeProperty("CreatedAt", tzinfo=UTC)
    updated_at = ndb.DateTimeProperty("UpdatedAt", tzinfo=UTC)
    deleted = ndb.BooleanProperty("Deleted", default=False)

    @classmethod
    def _get_kind(cls) -> str:
        return cls.KIND or cls.__name__

    def before_delete(self) -> None:
        """Runs before delete() marks the entity deleted."""

    def after_delete(self) -> None:
        """Runs after delete() stored the deleted mark."""

    def delete(self) -> Model:
        """Soft-delete: set `Deleted` and store, running the delete hooks."""
        self.before_delete()
        self.deleted = True
        self.put()
        self.after_delete()
        return self

    # -- what every put does ---------------------------------------------------

    key: ndb.Key  # ndb.Model's (None until the entity has one)

    def ensure_key(self) -> ndb.Key:
        """Give a new entity its complete key (under the org root by default)."""
        if self.key is None or self.key.id() is None:
            parent = self.key.parent() if self.key is not None else root_key()
            allocated = type(self).allocate_ids(1, parent=parent)[0]
            self.key = allocated
        return self.key

    def public_id(self) -> str:
        """The hashid this entity is addressed by."""
        return ids.encode_key(self.key)

    def stamp(self, now: datetime | None = None) -> None:
        """Set the mixin's bookkeeping properties for a put."""
        now = now or utcnow()
        self.ensure_key()
        if self.created_at is None:
            self.created_at = now
        self.updated_at = now
        if not self.id_:
            self.id_ = self.public_id()
        for prop in self._properties.values():
            if isinstance(prop, JsonShadowProperty):
                prop._get_user_value(self)  # an absent shadow field is stored as "null"

    def _pre_put_hook(self):
        self.stamp()

    @classmethod
    def get_by_public_id(cls, public_id: str, namespace: str | None = None):
        """The entity an id names in the current (or given) namespace, or None."""
        if namespace is None:
            namespace = ndb.get_context().get_namespace()
        key = ids.decode_key(public_id, kind=cls._get_kind(), namespace=namespace)
        return key.get() if key is not None else None

    @classmethod
    def query_org(cls, *filters, **kwargs) -> ndb.Query:
        """A query over this kind under the current org's root."""
        return cls.query(*filters, ancestor=root_key(), **kwargs)
