"""Metrics for calibrated probability models.

All functions are pure: they take labels and probabilities (or a frame of
scored rows) and return numbers. Metric names are the ones logged to MLflow:
``roc_auc``, ``pr_auc``, ``brier``, ``log_loss``, ``ece`` (10 equal-width bins),
``ece_quantile`` (10 equal-count bins), ``mean_probability`` and
``mean_ratio_error`` (calibration in the large: ``|mean(p) / mean(y) - 1|``, which
equal-width bins miss when nearly every probability is below 0.1: there a model
scaled 3x still has an ECE under 0.02), ``lift_top_decile``,
``precision_at_capacity`` and ``recall_at_capacity`` (IS can call only the N
highest-scored leads of each as-of week), plus ``rows``, ``positives`` and
``base_rate``. A metric that is undefined on the rows (e.g. ROC AUC with one
class) is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from leadml.modeling.spec import CARD_METRICS

if TYPE_CHECKING:
    from leadml.modeling.spec import ModelSpec
    from leadml.modeling.train import TrainingResult

HEADLINE = ("roc_auc", "pr_auc", "brier", "log_loss", "ece", "lift_top_decile")


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, bins: int = 10, strategy: str = "uniform"
) -> float:
    """Weighted mean |mean(p) - mean(y)| over ``bins`` bins of ``p``.

    ``uniform``: equal-width bins on [0, 1]; ``quantile``: equal-count bins.
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0:
        return math.nan
    if strategy == "uniform":
        idx = np.clip((p * bins).astype(int), 0, bins - 1)
    elif strategy == "quantile":
        order = np.argsort(p, kind="stable")
        idx = np.empty(len(p), dtype=int)
        idx[order] = (np.arange(len(p)) * bins) // len(p)
    else:
        raise ValueError(f"unknown ECE strategy {strategy!r}")
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    return float(np.abs(sum_p - sum_y).sum() / len(y))


def mean_ratio_error(y: np.ndarray, p: np.ndarray) -> float:
    """Calibration in the large: ``|mean(p) / mean(y) - 1|``, the share by which the
    predicted count of positives misses the observed one (0.25: 25% too many or too few).
    NaN without rows or positives."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0 or y.sum() == 0:
        return math.nan
    return float(abs(p.mean() / y.mean() - 1.0))


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per equal-count bin: mean predicted, observed rate, rows (for the calibration plot)."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype=float), "p": np.asarray(p, dtype=float)})
    if frame.empty:
        return pd.DataFrame(columns=["predicted", "observed", "rows"])
    frame["bin"] = (np.argsort(np.argsort(frame["p"].to_numpy(), kind="stable")) * bins) // len(
        frame
    )
    out = frame.groupby("bin").agg(
        predicted=("p", "mean"), observed=("y", "mean"), rows=("y", "size")
    )
    return out.reset_index(drop=True)


def lift_at(y: np.ndarray, p: np.ndarray, fraction: float = 0.1) -> float:
    """Positive rate among the top ``fraction`` by score divided by the overall rate."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0 or y.sum() == 0:
        return math.nan
    k = max(1, int(math.ceil(fraction * len(y))))
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].mean() / y.mean())


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Ranking, probability-quality and calibration metrics of probabilities ``p``."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    out: dict[str, float] = {"rows": float(len(y)), "positives": float(y.sum())}
    out["base_rate"] = float(y.mean()) if len(y) else math.nan
    two_classes = len(y) > 0 and 0 < y.sum() < len(y)
    out["roc_auc"] = float(roc_auc_score(y, p)) if two_classes else math.nan
    out["pr_auc"] = float(average_precision_score(y, p)) if two_classes else math.nan
    out["brier"] = float(brier_score_loss(y, p)) if len(y) else math.nan
    out["log_loss"] = (
        float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])) if len(y) else math.nan
    )
    out["ece"] = expected_calibration_error(y, p)
    out["ece_quantile"] = expected_calibration_error(y, p, strategy="quantile")
    out["mean_probability"] = float(p.mean()) if len(y) else math.nan
    out["mean_ratio_error"] = mean_ratio_error(y, p)
    out["lift_top_decile"] = lift_at(y, p, 0.1)
    return out


