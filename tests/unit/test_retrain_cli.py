"""Retraining CLI details from audit 4: baseline notes that never read "x > x", `train
--json` failing as JSON, tracking URIs that are bare paths, and `python -m leadml`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from leadml import tracking
from leadml.cli import main
from leadml.cli.models import _warnings_after_training
from leadml.modeling import synthetic

GOOD = {
    "roc_auc": 0.8,
    "baseline_roc_auc": 0.7,
    "brier": 0.1,
    "baseline_brier": 0.2,
    "ece": 0.01,
    "latest_roc_auc": 0.8,
    "mean_ratio_error": 0.05,
}


def _notes(**metrics: float) -> list[str]:
    spec = synthetic.readiness_spec(gate={"max_ece": 0.03, "min_roc_auc": 0.6})
    return _warnings_after_training(SimpleNamespace(metrics={**GOOD, **metrics}), spec)


def test_the_baseline_note_never_reads_x_greater_than_x() -> None:
    """It fired on rounding noise and printed "Brier 0.0153 > 0.0153"."""
    assert _notes(brier=0.0153012, baseline_brier=0.0152996) == []
    assert _notes(roc_auc=0.87261, baseline_roc_auc=0.87264) == []
    (note,) = _notes(brier=0.01366, baseline_brier=0.01347)
    assert note.endswith("Brier 0.01366 > 0.01347")
    (note,) = _notes(roc_auc=0.872, baseline_roc_auc=0.876)
    assert note.endswith("ROC AUC 0.872 < 0.876")
    # a model better than the baseline gets no note, however small the difference
    assert _notes(brier=0.01347, baseline_brier=0.01366) == []


def test_train_json_prints_a_json_error_like_promote(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "deal-close", "--start", "13/11/2024", "--json"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["ok"] is False and "'13/11/2024' is not an ISO date" in out["error"]
    assert out["failed_checks"] == [] and out["checks"] == []
    assert "not an ISO date" in captured.err  # the message on stderr as without --json


def _models_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["models"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    return "".join(err.split())  # the console wraps long paths anywhere: compare unspaced


def test_a_tracking_uri_without_a_scheme_says_how_to_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MLflow's file-store deprecation text was shown, cut off at "See htt"."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    db = tmp_path / "x" / "x.db"
    monkeypatch.setenv("LEADML_TRACKING__URI", str(db))
    err = _models_error(monkeypatch, capsys)
    assert f"sqlite:///{db}" in err and "Seehtt" not in err
    assert not db.exists()  # no folder store made at the file's path

    folder = tmp_path / "store"
    monkeypatch.setenv("LEADML_TRACKING__URI", folder.as_uri())
    err = _models_error(monkeypatch, capsys)
    assert f"sqlite:///{folder / 'mlflow.db'}" in err and "MLFLOW_ALLOW_FILE_STORE=true" in err


def test_a_folder_store_allowed_by_the_environment_is_not_called_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: with MLFLOW_ALLOW_FILE_STORE=true, any store error mentioning the
    filesystem still said "set MLFLOW_ALLOW_FILE_STORE=true"."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    error = RuntimeError("Could not write run metadata to the filesystem: quota exceeded")
    err = str(tracking.store_error(error, (tmp_path / "store").as_uri()))
    assert "MLFLOW_ALLOW_FILE_STORE" not in err and "quota exceeded" in err


def test_a_long_store_message_is_never_cut_inside_a_url() -> None:
    url = "https://mlflow.org/docs/latest/self-hosting/migrate-from-file-store"
    for words in range(40, 64, 3):  # the 300-character limit falls before, in and after it
        text = "word " * words + f"See {url} for guidance. And more words after it."
        err = str(tracking.store_error(RuntimeError(text), "sqlite:////tmp/a.db"))
        assert "htt" not in err.replace(url, ""), err  # the link whole or not at all


def test_python_dash_m_leadml_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "leadml", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "promote" in done.stdout and "train" in done.stdout
