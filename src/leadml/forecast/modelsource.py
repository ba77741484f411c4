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

A period end inside one of the model's 7-day periods (counted from ``as_of``): the model
knows the chance of a win in that period, not when in it. Linear interpolation (a win
equally likely on every day) missed that deals are pulled in before a quarter boundary:
on the simulator, where a deal won in the week that holds the boundary is booked before
it, the open deals were under-forecast more the closer the quarter end (0.69 of the
truth's P(won before the end) at two weeks, with the calendar hazard). So the share of
that period's wins that fall before the boundary is measured on the deal history, in
the same ``r`` days before the same boundary of earlier periods (wins before ``as_of``
only), shrunk to the linear ``r / 7``:
``P(by end) = P(by full periods) + share * (P(by one period more) - P(by full periods))``.

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

from leadml.forecast.deals import DealHistory, ForecastError, as_utc, lookback_months

DAY = pd.Timedelta(days=1)
# Earlier period boundaries the in-period win share is measured on, and the weight (in
# wins) of the linear share it is shrunk to.
SHARE_LOOKBACK_PERIODS = 8
SHARE_PRIOR_WINS = 5.0


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
    ``week_days``: the model's period length; ``period_months``: the forecast periods'
    length (the earlier boundaries the in-period win share is measured on);
    ``boundary_share``: take the measured share of the period that holds a period end
    (False: the linear share, as before).
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
        week_days: int = 7,
        period_months: int = 3,
        boundary_share: bool = True,
    ) -> None:
        self.model = model
        self.week_days = int(week_days)
        self.period_months = int(period_months)
        self.measure_share = bool(boundary_share)
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
                p = self._won_before(feats, t, end)
            else:
                p = np.zeros(0)
            self._probs[key] = pd.DataFrame(
                {"opportunity_id": feats["opportunity_id"].to_numpy(), "p_won_by": p}
            )
        return self._probs[key]

    def _won_before(self, feats: pd.DataFrame, t: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
        """P(won before ``end``) per row: whole model periods up to ``end``, plus the
        measured share (:meth:`boundary_share`) of the period that holds ``end``."""
        n, week = len(feats), float(self.week_days)
        days = max((end - t) / DAY, 0.0)
        full = np.floor(days / week + 1e-9) * week
        rest = days - full
        if rest <= 1e-9 or not self.measure_share:
            return np.asarray(self.model.won_by(feats, np.full(n, days)), dtype="float64")
        lo = np.asarray(self.model.won_by(feats, np.full(n, full)), dtype="float64")
        hi = np.asarray(self.model.won_by(feats, np.full(n, full + week)), dtype="float64")
        return lo + self.boundary_share(t, end, rest) * np.maximum(hi - lo, 0.0)

    def boundary_share(self, as_of: pd.Timestamp, boundary: pd.Timestamp, days: float) -> float:
        """The share of a model period's wins that fall in its first ``days`` days when a
        period boundary follows them: over the earlier boundaries ``boundary - k periods``
        (k = 1..8) whose windows ``[B_k - days, B_k - days + week)`` end by ``as_of``, wins
        in ``[B_k - days, B_k)`` / wins in the window, shrunk to ``days / week`` with the
        weight of 5 wins. Reads only wins before ``as_of``."""
        week = pd.Timedelta(days=self.week_days)
        lead = pd.Timedelta(days=days)
        won = self.history.won_at.dropna()
        won = won[won < as_of]
        before = total = 0
        for k in range(1, SHARE_LOOKBACK_PERIODS + 1):
            b_k = boundary - pd.DateOffset(months=lookback_months(self.period_months) * k)
            start = b_k - lead
            if start + week > as_of:
                continue
            total += int(((won >= start) & (won < start + week)).sum())
            before += int(((won >= start) & (won < b_k)).sum())
        linear = days / self.week_days
        return float((before + SHARE_PRIOR_WINS * linear) / (total + SHARE_PRIOR_WINS))
