"""Where a nightly run's tables go: Parquet partitions and a SQL database.

Every output table carries an ``as_of`` column (a date). One run writes one
as-of date, and re-running that date *replaces* its rows:

- Parquet: ``<root>/<table>/as_of=YYYY-MM-DD/part-0.parquet``. Every partition
  of the run is first written to a hidden staging folder beside its target; only
  when all of them are written are they renamed into place.
- SQL: one transaction per run that, for every table, deletes the date's rows
  and inserts the new ones. The default is a DuckDB file in the workspace
  (written with DuckDB's own Python API: the ``duckdb_engine`` SQLAlchemy dialect
  is not part of the pinned set); any other SQLAlchemy URL (PostgreSQL with
  ``postgresql+psycopg://...`` in particular) goes through SQLAlchemy Core.

:func:`publish` stages everything before it publishes anything, so an exception
while the run is still producing or staging its tables leaves the previous
outputs exactly as they were, and readable.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from leadml.errors import ConfigError, DataError

OUTPUT_TABLES: tuple[str, ...] = (
    "scores_leads",
    "scores_deals",
    "call_list",
    "forecast",
    "alerts",
    "drift",
    "call_capacity",
    "manifest",
)
AS_OF = "as_of"
# pg_advisory_xact_lock key that serialises nightly publishes into one PostgreSQL database
PUBLISH_LOCK_KEY = 0x6C6561646D6C  # "leadml"
# float columns with these names hold counts (BIGINT in a new SQL table)
COUNT_SUFFIXES = ("_deals", "_leads", "_count", "_rows")

# The columns every night writes, with their types, whatever that night's data holds:
# an empty call list, a leads table without ``team`` or deals that never have a grade
# must not write a column of type "null" (DuckDB then creates a column it cannot
# insert text into later, and a Parquet glob takes its schema from the first file).
# Kinds: str, float, int, bool, date (a calendar day), ts (an instant, UTC).
_S, _F, _I = "str", "float", "int"
OUTPUT_COLUMNS: dict[str, dict[str, str]] = {
    "scores_leads": {
        "lead_id": _S, "readiness": _F, "grade": _S, "reasons": _S, "status": _S,
        "segment": _S, "team": _S, "model_version": _S,
    },
    "scores_deals": {
        "opportunity_id": _S, "p_won_this_quarter": _F, "p_won_by_next_quarter_end": _F,
        "p_won_90d": _F, "probability": _F, "grade": _S, "reasons": _S, "stage": _S,
        "amount": _F, "expected_close_date": "date", "last_update": "ts", "owner_id": _S,
        "team": _S, "segment": _S, "expected_amount_this_quarter": _F, "model_version": _S,
    },
    "call_list": {
        "rep_id": _S, "rank": _I, "call_date": "date", "lead_id": _S, "readiness": _F,
        "grade": _S, "reasons": _S, "status": _S, "segment": _S, "team": _S,
        "model_version": _S, "same_rep_as_last_touch": "bool", "rep_team": _S,
        "rep_segment": _S,
    },
    "forecast": {
        "kind": _S, "quarter": _S, "period": _S, "period_start": "ts", "period_end": "ts",
        "grouping": _S, "group": _S, "won": _F, "open_expected": _F, "new_expected": _F,
        "expected": _F, "p10": _F, "p50": _F, "p90": _F, "target": _F, "gap_to_target": _F,
        "p_reach_target": _F, "open_pipeline": _F, "period_pipeline": _F,
        "remaining_target": _F, "coverage": _F, "open_deals": _I, "error_bound": _F,
        "probability_source": _S, "week_end": "ts",
    },
    "alerts": {
        "opportunity_id": _S, "owner_id": _S, "team": _S, "stage": _S, "amount": _F,
        "rule": _S, "reason": _S, "figures": _S,
    },
    "drift": {
        "model": _S, "feature": _S, "kind": _S, "psi": _F, "status": _S, "rows": _I,
        "reference_missing": _F, "current_missing": _F, "reference_percentiles": _S,
    },
    "call_capacity": {
        "rep_id": _S, "team": _S, "segment": _S, "weekly_slots": _I, "booked": _I,
        "capacity": _I, "leads": _I, "assigned": _I, "expected_conversions": _F,
    },
    "manifest": {
        "run_id": _S, "started_at": "ts", "finished_at": "ts", "status": _S,
        "data_location": _S, "sql_url": _S, "input_rows": _S, "quarantined_rows": _S,
        "open_entities": _S, "model_versions": _S, "model_metrics": _S, "rows_written": _S,
        "timings_s": _S, "drifted_features": _S, "drift_note": _S, "settings": _S,
        "peak_rss_mb": _F,
        "warnings": _S,
    },
}  # fmt: skip


def _as_kind(s: pd.Series, kind: str) -> pd.Series:
    """``s`` as a column of ``kind`` (missing values stay missing)."""
    if kind == "str":
        return s.astype(object).map(lambda v: None if is_null(v) else str(v)).astype("str")
    if kind == "float":
        return pd.to_numeric(s, errors="coerce").astype("float64")
    if kind == "int":
        return pd.to_numeric(s, errors="coerce").round().astype("Int64")
    if kind == "bool":
        return s.astype("boolean")
    stamps = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
    if kind == "ts":
        return stamps
    return stamps.dt.date.astype(object).where(stamps.notna(), None)


def is_null(v: object) -> bool:
    """A missing scalar (None, NaN, NA, NaT); a list or dict is a value."""
    return v is None or (not isinstance(v, list | tuple | dict) and bool(pd.isna(v)))


def conform(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every column of :data:`OUTPUT_COLUMNS` ``[table]``, in that order and of
    that kind (absent ones all missing); other columns follow as they are."""
    columns = OUTPUT_COLUMNS.get(table, {})
    out = pd.DataFrame(index=df.index)
    for col, kind in columns.items():
        out[col] = _as_kind(df[col] if col in df else pd.Series(None, index=df.index), kind)
    for col in df.columns:
        if col not in columns:
            out[col] = df[col]
    return out.reset_index(drop=True)


