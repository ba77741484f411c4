"""Leakage guard for a single attribute table with an outcome column.

Run before training on a spreadsheet of leads: it names the columns that would make
a model look better than it can be in use, with a reason per flag.

- **separates**: the column *alone* separates the outcome suspiciously well: its
  single-column ROC AUC (direction-free, ``max(AUC, 1 - AUC)``) is at or above the
  threshold (default 0.9). Numeric columns are scored by rank (Mann-Whitney AUC,
  missing values placed at either end, whichever separates more); categorical
  columns by *out-of-fold* target encoding (each row's category rate is learnt on
  the other folds only, so a column of unique values scores ~0.5, not 1.0).
- **missing_pattern**: the column is filled in mostly for one class (its missing
  rate differs by at least ``missing_gap`` between the classes): the typical trace
  of a field that someone fills in after the outcome.
- **name**: the column's name says it is recorded after the outcome (``duration``,
  ``converted``, ``closed``, ``won``, ``outcome``, ...).
- **after_time**: a date column whose values fall after the row's time column in most
  rows (``*_date`` after ``created_at``): known only later.

Time semantics: the guard does not know the as-of time of a row; it judges columns
by how they relate to the outcome. A flag is a reason to look, not a proof: remove
the column (``--exclude``) unless you know it is recorded before the outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leadml.errors import DataError

FlagKind = Literal["separates", "missing_pattern", "name", "after_time"]

# Tokens of a column name that say "recorded after the outcome".
POST_OUTCOME_WORDS: tuple[str, ...] = (
    "duration",
    "converted",
    "conversion",
    "convert",
    "closed",
    "close",
    "won",
    "win",
    "lost",
    "outcome",
    "result",
    "disposition",
    "churn",
    "churned",
    "signed",
    "status",
    "stage",
)
_POSITIVE_WORDS = {"1", "1.0", "true", "yes", "y", "t", "won", "converted", "positive", "success"}


@dataclass
class ColumnScore:
    """How one column relates to the outcome."""

    column: str
    kind: Literal["numeric", "categorical", "datetime"]
    auc: float  # max(AUC, 1 - AUC) of the column alone; 0.5 = no signal
    missing_pos: float  # missing rate among positives
    missing_neg: float  # missing rate among negatives
    n_unique: int


@dataclass
class Flag:
    """One reason to suspect a column."""

    column: str
    kind: FlagKind
    reason: str


@dataclass
class LeakageReport:
    """Scores for every checked column (highest AUC first) and the flags raised."""

    target: str
    rows: int
    positives: int
    threshold: float
    scores: list[ColumnScore] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        """Flagged columns, in the order of their scores."""
        hit = {f.column for f in self.flags}
        return [s.column for s in self.scores if s.column in hit]

    def reasons(self, column: str) -> list[str]:
        return [f.reason for f in self.flags if f.column == column]

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for s in self.scores:
            rows.append(
                {
                    "column": s.column,
                    "kind": s.kind,
                    "auc": round(s.auc, 4),
                    "missing_pos": round(s.missing_pos, 4),
                    "missing_neg": round(s.missing_neg, 4),
                    "n_unique": s.n_unique,
                    "flags": ", ".join(f.kind for f in self.flags if f.column == s.column),
                    "reasons": "; ".join(self.reasons(s.column)),
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "rows": self.rows,
            "positives": self.positives,
            "threshold": self.threshold,
            "flagged": self.flagged,
            "columns": self.to_frame().to_dict(orient="records"),
        }


def binary_target(values: pd.Series, positive: Any = None, *, name: str = "target") -> pd.Series:
    """The outcome as 0/1 (missing stays missing).

    ``positive`` names the positive value; without it a 0/1 or boolean column is
    used as is and a two-valued text column takes its value among yes / true / won /
    converted / ... as positive. Anything else is an error that lists the values.
    """
    present = values.dropna()
    uniq = list(pd.unique(present))
    if positive is not None:
        keys = {str(v).strip().casefold() for v in uniq}
        if str(positive).strip().casefold() not in keys:
            raise DataError(
                f"column {name!r}: the positive value {positive!r} does not occur "
                f"(values: {', '.join(map(str, uniq[:10]))})"
            )
        return _indicator(values, str(positive).strip().casefold())
    if len(uniq) != 2:
        raise DataError(
            f"column {name!r}: an outcome needs exactly two values, found {len(uniq)} "
            f"({', '.join(map(str, uniq[:10]))}); pick another column or name the positive value"
        )
    names = [str(v).strip().casefold() for v in uniq]
    hits = [k for k in names if k in _POSITIVE_WORDS]
    if len(hits) != 1:
        raise DataError(
            f"column {name!r}: cannot tell which of {uniq[0]!r} / {uniq[1]!r} is the positive "
            "outcome; name it (e.g. --positive yes)"
        )
    return _indicator(values, hits[0])


def _indicator(values: pd.Series, positive_key: str) -> pd.Series:
    keys = values.astype("string").str.strip().str.casefold()
    return (keys == positive_key).astype(float).where(values.notna())


def _tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def _name_hit(name: str, words: tuple[str, ...]) -> str | None:
    toks = _tokens(name)
    return next((t for t in toks if t in words), None)


def _numeric_auc(y: np.ndarray, x: np.ndarray) -> float:
    miss = np.isnan(x)
    if miss.all():
        return 0.5
    lo, hi = np.nanmin(x) - 1.0, np.nanmax(x) + 1.0
    best = 0.5
    for fill in (lo, hi) if miss.any() else (lo,):
        auc = roc_auc_score(y, np.where(miss, fill, x))
        best = max(best, auc, 1.0 - auc)
    return float(best)


def _oof_encoding(
    y: np.ndarray, cats: pd.Series, folds: int, seed: int, smoothing: float
) -> np.ndarray:
    """Each row's smoothed category rate learnt on the other folds (honest target encoding)."""
    codes = pd.factorize(cats.fillna("\x00missing").astype(str))[0]
    rng = np.random.default_rng(seed)
    fold = rng.integers(0, folds, size=len(codes))
    out = np.empty(len(codes), dtype=float)
    n_cat = codes.max() + 1
    tot_n = np.bincount(codes, minlength=n_cat).astype(float)
    tot_pos = np.bincount(codes, weights=y, minlength=n_cat)
    for k in range(folds):
        m = fold == k
        n = tot_n - np.bincount(codes[m], minlength=n_cat)
        pos = tot_pos - np.bincount(codes[m], weights=y[m], minlength=n_cat)
        prior = y[~m].mean() if (~m).any() else y.mean()
        rate = (pos + smoothing * prior) / (n + smoothing)
        out[m] = rate[codes[m]]
    return out


