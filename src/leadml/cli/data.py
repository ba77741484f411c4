"""Data commands: validate (and the simulator and funnel, registered below)."""

from __future__ import annotations

from pathlib import Path

import typer

from leadml.cli import common


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def validate(
    ctx: typer.Context,
    data: Path | None = typer.Option(
        None, "--data", help="Folder of CSV/Parquet tables or a DuckDB file"
    ),
    quarantine: bool = typer.Option(
        False,
        "--quarantine",
        help="Set bad rows aside in <workspace>/quarantine instead of failing",
    ),
    deep: bool = typer.Option(
        False,
        "--deep",
        help="First read every value of every file, naming any file that cannot be read "
        "in full (a corrupt Parquet page); one full scan of the data",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Check every table against its contract; exit non-zero with the reasons if any breaks it."""
    from rich.markup import escape

    from leadml.contracts import connect, read_in_full

    s = common.settings(ctx)
    location = data or s.data_dir
    read = read_in_full(location) if deep else None
    con, report = connect(
        location,
        s.vocabulary,
        bad_rows="quarantine" if quarantine else s.data.bad_rows,
        quarantine_dir=s.quarantine_dir,
        example_rows=s.data.example_rows,
    )
    con.close()
    if as_json:
        common.emit_json(
            {
                "location": report.location,
                "rows": report.rows,
                "quarantined": report.quarantined,
                "quarantine_dir": str(s.quarantine_dir) if report.quarantined else None,
                "absent_tables": report.missing_tables,
                "consequences": report.consequences(),
                "problems": [
                    {"table": p.table, "column": p.column, "reason": p.reason, "count": p.count}
                    for p in report.problems
                ],
            }
        )
        return
    out = common.console()
    rows = [(t, n, report.quarantined.get(t, 0)) for t, n in report.rows.items()]
    out.print(
        common.summary_table(f"Tables in {report.location}", ["table", "rows", "quarantined"], rows)
    )
    for p in report.problems:
        # user data may contain [brackets]: never let rich read it as markup
        out.print(f"[yellow]quarantined:[/] {escape(p.render())}", soft_wrap=True)
    if read is not None:
        out.print(f"every file of the {read} tables was read in full (--deep)")
    if report.missing_tables:
        out.print(f"absent (optional): {', '.join(report.missing_tables)}")
    for line in report.consequences():
        out.print(f"[yellow]note:[/] {escape(line)}", soft_wrap=True)
    out.print(
        "[green]all tables meet their contracts[/]"
        if report.ok
        else f"[yellow]bad rows written to {escape(str(s.quarantine_dir))}[/]",
        soft_wrap=True,
    )
