"""Operator API: orgs and their keys, under /v1/admin, with the admin token."""

from flask import Blueprint

from app import tenancy
from app.api.declare import (
    ADMIN_ERRORS,
    arguments,
    body,
    link,
    operation,
    other_responses,
    response,
)
from app.openapi.operations import ADMIN_TOKEN
from app.schemas import responses
from app.schemas.admin import OrgCreate, OrgDeleteQuery
from app.schemas.keys import AdminKeyCreate
from app.services import orgs

#: Most entities one DELETE ...?purge=true deletes: a few commits of 500, well within a
#: request's deadline; the caller repeats until `purgeComplete`.
PURGE_PER_REQUEST = 2000

blueprint = Blueprint("admin", __name__, url_prefix="/v1/admin")
blueprint.before_request(tenancy.require_admin)
operator = operation("admin", security=ADMIN_TOKEN, errors=ADMIN_ERRORS)


#: What an operator can call next with a new key's org and prefix.
KEY_LINKS = {
    "ListKeys": link("admin.list_keys", "List the org's keys.", name="$response.body#/name"),
    "CreateKey": link("admin.create_key", "Issue another key.", name="$response.body#/name"),
    "RevokeKey": link(
        "admin.revoke_key",
        "Revoke this key.",
        name="$response.body#/name",
        prefix="$response.body#/keyPrefix",
    ),
}


@blueprint.post("/orgs")
@operator
@body(OrgCreate)
@response(responses.IssuedKey, 201, "The org and its first key.", links=KEY_LINKS)
@other_responses(400, 409)
def create_org(fields):
    """Create an org and its first API key (shown once)."""
    return orgs.create_org(fields["name"])


@blueprint.delete("/orgs/<name>")
@operator
@arguments(OrgDeleteQuery)
@response(responses.OrgArchived, 200, "The archived org, and what this call purged.")
@other_responses(400, 409)
def delete_org(args, name):
    """Archive an org: revoke its keys, keep its data; `purge=true` deletes the data too,
    at most PURGE_PER_REQUEST entities per call. Safe to repeat."""
    purge = args["purge"]
    archived = orgs.archive_org(name)
    purged = (
        orgs.purge_org(name, max_entities=PURGE_PER_REQUEST)
        if purge
        else orgs.Purged(archived.name, 0, complete=archived.purged)
    )
    return {
        "name": archived.name,
        "archived": True,
        "revokedKeys": archived.revoked_keys,
        "purged": purged.deleted,
        "purgeComplete": purged.complete,
    }


@blueprint.get("/orgs/<name>/keys")
@operator
@response(responses.KeyList, 200, "The org's keys.")
def list_keys(name):
    """List an org's keys by prefix, without secrets."""
    keys = orgs.list_keys(name)
    return {"keys": keys, "count": len(keys)}


@blueprint.post("/orgs/<name>/keys")
@operator
@body(AdminKeyCreate, optional=True)
@response(responses.IssuedKey, 201, "The org and its new key.", links=KEY_LINKS)
@other_responses(400)
def create_key(fields, name):
    """Issue another API key for an org (shown once); the body may choose its scopes,
    expiry and name (without one: every scope but events:backfill, no expiry)."""
    return orgs.issue_key(
        name,
        scopes=fields.get("scopes"),
        expires_at=fields["expires_at"],
        name=fields.get("name"),
    )


@blueprint.delete("/orgs/<name>/keys/<prefix>")
@operator
@response(responses.Revoked, 200, "How many keys were revoked.")
@other_responses(400)
def revoke_key(name, prefix):
    """Revoke an org's key by its prefix."""
    return {"revoked": orgs.revoke_key(name, prefix)}
