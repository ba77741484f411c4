"""Attribute-only lead tables: one row per lead, attribute columns and an outcome,
no event log (the most common first dataset: a CRM report or a spreadsheet).

:func:`read_lead_table` reads a CSV (delimiter sniffed) or Parquet file;
:func:`prepare_table` turns it into a clean, time-ordered frame and a report of
how every column was read: missing-value sentinels (``"Select,unknown,999"`` in
every column, ``"pdays=999"`` in one) become NaN, column types are inferred
(numeric / categorical / datetime), and id-like or constant columns are set aside.
:func:`score_table` scores new rows of such a table (no outcome needed) with a model
trained on it, typing each feature column as the model read it at training.

Time semantics: a row is a lead as it was when its outcome was still open; the
table has no as-of time of its own. The order of rows is the time order, given by
``time_column`` (a date per row), by ``order_by`` (any sortable column) or, when
neither is given, by the file order (stated in the report). Backtests train on
earlier rows and test on later ones; nothing here shuffles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from leadml.errors import DataError
from leadml.importing.leakage import binary_target
from leadml.importing.mapping import read_text_table

ColumnKind = Literal[
    "numeric",
    "categorical",
    "datetime",
    "id",
    "constant",
    "empty",
    "target",
    "time",
    "order",
    "excluded",
]
FEATURE_KINDS = ("numeric", "categorical")
_ID_NAME = re.compile(r"(^|[^a-z])(id|uuid|guid|key|email|e_mail|phone|name)$", re.IGNORECASE)


@dataclass
class ColumnInfo:
    """How one column of the table was read."""

    name: str
    kind: ColumnKind
    missing: float  # share of missing values after sentinels
    n_unique: int
    sentinels: int = 0  # values turned into NaN by --missing-values
    note: str = ""

    @property
    def is_feature(self) -> bool:
        return self.kind in FEATURE_KINDS


@dataclass
class TableReport:
    """What :func:`prepare_table` did, column by column."""

    rows_in: int
    rows: int
    target: str
    positives: int
    order: str  # how rows are ordered in time
    columns: list[ColumnInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[str]:
        return [c.name for c in self.columns if c.is_feature]

    @property
    def numeric(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "categorical"]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([c.__dict__ for c in self.columns])


@dataclass
class MissingValues:
    """Sentinel values that mean "missing": for every column, and per column."""

    everywhere: list[str] = field(default_factory=list)
    per_column: dict[str, list[str]] = field(default_factory=dict)

    def for_column(self, name: str) -> list[str]:
        return [*self.everywhere, *self.per_column.get(name, [])]


def parse_missing_values(text: str | list[str] | tuple[str, ...] | None) -> MissingValues:
    """``"Select,unknown,pdays=999"``: ``Select`` and ``unknown`` mean missing in every
    column, ``999`` only in column ``pdays`` (blanks ignored)."""
    out = MissingValues()
    if text is None:
        return out
    parts = text.split(",") if isinstance(text, str) else list(text)
    for part in (p.strip() for p in parts):
        if not part:
            continue
        column, eq, value = part.partition("=")
        if eq and column.strip():
            out.per_column.setdefault(column.strip(), []).append(value.strip())
        else:
            out.everywhere.append(part)
    return out


def read_lead_table(path: str | Path, delimiter: str | None = None) -> pd.DataFrame:
    """A CSV (delimiter sniffed: ``,`` ``;`` tab ``|``) or Parquet file; CSV values are
    read as text (types are inferred by :func:`prepare_table`), empty cells as NaN."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found; give a CSV or Parquet file of leads")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    df = read_text_table(path, delimiter, encoding_fix="re-save it as UTF-8 (CSV UTF-8)")
    if df.shape[1] < 2:
        raise DataError(
            f"{path}: found a single column {list(df.columns)!r}; is the delimiter "
            "unusual? pass it explicitly"
        )
    return df


def _blank_sentinels(col: pd.Series, sentinels: list[str]) -> tuple[pd.Series, int]:
    if not sentinels:
        return col, 0
    text = col.astype("string").str.strip()
    hit = text.isin(sentinels)
    if pd.api.types.is_numeric_dtype(col):
        nums = pd.to_numeric(pd.Series(sentinels), errors="coerce").dropna()
        hit |= col.isin(nums.tolist())
    hit = hit.fillna(False).astype(bool)
    return col.mask(hit), int(hit.sum())


