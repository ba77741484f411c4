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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd

from leadml.config import Vocabulary
from leadml.errors import DataError
from leadml.sources import (
    TableSource,
    atomic_path,
    error_line,
    frames_source,
    open_source,
    unreadable_files,
)

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
    # Where the allowed values are configured (named in error messages).
    vocab_setting: str = ""


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


_SEG = "vocabulary.segments"


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
                Column("segment", "str", vocab=_segments, vocab_setting=_SEG),
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
                Column(
                    "type",
                    "str",
                    vocab=lambda v: v.event_types,
                    vocab_setting="vocabulary.event_types",
                ),
                Column(
                    "page_category",
                    "str",
                    nullable=True,
                    vocab=lambda v: v.page_categories,
                    vocab_setting="vocabulary.page_categories",
                ),
                Column("campaign_id", "id", nullable=True),
            ),
            description="behavioural signals of leads",
        ),
        Table(
            "lead_status_history",
            (
                Column("lead_id", "id", references=("leads", "lead_id")),
                Column("ts", "timestamp"),
                Column(
                    "status",
                    "str",
                    vocab=lambda v: v.lead_statuses,
                    vocab_setting="vocabulary.lead_statuses",
                ),
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
                Column("segment", "str", vocab=_segments, vocab_setting=_SEG),
            ),
            key=("opportunity_id",),
            description="deals owned by field sales",
        ),
        Table(
            "opportunity_history",
            (
                Column("opportunity_id", "id", references=("opportunities", "opportunity_id")),
                Column("ts", "timestamp"),
                Column(
                    "stage",
                    "str",
                    vocab=lambda v: v.stages,
                    vocab_setting="vocabulary.open_stages / won_stage / lost_stage",
                ),
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
                Column(
                    "type",
                    "str",
                    vocab=lambda v: v.activity_types,
                    vocab_setting="vocabulary.activity_types",
                ),
            ),
            description="inside- and field-sales touches",
            row_checks=(
                (
                    "lead_id IS NULL AND opportunity_id IS NULL",
                    "names neither a lead nor an opportunity",
                ),
            ),
        ),
        Table(
            "reps",
            (
                Column("rep_id", "id"),
                Column(
                    "role", "str", vocab=lambda v: v.rep_roles, vocab_setting="vocabulary.rep_roles"
                ),
                Column("team", "str"),
                Column("segment", "str", nullable=True, vocab=_segments, vocab_setting=_SEG),
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
                Column("segment", "str", nullable=True, vocab=_segments, vocab_setting=_SEG),
                Column("amount", "float", min_value=0),
            ),
            description="revenue targets per period and team or segment",
            row_checks=(("period_end <= period_start", "period_end is not after period_start"),),
        ),
    )
}

TABLE_NAMES: list[str] = list(TABLES)

# Memory DuckDB may use per connection before it spills to disk (see connect()).
DUCKDB_MEMORY_LIMIT = "8GB"


