"""Training from a saved training set (``leadml train ... --dataset FILE``): read lean
(the spec's columns, float32 numbers, categories for text), and trained like the frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST

from leadml.cli import main
from leadml.errors import DataError
from leadml.modeling import synthetic
from leadml.modeling.train import train
from leadml.modeling.workflow import load_training_set

SPEC = synthetic.readiness_spec(min_positives=30, estimator=FAST)


def test_a_saved_training_set_is_read_lean_and_trains_like_the_frame(tmp_path: Path) -> None:
    df, _ = synthetic.readiness_frame(6000, weeks=36, seed=4)
    df["unused"] = 1.0  # a column the spec does not read
    path = tmp_path / "set.parquet"
    df.to_parquet(path)
    lean = load_training_set(path, SPEC)
    assert "unused" not in lean.columns and len(lean) == len(df)
    text = [
        f for f in SPEC.features if df[f].dtype == object or pd.api.types.is_string_dtype(df[f])
    ]
    numeric = [f for f in SPEC.features if f not in text]
    assert text and numeric  # the synthetic set has both kinds
    assert all(lean[f].dtype == np.float32 for f in numeric)
    assert all(isinstance(lean[f].dtype, pd.CategoricalDtype) for f in text)
    assert lean["lead_id"].tolist() == df["lead_id"].astype(str).tolist()
    np.testing.assert_allclose(
        lean[numeric].to_numpy(float), df[numeric].to_numpy(float), rtol=1e-6
    )

    full, small = train(df, SPEC, capacity=25), train(lean, SPEC, capacity=25)
    assert small.rows == full.rows and small.positives == full.positives
    # float32 features bin the same up to rounding: the same model, near enough
    assert small.metrics["roc_auc"] == pytest.approx(full.metrics["roc_auc"], abs=0.01)
    assert small.metrics["brier"] == pytest.approx(full.metrics["brier"], rel=0.05)


def test_a_training_set_file_that_does_not_fit_the_spec_is_named(tmp_path: Path) -> None:
    df, _ = synthetic.readiness_frame(500, weeks=10, seed=1)
    path = tmp_path / "set.parquet"
    df.drop(columns=["label", SPEC.features[0]]).to_parquet(path)
    with pytest.raises(DataError, match=rf"lacks column\(s\) label, {SPEC.features[0]}"):
        load_training_set(path, SPEC)
    csv = tmp_path / "set.csv"
    df.to_csv(csv, index=False)
    with pytest.raises(DataError, match="not a Parquet file.*leadml dataset lead-readiness"):
        load_training_set(csv, SPEC)


def test_cli_dataset_refuses_a_date_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "train",
                "lead-readiness",
                "--dataset",
                str(tmp_path / "x.parquet"),
                "--end",
                "2025-01-01",
            ]
        )
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "--dataset trains on the file's rows" in err and "Traceback" not in err


def test_a_saved_deal_close_set_trains_like_the_frame(tmp_path: Path) -> None:
    df, _ = synthetic.deal_frame(600, weeks=30, seed=3, horizon_days=60)
    spec = synthetic.deal_spec(estimator=FAST)
    path = tmp_path / "deals.parquet"
    df.to_parquet(path)
    lean = load_training_set(path, spec)
    assert lean["outcome"].tolist() == df["outcome"].tolist()  # labels stay as they are
    assert lean["outcome_days"].dtype == df["outcome_days"].dtype
    full, small = train(df, spec), train(lean, spec)
    assert small.rows == full.rows and small.positives == full.positives
    assert small.metrics["roc_auc"] == pytest.approx(full.metrics["roc_auc"], abs=0.01)
