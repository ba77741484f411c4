"""Model commands: train, promote, rollback, models (the retraining workflow on MLflow)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from leadml.cli import common
from leadml.errors import LeadmlError
from leadml.modeling.spec import CARD_METRICS

if TYPE_CHECKING:
    from leadml.config import Settings


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("models")(models)


HEADLINE = CARD_METRICS  # the model card's metrics, in its order

_Command = TypeVar("_Command", bound=Callable[..., Any])


def _quiet_mlflow() -> None:
    """MLflow's INFO/WARNING lines and download bars would break the progress display.

    MLflow sets its logger's level when it is imported, so it is imported first."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401  (configures its loggers on import; then override them)

    for logger in ("mlflow", "alembic"):
        logging.getLogger(logger).setLevel(logging.ERROR)


NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


def _check_name(name: str) -> None:
    """``--name`` must be a valid registered model name (checked before any work)."""
    import re

    if not re.fullmatch(NAME_PATTERN, name):
        suggestion = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
        if not suggestion or not suggestion[0].isalpha():
            suggestion = f"model_{suggestion}".rstrip("_")
        raise LeadmlError(
            f"--name: {name!r} is not a valid model name (lower-case letters, digits and _, "
            f"starting with a letter; e.g. {suggestion})"
        )


def _iso_flag(flag: str, value: str | None) -> None:
    if value is not None:
        from leadml.features.labels import to_timestamp

        to_timestamp(value, flag)


def _trial_line(bar: Any, say: Any) -> Any:
    """Tuning progress: one line per trial on stderr (above the progress bar)."""

    def show(message: str) -> None:
        say(message)
        bar.console.print(message, soft_wrap=True)

    return show


def _tuning_json(tuned: Any) -> dict[str, Any] | None:
    if tuned is None:
        return None
    return {
        "winner": tuned.winner,
        "best_trial": tuned.best_trial,
        "spec_log_loss": tuned.spec_log_loss,
        "tuned_log_loss": None if math.isnan(tuned.tuned_log_loss) else tuned.tuned_log_loss,
        "params": tuned.spec.estimator.params,
    }


BELOW_BASELINE = "the model is below the logistic baseline"


def _shown_worse(
    model: float, baseline: float, spec: str, *, lower_is_better: bool = False
) -> tuple[str, str] | None:
    """(model, baseline) as printed with ``spec`` when the model is worse, else None. A
    difference that does not show at the printed precision is noise, not a note (it read
    "Brier 0.0153 > 0.0153")."""
    shown, base = format(model, spec), format(baseline, spec)
    if math.isnan(model) or math.isnan(baseline) or shown == base:
        return None
    worse = model > baseline if lower_is_better else model < baseline
    return (shown, base) if worse else None


def _tuning_caveat(tuned: Any) -> list[str]:
    caveat = tuned.caveat() if tuned is not None else None
    return [caveat] if caveat else []


def _warnings_after_training(result: Any, spec: Any) -> list[str]:
    """Notes a user should read before ``leadml promote``: worse than the baseline, or a
    gate criterion that fails whatever the champion."""
    m = result.metrics
    notes = []
    worse = []
    auc = _shown_worse(m.get("roc_auc", math.nan), m.get("baseline_roc_auc", math.nan), ".3f")
    if auc:
        worse.append(f"ROC AUC {auc[0]} < {auc[1]}")
    brier = _shown_worse(
        m.get("brier", math.nan), m.get("baseline_brier", math.nan), ".4g", lower_is_better=True
    )
    if brier:
        worse.append(f"Brier {brier[0]} > {brier[1]}")
    if worse:
        notes.append(f"{BELOW_BASELINE}: {'; '.join(worse)}")
    gate = spec.gate
    fails = []
    ece = m.get("ece", math.nan)
    if not ece <= gate.max_ece:
        fails.append(f"max_ece (backtest ECE {ece:.4f} > {gate.max_ece:.4f})")
    ratio = m.get("mean_ratio_error", math.nan)
    if not ratio <= gate.max_mean_ratio_error:
        fails.append(
            f"max_mean_ratio_error (mean probability {m.get('mean_probability', math.nan):.4g} "
            f"vs observed rate {m.get('base_rate', math.nan):.4g}: off by {ratio:.1%} > "
            f"{gate.max_mean_ratio_error:.0%})"
        )
    latest = m.get("latest_roc_auc", math.nan)
    if not latest >= gate.min_roc_auc:
        fails.append(f"min_roc_auc (latest-window ROC AUC {latest:.4f} < {gate.min_roc_auc:.4f})")
    if fails:
        notes.append(
            f"will not pass the promotion gate: {'; '.join(fails)}; `leadml promote` will refuse "
            "it without --force"
        )
    return notes


