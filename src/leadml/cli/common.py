"""Shared pieces of the CLI: settings loading, console output, JSON output."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from leadml.config import Settings, load_settings


@dataclass
class Context:
    """Global options; settings are parsed on first use and then reused."""

    workspace: Path | None = None
    config_dir: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self, **overrides: Any) -> Settings:
        if self._settings is None or overrides:
            self._settings = load_settings(self.config_dir, workspace=self.workspace, **overrides)
        return self._settings


def settings(ctx: typer.Context, **overrides: Any) -> Settings:
    obj: Context = ctx.obj or Context()
    return obj.settings(**overrides)


def open_data(s: Settings, data: Path | None) -> Any:
    """The checked, typed tables of ``--data`` (default: the settings' data folder) as a
    DuckDB connection, with the configured bad-row policy."""
    from leadml.contracts import connect

    con, _ = connect(
        data or s.data_dir,
        s.vocabulary,
        bad_rows=s.data.bad_rows,
        quarantine_dir=s.quarantine_dir,
        example_rows=s.data.example_rows,
    )
    return con


# Output that goes to a file or a pipe is read later, often by grep: wide enough that
# tables keep every figure (a terminal's own width applies to a terminal).
PIPE_WIDTH = 200


def console() -> Console:
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(highlight=False, width=PIPE_WIDTH)
    return out


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def progress() -> Progress:
    """A progress display on stderr so that --json output on stdout stays clean."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    )


def summary_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], width: int | None = None
) -> Table:
    """A table of ``rows``; figures are never cut: when the full numbers do not fit in
    ``width`` (default: the console's), large amounts are shown as 12.7M / 233k (the
    caption says so) and cells wrap rather than end in an ellipsis."""
    rows = [list(r) for r in rows]
    full = [[fmt(v) for v in r] for r in rows]
    cells = full
    if _table_width(columns, full) > (width or console().width):
        cells = [[fmt(v, compact=True) for v in r] for r in rows]
    table = Table(title=title, title_justify="left")
    if cells != full:
        table.caption = "figures rounded: k = thousand, M = million, B = billion (--json: exact)"
    for col in columns:
        table.add_column(col, justify="left" if col == columns[0] else "right", overflow="fold")
    for row in cells:
        table.add_row(*row)
    return table


def _table_width(columns: Sequence[str], cells: list[list[str]]) -> int:
    widths = [
        max([len(str(c)), *(len(r[i]) for r in cells if i < len(r))]) for i, c in enumerate(columns)
    ]
    return sum(widths) + 3 * len(widths) + 1


def fmt(value: Any, compact: bool = False) -> str:
    """A cell: thousands separators; ``compact`` writes amounts from 10,000 up with three
    significant digits and k / M / B."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int | float) and compact and abs(value) >= 10_000:
        for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
            x = value / scale
            if abs(x) >= 0.9995:  # 999,999 is 1.00M, not 1000k
                decimals = 2 if abs(x) < 9.995 else 1 if abs(x) < 99.95 else 0
                return f"{x:.{decimals}f}{unit}"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def emit_json(payload: Any) -> None:
    """Print machine-readable output (NaN becomes null)."""
    text = json.dumps(_clean(payload), default=_default, indent=2)
    typer.echo(text)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj
