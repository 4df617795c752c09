"""Webhook endpoints of the caller's org, their message log, and the event types:
/v1/webhooks."""

from __future__ import annotations

import copy

from flask import Blueprint, current_app

from app import tenancy
from app.api.collection import Collection, page_size
from app.api.declare import TENANT_ERRORS, operation, other_responses, response, scope
from app.api.openapi import document_of
from app.schemas import webhook_events
from app.schemas.webhooks import (
    Endpoint,
    EndpointCreate,
    EndpointListQuery,
    EndpointPage,
    EndpointUpdate,
    EndpointWithSecret,
    EventTypeList,
    Message,
    MessageListQuery,
    MessagePage,
)
from app.services.webhooks import endpoints

blueprint = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")
blueprint.before_request(tenancy.require_org)
tenant = operation("webhooks", errors=TENANT_ERRORS)
views = Collection(
    blueprint,
    tenant,
    one=Endpoint,
    id_name="endpoint_id",
    read="webhooks:write",
    write="webhooks:write",
    path="/endpoints",
)


def _config():
    return current_app.config["METERING"]


@views.creates(
    EndpointCreate,
    "The new endpoint, with its signing secret (shown once).",
    answer=EndpointWithSecret,
)
def create_endpoint(fields):
    """Create a webhook endpoint."""
    return endpoints.create_endpoint(fields, _config().production)


@views.lists(EndpointListQuery, EndpointPage, "A page of endpoints.", items="endpoints")
def list_endpoints(args):
    """List the org's webhook endpoints, a page at a time."""
    return endpoints.list_endpoints(page_size(args), args.get("cursor"))


@views.gets("The endpoint.")
def get_endpoint(endpoint_id):
    """Get one webhook endpoint (without its secret)."""
    return endpoints.get_endpoint(endpoint_id)


@views.changes(EndpointUpdate, "The changed endpoint.")
def update_endpoint(changes, endpoint_id):
    """Change an endpoint's url, description, event types, or enable it again."""
    return endpoints.update_endpoint(endpoint_id, changes, _config().production)


@views.deletes("The deleted endpoint.")
def delete_endpoint(endpoint_id):
    """Delete an endpoint: its waiting messages fail."""
    return endpoints.delete_endpoint(endpoint_id)


@blueprint.post("/endpoints/<endpoint_id>/rotate-secret")
@scope("webhooks:write")
@tenant
@response(EndpointWithSecret, 200, "The endpoint with its new secret (shown once).")
@other_responses(404)
def rotate_secret(endpoint_id):
    """Rotate the signing secret: the old one keeps signing beside the new for 24 hours."""
    return endpoints.rotate_secret(endpoint_id)


@views.lists(
    MessageListQuery,
    MessagePage,
    "A page of the endpoint's messages, newest first.",
    items="messages",
    of_one="messages",
)
def list_messages(args, endpoint_id):
    """The endpoint's delivery log: messages and their attempts."""
    return endpoints.list_messages(
        endpoint_id, args.get("status"), page_size(args), args.get("cursor")
    )


@blueprint.post("/endpoints/<endpoint_id>/messages/<message_id>/retry")
@scope("webhooks:write")
@tenant
@response(Message, 202, "The message, due now.")
@other_responses(404)
def retry_message(endpoint_id, message_id):
    """Send a message again (one more attempt)."""
    return endpoints.retry_message(endpoint_id, message_id)


@blueprint.post("/endpoints/<endpoint_id>/test")
@scope("webhooks:write")
@tenant
@response(Message, 202, "The webhook.test message, due now.")
@other_responses(404)
def send_test(endpoint_id):
    """Send a webhook.test message to the endpoint."""
    return endpoints.send_test(endpoint_id)


@blueprint.get("/event-types")
@scope("webhooks:write")
@operation("webhooks", errors=TENANT_ERRORS, datastore=False)
@response(EventTypeList, 200, "Every event type, with its body's JSON Schema.")
def list_event_types():
    """The event types an endpoint can subscribe to, with their payload schemas."""
    meter = document_of(current_app)["components"]["schemas"]["Meter"]
    listed = webhook_events.listed()
    for entry in listed:
        data = entry["schema"]["properties"]["data"]
        if data == webhook_events.METER_REF:
            entry["schema"]["properties"]["data"] = copy.deepcopy(meter)
    return {"eventTypes": listed}
