"""An org's own API keys, managed with a `keys:write` key: /v1/keys (issue 16).

A key creates keys holding at most its own scopes and expiring no later than itself
(`orgs.check_grant`, 403 naming what it lacks); it lists the org's keys (never their
secrets) and revokes any of them by prefix, itself included: revoking is how a leaked
key is stopped, and any key trusted with key management may do it.
"""

from flask import Blueprint, g

from app import tenancy
from app.api.declare import (
    TENANT_ERRORS,
    body,
    link,
    operation,
    other_responses,
    response,
    scope,
)
from app.schemas import responses
from app.schemas.keys import KeyCreate
from app.services import orgs

blueprint = Blueprint("keys", __name__, url_prefix="/v1/keys")
blueprint.before_request(tenancy.require_org)
tenant = operation("keys", errors=TENANT_ERRORS)

#: What a client can call next with a new key's prefix.
KEY_LINKS = {
    "ListKeys": link("keys.list_keys", "List the org's keys."),
    "RevokeKey": link("keys.revoke_key", "Revoke this key.", prefix="$response.body#/keyPrefix"),
}


@blueprint.post("")
@scope("keys:write")
@tenant
@body(KeyCreate)
@response(responses.CreatedKey, 201, "The new key, shown this once.", links=KEY_LINKS)
@other_responses(400)
def create_key(fields):
    """Create a key with some of the caller's scopes and an expiry no later than its own."""
    orgs.check_grant(g.api_key, fields["scopes"], fields["expires_at"])
    return orgs.issue_key(
        g.org.name,
        scopes=fields["scopes"],
        expires_at=fields["expires_at"],
        name=fields.get("name"),
        created_by=g.api_key.prefix,
    )


@blueprint.get("")
@scope("keys:write")
@tenant
@response(responses.KeyList, 200, "The org's keys, revoked and expired ones included.")
def list_keys():
    """List the org's keys: prefix, name, scopes, created, last used, expiry, status."""
    keys = sorted(orgs.list_keys(g.org.name), key=_created, reverse=True)
    return {"keys": keys, "count": len(keys)}


def _created(key) -> float:
    return key.created_at.timestamp() if key.created_at else 0.0


@blueprint.delete("/<prefix>")
@scope("keys:write")
@tenant
@response(responses.Revoked, 200, "How many keys were revoked (1).")
@other_responses(400, 404)
def revoke_key(prefix):
    """Revoke one of the org's keys by its prefix (its first 12 characters); the next
    request with it is refused."""
    return {"revoked": orgs.revoke_key(g.org.name, prefix)}
