"""The nightly outputs in a real PostgreSQL: the same run, through SQLAlchemy + psycopg 3.

CI (``.ci/run``) starts PostgreSQL and sets ``LEADML_TEST_POSTGRES_URL``; this test
never skips. On a developer machine without the variable it starts a throw-away
cluster from ``/usr/lib/postgresql/*/bin`` (as the ``postgres`` user when run as
root) and fails with a clear message when there is none.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from _batch_data import make_company, stand_in_champions

from leadml.batch.nightly import run_nightly
from leadml.batch.outputs import ParquetOutputs, SqlAlchemyOutputs
from leadml.config import load_settings

AS_OF = "2025-06-02"
DAY = pd.Timestamp(AS_OF).date()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    url = os.environ.get("LEADML_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.fail(
            "LEADML_TEST_POSTGRES_URL is not set and no PostgreSQL is installed under "
            "/usr/lib/postgresql; install PostgreSQL or point LEADML_TEST_POSTGRES_URL at a server "
            "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres)"
        )
    bindir = Path(bins[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="leadml-test-pg-"))
    port = _free_port()
    as_root = os.geteuid() == 0

    def run(*cmd: str) -> None:
        line = " ".join(cmd)
        full = ["su", "postgres", "-c", line] if as_root else ["sh", "-c", line]
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    if as_root:
        shutil.chown(data, "postgres")
    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    opts = f"'-c listen_addresses=127.0.0.1 -p {port} -k {tempfile.gettempdir()}'"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(data / "log"), "-w", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def database(server_url: str) -> Iterator[str]:
    """A fresh database on the server for one test, dropped afterwards."""
    name = f"leadml_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_nightly_outputs_round_trip_through_postgresql(
    database: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_company(tmp_path_factory.mktemp("pg-company") / "data", n_leads=250)
    champions = stand_in_champions(data)
    monkeypatch.setenv("LEADML_BATCH__SQL_URL", database)
    s = load_settings()
    first = run_nightly(s, AS_OF, data=data, champions=champions)
    assert first.manifest.sql_url == database
    second = run_nightly(s, AS_OF, data=data, champions=champions)  # idempotent on PostgreSQL too

    pg = SqlAlchemyOutputs(database)
    parquet = ParquetOutputs(s.outputs_dir)
    for table, key in (
        ("scores_leads", ["lead_id"]),
        ("scores_deals", ["opportunity_id"]),
        ("call_list", ["rep_id", "rank"]),
        ("call_capacity", ["rep_id"]),
        ("drift", ["model", "feature"]),
        ("alerts", ["opportunity_id", "rule"]),
    ):
        got = pg.read(table, DAY)
        want = parquet.read(table, DAY)
        assert len(got) == len(want) == len(second.tables[table]), table
        if not len(want):
            continue
        assert got[key].duplicated().sum() == 0
        got = got.sort_values(key).reset_index(drop=True)
        want = want.sort_values(key).reset_index(drop=True)
        assert (got["as_of"].astype(str) == AS_OF).all()
        for col in want.columns:
            if col == "as_of":
                continue
            a, b = got[col], want[col]
            if pd.api.types.is_float_dtype(b):
                pd.testing.assert_series_equal(
                    a.astype("float64"), b.astype("float64"), check_names=False, rtol=1e-12
                )
            elif pd.api.types.is_datetime64_any_dtype(b):
                assert (pd.to_datetime(a, utc=True) == pd.to_datetime(b, utc=True)).all(), (
                    table,
                    col,
                )
            else:
                assert a.astype(str).tolist() == b.astype(str).tolist(), (table, col)

    engine = sa.create_engine(database)
    with engine.connect() as c:
        n = c.execute(sa.text("SELECT count(*) FROM manifest")).scalar_one()
        day_type = c.execute(
            sa.text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'scores_leads' AND column_name = 'as_of'"
            )
        ).scalar_one()
        rows = c.execute(sa.text("SELECT rows_written FROM manifest")).scalar_one()
    engine.dispose()
    assert n == 1 and day_type == "date"
    assert f'"scores_leads": {len(second.tables["scores_leads"])}' in rows


def test_an_unreachable_database_is_a_clear_error(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadml.errors import ConfigError

    store = SqlAlchemyOutputs(f"postgresql+psycopg://nobody:secret@127.0.0.1:{_free_port()}/none")
    with (
        pytest.raises(ConfigError, match="cannot connect") as err,
        store.transaction(DAY),
    ):
        pass
    assert "secret" not in str(err.value)  # the password is never printed


def _count(url: str, sql: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


def test_two_concurrent_publishes_of_one_date_leave_one_copy_of_its_rows(database: str) -> None:
    import threading
    import time

    from leadml.batch.outputs import OutputStore

    rows = pd.DataFrame({"lead_id": ["a", "b", "c"], "readiness": [0.1, 0.2, 0.3]})
    store = SqlAlchemyOutputs(database)
    OutputStore(None, store).publish(DAY, {"scores_leads": rows})  # D's rows already there
    inside, release, errors = threading.Event(), threading.Event(), []

    def first() -> None:
        try:
            with store.transaction(DAY) as write:
                write({"scores_leads": rows})
                inside.set()
                release.wait(60)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    def second() -> None:
        try:
            with store.transaction(DAY) as write:
                write({"scores_leads": rows})
        except Exception as exc:
            errors.append(exc)

    a, b = threading.Thread(target=first), threading.Thread(target=second)
    a.start()
    assert inside.wait(60)
    b.start()
    # wait (bounded) until the second run's transaction waits for the first one's
    deadline = time.monotonic() + 60
    while b.is_alive() and time.monotonic() < deadline:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        if _count(database, waiting):
            break
        time.sleep(0.05)
    release.set()
    a.join(60)
    b.join(60)
    assert not errors and not a.is_alive() and not b.is_alive()
    assert _count(database, "SELECT count(*) FROM scores_leads") == 3


def test_new_postgres_tables_get_date_timestamp_and_count_types_and_no_password(
    database: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from leadml.batch import nightly
    from leadml.cli import main

    data = make_company(tmp_path_factory.mktemp("pg-types") / "data", n_leads=250)
    champions = stand_in_champions(data)
    monkeypatch.setattr(nightly, "load_champions", lambda _s: champions)
    secret = "S3cretPw"  # trust authentication accepts any password
    url = sa.engine.make_url(database).set(password=secret).render_as_string(hide_password=False)
    main(["batch", "--as-of", AS_OF, "--data", str(data), "--sql-url", url])
    out = capsys.readouterr().out
    main(["batch", "--as-of", AS_OF, "--data", str(data), "--sql-url", url, "--json"])
    as_json = capsys.readouterr().out
    main(["report", "--as-of", AS_OF, "--data", str(data), "--sql-url", url])
    s = load_settings()
    report = (s.reports_dir / f"leadml-report-{AS_OF}.html").read_text()
    stored = SqlAlchemyOutputs(database).read("manifest").iloc[0]["sql_url"]
    in_parquet = ParquetOutputs(s.outputs_dir).read("manifest", DAY).iloc[0]["sql_url"]
    for text in (out, as_json, report, stored, in_parquet):
        assert secret not in text
    assert "***" in out.replace("\n", "") and "***" in stored
    assert json.loads(as_json)["sql_url"] == stored

    engine = sa.create_engine(database)
    with engine.connect() as c:
        types = dict(
            c.execute(
                sa.text(
                    "SELECT table_name || '.' || column_name, data_type "
                    "FROM information_schema.columns WHERE table_schema = 'public'"
                )
            ).all()
        )
    engine.dispose()
    assert types["call_list.call_date"] == "date"
    assert types["scores_deals.expected_close_date"] == "date"
    assert types["scores_deals.last_update"] == "timestamp with time zone"
    assert types["manifest.started_at"] == "timestamp with time zone"
    assert types["manifest.finished_at"] == "timestamp with time zone"
    assert types["forecast.open_deals"] == "bigint"
    assert types["forecast.p50"] == "double precision"
    assert types["scores_leads.as_of"] == "date"
    got = SqlAlchemyOutputs(database).read("scores_deals", DAY)
    want = ParquetOutputs(s.outputs_dir).read("scores_deals", DAY)
    # a calendar date in both destinations (Parquet date32 since the outputs' typed schema)
    assert sorted(got["expected_close_date"].astype(str)) == sorted(
        want["expected_close_date"].astype(str)
    )
    assert all(len(v) == 10 for v in want["expected_close_date"].astype(str))


def test_existing_postgres_tables_keep_their_types_and_gain_new_columns(database: str) -> None:
    from leadml.batch.outputs import OutputStore

    engine = sa.create_engine(database)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE call_list (as_of date, rep_id text, call_date text)"))
    engine.dispose()
    frame = pd.DataFrame(
        {"rep_id": ["r1", "r2"], "call_date": [DAY, DAY], "open_deals": [2.0, float("nan")]}
    )
    OutputStore(None, SqlAlchemyOutputs(database)).publish(DAY, {"call_list": frame})
    OutputStore(None, SqlAlchemyOutputs(database)).publish(DAY, {"call_list": frame})
    got = SqlAlchemyOutputs(database).read("call_list", DAY)
    assert got["call_date"].tolist() == [AS_OF, AS_OF]  # still text
    assert got["open_deals"].tolist()[0] == 2 and pd.isna(got["open_deals"].tolist()[1])
    kind = _count(
        database,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'call_list' "
        "AND column_name = 'open_deals' AND data_type = 'bigint'",
    )
    assert kind == 1


def test_a_column_type_mismatch_is_a_clear_error_and_writes_nothing(database: str) -> None:
    from leadml.batch.outputs import OutputStore
    from leadml.errors import DataError

    engine = sa.create_engine(database)
    with engine.begin() as c:
        c.execute(
            sa.text("CREATE TABLE scores_leads (as_of date, lead_id text, readiness integer)")
        )
    engine.dispose()
    url = sa.engine.make_url(database).set(password="S3cretPw").render_as_string(False)
    drift = pd.DataFrame({"model": ["m"], "feature": ["f"], "psi": [0.1]})
    leads = pd.DataFrame({"lead_id": ["a"], "readiness": [0.25]})
    with pytest.raises(DataError) as err:
        OutputStore(None, SqlAlchemyOutputs(url)).publish(
            DAY, {"drift": drift, "scores_leads": leads}
        )
    msg = str(err.value)
    assert "table scores_leads" in msg and "integer" in msg and "drop the table" in msg
    assert "S3cretPw" not in msg and "***" in msg and "\n" not in msg
    assert _count(database, "SELECT count(*) FROM scores_leads") == 0
    assert not SqlAlchemyOutputs(database).has("drift")  # the whole transaction rolled back


def test_a_table_locked_by_another_session_stops_the_run_after_the_lock_timeout(
    database: str,
) -> None:
    """A BI `LOCK TABLE` made the publish wait forever, silently."""
    import threading
    import time

    from leadml.batch.outputs import OutputStore, PublishError

    rows = pd.DataFrame({"lead_id": ["a"], "readiness": [0.1]})
    calls = pd.DataFrame({"rep_id": ["r1"], "lead_id": ["a"]})
    OutputStore(None, SqlAlchemyOutputs(database)).publish(
        DAY, {"scores_leads": rows, "call_list": calls}
    )
    locked, release = threading.Event(), threading.Event()

    def bi_tool() -> None:
        engine = sa.create_engine(database)
        with engine.begin() as c:
            c.execute(sa.text("LOCK TABLE call_list IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(60)
        engine.dispose()

    holder = threading.Thread(target=bi_tool)
    holder.start()
    try:
        assert locked.wait(60)
        store = SqlAlchemyOutputs(database, source="--sql-url", lock_timeout_s=1)
        start = time.monotonic()
        with pytest.raises(PublishError) as err:
            OutputStore(None, store).publish(
                DAY, {"scores_leads": rows.assign(readiness=0.9), "call_list": calls}
            )
        waited = time.monotonic() - start
    finally:
        release.set()
        holder.join(60)
    msg = str(err.value)
    assert "table call_list" in msg and "lock" in msg and "sql_lock_timeout_seconds" in msg
    assert msg.startswith("--sql-url ") and "drop the table" not in msg
    assert waited < 30
    assert SqlAlchemyOutputs(database).read("scores_leads", DAY)["readiness"].tolist() == [0.1]


def test_output_tables_get_an_index_on_as_of(database: str) -> None:
    from leadml.batch.outputs import OutputStore

    engine = sa.create_engine(database)
    with engine.begin() as c:  # made before the index existed
        c.execute(sa.text("CREATE TABLE alerts (as_of date, opportunity_id text, rule text)"))
    engine.dispose()
    leads = pd.DataFrame({"lead_id": ["a"], "readiness": [0.1]})
    alerts = pd.DataFrame({"opportunity_id": ["o"], "rule": ["stale"]})
    for _ in range(2):  # idempotent
        OutputStore(None, SqlAlchemyOutputs(database)).publish(
            DAY, {"scores_leads": leads, "alerts": alerts}
        )
    indexes = "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_{}_as_of'"
    assert _count(database, indexes.format("scores_leads")) == 1
    assert _count(database, indexes.format("alerts")) == 1


def test_permission_denied_is_not_called_a_column_problem(database: str) -> None:
    from leadml.batch.outputs import OutputStore, PublishError

    leads = pd.DataFrame({"lead_id": ["a"], "readiness": [0.1]})
    OutputStore(None, SqlAlchemyOutputs(database)).publish(DAY, {"scores_leads": leads})
    role = f"bi_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(database, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    try:
        url = sa.engine.make_url(database).set(username=role).render_as_string(False)
        with pytest.raises(PublishError) as err:
            OutputStore(None, SqlAlchemyOutputs(url)).publish(DAY, {"scores_leads": leads})
        msg = str(err.value)
        assert "permission denied for table scores_leads" in msg
        assert "drop the table" not in msg and "privileges" in msg
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f"DROP OWNED BY {role}"))
            c.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


def test_a_failed_rename_rolls_postgresql_back_and_restores_parquet(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename refused after PostgreSQL had committed left Parquet a mix of two runs."""
    from leadml.batch import outputs
    from leadml.batch.outputs import OutputStore, PublishError

    parquet = ParquetOutputs(tmp_path / "outputs")
    store = OutputStore(parquet, SqlAlchemyOutputs(database))

    def night(version: str) -> dict[str, pd.DataFrame]:
        return {
            "scores_leads": pd.DataFrame({"lead_id": ["a"], "model_version": [version]}),
            "forecast": pd.DataFrame({"kind": ["snapshot"], "probability_source": [version]}),
            "alerts": pd.DataFrame({"opportunity_id": ["o"], "rule": ["r"], "reason": [version]}),
        }

    store.publish(DAY, night("1"))
    real = outputs._move

    def refuse(src: Path, dst: Path) -> None:
        if src == parquet.partition("alerts", DAY):
            raise PermissionError(1, "Operation not permitted", str(src))
        real(src, dst)

    monkeypatch.setattr(outputs, "_move", refuse)
    with pytest.raises(PublishError, match="Operation not permitted"):
        store.publish(DAY, night("2"))
    assert SqlAlchemyOutputs(database).read("scores_leads", DAY)["model_version"].tolist() == ["1"]
    assert SqlAlchemyOutputs(database).read("alerts", DAY)["reason"].tolist() == ["1"]
    assert parquet.read("scores_leads", DAY)["model_version"].tolist() == ["1"]
    assert parquet.read("forecast", DAY)["probability_source"].tolist() == ["1"]


