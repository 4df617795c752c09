"""The per-org rate limit: the counting rule, the 429 answer, and per process vs shared."""

from __future__ import annotations

import time

import pytest

from app import create_app
from app.errors import TooManyRequests
from app.ratelimit import RateLimiter
from tests.support.flavour import firestore_only  # noqa: F401
from tests.support.http import Api, error_of
from tests.support.server import LiveServer

pytestmark = pytest.mark.usefixtures("firestore_only")


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_limit_holds_per_org_and_per_clock_minute():
    clock = Clock(960_020.0)  # 20 s into a minute
    limiter = RateLimiter(2, None, clock=clock)
    limiter.check("a"), limiter.check("a"), limiter.check("b")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("a")
    assert refused.value.retry_after == 40 and refused.value.status == 429
    clock.now += 40  # the next minute starts afresh
    limiter.check("a")


def test_retry_after_is_at_least_one_second():
    limiter = RateLimiter(1, None, clock=Clock(960_059.9))
    limiter.check("a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("a")
    assert refused.value.retry_after == 1


def test_zero_means_no_limit():
    limiter = RateLimiter(0, None)
    for _ in range(1000):
        limiter.check("a")


# -- issue 16: a cheap request's reads ride on its org's next count -------------------


def test_carried_reads_are_counted_by_the_orgs_next_request_before_it_is_let_in(
    redis_server,
):
    clock = Clock(960_020.0)
    limiter = RateLimiter(0, redis_server.url, clock=clock, read_budget=30)
    other = RateLimiter(0, redis_server.url, clock=clock, read_budget=30)
    limiter.check("a")
    limiter.record_reads("a", 12, carry=True)
    limiter.record_reads("a", 12, carry=True)
    other.check("a")  # another process: the carried 24 are not in Redis yet
    limiter.record_reads("a", 12, carry=True)
    with pytest.raises(TooManyRequests):  # added (36 >= 30) in the same round trip
        limiter.check("a")
    with pytest.raises(TooManyRequests):  # and now shared
        other.check("a")
    limiter.check("b")  # per org


def test_costly_reads_and_reads_of_an_earlier_minute_are_not_held_back(redis_server):
    clock = Clock(960_020.0)
    limiter = RateLimiter(0, redis_server.url, clock=clock, read_budget=30)
    other = RateLimiter(0, redis_server.url, clock=clock, read_budget=30)
    limiter.record_reads("a", 33, carry=True)  # over CARRIED_READS: added at once
    with pytest.raises(TooManyRequests):
        other.check("a")
    limiter.record_reads("b", 20, carry=True)
    clock.now += 60
    limiter.check("b")  # adds the 20 to the minute they were read in, not to this one
    limiter.record_reads("b", 20, carry=True)
    limiter.check("b")  # 20 this minute (40 would have been refused)
    clock.now -= 60
    other.record_reads("b", 10)
    with pytest.raises(TooManyRequests):  # 20 + 10 in the earlier minute
        other.check("b")


def fresh_minute() -> None:
    """Start near the beginning of a minute, so no test straddles a window."""
    into = time.time() % 60
    if into > 50:
        time.sleep(60 - into + 0.1)


@pytest.fixture
def limited(config):
    servers = []

    def start(limit: int, redis_url: str | None = None) -> str:
        server = LiveServer(
            create_app(config.replace(rate_limit_per_minute=limit, redis_url=redis_url))
        ).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def test_over_the_limit_answers_429_with_retry_after_in_the_envelope(
    limited, org, other_org, admin
):
    url = limited(3)
    fresh_minute()
    api, other = Api(url, org["apiKey"]), Api(url, other_org["apiKey"])
    assert [api.get("/v1/billing/meters").status_code for _ in range(3)] == [200] * 3
    refused = api.get("/v1/billing/meters")
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-Request-Id"]
    assert other.get("/v1/billing/meters").status_code == 200  # per org
    assert Api(url, admin.key).get(f"/v1/admin/orgs/{org['name']}/keys").status_code == 200
    assert Api(url).get("/healthz").status_code == 200


def test_a_refused_request_changes_nothing(limited, org):
    fresh_minute()
    api = Api(limited(1), org["apiKey"])
    api.create_meter()
    refused = api.post("/v1/billing/meters", json={"name": "b", "eventName": "b"})
    assert refused.status_code == 429
    unlimited = Api(limited(0), org["apiKey"])
    assert unlimited.get("/v1/billing/meters").json()["count"] == 1


def test_without_redis_each_process_counts_alone(limited, org):
    first, second = limited(2), limited(2)
    fresh_minute()
    codes = [
        Api(url, org["apiKey"]).get("/v1/billing/meters").status_code
        for url in (first, first, second, second)
    ]
    assert codes == [200] * 4
