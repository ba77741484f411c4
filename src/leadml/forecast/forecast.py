"""The revenue forecast of a period, as of a moment, with its uncertainty.

Revenue of a period ``[S, E)`` as of T is three parts:

- **won**: deals won in ``[S, T)`` (certain), at their amount on the win row;
- **open**: every deal open at T (state rebuilt from ``opportunity_history``
  rows with ``ts < T``) is won inside the period with probability p_i and
  then books its latest amount; p_i comes from the probability source (the
  deal-close model or, by default, :class:`EmpiricalCloseRates`);
- **new**: deals not yet created, from the run-rate model (:mod:`.newdeals`).

The distribution of the sum is exact on a grid (:mod:`.distribution`); its error
bound is reported. Targets come from the ``targets`` table (prorated by days
when a target period straddles the forecast period).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from leadml.config import ForecastConfig, Vocabulary
from leadml.errors import LeadmlError
from leadml.forecast import distribution as dist
from leadml.forecast.deals import (
    GROUP_COLUMN,
    GROUPS,
    DealHistory,
    DealProbabilities,
    EmpiricalCloseRates,
    ForecastError,
    Period,
    TooLittleHistory,
    as_utc,
    monday_before,
    numeric_column,
    parse_period,
    same_moment,
    weekly_rhythm,
)
from leadml.forecast.newdeals import NewDeals, NewDealsEstimate, new_deals


@dataclass
class GroupForecast:
    """The forecast of one group (or of everything, ``group == "all"``)."""

    group: str
    won: float
    open_expected: float
    new_expected: float
    expected: float
    p10: float
    p50: float
    p90: float
    target: float
    gap_to_target: float  # target - expected (positive = short of target)
    p_reach_target: float
    open_pipeline: float  # sum of open deals' latest amounts
    # open deals expected to close in the period (before its end, overdue included; for a
    # period that starts after the as-of date, only expected close dates inside it)
    period_pipeline: float
    remaining_target: float  # max(target - won, 0)
    coverage: float  # period_pipeline / remaining_target
    open_deals: int
    error_bound: float  # grid rounding bound on every quantile


@dataclass
class ForecastResult:
    """A period's forecast as of a moment, in total and per group."""

    period: Period
    as_of: pd.Timestamp
    by: str | None
    probability_source: str
    total: GroupForecast
    groups: list[GroupForecast]
    deals: pd.DataFrame  # open deals: opportunity_id, stage, amount, p_won_by, expected, groups
    distribution: dist.RevenueDistribution
    new_deals_periods: int
    monte_carlo: dict[str, float] = field(default_factory=dict)
    shock_sd: float = 0.0  # sd of the shared logit-scale shock of open deals
    shock_periods: int = 0  # earlier periods it was measured on
    new_level_sd: float = 0.0  # sd of the log of the new deals' shared level factor
    notes: list[str] = field(default_factory=list)  # what the reader should know first

    def table(self) -> pd.DataFrame:
        """One row per group, the total last."""
        return pd.DataFrame([asdict(g) for g in [*self.groups, self.total]])

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": self.period.label,
            "period_start": self.period.start.isoformat(),
            "period_end": self.period.end.isoformat(),
            "as_of": self.as_of.isoformat(),
            "by": self.by,
            "probability_source": self.probability_source,
            "new_deals_model": f"run-rate over {self.new_deals_periods} earlier period(s)",
            "total": asdict(self.total),
            "groups": [asdict(g) for g in self.groups],
            "notes": list(self.notes),
            "monte_carlo": self.monte_carlo,
            "shock_sd": self.shock_sd,
            "shock_periods": self.shock_periods,
            "new_level_sd": self.new_level_sd,
        }


ProbabilitiesAt = Callable[[pd.Timestamp, Period], pd.DataFrame]


def empirical_rates(
    history: DealHistory, cfg: ForecastConfig, period_months: int = 3
) -> EmpiricalCloseRates:
    """The empirical close rates as the config sets them (the default probability source)."""
    return EmpiricalCloseRates(
        history,
        lookback_periods=cfg.lookback_periods,
        age_edges=tuple(cfg.age_buckets_days),
        prior_strength=cfg.prior_strength,
        period_months=period_months,
        align_weeks=weekly_rhythm(period_months),
    )


