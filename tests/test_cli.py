"""The `metering` console script, run as a user runs it: as child processes.

`serve` without a configured Datastore starts Google's legacy emulator itself
(data on disk, stopped with it); with DATASTORE_EMULATOR_HOST it uses that one,
here the session's separately started emulator (kind from METERING_TEST_EMULATOR),
which the admin commands reach too.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from app.emulator import free_port
from tests.support.http import Api
from tests.support.names import unique_org_name
from tests.support.processes import (
    Processes,
    cli_env,
    curl_example,
    mentioning,
    run_cli,
    run_cli_all,
    send_curl,
    wait_serving,
    wait_until,
)

pytestmark = pytest.mark.slow


def _serve(procs: Processes, data_dir: Path, env: dict, name: str, *extra: str):
    """Start `metering serve` on a free port and wait until it answers."""
    port = free_port()
    child = procs.start(
        ["serve", "--port", str(port), "--data-dir", str(data_dir), *extra], env, name
    )
    url = f"http://127.0.0.1:{port}"
    wait_serving(f"{url}/healthz", 45, f"{name} serving", child)
    # The master forks workers: it must never have loaded gRPC (demo org in a child).
    grpc_loaded = "cygrpc" in Path(f"/proc/{child.pid}/maps").read_text()
    assert not grpc_loaded, "the serve master loaded gRPC before forking workers"
    return child, url


def _stop(child, sig: int, data_dir: Path) -> None:
    """Stop serve like a user would, and check it left no emulator behind."""
    if sig == signal.SIGINT:
        child.signal_group(sig)  # Ctrl-C reaches the terminal's whole foreground group
    else:
        child.process.send_signal(sig)
    assert child.wait(30) == 0, child.stderr()
    assert mentioning(str(data_dir)) == []  # no orphan Java process, not even exiting
    assert not (data_dir / "emulator-host").exists()
    assert "Traceback" not in child.stderr() and "fork" not in child.stderr().lower()


def _stops_with_serve(**overrides: str) -> dict:
    """The environment of a `serve` whose embedded emulator stops when it stops (the
    tests of the hand-over to the next `serve` set a linger of their own)."""
    return cli_env(METERING_EMULATOR_LINGER_SECONDS="0", **overrides)


def _bearer(curl_argv: list[str]) -> str:
    header = next(a for a in curl_argv if a.startswith("Authorization:"))
    return header.split("Bearer ", 1)[1]


def _assert_one_line_error(result, says: str) -> None:
    assert result.returncode != 0, result
    assert result.stdout == "", result
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("Error: ") and says in result.stderr, result.stderr


def test_serve_runs_its_own_emulator_and_keeps_data_across_restarts(procs, tmp_path):
    data_dir, env = tmp_path / "data", _stops_with_serve()

    first, url = _serve(procs, data_dir, env, "first")
    assert "Started Google's Datastore emulator" in first.stderr()
    assert "Created demo org 'demo'" in first.stdout()
    curl = curl_example(first.stdout())
    created = send_curl(curl)
    assert created.status_code == 201, created.text
    _stop(first, signal.SIGTERM, data_dir)

    second, url = _serve(procs, data_dir, env, "second")
    assert "Demo org 'demo' exists" in second.stdout() and "API key" not in second.stdout()
    demo = Api(url, _bearer(curl))
    meters = demo.get("/v1/billing/meters")
    assert [m["id"] for m in meters.json()["meters"]] == [created.json()["id"]]
    listed = run_cli("keys", "list", "demo", "--data-dir", str(data_dir), env=env)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1  # the demo org was not created again

    # Workers that exit (here: a graceful reload) must not take the emulator along.
    second.process.send_signal(signal.SIGHUP)
    wait_until(lambda: second.stderr().count("Booting worker") >= 4, 30, "reload", second)
    wait_until(lambda: "Worker exiting" in second.stderr(), 30, "old workers gone", second)
    assert (data_dir / "emulator-host").exists()
    assert demo.get("/v1/billing/meters").status_code == 200
    _stop(second, signal.SIGINT, data_dir)

    gone = run_cli("keys", "list", "demo", "--data-dir", str(data_dir), env=env)
    _assert_one_line_error(gone, "no Datastore configured")


def test_serve_embeds_the_firestore_mode_emulator_by_default(procs, tmp_path):
    """The default: like today's Cloud Datastore (so the fast ingest path), its data
    exported into the folder as it stops (kept across restarts: the test above), stopped
    with the service."""
    import socket

    data_dir, env = tmp_path / "data", _stops_with_serve()
    child, url = _serve(procs, data_dir, env, "firestore")
    assert "Firestore in Datastore mode, data saved in" in child.stderr()
    emulator_host = (data_dir / "emulator-host").read_text()
    demo = Api(url, _bearer(curl_example(child.stdout())))
    meter = demo.create_meter()
    for value, key in ((3, "k1"), (4, "k2")):
        recorded = demo.post(
            "/v1/billing/meter-events",
            json={
                "events": [
                    {"meterId": meter["id"], "userId": "u", "value": value, "idempotency": key}
                ]
            },
        )
        assert recorded.status_code == 201, recorded.text
        # The fast path: key, org and meter lookups and one Commit of the event, the
        # user's rollup and the org-wide one (plus, on a worker's first batch, its
        # one-off probe for transforms, and at most once a second per org its lookup of
        # the org's meters with alert rules, `alerts.feed`, and (issue 16) its lookup of
        # the org's meters with usage limits, `limits.index`); the legacy emulator's
        # careful path would add a transaction and a lookup of the event and its rollups.
        # Once per meter and worker, the lookup of the meter's first-event record, and on
        # the meter's first batch ever its write (`app.storage.first_events`).
        fast_path = {(4, 3, 3), (5, 3, 4), (5, 4, 3), (6, 4, 4), (6, 5, 3), (7, 5, 4)}
        first_of_meter = {(0, 0, 0), (1, 1, 0), (2, 1, 1)}
        assert recorded.headers["X-Datastore-Usage"] in {
            f"rpcs={r + fr}; read={n + fn}; written={w + fw}"
            for r, n, w in fast_path
            for fr, fn, fw in first_of_meter
        }
    summary = demo.get(
        "/v1/billing/meter-events/summary", params={"meterId": meter["id"], "userId": "u"}
    ).json()
    assert (summary["value"], summary["eventCount"]) == (7, 2)
    _stop(child, signal.SIGTERM, data_dir)
    host, _, port = emulator_host.rpartition(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()


def test_serve_can_embed_the_legacy_emulator_and_keeps_using_it_for_its_folder(procs, tmp_path):
    """`--emulator legacy` keeps its data in the folder's `datastore`; a later `serve`
    without the option finds only legacy data there and embeds the legacy one again."""
    data_dir, env = tmp_path / "data", _stops_with_serve()
    first, url = _serve(procs, data_dir, env, "first", "--emulator", "legacy")
    assert f"data in {data_dir / 'datastore'}" in first.stderr()
    curl = curl_example(first.stdout())
    created = send_curl(curl)
    assert created.status_code == 201, created.text
    _stop(first, signal.SIGTERM, data_dir)

    second, url = _serve(procs, data_dir, env, "second")
    assert f"data in {data_dir / 'datastore'}" in second.stderr()
    meters = Api(url, _bearer(curl)).get("/v1/billing/meters")
    assert [m["id"] for m in meters.json()["meters"]] == [created.json()["id"]]
    _stop(second, signal.SIGTERM, data_dir)


def _in_group(group: int) -> list[int]:
    """The live processes (not zombies) of a process group."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            found.append(int(entry.name))
    return sorted(found)