def _arrow(table: str, frame: pd.DataFrame) -> Any:
    """The frame as an Arrow table, typed by :data:`OUTPUT_COLUMNS` (so an empty night's
    columns keep their types); a column of another table with no value at all is text."""
    import pyarrow as pa

    kinds = {
        "str": pa.large_string(),
        "float": pa.float64(),
        "int": pa.int64(),
        "bool": pa.bool_(),
        "date": pa.date32(),
        "ts": pa.timestamp("us", tz="UTC"),
    }
    declared = {AS_OF: "date", **OUTPUT_COLUMNS.get(table, {})}
    arrays, names = [], []
    for col in frame.columns:
        kind = declared.get(col)
        arr = pa.Array.from_pandas(
            frame[col], type=kinds[kind] if kind else None, safe=kind != "ts"
        )
        arrays.append(arr.cast(pa.large_string()) if pa.types.is_null(arr.type) else arr)
        names.append(str(col))
    return pa.Table.from_arrays(arrays, names=names)


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (what logs, manifests and reports show)."""
    import sqlalchemy as sa

    if url.startswith("duckdb:///"):
        return url
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"


def _reason(exc: BaseException) -> str:
    """The first line of a database error, without the driver's class name."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def partition_name(as_of: date) -> str:
    return f"{AS_OF}={as_of.isoformat()}"


