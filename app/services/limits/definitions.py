"""Usage limits of the current org: create, read, list, change, delete.

A limit is a meter's default for every user, or one user's override (the override wins
in a check). Its key id is a hash of (meter, user), so a second limit for one meter and
user is a 409 and a check finds both candidates by key. All limits of a meter share one
period and time zone: ingestion then keeps one counter per (meter, user, period), which
bounds what a batch adds to its commit (one counter write per user and meter).
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

from google.cloud import ndb

from app.errors import Conflict, NotFound, ValidationFailed
from app.models import AlertRule, UsageLimit, ids, root_key, transactional, utcnow
from app.services import paging
from app.services.alerts import rules
from app.services.alerts.rules import growing_meter
from app.services.limits import index

DEFAULT_USER = ""  # the key part of a meter's default limit (a userId has 1+ characters)


def ident_for(meter_key_id: int, user_id: str | None) -> int:
    """The key id of the limit of (meter, user), user None for the meter's default."""
    raw = hashlib.sha256(f"{meter_key_id}\x00{user_id or DEFAULT_USER}".encode()).digest()
    return int.from_bytes(raw[:8], "big") >> 1 or 1  # 63 bits, never 0


def key_for(meter_key_id: int, user_id: str | None) -> ndb.Key:
    return ndb.Key(UsageLimit.KIND, ident_for(meter_key_id, user_id), parent=root_key())


def meter_key_id(meter_id: str) -> int | None:
    """The key id a meter's public id names in the current org, or None."""
    key = ids.decode_key(meter_id, kind="meter", namespace=ndb.get_context().get_namespace())
    return key.id() if key is not None else None


def _meter_limits(meter_id: str) -> list[UsageLimit]:
    query = UsageLimit.query_org(UsageLimit.meter_id == meter_id)
    return cast(list[UsageLimit], query.fetch())


def create_limit(fields: dict[str, Any]) -> UsageLimit:
    """Validate and store a limit; 409 when (meter, user) has one already."""
    meter = growing_meter(fields["meterId"], "limits", "meter_not_limitable")
    key = key_for(meter.key.id(), fields.get("userId"))

    @transactional(retries=8)
    def create() -> UsageLimit:
        if key.get() is not None:
            raise Conflict(
                "this meter already has a limit for this user (change it with PATCH)",
                param="userId" if fields.get("userId") else "meterId",
                code="limit_exists",
            )
        others = _meter_limits(meter.id_)
        if others and (others[0].period, others[0].time_zone) != (
            fields["period"],
            fields["timeZone"],
        ):
            raise ValidationFailed(
                f"period: this meter's limits count by {others[0].period} in "
                f"{others[0].time_zone}; all limits of a meter share period and timeZone",
                param="period",
                code="limit_period_mismatch",
            )
        since = others[0].counting_since if others else utcnow() + index.trust_delay()
        limit = UsageLimit(
            key=key,
            meter_id=meter.id_,
            user_id=fields.get("userId"),
            limit=str(fields["limit"]),
            period=fields["period"],
            time_zone=fields["timeZone"],
            aggregation=str(meter.aggregation_type),
            counting_since=since,
        )
        limit.create()
        _reindex(limit, removed=False)
        return limit

    limit = create()
    index.forget()
    return limit


def _reindex(changed: UsageLimit, removed: bool) -> None:
    """Keep the org's `limit-meters` entry of the changed limit's meter, in the transaction
    that wrote the limit (its own query does not see that write yet)."""
    key_id = meter_key_id(changed.meter_id) or 0
    if not removed:
        index.update(key_id, changed)
        return
    rest = [
        k
        for k in UsageLimit.query_org(UsageLimit.meter_id == changed.meter_id).fetch(
            2, keys_only=True
        )
        if k != changed.key
    ]
    if not rest:
        index.update(key_id, None)


def get_limit(public_id: str) -> UsageLimit:
    """The limit with this id in the current org; 404 otherwise."""
    limit: UsageLimit | None = UsageLimit.get_by_public_id(public_id)
    if limit is None:
        raise NotFound("limit not found", param="id", code="limit_not_found")
    return limit


def list_limits(
    limit: int, cursor: str | None, meter_id: str | None
) -> tuple[list[UsageLimit], str | None]:
    """One page of limits in key order, of one meter when `meter_id` is given."""
    query = UsageLimit.query_org()
    if meter_id:
        query = UsageLimit.query_org(UsageLimit.meter_id == meter_id)
    return paging.page(query, limit, cursor)


def update_limit(public_id: str, changes: dict[str, Any]) -> UsageLimit:
    """Change a limit's value (its meter, user, period and zone are what it is)."""

    @transactional(retries=8)
    def update() -> UsageLimit:
        found = get_limit(public_id)
        if "limit" in changes:
            found.limit = str(changes["limit"])
        found.update()
        return found

    return update()


def delete_limit(public_id: str) -> UsageLimit:
    """Delete a limit; its meter's counters stop when its last limit goes."""

    @transactional(retries=8)
    def delete() -> UsageLimit:
        found = get_limit(public_id)
        found.key.delete()
        _reindex(found, removed=True)
        return found

    found = delete()
    index.forget()
    return found


def create_alert(public_id: str, fields: dict[str, Any]) -> AlertRule:
    """An alert rule at percentages of a limit: thresholds ceil(limit x p / 100) (at least
    1), on the limit's meter, period and zone; each user for a default limit (every user
    at the default's thresholds, overrides included), the one user for an override. The
    thresholds are the limit's when the rule is made: a later PATCH of the limit does
    not move them."""
    limit = get_limit(public_id)
    value = limit.limit_value
    thresholds = sorted({max(1, -(-value * p // 100)) for p in fields["percentages"]})
    return rules.create_rule(
        {
            "name": fields.get("name")
            or f"{', '.join(map(str, fields['percentages']))}% of limit {limit.id_}",
            "meterId": limit.meter_id,
            "thresholds": thresholds,
            "scope": ("one", limit.user_id) if limit.user_id else ("user", None),
            "period": limit.period,
            "timeZone": limit.time_zone,
            "filter": {},
            "notifyOnResolve": fields.get("notifyOnResolve", False),
        }
    )