def _infer(col: pd.Series, name: str, rows: int) -> tuple[ColumnKind, pd.Series, str]:
    """(kind, typed values, note) of one column after sentinels."""
    present = col.dropna()
    if present.empty:
        return "empty", col, "no values"
    if present.nunique() == 1 and len(present) == len(col):
        return "constant", col, f"always {present.iloc[0]!r}"
    if pd.api.types.is_bool_dtype(col):
        return "categorical", feature_values(col, "categorical"), ""
    if pd.api.types.is_datetime64_any_dtype(col):
        return "datetime", col, "a date: not a feature (use it as --time-column)"
    nums = feature_values(col, "numeric")
    parsed = nums.notna().sum()
    if parsed == len(present):
        unique_ratio = present.nunique() / rows
        if _ID_NAME.search(name) and unique_ratio > 0.95:
            return "id", col, "one value per row and an id-like name"
        return "numeric", nums, ""
    text = feature_values(col, "categorical")
    if text.dropna().str.contains(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4}").mean() > 0.95:
        dates = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
        if dates.notna().sum() >= 0.95 * len(present):
            return "datetime", dates, "a date: not a feature (use it as --time-column)"
    if parsed >= 0.9 * len(present):
        bad = present[nums.loc[present.index].isna()].astype(str).unique()[:5]
        return (
            "categorical",
            text,
            (
                f"mostly numbers but also {', '.join(map(repr, bad))}: read as "
                "categories (list such values in --missing-values?)"
            ),
        )
    if text.nunique() > 0.95 * rows or (_ID_NAME.search(name) and text.nunique() > 0.5 * rows):
        return "id", text, "(nearly) one value per row: an identifier, not a feature"
    return "categorical", text, ""


def feature_values(col: pd.Series, kind: str) -> pd.Series:
    """A feature column's values as a model reads them (after missing-value sentinels):
    ``numeric`` as float (text that is not a number becomes NaN), ``categorical`` as
    string (NaN stays missing). Training (:func:`prepare_table`) and scoring
    (:func:`prepare_rows`) type their columns with this one function."""
    if kind == "numeric":
        nums = col if pd.api.types.is_numeric_dtype(col) else _to_numbers(col)
        return nums.astype(float)
    return col.astype("string")


def _to_numbers(col: pd.Series) -> pd.Series:
    """Numbers from text, converting each distinct value once (fast for categories)."""
    uniq = pd.Series(col.dropna().unique())
    as_num = pd.to_numeric(uniq.astype(str), errors="coerce")
    lookup = dict(zip(uniq.astype(str), as_num, strict=True))
    return col.map(lambda v: np.nan if pd.isna(v) else lookup[str(v)]).astype(float)


def _checked_sentinels(df: pd.DataFrame, missing_values: str | list[str] | None) -> MissingValues:
    """The parsed ``--missing-values``; a column-specific one must name a column of ``df``."""
    sentinels = parse_missing_values(missing_values)
    unknown_cols = [c for c in sentinels.per_column if c not in df.columns]
    if unknown_cols:
        raise DataError(f"--missing-values names unknown column(s) {', '.join(unknown_cols)}")
    return sentinels


