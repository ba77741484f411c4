"""The leakage guard flags planted leaking columns, each with its reason, and leaves
honest columns alone (including ones an in-sample target encoding would overrate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leadml.errors import DataError
from leadml.importing.leakage import binary_target, check_leakage


def _leads(n: int = 3000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    created = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        np.sort(rng.uniform(0, 365, n)), unit="D"
    )
    visits = rng.poisson(3, n).astype(float)
    industry = rng.choice(["software", "retail", "finance", "health"], n)
    logit = -2.0 + 0.35 * visits + np.where(industry == "software", 0.8, 0.0)
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    df = pd.DataFrame(
        {
            "lead_id": [f"L{i:05d}" for i in range(n)],  # unique strings
            "created_at": created,
            "web_visits": visits,
            "industry": industry,
            "employees": rng.lognormal(4, 1, n).round(),
            "noise": rng.normal(size=n),
            # planted: a score written by sales after the outcome (separates almost perfectly)
            "rep_score": np.where(y, rng.normal(8, 1, n), rng.normal(3, 1, n)),
            # planted: filled in only once a deal exists, weeks after the lead came in
            "deal_signed_on": pd.Series(
                created + pd.to_timedelta(rng.uniform(5, 60, n), unit="D")
            ).where(y),
            "converted": np.where(y, "yes", "no"),
        }
    )
    df["deal_signed_on"] = df["deal_signed_on"].dt.strftime("%Y-%m-%d")
    return df


def test_flags_planted_leaks_and_not_the_honest_columns() -> None:
    df = _leads()
    report = check_leakage(df, "converted", time_column="created_at")
    assert set(report.flagged) == {"rep_score", "deal_signed_on"}
    kinds = {f.kind for f in report.flags if f.column == "rep_score"}
    assert kinds == {"separates"}
    signed = {f.kind for f in report.flags if f.column == "deal_signed_on"}
    assert {"missing_pattern", "after_time", "name"} <= signed
    assert all(f.reason for f in report.flags)
    aucs = {s.column: s.auc for s in report.scores}
    assert aucs["rep_score"] > 0.95 and aucs["web_visits"] < 0.9
    assert report.scores[0].column in {"rep_score", "deal_signed_on"}  # sorted, strongest first


def test_out_of_fold_encoding_keeps_unique_ids_honest() -> None:
    df = _leads()
    y = (df["converted"] == "yes").astype(int)
    # In-sample target encoding of a unique id reproduces the outcome exactly ...
    in_sample = y.groupby(df["lead_id"]).transform("mean")
    assert roc_auc_score(y, in_sample) == 1.0
    # ... the guard's out-of-fold encoding does not.
    report = check_leakage(df, "converted")
    assert {s.column: s.auc for s in report.scores}["lead_id"] < 0.6
    assert "lead_id" not in report.flagged


def test_categorical_and_numeric_aucs_match_direct_computation() -> None:
    df = _leads()
    y = (df["converted"] == "yes").astype(int)
    report = check_leakage(df, "converted")
    aucs = {s.column: s.auc for s in report.scores}
    direct = roc_auc_score(y, df["web_visits"])
    assert aucs["web_visits"] == pytest.approx(max(direct, 1 - direct))
    in_sample = roc_auc_score(y, y.groupby(df["industry"]).transform("mean"))
    assert abs(aucs["industry"] - in_sample) < 0.03  # OOF close to in-sample for 4 big categories


def test_name_rule_flags_a_weak_post_outcome_column() -> None:
    df = _leads()
    rng = np.random.default_rng(5)
    df["call_duration"] = rng.normal(size=len(df)) + 0.5 * (df["converted"] == "yes")
    report = check_leakage(df, "converted")
    reasons = report.reasons("call_duration")
    assert reasons and "duration" in reasons[0]


def test_threshold_is_configurable() -> None:
    df = _leads()
    strict = check_leakage(df, "converted", threshold=0.6)
    assert "web_visits" in strict.flagged


def test_binary_target_reads_common_outcomes_and_rejects_others() -> None:
    assert binary_target(pd.Series(["yes", "no", None, "yes"])).tolist()[:2] == [1.0, 0.0]
    assert binary_target(pd.Series([0, 1, 1])).tolist() == [0.0, 1.0, 1.0]
    assert binary_target(pd.Series(["A", "B"]), positive="b").tolist() == [0.0, 1.0]
    with pytest.raises(DataError, match="positive"):
        binary_target(pd.Series(["A", "B"]), name="outcome")
    with pytest.raises(DataError, match="exactly two"):
        binary_target(pd.Series(["a", "b", "c"]))
