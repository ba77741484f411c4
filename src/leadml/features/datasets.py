"""Training sets: weekly point-in-time snapshots with their features and labels.

``lead_readiness_dataset``: one row per lead open at each as-of date (Mondays 00:00
UTC), its lead features as of that date and ``label`` = 1 when the lead becomes an
opportunity (or SQL) in ``(as_of, as_of + horizon]``. Snapshots whose label window
ends after the data end are excluded and counted.

``deal_close_dataset``: one row per deal open at each as-of date, its opportunity
features and the outcome after it: ``outcome`` (won / lost / open at the data end)
and ``outcome_days`` (days from as_of to the close, or to the data end when still
open, i.e. censored). ``P(won by as_of + d)`` for any d is then a discrete-time
hazard or per-horizon labels (``outcome == 'won' and outcome_days <= d``, known
when ``outcome != 'open' or outcome_days >= d``). ``segment``, ``owner_id`` and the
as-of ``amount`` are kept for grouping and forecasts.

Both are computed in batches of as-of dates (about 8M entities x dates a batch: every
date of a small company in one pass over its records, eight at a time for a million
leads) so that memory stays bounded; with a
``sink`` each batch goes to it (e.g. a Parquet writer) instead of into one frame, so
a company too large to hold its training set in memory can still write it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from leadml.errors import DataError
from leadml.features.catalog import ENTITY_ID, Catalog
from leadml.features.labels import (
    as_of_dates,
    data_end,
    data_start,
    deal_close_spine,
    lead_readiness_spine,
    to_timestamp,
)
from leadml.features.offline import compute_features_sql

Progress = Callable[[int, int, str], None]
"""Called as ``progress(done, total, message)`` after each batch of as-of dates."""
Sink = Callable[[pd.DataFrame], None]
"""Called with each finished batch of rows (all batches have the same columns)."""


@dataclass
class DatasetSummary:
    """What a training set holds and what was left out, and why.

    ``as_of_dates``, ``start`` and ``end`` describe the rows written (the as-of dates that
    have rows); ``dropped_as_of_dates`` are the requested dates without a single row (e.g.
    the last weeks, whose label window passes the data end: ``excluded`` counts those
    rows by reason), ``dropped_start`` / ``dropped_end`` the first and last of them."""

    name: str
    rows: int
    features: int
    as_of_dates: int
    start: str | None
    end: str | None
    data_end: str | None
    positives: int | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dropped_as_of_dates: int = 0
    dropped_start: str | None = None
    dropped_end: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "rows": self.rows,
            "positives": self.positives,
            "outcomes": self.outcomes,
            "features": self.features,
            "as_of_dates": self.as_of_dates,
            "start": self.start,
            "end": self.end,
            "data_end": self.data_end,
            "excluded": self.excluded,
            "dropped_as_of_dates": self.dropped_as_of_dates,
            "dropped_start": self.dropped_start,
            "dropped_end": self.dropped_end,
            "seconds": round(self.seconds, 3),
        }


def date_summary(requested: list[pd.Timestamp], written: set[pd.Timestamp]) -> dict[str, Any]:
    """The :class:`DatasetSummary` date fields: the written dates (``as_of_dates``,
    ``start``, ``end``) and the requested ones without rows (``dropped_*``)."""
    have = sorted(written)
    dropped = [d for d in requested if d not in written]
    return {
        "as_of_dates": len(have),
        "start": have[0].isoformat() if have else None,
        "end": have[-1].isoformat() if have else None,
        "dropped_as_of_dates": len(dropped),
        "dropped_start": dropped[0].isoformat() if dropped else None,
        "dropped_end": dropped[-1].isoformat() if dropped else None,
    }


def _window(
    con: duckdb.DuckDBPyConnection,
    start: str | pd.Timestamp | None,
    end: str | pd.Timestamp | None,
    every_days: int,
) -> tuple[list[pd.Timestamp], pd.Timestamp]:
    last = data_end(con)
    first = data_start(con)
    if last is None or first is None:
        raise DataError("the data has no leads or timestamps; nothing to build a training set from")
    s = to_timestamp(start, "start") if start is not None else first
    e = to_timestamp(end, "end") if end is not None else last
    return as_of_dates(s, e, every_days), last


ROWS_PER_BATCH = 8_000_000
"""Entities x as-of dates per batch when ``dates_per_batch`` is not given: all dates of a
small company in one pass over its records, eight dates at a time for a million leads."""


def _batches(dates: list[pd.Timestamp], size: int) -> list[list[pd.Timestamp]]:
    return [dates[i : i + size] for i in range(0, len(dates), size)] or [[]]


def _dates_per_batch(con: duckdb.DuckDBPyConnection, entity: str, given: int | None) -> int:
    """``given``, or as many dates as keep a batch near :data:`ROWS_PER_BATCH` spine rows
    (each batch reads every record of the sources once)."""
    if given is not None:
        return max(1, int(given))
    table = "leads" if entity == "lead" else "opportunities"
    n = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    return max(1, ROWS_PER_BATCH // max(int(n), 1))


def _build(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    entity: str,
    dates: list[pd.Timestamp],
    make_spine: Callable[[list[pd.Timestamp], str], dict[str, int]],
    label_cols: list[str],
    dates_per_batch: int | None,
    progress: Progress | None,
    method: str,
    take: Sink,
) -> dict[str, int]:
    """Every batch's features + labels to ``take`` (at least one, possibly empty, frame);
    returns the excluded rows by reason."""
    excluded: dict[str, int] = {}
    # DuckDB draws its own progress bar on stdout for queries over 2 s, which broke
    # `leadml train --json` / `dataset --json` output; ``progress`` reports the batches
    con.execute("SET enable_progress_bar = false")
    table = f"_ds_spine_{uuid.uuid4().hex[:8]}"
    size = _dates_per_batch(con, entity, dates_per_batch) if dates else 1
    batches = [b for b in _batches(dates, size) if b]
    try:
        for i, batch in enumerate(batches):
            for reason, n in make_spine(batch, table).items():
                excluded[reason] = excluded.get(reason, 0) + n
            feats = compute_features_sql(con, catalog, entity, table, method)
            labels = con.execute(f"SELECT {', '.join(label_cols)} FROM {table} ORDER BY _sid").df()
            take(pd.concat([feats, labels], axis=1))
            if progress:
                progress(i + 1, len(batches), f"{batch[-1].date()}: {len(feats):,} rows")
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}")
    if not batches:
        take(_empty_features(con, catalog, entity))
    return excluded


class _Collect:
    """Takes each batch: fixes its label types, tallies it, and keeps it or hands it to
    the caller's sink."""

    def __init__(
        self,
        sink: Sink | None,
        fix: Callable[[pd.DataFrame], pd.DataFrame],
        tally: Callable[[pd.DataFrame], dict[str, int]],
    ) -> None:
        self.sink, self.fix, self.tally = sink, fix, tally
        self.frames: list[pd.DataFrame] = []
        self.counts: dict[str, int] = {"rows": 0}
        self.dates: set[pd.Timestamp] = set()  # the as-of dates that have rows

    def __call__(self, frame: pd.DataFrame) -> None:
        frame = self.fix(frame)
        for k, v in {"rows": len(frame), **self.tally(frame)}.items():
            self.counts[k] = self.counts.get(k, 0) + int(v)
        if "as_of" in frame.columns and len(frame):
            self.dates.update(pd.Timestamp(t) for t in frame["as_of"].unique())
        if self.sink is not None:
            self.sink(frame)
            frame = frame.head(0)  # keep only the columns
        self.frames.append(frame)

    def frame(self) -> pd.DataFrame:
        """The training set (only its columns when a sink took the rows)."""
        return pd.concat(self.frames, ignore_index=True)


