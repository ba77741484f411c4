"""Where tables come from and how outputs are written.

A *table source* is a directory of CSV or Parquet files (``leads.csv``,
``events.parquet`` or a folder ``events/`` of Parquet parts) or a DuckDB
database file holding tables with the canonical names. Nothing is loaded into
pandas here: a source registers DuckDB views (``raw_<table>``) that the
contracts module checks and types, so a 100-million-row event log is scanned,
never copied.

Writers are atomic: they write to a temporary name beside the target and
rename, so a crash never leaves a half-written file or folder behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from leadml.errors import DataError

DUCKDB_SUFFIXES = (".duckdb", ".db", ".ddb")


def _sql_str(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class TableSource:
    """Maps canonical table names to DuckDB relations (SQL ``FROM`` expressions)."""

    location: str
    relations: dict[str, str] = field(default_factory=dict)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    database: Path | None = None
    # table -> the file or folder (of Parquet parts) it is read from
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def tables(self) -> list[str]:
        return sorted({*self.relations, *self.frames})

    def register(self, con: duckdb.DuckDBPyConnection, names: list[str] | None = None) -> None:
        """Create views ``raw_<table>`` on ``con`` for the tables present."""
        if self.database is not None:
            try:
                con.execute(f"ATTACH {_sql_str(self.database)} AS src (READ_ONLY)")
            except duckdb.Error as exc:
                msg = f"{self.database}: cannot open as a DuckDB database: {exc}"
                raise DataError(msg) from None
        for name in names or self.tables:
            if name in self.frames:
                con.register(f"raw_{name}", self.frames[name])
            elif name in self.relations:
                try:
                    con.execute(
                        f"CREATE OR REPLACE VIEW raw_{name} AS SELECT * FROM {self.relations[name]}"
                    )
                except duckdb.Error as exc:
                    raise DataError(
                        f"{self.location}: table {name} cannot be read ({self.relations[name]}): "
                        f"{exc}; fix: check that the file is complete CSV/Parquet with a header row"
                    ) from None


def open_source(path: str | Path, table_names: list[str]) -> TableSource:
    """Discover the canonical tables under ``path`` (a folder or a DuckDB file).

    Only names in ``table_names`` are picked up; other files are ignored (the
    simulator's ``truth/`` folder in particular is never read).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(
            f"data location {path} does not exist; pass --data with a folder of CSV/Parquet "
            "files or a DuckDB file, or run `leadml simulate` first"
        )
    if path.is_file():
        if path.suffix.lower() not in DUCKDB_SUFFIXES:
            raise DataError(
                f"{path}: a single file must be a DuckDB database ({', '.join(DUCKDB_SUFFIXES)}); "
                "for CSV or Parquet files pass the folder that holds them"
            )
        return _open_duckdb(path, table_names)
    source = TableSource(location=str(path))
    for name in table_names:
        found = _find_in_dir(path, name)
        if found:
            source.relations[name], source.paths[name] = found
    if not source.relations:
        raise DataError(
            f"{path}: no tables found; expected files named like "
            f"{', '.join(n + '.parquet' for n in table_names[:3])} ... (or .csv)"
        )
    return source


def _find_in_dir(path: Path, name: str) -> tuple[str, Path] | None:
    parquet, csv, folder = path / f"{name}.parquet", path / f"{name}.csv", path / name
    if parquet.exists():
        return _read_file(parquet), parquet
    if folder.is_dir() and any(folder.rglob("*.parquet")):
        # Parts may sit in sub-folders (hive partitions such as month=2024-01/) and may
        # differ in column order or in optional columns: match columns by name.
        parts = _sql_str(folder / "**" / "*.parquet")
        return f"read_parquet({parts}, union_by_name=true)", folder
    if csv.exists():
        return _read_file(csv), csv
    return None


def _read_file(path: Path) -> str:
    """The DuckDB relation that reads one CSV or Parquet file."""
    if path.suffix.lower() == ".csv":
        # all_varchar: the contract, not the sniffer, decides the types, so a bad
        # value is reported by column and row instead of failing the read.
        return f"read_csv({_sql_str(path)}, header=true, all_varchar=true)"
    return f"read_parquet({_sql_str(path)})"


