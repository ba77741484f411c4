"""The nightly run: everything the revenue team needs at 9 am, as of a date D.

``run_nightly(settings, as_of=D)`` does, in order:

1. **validate** the input tables against their contracts (bad rows stop the run
   with a message naming table, column and rows, or are quarantined with their
   reasons under ``<workspace>/quarantine/as_of=D/`` when ``batch.bad_rows`` says so);
2. **features** as of D (the offline engine) for every open lead and open deal;
3. **score** them with the registered champions (calibrated probability, grade,
   top reasons);
4. the **IS call list** for the coming working days (:mod:`.calllist`);
5. the **forecast** snapshot of the current and the next quarter (the empirical close
   rates, or the deal champion's probabilities with ``batch.forecast_source: model``),
   and the **deal-hygiene alerts**;
6. **drift** of every model input and of the scores against the training reference;
7. **publish** every table for D at once (:mod:`.outputs`) with the run manifest.

Time semantics: D is read as midnight UTC at the start of that day; every
feature, status, capacity and forecast reads only records with ``ts < D``.
Nothing is published until every step has succeeded, so a failed run leaves the
previous outputs of D (and of every other date) exactly as they were.
"""

from __future__ import annotations

import calendar
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import duckdb
import numpy as np
import pandas as pd

from leadml.batch import calllist as cl
from leadml.batch import drift as dr
from leadml.batch.manifest import Manifest, peak_rss_mb
from leadml.batch.outputs import (
    OutputStore,
    ParquetOutputs,
    conform,
    os_failure,
    sql_outputs,
    sql_url_source,
)
from leadml.config import Settings
from leadml.errors import DataError, LeadmlError
from leadml.forecast.deals import as_utc
from leadml.modeling.spec import PolicySpec

LEAD_MODEL = "lead_readiness"
DEAL_MODEL = "deal_close"
CLOSED_LEAD_STATUSES = ("sql", "disqualified")


class BatchError(LeadmlError):
    """The nightly run cannot go on (missing champion, empty data, bad date)."""


