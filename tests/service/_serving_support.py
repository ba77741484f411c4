"""Real champions for the service tests (no stub models anywhere).

:func:`champions` simulates a small THE MODEL company, builds point-in-time training
sets with the offline engine, trains tiny LightGBM models through the modelling
API (:func:`leadml.modeling.train.train`), logs and registers them in a temporary
MLflow store (:func:`leadml.tracking.log_training`), promotes them to ``champion``
and imports them into a temporary BentoML home (:mod:`leadml.serving.store`). The
work is done once per test session (a marker file in pytest's base temp folder),
whichever service test module asks first.

It also turns rows of the simulated tables into API payloads (``lead_json`` /
``deal_json``): the records of one entity with ``ts < as_of``, exactly as a CRM
would send them, so that the parity tests can compare the API with the offline
engine on the full tables.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CHAMPIONS_DIR = "leadml_serving_champions"
SIM_LEADS = 300


@dataclass(frozen=True)
class Champions:
    base: Path
    workspace: Path
    data: Path
    mlflow_uri: str
    bentoml_home: Path
    versions: dict[str, str]
    parity: dict[str, Any]

    def env(self) -> dict[str, str]:
        """Environment of a process that serves these champions."""
        return {
            "LEADML_WORKSPACE": str(self.workspace),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "BENTOML_HOME": str(self.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "True",
        }


def point_bentoml(home: Path) -> None:
    """Point this process's BentoML at ``home`` even if BentoML already cached another
    (its stores are process-wide singletons)."""
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    os.environ["BENTOML_HOME"] = str(home)
    for sub in ("bentos", "models", "envs", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.model_store.set(ModelStore(str(home / "models")))
    BentoMLContainer.bento_store.set(BentoStore(str(home / "bentos")))
    BentoMLContainer.tmp_bento_store.set(BentoStore(str(home / "tmp")))


def _small(kind: str, features: list[str]) -> Any:
    from leadml.modeling.spec import ModelSpec

    estimator = {
        "num_boost_round": 25,
        "early_stopping_rounds": 0,
        "params": {
            "learning_rate": 0.1,
            "num_leaves": 7,
            "min_data_in_leaf": 10,
            "num_threads": 1,
            "verbose": -1,
        },
    }
    common = {
        "features": features,
        "min_positives": 5,
        "estimator": estimator,
        "baseline": {"max_iter": 50},
        "calibration": {"holdout_days": 28},
        "every_days": 14,
    }
    if kind == "lead_readiness":
        return ModelSpec(
            name="lead_readiness",
            kind=kind,
            **common,
            backtest={"origins": 1, "gap_days": 30, "test_days": 28},
        )
    return ModelSpec(
        name="deal_close",
        kind=kind,
        **{**common, "calibration": {"holdout_days": 112}},
        backtest={"origins": 1, "gap_days": 0, "test_days": 28},
        target={"horizon_days": 60, "max_weeks": 26, "eval_horizons_days": [30, 60]},
    )


def _build(base: Path) -> Champions:
    from leadml import tracking
    from leadml.config import SimulatorConfig, load_settings
    from leadml.contracts import connect
    from leadml.features.catalog import load_catalog
    from leadml.features.datasets import deal_close_dataset, lead_readiness_dataset
    from leadml.modeling.train import train
    from leadml.serving.store import import_champions
    from leadml.simulate import simulate

    workspace = base / "workspace"
    uri = f"sqlite:///{base / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["LEADML_WORKSPACE"] = str(workspace)
    point_bentoml(base / "bentoml")
    settings = load_settings()
    data = workspace / "data"
    simulate(
        SimulatorConfig(leads=SIM_LEADS, start="2024-01-01", end="2024-10-31", seed=5),
        settings.vocabulary,
        data,
    )
    con, _ = connect(data, settings.vocabulary)
    catalog = load_catalog(settings.config_file("features.yaml"), settings.vocabulary)
    lead_df, _ = lead_readiness_dataset(con, catalog, every_days=14)
    deal_df, _ = deal_close_dataset(con, catalog, every_days=14)
    con.close()
    tracking.configure(settings)
    versions = {}
    for kind, df, entity in (
        ("lead_readiness", lead_df, "lead"),
        ("deal_close", deal_df, "opportunity"),
    ):
        result = train(df, _small(kind, catalog.names(entity)))
        logged = tracking.log_training(
            result,
            settings,
            templates=catalog.labels(entity),
            catalog=catalog.model_dump(mode="json"),
        )
        tracking.promote(kind, logged.version, force=True, reason="service test fixture")
        versions[kind] = str(logged.version)
    import_champions(settings)
    parity = _parity_sample(data, settings)
    return Champions(base, workspace, data, uri, base / "bentoml", versions, parity)


def _keep_mlflow_uris() -> tuple[Any, Any]:
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._tracking_uri, registry_utils._registry_uri


def _restore_mlflow_uris(saved: tuple[Any, Any]) -> None:
    """Undo ``tracking.configure`` (it pins process-wide URIs; later tests of the
    session rely on their own ``MLFLOW_TRACKING_URI``)."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking_utils._tracking_uri, registry_utils._registry_uri = saved


