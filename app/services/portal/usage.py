"""Issuing portal tokens, and what one lets its bearer read: that user's usage of its
meters, nothing else. A meter the token does not name, or another org's, is a 404 like
a meter that does not exist; the user is always the token's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.cloud import ndb

from app.errors import NotFound
from app.models import Meter, ids
from app.services import summary
from app.services.meters import get_meter
from app.services.orgs import Org
from app.services.portal import policy, tokens
from app.services.portal.tokens import PortalToken


def issue(
    org: Org,
    user_id: str,
    meter_ids: list[str] | None,
    expires_in: int,
    keys: tuple[tuple[str, str], ...],
) -> dict[str, Any]:
    """A new token for `user_id` (the org's meters named, or all), and what it carries."""
    if meter_ids is not None:
        meter_ids = list(dict.fromkeys(meter_ids))
        for index, meter_id in enumerate(meter_ids):
            try:
                get_meter(meter_id)
            except NotFound:
                raise NotFound(
                    f"meterIds[{index}]: no such meter",
                    param=f"meterIds[{index}]",
                    code="meter_not_found",
                ) from None
    issued = policy.issue_floor(org.name, user_id)
    claims = PortalToken(
        org=org.name,
        org_id=org.int_id,
        user_id=user_id,
        meter_ids=tuple(meter_ids) if meter_ids is not None else None,
        issued_ms=issued,
        expires_ms=issued + expires_in * 1000,
    )
    return {
        "token": tokens.sign(claims, keys),
        "expiresAt": datetime.fromtimestamp(claims.expires_ms / 1000, UTC),
        "userId": user_id,
        "meterIds": meter_ids,
    }


def meters(token: PortalToken) -> list[Meter]:
    """The meters the token may read: those it names (that still exist), or all the org's
    active meters."""
    if token.meter_ids is None:
        found = Meter.query_org().fetch()
        return [meter for meter in found if not meter.deleted]
    namespace = ndb.get_context().get_namespace()
    keys = [
        ids.decode_key(meter_id, kind=Meter.KIND, namespace=namespace)
        for meter_id in token.meter_ids
    ]
    got = ndb.get_multi([key for key in keys if key is not None])
    return [meter for meter in got if meter is not None]


def meter(token: PortalToken, meter_id: str) -> Meter:
    """The meter, if the token may read it; 404 otherwise (the same answer as no meter)."""
    if not token.allows_meter(meter_id):
        raise NotFound("meter not found", param="id", code="meter_not_found")
    found = get_meter(meter_id, include_archived=token.meter_ids is not None)
    return found


def summarize(
    token: PortalToken,
    meter_id: str,
    args: dict[str, Any],
    filters: dict[str, frozenset[str]],
    default_end: datetime,
) -> summary.Summary:
    """The token's user's summary of the meter. Naming another user (`userId`,
    `filter[userId]`) is a 404 like an unknown meter; grouping by user shows only this one."""
    found = meter(token, meter_id)
    named = {args["userId"]} if args.get("userId") else set()
    if (named | filters.get("userId", frozenset())) - {token.user_id}:
        raise NotFound("user not found", param="userId", code="user_not_found")
    filters = {name: values for name, values in filters.items() if name != "userId"}
    return summary.summarize(
        found.id_,
        token.user_id,
        args.get("periodStart"),
        args.get("periodEnd"),
        window_size=args.get("windowSize"),
        time_zone=args.get("timeZone", "UTC"),
        group_by=tuple(args.get("groupBy", ())),
        filters=filters,
        default_end=default_end,
    )
