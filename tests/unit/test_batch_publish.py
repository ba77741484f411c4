"""Publishing the nightly outputs as an operator relies on it (nightly review): table
folders only ever hold ``as_of=D`` partitions, a failure anywhere leaves both
destinations with the previous run, leftovers of dead runs are cleared (and only those),
and every write failure is a clear error with the right advice."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from leadml.batch import outputs
from leadml.batch.outputs import (
    DuckDBOutputs,
    OutputStore,
    ParquetOutputs,
    PublishError,
    SqlAlchemyOutputs,
    error_kind,
    write_failure,
)
from leadml.errors import DataError, LeadmlError

D = date(2025, 6, 2)
TABLES = ("scores_leads", "forecast", "alerts")


def _tables(version: str) -> dict[str, pd.DataFrame]:
    return {
        "scores_leads": pd.DataFrame(
            {"lead_id": ["a", "b"], "readiness": [0.2, 0.1], "model_version": [version] * 2}
        ),
        "forecast": pd.DataFrame(
            {"kind": ["snapshot"], "group": ["all"], "probability_source": [version]}
        ),
        "alerts": pd.DataFrame({"opportunity_id": ["o1"], "rule": ["stale"], "reason": [version]}),
    }


def _store(tmp_path: Path) -> OutputStore:
    root = tmp_path / "outputs"
    return OutputStore(ParquetOutputs(root), DuckDBOutputs(root / "leadml.duckdb"))


def _versions(store: OutputStore) -> dict[str, set[str]]:
    """The run (version) each table holds for D, per destination."""
    col = {"scores_leads": "model_version", "forecast": "probability_source", "alerts": "reason"}
    assert store.parquet is not None and store.sql is not None
    got = {}
    for t in TABLES:
        got[f"parquet {t}"] = set(store.parquet.read(t, D)[col[t]])
        got[f"sql {t}"] = set(store.sql.read(t, D)[col[t]])
    return got


def _leftovers(root: Path) -> list[Path]:
    return [*root.glob("*/.*"), *root.glob(".staging/*")]


def _hive(root: Path, table: str) -> int:
    glob = str(root / table / "*" / "*.parquet")
    sql = f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true)"
    with duckdb.connect() as con:
        return int(con.execute(sql).fetchone()[0])  # type: ignore[index]


# ------------------------------------------------------------ 1. staging outside the tables


def test_the_documented_hive_glob_reads_every_table_while_a_run_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging folders inside ``outputs/<table>/`` made DuckDB fail with "Hive partition
    mismatch ... key ".as_of" not found" for as long as a publish lasted (or forever after
    a killed run)."""
    store = _store(tmp_path)
    root = tmp_path / "outputs"
    store.publish(D - timedelta(days=7), _tables("0"))  # an earlier night: the glob has a file
    store.publish(D, _tables("1"))
    seen: list[int] = []
    real = outputs._move

    def move_and_read(src: Path, dst: Path) -> None:  # BI reads between every rename
        seen.append(_hive(root, "scores_leads"))
        real(src, dst)
        seen.append(_hive(root, "scores_leads"))

    def manifest() -> pd.DataFrame:  # everything is staged and written at this point
        seen.append(_hive(root, "scores_leads"))
        assert sorted(p.name for p in (root / "scores_leads").iterdir()) == [
            f"as_of={D - timedelta(days=7)}",
            f"as_of={D}",
        ]
        return pd.DataFrame({"run_id": ["r2"]})

    monkeypatch.setattr(outputs, "_move", move_and_read)
    store.publish(D, _tables("2"), manifest=manifest)
    # 3 tables replaced (2 renames each), the manifest new (1), a read before and after each
    assert len(seen) == 1 + 2 * (3 * 2 + 1)
    assert all(n in (2, 4) for n in seen)  # the other night, and D's old or new rows
    assert _hive(root, "scores_leads") == 4 and not _leftovers(root)


def _owner(folder: Path, **owner: object) -> Path:
    folder.mkdir(parents=True)
    (folder / outputs.OWNER_FILE).write_text(json.dumps(owner))
    return folder


def _age(path: Path, hours: float) -> None:
    stamp = (datetime.now(UTC) - timedelta(hours=hours)).timestamp()
    os.utime(path, (stamp, stamp))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _die(pub: outputs.ParquetPublish) -> None:
    """What the kernel does to a killed run's lock: drop it."""
    assert pub.lock_fd is not None
    os.close(pub.lock_fd)
    pub.lock_fd = None


