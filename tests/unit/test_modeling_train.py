"""Training: specs, time semantics of the backtest, the deal hazard's bookkeeping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadml.errors import ConfigError, DataError, LeadmlError
from leadml.modeling import synthetic
from leadml.modeling import train as train_mod
from leadml.modeling.spec import ModelSpec, load_spec
from leadml.modeling.train import (
    CategoryEncoder,
    backtest_origins,
    censor_deals,
    deal_label,
    person_periods,
    quarter_days,
    train,
)

FAST = {"num_boost_round": 40, "num_threads": 1, "early_stopping_rounds": 10}


def readiness_spec(**kw: object) -> ModelSpec:
    base = dict(
        name="lead_readiness",
        kind="lead_readiness",
        features=synthetic.READINESS_FEATURES,
        min_positives=20,
        estimator=FAST,
        backtest={"origins": 2, "gap_days": 30, "test_days": 28},
    )
    base.update(kw)
    return ModelSpec(**base)


def test_shipped_specs_are_valid(repo_root: Path) -> None:
    for name in ("lead_readiness", "deal_close"):
        spec = load_spec(repo_root / "models" / f"{name}.yaml")
        assert spec.name == name and spec.features


def test_bad_spec_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: x\nkind: lead_readiness\nfeatures: [a]\ntarget: {horizon_days: 30}\n"
        "backtest: {gap_days: 7}\n"
    )
    with pytest.raises(ConfigError, match=r"(?s)s\.yaml.*gap_days \(7\) must be at least"):
        load_spec(path)
    path.write_text("name: x\nkind: lead_readiness\nfeatures: [a]\ncalibration: {method: magic}\n")
    with pytest.raises(ConfigError, match=r"calibration\.method"):
        load_spec(path)


def test_too_few_positives_says_how_many_and_how_many_needed() -> None:
    df, _ = synthetic.readiness_frame(3000, weeks=30, seed=3)
    n = int(df["label"].sum())
    with pytest.raises(LeadmlError, match=rf"has {n} positive\(s\).*at least 100000"):
        train(df, readiness_spec(min_positives=100_000))


def test_missing_feature_column_is_named() -> None:
    df, _ = synthetic.readiness_frame(500, weeks=20)
    with pytest.raises(DataError, match="pricing_page_views_30d"):
        train(df.drop(columns="pricing_page_views_30d"), readiness_spec())


def test_folds_train_only_on_the_past_with_the_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    df, _ = synthetic.readiness_frame(4000, weeks=40, seed=4)
    spec = readiness_spec()
    seen: list[tuple[pd.Timestamp, int]] = []
    real_fit = train_mod.fit_model

    def spy(part: pd.DataFrame, s: ModelSpec, progress: object = None, **kw: object) -> object:
        seen.append((part["as_of"].max(), len(part)))
        return real_fit(part, s, **kw)

    monkeypatch.setattr(train_mod, "fit_model", spy)
    result = train(df, spec)
    origins = backtest_origins(train_mod.check_dataset(df, spec), spec)
    assert [f.origin for f in result.folds] == origins
    assert origins[-1] + pd.Timedelta(days=27) == df["as_of"].max().normalize()
    for (last_train, _), origin in zip(seen[:-1], origins, strict=True):
        assert last_train < origin - pd.Timedelta(days=spec.backtest.gap_days)
    # each fold's test rows lie in [origin, origin + test_days)
    for i, origin in enumerate(origins):
        rows = result.predictions[result.predictions["fold"] == i]["as_of"]
        assert rows.min() >= origin and rows.max() < origin + pd.Timedelta(days=28)
    assert seen[-1][1] == len(df)  # the final fit sees everything
    assert {"roc_auc", "baseline_roc_auc", "ece", "latest_roc_auc", "precision_at_capacity"} <= set(
        result.metrics
    )


def test_oracle_metrics_are_on_the_same_rows() -> None:
    df, truth = synthetic.readiness_frame(6000, weeks=40, seed=5)
    result = train(df, readiness_spec(), truth=truth, capacity=20)
    m = result.metrics
    assert m["oracle_rows"] == m["rows"]
    # the oracle is the generating probability: it ranks at least as well as a fitted model
    assert m["oracle_roc_auc"] >= m["roc_auc"] - 0.02
    assert m["roc_auc_vs_oracle"] == pytest.approx(
        m["model_on_oracle_rows_roc_auc"] / m["oracle_roc_auc"]
    )


def test_category_encoder_fixes_categories_and_unseen_becomes_missing() -> None:
    enc = CategoryEncoder(["n", "c"]).fit(pd.DataFrame({"n": [1, 2], "c": ["x", "y"]}))
    out = enc.transform(pd.DataFrame({"n": [3], "c": ["z"], "other": [1]}))
    assert list(out.columns) == ["n", "c"]
    assert list(out["c"].cat.categories) == ["x", "y"] and out["c"].isna().all()
    assert out["n"].dtype == float


def test_person_periods_expand_closed_and_censored_deals() -> None:
    df = pd.DataFrame(
        {"outcome": ["won", "lost", "open", "won"], "outcome_days": [10.0, 3.0, 15.0, 0.0]}
    )
    rows, weeks, target = person_periods(df, 7, 26)
    got = pd.DataFrame({"row": rows, "week": weeks, "y": target})
    assert got[got.row == 0][["week", "y"]].values.tolist() == [
        [0, 0],
        [1, 1],
    ]  # won on day 10: week 1
    assert got[got.row == 1][["week", "y"]].values.tolist() == [[0, 2]]
    assert got[got.row == 2][["week", "y"]].values.tolist() == [[0, 0], [1, 0]]  # 2 full weeks seen
    assert got[got.row == 3][["week", "y"]].values.tolist() == [[0, 1]]
    rows, weeks, _ = person_periods(df, 7, 1)
    assert weeks.max() == 0 and len(rows) == 4  # capped at max_weeks


def test_deal_labels_and_censoring_at_a_cutoff() -> None:
    t0 = pd.Timestamp("2025-01-06", tz="UTC")
    df = pd.DataFrame(
        {"as_of": [t0] * 3, "outcome": ["won", "lost", "open"], "outcome_days": [40.0, 5.0, 20.0]}
    )
    lab = deal_label(df["outcome"], df["outcome_days"], 30)
    assert lab.iloc[0] == 0 and lab.iloc[1] == 0 and pd.isna(lab.iloc[2])
    assert deal_label(df["outcome"], df["outcome_days"], 45).iloc[0] == 1
    cut = censor_deals(df, t0 + pd.Timedelta(days=10))
    assert list(cut["outcome"]) == ["open", "lost", "open"]
    assert list(cut["outcome_days"]) == [10.0, 5.0, 10.0]


def test_deal_model_gives_a_monotone_probability_of_winning_by_d() -> None:
    df, truth = synthetic.deal_frame(700, weeks=40, seed=6, horizon_days=60)
    spec = ModelSpec(
        name="deal_close",
        kind="deal_close",
        features=synthetic.DEAL_FEATURES,
        min_positives=20,
        estimator=FAST,
        calibration={"holdout_days": 56},
        target={
            "horizon_days": 60,
            "max_weeks": 20,
            "eval_horizons_days": [30, 60],
            "shift_features": ["days_to_expected_close"],
            "calendar": True,
        },
        backtest={"origins": 1, "gap_days": 0, "test_days": 28},
    )
    result = train(df, spec, truth=truth)
    model = result.model
    sample = df.head(50)
    curve = np.column_stack([model.predict_raw(sample, d) for d in (0, 7, 30, 60, 120, 140, 400)])
    assert np.all(np.diff(curve, axis=1) >= -1e-12) and curve.min() >= 0 and curve.max() <= 1
    np.testing.assert_allclose(curve[:, 0], 0.0)
    np.testing.assert_allclose(curve[:, -1], curve[:, -2])  # capped at max_weeks
    # every test row's headline label is observed: no selection by outcome
    fold = result.predictions
    assert fold["label"].notna().all()
    assert "oracle_roc_auc" in result.metrics and result.metrics["roc_auc"] > 0.6
    # the calendar-aware hazard needs the as-of time of each row
    with pytest.raises(DataError, match="as_of"):
        model.predict_proba(sample.drop(columns="as_of"))


def test_quarter_days_count_to_the_end_of_the_period_quarter() -> None:
    as_of = pd.to_datetime(
        pd.Series(["2025-03-24", "2025-12-29", "2025-01-06"]), utc=True
    ).to_numpy()
    got = quarter_days(as_of, np.array([0, 0, 1]), 7)
    assert got.tolist() == [8.0, 3.0, 78.0]  # Apr 1, Jan 1, and Apr 1 from Jan 13
