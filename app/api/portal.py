"""The customer portal (issue 16): /v1/portal.

Two blueprints under one prefix, one per kind of caller:

- `blueprint`: the org, with an API key holding `portal:write`: issue and revoke tokens,
  read and set the browser origins allowed;
- `reading`: an end customer's browser (or the tenant's server), with a portal token:
  that user's usage of the token's meters, nothing else. Only these routes send CORS
  headers. A preflight (OPTIONS) carries no token, so it cannot know the org: it is
  answered for any origin, and the real request is refused (403) unless the token's
  org lists the origin; only then does the answer carry Access-Control-Allow-Origin.
"""

from datetime import UTC, datetime

from flask import Blueprint, current_app, g, make_response, request

from app import tenancy
from app.api.declare import (
    TENANT_ERRORS,
    arguments,
    body,
    operation,
    other_responses,
    response,
    scope,
)
from app.api.meter_events import SUMMARY_FILTER
from app.api.requests import summary_query
from app.models import utcnow
from app.openapi.operations import PORTAL_TOKEN
from app.schemas import responses
from app.schemas.events import summary_json
from app.schemas.portal import (
    PortalMeterList,
    PortalRevoke,
    PortalRevoked,
    PortalSettings,
    PortalSummaryQuery,
    PortalTokenCreate,
    PortalTokenIssued,
)
from app.services.portal import policy, tokens, usage

blueprint = Blueprint("portal", __name__, url_prefix="/v1/portal")
blueprint.before_request(tenancy.require_org)
tenant = operation("portal", errors=TENANT_ERRORS)

reading = Blueprint("portal_read", __name__, url_prefix="/v1/portal")
customer = operation("portal", security=PORTAL_TOKEN, errors=(401, 403, 429))

#: How long a browser may keep a preflight's answer.
PREFLIGHT_MAX_AGE = 600


@blueprint.post("/tokens")
@scope("portal:write")
@tenant
@body(PortalTokenCreate)
@response(PortalTokenIssued, 201, "The new token, shown once.")
@other_responses(400, 404)
def create_token(fields):
    """Issue a portal token: one end customer's read-only access to their usage."""
    keys = tokens.signing_keys(current_app.config["METERING"])
    return usage.issue(g.org, fields["userId"], fields.get("meterIds"), fields["expiresIn"], keys)


@blueprint.post("/tokens/revoke")
@scope("portal:write")
@tenant
@body(PortalRevoke)
@response(PortalRevoked, 200, "From when tokens are refused.")
@other_responses(400, 409)
def revoke_tokens(fields):
    """Revoke every portal token of the org, or of one user, issued until now."""
    user_id = fields.get("userId")
    moment = policy.revoke(g.org.name, user_id)
    return {"revokedBefore": datetime.fromtimestamp(moment / 1000, UTC), "userId": user_id}


@blueprint.get("/settings")
@scope("portal:write")
@tenant
@response(PortalSettings, 200, "The org's portal settings.")
def get_settings():
    """The browser origins allowed to call the portal API with the org's tokens."""
    return {"allowedOrigins": sorted(policy.read(g.org.name).origins)}


@blueprint.put("/settings")
@scope("portal:write")
@tenant
@body(PortalSettings)
@response(PortalSettings, 200, "The settings as stored (origins normalized).")
@other_responses(400)
def put_settings(fields):
    """Set the exact origins (scheme://host[:port]) allowed to call the portal API."""
    return {"allowedOrigins": policy.set_origins(g.org.name, fields["allowedOrigins"])}


# -- what a portal token reads ---------------------------------------------------------


@reading.before_request
def _preflight():
    """Answer a CORS preflight without a token (see the module's docstring)."""
    if request.method != "OPTIONS":
        return None
    answer = make_response("", 204)
    origin = request.headers.get("Origin")
    if origin:
        answer.headers["Access-Control-Allow-Origin"] = origin
        answer.headers["Access-Control-Allow-Methods"] = "GET"
        answer.headers["Access-Control-Allow-Headers"] = "Authorization"
        answer.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
    answer.headers["Vary"] = "Origin"
    answer.headers["Allow"] = "GET, OPTIONS"
    return answer


reading.before_request(tenancy.require_portal_token)


@reading.after_request
def _cors(answer):
    """Let an allowed origin's browser read the answer (errors included)."""
    if request.method != "OPTIONS":
        answer.headers.add("Vary", "Origin")
        origin = g.get("portal_origin")
        if origin:
            answer.headers["Access-Control-Allow-Origin"] = origin
            answer.headers["Access-Control-Expose-Headers"] = "Retry-After"
    return answer


@reading.get("/meters")
@customer
@response(PortalMeterList, 200, "The meters the token may read.")
def portal_meters():
    """The meters a portal token may read, with their names and units."""
    token = g.portal_token
    return {
        "userId": token.user_id,
        "meters": usage.meters(token),
        "expiresAt": datetime.fromtimestamp(token.expires_ms / 1000, UTC),
    }


@reading.get("/meters/<meter_id>/summary")
@customer
@arguments(
    PortalSummaryQuery,
    parameters=(SUMMARY_FILTER,),
    read=lambda: summary_query(PortalSummaryQuery()),
)
@response(responses.Summary, 200, "The token's user's summary.", dump=summary_json)
@other_responses(400, 404)
def portal_summary(query, meter_id):
    """The token's user's usage of one of its meters: windows, dimension breakdowns."""
    args, filters = query
    return usage.summarize(
        g.portal_token,
        meter_id,
        args,
        filters,
        default_end=utcnow() + current_app.config["METERING"].max_event_lead,
    )
