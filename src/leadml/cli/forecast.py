"""Forecast commands: ``leadml forecast``, ``leadml forecast backtest``, ``leadml alerts``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from leadml.cli import common

forecast_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="Revenue forecast of a period (P10/P50/P90, target, coverage); "
    "`backtest` replays past quarters or months.",
)


def register(app: typer.Typer) -> None:
    app.add_typer(forecast_app, name="forecast")
    app.command("alerts")(alerts)


def _read_frame(path: Path, what: str) -> Any:
    import pandas as pd

    from leadml.errors import LeadmlError
    from leadml.importing.mapping import sniff_delimiter

    if not path.exists():
        raise LeadmlError(f"{what} file {path} does not exist")
    if path.suffix.lower() == ".csv":  # , ; tab or | as the file has it (a BOM is skipped)
        return pd.read_csv(path, sep=sniff_delimiter(path), encoding="utf-8-sig")
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    raise LeadmlError(f"{what} file {path}: expected a .parquet or .csv file")


# why the score-drop rule was not checked, when no score history was found
NO_SCORE_HISTORY = "no score history (run `leadml batch` nightly, or pass --scores)"


def _score_history(s: Any, scores: Path | None, as_of: Any) -> tuple[Any, str]:
    """The score history the score-drop rule reads, and a line saying where it came from:
    ``--scores`` (a file, or a nightly outputs folder), else the workspace's nightly
    outputs when they hold deal scores, else none."""
    import pandas as pd

    from leadml.batch.nightly import past_deal_scores
    from leadml.batch.outputs import OutputStore, ParquetOutputs, reader
    from leadml.errors import LeadmlError

    if scores is not None and not scores.is_dir():
        return _read_frame(scores, "--scores"), f"score drops: read from {scores}"
    if scores is not None:
        root = scores.parent if scores.name == "scores_deals" else scores
        store, where = OutputStore(ParquetOutputs(root), None), str(root / "scores_deals")
    else:  # the workspace's nightly outputs: Parquet, or the SQL database without it
        store = reader(s)
        where = str(s.outputs_dir / "scores_deals") if s.batch.parquet else "the SQL outputs"
    window = s.forecast.alerts.score_window_days
    # the nightly run of D scored with the data before D: its scores count as of D
    day = (as_of + pd.Timedelta(days=1)).date()
    found = past_deal_scores(store, day, window + 1)
    if found is not None:
        return found, f"score drops: {found['as_of'].nunique()} nightly run(s) in {where}"
    if scores is not None:
        raise LeadmlError(
            f"--scores {scores}: no nightly deal scores (scores_deals/as_of=YYYY-MM-DD/) dated "
            f"in the {window} days up to {_moment(as_of)}; give a nightly outputs folder or a "
            "Parquet/CSV file with opportunity_id, as_of, p_won"
        )
    return None, f"score drops: not checked, {NO_SCORE_HISTORY}"


@forecast_app.callback()
def forecast(
    ctx: typer.Context,
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        help="Forecast date (ISO); reads only records before it "
        "(default: the day after the data ends)",
    ),
    period: str | None = typer.Option(
        None,
        "--period",
        help="Quarter (2026Q4) or month (2026-10) (default: the quarter of --as-of)",
    ),
    by: str | None = typer.Option(None, "--by", help="Also per group: team | segment | owner"),
    data: Path | None = typer.Option(
        None, "--data", help="Folder of CSV/Parquet tables or a DuckDB file"
    ),
    probabilities: Path | None = typer.Option(
        None,
        "--probabilities",
        help="Parquet/CSV with opportunity_id, p_won_by (P(won by period end) per open deal, "
        "e.g. from "
        "the deal-close model; for a period that starts after --as-of also "
        "p_won_by_period_start) (default: empirical close rates)",
    ),
    plots: bool = typer.Option(
        False, "--plots", help="Write the fan chart and waterfall PNGs to <workspace>/reports"
    ),
    cross_check: bool = typer.Option(
        False, "--cross-check", help="Also a Monte Carlo P10/P50/P90 (fixed seed)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Forecast the revenue booked in a period: won so far + open deals + deals not yet created."""
    if ctx.invoked_subcommand is not None:
        return

    from leadml.forecast.deals import DealHistory, parse_period, quarter_of
    from leadml.forecast.forecast import forecast as run_forecast
    from leadml.forecast.forecast import forecast_path

    s = common.settings(ctx)
    con = common.open_data(s, data)
    try:
        history = DealHistory(con, s.vocabulary)
        t = _as_of(history, as_of)
        per = parse_period(period) if period is not None else quarter_of(t)
        given = _read_frame(probabilities, "--probabilities") if probabilities else None
        result = run_forecast(
            con,
            as_of=t,
            period=per,
            deal_probabilities=given,
            by=by,
            vocab=s.vocabulary,
            config=s.forecast,
            history=history,
            cross_check=cross_check,
        )
        written: list[tuple[str, str]] = []
        if plots:
            from leadml.forecast.plots import fan_chart, waterfall

            folder = s.reports_dir / "forecast"
            stem = f"{per.label}_as_of_{t:%Y-%m-%d}" + ("" if t == t.normalize() else f"T{t:%H%M}")
            waterfall(result, folder / f"{stem}_waterfall.png")
            written = [("waterfall", str(folder / f"{stem}_waterfall.png"))]
            if per.start > t:  # the fan shows the period's weeks so far: there are none
                result.notes.append(
                    f"no fan chart: {per.label} starts after --as-of, and the chart shows "
                    "the forecast at each week of the period so far"
                )
            else:
                path = forecast_path(
                    con,
                    as_of=t,
                    period=per,
                    deal_probabilities=given,
                    vocab=s.vocabulary,
                    config=s.forecast,
                    history=history,
                )
                title = f"{per.label}: forecast by week"
                fan_chart(
                    path,
                    folder / f"{stem}_fan.png",
                    title=title,
                    period_start=per.start,
                    period_end=per.end,
                )
                written.append(("fan chart", str(folder / f"{stem}_fan.png")))
    finally:
        con.close()
    if as_json:
        payload = result.to_dict()
        payload["plots"] = dict(written)
        common.emit_json(payload)
        return
    _print_forecast(result, written, has_targets=not history.targets.empty)


