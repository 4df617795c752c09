"""Compaction in the background of `metering serve`: what App Engine's cron does.

On App Engine, `cron.yaml` calls `/v1/cron/compact` every 10 minutes. A service started
with `metering serve` has no cron, and its rollups would stay unfolded until someone runs
`metering rollups compact`: still exact, but a summary then reads every shard's deltas
(a busy day of an org-wide rollup is 8 shards of 96 slots instead of one compacted
entity). So with `METERING_BACKGROUND_COMPACTION_SECONDS` above 0 (what `metering serve`
sets, unless the environment says otherwise) each worker runs the cron's bounded call
(`periodic.compact_all_orgs`) every that many seconds, jittered, in a daemon thread.
Several workers folding at once is safe: each rollup is folded in its own transaction,
and a rollup found clean is skipped. `stop(app)` ends the loop (an embedding program or a
test that serves an app and goes on).
"""

from __future__ import annotations

import logging
import random
import threading

from google.api_core import exceptions as core_exceptions

from app.services import periodic

log = logging.getLogger(__name__)
_EXTENSION = "background_compaction"


class _Compactor:
    """The loop of one app, and how to end it."""

    def __init__(self, client, context_options: dict, seconds: float, budget: int):
        self.client, self.context_options = client, context_options
        self.seconds, self.budget = seconds, budget
        self.stopping = threading.Event()
        self.jitter = random.Random()  # its own: the module's random is the program's
        self.thread = threading.Thread(target=self.run, name="metering-compaction", daemon=True)

    def run(self) -> None:
        while not self.stopping.wait(self.seconds * self.jitter.uniform(0.5, 1.5)):
            try:
                with self.client.context(**self.context_options):
                    run = periodic.compact_all_orgs(self.budget)
                if run.compacted:
                    log.info("background compaction folded %d rollups", run.compacted)
            except core_exceptions.GoogleAPICallError as error:  # the next round retries
                log.warning("background compaction failed: %s", error)


def init_app(app) -> None:
    """Start the compaction loop when the configuration asks for one."""
    config = app.config["METERING"]
    if config.background_compaction_seconds <= 0:
        return
    compactor = _Compactor(
        app.extensions["ndb"],
        app.extensions["ndb_context_options"],
        config.background_compaction_seconds,
        config.cron_compact_budget,
    )
    app.extensions[_EXTENSION] = compactor
    compactor.thread.start()


def stop(app, timeout: float = 30.0) -> None:
    """End the app's compaction loop, if it has one, and wait for a round under way."""
    compactor = app.extensions.pop(_EXTENSION, None)
    if compactor is not None:
        compactor.stopping.set()
        compactor.thread.join(timeout)
