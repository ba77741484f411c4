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
        store.stage(DAY, {"drift": pd.DataFrame()}),
    ):
        pass
    assert "secret" not in str(err.value)  # the password is never printed
