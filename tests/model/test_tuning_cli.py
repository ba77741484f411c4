"""`leadml train --tune N` shows one line per trial and says whether the spec's own
parameters or a tuned set won."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadml.cli import main


def _csv(path: Path, n: int = 500, seed: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    created = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.uniform(0, 364, n), unit="D")
    visits = rng.poisson(3, n)
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-(-2.2 + 0.45 * visits)))
    pd.DataFrame(
        {
            "Created": created.strftime("%Y-%m-%d"),
            "Web visits": visits,
            "Employees": rng.integers(5, 900, n),
            "Outcome": np.where(y, "Won", "Lost"),
        }
    ).to_csv(path, index=False)
    return path


def test_cli_tune_prints_each_trial_and_the_winner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = _csv(tmp_path / "leads.csv")
    main(
        [
            "train",
            "--table",
            str(csv_path),
            "--target",
            "Outcome",
            "--positive",
            "Won",
            "--time-column",
            "Created",
            "--quick",
            "--tune",
            "2",
            "--no-register",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    tuning = json.loads(captured.out)["tuning"]  # stdout stays clean JSON
    assert tuning["winner"] in ("spec", "tuned") and tuning["best_trial"] in (1, 2)
    if tuning["winner"] == "tuned":
        assert tuning["tuned_log_loss"] < tuning["spec_log_loss"]
    else:
        assert tuning["tuned_log_loss"] >= tuning["spec_log_loss"]
    lines = captured.err.splitlines()
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert [line.split(" (")[0] for line in trial_lines] == ["trial 0/2", "trial 1/2", "trial 2/2"]
    assert "(the spec's own parameters)" in trial_lines[0]
    for line in trial_lines:
        assert "num_leaves=" in line and "learning_rate=" in line and "log loss " in line
    summary = [line for line in lines if line.startswith("tuning: ")]
    assert len(summary) == 1 and " won (log loss " in summary[0]
    for loss in (tuning["spec_log_loss"], tuning["tuned_log_loss"]):
        assert f"{loss:.5f}" in summary[0]  # both objective values
    # DS review: the final run had no link to its tuning run
    import mlflow

    final = mlflow.MlflowClient().get_run(json.loads(captured.out)["run_id"])
    parent_id = final.data.tags["leadml.tuning_run_id"]
    parent = mlflow.MlflowClient().get_run(parent_id)
    assert parent.info.run_name.endswith("-tuning")
    assert final.data.tags["leadml.tuning_winner"] == tuning["winner"]