def prepare_table(
    df: pd.DataFrame,
    target: str,
    *,
    time_column: str | None = None,
    order_by: str | None = None,
    exclude: list[str] | tuple[str, ...] = (),
    missing_values: str | list[str] | None = None,
    positive: Any = None,
) -> tuple[pd.DataFrame, TableReport]:
    """A clean frame (rows in time order, target as 0/1, features typed) and its report.

    The returned frame holds the target (0/1 int), the time/order column if given,
    every feature column (numeric as float, categorical as string with NaN for
    missing) and the other date columns (UTC; not features, kept for the leakage
    guard). Rows with a missing outcome (or missing time) are dropped and counted.
    """
    for role, col in (("outcome", target), ("time", time_column), ("order-by", order_by)):
        if col is not None and col not in df.columns:
            raise DataError(
                f"{role} column {col!r} not in the table "
                f"(columns: {', '.join(map(str, df.columns))})"
            )
    if time_column and order_by:
        raise DataError("give either --time-column or --order-by, not both")
    unknown = [c for c in exclude if c not in df.columns]
    if unknown:
        raise DataError(f"--exclude names unknown column(s) {', '.join(unknown)}")
    sentinels = _checked_sentinels(df, missing_values)
    rows_in = len(df)
    report = TableReport(rows_in, rows_in, target, 0, "file order (no --time-column / --order-by)")
    out: dict[str, pd.Series] = {}
    y = binary_target(
        df[target].mask(df[target].astype("string").str.strip().isin(sentinels.for_column(target))),
        positive,
        name=target,
    )
    keep = y.notna()
    report.columns.append(ColumnInfo(target, "target", float(1 - keep.mean()), 2))
    sort_key: pd.Series | None = None
    if time_column:
        times = _as_time(df[time_column], time_column)
        keep &= times.notna()
        out[time_column] = times
        sort_key = times
        report.order = f"by time column {time_column!r}"
        report.columns.append(
            ColumnInfo(time_column, "time", float(times.isna().mean()), int(times.nunique()))
        )
    elif order_by:
        key = df[order_by]
        nums = pd.to_numeric(key, errors="coerce")
        sort_key = nums if nums.notna().sum() == key.notna().sum() else key.astype("string")
        out[order_by] = sort_key
        report.order = f"by column {order_by!r}"
        report.columns.append(
            ColumnInfo(order_by, "order", float(key.isna().mean()), int(key.nunique()))
        )
    for name in df.columns:
        if name in (target, time_column, order_by):
            continue
        if name in exclude:
            report.columns.append(
                ColumnInfo(
                    name,
                    "excluded",
                    float(df[name].isna().mean()),
                    int(df[name].nunique()),
                    note="--exclude",
                )
            )
            continue
        col, n_sent = _blank_sentinels(df[name], sentinels.for_column(name))
        kind, typed, note = _infer(col, name, rows_in)
        report.columns.append(
            ColumnInfo(name, kind, float(col.isna().mean()), int(col.nunique()), n_sent, note)
        )
        if kind in FEATURE_KINDS or kind == "datetime":
            out[name] = typed  # dates are kept for the leakage guard, not used as features
    frame = pd.DataFrame(out, index=df.index)
    frame.insert(0, target, y)
    dropped = int((~keep).sum())
    if dropped:
        report.notes.append(
            f"{dropped} row(s) dropped: missing outcome{' or time' if time_column else ''}"
        )
    frame = frame[keep.to_numpy()]
    if sort_key is not None:
        frame = frame.iloc[np.argsort(sort_key[keep.to_numpy()].to_numpy(), kind="stable")]
    frame[target] = frame[target].astype(int)
    report.rows = len(frame)
    report.positives = int(frame[target].sum())
    return frame.reset_index(drop=True), report


