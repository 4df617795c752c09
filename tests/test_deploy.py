"""app.yaml, proven: gunicorn started exactly as its entrypoint says serves the service,
logs only JSON lines without secrets, and refuses to start on App Engine without them.

These start real gunicorn processes and do not depend on the Datastore flavour, so
they run with the Firestore-mode suite only (`firestore_only`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import sysconfig
import uuid
import venv
from pathlib import Path

import pytest
import yaml

from app.emulator import free_port
from tests.conftest import ADMIN_TOKEN, ROOT
from tests.support.flavour import firestore_only  # noqa: F401
from tests.support.http import Api
from tests.support.names import unique_org_name
from tests.support.processes import wait_serving

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("firestore_only")]
SECRETS = ("METERING_HASHID_SALT", "METERING_ADMIN_TOKEN")


@pytest.fixture(scope="module")
def app_yaml() -> dict:
    return yaml.safe_load((ROOT / "app.yaml").read_text())


def entrypoint_argv(app_yaml: dict, port: int) -> list[str]:
    """The entrypoint as App Engine runs it: a shell line with $PORT set."""
    return shlex.split(app_yaml["entrypoint"].replace("$PORT", str(port)))


def app_engine_env(app_yaml: dict, emulator, **extra: str) -> dict:
    """What App Engine gives the process: app.yaml's env_variables and its own variables,
    with the Datastore pointed at the test emulator instead of Cloud Datastore."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METERING_", "GAE_"))}
    env.update({k: str(v) for k, v in app_yaml.get("env_variables", {}).items()})
    env.update(
        {
            "GAE_ENV": "standard",
            "GAE_APPLICATION": "s~metering-test",
            "GAE_SERVICE": "default",
            "GOOGLE_CLOUD_PROJECT": "metering-test",
            "DATASTORE_EMULATOR_HOST": emulator.host,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    env.update(extra)
    return env


class Gunicorn:
    """The entrypoint's process, its stderr in a file."""

    def __init__(self, argv: list[str], env: dict, log_path: Path):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def test_app_yaml_declares_the_runtime_scaling_and_no_secret(app_yaml):
    assert re.fullmatch(r"python3(\d+)", app_yaml["runtime"])
    assert int(app_yaml["runtime"].removeprefix("python3")) >= 12
    assert entrypoint_argv(app_yaml, 1)[0] == "gunicorn"
    assert "app:create_app()" in entrypoint_argv(app_yaml, 1)
    assert {"min_instances", "max_instances"} <= set(app_yaml["automatic_scaling"])
    variables = app_yaml.get("env_variables", {})
    assert not set(variables) & set(SECRETS)
    assert not [name for name in variables if re.search("TOKEN|SALT|SECRET|PASSWORD", name)]


def _first_handler(app_yaml: dict, path: str) -> dict:
    """The handler App Engine picks for a path: the first whose pattern matches it whole."""
    return next(h for h in app_yaml["handlers"] if re.fullmatch(h["url"], path))


def test_app_yaml_serves_every_path_over_https_only(app_yaml, app):
    handlers = app_yaml["handlers"]
    assert handlers and all(h.get("secure") == "always" for h in handlers)
    assert {"url": "/.*", "script": "auto", "secure": "always"} in handlers
    paths = {re.sub(r"<[^>]+>", "x", rule.rule) for rule in app.url_map.iter_rules()}
    assert "/v1/billing/meters" in paths and "/dashboard" in paths
    for path in paths | {"/", "/nowhere"}:
        handler = _first_handler(app_yaml, path)
        assert handler["secure"] == "always" and handler["script"] == "auto", path


def test_the_entrypoint_serves_the_service_and_logs_only_safe_json(app_yaml, emulator, tmp_path):
    port = free_port()
    server = Gunicorn(
        entrypoint_argv(app_yaml, port),
        app_engine_env(
            app_yaml, emulator, METERING_HASHID_SALT="deploy-salt", METERING_ADMIN_TOKEN=ADMIN_TOKEN
        ),
        tmp_path / "gunicorn.log",
    )
    base = f"http://127.0.0.1:{port}"
    marker = f"payload-{uuid.uuid4().hex}"
    trace_id = uuid.uuid4().hex
    try:
        wait_serving(base + "/healthz", 60, "gunicorn serving /healthz")
        assert Api(base).get("/readyz").json() == {"status": "ok", "datastore": "ok"}
        created = Api(base, ADMIN_TOKEN).post("/v1/admin/orgs", json={"name": unique_org_name()})
        assert created.status_code == 201, created.text
        api = Api(base, created.json()["apiKey"])
        meter = api.create_meter(dimensions=["model"])
        traced = api.post(
            "/v1/billing/meter-events",
            headers={"X-Cloud-Trace-Context": f"{trace_id}/42;o=1"},
            json={
                "events": [
                    {
                        "meterId": meter["id"],
                        "userId": marker,
                        "value": 7,
                        "idempotency": marker,
                        "dimensions": {"model": marker},
                    }
                ]
            },
        )
        assert traced.status_code == 201, traced.text
        assert re.fullmatch(r"[0-9a-f]{32}", traced.headers["X-Request-Id"])
        assert api.summary(meterId=meter["id"], userId=marker)["value"] == 7
        assert api.as_key("mk_" + "x" * 40).get("/v1/billing/meters").status_code == 401
        # Secrets planted in paths, which the access line logs as requestUrl.
        planted = [
            api.get(f"/v1/billing/meters/{created.json()['apiKey']}"),
            Api(base, ADMIN_TOKEN).get(f"/v1/admin/orgs/{ADMIN_TOKEN}/keys"),
        ]
        assert [answer.status_code for answer in planted] == [404, 404]
        # On App Engine (production) every answer demands HTTPS from then on.
        for answer in (traced, *planted):
            assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    assert all({"severity", "message", "time"} <= set(line) for line in lines)
    text = server.output()
    for secret in (created.json()["apiKey"], ADMIN_TOKEN, "deploy-salt", marker, "mk_" + "x" * 40):
        assert secret not in text
    traced_lines = [
        line for line in lines if line.get("requestId") == traced.headers["X-Request-Id"]
    ]
    assert traced_lines and all(
        line["logging.googleapis.com/trace"] == f"projects/metering-test/traces/{trace_id}"
        for line in traced_lines
    )
    assert traced_lines[-1]["httpRequest"]["status"] == 201


def python_without_the_project(root: Path) -> Path:
    """A bin folder whose python and gunicorn see the installed libraries but not this
    project, as on App Engine, which installs requirements.txt (the lock: no ".") and
    runs the entrypoint in the uploaded source folder. The project's editable install is
    hidden: its .pth file lives in our site-packages, which the new interpreter reaches
    through a plain path entry, and Python processes .pth files only in its own."""
    venv.create(root, with_pip=False, symlinks=True)
    [site] = (root / "lib").glob("python3*/site-packages")
    (site / "libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    bin_dir = root / "bin"
    gunicorn = bin_dir / "gunicorn"
    gunicorn.write_text(
        f"#!{bin_dir / 'python'}\nimport sys\n"
        "from gunicorn.app.wsgiapp import run\nsys.exit(run())\n"
    )
    gunicorn.chmod(0o755)
    return bin_dir


def test_the_entrypoint_runs_from_the_source_folder_without_the_project_installed(
    app_yaml, emulator, tmp_path
):
    bin_dir = python_without_the_project(tmp_path / "runtime")
    outside = subprocess.run(
        [bin_dir / "python", "-c", "import app"], cwd=tmp_path, capture_output=True, text=True
    )
    assert "No module named 'app'" in outside.stderr  # really not installed
    port = free_port()
    env = app_engine_env(
        app_yaml, emulator, METERING_HASHID_SALT="deploy-salt", METERING_ADMIN_TOKEN=ADMIN_TOKEN
    )
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    server = Gunicorn(entrypoint_argv(app_yaml, port), env, tmp_path / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_serving(base + "/healthz", 60, "gunicorn serving /healthz")
        assert Api(base).get("/readyz").json() == {"status": "ok", "datastore": "ok"}
        # Files beside the code (templates, the dashboard) are found from the source too.
        assert "API reference" in Api(base).get("/docs").text
        assert Api(base).get("/dashboard").status_code == 200
    finally:
        server.stop()
    assert (
        str(ROOT / "app")
        in subprocess.run(
            [bin_dir / "python", "-c", "import app; print(app.__file__)"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout
    )


@pytest.mark.parametrize("missing", SECRETS)
def test_on_app_engine_the_entrypoint_refuses_to_start_without_a_secret(
    app_yaml, emulator, tmp_path, missing
):
    secrets = {"METERING_HASHID_SALT": "deploy-salt", "METERING_ADMIN_TOKEN": ADMIN_TOKEN}
    del secrets[missing]
    server = Gunicorn(
        entrypoint_argv(app_yaml, free_port()),
        app_engine_env(app_yaml, emulator, **secrets),
        tmp_path / "gunicorn.log",
    )
    try:
        assert server.process.wait(timeout=60) == 1  # the master, before any worker
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    assert [line["message"] for line in lines if line["severity"] == "ERROR"] == [
        f"refusing to start on App Engine without {missing}: "
        "set them at deploy time (never in app.yaml)"
    ]
