"""Replay the forecast on past periods and compare with what was actually won.

For each of the last ``backtest_quarters`` quarters (or, with ``months``, months) that
ended before the data's end, and each of 1..``backtest_weeks`` weeks before its end
(``backtest_month_weeks`` for months), the forecast is made as of the Monday on or
before ``period_end - 7 * weeks`` days (the weekly forecast call; between ``weeks`` and
``weeks + 1`` weeks remain) with only the data before that moment (the same code path
as ``leadml forecast``), and compared with the revenue won in the period. With
``ahead`` = K > 0 the period is forecast K periods ahead: as of the same weekly calls
before the end of the period K periods before it (for a quarter and K = 1, next
quarter's forecast made W weeks before the end of the quarter before it); a point's
``weeks_before_end`` counts to the end of that as-of's own period. Baselines in the
same run, from the same point-in-time state:

- ``stage_weighted``: won so far + sum over open deals whose expected close date
  lies inside the period of (historical eventual win rate of the deal's stage,
  from deals closed before the as-of date) x amount: the CRM's weighted pipeline
  of the period; ``stage_weighted_all_open`` weights every open deal instead;
- ``close_date_in_period``: won so far + the full amount of every open deal whose
  expected close date lies inside the period;
- ``oracle`` (when truth probabilities are given, e.g. the simulator's
  ``truth/deal_truth.parquet``): the same forecast with the true probabilities, at
  the points the truth covers.

Metrics: MAPE of the expected value by weeks before the period end, and the share of
actuals inside P10-P90 (methods with a distribution). The new-deals part is
checked for calibration: its predicted revenue against the revenue of deals
created after the as-of date and won in the period. The goals of the forecast
(coverage and MAPE ratios, see :func:`_summarise`) are set for the current quarter: only
a quarter backtest with ``ahead`` = 0 checks them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from leadml.config import ForecastConfig, Vocabulary
from leadml.forecast.deals import (
    DealHistory,
    DealProbabilities,
    ForecastError,
    Period,
    monday_before,
    period_of,
    stage_win_rates,
)
from leadml.forecast.forecast import empirical_rates, forecast
from leadml.forecast.newdeals import actual_new_revenue


class TruthProbabilities:
    """The simulator's ground truth as a probability source (the oracle).

    Reads ``deal_truth.parquet`` (opportunity_id, as_of, period_end, p_won_by) and
    answers for the rows with that as_of and period_end. Evaluation only: the
    truth is not observable in real data.
    """

    name = "oracle"

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "deal_truth.parquet"
        if not path.exists():
            raise ForecastError(
                f"truth file {path} does not exist; the oracle needs the simulator's truth/"
            )
        t = pd.read_parquet(path)
        missing = {"opportunity_id", "as_of", "period_end", "p_won_by"} - set(t.columns)
        if missing:
            raise ForecastError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for col in ("as_of", "period_end"):
            t[col] = pd.to_datetime(t[col], utc=True)
        self.path = path
        self.truth = t
        self._by_key = {k: g for k, g in t.groupby(["as_of", "period_end"], sort=False)}

    @property
    def as_of_dates(self) -> list[pd.Timestamp]:
        return sorted(self.truth["as_of"].unique())

    def covers(self, as_of: pd.Timestamp, period_end: pd.Timestamp) -> bool:
        return (as_of, period_end) in self._by_key

    def __call__(self, con: Any, as_of: pd.Timestamp, period_end: pd.Timestamp) -> pd.DataFrame:
        rows = self._by_key.get((as_of, period_end))
        if rows is None:
            raise ForecastError(
                f"{self.path}: no truth rows for as_of {as_of} and period_end {period_end}"
            )
        return rows[["opportunity_id", "p_won_by"]]


@dataclass
class BacktestReport:
    """Every backtest point, and MAPE / coverage summaries."""

    # period (its label), quarter (the same, quarter backtests only), periods_ahead,
    # weeks_before_end, as_of, method, expected, p10, p50, p90, actual, ...
    points: pd.DataFrame
    by_weeks: pd.DataFrame  # method x weeks_before_end: mape, coverage_p10_p90, n
    summary: pd.DataFrame  # method: mape, coverage_p10_p90, n
    goals: dict[str, Any] = field(default_factory=dict)
    new_deals: dict[str, float] = field(default_factory=dict)
    probability_source: str = "empirical"
    period_months: int = 3  # 3: quarters were replayed, 1: months
    periods_ahead: int = 0  # how many periods before its own the forecast was made
    periods_asked: int = 0  # --quarters / --months
    periods: list[str] = field(default_factory=list)  # the labels replayed, oldest first
    periods_note: str = ""  # why fewer periods than asked were replayed ('' if none were cut)

    def to_dict(self) -> dict[str, Any]:
        return {
            "probability_source": self.probability_source,
            "period_months": self.period_months,
            "periods_ahead": self.periods_ahead,
            "periods_asked": self.periods_asked,
            "periods": list(self.periods),
            "periods_note": self.periods_note,
            "summary": self.summary.to_dict(orient="records"),
            "by_weeks": self.by_weeks.to_dict(orient="records"),
            "goals": self.goals,
            "new_deals_calibration": self.new_deals,
            "points": self.points.assign(as_of=self.points["as_of"].astype(str)).to_dict(
                orient="records"
            ),
        }


# The furthest --ahead: the simulator's truth, and the forecast's note on far periods,
# reach four quarters.
MAX_AHEAD = 4
# Weekly calls before a period end the backtest may replay: a quarter has 13, a month 4-5.
MAX_WEEKS = {3: 13, 1: 5}


@dataclass(frozen=True)
class BacktestPlan:
    """What a backtest replays: ``periods`` periods of ``period_months`` months, as of
    each of 1..``weeks`` weekly calls before the end of the period ``ahead`` before."""

    period_months: int
    periods: int
    weeks: int
    ahead: int = 0

    @property
    def unit(self) -> str:
        return "quarter" if self.period_months == 3 else "month"

    @property
    def current_quarter(self) -> bool:
        """Whether this is the backtest the forecast's goals are set for."""
        return self.period_months == 3 and self.ahead == 0