def _with_as_of(df: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """The frame with ``as_of`` as its first column (a date), replacing any given one."""
    out = df.drop(columns=[AS_OF], errors="ignore").copy()
    out.insert(0, AS_OF, pd.Series([as_of] * len(out), index=out.index, dtype="date32[pyarrow]"))
    return out


def _sql_ready(df: pd.DataFrame) -> pd.DataFrame:
    """Columns every SQL backend accepts: lists/dicts become JSON text, NaN becomes NULL."""
    import json

    out = df.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == object or str(s.dtype).startswith(("string", "str")):
            sample = s.dropna().head(50)
            if len(sample) and sample.map(lambda v: isinstance(v, list | tuple | dict)).any():
                out[col] = s.map(
                    lambda v: (
                        None
                        if v is None
                        else json.dumps(list(v) if isinstance(v, tuple) else v, default=str)
                    )
                )
    return out


# ---------------------------------------------------------------- Parquet


@dataclass
class ParquetOutputs:
    """Partitioned Parquet under ``root`` (normally ``<workspace>/outputs``)."""

    root: Path

    def partition(self, table: str, as_of: date) -> Path:
        return self.root / table / partition_name(as_of)

    @contextlib.contextmanager
    def stage(self, as_of: date, tables: Mapping[str, pd.DataFrame]) -> Iterator[None]:
        """Write every partition to a staging folder; on a clean exit, rename them in.

        An exception inside the ``with`` (or while staging) removes the staging
        folders and leaves the published partitions untouched.
        """
        staged: list[tuple[Path, Path]] = []
        try:
            for table, df in tables.items():
                target = self.partition(table, as_of)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
                tmp.mkdir()
                staged.append((tmp, target))
                import pyarrow.parquet as pq

                pq.write_table(
                    _arrow(table, _with_as_of(df, as_of).drop(columns=[AS_OF])),
                    tmp / "part-0.parquet",
                )
            yield
            for tmp, target in staged:
                old = None
                if target.exists():
                    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
                    os.replace(target, old)
                os.replace(tmp, target)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
        finally:
            for tmp, _ in staged:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)

    def read(self, table: str, as_of: date | None = None) -> pd.DataFrame:
        """One date's rows (with ``as_of``), or every date's when ``as_of`` is None."""
        folders = (
            [self.partition(table, as_of)]
            if as_of is not None
            else sorted(p for p in (self.root / table).glob(f"{AS_OF}=*") if p.is_dir())
        )
        frames = []
        for folder in folders:
            if not folder.is_dir():
                continue
            day = date.fromisoformat(folder.name.split("=", 1)[1])
            parts = sorted(folder.glob("*.parquet"))
            df = (
                pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
                if parts
                else pd.DataFrame()
            )
            frames.append(_with_as_of(df, day))
        if not frames:
            return pd.DataFrame({AS_OF: pd.Series([], dtype="date32[pyarrow]")})
        return pd.concat(frames, ignore_index=True)

    def dates(self, table: str = "manifest") -> list[date]:
        return sorted(
            date.fromisoformat(p.name.split("=", 1)[1])
            for p in (self.root / table).glob(f"{AS_OF}=*")
            if p.is_dir()
        )


# ---------------------------------------------------------------- SQL


class SqlOutputs(Protocol):
    """A database that holds the output tables; one transaction per run."""

    url: str

    def stage(
        self, as_of: date, tables: Mapping[str, pd.DataFrame]
    ) -> contextlib.AbstractContextManager[None]: ...

    def read(self, table: str, as_of: date | None = None) -> pd.DataFrame: ...

    def has(self, table: str) -> bool: ...


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class DuckDBOutputs:
    """Output tables in a DuckDB file, written with DuckDB's Python API."""

    path: Path

    @property
    def url(self) -> str:
        return f"duckdb:///{self.path}"

    @property
    def safe_url(self) -> str:
        return self.url

    @contextlib.contextmanager
    def stage(self, as_of: date, tables: Mapping[str, pd.DataFrame]) -> Iterator[None]:
        """Delete the date's rows and insert the new ones in one transaction, committed
        only when the ``with`` body finishes without an exception."""
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(self.path))
        except duckdb.Error as exc:
            raise ConfigError(
                f"{self.path}: cannot open the output database ({_reason(exc)}); another "
                "program holds the file open (a DuckDB shell, a BI tool, another run): close "
                "it and run again, or set batch.sql_url to another database"
            ) from None
        table = ""
        try:
            con.execute("BEGIN TRANSACTION")
            for i, (table, df) in enumerate(tables.items()):
                frame = _sql_ready(_with_as_of(df, as_of))
                self._write(con, f"_leadml_frame_{i}", table, frame, as_of)
            table = ""
            yield
            table = "(commit)"
            con.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            if not table:  # raised by the caller's block, not by this store
                raise
            raise DataError(
                f"{self.path}: table {table}: cannot write ({_reason(exc)}); nothing was "
                "published; fix the column's type in the database or drop the table so the "
                "next run creates it"
            ) from None
        except BaseException:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    @staticmethod
    def _write(con: Any, name: str, table: str, frame: pd.DataFrame, as_of: date) -> None:
        con.register(name, _arrow(table, frame))
        con.execute(f"CREATE TABLE IF NOT EXISTS {_q(table)} AS SELECT * FROM {name} LIMIT 0")
        have = {r[0]: r[1] for r in con.execute(f"DESCRIBE {_q(table)}").fetchall()}
        wanted = {r[0]: r[1] for r in con.execute(f"DESCRIBE {name}").fetchall()}
        for col in frame.columns:
            if col not in have:
                con.execute(f"ALTER TABLE {_q(table)} ADD COLUMN {_q(col)} {wanted[col]}")
            elif have[col] == '"NULL"':  # made by an earlier version from an all-missing column
                con.execute(f"ALTER TABLE {_q(table)} ALTER COLUMN {_q(col)} TYPE {wanted[col]}")
        con.execute(f"DELETE FROM {_q(table)} WHERE {AS_OF} = ?", [as_of])
        con.execute(f"INSERT INTO {_q(table)} BY NAME SELECT * FROM {name}")
        con.unregister(name)

    def has(self, table: str) -> bool:
        import duckdb

        if not self.path.exists():
            return False
        with duckdb.connect(str(self.path), read_only=True) as con:
            found = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
            ).fetchone()
        return bool(found and found[0])

    def read(self, table: str, as_of: date | None = None) -> pd.DataFrame:
        import duckdb

        with duckdb.connect(str(self.path), read_only=True) as con:
            sql = f"SELECT * FROM {_q(table)}"
            params: list[Any] = []
            if as_of is not None:
                sql += f" WHERE {AS_OF} = ?"
                params.append(as_of)
            return con.execute(sql, params).df()


