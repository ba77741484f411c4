"""Forecast pictures (PNG, matplotlib's Agg backend; no display needed).

- :func:`fan_chart`: the quarter's forecasts week by week (each made with the data
  before its week): P10-P90 band, P50, won to date, the target and, once the
  quarter is over, the actual.
- :func:`waterfall`: won + expected from open deals + expected from new deals
  against the target, with the P10-P90 range of the total.
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


def fan_chart(
    path_frame: pd.DataFrame,
    target: Path | str,
    *,
    title: str,
    actual: float | None = None,
) -> Path:
    """Write the fan chart of ``path_frame`` (from :func:`forecast_path`) to ``target``."""
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
        ax.set_title(title)
        ax.set_xlabel("as of (week)")
        ax.set_ylabel("revenue in period")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        with atomic_path(Path(target)) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(target)


def waterfall(result: ForecastResult, target: Path | str) -> Path:
    """Write the won / open / new waterfall of ``result`` against its target."""
    plt = _pyplot()
    t = result.total
    steps = [("won", t.won), ("open deals", t.open_expected), ("new deals", t.new_expected)]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        bottom = 0.0
        colors = ["tab:green", "tab:blue", "tab:orange"]
        for i, ((_name, value), color) in enumerate(zip(steps, colors, strict=True)):
            ax.bar(i, value, bottom=bottom, color=color)
            ax.text(i, bottom + value / 2, f"{value:,.0f}", ha="center", va="center", fontsize=8)
            bottom += value
        ax.bar(3, t.expected, color="tab:gray")
        ax.errorbar(
            3,
            t.p50,
            yerr=[[t.p50 - t.p10], [t.p90 - t.p50]],
            fmt="o",
            color="black",
            capsize=6,
            label="P50 with P10-P90",
        )
        if np.isfinite(t.target):
            ax.axhline(t.target, color="tab:red", linestyle=":", label=f"target {t.target:,.0f}")
        ax.set_xticks(range(4), [s[0] for s in steps] + ["expected"])
        ax.set_title(
            f"{result.period.label} as of {result.as_of:%Y-%m-%d}: P(target) {t.p_reach_target:.1%}"
            if np.isfinite(t.p_reach_target)
            else f"{result.period.label} as of {result.as_of:%Y-%m-%d}"
        )
        ax.set_ylabel("revenue in period")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        with atomic_path(Path(target)) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(target)
