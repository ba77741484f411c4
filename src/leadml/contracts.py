"""The canonical tables, their contracts, and the checks that enforce them.

Ids are strings; timestamps are timezone-aware UTC (naive timestamps are read
as UTC); money is a float in the target currency. Extra columns on ``leads``
and ``accounts`` are kept (they can become attribute features).

:func:`check_tables` runs every check as DuckDB SQL over ``raw_<table>`` views
(see :mod:`leadml.sources`) and then defines typed views ``<table>`` that the
rest of leadml reads. Bad input is either rejected with a message naming the
table, column, reason, count and example rows, or (``bad_rows="quarantine"``)
the offending rows are set aside with their reasons and the rest go on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd

from leadml.config import Vocabulary
from leadml.errors import DataError
from leadml.sources import TableSource, atomic_path, frames_source, open_source

Kind = Literal["id", "str", "timestamp", "float", "int"]

_DUCK_TYPE: dict[str, str] = {
    "id": "VARCHAR",
    "str": "VARCHAR",
    "timestamp": "TIMESTAMPTZ",
    "float": "DOUBLE",
    "int": "BIGINT",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = False
    vocab: Callable[[Vocabulary], list[str]] | None = None
    min_value: float | None = None
    references: tuple[str, str] | None = None  # (table, column)
    default: object | None = None  # filled in when the column is absent


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    extra_allowed: bool = False
    required: bool = False
    description: str = ""
    row_checks: tuple[tuple[str, str], ...] = field(default=())  # (sql condition for bad, reason)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _segments(v: Vocabulary) -> list[str]:
    return v.segments


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "accounts",
            (
                Column("account_id", "id"),
                Column("industry", "str", nullable=True),
                Column("employees", "int", nullable=True, min_value=0),
                Column("country", "str", nullable=True),
                Column("segment", "str", vocab=_segments),
                Column("created_at", "timestamp"),
            ),
            key=("account_id",),
            extra_allowed=True,
            required=True,
            description="companies the leads work for (firmographics)",
        ),
        Table(
            "leads",
            (
                Column("lead_id", "id"),
                Column("account_id", "id", references=("accounts", "account_id")),
                Column("created_at", "timestamp"),
                Column("source", "str", nullable=True),
                Column("job_level", "str", nullable=True),
            ),
            key=("lead_id",),
            extra_allowed=True,
            required=True,
            description="people known to marketing",
        ),
        Table(
            "events",
            (
                Column("lead_id", "id", references=("leads", "lead_id")),
                Column("ts", "timestamp"),
                Column("type", "str", vocab=lambda v: v.event_types),
                Column("page_category", "str", nullable=True, vocab=lambda v: v.page_categories),
                Column("campaign_id", "id", nullable=True),
            ),
            description="behavioural signals of leads",
        ),
        Table(
            "lead_status_history",
            (
                Column("lead_id", "id", references=("leads", "lead_id")),
                Column("ts", "timestamp"),
                Column("status", "str", vocab=lambda v: v.lead_statuses),
            ),
            description="every change of a lead's marketing status",
        ),
        Table(
            "opportunities",
            (
                Column("opportunity_id", "id"),
                Column("account_id", "id", references=("accounts", "account_id")),
                Column("lead_id", "id", nullable=True, references=("leads", "lead_id")),
                Column("owner_id", "id", references=("reps", "rep_id")),
                Column("created_at", "timestamp"),
                Column("amount", "float", min_value=0),
                Column("segment", "str", vocab=_segments),
            ),
            key=("opportunity_id",),
            description="deals owned by field sales",
        ),
        Table(
            "opportunity_history",
            (
                Column("opportunity_id", "id", references=("opportunities", "opportunity_id")),
                Column("ts", "timestamp"),
                Column("stage", "str", vocab=lambda v: v.stages),
                Column("amount", "float", min_value=0),
                Column("expected_close_date", "timestamp"),
            ),
            description="one row per change of a deal (stage, amount or close date)",
        ),
        Table(
            "activities",
            (
                Column("ts", "timestamp"),
                Column("rep_id", "id", references=("reps", "rep_id")),
                Column("lead_id", "id", nullable=True, references=("leads", "lead_id")),
                Column(
                    "opportunity_id",
                    "id",
                    nullable=True,
                    references=("opportunities", "opportunity_id"),
                ),
                Column("type", "str", vocab=lambda v: v.activity_types),
            ),
            description="inside- and field-sales touches",
            row_checks=(
                ("lead_id IS NULL AND opportunity_id IS NULL", "names neither a lead nor an opportunity"),
            ),
        ),
        Table(
            "reps",
            (
                Column("rep_id", "id"),
                Column("role", "str", vocab=lambda v: v.rep_roles),
                Column("team", "str"),
                Column("segment", "str", nullable=True, vocab=_segments),
                Column("weekly_slots", "int", min_value=1, default=80),
            ),
            key=("rep_id",),
            description="sales reps; IS reps have weekly 30-minute slots",
        ),
        Table(
            "targets",
            (
                Column("period_start", "timestamp"),
                Column("period_end", "timestamp"),
                Column("team", "str", nullable=True),
                Column("segment", "str", nullable=True, vocab=_segments),
                Column("amount", "float", min_value=0),
            ),
            description="revenue targets per period and team or segment",
            row_checks=(("period_end <= period_start", "period_end is not after period_start"),),
        ),
    )
}

TABLE_NAMES: list[str] = list(TABLES)


@dataclass
class Problem:
    """One violated rule, with how many rows break it and a few of them."""

    table: str
    column: str | None
    reason: str
    count: int
    examples: pd.DataFrame | None = None

    def render(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        text = f"{where}: {self.reason} ({self.count} row{'s' if self.count != 1 else ''})"
        if self.examples is not None and len(self.examples):
            shown = self.examples.to_string(index=False, max_colwidth=40)
            text += "\n    " + shown.replace("\n", "\n    ")
        return text


@dataclass
class CheckReport:
    """What :func:`check_tables` found and kept."""

    location: str
    rows: dict[str, int]
    problems: list[Problem]
    quarantined: dict[str, int]
    missing_tables: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _cast(col: Column, present: bool) -> str:
    if not present:
        default = "NULL" if col.default is None else repr(col.default)
        return f"CAST({default} AS {_DUCK_TYPE[col.kind]})"
    ref = _q(col.name)
    if col.kind == "timestamp":
        return f"TRY_CAST({ref} AS TIMESTAMPTZ)"
    if col.kind == "id" or col.kind == "str":
        return f"NULLIF(TRIM(CAST({ref} AS VARCHAR)), '')"
    return f"TRY_CAST({ref} AS {_DUCK_TYPE[col.kind]})"


def _columns_of(con: duckdb.DuckDBPyConnection, view: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()]


def _row_rules(table: Table, vocab: Vocabulary, present: set[str]) -> list[tuple[str | None, str, str]]:
    """(column, reason, SQL condition TRUE for a bad row) over ``_typed_<table>``, which has
    the typed columns under their names and the raw ones as ``"raw:<name>"``."""
    rules: list[tuple[str | None, str, str]] = []
    for col in table.columns:
        if col.name not in present:
            continue
        typed = _q(col.name)
        raw_txt = f"NULLIF(TRIM(CAST({_q('raw:' + col.name)} AS VARCHAR)), '')"
        if col.kind in ("timestamp", "float", "int"):
            what = {"timestamp": "timestamp", "float": "number", "int": "whole number"}[col.kind]
            rules.append((col.name, f"unparsable {what}", f"{raw_txt} IS NOT NULL AND {typed} IS NULL"))
        if not col.nullable:
            rules.append((col.name, "missing value", f"{raw_txt} IS NULL"))
        if col.min_value is not None:
            rules.append((col.name, f"value below {col.min_value:g}", f"{typed} < {col.min_value}"))
        if col.vocab is not None:
            allowed = col.vocab(vocab)
            rules.append(
                (
                    col.name,
                    f"unknown value (allowed: {', '.join(allowed)}; the vocabulary is "
                    "configurable in configs/leadml.yaml)",
                    f"{typed} IS NOT NULL AND {typed} NOT IN ({_lit(allowed)})",
                )
            )
    for cond, reason in table.row_checks:
        needed = [c for c in table.column_names if re.search(rf"\b{c}\b", cond)]
        if all(c in present for c in needed):
            rules.append((None, reason, cond))
    return rules


def _set_rules(table: Table, rows: dict[str, int], present: set[str]) -> list[tuple[str, str, str]]:
    """Rules over sets of rows: duplicate keys and references to unknown parents.
    Each gives a query returning the bad ``_row`` numbers of ``_typed_<table>``."""
    name = table.name
    rules: list[tuple[str, str, str]] = []
    for key_col in table.key:
        rules.append(
            (
                key_col,
                "duplicate id",
                f"SELECT _row FROM (SELECT _row, count(*) OVER (PARTITION BY {_q(key_col)}) AS n "
                f"FROM _typed_{name} WHERE {_q(key_col)} IS NOT NULL) WHERE n > 1",
            )
        )
    for col in table.columns:
        if col.references and col.name in present and col.references[0] in rows:
            ptable, pcol = col.references
            rules.append(
                (
                    col.name,
                    f"refers to an unknown {ptable.removesuffix('s')} (no such {ptable}.{pcol})",
                    f"SELECT t._row FROM _typed_{name} t ANTI JOIN _typed_{ptable} p "
                    f"ON p.{_q(pcol)} = t.{_q(col.name)} WHERE t.{_q(col.name)} IS NOT NULL",
                )
            )
    return rules


def _examples(
    con: duckdb.DuckDBPyConnection, name: str, raw_cols: list[str], where: str, limit: int
) -> pd.DataFrame:
    cols = ", ".join(f"{_q('raw:' + c)} AS {_q(c)}" for c in raw_cols)
    return con.execute(f"SELECT {cols} FROM _typed_{name} WHERE {where} ORDER BY _row LIMIT {int(limit)}").df()


def check_tables(
    con: duckdb.DuckDBPyConnection,
    source: TableSource,
    vocab: Vocabulary,
    *,
    bad_rows: str = "reject",
    example_rows: int = 5,
    quarantine_dir: Path | None = None,
) -> CheckReport:
    """Check every table of ``source`` against its contract and define typed views.

    After a successful return, ``con`` has a view (or, for a table that lost
    rows to quarantine, a temporary table) per present canonical table with the
    contract's column types, plus extra columns where allowed. Raises
    :class:`DataError` listing every problem when something is wrong and
    ``bad_rows == "reject"``, or when the problem is not about single rows
    (a missing table or column). The quarantine file is written only after
    every check has run.
    """
    con.execute("SET TimeZone = 'UTC'")
    present_tables = [t for t in TABLE_NAMES if t in source.tables]
    missing_required = [t for t in TABLE_NAMES if TABLES[t].required and t not in present_tables]
    fatal: list[Problem] = []
    if missing_required:
        fatal.append(
            Problem(", ".join(missing_required), None, f"required table missing from {source.location}", 0)
        )
    source.register(con, present_tables)
    raw_columns: dict[str, list[str]] = {}
    for name in present_tables:
        table = TABLES[name]
        raw_cols = _columns_of(con, f"raw_{name}")
        missing = [c.name for c in table.columns if c.name not in raw_cols and c.default is None and not c.nullable]
        if missing:
            fatal.append(
                Problem(
                    name,
                    ", ".join(missing),
                    f"column missing (found: {', '.join(raw_cols) or 'none'}); "
                    "rename the source column or map it with `leadml import`",
                    0,
                )
            )
            continue
        raw_columns[name] = raw_cols
        extras = [c for c in raw_cols if c not in table.column_names] if table.extra_allowed else []
        typed = [f"{_cast(c, c.name in raw_cols)} AS {_q(c.name)}" for c in table.columns]
        typed += [_q(c) for c in extras]
        raws = [f"{_q(c)} AS {_q('raw:' + c)}" for c in raw_cols]
        # row_number over an order-preserving scan numbers rows as they are in the file.
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW _typed_{name} AS SELECT row_number() OVER () AS _row, "
            f"{', '.join(typed + raws)} FROM raw_{name}"
        )
    if fatal:
        raise DataError(_render(source.location, fatal))

    rows: dict[str, int] = {}
    problems: list[Problem] = []
    bad_sql: dict[str, list[str]] = {}
    for name, raw_cols in raw_columns.items():
        rules = _row_rules(TABLES[name], vocab, set(raw_cols))
        counts_sql = ", ".join(["count(*)"] + [f"count_if({cond})" for _, _, cond in rules])
        counts = con.execute(f"SELECT {counts_sql} FROM _typed_{name}").fetchone()
        assert counts is not None
        rows[name] = int(counts[0])
        for (column, reason, cond), n in zip(rules, counts[1:], strict=True):
            if n:
                ex = _examples(con, name, raw_cols, cond, example_rows)
                problems.append(Problem(name, column, reason, int(n), ex))
                bad_sql.setdefault(name, []).append(
                    f"SELECT _row, {_lit([reason])} AS reason FROM _typed_{name} WHERE {cond}"
                )
    for name, raw_cols in raw_columns.items():
        for column, reason, sql in _set_rules(TABLES[name], rows, set(raw_cols)):
            con.execute(f"CREATE OR REPLACE TEMP TABLE _hits AS {sql}")
            n = con.execute("SELECT count(*) FROM _hits").fetchone()[0]  # type: ignore[index]
            if n:
                ex = _examples(con, name, raw_cols, "_row IN (SELECT _row FROM _hits)", example_rows)
                problems.append(Problem(name, column, reason, int(n), ex))
                bad_sql.setdefault(name, []).append(f"SELECT _row, {_lit([reason])} AS reason FROM ({sql})")

    if problems and bad_rows != "quarantine":
        raise DataError(_render(source.location, problems))
    quarantined: dict[str, int] = {}
    for name, raw_cols in raw_columns.items():
        table = TABLES[name]
        keep = [_q(c.name) for c in table.columns]
        keep += [_q(c) for c in raw_cols if c not in table.column_names] if table.extra_allowed else []
        if name not in bad_sql:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {', '.join(keep)} FROM _typed_{name}")
            continue
        union = " UNION ALL ".join(bad_sql[name])
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _bad_{name} AS "
            f"SELECT _row, string_agg(reason, '; ') AS reasons FROM ({union}) GROUP BY _row"
        )
        quarantined[name] = con.execute(f"SELECT count(*) FROM _bad_{name}").fetchone()[0]  # type: ignore[index]
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {', '.join(keep)} FROM _typed_{name} "
            f"WHERE _row NOT IN (SELECT _row FROM _bad_{name}) ORDER BY _row"
        )
        if quarantine_dir is not None:
            cols = ", ".join(f"t.{_q('raw:' + c)} AS {_q(c)}" for c in raw_cols)
            bad = con.execute(
                f"SELECT b.reasons AS _reasons, {cols} FROM _bad_{name} b "
                f"JOIN _typed_{name} t USING (_row) ORDER BY t._row"
            ).df()
            with atomic_path(quarantine_dir / f"{name}.csv") as tmp:
                bad.to_csv(tmp, index=False)
    missing_tables = [t for t in TABLE_NAMES if t not in rows]
    return CheckReport(source.location, rows, problems, quarantined, missing_tables)


def _render(location: str, problems: list[Problem]) -> str:
    head = f"input tables in {location} break their contract ({len(problems)} problem(s)):"
    return "\n".join([head, *("- " + p.render() for p in problems)])


# ------------------------------------------------------------ conveniences


def connect(
    data: str | Path | TableSource,
    vocab: Vocabulary,
    *,
    bad_rows: str = "reject",
    quarantine_dir: Path | None = None,
    example_rows: int = 5,
) -> tuple[duckdb.DuckDBPyConnection, CheckReport]:
    """Open ``data`` in a fresh in-memory DuckDB, check it, return typed views."""
    source = data if isinstance(data, TableSource) else open_source(data, TABLE_NAMES)
    con = duckdb.connect()
    try:
        report = check_tables(
            con,
            source,
            vocab,
            bad_rows=bad_rows,
            quarantine_dir=quarantine_dir,
            example_rows=example_rows,
        )
    except BaseException:
        con.close()
        raise
    return con, report


def load_tables(
    data: str | Path | dict[str, pd.DataFrame],
    vocab: Vocabulary | None = None,
    tables: list[str] | None = None,
    **kwargs: object,
) -> dict[str, pd.DataFrame]:
    """Checked, typed tables as pandas DataFrames (for data that fits in memory)."""
    vocab = vocab or Vocabulary()
    src = frames_source(data) if isinstance(data, dict) else data
    con, report = connect(src, vocab, **kwargs)  # type: ignore[arg-type]
    try:
        return {name: con.execute(f"SELECT * FROM {name}").df() for name in (tables or list(report.rows))}
    finally:
        con.close()
