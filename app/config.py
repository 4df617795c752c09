"""The service's configuration: one typed class, read from the environment once.

Every knob the service has lives here. `Config.from_env()` reads the process
environment (App Engine's `app.yaml` `env_variables` land there too); tests build
a `Config` directly or call `replace()` on one to override single fields.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

DEV_HASHID_SALT = "metering-dev-salt"
#: (issue 16, portal) The development signing key of portal tokens: never in production.
DEV_PORTAL_SIGNING_KEYS = (("dev", "metering-dev-portal-signing-key"),)
#: Shortest secret a portal signing key may have (characters).
MIN_PORTAL_SECRET = 32
N = TypeVar("N", int, float)


def _env_number(env: dict, name: str, default: N, parse: Callable[[str], N], kind: str) -> N:
    """The variable parsed as a number, or `default` when it is unset or empty."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be {kind}, got {raw!r}") from exc


def _env_int(env: dict, name: str, default: int) -> int:
    return _env_number(env, name, default, int, "an integer")


def _env_float(env: dict, name: str, default: float) -> float:
    return _env_number(env, name, default, float, "a number")


def _portal_signing_keys(raw: str | None) -> tuple[tuple[str, str], ...]:
    """(issue 16, portal) `METERING_PORTAL_SIGNING_KEYS`: `kid:secret[,kid:secret...]`.
    The first key signs new tokens; every listed key verifies, so a key rotates by
    putting a new one first and dropping the old one a day (a token's longest life) later."""
    if not raw or not raw.strip():
        return DEV_PORTAL_SIGNING_KEYS
    keys = []
    for item in raw.split(","):
        kid, _, secret = item.strip().partition(":")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", kid) or len(secret) < MIN_PORTAL_SECRET:
            raise ValueError(
                "METERING_PORTAL_SIGNING_KEYS must read kid:secret[,kid:secret...], each kid "
                f"1 to 16 of A-Z a-z 0-9 _ -, each secret at least {MIN_PORTAL_SECRET} characters"
            )
        keys.append((kid, secret))
    if len({kid for kid, _ in keys}) != len(keys):
        raise ValueError("METERING_PORTAL_SIGNING_KEYS names one kid twice")
    return tuple(keys)


def on_app_engine(env: dict) -> bool:
    """Whether the process runs on App Engine (its runtime sets these variables)."""
    return env.get("GAE_ENV") == "standard" or bool(env.get("GAE_APPLICATION"))


