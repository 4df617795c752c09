"""The `metering` command: run the service and administer orgs and keys.

Every command reaches the Datastore that `DATASTORE_EMULATOR_HOST` names, or the
configured Google Cloud project. `metering serve` with neither starts Google's
emulator itself, keeps its data in `--data-dir`, and records the emulator's
address there so that `metering orgs ...` run beside it finds it too.

Failures a user can cause or fix (a taken org name, an unreachable Datastore, a
missing emulator) end the command with one line on stderr and a non-zero status,
never a traceback.

Lazy imports: each command imports the service modules it uses inside its function,
so `metering --help` and `serve`'s gunicorn master load neither NDB nor gRPC (the
workers build the app after the fork, and gRPC is not fork-safe once it runs).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from app import embedded
from app.config import Config
from app.emulator import Emulator, EmulatorError, answers
from app.storage import journal

DEFAULT_DATA_DIR = ".metering-data"
DEMO_ORG = "demo"
ADDRESS_FILE = "emulator-host"
DATASTORE_VARS = (
    "DATASTORE_EMULATOR_HOST",
    "METERING_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "DATASTORE_PROJECT_ID",
)


def _datastore_configured() -> bool:
    """Whether the environment names a Datastore (the same variables `Config` reads)."""
    return any(os.environ.get(name) for name in DATASTORE_VARS)


def _recorded_host(data_dir: Path) -> str | None:
    """The emulator address a live `metering serve` recorded in data_dir.

    None when there is none or it no longer answers: a `serve` killed with
    SIGKILL leaves its file behind, and that must not send commands to a dead port.
    """
    path = data_dir / ADDRESS_FILE
    if not path.exists():
        return None
    host = path.read_text().strip()
    return host if host and answers(host) else None


def _adopt_running_emulator(data_dir: Path) -> None:
    """Point at the emulator a `metering serve` in this folder started, if it runs."""
    if _datastore_configured():
        return
    host = _recorded_host(data_dir)
    if host is None:
        raise click.ClickException(
            "no Datastore configured: set DATASTORE_EMULATOR_HOST (or GOOGLE_CLOUD_PROJECT), "
            f"or start `metering serve --data-dir {data_dir}` first"
        )
    os.environ["DATASTORE_EMULATOR_HOST"] = host


def _check_emulator_answers() -> None:
    """Fail fast: NDB would retry an unreachable emulator for seconds, then trace back."""
    host = os.environ.get("DATASTORE_EMULATOR_HOST")
    if host and not answers(host, timeout=3):
        raise click.ClickException(
            f"no Datastore emulator answers at {host} (DATASTORE_EMULATOR_HOST)"
        )


@contextlib.contextmanager
def _ndb_context():
    # lazy: see "Lazy imports" above
    from app import cache
    from app.datastore import make_client
    from app.models import ids

    config = Config.from_env()
    ids.configure(config.hashid_salt)
    # The same global cache as the service: a key revoked here is uncached there.
    with make_client(config).context(**cache.context_options(config)):
        yield config


def _run_admin(action):
    """Run action in an NDB context; domain and Datastore errors become one line."""
    # lazy: see "Lazy imports" above
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    from app.errors import ApiError

    _check_emulator_answers()
    try:
        with _ndb_context():
            return action()
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    except (GoogleAPIError, GoogleAuthError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise click.ClickException(f"the Datastore failed: {first_line}") from None


def _admin(data_dir: Path, action):
    _adopt_running_emulator(data_dir)
    return _run_admin(action)


def _issued(issued) -> str:
    # lazy: see "Lazy imports" above
    from app.schemas import format_time

    return json.dumps(
        {
            "name": issued.org.name,
            "namespace": issued.org.namespace,
            "apiKey": issued.secret,
            "keyPrefix": issued.prefix,
            "scopes": issued.scopes,  # issue 16
            "expiresAt": format_time(issued.key.expires_at),
        },
        indent=2,
    )


def _data_dir_option(function):
    return click.option(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        show_default=True,
        type=click.Path(path_type=Path),
        help="Folder of a `metering serve` whose emulator to use when no Datastore is configured.",
    )(function)


@click.group()
def main():
    """Usage metering service."""


@main.group()
def orgs():
    """Create, check and delete org tenants."""


@orgs.command("create")
@click.argument("name")
@_data_dir_option
def orgs_create(name, data_dir):
    """Create org NAME and print its first API key as JSON."""
    # lazy: see "Lazy imports" above
    from app.services import orgs as org_service

    click.echo(_issued(_admin(data_dir, lambda: org_service.create_org(name))))


@orgs.command("delete")
@click.argument("name")
@click.option(
    "--purge",
    is_flag=True,
    help="Also delete every entity of the org's data (in pages of 500, with a "
    "progress bar); rerun it to finish a purge that was interrupted.",
)
@_data_dir_option
def orgs_delete(name, purge, data_dir):
    """Archive org NAME: revoke all its keys and keep its data (unless --purge)."""
    click.echo(json.dumps(_admin(data_dir, lambda: _delete_org(name, purge))))


def _delete_org(name: str, purge: bool) -> dict:
    # lazy: see "Lazy imports" above
    from app.services import orgs as org_service

    archived = org_service.archive_org(name)
    result = {
        "org": archived.name,
        "archived": True,
        "revokedKeys": archived.revoked_keys,
        "purged": 0,
        "purgeComplete": archived.purged,
    }
    if purge:
        # Counted after the archive: nothing adds to the org any more.
        total = org_service.count_org_entities(name)
        with click.progressbar(
            length=total, label=f"purging {name}", file=sys.stderr, show_pos=True
        ) as bar:
            purged = org_service.purge_org(name, progress=bar.update)
        result.update(purged=purged.deleted, purgeComplete=purged.complete)
    return result


@orgs.command("check")
@_data_dir_option
def orgs_check(data_dir):
    """List registry entries whose names this release refuses; exit 1 if any is live."""
    # lazy: see "Lazy imports" above
    from app.services import orgs as org_service

    found = _admin(data_dir, org_service.invalid_registry_entries)
    click.echo(
        json.dumps(
            [
                {
                    "kind": e.kind,
                    "name": e.name,
                    "live": e.live,
                    **({"keyPrefix": e.prefix} if e.prefix else {}),
                }
                for e in found
            ],
            indent=2,
        )
    )
    live = sorted({e.name for e in found if e.live})
    if live:
        click.echo(
            f"{len(live)} org name(s) no longer valid and still live: "
            f"{', '.join(map(repr, live))}; `metering orgs delete NAME` archives "
            "each and revokes its keys",
            err=True,
        )
        sys.exit(1)


@main.group()
def keys():
    """Create, list and revoke API keys."""


@keys.command("create")
@click.argument("org")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="A scope the key holds (repeatable): events:write, usage:read, ... Without any: "
    "every scope but events:backfill.",
)
@click.option(
    "--expires",
    help="When the key stops working: a duration from now (90d, 12h, 30m) or an RFC 3339 "
    "time. Without it: never.",
)
@click.option("--name", help="A label for people: where the key is used.")
@_data_dir_option
def keys_create(org, scopes, expires, name, data_dir):
    """Issue another API key for ORG and print it as JSON."""
    # lazy: see "Lazy imports" above
    from app.services import orgs as org_service

    fields = _key_fields(scopes, expires, name)
    click.echo(
        _issued(
            _admin(
                data_dir,
                lambda: org_service.issue_key(
                    org, scopes=fields.get("scopes"), expires_at=fields["expires_at"], name=name
                ),
            )
        )
    )


def _key_fields(scopes: tuple[str, ...], expires: str | None, name: str | None) -> dict:
    """The options as the admin API's body would give them, checked by the same schema."""
    # lazy: see "Lazy imports" above
    from datetime import UTC, datetime

    from app.core.durations import parse_duration
    from app.errors import ApiError
    from app.schemas import load
    from app.schemas.keys import AdminKeyCreate

    body: dict = {}
    if scopes:
        body["scopes"] = list(scopes)
    if name is not None:
        body["name"] = name
    if expires is not None:
        try:
            lasting = parse_duration(expires)
        except ValueError as exc:
            if not expires[:1].isdigit() or len(expires) < 10:
                raise click.BadParameter(str(exc), param_hint="--expires") from None
            body["expiresAt"] = expires  # an RFC 3339 time, checked by the schema
        else:
            body["expiresAt"] = (datetime.now(UTC) + lasting).isoformat()
    try:
        return load(AdminKeyCreate(), body)
    except ApiError as exc:
        option = {"scopes": "--scope", "expiresAt": "--expires", "name": "--name"}
        hint = option.get((exc.param or "").split("[")[0], exc.param)
        raise click.BadParameter(exc.message, param_hint=hint) from None


