"""Exact ground-truth probabilities of the simulated company (the oracle).

The functions here evaluate the generative model of :mod:`leadml.simulate.model` exactly
(finite Markov chains, no sampling, no re-estimation):

* :func:`lead_truth_table` gives, for every lead type and hidden state at an as-of
  Monday ``M_w``, P(the lead becomes SQL / an opportunity in ``(M_w, M_w + 30 days]``).
  A lead worked by IS in week ``t`` converts on a weekday drawn uniformly from
  Monday..Friday, so weeks ``w..w+3`` count fully and week ``w+4`` counts with
  weight 2/5 (its Monday and Tuesday end before ``M_w + 30 days``).

  IS capacity enters through the chance that IS works the lead in a week if it is
  queued (:func:`service_probabilities`): IS takes the priority classes in order and a
  uniform random subset within a class, so with ``n_o`` *other* leads queued in the
  lead's segment and class and ``left`` slots (in leads) left for that class, the
  chance is exactly ``min(n_o + 1, left) / (n_o + 1)``. The truth conditions on the
  realised ``(n_o, left)`` of the five weeks, which are aggregates of the other leads.
  What this leaves out, and the honest size of it: the lead's account colleagues
  (a buying committee shares the account's buying cycle) tend to sit in the same
  queue in the same weeks as the lead, so in the paths where the lead is queued the
  queue is a little longer than the realised average the truth conditions on. The
  truth is therefore slightly optimistic where capacity binds: realised SQLs / sum
  of truth was 0.955-1.00 (mean 0.98) over five seeds at 20,000 leads and 0.99 at
  100,000; with one lead per account, or with capacity that never binds, it is 1.00
  within sampling error. (A slot the lead itself takes keeping another lead queued
  later is second order and smaller still.) Everything else is exact.
* :func:`deal_truth_tables` gives, for every segment, quality, week and hidden deal
  state, P(the deal is won in a week that starts before a quarter boundary ``E``),
  which is P(won at a time < E): a deal won in the week that contains ``E`` is booked
  on a weekday before ``E`` when there is one (reps pull deals into the quarter).
* :func:`deal_rolling_table` gives the same for the rolling end ``M_w + 13 weeks``
  (:data:`DEAL_HORIZON_WEEKS`): a deal is won on a weekday of its week, so P(won in
  weeks ``w..w+12``) is P(won within 90 days of ``M_w``), the deal-close model's
  headline question, and the oracle can be judged on the model's own rows and labels.
"""

from __future__ import annotations

import numpy as np

from leadml.simulate import model as mdl

HORIZON_WEEKS = 5
LAST_WEEK_WEIGHT = 2.0 / 5.0
# P(won within 90 days) of a deal open at a Monday = P(won in its next 13 weekly steps):
# wins fall on weekdays, so a win in week w+12 is at most 89 days after M_w.
DEAL_HORIZON_WEEKS = 13


def lead_truth_table(q: np.ndarray, season: np.ndarray) -> np.ndarray:
    """P(SQL within 30 days) by lead type, (a, i) and status at the as-of Monday.

    ``q`` has shape (B, N_SEG, N_CLASS, 5): for B variants, the probability that IS
    works a queued lead of a segment and priority class in each of the five weeks from
    the as-of week on; ``season`` the behaviour multipliers of those weeks. Returns
    shape (B, N_TYPES, 8, 3); status 0 nurturing, 1 hot MQL, 2 warm MQL.
    """
    step = mdl.intent_step()
    seg, tier, fit, eng = mdl.type_parts(np.arange(mdl.N_TYPES))
    intent_of = np.arange(mdl.N_AI) % 4
    psql = mdl.P_SQL[fit][:, intent_of]  # (types, 8)
    pdq = mdl.P_DQ[fit][:, intent_of]
    cls = np.stack(
        [mdl.priority_class(np.full_like(tier, h), tier) for h in (1, 0)], axis=1
    )  # (types, 2)
    v = np.zeros((len(q), mdl.N_TYPES, mdl.N_AI, mdl.N_STATUS))
    for k in range(HORIZON_WEEKS - 1, -1, -1):
        omega = LAST_WEEK_WEIGHT if k == HORIZON_WEEKS - 1 else 1.0
        p_hot, p_warm = mdl.mql_probs(float(season[k]))
        ph = p_hot[eng][:, intent_of]
        pw = p_warm[eng][:, intent_of]
        u = np.empty_like(v)
        u[..., 0] = ph * v[..., 1] + pw * v[..., 2] + (1.0 - ph - pw) * v[..., 0]
        for s in (1, 2):
            qq = q[:, seg, cls[:, s - 1], k][:, :, None]  # (B, types, 1)
            worked = psql * omega + (1.0 - psql - pdq) * v[..., s]
            idle = mdl.MQL_DECAY * v[..., 0] + (1.0 - mdl.MQL_DECAY) * v[..., s]
            u[..., s] = qq * worked + (1.0 - qq) * idle
        v = np.einsum("ab,ptbs->ptas", step, u)
    return v


