"""Webhook endpoints of the current org, their secrets and their message log.

An endpoint's URL is checked (`safety.check`) when it is created or changed; its signing
secret is shown once, in the answer that creates or rotates it. Deleting is the mixin's
soft delete: the dispatcher then fails the endpoint's waiting messages with a clear error.
Re-enabling an endpoint makes its waiting messages due at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from google.cloud import ndb

from app.errors import NotFound, ValidationFailed
from app.models import root_key, transactional, utcnow
from app.models.webhook import PENDING, WebhookEndpoint, WebhookMessage
from app.services import paging
from app.services.webhooks import outbox, registry, safety, signing

#: Endpoints one org may have (each message is one write per endpoint).
MAX_ENDPOINTS = 20
#: Waiting messages one re-enable makes due at once (the rest within PAUSED_RECHECK).
RESUMED_AT_ONCE = 500


def create_endpoint(fields: dict[str, Any], production: bool) -> WebhookEndpoint:
    """A new endpoint, with its secret in `revealed_secret` (shown once)."""
    safety.check(fields["url"], production)
    live = WebhookEndpoint.query_org(WebhookEndpoint.deleted == False).count(MAX_ENDPOINTS)  # noqa: E712
    if live >= MAX_ENDPOINTS:
        raise ValidationFailed(
            f"an org may have at most {MAX_ENDPOINTS} webhook endpoints",
            code="too_many_endpoints",
        )
    registry.register_org()
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        parent=root_key(),
        url=fields["url"],
        description=fields.get("description") or "",
        event_types=list(fields.get("eventTypes") or []),
        enabled=True,
        secrets=[{"secret": secret, "expiresAt": None}],
    )
    endpoint.create()
    return _revealing(endpoint, secret)


def _revealing(endpoint: WebhookEndpoint, secret: str) -> WebhookEndpoint:
    endpoint.revealed_secret = secret  # not a property: shown in this answer only
    return endpoint


def get_endpoint(public_id: str) -> WebhookEndpoint:
    """The endpoint with this id in the current org; 404 otherwise (deleted ones too)."""
    endpoint = cast(WebhookEndpoint | None, WebhookEndpoint.get_by_public_id(public_id))
    if endpoint is None or endpoint.deleted:
        raise NotFound("webhook endpoint not found", param="id", code="endpoint_not_found")
    return endpoint


def list_endpoints(limit: int, cursor: str | None) -> tuple[list[WebhookEndpoint], str | None]:
    """One page of the org's endpoints, in key order."""
    query = WebhookEndpoint.query_org(WebhookEndpoint.deleted == False)  # noqa: E712
    return paging.page(query, limit, cursor)


def update_endpoint(public_id: str, changes: dict[str, Any], production: bool) -> WebhookEndpoint:
    """Change an endpoint's url, description, event types or enabled flag."""
    if "url" in changes:
        safety.check(changes["url"], production)

    @transactional(retries=5)
    def update() -> tuple[WebhookEndpoint, bool]:
        endpoint = get_endpoint(public_id)
        resumed = changes.get("enabled") is True and not endpoint.enabled
        if "url" in changes:
            endpoint.url = changes["url"]
        if "description" in changes:
            endpoint.description = changes["description"]
        if "eventTypes" in changes:
            endpoint.event_types = list(changes["eventTypes"] or [])  # type: ignore[assignment]
        if "enabled" in changes:
            endpoint.enabled = changes["enabled"]
            if endpoint.enabled:
                endpoint.disabled_reason = None
                endpoint.failing_since = None
        return endpoint.update(), resumed

    endpoint, resumed = update()
    if resumed:
        _resume_messages(endpoint)
    return endpoint


def _resume_messages(endpoint: WebhookEndpoint) -> None:
    """Make the waiting messages of a re-enabled endpoint due now."""
    now = utcnow()
    waiting = cast(
        list[WebhookMessage],
        WebhookMessage.query(
            WebhookMessage.endpoint_id == endpoint.id_,
            WebhookMessage.status == PENDING,
            ancestor=root_key(),
        ).fetch(RESUMED_AT_ONCE),
    )
    due = [message for message in waiting if not message.lease]
    for message in due:
        message.next_attempt_at = now
    if due:
        ndb.put_multi(due)
        outbox.wake(messages=True)


def delete_endpoint(public_id: str) -> WebhookEndpoint:
    """Delete an endpoint: no more messages; its waiting ones fail."""
    endpoint = get_endpoint(public_id)
    endpoint.delete()
    return endpoint


def rotate_secret(public_id: str) -> WebhookEndpoint:
    """A new secret signs from now on; the old one signs beside it for 24 hours."""

    @transactional(retries=5)
    def rotate() -> tuple[WebhookEndpoint, str]:
        endpoint = get_endpoint(public_id)
        secrets, secret = signing.rotated(endpoint.secrets, utcnow())
        endpoint.secrets = secrets  # type: ignore[assignment]
        return endpoint.update(), secret

    endpoint, secret = rotate()
    return _revealing(endpoint, secret)


def list_messages(
    public_id: str, status: str | None, limit: int, cursor: str | None
) -> tuple[list[WebhookMessage], str | None]:
    """One page of an endpoint's messages, newest first, maybe of one status."""
    endpoint = get_endpoint(public_id)
    return paging.page(WebhookMessage.log_of(endpoint.id_, status), limit, cursor)


def retry_message(public_id: str, message_id: str) -> WebhookMessage:
    """Make a message due now (one more attempt); a message being sent is left to its
    sender."""
    endpoint = get_endpoint(public_id)
    if not isinstance(message_id, str) or not message_id.startswith("msg_") or len(message_id) > 64:
        raise _message_not_found()
    key = WebhookMessage.key_for(message_id, endpoint.key)

    @transactional(retries=5)
    def retry() -> WebhookMessage:
        message = cast(WebhookMessage | None, key.get())
        if message is None:
            raise _message_not_found()
        if not (message.status == PENDING and message.lease):
            now = utcnow()
            message.status, message.next_attempt_at, message.updated_at = PENDING, now, now
            message.put()
        return message

    message = retry()
    outbox.wake(messages=True)
    return message


def _message_not_found() -> NotFound:
    return NotFound("message not found", param="messageId", code="message_not_found")


def send_test(public_id: str, at: datetime | None = None) -> WebhookMessage:
    """Store a `webhook.test` message for this endpoint (whatever its event types)."""
    endpoint = get_endpoint(public_id)
    at = at or utcnow()
    message_id = outbox.event_id("webhook.test", endpoint.id_, signing.new_secret())
    data = {"endpointId": endpoint.id_, "message": "a test message from the metering service"}
    (message,) = outbox.messages([endpoint], "webhook.test", message_id, data, at)
    message.put()
    outbox.wake()
    return message