@pytest.mark.parametrize("kind", ["firestore", "legacy"])
def test_serve_killed_with_sigkill_adopts_its_emulator_when_started_again(procs, tmp_path, kind):
    """A `serve` killed with SIGKILL (master and workers) leaves its emulator running in
    its own session, with every entity in memory. Started again on the folder, serve
    adopts it, keeping the data; stopped, it stops the emulator, whose data is saved in
    the folder (the legacy one writes it, the Firestore-mode one is asked for an
    export), and the next start finds it there."""
    data_dir, env = tmp_path / "data", _stops_with_serve()
    first, url = _serve(procs, data_dir, env, "first", "--emulator", kind)
    curl = curl_example(first.stdout())
    created = send_curl(curl)
    assert created.status_code == 201, created.text
    group = json.loads((data_dir / "emulator-owner.json").read_text())["group"]
    first.signal_group(signal.SIGKILL)
    first.wait(30)
    emulators = _in_group(group)
    assert emulators  # left running, in its own session

    second, url = _serve(procs, data_dir, env, "second", "--emulator", kind)
    assert "Adopted Google's Datastore emulator" in second.stderr()
    assert _in_group(group) == emulators  # the same one
    demo = Api(url, _bearer(curl))
    meters = demo.get("/v1/billing/meters")
    assert [m["id"] for m in meters.json()["meters"]] == [created.json()["id"]]
    _stop(second, signal.SIGTERM, data_dir)  # the emulator stopped with it, data saved
    assert _in_group(group) == []

    third, url = _serve(procs, data_dir, env, "third", "--emulator", kind)
    assert "Started Google's Datastore emulator" in third.stderr()
    meters = Api(url, _bearer(curl)).get("/v1/billing/meters")
    assert [m["id"] for m in meters.json()["meters"]] == [created.json()["id"]]
    _stop(third, signal.SIGTERM, data_dir)


