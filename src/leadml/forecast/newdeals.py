"""Revenue from deals not yet created: a run-rate model.

For a forecast as of T of a period ``[S, E)`` (h = E - T), look at the same moment of
the latest ``lookback_periods`` earlier periods that have ended (E_k = E shifted back
k periods, E_k <= T; for a period far ahead, k starts further back): count the deals
first seen in ``[E_k - h, E_k)`` and won in ``[S_k, E_k)``, and keep their amounts. A
window that would start before the data (a period far ahead) starts after the data's
first week instead, if that still holds the creation of about three in four of the
period's wins: if the period starts at least the 75th percentile of creation-to-win
time (of the wins seen so far) after it. The number of such deals in the forecast
period is modelled as Poisson with the average count (per group when a grouping is
asked), and their amounts as draws from the segment's kept amounts (or, when fewer
than ``min_amounts`` were kept, from every deal won in the segment in the lookback
window), the same for every group so that the groups add up to the total. Only
outcomes before E_k <= T are read, so the estimate is point-in-time. Its calibration
is checked in the backtest (predicted vs actual new-deal revenue, see
:mod:`leadml.forecast.backtest`).

A growing (or shrinking) company creates more (fewer) deals now than a year ago, and
an average over earlier periods lags that. With ``velocity_days`` > 0 each segment's
count is scaled by its deal-creation velocity: deals first seen per day in the
``velocity_days`` before T over the average of the same in the ``velocity_days``
before each earlier window's reference point, E_k - h or, when later, S_k minus that
75th percentile of creation-to-win time (a window cut by the start of the data counts
per day of data; the deals first seen in the data's first week, the book open when it
began, are not counted as created then). For the current period, and any that starts
within that percentile after T, the reference point is E_k - h, the same moment before
the window as T is before the forecast's. For a period further ahead it is where the
earlier period's wins began to be created, not E_k - h: the rate of creation now is
carried forward as it is, not compounded over the quarters in between (a company that
ramped up since E_k - h would otherwise be extrapolated to keep ramping).

Carrying today's rate forward is a guess that ages: the further ahead the period, the
more the rate of deal creation can move before its deals are created. The rates of
all segments (and groups) therefore share a level factor whose log has the sd
``level_sd = s_q * sqrt(d)``: a random walk with ``s_q`` per quarter, ``d`` the
distance in quarters from T to the middle of the span in which the period's new wins
are created (``[max(T, S - lag), E)``, lag = that 75th percentile). ``s_q`` is what
the quarter-to-quarter changes of log(deals created per calendar quarter), over the
latest ``_LEVEL_QUARTERS`` complete quarters before T, show beyond the Poisson noise of
the counts (``E[dlog^2] - E[1/N_t + 1/N_t+1]``, N plus one half so that an empty quarter
counts; drift included, since the rate is not
extrapolated; capped at 1). For the current quarter d is at most half a quarter and new
deals are a small share, so it matters little there; four quarters ahead it is most of
the spread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadml.forecast.deals import GROUP_COLUMN, DealHistory, Period, quarter_of


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
    level_sd: float = 0.0  # sd of the log of the rates' shared level factor at the period
    level_sd_quarter: float = 0.0  # its sd per quarter of distance (s_q)

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
    velocity_days: float = 0.0,
) -> NewDealsEstimate:
    """The run-rate estimate of deals created at or after ``as_of`` and won in ``period``.

    Modelled per segment (amounts differ most by segment): one independent part per
    segment, for the total and within each group; each segment's count scaled by its
    deal-creation velocity when ``velocity_days`` > 0 (see the module docstring).
    """
    h = period.end - as_of
    o = history.outcomes_before(as_of)
    found: list[pd.DataFrame] = []
    pools: list[pd.DataFrame] = []
    starts: list[pd.Timestamp] = []
    n = 0
    first = o["first_seen"].min() if len(o) else as_of
    lag = _creation_to_win(o, first)
    k = 0
    while n < lookback_periods:  # the latest lookback_periods periods that have ended
        k += 1
        past = period.earlier(k)
        begin = past.end - h
        if begin < first:  # the window would start before the data began
            if past.start - lag < first + _BOOK_DAYS:  # and miss many of its wins
                break  # so would every earlier one
            begin = first + _BOOK_DAYS
        if past.end > as_of:  # not over yet (a period far ahead looks further back)
            continue
        n += 1
        created = (o["first_seen"] >= begin) & (o["first_seen"] < past.end)
        won = (o["won_at"] >= past.start) & (o["won_at"] < past.end)
        found.append(o[created & won].assign(_k=n))
        pools.append(o[won])
        starts.append(max(past.end - h, past.start - lag))
    if n == 0:
        return NewDealsEstimate([], {}, 0)
    new = pd.concat(found, ignore_index=True)
    pool = pd.concat(pools, ignore_index=True)
    growth = _velocity_growth(o, as_of, starts, first, velocity_days)

    def segment_amounts(seg: str) -> np.ndarray:
        amounts = new.loc[new["segment"] == seg, "won_amount"].to_numpy(dtype=float)
        if len(amounts) < min_amounts:  # too few: every deal won in the segment then
            seg_pool = pool[pool["segment"] == seg]
            amounts = (seg_pool if len(seg_pool) else pool)["won_amount"].to_numpy(dtype=float)
        return amounts

    # One amount sample per segment, shared by the total and every group: a group's
    # count is its own, so the groups' expected new revenue adds up to the total's.
    amounts_of = {seg: segment_amounts(seg) for seg in set(new["segment"].dropna())}

    def parts(rows: pd.DataFrame) -> list[NewDeals]:
        out = []
        for seg in sorted(set(rows["segment"].dropna())):
            mine = rows[rows["segment"] == seg]
            counts = np.bincount(mine["_k"].to_numpy(int), minlength=n + 1)[1:]
            rate = growth.get(seg, 1.0) * len(mine) / n
            out.append(NewDeals(rate, amounts_of[seg], n, _dispersion(counts)))
        return out

    s_q = _level_sd_per_quarter(o, first, as_of)
    created_from = max(as_of, period.start - lag)
    distance = ((created_from + (period.end - created_from) / 2) - as_of) / _QUARTER
    level_sd = min(s_q * float(np.sqrt(distance)), _MAX_LEVEL_SD)
    est = NewDealsEstimate(parts(new), {}, n, level_sd, s_q)
    if by is not None:
        col = GROUP_COLUMN[by]
        for value in sorted(set(new[col].dropna())):
            est.groups[str(value)] = parts(new[new[col] == value])
    return est


def _creation_to_win(o: pd.DataFrame, first: pd.Timestamp) -> pd.Timedelta:
    """The 75th percentile of first-seen-to-won time of the wins in ``o`` that were created
    after the data's first week (0 when there are none)."""
    wins = o[o["won_at"].notna() & (o["first_seen"] >= first + _BOOK_DAYS)]
    if wins.empty:
        return pd.Timedelta(0)
    return pd.Timedelta((wins["won_at"] - wins["first_seen"]).quantile(_LAG_QUANTILE))


