"""Where a nightly run's tables go: Parquet partitions and a SQL database.

Every output table carries an ``as_of`` column (a date). One run writes one
as-of date, and re-running that date *replaces* its rows:

- Parquet: ``<root>/<table>/as_of=YYYY-MM-DD/part-0.parquet``. A table folder only
  ever holds ``as_of=D`` folders (the documented hive glob reads it at any moment):
  a run writes its partitions under ``<root>/.staging/<run>/new/``, on the same
  filesystem, and moves the partitions it replaces to ``<root>/.staging/<run>/old/``
  until the run is committed.
- SQL: one transaction per run that, for every table, deletes the date's rows
  and inserts the new ones. The default is a DuckDB file in the workspace
  (written with DuckDB's own Python API: the ``duckdb_engine`` SQLAlchemy dialect
  is not part of the pinned set); any other SQLAlchemy URL (PostgreSQL with
  ``postgresql+psycopg://...`` in particular) goes through SQLAlchemy Core.

:meth:`OutputStore.publish` is all-or-nothing across both: it writes the Parquet
staging folder, writes every table into the open SQL transaction, swaps the Parquet
partitions in and only then commits. A failure anywhere before the commit (a write, a
rename, the commit itself) puts the swapped partitions back and rolls the transaction
back, so both destinations keep the previous run. From the swap until the run folder is
cleared SIGTERM and SIGINT are held (see :class:`_SignalsHeld`): one that arrives during
the swap stops the run before the commit, one that arrives during the commit waits
for it. A run killed outright (SIGKILL, a crash) is finished or undone by the next
run's :meth:`ParquetOutputs.remove_stale`, which asks the SQL manifest whether the dead
run had committed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from leadml.errors import ConfigError, DataError, LeadmlError


class PublishError(LeadmlError):
    """The outputs cannot be written (permissions, disk space, a lock, the database)."""


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


# ---------------------------------------------------------------- errors

NOTHING_PUBLISHED = "nothing was published (every destination keeps the previous run)"
# the steps of a publishing transaction that are not a table's write, as errors name them
BEGIN = "(begin)"
COMMIT = "(commit)"


def _os_fix(exc: OSError) -> str:
    """What to do about a failed write to the filesystem."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space on that filesystem (or point --workspace at another disk) and run again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            "make it writable by the user running leadml (ownership and mode; `lsattr` shows an "
            "immutable flag, `chattr -i` clears it; a read-only mount) and run again"
        )
    return "check the folder and its disk, and run again"


def os_failure(
    path: Path, exc: OSError, doing: str, state: str = NOTHING_PUBLISHED
) -> PublishError:
    """A clear error for a failed filesystem operation on ``path``."""
    reason = exc.strerror or str(exc)
    return PublishError(f"{path}: cannot {doing} ({reason}); {state}; {_os_fix(exc)}")


# SQLSTATE classes and codes of a table that does not fit the rows: data exceptions (22:
# a value the column's type does not take), integrity constraints (23: NOT NULL, keys made
# by hand), datatype mismatch, undefined column, cannot coerce.
_SCHEMA_SQLSTATES = ("22", "23", "42804", "42703", "42846")
_LOCK_SQLSTATE = "55P03"  # lock_not_available: lock_timeout expired
_SCHEMA_WORDS = re.compile(
    r"\b(type|types|column|datatype|convert|conversion|cast|mismatch)\b", re.IGNORECASE
)


def error_kind(exc: BaseException) -> str:
    """``schema`` (the table's columns do not fit the rows), ``lock`` (a lock timeout) or
    ``other`` (privileges, disk, connection, ...), from the driver's SQLSTATE or class."""
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str) and state:
        if state == _LOCK_SQLSTATE:
            return "lock"
        return "schema" if state.startswith(_SCHEMA_SQLSTATES) else "other"
    import duckdb

    schema_errors = (
        duckdb.ConversionException,
        duckdb.BinderException,
        duckdb.TypeMismatchException,
        duckdb.ConstraintException,
        duckdb.OutOfRangeException,
    )
    if isinstance(orig, schema_errors):
        return "schema"
    if isinstance(orig, duckdb.Error):
        return "other"
    return "schema" if _SCHEMA_WORDS.search(_reason(exc)) else "other"


def write_failure(
    where: str,
    table: str,
    exc: BaseException,
    *,
    reason: str | None = None,
    lock_timeout_s: float = 0,
    server: bool = True,
) -> LeadmlError:
    """A clear error for a failed write of ``table`` (or of the commit) into a database:
    the column advice only where the table's columns are the cause."""
    reason = reason or _reason(exc)
    kind = error_kind(exc)
    if kind == "lock" and table == BEGIN:
        return PublishError(
            f"{where}: cannot start the publishing transaction: gave up waiting for a lock "
            f"({reason}); {NOTHING_PUBLISHED}; another leadml run publishing into this "
            "database holds it until it commits: let it finish and run again (a lock_timeout "
            "set for the database user bounds this wait)"
        )
    if kind == "lock" and table != COMMIT:
        return PublishError(
            f"{where}: table {table}: gave up waiting {lock_timeout_s:g} s for a lock another "
            f"session holds on it ({reason}); {NOTHING_PUBLISHED}; find the session (a BI "
            "tool's LOCK TABLE, a long transaction: pg_locks joined with pg_stat_activity), "
            "end it or let it finish, and run again; or raise batch.sql_lock_timeout_seconds "
            "(LEADML_BATCH__SQL_LOCK_TIMEOUT_SECONDS; 0 waits as long as it takes)"
        )
    if kind == "schema" and table not in (BEGIN, COMMIT):
        return DataError(
            f"{where}: table {table}: cannot write ({reason}); {NOTHING_PUBLISHED}; fix the "
            "column's type in the database or drop the table so the next run creates it"
        )
    what = {COMMIT: "cannot commit", BEGIN: "cannot start the publishing transaction"}.get(
        table, f"table {table}: cannot write"
    )
    fix = (
        "fix what the database reports (the user's privileges on the table, free disk space "
        "on the database server, the connection) and run again"
        if server and table != BEGIN
        else "fix what the database reports (the connection, the user's privileges; a "
        "statement_timeout set for the user also cancels the wait for another leadml run's "
        "publish: raise it, or let that run finish) and run again"
        if server
        else "fix what DuckDB reports (free disk space, the file's and its folder's "
        "permissions) and run again"
    )
    return PublishError(f"{where}: {what} ({reason}); {NOTHING_PUBLISHED}; {fix}")