def _json_errors(command: _Command) -> _Command:
    """With ``--json`` a failure is a JSON object on stdout too (:func:`_json_failure`; the
    message still goes to stderr and the exit code stays non-zero)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LeadmlError as err:
            if kwargs.get("as_json"):
                _json_failure(err)
            raise

    return run  # type: ignore[return-value]


def _only_with(what: str, *flags: tuple[str, object]) -> None:
    """Refuse the ``flags`` that were given (truthy value): they only apply with ``what``."""
    given = [flag for flag, value in flags if value]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise LeadmlError(f"{', '.join(given)} only {verb} with {what}")


def _check_dataset_flag(dataset: Path, start: str | None, end: str | None, spec: Any) -> None:
    """``--dataset`` excludes ``--start``/``--end`` and must be an existing Parquet file."""
    from leadml.modeling import workflow

    if start or end:
        raise LeadmlError(
            "--dataset trains on the file's rows; drop --start/--end (or build the set again "
            "with `leadml dataset ... --start D --end D`)"
        )
    workflow.check_training_set_path(dataset, spec)


@_json_errors
def train(
    ctx: typer.Context,
    model: str | None = typer.Argument(
        None, help="lead-readiness | deal-close (leave out with --table)"
    ),
    spec: Path | None = typer.Option(
        None,
        "--spec",
        help="Model spec YAML [default models/<model>.yaml]; with --table it supplies "
        "the estimator, calibration and gate settings",
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Folder of tables [default: the workspace's data]"
    ),
    tune: int = typer.Option(
        0, "--tune", min=0, help="Optuna trials on the backtest before the final fit"
    ),
    start: str | None = typer.Option(
        None, "--start", help="First as-of date (ISO) [default: data start]"
    ),
    end: str | None = typer.Option(None, "--end", help="Last as-of date (ISO) [default: data end]"),
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        help="Train on a training set saved by `leadml dataset` (Parquet) instead of "
        "building it: build once, retrain many times; loaded lean (float32, categories)",
    ),
    no_register: bool = typer.Option(
        False, "--no-register", help="Log the run but do not register a version"
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
    table: Path | None = typer.Option(
        None,
        "--table",
        help="Train on an attribute-only lead table (CSV or Parquet, one lead a row) "
        "instead of the workspace's tables",
        rich_help_panel="Lead table",
    ),
    target: str | None = typer.Option(
        None, "--target", help="Outcome column of --table", rich_help_panel="Lead table"
    ),
    time_column: str | None = typer.Option(
        None, "--time-column", help="Date of each row", rich_help_panel="Lead table"
    ),
    order_by: str | None = typer.Option(
        None,
        "--order-by",
        help="Column giving the time order (default: file order)",
        rich_help_panel="Lead table",
    ),
    exclude: list[str] | None = typer.Option(
        None,
        "--exclude",
        help="Columns to leave out (comma-separated or repeated)",
        rich_help_panel="Lead table",
    ),
    missing_values: str | None = typer.Option(
        None,
        "--missing-values",
        help='Values meaning "missing": "Select,unknown" everywhere, "pdays=999" in one column',
        rich_help_panel="Lead table",
    ),
    positive: str | None = typer.Option(
        None, "--positive", help="The positive outcome value", rich_help_panel="Lead table"
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        help="Registered model name (default: lead_readiness_table)",
        rich_help_panel="Lead table",
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Few coarse boosting rounds: a first look, not a model to act on",
        rich_help_panel="Lead table",
    ),
) -> None:
    """Build the training set, backtest, calibrate, fit, log to MLflow and register as
    @challenger. With --table: the same for a single lead table, after the leakage guard."""
    from leadml import tracking
    from leadml.modeling import workflow

    s = common.settings(ctx)
    _quiet_mlflow()
    if table is not None or model is None:
        unused = [
            flag
            for flag, value in (
                ("a model argument", model),
                ("--data", data),
                ("--dataset", dataset),
                ("--start", start),
                ("--end", end),
            )
            if value
        ]
        if table is None:
            raise LeadmlError(
                "name a model (lead-readiness | deal-close) or give --table FILE --target COL"
            )
        if unused:
            raise LeadmlError(f"--table trains on the file alone; drop {', '.join(unused)}")
        if not target:
            raise LeadmlError("--table needs --target: the outcome column (e.g. --target y)")
        _train_table(
            s,
            table,
            target,
            time_column=time_column,
            order_by=order_by,
            exclude=exclude,
            missing_values=missing_values,
            positive=positive,
            name=name,
            spec=spec,
            quick=quick,
            tune=tune,
            no_register=no_register,
            as_json=as_json,
        )
        return
    _only_with(
        "--table FILE",
        ("--target", target),
        ("--time-column", time_column),
        ("--order-by", order_by),
        ("--exclude", exclude),
        ("--missing-values", missing_values),
        ("--positive", positive),
        ("--name", name),
        ("--quick", quick),
    )
    _iso_flag("--start", start)
    _iso_flag("--end", end)
    model_spec = workflow.load_model_spec(s, model, spec)
    if dataset is not None:
        _check_dataset_flag(dataset, start, end, model_spec)
    # the tracking store and the registered model are checked before hours of training
    tracking.configure(s)
    if not no_register:
        tracking.check_registration(model_spec.name, model_spec.kind)
    data_obj = workflow.open_data(s, data, dataset=dataset)
    err = common.err_console()
    try:
        with common.progress() as bar:
            task = bar.add_task("training set", total=None)

            def ds_progress(done: int, total: int, message: str) -> None:
                bar.update(
                    task, completed=done, total=total, description=f"training set: {message}"
                )

            if dataset is not None:
                bar.update(task, description=f"training set: reading {dataset.name}")
                frame = workflow.load_training_set(dataset, model_spec)
            else:
                frame, _ = workflow.build_dataset(
                    data_obj, model_spec, start=start, end=end, progress=ds_progress
                )
            bar.update(task, description="training")

            def say(message: str) -> None:
                bar.update(task, description=message)

            tuned = None
            if tune:
                tuned = workflow.tune(
                    frame, model_spec, s, tune, data=data_obj, progress=_trial_line(bar, say)
                )
                bar.console.print(tuned.summary(), soft_wrap=True)
                model_spec = tuned.spec
            result = workflow.train_spec(frame, model_spec, data=data_obj, progress=say)
            say("logging to MLflow")
            logged = workflow.log_and_register(
                result,
                s,
                data=data_obj,
                register=not no_register,
                extra_tags=tuned.tags() if tuned is not None else None,
            )
    finally:
        data_obj.close()
    m = result.metrics
    warnings = _warnings_after_training(result, model_spec) + _tuning_caveat(tuned)
    if as_json:
        common.emit_json(
            {
                "ok": True,
                "model": model_spec.name,
                "version": logged.version,
                "run_id": logged.run_id,
                "tracking_uri": tracking.tracking_uri(s),
                "rows": result.rows,
                "positives": result.positives,
                "metrics": {k: m.get(k) for k in HEADLINE if k in m},
                "baseline": {k: m.get(f"baseline_{k}") for k in HEADLINE if f"baseline_{k}" in m},
                "oracle": {k: m.get(f"oracle_{k}") for k in HEADLINE if f"oracle_{k}" in m},
                "roc_auc_vs_oracle": m.get("roc_auc_vs_oracle"),
                "champion_comparison": logged.champion_comparison,
                "notes": result.notes + warnings,
                "seconds": round(result.seconds, 1),
                "tuning": _tuning_json(tuned),
            }
        )
        return
    out = common.console()
    has_oracle = any(k.startswith("oracle_") for k in m)
    rows = [
        (k, m.get(k, math.nan), m.get(f"baseline_{k}", math.nan))
        + (
            (m.get(f"model_on_oracle_rows_{k}", math.nan), m.get(f"oracle_{k}", math.nan))
            if has_oracle
            else ()
        )
        for k in HEADLINE
        if k in m
    ]
    out.print(
        common.summary_table(
            f"{model_spec.name}: backtest over {len(result.folds)} test windows "
            f"({int(m['rows']):,} rows)",
            ["metric", "model", "logistic baseline"]
            + (["model, oracle rows", "oracle"] if has_oracle else []),
            rows,
        )
    )
    if not math.isnan(m.get("roc_auc_vs_oracle", math.nan)):
        out.print(f"ROC AUC / oracle ROC AUC: {m['roc_auc_vs_oracle']:.3f}")
    for note in [*result.notes, *warnings]:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    where = f"version {logged.version} (@challenger)" if logged.version else "not registered"
    out.print(
        f"{result.rows:,} training rows, {result.positives:,} positives; trained in "
        f"{result.seconds:,.0f}s; MLflow run {logged.run_id}, {model_spec.name} {where}"
    )
    _print_comparison(out, err, logged.champion_comparison)
    _print_next(out, s, model_spec.name, logged.version, warnings, logged.champion_comparison)


def _print_comparison(out: Any, err: Any, c: dict[str, Any]) -> None:
    if c.get("error"):
        err.print(
            f"[yellow]note:[/] champion v{c['version']} could not be compared: {c['error']}",
            highlight=False,
        )
    elif c.get("roc_auc") is not None:
        out.print(
            f"champion v{c['version']}: ROC AUC {float(c['roc_auc']):.4f} vs challenger "
            f"{float(c.get('challenger_roc_auc') or math.nan):.4f} ({c.get('detail', '')})",
            highlight=False,
        )


def _print_next(
    out: Any,
    s: Any,
    name: str,
    version: str | None,
    warnings: list[str],
    comparison: dict[str, Any] | None = None,
) -> None:
    """The next step after `leadml train`: what `leadml promote` would do with the version."""
    from leadml import tracking

    ui = f"UI: {tracking.ui_hint(s)}"
    failed = [c for c in tracking.gate_checks(name, version) if not c.ok] if version else []
    shown = (comparison or {}).get("detail", "") if (comparison or {}).get("roc_auc") else ""
    if failed:  # what `leadml promote` would say: do not recommend a promotion that fails
        for c in failed:
            detail = c.detail
            if shown and detail.endswith(f"; {shown}"):  # printed just above: once is enough
                detail = detail.removesuffix(f"; {shown}") + " (compared as above)"
            out.print(f"the gate would refuse v{version}: {c.criterion}: {detail}", soft_wrap=True)
        out.print(
            f"next: fix the model, or `leadml promote {name} --force --reason TEXT`   |   {ui}"
        )
    elif version and not warnings:
        out.print(f"next: leadml promote {name}   |   {ui}")
    elif version:  # the gate passes: --force is not needed, but the notes deserve a look
        caution = (
            "it is below the logistic baseline (see the note): consider fixing it first"
            if any(BELOW_BASELINE in w for w in warnings)
            else "read the notes first"
        )
        out.print(
            f"next: leadml promote {name} (v{version} passes the gate; {caution})   |   {ui}",
            soft_wrap=True,
        )
    else:
        out.print(ui)


def _train_table(
    s: Settings,
    table: Path,
    target: str,
    *,
    time_column: str | None,
    order_by: str | None,
    exclude: list[str] | None,
    missing_values: str | None,
    positive: str | None,
    name: str | None,
    spec: Path | None,
    quick: bool,
    tune: int,
    no_register: bool,
    as_json: bool,
) -> None:
    """``leadml train --table``: leakage guard, backtest, calibration, reasons, MLflow."""
    from leadml import tracking
    from leadml.cli.importing import _split
    from leadml.importing import tabular
    from leadml.modeling import workflow
    from leadml.modeling.spec import load_spec

    reg_name = name or "lead_readiness_table"
    _check_name(reg_name)
    base = load_spec(spec) if spec is not None else None  # spec errors before the table is read
    tracking.configure(s)  # type: ignore[arg-type]
    if not no_register:
        tracking.check_registration(reg_name, "lead_readiness")
    err = common.err_console()
    frame, report, leak = tabular.load_and_check(
        table,
        target,
        time_column=time_column,
        order_by=order_by,
        exclude=_split(exclude),
        missing_values=missing_values,
        positive=positive,
    )
    # The guard speaks before any training (on stderr, so --json stays clean).
    for column in leak.flagged:
        err.print(
            f"[yellow]warning:[/] column {column!r} looks like a leak: "
            f"{'; '.join(leak.reasons(column))}",
            highlight=False,
        )
    if leak.flagged:
        err.print(
            f"[yellow]warning:[/] training with {', '.join(leak.flagged)}; if "
            f"{'it is' if len(leak.flagged) == 1 else 'they are'} not known before the "
            f"outcome, rerun with --exclude {','.join(leak.flagged)}",
            highlight=False,
        )
    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    if base is None and quick:
        base = tabular.quick_spec(report.features, reg_name)
    with common.progress() as bar:
        task = bar.add_task(f"training on {report.rows:,} rows", total=None)

        def say(message: str) -> None:
            bar.update(task, description=message)

        training = tabular.table_training_frame(frame, report, time_column=time_column)
        model_spec = tabular.table_spec(training, report.features, name=reg_name, base=base)
        tuned = None
        if tune:
            tuned = workflow.tune(training, model_spec, s, tune, progress=_trial_line(bar, say))
            bar.console.print(tuned.summary(), soft_wrap=True)
            model_spec = tuned.spec
        result = workflow.train_spec(training, model_spec, progress=say)
        say("explaining example leads")
        examples = tabular.example_reasons(result)
        drifted = tabular.out_of_range(result)
        say("logging to MLflow")
        # how the table was read, for `leadml score-table` (same sentinels, outcome ignored)
        from leadml.cli.scoring import MISSING_TAG, TARGET_TAG

        logged = tracking.log_training(
            result,
            s,
            register=not no_register,
            # (none when the sentinels exceed a tag's size: score-table then asks for them)
            extra_tags={
                **(
                    {TARGET_TAG: target, MISSING_TAG: missing_values or ""}
                    if len(missing_values or "") <= 4900
                    else {}
                ),
                **(tuned.tags() if tuned is not None else {}),
            },
        )
    m = result.metrics
    folds = [
        {
            "window": i + 1,
            "start": f.origin if time_column else None,
            "first_row": int((result.train_frame["as_of"] < f.origin).sum()),
            "train_rows": f.train_rows,
            "test_rows": f.test_rows,
            "positive_rate": f.metrics.get("base_rate", math.nan),
            "roc_auc": f.metrics.get("roc_auc", math.nan),
            "baseline_roc_auc": f.metrics.get("baseline_roc_auc", math.nan),
            "ece": f.metrics.get("ece", math.nan),
            "baseline_ece": f.metrics.get("baseline_ece", math.nan),
        }
        for i, f in enumerate(result.folds)
    ]
    warnings = _warnings_after_training(result, model_spec) + _tuning_caveat(tuned)
    if as_json:
        common.emit_json(
            {
                "ok": True,
                "model": model_spec.name,
                "version": logged.version,
                "run_id": logged.run_id,
                "tracking_uri": tracking.tracking_uri(s),
                "table": str(table),
                "order": report.order,
                "rows": result.rows,
                "positives": result.positives,
                "features": report.features,
                "leakage": leak.to_dict(),
                "metrics": {k: m.get(k) for k in HEADLINE if k in m},
                "baseline": {k: m.get(f"baseline_{k}") for k in HEADLINE if f"baseline_{k}" in m},
                "windows": folds,
                "examples": examples,
                "out_of_range": drifted,
                "tuning": _tuning_json(tuned),
                "notes": result.notes + warnings,
                "seconds": round(result.seconds, 1),
            }
        )
        return
    out = common.console()
    out.print(
        common.summary_table(
            f"{model_spec.name}: time-ordered backtest over {len(result.folds)} test windows "
            f"({table.name}, ordered {report.order})",
            ["metric", "model", "logistic baseline"],
            [(k, m.get(k, math.nan), m.get(f"baseline_{k}", math.nan)) for k in HEADLINE if k in m],
        )
    )
    out.print(
        common.summary_table(
            "Per test window (oldest first)",
            [
                "window",
                "starts",
                "train rows",
                "test rows",
                "positive rate",
                "ROC AUC",
                "baseline ROC AUC",
                "ECE",
                "baseline ECE",
            ],
            [
                (
                    f["window"],
                    f"{f['start']:%Y-%m-%d}"
                    if f["start"] is not None
                    else f"row {f['first_row']:,}",
                    f["train_rows"],
                    f["test_rows"],
                    f["positive_rate"],
                    f["roc_auc"],
                    f["baseline_roc_auc"],
                    f["ece"],
                    f["baseline_ece"],
                )
                for f in folds
            ],
        )
    )
    out.print(
        f"calibration ({model_spec.calibration.method}, on the latest "
        f"{model_spec.calibration.holdout_days // 7} weeks of each training window): "
        f"ECE {m.get('ece', math.nan):.3f} over the test windows "
        f"(baseline {m.get('baseline_ece', math.nan):.3f})"
    )
    for ex in examples:
        why = "; ".join(r["text"] for r in ex["positive"]) or "-"
        against = "; ".join(r["text"] for r in ex["negative"]) or "-"
        out.print(
            f"row {ex['row']:,} (p={ex['probability']:.3f}, outcome {ex['label']}): "
            f"for: {why} | against: {against}",
            highlight=False,
        )
    for note in [*result.notes, *warnings]:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    for d in drifted:
        err.print(
            f"[yellow]note:[/] test window {d['window']}: {d['share']:.0%} of {d['column']!r} "
            f"lies outside its training range ({d['train_min']:g} to {d['train_max']:g}; "
            f"window {d['test_min']:g} to {d['test_max']:g}): trees cannot extrapolate it",
            highlight=False,
        )
    where = f"version {logged.version} (@challenger)" if logged.version else "not registered"
    out.print(
        f"{result.rows:,} rows, {result.positives:,} positives, {len(report.features)} "
        f"features; trained in {result.seconds:,.0f}s; MLflow run {logged.run_id}, "
        f"{model_spec.name} {where}"
    )
    _print_comparison(out, err, logged.champion_comparison)
    _print_next(out, s, model_spec.name, logged.version, warnings, logged.champion_comparison)


def _json_failure(err: LeadmlError) -> None:
    """With --json a failure is a JSON object on stdout too (the exit code stays non-zero)."""
    checks = getattr(err, "checks", [])
    common.emit_json(
        {
            "ok": False,
            "error": str(err),
            "failed_checks": [c.__dict__ for c in checks if not c.ok],
            "checks": [c.__dict__ for c in checks],
        }
    )


@_json_errors
def promote(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Registered model: lead_readiness | deal_close"),
    version: str | None = typer.Option(
        None, "--version", help="Version to promote [default: @challenger]"
    ),
    force: bool = typer.Option(
        False, "--force", help="Promote even if the gate fails (needs --reason)"
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why (recorded on the version)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Move @champion to a version if the spec's promotion gate holds."""
    from leadml import tracking

    s = common.settings(ctx)
    _quiet_mlflow()
    tracking.configure(s)
    result = tracking.promote(name.replace("-", "_"), version, force=force, reason=reason)
    if as_json:
        common.emit_json(
            {
                "ok": True,
                "name": result.name,
                "version": result.version,
                "previous": result.previous,
                "outcome": result.outcome,
                "forced": result.forced,
                "force_not_needed": result.force_not_needed,
                "checks": [c.__dict__ for c in result.checks],
                "notes": result.notes,
            }
        )
        return
    out = common.console()
    out.print(
        common.summary_table(
            f"gate for {result.name} v{result.version}",
            ["criterion", "ok", "detail"],
            [(c.criterion, "yes" if c.ok else "NO", c.detail) for c in result.checks],
        )
    )
    for note in result.notes:
        common.err_console().print(f"[yellow]note:[/] {note}", highlight=False)
    if result.outcome == "already_champion":
        out.print(f"{result.name}: version {result.version} is already @champion; nothing changed")
        return
    if result.force_not_needed:
        out.print(f"version {result.version} passes the gate; --force not needed (not recorded)")
    forced = " (forced)" if result.forced else ""
    out.print(
        f"{result.name}: @champion -> version {result.version}{forced} "
        f"(was {result.previous or 'none'})"
    )