def probability_source(
    source: DealProbabilities | pd.DataFrame | None,
    con: duckdb.DuckDBPyConnection,
    history: DealHistory,
    cfg: ForecastConfig,
    period_months: int = 3,
) -> tuple[ProbabilitiesAt, str]:
    """A function (as_of, period) -> P(won inside the period) per deal open at as_of.

    None = the empirical close rates; a DataFrame answers only for the forecast
    itself (no spread calibration on earlier periods); a callable
    ``(con, as_of, period_end)`` gives P(won before period_end), and for a period
    that starts after as_of the forecast asks for both ends and takes the difference.
    """
    if source is None:
        source = empirical_rates(history, cfg, period_months)
    if isinstance(source, pd.DataFrame):
        frame = source

        def given(as_of: pd.Timestamp, per: Period) -> pd.DataFrame:
            if as_of >= per.start:  # a deal open at as_of was not won before the start
                return frame
            if START_COLUMN in frame.columns:
                return _within(frame, frame, START_COLUMN)
            raise ForecastError(
                f"period {per.label} starts on {per.start.date()}, after --as-of "
                f"{as_of.date()}: P(won by the period end) would also count deals won "
                "before the period; add a column p_won_by_period_start "
                "(P(won before the period start)) to the probabilities"
            )

        return given, "given"
    name = str(getattr(source, "name", getattr(source, "__name__", type(source).__name__)))
    if isinstance(source, EmpiricalCloseRates):
        empirical = source

        def rates(as_of: pd.Timestamp, per: Period) -> pd.DataFrame:
            return empirical(con, as_of, per.end, per.start)

        return rates, name
    func = source

    def call(as_of: pd.Timestamp, per: Period) -> pd.DataFrame:
        probs = func(con, as_of, per.end)
        if as_of >= per.start:
            return probs
        early = func(con, as_of, per.start)
        return _within(probs, early, _prob_column(early))

    return call, name


START_COLUMN = "p_won_by_period_start"
# P(won by the start) may exceed P(won by the end) by rounding (or a calibrator's
# plateau); a larger excess means the source is not a cumulative probability.
_MONOTONE_TOLERANCE = 1e-3


def _within(by_end: pd.DataFrame, by_start: pd.DataFrame, start_col: str) -> pd.DataFrame:
    """P(won inside [S, E)) = P(won before E) - P(won before S) per deal, for a period that
    starts after the as-of date: a deal likely to be won before S is not counted in it.
    A deal missing from ``by_start`` is taken as not winnable before S."""
    col = _prob_column(by_end)
    if "opportunity_id" not in by_start.columns:
        raise ForecastError("deal probabilities need an opportunity_id column")
    what = "deal probabilities"
    start = by_start.drop_duplicates("opportunity_id").set_index("opportunity_id")
    out = by_end.drop_duplicates("opportunity_id").set_index("opportunity_id")
    before = numeric_column(start, start_col, what).reindex(out.index).fillna(0.0)
    within = numeric_column(out, col, what) - before
    bad = within < -_MONOTONE_TOLERANCE
    if bad.any():
        oid = within.index[bad.to_numpy()][0]
        raise ForecastError(
            f"deal probabilities fall over time for {int(bad.sum())} deal(s) (e.g. {oid}: "
            f"P(won before the period end) {out.loc[oid, col]:.4f} < P(won before the "
            f"period start) {before.loc[oid]:.4f}); give cumulative probabilities "
            "P(won before a date)"
        )
    out = out.assign(**{col: within.clip(0.0, 1.0)})
    if start_col in out.columns and start_col != col:
        out = out.drop(columns=start_col)
    return out.reset_index()


