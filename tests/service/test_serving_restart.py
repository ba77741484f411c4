"""A new champion is served after a restart, and a rollback is too (docs/api.md: "A new
champion is picked up on the next restart").

On a private copy of the session's champions (the registry is changed here): a second
version of ``lead_readiness`` is registered (the same run's model: which version
answers is what matters), promoted, and a "restart" (what ``leadml serve`` does: import
the champions into the BentoML store, then a new server process loads the service)
reports it in /metadata; after ``leadml rollback`` the next restart reports the
first version again. Each step runs in a process of its own, as in production (the
service class resolves its models once per process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _serving_support import Champions, module_champions

# What `leadml serve` does before the server starts (import the champions), then what a
# server worker does (load the service), reading /metadata through the ASGI app.
RESTART = """
import json, warnings
from leadml.config import load_settings
from leadml.serving.store import import_champions
import_champions(load_settings())
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from leadml.serving.service import LeadmlAPI
with TestClient(LeadmlAPI.to_asgi()) as client:
    models = client.get("/metadata").json()["models"]
print(json.dumps({k: m["version"] for k, m in models.items()}))
"""

# A new version of lead_readiness in the registry: the champion's model and leadml tags
# (as `leadml train` registers a retrained one).
REGISTER = """
import mlflow, os
uri = os.environ["MLFLOW_TRACKING_URI"]
client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
mv = client.get_model_version_by_alias("lead_readiness", "champion")
new = client.create_model_version(
    "lead_readiness", source=mv.source, run_id=mv.run_id, tags=mv.tags,
    model_id=getattr(mv, "model_id", None),
)
print(new.version)
"""


@pytest.fixture(scope="module")
def champs(tmp_path_factory: pytest.TempPathFactory) -> Champions:
    return module_champions(tmp_path_factory.getbasetemp())


def _run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        list(args), capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, f"{args[:3]}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


def test_a_promoted_champion_is_served_after_a_restart_and_a_rollback_too(
    champs: Champions, tmp_path: Path
) -> None:
    # a private copy: the workspace's own MLflow store (leadml re-points its artifact
    # locations at the copy, tracking.relocate_artifacts) and BentoML home
    workspace = tmp_path / "workspace"
    shutil.copytree(champs.workspace, workspace, ignore=shutil.ignore_patterns("bentoml"))
    db = workspace / "mlflow" / "mlflow.db"
    shutil.copy(champs.base / "mlflow.db", db)
    shutil.copytree(champs.bentoml_home, tmp_path / "bentoml")
    env = {
        **os.environ,
        "LEADML_WORKSPACE": str(workspace),
        "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    env.pop("LEADML_API_KEY", None)
    python = sys.executable
    leadml = str(Path(python).with_name("leadml"))
    first = champs.versions["lead_readiness"]

    # the copy points at its own artifacts (a read of the registry relocates them)
    _run(env, leadml, "models")
    assert str(champs.base) not in db.read_bytes().decode("latin-1")
    second = _run(env, python, "-c", REGISTER)
    assert second != first
    _run(
        env,
        leadml,
        "promote",
        "lead_readiness",
        "--version",
        second,
        "--force",
        "--reason",
        "restart test",
    )
    served = json.loads(_run(env, python, "-c", RESTART))
    assert served == {"lead_readiness": second, "deal_close": champs.versions["deal_close"]}

    _run(env, leadml, "rollback", "lead_readiness")
    served = json.loads(_run(env, python, "-c", RESTART))
    assert served["lead_readiness"] == first
