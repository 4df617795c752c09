"""Alert rules of the current org: create, read, list, change, archive; and their specs.

A rule's *spec* is what its value depends on: (meter, scope kind, period, zone, filter),
the one user included for a one-user scope. Rules that differ only in thresholds share a
spec, hence a tally (`evaluate`). Every change clears this process's cache of meters
with rules (`feed.forget_rules`); other processes see it within
METERING_ALERT_RULE_CACHE_SECONDS.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, cast

from google.cloud import ndb

from app.core.aggregation import Aggregation
from app.errors import NotFound, ValidationFailed
from app.models import AlertRule, AlertTrigger, Meter, ids, root_key, transactional, utcnow
from app.services import paging
from app.services.alerts import feed
from app.services.meters import get_meter
from app.services.webhooks import registry
from app.storage import entities, rpc

#: Aggregations whose period value only grows while events arrive.
ALERTABLE = (Aggregation.SUM, Aggregation.COUNT, Aggregation.MAX, Aggregation.UNIQUE_COUNT)
_WHY_NOT = {
    "last": "a last value can fall as well as rise, so a crossing is not a lasting fact",
    "min": "a minimum only falls as events arrive",
    "avg": "an average can fall as well as rise as events arrive",
}


def growing_meter(
    meter_id: str, purpose: str = "alerts", code: str = "meter_not_alertable"
) -> Meter:
    """The active meter `meter_id` names, if its period value only grows while events
    arrive (what alerts, and usage limits (issue 16), need); 400 otherwise."""
    try:
        meter = get_meter(meter_id, include_archived=False)
    except NotFound:
        raise ValidationFailed(
            "meterId: no such active meter", param="meterId", code="meter_not_found"
        ) from None
    if meter.aggregation_type not in ALERTABLE:
        why = _WHY_NOT.get(meter.aggregation_type, "its value does not only grow")
        raise ValidationFailed(
            f"meterId: {purpose} need a sum, count, max or unique_count meter; this meter's "
            f"aggregation is {meter.aggregation_type}: {why}",
            param="meterId",
            code=code,
        )
    return meter


def _meter_for_rule(meter_id: str) -> Meter:
    return growing_meter(meter_id)


def _check_filter(meter: Meter, wanted: dict[str, str]) -> None:
    declared = set(meter.dimensions)
    for name in sorted(wanted):
        if name not in declared:
            raise ValidationFailed(
                f"filter.{name}: the meter declares no dimension {name!r}",
                param=f"filter.{name}",
            )


def create_rule(fields: dict[str, Any]) -> AlertRule:
    """Validate and store a rule; registers the org with the delivery loop."""
    meter = _meter_for_rule(fields["meterId"])
    _check_filter(meter, fields["filter"])
    scope, scope_user = fields["scope"]
    rule = AlertRule(
        key=AlertRule.allocate_ids(1, parent=root_key())[0],
        name=fields["name"],
        meter_id=meter.id_,
        thresholds=list(fields["thresholds"]),
        scope=scope,
        scope_user=scope_user,
        period=fields["period"],
        time_zone=fields["timeZone"],
        filter=dict(fields["filter"]),
        notify_on_resolve=fields["notifyOnResolve"],
        spec_since=utcnow(),
    )

    @transactional(retries=8)
    def create() -> AlertRule:
        rule.create()
        _index_meters(rule)
        return rule

    create()
    feed.forget_rules()
    registry.register_org()
    return rule


def _index_meters(changed: AlertRule) -> None:
    """Rewrite the org's `alert-meters` entity (which meters have active rules) in the
    transaction that wrote `changed`: its own query does not see that write yet."""
    namespace = ndb.get_context().get_namespace()
    active = [r for r in all_rules() if r.key != changed.key and not r.deleted]
    if not changed.deleted:
        active.append(changed)
    key_ids = set()
    for rule in active:
        key = ids.decode_key(rule.meter_id, kind="meter", namespace=namespace)
        if key is not None:
            key_ids.add(key.id())
    feed.index_entity(key_ids).put()


def get_rule(public_id: str) -> AlertRule:
    """The rule with this id in the current org (archived ones too); 404 otherwise."""
    rule: AlertRule | None = AlertRule.get_by_public_id(public_id)
    if rule is None:
        raise NotFound("alert rule not found", param="id", code="alert_not_found")
    return rule


def list_rules(
    limit: int, cursor: str | None, include_archived: bool
) -> tuple[list[AlertRule], str | None]:
    """One page of rules, in key order (active ones only unless `include_archived`)."""
    query = AlertRule.query_org()
    if not include_archived:
        query = AlertRule.query_org(AlertRule.deleted == False)  # noqa: E712
    return paging.page(query, limit, cursor)


def update_rule(public_id: str, changes: dict[str, Any]) -> AlertRule:
    """Change a rule's name, thresholds, notifyOnResolve or filter."""

    @transactional(retries=8)
    def update() -> AlertRule:
        rule = get_rule(public_id)
        if "filter" in changes:
            _check_filter(get_meter(rule.meter_id), changes["filter"])
            if changes["filter"] != rule.filter:
                rule.spec_since = utcnow()
            rule.filter = dict(changes["filter"])  # type: ignore[assignment]  # ndb
        if "name" in changes:
            rule.name = changes["name"]
        if "thresholds" in changes:
            rule.thresholds = list(changes["thresholds"])  # type: ignore[assignment]  # ndb
        if "notifyOnResolve" in changes:
            rule.notify_on_resolve = changes["notifyOnResolve"]
        rule.update()
        _index_meters(rule)
        return rule

    rule = update()
    feed.forget_rules()
    return rule


