"""What `metering serve`'s background loops cost per second with no traffic (issue 14).

A worker of `metering serve` runs the delivery loop (alert evaluation, `_Deliverer`),
the sender's timed pass (`_Sender`) and compaction in background threads. With no
traffic at all they still visit the registered orgs every second: this measures what
that costs, as CPU per second of the service's worker(s) and of the emulator, in a few
shapes, each on a freshly reset Firestore-mode emulator:

- `none`: one org with a meter and no rule (nothing registered for deliveries);
- `rules`: one org with `--rules` rules on a meter (`ingest.create_alert_rules`);
- `orgs`: `--orgs` orgs, one with the rules, the others with one webhook endpoint each
  (so registered and visited by both loops, but with nothing to do).

Each shape waits `--warm` seconds (the rules' first passes, leases let go), then reads
the CPU over `--seconds`. Rounds of the shapes alternate (`--repeat`), since the machine
may be shared. Example:

    .venv/bin/python benchmarks/idle_loops.py --workers 1 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import ingest

PROJECT = "metering-bench"
SHAPES = ("none", "rules", "orgs")


def _org(emulator_host: str) -> tuple[str, str]:
    return ingest.create_org_with_namespace(emulator_host, PROJECT, f"idle-{uuid.uuid4().hex[:8]}")


def _orgs_in_process(emulator_host: str, count: int) -> list[str]:
    """API keys of `count` new orgs, made in this process (one `metering orgs create`
    each would take a minute)."""
    os.environ["DATASTORE_EMULATOR_HOST"] = emulator_host
    os.environ["METERING_PROJECT"] = PROJECT
    from app.config import Config
    from app.datastore import make_client
    from app.models import ids
    from app.services import orgs

    config = Config.from_env()
    ids.configure(config.hashid_salt)
    client = make_client(config)
    keys = []
    with client.context():
        for _ in range(count):
            keys.append(orgs.create_org(f"idle-{uuid.uuid4().hex[:8]}").secret)
    return keys


def _endpoint(service: common.Service, api_key: str) -> None:
    client = common.Client(service.url, api_key)
    try:
        client.post_json("/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9/hook"})
    finally:
        client.close()


def set_up(shape: str, service: common.Service, emulator, args) -> None:
    key, _namespace = _org(emulator.host)
    meter = ingest.create_meter(service, key, f"idle_{uuid.uuid4().hex[:6]}")
    if shape in ("rules", "orgs"):
        ingest.create_alert_rules(service, key, meter, args.rules)
    if shape == "orgs":
        for other in _orgs_in_process(emulator.host, args.orgs - 1):
            _endpoint(service, other)


def measure(service: common.Service, emulator, seconds: float) -> tuple[float, list[float], float]:
    """(service ms/s, each worker's ms/s, emulator ms/s) over `seconds`."""
    svc, emu = common.TreeCpu(service.process.pid), common.TreeCpu(emulator.process.pid)
    s0, e0 = svc.snapshot(), emu.snapshot()
    time.sleep(seconds)
    used = common.TreeCpu.used(s0, svc.snapshot())
    emu_used = common.TreeCpu.used(e0, emu.snapshot())
    workers = sorted(
        (cpu for pid, cpu in used.per_pid.items() if pid != service.process.pid), reverse=True
    )
    per_s = 1000 / used.wall
    return used.seconds * per_s, [w * per_s for w in workers], emu_used.seconds * per_s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--warm", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    workdir = common.scratch_dir()
    print(
        f"metering idle loops — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}; "
        f"{ingest.source_state()}; `metering serve --workers {args.workers} --threads "
        f"{args.threads}`; logs in {workdir}",
        flush=True,
    )
    emulator = common.start_emulator("firestore", workdir)
    results: dict[str, list[tuple[float, list[float], float]]] = {s: [] for s in shapes}
    try:
        for run in range(1, args.repeat + 1):
            for shape in shapes:
                emulator.reset()
                service = common.Service(
                    emulator.host,
                    args.workers,
                    args.threads,
                    workdir,
                    project=PROJECT,
                    extra_env={"METERING_BACKGROUND_DELIVERY_SECONDS": "1"},
                ).start()
                try:
                    set_up(shape, service, emulator, args)
                    time.sleep(args.warm)
                    found = measure(service, emulator, args.seconds)
                finally:
                    service.stop()
                results[shape].append(found)
                total, workers, emu = found
                print(
                    f"  [run {run} {shape}] service {total:.1f} ms CPU per second (workers "
                    f"{' / '.join(f'{w:.1f}' for w in workers)}), emulator {emu:.1f} ms/s; "
                    f"load average {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    finally:
        emulator.stop()
    print("\n| shape | service CPU ms/s (runs) | median | per worker | emulator ms/s |")
    print("|---|---|---|---|---|")
    for shape, rows in results.items():
        totals = [f[0] for f in rows]
        median = statistics.median(totals) if totals else float("nan")
        print(
            f"| {shape} | {' / '.join(f'{t:.1f}' for t in totals)} | {median:.1f} | "
            f"{median / args.workers:.1f} | "
            f"{' / '.join(f'{f[2]:.1f}' for f in rows)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
