"""Who is calling: the one place that authenticates a request and opens its org.

`require_org` (a blueprint `before_request` hook) reads `Authorization: Bearer
<key>`, finds the key's org, counts the request against the org's rate limit
(`app.ratelimit`) and switches the request's NDB context to that org's namespace.
Every model and service below then works in that namespace without being told.
`require_admin` guards the admin API with the configured token.

Failed authentications are limited per client address (`app.ratelimit`), and the
digests of keys found unknown or revoked are remembered for `UNKNOWN_KEY_SECONDS`
in this process (`UnknownKeys`), so a flood of one wrong key costs one Datastore
lookup per process and half-minute, not one per request. There is deliberately no
cache of *valid* keys: every request with a valid key looks it up, so a revocation
or an expiry takes effect on the very next request. What a process does remember of a
key it let in are the facts that never change once the key exists (`KnownKeys`: org,
scopes, expiry): a view marked `reads_api_key_itself` (the limit check) reads the key's
entity in its own lookup, with its own keys, and confirms it before answering, so a
known key's check is one Datastore round trip instead of two (issue 16). An expired
key is remembered with its refusal, so it keeps being told that it expired. The key's scopes
become `g.scopes`, which `require_scope` checks; its use is noted for the last-used
recorder (`app.services.key_usage`), which writes in the background. A newly created
key is never refused by this cache for longer than `UNKNOWN_KEY_SECONDS` (and only if
someone presented it before it existed, which its 240 random bits make impossible in
practice).
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flask import current_app, g, request

from app import datastore, ratelimit
from app.errors import Forbidden, NotFound, TooManyRequests, Unauthorized
from app.models import utcnow
from app.openapi.operations import operation_of
from app.services import orgs
from app.services.key_usage import LastUsed


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


#: How long a key found unknown or revoked is refused without a lookup, and how many
#: such keys one process remembers (the oldest are forgotten first).
UNKNOWN_KEY_SECONDS = 30.0
UNKNOWN_KEY_ENTRIES = 10_000


class UnknownKeys:
    """Digests of API keys lately found unknown, revoked or expired, each for a short
    while, with the refusal each got (`refusal`)."""

    def __init__(
        self,
        seconds: float = UNKNOWN_KEY_SECONDS,
        entries: int = UNKNOWN_KEY_ENTRIES,
        clock=time.monotonic,
    ):
        self._seconds, self._entries, self._clock = seconds, entries, clock
        self._lock = threading.Lock()
        self._until: OrderedDict[str, tuple[float, Unauthorized | None]] = OrderedDict()

    def __contains__(self, digest: str) -> bool:
        return self._entry(digest) is not None

    def refusal(self, digest: str) -> Unauthorized | None:
        """The refusal the key got when it was remembered, if it still is."""
        entry = self._entry(digest)
        if entry is None:
            return None
        return entry[1] or Unauthorized("missing or invalid API key")

    def _entry(self, digest: str) -> tuple[float, Unauthorized | None] | None:
        with self._lock:
            entry = self._until.get(digest)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._until[digest]
                return None
            return entry

    def add(self, digest: str, refusal: Unauthorized | None = None) -> None:
        with self._lock:
            self._until.pop(digest, None)
            self._until[digest] = (self._clock() + self._seconds, refusal)
            while len(self._until) > self._entries:
                self._until.popitem(last=False)


def client_address() -> str:
    """The caller's address, for limiting failed authentications.

    On App Engine every request reaches the app through Google's front end and a
    local proxy, so `remote_addr` is that proxy's address, the same for every
    caller. The front end puts the caller's address in `X-Appengine-User-Ip` and
    removes any `X-Appengine-*` header a client sends, so there (only) that header
    is the caller's address as App Engine saw it. `X-Forwarded-For` is not used: a
    client can put any address at its start. IPv6 callers are limited per /64.
    """
    address = request.remote_addr or ""
    if current_app.config["METERING"].production:
        address = request.headers.get("X-Appengine-User-Ip") or address
    return _limited_unit(address)


def _limited_unit(address: str) -> str:
    """The unit one limit covers: an IPv4 address, or an IPv6 /64 (one subscriber's
    network, whose 2^64 addresses would otherwise each get a limit of their own)."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return address[:64] or "unknown"
    if parsed.version == 6:
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _unknown_keys() -> UnknownKeys:
    keys = current_app.extensions.get("unknown_keys")
    if keys is None:  # two threads may both make one: only the first one is kept
        keys = current_app.extensions.setdefault("unknown_keys", UnknownKeys())
    return keys