def test_a_stopped_serve_leaves_its_emulator_to_the_next_serve_then_to_a_caretaker(procs, tmp_path):
    """Stopped (SIGTERM, or Ctrl-C), `serve` saves the data and hands its Firestore-mode
    emulator to a caretaker instead of stopping it: the next `serve` on the folder takes
    it over within the linger, skipping the emulator's restart and import. With nobody
    taking it over, the caretaker stops it once the linger is over; the data was saved,
    and a later `serve` starts a new emulator from it."""
    data_dir = tmp_path / "data"
    first, url = _serve(procs, data_dir, cli_env(METERING_EMULATOR_LINGER_SECONDS="60"), "first")
    curl = curl_example(first.stdout())
    created = send_curl(curl)
    assert created.status_code == 201, created.text
    group = json.loads((data_dir / "emulator-owner.json").read_text())["group"]
    emulators = _in_group(group)
    first.process.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.stderr()
    assert _in_group(group) == emulators  # still running, its data saved beside it
    owner = json.loads((data_dir / "emulator-owner.json").read_text())
    assert owner["caretaker"] and owner["group"] == group
    caretaker = int(owner["serve"].split("-")[0])
    assert Path(f"/proc/{caretaker}").exists()
    assert list((data_dir / "firestore").glob("*/*.overall_export_metadata"))
    # the admin commands do not reach a stopped serve's emulator
    gone = run_cli("keys", "list", "demo", "--data-dir", str(data_dir), env=cli_env())
    _assert_one_line_error(gone, "no Datastore configured")

    second, url = _serve(procs, data_dir, cli_env(METERING_EMULATOR_LINGER_SECONDS="1"), "second")
    assert "Adopted Google's Datastore emulator" in second.stderr()
    assert _in_group(group) == emulators
    wait_until(lambda: not mentioning(f"caretaker --data-dir {data_dir}"), 10, "caretaker gone")
    meters = Api(url, _bearer(curl)).get("/v1/billing/meters")
    assert [m["id"] for m in meters.json()["meters"]] == [created.json()["id"]]
    second.signal_group(signal.SIGINT)  # Ctrl-C: the same hand-over, a linger of 1 s
    assert second.wait(30) == 0, second.stderr()
    wait_until(lambda: _in_group(group) == [], 30, "the caretaker stopped the emulator")
    wait_until(lambda: not (data_dir / "emulator-owner.json").exists(), 10, "owner gone")
    wait_until(lambda: mentioning(str(data_dir)) == [], 10, "the caretaker gone too")

    third, url = _serve(procs, data_dir, _stops_with_serve(), "third")
    assert "Started Google's Datastore emulator" in third.stderr()
    meters = Api(url, _bearer(curl)).get("/v1/billing/meters")
    assert [m["id"] for m in meters.json()["meters"]] == [created.json()["id"]]
    _stop(third, signal.SIGTERM, data_dir)


def test_a_caretaker_told_to_stop_stops_the_emulator_with_its_data_saved(procs, tmp_path):
    """A machine shutting down signals the caretaker too: it stops the emulator then,
    not at the end of its linger, and the next `serve` starts from the saved data."""
    data_dir = tmp_path / "data"
    first, url = _serve(procs, data_dir, cli_env(METERING_EMULATOR_LINGER_SECONDS="600"), "first")
    curl = curl_example(first.stdout())
    created = send_curl(curl)
    assert created.status_code == 201, created.text
    first.process.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.stderr()
    owner = json.loads((data_dir / "emulator-owner.json").read_text())
    os.kill(int(owner["serve"].split("-")[0]), signal.SIGTERM)
    wait_until(lambda: _in_group(owner["group"]) == [], 30, "the emulator stopped")
    wait_until(lambda: mentioning(str(data_dir)) == [], 10, "the caretaker gone")
    assert not (data_dir / "emulator-owner.json").exists()
    second, url = _serve(procs, data_dir, _stops_with_serve(), "second")
    assert "Started Google's Datastore emulator" in second.stderr()
    meters = Api(url, _bearer(curl)).get("/v1/billing/meters")
    assert [m["id"] for m in meters.json()["meters"]] == [created.json()["id"]]
    _stop(second, signal.SIGTERM, data_dir)


