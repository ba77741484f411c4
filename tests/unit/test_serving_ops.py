"""What an engineer deploying the API hits first (ops review): the store must never serve
another registry name's model, a missing or unreachable tracking store is named at once,
and bad addresses and empty stores get messages, not tracebacks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from leadml import tracking
from leadml.cli import main
from leadml.config import load_settings
from leadml.serving import store
from leadml.serving.launch import check_port_free
from leadml.serving.store import ServingError


def _stored(name: str, version: str, run_id: str) -> SimpleNamespace:
    info = SimpleNamespace(
        labels={"registry_name": name, "registry_version": version},
        metadata={"run_id": run_id},
    )
    return SimpleNamespace(info=info, tag=f"deal_model:{run_id}")


def test_the_store_reuses_a_model_only_when_name_version_and_run_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bentoml.models as models  # the module itself (bentoml.models is a lazy loader)

    monkeypatch.setattr(models, "get", lambda tag: _stored("deal_close", "1", "r1"))
    mv = SimpleNamespace(name="deal_close", version="1", run_id="r1")
    assert store._latest_if_version("deal_model", mv) is not None
    for other in (
        SimpleNamespace(name="deal_close_alt", version="1", run_id="r1"),  # another name
        SimpleNamespace(name="deal_close", version="1", run_id="r9"),  # another workspace
        SimpleNamespace(name="deal_close", version="2", run_id="r1"),
    ):
        assert store._latest_if_version("deal_model", other) is None


def test_a_missing_sqlite_store_is_named_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "mlflow.db"
    s = load_settings(workspace=tmp_path / "ws", tracking={"uri": f"sqlite:///{db}"})
    with pytest.raises(tracking.TrackingError, match=r"no MLflow store at .*nowhere/mlflow\.db"):
        tracking.readable_store(s)
    assert not db.exists() and not db.parent.exists()


def test_an_unreachable_server_fails_within_seconds(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    s = load_settings(workspace=tmp_path, tracking={"uri": f"http://127.0.0.1:{port}"})
    started = time.monotonic()
    with pytest.raises(tracking.TrackingError, match="is not reachable"):
        tracking.readable_store(s)
    assert time.monotonic() - started < 15


def test_an_address_of_another_machine_is_named_as_such(tmp_path: Path) -> None:
    s = load_settings(workspace=tmp_path)
    with pytest.raises(ServingError, match="is not an address of this machine"):
        check_port_free(s, "10.255.255.1", 3999)


def test_no_import_with_an_empty_store_says_how_to_fill_it(tmp_path: Path) -> None:
    # a process of its own: BentoML fixes its store's folder once per process
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bento")}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("leadml")), "--workspace", str(tmp_path / "ws"),
         "serve", "--no-import", "--port", "3998"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no 'lead_readiness' model in the BentoML store" in " ".join(done.stderr.split())


def test_a_port_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", "99999"])
    assert exit_info.value.code == 2
    assert "--port" in capsys.readouterr().err