@keys.command("revoke")
@click.argument("org")
@click.argument("key_prefix")
@_data_dir_option
def keys_revoke(org, key_prefix, data_dir):
    """Revoke ORG's key that starts with KEY_PREFIX."""
    # lazy: see "Lazy imports" above
    from app.services import orgs as org_service

    count = _admin(data_dir, lambda: org_service.revoke_key(org, key_prefix))
    click.echo(json.dumps({"org": org, "revoked": count}))


@keys.command("list")
@click.argument("org")
@_data_dir_option
def keys_list(org, data_dir):
    """List ORG's keys: prefix, scopes, expiry, last use (never their secrets)."""
    # lazy: see "Lazy imports" above
    from app.services import orgs as org_service

    found = _admin(data_dir, lambda: org_service.list_keys(org))
    click.echo(json.dumps([_key_listed(k) for k in found], indent=2))


def _key_listed(key) -> dict:
    """One key as `keys list` prints it: the admin API's fields (issue 16 added scopes,
    expiry, last use, name)."""
    # lazy: see "Lazy imports" above
    from app.schemas import format_time

    return {
        "prefix": key.prefix,
        "revoked": bool(key.revoked),
        "status": key.status_now,
        "name": key.name,
        "scopes": key.held_scopes,
        "createdAt": format_time(key.created_at),
        "expiresAt": format_time(key.expires_at),
        "lastUsedAt": format_time(key.last_used_at),
    }