def backtest_plan(
    config: ForecastConfig | None = None,
    *,
    quarters: int | None = None,
    months: int | None = None,
    weeks: int | None = None,
    ahead: int = 0,
) -> BacktestPlan:
    """The periods, weeks and distance a backtest replays; a ForecastError for a
    request that cannot be answered (quarters and months together, a month replayed
    more than 5 weeks before its end, ``ahead`` outside 0..4)."""
    cfg = config or ForecastConfig()
    if quarters is not None and months is not None:
        raise ForecastError(
            "--quarters and --months were both given: a backtest replays either past "
            "quarters (--quarters N) or past months (--months N); give one of them"
        )
    if not 0 <= ahead <= MAX_AHEAD:
        raise ForecastError(
            f"--ahead {ahead} is not between 0 and {MAX_AHEAD}: give how many periods "
            "before the backtested one each forecast is made (0 = within it)"
        )
    period_months = 1 if months is not None else 3
    n = months if months is not None else quarters
    if n is None:
        n = cfg.backtest_quarters
    if n < 1:
        unit = "months" if months is not None else "quarters"
        raise ForecastError(f"--{unit} {n}: give 1 or more {unit} to replay")
    default_weeks = cfg.backtest_month_weeks if months is not None else cfg.backtest_weeks
    w = default_weeks if weeks is None else weeks
    limit = MAX_WEEKS[period_months]
    if not 1 <= w <= limit:
        what = "a month has 4-5" if months is not None else "a quarter has 13"
        raise ForecastError(
            f"--weeks {w} {'with --months ' if months is not None else ''}is not between 1 "
            f"and {limit}: {what} weekly forecast calls before its end; give --weeks 1..{limit}"
        )
    return BacktestPlan(period_months, int(n), int(w), int(ahead))


def weekly_call(period: Period, weeks: int, ahead: int = 0) -> pd.Timestamp:
    """The as-of of a backtest point: the weekly call ``weeks`` weeks before the end of
    the period ``ahead`` periods before ``period`` (``period`` itself when 0)."""
    own = period.shifted(ahead) if ahead else period
    return monday_before(own.end - pd.Timedelta(days=7 * weeks))


def backtest_periods(
    history: DealHistory, n: int, weeks: int = 13, *, months: int = 3, ahead: int = 0
) -> list[Period]:
    """The last ``n`` periods of ``months`` months (quarters or months) that ended before
    the data's end, started on or after the day the deal history starts (else part of
    their revenue is not in the data) and whose earliest forecast (``weeks`` before the end
    of the period ``ahead`` before it) has one horizon of deal history before it to learn
    close rates from (deals open one horizon, period end - as-of, before that as-of date).
    """
    return backtest_selection(history, n, weeks, months=months, ahead=ahead)[0]


