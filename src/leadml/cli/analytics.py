"""Analytics commands: ``leadml funnel`` (THE MODEL's measurement on the raw tables)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from leadml.cli import common
from leadml.errors import LeadmlError

if TYPE_CHECKING:
    from leadml.analytics.funnel import FunnelReport


def register(app: typer.Typer) -> None:
    app.command("funnel")(funnel_command)


def _parse_date(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise LeadmlError(
            f"{flag} {value!r} is not a date; expected ISO format YYYY-MM-DD (e.g. 2024-01-31)"
        ) from None


def funnel_command(
    ctx: typer.Context,
    data: Path | None = typer.Option(
        None, "--data", help="Folder of CSV/Parquet tables or a DuckDB file [default: simulated]"
    ),
    start: str | None = typer.Option(
        None, "--start", help="First day, YYYY-MM-DD (UTC) [default: first day in the data]"
    ),
    end: str | None = typer.Option(
        None,
        "--end",
        help="Day after the last one, YYYY-MM-DD (exclusive) [default: day after the data ends]",
    ),
    by: str | None = typer.Option(None, "--by", help="Break down by team or segment"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Stage volumes, conversion, days in stage, recycling and the bottleneck stage."""
    from leadml.analytics.funnel import GROUPINGS, data_range, funnel

    lo, hi = _parse_date(start, "--start"), _parse_date(end, "--end")
    if lo is not None and hi is not None and lo >= hi:
        raise LeadmlError(f"--start {lo} is not before --end {hi}; the range is [start, end)")
    if by is not None and by not in GROUPINGS:
        raise LeadmlError(f"--by {by!r}: use one of {', '.join(GROUPINGS)}")
    s = common.settings(ctx)
    con = common.open_data(s, data)
    try:
        first, after_last = data_range(con)
        report = funnel(
            con,
            s.vocabulary,
            start=lo or first,
            end=hi or after_last,
            by=by,
            config=s.funnel,
            end_name="--end",  # past the data, days with no records would skew the rates
        )
    finally:
        con.close()
    if as_json:
        common.emit_json(report.to_dict())
        return
    _print(report, str(data or s.data_dir))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _days(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _stage_table(report: FunnelReport, funnel: Any, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    cols = ["stage", "entered", "converted", "rate", "adj. rate", "benchmark"]
    cols += ["exited", "back", "open", "median days"]
    if report.by:
        cols.insert(0, report.by)
    for c in cols:
        left = c in ("stage", report.by)
        table.add_column(c, justify="left" if left else "right", no_wrap=left)
    for grp in ["all", *report.groups]:
        for s in report.stages_of(funnel, grp):
            if grp != "all" and s.entered == 0:
                continue
            row = [
                s.stage,
                f"{s.entered:,}",
                f"{s.converted:,}" if s.next_stage else "-",
                _pct(s.conversion_rate),
                _pct(s.conversion_adjusted),
                _pct(s.benchmark),
                *(
                    ("-", "-", "-")  # a closed deal has no way out of its stage
                    if funnel == "opportunity" and not s.next_stage
                    else (f"{s.exited:,}", f"{s.returned:,}", f"{s.still_open:,}")
                ),
                _days(s.median_days),
            ]
            table.add_row(*([grp] if report.by else []), *row)
        if report.by:
            table.add_section()
    return table


def _print(report: FunnelReport, location: str) -> None:
    from rich.markup import escape

    out = common.console()
    if not out.is_terminal:  # piped or captured: do not squeeze the tables into 80 columns
        out.width = max(out.width, 132)
    out.print(
        f"Funnel of {escape(location)}: [bold]{report.start.date()}[/] to "
        f"[bold]{report.end.date()}[/] (end exclusive; only records before the end are read)",
        soft_wrap=True,
    )
    sm = report.summary
    out.print(
        common.summary_table(
            "Summary",
            ["measure", "value"],
            [
                ("leads acquired", sm.get("leads_acquired")),
                ("MQL entries (a lead recycled back counts again)", sm.get("mqls")),
                ("SQL entries", sm.get("sqls")),
                ("opportunities created", sm.get("opportunities_created")),
                ("deals won / lost", f"{sm.get('deals_won', 0):,} / {sm.get('deals_lost', 0):,}"),
                ("win rate", _pct(sm.get("win_rate"))),  # type: ignore[arg-type]
                ("won amount", _num(sm.get("won_amount"))),
                ("average won amount", _num(sm.get("average_won_amount"))),
                ("median sales cycle (days)", _days(sm.get("median_sales_cycle_days"))),  # type: ignore[arg-type]
                ("recycled share of MQLs", _pct(sm.get("recycled_share_of_mql"))),  # type: ignore[arg-type]
                ("recycled share of SQLs", _pct(sm.get("recycled_share_of_sql"))),  # type: ignore[arg-type]
            ],
        )
    )
    if report.stages_of("lead"):
        out.print(_stage_table(report, "lead", "Lead funnel (lead = acquired)"))
    if report.stages_of("opportunity"):
        out.print(_stage_table(report, "opportunity", "Opportunity funnel"))
    if report.recycling:
        rows = [
            (
                (f"{r.group}: " if report.by else "") + r.source,
                r.recycled,
                r.back_to_mql,
                _pct(r.mql_rate),
                r.back_to_sql,
                _pct(r.sql_rate),
            )
            for r in report.recycling
        ]
        out.print(
            common.summary_table(
                "Recycling (back to nurture)",
                ["source", "recycled", "back to MQL", "share", "back to SQL", "share"],
                rows,
            )
        )
    for note in report.notes:
        out.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if report.bottleneck:
        out.print(f"[bold]{escape(report.bottleneck.statement)}[/]", soft_wrap=True)
    for b in report.group_bottlenecks.values():
        if b.ratio < 1:  # groups at or above every benchmark need no line of their own
            out.print(escape(b.statement), soft_wrap=True)
    for note in report.group_notes:
        out.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"
