"""Diagnostic plots of a training run, written as PNG files (matplotlib Agg).

Each function takes scored backtest rows (``label``, ``p_model``, optionally
``p_baseline``) or a fitted model and writes one figure; nothing is shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from leadml.modeling.evaluate import calibration_table


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def calibration_plot(scored: pd.DataFrame, path: Path, title: str = "Calibration") -> Path:
    """Observed rate vs mean predicted probability in 10 equal-count bins."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for col, label in (
        ("p_model", "LightGBM (calibrated)"),
        ("p_baseline", "logistic baseline"),
        ("p_oracle", "oracle"),
    ):
        if col not in scored.columns:
            continue
        rows = scored[scored[col].notna()]
        y = rows["y_oracle" if col == "p_oracle" else "label"].astype(float)
        t = calibration_table(y.to_numpy(), rows[col].to_numpy())
        ax.plot(t["predicted"], t["observed"], marker="o", label=label)
        top = max(top, float(t["predicted"].max()), float(t["observed"].max()))
    top = min(1.0, top * 1.05 + 1e-3)
    ax.plot([0, top], [0, top], "k--", linewidth=1, label="perfect")
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed rate",
        title=title,
        xlim=(0, top),
        ylim=(0, top),
    )
    ax.legend()
    return _save(fig, path)


def gain_plot(scored: pd.DataFrame, path: Path, title: str = "Cumulative gain") -> Path:
    """Share of positives captured vs share of rows contacted, best-scored first, with lift."""
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    y = scored["label"].to_numpy(dtype=float)
    share = np.arange(1, len(y) + 1) / max(len(y), 1)
    for col, label in (("p_model", "LightGBM"), ("p_baseline", "logistic baseline")):
        if col not in scored.columns:
            continue
        order = np.argsort(-scored[col].to_numpy(), kind="stable")
        captured = np.cumsum(y[order]) / max(y.sum(), 1)
        ax.plot(share, captured, label=label)
        ax2.plot(share[len(y) // 100 :], (captured / share)[len(y) // 100 :], label=label)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="random")
    ax.set(xlabel="share of rows contacted", ylabel="share of positives captured", title=title)
    ax2.axhline(1, color="k", linestyle="--", linewidth=1)
    ax2.set(xlabel="share of rows contacted", ylabel="lift", title="Cumulative lift")
    ax.legend()
    ax2.legend()
    return _save(fig, path)


def importance_plot(
    importance: pd.Series, path: Path, title: str = "Feature importance (gain)"
) -> Path:
    """Horizontal bars of the top 25 features by total gain."""
    plt = _plt()
    top = importance.sort_values(ascending=True).tail(25)
    fig, ax = plt.subplots(figsize=(7, max(3, 0.3 * len(top) + 1)))
    ax.barh(top.index.astype(str), top.to_numpy())
    ax.set(xlabel="total gain", title=title)
    return _save(fig, path)


def score_distribution_plot(
    scored: pd.DataFrame, path: Path, title: str = "Scores by outcome"
) -> Path:
    """Histograms of the calibrated probability for positive and negative rows."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, max(1e-3, float(scored["p_model"].max())), 40)
    for value, label in ((0, "negative"), (1, "positive")):
        part = scored.loc[scored["label"] == value, "p_model"]
        ax.hist(part, bins=bins, alpha=0.6, density=True, label=f"{label} ({len(part):,})")
    ax.set(xlabel="calibrated probability", ylabel="density", title=title)
    ax.legend()
    return _save(fig, path)


def booster_importance(booster: object, features: list[str]) -> pd.Series:
    """Total gain per input feature (hazard helpers folded into their feature)."""
    names = booster.feature_name()  # type: ignore[attr-defined]
    gain = booster.feature_importance(importance_type="gain")  # type: ignore[attr-defined]
    out = pd.Series(0.0, index=features + (["week"] if "week" in names else []))
    for n, g in zip(names, gain, strict=True):
        key = n.removeprefix("_shift_")
        if key in out.index:
            out[key] += float(g)
    return out


def _save(fig: object, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=100)  # type: ignore[attr-defined]
    _plt().close(fig)
    return path
