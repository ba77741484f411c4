"""The run manifest: what a nightly run read, used, wrote and how long it took.

One row per as-of date in the ``manifest`` output table (replaced when the date
is re-run); nested values are JSON text so that every SQL database can hold them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

JSON_FIELDS = (
    "input_rows",
    "quarantined_rows",
    "open_entities",
    "model_versions",
    "model_metrics",
    "rows_written",
    "timings_s",
    "drifted_features",
    "settings",
    "warnings",
)


@dataclass
class Manifest:
    """Everything the morning reader (or an auditor) needs to trust a run."""

    run_id: str
    as_of: str
    started_at: str
    data_location: str
    sql_url: str | None = None
    finished_at: str | None = None
    status: str = "running"
    input_rows: dict[str, int] = field(default_factory=dict)
    quarantined_rows: dict[str, int] = field(default_factory=dict)
    open_entities: dict[str, int] = field(default_factory=dict)
    model_versions: dict[str, str] = field(default_factory=dict)
    # the champions' backtest metrics logged at training (roc_auc, ece, ...)
    model_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    drifted_features: list[str] = field(default_factory=list)
    # why a model's drift was not measured tonight (e.g. not the reference's weekday)
    drift_note: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    # what the run warned about (backfill with a later champion, no reps, ...)
    warnings: list[str] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step of the run into ``timings_s[name]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] = round(time.perf_counter() - start, 3)

    def frame(self) -> pd.DataFrame:
        """The manifest as one row, nested fields as JSON text."""
        row: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            row[key] = (
                json.dumps(value, sort_keys=True, default=str) if key in JSON_FIELDS else value
            )
        return pd.DataFrame([row])


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux/macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
