"""What one limit check costs the service, side by side for two checkouts: Datastore
RPCs, Redis round trips and CPU per check, with wall time for what it is worth.

For each checkout (`--root`, default this one; `--against DIR` adds another, e.g. a
worktree of main) and each round, a child process of that checkout's own virtualenv
starts Google's Firestore-mode emulator and a Redis server, builds the app with Redis
(NDB's global cache, shared rate-limit counters) and counters trusted at once, creates
an org, a meter, a monthly limit and one event, makes 30 warm-up checks, then times
`--runs` checks through Flask's test client (no HTTP, no gunicorn, no recording: the
check's own path). Redis round trips are counted by wrapping redis-py's
`execute_command` and `Pipeline.execute` (instrumentation, nothing changed); Datastore
RPCs and entities read come from the answer's `X-Datastore-Usage`; CPU is the request
thread's `time.thread_time()` (the emulator's and Redis's own CPU are not in it).

    .venv/bin/python benchmarks/limit_check_cost.py --against ../wt-base [--runs 300 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(HERE.parent.parent), help="checkout to measure")
    parser.add_argument("--against", help="another checkout, measured in turn with --root")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _count_redis_round_trips() -> dict[str, int]:
    import redis

    trips = {"n": 0}
    pipeline_execute = redis.client.Pipeline.execute
    execute_command = redis.Redis.execute_command

    def execute(self, *args, **kwargs):
        trips["n"] += 1
        return pipeline_execute(self, *args, **kwargs)

    def command(self, *args, **kwargs):
        if not isinstance(self, redis.client.Pipeline):  # queued commands are not trips
            trips["n"] += 1
        return execute_command(self, *args, **kwargs)

    redis.client.Pipeline.execute = execute  # type: ignore[method-assign]
    redis.Redis.execute_command = command  # type: ignore[method-assign]
    return trips


def child(args) -> dict:
    """One checkout's figures (runs in that checkout's virtualenv, from its root)."""
    sys.path[:0] = [args.root, str(Path(args.root) / "benchmarks")]
    import common

    from app import create_app
    from app.config import Config
    from tests.support.redis_server import RedisServer

    trips = _count_redis_round_trips()
    workdir = common.scratch_dir()
    emulator = common.start_emulator("firestore", workdir)
    redis_server = RedisServer(str(workdir / "redis.log")).start()
    try:
        config = Config(
            project="limit-check-cost",
            emulator_host=emulator.host,
            hashid_salt="salt",
            admin_token="admin-token",
            redis_url=redis_server.url,
            limit_counting_delay=0.0,
        )
        client = create_app(config).test_client()
        admin = {"Authorization": "Bearer admin-token"}
        org = client.post("/v1/admin/orgs", json={"name": "cost"}, headers=admin).get_json()
        auth = {"Authorization": "Bearer " + org["apiKey"]}
        meter = client.post(
            "/v1/billing/meters", json={"name": "T", "eventName": "t"}, headers=auth
        ).get_json()
        limit = {"meterId": meter["id"], "limit": 1000, "period": "month"}
        assert client.post("/v1/billing/limits", json=limit, headers=auth).status_code == 201
        event = {"eventName": "t", "userId": "u", "value": 3, "idempotency": "x"}
        answer = client.post("/v1/billing/meter-events", json={"events": [event]}, headers=auth)
        assert answer.status_code == 201
        path = f"/v1/billing/limits/check?meterId={meter['id']}&userId=u"
        for _ in range(30):
            assert client.get(path, headers=auth).status_code == 200
        walls: list[float] = []
        cpus: list[float] = []
        usage: dict[str, int] = {}
        trips["n"] = 0
        for _ in range(args.runs):
            wall, cpu = time.perf_counter(), time.thread_time()
            answer = client.get(path, headers=auth)
            cpus.append(time.thread_time() - cpu)
            walls.append(time.perf_counter() - wall)
            assert answer.status_code == 200 and answer.get_json()["used"] == 3
            header = answer.headers["X-Datastore-Usage"]
            usage[header] = usage.get(header, 0) + 1
    finally:
        redis_server.kill()
        emulator.stop()
    walls.sort()
    return {
        "wall_median_ms": statistics.median(walls) * 1000,
        "wall_p99_ms": walls[int(0.99 * len(walls))] * 1000,
        "cpu_median_ms": statistics.median(cpus) * 1000,
        "redis_round_trips": trips["n"] / args.runs,
        "datastore_usage": usage,
    }


def measure(root: str, runs: int) -> dict:
    python = Path(root) / ".venv" / "bin" / "python"
    command = [str(python), str(HERE), "--child", "--root", root, "--runs", str(runs)]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    roots = [os.path.abspath(args.root)] + ([os.path.abspath(args.against)] if args.against else [])
    print(f"load average at start: {os.getloadavg()}")
    for number in range(1, args.rounds + 1):
        for root in roots:
            figures = measure(root, args.runs)
            print(
                f"round {number} {root}: Datastore {figures['datastore_usage']}; "
                f"Redis round trips {figures['redis_round_trips']:.2f}/check; "
                f"CPU median {figures['cpu_median_ms']:.2f} ms; wall median "
                f"{figures['wall_median_ms']:.2f} ms, p99 {figures['wall_p99_ms']:.2f} ms "
                f"(load {os.getloadavg()[0]:.1f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