def capacity_metrics(
    frame: pd.DataFrame, *, score: str, label: str, as_of: str = "as_of", capacity: int
) -> dict[str, float]:
    """Precision and recall when only the ``capacity`` best-scored rows of each as-of are called.

    Recall is the share of all positives (over every as-of) that were called.
    """
    if capacity < 1:
        raise ValueError("capacity must be at least 1")
    if frame.empty:
        return {"precision_at_capacity": math.nan, "recall_at_capacity": math.nan}
    ranked = frame[[as_of, score, label]].copy()
    ranked["_rank"] = ranked.groupby(as_of)[score].rank(method="first", ascending=False)
    called = ranked[ranked["_rank"] <= capacity]
    positives = float(ranked[label].sum())
    return {
        "precision_at_capacity": float(called[label].mean()) if len(called) else math.nan,
        "recall_at_capacity": float(called[label].sum() / positives) if positives else math.nan,
    }


def evaluate_scores(
    frame: pd.DataFrame,
    *,
    score: str,
    label: str,
    capacity: int | None = None,
    as_of: str = "as_of",
    segment: str | None = None,
) -> dict[str, float]:
    """Overall metrics of one score column, plus ``<segment>.<metric>`` per segment."""
    y = frame[label].to_numpy()
    p = frame[score].to_numpy()
    out = binary_metrics(y, p)
    if capacity is not None:
        out.update(
            capacity_metrics(frame, score=score, label=label, as_of=as_of, capacity=capacity)
        )
    if segment and segment in frame.columns:
        for seg, part in frame.groupby(segment, observed=True, sort=True):
            for name, value in binary_metrics(
                part[label].to_numpy(), part[score].to_numpy()
            ).items():
                if name in HEADLINE or name in ("rows", "positives"):
                    out[f"{seg}.{name}"] = value
    return out


def prefixed(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    """``{"roc_auc": x}`` -> ``{"<prefix>roc_auc": x}``."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()}


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when undefined."""
    if denominator is None or not np.isfinite(denominator) or denominator == 0:
        return math.nan
    return float(numerator / denominator)


def calibration_used(model: object, spec: ModelSpec) -> str:
    """The calibration the fitted model applies: deal close calibrates its hazards per
    period by matrix scaling (``hazard_matrix_scaling``), ``calibration.method`` being
    only its fallback when the slice lacks an outcome."""
    if getattr(model, "hazard_calibration", None) is not None:
        return "hazard_matrix_scaling"
    return str(spec.calibration.method)


def _figure(m: Mapping[str, float], key: str) -> str:
    v = m.get(key, math.nan)
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _count(m: Mapping[str, float], key: str) -> str:
    v = m.get(key, math.nan)
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v):,}"


def _metrics_table(m: Mapping[str, float], kind: str) -> list[str]:
    """The card's backtest table: model and baseline on all test rows and, with an oracle,
    the model and the oracle on the oracle rows (those the simulator's truth answers; for
    deal close, "won by" the truth's period end), each column saying which rows it is on."""
    oracle = "oracle_roc_auc" in m or "model_on_oracle_rows_roc_auc" in m
    question = (
        " (labels: won by the truth's period end nearest the horizon, so the positives differ)"
        if kind == "deal_close"
        else ""
    )
    lines = [
        f"All test rows: {_count(m, 'rows')} rows, {_count(m, 'positives')} positives."
        + (
            f" Oracle rows: {_count(m, 'oracle_rows')} rows, "
            f"{_count(m, 'oracle_positives')} positives{question}."
            if oracle
            else ""
        ),
        "",
    ]
    if oracle:
        lines += [
            "| metric | model (all test rows) | logistic baseline (all test rows) "
            "| model (oracle rows) | oracle (oracle rows) |",
            "| --- | --- | --- | --- | --- |",
        ]
    else:
        lines += ["| metric | model | logistic baseline |", "| --- | --- | --- |"]
    for key in CARD_METRICS:
        if key not in m:
            continue
        row = f"| {key} | {_figure(m, key)} | {_figure(m, 'baseline_' + key)} |"
        if oracle:
            row += f" {_figure(m, 'model_on_oracle_rows_' + key)} | {_figure(m, 'oracle_' + key)} |"
        lines.append(row)
    if "roc_auc_vs_oracle" in m:
        lines.append(
            f"\nROC AUC / oracle ROC AUC, both on the oracle rows: "
            f"{_figure(m, 'model_on_oracle_rows_roc_auc')} / {_figure(m, 'oracle_roc_auc')} = "
            f"{_figure(m, 'roc_auc_vs_oracle')}"
        )
    return lines