def backtest_selection(
    history: DealHistory, n: int, weeks: int = 13, *, months: int = 3, ahead: int = 0
) -> tuple[list[Period], str]:
    """:func:`backtest_periods`, and a sentence saying why fewer than ``n`` periods are
    replayed ('' when all of them are)."""
    if history.data_end is None or history.data_start is None:
        raise ForecastError("opportunity_history is empty; there is nothing to backtest")
    q = period_of(history.data_end, months)
    if q.end > history.data_end.normalize() + pd.Timedelta(days=1):
        q = q.shifted(1)
    candidates = [q.shifted(k) for k in range(n)]
    first = history.data_start
    unit = "quarter" if months == 3 else "month"

    def whole(p: Period) -> bool:
        return p.start >= first.normalize()

    def learnable(p: Period) -> bool:
        as_of = weekly_call(p, weeks, ahead)
        return as_of - (p.end - as_of) > first

    kept = [p for p in candidates if whole(p) and learnable(p)]
    earliest = (
        f"{weeks} weeks before its end"
        if not ahead
        else f"{weeks} weeks before the end of the {unit} {ahead} before it"
    )
    if not kept:
        raise ForecastError(
            f"no complete {unit} to backtest: the deal history starts {first:%Y-%m-%d}, a "
            f"{unit} that starts before that is not whole in the data, and a {unit}'s "
            f"forecast {earliest} learns from the deals open as long before that as-of date "
            f"as the {unit}'s end is after it; load more history"
            + (" or lower --ahead" if ahead else "")
        )
    kept = sorted(kept, key=lambda p: p.start)
    if len(kept) == n:
        return kept, ""
    early = sum(not whole(p) for p in candidates)
    short = sum(whole(p) and not learnable(p) for p in candidates)
    why = []
    if early:
        verb, its = ("starts", "its") if early == 1 else ("start", "their")
        why.append(f"{early} {verb} before it (part of {its} revenue is not in the data)")
    if short:
        verb = "starts" if short == 1 else "start"
        why.append(
            f"{short} {'more ' if early else ''}{verb} too soon after it: a {unit}'s earliest "
            f"forecast, {earliest}, needs as much deal history before it as the time from it "
            f"to the {unit}'s end, to learn close rates from"
        )
    span = kept[0].label if len(kept) == 1 else f"{kept[0].label} to {kept[-1].label}"
    return kept, (
        f"{len(kept)} of the {n} {unit}s asked for can be replayed ({span}): the deal "
        f"history starts {first:%Y-%m-%d}; of the earlier {unit}s, " + "; ".join(why)
    )


def backtest_quarters(history: DealHistory, n: int, weeks: int = 13) -> list[Period]:
    """The quarters a current-quarter backtest replays (:func:`backtest_periods`)."""
    return backtest_periods(history, n, weeks)