def module_champions(basetemp: Path) -> Champions:
    """:func:`champions`, with the variables its build sets restored when it is done."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_URI", "LEADML_WORKSPACE", "BENTOML_HOME"):
            mp.setenv(key, "")
        return champions(basetemp)


def champions(basetemp: Path) -> Champions:
    """The session's champions (built on first call). ``LEADML_TEST_CHAMPIONS=<dir>``
    keeps them in that folder across sessions (a local speed-up while developing)."""
    kept = os.environ.get("LEADML_TEST_CHAMPIONS")
    base = Path(kept) if kept else basetemp / CHAMPIONS_DIR
    marker = base / "champions.json"
    if not marker.exists():
        base.mkdir(parents=True, exist_ok=True)
        saved = _keep_mlflow_uris()
        try:
            built = _build(base)
        finally:
            _restore_mlflow_uris(saved)
        marker.write_text(json.dumps({"versions": built.versions, "parity": built.parity}))
    saved = json.loads(marker.read_text())
    return Champions(
        base,
        base / "workspace",
        base / "workspace" / "data",
        f"sqlite:///{base / 'mlflow.db'}",
        base / "bentoml",
        saved["versions"],
        saved["parity"],
    )


# ---------------------------------------------------------------- payloads


def _iso(ts: Any) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").isoformat()


def _none(v: Any) -> Any:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _before(df: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    return df[df["ts"] < as_of] if len(df) else df


def _account_json(row: dict[str, Any] | None, as_of: pd.Timestamp) -> dict[str, Any] | None:
    if row is None:
        return None
    created = row.get("created_at")
    return {
        "account_id": row["account_id"],
        "industry": _none(row.get("industry")),
        "employees": None if _none(row.get("employees")) is None else int(row["employees"]),
        "country": _none(row.get("country")),
        "segment": _none(row.get("segment")),
        "created_at": _iso(created) if _none(created) is not None and created < as_of else None,
    }


def _closed_json(df: pd.DataFrame, as_of: pd.Timestamp) -> list[dict[str, Any]]:
    df = _before(df, as_of)
    return [
        {
            "opportunity_id": r["opportunity_id"],
            "closed_at": _iso(r["ts"]),
            "stage": r["stage"],
            "amount": float(r["amount"]),
        }
        for r in df.to_dict("records")
    ]


def lead_json(
    tables: dict[str, pd.DataFrame], catalog: Any, lead_id: str, as_of: pd.Timestamp
) -> dict[str, Any]:
    """The lead's records before ``as_of`` as a /score_leads lead."""
    from leadml.features.online import entity_payload

    p = entity_payload(tables, catalog, "lead", lead_id)
    lead = p["lead"]
    ev = _before(p["events"], as_of)
    others = _before(p["account_events"], as_of)
    others = others[others["lead_id"] != lead_id]

    def event(r: dict[str, Any], with_lead: bool) -> dict[str, Any]:
        out = {
            "ts": _iso(r["ts"]),
            "type": r["type"],
            "page_category": _none(r["page_category"]),
            "campaign_id": _none(r["campaign_id"]),
        }
        return {**out, "lead_id": r["lead_id"]} if with_lead else out

    return {
        "lead_id": lead_id,
        "created_at": _iso(lead["created_at"]),
        "source": _none(lead["source"]),
        "job_level": _none(lead["job_level"]),
        "account": _account_json(p["account"], as_of),
        "events": [event(r, False) for r in ev.to_dict("records")],
        "status_history": [
            {"ts": _iso(r["ts"]), "status": r["status"]}
            for r in _before(p["status_history"], as_of).to_dict("records")
        ],
        "activities": [
            {"ts": _iso(r["ts"]), "type": r["type"], "rep_id": _none(r["rep_id"])}
            for r in _before(p["activities"], as_of).to_dict("records")
        ],
        "account_events": [event(r, True) for r in others.to_dict("records")],
        "account_deals": _closed_json(p["account_closed_deals"], as_of),
    }


