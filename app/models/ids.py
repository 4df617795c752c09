"""Public ids: hashids of a key's whole path, as the original service makes them.

An id encodes `[kindCode, intId, parentKindCode, parentIntId, ..., namespaceCode]`,
walking from the entity up its ancestors, namespace last (0 for the default
namespace, otherwise the org's registered `IntId`). It therefore decodes back to
the full key without a query, and an id minted in one org never decodes to a
key of another: the namespace code would not match.
"""

from __future__ import annotations

import functools
import threading

import hashids as _hashids_module
from google.cloud import ndb
from hashids import Hashids

# hashids reshuffles its alphabet once per number with `_reorder`, a pure function of
# (alphabet, salt) that sees only a few hundred distinct argument pairs for our ids (the
# shuffle for each position depends on the first character chosen, not on the number).
# Memoizing it makes an id about six times cheaper; the output is unchanged (tested).
if not hasattr(_hashids_module._reorder, "cache_info"):
    _hashids_module._reorder = functools.lru_cache(maxsize=4096)(_hashids_module._reorder)

KIND_CODES = {
    "namespace": 4,
    "organization": 6,
    "user": 13,
    "synckey": 59,
    "meter": 202,
    "meter-event": 204,
    # issue 14 (alerts): public ids of alert rules
    "alert-rule": 210,
    # issue 14, webhooks: endpoints are addressed by public id (messages by webhook-id).
    "webhook-endpoint": 230,
    # issue 16, limits: a limit's id (its integer id is a hash of meter and user)
    "usage-limit": 250,
}
KINDS_BY_CODE = {code: kind for kind, code in KIND_CODES.items()}
MIN_LENGTH = 10
REGISTRY_NAMESPACE = "_namespaces"

_codec: Hashids | None = None
_namespace_codes: dict[str, int] = {"": 0}
_namespace_names: dict[int, str] = {0: ""}
_lock = threading.Lock()


def configure(salt: str) -> None:
    """Set the deployment's hashid salt; called once by the app factory."""
    global _codec
    _codec = Hashids(salt=salt, min_length=MIN_LENGTH)


def _hashids() -> Hashids:
    if _codec is None:
        raise RuntimeError("ids.configure(salt) was not called")
    return _codec


def encode_numbers(*numbers: int) -> str:
    """The hashid of a list of numbers (for entities keyed by name, like orgs)."""
    return _hashids().encode(*numbers)


def remember_namespace(name: str, code: int) -> None:
    """Record an org namespace's code (it never changes once registered)."""
    with _lock:
        _namespace_codes[name] = code
        _namespace_names[code] = name


def namespace_code(name: str | None) -> int:
    """The number that ids carry for a namespace; looks the registry up once."""
    name = name or ""
    code = _namespace_codes.get(name)
    if code is None:
        entity = ndb.Key("namespace", name, namespace=REGISTRY_NAMESPACE).get()
        if entity is None:
            raise LookupError(f"namespace {name!r} is not registered")
        code = entity.int_id
        remember_namespace(name, code)
    return code


def encode_key(key: ndb.Key) -> str:
    """The public id of a key whose path holds integer ids only."""
    numbers: list[int] = []
    for kind, ident in reversed(key.pairs()):
        if not isinstance(ident, int) or kind not in KIND_CODES:
            raise ValueError(f"key {key!r} has no public id form")
        numbers += [KIND_CODES[kind], ident]
    numbers.append(namespace_code(key.namespace()))
    return _hashids().encode(*numbers)


def decode_key(public_id: str, *, kind: str, namespace: str | None) -> ndb.Key | None:
    """The key an id stands for, or None unless it is a `kind` key of `namespace`."""
    if not isinstance(public_id, str) or not public_id or len(public_id) > 200:
        return None
    numbers = _hashids().decode(public_id)
    if len(numbers) < 3 or len(numbers) % 2 == 0:
        return None
    if numbers[-1] != namespace_code(namespace):
        return None
    body = numbers[:-1]
    leaf_first = [(body[i], body[i + 1]) for i in range(0, len(body), 2)]
    if KINDS_BY_CODE.get(leaf_first[0][0]) != kind:
        return None
    flat: list = []
    for code, ident in reversed(leaf_first):
        kind_name = KINDS_BY_CODE.get(code)
        if kind_name is None or not 0 < ident < 1 << 63:
            return None
        flat += [kind_name, ident]
    # Re-encoding must give the same text: hashids decodes some foreign strings too.
    key = ndb.Key(*flat, namespace=namespace or None)
    return key if encode_key(key) == public_id else None
