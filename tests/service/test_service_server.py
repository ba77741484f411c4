"""The scoring API as it runs: a real ``bentoml serve`` subprocess on a free loopback
port (adaptive batching on), called over HTTP and stopped by its PID; a schemathesis
fuzz of its OpenAPI schema (no 5xx); and ``leadml build`` producing a bento that
holds both champions.
"""

from __future__ import annotations

import copy
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _serving_support import Champions, as_mqls, module_champions, point_bentoml
from hypothesis import HealthCheck, Phase, given, settings

KEY = "server-test-key"


@pytest.fixture(scope="module")
def champs(tmp_path_factory: pytest.TempPathFactory) -> Champions:
    return module_champions(tmp_path_factory.getbasetemp())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(champs: Champions, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from leadml.config import load_settings
    from leadml.serving.launch import start_server, stop_server

    log = tmp_path_factory.mktemp("server") / "server.log"
    with pytest.MonkeyPatch.context() as mp:
        env = {**champs.env(), "LEADML_API_KEY": KEY, "LEADML_SERVING__BATCHING__ENABLED": "true"}
        for key, value in env.items():
            mp.setenv(key, value)
        settings = load_settings()
        port = _free_port()
        with log.open("wb") as out:
            proc = start_server(
                settings, host="127.0.0.1", port=port, stdout=out, stderr=subprocess.STDOUT
            )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_server(proc)
    assert proc.returncode is not None
    assert "Traceback" not in log.read_text()


def _leads(c: Champions) -> dict[str, Any]:
    return {"as_of": c.parity["as_of"], "leads": copy.deepcopy(c.parity["leads"])}


def test_server_scores_over_http_with_the_champions(server: str, champs: Champions) -> None:
    h = {"X-API-Key": KEY}
    r = httpx.post(f"{server}/score_leads", json=_leads(champs), headers=h, timeout=30)
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    assert {s["model"]["version"] for s in scores} == {champs.versions["lead_readiness"]}
    deals = {
        "as_of": champs.parity["as_of"],
        "period_end": "2024-12-31T00:00:00Z",
        "deals": champs.parity["deals"],
    }
    d = httpx.post(f"{server}/score_deals", json=deals, headers=h, timeout=30)
    assert d.status_code == 200, d.text
    assert {s["model"]["version"] for s in d.json()["scores"]} == {champs.versions["deal_close"]}
    handoff = httpx.post(
        f"{server}/handoff", json={**_leads(champs), "is_capacity": 4}, headers=h, timeout=30
    )
    assert handoff.status_code == 200
    meta = httpx.get(f"{server}/metadata", headers=h, timeout=10).json()
    assert meta["models"]["lead_readiness"]["version"] == champs.versions["lead_readiness"]


def test_server_batches_concurrent_requests_without_mixing_them(
    server: str, champs: Champions
) -> None:
    import concurrent.futures as cf

    h = {"X-API-Key": KEY}
    single = []
    for lead in champs.parity["leads"]:
        body = {"as_of": champs.parity["as_of"], "leads": [lead]}
        single.append(httpx.post(f"{server}/score_leads", json=body, headers=h, timeout=30).json())

    def one(i: int) -> tuple[int, Any]:
        lead = champs.parity["leads"][i % len(champs.parity["leads"])]
        body = {"as_of": champs.parity["as_of"], "leads": [lead]}
        return i, httpx.post(f"{server}/score_leads", json=body, headers=h, timeout=60).json()

    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(32)))
    for i, got in results:
        assert got["scores"] == single[i % len(single)]["scores"]


def test_server_refuses_without_key_and_exposes_metrics(server: str, champs: Champions) -> None:
    assert httpx.post(f"{server}/score_leads", json=_leads(champs), timeout=10).status_code == 401
    assert httpx.get(f"{server}/healthz", timeout=10).status_code == 200
    httpx.post(
        f"{server}/handoff",
        json={**as_mqls(_leads(champs)), "is_capacity": 4},
        headers={"X-API-Key": KEY},
        timeout=30,
    )
    metrics = httpx.get(f"{server}/metrics", timeout=10).text
    assert "leadml_readiness_score_bucket" in metrics
    assert re.search(r'leadml_handoff_decisions_total\{[^}]*model_version="', metrics)
    assert re.search(r'leadml_readiness_score_bucket\{[^}]*le="0.005"', metrics)
    assert "leadml_rejected_requests_total" in metrics


