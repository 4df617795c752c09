"""Kinds of usage limits (issue 16): the limits themselves and the org's index of them.

A limit is keyed by (meter, user): its integer id is a hash of the meter's key id and the
user ("" for the meter's default), so "one limit per meter and user" is a property of
the key, and a limit check finds the user's override and the default by key lookups,
without a query. Counters and seeds (`app/services/limits/counters.py`) are written by
raw RPCs and have no model.
"""

from __future__ import annotations

from datetime import UTC

from google.cloud import ndb

from app.models.base import Model

PERIODS = ("day", "month")


class UsageLimit(Model):
    """At most `limit` of a meter's value per calendar `period` in `time_zone`, for one
    user (`user_id`) or, without one, for every user without an override.

    `aggregation` is the meter's, copied so that a check needs no meter read;
    `counting_since` is when the counters of the meter's limit spec (period, zone) began
    to see every batch (`app.services.limits.index.trust_delay`)."""

    KIND = "usage-limit"

    meter_id = ndb.StringProperty("MeterId")
    user_id = ndb.TextProperty("UserId")  # None: the meter's default
    limit = ndb.TextProperty("Limit")  # decimal digits
    period = ndb.TextProperty("Period")
    time_zone = ndb.TextProperty("TimeZone")
    aggregation = ndb.TextProperty("Aggregation")
    counting_since = ndb.DateTimeProperty("CountingSince", indexed=False, tzinfo=UTC)

    @property
    def limit_value(self) -> int:
        return int(self.limit)


class LimitMeters(ndb.Model):
    """The org's meters with limits, one entity per org (JSON {meter key id: [period,
    zone, counting since (µs), aggregation]}): what ingestion reads, once per cache
    period, to know which batches also increment limit counters."""

    specs = ndb.TextProperty("Specs")

    @classmethod
    def _get_kind(cls) -> str:
        return "limit-meters"
