"""Usage limits (issue 16): definitions, the counters ingestion keeps, and the check."""