def shock_sd(
    probs_at: ProbabilitiesAt,
    history: DealHistory,
    *,
    as_of: pd.Timestamp,
    period: Period,
    lookback_periods: int,
) -> tuple[float, int]:
    """The sd of the shared logit-scale shock, from the source's own forecasts of
    earlier periods at the same moment (method of moments, pooled over periods).

    For each earlier period k with end E_k <= as_of, as of T_k = E_k - (E - as_of):
    mu_k = sum p a, v_k = sum p(1-p) a^2 (independent-deals variance), s_k = sum p(1-p) a
    and A_k = revenue those deals actually booked in the period (moments in the data's
    first two periods are skipped: the source had too little history then). Under the model
    Var(A) ~ v + tau^2 s^2, so tau^2 = sum((A-mu)^2 - v) / sum(s^2), floored at 0,
    capped at 3. Returns (tau, number of periods used). Only outcomes before E_k <= as_of
    are read.
    """
    num = den = 0.0
    used = 0
    for past, t_k in shock_moments(history, as_of, period, lookback_periods):
        snap = history.snapshot(t_k)
        if snap.empty:
            continue
        try:
            deals = _attach(snap, probs_at(t_k, past))
        except LeadmlError:
            continue  # the source cannot answer for that moment (e.g. no truth rows)
        o = history.outcomes.set_index("opportunity_id").loc[deals["opportunity_id"]]
        won = ((o["won_at"] >= past.start) & (o["won_at"] < past.end)).to_numpy()
        actual = float(np.where(won, o["won_amount"].to_numpy(float), 0.0).sum())
        p, a = deals["p_won_by"].to_numpy(float), deals["amount"].to_numpy(float)
        mu, v, s = float(p @ a), float((p * (1 - p)) @ (a * a)), float((p * (1 - p)) @ a)
        num += (actual - mu) ** 2 - v
        den += s * s
        used += 1
    if used < 2 or den <= 0:
        return 0.0, used
    return float(min(np.sqrt(max(num / den, 0.0)), 3.0)), used


def shock_moments(
    history: DealHistory, as_of: pd.Timestamp, period: Period, lookback_periods: int
) -> list[tuple[Period, pd.Timestamp]]:
    """The earlier periods and moments :func:`shock_sd` replays: period k back, as of
    the same weekly call before its end (:func:`~leadml.forecast.deals.same_moment`,
    within 6 days of ``E_k - (E - as_of)``; for a month, at ``E_k - (E - as_of)``:
    :func:`~leadml.forecast.deals.weekly_rhythm`), for periods that ended by ``as_of``. A
    forecast made with under two periods of history is not representative of today's
    source; such early moments are left out."""
    first = history.outcomes["first_seen"].min()
    earliest = first + pd.DateOffset(months=2 * period.months)
    out = []
    for k in range(1, lookback_periods + 1):
        past = period.earlier(k)
        t_k = (
            same_moment(monday_before(as_of), period.end, past.end)
            if weekly_rhythm(period.months)
            else past.end - (period.end - as_of)
        )
        if past.end > as_of or t_k < earliest:
            continue
        out.append((past, t_k))
    return out


def _prob_column(frame: pd.DataFrame) -> str:
    for col in ("p_won_by", "p_won_by_period_end", "p_won"):
        if col in frame.columns:
            return col
    raise ForecastError(
        "deal probabilities need the columns opportunity_id and p_won_by (or p_won_by_period_end); "
        f"got {', '.join(map(str, frame.columns))}"
    )


def _attach(open_deals: pd.DataFrame, probs: pd.DataFrame) -> pd.DataFrame:
    col = _prob_column(probs)
    if "opportunity_id" not in probs.columns:
        raise ForecastError("deal probabilities need an opportunity_id column")
    probs = probs.drop_duplicates("opportunity_id")
    p = numeric_column(probs, col, "deal probabilities").set_axis(probs["opportunity_id"])
    out = open_deals.copy()
    out["p_won_by"] = p.reindex(out["opportunity_id"]).to_numpy()
    missing = out.loc[out["p_won_by"].isna(), "opportunity_id"]
    if len(missing):
        raise ForecastError(
            f"deal probabilities miss {len(missing)} deal(s) open at the as-of date "
            f"(e.g. {', '.join(missing.head(5))}); score every open deal as of that date"
        )
    bad = out[(out["p_won_by"] < 0) | (out["p_won_by"] > 1)]
    if len(bad):
        raise ForecastError(
            f"deal probabilities outside [0, 1] for {len(bad)} deal(s) "
            f"(e.g. {bad['opportunity_id'].iloc[0]})"
        )
    out["expected"] = out["p_won_by"] * out["amount"]
    return out