def _as_time(col: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        return col if col.dt.tz is not None else col.dt.tz_localize("UTC")
    # ISO only: "13/11/2023" and "12/11/2023" in one column would be read one day-first
    # and one month-first, and the rows would be trained and tested out of time order.
    parsed = pd.to_datetime(col, errors="coerce", utc=True, format="ISO8601")
    bad = col.notna() & parsed.isna()
    if bad.any():
        shown = col[bad].astype(str)
        slashed = shown.str.match(r"^\s*\d{1,2}[/.]\d{1,2}[/.]\d{2,4}").mean() > 0.5
        hint = (
            "day-first or month-first cannot be told apart (13/11/2023 vs 11/13/2023): "
            if slashed
            else ""
        )
        raise DataError(
            f"time column {name!r}: {int(bad.sum())} value(s) are not dates in ISO form "
            f"(year-month-day), e.g. {', '.join(map(repr, shown.unique()[:5]))}; {hint}"
            "write them like 2023-11-13 or 2023-11-13 09:30"
        )
    return parsed


# ------------------------------------------------------------------ training


def table_training_frame(
    frame: pd.DataFrame,
    report: TableReport,
    *,
    time_column: str | None = None,
    periods: int = 200,
) -> pd.DataFrame:
    """The prepared table in the shape :func:`leadml.modeling.train.train` reads:
    ``lead_id``, ``as_of``, ``label`` and the feature columns.

    ``as_of`` is the row's time floored to its week (Monday, UTC) when a time column
    is given. Without one, rows are in time order but undated: they are cut into
    ``periods`` equal consecutive blocks on a synthetic weekly clock starting
    2000-01-03, so that "train on earlier weeks, test on later ones" means "train on
    earlier rows, test on later ones".
    """
    out = pd.DataFrame(index=frame.index)
    out["lead_id"] = [f"row-{i}" for i in range(len(frame))]
    if time_column:
        t = frame[time_column]
        out["as_of"] = t.dt.tz_convert("UTC").dt.normalize() - pd.to_timedelta(
            t.dt.weekday, unit="D"
        )
    else:
        n_periods = max(1, min(periods, len(frame)))
        block = np.arange(len(frame)) * n_periods // max(len(frame), 1)
        out["as_of"] = pd.Timestamp("2000-01-03", tz="UTC") + pd.to_timedelta(block * 7, unit="D")
    out["label"] = frame[report.target].astype(int).to_numpy()
    for name in report.features:
        out[name] = frame[name]
    return out.reset_index(drop=True)


# LightGBM settings for attribute-only tables (see docs/examples/bank_marketing.md for
# how they were chosen: on rows before the first test window only). Early stopping
# watches ROC AUC, not log loss: the calibration slice is later than the rows the
# booster learns from, and when the base rate drifts the log loss there grows with
# every round that sharpens the scores, so log-loss stopping can stop after one
# round (a constant score). Ranking is the booster's job; the level is the
# calibrator's. One thread: LightGBM's OpenMP threads spin on a busy machine.
TABLE_ESTIMATOR: dict[str, Any] = {
    "params": {
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "metric": "auc",
    },
    "num_boost_round": 400,
    "early_stopping_rounds": 30,
    "num_threads": 1,
}
# ``--quick``: a smoke-test model (few, coarse rounds) for trying the command on a sample.
QUICK_ESTIMATOR: dict[str, Any] = {
    "params": {"learning_rate": 0.2, "num_leaves": 7, "min_data_in_leaf": 20, "metric": "auc"},
    "num_boost_round": 40,
    "early_stopping_rounds": 10,
    "num_threads": 1,
}


def table_spec(
    training: pd.DataFrame,
    features: list[str],
    *,
    name: str = "lead_readiness_table",
    base: Any = None,
    test_share: float = 0.1,
    call_share: float = 0.1,
) -> Any:
    """A lead-readiness :class:`~leadml.modeling.spec.ModelSpec` sized to the table.

    The outcome is final (no horizon to wait for), so the backtest gap and the
    horizon are one week. Each of 3 rolling test windows and the calibration slice
    covers ``test_share`` of the time span; "precision at capacity" calls the best
    ``call_share`` of each week's rows. ``base`` (a ModelSpec) supplies estimator,
    baseline, calibration method and gate settings.
    """
    from leadml.modeling.spec import ModelSpec

    if base is None:
        base = ModelSpec.model_validate(
            {
                "name": name,
                "kind": "lead_readiness",
                "features": list(features),
                "estimator": TABLE_ESTIMATOR,
            }
        )
    span_days = int((training["as_of"].max() - training["as_of"].min()).days) + 7
    window = max(7, int(np.ceil(span_days * test_share / 7)) * 7)
    per_week = len(training) / max(training["as_of"].nunique(), 1)
    data: dict[str, Any] = base.model_dump() if base is not None else {}
    data.update(
        name=name,
        kind="lead_readiness",
        description="readiness from an attribute-only lead table",
        features=list(features),
        segment_column=None,
        every_days=7,
        history_days=None,
    )
    data["target"] = {"horizon_days": 7}
    data["backtest"] = {"origins": 3, "gap_days": 7, "test_days": window, "step_days": window}
    calibration = dict(data.get("calibration") or {})
    calibration["holdout_days"] = window
    data["calibration"] = calibration
    policy = dict(data.get("policy") or {})
    policy["capacity_per_week"] = max(1, int(round(per_week * call_share)))
    data["policy"] = policy
    return ModelSpec.model_validate(data)


def train_table(
    frame: pd.DataFrame,
    report: TableReport,
    *,
    time_column: str | None = None,
    base_spec: Any = None,
    name: str = "lead_readiness_table",
    progress: Any = None,
) -> Any:
    """Backtest in time order, calibrate and fit a readiness model on a prepared table.

    Uses :func:`leadml.modeling.train.train` (LightGBM + logistic baseline, rolling
    origins, calibration on a later slice): every fold trains only on rows before
    its test window minus one week. Returns its ``TrainingResult``; logging and
    registering it in MLflow is the caller's step, as for the other models.
    """
    from leadml.modeling.train import train

    training = table_training_frame(frame, report, time_column=time_column)
    spec = table_spec(training, report.features, name=name, base=base_spec)
    kwargs = {"progress": progress} if progress is not None else {}
    return train(training, spec, **kwargs)


def quick_spec(features: list[str], name: str = "lead_readiness_table") -> Any:
    """The base spec of ``leadml train --table --quick``: few coarse rounds, for a first
    look or a smoke test; not for a model anyone acts on."""
    from leadml.modeling.spec import ModelSpec

    return ModelSpec.model_validate(
        {
            "name": name,
            "kind": "lead_readiness",
            "features": list(features),
            "estimator": QUICK_ESTIMATOR,
            "min_positives": 20,
        }
    )


def load_and_check(
    path: str | Path,
    target: str,
    *,
    time_column: str | None = None,
    order_by: str | None = None,
    exclude: list[str] | tuple[str, ...] = (),
    missing_values: str | list[str] | None = None,
    positive: Any = None,
    threshold: float = 0.9,
) -> tuple[pd.DataFrame, TableReport, Any]:
    """Read, prepare and run the leakage guard: ``(frame, report, leakage report)``.

    The guard sees every column left after ``exclude`` (features and other dates);
    the ``order_by`` column is not judged (it orders rows, it is not a feature).
    """
    from leadml.importing.leakage import check_leakage

    frame, report = prepare_table(
        read_lead_table(path),
        target,
        time_column=time_column,
        order_by=order_by,
        exclude=list(exclude),
        missing_values=missing_values,
        positive=positive,
    )
    if not report.features:
        raise DataError(
            f"{path}: no feature column left after --exclude and type inference "
            "(see `leadml check-table`)"
        )
    leak = check_leakage(
        frame.drop(columns=[order_by] if order_by else []),
        target,
        time_column=time_column,
        threshold=threshold,
    )
    return frame, report, leak


def example_reasons(result: Any, rows: int = 3, k: int = 3) -> list[dict[str, Any]]:
    """Top reasons of the final model for a few leads of the latest backtest window:
    the highest, the median and the lowest scored (``rows`` spread over that range).

    ``row`` is the lead's position in the time-ordered table (0-based, after rows with
    a missing outcome were dropped); contributions are on the log-odds scale of the
    uncalibrated booster.
    """
    from leadml.modeling.explain import top_reasons

    df = result.train_frame
    latest = df[df["as_of"] >= result.latest_origin]
    if latest.empty:
        latest = df
    features = list(result.spec.features)
    p = result.model.predict_proba(latest)
    order = np.argsort(-p, kind="stable")
    picks = sorted({int(order[int(round(i))]) for i in np.linspace(0, len(order) - 1, rows)})
    picks.sort(key=lambda i: -p[i])
    chosen = latest.iloc[picks]
    reasons = top_reasons(
        result.model.contributions(chosen), features, chosen[features].reset_index(drop=True), k=k
    )
    return [
        {
            "row": int(str(row["lead_id"]).removeprefix("row-")),
            "probability": float(p[i]),
            "label": int(row["label"]),
            **why,
        }
        for i, (_, row), why in zip(picks, chosen.iterrows(), reasons, strict=True)
    ]


def out_of_range(result: Any, min_share: float = 0.5) -> list[dict[str, Any]]:
    """Numeric features whose values in a backtest test window mostly lie outside the
    range of that window's training rows (a share >= ``min_share`` of its known values).

    Trees cannot extrapolate: a value beyond the training range lands in the leaf of the
    nearest value seen, so such a column (typically one that moves with time, like an
    interest rate) ranks nothing in that window, while a linear baseline extends its
    trend. One entry per (window, column): ``window`` (1-based, oldest first),
    ``column``, ``share``, the training ``train_min``/``train_max`` and the window's
    ``test_min``/``test_max``. Training rows are those the fold trained on
    (``as_of`` before its origin minus the gap).
    """
    df = result.train_frame
    spec = result.spec
    gap = pd.Timedelta(days=spec.backtest.gap_days)
    length = pd.Timedelta(days=spec.backtest.test_days)
    out: list[dict[str, Any]] = []
    for i, fold in enumerate(result.folds):
        train_rows = df[df["as_of"] < fold.origin - gap]
        test_rows = df[(df["as_of"] >= fold.origin) & (df["as_of"] < fold.origin + length)]
        for name in spec.features:
            if not pd.api.types.is_numeric_dtype(df[name]):
                continue
            seen, new = train_rows[name].dropna(), test_rows[name].dropna()
            if seen.empty or new.empty:
                continue
            lo, hi = float(seen.min()), float(seen.max())
            share = float(((new < lo) | (new > hi)).mean())
            if share >= min_share:
                out.append(
                    {
                        "window": i + 1,
                        "column": name,
                        "share": share,
                        "train_min": lo,
                        "train_max": hi,
                        "test_min": float(new.min()),
                        "test_max": float(new.max()),
                    }
                )
    return out


# ------------------------------------------------------------------ scoring


def prepare_rows(
    df: pd.DataFrame,
    kinds: dict[str, str],
    *,
    missing_values: str | list[str] | None = None,
) -> tuple[pd.DataFrame, list[ColumnInfo]]:
    """New rows typed for scoring: the columns of ``kinds`` (``numeric`` or
    ``categorical``: the types a model read at training) with the same missing-value
    sentinels and typing as :func:`prepare_table`, in file order. Nothing is inferred
    from the new rows, no row is dropped and no outcome is needed.

    The :class:`ColumnInfo` of a numeric column notes the values that are not numbers
    (they become missing)."""
    sentinels = _checked_sentinels(df, missing_values)
    out: dict[str, pd.Series] = {}
    infos: list[ColumnInfo] = []
    unreadable: dict[str, pd.Series] = {}
    for name, kind in kinds.items():
        col, n_sent = _blank_sentinels(df[name], sentinels.for_column(name))
        typed = feature_values(col, kind)
        note = ""
        bad = col.notna() & typed.isna()
        if kind == "numeric" and bool(bad.any()) and int(bad.sum()) == int(col.notna().sum()):
            unreadable[name] = col[bad].astype(str)
        if bool(bad.any()):
            shown = ", ".join(map(repr, col[bad].astype(str).unique()[:5]))
            note = (
                f"{int(bad.sum())} value(s) are not numbers ({shown}): scored as missing "
                "(list them in --missing-values?)"
            )
        infos.append(
            ColumnInfo(
                name,
                "numeric" if kind == "numeric" else "categorical",
                float(typed.isna().mean()) if len(typed) else 0.0,
                int(typed.nunique()),
                n_sent,
                note,
            )
        )
        out[name] = typed
    if unreadable:
        raise DataError(_unreadable_numbers(unreadable))
    return pd.DataFrame(out, index=df.index), infos


def _unreadable_numbers(columns: dict[str, pd.Series]) -> str:
    """Numeric feature columns of which not one value reads as a number: every row would
    score as if they were missing, so this stops (e.g. decimal commas, 1,405 for 1.405)."""
    values = pd.concat(list(columns.values()))
    comma = bool(values.str.fullmatch(r"\s*[+-]?\d+,\d+\s*").mean() > 0.5)
    named = "; ".join(
        f"{name!r} ({', '.join(map(repr, col.unique()[:3]))})" for name, col in columns.items()
    )
    hint = (
        "they look like decimal commas: write the file with decimal points (in Excel: "
        "File > Options > Advanced, decimal separator '.'), as the training table was"
        if comma
        else "fix the column or list its placeholder values in --missing-values"
    )
    return (
        f"no value of numeric feature column(s) {named} reads as a number, so every row "
        f"would be scored as if they were missing; {hint}"
    )


@dataclass
class TableScores:
    """What :func:`score_table` produced: one row of scores per input row (file order)
    and notes on how the file was read."""

    scores: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    columns: list[ColumnInfo] = field(default_factory=list)
    id_column: str = "row"


def _close(name: str, candidates: list[str]) -> str:
    import difflib

    lowered = {str(c).strip().lower(): str(c) for c in candidates}
    same = lowered.get(name.strip().lower())
    if same is not None:
        return same
    found = difflib.get_close_matches(name, [str(c) for c in candidates], n=1, cutoff=0.6)
    return found[0] if found else ""


def _listed(values: list[str], limit: int = 8) -> str:
    shown = ", ".join(map(repr, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _check_scoring_input(df: pd.DataFrame, bundle: Any, id_column: str | None, source: str) -> None:
    """A readiness bundle, every feature column and the id column present, some rows."""
    columns = [str(c) for c in df.columns]
    if bundle.kind != "lead_readiness":
        raise DataError(
            f"model {bundle.name} is a {bundle.kind} model; score a lead table with a model "
            "trained by `leadml train --table`"
        )
    missing = [f for f in bundle.features if f not in df.columns]
    if missing:
        hints = [
            f"{m!r} (did you mean {_close(m, columns)!r}?)" for m in missing if _close(m, columns)
        ]
        raise DataError(
            f"{source} lacks {len(missing)} feature column(s) the model {bundle.name} was "
            f"trained on: {_listed(missing)}"
            + (f"; close matches: {', '.join(hints)}" if hints else "")
            + f"; it needs: {', '.join(bundle.features)}"
        )
    if id_column is not None and id_column not in df.columns:
        close = _close(id_column, columns)
        raise DataError(
            f"--id-column {id_column!r} is not a column of {source}"
            + (f" (did you mean {close!r}?)" if close else "")
            + f"; columns: {', '.join(columns)}"
        )
    if not len(df):
        raise DataError(f"{source} has no rows to score")


def score_table(
    df: pd.DataFrame,
    bundle: Any,
    *,
    id_column: str | None = None,
    missing_values: str | list[str] | None = None,
    target: str | None = None,
    reasons: int = 3,
    source: str = "the table",
) -> TableScores:
    """Score the rows of a lead table with a :class:`~leadml.modeling.bundle.ScoringBundle`
    trained on such a table (``leadml train --table``).

    Each feature column is typed as the model read it at training (numeric or
    categorical, with the ``missing_values`` sentinels; see :func:`prepare_rows`); the
    outcome column ``target``, if present, is never read. Output columns: the id
    (``id_column``'s values, else ``row`` = 1..n), ``probability`` (calibrated),
    ``grade`` (when the bundle has grade cut-offs), ``percentile`` (among the scores of
    the latest training rows), and ``reasons`` / ``reasons_against``: the top
    ``reasons`` reasons for and against, as text (a category the model never saw is
    scored, and explained, as missing).

    Raises :class:`~leadml.errors.DataError` naming the feature columns the table lacks
    (with close matches) or an unknown ``id_column``.
    """
    _check_scoring_input(df, bundle, id_column, source)
    columns = [str(c) for c in df.columns]
    notes: list[str] = []
    if target is not None and target in df.columns:
        notes.append(
            f"column {target!r} is the outcome the model was trained on: ignored (never "
            "used for scoring)"
        )
    extra = [c for c in columns if c not in bundle.features and c not in (id_column, target)]
    if extra:
        notes.append(f"column(s) the model does not use, ignored: {_listed(extra)}")
    kinds = {f: "categorical" if f in bundle.categories else "numeric" for f in bundle.features}
    typed, infos = prepare_rows(df, kinds, missing_values=missing_values)
    for info in infos:
        if info.note:
            notes.append(f"column {info.name!r}: {info.note}")
    for f, cats in bundle.categories.items():
        col = typed[f]
        unseen = col.notna() & ~col.isin([str(c) for c in cats])
        if bool(unseen.any()):
            values = col[unseen].astype(str).unique().tolist()
            notes.append(
                f"column {f!r}: {int(unseen.sum())} row(s) hold value(s) the model never saw "
                f"({_listed(values, 5)}): scored as missing"
            )
    scored = bundle.score(typed).reset_index(drop=True)
    out = pd.DataFrame(index=scored.index)
    id_name = id_column or "row"
    out[id_name] = df[id_column].to_numpy() if id_column is not None else np.arange(1, len(df) + 1)
    out["probability"] = scored["probability"].to_numpy()
    if "grade" in scored.columns:
        out["grade"] = scored["grade"].to_numpy()
    out["percentile"] = scored["percentile"].to_numpy()
    if reasons > 0:
        found = bundle.explain(typed, k=reasons)
        out["reasons"] = ["; ".join(r["text"] for r in row["positive"]) for row in found]
        out["reasons_against"] = ["; ".join(r["text"] for r in row["negative"]) for row in found]
    if id_column is not None:
        dupes = int(df[id_column].duplicated().sum())
        if dupes:
            notes.append(f"--id-column {id_column!r} repeats {dupes} value(s)")
    return TableScores(out, notes, infos, id_name)
