"""Bring your own data: ``leadml import`` (CRM / marketing-automation exports -> canonical
tables) and ``leadml check-table`` (column types and leakage guard for a single
attribute-only lead table)."""

from __future__ import annotations

from pathlib import Path

import typer

from leadml.cli import common


def register(app: typer.Typer) -> None:
    app.command("import")(import_exports)
    app.command("check-table")(check_table)


def import_exports(
    ctx: typer.Context,
    mapping: str = typer.Option(
        ..., "--mapping", "-m", help="A mapping YAML file, or a preset: salesforce | hubspot"
    ),
    src: Path = typer.Option(..., "--src", help="Folder holding the export files"),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the canonical tables [default <workspace>/imported]"
    ),
    timezone: str | None = typer.Option(
        None, "--timezone", help="Time zone of timestamps without an offset (e.g. Asia/Tokyo)"
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Fail on rows that break a table contract instead of dropping them"
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report"),
) -> None:
    """Map export files to the canonical tables, check them, and write them with a report
    of every row left out and why (then: `leadml validate --data <out>`)."""
    from leadml.importing.mapping import load_mapping, run_import

    s = common.settings(ctx)
    spec = load_mapping(mapping)
    if timezone:
        spec = spec.model_copy(update={"timezone": timezone})
    target = (out or s.workspace / "imported").expanduser().resolve()
    _, report = run_import(spec, src, target, s.vocabulary, strict=strict)
    if as_json:
        common.emit_json({"out": str(target), **report.to_dict()})
        return
    con = common.console()
    con.print(
        common.summary_table(
            f"Imported with {spec.name} into {target}", ["table", "rows"], report.rows.items()
        )
    )
    if report.dropped:
        con.print(
            common.summary_table(
                "Rows left out",
                ["table", "file", "reason", "rows", "examples"],
                [
                    (d.table, d.file, d.reason, d.count, ", ".join(d.examples[:3]))
                    for d in report.dropped
                ],
            )
        )
    for note in report.notes:
        con.print(f"note: {note}")
    con.print(f"report: {target / 'import_report.json'}")


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def check_table(
    ctx: typer.Context,
    table: Path = typer.Option(
        ..., "--table", help="CSV (delimiter sniffed) or Parquet, one lead a row"
    ),
    target: str = typer.Option(..., "--target", help="Outcome column (two values, e.g. yes/no)"),
    time_column: str | None = typer.Option(None, "--time-column", help="Date of each row"),
    order_by: str | None = typer.Option(None, "--order-by", help="Column giving the time order"),
    exclude: list[str] | None = typer.Option(
        None, "--exclude", help="Columns to leave out (comma-separated or repeated)"
    ),
    missing_values: str | None = typer.Option(
        None, "--missing-values", help='Values meaning "missing", e.g. "Select,unknown,999"'
    ),
    positive: str | None = typer.Option(None, "--positive", help="The positive outcome value"),
    threshold: float = typer.Option(
        0.9, "--threshold", help="Flag columns whose single-column ROC AUC reaches this"
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Read a lead table, infer its column types and run the leakage guard: names the
    columns that alone separate the outcome suspiciously well or look filled in after it."""
    from leadml.importing.leakage import check_leakage
    from leadml.importing.tabular import prepare_table, read_lead_table

    common.settings(ctx)
    frame, report = prepare_table(
        read_lead_table(table),
        target,
        time_column=time_column,
        order_by=order_by,
        exclude=_split(exclude),
        missing_values=missing_values,
        positive=positive,
    )
    leak = check_leakage(
        frame.drop(columns=[order_by] if order_by else []),
        target,
        time_column=time_column,
        threshold=threshold,
    )
    if as_json:
        common.emit_json(
            {
                "table": str(table),
                "rows": report.rows,
                "positives": report.positives,
                "order": report.order,
                "columns": report.to_frame().to_dict(orient="records"),
                "notes": report.notes,
                "leakage": leak.to_dict(),
            }
        )
        return
    out = common.console()
    out.print(
        common.summary_table(
            f"{table}: {report.rows:,} rows, {report.positives:,} positive, ordered {report.order}",
            ["column", "kind", "missing", "unique", "sentinels", "note"],
            [(c.name, c.kind, c.missing, c.n_unique, c.sentinels, c.note) for c in report.columns],
        )
    )
    for note in report.notes:
        out.print(f"note: {note}")
    scores = leak.to_frame()
    out.print(
        common.summary_table(
            f"Leakage guard (flag at single-column ROC AUC >= {threshold:g})",
            ["column", "ROC AUC", "flags", "reasons"],
            scores[["column", "auc", "flags", "reasons"]].itertuples(index=False),
        )
    )
    if leak.flagged:
        out.print(
            f"[yellow]suspect columns:[/] {', '.join(leak.flagged)}; leave them out with "
            f"--exclude {','.join(leak.flagged)} unless they are recorded before the outcome"
        )
    else:
        out.print("[green]no column flagged[/]")
