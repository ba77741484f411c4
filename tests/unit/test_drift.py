"""Population stability index: fires on a shifted feature, quiet on an unshifted one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from leadml.batch.drift import BinnedReference, build_reference, drift_report, drifted, psi


def _frame(n: int, seed: int, shift: float = 0.0, smb_share: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "web_visits_30d": rng.poisson(3 + shift, n).astype(float),
            "pricing_views": rng.gamma(2.0, 1.0, n),
            "segment": rng.choice(["smb", "enterprise"], n, p=[smb_share, 1 - smb_share]),
        }
    )


def test_identical_distribution_has_near_zero_psi() -> None:
    train = _frame(20_000, 1)
    ref = build_reference(train, train.columns, scores=np.random.default_rng(2).beta(2, 5, 20_000))
    for name in train.columns:
        assert psi(ref[name], train[name]) < 1e-9


def test_drift_fires_on_shifted_feature_and_stays_quiet_on_unshifted() -> None:
    train = _frame(20_000, 1)
    ref = build_reference(train, train.columns, scores=np.random.default_rng(2).beta(2, 5, 20_000))
    tonight = _frame(5_000, 3, shift=4.0, smb_share=0.5)
    scores = np.random.default_rng(4).beta(2, 5, 5_000)
    report = drift_report(ref, tonight, model="lead_readiness", scores=scores, warn=0.1, alert=0.25)
    status = report.set_index("feature")["status"]
    assert status["web_visits_30d"] == "drift"
    assert status["pricing_views"] == "stable"
    assert status["segment"] == "stable"
    assert status["score"] == "stable"
    assert drifted(report) == ["lead_readiness:web_visits_30d"]
    assert report["psi"].iloc[0] == report["psi"].max()  # worst first


def test_categorical_shift_missing_values_and_shifted_scores_are_caught() -> None:
    train = _frame(20_000, 1)
    ref = build_reference(train, train.columns, scores=np.random.default_rng(2).beta(2, 5, 20_000))
    tonight = _frame(5_000, 3, smb_share=0.95)
    tonight.loc[:2_500, "pricing_views"] = np.nan  # half the column lost upstream
    scores = np.random.default_rng(4).beta(5, 2, 5_000)  # scores moved up
    report = drift_report(ref, tonight, model="m", scores=scores).set_index("feature")
    assert report.loc["segment", "status"] == "drift"
    assert report.loc["pricing_views", "status"] == "drift"
    assert report.loc["pricing_views", "current_missing"] > 0.45
    assert report.loc["score", "status"] == "drift"
    assert report.loc["web_visits_30d", "status"] == "stable"


def test_unseen_category_and_absent_column() -> None:
    train = _frame(5_000, 1)
    ref = build_reference(train, ["segment", "pricing_views"])
    tonight = _frame(2_000, 2).drop(columns=["pricing_views"])
    tonight["segment"] = "mid_market"  # never seen in training: all in the OTHER bin
    report = drift_report(ref, tonight, model="m").set_index("feature")
    assert report.loc["segment", "status"] == "drift"
    assert report.loc["pricing_views", "status"] == "missing"
    assert "m:pricing_views" in drifted(report.reset_index())


def test_reference_round_trips_through_a_dict() -> None:
    ref = build_reference(_frame(1_000, 1), ["web_visits_30d", "segment"])
    again = {k: BinnedReference.from_dict(v.to_dict()) for k, v in ref.items()}
    assert again == ref
    assert abs(sum(again["segment"].shares) + again["segment"].missing_share - 1) < 1e-9


def test_the_scoring_bundles_reference_reads_back_with_zero_psi_on_its_training_data() -> None:
    """The bundle stores its own reference format; read back, the training data itself
    must be stable against it and a shifted copy must drift (same bin conventions)."""
    from leadml.batch.nightly import reference_from_bundle
    from leadml.modeling.bundle import _reference

    train = _frame(20_000, 1)
    train.loc[train.index[:1_000], "pricing_views"] = np.nan
    scores = np.round(np.random.default_rng(2).beta(2, 8, 20_000), 3)  # ties, like isotonic steps
    stored = _reference(train, list(train.columns), ["segment"], scores)
    ref = reference_from_bundle(stored)
    assert ref is not None and set(ref) == {*train.columns, "score"}
    same = drift_report(ref, train, model="m", scores=scores).set_index("feature")
    assert (same.drop(index="score")["psi"] < 1e-9).all(), same["psi"]
    # the score's reference is its 101 stored percentiles: close, not exact
    assert same.loc["score", "psi"] < 0.01
    moved = train.assign(web_visits_30d=train["web_visits_30d"] + 3)
    report = drift_report(ref, moved, model="m", scores=np.clip(scores + 0.1, 0, 1)).set_index(
        "feature"
    )
    assert report.loc["web_visits_30d", "status"] == "drift"
    assert report.loc["score", "status"] == "drift"
    assert report.loc["segment", "status"] == "stable"


def test_unwatched_features_keep_their_psi_but_never_count_as_drifted() -> None:
    """Nightly review: per-owner counts that only grow and days to month-end close dates
    'drifted' every night; the catalog's drift: false keeps them out of the alert."""
    train = _frame(20_000, 1)
    ref = build_reference(train, train.columns)
    tonight = _frame(5_000, 3, shift=4.0)
    report = drift_report(ref, tonight, model="deal_close", unwatched=["web_visits_30d"])
    row = report.set_index("feature").loc["web_visits_30d"]
    assert row["status"] == "unwatched" and row["psi"] > 0.25
    assert drifted(report) == []


def test_the_shipped_catalog_leaves_calendar_and_per_owner_features_unwatched(
    repo_root: Path,
) -> None:
    from leadml.config import load_settings
    from leadml.features.catalog import load_catalog

    s = load_settings(repo_root / "configs")
    catalog = load_catalog(s.config_file("features.yaml"), s.vocabulary)
    assert {"owner_lost_deals", "owner_win_rate_365d", "days_to_expected_close"} <= set(
        catalog.unwatched("opportunity")
    )
    assert "days_since_last_activity" not in catalog.unwatched("opportunity")
    assert catalog.unwatched("lead") == []