def _empty_features(con: duckdb.DuckDBPyConnection, catalog: Catalog, entity: str) -> pd.DataFrame:
    """An empty feature frame with the right columns (no as-of dates in range)."""
    eid = ENTITY_ID[entity]
    table = f"_ds_empty_{uuid.uuid4().hex[:8]}"
    con.execute(
        f"CREATE TEMP TABLE {table} AS SELECT CAST(0 AS BIGINT) AS _sid, "
        f"CAST(NULL AS VARCHAR) AS {eid}, "
        "CAST(NULL AS TIMESTAMPTZ) AS as_of WHERE FALSE"
    )
    try:
        return compute_features_sql(con, catalog, entity, table)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def lead_readiness_dataset(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    every_days: int = 7,
    horizon_days: int = 30,
    dates_per_batch: int | None = None,
    progress: Progress | None = None,
    method: str = "prefix",
    sink: Sink | None = None,
) -> tuple[pd.DataFrame, DatasetSummary]:
    """Weekly snapshots of open leads: ``lead_id, as_of, <lead features>, label``.

    As-of dates: Mondays 00:00 UTC from ``start`` (default: first lead creation) to
    ``end`` (default: data end), every ``every_days`` days. Features read ``ts < as_of``;
    the label reads ``(as_of, as_of + horizon_days]``. Rows whose label window passes
    the data end (the latest timestamp in the data) are excluded and counted.
    ``method`` is the offline engine's (:func:`~leadml.features.offline.compute_features`):
    the values are the same either way; ``prefix`` is faster over many as-of dates.
    With ``sink``, each batch of rows goes to it and the returned frame has only the
    columns.
    """
    if horizon_days < 1:
        raise DataError(f"horizon: must be at least 1 day (got {horizon_days})")
    t0 = time.perf_counter()
    dates, last = _window(con, start, end, every_days)
    vocab = catalog.vocabulary

    def spine(batch: list[pd.Timestamp], table: str) -> dict[str, int]:
        return lead_readiness_spine(con, vocab, batch, horizon_days, last, table)

    def fix(frame: pd.DataFrame) -> pd.DataFrame:
        if "label" not in frame.columns:
            frame["label"] = pd.Series(dtype="int64")
        return frame.assign(label=frame["label"].astype("int64"))

    got = _Collect(sink, fix, lambda f: {"positives": int(f["label"].sum())})
    excluded = _build(
        con, catalog, "lead", dates, spine, ["label"], dates_per_batch, progress, method, got
    )
    df = got.frame()
    summary = DatasetSummary(
        name="lead-readiness",
        rows=got.counts["rows"],
        features=len(catalog.names("lead")),
        **date_summary(dates, got.dates),
        data_end=last.isoformat(),
        positives=got.counts.get("positives", 0),
        excluded=excluded,
        seconds=time.perf_counter() - t0,
    )
    return df, summary


