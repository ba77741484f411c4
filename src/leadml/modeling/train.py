"""Training: LightGBM with native categoricals, a logistic baseline, calibration
on a later slice, and a time-based rolling-origin backtest.

Time semantics. Every row is a snapshot of an entity *as of* ``as_of`` whose
features read only records before ``as_of``. A model trained for cut-off ``c``
uses only rows with ``as_of < c`` and only what was known at ``c``:

* lead readiness: labels cover ``(as_of, as_of + horizon]``; the backtest gap is at
  least the horizon, so every training label is known at the test origin;
* deal close: outcomes after ``c`` are censored at ``c`` (the deal counts as still
  open, observed for ``c - as_of`` days) by :func:`censor_deals`.

Within a training window the last ``calibration.holdout_days`` form the later
slice: a booster trained on the rows before it (minus the gap) is early-stopped
on it and the calibrator is fitted on its scores there; with
``calibration.refit`` the booster is then refitted on the whole window with the
same number of rounds. The backtest evaluates exactly this procedure, so the
reported metrics are those of the model that is shipped.

Deal close is a discrete-time competing-risks hazard: each snapshot becomes one
row per ``week_days`` period it survived (``week`` is a feature), the target
is continue / won / lost in that period (LightGBM multiclass), and
``P(won by d) = sum_k h_won(k) * S(k)`` with ``S(k) = prod_{j<k} (1 - h_won(j) - h_lost(j))``.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadml.errors import DataError, LeadmlError
from leadml.modeling.calibrate import Calibrator
from leadml.modeling.evaluate import evaluate_scores, prefixed
from leadml.modeling.spec import EstimatorSpec, ModelSpec

DAY = pd.Timedelta(days=1)
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


_TIMINGS: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "leadml_train_timings", default=None
)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the wall time of the block to phase ``name`` of the running :func:`train` call."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings = _TIMINGS.get()
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


def physical_cores() -> int:
    """Physical CPU cores available to this process (LightGBM's default thread count)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:  # psutil is optional
        n = None
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(n or available, available))


def sample_negatives(y: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Keep every positive and a ``rate`` share of the negatives (label 0), weighted ``1/rate``.

    Returns (row positions, weights); weights is None when nothing is dropped. The
    weighted sample has the same expected loss as the full set, so the booster's
    scores stay on the full-rate scale (and are calibrated on a full-rate slice anyway).
    """
    y = np.asarray(y)
    if rate >= 1.0:
        return np.arange(len(y)), None
    rng = np.random.default_rng(seed)
    keep = (y != 0) | (rng.random(len(y)) < rate)
    idx = np.flatnonzero(keep)
    weights = np.where(y[idx] == 0, 1.0 / rate, 1.0)
    return idx, weights


# ----------------------------------------------------------------- features


class CategoryEncoder:
    """Fixes the categories of text/categorical columns at fit time.

    ``transform`` returns the feature columns in spec order with categoricals as
    pandas ``category`` dtype over the fitted categories (an unseen value becomes
    missing) and everything else as float.
    """

    def __init__(self, features: list[str]) -> None:
        self.features = features

    def fit(self, X: pd.DataFrame) -> CategoryEncoder:
        missing = [f for f in self.features if f not in X.columns]
        if missing:
            raise DataError(
                f"training set lacks feature column(s) {', '.join(missing)}; "
                "add them to configs/features.yaml or remove them from the model spec"
            )
        self.categories_: dict[str, list[str]] = {}
        for f in self.features:
            col = X[f]
            if _is_categorical(col):
                # distinct values first, text after: 29M rows are a few distinct values
                values = pd.Series(pd.unique(col.dropna())).astype(str).unique().tolist()
                self.categories_[f] = sorted(values)
        return self

    @property
    def categorical(self) -> list[str]:
        return list(self.categories_)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [f for f in self.features if f not in X.columns]
        if missing:
            raise DataError(f"input lacks feature column(s): {', '.join(missing)}")
        out: dict[str, Any] = {}
        for f in self.features:
            col = X[f]
            if f in self.categories_:
                out[f] = _encode_categorical(col, self._category_index(f))
            elif col.dtype == np.float64:
                out[f] = col.to_numpy()
            else:
                out[f] = pd.to_numeric(col, errors="coerce").astype(float).to_numpy()
        return pd.DataFrame(out, index=X.index)

    def _category_index(self, f: str) -> pd.Index:
        cache = self.__dict__.setdefault("_index_cache", {})
        idx = cache.get(f)
        if idx is None or list(idx) != self.categories_[f]:
            idx = cache[f] = pd.Index(self.categories_[f])
        return idx


def _encode_categorical(col: pd.Series, categories: pd.Index) -> pd.Categorical:
    """``col`` as text over fixed ``categories`` (unseen or missing -> missing), vectorised.

    Equivalent to ``pd.Categorical(col.astype("string"), categories=categories)``:
    only the distinct values are turned into text and looked up; the rows get
    integer codes in one pass.
    """
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        uniques = pd.Series(col.cat.categories)
    else:
        codes, found = pd.factorize(col, use_na_sentinel=True)
        uniques = pd.Series(found)
    text = uniques.astype("string").astype(object).where(uniques.notna(), None)
    mapping = categories.get_indexer(pd.Index(text, dtype=object)) if len(text) else np.array([])
    mapping = np.append(np.asarray(mapping, dtype=np.int64), -1)  # code -1 (missing) -> -1
    new_codes = mapping[codes]
    return pd.Categorical.from_codes(new_codes, dtype=pd.CategoricalDtype(categories))


def _is_categorical(col: pd.Series) -> bool:
    return bool(
        isinstance(col.dtype, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(col.dtype)
        or pd.api.types.is_object_dtype(col.dtype)
    )


def feature_hash(features: list[str]) -> str:
    """A short stable hash of the feature list (logged to compare runs)."""
    return hashlib.sha256("\n".join(features).encode()).hexdigest()[:12]


def _lgb_params(est: EstimatorSpec, **extra: Any) -> dict[str, Any]:
    params = {
        "verbosity": -1,
        "seed": est.seed,
        "num_threads": est.num_threads or physical_cores(),
        "deterministic": True,
        "max_bin": est.max_bin,
    }
    params.update(est.params)
    params.update(extra)
    return params


def fit_booster(
    X: pd.DataFrame,
    y: np.ndarray,
    est: EstimatorSpec,
    *,
    valid: tuple[pd.DataFrame, np.ndarray] | None = None,
    num_boost_round: int | None = None,
    objective: dict[str, Any] | None = None,
    weight: np.ndarray | None = None,
) -> tuple[Any, int]:
    """Train a LightGBM booster; returns (booster, rounds used).

    With ``valid`` and early stopping configured, rounds stop when the validation
    loss stops improving. ``weight``: per-row weights (e.g. from :func:`sample_negatives`).
    """
    import lightgbm as lgb

    params = _lgb_params(est, **(objective or {"objective": "binary"}))
    train_set = lgb.Dataset(
        X, label=y, weight=weight, categorical_feature="auto", free_raw_data=True
    )
    rounds = num_boost_round or est.num_boost_round
    callbacks: list[Callable[..., Any]] = []
    valid_sets = []
    if valid is not None and est.early_stopping_rounds and num_boost_round is None:
        valid_sets = [lgb.Dataset(valid[0], label=valid[1], reference=train_set)]
        callbacks.append(lgb.early_stopping(est.early_stopping_rounds, verbose=False))
    booster = lgb.train(
        params, train_set, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks
    )
    used = booster.best_iteration if valid_sets and booster.best_iteration > 0 else rounds
    return booster, int(used)


def fit_baseline(
    X: pd.DataFrame,
    y: np.ndarray,
    spec: ModelSpec,
    categorical: list[str],
    sample_weight: np.ndarray | None = None,
) -> Any:
    """Logistic regression on one-hot categoricals and scaled, median-imputed numbers."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in X.columns if c not in categorical]
    cat_pipe = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    num_pipe = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]
    )
    pre = ColumnTransformer(
        [("num", num_pipe, numeric), ("cat", cat_pipe, categorical)], sparse_threshold=0
    )
    model = Pipeline(
        [
            ("pre", pre),
            ("clf", LogisticRegression(C=spec.baseline.C, max_iter=spec.baseline.max_iter)),
        ]
    )
    Xb = X.copy()
    for c in categorical:
        Xb[c] = Xb[c].astype(object).where(Xb[c].notna(), np.nan)
    model.fit(Xb, y, clf__sample_weight=sample_weight)
    return model


