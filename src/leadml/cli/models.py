"""Model commands: train, promote, rollback, models (the retraining workflow on MLflow)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from leadml.cli import common


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("models")(models)


HEADLINE = (
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
    "ece",
    "lift_top_decile",
    "precision_at_capacity",
    "recall_at_capacity",
)


def _quiet_mlflow() -> None:
    """MLflow's INFO lines and download bars would break the progress display."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def train(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="lead-readiness | deal-close"),
    spec: Path | None = typer.Option(
        None, "--spec", help="Model spec YAML [default models/<model>.yaml]"
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
    no_register: bool = typer.Option(
        False, "--no-register", help="Log the run but do not register a version"
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Build the training set, backtest, calibrate, "
    "fit, log to MLflow and register as @challenger."""
    from leadml import tracking
    from leadml.modeling import workflow

    s = common.settings(ctx)
    _quiet_mlflow()
    model_spec = workflow.load_model_spec(s, model, spec)
    data_obj = workflow.open_data(s, data)
    err = common.err_console()
    try:
        with common.progress() as bar:
            task = bar.add_task("training set", total=None)

            def ds_progress(done: int, total: int, message: str) -> None:
                bar.update(
                    task, completed=done, total=total, description=f"training set: {message}"
                )

            frame, summary = workflow.build_dataset(
                data_obj, model_spec, start=start, end=end, progress=ds_progress
            )
            bar.update(task, description="training")

            def say(message: str) -> None:
                bar.update(task, description=message)

            if tune:
                model_spec, _ = workflow.tune(
                    frame, model_spec, s, tune, data=data_obj, progress=say
                )
            result = workflow.train_spec(frame, model_spec, data=data_obj, progress=say)
            say("logging to MLflow")
            logged = workflow.log_and_register(result, s, data=data_obj, register=not no_register)
    finally:
        data_obj.close()
    m = result.metrics
    if as_json:
        common.emit_json(
            {
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
                "notes": result.notes,
                "seconds": round(result.seconds, 1),
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
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    where = f"version {logged.version} (@challenger)" if logged.version else "not registered"
    out.print(
        f"{summary.rows:,} training rows, {result.positives:,} positives; trained in "
        f"{result.seconds:,.0f}s; MLflow run {logged.run_id}, {model_spec.name} {where}"
    )
    if logged.champion_comparison.get("roc_auc") is not None:
        c = logged.champion_comparison
        out.print(
            f"champion v{c['version']} on the same latest window: ROC AUC {c['roc_auc']:.4f} "
            f"(challenger {m.get('latest_roc_auc', math.nan):.4f})"
        )
    out.print(
        f"next: leadml promote {model_spec.name}   |   UI: mlflow ui --backend-store-uri "
        f"{tracking.tracking_uri(s)}"
    )


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
    tracking.configure(s)
    result = tracking.promote(name.replace("-", "_"), version, force=force, reason=reason)
    if as_json:
        common.emit_json(
            {
                "name": result.name,
                "version": result.version,
                "previous": result.previous,
                "forced": result.forced,
                "checks": [c.__dict__ for c in result.checks],
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
    forced = " (forced)" if result.forced else ""
    out.print(
        f"{result.name}: @champion -> version {result.version}{forced} "
        f"(was {result.previous or 'none'})"
    )


def rollback(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Registered model: lead_readiness | deal_close"),
) -> None:
    """Restore the previous champion."""
    from leadml import tracking

    s = common.settings(ctx)
    tracking.configure(s)
    old, new = tracking.rollback(name.replace("-", "_"))
    common.console().print(f"{name}: @champion -> version {new} (was {old})")


def models(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """List registered versions, their aliases and headline metrics."""
    from leadml import tracking

    s = common.settings(ctx)
    uri = tracking.configure(s)
    table = tracking.list_versions()
    if as_json:
        common.emit_json(table.to_dict(orient="records"))
        return
    out = common.console()
    if table.empty:
        out.print(f"no registered models in {uri}; train one with `leadml train lead-readiness`")
        return
    cols = [
        "name",
        "version",
        "aliases",
        "created",
        "roc_auc",
        "latest_roc_auc",
        "ece",
        "brier",
        "vs_oracle",
    ]
    out.print(
        common.summary_table(
            f"registered models ({uri})", cols, table[cols].itertuples(index=False, name=None)
        )
    )