def model_card(
    result: TrainingResult, *, version: str | None = None, run_id: str | None = None
) -> str:
    """A markdown model card for a :class:`~leadml.modeling.train.TrainingResult`:
    data window, rows, positives, backtest metrics beside baseline and oracle, folds, limits."""
    r = result
    spec = r.spec
    m = r.metrics
    start, end = r.data_window

    target = (
        f"lead becomes SQL / opportunity within {spec.target.horizon_days} days of the as-of time"
        if spec.kind == "lead_readiness"
        else "deal won by as_of + d (discrete-time hazard, "
        f"{spec.target.week_days}-day periods up to {spec.target.max_weeks}); "
        f"headline d = {spec.target.horizon_days} days"
    )
    lines = [
        f"# Model card: {spec.name}"
        + (f" version {version}" if version else " (not registered: no version)"),
        "",
        spec.description or "",
        "",
        f"- **Target**: {target}",
        f"- **Training set (as-of)**: {start:%Y-%m-%d} to {end:%Y-%m-%d}; {r.rows:,} rows, "
        f"{r.positives:,} positives (MLflow params train_rows / train_positives)",
        f"- **Features** ({len(spec.features)}, hash {r.feature_hash}): {', '.join(spec.features)}",
        f"- **Estimator**: LightGBM, {r.model.rounds} rounds; "
        f"calibration {calibration_used(r.model, spec)} on the "
        f"last {spec.calibration.holdout_days} days of each training window",
        f"- **Backtest**: {len(r.folds)} rolling origins, gap {spec.backtest.gap_days} days, "
        f"test windows of {spec.backtest.test_days} days",
    ]
    if run_id:
        lines.append(f"- **MLflow run**: `{run_id}`")
    lines += ["", "## Backtest metrics (all test windows)", "", *_metrics_table(m, spec.kind)]
    lines += [
        "",
        "## Folds",
        "",
        "| test window from | train rows | train positives | test rows | ROC AUC | Brier | ECE "
        "| mean ratio error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fold in r.folds:
        fm = fold.metrics
        lines.append(
            f"| {fold.origin:%Y-%m-%d} | {fold.train_rows:,} | "
            f"{fold.train_positives:,} | {fold.test_rows:,} | "
            f"{fm.get('roc_auc', math.nan):.4f} | "
            f"{fm.get('brier', math.nan):.4f} | {fm.get('ece', math.nan):.4f} | "
            f"{fm.get('mean_ratio_error', math.nan):.4f} |"
        )
    lines += [
        "",
        "## Limits",
        "",
        "- Probabilities are calibrated on the latest slice of the training window; a shift in the "
        "lead mix or the sales process after it degrades calibration first (watch drift and ECE).",
        "- The backtest measures the exact training "
        "procedure, on data before the final fit; the final "
        "model has seen the test windows.",
    ]
    if spec.kind == "deal_close":
        lines.append(
            f"- P(won by d) for d beyond {spec.target.week_days * spec.target.max_weeks} days is "
            "capped at that horizon."
        )
    for note in r.notes:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"