def _dependency_order() -> list[str]:
    """Table names with every referenced (parent) table before the tables that refer to it."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for col in TABLES[name].columns:
            if col.references and col.references[0] != name:
                visit(col.references[0])
        ordered.append(name)

    for name in TABLE_NAMES:
        visit(name)
    return ordered


_FIX_ROWS = (
    "fix: correct these rows at the source, or set them aside and go on with the good rows "
    "(`--quarantine` on `leadml validate` or `leadml batch`; in configs/leadml.yaml "
    "data.bad_rows: quarantine, for the nightly run batch.bad_rows: quarantine; or "
    "LEADML_DATA__BAD_ROWS / LEADML_BATCH__BAD_ROWS=quarantine)"
)


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
        text = f"{where}: {self.reason}"
        if self.count:
            text += f" ({self.count} row{'s' if self.count != 1 else ''})"
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

    def consequences(self) -> list[str]:
        """What an absent or empty optional table costs, one sentence each (the run goes
        on without it, and a user should know why numbers look the way they do)."""
        return [
            f"no {table} rows: {cost}"
            for table, cost in _WITHOUT.items()
            if not self.rows.get(table)
        ]


# What each optional table feeds; said when it is absent or empty.
_WITHOUT = {
    "events": "every behavioural feature (web visits, page views, e-mail, forms, seminars "
    "and webinars) is zero, so readiness rests on the lead's attributes and IS activity",
    "lead_status_history": "every lead is read as in the first status (lead) since its "
    "creation: no MQLs, so the nightly call list is empty",
    "activities": "IS and deal activity features are zero, the call list counts no booked "
    "slots, and the 'stale' deal alert sees only changes to the deal's history",
    "opportunity_history": "no deal scores, forecast or deal alerts (they read the stage history)",
    "targets": "the forecast has no target, gap or probability of reaching it",
}


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
        # Naive values are read in the session time zone, which check_tables sets to UTC.
        return f"TRY_CAST({ref} AS TIMESTAMPTZ)"
    if col.kind == "id" or col.kind == "str":
        return f"NULLIF(TRIM(CAST({ref} AS VARCHAR)), '')"
    return f"TRY_CAST({ref} AS {_DUCK_TYPE[col.kind]})"


def _columns_of(con: duckdb.DuckDBPyConnection, view: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()]


# Raw column types whose values cast to text are never blank: for these, "missing" is
# plain NULL and no value needs the (costly, per row) cast to text to be checked.
_TYPED_RAW = re.compile(
    r"^(TIMESTAMP|DATE|TIME|DOUBLE|FLOAT|REAL|DECIMAL|NUMERIC|BOOLEAN|"
    r"U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?)\b"
)
# Raw column types that TRY_CAST turns into the contract type unchanged (so the typed view
# can pass the column through, and Parquet filter pushdown keeps working).
_SAME_TYPE = {
    "timestamp": ("TIMESTAMP WITH TIME ZONE",),
    "float": ("DOUBLE",),
    "int": ("BIGINT",),
    "id": ("VARCHAR",),
    "str": ("VARCHAR",),
}


def _row_rules(
    table: Table, vocab: Vocabulary, present: set[str], raw_types: dict[str, str] | None = None
) -> list[tuple[str | None, str, str]]:
    """(column, reason, SQL condition TRUE for a bad row) over ``_typed_<table>``, which has
    the typed columns under their names and the raw ones as ``"raw:<name>"``."""
    raw_types = raw_types or {}
    rules: list[tuple[str | None, str, str]] = []
    for col in table.columns:
        if col.name not in present:
            continue
        typed = _q(col.name)
        if _TYPED_RAW.match(raw_types.get(col.name, "").upper()):
            raw_txt = _q("raw:" + col.name)
        elif col.kind in ("id", "str"):
            raw_txt = typed  # the typed value is this very expression: computed once
        else:
            raw_txt = f"NULLIF(TRIM(CAST({_q('raw:' + col.name)} AS VARCHAR)), '')"
        if col.kind in ("timestamp", "float", "int"):
            what = {
                "timestamp": "timestamp (expected ISO 8601, e.g. 2024-01-31 or "
                "2024-01-31T09:30:00Z)",
                "float": "number",
                "int": "whole number",
            }[col.kind]
            rules.append(
                (col.name, f"unparsable {what}", f"{raw_txt} IS NOT NULL AND {typed} IS NULL")
            )
        if not col.nullable:
            rules.append((col.name, "missing value (the column is required)", f"{raw_txt} IS NULL"))
        if col.min_value is not None:
            reason = (
                "negative value (must be >= 0)"
                if col.min_value == 0
                else f"value below the minimum {col.min_value:g}"
            )
            rules.append((col.name, reason, f"{typed} < {col.min_value}"))
        if col.vocab is not None:
            allowed = col.vocab(vocab)
            setting = col.vocab_setting or "vocabulary"
            rules.append(
                (
                    col.name,
                    f"unknown value (allowed: {', '.join(allowed)}; add it to {setting} "
                    "in configs/leadml.yaml if it is a real value)",
                    f"{typed} IS NOT NULL AND {typed} NOT IN ({_lit(allowed)})",
                )
            )
    for cond, reason in table.row_checks:
        needed = [c for c in table.column_names if re.search(rf"\b{c}\b", cond)]
        if all(c in present for c in needed):
            rules.append((None, reason, cond))
    return rules


def _set_rules(
    table: Table, checked: set[str], present: set[str], quarantine: bool
) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """Rules over sets of rows: duplicate keys and references to unknown parents.

    Each gives a query returning the bad ``_row`` numbers of ``_typed_<table>`` (run only
    when the rule is broken) and how to count its bad rows cheaply: ``("query", sql)``
    over ``_chk_<table>``, or ``("ref", column, parent table, parent column)``, counted
    in the table's single checking scan by a hash join with the parent's distinct keys.
    References are checked against the parent's final view, so in quarantine mode a
    child of a quarantined parent row is quarantined too (nothing dangles).
    """
    name = table.name
    rules: list[tuple[str, str, str, tuple[str, ...]]] = []
    for key_col in table.key:
        k = _q(key_col)
        rules.append(
            (
                key_col,
                "duplicate id (every row with the id is listed; ids must be unique)",
                f"SELECT _row FROM (SELECT _row, count(*) OVER (PARTITION BY {k}) AS n "
                f"FROM _typed_{name} WHERE {k} IS NOT NULL) WHERE n > 1",
                (
                    "query",
                    f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM _chk_{name} "
                    f"WHERE {k} IS NOT NULL GROUP BY {k} HAVING count(*) > 1)",
                ),
            )
        )
    for col in table.columns:
        if col.references and col.name in present and col.references[0] in checked:
            ptable, pcol = col.references
            what = _singular(ptable)
            extra = f", or that {what} was quarantined" if quarantine else ""
            rules.append(
                (
                    col.name,
                    f"refers to an unknown {what} (no such {ptable}.{pcol}{extra})",
                    f"SELECT t._row FROM _typed_{name} t ANTI JOIN {ptable} p "
                    f"ON p.{_q(pcol)} = t.{_q(col.name)} WHERE t.{_q(col.name)} IS NOT NULL",
                    ("ref", col.name, ptable, pcol),
                )
            )
    return rules


def _singular(table: str) -> str:
    """``opportunities`` -> ``opportunity``, ``leads`` -> ``lead`` (for messages)."""
    if table.endswith("ies"):
        return table[:-3] + "y"
    return table.removesuffix("s")


def _examples(
    con: duckdb.DuckDBPyConnection, name: str, raw_cols: list[str], where: str, limit: int
) -> pd.DataFrame:
    cols = ", ".join(f"{_q('raw:' + c)} AS {_q(c)}" for c in raw_cols)
    return con.execute(
        f"SELECT {cols} FROM _typed_{name} WHERE {where} ORDER BY _row LIMIT {int(limit)}"
    ).df()


def _structural_problems(
    con: duckdb.DuckDBPyConnection, source: TableSource, present: list[str], example_rows: int
) -> tuple[list[Problem], dict[str, list[str]]]:
    """Missing required tables and missing required columns: problems no row filter can fix."""
    fatal: list[Problem] = []
    missing_required = [t for t in TABLE_NAMES if TABLES[t].required and t not in present]
    for name in missing_required:
        fatal.append(
            Problem(
                name,
                None,
                f"required table missing from {source.location} "
                f"(fix: add {name}.parquet, {name}.csv or a folder {name}/ of Parquet parts, "
                f"or a table named {name} in the DuckDB file)",
                0,
            )
        )
    raw_columns: dict[str, list[str]] = {}
    for name in present:
        table = TABLES[name]
        raw_cols = _columns_of(con, f"raw_{name}")
        missing = [
            c.name
            for c in table.columns
            if c.name not in raw_cols and c.default is None and not c.nullable
        ]
        if missing:
            n = con.execute(f"SELECT count(*) FROM raw_{name}").fetchall()[0][0]  # type: ignore[index]
            ex = con.execute(f"SELECT * FROM raw_{name} LIMIT {int(example_rows)}").df()
            fatal.append(
                Problem(
                    name,
                    ", ".join(missing),
                    "required column missing from every row "
                    f"(found: {', '.join(raw_cols) or 'none'}; "
                    f"fix: add the column, or rename the source column to {', '.join(missing)})",
                    int(n),
                    ex,
                )
            )
            continue
        raw_columns[name] = raw_cols
    return fatal, raw_columns


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

    After a successful return, ``con`` has a view per present canonical table with
    the contract's column types (timestamps as UTC ``TIMESTAMPTZ``), plus extra
    columns where allowed. Views read the source lazily: nothing is copied, a large
    event log is only scanned. Raises :class:`DataError` listing every problem when
    something is wrong and ``bad_rows == "reject"``, or when the problem is not about
    single rows (a missing table or column). With ``bad_rows == "quarantine"`` the
    bad rows (and rows that refer to them) are left out of the views and, when
    ``quarantine_dir`` is given, the folder is replaced atomically by one
    ``<table>.csv`` per table with bad rows: the raw values and a ``_reasons`` column.
    """
    if bad_rows not in ("reject", "quarantine"):
        raise ValueError(f"bad_rows must be 'reject' or 'quarantine', not {bad_rows!r}")
    quarantine = bad_rows == "quarantine"
    con.execute("SET TimeZone = 'UTC'")
    present_tables = [t for t in TABLE_NAMES if t in source.tables]
    source.register(con, present_tables)
    fatal, raw_columns = _structural_problems(con, source, present_tables, example_rows)
    if fatal:
        raise DataError(_render(source.location, fatal, rows_fix=False))

    rows: dict[str, int] = {}
    problems: list[Problem] = []
    quarantined: dict[str, int] = {}
    bad_frames: dict[str, pd.DataFrame] = {}
    views: dict[str, str] = {}  # the final view's query per table
    for name in [t for t in _dependency_order() if t in raw_columns]:
        table, raw_cols = TABLES[name], raw_columns[name]
        present = set(raw_cols)
        raw_types = {r[0]: str(r[1]) for r in con.execute(f"DESCRIBE raw_{name}").fetchall()}
        extras = [c for c in raw_cols if c not in table.column_names] if table.extra_allowed else []
        typed = [f"{_cast(c, c.name in present)} AS {_q(c.name)}" for c in table.columns]
        typed += [_q(c) for c in extras]
        raws = [f"{_q(c)} AS {_q('raw:' + c)}" for c in raw_cols]
        # row_number over an order-preserving scan numbers rows as they are in the file; it
        # is only computed to list example rows and quarantine (a window over every row is
        # costly). The checks count over _chk_<name>, in one scan of the table.
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW _chk_{name} AS SELECT {', '.join(typed + raws)} "
            f"FROM raw_{name}"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW _typed_{name} AS SELECT row_number() OVER () AS _row, "
            f"{', '.join(typed + raws)} FROM raw_{name}"
        )
        bad_sql: list[str] = []
        rules = _row_rules(table, vocab, present, raw_types)
        sets = _set_rules(table, set(rows) - {name}, present, quarantine)
        counts_sql = ["count(*)"] + [f"count_if({cond})" for _, _, cond in rules]
        joins = ""
        for i, (_, _, _, how) in enumerate(sets):
            if how[0] == "ref":
                _, col_name, ptable, pcol = how
                joins += (
                    f" LEFT JOIN (SELECT DISTINCT {_q(pcol)} AS _k FROM {ptable}) _p{i} "
                    f"ON _p{i}._k = t.{_q(col_name)}"
                )
                counts_sql.append(f"count_if(t.{_q(col_name)} IS NOT NULL AND _p{i}._k IS NULL)")
        # Text columns whose every value is already trimmed and non-blank, and columns of the
        # contract type already, pass through the final view unchanged (no per-row casts in
        # every later query, and filters reach the Parquet reader).
        text_cols = [
            c.name
            for c in table.columns
            if c.name in present and c.kind in ("id", "str") and raw_types[c.name] == "VARCHAR"
        ]
        counts_sql += [f"count_if({_q(c)} IS DISTINCT FROM {_q('raw:' + c)})" for c in text_cols]
        sql = f"SELECT {', '.join(counts_sql)} FROM _chk_{name} t{joins}"
        counts = con.execute(sql).fetchall()[0]
        rows[name] = int(counts[0])
        n_refs = sum(1 for s_ in sets if s_[3][0] == "ref")
        row_counts = counts[1 : 1 + len(rules)]
        ref_counts = iter(counts[1 + len(rules) : 1 + len(rules) + n_refs])
        changed = dict(zip(text_cols, counts[1 + len(rules) + n_refs :], strict=True))
        for (column, reason, cond), n in zip(rules, row_counts, strict=True):
            if n:
                ex = _examples(con, name, raw_cols, cond, example_rows)
                problems.append(Problem(name, column, reason, int(n), ex))
                bad_sql.append(
                    f"SELECT _row, {_lit([reason])} AS reason FROM _typed_{name} WHERE {cond}"
                )
        for column, reason, sql, how in sets:
            if how[0] == "ref":
                n = next(ref_counts)
            else:
                n = con.execute(how[1]).fetchall()[0][0]  # type: ignore[index]
            if n:
                con.execute(f"CREATE OR REPLACE TEMP TABLE _hits AS {sql}")
                ex = _examples(
                    con, name, raw_cols, "_row IN (SELECT _row FROM _hits)", example_rows
                )
                problems.append(Problem(name, column, reason, int(n), ex))
                bad_sql.append(f"SELECT _row, {_lit([reason])} AS reason FROM ({sql})")
        final = [
            f"{_q(c.name)}"
            if c.name in present
            and raw_types[c.name] in _SAME_TYPE[c.kind]
            and changed.get(c.name, 0) == 0
            else f"{_cast(c, c.name in present)} AS {_q(c.name)}"
            for c in table.columns
        ]
        final += [_q(c) for c in extras]
        keep = ", ".join(_q(c.name) for c in table.columns)
        keep += "".join(f", {_q(c)}" for c in extras)
        if not bad_sql or not quarantine:
            views[name] = f"SELECT {', '.join(final)} FROM raw_{name}"
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {views[name]}")
            continue
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _bad_{name} AS "
            "SELECT _row, string_agg(reason, '; ') AS reasons "
            f"FROM ({' UNION ALL '.join(bad_sql)}) GROUP BY _row"
        )
        quarantined[name] = con.execute(f"SELECT count(*) FROM _bad_{name}").fetchall()[0][0]  # type: ignore[index]
        # A view, not a copy: the bad row numbers are a small table, the rest is scanned.
        views[name] = (
            f"SELECT {keep} FROM _typed_{name} WHERE _row NOT IN (SELECT _row FROM _bad_{name})"
        )
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {views[name]}")
        cols = ", ".join(f"t.{_q('raw:' + c)} AS {_q(c)}" for c in raw_cols)
        bad_frames[name] = con.execute(
            f"SELECT b.reasons AS _reasons, {cols} FROM _bad_{name} b "
            f"JOIN _typed_{name} t USING (_row) ORDER BY t._row"
        ).df()

    problems += _late_problems(
        con, rows, views, example_rows, (bad_frames, quarantined) if quarantine else None, problems
    )
    if problems and not quarantine:
        raise DataError(_render(source.location, problems))
    if quarantine and quarantine_dir is not None:
        _write_quarantine(quarantine_dir, bad_frames)
    rows = {t: rows[t] for t in TABLE_NAMES if t in rows}
    missing_tables = [t for t in TABLE_NAMES if t not in rows]
    return CheckReport(source.location, rows, problems, quarantined, missing_tables)


