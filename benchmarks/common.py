"""Shared helpers of the benchmarks: processes, their CPU time, and a lean HTTP client.

- `start_emulator` runs Google's emulator (`app.emulator.Emulator`) with a log file.
- `Service` runs the service exactly as production does, as a separate process
  group: `metering serve --host 127.0.0.1 --port P --workers W --threads T` with
  `DATASTORE_EMULATOR_HOST` set, so `serve` starts no emulator of its own and
  creates the `demo` org, whose API key it prints on stdout.
- `TreeCpu` reads user+system CPU time of a process and all its descendants from
  /proc/PID/stat, so gunicorn's master and workers (or the emulator's Java
  process under its launcher script) are measured together.
- `Client` is a keep-alive HTTP/1.1 connection (`http.client`, no `requests`) so
  that the load generator costs as little CPU as possible on a small machine.

Only the standard library and the app's own `app.emulator` are used here.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.emulator import Emulator, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
KEY_LINE = re.compile(r"API key \(shown once\): (mk_\S+)")
USAGE = re.compile(r"rpcs=(\d+); read=(\d+); written=(\d+)")


# -- CPU time of process trees ----------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, utime+stime in ticks) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    rest = raw[raw.rindex(b")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return int(rest[1]), int(rest[11]) + int(rest[12])


def tree_pids(root: int) -> list[int]:
    """`root` and every live descendant of it."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = _stat(int(name))
            if found is not None:
                parents[int(name)] = found[0]
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    result, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in parents:
            result.append(pid)
            stack.extend(children.get(pid, ()))
    return result


@dataclass
class CpuSnapshot:
    ticks: dict[int, int]  # pid -> utime+stime of that process, in clock ticks
    at: float


class TreeCpu:
    """CPU seconds (user+system) used by a process tree between two snapshots.

    A process that exits between the snapshots loses its last ticks (they move to
    its parent's cutime only when reaped); `vanished` counts such processes so
    that a figure that missed some work says so.
    """

    def __init__(self, root: int):
        self.root = root

    def snapshot(self) -> CpuSnapshot:
        ticks = {}
        for pid in tree_pids(self.root):
            found = _stat(pid)
            if found is not None:
                ticks[pid] = found[1]
        return CpuSnapshot(ticks, time.monotonic())

    @staticmethod
    def used(before: CpuSnapshot, after: CpuSnapshot) -> TreeUsage:
        per_pid = {
            pid: (ticks - before.ticks.get(pid, 0)) / CLK_TCK for pid, ticks in after.ticks.items()
        }
        vanished = [pid for pid in before.ticks if pid not in after.ticks]
        return TreeUsage(sum(per_pid.values()), per_pid, len(vanished), after.at - before.at)


@dataclass
class TreeUsage:
    seconds: float
    per_pid: dict[int, float]
    vanished: int
    wall: float


def self_cpu() -> float:
    """CPU seconds (user+system) of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as handle:
        fields_ = [int(x) for x in handle.readline().split()[1:]]
    idle = fields_[3] + fields_[4]  # idle + iowait
    total = sum(fields_[:8])  # user..steal; guest time is already inside user
    return total - idle, total


# -- the emulator and the service -------------------------------------------------


def start_emulator(kind: str, workdir: Path) -> Emulator:
    """Google's emulator of that kind, started and answering; logs in workdir."""
    emulator = Emulator(kind, log_path=str(workdir / f"emulator-{kind}.log"))
    return emulator.start()


def metering_command() -> list[str]:
    script = Path(sys.executable).parent / "metering"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "app.cli"]


