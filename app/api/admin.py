"""Operator API: orgs and their keys, under /v1/admin, with the admin token."""

from flask import Blueprint

from app import tenancy
from app.api.requests import body, query
from app.schemas import format_time
from app.schemas.admin import OrgCreate, OrgDeleteQuery
from app.services import orgs

#: Most entities one DELETE ...?purge=true deletes: a few commits of 500, well within a
#: request's deadline; the caller repeats until `purgeComplete`.
PURGE_PER_REQUEST = 2000

blueprint = Blueprint("admin", __name__, url_prefix="/v1/admin")
blueprint.before_request(tenancy.require_admin)


def issued_json(issued: orgs.IssuedKey) -> dict:
    return {"name": issued.org.name, "namespace": issued.org.namespace,
            "apiKey": issued.secret, "keyPrefix": issued.prefix}


@blueprint.post("/orgs")
def create_org():
    """Create an org and its first API key (shown once)."""
    return issued_json(orgs.create_org(body(OrgCreate())["name"])), 201


@blueprint.delete("/orgs/<name>")
def delete_org(name):
    """Archive an org: revoke its keys, keep its data; `purge=true` deletes the data too,
    at most PURGE_PER_REQUEST entities per call. Safe to repeat."""
    purge = query(OrgDeleteQuery())["purge"]
    archived = orgs.archive_org(name)
    purged = (orgs.purge_org(name, max_entities=PURGE_PER_REQUEST) if purge
              else orgs.Purged(archived.name, 0, complete=archived.purged))
    return {"name": archived.name, "archived": True, "revokedKeys": archived.revoked_keys,
            "purged": purged.deleted, "purgeComplete": purged.complete}


@blueprint.get("/orgs/<name>/keys")
def list_keys(name):
    """List an org's keys by prefix, without secrets."""
    keys = orgs.list_keys(name)
    return {"keys": [{"prefix": k.prefix, "revoked": bool(k.revoked),
                      "createdAt": format_time(k.created_at)} for k in keys],
            "count": len(keys)}


@blueprint.post("/orgs/<name>/keys")
def create_key(name):
    """Issue another API key for an org (shown once)."""
    return issued_json(orgs.issue_key(name)), 201


@blueprint.delete("/orgs/<name>/keys/<prefix>")
def revoke_key(name, prefix):
    """Revoke an org's key by its prefix."""
    return {"revoked": orgs.revoke_key(name, prefix)}
