"""Kinds of the alerts (issue 14): rules, the usage feed, tallies, triggers, leases.

All live under the org root `synckey/1`, like meters and events, so their queries are
ancestor queries (strongly consistent). Only `alert-rule` has a public id; the others
are keyed by what makes them unique (a tally by its spec, subject and period, a trigger
by its crossing), so two writers of one fact address one entity.
"""

from __future__ import annotations

from datetime import UTC

from google.cloud import ndb

from app.models.base import JsonShadowProperty, Model

SCOPES = ("user", "org")
PERIODS = ("day", "month")


class AlertRule(Model):
    """A rule: thresholds on a meter's period value, per user, for one user, or org-wide.

    `scope` is "user", "org" or "one" (then `scope_user` names the user). Archiving is the
    mixin's soft delete: an archived rule is no longer evaluated."""

    KIND = "alert-rule"

    name = ndb.TextProperty("Name")
    meter_id = ndb.StringProperty("MeterId")
    thresholds = JsonShadowProperty("Thresholds_", empty=list)
    scope = ndb.TextProperty("Scope")
    scope_user = ndb.TextProperty("ScopeUser")
    period = ndb.TextProperty("Period")
    time_zone = ndb.TextProperty("TimeZone")
    filter = JsonShadowProperty("Filter_", empty=dict)
    notify_on_resolve = ndb.BooleanProperty("NotifyOnResolve", indexed=False, default=False)
    #: When the rule took its current spec (created, or its filter changed): its tallies
    #: have had every feed since (`evaluate.settled_after`).
    spec_since = ndb.DateTimeProperty("SpecSince", indexed=False, tzinfo=UTC)


class AlertFeed(ndb.Model):
    """Usage to evaluate, written in the commit of the events (or cancel) it describes.

    `contributions`: JSON list of [userId, {dim: value}, day, slot, sum, count, max];
    `recompute`: a cancel's feed, after which max and unique_count tallies are re-read."""

    meter_id = ndb.StringProperty("MeterId")
    contributions = ndb.TextProperty("Contributions")
    recompute = ndb.BooleanProperty("Recompute", indexed=False, default=False)
    #: Tallies a part of this feed was applied to already, when it took several commits.
    done = ndb.TextProperty("Done")

    @classmethod
    def _get_kind(cls) -> str:
        return "alert-feed"


class AlertTally(ndb.Model):
    """A (rule spec, subject, period)'s value, and per rule which thresholds fired.

    The shape of sessions 6 and 7, one entity per subject: new tallies live in
    `AlertTallyBucket`s; one of these is folded into its bucket when its subject is next
    touched (`tallies`).

    `states`: {rule id: {threshold: [triggered, generation]}}; `seeded_at` is when the
    value was last read from the summary engine (None: built from feeds alone)."""

    meter_id = ndb.TextProperty("MeterId")
    user_id = ndb.TextProperty("UserId")
    period_start = ndb.DateTimeProperty("PeriodStart", indexed=False, tzinfo=UTC)
    value = ndb.TextProperty("Value")  # decimal digits: exact at any size
    states = JsonShadowProperty("States_", empty=dict)
    seeded_at = ndb.DateTimeProperty("SeededAt", indexed=False, tzinfo=UTC)
    #: From when on its spec's rules saw every event (`evaluate.settled_after`) when the
    #: tally was built; a later one (rules archived, then new ones) means rebuild it.
    basis = ndb.DateTimeProperty("Basis", indexed=False, tzinfo=UTC)

    @classmethod
    def _get_kind(cls) -> str:
        return "alert-tally"