class Service:
    """`metering serve` as its own process group, against an existing emulator (or, with
    `data_dir` and no emulator host, the one it embeds, as `make run` does)."""

    def __init__(
        self,
        emulator_host: str | None,
        workers: int,
        threads: int,
        workdir: Path,
        project: str = "metering-bench",
        extra_env: dict | None = None,
        data_dir: Path | None = None,
        embedded_kind: str = "firestore",
    ):
        self.emulator_host, self.data_dir = emulator_host, data_dir
        self.embedded_kind = embedded_kind
        self.workers, self.threads = workers, threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"service-{workers}x{threads}-{self.port}.log"
        self.env = {
            **os.environ,
            "DATASTORE_EMULATOR_HOST": emulator_host or "",
            "METERING_PROJECT": project,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        if emulator_host is None:  # serve embeds an emulator only with no Datastore named
            for name in ("DATASTORE_EMULATOR_HOST", "METERING_PROJECT", "GOOGLE_CLOUD_PROJECT"):
                self.env.pop(name, None)
        self.process: subprocess.Popen | None = None
        self.api_key: str | None = None
        self._stdout: list[str] = []

    def start(self, timeout: float = 90.0) -> Service:
        command = [
            *metering_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
        ]
        if self.data_dir is not None:
            command += ["--data-dir", str(self.data_dir), "--emulator", self.embedded_kind]
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child writes it; closed below
        try:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
                text=True,
            )
        finally:
            log.close()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def demo_org_existed(self) -> bool:
        """Whether `serve` found the demo org already there (so printed no key)."""
        return any("exists" in line for line in self._stdout)

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._stdout.append(line)
            match = KEY_LINE.search(line)
            if match:
                self.api_key = match.group(1)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # type: ignore[union-attr]
                raise RuntimeError(
                    f"metering serve exited with {self.process.returncode}:\n" + self.log_tail()  # type: ignore[union-attr]
                )
            if (self.api_key or self.demo_org_existed) and self._healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"metering serve was not ready after {timeout:.0f}s:\n" + self.log_tail()
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def worker_pids(self) -> list[int]:
        return [pid for pid in tree_pids(self.process.pid) if pid != self.process.pid]  # type: ignore[union-attr]

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            text = []
        return "\n".join(["stdout: " + "".join(self._stdout).strip(), *text[-lines:]])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the service's process group, then SIGKILL whatever lingers."""
        if self.process is None:
            return
        stop_group(self.process, timeout)
        self.process = None


def stop_group(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """End a process started with start_new_session=True and all of its group."""
    pgid = process.pid
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                if process.returncode is not None:
                    return
            time.sleep(0.05)


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="metering-bench-"))


# -- a lean HTTP client -------------------------------------------------------------


@dataclass
class Usage:
    """Summed X-Datastore-Usage headers."""

    rpcs: int = 0
    read: int = 0
    written: int = 0
    responses: int = 0
    missing: int = 0

    def add_header(self, value: str | None) -> None:
        match = USAGE.search(value or "")
        if match is None:
            self.missing += 1
            return
        self.responses += 1
        self.rpcs += int(match.group(1))
        self.read += int(match.group(2))
        self.written += int(match.group(3))

    def merge(self, other: Usage) -> None:
        self.rpcs += other.rpcs
        self.read += other.read
        self.written += other.written
        self.responses += other.responses
        self.missing += other.missing


@dataclass
class Answer:
    status: int
    body: bytes
    usage: str | None

    def json(self):
        return json.loads(self.body)


class Client:
    """One keep-alive connection to the service, with the org key built in.

    A request that fails because the server closed an idle keep-alive connection
    is sent again once on a new connection (safe here: every event carries an
    idempotency key); `reconnects` counts those.
    """

    def __init__(self, base_url: str, api_key: str, timeout: float = 120.0):
        host, port = base_url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.timeout = host, int(port), timeout
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.connection: http.client.HTTPConnection | None = None
        self.reconnects = 0

    def _connect(self) -> http.client.HTTPConnection:
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.connection

    def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        for attempt in (1, 2):
            connection = self._connect()
            try:
                connection.request(method, path, body=body, headers=self.headers)
                response = connection.getresponse()
                data = response.read()
            except (
                http.client.RemoteDisconnected,
                BrokenPipeError,
                ConnectionResetError,
                http.client.CannotSendRequest,
            ):
                self.close()
                if attempt == 2:
                    raise
                self.reconnects += 1
                continue
            if response.will_close:
                self.close()
            return Answer(response.status, data, response.getheader("X-Datastore-Usage"))
        raise AssertionError("unreachable")

    def get_json(self, path: str):
        answer = self.request("GET", path)
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: {answer.status} {answer.body[:300]!r}")
        return answer.json()

    def post_json(self, path: str, document) -> dict:
        answer = self.request("POST", path, json.dumps(document).encode())
        if answer.status not in (200, 201):
            raise RuntimeError(f"POST {path}: {answer.status} {answer.body[:300]!r}")
        return answer.json()

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


# -- a py-spy profile of a process tree, summarised -------------------------------


