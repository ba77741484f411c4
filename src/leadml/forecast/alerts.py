"""Deal-hygiene alerts: the checks field sales runs at every stage (THE MODEL).

Each alert names the deal, its owner, the rule, a sentence a rep can act on and
the figures behind it. Time semantics: the deals are those open at ``as_of``,
with state rebuilt from ``opportunity_history`` rows with ``ts < as_of``; the
stage-duration norm comes from stage spells completed before ``as_of``; scores
are read only when their own ``as_of`` is at or before the alerts' ``as_of``.

Rules (thresholds in ``forecast.alerts`` of the configuration):

- ``past_close_date``: expected close date before the as-of day;
- ``stale``: no change in opportunity_history for ``stale_days`` or more, and (with
  ``stale_counts_activities``, the default) no activity logged on the deal either;
- ``close_date_pushed``: expected close date moved later ``close_date_pushes`` times or more;
- ``stage_too_long``: time in the current stage above the historical
  ``stage_duration_quantile`` of that stage's completed spells of deals of the same
  segment (when at least ``min_stage_samples`` exist; else of all segments' spells, when
  that many exist): an enterprise evaluation takes three times an SMB one;
- ``score_dropped``: a deal in a late stage whose latest score is ``score_drop``
  or more below its highest score of the previous ``score_window_days``.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from leadml.config import AlertsConfig, Vocabulary
from leadml.forecast.deals import DealHistory, ForecastError, as_utc, numeric_column, time_column

COLUMNS = ["opportunity_id", "owner_id", "team", "stage", "amount", "rule", "reason", "figures"]
# What an as-of after the data's end is told (DealHistory.check_as_of)
AS_OF_LIMIT = {
    "what": "alerts are not raised",
    "why": ", where every open deal would look stale or overdue only because the data stopped",
}

RULES = ("past_close_date", "stale", "close_date_pushed", "stage_too_long", "score_dropped")


def stage_duration_norms(
    history: DealHistory, before: pd.Timestamp, quantile: float, by: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Per open stage (and ``by`` columns, e.g. segment): the ``quantile`` of completed
    spell durations (days) and their count.

    A spell is a run of consecutive rows of one deal in one stage; it is complete
    when the deal's next different-stage row has ``ts < before``.
    """
    h = history.history
    h = h[h["ts"] < before]
    starts = h[h["ts"] == h["stage_since"]].drop_duplicates(["opportunity_id", "stage_since"])
    starts = starts[["opportunity_id", "stage", "stage_since", *by]].sort_values(
        ["opportunity_id", "stage_since"]
    )
    nxt = starts.groupby("opportunity_id")["stage_since"].shift(-1)
    done = starts.assign(days=(nxt - starts["stage_since"]).dt.total_seconds() / 86400.0).dropna(
        subset=["days"]
    )
    done = done[done["stage"].isin(history.vocab.open_stages)]
    return done.groupby(["stage", *by])["days"].agg(
        limit=lambda d: float(np.quantile(d, quantile)), spells="count"
    )


def _rows(
    deals: pd.DataFrame, mask: pd.Series, rule: str, reasons: pd.Series, figures: pd.Series
) -> pd.DataFrame:
    d = deals[mask]
    return pd.DataFrame(
        {
            "opportunity_id": d["opportunity_id"],
            "owner_id": d["owner_id"],
            "team": d["team"],
            "stage": d["stage"],
            "amount": d["amount"],
            "rule": rule,
            "reason": reasons[mask],
            "figures": figures[mask],
        }
    )


