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
    ApiKey,
    CancelOutcome,
    CancelPreview,
    Correction,
    Event,
    EventOutcome,
    ExportedEvent,
    LimitCheck,  # issue 16
    Meter,
    Page,
    PortalToken,
    Rejection,
    Summary,
    UsageLimit,  # issue 16
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
    "ApiKey",
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
    "ExportedEvent",
    "LimitCheck",  # issue 16
    "Meter",
    "MeteringClient",
    "MeteringError",
    "NotDelivered",
    "Page",
    "PortalToken",
    "Rejection",
    "RetryPolicy",
    "ServiceUnreachable",
    "Summary",
    "UsageLimit",  # issue 16
    "WebhookAttempt",
    "WebhookEndpoint",
    "WebhookMessage",
    "WebhookVerificationError",
    "Window",
    "verify_webhook",
]