@main.group()
def rollups():
    """Derived usage data."""


@rollups.command("rebuild")
@click.argument("org")
@click.option("--meter", "meter_id", help="Rebuild only this meter (its id).")
@_data_dir_option
def rollups_rebuild(org, meter_id, data_dir):
    """Rebuild ORG's rollups from its raw events; safe to repeat, safe while serving."""
    click.echo(json.dumps(_admin(data_dir, lambda: _rebuild_org(org, meter_id))))


def _rebuild_org(org: str, meter_id: str | None) -> dict:
    # lazy: see "Lazy imports" above
    from app.services import meters as meter_service
    from app.services import orgs as org_service
    from app.services import rebuild

    with org_service.inside(org):
        chosen = [meter_service.get_meter(meter_id)] if meter_id else meter_service.all_meters()
        total = 0
        for meter in chosen:
            work = rebuild.targets(meter)
            with click.progressbar(
                length=len(work), label=meter.event_name, file=sys.stderr
            ) as bar:
                total += rebuild.rebuild_meter(meter, progress=bar.update, work=work, whole=True)
    return {"org": org, "meters": len(chosen), "rollups": total}


@rollups.command("compact")
@click.argument("org")
@_data_dir_option
def rollups_compact(org, data_dir):
    """Fold ORG's rollup deltas into their compacted form (what a periodic job runs)."""
    click.echo(json.dumps(_admin(data_dir, lambda: _compact_org(org))))


def _compact_org(org: str) -> dict:
    # lazy: see "Lazy imports" above
    from app.services import compact
    from app.services import orgs as org_service

    with org_service.inside(org):
        return {"org": org, "compacted": compact.compact_org()}


# -- issue 17: `metering events` (import and export) ------------------------------


@main.group()
def events():
    """Move an org's usage events in and out in bulk."""