@dataclass
class SqlAlchemyOutputs:
    """Output tables in any database SQLAlchemy reaches (PostgreSQL via psycopg 3)."""

    url: str

    def _engine(self) -> Any:
        import sqlalchemy as sa

        try:
            return sa.create_engine(self.url)
        except Exception as exc:  # bad URL or driver not installed
            raise ConfigError(
                f"batch.sql_url {self._safe_url()}: cannot open ({exc}); "
                "use a SQLAlchemy URL such as "
                "postgresql+psycopg://user@host:5432/db (LEADML_BATCH__SQL_URL)"
            ) from None

    def _safe_url(self) -> str:
        return masked_url(self.url)

    @property
    def safe_url(self) -> str:
        """The URL with its password masked (for output, manifests and reports)."""
        return self._safe_url()

    @contextlib.contextmanager
    def stage(self, as_of: date, tables: Mapping[str, pd.DataFrame]) -> Iterator[None]:
        """One transaction: per table, create it if missing, add new columns, delete the
        date's rows, insert the new ones; committed only when the ``with`` body succeeds.

        On PostgreSQL the transaction first takes an advisory lock, so two runs publishing
        into the same database at once take turns (the second replaces the first's rows)."""
        import sqlalchemy as sa

        engine = self._engine()
        table = ""
        try:
            try:
                conn = engine.connect()
            except sa.exc.OperationalError as exc:
                raise ConfigError(
                    f"batch.sql_url {self._safe_url()}: cannot connect ({exc.orig}); "
                    "start the database or fix LEADML_BATCH__SQL_URL"
                ) from None
            errors = _db_errors(conn)
            try:
                with conn, conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.execute(
                            sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PUBLISH_LOCK_KEY}
                        )
                    for table, df in tables.items():
                        self._replace(conn, table, _sql_ready(_with_as_of(df, as_of)), as_of)
                    table = ""
                    yield
                    table = "(commit)"
            except errors as exc:
                if not table:  # raised by the caller's block, not by this store
                    raise
                raise DataError(
                    f"batch.sql_url {self._safe_url()}: table {table}: cannot write "
                    f"({_reason(exc)}); nothing was published; fix the column's type in the "
                    "database or drop the table so the next run creates it"
                ) from None
        finally:
            engine.dispose()

    def _replace(self, conn: Any, table: str, frame: pd.DataFrame, as_of: date) -> None:
        import sqlalchemy as sa

        types = _column_types(frame)
        insp = sa.inspect(conn)
        if not insp.has_table(table):
            frame.head(0).to_sql(table, conn, index=False, dtype=types)
        have = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns(table)}
        prep = conn.dialect.identifier_preparer
        for col in frame.columns:
            if col not in have:
                sql_type = types.get(col, _sqlalchemy_type(frame[col]))
                conn.execute(
                    sa.text(
                        f"ALTER TABLE {prep.quote(table)} ADD COLUMN {prep.quote(col)} "
                        f"{sql_type.compile(dialect=conn.dialect)}"
                    )
                )
                have[col] = sql_type
        conn.execute(sa.text(f"DELETE FROM {prep.quote(table)} WHERE {AS_OF} = :d"), {"d": as_of})
        if len(frame) == 0:
            return
        frame = _fit_to(frame, have)
        if conn.dialect.name == "postgresql":
            _copy_postgres(conn, table, frame)
        else:
            frame.to_sql(table, conn, index=False, if_exists="append", chunksize=10_000)

    def has(self, table: str) -> bool:
        import sqlalchemy as sa

        engine = self._engine()
        try:
            return bool(sa.inspect(engine).has_table(table))
        finally:
            engine.dispose()

    def read(self, table: str, as_of: date | None = None) -> pd.DataFrame:
        import sqlalchemy as sa

        engine = self._engine()
        try:
            with engine.connect() as conn:
                prep = conn.dialect.identifier_preparer
                sql = f"SELECT * FROM {prep.quote(table)}"
                params: dict[str, Any] = {}
                if as_of is not None:
                    sql += f" WHERE {AS_OF} = :d"
                    params["d"] = as_of
                return pd.read_sql(sa.text(sql), conn, params=params)
        finally:
            engine.dispose()


