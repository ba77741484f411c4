"""Small synthetic training sets with known true probabilities.

For tests, benchmarks, notebooks and the bundle's input example: frames laid out
like those :mod:`leadml.features.datasets` produces (one row per entity and ``as_of``,
features, label), but with their own few features (:data:`READINESS_FEATURES`,
:data:`DEAL_FEATURES`), so train them with :func:`readiness_spec` / :func:`deal_spec`,
not the shipped specs. Each ``*_frame`` returns ``(frame, truth)``: generated from a
known model, the oracle (the true probability) is available for every row. Nothing
here is real personal data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from leadml.modeling.spec import ModelSpec

READINESS_FEATURES = [
    "pricing_page_views_30d",
    "seminar_attended_90d",
    "email_clicks_30d",
    "web_visits_30d",
    "days_since_last_event",
    "job_level",
    "source",
    "segment",
]

DEAL_FEATURES = [
    "stage",
    "days_in_stage",
    "days_to_expected_close",
    "days_since_last_activity",
    "activities_30d",
    "amount",
    "segment",
]

_JOB = {"c_level": 0.6, "director": 0.4, "manager": 0.1, "staff": -0.4}
_SOURCE = {"web": 0.0, "seminar": 0.3, "referral": 0.5, "list": -0.5}
_SEGMENT = {"enterprise": -0.2, "mid_market": 0.0, "smb": 0.2}
_STAGE_WIN = {
    "follow_up": 0.01,
    "problem_recognised": 0.02,
    "evaluation": 0.04,
    "negotiation": 0.08,
    "approval": 0.14,
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def readiness_logit(frame: pd.DataFrame) -> np.ndarray:
    """The true log-odds of conversion within 30 days given the synthetic features."""
    z = (
        -4.2
        + 0.45 * frame["pricing_page_views_30d"].to_numpy(dtype=float)
        + 0.9 * frame["seminar_attended_90d"].to_numpy(dtype=float)
        + 0.35 * np.log1p(frame["email_clicks_30d"].to_numpy(dtype=float))
        + 0.15 * np.log1p(frame["web_visits_30d"].to_numpy(dtype=float))
        - 0.02 * np.minimum(frame["days_since_last_event"].fillna(120).to_numpy(dtype=float), 120)
        + frame["job_level"].map(_JOB).fillna(0).to_numpy(dtype=float)
        + frame["source"].map(_SOURCE).fillna(0).to_numpy(dtype=float)
        + frame["segment"].map(_SEGMENT).fillna(0).to_numpy(dtype=float)
    )
    return z


def readiness_frame(
    rows: int = 20_000, *, weeks: int = 60, start: str = "2025-01-06", seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training set, truth): weekly lead snapshots with a 30-day label and the true probability."""
    rng = np.random.default_rng(seed)
    intent = rng.gamma(1.0, 1.0, rows)
    as_of = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(
        rng.integers(0, weeks, rows) * 7, unit="D"
    )
    frame = pd.DataFrame(
        {
            "lead_id": [f"L{i:07d}" for i in rng.permutation(rows)],
            "as_of": as_of,
            "pricing_page_views_30d": rng.poisson(0.6 * intent),
            "seminar_attended_90d": rng.binomial(1, np.clip(0.08 * intent, 0, 0.9)),
            "email_clicks_30d": rng.poisson(1.0 + intent),
            "web_visits_30d": rng.poisson(2.0 + 2.0 * intent),
            "days_since_last_event": np.where(
                rng.random(rows) < 0.05, np.nan, rng.exponential(30 / (0.5 + intent))
            ).round(),
            "job_level": rng.choice(list(_JOB), rows, p=[0.1, 0.2, 0.4, 0.3]),
            "source": rng.choice(list(_SOURCE), rows, p=[0.4, 0.2, 0.1, 0.3]),
            "segment": rng.choice(list(_SEGMENT), rows, p=[0.2, 0.3, 0.5]),
        }
    )
    p = _sigmoid(readiness_logit(frame))
    frame["label"] = rng.binomial(1, p)
    frame = frame.sort_values(["as_of", "lead_id"]).reset_index(drop=True)
    truth = pd.DataFrame(
        {
            "lead_id": frame["lead_id"],
            "as_of": frame["as_of"],
            "p_opportunity_30d": _sigmoid(readiness_logit(frame)),
        }
    )
    return frame, truth


def deal_hazards(frame: pd.DataFrame, weeks: int) -> tuple[np.ndarray, np.ndarray]:
    """True weekly hazards (won, lost) of each snapshot for ``weeks`` periods ahead."""
    k = np.arange(weeks)[None, :]
    base = frame["stage"].map(_STAGE_WIN).fillna(0.01).to_numpy(dtype=float)[:, None]
    to_close = frame["days_to_expected_close"].to_numpy(dtype=float)[:, None] - 7 * k
    idle = (
        np.minimum(frame["days_since_last_activity"].to_numpy(dtype=float), 90)[:, None]
        + 7 * k * 0.5
    )
    acts = np.log1p(frame["activities_30d"].to_numpy(dtype=float))[:, None]
    near = np.exp(-np.abs(to_close) / 30.0)
    won = base * (0.6 + 2.0 * near) * np.exp(-idle / 40.0) * (0.7 + 0.3 * acts)
    won = np.where(to_close < -45, won * 0.3, won)
    lost = 0.015 + 0.03 * (to_close < -30) + 0.02 * (idle > 45)
    won = np.clip(won, 0, 0.6)
    return won, np.clip(lost * np.ones_like(won), 0, 0.35)