# When things happened (not when they are expected to: expected_close_date and the
# targets' periods lie in the future by design).
HAPPENED_AT = (
    ("accounts", "created_at"),
    ("leads", "created_at"),
    ("events", "ts"),
    ("lead_status_history", "ts"),
    ("opportunities", "created_at"),
    ("opportunity_history", "ts"),
    ("activities", "ts"),
)
# A record more than a year after the latest record of every other table is a typo (a
# year off, a placeholder date) when it is one of a few: it would move "the end of the
# data" and with it every label window, the training set's last week and the forecast's
# date. (One export a few weeks newer than the others is normal, even with few rows.)
LATE_DAYS = 365
LATE_MAX_SHARE = 0.001


@dataclass(frozen=True)
class _Late:
    problem: Problem
    condition: str


def _late_records(
    con: duckdb.DuckDBPyConnection, rows: dict[str, int], example_rows: int
) -> dict[str, _Late]:
    """Per table, the few records dated more than ``LATE_DAYS`` days after the latest
    record of every other table (over the checked views). Many such records are not
    typos (one export is newer than the others) and are left alone."""
    cols = [(t, c) for t, c in HAPPENED_AT if rows.get(t)]
    latest: dict[tuple[str, str], Any] = {}
    for t, c in cols:
        value = con.execute(f"SELECT max({_q(c)}) FROM {t}").fetchall()[0][0]
        if value is not None:
            latest[(t, c)] = pd.Timestamp(value)
    found: dict[str, _Late] = {}
    for (t, c), value in latest.items():
        others = [v for k, v in latest.items() if k != (t, c)]
        if not others:
            continue
        rest_end = max(others)
        limit = rest_end + pd.Timedelta(days=LATE_DAYS)
        if value <= limit:
            continue
        cond = f"{_q(c)} > TIMESTAMPTZ '{limit.isoformat()}'"
        n = con.execute(f"SELECT count(*) FROM {t} WHERE {cond}").fetchall()[0][0]
        if n > max(10, LATE_MAX_SHARE * rows[t]) or 2 * n >= rows[t]:
            continue  # not a few typos: this table is newer than the others
        ex = con.execute(
            f"SELECT * FROM {t} WHERE {cond} ORDER BY {_q(c)} DESC LIMIT {int(example_rows)}"
        ).df()
        reason = (
            f"dated after the rest of the data (the other tables end {rest_end:%Y-%m-%d}; "
            f"these are more than {LATE_DAYS} days later, up to {value:%Y-%m-%d}): a typo or "
            "a placeholder date? fix or remove them"
        )
        found[t] = _Late(Problem(t, c, reason, int(n), ex), cond)
    return found