def _group_forecast(
    name: str,
    won: float,
    deals: pd.DataFrame,
    nd: list[NewDeals],
    target: float,
    max_cells: int,
    tau: float,
    new_level_sd: float,
    period: Period,
    as_of: pd.Timestamp,
) -> tuple[GroupForecast, dist.RevenueDistribution]:
    d = dist.revenue_distribution(
        won=won,
        amounts=deals["amount"].to_numpy(float),
        probs=deals["p_won_by"].to_numpy(float),
        new=[(part.rate, part.amounts, part.dispersion) for part in nd],
        max_cells=max_cells,
        shock_sd=tau,
        new_level_sd=new_level_sd,
    )
    p10, p50, p90 = (float(v) for v in d.quantile([0.1, 0.5, 0.9]))  # type: ignore[union-attr]
    open_expected = float(deals["expected"].sum())
    new_expected = NewDealsEstimate.expected(nd)
    expected = won + open_expected + new_expected
    pipeline = float(deals["amount"].sum())
    in_period = float(deals.loc[_expected_in(deals, period, as_of), "amount"].sum())
    remaining = max(target - won, 0.0) if np.isfinite(target) else float("nan")
    coverage = in_period / remaining if np.isfinite(remaining) and remaining > 0 else float("nan")
    g = GroupForecast(
        group=name,
        won=float(won),
        open_expected=open_expected,
        new_expected=new_expected,
        expected=expected,
        p10=p10,
        p50=p50,
        p90=p90,
        target=float(target),
        gap_to_target=float(target - expected) if np.isfinite(target) else float("nan"),
        p_reach_target=d.prob_at_least(target) if np.isfinite(target) else float("nan"),
        open_pipeline=pipeline,
        period_pipeline=in_period,
        remaining_target=remaining,
        coverage=coverage,
        open_deals=len(deals),
        error_bound=d.error_bound,
    )
    return g, d


def _expected_in(deals: pd.DataFrame, period: Period, as_of: pd.Timestamp) -> pd.Series:
    """Open deals whose expected close date falls in the period: before its end, overdue
    ones included while the period is under way; for a period that starts after as_of,
    only dates inside ``[start, end)`` (a deal expected earlier is not this period's)."""
    ecd = deals["expected_close_date"]
    inside = ecd < period.end
    if as_of < period.start:
        inside &= ecd >= period.start
    return inside