def _as_of(history: Any, as_of: str | None, **limit: str) -> Any:
    """``--as-of``, by default the day after the freshest record of any table (a quiet
    weekend in the deal history must not date Monday's forecast or alerts before Monday's
    activity), checked against the data's end (``limit``: the wording of
    :meth:`DealHistory.check_as_of`; no deal rows is said as such, never "--as-of is
    missing")."""
    import pandas as pd

    from leadml.forecast.deals import as_utc

    if as_of is None and history.data_end is None:
        history.check_as_of(pd.Timestamp.now(tz="UTC"), **limit)  # raises: no deal rows
    t = history.freshest.normalize() + pd.Timedelta(days=1) if as_of is None else as_utc(as_of)
    history.check_as_of(t, **limit)
    return t


def _money(value: float) -> int | float:
    """Whole currency units for the tables (NaN stays NaN and prints as -)."""
    return int(round(value)) if math.isfinite(value) else float("nan")


def _coverage(g: Any) -> str:
    """A coverage ratio with two decimals (3.79x); "target reached" once won is at or above
    the target (nothing left to cover); - without a target."""
    if math.isfinite(g.coverage):
        return f"{g.coverage:.2f}x"
    return "target reached" if math.isfinite(g.target) and g.remaining_target <= 0 else "-"


GAP_SIGN = "gap = target - expected: positive = short of the target, negative = ahead of it"


