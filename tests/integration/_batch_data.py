"""A small THE MODEL company written to a folder, and stand-in champions, for the batch tests.

The company is generated here (not by the simulator) so that the batch tests control
exactly what is open at the as-of date: a few hundred leads, four IS reps in two
segments, field-sales deals in every stage, targets per quarter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadml.batch.drift import build_reference

START = pd.Timestamp("2024-07-01", tz="UTC")
END = pd.Timestamp("2025-06-30", tz="UTC")
OPEN_STAGES = ["follow_up", "problem_recognised", "evaluation", "negotiation", "approval"]


def make_company(folder: Path, n_leads: int = 400, seed: int = 11) -> Path:
    """Write the canonical tables as Parquet files into ``folder``; returns it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    span = (END - START).total_seconds()

    def when(n: int, lo: pd.Timestamp | np.ndarray = START) -> pd.Series:
        lo_s = (
            (pd.Series(lo) - START).dt.total_seconds().to_numpy()
            if not isinstance(lo, pd.Timestamp)
            else 0.0
        )
        sec = lo_s + rng.uniform(0, 1, n) * (span - lo_s)
        return START + pd.to_timedelta(np.floor(sec), unit="s")

    n_acc = max(n_leads // 8, 5)
    accounts = pd.DataFrame(
        {
            "account_id": [f"A{i:04d}" for i in range(n_acc)],
            "industry": rng.choice(["software", "manufacturing", "retail"], n_acc),
            "employees": rng.integers(10, 5000, n_acc),
            "country": rng.choice(["JP", "US"], n_acc),
            "segment": rng.choice(["enterprise", "smb"], n_acc),
            "created_at": START - pd.Timedelta(days=30),
        }
    )
    lead_created = when(n_leads)
    leads = pd.DataFrame(
        {
            "lead_id": [f"L{i:05d}" for i in range(n_leads)],
            "account_id": rng.choice(accounts["account_id"], n_leads),
            "created_at": lead_created,
            "source": rng.choice(["web", "seminar", "referral"], n_leads),
            "job_level": rng.choice(["manager", "director", "staff"], n_leads),
        }
    )
    intent = rng.uniform(0, 1, n_leads)

    ev_n = rng.poisson(2 + 10 * intent)
    ev_lead = np.repeat(np.arange(n_leads), ev_n)
    events = pd.DataFrame(
        {
            "lead_id": leads["lead_id"].to_numpy()[ev_lead],
            "ts": when(len(ev_lead), lead_created.to_numpy()[ev_lead]).to_numpy(),
            "type": rng.choice(
                ["web_visit", "page_view", "email_open", "form_submit"], len(ev_lead)
            ),
            "page_category": rng.choice(["pricing", "blog", None], len(ev_lead)),
            "campaign_id": None,
        }
    )

    status_rows = []
    outcome = np.full(n_leads, "nurturing", dtype=object)
    for i in range(n_leads):
        lid, t0 = leads.at[i, "lead_id"], leads.at[i, "created_at"]
        status_rows.append((lid, t0, "lead"))
        t = t0 + pd.Timedelta(days=int(rng.integers(1, 20)))
        status_rows.append((lid, t, "nurturing"))
        if rng.uniform() < 0.3 + 0.5 * intent[i]:
            t += pd.Timedelta(days=int(rng.integers(3, 60)))
            status_rows.append((lid, t, "mql"))
            outcome[i] = "mql"
            r = rng.uniform()
            if r < 0.3 * intent[i] + 0.05:
                t += pd.Timedelta(days=int(rng.integers(2, 20)))
                status_rows.append((lid, t, "sql"))
                outcome[i] = "sql"
            elif r < 0.5:
                t += pd.Timedelta(days=int(rng.integers(2, 20)))
                status_rows.append((lid, t, "recycled"))
                outcome[i] = "recycled"
        outcome_ts = t
        leads.at[i, "_outcome_ts"] = outcome_ts
    status = pd.DataFrame(status_rows, columns=["lead_id", "ts", "status"])

    reps = pd.DataFrame(
        {
            "rep_id": ["is_e1", "is_e2", "is_s1", "is_s2", "fs_e1", "fs_s1", "fs_s2"],
            "role": ["IS"] * 4 + ["FS"] * 3,
            "team": ["is-enterprise"] * 2 + ["is-smb"] * 2 + ["fs-enterprise", "fs-smb", "fs-smb"],
            "segment": ["enterprise", "enterprise", "smb", "smb", "enterprise", "smb", "smb"],
            "weekly_slots": [12, 8, 10, 6, 80, 80, 80],
        }
    )

    seg_of = leads["account_id"].map(accounts.set_index("account_id")["segment"])
    opp_rows, hist_rows = [], []
    for i in np.flatnonzero(outcome == "sql"):
        oid = f"O{i:05d}"
        seg = seg_of.iloc[i]
        owner = "fs_e1" if seg == "enterprise" else rng.choice(["fs_s1", "fs_s2"])
        t = pd.Timestamp(leads.at[i, "_outcome_ts"])
        amount = float(rng.choice([5_000, 20_000, 80_000]))
        opp_rows.append(
            (oid, leads.at[i, "account_id"], leads.at[i, "lead_id"], owner, t, amount, seg)
        )
        close = (t + pd.Timedelta(days=int(rng.integers(30, 120)))).normalize()
        for stage in OPEN_STAGES:
            hist_rows.append((oid, t, stage, amount, close))
            t += pd.Timedelta(days=int(rng.integers(5, 40)))
            if rng.uniform() < 0.12:
                hist_rows.append((oid, t, "closed_lost", amount, close))
                break
            if rng.uniform() < 0.1:
                close += pd.Timedelta(days=30)
        else:
            hist_rows.append(
                (oid, t, "closed_won" if rng.uniform() < 0.6 else "closed_lost", amount, close)
            )
    opportunities = pd.DataFrame(
        opp_rows,
        columns=[
            "opportunity_id",
            "account_id",
            "lead_id",
            "owner_id",
            "created_at",
            "amount",
            "segment",
        ],
    )
    opp_hist = pd.DataFrame(
        hist_rows, columns=["opportunity_id", "ts", "stage", "amount", "expected_close_date"]
    )
    opp_hist = opp_hist[opp_hist["ts"] < END]

    mql = status[status["status"].isin(["mql", "recycled"])]
    act_rows = []
    for lid, ts in zip(mql["lead_id"], mql["ts"], strict=True):
        seg = seg_of.iloc[int(lid[1:])]
        rep = rng.choice(["is_e1", "is_e2"] if seg == "enterprise" else ["is_s1", "is_s2"])
        for k in range(int(rng.integers(1, 4))):
            act_rows.append((ts + pd.Timedelta(hours=4 + 30 * k), rep, lid, None, "call"))
    for oid, owner in zip(opportunities["opportunity_id"], opportunities["owner_id"], strict=True):
        t0 = opportunities.set_index("opportunity_id").at[oid, "created_at"]
        act_rows.append((t0 + pd.Timedelta(days=2), owner, None, oid, "meeting"))
    activities = pd.DataFrame(
        act_rows, columns=["ts", "rep_id", "lead_id", "opportunity_id", "type"]
    )
    activities = activities[activities["ts"] < END]

    q = pd.date_range("2024-07-01", "2026-01-01", freq="QS", tz="UTC")
    targets = pd.DataFrame(
        {
            "period_start": q[:-1],
            "period_end": q[1:],
            "team": None,
            "segment": None,
            "amount": 250_000.0,
        }
    )
    for name, df in {
        "accounts": accounts,
        "leads": leads.drop(columns=["_outcome_ts"]),
        "events": events,
        "lead_status_history": status,
        "reps": reps,
        "opportunities": opportunities,
        "opportunity_history": opp_hist,
        "activities": activities,
        "targets": targets,
    }.items():
        df.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


# ------------------------------------------------------------------ champions


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class StandInChampion:
    """A transparent scorer with the champion interface: a logistic score on the
    first numeric features, grades by probability, reasons naming the strongest
    feature. Batch mechanics (publishing, idempotency, call list, drift) do not
    depend on what the model learned, only on this interface."""

    name: str
    id_column: str
    features: list[str]
    version: str = "7"
    reference: Mapping[str, Any] | None = None
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slots_per_lead: float = 2.0

    def _z(self, frame: pd.DataFrame) -> np.ndarray:
        x = frame[self.features].astype("float64").fillna(0.0).to_numpy()
        x = np.log1p(np.abs(x))
        return x @ self.weights - 2.0

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return _sigmoid(self._z(features))

    def grade(self, probability: np.ndarray) -> np.ndarray:
        return np.select(
            [probability >= 0.5, probability >= 0.2, probability >= 0.05], ["A", "B", "C"], "D"
        )

    def reasons(self, features: pd.DataFrame, quiet: Sequence[str] = ()) -> list[str]:
        shown = [f for f in self.features if f not in quiet]
        if not shown:
            return [""] * len(features)
        top = np.asarray(shown)[np.argmax(features[shown].fillna(0).to_numpy(), axis=1)]
        return [f"high {t}" for t in top]

    def won_by(self, features: pd.DataFrame, horizon_days: np.ndarray) -> np.ndarray:
        weekly = _sigmoid(self._z(features)) * 0.1
        return 1.0 - (1.0 - weekly) ** (np.asarray(horizon_days, dtype="float64") / 7.0)


def stand_in_champions(data: Path, train_as_of: str = "2025-03-03") -> dict[str, StandInChampion]:
    """Champions whose drift reference comes from features as of ``train_as_of``."""
    from leadml.config import Vocabulary, load_settings
    from leadml.contracts import connect
    from leadml.features.catalog import load_catalog
    from leadml.features.offline import compute_features

    settings = load_settings()
    catalog = load_catalog(settings.config_file("features.yaml"), Vocabulary())
    con, _ = connect(data, Vocabulary())
    t = pd.Timestamp(train_as_of, tz="UTC")
    try:
        out = {}
        for name, entity, table, id_col in (
            ("lead_readiness", "lead", "leads", "lead_id"),
            ("deal_close", "opportunity", "opportunities", "opportunity_id"),
        ):
            ids = con.execute(f"SELECT {id_col} FROM {table} WHERE created_at < $t", {"t": t}).df()
            frame = compute_features(con, catalog, entity, ids.assign(as_of=t))
            numeric = [c for c in frame.columns[2:] if pd.api.types.is_numeric_dtype(frame[c])][:6]
            weights = np.linspace(0.6, 0.1, len(numeric))
            champ = StandInChampion(name, id_col, numeric, weights=weights)
            champ.reference = build_reference(frame, numeric, scores=champ.predict(frame))
            out[name] = champ
        return out
    finally:
        con.close()
