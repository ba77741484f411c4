"""Model quality across simulator seeds: how much of a goal's miss is the company's luck?

For each seed: simulate the default company (or ``--leads N``), build the training set
of each model with the shipped spec, run the backtest (``workflow.train_spec``: the
same procedure as ``leadml train``) and print, per seed, the issue's goals beside the
oracle on the same rows. For deal close it also prints, per backtest fold, the
realized share of deals won within 90 days against its true probability (the
simulator's ``as_of + 13 weeks`` truth) in the fold's calibration slice and test
window: a model learns the realized rate, the oracle knows the true one, so a lucky
calibration slice shows up as a level error no model trained on that history avoids.

    .venv/bin/python bench/bench_seeds.py --seeds 7,8,9,10,11,12
    .venv/bin/python bench/bench_seeds.py --seeds 7,8 --models deal-close --keep /tmp/seeds

About 1.5 minutes per seed and model at 20,000 leads on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from leadml.config import load_settings
from leadml.modeling import workflow
from leadml.modeling.spec import ModelSpec
from leadml.simulate import simulate
from leadml.simulate.truth import DEAL_HORIZON_WEEKS

DAY = pd.Timedelta(days=1)


def with_truth(frame: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """The deal snapshots with their true P(won within 90 days) (the simulator's
    ``as_of + 13 weeks`` row)."""
    truth = truth.assign(
        as_of=pd.to_datetime(truth["as_of"], utc=True),
        period_end=pd.to_datetime(truth["period_end"], utc=True),
    )
    t = truth[(truth["period_end"] - truth["as_of"]) == DEAL_HORIZON_WEEKS * 7 * DAY]
    return frame.merge(t[["opportunity_id", "as_of", "p_won_by"]], on=["opportunity_id", "as_of"])


def realized_vs_true(m: pd.DataFrame, spec: ModelSpec, origin: pd.Timestamp) -> str:
    """Won within the horizon, realized vs true, in the calibration slice and the test
    window of the fold cut at ``origin`` (the slice as :func:`fit_deal_close` takes it);
    ``m``: :func:`with_truth`."""
    horizon = spec.target.horizon_days
    holdout = spec.calibration.holdout_days
    won_at = m["as_of"] + pd.to_timedelta(m["outcome_days"], unit="D")
    won = (m["outcome"] == "won") & (m["outcome_days"] <= horizon)
    out = []
    cal_end = origin - horizon * DAY
    for lo, hi, known in (
        (cal_end - holdout * DAY, cal_end, origin),
        (origin, origin + spec.backtest.test_days * DAY, None),
    ):
        part = (m["as_of"] >= lo) & (m["as_of"] < hi)
        y = (won & (won_at < known) if known is not None else won)[part].mean()
        p = m.loc[part, "p_won_by"].mean()
        out.append(f"{y:.3f} vs {p:.3f} ({y / p - 1:+.0%})")
    return " | ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", default="7,8,9", help="comma-separated simulator seeds")
    ap.add_argument("--leads", type=int, default=None, help="leads (default: simulator.leads)")
    ap.add_argument("--models", default="deal-close,lead-readiness")
    ap.add_argument("--keep", type=Path, default=None, help="keep the simulated data here")
    args = ap.parse_args()

    settings = load_settings()
    tmp = tempfile.TemporaryDirectory(prefix="leadml-seeds-")
    root = args.keep or Path(tmp.name)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        out = root / f"seed{seed}"
        cfg = settings.simulator.model_copy(
            update={"seed": seed, **({"leads": args.leads} if args.leads else {})}
        )
        if not (out / "simulation.json").exists():
            simulate(cfg, settings.vocabulary, out)
        data = workflow.open_data(settings, out)
        for kind in args.models.split(","):
            t0 = time.perf_counter()
            spec = workflow.load_model_spec(settings, kind)
            frame, _ = workflow.build_dataset(data, spec)
            truth = workflow.load_truth(out, spec)
            result = workflow.train_spec(frame, spec, data=data, truth=truth)
            m = result.metrics
            rows.append(
                {
                    "seed": seed,
                    "model": kind,
                    "ece": m["ece"],
                    "oracle_ece": m.get("oracle_ece"),
                    "roc_auc_vs_oracle": m.get("roc_auc_vs_oracle"),
                    "roc_auc": m["roc_auc"],
                    "baseline_roc_auc": m["baseline_roc_auc"],
                    "brier": m["brier"],
                    "baseline_brier": m["baseline_brier"],
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(pd.DataFrame([rows[-1]]).round(4).to_string(index=False), flush=True)
            if kind == "deal-close" and truth is not None:
                m = with_truth(result.train_frame, truth)
                print("  won within 90 days, realized vs true: calibration slice | test window")
                for fold in result.folds:
                    line = realized_vs_true(m, spec, fold.origin)
                    print(f"  fold from {fold.origin:%Y-%m-%d}: {line}")
    table = pd.DataFrame(rows)
    print("\nall seeds:")
    print(table.round(4).to_string(index=False))
    for kind, g in table.groupby("model"):
        print(
            f"{kind}: median ECE {statistics.median(g['ece']):.4f}; "
            f"ROC AUC / oracle >= 0.95 on {int((g['roc_auc_vs_oracle'] >= 0.95).sum())} of "
            f"{len(g)}; better than the baseline on ROC AUC "
            f"{int((g['roc_auc'] > g['baseline_roc_auc']).sum())}, "
            f"Brier {int((g['brier'] < g['baseline_brier']).sum())} of {len(g)}"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