def backtest(
    con: duckdb.DuckDBPyConnection,
    *,
    config: ForecastConfig | None = None,
    vocab: Vocabulary | None = None,
    deal_probabilities: DealProbabilities | None = None,
    truth: TruthProbabilities | None = None,
    quarters: int | None = None,
    months: int | None = None,
    weeks: int | None = None,
    ahead: int = 0,
    on_point: Callable[[], None] | None = None,
    source_for_quarter: Callable[[Period], DealProbabilities] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> BacktestReport:
    """Forecast every past period as of each week before its end; score against actuals.

    Quarters by default (``quarters``, default ``config.backtest_quarters``, as of 1..
    ``weeks`` weeks before the end, default ``config.backtest_weeks``); ``months`` = N
    replays the last N months instead (``weeks`` default ``config.backtest_month_weeks``,
    at most 5). ``ahead`` = K forecasts each period as of the weekly calls before the end
    of the period K before it (see :func:`backtest_plan`). Each forecast reads only
    data before its as-of date. ``on_plan(points)`` is called once the periods are known,
    ``on_point`` after each period-week (progress display).
    ``source_for_quarter(period)`` gives the probability source of each backtested period
    (e.g. a deal-close model retrained before the period's first as-of date); it
    overrides ``deal_probabilities``. The goals are checked for quarters with
    ``ahead`` = 0 only (the forecast's goals are set for the current quarter).
    """
    cfg = config or ForecastConfig()
    vocab = vocab or Vocabulary()
    plan = backtest_plan(cfg, quarters=quarters, months=months, weeks=weeks, ahead=ahead)
    history = DealHistory(con, vocab)
    periods, trimmed = backtest_selection(
        history, plan.periods, plan.weeks, months=plan.period_months, ahead=plan.ahead
    )
    if on_plan:  # the points to come (fewer periods than asked for may be replayable)
        on_plan(len(periods) * plan.weeks)
    light = cfg.model_copy(update={"max_grid_cells": cfg.backtest_grid_cells})
    if deal_probabilities is None:  # one estimator for the whole run: its answers are memoised
        deal_probabilities = empirical_rates(history, cfg, plan.period_months)
    rows: list[dict[str, Any]] = []
    new_rows: list[dict[str, float]] = []
    source_name = str(getattr(deal_probabilities, "name", "custom"))
    for per in periods:
        source = source_for_quarter(per) if source_for_quarter else deal_probabilities
        if source_for_quarter:
            source_name = str(getattr(source, "name", "custom"))
        actual = float(history.won_in(per.start, per.end, before=per.end)["won_amount"].sum())
        for w in range(plan.weeks, 0, -1):
            as_of = weekly_call(per, w, plan.ahead)
            base: dict[str, Any] = {"period": per.label}
            if plan.period_months == 3:
                base["quarter"] = per.label
            base |= {
                "periods_ahead": plan.ahead,
                "weeks_before_end": w,
                "as_of": as_of,
                "actual": actual,
            }
            r = forecast(
                con,
                as_of=as_of,
                period=per,
                deal_probabilities=source,
                vocab=vocab,
                config=light,
                history=history,
            )
            t = r.total
            # The actual split like the forecast: wins among the deals open at as_of, and
            # deals first seen at or after as_of (what the new-deals part predicts).
            open_won = history.won_at.reindex(r.deals["opportunity_id"])
            in_period = ((open_won >= per.start) & (open_won < per.end)).to_numpy()
            won_amount = history.outcomes.set_index("opportunity_id")["won_amount"]
            actual_open = float(
                won_amount.reindex(r.deals["opportunity_id"]).to_numpy(float)[in_period].sum()
            )
            actual_new = actual_new_revenue(history, as_of=as_of, period=per)
            base["actual_open"] = actual_open
            base["actual_new"] = actual_new
            rows.append(
                {
                    **base,
                    "method": "forecast",
                    "expected": t.expected,
                    "p10": t.p10,
                    "p50": t.p50,
                    "p90": t.p90,
                    "won": t.won,
                    "open_expected": t.open_expected,
                    "new_expected": t.new_expected,
                    "shock_sd": r.shock_sd,
                }
            )
            new_rows.append({"predicted": t.new_expected, "actual": actual_new})
            deals = r.deals
            due = deals["expected_close_date"].between(per.start, per.end, inclusive="left")
            weighted = (
                deals["stage"].map(stage_win_rates(history, as_of)).astype(float).fillna(0.0)
                * deals["amount"]
            )
            rows.append(
                {
                    **base,
                    "method": "stage_weighted",
                    "expected": t.won + float(weighted[due].sum()),
                    "won": t.won,
                }
            )
            rows.append(
                {
                    **base,
                    "method": "stage_weighted_all_open",
                    "expected": t.won + float(weighted.sum()),
                    "won": t.won,
                }
            )
            rows.append(
                {
                    **base,
                    "method": "close_date_in_period",
                    "expected": t.won + float(deals.loc[due, "amount"].sum()),
                    "won": t.won,
                }
            )
            # a period that starts after as_of also asks the truth for P(won before its start)
            if (
                truth is not None
                and truth.covers(as_of, per.end)
                and (as_of >= per.start or truth.covers(as_of, per.start))
            ):
                o = forecast(
                    con,
                    as_of=as_of,
                    period=per,
                    deal_probabilities=truth,
                    vocab=vocab,
                    config=light,
                    history=history,
                ).total
                rows.append(
                    {
                        **base,
                        "method": "oracle",
                        "expected": o.expected,
                        "p10": o.p10,
                        "p50": o.p50,
                        "p90": o.p90,
                        "won": o.won,
                        "open_expected": o.open_expected,
                        "new_expected": o.new_expected,
                    }
                )
            if on_point:
                on_point()
    points = pd.DataFrame(rows)
    report = _summarise(points, goals=plan.current_quarter)
    report.probability_source = source_name
    report.period_months = plan.period_months
    report.periods_ahead = plan.ahead
    report.periods_asked = plan.periods
    report.periods = [p.label for p in periods]
    report.periods_note = trimmed
    nd = pd.DataFrame(new_rows)
    report.new_deals = {
        "predicted_total": float(nd["predicted"].sum()),
        "actual_total": float(nd["actual"].sum()),
        "ratio": float(nd["predicted"].sum() / nd["actual"].sum())
        if nd["actual"].sum() > 0
        else float("nan"),
        "points": float(len(nd)),
    }
    return report


def _summarise(points: pd.DataFrame, *, goals: bool = True) -> BacktestReport:
    """MAPE and P10-P90 coverage per method (and weeks before the end); with ``goals``,
    the forecast's goals, which are set for the current quarter: P10-P90 coverage
    0.80 +/- 0.05, MAPE at 4 and 8 weeks at most 0.7 x the stage-weighted pipeline's
    and 1.2 x the oracle's."""
    p = points.copy()
    p["ape"] = (p["expected"] - p["actual"]).abs() / p["actual"].where(p["actual"] > 0)
    if "p10" not in p.columns:
        p["p10"] = p["p90"] = np.nan
    inside = (p["actual"] >= p["p10"]) & (p["actual"] <= p["p90"])
    p["inside_p10_p90"] = inside.where(p["p10"].notna())

    def agg(frame: pd.DataFrame) -> pd.Series:
        cov = frame["inside_p10_p90"].dropna()
        return pd.Series(
            {
                "mape": float(frame["ape"].mean()),
                "coverage_p10_p90": float(cov.astype(float).mean()) if len(cov) else float("nan"),
                "n": float(len(frame)),
            }
        )

    by_weeks = (
        p.groupby(["method", "weeks_before_end"]).apply(agg, include_groups=False).reset_index()
    )
    summary = p.groupby("method").apply(agg, include_groups=False).reset_index()
    found: dict[str, Any] = {}
    if not goals:
        return BacktestReport(p, by_weeks, summary, found)
    fc = summary.loc[summary["method"] == "forecast"]
    if len(fc):
        cov = float(fc["coverage_p10_p90"].iloc[0])
        found["coverage_p10_p90"] = {
            "value": cov,
            "goal": "0.80 +/- 0.05",
            "met": bool(abs(cov - 0.8) <= 0.05),
        }
    for weeks in (4, 8):
        at = by_weeks[by_weeks["weeks_before_end"] == weeks].set_index("method")["mape"]
        if "forecast" not in at:
            continue
        for base, limit in (("stage_weighted", 0.7), ("oracle", 1.2)):
            if base in at and at[base] > 0:
                ratio = float(at["forecast"] / at[base])
                found[f"mape_vs_{base}_at_{weeks}w"] = {
                    "value": ratio,
                    "goal": f"<= {limit}",
                    "met": bool(ratio <= limit),
                    "forecast_mape": float(at["forecast"]),
                    f"{base}_mape": float(at[base]),
                }
    return BacktestReport(p, by_weeks, summary, found)


def _period_key(points: pd.DataFrame) -> str:
    """The column naming a point's period: ``period`` (``quarter`` in points written
    before months could be replayed)."""
    return "period" if "period" in points.columns else "quarter"


def decompose(points: pd.DataFrame, against: str = "oracle") -> pd.DataFrame:
    """Where the forecast's error comes from, by weeks before the period end.

    Every point's actual splits exactly like the forecast: won before as_of + wins
    among the deals open at as_of (``actual_open``) + deals first seen at or after
    as_of (``actual_new``). Per weeks before the end (errors as shares of the actual,
    means over the periods): ``mape`` and ``mape_<against>``; the signed and
    absolute error of the open-deals part (``open_bias``, ``open_abs``; the same for
    ``against``), of the new-deals part (``new_bias``, ``new_abs``, which the
    forecast and the oracle share), ``open_gap_abs`` = mean |open part of the
    forecast - open part of ``against``|, and the MAPE the forecast would have with
    a perfect new-deals part (``mape_perfect_new``). ``n`` = periods (points).
    Evaluation only: it reads outcomes up to each period's end.
    """
    keys = [_period_key(points), "weeks_before_end"]
    f = points[points["method"] == "forecast"].set_index(keys)
    if "actual_open" not in f.columns:
        raise ForecastError("backtest points lack actual_open / actual_new; re-run the backtest")
    o = points[points["method"] == against].set_index(keys)
    a = f["actual"].where(f["actual"] > 0)
    d = pd.DataFrame(
        {
            "ape": (f["expected"] - f["actual"]).abs() / a,
            "open_err": (f["open_expected"] - f["actual_open"]) / a,
            "new_err": (f["new_expected"] - f["actual_new"]) / a,
            "perfect_new": (f["won"] + f["open_expected"] + f["actual_new"] - f["actual"]).abs()
            / a,
        }
    )
    if len(o):
        d["ape_against"] = (o["expected"] - o["actual"]).abs() / a
        d["open_err_against"] = (o["open_expected"] - f["actual_open"]) / a
        d["open_gap"] = (f["open_expected"] - o["open_expected"]) / a
    g = d.groupby(level="weeks_before_end")
    out = pd.DataFrame(
        {
            "n": g["ape"].count(),
            "mape": g["ape"].mean(),
            "open_bias": g["open_err"].mean(),
            "open_abs": g["open_err"].apply(lambda s: s.abs().mean()),
            "new_bias": g["new_err"].mean(),
            "new_abs": g["new_err"].apply(lambda s: s.abs().mean()),
            "mape_perfect_new": g["perfect_new"].mean(),
        }
    )
    if len(o):
        out[f"mape_{against}"] = g["ape_against"].mean()
        out[f"open_bias_{against}"] = g["open_err_against"].mean()
        out[f"open_abs_{against}"] = g["open_err_against"].apply(lambda s: s.abs().mean())
        out["open_gap_abs"] = g["open_gap"].apply(lambda s: s.abs().mean())
        out["open_gap_bias"] = g["open_gap"].mean()
    return out.reset_index()


def mape_ratio_interval(
    points: pd.DataFrame,
    *,
    base: str,
    weeks: list[int] | None = None,
    draws: int = 2000,
    seed: int = 0,
    level: float = 0.9,
) -> dict[str, float]:
    """MAPE(forecast) / MAPE(``base``) at the given weeks before the end (all when None),
    with a bootstrap interval that resamples whole periods (the weeks of one quarter, or
    month, move together, so the periods are the independent units). Returns ratio, lo,
    hi, quarters (the number of periods) and points."""
    p = points if weeks is None else points[points["weeks_before_end"].isin(weeks)]
    p = p[p["actual"] > 0]
    ape = (p["expected"] - p["actual"]).abs() / p["actual"]
    frame = pd.DataFrame(
        {"quarter": p[_period_key(points)], "method": p["method"], "ape": ape.to_numpy()}
    )
    per_q = frame.groupby(["quarter", "method"])["ape"].agg(["sum", "count"]).unstack("method")
    if ("sum", base) not in per_q.columns or ("sum", "forecast") not in per_q.columns:
        nan = float("nan")
        return {"ratio": nan, "lo": nan, "hi": nan, "quarters": 0.0, "points": 0.0}
    per_q = per_q.dropna(subset=[("sum", base), ("sum", "forecast")])
    fs, fc = per_q[("sum", "forecast")].to_numpy(), per_q[("count", "forecast")].to_numpy()
    bs, bc = per_q[("sum", base)].to_numpy(), per_q[("count", base)].to_numpy()

    def ratio(idx: np.ndarray) -> float:
        den = bs[idx].sum() / bc[idx].sum()
        return float((fs[idx].sum() / fc[idx].sum()) / den) if den > 0 else float("nan")

    n = len(per_q)
    rng = np.random.default_rng(seed)
    boot = np.array([ratio(rng.integers(0, n, n)) for _ in range(draws)]) if n else np.array([])
    tail = (1 - level) / 2
    lo, hi = np.nanquantile(boot, [tail, 1 - tail]) if len(boot) else (np.nan, np.nan)
    return {
        "ratio": ratio(np.arange(n)) if n else float("nan"),
        "lo": float(lo),
        "hi": float(hi),
        "quarters": float(n),
        "points": float(fc.sum()),
    }