def _target_notes(result: Any, has_targets: bool) -> list[str]:
    """What a "-" in the target columns means, for the groups that show one: no target
    for the period (no targets table, no row overlapping the period, or none for the
    group: targets are set per team or segment, never per owner)."""
    per = result.period.label
    if not math.isfinite(result.total.target):
        if not has_targets:
            return [f'"-" = no target for {per}: the data has no targets table']
        return [
            f'"-" = no target for {per}: no row of the targets table overlaps it '
            "(period_start to period_end); add one to compare the forecast with a target"
        ]
    missing = [g.group for g in result.groups if not math.isfinite(g.target)]
    if not missing:
        return []
    if result.by == "owner":
        return [
            '"-" = no target: targets are set per team or segment, not per owner '
            "(the all row has the company's)"
        ]
    named = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    column = "team" if result.by == "team" else "segment"
    return [
        f'"-" = no target for {per} for {column} {named}: no row of the targets table with '
        f"that {column} overlaps {per}"
    ]


def _moment(ts: Any) -> str:
    """The day, with the time when it is not midnight (2025-11-10 12:00 UTC)."""
    if ts == ts.normalize():
        return f"{ts:%Y-%m-%d}"
    return f"{ts:%Y-%m-%d %H:%M:%S}".removesuffix(":00") + " UTC"


def _print_forecast(
    result: Any, written: list[tuple[str, str]], *, has_targets: bool = True
) -> None:
    import pandas as pd

    out = common.console()
    groups = [*result.groups, result.total]
    per, t = result.period, result.as_of
    when = (
        f"starts in {(per.start - t) / pd.Timedelta(days=7):.1f} weeks"
        if per.start > t
        else f"{per.weeks_left(t):.1f} weeks left"
    )
    title = (
        f"Forecast {per.label} as of {_moment(t)} ({when}; "
        f"probabilities: {result.probability_source})"
    )
    out.print(
        common.summary_table(
            title,
            ["group", "won", "from open deals", "from new deals", "expected", "P10", "P50", "P90"],
            [
                (
                    g.group,
                    *map(_money, (g.won, g.open_expected, g.new_expected, g.expected)),
                    *map(_money, (g.p10, g.p50, g.p90)),
                )
                for g in groups
            ],
        )
    )
    out.print(
        common.summary_table(
            f"Against target ({GAP_SIGN})",
            [
                "group",
                "target",
                "gap",
                "P(target)",
                "pipeline due",
                "coverage",
                "all open",
                "# open deals",
            ],
            [
                (
                    g.group,
                    _money(g.target),
                    _money(g.gap_to_target),
                    g.p_reach_target,
                    _money(g.period_pipeline),
                    _coverage(g),
                    _money(g.open_pipeline),
                    g.open_deals,
                )
                for g in groups
            ],
        )
    )
    t = result.total
    out.print(
        f"open deals share a logit shock sd {result.shock_sd:.2f} "
        f"(measured on {result.shock_periods} earlier "
        f"period(s)); new deals: run-rate over {result.new_deals_periods} earlier period(s), "
        f"level sd {result.new_level_sd:.0%}; grid error bound {t.error_bound:,.0f}; "
        "coverage = pipeline due in period / (target - won)"
    )
    for line in _target_notes(result, has_targets):
        out.print(line)
    if any(_coverage(g) == "target reached" for g in groups):
        out.print("coverage: target reached = won is already at or above the target")
    if result.monte_carlo:
        mc = result.monte_carlo
        out.print(
            f"Monte Carlo ({mc['draws']:,.0f} draws): P10 {mc['p10']:,.0f}  P50 {mc['p50']:,.0f}  "
            f"P90 {mc['p90']:,.0f}"
        )
    for note in result.notes:
        out.print(f"note: {note}")
    for name, path in written:
        out.print(f"{name}: {path}")


