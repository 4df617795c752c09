"""The `metering` console script as child processes, for the CLI tests.

Every long-running child gets its own process group (as a shell would give it),
is waited for with a deadline, and is killed, group and all, when the test ends,
passed or failed. Processes a child started in a session of their own (the
emulator of `metering serve`) are found by the test's unique tmp path on their
command line, so that even an orphan of a failed test is cleaned up.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.support.waiting import answering, eventually

METERING = str(Path(sys.executable).with_name("metering"))
DATASTORE_VARS = (
    "DATASTORE_EMULATOR_HOST",
    "METERING_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "DATASTORE_PROJECT_ID",
)


def cli_env(**overrides: str) -> dict:
    """This environment without any Datastore configuration, plus overrides."""
    env = {k: v for k, v in os.environ.items() if k not in DATASTORE_VARS}
    return {**env, **overrides}


class Child:
    """One `metering ...` process; its output goes to files, so it never blocks."""

    def __init__(self, args: list[str], env: dict, log_dir: Path, name: str):
        self.out_path, self.err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                [METERING, *args],
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = self.process.pid

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr(self) -> str:
        return self.err_path.read_text()

    def signal_group(self, sig: int) -> None:
        """Signal the whole group, as Ctrl-C in a terminal does."""
        os.killpg(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)


class Processes:
    """The children of one test, all ended at teardown."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.children: list[Child] = []

    def start(self, args: list[str], env: dict, name: str) -> Child:
        child = Child(args, env, self.tmp_path, name)
        self.children.append(child)
        return child

    def cleanup(self) -> None:
        # The emulator `serve` embeds runs in its own session; a failed test leaves its
        # address file behind, which names the port on the emulator's command line.
        ports = [
            f"--port={host.read_text().rpartition(':')[2]} "
            for host in self.tmp_path.rglob("emulator-host")
        ]
        for child in self.children:
            child.kill()
        for needle in [f"{self.tmp_path}/", *ports]:
            for pid in mentioning(needle):
                try:
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def mentioning(text: str) -> list[int]:
    """The live processes whose command line contains text (not zombies)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _still_running(child: Child | None, what: str) -> None:
    """Fail at once, with its output, when the child that should do `what` has exited."""
    if child is not None and child.process.poll() is not None:
        raise AssertionError(
            f"{what}: the process exited with {child.process.returncode}\n"
            f"{child.stdout()}\n{child.stderr()}"
        )


def wait_until(predicate, timeout: float, what: str, child: Child | None = None) -> None:
    """Poll predicate until it holds; fail early, with its output, if child exits."""

    def check() -> bool:
        if predicate():
            return True
        _still_running(child, what)
        return False

    eventually(check, timeout, what)


def wait_serving(url: str, timeout: float, what: str, child: Child | None = None) -> None:
    """Wait until GET url answers 200; fail early, with its output, if child exits."""
    answering(url, timeout, what, alive=lambda: _still_running(child, what))


def run_cli(*args: str, env: dict, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run one short `metering` command to its end."""
    return subprocess.run(
        [METERING, *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def run_cli_all(commands: list[tuple[list[str], dict]]) -> list[subprocess.CompletedProcess]:
    """Run several short commands, as many at once as there are CPUs (each one is
    mostly Python start-up, so more at once only queue for the CPU)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(lambda command: run_cli(*command[0], env=command[1]), commands))


def curl_example(stdout: str) -> list[str]:
    """The argv of the curl command that `metering serve` printed."""
    block = stdout.split("Try:\n", 1)[1]
    parts = []
    for line in block.splitlines():
        parts.append(line.rstrip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    return shlex.split(" ".join(parts))


def send_curl(argv: list[str]) -> requests.Response:
    """Do what that curl command does (only the options it uses), with requests."""
    assert argv[0] == "curl", argv
    method, url, headers, data = "GET", None, {}, None
    args = iter(argv[1:])
    for arg in args:
        if arg == "-X":
            method = next(args)
        elif arg == "-H":
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            data = next(args)
        elif arg.startswith("http"):
            url = arg
        elif arg != "-s":
            raise AssertionError(f"unexpected curl argument {arg!r}")
    return requests.request(method, url, headers=headers, data=data, timeout=30)  # type: ignore[arg-type]
