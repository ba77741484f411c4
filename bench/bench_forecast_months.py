"""Monthly forecasts on the simulated company: error, P10-P90 coverage and stability.

Run (after `leadml simulate`):

    .venv/bin/python bench/bench_forecast_months.py [--data DIR] [--start 2024-07-01]

With the empirical close rates (the default probability source), forecasts each month
as of every Monday from ``--start`` to 5 weeks before the data's end (this month and
next month) and as of every day (this month), and compares them with the revenue then
won in the month. Prints MAPE, the share of actuals inside P10-P90 and the median
forecast / actual by month of the quarter (wins bunch in a quarter's last month), and
how much this month's forecast moves from one day to the next. Figures, not
assertions; docs/forecast.md quotes them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    from leadml.config import load_settings
    from leadml.contracts import connect
    from leadml.forecast.deals import DealHistory, parse_period
    from leadml.forecast.forecast import forecast

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--start", default="2024-07-01")
    args = parser.parse_args()
    s = load_settings()
    con, _ = connect(args.data or s.data_dir, s.vocabulary)
    history = DealHistory(con, s.vocabulary)
    last = history.data_end - pd.Timedelta(days=35)
    start = pd.Timestamp(args.start, tz="UTC")

    def one(t: pd.Timestamp, ahead: int) -> dict[str, object] | None:
        per = parse_period((t + pd.DateOffset(months=ahead)).strftime("%Y-%m"))
        if per.end > history.data_end:
            return None
        r = forecast(
            con, as_of=t, period=per, config=s.forecast, vocab=s.vocabulary, history=history
        )
        actual = float(history.won_in(per.start, per.end, before=per.end)["won_amount"].sum())
        total = r.total
        return {
            "as_of": t,
            "ahead": ahead,
            "month_of_quarter": (per.start.month - 1) % 3 + 1,
            "expected": total.expected,
            "actual": actual,
            "inside": total.p10 <= actual <= total.p90,
        }

    def summary(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
        df = df.assign(
            ape=(df["expected"] - df["actual"]).abs() / df["actual"],
            ratio=df["expected"] / df["actual"],
        )
        return (
            df.groupby(by)
            .agg(
                n=("ape", "size"),
                mape=("ape", "mean"),
                coverage=("inside", "mean"),
                median_forecast_over_actual=("ratio", "median"),
            )
            .round(3)
        )

    mondays = pd.date_range(start, last, freq="W-MON")
    weekly = pd.DataFrame([r for t in mondays for a in (0, 1) if (r := one(t, a))])
    print(f"data: {args.data or s.data_dir}; Mondays {mondays[0].date()}..{mondays[-1].date()}")
    print("\nas of every Monday, this month (ahead 0) and next month (ahead 1):")
    print(summary(weekly, ["ahead"]).to_string())
    print(summary(weekly, ["ahead", "month_of_quarter"]).to_string())
    days = pd.date_range(start, last, freq="D")
    daily = pd.DataFrame([r for t in days if (r := one(t, 0))])
    same = daily["as_of"].dt.month == daily["as_of"].shift(1).dt.month
    jump = (daily["expected"] / daily["expected"].shift(1) - 1).abs()[same]
    print("\nas of every day, this month:")
    print(summary(daily, ["ahead"]).to_string())
    print(
        f"day-to-day change of the expected value: median {jump.median():.3f}, "
        f"90th percentile {jump.quantile(0.9):.3f}"
    )


if __name__ == "__main__":
    main()
