"""Shared pieces of the CLI: settings loading, console output, JSON output."""

from __future__ import annotations

import json
import math
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


def console() -> Console:
    return Console(highlight=False)


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


def summary_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="left" if col == columns[0] else "right")
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    return table


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
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
