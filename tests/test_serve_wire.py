"""`metering serve` against requests broken on the wire, sent over raw sockets.

Gunicorn parses the HTTP framing before the app sees anything, and quotes what it
could not parse in its own log lines: a header without a colon, a transfer coding,
a chunk size. Any of those can be an API key or the admin token, so gunicorn's lines
must go through the service's JSON formatter and its scrubbing, under `metering
serve` as under app.yaml's gunicorn. A chunked body broken in the middle reaches the
app while it reads the body: that is the caller's mistake, a 400 in the envelope.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from app.emulator import free_port
from tests.conftest import ADMIN_TOKEN
from tests.support.flavour import firestore_only  # noqa: F401
from tests.support.http import Api
from tests.support.names import unique_org_name
from tests.support.processes import Processes, cli_env, wait_serving

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("firestore_only")]
SALT = "wire-test-salt-0123456789"


def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, return everything the server answers until it closes (or 5 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
    return answer


def _status_and_body(answer: bytes) -> tuple[int, bytes]:
    """The first answer's status and body (gunicorn may answer again after it)."""
    head, _, rest = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in lines[1:]
        if line.lower().startswith(b"content-length:")
    )
    return int(lines[0].split(b" ", 2)[1]), rest[:length]


@pytest.fixture
def served(procs: Processes, emulator, tmp_path: Path):
    env = cli_env(
        DATASTORE_EMULATOR_HOST=emulator.host,
        METERING_ADMIN_TOKEN=ADMIN_TOKEN,
        METERING_HASHID_SALT=SALT,
    )
    port = free_port()
    child = procs.start(
        ["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")], env, "serve"
    )
    wait_serving(f"http://127.0.0.1:{port}/healthz", 45, "serve", child)
    created = Api(f"http://127.0.0.1:{port}", ADMIN_TOKEN).post(
        "/v1/admin/orgs", json={"name": unique_org_name()}
    )
    assert created.status_code == 201, created.text
    return child, port, created.json()["apiKey"]


def test_a_broken_chunked_body_is_a_400_in_the_envelope(served):
    _child, port, key = served
    for path, token in (("/v1/billing/meter-events", key), ("/v1/admin/orgs", ADMIN_TOKEN)):
        answer = _exchange(
            port,
            (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            ).encode(),
        )
        status, body = _status_and_body(answer)
        assert status == 400, answer[:500]
        error = json.loads(body)["error"]
        assert error["type"] == "api-error" and "could not be read" in error["message"]


def test_what_gunicorn_cannot_parse_reaches_its_log_as_scrubbed_json(served):
    child, port, key = served
    planted = [
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A{key}\r\n\r\n",  # a header without a colon
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {ADMIN_TOKEN}\r\n\r\n",
        f"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {SALT}\r\n\r\n",
        (
            f"POST /v1/billing/meter-events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}"
            f"\r\nTransfer-Encoding: chunked\r\n\r\n{key}\r\n"
        ),  # a key as the chunk size
    ]
    for raw in planted:
        answer = _exchange(port, raw.encode())
        assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 5"), answer
    child.signal_group(2)
    assert child.wait(30) == 0
    lines = [line for line in child.stderr().splitlines() if line.startswith("{")]
    parsed = [json.loads(line) for line in lines]
    assert any(line.get("logger", "").startswith("gunicorn") for line in parsed), lines[:5]
    everything = child.stderr()
    for secret in (key, key[3:], ADMIN_TOKEN, SALT):
        assert secret not in everything
