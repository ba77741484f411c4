"""Training time of the lead-readiness / deal-close models for a given training-set size.

Prints the time of one LightGBM fit, of the logistic baseline, and of the whole
procedure (rolling-origin backtest with calibration + final fit), with rows per
second. Uses synthetic snapshots (``leadml.modeling.synthetic``) of the requested
size, or a saved training set (``--frame file.parquet``, e.g. from
``leadml dataset``) with the shipped model spec.

    .venv/bin/python bench/bench_train.py --rows 1000000
    .venv/bin/python bench/bench_train.py --model deal_close --rows 200000
    .venv/bin/python bench/bench_train.py --frame lead.parquet --spec models/lead_readiness.yaml
    .venv/bin/python bench/bench_train.py --score-rows 1000000 [--frame lead.parquet --spec ...]

``--score-rows N``: batch scoring throughput instead of training. Fits a small model,
repeats the input to N rows and compares ``ScoringBundle.predict_proba`` (encoding +
booster + calibration, the nightly batch's path) with raw ``Booster.predict`` on
pre-encoded rows, and times the category encoding alone.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
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
    if args.frame:  # as `leadml train --dataset` reads it: lean
        from leadml.modeling.workflow import load_training_set

        return load_training_set(args.frame, spec), None
    weeks = max(30, min(104, args.rows // 5_000))
    if spec.kind == "lead_readiness":
        return synthetic.readiness_frame(args.rows, weeks=weeks, seed=1)
    return synthetic.deal_frame(max(100, args.rows // 4), weeks=weeks, seed=1)


def _timed(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _per_value_encoding(enc: CategoryEncoder, X: pd.DataFrame) -> pd.DataFrame:
    """The encoding before vectorisation (text per value, then pd.Categorical): the reference."""
    out: dict[str, object] = {}
    for f in enc.features:
        col = X[f]
        if f in enc.categories_:
            text = col.astype("string").astype(object).where(col.notna(), None)
            text = text.where(text.isin(enc.categories_[f]), None)
            out[f] = pd.Categorical(text, categories=enc.categories_[f])
        else:
            out[f] = pd.to_numeric(col, errors="coerce").astype(float)
    return pd.DataFrame(out, index=X.index)


def bench_scoring(frame: pd.DataFrame, spec: ModelSpec, rows: int) -> None:
    """Bundle scoring throughput vs raw ``Booster.predict`` on ``rows`` rows (lead readiness)."""
    from leadml.modeling.bundle import ScoringBundle
    from leadml.modeling.calibrate import Calibrator

    if spec.kind != "lead_readiness":
        raise SystemExit(
            "--score-rows benches the lead-readiness bundle; use --model lead_readiness"
        )
    enc = CategoryEncoder(spec.features).fit(frame)
    fit_rows = frame.iloc[:: max(1, len(frame) // 200_000)]  # the model is not what is timed
    y = fit_rows["label"].to_numpy()
    booster, _ = fit_booster(enc.transform(fit_rows), y, spec.estimator, num_boost_round=100)
    cal = Calibrator().fit(booster.predict(enc.transform(fit_rows)), y)
    bundle = ScoringBundle(
        name=spec.name,
        kind=spec.kind,
        features=list(spec.features),
        categories=dict(enc.categories_),
        booster_text=booster.model_to_string(),
        rounds=100,
        calibrator=cal.to_dict(),
        reference={},
    )
    reps = -(-rows // len(frame))
    X = pd.concat([frame[spec.features]] * reps, ignore_index=True).iloc[:rows]
    model = bundle.model
    encoded = model.encoder.transform(X)
    # interleaved, best of 3: a busy machine slows whichever runs during a burst
    t_raw = t_bundle = t_enc = float("inf")
    for _ in range(3):
        t_raw = min(t_raw, _timed(lambda: model.booster.predict(encoded, num_iteration=100), 1))
        t_bundle = min(t_bundle, _timed(lambda: bundle.predict_proba(X), 1))
        t_enc = min(t_enc, _timed(lambda: model.encoder.transform(X), 1))
    t_old = _timed(lambda: _per_value_encoding(model.encoder, X), repeat=1)
    same = np.array_equal(
        model.calibrator.predict(
            model.booster.predict(_per_value_encoding(model.encoder, X), num_iteration=100)
        ),
        bundle.predict_proba(X),
    )
    print(f"  scoring {rows:,} rows x {len(spec.features)} features, 100 trees:")
    print(f"    raw Booster.predict (pre-encoded):  {t_raw:6.2f}s  {rows / t_raw:12,.0f} rows/s")
    print(
        f"    ScoringBundle.predict_proba:        {t_bundle:6.2f}s  {rows / t_bundle:12,.0f} rows/s"
    )
    print(f"    bundle / raw throughput:            {t_raw / t_bundle:6.2f}x")
    print(f"    category encoding (vectorised):     {t_enc:6.2f}s")
    print(f"    per-value encoding (before):        {t_old:6.2f}s  ({t_old / t_enc:.1f}x slower)")
    print(f"    identical probabilities to the per-value encoding: {same}")


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
    p.add_argument("--threads", type=int, default=0, help="LightGBM threads (0 = physical cores)")
    p.add_argument("--score-rows", type=int, help="bench batch scoring on this many rows")
    p.add_argument("--no-backtest", action="store_true", help="time only the single fits")
    p.add_argument(
        "--procedure-only",
        action="store_true",
        help="skip the single fits (they encode the whole set at once: too big at 1M leads)",
    )
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
    if args.score_rows:
        bench_scoring(frame, spec, args.score_rows)
        return

    if not args.procedure_only:
        _single_fits(frame, spec)
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
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(result.timings.items()))
    print(f"  phases (wall, nested: backtest_models/final_model include booster etc.): {phases}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"  peak RSS {peak:.2f} GiB (loading included)")


def _single_fits(frame: pd.DataFrame, spec: ModelSpec) -> None:
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
        cap = spec.baseline.max_rows or len(X)
        fit_baseline(X.iloc[:cap], y[:cap], spec, enc.categorical)
        base = time.perf_counter() - t0
        print(f"  logistic baseline fit ({min(cap, len(X)):,} rows): {base:.1f}s")


if __name__ == "__main__":
    main()
