"""Who is calling: the one place that authenticates a request and opens its org.

`require_org` (a blueprint `before_request` hook) reads `Authorization: Bearer
<key>`, finds the key's org, counts the request against the org's rate limit
(`app.ratelimit`) and switches the request's NDB context to that org's namespace.
Every model and service below then works in that namespace without being told.
`require_admin` guards the admin API with the configured token.
"""

from __future__ import annotations

import hmac

from flask import current_app, g, request

from app import datastore, ratelimit
from app.errors import NotFound, Unauthorized
from app.services import orgs


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_org() -> None:
    """Authenticate the caller's API key and enter its org's namespace."""
    if request.method == "OPTIONS":
        return
    org = orgs.authenticate(_bearer())
    g.org = org
    ratelimit.check(org.name)
    datastore.use_namespace(org.namespace)


def current_org() -> orgs.Org:
    """The org of the current request."""
    return g.org


def require_admin() -> None:
    """Allow the request only with the configured admin token."""
    expected = current_app.config["METERING"].admin_token
    if not expected:
        raise NotFound("the admin API is disabled: set METERING_ADMIN_TOKEN")
    given = _bearer() or ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("missing or invalid admin token")
