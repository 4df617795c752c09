"""A process's open Datastore transactions, on disk, so that a restart can roll back the
transactions of a process that was killed.

Cloud Datastore, and Google's Firestore-mode emulator, lock what a read-write
transaction reads until it commits, rolls back, or expires after about a minute idle.
A process killed with SIGKILL in the middle of a transaction leaves its locks
behind. Measured on the emulator: another transaction's commit to one of those entities
fails with "Transaction lock timeout" for 60 s, and a plain put waits that long. After
`benchmarks/alerts_exact.py --restart` killed the service while the alert evaluator was
in a chunk's transaction, every later chunk was refused and alerts came a minute late.
Any process may roll back a transaction if it knows the transaction's id, and that
releases the locks at once.

So each process that has a journal directory (`metering serve` gives its workers one)
appends a line for each transaction it begins (`+id`) and for each one it ends (`-id`,
at the commit's or rollback's answer, success or not). A process starting with the
same directory (`recover`) takes over the files of processes that are no longer
running, rolls back the transactions they left open, and deletes the files. Leases a
process holds in the Datastore (the alert evaluator's, kept between rounds) are
listed too (`L[key, holder]`, `l[...]` when let go): the next process releases those
of a killed one at once instead of waiting for them to expire. Rolling
back a transaction that ended anyway (it expired, or its commit landed before the
kill) is refused by the Datastore and changes nothing. A file is named after its
process's id and start time, so a reused process id is not mistaken for the dead one.

On App Engine an instance's disk does not outlive it: there the journal is off, and
the locks of a killed instance's transactions last until they expire.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".transactions"
#: Past this many bytes a file is rewritten with only the transactions still open.
COMPACT_BYTES = 1 << 20
#: A transaction still listed this long after it began has expired anyway (the
#: Datastore ends any transaction within 270 s): it is dropped from the file.
FORGET_SECONDS = 300.0


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name ([] where there is none):
    [0] the state, [19] the start time in clock ticks since boot."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" where /proc is missing)."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def identity(pid: int) -> str:
    """`PID-START`: the process, not a later one that reuses its pid (`runs`)."""
    return f"{pid}-{_start_time(pid) or 0}"


def _file_name(pid: int) -> str:
    return identity(pid) + SUFFIX


def _running(name: str) -> bool:
    """Whether the process that wrote file `name` is still the one running."""
    return runs(name.removesuffix(SUFFIX))


def runs(process: str) -> bool:
    """Whether the process an `identity` names is still the one running (also used by
    `metering serve` for the `serve` that started an emulator)."""
    pid_text, _dash, start = process.partition("-")
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):
        return True  # not ours to judge
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped: a worker whose master was killed with it
    return (_start_time(pid) or "0") == start


class Journal:
    """The open transactions of this process, in a file of `directory`."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.lock = threading.Lock()
        self.pid = -1
        self.fd = -1
        self.written = 0
        self.open: dict[bytes, float] = {}  # transaction id -> monotonic time it began
        self.leases: dict[str, str] = {}  # serialized key -> holder

    def opened(self, transaction: bytes) -> None:
        if transaction:
            with self.lock:
                self.open[transaction] = time.monotonic()
                self._append(b"+" + transaction.hex().encode() + b"\n")

    def held(self, key: str, holder: str) -> None:
        with self.lock:
            if self.leases.get(key) != holder:
                self.leases[key] = holder
                self._append(b"L" + json.dumps([key, holder]).encode() + b"\n")

    def let_go(self, key: str, holder: str) -> None:
        with self.lock:
            if self.leases.get(key) == holder:
                del self.leases[key]
                self._append(b"l" + json.dumps([key, holder]).encode() + b"\n")

    def closed(self, transaction: bytes) -> None:
        if transaction:
            with self.lock:
                if self.open.pop(transaction, None) is None:
                    return
                self._append(b"-" + transaction.hex().encode() + b"\n")
                if self.written > COMPACT_BYTES:
                    self._compact()

    def _append(self, line: bytes) -> None:
        if self.pid != os.getpid():  # a forked child writes a file of its own
            self._reopen()
        os.write(self.fd, line)
        self.written += len(line)

    def _reopen(self) -> None:
        self.pid = os.getpid()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / _file_name(self.pid)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.written = 0
        self._write_state()

    def _compact(self) -> None:
        """Rewrite the file with the transactions still open (and not long expired) and
        the leases still held."""
        now = time.monotonic()
        self.open = {t: at for t, at in self.open.items() if now - at < FORGET_SECONDS}
        os.ftruncate(self.fd, 0)
        self.written = 0
        self._write_state()

    def _write_state(self) -> None:
        lines = b"".join(b"+" + t.hex().encode() + b"\n" for t in self.open) + b"".join(
            b"L" + json.dumps([key, holder]).encode() + b"\n" for key, holder in self.leases.items()
        )
        if lines:
            os.write(self.fd, lines)
            self.written += len(lines)


