"""What a request costs, limited over HTTP: a per-org budget of Datastore entities read
per minute, a per-address limit of requests with missing, unknown or revoked keys, and
the short cache that spares a Datastore lookup for a key lately found unknown. Each
with and without the shared counters in a real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.tenancy import UnknownKeys
from tests.support.flavour import firestore_only  # noqa: F401
from tests.support.http import Api, error_of
from tests.test_cache import reads
from tests.test_ratelimit import fresh_minute

pytestmark = pytest.mark.usefixtures("firestore_only")
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
USERS = 60
WRONG_KEY = "mk_" + "w" * 40


def assert_rate_limited(answer) -> None:
    assert answer.status_code == 429, answer.text
    assert error_of(answer)["code"] == "rate_limited"
    assert 1 <= int(answer.headers["Retry-After"]) <= 60


@pytest.fixture
def costly_query(api) -> dict:
    """A summary by user over USERS users' rollups: it reads about USERS entities."""
    meter = api.create_meter()
    api.record(
        *[
            {
                "meterId": meter["id"],
                "userId": f"user-{n}",
                "value": 1,
                "timestamp": (DAY + timedelta(minutes=n)).isoformat(),
            }
            for n in range(USERS)
        ]
    )
    return {
        "meterId": meter["id"],
        "groupBy": "userId",
        "periodStart": DAY.isoformat(),
        "periodEnd": (DAY + timedelta(days=1)).isoformat(),
    }


SUMMARY = "/v1/billing/meter-events/summary"


@pytest.mark.parametrize("shared", [False, True], ids=["per-process", "redis"])
def test_reads_past_the_budget_answer_429_until_the_next_minute(
    serve, org, other_org, costly_query, shared, request
):
    redis_url = request.getfixturevalue("redis_server").url if shared else None
    url = serve(read_budget_per_minute=USERS, redis_url=redis_url)
    fresh_minute()
    api, other = Api(url, org["apiKey"]), Api(url, other_org["apiKey"])

    first = api.get(SUMMARY, params=costly_query)
    assert first.status_code == 200 and reads(first) >= USERS  # spends the budget
    refused = api.get("/v1/billing/meters")  # however cheap, after the budget is spent
    assert_rate_limited(refused)
    assert "read budget" in error_of(refused)["message"]
    assert reads(refused) <= 2  # refused right after authentication, nothing more read
    assert other.get("/v1/billing/meters").status_code == 200  # per org


def test_with_redis_the_read_budget_is_shared_by_every_process(
    serve, org, costly_query, redis_server
):
    first, second = (
        serve(read_budget_per_minute=USERS, redis_url=redis_server.url) for _ in range(2)
    )
    fresh_minute()
    assert Api(first, org["apiKey"]).get(SUMMARY, params=costly_query).status_code == 200
    assert_rate_limited(Api(second, org["apiKey"]).get("/v1/billing/meters"))


def test_a_refused_write_changes_nothing(serve, org, api, costly_query):
    url = serve(read_budget_per_minute=USERS)
    fresh_minute()
    spender = Api(url, org["apiKey"])
    assert spender.get(SUMMARY, params=costly_query).status_code == 200
    refused = spender.post(
        "/v1/billing/meter-events",
        json={"events": [{"meterId": costly_query["meterId"], "userId": "late", "value": 7}]},
    )
    assert_rate_limited(refused)
    assert api.summary(meterId=costly_query["meterId"], userId="late")["value"] == 0


@pytest.mark.parametrize("shared", [False, True], ids=["per-process", "redis"])
def test_wrong_keys_are_limited_per_address(serve, org, shared, request):
    redis_url = request.getfixturevalue("redis_server").url if shared else None
    url = serve(unauthenticated_per_minute=3, redis_url=redis_url)
    fresh_minute()
    answers = [
        Api(url, key).get("/v1/billing/meters") for key in (WRONG_KEY, None, "mk_" + "v" * 40)
    ]
    assert [a.status_code for a in answers] == [401] * 3  # unknown, missing, unknown
    assert_rate_limited(Api(url, WRONG_KEY).get("/v1/billing/meters"))
    blocked = Api(url, org["apiKey"]).get("/v1/billing/meters")
    assert_rate_limited(blocked)  # the whole address, for the rest of the minute
    assert reads(blocked) == 0  # without a lookup
    assert Api(serve(), org["apiKey"]).get("/v1/billing/meters").status_code == 200


