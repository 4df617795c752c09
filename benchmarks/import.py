"""Import benchmark (issue 17): `metering events import` against the service's HTTP ingestion.

One run starts Google's Firestore-mode emulator and `metering serve` (2 workers x 8
threads, as benchmarks/ingest.py), then on that one emulator, side by side:

1. warm-up (first round): untimed HTTP batches, so the emulator's JIT is warm;
2. http: `--events` events through `POST /v1/billing/meter-events`, 100 per request
   from 8 client threads (bodies built beforehand), users at random of 1,000, unique
   idempotency keys: the service's own ingestion rate (events/s, wall clock);
3. import: the same number of events, same shape, written to an NDJSON file and
   imported into another org by `metering events import ORG FILE` as a child process
   (the service stopped first, so each run has the machine to itself). Its rate is
   wall clock from start to exit: Python start-up, the validation pass and the writing
   pass included. Its peak resident memory is the child's own high-water mark, `VmHWM`
   of /proc/PID/status as the import logs it at its end (`--memory-log`), beside the
   RSS it logs every second (printed every `--sample-every` events, with the slope).

Not `ru_maxrss` of `os.wait4`: Linux carries the high-water mark of the memory a process
had before `exec` into its `ru_maxrss`, and a child spawned by this script starts with
this script's memory (at 1,000,000 events, the http case's prebuilt bodies: 150 MB and
more), so that figure is the larger of the two processes' peaks, not the import's. It is
printed too ("ru_maxrss"), with this script's own peak, to show the difference.

Both orgs' stored totals are checked exactly (summary eventCount and value). Bars: import
events/s >= 0.8 x http events/s (the median over `--rounds`; the machine's load moves
both), import max RSS < 300 MB.

    .venv/bin/python benchmarks/import.py --events 1000000
    .venv/bin/python benchmarks/import.py --events 50000     # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import ingest

PROJECT = "metering-bench"
BAR_RATE, BAR_RSS_MB = 0.8, 300


def write_file(path: Path, meter_name: str, total: int, users: int, rng: random.Random) -> int:
    """`total` native events as NDJSON, shaped as the http case's; their value sum."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    tag, value_sum = uuid.uuid4().hex[:8], 0
    with open(path, "w", encoding="utf-8") as out:
        for number in range(total):
            value = rng.randint(1, 1000)
            value_sum += value
            out.write(
                json.dumps(
                    {
                        "eventName": meter_name,
                        "userId": f"user-{rng.randrange(users)}",
                        "value": value,
                        "timestamp": stamp,
                        "idempotency": f"{tag}-{number}",
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )
    return value_sum


def run_http(service, key: str, meter: dict, total: int, clients: int, rng) -> tuple[float, bool]:
    """events/s of `total` events over HTTP, and whether all were stored exactly."""
    load = ingest.build_load("spread", meter, total, 100, 1000, uuid.uuid4().hex[:8], rng)
    threads, start, records, _ = ingest.send_all(service, key, load.bodies, clients)
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    failed = [r for r in records if r[0] != 201]
    stored, detail = ingest.verify(service, key, load)
    if failed or not stored:
        print(f"http: {len(failed)} failed requests; stored exact: {stored} ({detail})")
    return load.events / wall, stored and not failed


def run_import(
    host: str, org: str, path: Path, workers: int, memory_log: Path, extra_env: dict
) -> tuple[float, dict, dict]:
    """(the wall seconds, peaks in MB, the report) of the CLI import, which samples its
    memory into `memory_log` every second (`--memory-log`). Peaks: the import's own
    (`own`, its VmHWM) and the two that include this script's memory (`ru_maxrss` of the
    child, and `parent`, this script's own peak at the spawn)."""
    parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    env = {
        **os.environ,
        **extra_env,
        "DATASTORE_EMULATOR_HOST": host,
        "METERING_PROJECT": PROJECT,
    }
    command = [
        *common.metering_command(),
        "events",
        "import",
        org,
        str(path),
        "--workers",
        str(workers),
        "--no-progress",
        "--memory-log",
        str(memory_log),
    ]
    began = time.perf_counter()
    child = subprocess.Popen(
        command, env=env, cwd=common.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"import failed ({child.returncode}): {err.decode()[-2000:]}")
    last = json.loads(memory_log.read_text().splitlines()[-1])
    peaks = {"own": last["VmHWM"] / 1024, "ru_maxrss": usage.ru_maxrss / 1024}
    peaks["parent"] = parent_peak
    return wall, peaks, json.loads(out.decode().splitlines()[-1])


def memory_samples(path: Path, every: int) -> list[dict]:
    """The import's memory log, thinned to the first sample past each `every` events of a
    phase, and the last one."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept, mark = [], ("", -1)
    for sample in lines:
        step = (sample["phase"], sample["done"] // every)
        if step != mark:
            kept.append(sample)
            mark = step
    if lines and kept[-1] is not lines[-1]:
        kept.append(lines[-1])
    return kept


def print_memory(samples: list[dict]) -> dict:
    """A table of the samples (MB), and the writing pass's slope after warm-up: MB of
    RSS per 100,000 events between the first sample past 100,000 written and the last."""
    mb = 1 << 20
    print("  t s    phase     done  RSS MB  py blocks  malloc used/free MB  mmapped  threads")
    for s in samples:
        print(
            f"  {s['t']:6.0f}  {s['phase']:8s} {s['done']:>9,}  {s.get('VmRSS', 0) / 1024:6.0f}"
            f"  {s.get('py_blocks', 0):>9,}  {s.get('malloc_used', 0) / mb:8.0f} /"
            f" {s.get('malloc_free', 0) / mb:4.0f}  {s.get('mmapped', 0) / mb:7.0f}"
            f"  {s.get('Threads', 0):7d}"
        )
    written = [s for s in samples if s["phase"] == "write" and s["done"] >= 100_000]
    slope = 0.0
    if len(written) >= 2 and written[-1]["done"] > written[0]["done"]:
        first, last = written[0], written[-1]
        slope = (last["VmRSS"] - first["VmRSS"]) / 1024 / (last["done"] - first["done"]) * 1e5
    print(f"  writing, after 100,000 events: {slope:+.1f} MB of RSS per 100,000 events")
    return {"slope_mb_per_100k": slope}


def one_round(args, emulator, workdir, number: int, rng) -> dict:
    """One http run and one import run of `args.events` events, on fresh orgs."""
    service = common.Service(emulator.host, 2, 8, workdir, PROJECT).start()
    http_rate, http_ok = float("nan"), True
    try:
        if not args.import_only:
            http_key = ingest.create_org(emulator.host, PROJECT, f"bench-http-{number}")
            if number == 1:
                ingest.warm_up(service, http_key, args.warmup, args.clients, 100, rng, "warm_calls")
            http_meter = ingest.create_meter(service, http_key, "api_calls")
            http_rate, http_ok = run_http(
                service, http_key, http_meter, args.events, args.clients, rng
            )
        import_org = f"bench-import-{number}"
        import_key = ingest.create_org(emulator.host, PROJECT, import_org)
        import_meter = ingest.create_meter(service, import_key, "api_calls")
    finally:
        service.stop()
    path = workdir / "import.ndjson"
    value_sum = write_file(path, "api_calls", args.events, 1000, rng)
    memory_log = workdir / f"import-memory-{number}.ndjson"
    extra_env = dict(item.split("=", 1) for item in args.env)
    wall, peaks, report = run_import(
        emulator.host, import_org, path, args.workers, memory_log, extra_env
    )
    path.unlink()
    service = common.Service(emulator.host, 2, 8, workdir, PROJECT).start()
    try:
        client = common.Client(service.url, import_key, timeout=300)
        try:
            total = ingest._summary(client, import_meter["id"])
        finally:
            client.close()
    finally:
        service.stop()
    found = {
        "round": number,
        "http_rate": http_rate,
        "http_exact": http_ok,
        "import_rate": args.events / wall,
        "import_wall": wall,
        "import_rss_mb": peaks["own"],
        "import_ru_maxrss_mb": peaks["ru_maxrss"],
        "bench_rss_mb": peaks["parent"],
        "import_created": report["created"],
        "import_exact": total["eventCount"] == args.events and total["value"] == value_sum,
    }
    found["ratio"] = found["import_rate"] / http_rate
    print(
        f"round {number}: http {http_rate:,.0f} events/s (exact: {http_ok}); import "
        f"{found['import_rate']:,.0f} events/s ({wall:.1f} s), max RSS {peaks['own']:.0f} MB "
        f"(exact: {found['import_exact']}); import/http {found['ratio']:.2f}\n"
        f"  (the child's ru_maxrss {peaks['ru_maxrss']:.0f} MB; this script's own peak at "
        f"the spawn {peaks['parent']:.0f} MB)",
        flush=True,
    )
    found.update(print_memory(memory_samples(memory_log, args.sample_every)))
    sys.stdout.flush()
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1, help="http then import, this often")
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4, help="the import's writer threads")
    parser.add_argument(
        "--import-only",
        action="store_true",
        help="no http run (no rate bar): the import's memory only",
    )
    parser.add_argument(
        "--sample-every", type=int, default=50_000, help="events between printed memory samples"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the import's process (experiments, e.g. "
        "MALLOC_ARENA_MAX=2 or PYTHONTRACEMALLOC=1)",
    )
    args = parser.parse_args(argv)
    rng = random.Random(17)
    workdir = common.scratch_dir()
    emulator = common.start_emulator("firestore", workdir)
    try:
        rounds = [one_round(args, emulator, workdir, n, rng) for n in range(1, args.rounds + 1)]
    finally:
        emulator.stop()
    ratio = statistics.median(r["ratio"] for r in rounds)
    rss = max(r["import_rss_mb"] for r in rounds)
    exact = all(r["import_exact"] and r["http_exact"] for r in rounds)
    rate_ok, rss_ok = args.import_only or ratio >= BAR_RATE, rss < BAR_RSS_MB
    if not args.import_only:
        print(f"{'MET ' if rate_ok else 'MISS'}  import >= {BAR_RATE} x http (median): {ratio:.2f}")
    print(f"{'MET ' if rss_ok else 'MISS'}  import max RSS < {BAR_RSS_MB} MB: {rss:.0f} MB")
    print(f"{'MET ' if exact else 'MISS'}  every run stored exactly")
    return 0 if rate_ok and rss_ok and exact else 1


if __name__ == "__main__":
    sys.exit(main())
