"""An attribute-only lead table with mixed types, missing-value sentinels and a time
column trains end to end: backtested in time order, calibrated, with a baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadml.cli import main
from leadml.importing.tabular import (
    out_of_range,
    prepare_table,
    table_training_frame,
    train_table,
)
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


# ------------------------------------------------------------------ the CLI


def _leaky_csv(path: Path, n: int = 500, seed: int = 5) -> Path:
    """A small export: mixed types, sentinels, a time column and one planted leak
    (``Call minutes``: only known after the outcome, near-perfectly separating it)."""
    table = _table(n, seed)
    rng = np.random.default_rng(seed)
    won = (table["Outcome"] == "Won").to_numpy()
    table["Call minutes"] = np.where(won, rng.uniform(8, 30, n), rng.uniform(0, 9, n)).round(1)
    table.to_csv(path, sep=";", index=False)
    return path


def _train_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    main(["train", *args, "--quick", "--json"])
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_cli_train_table_warns_about_leaks_and_exclude_removes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = _leaky_csv(tmp_path / "leads.csv")
    common = [
        "--table",
        str(csv_path),
        "--target",
        "Outcome",
        "--time-column",
        "Created",
        "--missing-values",
        "Select,unknown,Employees=999",
        "--positive",
        "Won",
    ]
    leaky, err = _train_cli([*common, "--no-register"], capsys)
    assert "warning" in err and "'Call minutes'" in err and "--exclude Call minutes" in err
    assert "Call minutes" in leaky["features"] and leaky["leakage"]["flagged"] == ["Call minutes"]
    assert leaky["version"] is None

    out, err = _train_cli([*common, "--exclude", "Call minutes", "--name", "t_table"], capsys)
    assert "Call minutes" not in err and "warning" not in err
    assert out["features"] == ["Web visits", "Industry", "Employees"]
    assert out["model"] == "t_table" and out["version"] == "1"
    assert out["rows"] == 500 and out["positives"] == int(
        (pd.read_csv(csv_path, sep=";")["Outcome"] == "Won").sum()
    )
    windows = out["windows"]
    assert len(windows) == 3
    assert [w["start"] for w in windows] == sorted(w["start"] for w in windows)
    for w in windows:  # time order: every window trains only on rows before it
        assert w["train_rows"] <= w["first_row"]
        assert 0 <= w["roc_auc"] <= 1 and 0 <= w["baseline_roc_auc"] <= 1
    assert out["metrics"]["ece"] >= 0 and "roc_auc" in out["baseline"]
    assert out["out_of_range"] == []  # no column of this table moves with time
    assert out["metrics"]["roc_auc"] > 0.6  # the planted signal, out of time, without the leak
    assert len(out["examples"]) == 3
    probs = [e["probability"] for e in out["examples"]]
    assert probs == sorted(probs, reverse=True)
    features_named = {r["feature"] for e in out["examples"] for r in e["positive"] + e["negative"]}
    assert features_named and features_named <= set(out["features"])

    import mlflow

    from leadml.config import load_settings
    from leadml.tracking import configure

    configure(load_settings())
    version = mlflow.MlflowClient().get_model_version_by_alias("t_table", "challenger")
    assert str(version.version) == "1" and version.run_id == out["run_id"]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--target", "Converted"], "'Converted'"),
        (["--target", "Industry"], "Industry"),  # four values: not a binary outcome
        (["--target", "Outcome", "--exclude", "Budget"], "Budget"),
        (["--target", "Outcome", "--time-column", "Industry"], "'Industry'"),
    ],
)
def test_cli_train_table_errors_name_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    csv_path = _leaky_csv(tmp_path / "leads.csv", n=200)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--table", str(csv_path), *extra, "--quick"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "error:" in err and named in err and "Traceback" not in err


def test_cli_train_needs_a_model_or_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train"])
    assert "--table" in capsys.readouterr().err


def test_out_of_range_names_a_column_that_moves_with_time_and_not_stationary_ones() -> None:
    table = _table(900, seed=3)
    created = pd.to_datetime(table["Created"])
    # like an interest rate: falls steadily, so every later window is below all it has seen
    table["Rate"] = (5.0 - (created - created.min()).dt.days / 100).round(2)
    frame, report = prepare_table(
        table, "Outcome", time_column="Created", missing_values="Select,unknown,Employees=999"
    )
    result = train_table(frame, report, time_column="Created", base_spec=FAST)
    found = out_of_range(result)
    assert {d["column"] for d in found} == {"Rate"}
    assert sorted(d["window"] for d in found) == [1, 2, 3]
    for d in found:
        assert d["share"] == 1.0 and d["test_max"] < d["train_min"]


def test_cli_table_flags_without_a_table_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "lead-readiness", "--target", "y", "--exclude", "duration"])
    assert "--target, --exclude only apply with --table" in capsys.readouterr().err
