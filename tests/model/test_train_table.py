"""An attribute-only lead table with mixed types, missing-value sentinels and a time
column trains end to end: backtested in time order, calibrated, with a baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadml.importing.tabular import prepare_table, table_training_frame, train_table
from leadml.modeling.spec import ModelSpec

# Small and quick: few rounds, small leaves (the behaviour, not the accuracy, is tested).
FAST = ModelSpec.model_validate(
    {
        "name": "fast",
        "kind": "lead_readiness",
        "features": ["x"],
        "estimator": {
            "params": {"learning_rate": 0.2, "num_leaves": 7, "min_data_in_leaf": 20},
            "num_boost_round": 40,
            "early_stopping_rounds": 10,
            "num_threads": 1,
        },
    }
)


def _table(n: int = 1600, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    created = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.uniform(0, 364, n), unit="D")
    visits = rng.poisson(3, n)
    industry = rng.choice(["software", "retail", "finance", "Select"], n)
    logit = -2.2 + 0.45 * visits + np.where(industry == "software", 1.0, 0.0)
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "Lead ID": [f"L{i}" for i in range(n)],
            "Created": created.strftime("%Y-%m-%d %H:%M"),
            "Web visits": np.where(rng.uniform(size=n) < 0.05, "unknown", visits.astype(str)),
            "Industry": industry,
            "Employees": np.where(rng.uniform(size=n) < 0.1, 999, rng.integers(5, 900, n)),
            "Outcome": np.where(y, "Won", "Lost"),
        }
    )


def test_attribute_table_trains_end_to_end_in_time_order() -> None:
    frame, report = prepare_table(
        _table(), "Outcome", time_column="Created", missing_values="Select,unknown,Employees=999"
    )
    assert report.features == ["Web visits", "Industry", "Employees"]
    result = train_table(frame, report, time_column="Created", base_spec=FAST)
    assert len(result.folds) == 3
    training = table_training_frame(frame, report, time_column="Created")
    week = pd.Timedelta(days=7)
    for fold in result.folds:  # each fold learnt only from rows a week before its test window
        assert fold.train_rows == int((training["as_of"] < fold.origin - week).sum())
    preds = result.predictions
    assert preds["p_model"].between(0, 1).all() and preds["p_baseline"].notna().all()
    assert result.metrics["roc_auc"] > 0.65  # the planted signal is found out of time
    proba = result.model.predict_proba(training[report.features].head(50))
    assert np.all((proba >= 0) & (proba <= 1))