def forecast(
    con: duckdb.DuckDBPyConnection,
    *,
    as_of: object,
    period: str | Period,
    deal_probabilities: DealProbabilities | pd.DataFrame | None = None,
    by: str | None = None,
    vocab: Vocabulary | None = None,
    config: ForecastConfig | None = None,
    history: DealHistory | None = None,
    cross_check: bool = False,
) -> ForecastResult:
    """Forecast the revenue booked in ``period`` as of ``as_of``.

    Reads only records with ``ts < as_of`` (the probability source must do the
    same). ``deal_probabilities``: None = the empirical close rates; a DataFrame
    (opportunity_id, p_won_by) or a callable ``(con, as_of, period_end) -> DataFrame``
    giving P(won before period_end) per deal open at ``as_of``. ``by`` = team,
    segment or owner adds a forecast per group. ``history`` reuses a
    :class:`DealHistory` built on ``con`` (the backtest does). ``cross_check``
    adds a Monte Carlo P10/P50/P90 of the total.

    The spread: deals share a logit-scale shock whose sd is measured on the
    source's forecasts of earlier periods (:func:`shock_sd`); new deals are
    negative binomial with the dispersion seen in earlier periods, their rates
    sharing a level factor that widens with the period's distance (see
    :mod:`leadml.forecast.newdeals`). A DataFrame
    source cannot be replayed on earlier periods, so it gets no shock.
    """
    cfg = config or ForecastConfig()
    vocab = vocab or Vocabulary()
    if by is not None and by not in GROUPS:
        raise ForecastError(f"--by {by!r} is not a grouping; use one of {', '.join(GROUPS)}")
    per = parse_period(period) if isinstance(period, str) else period
    t = as_utc(as_of)
    history = history or DealHistory(con, vocab)
    history.check_as_of(t)
    history.check_has_history(t)
    if per.end <= t:
        raise ForecastError(
            f"period {per.label} ended on {per.end.date()}, before --as-of {t.date()}; "
            "forecast a period that has not ended (or see `leadml forecast backtest` for past ones)"
        )
    probs_at, source_name = probability_source(deal_probabilities, con, history, cfg, per.months)
    prefetch = getattr(deal_probabilities, "prefetch", None)
    if callable(prefetch):  # e.g. the deal-close model: features of every moment in one query
        moments = shock_moments(history, t, per, cfg.shock_lookback_periods)
        prefetch(con, [t, *(t_k for _, t_k in moments)])
    deals = _attach(history.snapshot(t), probs_at(t, per))
    tau, tau_periods = (0.0, 0)
    if not isinstance(deal_probabilities, pd.DataFrame):
        tau, tau_periods = shock_sd(
            probs_at, history, as_of=t, period=per, lookback_periods=cfg.shock_lookback_periods
        )
    won = history.won_in(per.start, per.end, before=t)
    nd = new_deals(
        history,
        as_of=t,
        period=per,
        by=by,
        lookback_periods=cfg.new_deals_lookback_periods,
        velocity_days=cfg.new_deals_velocity_days,
    )
    total_target = float(history.target(per, None).get("all", np.nan))
    total, d = _group_forecast(
        "all",
        float(won["won_amount"].sum()),
        deals,
        nd.total,
        total_target,
        cfg.max_grid_cells,
        tau,
        nd.level_sd,
        per,
        t,
    )
    group_targets = history.target(per, by) if by else pd.Series(dtype=float)
    groups = _groups(by, deals, won, nd, group_targets, cfg, tau, per, t)
    mc: dict[str, float] = {}
    if cross_check:
        draws = dist.monte_carlo(
            won=total.won,
            amounts=deals["amount"].to_numpy(float),
            probs=deals["p_won_by"].to_numpy(float),
            new=[(part.rate, part.amounts, part.dispersion) for part in nd.total],
            shock_sd=tau,
            new_level_sd=nd.level_sd,
            draws=cfg.monte_carlo_draws,
            seed=cfg.seed,
        )
        q = np.quantile(draws, [0.1, 0.5, 0.9])
        mc = {
            "p10": float(q[0]),
            "p50": float(q[1]),
            "p90": float(q[2]),
            "mean": float(draws.mean()),
            "draws": float(cfg.monte_carlo_draws),
        }
    notes = [n for n in (history.quiet_note(t),) if n]
    if not isinstance(deal_probabilities, pd.DataFrame) and tau_periods < 2:
        notes.append(
            f"the open deals' shared shock was measured on {tau_periods} earlier period(s) "
            "at this point of a period (2 needed), so P10-P90 counts only each deal's own "
            "chance and is too narrow; more history (or a date later in the period) fixes it"
        )
    recent_wins = history.outcomes_before(t)["won_at"].between(t - _YEAR, t, inclusive="left")
    if int(recent_wins.sum()) < MIN_WINS_FOR_TRUST:
        notes.append(
            f"only {int(recent_wins.sum())} deal(s) were won in the year before --as-of "
            f"({MIN_WINS_FOR_TRUST} or more make close rates, spread and run rate worth "
            "reading): treat these figures as rough, and see how they did with "
            "`leadml forecast backtest`"
        )
    if per.months < 3 and np.isfinite(total_target) and history.target_is_prorated(per):
        notes.append(_prorated_target_note(history, t, per))
    if nd.periods_seen == 0:
        notes.append(
            f"no earlier {per.months}-month period of the deal history reaches "
            f"{(per.end - t).days} days back from its end, so nothing shows how many deals "
            f"created after --as-of are won inside such a period: {per.label} counts no "
            "revenue from new deals and leans low"
        )
    if per.start > t + pd.Timedelta(days=92):
        notes.append(
            f"{per.label} starts {(per.start - t).days} days after --as-of: almost all of it "
            "is deals not yet created, extrapolated from the run rate of earlier periods"
            + (
                f" and allowed to drift by about {nd.level_sd:.0%} (1 sd), the "
                f"{nd.level_sd_quarter:.0%} a quarter that deal creation moved beyond chance "
                "between recent quarters"
                if nd.level_sd > 0
                else ""
            )
            + "; `leadml forecast backtest --ahead 2` (or more) checks such forecasts on "
            "past quarters"
        )
    return ForecastResult(
        per,
        t,
        by,
        source_name,
        total,
        groups,
        deals,
        d,
        nd.periods_seen,
        mc,
        shock_sd=tau,
        shock_periods=tau_periods,
        new_level_sd=nd.level_sd,
        notes=notes,
    )


