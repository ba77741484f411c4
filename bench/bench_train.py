"""Training time of the lead-readiness / deal-close models for a given training-set size.

Prints the time of one LightGBM fit, of the logistic baseline, and of the whole
procedure (rolling-origin backtest with calibration + final fit), with rows per
second. Uses synthetic snapshots (``leadml.modeling.synthetic``) of the requested
size, or a saved training set (``--frame file.parquet``, e.g. from
``leadml dataset``) with the shipped model spec.

    .venv/bin/python bench/bench_train.py --rows 1000000
    .venv/bin/python bench/bench_train.py --model deal_close --rows 200000
    .venv/bin/python bench/bench_train.py --frame lead.parquet --spec models/lead_readiness.yaml
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from leadml.modeling import synthetic
from leadml.modeling.spec import ModelSpec, load_spec
from leadml.modeling.train import CategoryEncoder, check_dataset, fit_baseline, fit_booster, train


def _spec(args: argparse.Namespace) -> ModelSpec:
    if args.spec:
        spec = load_spec(args.spec)
    elif args.model == "lead_readiness":
        spec = ModelSpec(
            name="lead_readiness",
            kind="lead_readiness",
            features=synthetic.READINESS_FEATURES,
            min_positives=50,
        )
    else:
        spec = ModelSpec(
            name="deal_close",
            kind="deal_close",
            features=synthetic.DEAL_FEATURES,
            min_positives=50,
            target={"horizon_days": 90, "shift_features": ["days_to_expected_close"]},
            backtest={"gap_days": 0},
        )
    est = spec.estimator.model_copy(update={"num_threads": args.threads})
    return spec.model_copy(update={"estimator": est})


def _frame(args: argparse.Namespace, spec: ModelSpec) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if args.frame:
        return pd.read_parquet(args.frame), None
    weeks = max(30, min(104, args.rows // 5_000))
    if spec.kind == "lead_readiness":
        return synthetic.readiness_frame(args.rows, weeks=weeks, seed=1)
    return synthetic.deal_frame(max(100, args.rows // 4), weeks=weeks, seed=1)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=["lead_readiness", "deal_close"], default="lead_readiness")
    p.add_argument(
        "--rows", type=int, default=200_000, help="synthetic snapshots (ignored with --frame)"
    )
    p.add_argument("--frame", type=Path, help="a saved training set (parquet)")
    p.add_argument(
        "--spec", type=Path, help="model spec YAML (default: a spec for the synthetic features)"
    )
    p.add_argument("--threads", type=int, default=0, help="LightGBM threads (0 = all cores)")
    p.add_argument("--no-backtest", action="store_true", help="time only the single fits")
    args = p.parse_args()

    spec = _spec(args)
    t0 = time.perf_counter()
    frame, truth = _frame(args, spec)
    frame = check_dataset(frame, spec)
    made = time.perf_counter() - t0
    print(
        f"{spec.name}: {len(frame):,} snapshots x "
        f"{len(spec.features)} features (prepared in {made:.1f}s)"
    )

    enc = CategoryEncoder(spec.features).fit(frame)
    X = enc.transform(frame)
    if spec.kind == "lead_readiness":
        y = frame["label"].to_numpy()
        objective = None
    else:
        from leadml.modeling.train import _deal_training_rows, _DealShape

        t = spec.target
        X, y = _deal_training_rows(
            frame, enc, _DealShape(t.week_days, list(t.shift_features)), t.week_days, t.max_weeks
        )
        objective = {"objective": "multiclass", "num_class": 3}
        print(f"  hazard rows (deal-weeks): {len(X):,}")
    rounds = spec.estimator.num_boost_round
    t0 = time.perf_counter()
    fit_booster(X, y, spec.estimator, num_boost_round=rounds, objective=objective)
    one = time.perf_counter() - t0
    print(f"  one LightGBM fit, {rounds} rounds: {one:.1f}s ({len(X) / one:,.0f} rows/s)")
    if spec.kind == "lead_readiness":
        t0 = time.perf_counter()
        fit_baseline(X, y, spec, enc.categorical)
        base = time.perf_counter() - t0
        print(f"  logistic baseline fit: {base:.1f}s")
    if args.no_backtest:
        return
    t0 = time.perf_counter()
    result = train(
        frame, spec, truth=truth, capacity=200 if spec.kind == "lead_readiness" else None
    )
    total = time.perf_counter() - t0
    m = result.metrics
    print(
        f"  full procedure ({len(result.folds)} backtest "
        "folds x (fit + calibration + refit) + baseline, "
        f"final fit): {total:.1f}s, {len(frame) / total:,.0f} snapshots/s"
    )
    print(
        f"  backtest ROC AUC {m['roc_auc']:.4f} (baseline "
        f"{m.get('baseline_roc_auc', np.nan):.4f}), "
        f"ECE {m['ece']:.4f}; final rounds {result.model.rounds}"
    )
    if "roc_auc_vs_oracle" in m:
        print(f"  ROC AUC / oracle ROC AUC: {m['roc_auc_vs_oracle']:.3f}")


if __name__ == "__main__":
    main()