def test_with_redis_wrong_keys_count_over_every_process(serve, redis_server):
    first, second = (
        serve(unauthenticated_per_minute=3, redis_url=redis_server.url) for _ in range(2)
    )
    fresh_minute()
    codes = [
        Api(url, WRONG_KEY).get("/v1/billing/meters").status_code
        for url in (first, second, first, second)
    ]
    assert codes == [401, 401, 401, 429]


def test_guessing_the_admin_token_is_limited_too(serve, org):
    url = serve(unauthenticated_per_minute=2)
    fresh_minute()
    wrong = Api(url, "not-the-token")
    keys = f"/v1/admin/orgs/{org['name']}/keys"
    assert [wrong.get(keys).status_code for _ in range(2)] == [401, 401]
    assert_rate_limited(wrong.get(keys))


def test_a_key_lately_found_unknown_costs_no_lookup(serve, org, admin):
    url = serve()
    wrong = Api(url, WRONG_KEY)
    first, again = wrong.get("/v1/billing/meters"), wrong.get("/v1/billing/meters")
    assert first.status_code == again.status_code == 401
    assert reads(first) == 1 and reads(again) == 0
    # Valid keys are never cached: each request reads its key again, so a key
    # revoked a moment ago is refused on the very next request.
    api = Api(url, org["apiKey"])
    assert [reads(api.get("/v1/billing/meters")) >= 1 for _ in range(2)] == [True, True]
    prefix = org["apiKey"][:12]
    assert admin.delete(f"/v1/admin/orgs/{org['name']}/keys/{prefix}").json() == {"revoked": 1}
    assert api.get("/v1/billing/meters").status_code == 401


def test_outside_app_engine_invented_address_headers_change_nothing(serve):
    url = serve(unauthenticated_per_minute=2)
    fresh_minute()
    codes = [
        Api(url, WRONG_KEY)
        .get(
            "/v1/billing/meters",
            headers={"X-Appengine-User-Ip": f"203.0.113.{n}", "X-Forwarded-For": f"198.51.100.{n}"},
        )
        .status_code
        for n in range(3)
    ]
    assert codes == [401, 401, 429]  # all from 127.0.0.1


def test_on_app_engine_the_front_ends_address_counts_and_ipv6_per_64(serve):
    url = serve(unauthenticated_per_minute=2, production=True)
    fresh_minute()

    def attempt(address: str) -> int:
        return (
            Api(url, WRONG_KEY)
            .get("/v1/billing/meters", headers={"X-Appengine-User-Ip": address})
            .status_code
        )

    assert [attempt("203.0.113.7") for _ in range(3)] == [401, 401, 429]
    assert attempt("203.0.113.8") == 401  # another caller
    assert [attempt(f"2001:db8:1:2::{n}") for n in range(1, 4)] == [401, 401, 429]
    assert attempt("2001:db8:1:3::1") == 401  # another /64


def test_an_unknown_key_is_remembered_briefly_and_boundedly():
    """So a key can never be refused by this memory for longer than its short while, and
    a flood of distinct wrong keys cannot grow it without bound."""
    now = [0.0]
    unknown = UnknownKeys(seconds=30, entries=2, clock=lambda: now[0])
    unknown.add("a")
    now[0] = 29.9
    assert "a" in unknown
    now[0] = 30.0
    assert "a" not in unknown
    for digest in ("a", "b", "c"):
        unknown.add(digest)
    assert ["a" in unknown, "b" in unknown, "c" in unknown] == [False, True, True]