HOLD = (
    "import fcntl, sys\n"
    "f = open(sys.argv[1], 'a')\n"
    "fcntl.flock(f, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def _holder(lock: Path) -> subprocess.Popen[str]:
    """Another process (another container's run) holding ``lock``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_only_provably_stale_leftovers_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    host = socket.gethostname()
    staging = root / outputs.STAGING_DIR
    dead = _owner(staging / "dead", host=host, pid=os.getpid())  # its lock is free: over
    (dead / outputs.LOCK_FILE).touch()
    live = ParquetOutputs(root).begin(D)  # another date's run in this process, now
    starting = _owner(staging / "starting", host="other-host", pid=1)  # not locked yet
    unlocked_old = _owner(staging / "unlocked-old", host="other-host", pid=1)
    _age(unlocked_old, 25)  # no lock file (an earlier version's): judged by its age
    kept = _owner(staging / "to-restore", host=host, pid=_dead_pid())
    (kept / outputs.LOCK_FILE).touch()
    (kept / outputs.KEEP_FILE).write_text("restore by hand")
    legacy_old = root / "scores_leads" / f".as_of={D}.staging-1234abcd"
    legacy_new = root / "forecast" / f".as_of={D}.old-1234abcd"
    for p in (legacy_old, legacy_new):
        p.mkdir(parents=True)
    _age(legacy_old, 2)

    left = ParquetOutputs(root).remove_stale()

    assert sorted(p.name for p in left.removed) == sorted(["dead", "unlocked-old", legacy_old.name])
    assert not dead.exists() and not unlocked_old.exists() and not legacy_old.exists()
    assert live.folder.exists() and starting.exists() and kept.exists()
    assert legacy_new.exists() and left.restored == []
    live.close()


def test_a_live_runs_folder_is_never_stale_whatever_its_owner_file_says(
    tmp_path: Path,
) -> None:
    """Containers sharing a hostname and a volume, not a pid namespace: "same host, pid
    not running" judged another container's live run stale, and removed the folder
    holding the only copy of the partitions it had moved aside."""
    root = tmp_path / "outputs"
    folder = _owner(
        root / outputs.STAGING_DIR / "other-container",
        host=socket.gethostname(),
        pid=_dead_pid(),  # no such process here: in its own pid namespace it runs
    )
    (folder / "old" / "scores_leads" / f"as_of={D}").mkdir(parents=True)
    holder = _holder(folder / outputs.LOCK_FILE)
    try:
        assert ParquetOutputs(root).remove_stale().removed == []
        assert (folder / "old" / "scores_leads" / f"as_of={D}").is_dir()
    finally:
        holder.communicate("")  # the run ends: its lock goes with it
    left = ParquetOutputs(root).remove_stale()
    assert [p.name for p in left.removed] == ["other-container"]


def test_a_legacy_old_copy_that_is_the_only_one_is_put_back(tmp_path: Path) -> None:
    """An earlier version killed between its two renames left ``.as_of=D.old-*`` as the
    only copy of D's partition; it was deleted after an hour."""
    root = tmp_path / "outputs"
    parquet = ParquetOutputs(root)
    OutputStore(parquet, None).publish(D, _tables("1"))
    only = root / "scores_leads" / f".as_of={D}.old-1234abcd"
    outputs._move(parquet.partition("scores_leads", D), only)
    stale_copy = root / "forecast" / f".as_of={D}.old-1234abcd"  # as_of=D is there
    stale_copy.mkdir()
    for p in (only, stale_copy):
        _age(p, 2)

    left = parquet.remove_stale()

    assert left.restored == [parquet.partition("scores_leads", D)]
    assert set(parquet.read("scores_leads", D)["model_version"]) == {"1"}
    assert left.removed == [stale_copy] and not _leftovers(root)


def test_a_run_killed_between_its_renames_and_its_commit_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "outputs"
    parquet = ParquetOutputs(root)
    OutputStore(parquet, None).publish(D, _tables("1"))
    pub = parquet.begin(D)
    pub.write(_tables("2"))
    real, moves = outputs._move, []

    def killed(src: Path, dst: Path) -> None:
        moves.append(dst)
        if len(moves) == 4:  # scores_leads swapped, forecast moved aside: then SIGKILL
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(outputs, "_move", killed)
    with pytest.raises(KeyboardInterrupt):
        pub.swap()  # no restore, no close: the process is gone
    monkeypatch.setattr(outputs, "_move", real)
    assert parquet.remove_stale().removed == []  # still running
    _die(pub)
    assert set(parquet.read("scores_leads", D)["model_version"]) == {"2"}

    left = parquet.remove_stale()

    assert sorted(p.parent.name for p in left.restored) == ["forecast", "scores_leads"]
    assert set(parquet.read("scores_leads", D)["model_version"]) == {"1"}
    assert set(parquet.read("forecast", D)["probability_source"]) == {"1"}
    assert set(parquet.read("alerts", D)["reason"]) == {"1"}
    assert not _leftovers(root)


def test_a_first_run_killed_mid_swap_leaves_no_partition_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "outputs"
    parquet = ParquetOutputs(root)
    pub = parquet.begin(D)
    pub.write(_tables("1"))
    real, moves = outputs._move, []

    def killed(src: Path, dst: Path) -> None:
        moves.append(dst)
        if len(moves) == 3:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(outputs, "_move", killed)
    with pytest.raises(KeyboardInterrupt):
        pub.swap()
    monkeypatch.setattr(outputs, "_move", real)
    _die(pub)
    assert parquet.dates("scores_leads") == [D]  # uncommitted, yet visible
    parquet.remove_stale()
    assert [parquet.dates(t) for t in TABLES] == [[], [], []] and not _leftovers(root)


def test_a_dead_runs_old_copy_never_replaces_a_later_runs_partition(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    parquet = ParquetOutputs(root)
    OutputStore(parquet, None).publish(D, _tables("1"))
    pub = parquet.begin(D)
    pub.write(_tables("2"))
    pub.swap()  # killed before the commit ...
    _die(pub)
    OutputStore(parquet, None).publish(D, _tables("3"))  # ... and a later run published
    parquet.remove_stale()
    assert set(parquet.read("scores_leads", D)["model_version"]) == {"3"}
    assert not _leftovers(root)


def test_a_run_clears_leftovers_before_it_starts(tmp_path: Path) -> None:
    from leadml.batch.nightly import _prepare

    store = _store(tmp_path)
    root = tmp_path / "outputs"
    store.publish(D, _tables("1"))
    leftover = root / "scores_leads" / f".as_of={D}.staging-deadbeef"
    leftover.mkdir()
    _age(leftover, 3)
    notes = _prepare(store)
    assert not leftover.exists() and _hive(root, "scores_leads") == 2
    assert len(notes) == 1 and "removed 1 staging folder" in notes[0]


# ------------------------------------------------------------ 2. all or nothing


def test_a_refused_rename_leaves_both_stores_with_the_previous_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``chattr +i outputs/forecast/as_of=D`` made the rename fail after PostgreSQL had
    committed: some Parquet tables were the new run's, others the old one's (rc=1)."""
    store = _store(tmp_path)
    store.publish(D, _tables("1"))
    real = outputs._move

    def immutable(src: Path, dst: Path) -> None:
        if src == store.parquet.partition("forecast", D):  # type: ignore[union-attr]
            raise PermissionError(errno.EPERM, "Operation not permitted", str(src))
        real(src, dst)

    monkeypatch.setattr(outputs, "_move", immutable)
    with pytest.raises(PublishError) as err:
        store.publish(D, _tables("2"))
    msg = str(err.value)
    assert "forecast" in msg and "Operation not permitted" in msg and "chattr -i" in msg
    assert "nothing was published" in msg and err.value.exit_code == 2
    assert all(v == {"1"} for v in _versions(store).values()), _versions(store)
    assert not _leftovers(tmp_path / "outputs")


class _FailingCommit:
    """A SQL store whose commit fails after every table was written."""

    url = "duckdb:///fails-at-commit"
    safe_url = url
    where = url

    def __init__(self, inner: DuckDBOutputs) -> None:
        self.inner = inner

    def check(self) -> None: ...

    def transaction(self, as_of: date, on_commit=None):  # type: ignore[no-untyped-def]
        import contextlib

        @contextlib.contextmanager
        def tx():  # type: ignore[no-untyped-def]
            yield lambda tables: None
            raise PublishError("the commit failed (injected)")

        return tx()


def test_a_failed_commit_puts_the_parquet_partitions_back(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.publish(D, _tables("1"))
    assert isinstance(store.sql, DuckDBOutputs)
    failing = OutputStore(store.parquet, _FailingCommit(store.sql))  # type: ignore[arg-type]
    with pytest.raises(PublishError, match="injected"):
        failing.publish(D, _tables("2"))
    assert all(v == {"1"} for v in _versions(store).values())
    assert not _leftovers(tmp_path / "outputs")


class _AnswerLost:
    """A SQL store whose commit goes through but whose answer is lost (the connection
    drops during COMMIT); ``reachable=False``: the database does not answer afterwards."""

    def __init__(self, inner: DuckDBOutputs, reachable: bool) -> None:
        self.inner, self.reachable = inner, reachable
        self.url = self.safe_url = self.where = inner.where

    def check(self) -> None: ...

    def read(self, table: str, as_of: date | None = None, *, settled: bool = False) -> pd.DataFrame:
        if not self.reachable:
            raise PublishError("server closed the connection unexpectedly")
        return self.inner.read(table, as_of)

    def transaction(self, as_of: date, on_commit=None):  # type: ignore[no-untyped-def]
        import contextlib

        @contextlib.contextmanager
        def tx():  # type: ignore[no-untyped-def]
            with self.inner.transaction(as_of) as write:  # commits, on_commit is not called
                yield write
            raise PublishError("server closed the connection unexpectedly (at commit)")

        return tx()


def _run(n: str) -> pd.DataFrame:
    return pd.DataFrame({"run_id": [f"run-{n}"]})


def test_a_commit_whose_answer_was_lost_is_read_back_from_the_manifest(tmp_path: Path) -> None:
    """The connection dropped during a COMMIT that went through: the run was taken for
    failed, its Parquet partitions were put back, and SQL and Parquet held two runs."""
    store = _store(tmp_path)
    store.publish(D, _tables("1"), manifest=lambda: _run("1"))
    assert isinstance(store.sql, DuckDBOutputs)
    lost = OutputStore(store.parquet, _AnswerLost(store.sql, reachable=True))  # type: ignore[arg-type]

    rows = lost.publish(D, _tables("2"), manifest=lambda: _run("2"))

    assert rows["manifest"] == 1
    assert all(v == {"2"} for v in _versions(store).values()), _versions(store)
    assert not _leftovers(tmp_path / "outputs")


def test_a_commit_nobody_can_read_back_is_settled_by_the_next_run(tmp_path: Path) -> None:
    from leadml.batch.nightly import _prepare

    store = _store(tmp_path)
    store.publish(D, _tables("1"), manifest=lambda: _run("1"))
    assert isinstance(store.sql, DuckDBOutputs)
    lost = OutputStore(store.parquet, _AnswerLost(store.sql, reachable=False))  # type: ignore[arg-type]

    with pytest.raises(PublishError) as err:
        lost.publish(D, _tables("2"), manifest=lambda: _run("2"))
    msg = str(err.value)
    assert "cannot say whether it went through" in msg and "run-2" in msg
    assert "next run" in msg and err.value.exit_code == 2
    (run,) = (tmp_path / "outputs" / outputs.STAGING_DIR).iterdir()  # kept for the next run

    notes = _prepare(store)  # the database answers again: it committed, so run 2 stays

    assert all(v == {"2"} for v in _versions(store).values()), _versions(store)
    assert not _leftovers(tmp_path / "outputs") and notes


def test_a_commit_that_failed_for_real_still_puts_the_partitions_back(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.publish(D, _tables("1"), manifest=lambda: _run("1"))
    assert isinstance(store.sql, DuckDBOutputs)
    failing = OutputStore(store.parquet, _FailingCommit(store.sql))  # type: ignore[arg-type]
    failing.sql.read = store.sql.read  # type: ignore[union-attr]  # the manifest answers

    with pytest.raises(PublishError, match="injected"):
        failing.publish(D, _tables("2"), manifest=lambda: _run("2"))

    assert all(v == {"1"} for v in _versions(store).values())
    assert store.read("manifest", D)["run_id"].tolist() == ["run-1"]
    assert not _leftovers(tmp_path / "outputs")


def test_a_partition_that_cannot_be_put_back_is_named_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = OutputStore(ParquetOutputs(tmp_path / "outputs"), None)
    store.publish(D, _tables("1"))
    real, calls = outputs._move, {"n": 0}

    def broken(src: Path, dst: Path) -> None:
        calls["n"] += 1
        if calls["n"] >= 5:  # the third table's swap, then every move back
            raise OSError(errno.EIO, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(outputs, "_move", broken)
    with pytest.raises(PublishError) as err:
        store.publish(D, _tables("2"))
    msg = str(err.value)
    assert "could not be put back" in msg and "by hand" in msg and "scores_leads" in msg
    (run,) = (tmp_path / "outputs" / ".staging").iterdir()
    assert (run / outputs.KEEP_FILE).exists() and (run / "old" / "scores_leads").is_dir()


# ------------------------------------------------------------ 3. disk and permissions


def test_a_full_disk_is_a_clear_error_and_leaves_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    store = _store(tmp_path)
    store.publish(D, _tables("1"))

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(PublishError) as err:
        store.publish(D, _tables("2"))
    msg = str(err.value)
    assert "No space left on device" in msg and "free space" in msg
    assert str(tmp_path / "outputs" / ".staging") in msg and "scores_leads" in msg
    assert all(v == {"1"} for v in _versions(store).values())
    assert not _leftovers(tmp_path / "outputs")


def test_an_unwritable_staging_folder_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    real_mkdir = Path.mkdir

    def denied(self: Path, *args: object, **kwargs: object) -> None:
        if outputs.STAGING_DIR in self.parts:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(PublishError) as err:
        store.publish(D, _tables("1"))
    msg = str(err.value)
    assert ".staging" in msg and "Permission denied" in msg and "writable" in msg
    assert isinstance(err.value, LeadmlError) and err.value.exit_code == 2


# ------------------------------------------------------------ 5. database errors


def _pg_error(name: str, text: str) -> BaseException:
    import psycopg

    return sa.exc.OperationalError("DELETE ...", {}, getattr(psycopg.errors, name)(text))


def _sa_error(text: str) -> BaseException:  # a driver without SQLSTATE (sqlite3)
    return sa.exc.OperationalError("INSERT ...", {}, Exception(text))


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (_pg_error("InvalidTextRepresentation", 'invalid input for type integer: "0.2"'), "schema"),
        (_pg_error("DatatypeMismatch", 'column "readiness" is of type integer'), "schema"),
        (_pg_error("InsufficientPrivilege", "permission denied for table scores_leads"), "other"),
        (_pg_error("DiskFull", "could not extend file: No space left on device"), "other"),
        (_pg_error("LockNotAvailable", "canceling statement due to lock timeout"), "lock"),
        (duckdb.ConversionException("Could not convert string 'x' to INT32"), "schema"),
        (duckdb.IOException("No space left on device"), "other"),
        (_sa_error("attempt to write a readonly database"), "other"),
        (_sa_error("table scores_leads has no column named x"), "schema"),
    ],
)  # fmt: skip
def test_database_errors_are_told_apart(exc: BaseException, kind: str) -> None:
    assert error_kind(exc) == kind


def test_column_advice_only_for_column_mismatches() -> None:
    denied = write_failure(
        "db",
        "scores_leads",
        _pg_error("InsufficientPrivilege", "permission denied for table scores_leads"),
    )
    full = write_failure("db", "alerts", _pg_error("DiskFull", "No space left on device"))
    typed = write_failure(
        "db", "scores_leads", _pg_error("DatatypeMismatch", "column is of type integer")
    )
    for err in (denied, full):
        assert isinstance(err, PublishError) and "drop the table" not in str(err)
        assert "privileges" in str(err) and "disk" in str(err)
    assert "permission denied for table scores_leads" in str(denied)
    assert isinstance(typed, DataError) and "drop the table" in str(typed)  # fmt: skip


def test_a_readonly_sqlite_database_is_not_a_column_problem(tmp_path: Path) -> None:
    path = tmp_path / "out.db"
    url = f"sqlite:///{path}"
    OutputStore(None, SqlAlchemyOutputs(url)).publish(D, _tables("1"))
    readonly = SqlAlchemyOutputs(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(PublishError) as err:
        OutputStore(None, readonly).publish(D, _tables("2"))
    msg = str(err.value)
    assert "readonly" in msg and "drop the table" not in msg and "nothing was published" in msg
    assert set(SqlAlchemyOutputs(url).read("scores_leads", D)["model_version"]) == {"1"}


# ------------------------------------------------------------ 6. the destination, early


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "is not a database URL"),
        ("postgres://app:S3cret@127.0.0.1:1/db", "postgresql+psycopg://"),
        ("mysql://app:S3cret@127.0.0.1/db", "mysql is not a database leadml writes"),
        ("postgresql+psycopg://app:S3cret@127.0.0.1:{port}/db", "cannot connect"),
    ],
)
def test_a_bad_sql_destination_stops_the_run_before_any_work(
    url: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadml.batch.nightly import run_nightly
    from leadml.config import load_settings
    from leadml.errors import ConfigError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    monkeypatch.setenv("LEADML_BATCH__SQL_URL", url.format(port=port))
    steps: list[str] = []
    with pytest.raises(ConfigError) as err:
        run_nightly(load_settings(), "2025-06-02", data=tmp_path / "no-data", on_step=steps.append)
    msg = str(err.value)
    assert says in msg and "LEADML_BATCH__SQL_URL" in msg and "S3cret" not in msg
    assert steps == []  # nothing was computed
    with pytest.raises(ConfigError) as flag:
        SqlAlchemyOutputs(url.format(port=port), source="--sql-url").check()
    assert str(flag.value).startswith("--sql-url") and "S3cret" not in str(flag.value)


def test_the_cli_names_the_flag_the_url_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leadml.cli import main

    URL = "mysql://u:pw@h/db"  # noqa: N806
    with pytest.raises(SystemExit) as exit_:
        main(["batch", "--as-of", "2025-06-02", "--data", str(tmp_path), "--sql-url", URL])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "--sql-url mysql://u:***@h/db" in err and ":pw@" not in err


# ------------------------------------------------------------ 7. the report, from SQL


def test_the_report_names_the_sql_store_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from leadml.cli import main

    monkeypatch.setenv("LEADML_BATCH__PARQUET", "false")
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--as-of", "2025-11-20", "--sql-url", empty])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "no nightly run for 2025-11-20 in the SQL database --sql-url sqlite:///" in err
    assert "outputs" not in err.split("sqlite:///")[0]

    OutputStore(None, SqlAlchemyOutputs(empty)).publish(D, _tables("1"))  # other tables only
    with pytest.raises(SystemExit):
        main(["report", "--as-of", "2025-11-20", "--sql-url", empty])
    assert "no nightly run for 2025-11-20" in capsys.readouterr().err

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(
        "LEADML_BATCH__SQL_URL", f"postgresql+psycopg://app:S3cret@127.0.0.1:{port}/x"
    )
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--as-of", "2025-11-20"])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 2 and "Traceback" not in err and "S3cret" not in err
    assert "LEADML_BATCH__SQL_URL" in err and "cannot connect" in err


# ------------------------------------------------------------ 8, 9, 11


def test_the_lock_timeout_is_a_batch_setting_passed_to_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from leadml.batch.nightly import _store
    from leadml.config import load_settings

    assert load_settings().batch.sql_lock_timeout_seconds == 300
    monkeypatch.setenv("LEADML_BATCH__SQL_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("LEADML_BATCH__SQL_LOCK_TIMEOUT_SECONDS", "2.5")
    sql = _store(load_settings(), "LEADML_BATCH__SQL_URL").sql
    assert isinstance(sql, SqlAlchemyOutputs) and sql.lock_timeout_s == 2.5


def test_the_manifest_row_is_made_after_the_data_tables_are_written(tmp_path: Path) -> None:
    store = _store(tmp_path)
    seen: dict[str, object] = {}

    def manifest() -> pd.DataFrame:
        assert store.parquet is not None
        staged = sorted(p.parent.name for p in store.parquet.staging.glob("*/new/*/*"))
        seen["staged"] = staged
        return pd.DataFrame({"run_id": ["r"], "timings_s": ['{"publish": 0.1}']})

    rows = store.publish(D, _tables("1"), manifest=manifest)
    assert seen["staged"] == sorted(TABLES)
    assert rows == {"scores_leads": 2, "forecast": 1, "alerts": 1, "manifest": 1}
    assert store.read("manifest", D)["timings_s"].tolist() == ['{"publish": 0.1}']


def test_sql_tables_get_an_index_on_as_of_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'out.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as c:  # a table an earlier version made, without an index
        c.execute(sa.text("CREATE TABLE alerts (as_of DATE, opportunity_id TEXT, rule TEXT)"))
    engine.dispose()
    for _ in range(2):
        OutputStore(None, SqlAlchemyOutputs(url)).publish(D, _tables("1"))
    engine = sa.create_engine(url)
    indexes = {t: sa.inspect(engine).get_indexes(t) for t in TABLES}
    engine.dispose()
    for table, found in indexes.items():
        assert [(ix["name"], ix["column_names"]) for ix in found] == [
            (f"ix_{table}_as_of", ["as_of"])
        ]


def test_sigterm_during_a_batch_run_ends_it_as_an_exception() -> None:
    import signal

    from leadml.cli.batch import _sigterm_exits

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_, _sigterm_exits():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises as soon as the signal arrives
    assert exit_.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


# ------------------------------------------------------------ signals and kills (review 2)


class _Connection:
    """A DuckDB connection that calls ``hook(sql)`` around chosen statements."""

    def __init__(self, con: object, before: dict, after: dict) -> None:  # type: ignore[type-arg]
        self.con, self.before, self.after = con, before, after

    def execute(self, sql: str, *args: object) -> object:
        if sql in self.before:
            self.before[sql]()
        out = self.con.execute(sql, *args)  # type: ignore[attr-defined]
        if sql in self.after:
            self.after[sql]()
        return out

    def __getattr__(self, name: str) -> object:
        return getattr(self.con, name)


def _hook_duckdb(monkeypatch: pytest.MonkeyPatch, before=None, after=None, close=None):  # type: ignore[no-untyped-def]
    real_open = DuckDBOutputs._open

    def opened(self: DuckDBOutputs, **kw: object) -> object:
        con = _Connection(real_open(self, **kw), before or {}, after or {})
        if close is not None and not kw.get("read_only"):
            con.close = close  # type: ignore[method-assign]
        return con

    monkeypatch.setattr(DuckDBOutputs, "_open", opened)


def _sigterm() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_right_after_the_sql_commit_keeps_the_new_run_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler raised as soon as the (seconds-long) DuckDB commit returned, and the
    publish then put the old Parquet partitions back: exit 143, Parquet on run 1, SQL on
    run 2."""
    from leadml.cli.batch import _sigterm_exits

    store = _store(tmp_path)
    store.publish(D, _tables("1"))
    _hook_duckdb(monkeypatch, after={"COMMIT": _sigterm})
    with pytest.raises(SystemExit) as exit_, _sigterm_exits():
        store.publish(D, _tables("2"))
    assert exit_.value.code == 143
    monkeypatch.undo()
    assert all(v == {"2"} for v in _versions(store).values()), _versions(store)
    assert not _leftovers(tmp_path / "outputs")


def test_a_failure_closing_the_database_after_the_commit_puts_nothing_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    store.publish(D, _tables("1"))

    def close() -> None:
        raise duckdb.IOException("could not fsync on close (injected)")

    _hook_duckdb(monkeypatch, close=close)
    store.publish(D, _tables("2"))  # committed: the run succeeded
    monkeypatch.undo()
    assert all(v == {"2"} for v in _versions(store).values()), _versions(store)
    assert not _leftovers(tmp_path / "outputs")


def test_sigterm_during_the_swap_stops_the_run_before_the_commit_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM right after swap() had moved the old partition aside (before it was
    recorded) ended with that partition deleted along with the run folder."""
    from leadml.cli.batch import _sigterm_exits

    store = _store(tmp_path)
    store.publish(D, _tables("1"))
    real = outputs._move

    def move(src: Path, dst: Path) -> None:
        real(src, dst)
        if "old" in dst.relative_to(tmp_path).parts and "forecast" in dst.parts:
            _sigterm()

    monkeypatch.setattr(outputs, "_move", move)
    with pytest.raises(SystemExit) as exit_, _sigterm_exits():
        store.publish(D, _tables("2"))
    assert exit_.value.code == 143
    monkeypatch.undo()
    assert all(v == {"1"} for v in _versions(store).values()), _versions(store)
    assert not _leftovers(tmp_path / "outputs")


def test_sigterm_during_a_restore_puts_every_partition_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadml.cli.batch import _sigterm_exits

    store = OutputStore(ParquetOutputs(tmp_path / "outputs"), None)
    store.publish(D, _tables("1"))
    real, n = outputs._move, {"moves": 0}

    def move(src: Path, dst: Path) -> None:
        n["moves"] += 1
        if n["moves"] == 4:  # forecast's new partition refused: the restore starts
            raise OSError(errno.EIO, "Input/output error")
        real(src, dst)
        if n["moves"] == 5:  # the restore's first rename back: a SIGTERM lands
            _sigterm()

    monkeypatch.setattr(outputs, "_move", move)
    with pytest.raises(SystemExit), _sigterm_exits():
        store.publish(D, _tables("2"))
    monkeypatch.undo()
    assert store.parquet is not None
    for table in TABLES:
        assert store.parquet.dates(table) == [D], table
    assert set(store.parquet.read("scores_leads", D)["model_version"]) == {"1"}
    assert set(store.parquet.read("forecast", D)["probability_source"]) == {"1"}
    assert not _leftovers(tmp_path / "outputs")


def test_a_restore_cut_short_leaves_the_run_folder_for_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no signal can be held (a publish outside the main thread) an exception can
    still cut a restore short: the run folder then holds the only copy of a partition
    and must not be removed."""
    parquet = ParquetOutputs(tmp_path / "outputs")
    store = OutputStore(parquet, None)
    store.publish(D, _tables("1"))
    real, n = outputs._move, {"moves": 0}

    def move(src: Path, dst: Path) -> None:
        n["moves"] += 1
        if n["moves"] == 4:
            raise OSError(errno.EIO, "Input/output error")
        if n["moves"] == 6:  # restore: scores_leads' new partition on its way out
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(outputs, "_move", move)
    with pytest.raises(KeyboardInterrupt):
        store.publish(D, _tables("2"))
    monkeypatch.undo()
    (run,) = parquet.staging.iterdir()
    assert (run / "old" / "scores_leads" / f"as_of={D}").is_dir()  # the only copy, kept
    left = parquet.remove_stale()  # the run's lock went with it: the next run settles it
    assert parquet.partition("scores_leads", D) in left.restored
    assert set(parquet.read("forecast", D)["probability_source"]) == {"1"}
    assert set(parquet.read("scores_leads", D)["model_version"]) == {"1"}
    assert not _leftovers(tmp_path / "outputs")


KILLED = """
import os, signal, sys
from datetime import date
from pathlib import Path
import pandas as pd
from leadml.batch import outputs
from leadml.batch.outputs import DuckDBOutputs, OutputStore, ParquetOutputs

root, when = Path(sys.argv[1]), sys.argv[2]
store = OutputStore(ParquetOutputs(root), DuckDBOutputs(root / "leadml.duckdb"))
tables = {
    "scores_leads": pd.DataFrame({"lead_id": ["a", "b"], "readiness": [0.2, 0.1],
                                  "model_version": ["2", "2"]}),
    "forecast": pd.DataFrame({"kind": ["snapshot"], "group": ["all"],
                              "probability_source": ["2"]}),
    "alerts": pd.DataFrame({"opportunity_id": ["o1"], "rule": ["stale"], "reason": ["2"]}),
}
real_open = DuckDBOutputs._open
class Con:
    def __init__(self, con): self.con = con
    def execute(self, sql, *a):
        if sql == "COMMIT" and when == "before-commit":
            os.kill(os.getpid(), signal.SIGKILL)
        return self.con.execute(sql, *a)
    def __getattr__(self, n): return getattr(self.con, n)
DuckDBOutputs._open = lambda self, **kw: Con(real_open(self, **kw))
if when == "after-commit":  # the commit returned; the COMMITTED mark is next
    outputs.ParquetPublish.committed = lambda self: os.kill(os.getpid(), signal.SIGKILL)
store.publish(date(2025, 6, 2), tables, manifest=lambda: pd.DataFrame({"run_id": ["run-2"]}))
"""


LIBRARY_SIGTERM = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import test_batch_publish as t
from leadml.batch import outputs

tmp = Path(sys.argv[1])
store = t._store(tmp)
store.publish(t.D, t._tables("1"))
real = outputs._move
def move(src, dst):
    real(src, dst)
    if "old" in dst.relative_to(tmp).parts and "forecast" in dst.parts:
        os.kill(os.getpid(), signal.SIGTERM)
outputs._move = move
try:
    store.publish(t.D, t._tables("2"))
except SystemExit as exc:
    outputs._move = real
    print("versions", sorted({v for vs in t._versions(store).values() for v in vs}))
    print("leftovers", len(t._leftovers(tmp / "outputs")))
    raise
"""


def test_sigterm_during_the_swap_of_a_library_caller_undoes_it_too(tmp_path: Path) -> None:
    """A caller without a SIGTERM handler of its own (a notebook, a scheduler importing
    the library): the held signal was re-raised with the default handler after the swap,
    which killed the process with every partition swapped in and SQL uncommitted."""
    script = tmp_path / "library.py"
    script.write_text(LIBRARY_SIGTERM)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 128 + 15, proc.stderr[-2000:]
    assert "versions ['1']" in proc.stdout and "leftovers 0" in proc.stdout


def test_every_signal_held_is_delivered_even_when_one_handler_raises() -> None:
    """SIGTERM and SIGINT during a held step: the first handler raised and the second
    signal was dropped."""
    import signal

    seen: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        seen.append(signum)
        raise SystemExit(128 + signum)

    def note(signum: int, _frame: object) -> None:
        seen.append(signum)

    before = {sig: signal.getsignal(sig) for sig in outputs.HELD_SIGNALS}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, note)
    try:
        held = outputs._SignalsHeld()
        held.hold()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert seen == []  # held
        with pytest.raises(SystemExit):
            held.release()
        assert seen == [signal.SIGTERM, signal.SIGINT]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize(("when", "published"), [("before-commit", "1"), ("after-commit", "2")])
def test_a_run_killed_around_its_commit_is_undone_or_finished_by_the_next(
    when: str, published: str, tmp_path: Path
) -> None:
    """SIGKILL after the SQL commit but before the COMMITTED mark: the next run took the
    run for uncommitted and put the old partitions back (Parquet run 1, SQL run 2)."""
    from leadml.batch.nightly import _prepare

    store = _store(tmp_path)
    root = tmp_path / "outputs"
    store.publish(D, _tables("1"), manifest=lambda: pd.DataFrame({"run_id": ["run-1"]}))
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    proc = subprocess.run([sys.executable, str(script), str(root), when], timeout=120)
    assert proc.returncode == -9
    (run,) = (root / outputs.STAGING_DIR).iterdir()
    assert json.loads((run / outputs.OWNER_FILE).read_text())["run_id"] == "run-2"
    assert set(store.parquet.read("scores_leads", D)["model_version"]) == {"2"}  # type: ignore[union-attr]

    notes = _prepare(store)

    assert all(v == {published} for v in _versions(store).values()), _versions(store)
    assert store.read("manifest", D)["run_id"].tolist() == [f"run-{published}"]
    assert not _leftovers(root) and notes


def test_a_failure_at_begin_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure before the first table (BEGIN; on PostgreSQL the advisory lock and SET
    LOCAL) escaped as the driver's exception: a traceback."""
    store = _store(tmp_path)
    store.publish(D, _tables("1"))

    def refuse() -> None:
        raise duckdb.IOException("Could not read from file: Input/output error")

    _hook_duckdb(monkeypatch, before={"BEGIN TRANSACTION": refuse})
    with pytest.raises(PublishError) as err:
        store.publish(D, _tables("2"))
    msg = str(err.value)
    assert "cannot start the publishing transaction" in msg and "Input/output error" in msg
    assert "nothing was published" in msg and err.value.exit_code == 2
    monkeypatch.undo()
    assert all(v == {"1"} for v in _versions(store).values())
    assert not _leftovers(tmp_path / "outputs")


def test_a_cancelled_wait_for_the_publish_lock_is_told_as_such() -> None:
    import psycopg

    cancelled = sa.exc.OperationalError(
        "SELECT pg_advisory_xact_lock(...)",
        {},
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    )
    err = write_failure("--sql-url postgresql+psycopg://u@h/db", outputs.BEGIN, cancelled)
    msg = str(err)
    assert isinstance(err, PublishError) and "table" not in msg.split("(")[0]
    assert "cannot start the publishing transaction" in msg and "statement_timeout" in msg
    assert "drop the table" not in msg
    locked = write_failure(
        "db", outputs.BEGIN, _pg_error("LockNotAvailable", "canceling statement due to lock")
    )
    assert "another leadml run" in str(locked) and "table (begin)" not in str(locked)


@pytest.mark.parametrize(
    ("seconds", "ms"), [(0, 0), (0.0001, 1), (0.0004, 1), (0.0006, 1), (2.5, 2500), (300, 300000)]
)
def test_a_positive_lock_timeout_never_becomes_wait_forever(seconds: float, ms: int) -> None:
    assert outputs.lock_timeout_ms(seconds) == ms