def _velocity_growth(
    o: pd.DataFrame,
    as_of: pd.Timestamp,
    starts: list[pd.Timestamp],
    first: pd.Timestamp,
    days: float,
) -> dict[str, float]:
    """Per segment: deals first seen in the ``days`` before ``as_of`` over the mean of the
    same before each of ``starts`` (counted per day of data, times ``days``), each side
    plus ten pseudo-deals (empty when ``days`` is 0 or no start has four weeks of data
    before it).

    The deals first seen in the data's first week are the book open when the data
    begins (created earlier), not that week's creations: the clock starts after it."""
    if days <= 0 or o.empty:
        return {}
    span = pd.Timedelta(days=days)
    begin_data = first + _BOOK_DAYS
    seen, seg = o["first_seen"], o["segment"]

    def per_day(end: pd.Timestamp) -> pd.Series:
        begin = max(end - span, begin_data)
        covered = (end - begin) / pd.Timedelta(days=1)
        return seg[(seen >= begin) & (seen < end)].value_counts() / covered

    usable = [t for t in starts if t - begin_data >= _MIN_VELOCITY_SPAN]
    if not usable:
        return {}
    now = per_day(as_of) * days
    then = pd.concat([per_day(t) for t in usable], axis=1).fillna(0.0).mean(axis=1) * days
    # pseudo-deals on both sides: a segment with a handful of deals keeps about its count
    m = _VELOCITY_PRIOR_DEALS
    return {str(k): float((now.get(k, 0.0) + m) / (v + m)) for k, v in then.items()}


def _level_sd_per_quarter(o: pd.DataFrame, first: pd.Timestamp, as_of: pd.Timestamp) -> float:
    """s_q of the module docstring: from the deals first seen per complete calendar
    quarter after the data's first week and before ``as_of``, each count plus one half
    (0 with fewer than three such quarters)."""
    q = quarter_of(first + _BOOK_DAYS)
    if q.start < first + _BOOK_DAYS:
        q = q.shifted(-1)
    seen = o["first_seen"]
    counts = []
    while q.end <= as_of:
        counts.append(int(((seen >= q.start) & (seen < q.end)).sum()))
        q = q.shifted(-1)
    # half a deal added: a quarter without deals is the most volatile history, not none
    c = np.asarray(counts[-(_LEVEL_QUARTERS + 1) :], dtype=float) + 0.5
    if len(c) < 3:
        return 0.0
    change = np.diff(np.log(c))
    noise = 1.0 / c[:-1] + 1.0 / c[1:]
    return float(np.sqrt(max(float(np.mean(change**2) - np.mean(noise)), 0.0)))


_BOOK_DAYS = pd.Timedelta(days=7)
_LEVEL_QUARTERS = 8  # quarter-to-quarter changes s_q is measured on (at most)
_QUARTER = pd.Timedelta(days=365.25 / 4)
# Cap of level_sd: a factor of e (2.7x) per sd already says "could be anything"; beyond
# it the mixture's grid would stretch to cover e^(4 sd) and coarsen the open deals' grid.
_MAX_LEVEL_SD = 1.0
_LAG_QUANTILE = 0.75
_MIN_VELOCITY_SPAN = pd.Timedelta(days=28)
_VELOCITY_PRIOR_DEALS = 10.0


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