def archive_rule(public_id: str) -> AlertRule:
    """Archive a rule: it is no longer evaluated; its triggers stay listed."""

    @transactional(retries=8)
    def archive() -> AlertRule:
        rule = get_rule(public_id)
        if not rule.deleted:
            rule.delete()
            _index_meters(rule)
        return rule

    rule = archive()
    feed.forget_rules()
    return rule


def list_triggers(
    public_id: str, limit: int, cursor: str | None
) -> tuple[list[AlertTrigger], str | None]:
    """One page of a rule's triggers, newest first."""
    rule = get_rule(public_id)
    query = AlertTrigger.query(AlertTrigger.alert_id == rule.id_, ancestor=root_key()).order(
        -AlertTrigger.at
    )
    return paging.page(query, limit, cursor)


def all_rules() -> list[AlertRule]:
    """Every rule of the org, archived ones included (a strongly consistent ancestor
    query)."""
    return cast(list[AlertRule], AlertRule.query_org().fetch())


#: namespace -> (the `alert-meters` version they were read under, every rule of the org)
_rules_of: dict[str, tuple[str, list[AlertRule]]] = {}


def current_rules() -> list[AlertRule]:
    """`all_rules`, from this process's memory while the org's `alert-meters` entity
    keeps its version (every rule write gives it a new one, in its transaction): one
    lookup instead of a query returning every rule through NDB, which was a fifth of
    an evaluation round's CPU (benchmarks/alerts_eval.py --profile). The rules returned
    are shared: read them, never change them."""
    namespace = ndb.get_context().get_namespace() or ""
    found = rpc.lookup([entities.key(feed.INDEX_KIND, feed.INDEX_NAME)])
    version = ""
    for entity in found.values():
        version = (
            entity.properties["Version"].string_value if "Version" in entity.properties else ""
        )
    known = _rules_of.get(namespace)
    if version and known is not None and known[0] == version:
        return known[1]
    rules = all_rules()
    if version:
        if len(_rules_of) > 10_000:
            _rules_of.clear()
        _rules_of[namespace] = (version, rules)
    return rules


def spec_of(rule: AlertRule) -> str:
    """The hex digest of what a rule's value depends on: rules differing only in their
    thresholds (or names, or notifyOnResolve) share it."""
    spec = [
        rule.meter_id,
        rule.scope,
        rule.scope_user or "",
        rule.period,
        rule.time_zone,
        sorted(rule.filter.items()),
    ]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Watch:
    """What the rules of one spec watch, read once from the first of them: the evaluator
    asks it for every contribution of every feed, and reading NDB properties (JSON shadow
    fields decoded on each read) there was most of its CPU (benchmarks/alerts_eval.py)."""

    spec: str
    meter_id: str
    scope: str
    scope_user: str | None
    period: str
    time_zone: str
    filter: tuple[tuple[str, str], ...]

    def counts(self, user: str, dimensions: dict[str, str]) -> bool:
        """Whether a contribution of `user` with `dimensions` counts in the spec's value."""
        if self.scope == "one" and user != self.scope_user:
            return False
        return all(dimensions.get(name, "") == value for name, value in self.filter)

    def subject(self, user: str) -> str | None:
        """The subject of the tally a counted contribution of `user` goes to (None: the org)."""
        return None if self.scope == "org" else user


def watch_of(spec: str, rule: AlertRule) -> Watch:
    return Watch(
        spec,
        rule.meter_id,
        rule.scope,
        rule.scope_user or None,
        rule.period,
        rule.time_zone,
        tuple(sorted(rule.filter.items())),
    )
