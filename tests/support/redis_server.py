"""A real `redis-server` as a child process on a free loopback port.

No persistence, no config file: everything it holds lives in memory and dies
with it. `kill()` ends it abruptly (SIGKILL), as a lost Memorystore would look.
"""

from __future__ import annotations

import shutil
import subprocess

import redis

from app.emulator import free_port
from tests.support.waiting import eventually

INSTALL_HINT = "redis-server is missing: apt-get install redis-server (.ci/run does)"


class RedisServer:
    """One redis-server process and its URL."""

    def __init__(self, log_path: str):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            eventually(self._answers_while_running, timeout, "redis-server ready", interval=0.05)
        except AssertionError:
            self.kill()
            raise RuntimeError(f"redis-server was not ready after {timeout:.0f}s") from None
        return self

    def _answers_while_running(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {self.process.returncode}; see {self.log_path}"
            )
        return self.answers()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def flush(self) -> None:
        self.client().flushall()

    def kill(self) -> None:
        """End the server at once, without a goodbye to its clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