@events.command("export")
@click.argument("org")
@click.option("--meter", "meter_id", required=True, help="The meter's id.")
@click.option("--since", help="First moment (RFC 3339, or YYYY-MM-DD: that midnight UTC).")
@click.option("--until", help="End, excluded (RFC 3339; YYYY-MM-DD includes that day).")
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["ndjson", "csv"]),
    default="ndjson",
    show_default=True,
)
@click.option("--user", "user_id", help="Only this user's events.")
@click.option("--include-cancelled", is_flag=True, help="Cancelled events too (status says).")
@click.option(
    "--cursor",
    help="Resume after this event id (the last line's `id` of a cut export); "
    "CSV then has no header row, so `>>` appends to the file.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@_data_dir_option
def events_export(
    org,
    meter_id,
    since,
    until,
    export_format,
    user_id,
    include_cancelled,
    cursor,
    no_progress,
    data_dir,
):
    """Write ORG's events of a meter to stdout (NDJSON or CSV), oldest first, in
    constant memory, with progress on stderr."""
    query = {"meterId": meter_id, "format": export_format, "includeCancelled": include_cancelled}
    for name, value in (
        ("periodStart", since),
        ("periodEnd", until),
        ("userId", user_id),
        ("cursor", cursor),
    ):
        if value is not None:
            query[name] = value
    sink = sys.stdout.buffer
    done = _admin(data_dir, lambda: _export_events(org, query, sink, not no_progress))
    click.echo(json.dumps(done), err=True)


def _progress_bar(what: str, shown: bool, total: int | None = None, **more: object):
    """The progress bar of a long CLI command, on stderr (`shown` false: none): events/s,
    done/total and the time left once `total` is known."""
    # lazy: see "Lazy imports" above
    from tqdm import tqdm

    options: dict[str, object] = {"unit": " events", "dynamic_ncols": True, **more}
    return tqdm(
        total=total, desc=what, file=sys.stderr, disable=not shown, unit_scale=True, **options
    )


def _export_events(org: str, query: dict, sink, progress: bool) -> dict:
    # lazy: see "Lazy imports" above

    from app.schemas import load
    from app.schemas.export import ExportQuery
    from app.services import export
    from app.services import orgs as org_service

    args = load(ExportQuery(), query)
    request = export.ExportRequest(
        meter_id=args["meterId"],
        start=args.get("periodStart"),
        end=args.get("periodEnd"),
        user_id=args.get("userId"),
        include_cancelled=args["includeCancelled"],
        cursor=args.get("cursor"),
    )
    with org_service.inside(org):
        bar = _progress_bar("reading", progress)
        with bar:
            job = export.open_export(request, on_read=bar.update)
            if progress:
                bar.total = job.count_to_read()
            if args["format"] == "csv":
                columns = job.csv_columns()
                bar.set_description("writing")
                chunks = job.csv(columns, header=request.cursor is None)
            else:
                chunks = job.ndjson(trailer=False)
            for chunk in chunks:
                sink.write(chunk)
            sink.flush()
    return {"org": org, "meter": job.meter.id_, "exported": job.sent, "lastId": job.last_id}


# -- issue 17, session 8: range cancels and the corrections list from the CLI -------------


@events.command("cancel")
@click.argument("org")
@click.option("--meter", "meter_id", required=True, help="The meter's id.")
@click.option("--since", required=True, help="First moment cancelled (RFC 3339 or YYYY-MM-DD).")
@click.option("--until", required=True, help="End, excluded (RFC 3339; YYYY-MM-DD: its day in).")
@click.option("--user", "user_id", help="Only this user's events.")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    help="NAME=VALUE: only events whose dimension NAME has VALUE (repeat; one NAME given "
    "twice matches either value).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be cancelled; change nothing.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@_data_dir_option
def events_cancel(
    org, meter_id, since, until, user_id, filters, dry_run, no_progress, data_dir
):  # fmt: skip
    """Cancel every live event of ORG's meter in a period (the same job as
    `POST /v1/billing/meter-events/cancel`: resumable, each page one commit, never twice),
    with progress on stderr; print the correction record (or the dry run's figures)."""
    body: dict = {"meterId": meter_id, "periodStart": since, "periodEnd": until}
    if user_id is not None:
        body["userId"] = user_id
    if filters:
        body["filter"] = _filter_option(filters)
    done = _admin(data_dir, lambda: _cancel_range(org, body, dry_run, not no_progress))
    click.echo(json.dumps(done, indent=2))


def _filter_option(filters: tuple[str, ...]) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {}
    for given in filters:
        name, sep, value = given.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{given!r} is not NAME=VALUE", param_hint="--filter")
        chosen.setdefault(name, []).append(value)
    return chosen


#: Seconds of pages between two progress updates of a CLI range cancel (it has no
#: request deadline; the job is the service's, in steps of this length).
_CANCEL_STEP_SECONDS = 2.0


def _cancel_range(org: str, body: dict, dry_run: bool, progress: bool) -> dict:
    # lazy: see "Lazy imports" above

    from app.schemas import corrections as correction_shapes
    from app.schemas import load
    from app.services import corrections
    from app.services import orgs as org_service
    from app.storage import queries

    config = Config.from_env()
    args = load(correction_shapes.RangeCancel(), body)
    with org_service.inside(org), _cursor_keys(config):
        spec = corrections.range_spec(
            args["meterId"],
            args["periodStart"],
            args["periodEnd"],
            args.get("userId"),
            args.get("filter", {}),
        )
        if dry_run:
            preview = corrections.dry_run(
                spec, config.dedupe_window, config.max_event_lead, float("inf")
            )
            return correction_shapes.preview_json(spec.meter.id_, preview)
        total = None
        if progress:
            total = queries.count_events(
                spec.meter.id_, spec.user_id, spec.period_start, spec.period_end
            )
        bar = _progress_bar("cancelling", progress, total)
        with bar:
            while True:
                record, done = corrections.cancel_range(
                    spec,
                    config.dedupe_window,
                    "cli",
                    config.correction_page_events,
                    _CANCEL_STEP_SECONDS,
                )
                bar.update(done.scanned)
                bar.set_postfix(cancelled=record.cancelled)
                if record.status == corrections.COMPLETE:
                    return correction_shapes.correction_json(record)


@contextlib.contextmanager
def _cursor_keys(config: Config):
    """The app context opaque cursors are sealed in (`app.services.paging` reads the
    deployment secret from it), without building the whole app."""
    # lazy: see "Lazy imports" above
    from flask import Flask

    app = Flask("metering-cli")
    app.config["METERING"] = config
    with app.app_context():
        yield


@events.command("corrections")
@click.argument("org")
@click.option(
    "--limit", type=click.IntRange(1, 100), default=20, show_default=True, help="Records."
)
@click.option("--cursor", help="The `nextCursor` of the previous page.")
@_data_dir_option
def events_corrections(org, limit, cursor, data_dir):
    """List ORG's corrections (range cancels and amendments), newest first: who, when,
    what range, how many, how much (as `GET /v1/billing/meter-events/corrections`)."""
    click.echo(json.dumps(_admin(data_dir, lambda: _corrections(org, limit, cursor)), indent=2))


def _corrections(org: str, limit: int, cursor: str | None) -> dict:
    # lazy: see "Lazy imports" above
    from app.schemas import corrections as correction_shapes
    from app.services import corrections
    from app.services import orgs as org_service

    with org_service.inside(org), _cursor_keys(Config.from_env()):
        found, next_cursor = corrections.list_corrections(limit, cursor)
    return {
        "corrections": [correction_shapes.correction_json(record) for record in found],
        "count": len(found),
        "nextCursor": next_cursor,
    }


#: How often the CLI import stores a batch again when the Datastore missed its deadline
#: or was unavailable (`imports.Options.retries`), waiting 1, 2, 4, 8 and 16 s (jittered).
IMPORT_RETRIES = 5


@events.command("import")
@click.argument("org")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate and report what would be created, duplicate or conflicting; write nothing.",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Import the good records; write the bad ones with their problems to --rejects.",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, writable=True),
    help="Where --skip-invalid writes bad records (NDJSON: file, line, errors, input).",
)
@click.option(
    "--backfill",
    is_flag=True,
    help="Accept events older than the live window (35 days) into meters that allow backfill.",
)
@click.option(
    "--meter",
    help="Record every native event into this meter (id or event name), "
    "whatever the file names: for a file exported from another org.",
)
@click.option(
    "--format",
    "input_format",
    type=click.Choice(["auto", "ndjson", "csv"]),
    default="auto",
    show_default=True,
    help="auto: NDJSON if the input starts with {, else CSV (gzip is recognised either way).",
)
@click.option(
    "--workers",
    default=4,
    show_default=True,
    type=click.IntRange(1, 32),
    help="Threads committing batches at once.",
)
@click.option(
    "--batch",
    default=250,
    show_default=True,
    type=click.IntRange(1, 400),
    help="Most events per commit (a commit also stays under Datastore's 500 mutations).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option(
    "--memory-log",
    type=click.Path(dir_okay=False, writable=True),
    hidden=True,
    help="Diagnostic: write the import's memory every second as JSON lines "
    "(app.services.import_memory; benchmarks/import.py reads it).",
)
@_data_dir_option
def events_import(
    org,
    files,
    dry_run,
    skip_invalid,
    rejects,
    backfill,
    meter,
    input_format,
    workers,
    batch,
    no_progress,
    memory_log,
    data_dir,
):
    """Import FILES (NDJSON, CSV or CloudEvents NDJSON; plain or gzip) into ORG, exactly
    once: rerunning it, or resuming it after a kill, stores nothing twice. Prints one JSON
    report per file; exits 1 when a file had bad records and nothing of it was written."""
    if skip_invalid and not rejects:
        raise click.UsageError("--skip-invalid needs --rejects FILE")
    # lazy: see "Lazy imports" above
    from app.services import imports

    options = imports.Options(
        meter=meter,
        backfill=backfill,
        skip_invalid=skip_invalid,
        dry_run=dry_run,
        format=input_format,
        workers=workers,
        batch_events=batch,
        retries=IMPORT_RETRIES,
    )
    refused = False
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(rejects, "w", encoding="utf-8")) if rejects else None
        memory = _memory_log(stack, memory_log)
        for path in files:
            report = _admin(
                data_dir,
                lambda path=path: _import_file(org, path, options, sink, not no_progress, memory),
            )
            click.echo(json.dumps(report))
            refused = refused or bool(report.get("refused"))
    if refused:
        sys.exit(1)


