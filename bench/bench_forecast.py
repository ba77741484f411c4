"""Forecast benchmark on the simulated company: backtest goals, speed, exact vs Monte Carlo.

Run (after `leadml simulate`):

    .venv/bin/python bench/bench_forecast.py [--data DIR] [--quarters 6] [--weeks 13]
        [--model none|once|quarterly] [--skip-empirical]

Prints, for the empirical close rates (the documented baseline probability source),
the deal-close model (``--model``) and, when the simulator's truth is present, the oracle:

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

``--model once`` trains one deal-close model (``models/deal_close.yaml``, the Python API
of :mod:`leadml.modeling.workflow`) on snapshots before the first backtest as-of date,
with outcomes censored there; ``--model quarterly`` trains one per backtest quarter,
each on snapshots before that quarter's first as-of date (outcomes censored there).
Either way no forecast as of T uses a model that saw anything at or after T. The model
is the probability source through :class:`leadml.forecast.modelsource.ModelProbabilities`
(features point in time at every as-of, also the earlier ones the shared shock is
measured on). Nothing is logged to MLflow (training runs in memory).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd


def train_model_sources(
    settings,
    data: Path,
    periods: list,
    weeks: int,
    mode: str,
    history,
    calendar: bool = False,
    boundary_share: bool = True,
) -> tuple[dict[str, object], list[str]]:  # type: ignore[no-untyped-def]
    """Deal-close models trained before each backtest quarter (``quarterly``) or before the
    first one (``once``), as probability sources keyed by quarter label; and notes."""
    from leadml.batch.nightly import BundleChampion
    from leadml.errors import LeadmlError
    from leadml.features.catalog import load_catalog
    from leadml.forecast.deals import monday_before
    from leadml.forecast.modelsource import ModelProbabilities
    from leadml.modeling import workflow
    from leadml.modeling.bundle import ScoringBundle
    from leadml.modeling.train import censor_deals

    first_as_of = {p.label: monday_before(p.end - pd.Timedelta(days=7 * weeks)) for p in periods}
    cutoffs = (
        {p.label: first_as_of[p.label] for p in periods}
        if mode == "quarterly"
        else dict.fromkeys(first_as_of, first_as_of[periods[0].label])
    )
    spec = workflow.load_model_spec(settings, "deal-close")
    if calendar:  # the hazard sees each period's days to the quarter end (quarter-end pushes)
        spec = spec.model_copy(update={"target": spec.target.model_copy(update={"calendar": True})})
    d = workflow.open_data(settings, data)
    catalog = load_catalog(settings.config_file("features.yaml"), settings.vocabulary)
    t0 = time.perf_counter()
    # Snapshots with as_of < the last cutoff; their outcome columns look ahead, so every
    # model sees them censored at its own cutoff (censor_deals also drops as_of >= cutoff).
    frame, summary = workflow.build_dataset(
        d, spec, end=(max(cutoffs.values()) - pd.Timedelta(days=1)).isoformat()
    )
    notes = [f"training set: {len(frame):,} deal snapshots in {time.perf_counter() - t0:.0f} s"]
    models: dict[pd.Timestamp, object] = {}
    for cut in sorted(set(cutoffs.values())):
        t1 = time.perf_counter()
        part = censor_deals(frame, cut)
        try:
            result = workflow.train_spec(part, spec)
        except LeadmlError as err:  # too little history before this cutoff
            notes.append(f"no model before {cut.date()}: {str(err)[:160]}")
            continue
        bundle = ScoringBundle.from_training(result)
        champ = BundleChampion(bundle, f"before {cut.date()}")
        models[cut] = ModelProbabilities(
            champ,
            catalog,
            history,
            name=f"deal_close model trained before {cut.date()}",
            week_days=int(spec.target.week_days),
            boundary_share=boundary_share,
        )
        m = result.metrics
        notes.append(
            f"model before {cut.date()}: {len(part):,} snapshots "
            f"({part['as_of'].min():%Y-%m-%d}..{part['as_of'].max():%Y-%m-%d}), "
            f"backtest ROC AUC {m.get('roc_auc', float('nan')):.3f} "
            f"ECE {m.get('ece', float('nan')):.3f}, {time.perf_counter() - t1:.0f} s"
        )
    d.close()
    out = {}
    for label, cut in cutoffs.items():
        assert cut <= first_as_of[label], "a model must not forecast an as-of before its cutoff"
        if cut in models:
            out[label] = models[cut]
    return out, notes


def print_goal_table(report) -> None:  # type: ignore[no-untyped-def]
    """Per weeks before the end: MAPE of the forecast, the stage-weighted baseline and the
    oracle, the two goal ratios, P10-P90 coverage and the number of points (quarters); then
    the same ratios at 4 and 8 weeks (and over all weeks) with a 90% bootstrap interval
    that resamples whole quarters, and where the error comes from (open vs new deals)."""
    from leadml.forecast.backtest import decompose, mape_ratio_interval

    bw = report.by_weeks
    mape = bw.pivot(index="weeks_before_end", columns="method", values="mape")
    cov = bw.pivot(index="weeks_before_end", columns="method", values="coverage_p10_p90")
    n = bw.pivot(index="weeks_before_end", columns="method", values="n")
    table = pd.DataFrame({"mape": mape["forecast"], "stage_w": mape["stage_weighted"]})
    table["vs_stage_w"] = table["mape"] / table["stage_w"]
    if "oracle" in mape:
        table["oracle"] = mape["oracle"]
        table["vs_oracle"] = table["mape"] / table["oracle"]
        table["cov_oracle"] = cov["oracle"]
    table["coverage"] = cov["forecast"]
    table["n"] = n["forecast"].astype(int)
    print("\nper weeks before quarter end (MAPE, ratios, P10-P90 coverage, points):")
    print(table.round(3).to_string())
    print("\nMAPE ratios with a 90% bootstrap interval over quarters:")
    for base in ("stage_weighted", "oracle"):
        if base not in mape:
            continue
        for weeks in ([4], [8], None):
            r = mape_ratio_interval(report.points, base=base, weeks=weeks)
            label = f"at {weeks[0]}w" if weeks else "all weeks"
            print(
                f"  forecast / {base:14s} {label:9s} {r['ratio']:.3f} "
                f"[{r['lo']:.2f}, {r['hi']:.2f}]  ({int(r['quarters'])} quarters, "
                f"{int(r['points'])} points)"
            )
    d = decompose(report.points).set_index("weeks_before_end")
    cols = ["n", "mape", "open_bias", "open_abs", "new_bias", "new_abs", "mape_perfect_new"]
    cols += [
        c for c in ("mape_oracle", "open_bias_oracle", "open_gap_abs", "open_gap_bias") if c in d
    ]
    print("\nerror decomposition (shares of the actual; open = deals open at as_of, new = later):")
    print(d[cols].round(4).to_string())


def print_report(report, elapsed: float) -> None:  # type: ignore[no-untyped-def]
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
    fc = report.points[report.points["method"] == "forecast"]
    print(
        f"\nshared shock tau: mean {fc['shock_sd'].mean():.3f}, "
        f"zero at {int((fc['shock_sd'] == 0).sum())} of {len(fc)} points"
    )
    print_goal_table(report)
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
    parser.add_argument("--model", choices=["none", "once", "quarterly"], default="none")
    parser.add_argument("--skip-empirical", action="store_true")
    parser.add_argument(
        "--calendar",
        action="store_true",
        help="train the deal-close model with target.calendar (days to quarter end per period)",
    )
    parser.add_argument("--skip-extras", action="store_true", help="only the backtests")
    parser.add_argument(
        "--linear-share",
        action="store_true",
        help="model source: a period end inside a model week takes a linear share of its wins "
        "(default: the share measured on the history, ModelProbabilities(boundary_share=True))",
    )
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
    if not args.skip_empirical:
        start = time.perf_counter()
        report = backtest(con, config=cfg, vocab=s.vocabulary, truth=truth)
        print_report(report, time.perf_counter() - start)
    if args.model != "none":
        from leadml.forecast.backtest import backtest_quarters

        hist = DealHistory(con, s.vocabulary)
        periods = backtest_quarters(hist, args.quarters)
        start = time.perf_counter()
        sources, notes = train_model_sources(
            s,
            Path(data),
            periods,
            args.weeks,
            args.model,
            hist,
            calendar=args.calendar,
            boundary_share=not args.linear_share,
        )
        print(f"\ndeal-close model ({args.model}), trained in {time.perf_counter() - start:.0f} s:")
        for note in notes:
            print("  " + note)
        kept = 0  # the trailing quarters that have a model (backtest takes the last n)
        for per in reversed(periods):
            if per.label not in sources:
                break
            kept += 1
        if kept == 0:
            raise SystemExit("no backtest quarter has a model; load more history")
        if kept < len(periods):
            print(f"  backtest of the model on the last {kept} quarter(s) only")
        start = time.perf_counter()
        report = backtest(
            con,
            config=cfg,
            vocab=s.vocabulary,
            truth=truth,
            quarters=kept,
            source_for_quarter=lambda per: sources[per.label],  # type: ignore[arg-type,return-value]
        )
        print_report(report, time.perf_counter() - start)
        # The same model with independent deals (no shared shock): the nightly forecast
        # before its source could answer for earlier as-of dates.
        print("\n--- the same model, deals independent (tau = 0) ---")
        start = time.perf_counter()
        independent = backtest(
            con,
            config=cfg.model_copy(update={"shock_lookback_periods": 0}),
            vocab=s.vocabulary,
            truth=truth,
            quarters=kept,
            source_for_quarter=lambda per: sources[per.label],  # type: ignore[arg-type,return-value]
        )
        print_report(independent, time.perf_counter() - start)
        # What the nightly run pays for the shock: this and next quarter's forecast as of the
        # data's last day with a fresh source (cold feature cache), shock on vs off.
        from leadml.forecast.modelsource import ModelProbabilities

        last = sources[periods[-1].label]
        as_of = hist.data_end.normalize()  # type: ignore[union-attr]
        for label, conf in (
            ("shock", s.forecast),
            (
                "independent",
                s.forecast.model_copy(update={"shock_lookback_periods": 0}),
            ),
        ):
            fresh = ModelProbabilities(last.model, last.catalog, hist, latest=as_of)  # type: ignore[attr-defined]
            start = time.perf_counter()
            taus = []
            for per in (quarter_of(as_of), quarter_of(as_of).shifted(-1)):
                r = forecast(
                    con,
                    as_of=as_of,
                    period=per,
                    deal_probabilities=fresh,
                    vocab=s.vocabulary,
                    config=conf,
                    history=hist,
                )
                taus.append(f"{per.label} tau {r.shock_sd:.3f} ({r.shock_periods} periods)")
            print(
                f"\nnightly-like forecast as of {as_of.date()} ({label}): "
                f"{time.perf_counter() - start:.1f} s; {'; '.join(taus)}"
            )
    if args.skip_extras:
        con.close()
        return

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