@forecast_app.command("backtest")
def backtest(
    ctx: typer.Context,
    quarters: int | None = typer.Option(
        None,
        "--quarters",
        min=1,
        help="Past quarters to replay (default: forecast.backtest_quarters, 4)",
    ),
    months: int | None = typer.Option(
        None,
        "--months",
        min=1,
        help="Replay the last N complete months instead of quarters",
    ),
    weeks: int | None = typer.Option(
        None,
        "--weeks",
        min=1,
        max=13,
        help="Weeks before the period end (default: forecast.backtest_weeks, 13, for "
        "quarters; forecast.backtest_month_weeks, 4, for months, at most 5)",
    ),
    ahead: int = typer.Option(
        0,
        "--ahead",
        min=0,
        max=4,
        help="Forecast each period K periods ahead: as of the same weekly calls before the "
        "end of the period K before it (default 0: within the period)",
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Folder of CSV/Parquet tables or a DuckDB file"
    ),
    truth: Path | None = typer.Option(
        None,
        "--truth",
        help="deal_truth.parquet for the oracle (default: <data>/truth when present)",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Forecast past quarters (or months) as of every week before their end, or periods
    ahead; MAPE and P10-P90 coverage against the baselines (and the oracle when the
    simulator's truth is there)."""
    from leadml.forecast.backtest import TruthProbabilities, backtest_plan
    from leadml.forecast.backtest import backtest as run_backtest
    from leadml.sources import write_parquet, write_text

    s = common.settings(ctx)
    cfg = s.forecast
    plan = backtest_plan(cfg, quarters=quarters, months=months, weeks=weeks, ahead=ahead)
    location = Path(data or s.data_dir)
    truth_path = truth or (location / "truth" / "deal_truth.parquet")
    oracle = TruthProbabilities(truth_path) if (truth is not None or truth_path.exists()) else None
    con = common.open_data(s, data)
    try:
        with common.progress() as bar:
            task = bar.add_task("backtest", total=plan.periods * plan.weeks)
            report = run_backtest(
                con,
                config=cfg,
                vocab=s.vocabulary,
                truth=oracle,
                quarters=quarters,
                months=months,
                weeks=weeks,
                ahead=ahead,
                on_point=lambda: bar.advance(task),
                on_plan=lambda points: bar.update(task, total=points),
            )
    finally:
        con.close()
    folder = s.reports_dir / "forecast"
    points_path = write_parquet(
        report.points.drop(columns=["inside_p10_p90"]), folder / "backtest_points.parquet"
    )
    import json

    write_text(
        json.dumps(common._clean(report.to_dict() | {"points": None}), indent=2, default=str),
        folder / "backtest_summary.json",
    )
    if as_json:
        common.emit_json(report.to_dict())
        return
    out = common.console()
    unit = plan.unit
    labels = ", ".join(report.periods or sorted(report.points["period"].unique()))
    distance = (
        ""
        if plan.ahead == 0
        else f", forecast {plan.ahead} {unit}{'s' if plan.ahead > 1 else ''} ahead"
    )
    out.print(
        common.summary_table(
            f"Backtest of {'' if unit == 'quarter' else 'months '}{labels}{distance} "
            f"(probabilities: {report.probability_source})",
            ["method", "MAPE", "P10-P90 coverage", "points"],
            [(r.method, r.mape, r.coverage_p10_p90, int(r.n)) for r in report.summary.itertuples()],
        )
    )
    if report.periods_note:
        out.print(f"note: {report.periods_note}")
    wide = report.by_weeks.pivot(
        index="weeks_before_end", columns="method", values="mape"
    ).sort_index()
    before = (
        f"{unit} end"
        if plan.ahead == 0
        else f"the end of the as-of's {unit} (the {unit} {plan.ahead} before the forecast one)"
    )
    out.print(
        common.summary_table(
            f"MAPE by weeks before {before}",
            ["weeks", *wide.columns],
            [(int(w), *(float(v) for v in row)) for w, row in wide.iterrows()],
        )
    )
    if plan.current_quarter:
        goals = [
            (k, v["value"], v["goal"], "yes" if v["met"] else "no") for k, v in report.goals.items()
        ]
        out.print(common.summary_table("Goals", ["goal", "value", "target", "met"], goals))
    else:
        out.print(
            "goals: none checked here; the forecast's goals apply to the current quarter's "
            "backtest (quarters, no --ahead): P10-P90 coverage 0.80 +/- 0.05, MAPE at 4 and 8 "
            "weeks <= 0.7 x the stage-weighted pipeline's and <= 1.2 x the oracle's"
        )
    nd = report.new_deals
    ratio = (
        f"ratio {nd['ratio']:.2f}"
        if math.isfinite(nd["ratio"])
        else (
            f"no new deal was won this close to a {unit} end"
            if plan.ahead == 0
            else f"no deal created after an as-of date was won in its {unit}"
        )
    )
    out.print(
        f"new-deals run-rate: predicted {nd['predicted_total']:,.0f} "
        f"vs actual {nd['actual_total']:,.0f} ({ratio}) over {nd['points']:.0f} points"
    )
    out.print(f"points: {points_path}")


def alerts(
    ctx: typer.Context,
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        help="Date (ISO); deals as they stood before it (default: the day after the data ends)",
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Folder of CSV/Parquet tables or a DuckDB file"
    ),
    scores: Path | None = typer.Option(
        None,
        "--scores",
        help="Score history for the score-drop rule: a Parquet/CSV file (opportunity_id, "
        "as_of, p_won) or a nightly outputs folder (default: the workspace's nightly "
        "outputs, when there are any)",
    ),
    limit: int = typer.Option(30, "--limit", min=1, help="Rows shown in the table (JSON has all)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Deal-hygiene alerts: past close date, stale, close date pushed, too long in stage,
    score drop (from the nightly deal scores or --scores)."""
    from leadml.forecast.alerts import AS_OF_LIMIT, RULES
    from leadml.forecast.alerts import alerts as run_alerts
    from leadml.forecast.deals import DealHistory

    s = common.settings(ctx)
    con = common.open_data(s, data)
    try:
        history = DealHistory(con, s.vocabulary)
        t = _as_of(history, as_of, **AS_OF_LIMIT)
        score_frame, score_note = _score_history(s, scores, t)
        table = run_alerts(
            con,
            as_of=t,
            cfg=s.forecast.alerts,
            scores=score_frame,
            vocab=s.vocabulary,
            history=history,
        )
    finally:
        con.close()
    counts = table.groupby("rule").agg(
        alerts=("rule", "size"), deals=("opportunity_id", "nunique"), amount=("amount", "sum")
    )
    counts = counts.reindex(RULES).fillna(0)  # a rule that raised nothing shows 0
    if as_json:
        unchecked = [] if score_frame is not None else ["score_dropped"]
        common.emit_json(
            {
                "as_of": t.isoformat(),
                "thresholds": s.forecast.alerts.model_dump(),
                "rules_checked": [r for r in RULES if r not in unchecked],
                "rules_not_checked": [{"rule": r, "why": NO_SCORE_HISTORY} for r in unchecked],
                "score_history": None if score_frame is None else score_note.split(": ", 1)[1],
                "counts": {
                    rule: {
                        "alerts": int(r.alerts),
                        "deals": int(r.deals),
                        "amount": round(float(r.amount), 2),
                    }
                    for rule, r in counts.iterrows()
                    if rule not in unchecked
                },
                "alerts": table.to_dict(orient="records"),
            }
        )
        return
    out = common.console()
    rows: list[tuple[object, ...]] = [
        (rule, int(r.alerts), int(r.deals), round(float(r.amount))) for rule, r in counts.iterrows()
    ]
    if score_frame is None:
        rows = [r if r[0] != "score_dropped" else (r[0], "not checked", "", "") for r in rows]
    out.print(
        common.summary_table(
            f"Deal-hygiene alerts as of {_moment(t)}", ["rule", "alerts", "deals", "amount"], rows
        )
    )
    out.print(score_note)
    from rich.table import Table

    shown = table.sort_values(["amount", "opportunity_id"], ascending=[False, True], kind="stable")
    shown = shown.head(limit)
    listing = Table(
        title=f"First {len(shown)} of {len(table)} (largest deals first)", title_justify="left"
    )
    for col in ("owner", "deal", "stage", "amount", "rule", "reason"):
        listing.add_column(col, justify="right" if col == "amount" else "left", overflow="fold")
    for r in shown.itertuples():
        listing.add_row(
            str(r.owner_id),
            str(r.opportunity_id),
            str(r.stage),
            common.fmt(float(r.amount)),
            str(r.rule),
            str(r.reason),
        )
    out.print(listing)