def deal_json(
    tables: dict[str, pd.DataFrame], catalog: Any, opportunity_id: str, as_of: pd.Timestamp
) -> dict[str, Any]:
    """The deal's records before ``as_of`` as a /score_deals deal."""
    from leadml.features.online import entity_payload

    p = entity_payload(tables, catalog, "opportunity", opportunity_id)
    opp = p["opportunity"]
    hist = _before(p["history"], as_of)
    return {
        "opportunity_id": opportunity_id,
        "account_id": opp["account_id"],
        "owner_id": opp["owner_id"],
        "lead_id": _none(opp.get("lead_id")),
        "created_at": _iso(opp["created_at"]),
        "segment": opp["segment"],
        "account": _account_json(p["account"], as_of),
        "stage_history": [
            {
                "ts": _iso(r["ts"]),
                "stage": r["stage"],
                "amount": float(r["amount"]),
                "expected_close_date": _iso(r["expected_close_date"]),
            }
            for r in hist.to_dict("records")
        ],
        "activities": [
            {"ts": _iso(r["ts"]), "type": r["type"], "rep_id": _none(r["rep_id"])}
            for r in _before(p["activities"], as_of).to_dict("records")
        ],
        "owner_deals": _closed_json(p["owner_closed_deals"], as_of),
        "account_deals": _closed_json(p["account_closed_deals"], as_of),
    }


def _parity_sample(data: Path, settings: Any) -> dict[str, Any]:
    """A few (lead, as_of) and (open deal, as_of) pairs with their payloads."""
    from leadml.contracts import load_tables
    from leadml.features.catalog import load_catalog

    tables = load_tables(data, settings.vocabulary)
    catalog = load_catalog(settings.config_file("features.yaml"), settings.vocabulary)
    as_of = pd.Timestamp("2024-09-02", tz="UTC")
    ev = tables["events"]
    active = ev[(ev["ts"] < as_of) & (ev["ts"] >= as_of - pd.Timedelta(days=60))]
    lead_ids = list(active["lead_id"].value_counts().index[:6])
    leads = [lead_json(tables, catalog, lid, as_of) for lid in lead_ids]
    hist = tables["opportunity_history"]
    before = hist[hist["ts"] < as_of].sort_values("ts").groupby("opportunity_id").tail(1)
    open_ids = list(
        before.loc[before["stage"].isin(settings.vocabulary.open_stages), "opportunity_id"]
    )[:5]
    deals = [deal_json(tables, catalog, oid, as_of) for oid in open_ids]
    return {"as_of": as_of.isoformat(), "leads": leads, "deals": deals}


def as_mqls(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` with every lead an MQL since its creation: all of them compete for the
    inside-sales slots of /handoff (leads in other statuses are not_eligible)."""
    out = copy.deepcopy(request)
    for lead in out["leads"]:
        lead["status_history"] = [{"ts": lead["created_at"], "status": "mql"}]
    return out
