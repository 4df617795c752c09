"""Where an import's memory goes, sampled over time (issue 17: "resident memory under
300 MB whatever the file size").

`metering events import --memory-log FILE` (hidden: a diagnostic) starts a `MemoryLog`,
which writes one JSON line every `interval` seconds: the phase and count the import has
reached, the process's resident memory (`VmRSS`, `VmHWM`), what Python's allocator holds
(`sys.getallocatedblocks`, and tracemalloc's current size when it traces, e.g. under
`PYTHONTRACEMALLOC=1`), and what glibc's malloc holds (`mallinfo2`: bytes in use and
free in its arenas, and mmapped blocks), so that growth can be told apart: Python
objects that pile up, or native memory (gRPC and protobuf buffers, malloc arenas).
Benchmarks read the file (`benchmarks/import.py`); tests do not, RSS being no unit
test's business.
"""

from __future__ import annotations

import ctypes
import json
import sys
import threading
import time
import tracemalloc
from typing import IO, Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")  # not find_library: it runs ldconfig
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):  # not glibc, or glibc before 2.33
        return None


_LIBC = _libc()


def malloc_stats() -> dict[str, int]:
    """glibc's view, in bytes: in use and free in its arenas, and mmapped blocks."""
    if _LIBC is None:
        return {}
    info = _LIBC.mallinfo2()
    return {"malloc_used": info.uordblks, "malloc_free": info.fordblks, "mmapped": info.hblkhd}


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in kB, and its thread count (Linux)."""
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM", "Threads"):
                    found[name] = int(value.split()[0])
    except OSError:
        pass
    return found


def sample() -> dict[str, Any]:
    """One reading of where the process's memory is."""
    reading: dict[str, Any] = {**proc_status(), "py_blocks": sys.getallocatedblocks()}
    if tracemalloc.is_tracing():
        reading["traced"] = tracemalloc.get_traced_memory()[0]
    reading.update(malloc_stats())
    return reading


class MemoryLog:
    """A daemon thread writing `sample()` with the import's phase and count, every
    `interval` seconds and once more at `close`."""

    def __init__(self, out: IO[str], interval: float = 1.0):
        self.out, self.interval = out, interval
        self.phase, self.done = "start", 0
        self.began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="memory-log")
        self._thread.start()

    def at(self, phase: str, done: int) -> None:
        """Where the import is (read by the sampling thread; plain attributes suffice)."""
        self.phase, self.done = phase, done

    def write(self) -> None:
        line = {"t": round(time.monotonic() - self.began, 1), "phase": self.phase}
        line["done"] = self.done
        line.update(sample())
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.write()
