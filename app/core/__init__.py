"""The pure usage core: value types and arithmetic of metering, with no I/O.

Nothing here touches the Datastore, the network, Flask or the clock's context: storage
and services import it, it imports neither (`tests/test_architecture.py` checks that).

- `slots`: the epoch, 15-minute slots and UTC days, microseconds since the epoch.
- `cells`: `Cell` (mergeable statistics), `Series` (a user and dimension values), the
  rank that orders events for `last`.
- `aggregation`: the `Aggregation` enum, the one list of aggregation types.
- `bounds`: int64 bounds and the largest key id.
- `names`: the org name rule, shared by the schemas and the org service.
- `windows`: the window engine, cells into windows, groups and filters.
"""