def left_held(text: str) -> list[tuple[str, str]]:
    """The (key, holder) leases a journal's text took and did not let go."""
    held: dict[str, str] = {}
    for line in text.splitlines():
        try:
            if line.startswith("L"):
                key, holder = json.loads(line[1:])
                held[key] = holder
            elif line.startswith("l"):
                key, holder = json.loads(line[1:])
                if held.get(key) == holder:
                    del held[key]
        except ValueError:
            continue  # a line cut short by the kill
    return list(held.items())


def left_open(text: str) -> list[bytes]:
    """The transactions a journal's text began and did not end."""
    still: dict[str, None] = {}
    for line in text.splitlines():
        if line.startswith("+"):
            still[line[1:]] = None
        elif line.startswith("-"):
            still.pop(line[1:], None)
    found = []
    for text_id in still:
        try:
            found.append(bytes.fromhex(text_id))
        except ValueError:
            continue  # a line cut short by the kill
    return found


def recover(
    directory: Path,
    rollback: Callable[[bytes], None],
    release: Callable[[list[tuple[str, str]]], None] | None = None,
) -> int:
    """Roll back the transactions that processes no longer running left open in
    `directory`, then `release` the (key, holder) leases they held, all in one call,
    and delete their files; how many transactions were rolled back. A file is claimed
    by renaming it first, so two processes starting at once do not both do it.

    (Session 12) One call for every lease: a killed service can leave a hundred webhook
    messages leased, and releasing them one transaction each took a restarted worker
    about 4 s before it served or sent anything (`benchmarks/alerts_exact.py --restart`,
    whose latency p95 went past 5 s for it)."""
    if not directory.is_dir():
        return 0
    rolled_back = 0
    held: list[tuple[str, str]] = []
    claimed_paths: list[Path] = []
    try:
        for path in sorted(directory.glob("*" + SUFFIX)):
            if _running(path.name):
                continue
            claimed = path.with_name(f"{path.name}.recovering-{os.getpid()}")
            try:
                path.rename(claimed)
            except OSError:
                continue  # another process claimed it
            claimed_paths.append(claimed)
            text = claimed.read_text(errors="replace")
            for transaction in left_open(text):
                try:
                    rollback(transaction)
                    rolled_back += 1
                except Exception as error:  # noqa: BLE001  (ended already: nothing to free)
                    log.debug("transaction %s not rolled back: %s", transaction.hex(), error)
            held += left_held(text)
        if held and release is not None:
            try:
                release(held)
            except Exception as error:  # noqa: BLE001  (they expire by themselves)
                log.warning("could not release a stopped process's leases: %s", error)
    finally:
        for claimed in claimed_paths:
            claimed.unlink(missing_ok=True)
    if rolled_back:
        log.warning(
            "rolled back %d transactions left open by stopped processes (their locks "
            "would have held their entities for up to a minute)",
            rolled_back,
        )
    return rolled_back


_journal: Journal | None = None


def start(directory: Path) -> None:
    """Journal this process's transactions in `directory` from now on."""
    global _journal
    if _journal is None or _journal.directory != directory:
        _journal = Journal(directory)


def opened(transaction: bytes) -> None:
    if _journal is not None:
        _journal.opened(transaction)


def closed(transaction: bytes) -> None:
    if _journal is not None:
        _journal.closed(transaction)


def held(key: str, holder: str) -> None:
    """This process holds the lease entity `key` (serialized) as `holder`."""
    if _journal is not None:
        _journal.held(key, holder)


def let_go(key: str, holder: str) -> None:
    """This process no longer holds the lease entity `key`."""
    if _journal is not None:
        _journal.let_go(key, holder)