def _kind(col: pd.Series) -> Literal["numeric", "categorical", "datetime"]:
    if pd.api.types.is_datetime64_any_dtype(col):
        return "datetime"
    if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
        return "categorical"
    return "numeric"


def score_column(
    y: np.ndarray, col: pd.Series, *, folds: int = 5, seed: int = 0, smoothing: float = 20.0
) -> ColumnScore:
    """Single-column ROC AUC of ``col`` against the 0/1 outcome ``y``."""
    kind = _kind(col)
    if kind == "numeric":
        auc = _numeric_auc(y, col.to_numpy(dtype=float, na_value=np.nan))
    elif kind == "datetime":
        ns = col.astype("int64").to_numpy(dtype=float)
        auc = _numeric_auc(y, np.where(col.isna().to_numpy(), np.nan, ns))
    else:
        enc = _oof_encoding(y, col, folds, seed, smoothing)
        auc = roc_auc_score(y, enc)
        auc = max(auc, 1.0 - auc)
    miss = col.isna().to_numpy()
    pos = y == 1
    return ColumnScore(
        column=str(col.name),
        kind=kind,
        auc=float(auc),
        missing_pos=float(miss[pos].mean()) if pos.any() else 0.0,
        missing_neg=float(miss[~pos].mean()) if (~pos).any() else 0.0,
        n_unique=int(col.nunique(dropna=True)),
    )


