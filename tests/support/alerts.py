"""What the alert tests share: rules over HTTP, the evaluator run to quiescence, triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.services.alerts import evaluate


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def minutes_ago(minutes: float) -> str:
    return rfc3339(datetime.now(UTC) - timedelta(minutes=minutes))


def create_rule(api, meter: dict, **fields) -> dict:
    body = {
        "name": "tokens",
        "meterId": meter["id"],
        "thresholds": [10],
        "scope": "user",
        "period": "month",
        **fields,
    }
    answer = api.post_retried("/v1/billing/alerts", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def run_evaluator(app, ndb_client, org: dict, budget: int = 1000) -> int:
    """Run the org's evaluator until it applies nothing more, then its sweep of old state
    (as the cron call does); feeds applied in all."""
    total = 0
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        while True:
            applied = evaluate.evaluate_org(budget)
            total += applied
            if not applied:
                evaluate.sweep_old_state()
                return total


def triggers(api, rule: dict) -> list[dict]:
    """Every trigger of a rule, oldest first."""
    found, cursor = [], None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        answer = api.get(f"/v1/billing/alerts/{rule['id']}/triggers", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        found += body["triggers"]
        cursor = body["nextCursor"]
        if not cursor:
            return list(reversed(found))


def crossings(api, rule: dict) -> list[tuple]:
    """(type, userId, threshold) of every trigger of a rule, oldest first."""
    return [(t["type"], t["userId"], t["threshold"]) for t in triggers(api, rule)]
