"""dal-dist: distributed deep active learning on Ray (score big Parquet pools, pick what to label)."""

__version__ = "0.1.0"