def _prorated_target_note(history: DealHistory, t: pd.Timestamp, per: Period) -> str:
    """Say that a month's target is a longer target cut by days, and how much of a
    quarter's revenue that month of the quarter usually wins (wins bunch at its end)."""
    o = history.outcomes_before(t)
    won = o[o["won_at"].between(t - _YEAR, t, inclusive="left")]
    place = (per.start.month - 1) % 3
    head = f"{per.label}'s target is a longer target (e.g. the quarter's) prorated by days"
    total = float(won["won_amount"].sum())
    if len(won) < MIN_WINS_FOR_TRUST or total <= 0:
        return head
    share = float(won.loc[(won["won_at"].dt.month - 1) % 3 == place, "won_amount"].sum()) / total
    which = ("first", "second", "third")[place]
    return (
        f"{head}, while in the year before --as-of a quarter's {which} month won {share:.0%} "
        "of the revenue of its quarter: the target and P(reach target) of a month read "
        "against that"
    )


# Won deals in the year before as-of below which the forecast says it is rough: the
# close rates (per stage x segment x ...), the shock and the run rate all learn from them.
MIN_WINS_FOR_TRUST = 30
_YEAR = pd.Timedelta(days=365)


def _groups(
    by: str | None,
    deals: pd.DataFrame,
    won: pd.DataFrame,
    nd: NewDealsEstimate,
    targets: pd.Series,
    cfg: ForecastConfig,
    tau: float,
    period: Period,
    as_of: pd.Timestamp,
) -> list[GroupForecast]:
    if by is None:
        return []
    col = GROUP_COLUMN[by]
    names = sorted(
        {str(v) for v in deals[col].dropna()}
        | {str(v) for v in won[col].dropna()}
        | set(nd.groups)
        | {str(v) for v in targets.index}
    )
    out = []
    for name in names:
        g, _ = _group_forecast(
            name,
            float(won.loc[won[col].astype(str) == name, "won_amount"].sum()),
            deals[deals[col].astype(str) == name],
            nd.groups.get(name, []),
            float(targets.get(name, np.nan)),
            max(cfg.max_grid_cells // 8, 256),
            tau,
            nd.level_sd,
            period,
            as_of,
        )
        out.append(g)
    return out


def forecast_path(
    con: duckdb.DuckDBPyConnection,
    *,
    as_of: object,
    period: str | Period,
    deal_probabilities: DealProbabilities | pd.DataFrame | None = None,
    vocab: Vocabulary | None = None,
    config: ForecastConfig | None = None,
    history: DealHistory | None = None,
) -> pd.DataFrame:
    """Weekly forecasts of ``period`` from its first week up to ``as_of`` (for the fan chart).

    Each row is a forecast made as of that week with only the data before it:
    as_of, won, expected, p10, p50, p90, target. A DataFrame of probabilities holds
    one moment only, so with one the path has the ``as_of`` point alone. Earlier weeks
    with too little history before them to forecast from are left out.
    """
    cfg = config or ForecastConfig()
    per = parse_period(period) if isinstance(period, str) else period
    t = as_utc(as_of)
    history = history or DealHistory(con, vocab or Vocabulary())
    weeks = pd.date_range(max(per.start, t - pd.Timedelta(days=7 * 13)), t, freq="7D")
    points = [d for d in weeks if d < t and not isinstance(deal_probabilities, pd.DataFrame)] + [t]
    rows = []
    light = cfg.model_copy(update={"max_grid_cells": cfg.backtest_grid_cells})
    for point in points:
        try:
            r = forecast(
                con,
                as_of=point,
                period=per,
                deal_probabilities=deal_probabilities,
                vocab=vocab,
                config=light,
                history=history,
            )
        except TooLittleHistory:
            if point == t:
                raise
            continue  # an earlier week without enough history before it
        g = r.total
        rows.append(
            {
                "as_of": point,
                "won": g.won,
                "expected": g.expected,
                "p10": g.p10,
                "p50": g.p50,
                "p90": g.p90,
                "target": g.target,
            }
        )
    return pd.DataFrame(rows)