def _refuse_defaults_in_production(config: Config) -> None:
    """A production service with a development salt would mint guessable, wrong ids."""
    missing = []
    if not config.hashid_salt or config.hashid_salt == DEV_HASHID_SALT:
        missing.append("METERING_HASHID_SALT")
    if not config.admin_token:
        missing.append("METERING_ADMIN_TOKEN")
    if missing:
        raise ValueError(
            "refusing to start on App Engine without "
            + " and ".join(missing)
            + ": set them at deploy time (never in app.yaml)"
        )


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of one running service."""

    #: Google Cloud project whose Datastore holds the data.
    project: str = "metering-local"
    #: host:port of a Datastore emulator, or None for the real Cloud Datastore.
    emulator_host: str | None = None
    #: Secret salt of the public hashids; changing it changes every public id.
    hashid_salt: str = DEV_HASHID_SALT
    #: Bearer token that unlocks /v1/admin; None disables the admin API.
    admin_token: str | None = None
    #: Most events one POST /v1/billing/meter-events may carry.
    max_batch_events: int = 100
    #: How far in the past an event timestamp may lie.
    max_event_age: timedelta = timedelta(days=35)
    #: How far in the future an event timestamp may lie (clock skew allowance).
    max_event_lead: timedelta = timedelta(minutes=5)
    #: How long recorded events can be cancelled. (Duplicates are recognised for as
    #: long as the event is stored: its key is derived from the idempotency key.)
    dedupe_window: timedelta = timedelta(days=35)
    #: Largest request body accepted, in bytes.
    max_body_bytes: int = 1 << 20
    #: Default and largest page size of list endpoints.
    default_page_size: int = 50
    max_page_size: int = 500
    #: Running on App Engine: secrets must be configured, never defaulted.
    production: bool = False
    #: Requests one org may make per minute; 0 turns the limit off.
    rate_limit_per_minute: int = 0
    #: redis:// URL of NDB's global cache (and the shared rate limit); None means none.
    redis_url: str | None = None
    #: Most rollups one call of the compaction cron handler folds, over all orgs.
    cron_compact_budget: int = 2000
    #: Seconds a request may run (Datastore RPC timeouts are cut to what is left); past
    #: it the answer is 503 `deadline_exceeded`. 0 means no deadline.
    request_deadline_seconds: float = 30.0
    #: Datastore entities one org may read per minute; 0 turns the budget off. On by
    #: default: about 200 dashboard loads of a 30-day, 100-series meter a minute.
    read_budget_per_minute: int = 600_000
    #: Requests with a missing, unknown or revoked key one client address may make per
    #: minute (more are refused with 429 before any lookup); 0 turns the limit off.
    unauthenticated_per_minute: int = 300
    #: Entities a hot rollup is spread over (`app.storage.shards`): at least the peak
    #: batches per second of the busiest meter, since Datastore takes about one write
    #: per second per entity.
    rollup_shards: int = 8
    #: Seconds between two rounds of compaction in the background of each worker (the
    #: cron's bounded call, `app/background.py`); 0, the default, leaves it to App
    #: Engine's cron. `metering serve` sets 30 unless the environment says otherwise.
    background_compaction_seconds: float = 0.0
    #: Seconds the Firestore-mode emulator that `metering serve` embeds stays up after
    #: `serve` stops (its data saved first), for the next `serve` on the folder to take
    #: over: a restart then skips the emulator's own restart (`app/embedded.py`); 0
    #: stops it with `serve`.
    emulator_linger_seconds: float = 30.0
    # -- issue 14, alerts ------------------------------------------------------------
    #: Seconds each process trusts its list of meters with active alert rules (ingestion
    #: writes the usage feed only for those); a rule changed here clears it at once.
    alert_rule_cache_seconds: float = 1.0
    #: Seconds from the start of the background loop's alert evaluation round of an org
    #: that caught up with its feeds to the start of the next (`evaluate_org(pace=...)`):
    #: under sustained traffic the feeds of that time are applied in one chunk, whose
    #: cost follows the users it meets, not the batches, and each tally bucket is written
    #: about once per that time (Cloud Datastore: about one write per second per entity).
    #: A meter idle for longer is evaluated at its first batch's wake. 0 turns it off.
    alert_round_spacing_seconds: float = 1.0
    # -- issue 14, webhooks ------------------------------------------------------------
    #: Seconds between two rounds of the delivery loop in the background of each worker
    #: (alert evaluation, then due webhook messages; `app/background.py`); a stored message
    #: wakes it at once. 0, the default, leaves it to App Engine's cron (every minute).
    #: `metering serve` sets 1 unless the environment says otherwise.
    background_delivery_seconds: float = 0.0
    #: Most messages (and alert feeds) one delivery call handles per org.
    cron_delivery_budget: int = 500
    #: Seconds one webhook attempt may take, connection to answer.
    webhook_timeout_seconds: float = 10.0
    #: Multiplies the retry schedule (at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); tests
    #: shrink it. Not read from the environment.
    webhook_retry_scale: float = 1.0
    #: (session 9) Where each process lists its open Datastore transactions, so that a
    #: process starting later rolls back those of a killed one and frees their locks
    #: (`app/storage/journal.py`). Empty, the default, keeps no list (App Engine: an
    #: instance's disk dies with it). `metering serve` sets one under --data-dir.
    transaction_journal_dir: str = ""
    #: (session 15) `METERING_TIMELINE=1`: log each step of the background delivery
    #: (evaluation chunks, leases, hand-offs, sends) with its time (`app/timeline.py`), to
    #: find where a late webhook spent its time. Off by default.
    timeline: bool = False
    # -- issue 16, customer portal -----------------------------------------------------
    #: (kid, secret) pairs that sign and verify portal tokens (HMAC-SHA256); the first
    #: signs. Production uses only `METERING_PORTAL_SIGNING_KEYS`; without it, no portal.
    portal_signing_keys: tuple[tuple[str, str], ...] = DEV_PORTAL_SIGNING_KEYS
    #: Seconds each process trusts an org's portal policy (revocations, allowed origins,
    #: the org being live): the bound within which a revocation made elsewhere applies.
    portal_policy_cache_seconds: float = 2.0
    # -- issue 17, export --------------------------------------------------------------
    #: Seconds one NDJSON export answer may stream before it stops at an event and ends
    #: with a trailer naming the cursor to resume from (each page of reads has the request
    #: deadline of its own); 0: no bound. Under App Engine's request timeout.
    export_answer_seconds: float = 300.0
    # -- issue 16, limits ----------------------------------------------------------------
    #: Seconds each process trusts its list of meters with usage limits (ingestion adds to
    #: limit counters only for those); a limit written here clears it at once.
    limit_cache_seconds: float = 1.0
    #: Seconds after a meter's first limit before checks trust its counters (until then
    #: they ask the summary engine); None: the cache period plus the request deadline plus
    #: 1 s, past which no process can commit a batch without counting it. Tests of one
    #: process set 0. Not read from the environment.
    limit_counting_delay: float | None = None
    # -- issue 17, corrections -------------------------------------------------------
    #: Events a range cancel reads per page; a page is one commit (at most 500 mutations:
    #: a page holding more events' rollups than that is cut shorter).
    correction_page_events: int = 200
    #: Seconds one range-cancel request keeps starting pages (it always runs one, and
    #: never starts one with less than a third of its deadline left); then it answers
    #: `running` and the caller repeats the request to go on.
    correction_budget_seconds: float = 10.0
    # -- issue 14, alert retention ---------------------------------------------------
    #: How long an alert trigger (a tenant's history: the dashboard's recent triggers and
    #: the triggers API) is kept after it fired; then the retention sweep deletes it
    #: (`app.services.alerts.retention`). 400 days: the same month of last year included.
    alert_trigger_retention: timedelta = timedelta(days=400)

    def __post_init__(self):
        if not 1 <= self.rollup_shards <= 64:  # app.storage.shards.MAX_SHARDS
            raise ValueError("METERING_ROLLUP_SHARDS must be 1 to 64")
        if not 1 <= self.correction_page_events <= 1000:
            raise ValueError("METERING_CORRECTION_PAGE_EVENTS must be 1 to 1000")
        if self.production:
            _refuse_defaults_in_production(self)
            if self.portal_signing_keys == DEV_PORTAL_SIGNING_KEYS:  # issue 16, portal
                # A known key would let anyone mint tokens: without its own, production
                # serves no portal (404 `portal_disabled`) rather than refusing to start.
                object.__setattr__(self, "portal_signing_keys", ())

    @classmethod
    def from_env(cls, env: dict | None = None) -> Config:
        """Build the configuration from environment variables."""
        env = dict(os.environ if env is None else env)
        project = (
            env.get("METERING_PROJECT")
            or env.get("DATASTORE_PROJECT_ID")
            or env.get("GOOGLE_CLOUD_PROJECT")
            or cls.project
        )
        return cls(
            project=project,
            emulator_host=env.get("DATASTORE_EMULATOR_HOST") or None,
            hashid_salt=env.get("METERING_HASHID_SALT") or DEV_HASHID_SALT,
            admin_token=env.get("METERING_ADMIN_TOKEN") or None,
            max_batch_events=_env_int(env, "METERING_MAX_BATCH_EVENTS", cls.max_batch_events),
            max_event_age=timedelta(
                days=_env_int(env, "METERING_MAX_EVENT_AGE_DAYS", cls.max_event_age.days)
            ),
            max_event_lead=timedelta(
                seconds=_env_int(
                    env,
                    "METERING_MAX_EVENT_LEAD_SECONDS",
                    int(cls.max_event_lead.total_seconds()),
                )
            ),
            max_body_bytes=_env_int(env, "METERING_MAX_BODY_BYTES", cls.max_body_bytes),
            dedupe_window=timedelta(
                days=max(35, _env_int(env, "METERING_DEDUPE_WINDOW_DAYS", cls.dedupe_window.days))
            ),
            production=on_app_engine(env),
            rate_limit_per_minute=_env_int(
                env, "METERING_RATE_LIMIT_PER_MINUTE", cls.rate_limit_per_minute
            ),
            redis_url=env.get("REDIS_CACHE_URL") or None,
            cron_compact_budget=_env_int(
                env, "METERING_CRON_COMPACT_BUDGET", cls.cron_compact_budget
            ),
            request_deadline_seconds=_env_float(
                env, "METERING_REQUEST_DEADLINE_SECONDS", cls.request_deadline_seconds
            ),
            read_budget_per_minute=_env_int(
                env, "METERING_READ_BUDGET_PER_MINUTE", cls.read_budget_per_minute
            ),
            unauthenticated_per_minute=_env_int(
                env, "METERING_UNAUTHENTICATED_PER_MINUTE", cls.unauthenticated_per_minute
            ),
            rollup_shards=_env_int(env, "METERING_ROLLUP_SHARDS", cls.rollup_shards),
            background_compaction_seconds=_env_float(
                env, "METERING_BACKGROUND_COMPACTION_SECONDS", cls.background_compaction_seconds
            ),
            emulator_linger_seconds=_env_float(
                env, "METERING_EMULATOR_LINGER_SECONDS", cls.emulator_linger_seconds
            ),
            # issue 14, alerts
            alert_rule_cache_seconds=_env_float(
                env, "METERING_ALERT_RULE_CACHE_SECONDS", cls.alert_rule_cache_seconds
            ),
            alert_round_spacing_seconds=_env_float(
                env, "METERING_ALERT_ROUND_SPACING_SECONDS", cls.alert_round_spacing_seconds
            ),
            # issue 14, webhooks
            background_delivery_seconds=_env_float(
                env, "METERING_BACKGROUND_DELIVERY_SECONDS", cls.background_delivery_seconds
            ),
            cron_delivery_budget=_env_int(
                env, "METERING_CRON_DELIVERY_BUDGET", cls.cron_delivery_budget
            ),
            webhook_timeout_seconds=_env_float(
                env, "METERING_WEBHOOK_TIMEOUT_SECONDS", cls.webhook_timeout_seconds
            ),
            transaction_journal_dir=env.get("METERING_TRANSACTION_JOURNAL_DIR", ""),
            timeline=env.get("METERING_TIMELINE", "") not in ("", "0"),
            # issue 16, customer portal
            portal_signing_keys=_portal_signing_keys(env.get("METERING_PORTAL_SIGNING_KEYS")),
            portal_policy_cache_seconds=_env_float(
                env, "METERING_PORTAL_POLICY_CACHE_SECONDS", cls.portal_policy_cache_seconds
            ),
            # issue 17, export
            export_answer_seconds=_env_float(
                env, "METERING_EXPORT_ANSWER_SECONDS", cls.export_answer_seconds
            ),
            # issue 16, limits
            limit_cache_seconds=_env_float(
                env, "METERING_LIMIT_CACHE_SECONDS", cls.limit_cache_seconds
            ),
            # issue 17, corrections
            correction_page_events=_env_int(
                env, "METERING_CORRECTION_PAGE_EVENTS", cls.correction_page_events
            ),
            correction_budget_seconds=_env_float(
                env, "METERING_CORRECTION_BUDGET_SECONDS", cls.correction_budget_seconds
            ),
            # issue 14, alert retention
            alert_trigger_retention=timedelta(
                days=_env_int(
                    env,
                    "METERING_ALERT_TRIGGER_RETENTION_DAYS",
                    cls.alert_trigger_retention.days,
                )
            ),
        )

    def replace(self, **changes) -> Config:
        """A copy of this configuration with some fields changed."""
        return dataclasses.replace(self, **changes)
