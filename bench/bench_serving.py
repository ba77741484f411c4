"""Benchmark of ``/score_leads``: one lead with 200 events per request.

Side by side, in one run, on this machine:

  (a) the in-process scorer (``leadml.serving.scorer.Scorer.score_leads``) called directly,
  (b) a minimal FastAPI/uvicorn app wrapping the same scorer (1 process),
  (c) the leadml BentoML service (``bentoml serve``: API worker + scorer worker),
      with adaptive batching on and off.

For each: p50 / p99 latency at concurrency 1 and 32, and the saturated requests per
second (completed requests / wall time at concurrency 32). The load generator is an
asyncio httpx client in this process, so it shares the machine's cores with the
server; the figures are for comparing the three side by side, not absolute capacity.

Champions: by default tiny ones are trained on a small simulated company in a
temporary folder (as the service tests do); ``--champions DIR`` keeps/reuses them.

    .venv/bin/python bench/bench_serving.py [--seconds 8] [--champions DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "service"))


# ---------------------------------------------------------------- payload


def payload(champs: Any, n_events: int = 200) -> dict[str, Any]:
    """One lead of the simulated company with exactly ``n_events`` events before as_of."""
    import pandas as pd

    as_of = pd.Timestamp(champs.parity["as_of"])
    lead = max(champs.parity["leads"], key=lambda x: len(x["events"]))
    events = []
    base = list(lead["events"])
    for i in range(n_events):
        ev = dict(base[i % len(base)])
        # spread over the 90 days before as_of so that every window sees some
        ev["ts"] = (as_of - pd.Timedelta(minutes=7 + 641 * i)).isoformat()
        events.append(ev)
    return {"as_of": as_of.isoformat(), "leads": [{**lead, "events": events}]}


# ---------------------------------------------------------------- load


def summarize(lat: list[float], seconds: float) -> dict[str, float]:
    lat = sorted(lat)
    if not lat:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "rps": 0.0, "n": 0}
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    return {
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": p99 * 1000,
        "rps": len(lat) / seconds,
        "n": len(lat),
    }


async def _http_load(
    url: str, body: bytes, concurrency: int, seconds: float, headers: dict[str, str]
) -> tuple[list[float], int]:
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, errors


def http_bench(url: str, body: dict[str, Any], seconds: float) -> dict[str, Any]:
    data = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    asyncio.run(_http_load(url, data, 4, 1.5, headers))  # warm up (and the batching optimizer)
    out: dict[str, Any] = {}
    for c in (1, 32):
        t = time.perf_counter()
        lat, errors = asyncio.run(_http_load(url, data, c, seconds, headers))
        out[c] = {**summarize(lat, time.perf_counter() - t), "errors": errors}
    return out


def inprocess_bench(scorer: Any, task: Any, seconds: float) -> dict[str, Any]:
    for _ in range(20):
        scorer.score_leads([task])
    out: dict[str, Any] = {}
    for c in (1, 32):
        lat: list[float] = []
        stop = time.perf_counter() + seconds
        lock = threading.Lock()

        def worker(lat: list[float] = lat, stop: float = stop, lock: threading.Lock = lock) -> None:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                scorer.score_leads([task])
                with lock:
                    lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(c)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        out[c] = {**summarize(lat, time.perf_counter() - t0), "errors": 0}
    return out


# ---------------------------------------------------------------- servers


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], path: str = "/readyz", timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready in {timeout} s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fastapi_main(port: int) -> None:
    """(b): the same scorer behind a minimal FastAPI app on uvicorn (one process)."""
    import uvicorn
    from fastapi import FastAPI

    from leadml.config import load_settings
    from leadml.serving.schemas import ScoreLeadsRequest, ScoreLeadsResponse
    from leadml.serving.scorer import Scorer
    from leadml.serving.service import LeadTask
    from leadml.serving.store import latest_stored

    scorer = Scorer.from_store(
        latest_stored("lead_readiness"), latest_stored("deal_close"), load_settings()
    )
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, bool]:
        return {"ready": True}

    def score_leads(request: Any) -> Any:
        tasks = [LeadTask(as_of=request.as_of, lead=lead) for lead in request.leads]
        return ScoreLeadsResponse(as_of=request.as_of, scores=scorer.score_leads(tasks))

    # real classes, not the strings of `from __future__ import annotations`: FastAPI reads them
    score_leads.__annotations__ = {"request": ScoreLeadsRequest, "return": ScoreLeadsResponse}
    app.post("/score_leads")(score_leads)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def run_fastapi(env: dict[str, str], body: dict[str, Any], seconds: float) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--fastapi-app", str(port)], env=env, start_new_session=True
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        return http_bench(f"http://127.0.0.1:{port}/score_leads", body, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_bentoml(
    env: dict[str, str], body: dict[str, Any], seconds: float, batching: bool
) -> dict[str, Any]:
    from leadml.config import load_settings
    from leadml.serving.launch import start_server, stop_server

    saved = dict(os.environ)
    os.environ.update(env)
    os.environ["LEADML_SERVING__BATCHING__ENABLED"] = "true" if batching else "false"
    try:
        settings = load_settings()
        port = free_port()
        proc = start_server(
            settings,
            host="127.0.0.1",
            port=port,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        return http_bench(f"http://127.0.0.1:{port}/score_leads", body, seconds)
    finally:
        stop_server(proc)


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--seconds", type=float, default=8.0, help="measuring time per concurrency level"
    )
    ap.add_argument(
        "--champions", type=Path, default=None, help="folder to keep/reuse the tiny champions"
    )
    ap.add_argument("--fastapi-app", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fastapi_app is not None:
        fastapi_main(args.fastapi_app)
        return

    import pandas as pd
    from _serving_support import champions, point_bentoml

    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    tmp = tempfile.TemporaryDirectory(prefix="leadml-bench-")
    if args.champions:
        os.environ["LEADML_TEST_CHAMPIONS"] = str(args.champions)
    print("preparing champions (simulate, train, register, import) ...", flush=True)
    champs = champions(Path(tmp.name))
    env = {**os.environ, **champs.env(), "LEADML_API_KEY": ""}
    os.environ.update(champs.env())
    point_bentoml(champs.bentoml_home)
    body = payload(champs)

    from leadml.config import load_settings
    from leadml.serving.schemas import LeadIn
    from leadml.serving.scorer import Scorer
    from leadml.serving.service import LeadTask
    from leadml.serving.store import latest_stored

    scorer = Scorer.from_store(
        latest_stored("lead_readiness"), latest_stored("deal_close"), load_settings()
    )
    task = LeadTask(
        as_of=pd.Timestamp(body["as_of"]).to_pydatetime(),
        lead=LeadIn.model_validate(body["leads"][0]),
    )
    results: dict[str, dict[str, Any]] = {}
    print("(a) in-process scorer ...", flush=True)
    results["(a) in-process scorer"] = inprocess_bench(scorer, task, args.seconds)
    print("(b) FastAPI/uvicorn ...", flush=True)
    results["(b) FastAPI/uvicorn"] = run_fastapi(env, body, args.seconds)
    print("(c) BentoML, batching on ...", flush=True)
    results["(c) BentoML batching on"] = run_bentoml(env, body, args.seconds, batching=True)
    print("(c) BentoML, batching off ...", flush=True)
    results["(c) BentoML batching off"] = run_bentoml(env, body, args.seconds, batching=False)

    print(
        f"\n/score_leads, 1 lead x 200 events, {os.cpu_count()} cores, "
        f"{args.seconds:g} s per level\n"
    )
    print(
        f"{'target':28} {'c1 p50':>8} {'c1 p99':>8} {'c32 p50':>8} {'c32 p99':>8} "
        f"{'RPS c32':>8} {'errors':>6}"
    )
    for name, r in results.items():
        print(
            f"{name:28} {r[1]['p50_ms']:8.2f} {r[1]['p99_ms']:8.2f} {r[32]['p50_ms']:8.2f} "
            f"{r[32]['p99_ms']:8.2f} {r[32]['rps']:8.1f} {r[1]['errors'] + r[32]['errors']:6d}"
        )
    fast = results["(b) FastAPI/uvicorn"][32]["rps"]
    on = results["(c) BentoML batching on"][32]["rps"]
    off = results["(c) BentoML batching off"][32]["rps"]
    print(f"\nBentoML (batching on) / FastAPI throughput: {on / fast:.2f}x   (goal >= 0.8x)")
    print(f"batching on / off throughput at saturation:  {on / off:.2f}x   (goal >= 1.5x)")
    c1 = results["(c) BentoML batching on"][1]
    print(
        f"BentoML c1 p50 {c1['p50_ms']:.2f} ms (goal <= 5), p99 {c1['p99_ms']:.2f} ms (goal <= 15)"
    )
    load = os.getloadavg()[0]
    print(f"machine load average during the run: {load:.1f} (other processes share the cores)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
