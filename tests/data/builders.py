"""Small hand-made companies for tests: every canonical table as pandas frames.

``tiny_company(seed)`` draws a random but contract-valid company (a few accounts,
leads, events, status changes, opportunities with history, activities, reps). Times
sit on a coarse grid (whole hours of days from ``T0``) so that ties and records exactly
at an as-of time happen often, which is where point-in-time bugs hide.

``connect_frames(frames)`` checks the frames against the contracts and returns the
DuckDB connection with the typed views, like ``contracts.connect`` on files.

Reusable by any test: import ``from tests.data.builders import tiny_company``.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from leadml.config import Vocabulary
from leadml.contracts import connect
from leadml.sources import frames_source

T0 = pd.Timestamp("2025-01-06", tz="UTC")  # a Monday
VOCAB = Vocabulary()


@dataclass(frozen=True)
class Sizes:
    accounts: int = 3
    leads: int = 8
    events: int = 60
    status_changes: int = 14
    opportunities: int = 4
    history_rows: int = 14
    activities: int = 20
    days: int = 120


def grid_time(rng: np.random.Generator, n: int, days: int) -> pd.Series:
    """``n`` UTC timestamps at whole hours (mostly 00:00 and 09:00) within ``days`` of T0."""
    d = rng.integers(0, days, n)
    h = rng.choice([0, 0, 9, 13, 23], n)
    return pd.Series(T0 + pd.to_timedelta(d, unit="D") + pd.to_timedelta(h, unit="h")).dt.as_unit(
        "us"
    )


def tiny_company(
    seed: int, sizes: Sizes = Sizes(), vocab: Vocabulary = VOCAB
) -> dict[str, pd.DataFrame]:
    """A random contract-valid company; deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    n_acc, n_leads = sizes.accounts, sizes.leads
    accounts = pd.DataFrame(
        {
            "account_id": [f"A{i}" for i in range(n_acc)],
            "industry": rng.choice(["software", "retail", None], n_acc),
            "employees": rng.choice([10, 250, 5000], n_acc).astype("int64"),
            "country": rng.choice(["JP", "US"], n_acc),
            "segment": rng.choice(vocab.segments, n_acc),
            "created_at": T0 - pd.Timedelta(days=400),
        }
    )
    leads = pd.DataFrame(
        {
            "lead_id": [f"L{i}" for i in range(n_leads)],
            "account_id": rng.choice(accounts["account_id"], n_leads),
            "created_at": grid_time(rng, n_leads, sizes.days // 2),
            "source": rng.choice(["web", "seminar", "referral", None], n_leads),
            "job_level": rng.choice(["manager", "director", "staff"], n_leads),
        }
    )
    lead_ids = leads["lead_id"].to_numpy()
    n_ev = sizes.events
    etype = rng.choice(vocab.event_types, n_ev)
    cats = rng.choice(["pricing", "case_study", "docs", "blog"], n_ev)
    events = pd.DataFrame(
        {
            "lead_id": rng.choice(lead_ids, n_ev),
            "ts": grid_time(rng, n_ev, sizes.days),
            "type": etype,
            "page_category": np.where(etype == "page_view", cats, None),
            "campaign_id": rng.choice(["C1", "C2", "C3", None], n_ev),
        }
    )
    status = pd.DataFrame(
        {
            "lead_id": rng.choice(lead_ids, sizes.status_changes),
            "ts": grid_time(rng, sizes.status_changes, sizes.days),
            "status": rng.choice(vocab.lead_statuses, sizes.status_changes),
        }
    )
    reps = pd.DataFrame(
        {
            "rep_id": ["R0", "R1", "R2"],
            "role": ["IS", "FS", "FS"],
            "team": ["is", "fs", "fs"],
            "segment": [None, "smb", "enterprise"],
            "weekly_slots": [80, 80, 80],
        }
    )
    n_opp = sizes.opportunities
    opp_leads = rng.choice(lead_ids, n_opp)
    lead_acc = dict(zip(leads["lead_id"], leads["account_id"], strict=True))
    opportunities = pd.DataFrame(
        {
            "opportunity_id": [f"O{i}" for i in range(n_opp)],
            "account_id": [lead_acc[x] for x in opp_leads],
            "lead_id": opp_leads,
            "owner_id": rng.choice(["R1", "R2"], n_opp),
            "created_at": grid_time(rng, n_opp, sizes.days // 2),
            "amount": rng.choice([1000.0, 2500.5, 10000.0], n_opp),
            "segment": rng.choice(vocab.segments, n_opp),
        }
    )
    n_h = sizes.history_rows
    hist_opp = rng.choice(opportunities["opportunity_id"], n_h)
    history = pd.DataFrame(
        {
            "opportunity_id": hist_opp,
            "ts": grid_time(rng, n_h, sizes.days),
            "stage": rng.choice(vocab.stages, n_h, p=_stage_p(vocab)),
            "amount": rng.choice([1000.0, 2500.5, 10000.0, 12000.25], n_h),
            "expected_close_date": (
                T0 + pd.to_timedelta(rng.integers(20, 200, n_h), unit="D")
            ).as_unit("us"),
        }
    )
    n_act = sizes.activities
    on_opp = rng.random(n_act) < 0.5
    activities = pd.DataFrame(
        {
            "ts": grid_time(rng, n_act, sizes.days),
            "rep_id": rng.choice(reps["rep_id"], n_act),
            "lead_id": np.where(on_opp, None, rng.choice(lead_ids, n_act)),
            "opportunity_id": np.where(
                on_opp, rng.choice(opportunities["opportunity_id"], n_act), None
            ),
            "type": rng.choice(vocab.activity_types, n_act),
        }
    )
    return {
        "accounts": accounts,
        "leads": leads,
        "events": events,
        "lead_status_history": status,
        "reps": reps,
        "opportunities": opportunities,
        "opportunity_history": history,
        "activities": activities,
    }


def _stage_p(vocab: Vocabulary) -> list[float]:
    n_open = len(vocab.open_stages)
    return [0.8 / n_open] * n_open + [0.1, 0.1]


def connect_frames(
    frames: dict[str, pd.DataFrame], vocab: Vocabulary = VOCAB
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the checked, typed views of ``frames``."""
    con, _ = connect(frames_source(frames), vocab)
    return con


_DUCK = {
    "id": "VARCHAR",
    "str": "VARCHAR",
    "timestamp": "TIMESTAMPTZ",
    "float": "DOUBLE",
    "int": "BIGINT",
}


def fast_connect(frames: dict[str, pd.DataFrame]) -> duckdb.DuckDBPyConnection:
    """Typed views over frames that are already valid (as ``tiny_company`` makes them),
    without the contract checks: for property tests that build hundreds of companies."""
    from leadml.contracts import TABLES

    con = duckdb.connect(config={"threads": 1})  # tiny tables: one thread plans and runs fastest
    con.execute("SET TimeZone = 'UTC'")
    for name, df in frames.items():
        con.register(f"raw_{name}", df)
        table = TABLES[name]
        cols = ", ".join(
            f"CAST({c.name} AS {_DUCK[c.kind]}) AS {c.name}"
            if c.name in df.columns
            else f"CAST(NULL AS {_DUCK[c.kind]}) AS {c.name}"
            for c in table.columns
        )
        con.execute(f"CREATE TEMP VIEW {name} AS SELECT {cols} FROM raw_{name}")
    return con