def _memory_log(stack: contextlib.ExitStack, path: str | None):
    """The diagnostic `--memory-log`'s sampler, closed with `stack`; None without it."""
    if path is None:
        return None
    # lazy: see "Lazy imports" above
    from app.services.import_memory import MemoryLog

    out = stack.enter_context(open(path, "w", encoding="utf-8"))  # noqa: SIM115
    memory = MemoryLog(out)
    stack.callback(memory.close)
    return memory


def _import_file(org: str, path: str, options, sink, show_progress: bool, memory=None) -> dict:
    # lazy: see "Lazy imports" above
    from google.cloud import ndb

    from app.services import import_formats, imports
    from app.services import orgs as org_service

    with org_service.inside(org), contextlib.ExitStack() as stack:
        here = ndb.get_context()
        client, namespace = here.client, here.get_namespace()
        bar = None

        def on_total(total: int) -> None:
            nonlocal bar
            bar = stack.enter_context(
                _progress_bar(Path(path).name, show_progress, total, unit="ev", smoothing=0.1)
            )

        written = 0

        def progress(done: int) -> None:
            nonlocal written
            if bar is not None:
                bar.update(done)
            if memory is not None:
                written += done
                memory.at("write", written)

        def checked(records: int) -> None:
            if memory is not None:
                memory.at("validate", records)

        config = Config.from_env()
        try:
            report = imports.run(
                import_formats.file_opener(path),
                options,
                config,
                rejects=sink,
                context=lambda: client.context(namespace=namespace),
                on_total=on_total,
                progress=progress,
                source=path,
                checked=checked,
            )
        except imports.Refused as refused:
            return {"file": path, "refused": True, **refused.report.as_json()}
        except import_formats.InputError as exc:
            raise click.ClickException(f"{path}: line {exc.line}: {exc.message}") from None
    return {"file": path, "refused": False, **report.as_json()}