def _sqlalchemy_type(s: pd.Series) -> Any:
    import sqlalchemy as sa

    kind = s.dtype.kind if hasattr(s.dtype, "kind") else "O"
    if kind == "b":
        return sa.Boolean()
    if kind in "iu":
        return sa.BigInteger()
    if kind == "f":
        return sa.Float()
    if kind == "M":
        return sa.DateTime(timezone=True)
    return sa.Text()


def _db_errors(conn: Any) -> tuple[type[BaseException], ...]:
    """The exceptions a failed statement raises: SQLAlchemy's, and the driver's own (COPY
    goes through the driver connection directly)."""
    import sqlalchemy as sa

    driver = getattr(getattr(conn.dialect, "dbapi", None), "Error", None)
    return (sa.exc.SQLAlchemyError, *([driver] if isinstance(driver, type) else []))


def _is_day(v: object) -> bool:
    return isinstance(v, date) and not isinstance(v, datetime)


def _column_types(frame: pd.DataFrame) -> dict[str, Any]:
    """SQL types for a new table's columns where the frame's values mean more than their
    dtype says: calendar dates (``*_date`` at midnight, ``datetime.date`` values) are DATE,
    ISO timestamps in text (``*_at``) are TIMESTAMP WITH TIME ZONE, whole-number counts
    (``open_deals``) are BIGINT. Other columns get pandas' default type."""
    import sqlalchemy as sa

    out: dict[str, Any] = {AS_OF: sa.Date()}
    for col in frame.columns:
        s = frame[col]
        vals = s.dropna()
        if col == AS_OF or not len(vals):
            continue
        kind = getattr(s.dtype, "kind", "O")
        if kind == "M" and col.endswith("_date") and (vals == vals.dt.normalize()).all():
            out[col] = sa.Date()
        elif kind == "O" and _is_day(vals.iloc[0]) and vals.map(_is_day).all():
            out[col] = sa.Date()
        elif kind == "O" and col.endswith("_at"):
            parsed = pd.to_datetime(vals, errors="coerce", utc=True, format="ISO8601")
            if parsed.notna().all():
                out[col] = sa.DateTime(timezone=True)
        elif kind == "f" and col.endswith(COUNT_SUFFIXES) and (vals == vals.round()).all():
            out[col] = sa.BigInteger()
    return out