def _late_problems(
    con: duckdb.DuckDBPyConnection,
    rows: dict[str, int],
    views: dict[str, str],
    example_rows: int,
    set_aside: tuple[dict[str, pd.DataFrame], dict[str, int]] | None,
    found_before: list[Problem],
) -> list[Problem]:
    """The late records (:func:`_late_records`) as problems; with ``set_aside`` (the
    quarantine's bad frames and counts) they also leave the table's view. Their child
    rows stay: a typo'd lead's events are not dated late. Not checked when rows are
    rejected already (the views of a rejected table may not even cast)."""
    problems: list[Problem] = []
    if found_before and set_aside is None:
        return problems
    for name, late in _late_records(con, rows, example_rows).items():
        problems.append(late.problem)
        if set_aside is None:
            continue
        bad_frames, quarantined = set_aside
        bad = con.execute(f"SELECT * FROM {name} WHERE {late.condition}").df()
        bad.insert(0, "_reasons", late.problem.reason)
        bad_frames[name] = pd.concat([bad_frames.get(name, pd.DataFrame()), bad])
        quarantined[name] = quarantined.get(name, 0) + len(bad)
        views[name] = f"SELECT * FROM ({views[name]}) WHERE NOT ({late.condition})"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {views[name]}")
    return problems


def _write_quarantine(folder: Path, bad_frames: dict[str, pd.DataFrame]) -> None:
    """Replace ``folder`` as a whole, so no stale file from an earlier run survives."""
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        for name, frame in bad_frames.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)


