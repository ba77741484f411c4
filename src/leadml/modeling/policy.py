"""The inside-sales hand-off policy: which leads get IS's slots this week.

Inputs are calibrated readiness probabilities (so ``sum(p)`` over the called
leads is the expected number of new opportunities) and IS capacity in slots.
Outputs one decision per lead: ``handoff`` (call this week), ``nurture`` (keep
in marketing) or ``recycle`` (eligible to go back to the recycle pool: readiness
under the spec's ``recycle_below``), with its grade A-D.

Ties: calibrated readiness takes few distinct values (isotonic calibration), so many
leads often share one. Leads of equal readiness are ordered by ``lead_id`` (the
``ties`` columns), as the nightly call list (:mod:`leadml.batch.calllist`) orders
them, never by the order they were sent in: the API and the batch hand off the
same leads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from leadml.modeling.spec import PolicySpec

DECISIONS = ("handoff", "nurture", "recycle")
# Columns that break ties in the ranking, ascending, when the scores have them.
TIES = ("lead_id",)


def free_slots(reps: pd.DataFrame | None, policy: PolicySpec, booked_slots: float = 0.0) -> float:
    """IS slots free this week: IS reps x weekly slots minus slots already booked.

    Without a reps table (or IS reps) capacity is ``capacity_per_week`` leads
    times ``slots_per_lead``.
    """
    if reps is None or reps.empty or "role" not in reps.columns or not (reps["role"] == "IS").any():
        total = policy.capacity_per_week * policy.slots_per_lead
    else:
        is_reps = reps[reps["role"] == "IS"]
        total = (
            float(is_reps["weekly_slots"].fillna(80).sum())
            if "weekly_slots" in is_reps
            else 80.0 * len(is_reps)
        )
    return max(0.0, float(total) - float(booked_slots))


def lead_capacity(reps: pd.DataFrame | None, policy: PolicySpec, booked_slots: float = 0.0) -> int:
    """How many leads IS can take this week (free slots / slots per lead)."""
    return int(math.floor(free_slots(reps, policy, booked_slots) / policy.slots_per_lead + 1e-9))


def grade(p: np.ndarray | pd.Series, cutoffs: Mapping[Any, float]) -> np.ndarray:
    """A / B / C / D from calibrated probabilities (>= cut-off A is A, ...)."""
    p = np.asarray(p, dtype=float)
    return np.select(
        [p >= cutoffs["A"], p >= cutoffs["B"], p >= cutoffs["C"]], ["A", "B", "C"], "D"
    )


def _probability_column(scores: pd.DataFrame, given: str | None) -> str:
    """The calibrated probability column: ``given``, else ``readiness`` or ``probability``."""
    candidates = [given] if given else ["readiness", "probability"]
    for name in candidates:
        if name in scores.columns:
            return str(name)
    raise ValueError(
        f"scores have no {' or '.join(map(repr, candidates))} column (columns: "
        f"{', '.join(map(str, scores.columns))}); pass probability= naming the calibrated "
        "readiness column"
    )


def best_first(value: np.ndarray, scores: pd.DataFrame, ties: Sequence[str] = TIES) -> np.ndarray:
    """Row positions of ``scores`` by ``value`` descending; equal values by the ``ties``
    columns that ``scores`` has (ascending, e.g. ``lead_id``), so that the order does
    not depend on the order of the rows (only rows equal in every key keep it)."""
    value = np.asarray(value, dtype=float)
    keys = pd.DataFrame({"_value": -value})
    present = [c for c in ties if c in scores.columns]
    for i, c in enumerate(present):
        keys[f"_tie{i}"] = scores[c].to_numpy()
    if not present:
        return np.argsort(-value, kind="stable")
    ordered = keys.reset_index(drop=True).sort_values(list(keys.columns), kind="stable")
    return ordered.index.to_numpy()


def handoff(
    scores: pd.DataFrame,
    capacity_slots: float,
    policy: PolicySpec,
    *,
    probability: str | None = None,
    slots: str | None = None,
    ties: Sequence[str] = TIES,
) -> pd.DataFrame:
    """Fill IS capacity where expected conversions are highest.

    ``scores`` has one row per open lead with a calibrated ``probability`` column
    (default ``readiness``, else ``probability`` as ``ScoringBundle.score`` returns)
    and optionally a per-lead ``slots`` column: slots the lead needs, default
    ``policy.slots_per_lead``. Leads are taken in order of expected conversions
    per slot while the slots last; equal ones by the ``ties`` columns present
    (default ``lead_id``, as the nightly call list), whatever the order of the rows.
    Returns ``scores`` plus ``rank``, ``grade``, ``decision`` and
    ``expected_conversions`` (the probability if handed off, else 0).
    """
    out = scores.copy()
    p = out[_probability_column(out, probability)].to_numpy(dtype=float)
    need = out[slots].to_numpy(dtype=float) if slots else np.full(len(out), policy.slots_per_lead)
    order = best_first(p / need, out, ties)
    taken = np.zeros(len(out), dtype=bool)
    if slots is None:  # equal needs: the best prefix that fits
        fits = np.cumsum(need[order]) <= capacity_slots + 1e-9
        taken[order[fits]] = True
    else:  # greedy by conversions per slot, skipping leads that no longer fit
        used = 0.0
        for i in order:
            if used + need[i] <= capacity_slots + 1e-9:
                taken[i] = True
                used += need[i]
    out["rank"] = np.empty(len(out), dtype=int)
    out.loc[out.index[order], "rank"] = np.arange(1, len(out) + 1)
    out["grade"] = grade(p, policy.grade_cutoffs)
    out["decision"] = np.where(
        taken, "handoff", np.where(p < policy.recycle_below, "recycle", "nurture")
    )
    out["expected_conversions"] = np.where(taken, p, 0.0)
    return out


def handoff_at_precision(
    scores: pd.DataFrame,
    target_precision: float,
    policy: PolicySpec,
    *,
    probability: str | None = None,
    ties: Sequence[str] = TIES,
) -> pd.DataFrame:
    """Hand off the largest set of best-scored leads whose expected precision
    (mean calibrated probability) stays at or above ``target_precision`` (ties as
    :func:`handoff`)."""
    out = scores.copy()
    p = out[_probability_column(out, probability)].to_numpy(dtype=float)
    order = best_first(p, out, ties)
    running = np.cumsum(p[order]) / np.arange(1, len(p) + 1)
    ok = np.nonzero(running >= target_precision)[0]
    n = int(ok.max()) + 1 if len(ok) else 0
    taken = np.zeros(len(out), dtype=bool)
    taken[order[:n]] = True
    out["rank"] = np.empty(len(out), dtype=int)
    out.loc[out.index[order], "rank"] = np.arange(1, len(out) + 1)
    out["grade"] = grade(p, policy.grade_cutoffs)
    out["decision"] = np.where(
        taken, "handoff", np.where(p < policy.recycle_below, "recycle", "nurture")
    )
    out["expected_conversions"] = np.where(taken, p, 0.0)
    return out