def _operations(server: str) -> list[Any]:
    """The operations of the OpenAPI document the server serves (what integrators read)."""
    import schemathesis

    spec = httpx.get(f"{server}/docs.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(spec)
    return [
        r.ok()
        for r in schema.get_all_operations()
        if r.ok().path in ("/score_leads", "/handoff", "/score_deals", "/forecast", "/metadata")
    ]


def test_server_fuzz_never_answers_5xx(server: str) -> None:
    """Schema-driven inputs (positive and negative) never get a 5xx or a traceback.
    50 examples per operation and mode (~45 s here): the schema declares the bounds the
    server checks (timestamps' years, attribute values), so positive cases mostly reach
    the scorer (200) or its request checks (422), not the schema's 400."""
    from schemathesis import GenerationMode

    seen: list[int] = []

    def fuzz(op: Any, mode: Any) -> None:
        @settings(
            max_examples=50,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            r = case.call(base_url=server, headers={"X-API-Key": KEY}, timeout=30)
            seen.append(r.status_code)
            assert r.status_code < 500, f"{op.path}: {r.status_code} {r.text[:300]}"
            assert "Traceback" not in r.text

        check()

    for op in _operations(server):
        fuzz(op, GenerationMode.POSITIVE)
        if op.method.upper() == "POST":  # a GET without parameters has no negative input
            fuzz(op, GenerationMode.NEGATIVE)
    assert any(400 <= s < 500 for s in seen) and any(s == 200 for s in seen)


def test_leadml_build_makes_a_self_contained_bento(
    champs: Champions, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import json
    import tarfile
    from pathlib import Path

    from typer.testing import CliRunner

    from leadml.cli import app

    # the champions' BentoML home: a service class used earlier in this process keeps
    # its class-scope models resolved there
    for key, value in champs.env().items():
        monkeypatch.setenv(key, value)
    point_bentoml(champs.bentoml_home)
    archive = tmp_path / "leadml.bento"
    result = CliRunner().invoke(
        app, ["build", "--json", "--export", str(archive)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    built = json.loads(result.output[result.output.index("{") :])
    assert sorted(m.split(":")[0] for m in built["models"]) == ["deal_close", "lead_readiness"]
    src = Path(built["path"]) / "src"
    assert (src / "leadml" / "serving" / "service.py").exists()
    assert (src / "configs" / "leadml.yaml").exists()
    with tarfile.open(built["archive"]) as tar:
        names = [n.removeprefix("./") for n in tar.getnames()]
    for model in built["models"]:
        name, version = model.split(":")
        assert any(n.startswith(f"models/{name}/{version}/") for n in names), names[:20]
    assert any(n.endswith("leadml/serving/scorer.py") for n in names)
    # the bento serves the models it records, not the store's latest at serve time: a
    # server worker loads it by tag (as `bentoml serve <tag>` does, from any folder) and
    # runs the bento's own code, which names the exact tags, although leadml is installed
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from _bentoml_impl.loader import load; "
            "load(sys.argv[1], standalone_load=True); "
            "s = sys.modules['leadml.serving.service']; "
            "print(s.__file__); print(s.READINESS_TAG, s.DEAL_TAG)",
            built["bento"],
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    where, tags = probe.stdout.strip().splitlines()[-2:]
    assert built["bento"].startswith("leadml-api:")
    assert where.startswith(str(src))
    assert sorted(tags.split()) == sorted(built["models"])
    # ops review: building the same version again was BentoML's traceback
    again = CliRunner().invoke(app, ["build", "--version", built["bento"].split(":")[1]])
    assert again.exit_code != 0
    assert "already exists in the BentoML store" in str(again.exception)
    assert "bentoml delete" in str(again.exception)
