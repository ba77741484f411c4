"""The deal-close model as the forecast's probability source, point in time at any as-of.

:class:`ModelProbabilities` answers ``(con, as_of, period_end) -> opportunity_id,
p_won_by`` for every deal open at ``as_of``: it rebuilds the deals open then from
``opportunity_history`` rows with ``ts < as_of`` (:meth:`DealHistory.snapshot`),
computes their opportunity features as of ``as_of`` with the offline engine (each
value reads only records with ``ts < as_of``) and scores them with the model's
``won_by(features, horizon_days)``. So the forecast can replay the model on earlier
quarters at the same moment and measure the shared quarter shock (``tau``) on the
model's own past forecasts, not only on tonight's.

Features are computed once per as-of date (cached) and probabilities once per
(as-of, period end); an earlier as-of costs one feature query over the few hundred
deals open then and one booster pass.

Time semantics: nothing at or after ``as_of`` is read for an answer as of
``as_of``. The model itself is fixed: when it was trained on data after an earlier
as-of (the nightly champion replayed on past quarters), its answers there are
in-sample, which can only make the measured shock smaller (see docs/forecast.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd

from leadml.forecast.deals import DealHistory, ForecastError, as_utc

DAY = pd.Timedelta(days=1)


class WonByModel(Protocol):
    """What the source needs from a deal-close model (the nightly ``DealChampion``)."""

    def won_by(self, features: pd.DataFrame, horizon_days: np.ndarray) -> np.ndarray:
        """Calibrated P(won within ``horizon_days`` of each row's as-of time)."""
        ...


class ModelProbabilities:
    """P(won before ``period_end``) per deal open at ``as_of``, from a deal-close model.

    ``latest``: the newest as-of it may answer for (the nightly run's date; None =
    any date the data allows). ``known``: already computed features for one as-of
    date, ``(as_of, frame)`` (the nightly run passes tonight's, so they are not
    recomputed). ``name`` is shown as the forecast's probability source.
    """

    def __init__(
        self,
        model: WonByModel,
        catalog: Any,
        history: DealHistory,
        *,
        latest: pd.Timestamp | None = None,
        known: tuple[pd.Timestamp, pd.DataFrame] | None = None,
        name: str = "deal_close model",
    ) -> None:
        self.model = model
        self.catalog = catalog
        self.history = history
        self.latest = as_utc(latest) if latest is not None else None
        self.name = name
        self._features: dict[pd.Timestamp, pd.DataFrame] = {}
        self._probs: dict[tuple[pd.Timestamp, pd.Timestamp], pd.DataFrame] = {}
        if known is not None:
            self._features[as_utc(known[0])] = known[1]

    def features_at(self, con: duckdb.DuckDBPyConnection, as_of: pd.Timestamp) -> pd.DataFrame:
        """Opportunity features as of ``as_of`` for every deal open then (cached per date)."""
        t = as_utc(as_of)
        if t not in self._features:
            self.prefetch(con, [t])
        return self._features[t]

    def prefetch(self, con: duckdb.DuckDBPyConnection, dates: Iterable[pd.Timestamp]) -> None:
        """Compute the features of several as-of dates in one offline-engine query (the
        backtest asks for hundreds of dates). Each row still reads only ``ts < its as_of``."""
        from leadml.features.offline import compute_features

        todo = sorted({as_utc(d) for d in dates} - set(self._features))
        for t in todo:
            self._check(t)
        spines = [self.history.snapshot(t)[["opportunity_id"]].assign(as_of=t) for t in todo]
        spines = [s for s in spines if len(s)]
        if spines:
            spine = pd.concat(spines, ignore_index=True)
            feats = compute_features(con, self.catalog, "opportunity", spine)
            for t, part in feats.groupby("as_of", sort=False):
                self._features[as_utc(t)] = part.reset_index(drop=True)
        for t in todo:
            if t not in self._features:  # no deal open then
                self._features[t] = pd.DataFrame(columns=["opportunity_id", "as_of"])

    def _check(self, t: pd.Timestamp) -> None:
        if self.latest is not None and t > self.latest:
            raise ForecastError(
                f"the deal-close model source answers as of {self.latest.date()} at the "
                f"latest, not {t.date()}: later dates would read data after the run's date"
            )

    def __call__(
        self, con: duckdb.DuckDBPyConnection, as_of: pd.Timestamp, period_end: pd.Timestamp
    ) -> pd.DataFrame:
        """``opportunity_id, p_won_by`` = P(won at a time < ``period_end``) per deal open
        at ``as_of``, reading only records with ``ts < as_of``."""
        t, end = as_utc(as_of), as_utc(period_end, "period end")
        self._check(t)
        key = (t, end)
        if key not in self._probs:
            feats = self.features_at(con, t)
            n = len(feats)
            if n:
                horizon = np.full(n, max((end - t) / DAY, 0.0))
                p = np.asarray(self.model.won_by(feats, horizon), dtype="float64")
            else:
                p = np.zeros(0)
            self._probs[key] = pd.DataFrame(
                {"opportunity_id": feats["opportunity_id"].to_numpy(), "p_won_by": p}
            )
        return self._probs[key]
