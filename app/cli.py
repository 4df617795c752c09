"""The `metering` command: run the service and administer orgs and keys.

Every command reaches the Datastore that `DATASTORE_EMULATOR_HOST` names, or the
configured Google Cloud project. `metering serve` with neither starts Google's
emulator itself, keeps its data in `--data-dir`, and records the emulator's
address there so that `metering orgs ...` run beside it finds it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import click

from app.config import Config
from app.emulator import Emulator, EmulatorError

DEFAULT_DATA_DIR = ".metering-data"
DEMO_ORG = "demo"
ADDRESS_FILE = "emulator-host"


def _datastore_configured() -> bool:
    return bool(os.environ.get("DATASTORE_EMULATOR_HOST") or os.environ.get("METERING_PROJECT")
                or os.environ.get("GOOGLE_CLOUD_PROJECT"))


def _adopt_running_emulator(data_dir: Path) -> None:
    """Point at the emulator a `metering serve` in this folder started, if it runs."""
    if _datastore_configured():
        return
    address_file = data_dir / ADDRESS_FILE
    if address_file.exists():
        host = address_file.read_text().strip()
        os.environ["DATASTORE_EMULATOR_HOST"] = host
        return
    raise click.ClickException(
        "no Datastore configured: set DATASTORE_EMULATOR_HOST (or GOOGLE_CLOUD_PROJECT), "
        "or start `metering serve` in this folder first")


@contextlib.contextmanager
def _ndb_context():
    from app.datastore import make_client
    from app.models import ids

    config = Config.from_env()
    ids.configure(config.hashid_salt)
    with make_client(config).context():
        yield config


def _run_admin(action):
    from app.errors import ApiError

    try:
        with _ndb_context():
            return action()
    except ApiError as exc:
        raise click.ClickException(exc.message) from None


def _issued(issued) -> str:
    return json.dumps({"name": issued.org.name, "namespace": issued.org.namespace,
                       "apiKey": issued.secret, "keyPrefix": issued.prefix}, indent=2)


@click.group()
def main():
    """Usage metering service."""


@main.group()
def orgs():
    """Create org tenants."""


@orgs.command("create")
@click.argument("name")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, type=click.Path(path_type=Path),
              help="Folder of a `metering serve` whose emulator to use.")
def orgs_create(name, data_dir):
    """Create org NAME and print its first API key as JSON."""
    from app.services import orgs as org_service

    _adopt_running_emulator(data_dir)
    click.echo(_issued(_run_admin(lambda: org_service.create_org(name))))


@main.group()
def keys():
    """Create, list and revoke API keys."""


@keys.command("create")
@click.argument("org")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, type=click.Path(path_type=Path))
def keys_create(org, data_dir):
    """Issue another API key for ORG and print it as JSON."""
    from app.services import orgs as org_service

    _adopt_running_emulator(data_dir)
    click.echo(_issued(_run_admin(lambda: org_service.issue_key(org))))


@keys.command("revoke")
@click.argument("org")
@click.argument("key_prefix")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, type=click.Path(path_type=Path))
def keys_revoke(org, key_prefix, data_dir):
    """Revoke ORG's key that starts with KEY_PREFIX."""
    from app.services import orgs as org_service

    _adopt_running_emulator(data_dir)
    count = _run_admin(lambda: org_service.revoke_key(org, key_prefix))
    click.echo(json.dumps({"org": org, "revoked": count}))


@keys.command("list")
@click.argument("org")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, type=click.Path(path_type=Path))
def keys_list(org, data_dir):
    """List ORG's keys (prefixes only)."""
    from app.services import orgs as org_service

    _adopt_running_emulator(data_dir)
    found = _run_admin(lambda: org_service.list_keys(org))
    click.echo(json.dumps([{"prefix": k.prefix, "revoked": bool(k.revoked)} for k in found]))


def _ensure_demo_org(port: int) -> None:
    from app.errors import NotFound
    from app.services import orgs as org_service

    with _ndb_context():
        try:
            org_service.get_org(DEMO_ORG)
            click.echo(f"Demo org {DEMO_ORG!r} exists; a new key: metering keys create {DEMO_ORG}")
            return
        except NotFound:
            issued = org_service.create_org(DEMO_ORG)
    click.echo(f"Created demo org {DEMO_ORG!r}. Its API key (shown once): {issued.secret}")
    click.echo("Try:\n"
               f"  curl -s -X POST http://127.0.0.1:{port}/v1/billing/meters \\\n"
               f"    -H 'Authorization: Bearer {issued.secret}' -H 'Content-Type: application/json' \\\n"
               "    -d '{\"name\": \"API calls\", \"eventName\": \"api_calls\"}'")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True,
              type=click.Path(path_type=Path),
              help="Where the embedded emulator keeps its data across restarts.")
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
def serve(host, port, data_dir, workers, threads):
    """Run the HTTP service (with its own emulator when no Datastore is configured)."""
    emulator = None
    if not _datastore_configured():
        emulator = _start_embedded_emulator(data_dir)
    try:
        _ensure_demo_org(port)
        click.echo(f"Serving on http://{host}:{port}", err=True)
        _gunicorn(host, port, workers, threads)
    finally:
        if emulator is not None:
            (data_dir / ADDRESS_FILE).unlink(missing_ok=True)
            emulator.stop()


def _start_embedded_emulator(data_dir: Path) -> Emulator:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        emulator = Emulator("legacy", data_dir=data_dir / "datastore",
                            log_path=str(data_dir / "emulator.log")).start()
    except EmulatorError as exc:
        raise click.ClickException(str(exc)) from None
    os.environ["DATASTORE_EMULATOR_HOST"] = emulator.host
    (data_dir / ADDRESS_FILE).write_text(emulator.host)
    click.echo(f"Started Google's Datastore emulator at {emulator.host} "
               f"(data in {data_dir / 'datastore'})", err=True)
    # SIGTERM ends us like Ctrl-C does, so `finally` stops the emulator.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return emulator


def _gunicorn(host: str, port: int, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", None)

        def load(self):
            from app import create_app
            return create_app()

    Server().run()


if __name__ == "__main__":
    main()
