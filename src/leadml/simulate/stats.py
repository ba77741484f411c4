"""Headline realism figures of a simulation, computed from what it generated."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from leadml.simulate import model as mdl

if TYPE_CHECKING:
    from leadml.simulate.engine import Simulation


def realism(sim: Simulation) -> dict[str, float]:
    """Funnel and sales-cycle figures (shares in [0, 1], days, counts).

    - mql_rate: share of leads that became MQL at least once;
    - mql_to_sql: SQLs per MQL episode; sql_per_lead: share of leads that became SQL;
    - win_rate: won / closed deals; median_cycle_days: created -> won, won deals;
    - recycled_share: share of leads recycled at least once; recycled_mql_share:
      share of MQL episodes of leads that had been recycled before;
    - is_utilisation: IS touches / (IS reps x weekly slots x weeks);
    - slippage_share: share of closed deals whose expected close date was pushed;
    - quarter_end_win_share: share of wins in the last two weeks of a quarter
      (quarter_end_week_share: share of weeks that are such weeks, for comparison).
    """
    from leadml.simulate.engine import LS, US

    s = sim.status_rows.get()
    n = sim.c.n_leads
    status = s["status"]
    lead = s["lead"]
    mql = status == LS["mql"]
    ever_mql = np.zeros(n, bool)
    ever_mql[lead[mql]] = True
    ever_sql = np.zeros(n, bool)
    ever_sql[lead[status == LS["sql"]]] = True
    recycled = status == LS["recycled"]
    ever_rec = np.zeros(n, bool)
    ever_rec[lead[recycled]] = True
    first_rec = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_rec, lead[recycled], s["ts"][recycled])
    rec_mql = float(np.mean(s["ts"][mql] > first_rec[lead[mql]])) if mql.any() else float("nan")

    d = sim.d
    won = d["state"] == mdl.WON
    closed = d["state"] >= mdl.WON
    cycle = (d["closed"][won] - d["created"][won]) / (86_400 * US)
    weeks = sim.T
    is_touches = int(sim.is_worked.sum()) * mdl.SLOTS_PER_WORKED_LEAD
    capacity = sim.n_is * sim.weekly_slots * weeks
    win_week = (d["closed"][won] - sim.mondays_us[0]) // (7 * 86_400 * US)
    qe = sim.kinds[:weeks] == 1
    return {
        "mql_rate": float(ever_mql.mean()),
        "mql_to_sql": float((status == LS["sql"]).sum() / max(1, mql.sum())),
        "sql_per_lead": float(ever_sql.mean()),
        "win_rate": float(won.sum() / max(1, closed.sum())),
        "median_cycle_days": float(np.median(cycle)) if len(cycle) else float("nan"),
        "recycled_share": float(ever_rec.mean()),
        "recycled_mql_share": rec_mql,
        "is_utilisation": float(is_touches / max(1, capacity)),
        "slippage_share": float(d["pushed"][closed].mean()) if closed.any() else float("nan"),
        "quarter_end_win_share": float(qe[win_week].mean()) if len(win_week) else float("nan"),
        "quarter_end_week_share": float(qe.mean()),
        "opportunities": float(len(d["lead"])),
        "won_amount": float(d["amount"][won].sum()),
    }
