"""Revenue from deals not yet created: a run-rate model.

For a forecast as of T of a period ``[S, E)`` (h = E - T), look at the same
moment of the previous ``lookback_periods`` periods (E_k = E shifted back k
periods, only those with E_k <= T): count the deals first seen in
``[E_k - h, E_k)`` and won in ``[S_k, E_k)``, and keep their amounts. The number
of such deals in the forecast period is modelled as Poisson with the average
count (per group when a grouping is asked), and their amounts as draws from the
kept amounts (or, when fewer than ``min_amounts`` were kept, from every deal won
in the lookback window of that group). Only outcomes before E_k <= T are read,
so the estimate is point-in-time. Its calibration is checked in the backtest
(predicted vs actual new-deal revenue, see :mod:`leadml.forecast.backtest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadml.forecast.deals import GROUP_COLUMN, DealHistory, Period


@dataclass
class NewDeals:
    """Expected new won deals of one group: Poisson ``rate`` and an amount sample."""

    rate: float
    amounts: np.ndarray
    periods_seen: int
    dispersion: float = 0.0  # count variance = rate + dispersion * rate^2

    @property
    def expected(self) -> float:
        return float(self.rate * self.amounts.mean()) if len(self.amounts) else 0.0


@dataclass
class NewDealsEstimate:
    """Per segment parts (independent) of the total and of each group."""

    total: list[NewDeals]
    groups: dict[str, list[NewDeals]] = field(default_factory=dict)
    periods_seen: int = 0

    @staticmethod
    def expected(parts: list[NewDeals]) -> float:
        return float(sum(p.expected for p in parts))


def new_deals(
    history: DealHistory,
    *,
    as_of: pd.Timestamp,
    period: Period,
    by: str | None = None,
    lookback_periods: int = 4,
    min_amounts: int = 10,
) -> NewDealsEstimate:
    """The run-rate estimate of deals created at or after ``as_of`` and won in ``period``.

    Modelled per segment (amounts differ most by segment): one independent part per
    segment, for the total and within each group.
    """
    h = period.end - as_of
    o = history.outcomes_before(as_of)
    found: list[pd.DataFrame] = []
    pools: list[pd.DataFrame] = []
    n = 0
    first = o["first_seen"].min() if len(o) else as_of
    for k in range(1, lookback_periods + 1):
        past = period.shifted(k)
        if past.end > as_of or past.end - h < first:  # not over yet, or before the data began
            continue
        n += 1
        created = (o["first_seen"] >= past.end - h) & (o["first_seen"] < past.end)
        won = (o["won_at"] >= past.start) & (o["won_at"] < past.end)
        found.append(o[created & won].assign(_k=n))
        pools.append(o[won])
    if n == 0:
        return NewDealsEstimate([], {}, 0)
    new = pd.concat(found, ignore_index=True)
    pool = pd.concat(pools, ignore_index=True)

    def parts(rows: pd.DataFrame) -> list[NewDeals]:
        out = []
        for seg in sorted(set(rows["segment"].dropna())):
            mine = rows[rows["segment"] == seg]
            amounts = mine["won_amount"].to_numpy(dtype=float)
            if (
                len(amounts) < min_amounts
            ):  # too few: every deal won in the segment in those periods
                seg_pool = pool[pool["segment"] == seg]
                amounts = (seg_pool if len(seg_pool) else pool)["won_amount"].to_numpy(dtype=float)
            counts = np.bincount(mine["_k"].to_numpy(int), minlength=n + 1)[1:]
            out.append(NewDeals(len(mine) / n, amounts, n, _dispersion(counts)))
        return out

    est = NewDealsEstimate(parts(new), {}, n)
    if by is not None:
        col = GROUP_COLUMN[by]
        for value in sorted(set(new[col].dropna())):
            est.groups[str(value)] = parts(new[new[col] == value])
    return est


def _dispersion(counts: np.ndarray) -> float:
    """Method-of-moments negative-binomial dispersion of per-period counts (0 = Poisson);
    needs three periods."""
    if len(counts) < 3 or counts.mean() <= 0:
        return 0.0
    m, var = float(counts.mean()), float(counts.var(ddof=1))
    # Counts as spread as a Poisson's give var == m up to rounding (e.g. 5e-16 for
    # counts 0, 0, 1): that is no over-dispersion, not a tiny positive one.
    if var - m <= 1e-9 * m:
        return 0.0
    return (var - m) / (m * m)


def actual_new_revenue(history: DealHistory, *, as_of: pd.Timestamp, period: Period) -> float:
    """What the new-deals part should have predicted: deals first seen at or after
    ``as_of`` and won in ``period`` (reads outcomes up to the period end; for evaluation)."""
    o = history.outcomes
    rows = o[
        (o["first_seen"] >= as_of) & (o["won_at"] >= period.start) & (o["won_at"] < period.end)
    ]
    return float(rows["won_amount"].sum())
