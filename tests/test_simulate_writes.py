"""`benchmarks/simulate_writes.py` on tiny scenarios: what it counts adds up, sharding
spreads the rollups' writes, and its report runs.

No emulator: the simulation derives event keys, rollup key names and shards with the
service's own functions and writes nothing. The checks recount the generated traffic
independently (distinct (user, dimensions, UTC date) per batch, and so on) rather than
trusting the script's own sums.
"""

from __future__ import annotations

import pytest

from app.storage.rollups import key_name, shard_of
from app.storage.shards import HOT_SECONDS
from benchmarks import simulate_writes as sim

TINY = sim.Traffic(
    rate=2000,
    seconds=3,
    warmup=1,
    users=300,
    meters=3,
    dimensions=(3,),
    dimension_share=1.0,
    instances=4,
    seed=3,
)


def _counted_batches(traffic: sim.Traffic) -> list[sim.Batch]:
    return [batch for batch in sim.generate(traffic) if batch.arrival >= traffic.warmup]


def _dims(event: sim.Event) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(event.dimensions.items()))


def test_writes_are_events_plus_one_per_distinct_user_and_org_series_of_each_batch():
    batches = _counted_batches(TINY)
    events = sum(len(b.events) for b in batches)
    user_writes = sum(
        len({(e.meter, e.user, _dims(e), e.timestamp.date()) for e in b.events}) for b in batches
    )
    org_writes = sum(
        len({(e.meter, _dims(e), e.timestamp.date()) for e in b.events}) for b in batches
    )

    result = sim.simulate(TINY, 8)

    assert events > 0 and result.batches == len(batches)
    assert (result.events, result.user_rollup_writes, result.org_rollup_writes) == (
        events,
        user_writes,
        org_writes,
    )
    assert result.writes == events + user_writes + org_writes
    # Every write landed on some entity, and each event on its own.
    assert sum(result.user_rollups.totals.values()) == user_writes
    assert sum(result.org_rollups.totals.values()) == org_writes
    assert sum(result.event_entities.totals.values()) == events
    assert result.event_entities.peak == 1


def test_sharding_lowers_the_peak_writes_on_one_org_rollup_and_keeps_the_totals():
    unsharded, sharded = sim.simulate(TINY, 1), sim.simulate(TINY, 8)

    assert sharded.org_rollup_writes == unsharded.org_rollup_writes
    assert sharded.user_rollup_writes == unsharded.user_rollup_writes
    assert {shard_of(name) for name in unsharded.org_rollups.totals} == {0}
    assert len({shard_of(name) for name in sharded.org_rollups.totals}) > 1
    assert sharded.org_rollups.peak < unsharded.org_rollups.peak
    seconds = TINY.simulated
    assert sharded.org_rollups.hottest(seconds)[1] < unsharded.org_rollups.hottest(seconds)[1]


def test_a_user_writing_many_batches_a_second_spreads_and_a_rare_one_stays_on_home_shards():
    one_hot_user = sim.Traffic(
        rate=2000, seconds=2, warmup=1, users=1, meters=1, dimensions=(), instances=1, seed=5
    )
    hot = sim.simulate(one_hot_user, 8)

    assert len({shard_of(name) for name in hot.user_rollups.totals}) > 1
    assert hot.user_rollups.peak < sim.simulate(one_hot_user, 1).user_rollups.peak

    # The rule, recounted: a user rollup that no instance wrote twice within HOT_SECONDS
    # is written only to the home shards of the instances that wrote it (one instance:
    # one entity per day to read), not to shard 0 from every instance.
    mixed = sim.Traffic(rate=400, seconds=2, warmup=1, users=5000, meters=2, instances=4, seed=5)
    last_write: dict = {}
    hot_keys, writers, cold_writes = set(), {}, 0
    for batch in sim.generate(mixed):
        for rollup in sim.rollup_writes(batch)[0]:
            seen = last_write.get((batch.instance, rollup))
            is_hot = seen is not None and batch.arrival - seen < HOT_SECONDS
            if is_hot:
                hot_keys.add(rollup)
            last_write[batch.instance, rollup] = batch.arrival
            if batch.arrival >= mixed.warmup:  # the simulation counts these writes
                writers.setdefault(rollup, set()).add(batch.instance)
                cold_writes += not is_hot
    result = sim.simulate(mixed, 8)
    written, homes = set(result.user_rollups.totals), result.homes
    cold = {rollup: instances for rollup, instances in writers.items() if rollup not in hot_keys}

    assert len(homes) == mixed.instances and len(set(homes)) > 1
    assert hot_keys and cold and any(len(instances) > 1 for instances in cold.values())
    for (meter, series, day), instances in cold.items():
        entities = {key_name(meter, series, day, shard) for shard in range(8)} & written
        assert entities == {key_name(meter, series, day, homes[i]) for i in instances}
        if len(instances) == 1:
            assert len(entities) == 1
    # The report's cold-writes column counts exactly those writes, all on home shards.
    assert sum(result.cold_user_rollups.totals.values()) == cold_writes
    assert {shard_of(name) for name in result.cold_user_rollups.totals} <= set(homes)


def test_narrower_index_prefixes_take_no_more_entries_than_wider_ones():
    """Every event writes one entry into the org's Timestamp range, its meter's and its
    (meter, user)'s: a narrower prefix can only hold a subset."""
    result = sim.simulate(TINY, 1)
    peaks = {name: counter.peak for name, counter in result.ranges.items()}

    assert peaks["Timestamp (built-in)"] >= peaks["MeterId, Timestamp (composite, asc and desc)"]
    assert (
        peaks["MeterId, Timestamp (composite, asc and desc)"]
        >= peaks["MeterId, UserId, Timestamp (composite, asc and desc)"]
        > 0
    )


def test_the_report_prints_both_tables_and_help_documents_the_options(capsys):
    code = sim.main(
        ["--rates", "1000", "--shards", "1,4", "--users", "200", "--meters", "2"]
        + ["--seconds", "2", "--dimensions", ""]
    )
    printed = capsys.readouterr().out

    assert code == 0
    assert "| 1,000 | 1 |" in printed and "| 1,000 | 4 |" in printed
    assert "| 1,000 | Timestamp (built-in) |" in printed
    with pytest.raises(SystemExit) as exited:
        sim.parse_args(["--help"])
    assert exited.value.code == 0
    assert "--shards" in capsys.readouterr().out