class AlertTallyBucket(ndb.Model):
    """The tallies of many subjects of one (rule spec, period): those whose hash falls in
    one of `tallies.BUCKETS` buckets (session 8). One entity read and written per chunk
    instead of one per subject: NDB's entity conversion was most of the evaluator's CPU.

    `subjects`: JSON list of [subject, value, seededAt us, basis us, states] (compact:
    thresholds never triggered are left out); `full`: the bucket reached its byte cap, and
    subjects not in it may be stored on their own (`AlertTallySpill`)."""

    meter_id = ndb.TextProperty("MeterId")
    #: Indexed (session 9) for the retention sweep (`alerts.retention`): buckets written
    #: before were unindexed, and its one-time scan rewrites those still kept.
    period_start = ndb.DateTimeProperty("PeriodStart", tzinfo=UTC)
    subjects = ndb.BlobProperty("Subjects")
    full = ndb.BooleanProperty("Full", indexed=False, default=False)
    #: Session 9: every user of the (spec, period) with a value was written to its bucket
    #: at one cut after this basis (`tallies.seed_periods`): a user absent from the bucket
    #: (and its spills) then counts from 0, with no seed of its own. None: not done.
    whole = ndb.DateTimeProperty("WholeBasis", indexed=False, tzinfo=UTC)
    #: The cut of that read. Before the basis (a rule minutes old), a user absent counts
    #: from 0 at this cut and is read again once the basis has passed; None: after it.
    whole_at = ndb.DateTimeProperty("WholeAt", indexed=False, tzinfo=UTC)

    @classmethod
    def _get_kind(cls) -> str:
        return "alert-tally-bucket"


class AlertTallySpill(AlertTally):
    """A subject's tally stored on its own because its bucket is full (the old shape,
    under another kind, so that old-shape tallies left to migrate stay told apart)."""

    #: Indexed here (session 9), unlike the old shape's: the retention sweep finds the
    #: spills of periods long over by it (`alerts.retention`).
    period_start = ndb.DateTimeProperty("PeriodStart", tzinfo=UTC)

    @classmethod
    def _get_kind(cls) -> str:
        return "alert-tally-spill"


class AlertTrigger(ndb.Model):
    """One crossing (`alert.triggered`) or resolution (`alert.resolved`): the fact the
    message announces. Keyed by hash(rule, subject, period, threshold, generation, type)."""

    alert_id = ndb.StringProperty("AlertId")
    type = ndb.TextProperty("Type")
    meter_id = ndb.TextProperty("MeterId")
    user_id = ndb.TextProperty("UserId")
    threshold = ndb.IntegerProperty("Threshold", indexed=False)
    value = ndb.TextProperty("Value")
    period_start = ndb.DateTimeProperty("PeriodStart", indexed=False, tzinfo=UTC)
    period_end = ndb.DateTimeProperty("PeriodEnd", indexed=False, tzinfo=UTC)
    at = ndb.DateTimeProperty("At", tzinfo=UTC)
    message_id = ndb.TextProperty("MessageId")
    generation = ndb.IntegerProperty("Generation", indexed=False)

    @property
    def trigger_id(self) -> str:
        return self.key.string_id()

    @classmethod
    def _get_kind(cls) -> str:
        return "alert-trigger"


class AlertLease(ndb.Model):
    """One evaluator per meter at a time: who holds it and until when."""

    holder = ndb.TextProperty("Holder")
    until = ndb.DateTimeProperty("Until", indexed=False, tzinfo=UTC)

    @classmethod
    def _get_kind(cls) -> str:
        return "alert-lease"


class AlertRetention(ndb.Model):
    """The retention sweep's one-time scan of the org's tally buckets and spills written
    before `PeriodStart` was indexed (`alerts.retention`): the kind it is on and where
    it stopped; `done` once both are scanned. One entity per org."""

    kind = ndb.TextProperty("Kind")
    cursor = ndb.TextProperty("Cursor")
    done = ndb.BooleanProperty("Done", indexed=False, default=False)

    @classmethod
    def _get_kind(cls) -> str:
        return "alert-retention"


class AlertMeters(ndb.Model):
    """The key ids of the org's meters with active rules (JSON), one entity per org: what
    ingestion reads, once per cache period, to know which batches write a feed."""

    meter_key_ids = ndb.TextProperty("MeterKeyIds")
    #: A new random token at every rule write (session 10): the evaluator's cache of the
    #: org's rules holds while it is unchanged (`rules.current_rules`).
    version = ndb.TextProperty("Version")

    @classmethod
    def _get_kind(cls) -> str:
        return "alert-meters"
