"""Population stability: has what the model sees tonight moved away from training?

The *reference* is fixed when the model is trained: for every numeric feature
its bin edges (training deciles) and the share of training rows per bin, plus
the share of missing values; for a categorical feature the share per category
(categories unseen in training fall into an "other" bin). The score
distribution has a reference of the same shape.

The population stability index of a current sample against it is

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

over the bins (missing included), with shares floored at ``EPS`` so that an
empty bin costs a finite amount. The usual reading: below 0.1 stable, 0.1-0.25
a moderate shift worth a look, above 0.25 a shift that changes what the model
sees. The thresholds come from ``batch.psi_warn`` / ``batch.psi_alert``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

EPS = 1e-4
# The columns of a drift report (:func:`drift_report`; the nightly run's drift output).
DRIFT_COLUMNS = [
    "model",
    "feature",
    "kind",
    "psi",
    "status",
    "rows",
    "reference_missing",
    "current_missing",
]
OTHER = "__other__"
SCORE = "score"


@dataclass
class BinnedReference:
    """Training distribution of one feature (or of the score)."""

    name: str
    kind: Literal["numeric", "categorical"]
    # numeric: inner edges e_0 < ... < e_{k-1};
    # bins are (-inf, e_0), [e_0, e_1), ..., [e_{k-1}, inf)
    # (the convention of the scoring bundle's reference)
    edges: list[float] = field(default_factory=list)
    # categorical: the categories seen in training (everything else is OTHER)
    categories: list[str] = field(default_factory=list)
    # share of non-missing training rows per bin (numeric: len(edges) + 1;
    # categorical: len(categories) + 1, the last being OTHER)
    shares: list[float] = field(default_factory=list)
    missing_share: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinnedReference:
        return cls(**dict(data))

    def shares_of(self, values: pd.Series) -> tuple[np.ndarray, float]:
        """Shares of ``values`` in this reference's bins, and the missing share."""
        n = len(values)
        if n == 0:
            return np.zeros(len(self.shares)), 0.0
        missing = values.isna().to_numpy()
        present = values[~missing]
        if self.kind == "numeric":
            x = pd.to_numeric(present, errors="coerce").to_numpy(dtype="float64")
            idx = np.searchsorted(np.asarray(self.edges, dtype="float64"), x, side="right")
            counts = np.bincount(idx, minlength=len(self.edges) + 1).astype("float64")
        else:
            pos = {c: i for i, c in enumerate(self.categories)}
            idx = present.astype(str).map(lambda v: pos.get(v, len(self.categories))).to_numpy()
            counts = np.bincount(idx.astype("int64"), minlength=len(self.categories) + 1).astype(
                "float64"
            )
        return counts / n, float(missing.sum()) / n


def reference_for(values: pd.Series, name: str | None = None, *, bins: int = 10) -> BinnedReference:
    """Build the reference of one column from training data (deciles by default).

    Booleans and numbers are numeric; strings and categoricals are categorical.
    """
    name = name or str(values.name)
    n = len(values)
    missing = float(values.isna().sum()) / n if n else 0.0
    present = values.dropna()
    if _is_numeric(values):
        x = pd.to_numeric(present, errors="coerce").astype("float64").to_numpy()
        edges: list[float] = []
        if len(x):
            qs = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])
            edges = sorted({float(q) for q in qs})
        ref = BinnedReference(name, "numeric", edges=edges)
    else:
        counts = present.astype(str).value_counts()
        cats = [str(c) for c in counts.index[: max(bins * 3, 30)]]
        ref = BinnedReference(name, "categorical", categories=cats)
    shares, _ = ref.shares_of(values)
    ref.shares = [float(s) for s in shares]
    ref.missing_share = missing
    return ref


def build_reference(
    frame: pd.DataFrame,
    features: Iterable[str],
    scores: pd.Series | np.ndarray | None = None,
    *,
    bins: int = 10,
) -> dict[str, BinnedReference]:
    """References for ``features`` of a training frame, plus the score's under ``"score"``."""
    out = {f: reference_for(frame[f], f, bins=bins) for f in features}
    if scores is not None:
        out[SCORE] = reference_for(pd.Series(np.asarray(scores, dtype="float64")), SCORE, bins=bins)
    return out


def psi(reference: BinnedReference, values: pd.Series) -> float:
    """Population stability index of ``values`` against ``reference`` (missing is a bin)."""
    actual, actual_missing = reference.shares_of(values)
    expected = np.append(np.asarray(reference.shares, dtype="float64"), reference.missing_share)
    actual = np.append(actual, actual_missing)
    if len(values) == 0 or len(expected) != len(actual):
        return float("nan")
    e = np.clip(expected, EPS, None)
    a = np.clip(actual, EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_report(
    references: Mapping[str, BinnedReference | Mapping[str, Any]],
    current: pd.DataFrame,
    *,
    model: str,
    scores: pd.Series | np.ndarray | None = None,
    warn: float = 0.1,
    alert: float = 0.25,
    unwatched: Iterable[str] = (),
) -> pd.DataFrame:
    """PSI of every referenced feature present in ``current`` (and of ``scores``).

    Columns: ``model, feature, kind ('feature' | 'score'), psi, status
    ('stable' | 'warn' | 'drift' | 'unwatched'), rows, reference_missing,
    current_missing``, sorted by PSI, highest first. A feature the reference names but
    ``current`` lacks gets status ``'missing'`` (the scoring frame lost a column);
    ``unwatched`` features (catalog ``drift: false``) keep their PSI but no status.
    """
    skip = set(unwatched)
    rows = []
    for name, ref in references.items():
        ref = ref if isinstance(ref, BinnedReference) else BinnedReference.from_dict(ref)
        if name == SCORE:
            if scores is None:
                continue
            values = pd.Series(np.asarray(scores, dtype="float64"))
            kind = "score"
        elif name in current:
            values, kind = current[name], "feature"
        else:
            rows.append(
                (
                    model,
                    name,
                    "feature",
                    float("nan"),
                    "missing",
                    0,
                    ref.missing_share,
                    float("nan"),
                )
            )
            continue
        value = psi(ref, values)
        status = (
            "unwatched"
            if name in skip
            else "drift"
            if value >= alert
            else "warn"
            if value >= warn
            else "stable"
        )
        cur_missing = float(values.isna().mean()) if len(values) else float("nan")
        rows.append((model, name, kind, value, status, len(values), ref.missing_share, cur_missing))
    out = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    return out.sort_values("psi", ascending=False, na_position="first", kind="stable").reset_index(
        drop=True
    )


def drifted(report: pd.DataFrame) -> list[str]:
    """``model:feature`` of every row whose status is ``drift`` or ``missing``."""
    bad = report.loc[report["status"].isin(["drift", "missing"])]
    return [f"{m}:{f}" for m, f in zip(bad["model"], bad["feature"], strict=True)]


def _is_numeric(values: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values))
