"""Integer bounds: what Datastore integers hold, and the range of event key ids."""

INT64_MAX, INT64_MIN = (1 << 63) - 1, -(1 << 63)
#: Event key ids are positive int64s (Datastore refuses 0 and negatives).
MAX_ID = INT64_MAX