def deal_close_dataset(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    every_days: int = 7,
    dates_per_batch: int | None = None,
    progress: Progress | None = None,
    method: str = "prefix",
    sink: Sink | None = None,
) -> tuple[pd.DataFrame, DatasetSummary]:
    """Weekly snapshots of open deals: ``opportunity_id, as_of, <opportunity features>,
    outcome, outcome_days, segment, owner_id, amount``.

    Features read ``ts < as_of``; the outcome reads the first closing row after as_of
    (``outcome`` = won/lost) or is ``open`` (censored at the data end), with
    ``outcome_days`` the days from as_of to that row or to the data end. ``method`` and
    ``sink`` as in :func:`lead_readiness_dataset`.
    """
    t0 = time.perf_counter()
    dates, last = _window(con, start, end, every_days)
    vocab = catalog.vocabulary

    def spine(batch: list[pd.Timestamp], table: str) -> dict[str, int]:
        return deal_close_spine(con, vocab, batch, last, table)

    cols = ["outcome", "outcome_days", "segment", "owner_id", "amount"]

    def fix(frame: pd.DataFrame) -> pd.DataFrame:
        for c in cols:
            if c not in frame.columns:
                kind = "float64" if c in ("outcome_days", "amount") else "object"
                frame[c] = pd.Series(dtype=kind)
        return frame

    got = _Collect(sink, fix, lambda f: f["outcome"].value_counts().to_dict())
    excluded = _build(
        con, catalog, "opportunity", dates, spine, cols, dates_per_batch, progress, method, got
    )
    df = got.frame()
    counts = got.counts
    summary = DatasetSummary(
        name="deal-close",
        rows=got.counts["rows"],
        features=len(catalog.names("opportunity")),
        **date_summary(dates, got.dates),
        data_end=last.isoformat(),
        positives=int(counts.get("won", 0)),
        outcomes={k: int(counts.get(k, 0)) for k in ("won", "lost", "open")},
        excluded=excluded,
        seconds=time.perf_counter() - t0,
    )
    return df, summary
