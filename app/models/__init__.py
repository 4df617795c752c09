"""Storage models (NDB): the original's entity shapes, Kind names and ids."""

from app.models.alert import (
    AlertFeed,
    AlertLease,
    AlertMeters,
    AlertRetention,
    AlertRule,
    AlertTally,
    AlertTallyBucket,
    AlertTallySpill,
    AlertTrigger,
)
from app.models.base import Model, root_key, transactional, utcnow
from app.models.limit import LimitMeters, UsageLimit  # issue 16, limits
from app.models.meter import Meter
from app.models.meter_event import MeterEvent
from app.models.portal import PortalPolicy  # issue 16, portal
from app.models.tenant import ApiKey, Namespace

__all__ = [
    "AlertFeed",
    "AlertLease",
    "AlertMeters",
    "AlertRetention",
    "AlertRule",
    "AlertTally",
    "AlertTallyBucket",
    "AlertTallySpill",
    "AlertTrigger",
    "ApiKey",
    "LimitMeters",  # issue 16, limits
    "Meter",
    "MeterEvent",
    "Model",
    "Namespace",
    "PortalPolicy",
    "UsageLimit",  # issue 16, limits
    "root_key",
    "transactional",
    "utcnow",
]