def alerts(
    con: duckdb.DuckDBPyConnection,
    *,
    as_of: object,
    cfg: AlertsConfig | None = None,
    scores: pd.DataFrame | None = None,
    vocab: Vocabulary | None = None,
    history: DealHistory | None = None,
) -> pd.DataFrame:
    """Hygiene alerts for the deals open at ``as_of`` (one row per deal and rule).

    ``scores`` (optional): a score history with opportunity_id, as_of, p_won.
    """
    cfg = cfg or AlertsConfig()
    t = as_utc(as_of)
    history = history or DealHistory(con, vocab or Vocabulary())
    history.check_as_of(t, **AS_OF_LIMIT)
    history.check_has_history(t)
    deals = history.snapshot(t).reset_index(drop=True)
    if deals.empty:
        return pd.DataFrame(columns=COLUMNS)
    day = t.normalize()
    parts: list[pd.DataFrame] = []

    ecd = deals["expected_close_date"]
    overdue = ((day - ecd).dt.total_seconds() // 86400).astype(int)
    mask = ecd < day
    parts.append(
        _rows(
            deals,
            mask,
            "past_close_date",
            "expected close date "
            + ecd.dt.strftime("%Y-%m-%d")
            + " passed "
            + overdue.astype(str)
            + " day(s) ago",
            pd.Series(
                [
                    {"expected_close_date": e.date().isoformat(), "days_overdue": int(n)}
                    for e, n in zip(ecd, overdue, strict=True)
                ]
            ),
        )
    )

    touched = _last_touch(con, deals, t) if cfg.stale_counts_activities else deals["last_update"]
    idle = (t - touched).dt.total_seconds() / 86400.0
    mask = idle >= cfg.stale_days
    what = "update or activity" if cfg.stale_counts_activities else "update"
    parts.append(
        _rows(
            deals,
            mask,
            "stale",
            f"no {what} for "
            + idle.astype(int).astype(str)
            + " days (last "
            + ("touch " if cfg.stale_counts_activities else "change ")
            + touched.dt.strftime("%Y-%m-%d")
            + f"; threshold {cfg.stale_days})",
            pd.Series(
                [
                    {
                        "days_since_update": round(float(i), 1),
                        "last_update": u.isoformat(),
                        "last_touch": w.isoformat(),
                        "threshold_days": cfg.stale_days,
                    }
                    for i, u, w in zip(idle, deals["last_update"], touched, strict=True)
                ]
            ),
        )
    )

    pushes = deals["close_date_pushes"].astype(int)
    mask = pushes >= cfg.close_date_pushes
    parts.append(
        _rows(
            deals,
            mask,
            "close_date_pushed",
            "expected close date pushed "
            + pushes.astype(str)
            + " times (now "
            + ecd.dt.strftime("%Y-%m-%d")
            + f"; threshold {cfg.close_date_pushes})",
            pd.Series(
                [
                    {
                        "pushes": int(n),
                        "expected_close_date": e.date().isoformat(),
                        "threshold": cfg.close_date_pushes,
                    }
                    for n, e in zip(pushes, ecd, strict=True)
                ]
            ),
        )
    )

    limit, spells, among = _stage_limits(history, deals, t, cfg)
    in_stage = (t - deals["stage_since"]).dt.total_seconds() / 86400.0
    mask = limit.notna() & (in_stage > limit)
    q = round(cfg.stage_duration_quantile * 100)
    parts.append(
        _rows(
            deals,
            mask,
            "stage_too_long",
            in_stage.astype(int).astype(str)
            + " days in "
            + deals["stage"]
            + f"; {q}% of past "
            + deals["stage"]
            + " spells"
            + among
            + " ended within "
            + limit.fillna(0).round().astype(int).astype(str)
            + " days",
            pd.Series(
                [
                    {
                        "days_in_stage": round(float(d), 1),
                        "stage_limit_days": round(float(lim), 1) if pd.notna(lim) else None,
                        "quantile": cfg.stage_duration_quantile,
                        "spells": int(n),
                        "norm_of": "segment" if a else "all segments",
                    }
                    for d, lim, n, a in zip(in_stage, limit, spells, among, strict=True)
                ]
            ),
        )
    )

    if scores is not None:
        parts.append(_score_drops(deals, scores, t, cfg))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    out["_rule_order"] = out["rule"].map({r: i for i, r in enumerate(RULES)})
    out = out.sort_values(["owner_id", "opportunity_id", "_rule_order"], kind="stable")
    return out.reset_index(drop=True)[COLUMNS]


def _stage_limits(
    history: DealHistory, deals: pd.DataFrame, t: pd.Timestamp, cfg: AlertsConfig
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Per open deal: the stage-duration limit, the spells behind it and the words naming
    whose spells they were ('' for all segments): the deal's stage x segment norm when it
    has ``min_stage_samples`` spells, else the stage's."""
    q, n_min = cfg.stage_duration_quantile, cfg.min_stage_samples
    by_stage = stage_duration_norms(history, t, q)
    by_stage = by_stage[by_stage["spells"] >= n_min]
    by_seg = stage_duration_norms(history, t, q, by=("segment",))
    by_seg = by_seg[by_seg["spells"] >= n_min]
    key = pd.MultiIndex.from_arrays([deals["stage"], deals["segment"]])
    seg_limit = pd.Series(by_seg["limit"].reindex(key).to_numpy(), index=deals.index)
    seg_spells = pd.Series(by_seg["spells"].reindex(key).to_numpy(), index=deals.index)
    own = seg_limit.notna()
    limit = seg_limit.where(own, deals["stage"].map(by_stage["limit"]))
    spells = seg_spells.where(own, deals["stage"].map(by_stage["spells"])).fillna(0)
    among = pd.Series(
        np.where(own, " of " + deals["segment"].astype(str) + " deals", ""), index=deals.index
    )
    return limit, spells, among


def _last_touch(con: duckdb.DuckDBPyConnection, deals: pd.DataFrame, t: pd.Timestamp) -> pd.Series:
    """Per deal, the later of its last history change and its last activity before ``t``."""
    has = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'activities'"
    ).fetchone()
    if not (has and has[0]):
        return deals["last_update"]
    last = con.execute(
        "SELECT opportunity_id, max(ts) AS ts FROM activities "
        "WHERE opportunity_id IS NOT NULL AND ts < ? GROUP BY opportunity_id",
        [t.to_pydatetime()],
    ).df()
    acted = pd.to_datetime(
        deals["opportunity_id"].map(pd.Series(last["ts"].to_numpy(), index=last["opportunity_id"])),
        utc=True,
    )
    return pd.concat([deals["last_update"], acted], axis=1).max(axis=1)


def _score_drops(
    deals: pd.DataFrame, scores: pd.DataFrame, t: pd.Timestamp, cfg: AlertsConfig
) -> pd.DataFrame:
    missing = {"opportunity_id", "as_of", "p_won"} - set(scores.columns)
    if missing:
        raise ForecastError(
            f"scores history is missing column(s) {', '.join(sorted(missing))}; "
            "it needs opportunity_id, as_of, p_won"
        )
    s = scores[["opportunity_id", "as_of", "p_won"]].copy()
    s["as_of"] = time_column(s, "as_of", "scores history")
    s["p_won"] = numeric_column(s, "p_won", "scores history")
    s = s[
        (s["as_of"] <= t)
        & s["opportunity_id"].isin(
            deals.loc[deals["stage"].isin(cfg.late_stages), "opportunity_id"]
        )
    ]
    if s.empty:
        return pd.DataFrame(columns=COLUMNS)
    s = s.sort_values(["opportunity_id", "as_of"])
    last = s.groupby("opportunity_id").tail(1).set_index("opportunity_id")
    s = s.join(last[["as_of"]].rename(columns={"as_of": "last_as_of"}), on="opportunity_id")
    window = s[
        (s["as_of"] < s["last_as_of"])
        & (s["as_of"] >= s["last_as_of"] - pd.Timedelta(days=cfg.score_window_days))
    ]
    top = window.loc[window.groupby("opportunity_id")["p_won"].idxmax()].set_index("opportunity_id")
    both = last.join(top[["as_of", "p_won"]], rsuffix="_max", how="inner")
    both["drop"] = both["p_won_max"] - both["p_won"]
    # to 9 decimals: a drop from 0.6 to 0.4 (0.19999999999999996 in floats) is 0.2
    hit = both[both["drop"].round(9) >= cfg.score_drop]
    d = deals.set_index("opportunity_id").loc[hit.index].reset_index()
    reasons = pd.Series(
        [
            f"score fell from {r.p_won_max:.2f} ({r.as_of_max:%Y-%m-%d}) "
            f"to {r.p_won:.2f} ({r.as_of:%Y-%m-%d}) "
            f"in {d_stage}; threshold {cfg.score_drop:.2f} within {cfg.score_window_days} days"
            for r, d_stage in zip(hit.itertuples(), d["stage"], strict=True)
        ]
    )
    figures = pd.Series(
        [
            {  # probabilities to 4 decimals: 0.8 - 0.4 is 0.4, not 0.39999999999999997
                "p_won": round(float(r.p_won), 4),
                "p_won_max": round(float(r.p_won_max), 4),
                "drop": round(float(r.drop), 4),
                "max_as_of": r.as_of_max.isoformat(),
                "threshold": cfg.score_drop,
            }
            for r in hit.itertuples()
        ]
    )
    return _rows(d, pd.Series(True, index=d.index), "score_dropped", reasons, figures)