def test_a_cancelled_wait_for_the_publish_lock_is_a_clear_error(database: str) -> None:
    """A statement_timeout that cancelled the wait for the advisory lock (before any
    table) escaped as psycopg's exception: a traceback instead of exit code 2."""
    from leadml.batch.outputs import PUBLISH_LOCK_KEY, OutputStore, PublishError

    rows = {"scores_leads": pd.DataFrame({"lead_id": ["a"], "model_version": ["1"]})}
    OutputStore(None, SqlAlchemyOutputs(database)).publish(DAY, rows)
    impatient = (
        sa.engine.make_url(database)
        .update_query_dict({"options": "-c statement_timeout=300"})
        .render_as_string(hide_password=False)
    )
    holder = sa.create_engine(database)
    try:
        with holder.connect() as other:  # another leadml run, publishing now
            other.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": PUBLISH_LOCK_KEY})
            with pytest.raises(PublishError) as err:
                OutputStore(None, SqlAlchemyOutputs(impatient)).publish(
                    DAY, {"scores_leads": rows["scores_leads"].assign(model_version="2")}
                )
            other.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PUBLISH_LOCK_KEY})
    finally:
        holder.dispose()
    msg = str(err.value)
    assert "cannot start the publishing transaction" in msg and "statement timeout" in msg
    assert "nothing was published" in msg and err.value.exit_code == 2
    assert SqlAlchemyOutputs(database).read("scores_leads", DAY)["model_version"].tolist() == ["1"]