@_json_errors
def rollback(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Registered model: lead_readiness | deal_close"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Restore the previous champion."""
    from leadml import tracking

    s = common.settings(ctx)
    _quiet_mlflow()
    tracking.configure(s)
    old, new = tracking.rollback(name.replace("-", "_"))
    if as_json:
        common.emit_json({"ok": True, "name": name.replace("-", "_"), "from": old, "to": new})
        return
    common.console().print(f"{name}: @champion -> version {new} (was {old})")


@_json_errors
def models(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """List registered versions: aliases, horizon, forced promotions, rollbacks, metrics."""
    from leadml import tracking

    s = common.settings(ctx)
    _quiet_mlflow()
    uri = tracking.configure(s)
    table = tracking.list_versions()
    if as_json:
        common.emit_json(table.to_dict(orient="records"))
        return
    out = common.console()
    if table.empty:
        out.print(f"no registered models in {uri}; train one with `leadml train lead-readiness`")
        return
    cols = tracking.MODEL_COLUMNS
    out.print(
        common.summary_table(
            f"registered models ({uri})",
            cols,
            [_version_row(r) for r in table[cols].to_dict("records")],
        )
    )


# small figures (readiness: ECE ~0.001, Brier ~0.009) keep 4 significant digits, which
# 3 decimals would round to the same value for every version
SIGNIFICANT = ("ece", "mean_ratio_error", "brier")


def _version_row(row: dict[str, Any]) -> list[Any]:
    """One `leadml models` row as shown: horizon in days, forced promotions marked."""
    out: list[Any] = []
    for col, value in row.items():
        if col in SIGNIFICANT:
            value = "-" if value is None or math.isnan(value) else f"{value:.4g}"
        elif col == "forced":
            value = "FORCED" if value else ""
        elif col == "rolled_back":
            value = value or ""
        elif col == "horizon_days":
            value = (
                "-"
                if value is None or (isinstance(value, float) and math.isnan(value))
                else f"{int(value)}d"
            )
        out.append(value)
    return out