def _as_datetime(col: pd.Series) -> pd.Series | None:
    if pd.api.types.is_datetime64_any_dtype(col):
        return col if col.dt.tz is not None else col.dt.tz_localize("UTC")
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return None
    sample = col.dropna().astype(str).head(200)
    if (
        sample.empty
        or not sample.str.contains(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4}").all()
    ):
        return None
    parsed = pd.to_datetime(col, errors="coerce", utc=True, format="mixed")
    return parsed if parsed.notna().sum() >= 0.9 * col.notna().sum() else None


def check_leakage(
    df: pd.DataFrame,
    target: str,
    *,
    time_column: str | None = None,
    exclude: tuple[str, ...] | list[str] = (),
    positive: Any = None,
    threshold: float = 0.9,
    missing_gap: float = 0.5,
    after_share: float = 0.5,
    folds: int = 5,
    seed: int = 0,
) -> LeakageReport:
    """Score every column of ``df`` (except target, time column and ``exclude``)
    against ``target`` and flag the suspicious ones, each with its reason."""
    if target not in df.columns:
        raise DataError(
            f"outcome column {target!r} not in the table "
            f"(columns: {', '.join(map(str, df.columns))})"
        )
    y_all = binary_target(df[target], positive, name=target)
    keep = y_all.notna().to_numpy()
    data, y = df.loc[keep], y_all[keep].to_numpy(dtype=float)
    if y.min() == y.max():
        raise DataError(f"outcome column {target!r} has a single value; nothing to separate")
    times = None
    if time_column is not None:
        if time_column not in df.columns:
            raise DataError(f"time column {time_column!r} not in the table")
        times = _as_datetime(data[time_column])
    report = LeakageReport(target, int(len(y)), int(y.sum()), threshold)
    skip = {target, *exclude} | ({time_column} if time_column else set())
    for name in [c for c in data.columns if c not in skip]:
        col = data[name]
        as_dt = _as_datetime(col) if _kind(col) == "categorical" else None
        score = score_column(
            y, as_dt.rename(name) if as_dt is not None else col, folds=folds, seed=seed
        )
        report.scores.append(score)
        report.flags.extend(_flags(score, threshold, missing_gap))
        dt = as_dt if as_dt is not None else (col if score.kind == "datetime" else None)
        if times is not None and dt is not None:
            flag = _after_time(name, _as_datetime(dt), times, time_column or "", after_share)
            if flag:
                report.flags.append(flag)
    report.scores.sort(key=lambda s: -s.auc)
    return report


def _flags(s: ColumnScore, threshold: float, missing_gap: float) -> list[Flag]:
    flags = []
    if s.auc >= threshold:
        flags.append(
            Flag(
                s.column,
                "separates",
                f"separates the outcome alone: single-column ROC AUC {s.auc:.3f} >= {threshold:g}",
            )
        )
    gap = abs(s.missing_pos - s.missing_neg)
    if gap >= missing_gap:
        flags.append(
            Flag(
                s.column,
                "missing_pattern",
                f"filled in mostly for one class (missing in {s.missing_pos:.0%} of positives vs "
                f"{s.missing_neg:.0%} of negatives): looks recorded after the outcome",
            )
        )
    word = _name_hit(s.column, POST_OUTCOME_WORDS)
    if word:
        flags.append(
            Flag(
                s.column,
                "name",
                f"name contains {word!r}: usually known only after the outcome "
                f"(single-column ROC AUC {s.auc:.3f})",
            )
        )
    return flags


def _after_time(
    name: str, dt: pd.Series | None, times: pd.Series | None, time_column: str, share: float
) -> Flag | None:
    if dt is None or times is None:
        return None
    both = dt.notna() & times.notna()
    if not both.any():
        return None
    later = float((dt[both] > times[both]).mean())
    if later < share:
        return None
    return Flag(
        name,
        "after_time",
        f"dates fall after {time_column!r} in {later:.0%} of rows: known only later",
    )
