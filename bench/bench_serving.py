"""Benchmark of ``/score_leads``: one lead with 200 events per request.

Side by side, in one run, on this machine:

  (a) the in-process scorer (``leadml.serving.scorer.Scorer.score_leads``) called directly,
  (b) a minimal FastAPI/uvicorn app wrapping the same scorer (1 process, with the
      service's garbage-collector settings),
  (c) the leadml BentoML service (``bentoml serve``, 1 worker process), with adaptive
      batching on and off.

For each: p50 / p99 latency at concurrency 1 and 32, and the saturated requests per
second (completed requests / wall time at concurrency 32), plus the server's CPU time
per request at concurrency 32 (all processes of the server, from /proc). The three
servers run at the same time (idle when not measured) and are measured in
interleaved rounds (``--rounds``); the table shows the median over the rounds, so
that a burst of load from other processes on the shared machine hits every target
alike. Every server must return the same scores as the in-process scorer.

The load generator is a minimal asyncio HTTP/1.1 keep-alive client in this process
(pre-encoded request, ~0.05 ms of CPU per request: a general-purpose client such as
httpx costs ~1 ms, which on 2 cores takes CPU from the server being measured).

The stage costs (in-process, one lead x 200 events) show what adaptive batching can
share between requests: the online features (the aggregates of all the batch's leads
computed together) and the model call (booster, calibrator, TreeSHAP); parsing and
checks are per request whatever the batch. The "batching bound" is the throughput
gain batching could give (Amdahl) if every request's features and model call cost what
they cost per lead in a call of 32, given the server CPU per request measured.

Champions: by default tiny ones are trained on a small simulated company in a
temporary folder (as the service tests do); ``--champions DIR`` keeps/reuses them.

    .venv/bin/python bench/bench_serving.py [--seconds 5] [--rounds 3] [--champions DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "service"))

LEVELS = (1, 32)


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


def request_bytes(url: str, body: bytes) -> bytes:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One request on a keep-alive connection: (status, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


async def _http_load(
    url: str, request: bytes, concurrency: int, seconds: float
) -> tuple[list[float], int]:
    parts = urlsplit(url)
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                status, _ = await _post(reader, writer, request)
                if status == 200:
                    lat.append(time.perf_counter() - t)
                else:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, errors


def first_response(url: str, body: bytes) -> dict[str, Any]:
    async def one() -> tuple[int, bytes]:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            return await _post(reader, writer, request_bytes(url, body))
        finally:
            writer.close()

    status, data = asyncio.run(one())
    if status != 200:
        raise SystemExit(f"{url}: HTTP {status}: {data[:300]!r}")
    return dict(json.loads(data))


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants."""
    procs: dict[int, tuple[int, int]] = {}  # pid -> (ppid, ticks)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the name: state, ppid, pgrp, ..., utime (12th), stime (13th)
        procs[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    total = 0
    for pid, (_, ticks) in procs.items():
        p = pid
        while p > 1 and p != root:
            p = procs.get(p, (0, 0))[0]
        if p == root:
            total += ticks
    return total / os.sysconf("SC_CLK_TCK")


def http_round(base: str, body: bytes, seconds: float, pid: int) -> dict[int, dict[str, Any]]:
    """One round against the server at ``base``: each level for ``seconds``, with the
    server's CPU per request and (BentoML) the leads per model call."""
    url = base + "/score_leads"
    request = request_bytes(url, body)
    asyncio.run(_http_load(url, request, 4, 1.0))  # warm up (and the batch sizes)
    out: dict[int, dict[str, Any]] = {}
    for c in LEVELS:
        calls0 = batch_calls(base)
        cpu0, t = tree_cpu_s(pid), time.perf_counter()
        lat, errors = asyncio.run(_http_load(url, request, c, seconds))
        wall, cpu = time.perf_counter() - t, tree_cpu_s(pid) - cpu0
        out[c] = {**summarize(lat, wall), "errors": errors}
        out[c]["cpu_ms"] = cpu * 1000 / max(len(lat), 1)
        calls1 = batch_calls(base)
        if calls1 is not None and calls0 is not None and calls1[1] > calls0[1]:
            out[c]["batch"] = (calls1[0] - calls0[0]) / (calls1[1] - calls0[1])
    return out


def inprocess_round(scorer: Any, task: Any, seconds: float) -> dict[int, dict[str, Any]]:
    for _ in range(20):
        scorer.score_leads([task])
    out: dict[int, dict[str, Any]] = {}
    for c in LEVELS:
        lat: list[float] = []
        stop = time.perf_counter() + seconds
        lock = threading.Lock()

        def worker(lat: list[float] = lat, stop: float = stop, lock: threading.Lock = lock) -> None:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                scorer.score_leads([task])
                with lock:
                    lat.append(time.perf_counter() - t)

        t0, cpu0 = time.perf_counter(), time.process_time()
        threads = [threading.Thread(target=worker) for _ in range(c)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        out[c] = {**summarize(lat, wall), "errors": 0, "cpu_ms": cpu * 1000 / max(len(lat), 1)}
    return out


def median_of(rounds: list[dict[int, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for c in LEVELS:
        out[c] = {
            k: (
                sum(r[c][k] for r in rounds)
                if k in ("errors", "n")
                else statistics.median(r[c][k] for r in rounds)
            )
            for k in rounds[0][c]
            if all(k in r[c] for r in rounds)
        }
    return out


# ---------------------------------------------------------------- stage costs


def timed(fn: Callable[[], Any], n: int = 300) -> float:
    """Median milliseconds of ``fn()``."""
    for _ in range(10):
        fn()
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs) * 1000


def stage_costs(scorer: Any, raw: bytes) -> dict[str, float]:
    """Milliseconds per request of each step of /score_leads, in-process, one lead."""
    from leadml.serving import checks
    from leadml.serving.records import lead_payload
    from leadml.serving.schemas import ScoreLeadsRequest, ScoreLeadsResponse
    from leadml.serving.scorer import LeadTask

    cfg, vocab = scorer.settings.serving, scorer.settings.vocabulary
    req = ScoreLeadsRequest.model_validate_json(raw)
    assert req.as_of is not None
    lead, as_of = req.leads[0], req.as_of
    row = scorer._lead_engine([(lead_payload(lead), as_of)])[0]
    task = LeadTask(as_of=as_of, lead=lead)
    response = ScoreLeadsResponse(as_of=as_of, scores=scorer.score_leads([task]))
    batch = 32
    return {
        "parse + validate (pydantic)": timed(lambda: ScoreLeadsRequest.model_validate_json(raw)),
        "checks (as_of, vocabulary)": timed(
            lambda: checks.check_leads(req.leads, as_of, cfg, vocab)
        ),
        "online features, 1 lead per call": timed(
            lambda: scorer._lead_engine([(lead_payload(lead), as_of)])
        ),
        f"online features, per lead in a call of {batch}": timed(
            lambda: scorer._lead_engine([(lead_payload(lead), as_of) for _ in range(batch)]),
            n=100,
        )
        / batch,
        "model, 1 lead per call": timed(lambda: scorer._readiness.score([row])),
        f"model, per lead in a call of {batch}": timed(
            lambda: scorer._readiness.score([row] * batch), n=100
        )
        / batch,
        "response JSON": timed(lambda: response.model_dump_json()),
    }


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
    from leadml.serving.scorer import LeadTask, Scorer
    from leadml.serving.store import latest_stored

    scorer = Scorer.from_store(
        latest_stored("lead_readiness"), latest_stored("deal_close"), load_settings()
    )
    # the garbage-collector settings of the service's workers (service.tune_gc), so
    # that (b) and (c) differ by their web framework only
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
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


def start_fastapi(env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--fastapi-app", str(port)], env=env, start_new_session=True
    )
    return f"http://127.0.0.1:{port}", proc


def start_bentoml(
    env: dict[str, str], batching: bool, base: Path
) -> tuple[str, subprocess.Popen[bytes]]:
    from leadml.config import load_settings
    from leadml.serving.launch import start_server

    # its own BentoML home (sharing the models): BentoML keeps the Prometheus files
    # of a server there and clears them when another server starts
    home = Path(tempfile.mkdtemp(prefix="bentoml-home-", dir=base))
    (home / "models").symlink_to(Path(env["BENTOML_HOME"]) / "models")
    saved = dict(os.environ)
    os.environ.update(env)
    os.environ["BENTOML_HOME"] = str(home)
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
    return f"http://127.0.0.1:{port}", proc


def batch_calls(url: str) -> tuple[float, float] | None:
    """(leads scored, model calls) of the lead batcher since the server started (its
    /metrics); None for a server without them (FastAPI)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    total = count = None
    for line in text.splitlines():
        if line.startswith('leadml_scoring_batch_size_sum{kind="lead"}'):
            total = float(line.split()[-1])
        elif line.startswith('leadml_scoring_batch_size_count{kind="lead"}'):
            count = float(line.split()[-1])
    return None if total is None or count is None else (total, count)


# ---------------------------------------------------------------- main


def report(
    results: dict[str, dict[int, dict[str, Any]]],
    stages: dict[str, float],
    names: list[str],
    seconds: float,
    n_rounds: int,
) -> None:
    print(
        f"\n/score_leads, 1 lead x 200 events, {os.cpu_count()} cores, {seconds:g} s "
        f"per level, median of {n_rounds} interleaved rounds\n"
    )
    print(
        f"{'target':26} {'c1 p50':>7} {'c1 p99':>7} {'c32 p50':>8} {'c32 p99':>8} "
        f"{'RPS c32':>8} {'CPU ms/req':>10} {'errors':>6}"
    )
    for name, r in results.items():
        print(
            f"{name:26} {r[1]['p50_ms']:7.2f} {r[1]['p99_ms']:7.2f} {r[32]['p50_ms']:8.2f} "
            f"{r[32]['p99_ms']:8.2f} {r[32]['rps']:8.1f} {r[32]['cpu_ms']:10.2f} "
            f"{r[1]['errors'] + r[32]['errors']:6d}"
        )
    print("(CPU ms/req: the server's processes at c32; (a): this process)")
    for name, r in results.items():
        if "batch" in r[32]:
            print(f"{name}: {r[32]['batch']:.1f} leads per model call at c32")
    fast = results[names[0]][32]["rps"]
    on, off = results[names[1]], results[names[2]]
    print(f"\nBentoML / FastAPI throughput: on {on[32]['rps'] / fast:.2f}x, ", end="")
    print(f"off {off[32]['rps'] / fast:.2f}x   (goal >= 0.8x)")
    print(f"batching on / off throughput at saturation: {on[32]['rps'] / off[32]['rps']:.2f}x")
    print("   (goal >= 1.5x)")
    for name in names[1:]:
        c1 = results[name][1]
        print(
            f"{name} c1: p50 {c1['p50_ms']:.2f} ms (goal <= 5), "
            f"p99 {c1['p99_ms']:.2f} ms (goal <= 15)"
        )

    print("\nstage costs in-process (median ms per request, one lead x 200 events):")
    for stage, ms in stages.items():
        print(f"  {stage:38} {ms:6.3f}")
    shared = sum(
        stages[f"{step}, 1 lead per call"] - stages[f"{step}, per lead in a call of 32"]
        for step in ("online features", "model")
    )
    cpu_off = off[32]["cpu_ms"]
    print(
        f"batching saves at most {shared:.3f} ms of the {cpu_off:.2f} ms of server CPU per "
        f"request (batching off): throughput bound {cpu_off / max(cpu_off - shared, 1e-9):.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per level")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median shown)")
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
    raw = json.dumps(body).encode()

    from leadml.config import load_settings
    from leadml.serving.schemas import LeadIn
    from leadml.serving.scorer import LeadTask, Scorer
    from leadml.serving.store import latest_stored

    scorer = Scorer.from_store(
        latest_stored("lead_readiness"), latest_stored("deal_close"), load_settings()
    )
    task = LeadTask(
        as_of=pd.Timestamp(body["as_of"]).to_pydatetime(),
        lead=LeadIn.model_validate(body["leads"][0]),
    )
    expected = json.loads(scorer.score_leads([task])[0].model_dump_json())

    names = ["(b) FastAPI/uvicorn", "(c) BentoML batching on", "(c) BentoML batching off"]
    print("starting the servers ...", flush=True)
    servers = {
        names[0]: start_fastapi(env),
        names[1]: start_bentoml(env, True, Path(tmp.name)),
        names[2]: start_bentoml(env, False, Path(tmp.name)),
    }
    rounds: dict[str, list[dict[int, dict[str, Any]]]] = {"(a) in-process scorer": []}
    rounds.update({n: [] for n in names})
    try:
        for url, proc in servers.values():
            wait_ready(url, proc)
        for name, (url, _) in servers.items():
            got = first_response(url + "/score_leads", raw)["scores"][0]
            if got != expected:
                raise SystemExit(f"{name} answered {got}, the in-process scorer {expected}")
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds} ...", flush=True)
            rounds["(a) in-process scorer"].append(inprocess_round(scorer, task, args.seconds))
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                url, proc = servers[name]
                rounds[name].append(http_round(url, raw, args.seconds, proc.pid))
    finally:
        from leadml.serving.launch import stop_server

        for _, proc in servers.values():
            stop_server(proc)
    results = {name: median_of(rs) for name, rs in rounds.items()}
    stages = stage_costs(scorer, raw)

    report(results, stages, names, args.seconds, args.rounds)
    load = os.getloadavg()[0]
    print(f"machine load average at the end: {load:.1f} (other processes share the cores)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