# ---------------------------------------------------------------- Parquet

STAGING_DIR = ".staging"
# host, pid, start, as-of date and, once the manifest row is made, the run_id (how
# remove_stale asks the SQL manifest whether a dead run committed)
OWNER_FILE = "owner.json"
# A run holds an exclusive flock on this file for as long as it runs (the kernel drops
# the lock when the process ends, however it ends): a run folder is stale exactly when
# its lock can be taken. Unlike "same host, pid gone" this holds for containers that
# share a hostname (and a volume) but not a pid namespace, and for reused pids.
LOCK_FILE = "run.lock"
# The inode of each partition a run renamed in (to tell it from a later run's), and the
# mark that the run committed (its renamed partitions are the published ones).
PLACED_FILE = "placed.json"
COMMITTED_FILE = "COMMITTED"
# Written into a run folder whose replaced partitions could not be put back: the
# folder then holds the only copy of the previous run, and is never removed.
KEEP_FILE = "RESTORE-BY-HAND.txt"
# Only where the lock cannot tell (a filesystem without flock, a folder without a lock
# file: written by an earlier version, or a run in the instant before it locks) is a
# run folder judged by its age instead: stale once older than this (no publish takes
# that long).
STALE_AFTER = timedelta(hours=24)
# Hidden ``.as_of=D.staging-*`` / ``.as_of=D.old-*`` folders inside table folders were
# written by leadml before run folders moved to .staging; removed once this old.
LEGACY_STALE_AFTER = timedelta(hours=1)


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (one filesystem: atomic). Tests replace it to fail."""
    os.replace(src, dst)


def _lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding an exclusive flock on it; None when the
    filesystem takes no flock."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _age(path: Path, now: datetime) -> timedelta | None:
    try:
        return now - datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def claim_stale(folder: Path, now: datetime) -> tuple[bool, int | None]:
    """Whether ``folder`` (a run folder under ``.staging``) belongs to a run that is over,
    and the descriptor that holds its lock meanwhile (close it when done with the
    folder): its run's lock (:data:`LOCK_FILE`) can be taken, so no process holds it. Where
    the lock cannot tell (no lock file, no flock on this filesystem) the folder must be
    older than :data:`STALE_AFTER`. A folder marked for a restore by hand is never stale."""
    if (folder / KEEP_FILE).exists():
        return False, None
    try:
        import fcntl

        fd = os.open(folder / LOCK_FILE, os.O_RDWR)
    except (ImportError, FileNotFoundError):
        age = _age(folder, now)
        return age is not None and age > STALE_AFTER, None
    except OSError:
        return False, None  # cannot even open it: not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a live run holds it
        os.close(fd)
        return False, None
    except OSError:  # no flock here (ENOLCK, EOPNOTSUPP): fall back on the age
        os.close(fd)
        age = _age(folder, now)
        return age is not None and age > STALE_AFTER, None
    return True, fd


def _json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


@dataclass
class Leftovers:
    """What :meth:`ParquetOutputs.remove_stale` cleared: folders removed, and partitions
    put back that a run killed while publishing had replaced."""

    removed: list[Path] = field(default_factory=list)
    restored: list[Path] = field(default_factory=list)


# whether the SQL manifest of a date holds a run: True, False, or None (cannot tell)
RunCommitted = Callable[[date, str], "bool | None"]


def _legacy_leftover(path: Path) -> bool:
    name = path.name
    return name.startswith(f".{AS_OF}=") and (".staging-" in name or ".old-" in name)


def _legacy_target(path: Path) -> Path | None:
    """The partition a legacy ``.as_of=D.old-*`` folder was moved aside from."""
    name = path.name.removeprefix(".")
    if ".old-" not in name:
        return None
    part = name.split(".old-", 1)[0]
    try:
        date.fromisoformat(part.removeprefix(f"{AS_OF}="))
    except ValueError:
        return None
    return path.parent / part


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


@dataclass
class ParquetOutputs:
    """Partitioned Parquet under ``root`` (normally ``<workspace>/outputs``)."""

    root: Path

    def partition(self, table: str, as_of: date) -> Path:
        return self.root / table / partition_name(as_of)

    @property
    def staging(self) -> Path:
        """Where runs stage their partitions (beside the table folders, never inside)."""
        return self.root / STAGING_DIR

    def check(self) -> None:
        """The outputs folder exists (or can be made) and is writable."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_failure(
                self.root, exc, "create the outputs folder", "nothing was run"
            ) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            denied = OSError(errno.EACCES, os.strerror(errno.EACCES))
            raise os_failure(self.root, denied, "write the outputs folder", "nothing was run")

    def remove_stale(
        self, now: datetime | None = None, committed: RunCommitted | None = None
    ) -> Leftovers:
        """Clear what runs that died while publishing left behind: run folders under
        ``.staging`` whose run is over (:func:`claim_stale`: nobody holds their lock),
        first finishing or undoing what such a run had swapped in (see
        :meth:`_roll_back`; ``committed`` asks the SQL manifest whether the run had
        committed), and the hidden folders earlier versions staged inside the table folders
        (after :data:`LEGACY_STALE_AFTER`; a ``.as_of=D.old-*`` folder goes back to
        ``as_of=D`` when that is missing: it is then the only copy). A live run's folder
        (another date's nightly running now) is never touched."""
        now = now or datetime.now(UTC)
        out = Leftovers()
        for folder in _children(self.staging):
            stale, fd = claim_stale(folder, now)
            if not stale:
                continue
            try:
                restored, complete = self._roll_back(folder, committed)
                out.restored += restored
                if complete:
                    _remove_run_folder(folder)
                    if not folder.exists():
                        out.removed.append(folder)
            finally:
                if fd is not None:
                    os.close(fd)
        for table in OUTPUT_TABLES:
            # newest first: of two legacy old copies of a missing partition, the newer
            # one goes back
            legacy = [p for p in _children(self.root / table) if _legacy_leftover(p)]
            legacy.sort(key=lambda p: _age(p, now) or timedelta(0))
            for p in legacy:
                age = _age(p, now)
                if age is None or age <= LEGACY_STALE_AFTER:
                    continue
                target = _legacy_target(p)
                if target is not None and not target.exists():
                    # an old version killed between its two renames: the only copy of D
                    try:
                        _move(p, target)
                    except OSError:
                        continue  # never delete it; the next run tries again
                    out.restored.append(target)
                    continue
                shutil.rmtree(p, ignore_errors=True)
                if not p.exists():
                    out.removed.append(p)
        return out

    def _roll_back(
        self, folder: Path, committed: RunCommitted | None = None
    ) -> tuple[list[Path], bool]:
        """Finish or undo the renames of a dead run (``folder``). A run that committed (its
        ``COMMITTED`` mark, or, when it was killed between its SQL commit and that mark,
        its ``run_id`` in the SQL manifest of its date) is finished: the partitions it
        replaced go with its folder. Otherwise it never committed (its SQL transaction
        rolled back with it): its partitions leave the table folders and the ones they
        replaced come back; a partition a later run has published since is left alone.
        Returns the partitions undone and whether the folder may go (False: one could not
        be put back, the folder is marked for a restore by hand; or the SQL database cannot
        tell whether the run committed, the folder waits for the next run)."""
        if (folder / COMMITTED_FILE).exists():
            return [], True
        owner = _json(folder / OWNER_FILE)
        run_id, day = owner.get("run_id"), owner.get("as_of")
        if committed is not None and isinstance(run_id, str) and isinstance(day, str):
            try:
                verdict = committed(date.fromisoformat(day), run_id)
            except ValueError:
                verdict = False
            if verdict is None:
                return [], False
            if verdict:
                return [], True
        placed = _json(folder / PLACED_FILE)
        moved_aside = {f"{p.parent.name}/{p.name}" for p in (folder / "old").glob("*/*")}
        restored: list[Path] = []
        for key in sorted(set(placed) | moved_aside):
            table, part = key.split("/", 1)
            try:
                if _undo(self.root, folder, table, part, placed.get(key)):
                    restored.append(self.root / table / part)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    (folder / KEEP_FILE).write_text(
                        f"A run died while publishing and {self.root / table / part} could "
                        f"not be put back ({exc.strerror or exc}): move old/{key} there by "
                        "hand.\n"
                    )
                return restored, False
        return restored, True

    def begin(self, as_of: date) -> ParquetPublish:
        """A run folder ``<root>/.staging/<run>/`` for one publish of ``as_of``, with its
        lock held (:data:`LOCK_FILE`) and its owner (host, pid, start, date)."""
        now = datetime.now(UTC)
        folder = self.staging / f"{now:%Y%m%dT%H%M%SZ}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now.isoformat(timespec="seconds"),
            "as_of": as_of.isoformat(),
        }
        fd = None
        try:
            folder.mkdir(parents=True)
            # locked under another name, then renamed: the lock file never exists unlocked
            # (a folder without one is young, hence live, to remove_stale)
            fresh = folder / f".{LOCK_FILE}.new"
            fd = _lock(fresh)
            if fd is not None:
                os.replace(fresh, folder / LOCK_FILE)
            else:
                fresh.unlink(missing_ok=True)
            _write_json(folder / OWNER_FILE, owner)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            shutil.rmtree(folder, ignore_errors=True)
            raise os_failure(folder, exc, "create the staging folder") from None
        return ParquetPublish(self, as_of, folder, owner=owner, lock_fd=fd)

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
            return _no_rows()
        return pd.concat(frames, ignore_index=True)

    def dates(self, table: str = "manifest") -> list[date]:
        return sorted(
            date.fromisoformat(p.name.split("=", 1)[1])
            for p in (self.root / table).glob(f"{AS_OF}=*")
            if p.is_dir()
        )


