"""A copied or moved workspace reads and writes its own MLflow artifacts (three reviews:
the store kept absolute file:// URIs of the original folder, so a copy trained into the
original and a moved workspace failed with "No such artifact: ''")."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest

from leadml import tracking
from leadml.config import load_settings


def test_a_moved_workspace_is_re_pointed_at_its_own_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = load_settings(workspace=tmp_path / "first")
    tracking.configure(first)
    with mlflow.start_run(experiment_id=tracking.experiment_id(first)) as run:
        mlflow.log_text("hello", "note.txt")
    assert (first.mlflow_dir / "artifacts").is_dir()
    assert tracking.relocate_artifacts(first.mlflow_dir / "mlflow.db", first.mlflow_dir) is None

    shutil.move(tmp_path / "first", tmp_path / "moved")
    moved = load_settings(workspace=tmp_path / "moved")
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: a new process would not have it
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure(moved)
    assert "now reads and writes" in capsys.readouterr().err
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/note.txt") == "hello"
    with mlflow.start_run(experiment_id=tracking.experiment_id(moved)) as later:
        mlflow.log_text("again", "note.txt")
    assert (moved.mlflow_dir / "artifacts").as_posix() in later.info.artifact_uri
    assert not (tmp_path / "first").exists()  # nothing written to the old place
    # a second configure finds nothing to change
    assert tracking.relocate_artifacts(moved.mlflow_dir / "mlflow.db", moved.mlflow_dir) is None


def test_a_store_outside_the_workspace_is_never_rewritten(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "mlflow.db"
    outside.parent.mkdir()
    outside.write_bytes(b"")
    ws = load_settings(workspace=tmp_path / "ws")
    (ws.mlflow_dir / "artifacts").mkdir(parents=True)
    assert tracking.relocate_artifacts(outside, ws.mlflow_dir) is None
    assert outside.read_bytes() == b""


def test_the_ui_hint_is_the_server_itself_or_mlflow_ui_on_the_file(tmp_path: Path) -> None:
    server = load_settings(workspace=tmp_path, tracking={"uri": "http://127.0.0.1:5000"})
    assert tracking.ui_hint(server) == "http://127.0.0.1:5000"
    local = load_settings(workspace=tmp_path, tracking={"uri": "sqlite:///x/mlflow.db"})
    assert tracking.ui_hint(local) == "mlflow ui --backend-store-uri sqlite:///x/mlflow.db"
