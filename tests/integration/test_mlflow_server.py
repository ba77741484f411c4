"""A real ``mlflow server`` on loopback with its own backend store and artifact root:
train a small model against it, register, promote and load the champion back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from leadml import tracking
from leadml.cli import main
from leadml.config import load_settings
from leadml.modeling import synthetic
from leadml.modeling.bundle import ScoringBundle
from leadml.modeling.spec import ModelSpec
from leadml.modeling.train import train

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            (tmp_path / "artifacts").as_uri(),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited: {(tmp_path / 'server.log').read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server not ready: {(tmp_path / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        # the server runs in its own session: stop it and its workers by process group
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_train_register_promote_and_load_champion_over_http(
    mlflow_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = load_settings(workspace=tmp_path / "ws", tracking={"uri": mlflow_server})
    assert tracking.configure(settings) == mlflow_server
    df, truth = synthetic.readiness_frame(3000, weeks=30, seed=21)
    spec = ModelSpec(
        name="lead_readiness",
        kind="lead_readiness",
        features=synthetic.READINESS_FEATURES,
        min_positives=20,
        estimator={"num_boost_round": 40, "num_threads": 1},
        backtest={"origins": 1, "gap_days": 30, "test_days": 28},
        # a small model: this test is about HTTP
        gate={"max_ece": 0.1, "min_roc_auc": 0.5, "max_mean_ratio_error": 1.0},
    )
    result = train(df, spec, truth=truth)
    logged = tracking.log_training(result, settings)
    assert logged.version == "1"
    tracking.promote("lead_readiness")
    champion = ScoringBundle.load("models:/lead_readiness@champion")
    rows = df.head(30)
    np.testing.assert_allclose(champion.predict_proba(rows), result.model.predict_proba(rows))
    run = mlflow.get_run(logged.run_id)
    assert run.data.metrics["roc_auc"] == pytest.approx(result.metrics["roc_auc"])
    artifacts = {a.path for a in tracking.client().list_artifacts(logged.run_id)}
    assert {"model_card.md", "plots"} <= artifacts
    card = mlflow.artifacts.load_text(f"runs:/{logged.run_id}/model_card.md")
    assert card.startswith("# Model card: lead_readiness version 1\n")  # rewritten after
    # nothing was written to a local store: the server holds it all
    assert not (settings.workspace / "mlflow").exists()
    assert list((tmp_path / "artifacts").rglob("booster.txt"))

    # The CLI's --json stays machine-readable against a server (notebook review: MLflow
    # printed "View run ... at: <url>" lines to stdout after every run)
    rng = np.random.default_rng(3)
    visits = rng.poisson(3, 600)
    won = rng.uniform(size=600) < 1 / (1 + np.exp(2.0 - 0.5 * visits))
    pd.DataFrame(
        {
            "Lead ID": [f"L{i}" for i in range(600)],
            "Created": pd.date_range("2024-01-01", periods=600, freq="14h").strftime("%Y-%m-%d"),
            "Web visits": visits,
            "Outcome": np.where(won, "Won", "Lost"),
        }
    ).to_csv(tmp_path / "leads.csv", index=False)
    monkeypatch.setenv("LEADML_TRACKING__URI", mlflow_server)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    capsys.readouterr()
    main(["--workspace", str(tmp_path / "ws2"), "train", "--table", str(tmp_path / "leads.csv"),
          "--target", "Outcome", "--quick", "--no-register", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert mlflow.get_run(out["run_id"]).info.status == "FINISHED"
