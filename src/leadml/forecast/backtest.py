"""Replay the forecast on past quarters and compare with what was actually won.

For each of the last ``backtest_quarters`` quarters that ended before the data's
end, and each of 1..``backtest_weeks`` weeks before its end, the forecast is made
as of the Monday on or before ``quarter_end - 7 * weeks`` days (the weekly forecast
call; between ``weeks`` and ``weeks + 1`` weeks remain) with only the data before that moment
(the same code path as ``leadml forecast``), and compared with the revenue won in
the quarter. Baselines in the same run, from the same point-in-time state:

- ``stage_weighted``: won so far + sum over open deals whose expected close date
  lies inside the quarter of (historical eventual win rate of the deal's stage,
  from deals closed before the as-of date) x amount: the CRM's weighted pipeline
  of the quarter; ``stage_weighted_all_open`` weights every open deal instead;
- ``close_date_in_period``: won so far + the full amount of every open deal whose
  expected close date lies inside the quarter;
- ``oracle`` (when truth probabilities are given, e.g. the simulator's
  ``truth/deal_truth.parquet``): the same forecast with the true probabilities.

Metrics: MAPE of the expected value by weeks before quarter end, and the share of
actuals inside P10-P90 (methods with a distribution). The new-deals part is
checked for calibration: its predicted revenue against the revenue of deals
created after the as-of date and won in the quarter.
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
    quarter_of,
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

    points: (
        pd.DataFrame
    )  # quarter, weeks_before_end, as_of, method, expected, p10, p50, p90, actual, ...
    by_weeks: pd.DataFrame  # method x weeks_before_end: mape, coverage_p10_p90, n
    summary: pd.DataFrame  # method: mape, coverage_p10_p90, n
    goals: dict[str, Any] = field(default_factory=dict)
    new_deals: dict[str, float] = field(default_factory=dict)
    probability_source: str = "empirical"

    def to_dict(self) -> dict[str, Any]:
        return {
            "probability_source": self.probability_source,
            "summary": self.summary.to_dict(orient="records"),
            "by_weeks": self.by_weeks.to_dict(orient="records"),
            "goals": self.goals,
            "new_deals_calibration": self.new_deals,
            "points": self.points.assign(as_of=self.points["as_of"].astype(str)).to_dict(
                orient="records"
            ),
        }


def monday_before(ts: pd.Timestamp) -> pd.Timestamp:
    """The Monday 00:00 UTC on or before ``ts`` (the weekly forecast call)."""
    day = ts.normalize()
    return day - pd.Timedelta(days=day.weekday())


def backtest_quarters(history: DealHistory, n: int, weeks: int = 13) -> list[Period]:
    """The last ``n`` quarters that ended before the data's end and whose earliest
    forecast (``weeks`` before the end) has a quarter's deal history before it to learn
    close rates from (deals open one horizon before that as-of date)."""
    if history.data_end is None or history.data_start is None:
        raise ForecastError("opportunity_history is empty; there is nothing to backtest")
    q = quarter_of(history.data_end)
    if q.end > history.data_end.normalize() + pd.Timedelta(days=1):
        q = q.shifted(1)
    quarters = [q.shifted(k) for k in range(n)]
    first = history.data_start

    def learnable(p: Period) -> bool:
        as_of = monday_before(p.end - pd.Timedelta(days=7 * weeks))
        return as_of - (p.end - as_of) > first

    kept = [p for p in quarters if learnable(p)]
    if not kept:
        raise ForecastError(
            f"no complete quarter to backtest: the deal history starts {first:%Y-%m-%d}, and "
            f"a quarter's forecast {weeks} weeks before its end learns from the deals open "
            f"{weeks} weeks before that; load more history"
        )
    return sorted(kept, key=lambda p: p.start)


def backtest(
    con: duckdb.DuckDBPyConnection,
    *,
    config: ForecastConfig | None = None,
    vocab: Vocabulary | None = None,
    deal_probabilities: DealProbabilities | None = None,
    truth: TruthProbabilities | None = None,
    quarters: int | None = None,
    on_point: Callable[[], None] | None = None,
    source_for_quarter: Callable[[Period], DealProbabilities] | None = None,
) -> BacktestReport:
    """Forecast every past quarter as of each week before its end; score against actuals.

    Each forecast reads only data before its as-of date. ``on_point`` is called
    after each quarter-week (progress display). ``source_for_quarter(period)`` gives
    the probability source of each backtest quarter (e.g. a deal-close model retrained
    before the quarter's first as-of date); it overrides ``deal_probabilities``.
    """
    cfg = config or ForecastConfig()
    vocab = vocab or Vocabulary()
    history = DealHistory(con, vocab)
    periods = backtest_quarters(history, quarters or cfg.backtest_quarters, cfg.backtest_weeks)
    light = cfg.model_copy(update={"max_grid_cells": cfg.backtest_grid_cells})
    if deal_probabilities is None:  # one estimator for the whole run: its answers are memoised
        deal_probabilities = empirical_rates(history, cfg)
    rows: list[dict[str, Any]] = []
    new_rows: list[dict[str, float]] = []
    source_name = str(getattr(deal_probabilities, "name", "custom"))
    for per in periods:
        source = source_for_quarter(per) if source_for_quarter else deal_probabilities
        if source_for_quarter:
            source_name = str(getattr(source, "name", "custom"))
        actual = float(history.won_in(per.start, per.end, before=per.end)["won_amount"].sum())
        for weeks in range(cfg.backtest_weeks, 0, -1):
            as_of = monday_before(per.end - pd.Timedelta(days=7 * weeks))
            base = {
                "quarter": per.label,
                "weeks_before_end": weeks,
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
                deals["stage"].map(stage_win_rates(history, as_of)).fillna(0.0) * deals["amount"]
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
            if truth is not None and truth.covers(as_of, per.end):
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
    report = _summarise(points)
    report.probability_source = source_name
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


def _summarise(points: pd.DataFrame) -> BacktestReport:
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
    goals: dict[str, Any] = {}
    fc = summary.loc[summary["method"] == "forecast"]
    if len(fc):
        cov = float(fc["coverage_p10_p90"].iloc[0])
        goals["coverage_p10_p90"] = {
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
                goals[f"mape_vs_{base}_at_{weeks}w"] = {
                    "value": ratio,
                    "goal": f"<= {limit}",
                    "met": bool(ratio <= limit),
                    "forecast_mape": float(at["forecast"]),
                    f"{base}_mape": float(at[base]),
                }
    return BacktestReport(p, by_weeks, summary, goals)


def decompose(points: pd.DataFrame, against: str = "oracle") -> pd.DataFrame:
    """Where the forecast's error comes from, by weeks before quarter end.

    Every point's actual splits exactly like the forecast: won before as_of + wins
    among the deals open at as_of (``actual_open``) + deals first seen at or after
    as_of (``actual_new``). Per weeks before the end (errors as shares of the actual,
    means over the quarters): ``mape`` and ``mape_<against>``; the signed and
    absolute error of the open-deals part (``open_bias``, ``open_abs``; the same for
    ``against``), of the new-deals part (``new_bias``, ``new_abs``, which the
    forecast and the oracle share), ``open_gap_abs`` = mean |open part of the
    forecast - open part of ``against``|, and the MAPE the forecast would have with
    a perfect new-deals part (``mape_perfect_new``). ``n`` = quarters (points).
    Evaluation only: it reads outcomes up to each quarter's end.
    """
    keys = ["quarter", "weeks_before_end"]
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
    with a bootstrap interval that resamples whole quarters (the weeks of one quarter
    move together, so the quarters are the independent units). Returns ratio, lo, hi,
    quarters and points."""
    p = points if weeks is None else points[points["weeks_before_end"].isin(weeks)]
    p = p[p["actual"] > 0]
    ape = (p["expected"] - p["actual"]).abs() / p["actual"]
    frame = pd.DataFrame({"quarter": p["quarter"], "method": p["method"], "ape": ape.to_numpy()})
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
