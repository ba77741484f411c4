"""Build a training set once, retrain from the file: ``leadml dataset`` then
``leadml train lead-readiness --dataset FILE`` on a small company."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _batch_data import make_company

from leadml.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_train_from_a_saved_training_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_company(tmp_path / "company", n_leads=400)
    saved = tmp_path / "readiness.parquet"
    main(["dataset", "lead-readiness", "--data", str(data), "--out", str(saved), "--json"])
    built = json.loads(capsys.readouterr().out)
    # DS review: a set of another label window trained silently as a 30-day model
    other = yaml.safe_load((ROOT / "models" / "lead_readiness.yaml").read_text())
    other["target"]["horizon_days"] = 14
    other["backtest"]["gap_days"] = 14
    (tmp_path / "spec14.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(SystemExit) as refused:
        main(["train", "lead-readiness", "--dataset", str(saved), "--data", str(data),
              "--spec", str(tmp_path / "spec14.yaml"), "--no-register"])  # fmt: skip
    err = capsys.readouterr().err
    assert refused.value.code == 2
    assert "has 30-day labels" in err and "target.horizon_days 14" in err
    with pytest.raises(SystemExit):
        main(["train", "deal-close", "--dataset", str(saved), "--data", str(data), "--no-register"])
    assert "is a lead-readiness set" in capsys.readouterr().err
    # the file is what trains: drop its first as-of week (a data scientist's own edit)
    written = pd.read_parquet(saved)
    written = written[written["as_of"] > written["as_of"].min()]
    written.to_parquet(saved)
    # the shipped spec, made small enough for 400 leads
    spec = yaml.safe_load((ROOT / "models" / "lead_readiness.yaml").read_text())
    spec["min_positives"] = 20
    spec["estimator"].update(num_boost_round=40, early_stopping_rounds=10, num_threads=1)
    spec["backtest"].update(origins=1)
    spec["calibration"].update(holdout_days=28)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    main(
        [
            "train",
            "lead-readiness",
            "--dataset",
            str(saved),
            "--data",
            str(data),
            "--spec",
            str(spec_file),
            "--no-register",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == len(written) < built["rows"]
    assert out["positives"] == int(written["label"].sum())
    assert out["version"] is None and out["run_id"]
    assert 0.0 <= out["metrics"]["roc_auc"] <= 1.0 and out["metrics"]["ece"] >= 0.0