def _create_demo_org():
    """The demo org's first key, or None when the org exists already."""
    # lazy: see "Lazy imports" above
    from app.errors import Conflict, NotFound
    from app.services import orgs as org_service

    try:
        org_service.get_org(DEMO_ORG)
        return None
    except NotFound:
        pass
    try:
        return org_service.create_org(DEMO_ORG)
    except Conflict:  # another `serve` on the same Datastore was quicker
        return None


@main.command("demo-org", hidden=True)
@click.option("--url", required=True, help="The service's base URL, for the curl example.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="The embedded emulator's folder, for the hint only.",
)
@click.option("--status-fd", type=int, help="Where to write `ok` once done (serve's pipe).")
def demo_org(url, data_dir, status_fd):
    """Create the demo org unless it exists, and say how to use it.

    `serve` runs this in a child process so that the gunicorn master never opens a
    gRPC channel: gRPC's threads do not survive the fork into workers.
    """
    issued = _run_admin(_create_demo_org)
    if issued is None:
        where = f" --data-dir {data_dir}" if data_dir else ""
        click.echo(
            f"Demo org {DEMO_ORG!r} exists; a new key: metering keys create {DEMO_ORG}{where}"
        )
    else:
        click.echo(f"Created demo org {DEMO_ORG!r}. Its API key (shown once): {issued.secret}")
        click.echo(
            "Try:\n"
            f"  curl -s -X POST {url}/v1/billing/meters \\\n"
            f"    -H 'Authorization: Bearer {issued.secret}' "
            "-H 'Content-Type: application/json' \\\n"
            '    -d \'{"name": "API calls", "eventName": "api_calls"}\''
        )
    if status_fd is not None:
        sys.stdout.flush()  # its lines come before `ok`: serve answers once this is done
        os.write(status_fd, b"ok")


@main.command("emulator-caretaker", hidden=True)
@click.option("--data-dir", required=True, type=click.Path(path_type=Path))
@click.option("--seconds", required=True, type=float)
@click.option("--project", required=True, help="Whose data the emulator exports.")
def emulator_caretaker(data_dir, seconds, project):
    """Keep a stopped `serve`'s emulator running for `seconds`, for the next `serve` to
    take over, then stop it (`app.embedded.caretake`)."""
    embedded.caretake(data_dir, seconds, project)


class _DemoOrg:
    """`demo-org`, run in a child process while gunicorn boots its workers (issue 14,
    session 13). Before, `serve` waited for the child (0.75 s on an idle machine: a
    Python start, NDB's imports and a Datastore round trip) and only then started
    gunicorn, whose workers import the app (0.5 s more). A restart after a kill took 1.3
    to 1.8 s (`benchmarks/alerts_exact.py --restart`), and every crossing recorded
    before the kill waited for it.

    The order users see is kept: each worker, once its app is built, waits for the
    child to end (`wait`, gunicorn's post_worker_init) before it serves, so the key is
    printed before the first answer. The child holds the write ends of two pipes:
    `done`, whose end (EOF) every worker sees, and `status`, where it writes `ok` once
    it succeeded (gunicorn's master reaps every child itself, with waitpid(-1), so an
    exit status would be lost). A child that fails says why on stderr; the master then
    stops and `serve` exits with 1.
    """

    def __init__(self, url: str, data_dir: Path | None) -> None:
        # lazy: see "Lazy imports" above
        import threading

        self._owner = os.getpid()
        self._done, done_end = os.pipe()
        status, status_end = os.pipe()
        command = [*_demo_org_command(url, data_dir), "--status-fd", str(status_end)]
        root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        try:
            subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
                pass_fds=(done_end, status_end),
            )
        finally:
            os.close(done_end)
            os.close(status_end)
        self.failed = False
        threading.Thread(target=self._watch, args=(status,), daemon=True).start()

    def _watch(self, status: int) -> None:
        said = b""
        while chunk := os.read(status, 16):
            said += chunk
        os.close(status)
        if said != b"ok":
            self.failed = True
            os.kill(os.getpid(), signal.SIGTERM)  # gunicorn's master (or serve) stops

    def wait(self, _worker: object = None) -> None:
        """Return once the child has ended (in a worker: gunicorn's post_worker_init)."""
        while os.read(self._done, 1):
            pass

    def exit_status(self) -> int | None:
        """1 in the master once the child failed; None otherwise (and in workers)."""
        return 1 if self.failed and os.getpid() == self._owner else None