class Champion(Protocol):
    """What the nightly run needs from a registered model (see :class:`BundleChampion`)."""

    name: str
    version: str
    features: list[str]
    # Training distribution per feature and of the score (key ``"score"``), for drift.
    reference: Mapping[str, Any] | None
    # IS slots one hand-off takes (the readiness model's policy; the call list counts them).
    slots_per_lead: float

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated probability per row of ``features`` (the model's headline horizon)."""
        ...

    def grade(self, probability: np.ndarray) -> np.ndarray | None:
        """A/B/C/D per probability, or None when the model has no grades."""
        ...

    def reasons(self, features: pd.DataFrame, quiet: Sequence[str] = ()) -> list[str]:
        """The top reasons behind each row's score, as one readable string per row;
        features in ``quiet`` count in the score but are never a reason."""
        ...


class DealChampion(Champion, Protocol):
    def won_by(self, features: pd.DataFrame, horizon_days: np.ndarray) -> np.ndarray:
        """Calibrated P(deal won within ``horizon_days`` of its as-of time)."""
        ...


@dataclass
class NightlyResult:
    """What a run produced: the tables published for D and its manifest."""

    as_of: date
    tables: dict[str, pd.DataFrame]
    manifest: Manifest
    outputs_dir: Path
    sql_url: str
    warnings: list[str] = field(default_factory=list)
    # The feature frames scored (only with ``keep_features=True``; benchmarks use them).
    features: dict[str, pd.DataFrame] = field(default_factory=dict)
    champions: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ helpers


def parse_as_of(value: str | date | datetime | pd.Timestamp) -> tuple[date, pd.Timestamp]:
    """An as-of date and the instant it stands for (midnight UTC at the start of the day)."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise BatchError(
            f"--as-of {value!r} is not a date; use ISO format such as 2025-06-02"
        ) from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if ts != ts.normalize():
        raise BatchError(
            f"--as-of {value!r}: the nightly run is per day; give a date such as {ts.date()}"
        )
    day = ts.date()
    return day, pd.Timestamp(day, tz="UTC")


def _store(settings: Settings, sql_source: str = "batch.sql_url") -> OutputStore:
    parquet = ParquetOutputs(settings.outputs_dir) if settings.batch.parquet else None
    sql = sql_outputs(
        settings.batch.sql_url,
        settings.outputs_dir,
        source=sql_source,
        lock_timeout_s=settings.batch.sql_lock_timeout_seconds,
    )
    return OutputStore(parquet, sql)


def _prepare(store: OutputStore) -> list[str]:
    """Check the destinations before any work (a wrong URL or password, a closed port,
    an unwritable folder stop the run now, not at publish time), and clear what runs
    that died while publishing left behind; returns what to tell about that."""
    store.check()
    if store.parquet is None:
        return []
    left = store.remove_stale()
    notes = []
    if left.restored:
        notes.append(
            "a run killed while publishing had replaced some partitions without committing; "
            f"the previous ones were put back: {', '.join(str(p) for p in left.restored)}"
        )
    if left.removed:
        notes.append(
            f"removed {len(left.removed)} staging folder(s) of runs that stopped while "
            f"publishing: {', '.join(str(p) for p in left.removed)}"
        )
    return notes


def _read_failure(location: Path, doing: str, exc: BaseException) -> DataError:
    """A DuckDB error while the run read its input tables, with the files that cannot
    be read in full (probed once, now that the run has failed anyway)."""
    from leadml.contracts import TABLE_NAMES, read_failure
    from leadml.sources import open_source, unreadable_files

    try:
        files: list[tuple[str, str, str]] | None = unreadable_files(
            open_source(location, list(TABLE_NAMES))
        )
    except Exception:  # the probe is a courtesy: the message without it still helps
        files = None
    return DataError(read_failure(location, doing, exc, files))


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    names = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    return names | {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def open_leads(con: duckdb.DuckDBPyConnection, as_of: pd.Timestamp) -> pd.DataFrame:
    """Leads created before ``as_of`` whose status as of then is not SQL or disqualified.

    Columns: ``lead_id, status, segment`` (the account's) and ``team`` when the
    leads table carries one. Status is the last ``lead_status_history`` row with
    ``ts < as_of`` (ties: the later status in THE MODEL order); a lead with no
    status row yet is a plain ``lead``.
    """
    have = _views(con)
    lead_cols = {r[0] for r in con.execute("DESCRIBE leads").fetchall()}
    team = "CAST(l.team AS VARCHAR)" if "team" in lead_cols else "CAST(NULL AS VARCHAR)"
    status_cte = (
        "SELECT lead_id, arg_max(status, ts) AS status FROM lead_status_history "
        "WHERE ts < $as_of GROUP BY lead_id"
        if "lead_status_history" in have
        else "SELECT CAST(NULL AS VARCHAR) AS lead_id, CAST(NULL AS VARCHAR) AS status WHERE FALSE"
    )
    closed = ", ".join(f"'{s}'" for s in CLOSED_LEAD_STATUSES)
    return con.execute(
        f"WITH st AS ({status_cte}) "
        f"SELECT l.lead_id, coalesce(st.status, 'lead') AS status, a.segment, {team} AS team "
        "FROM leads l LEFT JOIN st USING (lead_id) LEFT JOIN accounts a USING (account_id) "
        f"WHERE l.created_at < $as_of AND coalesce(st.status, 'lead') NOT IN ({closed}) "
        "ORDER BY l.lead_id",
        {"as_of": as_of},
    ).df()


def _is_activity(
    con: duckdb.DuckDBPyConnection, as_of: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """IS reps, and the activities the call list needs (this week's, and each lead's
    latest IS touch) — all with ``ts < as_of``."""
    have = _views(con)
    no_acts = pd.DataFrame(
        {
            "ts": pd.Series([], dtype="datetime64[us, UTC]"),
            "rep_id": pd.Series([], dtype=object),
            "lead_id": pd.Series([], dtype=object),
        }
    )
    if "reps" not in have:
        text = pd.Series([], dtype=object)
        reps = pd.DataFrame({"rep_id": text, "role": text, "team": text, "segment": text}).assign(
            weekly_slots=pd.Series([], dtype="int64")
        )
        return reps, no_acts
    reps = con.execute("SELECT rep_id, role, team, segment, weekly_slots FROM reps").df()
    if "activities" not in have:
        return reps, no_acts
    start = cl.week_start(as_of)
    acts = con.execute(
        "WITH a AS (SELECT a.ts, a.rep_id, a.lead_id FROM activities a JOIN reps r USING (rep_id) "
        "WHERE r.role = 'IS' AND a.ts < $as_of) "
        "SELECT ts, rep_id, lead_id FROM a WHERE ts >= $start "
        "UNION ALL "
        "SELECT max(ts) AS ts, arg_max(rep_id, ts) AS rep_id, lead_id FROM a "
        "WHERE lead_id IS NOT NULL AND ts < $start GROUP BY lead_id",
        {"as_of": as_of, "start": start},
    ).df()
    return reps, acts


# ------------------------------------------------------------------ the run


def run_nightly(
    settings: Settings,
    as_of: str | date | datetime | pd.Timestamp,
    *,
    data: str | Path | None = None,
    champions: Mapping[str, Champion] | None = None,
    on_step: Callable[[str], None] | None = None,
    before_publish: Callable[[dict[str, pd.DataFrame]], None] | None = None,
    keep_features: bool = False,
    store: OutputStore | None = None,
    sql_source: str | None = None,
) -> NightlyResult:
    """Run the nightly batch for as-of date ``as_of`` and publish its outputs.

    ``champions`` maps ``lead_readiness`` / ``deal_close`` to loaded models
    (default: :func:`load_champions` from the MLflow registry). ``on_step`` is
    called with each step's name as it starts (progress display).
    ``before_publish`` sees the finished tables just before they are published
    (tests inject failures here). ``keep_features`` returns the scored feature frames
    and the champions with the result. ``store`` overrides where outputs go (default:
    the workspace's Parquet folder and ``batch.sql_url``; ``sql_source`` names where that
    URL came from in messages: ``--sql-url``, else the variable or the setting). Before any
    work the destinations are checked and what dead runs left in the Parquet staging
    folder is cleared (:meth:`ParquetOutputs.remove_stale`). Re-running a date replaces
    its outputs, and D's quarantine folder (``<workspace>/quarantine/as_of=D/``, removed
    when nothing was quarantined); a failed run writes no quarantine file.
    """
    import shutil

    day, _ = parse_as_of(as_of)
    target = settings.quarantine_dir / f"as_of={day.isoformat()}"
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    try:
        result = _run_nightly(
            settings,
            as_of,
            data=data,
            champions=champions,
            on_step=on_step,
            before_publish=before_publish,
            keep_features=keep_features,
            store=store or _store(settings, sql_source or sql_url_source(False, os.environ)),
            quarantine_to=staging,
        )
        # Published: D's quarantine folder is this run's (none when nothing was set aside).
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            if target.exists():
                target.replace(old)
            if staging.is_dir() and any(staging.iterdir()):
                staging.replace(target)
        except OSError as exc:
            raise os_failure(
                target,
                exc,
                "replace the quarantine folder",
                "the run's outputs were published, its quarantined rows were not",
            ) from None
        shutil.rmtree(old, ignore_errors=True)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_nightly(
    settings: Settings,
    as_of: str | date | datetime | pd.Timestamp,
    *,
    data: str | Path | None,
    champions: Mapping[str, Champion] | None,
    on_step: Callable[[str], None] | None,
    before_publish: Callable[[dict[str, pd.DataFrame]], None] | None,
    keep_features: bool,
    store: OutputStore,
    quarantine_to: Path,
) -> NightlyResult:
    """:func:`run_nightly`, writing quarantined rows to ``quarantine_to``."""
    from leadml.contracts import connect
    from leadml.features.catalog import load_catalog
    from leadml.features.offline import compute_features

    day, t = parse_as_of(as_of)
    cfg = settings.batch
    location = Path(data) if data is not None else settings.data_dir
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    cleared = _prepare(store)
    manifest = Manifest(
        run_id=uuid.uuid4().hex[:12],
        as_of=day.isoformat(),
        started_at=started_at,
        data_location=str(location),
        sql_url=store.sql.safe_url if store.sql is not None else None,
        settings={"batch": cfg.model_dump(mode="json", exclude={"sql_url"})},
    )
    phase = ["validate inputs"]  # what the run is doing (named when reading the data fails)

    def say(name: str) -> None:
        phase[0] = name
        if on_step is not None:
            on_step(name)

    warnings: list[str] = manifest.warnings  # printed by the CLI and stored in the manifest
    warnings.extend(cleared)

    say("validate inputs")
    with manifest.step("validate"):
        con, report = connect(
            location,
            settings.vocabulary,
            bad_rows=cfg.bad_rows,
            quarantine_dir=quarantine_to,
            example_rows=settings.data.example_rows,
        )
    try:
        manifest.input_rows = dict(report.rows)
        manifest.quarantined_rows = dict(report.quarantined)
        warnings.extend(report.consequences())  # absent optional tables, and what it costs
        con.execute("SET TimeZone = 'UTC'")

        say("load champions")
        with manifest.step("load_models"):
            models = dict(champions) if champions is not None else load_champions(settings)
        for name in (LEAD_MODEL, DEAL_MODEL):
            if name not in models:
                raise BatchError(
                    f"no champion for {name}; train and promote one first "
                    "(`leadml train` then `leadml promote`), or run `leadml demo`"
                )
        lead_model = models[LEAD_MODEL]
        deal_model = cast(DealChampion, models[DEAL_MODEL])
        from leadml.features.labels import latest_record

        last = latest_record(con)
        for name, m in models.items():
            trained_to = _trained_until(m, last)
            if trained_to is not None and trained_to > t:
                warnings.append(
                    f"{name} v{m.version} was trained on data up to {trained_to:%Y-%m-%d} "
                    f"(its last snapshot's outcomes), after this run's date {day}: its scores "
                    "saw the outcomes that follow and are not what was known then (a "
                    "backfill with a later champion)"
                )
        manifest.model_versions = {n: str(m.version) for n, m in models.items()}
        manifest.model_metrics = {
            n: dict(getattr(m, "metrics", {}) or {}) for n, m in models.items()
        }

        say("features as of D")
        catalog = load_catalog(settings.config_file("features.yaml"), settings.vocabulary)
        with manifest.step("features"):
            leads = open_leads(con, t)
            from leadml.forecast.deals import DealHistory

            history = DealHistory(con, settings.vocabulary)
            history.check_as_of(t)  # a date past the data's end fails here, not after scoring
            quiet = history.quiet_note(t)
            if quiet is not None:
                warnings.append(f"{quiet}; the call list counts no slots booked since then")
            deals = history.snapshot(t)
            if leads.empty and deals.empty:
                raise DataError(
                    f"{location}: no lead or deal is open before {day}; check --as-of "
                    "against the dates in the data"
                )
            lead_feats = compute_features(con, catalog, "lead", leads[["lead_id"]].assign(as_of=t))
            deal_feats = compute_features(
                con, catalog, "opportunity", deals[["opportunity_id"]].assign(as_of=t)
            )
        manifest.open_entities = {"leads": len(leads), "deals": len(deals)}

        say("score leads and deals")
        with manifest.step("score"):
            scores_leads = score_leads(lead_model, lead_feats, leads)
            scores_deals, quarter_probs = score_deals(
                deal_model, deal_feats, deals, t, catalog=catalog, history=history
            )

            def won_by(horizon_days: np.ndarray) -> np.ndarray:
                return np.asarray(deal_model.won_by(deal_feats, horizon_days), dtype="float64")

        say("IS call list")
        with manifest.step("call_list"):
            reps, acts = _is_activity(con, t)
            candidates = scores_leads.rename(columns={"readiness": "expected_conversions"})
            plan = cl.build_call_list(
                candidates,
                reps,
                acts,
                t,
                days=cfg.call_list_days,
                statuses=cfg.call_list_statuses,
                assign_by=cfg.assign_by,
                slots_per_lead=lead_model.slots_per_lead,
            )
            capacity = plan.capacity
            if capacity.empty:
                why = (
                    "no IS rep in the reps table"
                    if report.rows.get("reps")
                    else "no reps table (or it is empty)"
                )
                warnings.append(
                    f"{why}: the IS call list is empty (capacity comes from the reps with role "
                    "IS and their weekly_slots); add the reps to the input tables to plan calls"
                )

        with manifest.step("reasons"):
            # Reasons (TreeSHAP) cost several predictions each: every open deal, the
            # leads on the call list and the best ``reasons_top_leads`` of the rest.
            top = scores_leads["lead_id"].head(cfg.reasons_top_leads)
            wanted = pd.Index(top).union(pd.Index(plan.calls["lead_id"]))
            scores_leads["reasons"] = _reasons_for(
                lead_model, lead_feats, "lead_id", scores_leads["lead_id"], wanted
            )
            scores_deals["reasons"] = _reasons_for(
                deal_model,
                deal_feats,
                "opportunity_id",
                scores_deals["opportunity_id"],
                pd.Index(scores_deals["opportunity_id"]),
            )
            calls = plan.calls.rename(columns={"expected_conversions": "readiness"})
            calls["reasons"] = _call_reasons(lead_model, lead_feats, calls["lead_id"])

        say("forecast and alerts")
        with manifest.step("forecast"):
            source, fan_won_by = forecast_source(con, settings, history, t, quarter_probs, won_by)
            forecast_tbl = forecast_snapshot(
                con, settings, history, t, source, fan_won_by, notes=warnings
            )
        with manifest.step("alerts"):
            window = getattr(
                getattr(getattr(settings, "forecast", None), "alerts", None),
                "score_window_days",
                28,
            )
            alerts = deal_alerts(
                con, settings, history, t, scores_deals, past_deal_scores(store, day, window)
            )

        say("drift")
        with manifest.step("drift"):
            drift_tbl = _drift_step(
                manifest,
                t,
                cfg,
                catalog,
                (LEAD_MODEL, lead_model, lead_feats, scores_leads["readiness"], "lead"),
                (DEAL_MODEL, deal_model, deal_feats, scores_deals["probability"], "opportunity"),
            )
    except duckdb.Error as exc:  # a corrupt input file the validation did not read in full
        raise _read_failure(location, f'running the step "{phase[0]}"', exc) from None
    finally:
        con.close()

    produced: dict[str, pd.DataFrame] = {
        "scores_leads": scores_leads,
        "scores_deals": scores_deals,
        "call_list": calls,
        "call_capacity": capacity,
        "forecast": forecast_tbl,
        "alerts": alerts,
        "drift": drift_tbl,
    }
    tables = {name: conform(name, frame) for name, frame in produced.items()}
    say("publish outputs")
    manifest.rows_written = {k: len(v) for k, v in tables.items()}
    manifest.rows_written["manifest"] = 1
    manifest.status = "succeeded"
    manifest.peak_rss_mb = round(peak_rss_mb(), 1)
    if before_publish is not None:
        before_publish(tables)
    publish_start = time.perf_counter()

    def manifest_row() -> pd.DataFrame:
        # made once every data table is written (staged and in the open transaction):
        # ``publish`` times that writing, ``finished_at`` is its end; the swap of the
        # Parquet partitions and the commit follow
        manifest.timings_s["publish"] = round(time.perf_counter() - publish_start, 3)
        manifest.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        return manifest.frame()

    store.publish(day, tables, manifest=manifest_row)
    return NightlyResult(
        as_of=day,
        tables=tables,
        manifest=manifest,
        outputs_dir=settings.outputs_dir,
        sql_url=manifest.sql_url or "",
        warnings=warnings,
        features={"lead": lead_feats, "opportunity": deal_feats} if keep_features else {},
        champions=models if keep_features else {},
    )


# ------------------------------------------------------------------ steps


def _drift_step(
    manifest: Manifest,
    t: pd.Timestamp,
    cfg: Any,
    catalog: Any,
    *scored: tuple[str, Champion, pd.DataFrame, pd.Series, str],
) -> pd.DataFrame:
    """Drift of each ``(name, model, features, scores, entity)`` on the reference's weekday; the
    manifest gets the drifted features, the note on models not measured tonight and the
    warnings about models without a reference."""
    warnings = manifest.warnings
    parts: list[pd.DataFrame] = []
    skipped: dict[str, list[str]] = {}
    for _name, model, feats, scores, entity in scored:
        weekday = _reference_weekday(model)
        if weekday is not None and weekday != t.weekday():
            skipped.setdefault(calendar.day_name[weekday], []).append(model.name)
            continue
        parts.append(
            _drift(
                model,
                feats,
                scores,
                cfg.psi_warn,
                cfg.psi_alert,
                unwatched=catalog.unwatched(entity),
            )
        )
    drift_tbl = (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=dr.DRIFT_COLUMNS)
    )
    manifest.drift_note = (
        "; ".join(
            f"drift of {', '.join(names)} is measured on {day_name} runs (the training "
            f"reference holds {day_name} snapshots, and time-since features follow the "
            "weekday)"
            for day_name, names in skipped.items()
        )
        or None
    )
    manifest.drifted_features = dr.drifted(drift_tbl) if len(drift_tbl) else []
    for name, m, *_ in scored:
        if not m.reference:
            warnings.append(f"{name} v{m.version} has no training reference; drift not measured")
    return drift_tbl


def score_leads(model: Champion, features: pd.DataFrame, leads: pd.DataFrame) -> pd.DataFrame:
    """One row per open lead, best first: readiness (calibrated), grade, status, routing.
    ``reasons`` is filled later for the leads that need them (None for the rest)."""
    p = np.asarray(model.predict(features), dtype="float64")
    grades = model.grade(p)
    out = pd.DataFrame(
        {
            "lead_id": features["lead_id"].to_numpy(),
            "readiness": p,
            "grade": grades if grades is not None else None,
            "reasons": None,
        }
    )
    out = out.merge(leads, on="lead_id", how="left", validate="one_to_one")
    out["model_version"] = str(model.version)
    return out.sort_values(["readiness", "lead_id"], ascending=[False, True], ignore_index=True)


def _call_reasons(model: Champion, features: pd.DataFrame, ids: pd.Series) -> np.ndarray:
    """Reasons for the call list's leads, in ``ids`` order: a feature with one value on
    every listed lead (their status: every one is an MQL) tells a rep nothing about why
    this lead is on the list, so it is no reason here (it still counts in the score)."""
    rows = features[features["lead_id"].isin(ids)].reset_index(drop=True)
    if rows.empty:
        return np.full(len(ids), None, dtype=object)
    used = [f for f in model.features if f in rows.columns]
    shared = [f for f in used if len(rows) > 1 and rows[f].nunique(dropna=False) == 1]
    out = pd.Series(model.reasons(rows, quiet=shared), index=rows["lead_id"].to_numpy())
    return out.reindex(ids.to_numpy()).to_numpy()


def _reasons_for(
    model: Champion, features: pd.DataFrame, id_column: str, ids: pd.Series, wanted: pd.Index
) -> np.ndarray:
    """Reasons for the rows of ``ids`` that are in ``wanted`` (None elsewhere), in ``ids`` order."""
    mask = features[id_column].isin(wanted).to_numpy()
    out = pd.Series(None, index=features[id_column].to_numpy(), dtype=object)
    if mask.any():
        out.iloc[np.flatnonzero(mask)] = model.reasons(features.loc[mask].reset_index(drop=True))
    return out.reindex(ids.to_numpy()).to_numpy()


def score_deals(
    model: DealChampion,
    features: pd.DataFrame,
    deals: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    catalog: Any = None,
    history: Any = None,
) -> tuple[
    pd.DataFrame, Callable[[duckdb.DuckDBPyConnection, pd.Timestamp, pd.Timestamp], pd.DataFrame]
]:
    """One row per open deal: P(won) by the end of this and next quarter and within 90
    days, the model's headline probability and grade, stage, amount, and the expected
    amount this quarter. ``reasons`` is filled later.

    Also returns the probability source the forecast uses: ``(con, as_of, period_end)
    -> opportunity_id, p_won_by`` from the same model. With the feature ``catalog`` and
    the :class:`~leadml.forecast.deals.DealHistory` it answers for earlier as-of dates
    too (:class:`~leadml.forecast.modelsource.ModelProbabilities`: the deals open then,
    their features as of then, so the forecast measures the shared quarter shock on the
    model's own past forecasts); tonight's ``features`` are reused. Dates after
    ``as_of`` are refused. Without them it answers for ``as_of`` only (deals independent).
    """
    from leadml.forecast.deals import quarter_of

    this_q = quarter_of(as_of)
    next_q = this_q.shifted(-1)
    day = pd.Timedelta(days=1)
    n = len(features)
    source = None
    if catalog is not None and history is not None:
        from leadml.forecast.modelsource import ModelProbabilities

        source = ModelProbabilities(
            model,
            catalog,
            history,
            latest=as_of,
            known=(as_of, features),
            name=f"{DEAL_MODEL} v{model.version}",
            week_days=int(getattr(model, "week_days", 7)),
        )

    def won_before(end: pd.Timestamp) -> np.ndarray:
        """P(won before ``end``): the forecast's own numbers when it has the history
        (the share of a quarter-end week's wins before the boundary is measured there)."""
        if source is None:
            return np.asarray(model.won_by(features, np.full(n, (end - as_of) / day)))
        # tonight's features are known to the source: no query, the connection is unused
        return source(None, as_of, end)["p_won_by"].to_numpy()  # type: ignore[arg-type]

    p_this, p_next = won_before(this_q.end), won_before(next_q.end)
    p_90 = model.won_by(features, np.full(n, 90.0))
    headline = np.asarray(model.predict(features), dtype="float64")
    grades = model.grade(headline)
    out = pd.DataFrame(
        {
            "opportunity_id": features["opportunity_id"].to_numpy(),
            "p_won_this_quarter": p_this,
            "p_won_by_next_quarter_end": p_next,
            "p_won_90d": p_90,
            "probability": headline,
            "grade": grades if grades is not None else None,
            "reasons": None,
        }
    )
    keep = [
        c
        for c in (
            "opportunity_id",
            "stage",
            "amount",
            "expected_close_date",
            "last_update",
            "owner_id",
            "team",
            "segment",
        )
        if c in deals
    ]
    out = out.merge(deals[keep], on="opportunity_id", how="left", validate="one_to_one")
    out["expected_amount_this_quarter"] = out["p_won_this_quarter"] * out["amount"]
    out["model_version"] = str(model.version)
    ordered = out.sort_values(
        ["expected_amount_this_quarter", "opportunity_id"],
        ascending=[False, True],
        ignore_index=True,
    )
    if source is not None:
        return ordered, source
    ids = out["opportunity_id"].to_numpy()
    cache: dict[pd.Timestamp, pd.DataFrame] = {}

    def probabilities(
        _con: duckdb.DuckDBPyConnection, t: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        if t != as_of:
            raise BatchError(
                f"deal probabilities were computed as of {as_of.date()}, not {t.date()}"
            )
        end = pd.Timestamp(end)
        if end not in cache:
            horizon = np.full(n, max((end - t) / day, 0.0))
            cache[end] = pd.DataFrame(
                {"opportunity_id": ids, "p_won_by": model.won_by(features, horizon)}
            )
        return cache[end]

    probabilities.name = f"{DEAL_MODEL} v{model.version}"  # type: ignore[attr-defined]
    return ordered, probabilities


def forecast_source(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    history: Any,
    as_of: pd.Timestamp,
    probabilities: Callable[..., pd.DataFrame],
    won_by: Callable[[np.ndarray], np.ndarray],
) -> tuple[Callable[..., pd.DataFrame], Callable[[np.ndarray], np.ndarray]]:
    """The forecast's probability source and fan ``won_by`` as ``batch.forecast_source``
    sets them: the deal champion's (``probabilities``, ``won_by``: "model"), or by default
    ("empirical") the empirical close rates, as in ``leadml forecast``."""
    if settings.batch.forecast_source == "model":
        return probabilities, won_by
    from leadml.forecast.forecast import empirical_rates

    rates = empirical_rates(history, settings.forecast)

    def rates_won_by(horizon_days: np.ndarray) -> np.ndarray:  # one horizon for every deal
        end = as_of + pd.Timedelta(days=float(np.max(horizon_days)))
        return rates(con, as_of, end)["p_won_by"].to_numpy(dtype="float64")

    return rates, rates_won_by


def forecast_snapshot(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    history: Any,
    as_of: pd.Timestamp,
    probabilities: Callable[..., pd.DataFrame],
    won_by: Callable[[np.ndarray], np.ndarray],
    *,
    notes: list[str] | None = None,
) -> pd.DataFrame:
    """The current and next quarter's forecast as of D, in total and per team and segment
    (``kind = 'snapshot'``), plus the current quarter's fan (``kind = 'fan'``).

    A quarter the source cannot forecast yet (too little deal history before D) is left
    out, with the reason appended to ``notes``: the rest of the run still publishes.

    ``probabilities`` is the forecast's source and ``won_by(horizon_days)`` gives every
    deal open at D (in ``history.snapshot(D)`` order) its P(won within the horizon), both
    from the same source (see :func:`forecast_source`)."""
    from leadml.forecast.deals import TooLittleHistory, quarter_of
    from leadml.forecast.forecast import forecast

    fcfg = getattr(settings, "forecast", None)
    vocab = settings.vocabulary
    rows = []
    current: pd.DataFrame | None = None  # the current quarter's per-team rows, for the fan
    this_q = quarter_of(as_of)
    tau = 0.0
    for label, period in (("current", this_q), ("next", this_q.shifted(-1))):
        for by in ("team", "segment"):
            try:
                r = forecast(
                    con,
                    as_of=as_of,
                    period=period,
                    deal_probabilities=probabilities,
                    by=by,
                    vocab=vocab,
                    config=fcfg,
                    history=history,
                )
            except TooLittleHistory as exc:
                if notes is not None:
                    notes.append(f"forecast of {period.label} left out: {exc}")
                break
            table = r.table()
            table.insert(0, "grouping", np.where(table["group"] == "all", "total", by))
            if by != "team":  # the total comes once, with the per-team call
                table = table[table["grouping"] != "total"]
            table = table.sort_values("grouping", key=lambda g: g != "total", kind="stable")
            table.insert(0, "period_end", period.end)
            table.insert(0, "period_start", period.start)
            table.insert(0, "period", period.label)
            table.insert(0, "quarter", label)
            table.insert(0, "kind", "snapshot")
            table["probability_source"] = r.probability_source
            rows.append(table)
            if label == "current" and by == "team":
                current, tau = table, r.shock_sd
    if current is None:  # no fan without the current quarter's forecast
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    fan = forecast_fan(history, as_of, this_q, won_by, current, fcfg, shock_sd=tau)
    return pd.concat([*rows, fan], ignore_index=True)


def forecast_fan(
    history: Any,
    as_of: pd.Timestamp,
    period: Any,
    won_by: Callable[[np.ndarray], np.ndarray],
    snapshot: pd.DataFrame,
    config: Any = None,
    *,
    shock_sd: float = 0.0,
) -> pd.DataFrame:
    """The fan chart of the current quarter: revenue booked by each coming week end, with
    P10/P50/P90, as of D (``kind = 'fan'``).

    Booked by week end w = won in the quarter before D + open deals won before w (exact
    distribution of the deal champion's P(won within w - D), the deals sharing the
    quarter's logit-scale shock ``shock_sd`` measured by the forecast) + the quarter's
    expected new-deal revenue spread evenly over its remaining weeks (a deterministic
    shift, an approximation). The last point is the quarter's forecast itself.
    """
    from leadml.forecast import distribution as dist

    deals = history.snapshot(as_of)
    amounts = deals["amount"].to_numpy(dtype="float64")
    total = snapshot[snapshot["group"] == "all"].iloc[0]
    won, target, new = float(total["won"]), float(total["target"]), float(total["new_expected"])
    ends = [
        w
        for w in pd.date_range(as_of + pd.Timedelta(days=7), period.end, freq="7D")
        if w < period.end
    ]
    span = (period.end - as_of) / pd.Timedelta(days=1)
    rows = [{"week_end": as_of, "won": won, "expected": won, "p10": won, "p50": won, "p90": won}]
    cells = getattr(config, "backtest_grid_cells", 1 << 14)
    for end in ends:
        days = (end - as_of) / pd.Timedelta(days=1)
        probs = won_by(np.full(len(deals), days))
        shift = new * days / span
        d = dist.revenue_distribution(
            won=won, amounts=amounts, probs=probs, max_cells=cells, shock_sd=shock_sd
        )
        p10, p50, p90 = (float(v) + shift for v in np.atleast_1d(d.quantile([0.1, 0.5, 0.9])))
        rows.append(
            {
                "week_end": end,
                "won": won,
                "expected": won + float(probs @ amounts) + shift,
                "p10": p10,
                "p50": p50,
                "p90": p90,
            }
        )
    rows.append(
        {
            "week_end": period.end,
            "won": won,
            "expected": float(total["expected"]),
            "p10": float(total["p10"]),
            "p50": float(total["p50"]),
            "p90": float(total["p90"]),
        }
    )
    fan = pd.DataFrame(rows)
    fan["target"] = target
    fan.insert(0, "grouping", "total")
    fan.insert(0, "group", "all")
    fan.insert(0, "period_end", period.end)
    fan.insert(0, "period_start", period.start)
    fan.insert(0, "period", period.label)
    fan.insert(0, "quarter", "current")
    fan.insert(0, "kind", "fan")
    return fan


def deal_alerts(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    history: Any,
    as_of: pd.Timestamp,
    scores_deals: pd.DataFrame,
    past_scores: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Deal-hygiene alerts as of D (:func:`leadml.forecast.alerts.alerts`), one row per
    deal and rule. The score-drop rule reads tonight's ``p_won_90d`` (a fixed horizon,
    comparable from night to night) and earlier nights' from ``past_scores``."""
    import json

    from leadml.forecast.alerts import COLUMNS, alerts

    if history.data_start is None or as_of <= history.data_start:  # no deal yet: none to flag
        return pd.DataFrame(columns=COLUMNS)
    tonight = pd.DataFrame(
        {
            "opportunity_id": scores_deals["opportunity_id"],
            "as_of": as_of,
            "p_won": scores_deals["p_won_90d"],
        }
    )
    scores = (
        pd.concat([past_scores, tonight], ignore_index=True) if past_scores is not None else tonight
    )
    fcfg = getattr(settings, "forecast", None)
    out = alerts(
        con,
        as_of=as_of,
        cfg=getattr(fcfg, "alerts", None),
        scores=scores,
        vocab=settings.vocabulary,
        history=history,
    )
    if "figures" in out:
        out["figures"] = out["figures"].map(lambda v: json.dumps(v, default=str, sort_keys=True))
    return out.reset_index(drop=True)


def past_deal_scores(store: OutputStore, day: date, window_days: int) -> pd.DataFrame | None:
    """Earlier nights' ``p_won_90d`` per deal (``opportunity_id, as_of, p_won``), for the
    ``window_days`` before D; only runs dated before D are read (from the Parquet
    partitions, or from the SQL database when Parquet is off)."""
    lo = day - pd.Timedelta(days=window_days)
    if store.parquet is not None:
        days = [d for d in store.parquet.dates("scores_deals") if lo <= d < day]
        read = store.parquet.read
    elif store.sql is not None and store.sql.has("scores_deals"):
        days = [lo + pd.Timedelta(days=i) for i in range(window_days)]
        read = store.sql.read
    else:
        return None
    frames = []
    for d in days:
        f = read("scores_deals", d)
        if len(f) and "p_won_90d" in f:
            frames.append(
                pd.DataFrame(
                    {
                        "opportunity_id": f["opportunity_id"],
                        "as_of": pd.Timestamp(d, tz="UTC"),
                        "p_won": f["p_won_90d"],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True) if frames else None


def _reference_weekday(model: Any) -> int | None:
    """The weekday (Monday 0) of the snapshots a champion's drift reference was built on."""
    meta = getattr(getattr(model, "bundle", None), "meta", None) or {}
    window = meta.get("reference_window")
    if not window or not window[-1]:
        return None
    return int(pd.Timestamp(window[-1]).weekday())


def _drift(
    model: Champion,
    features: pd.DataFrame,
    scores: pd.Series,
    warn: float,
    alert: float,
    *,
    unwatched: list[str] | tuple[str, ...] = (),
) -> pd.DataFrame:
    if not model.reference:
        return pd.DataFrame(columns=dr.DRIFT_COLUMNS)
    import json

    out = dr.drift_report(
        model.reference,
        features,
        model=model.name,
        scores=scores.to_numpy(),
        warn=warn,
        alert=alert,
        unwatched=unwatched,
    )
    # The training score percentiles (0..100) so the report can draw tonight's against them.
    pct = getattr(model, "score_percentiles", None)
    if pct is None:
        ref = model.reference.get(dr.SCORE)
        if isinstance(ref, dr.BinnedReference) and ref.edges:
            cdf = np.cumsum(ref.shares)[:-1]
            pct = np.interp(np.linspace(0, 1, 101), cdf, ref.edges).tolist()
    text = json.dumps([float(e) for e in pct or []])
    out["reference_percentiles"] = [text if k == "score" else None for k in out["kind"]]
    return out


# ------------------------------------------------------------------ champions


REASONS_PER_ROW = 3


def _trained_until(model: Any, data_end: pd.Timestamp | None = None) -> pd.Timestamp | None:
    """The last moment a champion's training read: the label cutoff its bundle records
    (``leadml train`` writes it), else its last training snapshot (the bundle's data
    window) plus the reach of its labels (readiness: the horizon; deal close: the
    hazard's weeks), since a snapshot's label reads the outcomes after it; no later than
    ``data_end``, the newest record there is (nothing after it was there to read)."""
    meta = getattr(getattr(model, "bundle", None), "meta", None) or {}
    if meta.get("label_cutoff"):
        return as_utc(meta["label_cutoff"], "label_cutoff")
    window = meta.get("data_window")
    if not window or len(window) != 2 or window[1] is None:
        return None
    end = as_utc(window[1], "data_window")
    reach = int((meta.get("spec") or {}).get("target", {}).get("horizon_days") or 0)
    hazard = getattr(model.bundle, "hazard", None) or {}
    if hazard.get("max_weeks") and hazard.get("week_days"):
        reach = max(reach, int(hazard["max_weeks"]) * int(hazard["week_days"]))
    until = end + pd.Timedelta(days=reach)
    return until if data_end is None else min(until, as_utc(data_end, "data end"))


class BundleChampion:
    """A registered scoring bundle (:class:`leadml.modeling.bundle.ScoringBundle`) seen
    through the :class:`Champion` interface.

    Deal-close probabilities for several horizons come from one hazard prediction per
    feature frame (cached), so the forecast, the fan chart and the deal scores cost one
    booster pass, not one per horizon.
    """

    def __init__(self, bundle: Any, version: str) -> None:
        self.bundle = bundle
        self.name = str(bundle.name)
        self.version = str(version)
        self.features = list(bundle.features)
        self.reference: Mapping[str, Any] | None = reference_from_bundle(bundle.reference)
        self.score_percentiles = [
            float(x) for x in (bundle.reference or {}).get("score_quantiles", [])
        ]
        bundle.model  # noqa: B018 - build the booster now, inside the load step
        self._hazard_cache: tuple[int, Any, Any] | None = None
        self.metrics: dict[str, float] = {}
        policy = ((getattr(bundle, "meta", None) or {}).get("spec") or {}).get("policy")
        self.slots_per_lead = float(PolicySpec.model_validate(policy or {}).slots_per_lead)

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        if not len(features):
            return np.zeros(0)
        if self.bundle.kind == "deal_close":
            return self.won_by(
                features, np.full(len(features), float(self.bundle.model.horizon_days))
            )
        return np.asarray(self.bundle.predict_proba(features), dtype="float64")

    def grade(self, probability: np.ndarray) -> np.ndarray | None:
        if not self.bundle.grade_cutoffs:
            return None
        from leadml.modeling.policy import grade

        return grade(probability, self.bundle.grade_cutoffs)

    def reasons(self, features: pd.DataFrame, quiet: Sequence[str] = ()) -> list[str]:
        found = self.bundle.explain(features, k=REASONS_PER_ROW, quiet=quiet)
        return ["; ".join(r["text"] for r in row["positive"]) or None for row in found]  # type: ignore[misc]

    @property
    def week_days(self) -> int:
        """The deal-close hazard's period length in days."""
        return int((self.bundle.hazard or {}).get("week_days", 7))

    def won_by(self, features: pd.DataFrame, horizon_days: np.ndarray) -> np.ndarray:
        import copy

        self.bundle.check_input(features)
        if not len(features):
            return np.zeros(0)
        model = self.bundle.model
        if self._hazard_cache is None or self._hazard_cache[0] != id(features):
            hazards = model.hazards(features)
            cached = copy.copy(model)
            cached.hazards = lambda _x, _h=hazards: _h  # one booster pass per frame
            self._hazard_cache = (id(features), features, cached)
        cached = self._hazard_cache[2]
        raw = cached.won_by_raw(features, np.asarray(horizon_days, dtype="float64"))
        return np.asarray(cached.calibrator.predict(raw), dtype="float64")


def reference_from_bundle(ref: Mapping[str, Any] | None) -> dict[str, dr.BinnedReference] | None:
    """The bundle's training reference (score quantiles, per-feature bins and shares) as
    :class:`~leadml.batch.drift.BinnedReference` per feature plus the score.

    Numeric bins in the bundle are ``[e_{i-1}, e_i)`` over inner edges, shares of all
    rows, plus the missing share; categorical shares include ``__missing__``. The score
    reference is the out-of-sample score's percentiles, binned at its deciles.
    """
    if not ref:
        return None
    out: dict[str, dr.BinnedReference] = {}
    for name, f in (ref.get("features") or {}).items():
        if f.get("type") == "categorical":
            shares = dict(f.get("shares") or {})
            missing = float(shares.pop("__missing__", 0.0))
            cats = list(shares)
            out[name] = dr.BinnedReference(
                name,
                "categorical",
                categories=cats,
                shares=[float(shares[c]) for c in cats] + [0.0],
                missing_share=missing,
            )
        else:
            out[name] = dr.BinnedReference(
                name,
                "numeric",
                edges=[float(e) for e in f.get("edges") or []],
                shares=[float(x) for x in f.get("shares") or [1.0]],
                missing_share=float(f.get("missing_share", 0.0)),
            )
    q = np.asarray(ref.get("score_quantiles") or [], dtype="float64")
    if len(q) >= 11:
        edges = np.unique(np.quantile(q, np.linspace(0.1, 0.9, 9)))
        # Each stored percentile carries 1/len(q) of the mass; binning them like tonight's
        # scores keeps ties (isotonic calibration gives step values) in the same bin.
        idx = np.searchsorted(edges, q, side="right")
        score_shares = np.bincount(idx, minlength=len(edges) + 1) / len(q)
        out[dr.SCORE] = dr.BinnedReference(
            dr.SCORE, "numeric", edges=edges.tolist(), shares=score_shares.tolist()
        )
    return out


def load_champions(settings: Settings) -> dict[str, Champion]:
    """The registry's ``@champion`` of both models (``models:/<name>@champion``)."""
    from leadml import tracking
    from leadml.modeling.bundle import ScoringBundle

    tracking.configure(settings)
    out: dict[str, Champion] = {}
    for name in (LEAD_MODEL, DEAL_MODEL):
        try:
            mv = tracking.client().get_model_version_by_alias(name, tracking.CHAMPION)
            version = mv.version
        except Exception:
            raise BatchError(
                f"no champion for {name} in the registry at {tracking.tracking_uri(settings)}; "
                "train and "
                "promote one first (`leadml train` then `leadml promote`), or run `leadml demo`"
            ) from None
        bundle = ScoringBundle.load(f"models:/{name}@{tracking.CHAMPION}")
        champ = BundleChampion(bundle, str(version))
        champ.metrics = _backtest_metrics(mv)
        out[name] = champ
    return out


HEALTH_METRICS = ("roc_auc", "pr_auc", "brier", "ece", "lift_top_decile", "precision_at_capacity")


def _backtest_metrics(model_version: Any) -> dict[str, float]:
    """The champion's logged backtest metrics (shown as its evidence in the report)."""
    from leadml import tracking

    try:
        logged = tracking.client().get_run(model_version.run_id).data.metrics
    except Exception:  # a registry without the run (copied models): no evidence shown
        return {}
    return {k: float(logged[k]) for k in HEALTH_METRICS if k in logged}