def deal_frame(
    deals: int = 3_000,
    *,
    weeks: int = 60,
    start: str = "2025-01-06",
    seed: int = 0,
    horizon_days: int = 90,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training set, truth): weekly snapshots of open deals with outcome / outcome_days and
    the true P(won by as_of + horizon_days) at ``period_end``."""
    rng = np.random.default_rng(seed)
    n = deals * 4
    start_ts = pd.Timestamp(start, tz="UTC")
    week_idx = rng.integers(0, weeks, n)
    stages = list(_STAGE_WIN)
    frame = pd.DataFrame(
        {
            "opportunity_id": [f"O{i:07d}" for i in rng.integers(0, deals, n)],
            "as_of": start_ts + pd.to_timedelta(week_idx * 7, unit="D"),
            "stage": rng.choice(stages, n, p=[0.3, 0.25, 0.2, 0.15, 0.1]),
            "days_in_stage": rng.exponential(25, n).round(),
            "days_to_expected_close": rng.normal(40, 45, n).round(),
            "days_since_last_activity": rng.exponential(15, n).round(),
            "activities_30d": rng.poisson(4, n),
            "amount": rng.lognormal(9.5, 0.8, n).round(-2),
            "segment": rng.choice(list(_SEGMENT), n, p=[0.2, 0.3, 0.5]),
        }
    )
    frame = frame.drop_duplicates(["opportunity_id", "as_of"]).reset_index(drop=True)
    horizon_weeks = 80
    won_h, lost_h = deal_hazards(frame, horizon_weeks)
    u = rng.random((len(frame), horizon_weeks))
    won_event = u < won_h
    lost_event = (u >= won_h) & (u < won_h + lost_h)
    any_event = won_event | lost_event
    first = np.where(any_event.any(axis=1), any_event.argmax(axis=1), horizon_weeks)
    rows = np.arange(len(frame))
    is_won = (first < horizon_weeks) & won_event[rows, np.minimum(first, horizon_weeks - 1)]
    day_in_week = rng.integers(1, 8, len(frame))
    close_days = first * 7 + day_in_week
    data_end = start_ts + pd.Timedelta(days=weeks * 7 + 14)
    to_end = ((data_end - frame["as_of"]) / pd.Timedelta(days=1)).to_numpy()
    closed = (first < horizon_weeks) & (close_days <= to_end)
    frame["outcome"] = np.where(closed, np.where(is_won, "won", "lost"), "open")
    frame["outcome_days"] = np.where(closed, close_days, to_end).astype(float)
    frame["owner_id"] = rng.choice([f"R{i:03d}" for i in range(12)], len(frame))
    frame = frame.sort_values(["as_of", "opportunity_id"]).reset_index(drop=True)
    won_h, lost_h = deal_hazards(frame, horizon_weeks)
    surv = np.cumprod(
        np.concatenate([np.ones((len(frame), 1)), 1 - won_h - lost_h], axis=1), axis=1
    )[:, :-1]
    cum = np.cumsum(won_h * surv, axis=1)
    # the event falls on day 1..7 of its week, uniformly: P(won by d) interpolates
    w = horizon_days / 7
    lo = int(np.floor(w))
    p_lo = cum[:, lo - 1] if lo > 0 else np.zeros(len(frame))
    p_hi = cum[:, lo]
    p = p_lo + (p_hi - p_lo) * (w - lo)
    truth = pd.DataFrame(
        {
            "opportunity_id": frame["opportunity_id"],
            "as_of": frame["as_of"],
            "period_end": frame["as_of"] + pd.Timedelta(days=horizon_days),
            "p_won_by": p,
        }
    )
    return frame, truth


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``; dict values are merged one level deep."""
    out = dict(base)
    for k, v in overrides.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def readiness_spec(**overrides: Any) -> ModelSpec:
    """A small lead-readiness spec over :data:`READINESS_FEATURES` (for
    :func:`readiness_frame`); ``overrides`` replace fields, dict fields key by key."""
    from leadml.modeling.spec import ModelSpec

    base: dict[str, Any] = {
        "name": "lead_readiness",
        "kind": "lead_readiness",
        "features": READINESS_FEATURES,
        "min_positives": 20,
        "backtest": {"origins": 1, "gap_days": 30, "test_days": 28},
    }
    return ModelSpec(**_merged(base, overrides))


def deal_spec(**overrides: Any) -> ModelSpec:
    """A small deal-close spec over :data:`DEAL_FEATURES` (for :func:`deal_frame` with
    ``horizon_days=60``); ``overrides`` replace fields, dict fields key by key."""
    from leadml.modeling.spec import ModelSpec

    base: dict[str, Any] = {
        "name": "deal_close",
        "kind": "deal_close",
        "features": DEAL_FEATURES,
        "min_positives": 20,
        "calibration": {"holdout_days": 56},
        "target": {
            "horizon_days": 60,
            "max_weeks": 20,
            "eval_horizons_days": [30, 60],
            "shift_features": ["days_to_expected_close"],
        },
        "backtest": {"origins": 1, "gap_days": 0, "test_days": 28},
    }
    return ModelSpec(**_merged(base, overrides))