def _demo_org_command(url: str, data_dir: Path | None) -> list[str]:
    """`demo-org` run as this very `app` package: -P with PYTHONPATH set to our source
    root, so a folder named `app` in the cwd does not stand in for ours, and a source
    checkout without install still works."""
    command = [sys.executable, "-P", "-m", "app.cli", "demo-org", "--url", url]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return command


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--data-dir",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where the embedded emulator keeps its data across restarts.",
)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@click.option(
    "--emulator",
    "emulator_kind",
    type=click.Choice(["firestore", "legacy"]),
    default=None,
    help="Which of Google's emulators to embed: firestore (Datastore mode, like "
    "today's Cloud Datastore: per-entity locks and server-side transforms; the "
    "default) or legacy (its locks are per org, so concurrent clients contend). Both "
    "keep their data in --data-dir across restarts. Default: firestore, or legacy for "
    "a --data-dir that holds only legacy data.",
)
def serve(host, port, data_dir, workers, threads, emulator_kind):
    """Run the HTTP service (with its own emulator when no Datastore is configured)."""
    # SIGTERM ends us like Ctrl-C does, so the embedded emulator is stopped; gunicorn
    # installs its own handlers later, which exit the same way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as stack:
        embedded = not _datastore_configured()
        kind = None
        if embedded:
            data_dir = data_dir.resolve()
            kind = emulator_kind or _default_kind(data_dir)
            stack.enter_context(_embedded_emulator(data_dir, kind))
        url = _base_url(host, port)
        _check_emulator_answers()  # one line, before gunicorn says anything
        demo = _DemoOrg(url, data_dir if embedded else None)
        click.echo(f"Serving on {url}", err=True)
        # No cron here: the workers fold rollups themselves (app/background.py).
        os.environ.setdefault("METERING_BACKGROUND_COMPACTION_SECONDS", "30")
        # issue 14: nor for deliveries: alerts and webhooks go out from the workers too.
        os.environ.setdefault("METERING_BACKGROUND_DELIVERY_SECONDS", "1")
        journal_dir = _journal_dir(data_dir, kind)
        os.environ.setdefault("METERING_TRANSACTION_JOURNAL_DIR", str(journal_dir))
        try:
            _gunicorn(host, port, workers, threads, demo.wait)
        finally:
            if demo.exit_status() is not None:
                sys.exit(demo.exit_status())  # the child said why


def _journal_dir(data_dir: Path, embedded: str | None = None) -> Path:
    """Where the workers list their open transactions (`app/storage/journal.py`): one
    folder per Datastore (project and emulator address), so a restart against the same
    one rolls back what a killed worker left open. The embedded emulator's data follows
    its folder across restarts (on disk, or exported and imported), whatever its address:
    one folder per kind (`embedded`), so a `serve` stopped, or killed with its emulator,
    and started again still releases the leases its workers held (session 13)."""
    if embedded is not None:
        return data_dir.resolve() / "transactions" / f"embedded-{embedded}"
    config = Config.from_env()
    which = f"{config.project}\0{config.emulator_host or ''}".encode()
    return data_dir.resolve() / "transactions" / hashlib.sha256(which).hexdigest()[:16]