def _authenticate(secret: str | None) -> orgs.Caller:
    """`orgs.authenticate`, skipping the lookup of a key lately found unknown, revoked or
    expired (and answering the same refusal as then). A key it lets in is remembered
    (`KnownKeys`: its immutable facts only)."""
    if not secret:
        return orgs.authenticate(secret)
    digest = orgs.key_digest(secret)
    unknown = _unknown_keys()
    refusal = unknown.refusal(digest)
    if refusal is not None:
        raise Unauthorized(refusal.message, code=refusal.code)
    try:
        caller = orgs.authenticate(secret)
    except Unauthorized as error:
        unknown.add(digest, error)
        _known_keys().forget(digest)
        raise
    _known_keys().remember(caller)
    return caller


# -- issue 16, limit checks: the API key read in the view's own lookup -------------------


#: How many keys one process remembers the immutable facts of (the oldest are forgotten).
KNOWN_KEY_ENTRIES = 100_000


class KnownKeys:
    """What this process learnt of keys it authenticated: digest -> the `Caller` as
    authenticated (org, scopes, prefix, expiry: facts that never change once the key
    exists). Never "the key is valid": a view that takes the remembered caller still
    reads the key's entity fresh, in its own lookup (`reads_api_key_itself`)."""

    def __init__(self, entries: int = KNOWN_KEY_ENTRIES):
        self._entries = entries
        self._lock = threading.Lock()
        self._callers: OrderedDict[str, orgs.Caller] = OrderedDict()

    def get(self, digest: str) -> orgs.Caller | None:
        with self._lock:
            return self._callers.get(digest)

    def remember(self, caller: orgs.Caller) -> None:
        with self._lock:
            if caller.digest in self._callers:
                return
            self._callers[caller.digest] = dataclasses.replace(caller, last_used_at=None)
            while len(self._callers) > self._entries:
                self._callers.popitem(last=False)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._callers.pop(digest, None)


def _known_keys() -> KnownKeys:
    keys = current_app.extensions.get("known_keys")
    if keys is None:  # two threads may both make one: only the first one is kept
        keys = current_app.extensions.setdefault("known_keys", KnownKeys())
    return keys


@dataclasses.dataclass
class PendingKey:
    """A request let in on a remembered caller, its key not yet read: the view reads
    `key` (the `api-key` entity's raw key) in its own lookup and hands what it found to
    `confirm` before using anything else it read. Until then nothing may be answered."""

    caller: orgs.Caller
    key: Any
    scope: str | None = None  # the one the view requires (checked on the remembered ones)
    confirmed: bool = False

    def confirm(self, stored: Any) -> None:
        """Let the request go on if the fresh `api-key` entity `stored` (None: not found)
        still lets the key in; 401 otherwise (and the key is refused from then on, like
        any key found revoked)."""
        self.confirmed = True  # decided, either way: a refusal is not read again
        try:
            caller = orgs.confirm(self.caller, stored, utcnow())
        except Unauthorized as error:
            _refused(self.caller.digest, error)
            raise
        g.api_key = caller
        key_usage().touch(caller.digest, caller.last_used_at)
        if caller.scopes != self.caller.scopes:  # never, unless edited in the Datastore
            _known_keys().forget(caller.digest)
            _known_keys().remember(caller)
            g.scopes = caller.scopes
            if self.scope is not None:
                require_scope(self.scope)


def _refused(digest: str, error: Unauthorized) -> None:
    _unknown_keys().add(digest, error)
    _known_keys().forget(digest)
    ratelimit.count_unauthenticated(client_address())


def pending_key() -> PendingKey | None:
    """The request's key still to be read by its view (see `reads_api_key_itself`)."""
    pending = g.get("pending_key")
    return pending if pending is not None and not pending.confirmed else None


def reads_api_key_itself(view: Callable) -> Callable:
    """Mark a view that reads the caller's `api-key` entity in its own Datastore lookup
    (`pending_key().key`, then `pending_key().confirm(found)`), so that a request of a
    key this process already knows makes one round trip instead of two.

    `require_org` then lets the request in on the key's remembered facts (org, scopes,
    expiry), not on whether it is valid: this wrapper makes sure the key was confirmed
    fresh before any answer leaves, whatever the view did (an error, a path that read
    nothing), by reading the key alone if the view did not."""

    @functools.wraps(view)
    def confirmed(*args, **kwargs):
        try:
            answer = view(*args, **kwargs)
        except Exception:
            _confirm_alone()
            raise
        _confirm_alone()
        return answer

    confirmed.reads_api_key_itself = True  # type: ignore[attr-defined]
    return confirmed


def _confirm_alone() -> None:
    pending = pending_key()
    if pending is None:
        return
    pending.confirm(orgs.read_api_key(pending.key))


def _view_reading_api_key() -> Callable | None:
    """The request's view if it reads the API key itself, else None."""
    view = current_app.view_functions.get(request.endpoint or "")
    return view if getattr(view, "reads_api_key_itself", False) else None