def _no_rows() -> pd.DataFrame:
    return pd.DataFrame({AS_OF: pd.Series([], dtype="date32[pyarrow]")})


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    """``path`` holds ``value`` in full or not at all (written beside it, then renamed)."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _undo(root: Path, folder: Path, table: str, part: str, placed: int | None) -> bool:
    """Undo one partition's swap by a run (``folder``), whatever step it had reached: the
    run's partition (inode ``placed``) leaves ``<root>/<table>/<part>`` for its folder's
    ``new/``, and the one it had moved to ``old/`` comes back. A partition that is not the
    run's (a later run's, or the run had not moved it yet) stays. Returns whether a
    partition was put back or taken out."""
    target, old = root / table / part, folder / "old" / table / part
    changed = False
    try:
        if target.exists():
            if target.stat().st_ino != placed:
                return False  # not the run's: never replaced, or published again since
            aside = folder / "new" / table / part
            aside.parent.mkdir(parents=True, exist_ok=True)
            _move(target, aside)
            changed = True
        if old.exists():
            _move(old, target)
            changed = True
    except FileNotFoundError:  # another run starting now cleared it first
        return False
    return changed


def _remove_run_folder(folder: Path) -> None:
    """Remove a run folder, its ``COMMITTED`` mark last: a removal cut short leaves a
    folder that still says it committed (never one whose old partitions look like the
    ones to put back)."""
    for p in _children(folder):
        shutil.rmtree(p, ignore_errors=True)
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            if p.name != COMMITTED_FILE:
                with contextlib.suppress(OSError):
                    p.unlink()
    with contextlib.suppress(OSError):
        (folder / COMMITTED_FILE).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class ParquetPublish:
    """One run's partitions on their way in: :meth:`write` stages them under
    ``<run folder>/new/``, :meth:`swap` renames them into the table folders (the ones they
    replace go to ``<run folder>/old/``), :meth:`restore` undoes the swaps, and
    :meth:`close` releases the run's lock and removes the run folder once the run is
    settled (committed, or restored in full); otherwise the folder stays for
    :meth:`ParquetOutputs.remove_stale`."""

    outputs: ParquetOutputs
    as_of: date
    folder: Path
    owner: dict[str, Any] = field(default_factory=dict)
    lock_fd: int | None = None
    staged: list[str] = field(default_factory=list)
    # tables whose swap has begun (recorded before its first rename)
    swapped: list[str] = field(default_factory=list)
    placed: dict[str, int] = field(default_factory=dict)
    keep: bool = False
    # committed, or every swap undone: the run folder holds nothing anyone needs
    settled: bool = False

    def _new(self, table: str) -> Path:
        return self.folder / "new" / table / partition_name(self.as_of)

    def _old(self, table: str) -> Path:
        return self.folder / "old" / table / partition_name(self.as_of)

    def write(self, tables: Mapping[str, pd.DataFrame]) -> None:
        import pyarrow.parquet as pq

        for table, df in tables.items():
            dest = self._new(table)
            try:
                dest.mkdir(parents=True)
                pq.write_table(
                    _arrow(table, _with_as_of(df, self.as_of).drop(columns=[AS_OF])),
                    dest / "part-0.parquet",
                )
            except OSError as exc:
                raise os_failure(dest, exc, f"write table {table}") from None
            self.staged.append(table)

    def own(self, run_id: str) -> None:
        """Record the run's ``run_id`` (of its manifest row) in ``owner.json``, before the
        swap: a later run asks the SQL manifest for it should this one die after its
        commit but before it marked the folder committed."""
        self.owner["run_id"] = run_id
        try:
            _write_json(self.folder / OWNER_FILE, self.owner)
        except OSError as exc:
            raise os_failure(self.folder, exc, "record the run in the staging folder") from None

    def swap(self) -> None:
        """Rename every staged partition into its table folder. What each step is about to
        do is recorded before its rename (here and in ``placed.json``), so :meth:`restore`
        and a later run's :meth:`ParquetOutputs.remove_stale` can undo a swap cut short
        anywhere. A failure raises at once (the caller restores, see :meth:`restore`)."""
        for table in self.staged:
            target = self.outputs.partition(table, self.as_of)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._old(table).parent.mkdir(parents=True, exist_ok=True)
                self.swapped.append(table)
                self.placed[f"{table}/{target.name}"] = self._new(table).stat().st_ino
                _write_json(self.folder / PLACED_FILE, self.placed)
                if target.exists():
                    _move(target, self._old(table))
                _move(self._new(table), target)
            except OSError as exc:
                raise os_failure(target, exc, "replace the partition") from None

    def restore(self, cause: BaseException) -> None:
        """Put back every partition :meth:`swap` replaced (newest first), whatever step
        each had reached (see :func:`_undo`). When one cannot be put back the run folder is
        kept (with a note) and the error says where the previous partitions wait."""
        failed: list[str] = []
        part = partition_name(self.as_of)
        for table in reversed(self.swapped):
            try:
                _undo(
                    self.outputs.root, self.folder, table, part, self.placed.get(f"{table}/{part}")
                )
            except OSError as exc:
                failed.append(f"{table} ({exc.strerror or exc})")
        self.swapped = []
        if not failed:
            self.settled = True
            return
        self.keep = True
        note = (
            f"Publishing the run of {self.as_of} failed ({_reason(cause)}) and these partitions "
            f"could not be put back: {', '.join(failed)}. The previous run's partitions are "
            f"in old/<table>/{partition_name(self.as_of)}: move each to "
            f"{self.outputs.root}/<table>/ and remove this folder.\n"
        )
        with contextlib.suppress(OSError):
            (self.folder / KEEP_FILE).write_text(note)
        raise PublishError(
            f"{self.outputs.root}: publishing failed ({_reason(cause)}) and the previous "
            f"partitions of {', '.join(failed)} could not be put back (the SQL transaction was "
            f"rolled back); they are in {self.folder / 'old'}: move each <table>/"
            f"{partition_name(self.as_of)} from there into {self.outputs.root}/<table>/ by hand"
        ) from cause

    def committed(self) -> None:
        """Mark the run committed: from now on its partitions are the published ones."""
        self.swapped = []
        self.settled = True
        with contextlib.suppress(OSError):
            (self.folder / COMMITTED_FILE).touch()

    def close(self) -> None:
        """Remove the run folder if the run is settled (committed, or every swap undone),
        else leave it to :meth:`ParquetOutputs.remove_stale`; then release the lock."""
        try:
            if self.settled and not self.keep:
                _remove_run_folder(self.folder)
        finally:
            if self.lock_fd is not None:
                os.close(self.lock_fd)
                self.lock_fd = None


# ---------------------------------------------------------------- SQL

# PostgreSQL lock_timeout of the publishing session (batch.sql_lock_timeout_seconds)
DEFAULT_LOCK_TIMEOUT_S = 300.0
# Dialects leadml writes its output tables to through SQLAlchemy, with an example URL
# (a DuckDB file is ``duckdb:///path``, written with DuckDB's own API).
SUPPORTED_DIALECTS = {
    "postgresql": "postgresql+psycopg://user@host:5432/db",
    "sqlite": "sqlite:////path/to/outputs.db",
}
Writer = Callable[[Mapping[str, pd.DataFrame]], None]


def lock_timeout_ms(seconds: float) -> int:
    """PostgreSQL's ``lock_timeout`` for ``batch.sql_lock_timeout_seconds``: 0 waits as long
    as it takes, so any positive setting is at least 1 ms."""
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


class SqlOutputs(Protocol):
    """A database that holds the output tables; one transaction per run."""

    url: str

    @property
    def safe_url(self) -> str: ...

    @property
    def where(self) -> str: ...

    def check(self) -> None: ...

    def transaction(
        self, as_of: date, on_commit: Callable[[], None] | None = None
    ) -> contextlib.AbstractContextManager[Writer]: ...

    def read(
        self, table: str, as_of: date | None = None, *, settled: bool = False
    ) -> pd.DataFrame: ...

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

    @property
    def where(self) -> str:
        return str(self.path)

    def _open(self, *, read_only: bool = False) -> Any:
        import duckdb

        try:
            con = duckdb.connect(str(self.path), read_only=read_only)
            con.execute("SET enable_progress_bar = false")
            return con
        except duckdb.Error as exc:
            reason = _reason(exc)
            if "lock" in reason.lower():
                raise ConfigError(
                    f"{self.path}: cannot open the output database ({reason}); another program "
                    "holds the file open (a DuckDB shell, a BI tool, another run): close it and "
                    "run again, or set batch.sql_url to another database"
                ) from None
            raise ConfigError(
                f"{self.path}: cannot open the output database ({reason}); make the file and "
                "its folder readable and writable by the user running leadml, or set "
                "batch.sql_url to another database"
            ) from None

    def check(self) -> None:
        """The file can be opened for writing now (no other program holds it), or made."""
        if self.path.exists():
            self._open().close()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_failure(
                self.path.parent, exc, "create the folder", "nothing was run"
            ) from None
        if not os.access(self.path.parent, os.W_OK | os.X_OK):
            denied = OSError(errno.EACCES, os.strerror(errno.EACCES))
            raise os_failure(self.path.parent, denied, "create the database", "nothing was run")

    @contextlib.contextmanager
    def transaction(
        self, as_of: date, on_commit: Callable[[], None] | None = None
    ) -> Iterator[Writer]:
        """One open transaction: the yielded ``write(tables)`` deletes the date's rows and
        inserts the new ones; committed when the ``with`` body finishes without an
        exception (then ``on_commit()`` runs at once, before the file is closed), rolled
        back otherwise. A failure of closing the file after that is not an error."""
        import duckdb

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_failure(self.path.parent, exc, "create the folder") from None
        con = self._open()
        current = [BEGIN]

        def write(tables: Mapping[str, pd.DataFrame]) -> None:
            for table, df in tables.items():
                current[0] = table
                self._write(
                    con, f"_leadml_{table}", table, _sql_ready(_with_as_of(df, as_of)), as_of
                )
            current[0] = ""

        try:
            try:
                con.execute("BEGIN TRANSACTION")
                current[0] = ""
                yield write
                current[0] = COMMIT
                con.execute("COMMIT")
            except duckdb.Error as exc:
                with contextlib.suppress(Exception):
                    con.execute("ROLLBACK")
                if not current[0]:  # raised by the caller's block, not by this store
                    raise
                raise write_failure(str(self.path), current[0], exc, server=False) from None
            except BaseException:
                with contextlib.suppress(Exception):
                    con.execute("ROLLBACK")
                raise
            if on_commit is not None:
                on_commit()
        finally:
            with contextlib.suppress(Exception):
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

    def _has(self, con: Any, table: str) -> bool:
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchone()
        return bool(found and found[0])

    def has(self, table: str) -> bool:
        if not self.path.exists():
            return False
        with self._open(read_only=True) as con:
            return self._has(con, table)

    def read(self, table: str, as_of: date | None = None, *, settled: bool = False) -> pd.DataFrame:
        """The table's rows (of one date), none when the file or the table does not exist
        (``settled``: nothing to wait for, a DuckDB commit is this process's own)."""
        if not self.path.exists():
            return _no_rows()
        with self._open(read_only=True) as con:
            if not self._has(con, table):
                return _no_rows()
            sql = f"SELECT * FROM {_q(table)}"
            params: list[Any] = []
            if as_of is not None:
                sql += f" WHERE {AS_OF} = ?"
                params.append(as_of)
            return con.execute(sql, params).df()


def sql_url_source(from_flag: bool, environ: Mapping[str, str]) -> str:
    """How messages name where the SQL URL came from: the flag, the variable or the setting."""
    if from_flag:
        return "--sql-url"
    if environ.get("LEADML_BATCH__SQL_URL"):
        return "LEADML_BATCH__SQL_URL"
    return "batch.sql_url"


@dataclass
class SqlAlchemyOutputs:
    """Output tables in any database SQLAlchemy reaches (PostgreSQL via psycopg 3)."""

    url: str
    # where the URL came from, as messages name it (--sql-url, LEADML_BATCH__SQL_URL, ...)
    source: str = "batch.sql_url"
    # PostgreSQL lock_timeout of the publishing transaction, seconds (0 = wait)
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S

    @property
    def safe_url(self) -> str:
        """The URL with its password masked (for output, manifests and reports)."""
        return masked_url(self.url)

    @property
    def where(self) -> str:
        return f"{self.source} {self.safe_url}"

    def _masked(self, text: str) -> str:
        """``text`` without the URL's password (drivers may echo parts of the URL)."""
        import sqlalchemy as sa

        with contextlib.suppress(Exception):
            password = sa.engine.make_url(self.url).password
            if password:
                return text.replace(str(password), "***")
        return text

    def _dialect(self) -> str:
        """The URL's database, once it is known to be one leadml writes."""
        import sqlalchemy as sa

        try:
            url = sa.engine.make_url(self.url)
        except Exception:
            raise ConfigError(
                f"{self.source}: {self.safe_url} is not a database URL; write a SQLAlchemy URL "
                f"such as {SUPPORTED_DIALECTS['postgresql']} (or duckdb:///path/outputs.duckdb)"
            ) from None
        backend = url.get_backend_name()
        if backend == "postgres":
            raise ConfigError(
                f"{self.where}: postgres:// is not a SQLAlchemy URL scheme; write the same URL "
                "starting with postgresql+psycopg://"
            )
        if backend not in SUPPORTED_DIALECTS:
            examples = ", ".join(SUPPORTED_DIALECTS.values())
            raise ConfigError(
                f"{self.where}: {backend} is not a database leadml writes its outputs to; use "
                f"PostgreSQL or SQLite ({examples}) or a DuckDB file (duckdb:///path/outputs.duckdb)"
            )
        return backend

    def _engine(self) -> Any:
        import sqlalchemy as sa

        self._dialect()
        try:
            return sa.create_engine(self.url)
        except Exception as exc:  # a driver that is not installed, a bad option
            raise ConfigError(
                f"{self.where}: cannot open ({self._masked(_reason(exc))}); for PostgreSQL write "
                f"{SUPPORTED_DIALECTS['postgresql']} (psycopg 3 is the installed driver)"
            ) from None

    def _connect(self, engine: Any) -> Any:
        import sqlalchemy as sa

        try:
            return engine.connect()
        except (sa.exc.DBAPIError, sa.exc.InterfaceError) as exc:
            raise ConfigError(
                f"{self.where}: cannot connect ({self._masked(_reason(exc))}); check the host, "
                f"port, user, password and database name in {self.source}, and that the "
                "server is running and accepts connections from this machine"
            ) from None

    def check(self) -> None:
        """Connect and run a trivial query now, so a wrong URL, password, port or database
        stops the run before any work (the publish is hours away at scale)."""
        import sqlalchemy as sa

        engine = self._engine()
        try:
            with self._connect(engine) as conn:
                try:
                    conn.execute(sa.text("SELECT 1"))
                except sa.exc.DBAPIError as exc:
                    raise ConfigError(
                        f"{self.where}: the database does not answer a query "
                        f"({self._masked(_reason(exc))}); check the connection settings"
                    ) from None
        finally:
            engine.dispose()

    @contextlib.contextmanager
    def transaction(
        self, as_of: date, on_commit: Callable[[], None] | None = None
    ) -> Iterator[Writer]:
        """One transaction; the yielded ``write(tables)``, per table, creates it if missing
        (with an index on ``as_of``), adds new columns, deletes the date's rows and inserts
        the new ones. Committed only when the ``with`` body succeeds; ``on_commit()`` runs
        as soon as the commit returns (a failure of closing the connection after that is
        not an error). A failure while the transaction starts (the advisory lock, ``SET
        LOCAL``) is a clear error like a table's.

        On PostgreSQL the transaction first takes an advisory lock, so two runs publishing
        into the same database take turns (the second replaces the first's rows); then it
        sets ``lock_timeout``, so a table another session locks (a BI tool's ``LOCK
        TABLE``) stops the run with an error instead of a silent wait."""
        import sqlalchemy as sa

        engine = self._engine()
        current = [BEGIN]
        try:
            conn = self._connect(engine)
            try:
                errors = _db_errors(conn)

                def write(tables: Mapping[str, pd.DataFrame]) -> None:
                    for table, df in tables.items():
                        current[0] = table
                        frame = _sql_ready(_with_as_of(df, as_of))
                        self._replace(conn, table, frame, as_of)
                    current[0] = ""

                try:
                    trans = conn.begin()
                    try:
                        if conn.dialect.name == "postgresql":
                            conn.execute(
                                sa.text("SELECT pg_advisory_xact_lock(:k)"),
                                {"k": PUBLISH_LOCK_KEY},
                            )
                            ms = lock_timeout_ms(self.lock_timeout_s)
                            conn.execute(sa.text(f"SET LOCAL lock_timeout = {ms}"))
                        current[0] = ""
                        yield write
                        current[0] = COMMIT
                        trans.commit()
                    except BaseException:
                        with contextlib.suppress(Exception):
                            trans.rollback()
                        raise
                except errors as exc:
                    if not current[0]:  # raised by the caller's block, not by this store
                        raise
                    raise write_failure(
                        self.where,
                        current[0],
                        exc,
                        reason=self._masked(_reason(exc)),
                        lock_timeout_s=self.lock_timeout_s,
                    ) from None
                if on_commit is not None:
                    on_commit()
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
        finally:
            with contextlib.suppress(Exception):
                engine.dispose()

    def _replace(self, conn: Any, table: str, frame: pd.DataFrame, as_of: date) -> None:
        import sqlalchemy as sa

        types = _column_types(frame)
        insp = sa.inspect(conn)
        if not insp.has_table(table):
            frame.head(0).to_sql(table, conn, index=False, dtype=types)
        _index_as_of(conn, table)
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

    @contextlib.contextmanager
    def _reading(self, table: str) -> Iterator[Any]:
        """A connection for reading ``table``; a failed query is a clear error."""
        import sqlalchemy as sa

        engine = self._engine()
        try:
            with self._connect(engine) as conn:
                try:
                    yield conn
                except sa.exc.DBAPIError as exc:
                    raise ConfigError(
                        f"{self.where}: cannot read table {table} "
                        f"({self._masked(_reason(exc))}); check the user's privileges on it"
                    ) from None
        finally:
            engine.dispose()

    def has(self, table: str) -> bool:
        import sqlalchemy as sa

        with self._reading(table) as conn:
            return bool(sa.inspect(conn).has_table(table))

    def read(self, table: str, as_of: date | None = None, *, settled: bool = False) -> pd.DataFrame:
        """The table's rows (of one date), none when the table does not exist. ``settled``:
        on PostgreSQL, first wait (up to the lock timeout) for a publish in flight, whose
        transaction holds the publishing advisory lock, so that a commit the server is
        still finishing is seen."""
        import sqlalchemy as sa

        with self._reading(table) as conn:
            if settled and conn.dialect.name == "postgresql":
                ms = lock_timeout_ms(self.lock_timeout_s)
                conn.execute(sa.text(f"SET LOCAL lock_timeout = {ms}"))
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PUBLISH_LOCK_KEY})
            if not sa.inspect(conn).has_table(table):
                return _no_rows()
            prep = conn.dialect.identifier_preparer
            sql = f"SELECT * FROM {prep.quote(table)}"
            params: dict[str, Any] = {}
            if as_of is not None:
                sql += f" WHERE {AS_OF} = :d"
                params["d"] = as_of
            return pd.read_sql(sa.text(sql), conn, params=params)


