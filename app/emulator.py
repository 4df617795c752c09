"""Google's Datastore emulators as child processes: start, wait, reset, stop.

Two emulators ship with the Google Cloud CLI and both are used:

- `firestore`: `cloud_firestore_emulator --database-mode=datastore-mode`, which
  behaves like today's Cloud Datastore (strong consistency, pessimistic locking).
  Memory only.
- `legacy`: `cloud_datastore_emulator`, run with `--consistency=1.0`. It can keep
  its data on disk (so `metering serve` uses it) and, with `--require_indexes`,
  refuses queries whose composite index `index.yaml` does not declare.

We start the emulators' own launchers directly rather than through `gcloud`, so
that the process we stop is the emulator itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

INSTALL_HINT = (
    "Google's Datastore emulator is missing: install the Google Cloud CLI with its "
    "emulator components and Java (Debian/Ubuntu: apt-get install google-cloud-cli "
    "google-cloud-cli-datastore-emulator google-cloud-cli-firestore-emulator "
    "openjdk-17-jre-headless; elsewhere: gcloud components install cloud-datastore-emulator "
    "cloud-firestore-emulator)"
)
KINDS = ("firestore", "legacy")
log = logging.getLogger(__name__)
#: How the Firestore-mode emulator names an export's folder (then a Unix time).
EXPORT_PREFIX = "datastore_export_"


class EmulatorError(RuntimeError):
    """Raised when an emulator is missing, fails to start or dies."""


def sdk_root() -> Path | None:
    """The Google Cloud SDK's folder, from CLOUDSDK_ROOT_DIR or the `gcloud` on PATH."""
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        return Path(os.environ["CLOUDSDK_ROOT_DIR"])
    gcloud = shutil.which("gcloud")
    if gcloud:
        return Path(os.path.realpath(gcloud)).parent.parent
    for candidate in (
        "/usr/lib/google-cloud-sdk",
        "/usr/share/google-cloud-sdk",
        "/opt/google-cloud-sdk",
    ):
        if Path(candidate).is_dir():
            return Path(candidate)
    return None


def launcher(kind: str) -> Path:
    """The emulator's launcher script, or EmulatorError saying what to install."""
    names = {
        "firestore": "cloud-firestore-emulator/cloud_firestore_emulator",
        "legacy": "cloud-datastore-emulator/cloud_datastore_emulator",
    }
    root = sdk_root()
    path = root / "platform" / names[kind] if root else None
    if path is None or not path.exists() or shutil.which("java") is None:
        raise EmulatorError(INSTALL_HINT)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def answers(host: str, timeout: float = 1.0) -> bool:
    """Whether an emulator answers its health check at host:port."""
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=timeout) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_running(pgid: int) -> bool:
    """Whether a process of the group runs (zombies left out: an adopted emulator's
    processes are not our children, and whoever reaps them may take its time)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return _group_alive(pgid)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _end_adopted_group(pgid: int, timeout: float) -> None:
    """`_end_group` for a group that is not our child (`Emulator.adopt`)."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _group_running(pgid):
        if time.monotonic() >= deadline:
            _signal_group(pgid, signal.SIGKILL)
            return
        time.sleep(0.05)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group(process: subprocess.Popen, timeout: float) -> bool:
    """Reap the leader and wait until no process of its group is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()
        if process.returncode is not None and not _group_alive(process.pid):
            return True
        time.sleep(0.05)
    return False


def _end_group(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the process group (its own session), then SIGKILL what lingers."""
    _signal_group(process.pid, signal.SIGTERM)
    if not _wait_group(process, timeout):
        _signal_group(process.pid, signal.SIGKILL)
        _wait_group(process, 5.0)