def _remembered(secret: str | None, view: Callable) -> PendingKey | None:
    """A pending key for a key this process authenticated before, unless it is lately
    refused or its (immutable) expiry has come: then the full authentication answers."""
    if not secret or not secret.startswith(orgs.KEY_PREFIX) or len(secret) > 200:
        return None
    digest = orgs.key_digest(secret)
    known = _known_keys().get(digest)
    if known is None or _unknown_keys().refusal(digest) is not None:
        return None
    if known.expires_at is not None and known.expires_at <= utcnow():
        return None
    operation = operation_of(view)
    scope = operation.scope if operation is not None else None
    return PendingKey(known, orgs.api_key_lookup_key(digest), scope)


def key_usage() -> LastUsed:
    """The app's last-used recorder (one per app, made on first use)."""
    recorder = current_app.extensions.get("key_usage")
    if recorder is None:  # two threads may both make one: only the first one is kept
        recorder = current_app.extensions.setdefault(
            "key_usage",
            LastUsed(current_app.extensions["ndb"], current_app.extensions["ndb_context_options"]),
        )
    return recorder


def require_org() -> None:
    """Authenticate the caller's API key and enter its org's namespace."""
    if request.method == "OPTIONS":
        return
    address = client_address()
    ratelimit.refuse_blocked(address)
    secret = _bearer()
    view = _view_reading_api_key()
    pending = _remembered(secret, view) if view is not None else None
    if pending is not None:  # its view reads the key fresh, in its own lookup
        caller = pending.caller
        g.pending_key = pending
    else:
        try:
            caller = _authenticate(secret)
        except Unauthorized:
            ratelimit.count_unauthenticated(address)  # 429 instead, once over the limit
            raise
        key_usage().touch(caller.digest, caller.last_used_at)
    org = caller.org
    g.org = org  # read by app.ratelimit (whose budget) and app.headers (no-store)
    g.scopes = caller.scopes  # what the key may do, checked by `require_scope`
    g.api_key = caller  # what it may grant (app.api.keys)
    try:
        ratelimit.check(org.name)
    except TooManyRequests:
        _confirm_alone()  # a key let in on memory: 401 if revoked, before a 429
        raise
    datastore.use_namespace(org.namespace)


def require_scope(scope: str) -> None:
    """Refuse the request (403, naming the scope) unless the caller's key holds `scope`."""
    if scope not in g.get("scopes", frozenset()):
        raise Forbidden(
            f"this API key lacks the scope {scope!r} this operation needs", param="scope"
        )


def require_admin() -> None:
    """Allow the request only with the configured admin token."""
    expected = current_app.config["METERING"].admin_token
    if not expected:
        raise NotFound("the admin API is disabled: set METERING_ADMIN_TOKEN")
    address = client_address()
    ratelimit.refuse_blocked(address)
    given = _bearer() or ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        ratelimit.count_unauthenticated(address)  # guessing the token is limited too
        raise Unauthorized("missing or invalid admin token")


# -- issue 16, customer portal ---------------------------------------------------------


def require_portal_token() -> None:
    """Authenticate a customer portal token (`pt_...`) and enter its org's namespace.

    The signature is checked without any read; the org's policy (live, revocations,
    allowed origins) comes from this process's copy (`portal.policy.cached`, at most one
    lookup per org every few seconds). A browser's `Origin` the org does not allow is
    refused (403) before anything is read; an allowed one is noted in `g.portal_origin`
    so the answer, errors included, tells the browser it may read it. The token grants
    no API key scope: every org route refuses it (401, it is no API key).
    """
    if request.method == "OPTIONS":
        return
    # Lazy: the portal's services are not needed by the org routes this module serves.
    from app.models import ids
    from app.services.portal import policy, tokens

    keys = tokens.signing_keys(current_app.config["METERING"])
    address = client_address()
    ratelimit.refuse_blocked(address)
    try:
        token = tokens.verify(_bearer(), keys)
        current = policy.cached(token.org)
        origin = request.headers.get("Origin")
        if policy.check_origin(current, origin, request.host):
            g.portal_origin = origin
        policy.check(token, current, policy.now_ms())
    except Unauthorized:
        ratelimit.count_unauthenticated(address)
        raise
    ids.remember_namespace(token.org, token.org_id)
    g.org = orgs.Org(name=token.org, int_id=token.org_id)
    g.portal_token = token
    g.scopes = frozenset()
    ratelimit.check(token.org)
    datastore.use_namespace(token.org)


def caller_key_prefix() -> str:
    """(issue 17) The public prefix of the caller's API key, by which keys are listed: who
    made a correction. "" when the request carries no bearer key."""
    return (_bearer() or "")[: orgs.PREFIX_LENGTH]