def _fit_to(frame: pd.DataFrame, columns: Mapping[str, Any]) -> pd.DataFrame:
    """The frame's values in the form the table's DATE and integer columns accept."""
    import sqlalchemy as sa

    out = frame
    for col in frame.columns:
        target, s = columns.get(col), frame[col]
        kind = getattr(s.dtype, "kind", "O")
        if col == AS_OF or target is None:
            continue
        if isinstance(target, sa.Date) and not isinstance(target, sa.DateTime) and kind == "M":
            out = out.assign(**{col: s.dt.tz_localize(None).dt.date if s.dt.tz else s.dt.date})
        elif isinstance(target, sa.Integer) and kind == "f":
            vals = s.dropna()
            if (vals == vals.round()).all():
                out = out.assign(**{col: s.astype("Int64")})
    return out


def _copy_postgres(conn: Any, table: str, frame: pd.DataFrame) -> None:
    """Bulk insert with PostgreSQL's COPY (orders of magnitude faster than INSERTs)."""
    raw = conn.connection.driver_connection  # psycopg 3 connection, same transaction
    prep = conn.dialect.identifier_preparer
    cols = ", ".join(prep.quote(c) for c in frame.columns)
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%dT%H:%M:%S.%f%z")
    with (
        raw.cursor() as cur,
        cur.copy(
            f"COPY {prep.quote(table)} ({cols}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
        ) as copy,
    ):
        copy.write(buf.getvalue())


def sql_outputs(url: str | None, workspace_outputs: Path) -> DuckDBOutputs | SqlAlchemyOutputs:
    """The SQL destination for ``batch.sql_url`` (None = the workspace's DuckDB file)."""
    if url is None:
        return DuckDBOutputs(workspace_outputs / "leadml.duckdb")
    if url.startswith("duckdb:///"):
        return DuckDBOutputs(Path(url.removeprefix("duckdb:///")).expanduser())
    return SqlAlchemyOutputs(url)


# ---------------------------------------------------------------- both


@dataclass
class OutputStore:
    """Parquet partitions and a SQL database, published together."""

    parquet: ParquetOutputs | None
    sql: DuckDBOutputs | SqlAlchemyOutputs | None

    def publish(self, as_of: date, tables: Mapping[str, pd.DataFrame]) -> dict[str, int]:
        """Replace the as-of date's rows of every table in ``tables``; returns rows per table.

        Order: stage Parquet (hidden folders), write into one open SQL transaction,
        commit it, then rename the Parquet partitions in. Any failure before the
        commit leaves both destinations as they were.
        """
        unknown = [t for t in tables if t not in OUTPUT_TABLES]
        if unknown:
            raise ValueError(f"not output tables: {unknown}")
        tables = {t: conform(t, df) for t, df in tables.items()}
        with contextlib.ExitStack() as stack:
            if self.parquet is not None:
                stack.enter_context(self.parquet.stage(as_of, tables))
            if self.sql is not None:
                stack.enter_context(self.sql.stage(as_of, tables))
            # Leaving the stack: the SQL transaction commits first (the step that can
            # fail for reasons outside leadml), then the staged partitions are renamed in.
        return {t: len(df) for t, df in tables.items()}

    def read(self, table: str, as_of: date | None = None) -> pd.DataFrame:
        if self.parquet is not None:
            return self.parquet.read(table, as_of)
        assert self.sql is not None
        return self.sql.read(table, as_of)

    def latest(self, table: str, on_or_before: date) -> tuple[date, pd.DataFrame] | None:
        """The newest published date of ``table`` at or before ``on_or_before`` and its
        rows (None when there is none, or the table was never written)."""
        if self.parquet is not None:
            days = [d for d in self.parquet.dates(table) if d <= on_or_before]
            return (max(days), self.parquet.read(table, max(days))) if days else None
        assert self.sql is not None
        if not self.sql.has(table):  # no run has published it yet
            return None
        frame = self.sql.read(table)
        if frame.empty:
            return None
        days = pd.to_datetime(frame[AS_OF]).dt.date
        keep = days <= on_or_before
        if not keep.any():
            return None
        day = max(days[keep])
        return day, frame[days == day].reset_index(drop=True)


def reader(settings: Any) -> OutputStore:
    """The store the nightly run's outputs are read from: its Parquet partitions, or
    the SQL database when Parquet is off (``batch.parquet``, ``batch.sql_url``)."""
    if settings.batch.parquet:
        return OutputStore(ParquetOutputs(settings.outputs_dir), None)
    return OutputStore(None, sql_outputs(settings.batch.sql_url, settings.outputs_dir))