def _parts(source: TableSource, name: str) -> list[tuple[str, str]]:
    """(what to name, relation) per file of table ``name``: each Parquet part of a
    folder, the table's file, or the table of a DuckDB database."""
    path = source.paths.get(name)
    if path is not None and path.is_dir():
        return [(str(p), _read_file(p)) for p in sorted(path.rglob("*.parquet"))]
    if path is not None:
        return [(str(path), _read_file(path))]
    if source.database is not None and name in source.relations:
        return [(f"{source.database} table {name}", source.relations[name])]
    return []


def error_line(exc: BaseException) -> str:
    """The first line of an error, printable (a decoder's message may carry the raw byte)."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return "".join(c if c.isprintable() else "?" for c in line).strip()


def unreadable_files(
    source: TableSource, names: list[str] | None = None
) -> list[tuple[str, str, str]]:
    """``(table, file, reason)`` for every file of ``source`` that DuckDB cannot read in
    full. Every value of every column is read (a Parquet file whose footer is intact but
    whose pages are corrupt passes a check that reads some columns only); in-memory
    frames are skipped. Costs one full scan of the data."""
    found: list[tuple[str, str, str]] = []
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")  # a full scan: no bar in a notebook
        if source.database is not None:
            con.execute(f"ATTACH {_sql_str(source.database)} AS src (READ_ONLY)")
        for name in names or source.tables:
            for label, relation in _parts(source, name):
                try:
                    con.execute(
                        f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {relation}"
                    ).fetchall()
                except duckdb.Error as exc:
                    found.append((name, label, error_line(exc)))
    return found


def _open_duckdb(path: Path, table_names: list[str]) -> TableSource:
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            present = {
                r[0]
                for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
            }
    except duckdb.Error as exc:
        raise DataError(f"{path}: cannot open as a DuckDB database: {exc}") from None
    source = TableSource(location=str(path), database=path)
    for name in table_names:
        if name in present:
            source.relations[name] = f"src.{name}"
    if not source.relations:
        raise DataError(f"{path}: the database has none of the tables {', '.join(table_names)}")
    return source


def frames_source(frames: Mapping[str, pd.DataFrame]) -> TableSource:
    """A source over in-memory DataFrames (tests, notebooks, the API)."""
    return TableSource(location="<memory>", frames=dict(frames))


# ---------------------------------------------------------------- writers


def _tmp_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it into place.

    Works for a file or a folder. On any exception the temporary is removed and
    ``target`` is left exactly as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            old = _tmp_sibling(target)
            os.replace(target, old)  # both renames are atomic; the gap is one syscall
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def write_parquet(df: pd.DataFrame, target: str | Path) -> Path:
    """Write ``df`` to ``target`` atomically."""
    target = Path(target)
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)
    return target


@contextlib.contextmanager
def frame_writer(
    target: str | Path, metadata: dict[str, str] | None = None
) -> Iterator[Callable[[pd.DataFrame], None]]:
    """Append frames of the same columns, one after another, to ``target`` (``.parquet``
    or ``.csv``), so that a table larger than memory can be written in batches. The file
    appears at ``target`` only when the ``with`` block finishes without an error.
    ``metadata`` goes into a Parquet file's schema metadata (CSV has none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = Path(target)
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise DataError(f"{target}: unknown file type {suffix or '(none)'}; use .parquet or .csv")
    with atomic_path(target) as tmp:
        writer: pq.ParquetWriter | None = None
        first = True

        def write(df: pd.DataFrame) -> None:
            nonlocal writer, first
            if suffix == ".csv":
                df.to_csv(tmp, index=False, header=first, mode="w" if first else "a")
            else:
                table = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    schema = table.schema
                    if metadata:
                        extra = {k.encode(): v.encode() for k, v in metadata.items()}
                        schema = schema.with_metadata({**(schema.metadata or {}), **extra})
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(table.cast(writer.schema))
            first = False

        try:
            yield write
        finally:
            if writer is not None:
                writer.close()
        if first:  # nothing was written: the file must still exist
            write(pd.DataFrame())


def write_text(text: str, target: str | Path) -> Path:
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return target