def _render(location: str, problems: list[Problem], *, rows_fix: bool = True) -> str:
    head = f"input tables in {location} break their contract ({len(problems)} problem(s)):"
    lines = [head, *("- " + p.render() for p in problems)]
    if rows_fix:
        lines.append(_FIX_ROWS)
    return "\n".join(lines)


# ------------------------------------------------------------ conveniences


def connect(
    data: str | Path | TableSource,
    vocab: Vocabulary,
    *,
    bad_rows: str = "reject",
    quarantine_dir: Path | None = None,
    example_rows: int = 5,
    memory_limit: str = DUCKDB_MEMORY_LIMIT,
) -> tuple[duckdb.DuckDBPyConnection, CheckReport]:
    """Open ``data`` in a fresh in-memory DuckDB, check it, return typed views.

    DuckDB may hold at most ``memory_limit`` and spills the rest to a temporary
    folder: its own default (80% of RAM) lets a 100M-event company push the whole
    process into the out-of-memory killer.
    """
    source = data if isinstance(data, TableSource) else open_source(data, TABLE_NAMES)
    con = duckdb.connect(
        config={
            "memory_limit": memory_limit,
            "temp_directory": str(Path(tempfile.gettempdir()) / "leadml-duckdb-spill"),
        }
    )
    # DuckDB draws its own progress bar on stdout for queries over 2 s (a 40k-lead
    # company's forecast or alerts): it broke `--json` output and filled text output with
    # bar lines. Every caller of this connection reports progress its own way.
    con.execute("SET enable_progress_bar = false")
    try:
        report = check_tables(
            con,
            source,
            vocab,
            bad_rows=bad_rows,
            quarantine_dir=quarantine_dir,
            example_rows=example_rows,
        )
    except duckdb.Error as exc:  # a file DuckDB cannot decode (corrupt pages, a cut file)
        con.close()
        try:  # name the file: one full scan, now that the check has failed anyway
            files: list[tuple[str, str, str]] | None = unreadable_files(source)
        except Exception:
            files = None
        raise DataError(read_failure(source.location, "checking the tables", exc, files)) from None
    except BaseException:
        con.close()
        raise
    return con, report


