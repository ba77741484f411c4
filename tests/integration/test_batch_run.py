"""The nightly run end to end on a small company: idempotency, crash safety, bad input,
the manifest, and the call list inside the run."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from _batch_data import make_company, stand_in_champions

from leadml.batch import outputs as outputs_mod
from leadml.batch.nightly import BatchError, run_nightly
from leadml.batch.outputs import DuckDBOutputs, ParquetOutputs
from leadml.config import load_settings
from leadml.errors import DataError

AS_OF = "2025-06-02"
DAY = pd.Timestamp(AS_OF).date()


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_company(tmp_path_factory.mktemp("company") / "data")


@pytest.fixture(scope="module")
def champions(company: Path) -> dict:
    return stand_in_champions(company)


@pytest.fixture(scope="module")
def published(company: Path, champions: dict, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One nightly run in its own workspace, shared by the tests that only read it."""
    s = load_settings(workspace=tmp_path_factory.mktemp("published") / "workspace")
    return s, run_nightly(s, AS_OF, data=company, champions=champions)


def _sorted(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    return df.sort_values(key).reset_index(drop=True)


def _leftovers(outputs: Path) -> list[Path]:
    """Staging or replaced copies left behind: hidden folders inside the table folders,
    run folders under ``outputs/.staging``."""
    return [*outputs.glob("*/.*"), *outputs.glob(".staging/*")]


def _duck(settings) -> DuckDBOutputs:  # type: ignore[no-untyped-def]
    return DuckDBOutputs(settings.outputs_dir / "leadml.duckdb")


def test_rerun_of_a_date_replaces_its_rows_and_keeps_other_dates(
    company: Path, champions: dict
) -> None:
    s = load_settings()
    first = run_nightly(s, AS_OF, data=company, champions=champions)
    other = run_nightly(s, "2025-05-26", data=company, champions=champions)
    second = run_nightly(s, AS_OF, data=company, champions=champions)
    assert first.manifest.run_id != second.manifest.run_id

    parquet, sql = ParquetOutputs(s.outputs_dir), _duck(s)
    for table, key in (
        ("scores_leads", ["lead_id"]),
        ("call_list", ["rep_id", "rank"]),
        ("scores_deals", ["opportunity_id"]),
    ):
        expected = first.tables[table]
        assert len(expected) > 0
        got_pq = parquet.read(table, DAY)
        got_sql = sql.read(table, DAY)
        # one copy of D's rows in both destinations, equal to what the run produced
        assert len(got_pq) == len(expected) == len(got_sql)
        assert got_pq[key].duplicated().sum() == 0 and got_sql[key].duplicated().sum() == 0
        pd.testing.assert_frame_equal(
            _sorted(got_pq.drop(columns="as_of"), key),
            _sorted(second.tables[table], key),
            check_dtype=False,
        )
        assert set(got_sql[key[0]]) == set(expected[key[0]])
        # the other date is still there, untouched
        assert len(sql.read(table, pd.Timestamp("2025-05-26").date())) == len(other.tables[table])
    manifests = sql.read("manifest")
    assert sorted(manifests["as_of"].astype(str).str[:10]) == ["2025-05-26", AS_OF]
    assert manifests.loc[manifests["as_of"].astype(str).str.startswith(AS_OF), "run_id"].item() == (
        second.manifest.run_id
    )
    # no staging folders left: none beside the partitions, no run folder in .staging
    assert not _leftovers(s.outputs_dir)


def test_a_failure_before_or_while_publishing_leaves_previous_outputs(
    company: Path, champions: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = load_settings()
    run_nightly(s, AS_OF, data=company, champions=champions)
    names = ("scores_leads", "call_list", "manifest")
    before_sql = {t: _duck(s).read(t, DAY) for t in names}
    before_pq = {t: ParquetOutputs(s.outputs_dir).read(t, DAY) for t in names}

    def unchanged() -> None:
        for t in names:
            pd.testing.assert_frame_equal(_duck(s).read(t, DAY), before_sql[t])
            pd.testing.assert_frame_equal(ParquetOutputs(s.outputs_dir).read(t, DAY), before_pq[t])
        assert set(ParquetOutputs(s.outputs_dir).read("scores_leads", DAY)["model_version"]) == {
            "7"
        }
        assert not _leftovers(s.outputs_dir)

    newer = {k: _bump(v) for k, v in champions.items()}

    # 1. the run dies after computing everything, before publishing
    def crash(_tables: dict) -> None:
        raise RuntimeError("disk full (injected)")

    with pytest.raises(RuntimeError, match="injected"):
        run_nightly(s, AS_OF, data=company, champions=newer, before_publish=crash)
    unchanged()

    # 2. the run dies while publishing, between two tables: the first two are already
    #    written inside the SQL transaction and staged as Parquet
    real = outputs_mod._sql_ready
    calls = {"n": 0}

    def flaky(df: pd.DataFrame) -> pd.DataFrame:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("connection reset (injected)")
        return real(df)

    monkeypatch.setattr(outputs_mod, "_sql_ready", flaky)
    with pytest.raises(OSError, match="injected"):
        run_nightly(s, AS_OF, data=company, champions=newer)
    assert calls["n"] == 3
    unchanged()

    # 3. the destinations are usable afterwards: a clean publish replaces D's rows
    monkeypatch.setattr(outputs_mod, "_sql_ready", real)
    store = outputs_mod.OutputStore(ParquetOutputs(s.outputs_dir), _duck(s))
    store.publish(DAY, {"scores_leads": before_pq["scores_leads"].drop(columns="as_of").head(5)})
    assert len(_duck(s).read("scores_leads", DAY)) == 5
    assert len(ParquetOutputs(s.outputs_dir).read("scores_leads", DAY)) == 5


def _bump(champ):  # type: ignore[no-untyped-def]
    import copy

    c = copy.copy(champ)
    c.version = "8"
    return c


def test_manifest_records_inputs_models_rows_timings_and_drift(company: Path, published) -> None:  # type: ignore[no-untyped-def]
    s, result = published
    m = result.manifest
    n_leads = len(pd.read_parquet(company / "leads.parquet"))
    assert m.input_rows["leads"] == n_leads
    assert m.model_versions == {"lead_readiness": "7", "deal_close": "7"}
    assert m.rows_written == {**{k: len(v) for k, v in result.tables.items()}, "manifest": 1}
    assert {"validate", "features", "score", "call_list", "forecast", "drift", "publish"} <= set(
        m.timings_s
    )
    assert m.open_entities["leads"] == len(result.tables["scores_leads"])
    row = _duck(s).read("manifest", DAY).iloc[0]
    assert json.loads(row["rows_written"])["scores_leads"] == len(result.tables["scores_leads"])
    # the stored manifest has the timings the CLI prints, publish included, and finishes
    # after every step it times (finished_at was set before publishing)
    for stored in (row, ParquetOutputs(s.outputs_dir).read("manifest", DAY).iloc[0]):
        assert json.loads(stored["timings_s"]) == m.timings_s and m.timings_s["publish"] > 0
    started = pd.Timestamp(m.started_at)
    finished = pd.Timestamp(m.finished_at)
    assert (finished - started).total_seconds() >= sum(m.timings_s.values()) - 2
    assert pd.Timestamp(row["finished_at"]) == finished
    assert json.loads(row["drifted_features"]) == m.drifted_features
    drift = result.tables["drift"]
    assert set(drift["model"]) == {"lead_readiness", "deal_close"}
    assert m.drifted_features == [
        f"{a}:{b}"
        for a, b in zip(drift["model"], drift["feature"], strict=True)
        if drift.set_index(["model", "feature"]).loc[(a, b), "status"] in ("drift", "missing")
    ]


def test_open_leads_and_call_list_follow_the_as_of_date(company: Path, published) -> None:  # type: ignore[no-untyped-def]
    _, result = published
    scores, calls, cap = (result.tables[t] for t in ("scores_leads", "call_list", "call_capacity"))
    status = pd.read_parquet(company / "lead_status_history.parquet")
    t = pd.Timestamp(AS_OF, tz="UTC")
    last = status[status["ts"] < t].sort_values("ts").groupby("lead_id")["status"].last()
    assert not scores["lead_id"].isin(last[last.isin(["sql", "disqualified"])].index).any()
    assert (scores["status"] == scores["lead_id"].map(last).fillna("lead")).all()
    leads = pd.read_parquet(company / "leads.parquet")
    assert set(scores["lead_id"]) <= set(leads.loc[leads["created_at"] < t, "lead_id"])
    # call list: within capacity, within segment, only MQL/recycled, best first per rep
    per_rep = calls.groupby("rep_id").size()
    assert (per_rep <= cap.set_index("rep_id")["capacity"].reindex(per_rep.index)).all()
    assert (calls["segment"] == calls["rep_segment"]).all()
    assert set(calls["status"]) <= {"mql", "recycled"}
    for _, g in calls.groupby("rep_id"):
        assert g.sort_values("rank")["readiness"].is_monotonic_decreasing


def test_bad_rows_stop_the_run_or_are_quarantined(
    company: Path, champions: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in company.glob("*.parquet"):
        (bad / f.name).write_bytes(f.read_bytes())
    events = pd.read_parquet(bad / "events.parquet")
    events.loc[events.index[:3], "type"] = "telepathy"
    events.to_parquet(bad / "events.parquet", index=False)

    s = load_settings()
    with pytest.raises(DataError, match=r"events\.type.*unknown value") as err:
        run_nightly(s, AS_OF, data=bad, champions=champions)
    assert "telepathy" in str(err.value)
    assert not (s.outputs_dir / "manifest").exists()  # nothing published

    monkeypatch.setenv("LEADML_BATCH__BAD_ROWS", "quarantine")
    s = load_settings()
    result = run_nightly(s, AS_OF, data=bad, champions=champions)
    assert result.manifest.quarantined_rows == {"events": 3}
    quarantined = pd.read_csv(s.quarantine_dir / f"as_of={AS_OF}" / "events.csv")
    assert len(quarantined) == 3 and quarantined["_reasons"].str.contains("unknown value").all()
    assert len(ParquetOutputs(s.outputs_dir).read("scores_leads", DAY)) == len(
        result.tables["scores_leads"]
    )


def test_missing_champion_and_bad_date_are_clear_errors(company: Path, champions: dict) -> None:
    s = load_settings()
    with pytest.raises(BatchError, match="no champion for deal_close"):
        run_nightly(
            s, AS_OF, data=company, champions={"lead_readiness": champions["lead_readiness"]}
        )
    with pytest.raises(BatchError, match="not a date"):
        run_nightly(s, "yesterday", data=company, champions=champions)


def test_outputs_are_readable_by_plain_duckdb_sql(published) -> None:  # type: ignore[no-untyped-def]
    s, _ = published
    with duckdb.connect(str(s.outputs_dir / "leadml.duckdb"), read_only=True) as con:
        n = con.execute(
            "SELECT count(*) FROM call_list WHERE as_of = DATE '2025-06-02'"
        ).fetchall()[0][0]
        top = con.execute(
            "SELECT rep_id, sum(readiness) FROM call_list GROUP BY rep_id ORDER BY rep_id"
        ).fetchall()
    assert n > 0 and len(top) == 4
    glob = s.outputs_dir / "scores_leads" / "*" / "*.parquet"
    with duckdb.connect() as con:
        dates = con.execute(
            f"SELECT DISTINCT as_of FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchall()
    assert [str(d[0]) for d in dates] == [AS_OF]


def test_a_backfill_with_a_champion_trained_later_is_flagged(
    company: Path, champions: dict, tmp_path: Path
) -> None:
    import copy
    from types import SimpleNamespace

    s = load_settings(workspace=tmp_path / "workspace")
    quiet = run_nightly(s, AS_OF, data=company, champions=champions)
    assert not any("trained on data up to" in w for w in quiet.warnings)
    later = dict(champions)
    champ = copy.copy(champions["lead_readiness"])
    window = ["2024-01-01T00:00:00+00:00", "2025-09-01T00:00:00+00:00"]  # after AS_OF
    champ.bundle = SimpleNamespace(meta={"data_window": window})
    later["lead_readiness"] = champ
    flagged = run_nightly(s, AS_OF, data=company, champions=later)
    (w,) = [w for w in flagged.warnings if "trained on data up to" in w]
    assert "2025-09-01" in w and AS_OF in w and "lead_readiness" in w
    # Nightly review: snapshots end before D, but their labels read the outcomes of the
    # following horizon (readiness 30 days; deal close its hazard's 13 weeks of 7 days)
    champ.bundle = SimpleNamespace(
        meta={"data_window": ["2024-01-01", "2025-05-19"], "spec": {"target": {"horizon_days": 30}}}
    )
    deal = copy.copy(champions["deal_close"])
    deal.bundle = SimpleNamespace(
        meta={
            "data_window": ["2024-01-01", "2025-04-01"],
            "spec": {"target": {"horizon_days": 90}},
        },
        hazard={"max_weeks": 13, "week_days": 7},
    )
    later["deal_close"] = deal
    labels = run_nightly(s, AS_OF, data=company, champions=later)
    said = [w for w in labels.warnings if "trained on data up to" in w]
    assert len(said) == 2
    assert "lead_readiness" in said[0] and "up to 2025-06-18" in said[0]
    assert "deal_close" in said[1] and "up to 2025-07-01" in said[1]


def test_a_feature_every_listed_lead_shares_is_no_reason_on_the_call_list() -> None:
    """RevOps review: 'Lead status is mql' was a reason on 320 of 320 call-list leads."""
    from _batch_data import StandInChampion

    from leadml.batch.nightly import _call_reasons

    model = StandInChampion("lead_readiness", "lead_id", ["is_mql", "visits"])
    feats = pd.DataFrame(
        {"lead_id": ["a", "b", "c"], "is_mql": [9.0, 9.0, 9.0], "visits": [1.0, 2.0, 3.0]}
    )
    assert model.reasons(feats) == ["high is_mql"] * 3  # the strongest, but shared by all
    reasons = _call_reasons(model, feats, pd.Series(["c", "a"]))
    assert list(reasons) == ["high visits", "high visits"]
    assert list(_call_reasons(model, feats, pd.Series(["b"]))) == ["high is_mql"]  # alone


def test_a_champions_label_reach_ends_at_its_cutoff_or_the_data_end() -> None:
    """Operator review: a deal model's 39 weeks of label reach went past the data's end,
    so every night's run on the newest data warned that the model 'saw the future'."""
    from types import SimpleNamespace

    from leadml.batch.nightly import _trained_until

    reach = SimpleNamespace(
        bundle=SimpleNamespace(
            meta={"data_window": ["2025-01-01", "2025-11-03"]},
            hazard={"max_weeks": 39, "week_days": 7},
        )
    )
    end = pd.Timestamp("2025-11-09 16:00", tz="UTC")
    assert _trained_until(reach) == pd.Timestamp("2026-08-03", tz="UTC")
    assert _trained_until(reach, end) == end  # nothing after the data was there to read
    cut = SimpleNamespace(
        bundle=SimpleNamespace(
            meta={**reach.bundle.meta, "label_cutoff": "2025-10-01T00:00:00+00:00"}
        )
    )
    assert _trained_until(cut, end) == pd.Timestamp("2025-10-01", tz="UTC")


def test_drift_is_measured_on_the_reference_weekday_only(
    company: Path, champions: dict, tmp_path: Path
) -> None:
    """Nightly review: the reference holds Monday snapshots, so a Wednesday run 'drifted'
    on every time-since feature (days_since_last_activity PSI 3.98)."""
    import copy
    from types import SimpleNamespace

    s = load_settings(workspace=tmp_path / "workspace")
    mondays = dict(champions)
    for name in ("lead_readiness", "deal_close"):
        champ = copy.copy(champions[name])
        window = ["2025-04-07T00:00:00+00:00", "2025-05-05T00:00:00+00:00"]  # Mondays
        champ.bundle = SimpleNamespace(meta={"reference_window": window})
        mondays[name] = champ
    tuesday = run_nightly(s, "2025-06-03", data=company, champions=mondays)
    assert tuesday.tables["drift"].empty and tuesday.manifest.drifted_features == []
    note = tuesday.manifest.drift_note or ""
    assert "drift of lead_readiness, deal_close is measured on Monday runs" in note
    monday = run_nightly(s, AS_OF, data=company, champions=mondays)
    assert set(monday.tables["drift"]["model"]) == {"lead_readiness", "deal_close"}
    assert monday.manifest.drift_note is None
