"""Compaction in the background of `metering serve`: what App Engine's cron does.

On App Engine, `cron.yaml` calls `/v1/cron/compact` every 10 minutes. A service started
with `metering serve` has no cron, and its rollups would stay unfolded until someone runs
`metering rollups compact`: still exact, but a summary then reads every shard's deltas
(a busy day of an org-wide rollup is 8 shards of 96 slots instead of one compacted
entity). So with `METERING_BACKGROUND_COMPACTION_SECONDS` above 0 (what `metering serve`
sets, unless the environment says otherwise) each worker runs the cron's bounded call
(`periodic.compact_all_orgs`) every that many seconds, jittered, in a daemon thread.
Several workers folding at once is safe: each rollup is folded in its own transaction,
and a rollup found clean is skipped.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from google.api_core import exceptions as core_exceptions

from app.services import periodic

log = logging.getLogger(__name__)


def init_app(app) -> None:
    """Start the compaction loop when the configuration asks for one."""
    config = app.config["METERING"]
    if config.background_compaction_seconds <= 0:
        return
    thread = threading.Thread(
        target=_loop,
        args=(
            app.extensions["ndb"],
            app.extensions["ndb_context_options"],
            config.background_compaction_seconds,
            config.cron_compact_budget,
        ),
        name="metering-compaction",
        daemon=True,
    )
    thread.start()


def _loop(client, context_options: dict, seconds: float, budget: int) -> None:
    while True:
        time.sleep(seconds * random.uniform(0.5, 1.5))  # workers drift apart
        try:
            with client.context(**context_options):
                run = periodic.compact_all_orgs(budget)
            if run.compacted:
                log.info("background compaction folded %d rollups", run.compacted)
        except core_exceptions.GoogleAPICallError as error:  # the next round tries again
            log.warning("background compaction failed: %s", error)
