"""Nightly batch commands: ``leadml batch --as-of D`` and ``leadml report --as-of D``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import typer

from leadml.cli import common


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
    app.command("report")(report)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """While inside, SIGTERM (a scheduler's timeout, ``kill``) ends the run like Ctrl-C:
    as an exception, exit code 143. A publish holds it from its Parquet swap until it is
    done (:meth:`leadml.batch.outputs.OutputStore.publish`): before the commit the
    previous outputs go back and the transaction rolls back, after it both destinations
    keep the new run; never a mix of the two."""
    import signal

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def batch(
    ctx: typer.Context,
    as_of: str = typer.Option(
        ..., "--as-of", help="Run date (ISO); everything reads only records before it"
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Folder of CSV/Parquet tables or a DuckDB file"
    ),
    sql_url: str | None = typer.Option(
        None, "--sql-url", help="SQLAlchemy URL for the output tables [env LEADML_BATCH__SQL_URL]"
    ),
    quarantine: bool = typer.Option(
        False, "--quarantine", help="Set bad input rows aside (with reasons) instead of stopping"
    ),
    with_report: bool = typer.Option(
        False, "--report", help="Also write the HTML report of the run (as `leadml report`)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run manifest as JSON"),
) -> None:
    """Score every open lead and deal as of D, cut the IS call list, snapshot the forecast,
    raise alerts, measure drift, and publish it all (re-running D replaces D's outputs)."""
    from rich.markup import escape

    from leadml.batch.nightly import run_nightly
    from leadml.batch.outputs import masked_url, sql_url_source

    s = common.settings(ctx)
    updates: dict[str, object] = {}
    if sql_url is not None:
        updates["sql_url"] = sql_url
    if quarantine:
        updates["bad_rows"] = "quarantine"
    if updates:
        s = s.model_copy(update={"batch": s.batch.model_copy(update=updates)})
    source = sql_url_source(sql_url is not None, os.environ)
    with common.progress() as bar, _sigterm_exits():
        task = bar.add_task("nightly run", total=8)

        def step(name: str) -> None:
            bar.update(task, description=name, advance=1)

        result = run_nightly(s, as_of, data=data, on_step=step, sql_source=source)
    m = result.manifest
    if as_json:
        common.emit_json(m.__dict__)
        if with_report:
            _report(s, m.as_of, data, source)
        return
    out = common.console()
    rows = [(name, n) for name, n in m.rows_written.items()]
    out.print(
        common.summary_table(
            f"Nightly run as of {m.as_of} (run {m.run_id})", ["output", "rows"], rows
        )
    )
    out.print(
        common.summary_table(
            "Timings", ["step", "seconds"], [(k, float(v)) for k, v in m.timings_s.items()]
        )
    )
    versions = ", ".join(f"{k} v{v}" for k, v in m.model_versions.items())
    out.print(f"models: {escape(versions)}")
    if m.quarantined_rows:
        counts = ", ".join(f"{table}: {n:,}" for table, n in m.quarantined_rows.items())
        folder = s.quarantine_dir / f"as_of={m.as_of}"
        out.print(f"[yellow]quarantined input rows:[/] {counts} (see {escape(str(folder))})")
    if m.drifted_features:
        out.print(f"[yellow]drifted:[/] {escape(', '.join(m.drifted_features))}")
    if m.drift_note:
        out.print(f"drift: {escape(m.drift_note)}")
    for w in result.warnings:
        out.print(f"[yellow]warning:[/] {escape(w)}")
    written = [f"Parquet: {s.outputs_dir}"] if s.batch.parquet else []
    if m.sql_url:
        written.append(f"SQL: {masked_url(m.sql_url)}")
    out.print(escape("   ".join(written)))
    if with_report:
        out.print(f"report: {escape(str(_report(s, m.as_of, data, source)))}")
    else:
        out.print(f"next: leadml report --as-of {m.as_of}")


def _report(s: object, as_of: str, data: Path | None, source: str) -> Path:
    from leadml.report.html import build_report

    return build_report(s, as_of, data=data, sql_source=source)


def report(
    ctx: typer.Context,
    as_of: str = typer.Option(..., "--as-of", help="Date of the nightly run to report on (ISO)"),
    data: Path | None = typer.Option(
        None, "--data", help="Input tables for the funnel [default: those the run read]"
    ),
    sql_url: str | None = typer.Option(
        None,
        "--sql-url",
        help="SQLAlchemy URL the run wrote to (read when Parquet is off) "
        "[env LEADML_BATCH__SQL_URL]",
    ),
) -> None:
    """Write the self-contained HTML morning report of the nightly run of D."""
    from leadml.batch.outputs import sql_url_source

    s = common.settings(ctx)
    if sql_url is not None:
        s = s.model_copy(update={"batch": s.batch.model_copy(update={"sql_url": sql_url})})
    path = _report(s, as_of, data, sql_url_source(sql_url is not None, os.environ))
    common.console().print(f"report: {path}")
