"""Forecast pictures (PNG, matplotlib's Agg backend; no display needed).

- :func:`fan_chart`: the quarter's forecasts week by week (each made with the data
  before its week): P10-P90 band, P50, won to date, the target and, once the
  quarter is over, the actual; with the period's end, the x axis runs to it and the
  weeks left are shaded.
- :func:`waterfall`: won + expected from open deals + expected from new deals
  against the target, with the P10-P90 range of the total.

Amounts on the y axes read as money (850k, 1.2M), not as multiples of a 1e6 offset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from leadml.forecast.forecast import ForecastResult
from leadml.sources import atomic_path


def _pyplot():  # noqa: ANN202 - matplotlib is imported lazily, only when drawing
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def money_label(value: float, digits: int = 4) -> str:
    """An amount as a short money figure: 0, 850k, 1.25M, 2B (up to ``digits``
    significant digits)."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{unit}"
    return f"{value:.{digits}g}"


def _money_axis(ax) -> None:  # noqa: ANN001 - a matplotlib Axes
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: money_label(v)))


def fan_chart(
    path_frame: pd.DataFrame,
    target: Path | str,
    *,
    title: str,
    actual: float | None = None,
    period_start: pd.Timestamp | None = None,
    period_end: pd.Timestamp | None = None,
) -> Path:
    """Write the fan chart of ``path_frame`` (from :func:`forecast_path`) to ``target``.

    With ``period_end`` the x axis runs from ``period_start`` (default: the first point)
    to the period's end, and the time from the last forecast to the end is shaded and
    labelled with the weeks left."""
    plt = _pyplot()
    f = path_frame.sort_values("as_of")
    x = pd.to_datetime(f["as_of"]).dt.tz_convert(None)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    try:
        ax.fill_between(x, f["p10"], f["p90"], alpha=0.25, color="tab:blue", label="P10-P90")
        ax.plot(x, f["p50"], color="tab:blue", marker="o", label="P50")
        ax.plot(x, f["won"], color="tab:green", linestyle="--", label="won to date")
        tgt = f["target"].dropna()
        if len(tgt):
            ax.axhline(float(tgt.iloc[-1]), color="tab:red", linestyle=":", label="target")
        if actual is not None:
            ax.axhline(actual, color="black", linewidth=1, label="actual")
        if period_end is not None:
            end = _naive(period_end)
            start = _naive(period_start) if period_start is not None else x.iloc[0]
            last = x.iloc[-1]
            ax.set_xlim(min(start, x.iloc[0]), end)
            if last < end:
                weeks = (end - last) / pd.Timedelta(days=7)
                ax.axvspan(last, end, color="0.5", alpha=0.12, linewidth=0)
                ax.text(
                    last + (end - last) / 2,
                    0.02,
                    f"{weeks:.1f} weeks left",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color="0.3",
                )
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("as of (week)")
        ax.set_ylabel("revenue in period")
        _money_axis(ax)
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        days = AutoDateLocator(minticks=4, maxticks=8)
        ax.xaxis.set_major_locator(days)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(days, show_offset=False))
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(Path(target)) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(target)


def _naive(ts: pd.Timestamp) -> pd.Timestamp:
    """UTC without the zone (the x axis holds naive datetimes)."""
    ts = pd.Timestamp(ts)
    return ts.tz_convert(None) if ts.tzinfo is not None else ts


def waterfall(result: ForecastResult, target: Path | str) -> Path:
    """Write the won / open / new waterfall of ``result`` against its target."""
    plt = _pyplot()
    t = result.total
    steps = [("won", t.won), ("open deals", t.open_expected), ("new deals", t.new_expected)]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        top = max(t.expected, t.p90, t.target if np.isfinite(t.target) else 0.0) or 1.0
        bottom = 0.0
        colors = ["tab:green", "tab:blue", "tab:orange"]
        for i, ((_name, value), color) in enumerate(zip(steps, colors, strict=True)):
            ax.bar(i, value, bottom=bottom, color=color)
            if value >= 0.06 * top:  # inside the bar
                ax.text(
                    i, bottom + value / 2, f"{value:,.0f}", ha="center", va="center", fontsize=8
                )
            else:  # too thin to hold its label: above it
                ax.text(i, bottom + value, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
            bottom += value
        ax.bar(3, t.expected, color="tab:gray")
        ax.text(
            3,
            t.expected / 2,
            f"{t.expected:,.0f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white",
            fontweight="bold",
        )
        ax.errorbar(
            3,
            t.p50,
            yerr=[[t.p50 - t.p10], [t.p90 - t.p50]],
            fmt="o",
            color="black",
            capsize=6,
            label="P50 with P10-P90",
        )
        for name, value in (("P90", t.p90), ("P50", t.p50), ("P10", t.p10)):
            ax.text(3.12, value, f"{name} {money_label(value, 3)}", va="center", fontsize=7)
        if np.isfinite(t.target):
            ax.axhline(t.target, color="tab:red", linestyle=":", label=f"target {t.target:,.0f}")
        ax.set_xticks(range(4), [s[0] for s in steps] + ["expected"])
        ax.set_title(
            f"{result.period.label} as of {result.as_of:%Y-%m-%d}: P(target) {t.p_reach_target:.1%}"
            if np.isfinite(t.p_reach_target)
            else f"{result.period.label} as of {result.as_of:%Y-%m-%d}"
        )
        ax.set_ylabel("revenue in period")
        _money_axis(ax)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        with atomic_path(Path(target)) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(target)