def read_in_full(data: str | Path) -> int:
    """Read every value of every file of the tables in ``data`` (``leadml validate
    --deep``); raise :class:`DataError` naming each file DuckDB cannot decode. Returns the
    number of tables read."""
    source = open_source(data, TABLE_NAMES)
    bad = unreadable_files(source)
    if bad:
        named = "; ".join(f"table {t}: {f} ({why})" for t, f, why in bad)
        raise DataError(
            f"{source.location}: {len(bad)} file(s) cannot be read in full, they may be "
            f"corrupt: {named}; replace them with a good export and run again"
        )
    return len(source.tables)


def read_failure(
    location: str | Path,
    doing: str,
    exc: BaseException,
    files: list[tuple[str, str, str]] | None = None,
) -> str:
    """The message for a DuckDB error while reading the input tables: what was being
    done, DuckDB's reason, the files that cannot be read in full (when probed: see
    :func:`leadml.sources.unreadable_files`) and how to find and replace them."""
    reason = error_line(exc)
    head = f"{location}: reading the input data failed while {doing} (DuckDB: {reason})"
    if files:
        named = "; ".join(f"table {t}: {f} ({why})" for t, f, why in files)
        return (
            f"{head}; these files cannot be read in full, they may be corrupt: {named}; "
            "replace them with a good export and run again"
        )
    if files is not None:
        return (
            f"{head}; every input file reads back in full, so no file looks corrupt: rerun, and "
            "if it fails again report this message"
        )
    return (
        f"{head}; a file may be corrupt: run `leadml validate --deep --data {location}` to "
        "name it, replace it with a good export and run again"
    )


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
        return {
            name: con.execute(f"SELECT * FROM {name}").df()
            for name in (tables or list(report.rows))
        }
    finally:
        con.close()
