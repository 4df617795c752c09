"""An org's portal policy: revocations of its tokens and the browser origins allowed.

Verifying a token reads nothing (`tokens`), yet a revocation must apply within seconds.
So each process keeps every org's policy (one `portal-policy` entity, and the org's
registry entry, read together in one lookup) for `portal_policy_cache_seconds`, 2 by
default: a revocation made in this process applies to the next request, one made in
any other within that many seconds. A portal request therefore costs at most one
lookup per org and process every 2 seconds, whatever the traffic.

A revocation is a "not before" moment: the org's tokens (or one user's) issued before it
are refused. Tokens live at most a day, so a user's revocation older than that can
never refuse anything and is pruned when the policy is next written; the map stays the
size of one day's revocations (at most `MAX_USER_REVOCATIONS`). Users are held by a
digest, so the policy holds no customer's id in clear.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import current_app
from google.cloud import ndb

from app.core.portal import MAX_LIFE_SECONDS
from app.errors import Conflict, Forbidden, Unauthorized, ValidationFailed
from app.models import Namespace, PortalPolicy, transactional
from app.services.portal.tokens import PortalToken

#: Most per-user revocations one day may hold (then: revoke all the org's tokens).
MAX_USER_REVOCATIONS = 10_000
#: How long a user's revocation is kept: a token's longest life, and clock skew.
_KEEP_MS = (MAX_LIFE_SECONDS + 300) * 1000
_FRESH = {"use_cache": False, "use_global_cache": False}


@dataclass(frozen=True)
class Policy:
    """What one org's portal requests are checked against."""

    live: bool = False
    org_id: int = 0
    origins: frozenset[str] = frozenset()
    revoked_before_ms: int = 0
    users: dict[str, int] = field(default_factory=dict)

    def not_before_ms(self, user_id: str) -> int:
        """Tokens of `user_id` issued before this moment are refused."""
        return max(self.revoked_before_ms, self.users.get(user_digest(user_id), 0))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def user_digest(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32]


def _decode(org: str, registry: Namespace | None, stored: PortalPolicy | None) -> Policy:
    if registry is None or registry.deleted or registry.name != org:
        return Policy()
    if stored is None:
        return Policy(live=True, org_id=registry.int_id)
    return Policy(
        live=True,
        org_id=registry.int_id,
        origins=frozenset(json.loads(stored.allowed_origins or "[]")),
        revoked_before_ms=stored.revoked_before_ms or 0,
        users=json.loads(stored.user_revocations or "{}"),
    )


def read(org: str) -> Policy:
    """The org's policy as stored now (one lookup of two keys)."""
    registry, stored = ndb.get_multi([Namespace.key_for(org), PortalPolicy.key_for(org)], **_FRESH)
    return _decode(org, registry, stored)


class PolicyCache:
    """One app's copies of orgs' policies, each trusted for `seconds` (per app rather than
    per module, so that two apps in one test process behave as two processes)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self._seconds, self._clock = seconds, clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, Policy]] = {}  # org -> (trusted until, policy)

    def get(self, org: str) -> Policy:
        """The org's policy, read at most once per `seconds`."""
        now = self._clock()
        with self._lock:
            known = self._known.get(org)
        if known is not None and known[0] > now:
            return known[1]
        policy = read(org)
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[org] = (now + self._seconds, policy)
        return policy

    def forget(self, org: str) -> None:
        with self._lock:
            self._known.pop(org, None)


def _app_cache() -> PolicyCache:
    caches = current_app.extensions
    found: PolicyCache | None = caches.get("portal_policies")
    if found is None:  # two threads may both make one: only the first one is kept
        seconds = current_app.config["METERING"].portal_policy_cache_seconds
        found = caches.setdefault("portal_policies", PolicyCache(seconds))
    return found


def cached(org: str) -> Policy:
    """The org's policy as this app last read it, at most the configured seconds ago."""
    return _app_cache().get(org)


def forget(org: str) -> None:
    """Drop this app's copy: the policy was just written here."""
    _app_cache().forget(org)


def check(token: PortalToken, policy: Policy, at_ms: int) -> None:
    """Refuse a verified token of a gone org, an expired or a revoked one (401)."""
    if not policy.live or policy.org_id != token.org_id:
        raise Unauthorized("invalid portal token: its org is gone", code="invalid_token")
    if token.expires_ms <= at_ms:
        expired = datetime.fromtimestamp(token.expires_ms / 1000, UTC).isoformat()
        raise Unauthorized(f"this portal token expired at {expired}", code="token_expired")
    if token.issued_ms <= policy.not_before_ms(token.user_id):
        raise Unauthorized("this portal token was revoked", code="token_revoked")


def check_origin(policy: Policy, origin: str | None, own_host: str) -> bool:
    """Whether a browser at `origin` may read the answer (no Origin: not a browser's
    cross-origin call; the service's own /portal page is always allowed). Refuses
    (403 `origin_not_allowed`) any other origin the org does not list."""
    if origin is None:
        return False
    if origin in policy.origins or urlsplit(origin).netloc == own_host:
        return True
    raise Forbidden(
        f"origin {origin[:200]!r} is not allowed to call this org's portal API; "
        "add it with PUT /v1/portal/settings",
        param="Origin",
        code="origin_not_allowed",
    )


def normalize_origin(text: str, where: str) -> str:
    """An exact origin, scheme://host[:port], in the form browsers send it."""
    parts = urlsplit(text.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
        or text.strip().endswith("/")
    ):
        raise ValidationFailed(
            f"{where}: an origin is scheme://host[:port] (http or https), with nothing after",
            param=where,
        )
    try:
        port = parts.port
    except ValueError:
        raise ValidationFailed(f"{where}: the port is not a number", param=where) from None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def _stored(org: str) -> PortalPolicy:
    return PortalPolicy.key_for(org).get(**_FRESH) or PortalPolicy(key=PortalPolicy.key_for(org))


def set_origins(org: str, origins: list[str]) -> list[str]:
    """Replace the org's allowed origins; the normalized list."""
    normalized = sorted(
        {normalize_origin(o, f"allowedOrigins[{i}]") for i, o in enumerate(origins)}
    )

    @transactional(retries=5)
    def write() -> None:
        stored = _stored(org)
        stored.allowed_origins = json.dumps(normalized)
        stored.put()

    write()
    forget(org)
    return normalized


def revoke(org: str, user_id: str | None) -> int:
    """Refuse from now on every token of the org (or of one user) issued until now; the
    moment (ms) it applies from."""

    @transactional(retries=5)
    def write() -> int:
        stored = _stored(org)
        moment = max(now_ms(), stored.revoked_before_ms or 0)
        users = {
            digest: at
            for digest, at in json.loads(stored.user_revocations or "{}").items()
            if at > moment - _KEEP_MS
        }
        if user_id is None:
            stored.revoked_before_ms = moment
        else:
            users[user_digest(user_id)] = moment
            if len(users) > MAX_USER_REVOCATIONS:
                raise Conflict(
                    f"more than {MAX_USER_REVOCATIONS} users' tokens were revoked within a "
                    "day; revoke all the org's tokens instead (no userId)",
                    param="userId",
                    code="too_many_revocations",
                )
        stored.user_revocations = json.dumps(users, separators=(",", ":"))
        stored.put()
        return moment

    moment = write()
    forget(org)
    return moment


def issue_floor(org: str, user_id: str) -> int:
    """The earliest issue time (ms) a new token of `user_id` may carry: after every
    revocation stored, so that a token issued just after one (even by a process whose
    clock is behind) is never refused by it."""
    return max(now_ms(), read(org).not_before_ms(user_id) + 1)
