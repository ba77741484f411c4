"""Forecast benchmark on the simulated company: backtest goals, speed, exact vs Monte Carlo.

Run (after `leadml simulate`):

    .venv/bin/python bench/bench_forecast.py [--data DIR] [--quarters 6] [--weeks 13]

Prints, for the empirical close rates (the documented baseline probability source)
and, when the simulator's truth is present, the oracle:

- MAPE by weeks before quarter end for the forecast and the baselines;
- the share of actuals inside P10-P90 (goal 0.80 +/- 0.05);
- MAPE ratios at 4 and 8 weeks: forecast / stage-weighted (goal <= 0.7) and
  forecast / oracle (goal <= 1.2);
- the new-deals run-rate's calibration (predicted / actual new-deal revenue);
- the time of one forecast (exact distribution) and of the Monte Carlo cross-check,
  and how far apart their P10/P50/P90 are;
- the next quarter's forecast (a period that starts after as-of): the exact pmf's
  mean against the expected value, and exact vs Monte Carlo quantiles.

Figures, not assertions: the goals are reported as met / not met.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    from leadml.config import load_settings
    from leadml.contracts import connect
    from leadml.forecast.backtest import TruthProbabilities, backtest
    from leadml.forecast.deals import DealHistory, quarter_of
    from leadml.forecast.forecast import forecast

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--quarters", type=int, default=6)
    parser.add_argument("--weeks", type=int, default=13)
    args = parser.parse_args()

    s = load_settings()
    data = args.data or s.data_dir
    con, _ = connect(data, s.vocabulary)
    truth_path = Path(data) / "truth" / "deal_truth.parquet"
    truth = TruthProbabilities(truth_path) if truth_path.exists() else None
    cfg = s.forecast.model_copy(
        update={"backtest_quarters": args.quarters, "backtest_weeks": args.weeks}
    )
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)

    print(
        f"data: {data}  truth: {'yes' if truth else 'no'}  "
        f"quarters: {args.quarters}  weeks: {args.weeks}"
    )
    start = time.perf_counter()
    report = backtest(con, config=cfg, vocab=s.vocabulary, truth=truth)
    elapsed = time.perf_counter() - start
    n_points = report.points[["quarter", "weeks_before_end"]].drop_duplicates().shape[0]
    print(
        f"\nbacktest: {n_points} quarter-weeks in {elapsed:.1f} s "
        f"({elapsed / n_points:.2f} s each), "
        f"probability source: {report.probability_source}"
    )
    print("quarters:", ", ".join(sorted(report.points["quarter"].unique())))
    print("\nsummary (all points):")
    print(report.summary.round(4).to_string(index=False))
    print("\nMAPE by weeks before quarter end:")
    print(report.by_weeks.pivot(index="weeks_before_end", columns="method", values="mape").round(4))
    print("\nP10-P90 coverage by weeks before quarter end:")
    cov = report.by_weeks.pivot(
        index="weeks_before_end", columns="method", values="coverage_p10_p90"
    )
    print(cov.dropna(axis=1, how="all").round(2))
    print("\ngoals:")
    for name, g in report.goals.items():
        print(
            f"  {name:32s} {g['value']:.3f}  goal {g['goal']:10s} "
            f"{'MET' if g['met'] else 'not met'}"
        )
    nd = report.new_deals
    print(
        f"\nnew-deals run-rate: predicted {nd['predicted_total']:,.0f} "
        f"vs actual {nd['actual_total']:,.0f} "
        f"(ratio {nd['ratio']:.2f})"
    )

    history = DealHistory(con, s.vocabulary)
    assert history.data_end is not None
    as_of = history.data_end.normalize() - pd.Timedelta(days=28)
    period = quarter_of(as_of)
    start = time.perf_counter()
    r = forecast(
        con,
        as_of=as_of,
        period=period,
        vocab=s.vocabulary,
        config=s.forecast,
        history=history,
        cross_check=True,
    )
    elapsed = time.perf_counter() - start
    t, mc = r.total, r.monte_carlo
    print(
        f"\none forecast ({period.label} as of {as_of.date()}, {t.open_deals} open deals, "
        f"{s.forecast.max_grid_cells} cells, with {int(mc['draws'])} Monte Carlo draws): "
        f"{elapsed:.2f} s"
    )
    for q in ("p10", "p50", "p90"):
        exact, sim = getattr(t, q), mc[q]
        print(
            f"  {q.upper()}: exact {exact:,.0f}  Monte Carlo {sim:,.0f}  "
            f"diff {abs(exact - sim) / exact:.3%}"
            f"  (grid error bound {t.error_bound / exact:.3%})"
        )
    # The next quarter (starts after as_of: P(won inside) = P(by end) - P(by start), no won
    # revenue, a large new-deals part): the exact pmf must sit on the expected value.
    nxt = period.shifted(-1)
    r = forecast(
        con,
        as_of=as_of,
        period=nxt,
        vocab=s.vocabulary,
        config=s.forecast,
        history=history,
        cross_check=True,
    )
    t, mc, dn = r.total, r.monte_carlo, r.distribution
    print(
        f"\nnext quarter ({nxt.label} as of {as_of.date()}): expected {t.expected:,.0f} "
        f"(open {t.open_expected:,.0f}, new {t.new_expected:,.0f}); pmf mean {dn.mean:,.0f} "
        f"(diff {abs(dn.mean - t.expected) / t.expected:.3%}); "
        f"P10 <= expected <= P90: {t.p10 <= t.expected <= t.p90}"
    )
    for q in ("p10", "p50", "p90"):
        exact, sim = getattr(t, q), mc[q]
        print(
            f"  {q.upper()}: exact {exact:,.0f}  Monte Carlo {sim:,.0f}  "
            f"diff {abs(exact - sim) / exact:.3%}"
        )
    start = time.perf_counter()
    from leadml.forecast import distribution as dist

    rng = np.random.default_rng(0)
    amounts, probs = rng.lognormal(10, 1.2, 2_000), rng.random(2_000)
    d = dist.open_deals(amounts, probs, max_cells=1 << 19, shock_sd=0.5)
    print(
        f"\n2,000 deals, 524,288 cells, shared shock (7 nodes): "
        f"{time.perf_counter() - start:.2f} s, "
        f"error bound {d.error_bound / d.mean:.3%} of the mean"
    )
    con.close()


if __name__ == "__main__":
    main()