def _index_as_of(conn: Any, table: str) -> None:
    """An index on ``as_of`` (every run deletes one date's rows), made once per table."""
    import sqlalchemy as sa

    indexes = sa.inspect(conn).get_indexes(table)
    if any(list(ix.get("column_names") or [])[:1] == [AS_OF] for ix in indexes):
        return
    prep = conn.dialect.identifier_preparer
    name = prep.quote(f"ix_{table}_{AS_OF}")
    conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {name} ON {prep.quote(table)} ({AS_OF})"))


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


def sql_outputs(
    url: str | None,
    workspace_outputs: Path,
    *,
    source: str = "batch.sql_url",
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> DuckDBOutputs | SqlAlchemyOutputs:
    """The SQL destination for ``batch.sql_url`` (None = the workspace's DuckDB file);
    ``source`` names where the URL came from in messages."""
    if url is None:
        return DuckDBOutputs(workspace_outputs / "leadml.duckdb")
    if url.startswith("duckdb:///"):
        return DuckDBOutputs(Path(url.removeprefix("duckdb:///")).expanduser())
    return SqlAlchemyOutputs(url, source=source, lock_timeout_s=lock_timeout_s)


# ---------------------------------------------------------------- both


@contextlib.contextmanager
def _no_sql(on_commit: Callable[[], None]) -> Iterator[Writer]:
    yield lambda _tables: None
    on_commit()


# the signals that stop a run as an exception (SIGTERM with ``leadml batch``, Ctrl-C)
HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _SignalsHeld:
    """While held, SIGTERM and SIGINT are recorded instead of acted on; :meth:`release`
    puts the handlers back and raises each recorded signal again (with ``leadml batch``'s
    handler: an exception there, exit code 143).

    The publish holds them from the swap of the Parquet partitions until its run folder is
    cleared, so a signal never lands between two renames, between the SQL commit and
    the ``COMMITTED`` mark, or in a restore. Blocking the signal with
    ``pthread_sigmask`` would not do: it blocks one thread, the kernel then delivers the
    signal to another one (DuckDB's and Arrow's worker threads) and Python runs the
    handler in the main thread all the same. Only the main thread can set handlers;
    elsewhere nothing is held (a kill is then a kill, which the next run's
    :meth:`ParquetOutputs.remove_stale` settles)."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.pending: list[int] = []

    def _record(self, signum: int, _frame: object) -> None:
        if signum not in self.pending:
            self.pending.append(signum)

    def hold(self) -> None:
        if self.previous or threading.current_thread() is not threading.main_thread():
            return
        for sig in HELD_SIGNALS:
            handler = signal.getsignal(sig)
            if handler is None:  # set outside Python: it could not be put back
                continue
            signal.signal(sig, self._record)
            self.previous[sig] = handler

    def release(self) -> None:
        previous, self.previous = self.previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        pending, self.pending = self.pending, []
        first: BaseException | None = None
        for sig in pending:  # every one, even when an earlier handler raises
            try:
                signal.raise_signal(sig)  # the handler put back acts on it now
            except BaseException as exc:
                first = first or exc
        if first is not None:
            raise first

    def stop_if_signalled(self) -> None:
        """Act on a signal recorded while held, as an exception, so that the caller's
        ``except`` can undo what it did: the handler the caller had raises (``leadml
        batch``'s raises SystemExit); with none (SIG_DFL: a library caller) the default
        would kill the process in mid-publish, so SystemExit(128 + signal) is raised
        instead. An ignored signal is dropped and the work goes on, held."""
        for sig in list(self.pending):
            if self.previous.get(sig) is signal.SIG_IGN:
                self.pending.remove(sig)
        if not self.pending:
            return
        sig = self.pending[0]
        if callable(self.previous.get(sig)):
            self.release()  # its handler raises (or, if it returns, the work goes on)
            self.hold()
            return
        self.pending.remove(sig)
        raise SystemExit(128 + sig)


def _run_id(manifest: pd.DataFrame) -> str | None:
    ids = manifest["run_id"].dropna().unique() if "run_id" in manifest else []
    return str(ids[0]) if len(ids) == 1 else None


@dataclass
class OutputStore:
    """Parquet partitions and a SQL database, published together."""

    parquet: ParquetOutputs | None
    sql: DuckDBOutputs | SqlAlchemyOutputs | None

    @property
    def where(self) -> str:
        """The store reads come from, as messages name it."""
        if self.parquet is not None:
            return f"the Parquet outputs in {self.parquet.root}"
        assert self.sql is not None
        return f"the SQL database {self.sql.where}"

    def check(self) -> None:
        """Fail now, with the fix, when a destination cannot take the run's tables."""
        if self.parquet is not None:
            self.parquet.check()
        if self.sql is not None:
            self.sql.check()

    def publish(
        self,
        as_of: date,
        tables: Mapping[str, pd.DataFrame],
        manifest: Callable[[], pd.DataFrame] | None = None,
    ) -> dict[str, int]:
        """Replace the as-of date's rows of every table in ``tables``, and of the
        ``manifest`` row that ``manifest()`` makes once they are written; returns rows per
        table.

        Order: stage the Parquet partitions; write every table into one open SQL
        transaction; make and write the manifest row (its ``run_id`` goes into the run
        folder's ``owner.json``); swap the Parquet partitions in; commit; mark the run
        folder ``COMMITTED``; remove it. A failure before the commit returns (a write, a
        rename, the commit itself) puts the swapped partitions back and rolls the
        transaction back: both destinations keep the previous run. A failed commit is
        first read back from the manifest (``committed_run``: the connection may have
        dropped after the database committed): found, the run is published; unreadable,
        nothing is put back and the run folder waits for the next run (``remove_stale``).
        Once the commit has returned nothing is put back, whatever happens next. SIGTERM /
        SIGINT are held from the swap to the end (:class:`_SignalsHeld`): one that came
        during the swap stops the run before the commit, one that came later once the run
        folder is gone.
        """
        unknown = [t for t in tables if t not in OUTPUT_TABLES]
        if unknown:
            raise ValueError(f"not output tables: {unknown}")
        tables = {t: conform(t, df) for t, df in tables.items()}
        rows = {t: len(df) for t, df in tables.items()}
        staged = self.parquet.begin(as_of) if self.parquet is not None else None
        held = _SignalsHeld()
        sql_committed = False
        run_id: str | None = None
        at_commit = False  # the body is done: a failure now is the commit's own

        def on_commit() -> None:  # runs as soon as the commit returns
            nonlocal sql_committed
            sql_committed = True
            if staged is not None:
                staged.committed()

        transaction = (
            self.sql.transaction(as_of, on_commit=on_commit)
            if self.sql is not None
            else _no_sql(on_commit)
        )
        try:
            try:
                if staged is not None:
                    staged.write(tables)
                with transaction as write:
                    write(tables)
                    if manifest is not None:
                        row = {"manifest": conform("manifest", manifest())}
                        rows["manifest"] = len(row["manifest"])
                        run_id = _run_id(row["manifest"])
                        if staged is not None:
                            staged.write(row)
                            if run_id is not None:
                                staged.own(run_id)
                        write(row)
                    if staged is not None:
                        held.hold()
                        staged.swap()
                        held.stop_if_signalled()  # a signal during the swap: stop before the commit
                    at_commit = True  # leaving the block commits (and calls on_commit)
            except BaseException as exc:
                lost = isinstance(exc, Exception) and at_commit and not sql_committed
                if lost and self._went_through(as_of, run_id, exc, staged is not None):
                    on_commit()  # the commit went through; only its answer was lost
                    return rows
                if staged is not None and not sql_committed:
                    held.hold()
                    staged.restore(exc)
                raise
            finally:
                if staged is not None:
                    held.hold()
                    staged.close()
        finally:
            held.release()
        return rows

    def _went_through(
        self, as_of: date, run_id: str | None, cause: BaseException, staged: bool
    ) -> bool:
        """Whether a commit that failed (``cause``) went through all the same: the run's
        ``run_id`` is in the manifest. When the database cannot be read, raises: the run's
        partitions stay as swapped, and its staging folder for the next run, which asks
        the manifest and finishes or undoes it."""
        if self.sql is None or run_id is None:
            return False
        verdict = self.committed_run(as_of, run_id)
        if verdict is not None:
            return verdict
        parquet = (
            "; the Parquet partitions stay as this run wrote them until the next run, "
            "which reads the manifest and keeps or puts back the previous ones"
            if staged
            else ""
        )
        raise PublishError(
            f"{self.sql.where}: the commit of the run of {as_of} failed ({_reason(cause)}) and "
            f"the database cannot say whether it went through (manifest run_id {run_id} "
            f"unreadable){parquet}. Check the database, then run the batch again"
        ) from cause

    def committed_run(self, as_of: date, run_id: str) -> bool | None:
        """Whether the SQL manifest of ``as_of`` holds the run ``run_id`` (None: the
        database cannot be read; False without a SQL destination)."""
        if self.sql is None:
            return False
        try:
            found = self.sql.read("manifest", as_of, settled=True)
        except Exception:
            return None
        return "run_id" in found and run_id in set(found["run_id"].astype(str))

    def remove_stale(self) -> Leftovers:
        """Clear what runs that died while publishing left behind (see
        :meth:`ParquetOutputs.remove_stale`), asking the SQL manifest whether they had
        committed."""
        if self.parquet is None:
            return Leftovers()
        return self.parquet.remove_stale(committed=self.committed_run)

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


def reader(settings: Any, sql_source: str | None = None) -> OutputStore:
    """The store the nightly run's outputs are read from: its Parquet partitions, or
    the SQL database when Parquet is off (``batch.parquet``, ``batch.sql_url``);
    ``sql_source`` names where the URL came from (default: the variable or the setting)."""
    if settings.batch.parquet:
        return OutputStore(ParquetOutputs(settings.outputs_dir), None)
    source = sql_source or sql_url_source(False, os.environ)
    return OutputStore(
        None, sql_outputs(settings.batch.sql_url, settings.outputs_dir, source=source)
    )