def baseline_proba(model: Any, X: pd.DataFrame, categorical: list[str]) -> np.ndarray:
    Xb = X.copy()
    for c in categorical:
        Xb[c] = Xb[c].astype(object).where(Xb[c].notna(), np.nan)
    return model.predict_proba(Xb)[:, 1]


# ---------------------------------------------------------- fitted models


@dataclass
class ReadinessModel:
    """Fitted lead-readiness model: encoder + booster + calibrator."""

    features: list[str]
    encoder: CategoryEncoder
    booster: Any
    calibrator: Calibrator
    rounds: int
    kind: str = "lead_readiness"

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(self.encoder.transform(X), num_iteration=self.rounds)

    def predict_proba(
        self, X: pd.DataFrame, horizon_days: float | np.ndarray | None = None
    ) -> np.ndarray:
        """Calibrated P(lead becomes SQL within the spec's horizon of its as-of)
        (``horizon_days`` is ignored: the horizon is fixed at training)."""
        return self.calibrator.predict(self.predict_raw(X))

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """TreeSHAP contributions on the log-odds scale: (rows, features + 1 bias)."""
        return self.booster.predict(
            self.encoder.transform(X), num_iteration=self.rounds, pred_contrib=True
        )


@dataclass
class DealCloseModel:
    """Fitted deal-close hazard model: encoder + multiclass booster + calibrator."""

    features: list[str]
    encoder: CategoryEncoder
    booster: Any
    calibrator: Calibrator
    rounds: int
    week_days: int
    max_weeks: int
    horizon_days: int
    shift_features: list[str] = field(default_factory=list)
    kind: str = "deal_close"
    calendar: bool = False
    # Per-period hazard calibration (plain data: {"coef": 3x3, "intercept": 3}), see
    # fit_hazard_calibration; None = the booster's hazards as they are.
    hazard_calibration: dict[str, Any] | None = None

    def hazards(self, X: pd.DataFrame) -> np.ndarray:
        """(rows, max_weeks, 3) hazards of continue / won / lost in each period
        (calibrated per period when the model has a hazard calibration)."""
        enc = self.encoder.transform(X)
        weeks = np.tile(np.arange(self.max_weeks), len(enc))
        expanded = _with_weeks(enc, weeks, self, _as_of(X) if self.calendar else None)
        h = np.asarray(self.booster.predict(expanded, num_iteration=self.rounds))
        h = apply_hazard_calibration(h, self.hazard_calibration)
        return h.reshape(len(enc), self.max_weeks, 3)

    def won_by_raw(self, X: pd.DataFrame, horizon_days: float | np.ndarray) -> np.ndarray:
        """Uncalibrated P(won by as_of + horizon_days), linear within a period."""
        return won_by(self.hazards(X), horizon_days, self.week_days)

    def predict_raw(
        self, X: pd.DataFrame, horizon_days: float | np.ndarray | None = None
    ) -> np.ndarray:
        return self.won_by_raw(X, self.horizon_days if horizon_days is None else horizon_days)

    def predict_proba(
        self, X: pd.DataFrame, horizon_days: float | np.ndarray | None = None
    ) -> np.ndarray:
        """Calibrated P(deal won by as_of + horizon_days) (default: the spec's horizon)."""
        return self.calibrator.predict(self.predict_raw(X, horizon_days))

    def contributions(
        self, X: pd.DataFrame, horizon_days: float | None = None, steps: int = 4
    ) -> np.ndarray:
        """What each feature adds to the log-odds of the uncalibrated P(won by as_of +
        horizon_days) (default: the spec's horizon), (rows, features + 1 bias): the score
        shown beside the reasons is a monotone map of that probability.

        Per period, TreeSHAP splits the booster's raw class scores exactly among the
        features. The probability is a non-linear function of every period's scores
        (softmax, hazard calibration, survival), so each feature's share of it is
        integrated along the straight path from the baseline scores (the bias and the
        period and calendar terms: what no feature of the deal says) to the deal's own
        (integrated gradients, ``steps`` midpoints). The bias is the baseline's log-odds;
        bias + shares = the deal's log-odds up to the quadrature error."""
        h_days = float(self.horizon_days if horizon_days is None else horizon_days)
        n_weeks = min(self.max_weeks, int(h_days // self.week_days) + 1)  # periods won_by reads
        enc = self.encoder.transform(X)
        weeks = np.tile(np.arange(n_weeks), len(enc))
        expanded = _with_weeks(enc, weeks, self, _as_of(X) if self.calendar else None)
        cols = list(expanded.columns)
        raw = np.asarray(
            self.booster.predict(expanded, num_iteration=self.rounds, pred_contrib=True)
        ).reshape(len(enc), n_weeks, 3, len(cols) + 1)
        index = {f: i for i, f in enumerate(self.features)}
        phi = np.zeros((len(enc), n_weeks, 3, len(self.features)))
        base = raw[..., -1].copy()
        for i, c in enumerate(cols):
            own = index.get(c.removeprefix("_shift_"))  # a shifted copy explains its input
            if own is None:  # week, _quarter_days
                base += raw[..., i]
            else:
                phi[..., own] += raw[..., i]

        def log_odds(scores: np.ndarray) -> np.ndarray:
            z = scores - scores.max(axis=-1, keepdims=True)
            hazards = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
            hazards = apply_hazard_calibration(hazards, self.hazard_calibration)
            flat = hazards.reshape(-1, n_weeks, 3)
            p = np.clip(won_by(flat, h_days, self.week_days), 1e-9, 1 - 1e-9)
            return np.log(p / (1 - p)).reshape(scores.shape[:-2])

        step = 1e-4
        shares = np.zeros((len(enc), len(self.features)))
        for lo in range(0, len(enc), 1000):  # rows x features x periods x 3 at a time
            part = slice(lo, lo + 1000)
            along = np.moveaxis(phi[part], -1, 1)  # (rows, features, periods, 3)
            for t in (np.arange(steps) + 0.5) / steps:
                point = (base[part] + t * phi[part].sum(axis=-1))[:, None]
                up, down = log_odds(point + step * along), log_odds(point - step * along)
                shares[part] += (up - down) / (2 * step * steps)
        return np.column_stack([shares, log_odds(base)])


def won_by(h: np.ndarray, horizon_days: float | np.ndarray, week_days: int) -> np.ndarray:
    """P(won by ``horizon_days``) from per-period hazards ``h`` (rows, periods, 3: continue /
    won / lost), linear within a period."""
    n_periods = h.shape[1]
    won, lost = h[:, :, 1], h[:, :, 2]
    surv = np.cumprod(np.concatenate([np.ones((len(h), 1)), 1 - won - lost], axis=1), axis=1)[
        :, :-1
    ]
    cum = np.concatenate([np.zeros((len(h), 1)), np.cumsum(won * surv, axis=1)], axis=1)
    weeks = np.clip(
        np.broadcast_to(np.asarray(horizon_days, dtype=float), (len(h),)) / week_days,
        0,
        n_periods,
    )
    lo = np.floor(weeks).astype(int)
    hi = np.minimum(lo + 1, n_periods)
    frac = weeks - lo
    rows = np.arange(len(h))
    return cum[rows, lo] * (1 - frac) + cum[rows, hi] * frac


def _with_weeks(
    enc: pd.DataFrame,
    weeks: np.ndarray,
    model: DealCloseModel | _DealShape,
    as_of: np.ndarray | None = None,
) -> pd.DataFrame:
    """Repeat encoded rows once per period index in ``weeks`` (len(weeks) multiple of rows)."""
    reps = len(weeks) // max(len(enc), 1)
    idx = np.repeat(np.arange(len(enc)), reps) if reps > 1 else np.arange(len(enc))
    out = enc.iloc[idx].reset_index(drop=True)
    out["week"] = weeks.astype(float)
    for f in model.shift_features:
        out[f"_shift_{f}"] = out[f] - out["week"] * model.week_days
    if model.calendar:
        if as_of is None:
            raise DataError(
                "this deal-close model uses the calendar: the input needs an as_of column"
            )
        out["_quarter_days"] = quarter_days(as_of[idx], weeks, model.week_days)
    return out


def _as_of(X: pd.DataFrame) -> np.ndarray:
    if "as_of" not in X.columns:
        raise DataError("this deal-close model uses the calendar: the input needs an as_of column")
    return pd.to_datetime(X["as_of"], utc=True).to_numpy()


def quarter_days(as_of: np.ndarray, weeks: np.ndarray, week_days: int) -> np.ndarray:
    """Days from the start of period ``week`` after ``as_of`` to the end of its calendar quarter
    (known at as_of: it is the calendar, not data)."""
    start = pd.DatetimeIndex(as_of, tz="UTC") if getattr(as_of, "tz", None) is None else as_of
    start = pd.DatetimeIndex(start) + pd.to_timedelta(np.asarray(weeks) * week_days, unit="D")
    q_last_month = ((start.month - 1) // 3 + 1) * 3
    next_year = start.year + (q_last_month == 12)
    next_month = q_last_month % 12 + 1
    q_end = pd.to_datetime({"year": next_year, "month": next_month, "day": 1}, utc=True)
    return ((pd.DatetimeIndex(q_end) - start) / pd.Timedelta(days=1)).to_numpy(dtype=float)


def fit_hazard_calibration(raw: np.ndarray, target: np.ndarray) -> dict[str, Any] | None:
    """Matrix scaling of the per-period hazards: a multinomial logistic regression of the
    period's outcome (continue / won / lost) on the booster's log hazards, fitted on the
    calibration slice's person-periods (later than the booster's rows).

    Why per period and not only on the cumulative P(won by h): the hazard booster stops
    early and its hazards are too flat (early-stage deals get a small won hazard in every
    week, late-stage ones too little), and how that flatness shows in P(won by h) depends
    on h. One calibrator fitted on P(won by 30/60/90 days) then maps the small values of
    short horizons to almost zero (on the simulator: P(won within 7 days) 0.015 against
    0.027 observed), which under-forecast every as-of inside a quarter. Calibrated
    hazards give P(won by h) consistent at every h. Returns None (hazards left as they
    are) when the slice lacks one of the three outcomes."""
    from sklearn.linear_model import LogisticRegression

    target = np.asarray(target)
    if len(target) == 0 or len(np.unique(target)) < 3:
        return None
    logh = np.log(np.clip(np.asarray(raw, dtype=float).reshape(-1, 3), 1e-9, 1.0))
    lr = LogisticRegression(C=1e4, max_iter=2000).fit(logh, target)
    if list(lr.classes_) != [0, 1, 2]:
        return None
    return {"coef": lr.coef_.tolist(), "intercept": lr.intercept_.tolist()}


def apply_hazard_calibration(h: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """Calibrated hazards (rows, 3) from the booster's (see :func:`fit_hazard_calibration`)."""
    if not calibration:
        return h
    w = np.asarray(calibration["coef"], dtype=float)
    b = np.asarray(calibration["intercept"], dtype=float)
    z = np.log(np.clip(np.asarray(h, dtype=float).reshape(-1, 3), 1e-9, 1.0)) @ w.T + b
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).reshape(np.shape(h))


@dataclass
class _DealShape:
    week_days: int
    shift_features: list[str]
    calendar: bool = False


# ------------------------------------------------------------------ labels


def deal_label(
    outcome: pd.Series, outcome_days: pd.Series, horizon_days: float | np.ndarray
) -> pd.Series:
    """Won by ``as_of + horizon_days``: 1 / 0, or NA when censored before the horizon."""
    h = np.asarray(horizon_days, dtype=float)
    won = (outcome == "won") & (outcome_days <= h)
    known = (outcome != "open") | (outcome_days >= h)
    return pd.Series(np.where(known, won.astype(int), -1), index=outcome.index).replace(-1, pd.NA)


def censor_deals(df: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Outcomes as they were known at ``cutoff``: later closes become open (censored at cutoff)."""
    out = df[df["as_of"] < cutoff].copy()
    known_days = (cutoff - out["as_of"]) / DAY
    late = (out["as_of"] + pd.to_timedelta(out["outcome_days"], unit="D")) > cutoff
    late |= (out["outcome"] == "open") & (out["outcome_days"] > known_days)
    out.loc[late, "outcome"] = "open"
    out.loc[late, "outcome_days"] = known_days[late]
    return out


def person_periods(
    df: pd.DataFrame, week_days: int, max_weeks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expand deal snapshots into periods: (row index, week index, target 0/1/2).

    A deal closed ``t`` days after its as-of (t in ``(k*w, (k+1)*w]``, or 0 -> k=0)
    contributes periods ``0..k`` with the outcome in period k; a censored deal
    contributes the full periods it was observed for.
    """
    days = df["outcome_days"].to_numpy(dtype=float)
    closed = (df["outcome"] != "open").to_numpy()
    event_week = np.maximum(np.ceil(days / week_days) - 1, 0).astype(int)
    observed_full = np.floor(days / week_days).astype(int)
    n_periods = np.where(closed, event_week + 1, observed_full)
    n_periods = np.clip(n_periods, 0, max_weeks)
    rows = np.repeat(np.arange(len(df)), n_periods)
    starts = np.repeat(np.cumsum(n_periods) - n_periods, n_periods)
    weeks = np.arange(len(rows)) - starts
    target = np.zeros(len(rows), dtype=int)
    outcome_code = np.where(df["outcome"].to_numpy() == "won", 1, 2)
    is_event = closed[rows] & (weeks == event_week[rows])
    target[is_event] = outcome_code[rows][is_event]
    return rows, weeks, target


# ------------------------------------------------------------------ fitting


def _check_positives(df: pd.DataFrame, positive: np.ndarray, spec: ModelSpec, where: str) -> None:
    """Refuse too few positive rows, saying how many distinct leads / deals they are: a
    lead or deal is a row in every weekly snapshot it is in, so rows overstate it."""
    n_pos = int(positive.sum())
    if n_pos < spec.min_positives:
        entity = "lead" if spec.kind == "lead_readiness" else "deal"
        what = "labelled positive" if spec.kind == "lead_readiness" else "won"
        distinct = (
            f", {df.loc[positive, spec.id_column].nunique()} distinct {entity}(s)"
            if spec.id_column in df.columns
            else ""
        )
        raise LeadmlError(
            f"{spec.name}: {where} has {n_pos} positive snapshot row(s) ({what}{distinct}) "
            f"but the spec needs at least {spec.min_positives} (min_positives in "
            f"{spec.source or 'the spec'}); load more history or widen the data window (on "
            "the simulator: simulate more leads). Lowering min_positives trains on that "
            "little: the backtest figures will be noise"
        )


def _calibration_masks(df: pd.DataFrame, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (rows to fit the booster on, later calibration slice) of one window."""
    last = df["as_of"].max()
    cal_start = last - (spec.calibration.holdout_days - 1) * DAY
    fit_mask = (df["as_of"] < cal_start - spec.backtest.gap_days * DAY).to_numpy()
    cal_mask = (df["as_of"] >= cal_start).to_numpy()
    return fit_mask, cal_mask


def fit_readiness(df: pd.DataFrame, spec: ModelSpec, progress: Progress = _quiet) -> ReadinessModel:
    """Fit the readiness model on labelled rows ``df`` (all with known labels)."""
    _check_positives(df, (df["label"] == 1).to_numpy(), spec, "the training window")
    encoder = CategoryEncoder(spec.features).fit(df)
    y_all = df["label"].to_numpy()
    fit_mask, cal_mask = _calibration_masks(df, spec)
    if y_all[fit_mask].sum() < 1 or len(np.unique(y_all[cal_mask])) < 2:
        raise LeadmlError(
            f"{spec.name}: the training window ({df['as_of'].min():%Y-%m-%d} "
            f"to {df['as_of'].max():%Y-%m-%d}) "
            f"is too short for a calibration slice of {spec.calibration.holdout_days} days after a "
            f"{spec.backtest.gap_days}-day gap; load more "
            "history or shorten calibration.holdout_days"
        )
    est = spec.estimator
    fit_pos, cal_pos = np.flatnonzero(fit_mask), np.flatnonzero(cal_mask)
    idx, w = sample_negatives(y_all[fit_pos], est.negative_rate, est.seed)
    fit_pos = fit_pos[idx]
    refit_pos, refit_w = (
        sample_negatives(y_all, est.negative_rate, est.seed + 1)
        if spec.calibration.refit
        else (np.zeros(0, dtype=np.int64), None)
    )
    progress(
        f"booster on {len(fit_pos):,} of {int(fit_mask.sum()):,} rows"
        f"{' (negatives sampled)' if w is not None else ''}, calibration on {len(cal_pos):,}"
    )
    # encode only the rows some fit reads (negatives are sampled: a fraction of the set)
    with phase("encode"):
        used = np.unique(np.concatenate([fit_pos, cal_pos, refit_pos]))
        X_used = encoder.transform(df.iloc[used])

    def X_at(pos: np.ndarray) -> pd.DataFrame:
        return X_used.iloc[np.searchsorted(used, pos)]

    Xc, yc = X_at(cal_pos), y_all[cal_pos]
    with phase("booster"):
        booster, rounds = fit_booster(X_at(fit_pos), y_all[fit_pos], est, valid=(Xc, yc), weight=w)
    with phase("calibration"):
        calibrator = Calibrator(spec.calibration.method).fit(
            booster.predict(Xc, num_iteration=rounds), yc
        )
    if spec.calibration.refit:
        progress(f"refit on all {len(df):,} rows, {rounds} rounds")
        with phase("refit"):
            booster, rounds = fit_booster(
                X_at(refit_pos), y_all[refit_pos], est, num_boost_round=rounds, weight=refit_w
            )
    return ReadinessModel(list(spec.features), encoder, booster, calibrator, rounds)


def _deal_training_rows(
    df: pd.DataFrame,
    encoder: CategoryEncoder,
    model: _DealShape | DealCloseModel,
    week_days: int,
    max_weeks: int,
) -> tuple[pd.DataFrame, np.ndarray]:
    rows, weeks, target = person_periods(df, week_days, max_weeks)
    enc = encoder.transform(df).iloc[rows].reset_index(drop=True)
    enc["week"] = weeks.astype(float)
    for f in model.shift_features:
        enc[f"_shift_{f}"] = enc[f] - enc["week"] * week_days
    if model.calendar:
        enc["_quarter_days"] = quarter_days(_as_of(df)[rows], weeks, week_days)
    return enc, target


def observed_until(df: pd.DataFrame) -> pd.Timestamp:
    """The time up to which deal outcomes are known: the latest as_of + outcome_days
    (open deals are observed until the data end)."""
    return (df["as_of"] + pd.to_timedelta(df["outcome_days"], unit="D")).max()


def fit_deal_close(
    df: pd.DataFrame,
    spec: ModelSpec,
    progress: Progress = _quiet,
    *,
    known_until: pd.Timestamp | None = None,
) -> DealCloseModel:
    """Fit the deal-close hazard on snapshots ``df`` whose outcomes are as known at ``known_until``.

    The calibration slice is the ``holdout_days`` of snapshots that end
    ``horizon_days`` before ``known_until`` (so every calibration label up to the
    headline horizon is observed, no selection by outcome); the booster fitted
    before it sees outcomes censored at the slice start. The slice fits, on that
    booster's predictions, the per-period hazard calibration
    (:func:`fit_hazard_calibration`); the calibrator of P(won by h) is then the
    identity (when the slice lacks an outcome, no hazard calibration: the calibrator
    of P(won by h) is fitted at ``eval_horizons_days`` together, as before).
    """
    t = spec.target
    _check_positives(df, (df["outcome"] == "won").to_numpy(), spec, "the training window")
    known_until = known_until if known_until is not None else observed_until(df)
    encoder = CategoryEncoder(spec.features).fit(df)
    shape = _DealShape(t.week_days, list(t.shift_features), t.calendar)
    cal_end = known_until - t.horizon_days * DAY
    cal_start = cal_end - spec.calibration.holdout_days * DAY
    cal_part = df[(df["as_of"] >= cal_start) & (df["as_of"] < cal_end)]
    fit_part = censor_deals(df[df["as_of"] < cal_start - spec.backtest.gap_days * DAY], cal_start)
    if (fit_part["outcome"] == "won").sum() < 1 or cal_part.empty:
        raise LeadmlError(
            f"{spec.name}: the training window ({df['as_of'].min():%Y-%m-%d} "
            f"to {df['as_of'].max():%Y-%m-%d}) "
            "is too short for a calibration slice of "
            f"{spec.calibration.holdout_days} days that ends "
            f"{t.horizon_days} days before the outcomes end; load more history or shorten "
            "calibration.holdout_days"
        )
    objective = {"objective": "multiclass", "num_class": 3}
    est = spec.estimator
    with phase("encode"):
        Xf, yf = _deal_training_rows(fit_part, encoder, shape, t.week_days, t.max_weeks)
        Xv, yv = _deal_training_rows(cal_part, encoder, shape, t.week_days, t.max_weeks)
    # "continue" periods (class 0) are the negatives: sampled and re-weighted like readiness
    idx, w = sample_negatives(yf, est.negative_rate, est.seed)
    progress(
        f"hazard on {len(idx):,} of {len(Xf):,} deal-weeks, "
        f"calibration slice {len(cal_part):,} snapshots"
    )
    with phase("booster"):
        booster, rounds = fit_booster(
            Xf.iloc[idx],
            yf[idx],
            est,
            valid=(Xv, yv) if len(Xv) else None,
            objective=objective,
            weight=w,
        )
    model = DealCloseModel(
        list(spec.features),
        encoder,
        booster,
        Calibrator(spec.calibration.method),
        rounds,
        t.week_days,
        t.max_weeks,
        t.horizon_days,
        list(t.shift_features),
        calendar=t.calendar,
    )
    if len(Xv):
        with phase("calibration"):
            model.hazard_calibration = fit_hazard_calibration(
                booster.predict(Xv, num_iteration=rounds), yv
            )
    p_list, y_list = [], []
    for h in sorted({h for h in t.eval_horizons_days if h <= t.horizon_days} | {t.horizon_days}):
        lab = deal_label(cal_part["outcome"], cal_part["outcome_days"], h)
        known = lab.notna().to_numpy()
        if known.any():
            p_list.append(model.won_by_raw(cal_part[known], h))
            y_list.append(lab[known].astype(int).to_numpy())
    y_cal = np.concatenate(y_list) if y_list else np.array([])
    if len(y_cal) == 0 or len(np.unique(y_cal)) < 2:
        raise LeadmlError(
            f"{spec.name}: the calibration slice has no observed wins and losses; load more history"
        )
    with phase("calibration"):
        if model.hazard_calibration is not None:
            # The hazards are calibrated, so P(won by h) is, at every h. A calibrator of
            # P(won by h) fitted on a few horizons together is one map for all of them, and
            # it shrank short horizons (0.64 of the true P(won within 7 days) on
            # synthetic.deal_frame): the identity instead.
            model.calibrator = Calibrator.identity()
        else:
            model.calibrator = model.calibrator.fit(np.concatenate(p_list), y_cal)
    if spec.calibration.refit:
        progress("refit on the whole window")
        with phase("encode"):
            Xa, ya = _deal_training_rows(df, encoder, shape, t.week_days, t.max_weeks)
        idx, w = sample_negatives(ya, est.negative_rate, est.seed + 1)
        with phase("refit"):
            model.booster, model.rounds = fit_booster(
                Xa.iloc[idx], ya[idx], est, num_boost_round=rounds, objective=objective, weight=w
            )
    return model


def fit_model(
    df: pd.DataFrame,
    spec: ModelSpec,
    progress: Progress = _quiet,
    *,
    known_until: pd.Timestamp | None = None,
) -> ReadinessModel | DealCloseModel:
    """Fit the spec's model on all rows of ``df`` (deal outcomes as known at ``known_until``)."""
    if spec.kind == "lead_readiness":
        return fit_readiness(df, spec, progress)
    return fit_deal_close(df, spec, progress, known_until=known_until)


# ---------------------------------------------------------------- backtest


def check_dataset(df: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Validate a training set's columns and normalise ``as_of`` to UTC timestamps."""
    need = [spec.id_column, "as_of", *spec.features]
    need += ["label"] if spec.kind == "lead_readiness" else ["outcome", "outcome_days"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(
            f"{spec.name} training set lacks column(s) "
            f"{', '.join(missing)}; check the feature names in "
            f"{spec.source} against configs/features.yaml"
        )
    out = df.copy(deep=False)  # columns are replaced, never written in place
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True)
    if spec.kind == "lead_readiness":
        if out["label"].isna().any():
            raise DataError(
                f"{spec.name} training set: column label has missing values; drop unlabelled rows"
            )
        out["label"] = out["label"].astype(int)
    else:
        bad = sorted(set(out["outcome"].dropna().unique()) - {"won", "lost", "open"})
        if bad or out["outcome"].isna().any():
            raise DataError(
                f"{spec.name} training set: column outcome must be won/lost/open (got {bad})"
            )
        out["outcome_days"] = out["outcome_days"].astype(float)
    if spec.history_days:
        out = out[out["as_of"] >= out["as_of"].max() - spec.history_days * DAY]
    if not _sorted_by(out, ["as_of", spec.id_column]):  # training sets come sorted: no copy
        out = out.sort_values(["as_of", spec.id_column], kind="stable")
    return out.reset_index(drop=True)


def _sorted_by(df: pd.DataFrame, cols: list[str]) -> bool:
    """Whether ``df`` is sorted by ``cols`` (lexicographically, ascending)."""
    if len(df) < 2:
        return True
    a, b = df[cols[0]].to_numpy(), df[cols[1]].to_numpy()
    ahead = a[1:] > a[:-1]
    tie = a[1:] == a[:-1]
    return bool(np.all(ahead | tie) and np.all(~tie | (b[1:] >= b[:-1])))


def _rows_between(df: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
    """Rows with ``start <= as_of < end`` of a frame sorted by ``as_of``: a slice, not a
    copy (the training set can be most of the memory at a million leads)."""
    at = df["as_of"]
    lo = 0 if start is None else int(at.searchsorted(start, side="left"))
    return df.iloc[lo : int(at.searchsorted(end, side="left"))]


def last_testable(df: pd.DataFrame, spec: ModelSpec) -> pd.Timestamp:
    """The last as-of whose headline label is fully observed.

    Readiness rows come labelled; a deal snapshot is testable only when its
    outcome was followed for the whole horizon (otherwise the known labels would
    be a selection of the deals that closed early)."""
    if spec.kind == "lead_readiness":
        return df["as_of"].max()
    return min(df["as_of"].max(), (observed_until(df) - spec.target.horizon_days * DAY).floor("D"))


def backtest_origins(df: pd.DataFrame, spec: ModelSpec) -> list[pd.Timestamp]:
    """Test-window starts, oldest first; the latest window ends at :func:`last_testable`."""
    bt = spec.backtest
    step = bt.step_days or bt.test_days
    last = last_testable(df, spec)
    latest = last - (bt.test_days - 1) * DAY
    return [latest - i * step * DAY for i in reversed(range(bt.origins))]


def _test_frame(
    model: ReadinessModel | DealCloseModel, test: pd.DataFrame, spec: ModelSpec
) -> pd.DataFrame:
    """Scored test rows with a known label at the headline horizon."""
    cols = [spec.id_column, "as_of"] + (
        [spec.segment_column] if spec.segment_column in test.columns else []
    )
    out = test[cols].copy()
    if spec.kind == "lead_readiness":
        out["label"] = test["label"].to_numpy()
    else:
        out["label"] = deal_label(
            test["outcome"], test["outcome_days"], spec.target.horizon_days
        ).to_numpy()
        for c in ("outcome", "outcome_days"):
            out[c] = test[c].to_numpy()
    out["p_model"] = model.predict_proba(test)
    return out


# per fold, also as ``fold<i>_<metric>`` in the result's metrics
FOLD_METRICS = ("roc_auc", "brier", "ece", "mean_ratio_error")


@dataclass
class Fold:
    """One backtest fold: where it cut (its test window is ``origin <= as_of < origin +
    backtest.test_days``), how big it was, how it scored."""

    origin: pd.Timestamp
    train_rows: int
    train_positives: int
    test_rows: int
    metrics: dict[str, float]
    seconds: float


@dataclass
class TrainingResult:
    """Everything a training run produces (what gets logged, registered and reported)."""

    spec: ModelSpec
    model: ReadinessModel | DealCloseModel
    baseline: Any
    folds: list[Fold]
    predictions: (
        pd.DataFrame
    )  # backtest test rows: id, as_of, fold, label, p_model, p_baseline[, p_oracle]
    metrics: dict[str, float]
    data_window: tuple[pd.Timestamp, pd.Timestamp]
    rows: int
    positives: int
    train_frame: pd.DataFrame = field(repr=False)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # wall seconds per phase (booster, calibration, refit, baseline, score, oracle, final, ...)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def feature_hash(self) -> str:
        return feature_hash(self.spec.features)

    @property
    def latest_origin(self) -> pd.Timestamp:
        return self.folds[-1].origin


def _positive_rows(df: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    return (
        (df["label"] == 1).to_numpy()
        if spec.kind == "lead_readiness"
        else (df["outcome"] == "won").to_numpy()
    )


def _baseline_fit_rows(df: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, np.ndarray]:
    """Baseline trains on the headline label (deal close: rows with a known label)."""
    if spec.kind == "lead_readiness":
        return df, df["label"].to_numpy()
    lab = deal_label(df["outcome"], df["outcome_days"], spec.target.horizon_days)
    known = lab.notna().to_numpy()
    return df[known], lab[known].astype(int).to_numpy()


def _fit_baseline_on(df: pd.DataFrame, spec: ModelSpec, encoder: CategoryEncoder) -> Any:
    """The logistic baseline on ``df``: at most ``baseline.max_rows`` rows, negatives sampled
    (readiness) and re-weighted so the fit targets the full set's class mix."""
    rows, y = _baseline_fit_rows(df, spec)
    weight = None
    cap = spec.baseline.max_rows
    if cap is not None and len(rows) > cap:
        neg = int((y == 0).sum())
        rate = min(1.0, max(cap - (len(y) - neg), cap // 10) / max(neg, 1))
        idx, weight = sample_negatives(y, rate, spec.estimator.seed + 2)
        if len(idx) > cap:  # positives alone exceed the cap: plain random sample
            idx = np.sort(np.random.default_rng(spec.estimator.seed + 2).choice(len(y), cap, False))
            weight = None
        rows, y = rows.iloc[idx], y[idx]
    with phase("baseline"):
        return fit_baseline(encoder.transform(rows), y, spec, encoder.categorical, weight)


def train(
    df: pd.DataFrame,
    spec: ModelSpec,
    *,
    capacity: int | None = None,
    truth: pd.DataFrame | None = None,
    progress: Progress = _quiet,
    final_fit: bool = True,
) -> TrainingResult:
    """Backtest the spec on ``df`` (rolling origins), then fit the final model on all of it.

    ``capacity``: leads IS can call per as-of week (readiness precision/recall at
    capacity; default from the spec's policy). ``truth``: the simulator's
    oracle probabilities (see :func:`attach_oracle`); when given, ``oracle_*``
    metrics are computed on the same test rows. ``final_fit=False`` (tuning) skips
    the final fit; the result then holds the latest fold's model.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    token = _TIMINGS.set(timings)
    import lightgbm as lgb

    try:
        result = _train(df, spec, capacity, truth, progress, final_fit)
    except lgb.basic.LightGBMError as exc:  # a parameter value LightGBM refuses
        from leadml.modeling.spec import lightgbm_error

        raise lightgbm_error(spec, exc) from None
    finally:
        _TIMINGS.reset(token)
    result.seconds = time.perf_counter() - started
    result.timings = timings
    return result


def _train(
    df: pd.DataFrame,
    spec: ModelSpec,
    capacity: int | None,
    truth: pd.DataFrame | None,
    progress: Progress,
    final_fit: bool,
) -> TrainingResult:
    started = time.perf_counter()
    df = check_dataset(df, spec)
    if df.empty:
        raise LeadmlError(f"{spec.name}: the training set is empty; check the data window")
    _check_positives(df, _positive_rows(df, spec), spec, "the labelled data")
    if spec.kind == "lead_readiness" and capacity is None:
        capacity = max(1, int(spec.policy.capacity_per_week))
    folds: list[Fold] = []
    preds: list[pd.DataFrame] = []
    notes: list[str] = []
    known_until = observed_until(df) if spec.kind == "deal_close" else None
    truth, oracle_note = oracle_truth(truth, spec)
    if oracle_note:
        notes.append(oracle_note)
    for i, origin in enumerate(backtest_origins(df, spec)):
        t0 = time.perf_counter()
        cutoff = origin - spec.backtest.gap_days * DAY
        train_part = _rows_between(df, None, cutoff)
        if spec.kind == "deal_close":
            train_part = censor_deals(train_part, origin)
        test_part = _rows_between(df, origin, origin + spec.backtest.test_days * DAY)
        n_pos = int(_positive_rows(train_part, spec).sum())
        if n_pos < spec.min_positives or test_part.empty:
            why = (
                f"{n_pos} training positives, {spec.min_positives} needed (min_positives)"
                if n_pos < spec.min_positives
                else f"{n_pos} training positives"
            )
            notes.append(
                f"fold {i} (origin {origin:%Y-%m-%d}) skipped: {why}, {len(test_part)} test rows"
                + ("" if len(test_part) else " (no test rows)")
            )
            continue
        progress(
            f"fold {i + 1}: train before {cutoff:%Y-%m-%d} ({len(train_part):,} rows), "
            f"test {origin:%Y-%m-%d} +{spec.backtest.test_days}d ({len(test_part):,} rows)"
        )
        try:
            with phase("backtest_models"):
                model = fit_model(train_part, spec, progress, known_until=origin)
        except LeadmlError as err:
            notes.append(f"fold {i} (origin {origin:%Y-%m-%d}) skipped: {err}")
            continue
        with phase("score"):
            scored = _test_frame(model, test_part, spec)
        base = _fit_baseline_on(train_part, spec, model.encoder)
        with phase("score"):
            scored["p_baseline"] = baseline_proba(
                base, model.encoder.transform(test_part), model.encoder.categorical
            )
        scored["fold"] = i
        if truth is not None:
            with phase("oracle"):
                scored = attach_oracle(
                    scored, truth, spec, model=model, test=test_part, known_until=known_until
                )
        known = scored[scored["label"].notna()].astype({"label": int})
        fold_metrics = score_metrics(known, spec, capacity)
        folds.append(
            Fold(origin, len(train_part), n_pos, len(known), fold_metrics, time.perf_counter() - t0)
        )
        preds.append(scored)
    if not folds:
        raise LeadmlError(
            f"{spec.name}: no backtest fold has enough data: each needs at least "
            f"{spec.min_positives} training positives (min_positives in {spec.source}) and "
            f"some test rows ({'; '.join(notes)}); load more history, lower min_positives "
            "in the spec, or use fewer backtest.origins or a shorter backtest.test_days"
        )
    predictions = pd.concat(preds, ignore_index=True)
    known = predictions[predictions["label"].notna()].astype({"label": int})
    metrics = score_metrics(known, spec, capacity)
    latest = known[known["fold"] == known["fold"].max()]
    metrics.update(
        prefixed(
            {
                k: v
                for k, v in score_metrics(latest, spec, capacity).items()
                if "." not in k and not k.startswith("oracle_")
            },
            "latest_",
        )
    )
    for i, fold in enumerate(folds):
        metrics.update(
            prefixed(
                {k: fold.metrics[k] for k in FOLD_METRICS if k in fold.metrics},
                f"fold{i}_",
            )
        )
    if final_fit:
        progress(f"final fit on {len(df):,} rows")
        with phase("final_model"):
            final = fit_model(df, spec, progress, known_until=known_until)
        baseline = _fit_baseline_on(df, spec, final.encoder)
    else:
        final, baseline = model, base
    return TrainingResult(
        spec=spec,
        model=final,
        baseline=baseline,
        folds=folds,
        predictions=predictions,
        metrics=metrics,
        data_window=(df["as_of"].min(), df["as_of"].max()),
        rows=len(df),
        positives=int(_positive_rows(df, spec).sum()),
        train_frame=df,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def score_metrics(scored: pd.DataFrame, spec: ModelSpec, capacity: int | None) -> dict[str, float]:
    """Model metrics (plain names), ``baseline_*`` and "
    "``oracle_*`` (+ ``model_on_oracle_rows_*``)."""
    cap = capacity if spec.kind == "lead_readiness" else None
    seg = spec.segment_column
    out = evaluate_scores(scored, score="p_model", label="label", capacity=cap, segment=seg)
    if "p_baseline" in scored.columns:
        out.update(
            prefixed(
                evaluate_scores(scored, score="p_baseline", label="label", capacity=cap),
                "baseline_",
            )
        )
    oracle = _oracle_rows(scored, spec)
    if oracle is not None and len(oracle):
        out.update(
            prefixed(
                evaluate_scores(oracle, score="p_oracle", label="y_oracle", capacity=cap), "oracle_"
            )
        )
        out.update(
            prefixed(
                evaluate_scores(oracle, score="p_model_oracle", label="y_oracle", capacity=cap),
                "model_on_oracle_rows_",
            )
        )
        out["oracle_rows"] = float(len(oracle))
        auc, o_auc = (
            out.get("model_on_oracle_rows_roc_auc", math.nan),
            out.get("oracle_roc_auc", math.nan),
        )
        out["roc_auc_vs_oracle"] = auc / o_auc if o_auc and not math.isnan(o_auc) else math.nan
    return out


def _oracle_rows(scored: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame | None:
    if "p_oracle" not in scored.columns:
        return None
    rows = scored[scored["p_oracle"].notna() & scored["y_oracle"].notna()].copy()
    rows["y_oracle"] = rows["y_oracle"].astype(int)
    return rows


def oracle_truth(
    truth: pd.DataFrame | None, spec: ModelSpec
) -> tuple[pd.DataFrame | None, str | None]:
    """The truth to judge the oracle with, and a note when it does not answer the spec's
    own question. Readiness needs ``p_opportunity_<horizon>d`` (else no oracle metrics:
    the labels are for another horizon); deal close is judged at the truth's period end
    nearest the horizon (the model re-scored at the same distance), said when that is
    more than a week away from it."""
    if truth is None:
        return None, None
    h = spec.target.horizon_days
    if spec.kind == "lead_readiness":
        have = [c for c in truth.columns if c.startswith("p_")]
        if f"p_opportunity_{h}d" not in have:
            return None, (
                f"no oracle metrics: the simulator's truth has {', '.join(have) or 'no p_ column'}"
                f", not the spec's {h}-day horizon (p_opportunity_{h}d)"
            )
        return truth, None
    days = (
        pd.to_datetime(truth["period_end"], utc=True) - pd.to_datetime(truth["as_of"], utc=True)
    ) / DAY
    key = [spec.id_column, "as_of"]
    chosen = (  # per snapshot the period end attach_oracle takes: the nearest to h
        truth[key].assign(_days=days, _gap=(days - h).abs()).sort_values("_gap")
    ).drop_duplicates(key)
    typical = float(chosen["_days"].median()) if len(chosen) else float(h)
    if abs(typical - h) <= 7:
        return truth, None
    return truth, (
        f"oracle metrics are judged about {typical:.0f} days ahead (the nearest horizon the "
        f"simulator's truth has), not at the spec's {h} days; the model is scored at the "
        "same distance for them"
    )


def attach_oracle(
    scored: pd.DataFrame,
    truth: pd.DataFrame,
    spec: ModelSpec,
    *,
    model: ReadinessModel | DealCloseModel | None = None,
    test: pd.DataFrame | None = None,
    known_until: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Add the simulator's true probabilities to scored test rows.

    Readiness truth: ``lead_id, as_of, p_opportunity_30d``; the oracle is judged on
    the row's own label. Deal truth: ``opportunity_id, as_of, period_end, p_won_by``;
    the model is re-scored at ``period_end - as_of`` and both are judged on
    "won by period_end" where that is observed. Adds ``p_oracle``,
    ``p_model_oracle`` (the model on the same question) and ``y_oracle``.
    """
    key = [spec.id_column, "as_of"]
    truth = truth.copy()
    truth["as_of"] = pd.to_datetime(truth["as_of"], utc=True)
    if spec.kind == "lead_readiness":
        col = f"p_opportunity_{spec.target.horizon_days}d"
        if col not in truth.columns:
            raise DataError(f"lead truth file has no {col} column (see oracle_truth)")
        merged = scored.merge(truth[key + [col]].drop_duplicates(key), on=key, how="left")
        merged["p_oracle"] = merged[col]
        merged["p_model_oracle"] = merged["p_model"]
        merged["y_oracle"] = merged["label"]
        return merged.drop(columns=[col])
    assert model is not None and test is not None
    t = truth[key + ["period_end", "p_won_by"]].copy()
    t["period_end"] = pd.to_datetime(t["period_end"], utc=True)
    # One period per snapshot, chosen by time only (never by outcome): among the
    # period ends whose outcome is fully observed, the one closest to the headline horizon
    # (the simulator writes as_of + 13 weeks: won within 90 days, the model's own question).
    t["days"] = (t["period_end"] - t["as_of"]) / DAY
    t = t[t["days"] > 0]
    if known_until is not None:
        t = t[t["period_end"] <= known_until]
    t["_dist"] = (t["days"] - spec.target.horizon_days).abs()
    t = t.sort_values(key + ["_dist", "days"]).drop_duplicates(key).drop(columns="_dist")
    test_keyed = test.reset_index(drop=True).merge(t, on=key, how="inner")
    merged = scored.copy()
    merged["p_oracle"] = np.nan
    merged["p_model_oracle"] = np.nan
    merged["y_oracle"] = pd.NA
    if test_keyed.empty:
        return merged
    p_model = model.predict_proba(test_keyed, test_keyed["days"].to_numpy())
    y = deal_label(test_keyed["outcome"], test_keyed["outcome_days"], test_keyed["days"].to_numpy())
    extra = test_keyed[key].assign(
        _p_or=test_keyed["p_won_by"].to_numpy(), _p_mo=p_model, _y=y.to_numpy()
    )
    merged = merged.drop(columns=["p_oracle", "p_model_oracle", "y_oracle"]).merge(
        extra, on=key, how="left"
    )
    return merged.rename(columns={"_p_or": "p_oracle", "_p_mo": "p_model_oracle", "_y": "y_oracle"})
