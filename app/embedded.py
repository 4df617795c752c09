"""The emulator `metering serve` embeds, from one `serve` to the next.

A `serve` records in its data folder who owns the emulator (`OWNER_FILE`: the owner's
process identity, the emulator's process group, kind and address). The next `serve` on
the folder takes the emulator over instead of starting one when its owner is gone:

- after a kill (SIGKILL leaves the emulator running in its own session), and
- after a stop (SIGTERM, Ctrl-C) of a `serve` with the Firestore-mode emulator: it
  exports the data into the folder, as it always did, and then hands the emulator to a
  caretaker process (`hand_over`) instead of stopping it. The caretaker stops it (with
  another export) once `emulator_linger_seconds` pass with no `serve` taking it over
  (`take_over`), or when it is told to stop.

Before (issue 14, session 14), a graceful restart with the embedded emulator exported,
stopped the emulator, started a new one (3 to 4 s of Java) and imported: about 6 s
without service, and every crossing recorded before the stop waited that long
(`benchmarks/alerts_exact.py --embedded --restart --restart-signal TERM`). The legacy
emulator writes its data only as it exits, so it is stopped at once, as before.

Whoever decides the emulator's fate holds the folder's lock (`locked`): a `serve`
taking it over and a caretaker whose time ran out cannot both act on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.emulator import Emulator, answers
from app.storage import journal

#: Who owns the embedded emulator now: a `serve` or its caretaker (see the docstring)
OWNER_FILE = "emulator-owner.json"
#: The folder's lock, held while the emulator changes hands or is stopped
LOCK_FILE = "emulator.lock"
#: What tells a caretaker to stop the emulator now
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def emulator_dir(data_dir: Path, kind: str) -> Path:
    """Where the embedded emulator of that kind keeps its data."""
    return data_dir / ("datastore" if kind == "legacy" else "firestore")


@contextlib.contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    """Hold the folder's lock for the block (released if the holder dies, too)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def read_owner(data_dir: Path) -> dict[str, Any] | None:
    """The owner record, or None when there is none (or an unreadable one)."""
    try:
        owner = json.loads((data_dir / OWNER_FILE).read_text())
        str(owner["serve"]), int(owner["group"]), str(owner["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return owner if isinstance(owner, dict) else None


def write_owner(
    data_dir: Path, owner: str, emulator: Emulator, kind: str, caretaker: bool = False
) -> None:
    """Record `owner` (a `journal.identity`) as the emulator's owner."""
    record = {
        "serve": owner,
        "group": emulator.group,
        "kind": kind,
        "host": emulator.host,
        "caretaker": caretaker,
    }
    (data_dir / OWNER_FILE).write_text(json.dumps(record))


def adoptable(owner: dict[str, Any]) -> bool:
    """Whether the recorded emulator may be taken over: its `serve` is gone, or it is
    kept by a caretaker (which gives it up when asked)."""
    return bool(owner.get("caretaker")) or not journal.runs(str(owner["serve"]))


def let_caretaker_go(owner: dict[str, Any]) -> None:
    """Tell the caretaker named in a replaced owner record to exit (it finds the record
    no longer names it, and leaves the emulator running)."""
    if not owner.get("caretaker"):
        return
    pid = int(str(owner["serve"]).partition("-")[0])
    if journal.runs(str(owner["serve"])):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)


def hand_over(emulator: Emulator, data_dir: Path, kind: str, seconds: float, project: str) -> bool:
    """Save the data (an export), then leave the emulator running under a caretaker for
    `seconds`, for the next `serve` to take over; False (nothing done) when it must be
    stopped now: the legacy emulator, a linger of 0, or an export that failed."""
    if seconds <= 0 or kind != "firestore" or emulator.group is None:
        return False
    try:
        emulator.save()
    except Exception:  # noqa: BLE001  (the caller stops it, which tries the export again)
        return False
    command = [
        *_caretaker_command(),
        "--data-dir",
        str(data_dir),
        "--seconds",
        str(seconds),
        "--project",
        project,
    ]
    with locked(data_dir):
        # Born with its stop signals blocked: one sent before its handlers are set stays
        # pending (`caretake` unblocks them), instead of killing it with the emulator left.
        before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            caretaker = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the terminal's group, not this one
                env=_source_env(),
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        write_owner(data_dir, journal.identity(caretaker.pid), emulator, kind, caretaker=True)
    emulator.disown()
    return True


def _caretaker_command() -> list[str]:
    """`metering emulator-caretaker`, run as this very `app` package (`-P`: a folder
    named `app` in the cwd does not stand in for ours)."""
    return [sys.executable, "-P", "-m", "app.cli", "emulator-caretaker"]


def _source_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def caretake(data_dir: Path, seconds: float, project: str) -> None:
    """The caretaker: wait `seconds` (or until told to stop), then stop the emulator
    (with an export) unless a `serve` has taken it over meanwhile."""
    told = threading.Event()
    for number in STOP_SIGNALS:
        signal.signal(number, lambda *_: told.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # any sent meanwhile: now
    until = time.monotonic() + seconds
    while not told.is_set() and time.monotonic() < until:  # short waits: any platform
        told.wait(min(1.0, max(0.0, until - time.monotonic())))
    me = journal.identity(os.getpid())
    with locked(data_dir):
        owner = read_owner(data_dir)
        if owner is None or owner["serve"] != me:
            return  # taken over by a `serve`
        kind = str(owner["kind"])
        Emulator.adopt(
            kind, str(owner["host"]), int(owner["group"]), emulator_dir(data_dir, kind), project
        ).stop()
        (data_dir / OWNER_FILE).unlink(missing_ok=True)


def recorded_answers(owner: dict[str, Any]) -> str | None:
    """The owner record's emulator address if it answers."""
    host = str(owner.get("host") or "")
    return host if host and answers(host) else None