def test_serve_says_what_to_install_when_the_emulator_is_missing(tmp_path):
    empty_sdk = tmp_path / "sdk"
    empty_sdk.mkdir()
    env = cli_env(CLOUDSDK_ROOT_DIR=str(empty_sdk), PATH=str(Path(sys.executable).parent))
    data_dir = tmp_path / "data"
    result = run_cli("serve", "--port", str(free_port()), "--data-dir", str(data_dir), env=env)
    _assert_one_line_error(result, "install the Google Cloud CLI")
    assert mentioning(str(data_dir)) == []


class _NotADatastore(http.server.BaseHTTPRequestHandler):
    """Answers an emulator's health check, and nothing a Datastore client can use."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"Ok\n")

    def log_message(self, *args):
        pass


def test_serve_stops_with_the_reason_when_the_demo_org_cannot_be_made(tmp_path):
    # The demo org is made in a child while the workers boot (a faster restart): its
    # failure must still end serve with a non-zero status and the child's one-line reason.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotADatastore)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = cli_env(DATASTORE_EMULATOR_HOST=f"127.0.0.1:{server.server_port}")
        port = free_port()
        data_dir = tmp_path / "data"
        result = run_cli(
            "serve", "--port", str(port), "--data-dir", str(data_dir), env=env, timeout=90
        )
    finally:
        server.shutdown()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout and "Demo org" not in result.stdout
    reasons = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(reasons) == 1 and "the Datastore failed" in reasons[0], result.stderr
    assert "Shutting down" in result.stderr  # gunicorn's master stopped, workers too


def _json(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_org_and_key_commands_reach_the_configured_emulator(emulator, procs, tmp_path):
    env = cli_env(DATASTORE_EMULATOR_HOST=emulator.host)
    unused = tmp_path / "unused"
    server, url = _serve(procs, unused, env, "serve")
    assert "Started Google's" not in server.stderr() and not unused.exists()
    assert "Created demo org 'demo'" in server.stdout()

    name = unique_org_name("acme")
    first = _json(run_cli("orgs", "create", name, env=env))
    assert first["name"] == first["namespace"] == name and first["apiKey"].startswith("mk_")
    Api(url, first["apiKey"]).create_meter()
    second = _json(run_cli("keys", "create", name, env=env))
    assert second["apiKey"] != first["apiKey"]
    prefixes = {k["prefix"]: k["revoked"] for k in _json(run_cli("keys", "list", name, env=env))}
    assert prefixes == {first["keyPrefix"]: False, second["keyPrefix"]: False}

    revoked = _json(run_cli("keys", "revoke", name, first["keyPrefix"], env=env))
    assert revoked == {"org": name, "revoked": 1}
    assert Api(url, first["apiKey"]).get("/v1/billing/meters").status_code == 401
    assert Api(url, second["apiKey"]).get("/v1/billing/meters").status_code == 200
    prefixes = {k["prefix"]: k["revoked"] for k in _json(run_cli("keys", "list", name, env=env))}
    assert prefixes == {first["keyPrefix"]: True, second["keyPrefix"]: False}


def test_org_and_key_commands_fail_in_one_line(emulator):
    env = cli_env(DATASTORE_EMULATOR_HOST=emulator.host)
    name = unique_org_name("acme")
    prefix = _json(run_cli("orgs", "create", name, env=env))["keyPrefix"]
    nowhere = cli_env(DATASTORE_EMULATOR_HOST=f"127.0.0.1:{free_port()}")
    cases = [
        (["orgs", "create", name], env, "already exists"),
        (["orgs", "create", "Bad_Name"], env, "lower-case letters"),
        (["keys", "create", "no-such-org"], env, "not found"),
        (["keys", "revoke", "no-such-org", prefix], env, "not found"),
        (["keys", "revoke", name, "mk_short"], env, "first 12 characters"),
        (["keys", "revoke", name, "mk_notakey00"], env, "no active key"),
        (["keys", "list", name], nowhere, "no Datastore emulator answers"),
    ]
    results = run_cli_all([(args, case_env) for args, case_env, _ in cases])
    for (_, _, says), result in zip(cases, results):
        _assert_one_line_error(result, says)