def service_probabilities(
    queued: np.ndarray, left: np.ndarray, membership: np.ndarray
) -> np.ndarray:
    """P(IS works a given lead if it is queued), per membership pattern.

    ``queued`` and ``left`` have shape (N_SEG, N_CLASS, 5): the realised queue size of
    each segment and class in each week and the capacity (in leads) left for that class
    after the higher ones. IS works ``min(n, left)`` of a class's ``n`` queued leads,
    chosen uniformly, so a lead with ``n_o`` other leads in its class is worked with
    probability ``min(n_o + 1, left) / (n_o + 1)``. ``n_o`` is ``n - 1`` in the weeks
    the lead really was queued in that class and ``n`` otherwise; ``membership`` (B, 5)
    gives, per pattern, 0 (not queued) or 1 + class for each week. Returns
    (B, N_SEG, N_CLASS, 5).
    """

    def share(others: np.ndarray) -> np.ndarray:
        return np.minimum(others + 1, left) / (others + 1)

    out = np.repeat(share(queued)[None], len(membership), axis=0)
    inside = share(np.maximum(queued - 1, 0))
    for k in range(HORIZON_WEEKS):
        for c in range(mdl.N_CLASS):
            sel = membership[:, k] == c + 1
            out[sel, :, c, k] = inside[:, c, k]
    return out


def deal_truth_tables(
    steps: np.ndarray, kinds: np.ndarray, boundary_weeks: np.ndarray
) -> np.ndarray:
    """P(won in a week before each boundary) for every week and state.

    ``steps``: (N_SEG, N_QUALITY, 3, 12, 12) from :func:`model.deal_steps`; ``kinds``:
    week kind of every week index; ``boundary_weeks[j]``: index of the first week that
    starts on or after quarter boundary j. Returns shape
    (n_boundaries, n_weeks, N_SEG, N_QUALITY, 12) with zeros for weeks at or after
    the boundary.
    """
    n_weeks = len(kinds)
    out = np.zeros((len(boundary_weeks), n_weeks, mdl.N_SEG, mdl.N_QUALITY, mdl.N_DEAL))
    for j, tb in enumerate(boundary_weeks):
        w = np.zeros((mdl.N_SEG, mdl.N_QUALITY, mdl.N_DEAL))
        w[:, :, mdl.WON] = 1.0
        for t in range(min(int(tb), n_weeks) - 1, -1, -1):
            w = np.einsum("gqij,gqj->gqi", steps[:, :, kinds[t]], w)
            out[j, t] = w
    return out


def deal_rolling_table(steps: np.ndarray, kinds: np.ndarray, weeks: int) -> np.ndarray:
    """P(won in weeks ``t .. t+weeks-1``) for every week t and state: shape
    (n_weeks, N_SEG, N_QUALITY, 12); ``steps`` and ``kinds`` as in :func:`deal_truth_tables`.
    The last ``weeks - 1`` weeks are zero (their horizon runs past the known week kinds)."""
    n_weeks = len(kinds)
    out = np.zeros((n_weeks, mdl.N_SEG, mdl.N_QUALITY, mdl.N_DEAL))
    for t in range(n_weeks - weeks + 1):
        w = np.zeros((mdl.N_SEG, mdl.N_QUALITY, mdl.N_DEAL))
        w[:, :, mdl.WON] = 1.0
        for k in range(t + weeks - 1, t - 1, -1):
            w = np.einsum("gqij,gqj->gqi", steps[:, :, kinds[k]], w)
        out[t] = w
    return out
