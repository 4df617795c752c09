"""Python client of the metering service.

    from metering_client import MeteringClient

    with MeteringClient("https://metering.example", "mk_...") as metering:
        metering.record("input_tokens", "user-42", 1200, dimensions={"model": "gpt-4"})

See README.md for batching, retries, errors and the async client.
"""

from metering_client.aio import AsyncMeteringClient
from metering_client.base import DeliveryStats
from metering_client.client import MeteringClient
from metering_client.errors import (
    ApiError,
    BufferFull,
    ClientClosed,
    EventsRejected,
    MeteringError,
    NotDelivered,
    ServiceUnreachable,
    WebhookVerificationError,
)
from metering_client.operations import ALL_EVENT_TYPES
from metering_client.retry import RetryPolicy
from metering_client.types import (
    Alert,
    AlertTrigger,
    Amendment,
    CancelOutcome,
    CancelPreview,
    Correction,
    Event,
    EventOutcome,
    Meter,
    Page,
    Rejection,
    Summary,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    Window,
)
from metering_client.webhooks import verify_webhook

__all__ = [
    "ALL_EVENT_TYPES",
    "Alert",
    "AlertTrigger",
    "Amendment",
    "ApiError",
    "AsyncMeteringClient",
    "BufferFull",
    "CancelOutcome",
    "CancelPreview",
    "ClientClosed",
    "Correction",
    "DeliveryStats",
    "Event",
    "EventOutcome",
    "EventsRejected",
    "Meter",
    "MeteringClient",
    "MeteringError",
    "NotDelivered",
    "Page",
    "Rejection",
    "RetryPolicy",
    "ServiceUnreachable",
    "Summary",
    "WebhookAttempt",
    "WebhookEndpoint",
    "WebhookMessage",
    "WebhookVerificationError",
    "Window",
    "verify_webhook",
]