def test_a_commit_read_back_waits_for_the_publish_in_flight(database: str) -> None:
    """Review: a connection that drops while the server is still committing: the read-back
    (the run's run_id in the manifest) ran before the commit landed, saw nothing, and the
    Parquet partitions were put back while SQL ended up holding the new run. It now waits
    for the publishing transaction's advisory lock first."""
    import threading

    from leadml.batch.outputs import PUBLISH_LOCK_KEY, OutputStore

    store = OutputStore(None, SqlAlchemyOutputs(database))
    store.publish(DAY, {"scores_leads": pd.DataFrame({"lead_id": ["a"]})})  # makes the tables
    manifest = pd.DataFrame({"run_id": ["run-1"]})
    store.publish(
        DAY, {"scores_leads": pd.DataFrame({"lead_id": ["a"]})}, manifest=lambda: manifest
    )
    engine = sa.create_engine(database)
    answer: dict[str, object] = {}
    try:
        with engine.connect() as other:  # a run committing right now
            other.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PUBLISH_LOCK_KEY})
            other.execute(
                sa.text("UPDATE manifest SET run_id = 'run-2' WHERE as_of = :d"), {"d": DAY}
            )
            reader = threading.Thread(
                target=lambda: answer.update(found=store.committed_run(DAY, "run-2"))
            )
            reader.start()
            reader.join(timeout=2)
            assert reader.is_alive() and not answer  # it waits for the commit to end
            other.commit()
            reader.join(timeout=30)
    finally:
        engine.dispose()
    assert answer == {"found": True}
