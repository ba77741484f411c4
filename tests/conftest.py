"""Shared fixtures: every test runs with its workspace, MLflow and BentoML homes in
temporary folders, never in the user's home."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LEADML_WORKSPACE", str(home / "workspace"))
    monkeypatch.setenv("BENTOML_HOME", str(home / "bentoml"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("LEADML_CONFIG_DIR", raising=False)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture
def shared_datasets(repo_root: Path) -> Path:
    """The public datasets folder (never copied into the project): ``$LEADML_SHARED_DATASETS``,
    else ``../shared/datasets`` beside this checkout, else beside the checkout this one was
    cloned from (CI runs in a fresh clone in a temporary folder)."""
    candidates = []
    if os.environ.get("LEADML_SHARED_DATASETS"):
        candidates.append(Path(os.environ["LEADML_SHARED_DATASETS"]))
    candidates.append(repo_root.parent / "shared" / "datasets")
    origin = subprocess.run(
        ["git", "-C", str(repo_root), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        candidates.append(Path(origin).resolve().parent / "shared" / "datasets")
    return next((c for c in candidates if c.is_dir()), candidates[0])