def _base_url(host: str, port: int) -> str:
    """Where a local client reaches the service (a wildcard bind is not an address)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _default_kind(data_dir: Path) -> str:
    """Firestore mode (issue 14, session 13: the legacy emulator's per-org locks made
    alerts miss their latency bars there, `benchmarks/alerts_exact.py --emulator legacy`),
    except for a folder that holds only a legacy emulator's data, which would otherwise
    look empty."""
    legacy = (embedded.emulator_dir(data_dir, "legacy") / "WEB-INF").is_dir()
    saved = Emulator(
        "firestore", data_dir=embedded.emulator_dir(data_dir, "firestore")
    ).last_export()
    return "legacy" if legacy and saved is None else "firestore"


@contextlib.contextmanager
def _embedded_emulator(data_dir: Path, kind: str = "firestore"):
    """Google's emulator of that kind, for as long as `serve` runs: the legacy one keeps
    its data in data_dir; both leave their address there for the other commands.

    Gunicorn workers are forks of this process and unwind through here when they
    exit; only the process that started the emulator removes its address file.

    The emulator runs in its own session, so a `serve` killed with SIGKILL (master and
    workers) leaves it running, with every entity (the legacy one writes its data to
    disk only as it exits). The next `serve` on the folder adopts it (`_orphan`):
    before (issue 14, session 13) it refused to start, "another `metering serve` is
    using" the folder, until someone found and killed the Java process.
    """
    emulator = _orphan(data_dir, kind)
    if emulator is None and _recorded_host(data_dir):
        raise click.ClickException(f"another `metering serve` is using {data_dir}")
    data_dir.mkdir(parents=True, exist_ok=True)
    owner = os.getpid()
    adopted = emulator is not None
    if emulator is None:
        emulator = Emulator(
            kind,
            data_dir=embedded.emulator_dir(data_dir, kind),
            export_project=Config.from_env().project,
            log_path=str(data_dir / "emulator.log"),
        )
    try:
        if not adopted:
            _start(emulator)
        os.environ["DATASTORE_EMULATOR_HOST"] = emulator.host
        with embedded.locked(data_dir):
            embedded.write_owner(data_dir, journal.identity(owner), emulator, kind)
        (data_dir / ADDRESS_FILE).write_text(emulator.host)
        folder = embedded.emulator_dir(data_dir, kind)
        where = (
            f"data in {folder}"
            if kind == "legacy"
            else f"Firestore in Datastore mode, data saved in {folder}"
        )
        started = "Adopted" if adopted else "Started"
        click.echo(f"{started} Google's Datastore emulator at {emulator.host} ({where})", err=True)
        yield emulator
    finally:
        if os.getpid() == owner:
            (data_dir / ADDRESS_FILE).unlink(missing_ok=True)
            config = Config.from_env()
            linger = config.emulator_linger_seconds
            if not embedded.hand_over(emulator, data_dir, kind, linger, config.project):
                (data_dir / embedded.OWNER_FILE).unlink(missing_ok=True)
                emulator.stop()


def _orphan(data_dir: Path, kind: str) -> Emulator | None:
    """The emulator a killed `serve` left running in data_dir, or a stopped one handed
    to its caretaker (`app.embedded`), now ours; None if there is none, or its `serve`
    still runs. One of another kind is stopped (then a new one is started)."""
    with embedded.locked(data_dir):
        owner = embedded.read_owner(data_dir)
        if owner is None or not embedded.adoptable(owner):
            return None  # none recorded (or by an older `serve`), or its `serve` runs
        host = embedded.recorded_answers(owner) or _recorded_host(data_dir)
        if host is None:
            return None
        of_kind = str(owner["kind"])
        project = Config.from_env().project
        where = embedded.emulator_dir(data_dir, of_kind)
        orphan = Emulator.adopt(of_kind, host, int(owner["group"]), where, project)
        if of_kind == kind:
            embedded.write_owner(data_dir, journal.identity(os.getpid()), orphan, kind)
        else:
            orphan.stop()
            (data_dir / ADDRESS_FILE).unlink(missing_ok=True)
            (data_dir / embedded.OWNER_FILE).unlink(missing_ok=True)
    embedded.let_caretaker_go(owner)
    return orphan if of_kind == kind else None


def _start(emulator: Emulator) -> None:
    try:
        emulator.start()
    except EmulatorError as exc:
        raise click.ClickException(str(exc)) from None


def _gunicorn(
    host: str, port: int, workers: int, threads: int, before_serving: Callable[[Any], None]
) -> None:
    # lazy: see "Lazy imports" above
    from gunicorn.app.base import BaseApplication

    from app.logs import GUNICORN_LOGCONFIG

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("post_worker_init", before_serving)
            self.cfg.set("worker_exit", _exit_promptly)
            self.cfg.set("accesslog", None)
            # Gunicorn's own lines as JSON, scrubbed of secrets like the service's own.
            self.cfg.set("logconfig_dict", GUNICORN_LOGCONFIG)
            # A worker still booting when Ctrl-C arrives has no signal handlers yet and
            # misses it; gunicorn then waits graceful_timeout (30 s by default) before
            # killing it. Locally, 7 s is plenty: a worker's loop takes up to about 2 s
            # to end, then its drain (session 15, `background.DRAIN_SECONDS`), which a
            # SIGKILL must not cut short.
            self.cfg.set("graceful_timeout", 7)
            # Gunicorn 27's control socket is one path per user: a second `serve`
            # (or a test run beside a dev server) would take it over.
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self):
            # lazy: see "Lazy imports" above
            from app import create_app

            atexit.register(_ignore_quit_signals)  # runs before logging's own atexit
            return create_app()

    Server().run()


def _exit_promptly(_arbiter: object, worker: Any) -> None:
    """End a worker told to stop, once its requests are answered, without waiting for
    its webhook sends (issue 14, session 13). Python joins a thread pool's threads at
    exit, and a send to a hung endpoint takes its 10 s timeout. So a `serve` stopped
    with SIGTERM while a receiver hung waited for gunicorn's graceful timeout (5 s),
    and every crossing recorded before the stop waited with it
    (`benchmarks/alerts_exact.py --restart --restart-signal TERM`). The sends cut short
    are retried: their messages stay leased to this process, and the next start
    takes them over (`app/storage/journal.py`), as after a kill. A worker that failed
    to boot or crashed keeps its exit status.

    (Session 15) First, for at most `background.DRAIN_SECONDS`, the worker evaluates
    what is pending and sends what it holds (`background.drain`), with further quit
    signals ignored (Ctrl-C's QUIT from the master would cut the drain short)."""
    if worker.booted and not worker.alive:
        from app import background  # lazy: see "Lazy imports" above

        _ignore_quit_signals()
        background.drain(worker.wsgi)
        logging.shutdown()  # the lines logged so far reach their files
        os._exit(0)


def _ignore_quit_signals() -> None:
    """A gunicorn worker on its way out ignores further quit signals: Ctrl-C reaches the
    worker and then the master's QUIT does too, and a second `sys.exit` raised by
    gunicorn's handler inside logging's last flush printed a traceback (seen once in CI,
    `test_serve_runs_its_own_emulator_and_keeps_data_across_restarts`)."""
    for number in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)


if __name__ == "__main__":
    main()
