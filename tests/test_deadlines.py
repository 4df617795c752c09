"""Request deadlines, over HTTP: a request slowed down by its data, or by a Datastore
that does not answer, ends at its deadline with 503 `deadline_exceeded` and
`Retry-After`, the worker goes on serving, and nothing is half-written; the
compaction cron stops cleanly near its deadline and reports partial progress."""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest
import requests
from google.cloud import datastore

from app import create_app, deadline
from app.datastore import make_client
from app.errors import DeadlineExceeded
from app.storage import entities, metrics, rpc
from tests.support.http import Api, error_of
from tests.support.server import LiveServer

DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
EVENTS = "/v1/billing/meter-events"


def usage(answer) -> dict[str, int]:
    header = answer.headers["X-Datastore-Usage"]
    return {name: int(value) for name, value in (p.split("=") for p in header.split("; "))}


def record_users(api: Api, meter: dict, users: int) -> None:
    """One event each for `users` users, at distinct instants of DAY (uncompacted)."""
    events = [
        {
            "meterId": meter["id"],
            "userId": f"user-{n}",
            "value": n,
            "timestamp": (DAY + timedelta(seconds=10 * n)).isoformat(),
        }
        for n in range(users)
    ]
    for start in range(0, users, 100):
        api.record(*events[start : start + 100])


def assert_deadline_exceeded(answer) -> None:
    assert answer.status_code == 503, answer.text
    assert error_of(answer)["code"] == "deadline_exceeded"
    assert int(answer.headers["Retry-After"]) >= 1


USERS = 400


def _forget_latest_values(config, org) -> None:
    """Rewrite the org's rollups as a release before `L` properties left them: `last`
    deltas that say only when the latest event happened, so readers query raw events."""
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    rollups = [
        e for kind in ("meter-rollup", "meter-org-rollup") for e in raw.query(kind=kind).fetch()
    ]
    for rollup in rollups:
        for name in [name for name in rollup if name.startswith("L")]:
            del rollup[name]
    raw.put_multi(rollups)


def test_a_summary_slowed_by_its_data_stops_at_the_deadline(api, org, serve, emulator_kind, config):
    """A `last` meter grouped by user whose deltas an older release wrote reads the latest
    event of each user (one query per instant): hundreds of RPCs, far beyond a half-second
    deadline."""
    if emulator_kind != "firestore":
        pytest.skip("the legacy emulator's rollups carry their `last` values: no reads")
    meter = api.create_meter(aggregationType="last")
    record_users(api, meter, USERS)
    _forget_latest_values(config, org)
    query = {
        "meterId": meter["id"],
        "groupBy": "userId",
        "limit": 1000,  # every user on one page (answers by user are paged, 100 by default)
        "periodStart": DAY.isoformat(),
        "periodEnd": (DAY + timedelta(days=1)).isoformat(),
    }
    bounded = Api(serve(request_deadline_seconds=0.5), org["apiKey"])

    refused = bounded.get(f"{EVENTS}/summary", params=query)
    assert_deadline_exceeded(refused)
    assert usage(refused)["rpcs"] < USERS  # it stopped, rather than finishing late
    assert bounded.get("/v1/billing/meters").status_code == 200  # the worker goes on
    whole = api.summary(**query)  # without the tight deadline it completes
    assert len(whole["windows"]) == USERS


@pytest.fixture
def silent_datastore():
    """A TCP port that accepts connections and never answers: a hung Datastore."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_datastore_that_does_not_answer_gives_503_at_the_deadline(config, silent_datastore):
    before = os.environ.get("DATASTORE_EMULATOR_HOST")
    try:  # the NDB client reads the emulator address from the environment
        app = create_app(
            config.replace(emulator_host=silent_datastore, request_deadline_seconds=1.0)
        )
    finally:
        os.environ["DATASTORE_EMULATOR_HOST"] = before
    server = LiveServer(app).start()
    try:
        answer = requests.get(
            server.url + "/v1/billing/meters",
            timeout=20,
            headers={"Authorization": "Bearer mk_" + "x" * 40},
        )
    finally:
        server.stop()
    assert_deadline_exceeded(answer)


def test_past_the_deadline_nothing_is_written(api, org, serve):
    meter = api.create_meter()
    hurried = Api(serve(request_deadline_seconds=0.001), org["apiKey"])
    refused = hurried.post(
        EVENTS,
        json={
            "events": [{"meterId": meter["id"], "userId": "u", "value": 5, "idempotency": "once"}]
        },
    )
    assert_deadline_exceeded(refused)
    assert usage(refused)["written"] == 0
    assert api.summary(meterId=meter["id"])["value"] == 0
    assert (
        api.record({"meterId": meter["id"], "userId": "u", "value": 5, "idempotency": "once"})[
            "events"
        ][0]["status"]
        == "created"
    )


def test_compaction_stops_cleanly_near_its_deadline_and_the_next_call_goes_on(
    api, admin, serve, emulator_kind
):
    if emulator_kind != "firestore":
        pytest.skip("the legacy emulator leaves no deltas to compact")
    users = 300
    meter = api.create_meter()  # sum: one dirty rollup per user
    record_users(api, meter, users)
    before = api.summary(meterId=meter["id"], groupBy="userId")
    bounded = Api(serve(request_deadline_seconds=1.5), admin.key)
    runs = []
    while not runs or not runs[-1]["complete"]:
        answer = bounded.get("/v1/cron/compact")
        assert answer.status_code == 200, answer.text
        runs.append(answer.json())
        assert len(runs) < 200
    assert runs[0]["complete"] is False and runs[0]["visited"] < users
    # every user's rollup, and the org-wide one: its shards fold in one transaction
    assert sum(run["compacted"] for run in runs) == users + 1
    assert api.summary(meterId=meter["id"], groupBy="userId") == before


def test_without_a_deadline_requests_are_not_bounded(api, serve, org):
    unbounded = Api(serve(request_deadline_seconds=0), org["apiKey"])
    assert unbounded.get("/v1/billing/meters").status_code == 200


def test_a_commit_sent_before_the_deadline_is_never_cut_short(config, org):
    """A commit cut by a client-side timeout may still land, and a caller told 503 would
    send its batch again: so a commit sent with milliseconds left keeps its own timeout
    (and one sent past the deadline is refused unsent, as the tests above show)."""
    client = make_client(config)
    metrics.instrument(client)  # as the app does: the wrapper applies the deadline
    with client.context(namespace=org["name"]):
        request = rpc.new_commit()
        keys = []
        for number in range(1, 201):  # about 4 MB: the emulator takes a while over it
            entity = request.mutations.add().insert
            entities.fill_key(entity.key, "deadline-probe", number)
            entities.set_string(entity, "Payload", "x" * 20_000, indexed=False)
            keys.append(entity.key)
        deadline.start(0.5)
        try:
            while deadline.remaining() > 0.003:  # send it with 3 ms left
                pass
            rpc.send_commit(request)
            while deadline.remaining() > 0:
                pass
            with pytest.raises(DeadlineExceeded):  # reads past the deadline are not sent
                rpc.lookup(keys[:1])
        finally:
            deadline.clear()
        assert len(rpc.lookup(keys)) == 200