@dataclass
class Profiler:
    """`py-spy record` of a process tree into collapsed stacks (optional tool)."""

    pid: int
    output: Path
    rate: int = 100
    gil: bool = True
    process: subprocess.Popen | None = None
    log: Path | None = None

    @staticmethod
    def available() -> str | None:
        for candidate in (Path(sys.executable).parent / "py-spy",):
            if candidate.exists():
                return str(candidate)
        from shutil import which

        return which("py-spy")

    def start(self) -> None:
        binary = self.available()
        if binary is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy, for profiling only)")
        self.log = self.output.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(self.pid),
                    "--subprocesses",
                    "--format",
                    "raw",
                    "--rate",
                    str(self.rate),
                    "--nonblocking",
                    "--output",
                    str(self.output),
                    *(["--gil"] if self.gil else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        time.sleep(1.0)  # let it attach to every process before the load starts

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGINT)  # py-spy writes its file on SIGINT
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_group(self.process, 1.0)
        self.process = None


@dataclass
class ProfileSummary:
    samples: int
    self_top: list[tuple[str, int]] = field(default_factory=list)
    inclusive_top: list[tuple[str, int]] = field(default_factory=list)
    buckets: list[tuple[str, int]] = field(default_factory=list)


def _frame_name(frame: str) -> str:
    """'function (path/to/file.py:123)' -> 'function (file-ish path:line)', shortened."""
    match = re.match(r"(.*) \((.*):(\d+)\)$", frame.strip())
    if not match:
        return frame.strip()
    function, path, line = match.groups()
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{function} ({path}:{line})"


def _frame_function(frame: str) -> str:
    """The frame without its line number: 'function (path)'."""
    return re.sub(r":\d+\)$", ")", _frame_name(frame))


# Where a request's CPU goes: the first label whose needle is in any frame of the
# stack wins, so the specific costs come first and the enclosing layers last.
BUCKETS = [
    ("ingest: public ids (hashids, ingest._public_id)", ("_public_id (app/services/ingest.py",)),
    ("ingest: Commit RPC (rpc.commit, gRPC call)", ("commit (app/storage/rpc.py",)),
    ("ingest: event protobufs (_add_events)", ("_add_events (",)),
    ("ingest: rollup increments (_cells, _add_rollups)", ("_cells (", "_add_rollups (")),
    ("ingest: rest of store (_Batch: keys, outcomes, ...)", ("app/services/ingest.py",)),
    ("auth: API key + org lookups (NDB, tenancy.require_org)", ("require_org (",)),
    ("meter resolution (NDB query, events.resolve_meters)", ("resolve_meters (",)),
    ("validation: quick loader or marshmallow schema", ("app/schemas/", "marshmallow/")),
    ("batch checks + drafts (app/services/events.py)", ("app/services/events.py",)),
    ("request body: JSON parse + checks (json_body)", ("json_body (",)),
    ("response: JSON encoding", ("flask/json", "JSONEncoder", "make_response")),
    ("NDB context open/close per request (app/datastore.py)", ("app/datastore.py",)),
    ("Flask/werkzeug request handling (other)", ("flask/", "werkzeug/")),
    ("gunicorn: HTTP parsing, socket I/O, polling", ("gunicorn/",)),
    ("gRPC background threads", ("grpc/",)),
]
OTHER = "other (interpreter, threading)"


def summarize_profile(path: Path, top: int = 25) -> ProfileSummary:
    """Top self and inclusive costs of the collapsed stacks py-spy wrote."""
    selfs: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    buckets: dict[str, int] = {}
    total = 0
    if not path.exists():
        return ProfileSummary(0)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            f
            for f in stack.split(";")
            if not f.startswith("process ") and not f.startswith("thread ")
        ]
        if not frames:
            continue
        total += count
        leaf = _frame_function(frames[-1])
        selfs[leaf] = selfs.get(leaf, 0) + count
        # Inclusive time of the app's own functions (the generic layers above them,
        # threading, gunicorn, Flask dispatch, hold every sample and say nothing).
        for name in {_frame_function(f) for f in frames if "(app/" in f}:
            inclusive[name] = inclusive.get(name, 0) + count
        joined = ";".join(frames)
        chosen = OTHER
        for label, needles in BUCKETS:
            if any(needle in joined for needle in needles):
                chosen = label
                break
        buckets[chosen] = buckets.get(chosen, 0) + count
    order = lambda d: sorted(d.items(), key=lambda kv: -kv[1])  # noqa: E731
    return ProfileSummary(total, order(selfs)[:top], order(inclusive)[:top], order(buckets))