class Emulator:
    """One running emulator process and its address."""

    def __init__(
        self,
        kind: str = "firestore",
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        data_dir: str | os.PathLike | None = None,
        export_project: str = "metering-local",
        index_file: str | os.PathLike | None = None,
        log_path: str | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        #: With data_dir, the Firestore-mode emulator (memory only) starts from the last
        #: export there and exports into it as it is stopped: `export_project`'s data.
        self.export_project = export_project
        self.kind = kind
        self.host_name = host
        self.port = port or free_port(host)
        self.data_dir = Path(data_dir) if data_dir else None
        self.index_file = Path(index_file) if index_file else None
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._owner: int | None = None
        self._adopted: int | None = None  # the process group of an adopted emulator

    @classmethod
    def adopt(
        cls,
        kind: str,
        host: str,
        group: int,
        data_dir: str | os.PathLike | None = None,
        export_project: str = "metering-local",
    ) -> Emulator:
        """An emulator already running at host (port included) as process group `group`,
        started by a process that is gone (`metering serve` killed with SIGKILL): this
        process owns it from now on, and `stop` ends it (and exports its data into
        data_dir, for the Firestore-mode one)."""
        name, port = host.rsplit(":", 1)
        emulator = cls(
            kind, host=name, port=int(port), data_dir=data_dir, export_project=export_project
        )
        emulator._adopted, emulator._owner = group, os.getpid()
        return emulator

    @property
    def group(self) -> int | None:
        """The emulator's process group (its own session), while it runs."""
        return self.process.pid if self.process is not None else self._adopted

    @property
    def host(self) -> str:
        """host:port, the value of DATASTORE_EMULATOR_HOST."""
        return f"{self.host_name}:{self.port}"

    def _command(self) -> list[str]:
        binary = str(launcher(self.kind))
        address = [f"--host={self.host_name}", f"--port={self.port}"]
        if self.kind == "firestore":
            command = [binary, "start", *address, "--database-mode=datastore-mode"]
            saved = self.last_export()
            return command if saved is None else [*command, f"--import-data={saved}"]
        project_dir = self.data_dir
        if project_dir is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="metering-emulator-")
            project_dir = Path(self._scratch.name)
        if not (project_dir / "WEB-INF").is_dir():
            project_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [binary, "create", str(project_dir)],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        command = [
            binary,
            "start",
            *address,
            "--consistency=1.0",
            f"--store_on_disk={'true' if self.data_dir else 'false'}",
            "--allow_reserved_kinds",
        ]
        if self.index_file is not None:
            command += ["--require_indexes", f"--index_file={self.index_file}"]
        return [*command, str(project_dir)]

    def start(self, timeout: float = 60.0) -> Emulator:
        """Start the process and wait until it answers; on any failure (Ctrl-C
        included) stop it again, so that no Java process outlives a failed start."""
        self._owner = os.getpid()
        try:
            self._spawn()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        command = self._command()
        # The child writes to the file: it is closed below, once the child holds its own copy.
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if not isinstance(log, int):  # a file of ours, not DEVNULL
                log.close()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None, "spawned first"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                where = f" (see {self.log_path})" if self.log_path else ""
                raise EmulatorError(
                    f"the {self.kind} emulator exited with "
                    f"{self.process.returncode} before it was ready{where}"
                )
            if self.is_ready():
                return
            time.sleep(0.1)
        raise EmulatorError(f"the {self.kind} emulator was not ready after {timeout:.0f}s")

    def is_ready(self) -> bool:
        """Whether the emulator answers its health check."""
        return answers(self.host)

    def reset(self) -> None:
        """Drop every entity (the emulators' own POST /reset)."""
        request = urllib.request.Request(f"http://{self.host}/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the emulator's whole process group and wait until all of it is gone.

        The launcher is a shell script that dies at once on SIGTERM, while the Java
        process under it persists the legacy emulator's data only as it exits: a
        restart must not start before that ends. A forked child (a gunicorn worker
        unwinding through `metering serve`) does not own the emulator and leaves it.
        """
        if self._owner == os.getpid() and (self.process or self._adopted):
            try:
                self._export()
            except (OSError, EmulatorError) as error:  # URLError is an OSError
                log.warning("could not save the emulator's data in %s: %s", self.data_dir, error)
        if self.process is not None and self._owner == os.getpid():
            _end_group(self.process, timeout)
        if self._adopted is not None and self._owner == os.getpid():
            _end_adopted_group(self._adopted, timeout)
        self.process = self._adopted = None
        if self._scratch is not None and self._owner == os.getpid():
            self._scratch.cleanup()
        self._scratch = None

    def disown(self) -> None:
        """Leave the emulator running, no longer ours: `stop` will not end it
        (`app.embedded.hand_over` gave it to a caretaker)."""
        self.process = self._adopted = self._owner = None

    def save(self) -> None:
        """Export the Firestore-mode emulator's data into data_dir now (see below);
        raises if that failed."""
        if not self.is_ready():
            raise EmulatorError(f"the emulator at {self.host} does not answer")
        self._export()

    # -- the Firestore-mode emulator's data across restarts (session 13) -------------
    # It keeps entities in memory only. With a data_dir, `stop` asks it for an export
    # (its own HTTP endpoint, as the Firebase tools use it) before ending it, and the next
    # start imports the newest export: `metering serve` keeps its data across restarts
    # on this emulator too, as it does on the legacy one (which writes its own files).

    def last_export(self) -> Path | None:
        """The newest export's metadata file in data_dir (Firestore mode), if any."""
        if self.kind != "firestore" or self.data_dir is None or not self.data_dir.is_dir():
            return None
        found = sorted(self.data_dir.glob(f"{EXPORT_PREFIX}*/*.overall_export_metadata"))
        return found[-1] if found else None

    def _export(self, timeout: float = 120.0) -> None:
        """Export the Firestore-mode emulator's data into data_dir (then drop older
        exports); nothing for the legacy one, or without a data_dir."""
        if self.kind != "firestore" or self.data_dir is None or not self.is_ready():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        before = set(self.data_dir.glob(f"{EXPORT_PREFIX}*"))
        project = self.export_project
        body = json.dumps(
            {"database": f"projects/{project}/databases/", "export_directory": str(self.data_dir)}
        ).encode()
        request = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{project}:export",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
        saved = self.last_export()
        if saved is None:
            raise EmulatorError(f"the emulator wrote no export into {self.data_dir}")
        for old in before - {saved.parent}:
            shutil.rmtree(old, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
