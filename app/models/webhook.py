"""Kinds of the webhooks: endpoints, their outbox of messages, and the orgs to visit.

Endpoints and messages live under the org's root (`synckey/1`) like everything of an
org: the dispatcher's query of due messages and the delivery log are then ancestor
queries, strongly consistent (a message committed beside a meter change is seen by the
next dispatch at once), and allowed inside a transaction on both emulators.

A message is keyed by name, `<webhook-id>.<endpoint key id>`: the same fact announced
twice (a retried request, two detections of one crossing) makes the same key, so it is
stored once. Its body is the exact bytes every attempt sends (a retry never changes the
payload), and its log of attempts is bounded (the last `MAX_ATTEMPTS_KEPT`, plus a count).
"""

from __future__ import annotations

from datetime import UTC

from google.cloud import ndb

from app.models import ids
from app.models.base import JsonShadowProperty, Lifecycle, Model, root_key

ENDPOINT_KIND = "webhook-endpoint"
MESSAGE_KIND = "webhook-message"
DELIVERY_ORG_KIND = "delivery-org"

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)
#: Attempts a message keeps in its log (older ones are counted, not kept): an entity stays
#: far below Datastore's 1 MiB whatever an endpoint answers.
MAX_ATTEMPTS_KEPT = 20


class WebhookEndpoint(Model):
    """Where an org's messages go: a URL, the event types it takes (empty: all), and the
    signing secrets. `secrets` is a list of `{"secret", "expiresAt"}` (expiresAt null for
    the current one, an RFC 3339 time for a rotated one still signing beside it)."""

    KIND = ENDPOINT_KIND

    url = ndb.TextProperty("Url")
    description = ndb.TextProperty("Description", default="")
    event_types = JsonShadowProperty("EventTypes_", empty=list)
    enabled = ndb.BooleanProperty("Enabled", default=True, indexed=False)
    disabled_reason = ndb.TextProperty("DisabledReason")
    secrets = JsonShadowProperty("Secrets_", empty=list)
    #: When the first of an unbroken run of failed attempts happened; None after a success.
    failing_since = ndb.DateTimeProperty("FailingSince", tzinfo=UTC, indexed=False)

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if not self.url:
            problems.append(("url", "url is required"))
        if not self.secrets:
            problems.append(("secret", "an endpoint needs a signing secret"))
        return problems

    def takes(self, event_type: str) -> bool:
        """Whether this endpoint subscribes to `event_type` (no list: every type)."""
        return not self.event_types or event_type in self.event_types


class WebhookMessage(Lifecycle, ndb.Model):
    """One event for one endpoint: the outbox row and its delivery log."""

    message_id = ndb.TextProperty("MessageId")
    endpoint_id = ndb.StringProperty("EndpointId")
    event_type = ndb.TextProperty("EventType")
    body = ndb.TextProperty("Body")
    status = ndb.StringProperty("Status")
    created_at = ndb.DateTimeProperty("CreatedAt", tzinfo=UTC)
    updated_at = ndb.DateTimeProperty("UpdatedAt", tzinfo=UTC, indexed=False)
    #: When the next attempt is due; also the lease: leasing moves it past the send's end.
    next_attempt_at = ndb.DateTimeProperty("NextAttemptAt", tzinfo=UTC)
    #: Who holds the current lease (a random token), so only its holder records the result.
    lease = ndb.TextProperty("Lease")
    attempt_count = ndb.IntegerProperty("AttemptCount", default=0, indexed=False)
    attempts = JsonShadowProperty("Attempts_", empty=list)

    @classmethod
    def _get_kind(cls) -> str:
        return MESSAGE_KIND

    def validate(self) -> list[tuple[str, str]]:
        if self.status not in STATUSES:
            return [("status", f"status must be one of {', '.join(STATUSES)}")]
        return []

    @staticmethod
    def key_for(event_id: str, endpoint_key: ndb.Key) -> ndb.Key:
        """The message of one event for one endpoint: deterministic, so stored once."""
        return ndb.Key(MESSAGE_KIND, f"{event_id}.{endpoint_key.id()}", parent=root_key())

    @classmethod
    def log_of(cls, endpoint_id: str, status: str | None = None) -> ndb.Query:
        """An endpoint's messages, newest first, maybe of one status: the delivery log (and
        its composite indexes, index.yaml)."""
        filters = [cls.endpoint_id == endpoint_id]
        if status is not None:
            filters.append(cls.status == status)
        return cls.query(*filters, ancestor=root_key()).order(-cls.created_at)

    def log_attempt(self, attempt: dict) -> None:
        """Append an attempt to the bounded log."""
        self.attempt_count = (self.attempt_count or 0) + 1
        self.attempts = (self.attempts + [attempt])[-MAX_ATTEMPTS_KEPT:]


class DeliveryOrg(Lifecycle, ndb.Model):
    """In the registry namespace, keyed by an org's namespace: an org with endpoints or
    alert rules, which the delivery loop visits."""

    registered_at = ndb.DateTimeProperty("RegisteredAt", tzinfo=UTC, indexed=False)

    @classmethod
    def _get_kind(cls) -> str:
        return DELIVERY_ORG_KIND

    @staticmethod
    def key_for(namespace: str) -> ndb.Key:
        return ndb.Key(DELIVERY_ORG_KIND, namespace, namespace=ids.REGISTRY_NAMESPACE)
