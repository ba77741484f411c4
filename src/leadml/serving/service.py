"""The online scoring API: a BentoML 1.4 service, ``LeadmlAPI``.

The service is thin and typed: it parses the request (pydantic, 400 on wrong types
or missing fields), checks it against the limits, the vocabularies and the as-of
time (413 / 422 with field paths), scores, applies the hand-off policy / revenue
distribution, records Prometheus metrics and one log line per request (ids and
timings, never personal fields), and answers.

The champion models are declared at class scope as ``BentoModel`` so that
``bentoml build`` records them in the bento. The per-lead / per-deal work (online
features + model) goes through an adaptive batcher (:class:`Batcher`) inside the
same process: the leads of concurrent requests get their online features in one
call of the engine and their scores in one model call, the batch size following the
load (no batching window to wait for). A ``batchable`` endpoint is not used because
it takes one list argument and fails every request of a batch when one item is bad:
requests must be checked as a whole (their as-of time, their limits) BEFORE their
leads join a batch. A separate batched scorer service would add a second process
hop (pickled payload over a socket) to every request, which cost more latency than
batching saves (see ``bench/bench_serving.py``).

Per-request overhead kept low (``bench/bench_serving.py`` measures it): BentoML's
access log is off (the service's own line carries the request id and timings),
the POST endpoints are not traced by default (``_UNTRACED``), small lead scoring
work runs on the event loop rather than hopping to a thread, and the readiness model
is called on numpy (:class:`leadml.serving.scorer.FastReadiness`). Deal scoring
(tens of milliseconds of fixed cost per call: the hazard model over every weekly
period and its integrated-gradient reasons) and the forecast work always run in a
worker thread, so that a /score_deals or /forecast call does not hold up the
/score_leads calls arriving meanwhile.

Run ``leadml serve`` (or ``bentoml serve leadml.serving.service:LeadmlAPI``).
Configuration is read once per process when the service starts (``load_settings``:
``configs/leadml.yaml`` < ``LEADML_*`` variables); nothing is read at import.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import gc
import hmac
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import bentoml
from fastapi import FastAPI
from starlette.responses import JSONResponse, Response

from leadml.config import Settings, load_settings
from leadml.serving import checks
from leadml.serving.checks import Problem, RequestError
from leadml.serving.pinned import PINNED
from leadml.serving.schemas import (
    DealIn,
    DealScore,
    ForecastRequest,
    ForecastResponse,
    HandoffRequest,
    HandoffResponse,
    LeadIn,
    LeadScore,
    ScoreDealsRequest,
    ScoreDealsResponse,
    ScoreLeadsRequest,
    ScoreLeadsResponse,
    ServiceBatching,
    ServiceLimits,
    ServiceMetadata,
)
from leadml.serving.scorer import DealTask, LeadTask, Scorer

logger = logging.getLogger("leadml.serving")
T = TypeVar("T")

# Tags of the champions in the BentoML model store (see leadml.serving.store): the
# latest import, or in a built bento the exact models it was built with.
READINESS_TAG = PINNED.get("lead_readiness", "lead_readiness:latest")
DEAL_TAG = PINNED.get("deal_close", "deal_close:latest")


@dataclass(eq=False)
class _Job:
    """One request's tasks (or a part of them) waiting in the batch queue."""

    tasks: list[Any]
    future: asyncio.Future[list[Any]]
    enqueued: float


class Batcher:
    """Adaptive batching of per-entity work across concurrent requests.

    Each request's tasks join one queue; a single dispatcher takes everything queued
    (up to ``max_batch_size`` tasks) and calls ``work`` once with the tasks of all
    those requests; each request gets its own results back, in order. Requests that
    arrive while a batch is being scored form the next batch, so the batch size
    follows the load: 1 when idle (no batching window is waited for), up to
    ``max_batch_size`` at saturation. A request larger than ``max_batch_size`` is
    split. A request that waited more than ``max_latency_ms`` in the queue when its
    batch starts is shed (BentoML ``ServiceUnavailable``, answered 503). When a batch
    fails, its requests are retried one by one, so that one bad request cannot fail
    the others.

    Work costing at most ``inline_cost`` (``cost`` summed over the tasks: records
    to read) runs on the event loop: for small work a hop to a worker thread costs
    more than it saves (the GIL serialises the two threads anyway). Larger work runs
    in one worker thread, so that the event loop keeps parsing the next requests.
    With ``enabled=False`` each request is scored on its own the same way.
    """

    def __init__(
        self,
        work: Callable[[list[Any]], list[Any]],
        max_batch_size: int,
        max_latency_ms: int,
        enabled: bool = True,
        cost: Callable[[Any], int] = lambda task: 1,
        inline_cost: int = 0,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self.work = work
        self.enabled = enabled
        self.max_batch_size = max_batch_size
        self.max_latency_ms = max_latency_ms
        self.cost = cost
        self.inline_cost = inline_cost
        self.observe = observe
        self._limiter: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: collections.deque[_Job] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None

    async def _run(self, tasks: list[Any]) -> list[Any]:
        if sum(self.cost(t) for t in tasks) <= self.inline_cost:
            return self.work(tasks)
        import anyio
        import anyio.to_thread

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(self.work, tasks, limiter=self._limiter)

    async def __call__(self, tasks: list[Any]) -> list[Any]:
        if not tasks:
            return []
        if not self.enabled:
            if self.observe is not None:
                self.observe(len(tasks))
            return await self._run(tasks)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (test clients)
            self.close()
            self._loop, self._wake = loop, asyncio.Event()
        size = self.max_batch_size
        now = time.monotonic()
        jobs = [
            _Job(tasks[i : i + size], loop.create_future(), now) for i in range(0, len(tasks), size)
        ]
        self._queue.extend(jobs)
        assert self._wake is not None
        self._wake.set()
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = loop.create_task(self._dispatch())
        parts = await asyncio.gather(*(j.future for j in jobs))
        return [r for part in parts for r in part]

    def _take(self) -> list[_Job]:
        """The next batch: queued requests in arrival order, up to max_batch_size
        tasks; requests over their latency budget are shed."""
        from bentoml.exceptions import ServiceUnavailable

        batch: list[_Job] = []
        n = 0
        now = time.monotonic()
        while self._queue and n + len(self._queue[0].tasks) <= self.max_batch_size:
            job = self._queue.popleft()
            if job.future.done():  # the client went away
                continue
            if (now - job.enqueued) * 1000 > self.max_latency_ms:
                job.future.set_exception(
                    ServiceUnavailable("the scoring queue is over its latency budget")
                )
                continue
            batch.append(job)
            n += len(job.tasks)
        return batch

    async def _dispatch(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            # let the requests already being parsed join (a few loop turns while the
            # queue grows; nothing to wait for when idle)
            for _ in range(4):
                n = len(self._queue)
                await asyncio.sleep(0)
                if len(self._queue) == n:
                    break
            while self._queue:
                batch = self._take()
                if batch:
                    await self._score(batch)

    async def _score(self, batch: list[_Job]) -> None:
        flat = [t for job in batch for t in job.tasks]
        if self.observe is not None:
            self.observe(len(flat))
        try:
            results = await self._run(flat)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exc=exc)
                return
            for job in batch:  # one by one: only the failing request fails
                try:
                    _settle(job.future, await self._run(job.tasks))
                except Exception as one:
                    _settle(job.future, exc=one)
            return
        i = 0
        for job in batch:
            _settle(job.future, results[i : i + len(job.tasks)])
            i += len(job.tasks)

    def close(self) -> None:
        """Stop the dispatcher; requests still queued are cancelled."""
        with contextlib.suppress(RuntimeError):  # their event loop may be closed already
            if self._dispatcher is not None:
                self._dispatcher.cancel()
            while self._queue:
                self._queue.popleft().future.cancel()
        self._dispatcher = None
        self._queue.clear()


def _settle(
    future: asyncio.Future[list[Any]],
    result: list[Any] | None = None,
    exc: BaseException | None = None,
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(list(result or []))


# ---------------------------------------------------------------- the public API

# GET /metadata lives on a mounted FastAPI app whose routes are methods of the
# service (BentoML class views); @bentoml.api endpoints are POST only.
_extra = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@functools.cache
def _metrics() -> dict[str, Any]:
    """Prometheus metrics, created once per process after BentoML has set up the
    multiprocess registry (so they appear on the server's /metrics)."""
    from prometheus_client import Counter, Histogram

    # Calibrated probabilities are mostly small (97% of the demo's leads score below 0.05),
    # so the buckets are log-spaced: equal-width ones put nearly every lead in the first
    buckets = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
    return {
        "readiness": Histogram(
            "leadml_readiness_score",
            "Calibrated readiness of scored leads",
            ["model_version"],
            buckets=buckets,
        ),
        "p_won": Histogram(
            "leadml_deal_p_won", "P(won) of scored deals", ["model_version"], buckets=buckets
        ),
        "grades": Counter("leadml_lead_grades", "Lead grades returned", ["grade", "model_version"]),
        "decisions": Counter(
            "leadml_handoff_decisions", "Hand-off decisions returned", ["decision", "model_version"]
        ),
        "rejected": Counter("leadml_rejected_requests", "Requests refused", ["endpoint", "status"]),
        "ignored": Counter("leadml_ignored_events", "Events dropped for an unknown type", []),
        "batch": Histogram(
            "leadml_scoring_batch_size",
            "Leads / deals scored per model call (adaptive batching)",
            ["kind"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        ),
    }


@functools.cache
def _metric(name: str, *labels: str) -> Any:
    """The metric's child for these label values (``labels()`` is too slow per lead)."""
    metric = _metrics()[name]
    return metric.labels(*labels) if labels else metric


class _Call:
    """Timings of one request; logged as one line with ids only."""

    def __init__(self, endpoint: str, request_id: str, ctx: bentoml.Context | None = None) -> None:
        self.endpoint = endpoint
        self.request_id = request_id
        self.ctx = ctx
        self.start = time.perf_counter()
        self.last = self.start
        self.marks: dict[str, float] = {}
        self.fields: dict[str, Any] = {}

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.marks[step] = (now - self.last) * 1000
        self.last = now

    def log(self, status: int) -> None:
        _mark_logged(self.ctx)
        total = (time.perf_counter() - self.start) * 1000
        steps = " ".join(f"{k}_ms={v:.2f}" for k, v in self.marks.items())
        extra = " ".join(f"{k}={v}" for k, v in self.fields.items())
        logger.info(
            "%s request_id=%s status=%d total_ms=%.2f %s %s",
            self.endpoint,
            self.request_id,
            status,
            total,
            steps,
            extra,
        )


# Keys of the request's ASGI scope state: the id RequestMiddleware gave the request,
# and whether an endpoint has logged it already.
_STATE_ID, _STATE_LOGGED = "leadml_request_id", "leadml_logged"


def _request_id(ctx: bentoml.Context | None) -> str:
    """The id RequestMiddleware gave this request (a new one when called without it)."""
    if ctx is not None:
        given = ctx.request.scope.get("state", {}).get(_STATE_ID)
        if given:
            return str(given)
        header = ctx.request.headers.get("x-request-id", "")
        if _REQUEST_ID.match(header):
            return header
    return uuid.uuid4().hex[:16]


def _mark_logged(ctx: bentoml.Context | None) -> None:
    if ctx is not None:
        ctx.request.scope.setdefault("state", {})[_STATE_LOGGED] = True


def _now() -> datetime:
    return datetime.now(UTC)


# Young generation of the garbage collector in a server process (Python's default:
# 700). One request allocates tens of thousands of objects (a pydantic model per
# record, feature arrays): with the default the collector ran many times per request
# and, with requests in flight together (batching), scanned them again and again.
GC_YOUNG = 10_000


def tune_gc() -> None:
    """Garbage-collector settings of a server process, once the models are loaded:
    what is loaded so far (libraries, models) moves to the permanent generation
    (``gc.freeze``: never scanned again) and the young generation holds ``GC_YOUNG``
    objects. With batching at concurrency 32 on 2 cores this cut the server's CPU per
    request from ~5.5-6.5 ms to ~3-5 ms; without batching the effect was within the
    noise of the shared machine (bench/bench_serving.py)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


# Records (events, activities, ...) one call of the lead scorer may read on the event
# loop (10 000 records: some 50 ms of work); more goes to a worker thread (see
# Batcher). A thread hop per call cost more than it saved (the GIL serialises the
# two threads): on 2 cores at concurrency 32 it cut the throughput by a third.
INLINE_COST = 10_000
# Deal scoring never runs on the event loop: its fixed cost per call (hazards over
# every weekly period, integrated-gradient reasons: ~40-110 ms whatever the deal's
# size) held every /score_leads request arriving meanwhile (p50 7 -> 205 ms).
DEAL_INLINE_COST = 0


async def _off_loop(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a worker thread (anyio's default pool), so that the event
    loop keeps serving the other requests (as BentoML runs a sync endpoint)."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(functools.partial(func, *args))


# The POST endpoints: not traced by default (BentoML's OpenTelemetry middleware costs
# ~1 ms per request even with tracing.sample_rate 0, where no span is ever exported).
# To trace them, set tracing.sample_rate and tracing.excluded_urls (e.g. "") in the
# BentoML configuration (BENTOML_CONFIG / BENTOML_CONFIG_OPTIONS override these defaults).
_UNTRACED = ["/score_leads", "/handoff", "/score_deals", "/forecast"]


def _lead_cost(task: LeadTask) -> int:
    lead = task.lead
    return (
        1
        + len(lead.events)
        + len(lead.account_events)
        + len(lead.activities)
        + len(lead.status_history)
        + len(lead.account_deals)
    )


def _deal_cost(task: DealTask) -> int:
    deal = task.deal
    return (
        1
        + len(deal.stage_history)
        + len(deal.activities)
        + len(deal.account_deals)
        + len(deal.owner_deals)
    )


def _observe_batch(kind: str, size: int) -> None:
    _metric("batch", kind).observe(size)


# Access log off: the service logs one line per request itself (request id, status,
# timings per step; never personal fields), so BentoML's line would be a duplicate.
@bentoml.service(
    name="leadml",
    workers=1,
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": _UNTRACED},
)
@bentoml.asgi_app(_extra, path="/")
class LeadmlAPI:
    """leadml online scoring: lead readiness, IS hand-off, deal close, revenue forecast.

    Every endpoint takes an ``as_of`` time (default now, moved just after a record a
    sender's fast clock stamped at most ``checks.CLOCK_SKEW`` later) and uses only the
    records sent with timestamps before it. Errors: 400 (wrong types, missing fields),
    401 (missing/wrong API key when one is configured), 413 (over the size limits),
    422 (records at/after as_of, unknown vocabulary values); each lists the field
    path and the reason.
    """

    readiness_model = bentoml.models.BentoModel(READINESS_TAG)
    deal_model = bentoml.models.BentoModel(DEAL_TAG)

    def __init__(self) -> None:
        self.settings: Settings = load_settings()
        cfg = self.settings.serving
        self.api_key: str | None = os.environ.get(cfg.api_key_env) or None
        self.max_request_bytes = cfg.max_request_bytes
        self.scorer = Scorer.from_store(self.readiness_model, self.deal_model, self.settings)
        self._info: dict[str, Any] = self.scorer.metadata()
        b = cfg.batching
        self._leads = Batcher(
            self.scorer.score_leads,
            b.max_batch_size,
            b.max_latency_ms,
            b.enabled,
            cost=_lead_cost,
            inline_cost=INLINE_COST,
            observe=functools.partial(_observe_batch, "lead"),
        )
        self._deals = Batcher(
            self.scorer.score_deals,
            b.max_batch_size,
            b.max_latency_ms,
            b.enabled,
            cost=_deal_cost,
            inline_cost=DEAL_INLINE_COST,
            observe=functools.partial(_observe_batch, "deal"),
        )
        if logger.level == logging.NOTSET:  # the server's logging config shows WARNING+ only
            logger.setLevel(logging.INFO)
        logger.info(
            "scoring with %s; batching %s",
            self.scorer.describe(),
            f"up to {b.max_batch_size}" if b.enabled else "off",
        )
        _quiet_validation_tracebacks()
        if bentoml.server_context.worker_index is not None:  # a server worker process
            tune_gc()
        if self.api_key is None:
            logger.warning(
                "no API key in $%s: the API accepts requests without a key", cfg.api_key_env
            )

    # ---- helpers

    async def _answer(
        self, endpoint: str, ctx: bentoml.Context | None, work: Callable[[_Call], Awaitable[T]]
    ) -> T | Response:
        call = _Call(endpoint, _request_id(ctx), ctx)
        if ctx is not None:
            ctx.response.headers["X-Request-ID"] = call.request_id
        try:
            result = await work(call)
        except bentoml.exceptions.BentoMLException as exc:
            if exc.error_code.value != 503:
                raise
            # the batch queue shed the request (over serving.batching.max_latency_ms)
            _metric("rejected", endpoint, "503").inc()
            call.log(503)
            if ctx is not None:
                ctx.response.status_code = 503
            body = {
                "error": "overloaded: the scoring queue is over its latency budget; retry shortly",
                "detail": [],
            }
            return JSONResponse(
                body, status_code=503, headers={"X-Request-ID": call.request_id, "Retry-After": "1"}
            )
        except RequestError as err:
            _metric("rejected", endpoint, str(err.status)).inc()
            call.fields["problems"] = len(err.problems)
            call.log(err.status)
            if ctx is not None:
                ctx.response.status_code = err.status
            return JSONResponse(
                err.body(), status_code=err.status, headers={"X-Request-ID": call.request_id}
            )
        call.log(200)
        return result

    async def _score_leads(
        self, leads: Sequence[LeadIn], ignored: Sequence[int], as_of: datetime
    ) -> list[LeadScore]:
        tasks = [
            LeadTask(as_of=as_of, lead=lead, ignored_events=n)
            for lead, n in zip(leads, ignored, strict=True)
        ]
        scores = await self._leads(tasks)
        for s in scores:
            _metric("readiness", s.model.version).observe(s.readiness)
            _metric("grades", s.grade, s.model.version).inc()
        if sum(ignored):
            _metric("ignored").inc(sum(ignored))
        return scores

    async def _score_deals(
        self,
        deals: Sequence[DealIn],
        as_of: datetime,
        period_end: datetime,
        period_start: datetime | None = None,
    ) -> list[DealScore]:
        tasks = [
            DealTask(as_of=as_of, period_end=period_end, period_start=period_start, deal=d)
            for d in deals
        ]
        scores = await self._deals(tasks)
        for s in scores:
            _metric("p_won", s.model.version).observe(s.p_won)
        return scores

    def _checked_leads(
        self, leads: Sequence[LeadIn], given: datetime | None
    ) -> tuple[datetime, list[LeadIn], list[int]]:
        """The request's as_of (``given``, else :func:`checks.default_as_of`), and its
        checked leads."""
        cfg = self.settings.serving
        checks.check_sizes_leads(leads, cfg)
        skew = timedelta(seconds=cfg.clock_skew_seconds)
        as_of = given or checks.default_as_of(_now(), checks.lead_record_times(leads), skew)
        kept, ignored = checks.check_leads(
            leads,
            as_of,
            cfg,
            self.settings.vocabulary,
            self.scorer.attribute_names,
            note=checks.as_of_note(given is not None, skew),
        )
        return as_of, kept, ignored

    def _deals_as_of(self, deals: Sequence[DealIn], given: datetime | None) -> datetime:
        """The request's as_of (``given``, else :func:`checks.default_as_of`), once its
        size is checked."""
        checks.check_sizes_deals(deals, self.settings.serving)
        skew = timedelta(seconds=self.settings.serving.clock_skew_seconds)
        return given or checks.default_as_of(_now(), checks.deal_record_times(deals), skew)

    def _checked_deals(
        self, deals: Sequence[DealIn], as_of: datetime, given: datetime | None
    ) -> None:
        checks.check_deals(
            deals,
            as_of,
            self.settings.vocabulary,
            self.scorer.attribute_names,
            note=checks.as_of_note(
                given is not None, timedelta(seconds=self.settings.serving.clock_skew_seconds)
            ),
        )

    # ---- endpoints

    @bentoml.api
    async def score_leads(
        self,
        request: ScoreLeadsRequest,
        /,
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> ScoreLeadsResponse:
        """Readiness of each lead as of ``as_of``: calibrated probability, percentile
        against the training scores, grade A-D, top reasons, model version."""

        async def work(call: _Call) -> ScoreLeadsResponse:
            call.fields["leads"] = len(request.leads)
            as_of, leads, ignored = self._checked_leads(request.leads, request.as_of)
            call.mark("check")
            scores = await self._score_leads(leads, ignored, as_of)
            call.mark("score")
            return ScoreLeadsResponse(as_of=as_of, scores=scores)

        return await self._answer("score_leads", ctx, work)  # type: ignore[return-value]

    @bentoml.api
    async def handoff(
        self,
        request: HandoffRequest,
        /,
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> HandoffResponse:
        """Hand-off decision per lead (handoff / nurture / recycle_eligible) from the
        readiness scores and the inside-sales capacity left this week."""

        async def work(call: _Call) -> HandoffResponse:
            from leadml.features.online import lead_status_at
            from leadml.serving.scorer import decide_handoff, policy_of

            call.fields["leads"] = len(request.leads)
            as_of, leads, ignored = self._checked_leads(request.leads, request.as_of)
            call.mark("check")
            scores = await self._score_leads(leads, ignored, as_of)
            call.mark("score")
            capacity = (
                request.is_capacity
                if request.is_capacity is not None
                else self.settings.serving.is_capacity
            )
            info = await self._model_info()
            vocab = self.settings.vocabulary
            statuses = [
                lead_status_at(
                    vocab,
                    as_of,
                    {
                        "ts": [s.ts for s in lead.status_history],
                        "status": [s.status for s in lead.status_history],
                    },
                    lead.created_at,
                )
                for lead in leads
            ]
            response = decide_handoff(
                scores,
                capacity,
                as_of,
                policy_of(info["lead_readiness"]),
                statuses=statuses,
                eligible=self.settings.batch.call_list_statuses,
            )
            version = scores[0].model.version if scores else ""
            for d in response.decisions:
                _metric("decisions", d.decision, version).inc()
            call.mark("policy")
            return response

        return await self._answer("handoff", ctx, work)  # type: ignore[return-value]

    @bentoml.api
    async def score_deals(
        self,
        request: ScoreDealsRequest,
        /,
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> ScoreDealsResponse:
        """P(won) and P(won by period_end) of each open deal, with reasons and
        deal-hygiene flags."""

        async def work(call: _Call) -> ScoreDealsResponse:
            call.fields["deals"] = len(request.deals)
            as_of = self._deals_as_of(request.deals, request.as_of)
            checks.check_period(as_of, None, request.period_end)
            self._checked_deals(request.deals, as_of, request.as_of)
            call.mark("check")
            scores = await self._score_deals(request.deals, as_of, request.period_end)
            call.mark("score")
            return ScoreDealsResponse(as_of=as_of, period_end=request.period_end, scores=scores)

        return await self._answer("score_deals", ctx, work)  # type: ignore[return-value]

    @bentoml.api
    async def forecast(
        self,
        request: ForecastRequest,
        /,
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> ForecastResponse:
        """Distribution of the revenue booked in the period from the given open deals
        (P10/P50/P90, mean, P(reach target)) and its breakdown by stage and segment."""

        async def work(call: _Call) -> ForecastResponse:
            from leadml.serving.scorer import forecast_from_scores

            if request.deals is None:  # the latest nightly forecast, as published
                from leadml.batch.outputs import reader
                from leadml.serving.nightly import forecast_from_nightly

                call.fields["source"] = "nightly"
                as_of = request.as_of or _now()
                # reads the published tables (files or SQL): off the event loop
                response = await _off_loop(
                    lambda: forecast_from_nightly(reader(self.settings), request, as_of)
                )
                call.mark("read")
                return response
            call.fields["deals"] = len(request.deals)
            as_of = self._deals_as_of(request.deals, request.as_of)
            end = checks.check_period(
                as_of, request.period_start, request.period_end, needs_start=True
            )
            self._checked_deals(request.deals, as_of, request.as_of)
            call.mark("check")
            scores = await self._score_deals(request.deals, as_of, end, request.period_start)
            call.mark("score")
            response = await _off_loop(forecast_from_scores, request, as_of, scores)
            call.mark("forecast")
            return response

        return await self._answer("forecast", ctx, work)  # type: ignore[return-value]

    @_extra.get("/metadata", response_model=ServiceMetadata)
    async def metadata(self) -> ServiceMetadata:
        """Models served (names, versions, training windows, features), limits, batching."""
        info = await self._model_info()
        cfg = self.settings.serving
        return ServiceMetadata(
            models=info,
            limits=ServiceLimits(
                max_leads_per_request=cfg.max_leads_per_request,
                max_events_per_lead=cfg.max_events_per_lead,
                max_deals_per_request=cfg.max_deals_per_request,
                max_records_per_deal=cfg.max_records_per_deal,
                max_request_bytes=cfg.max_request_bytes,
                unknown_event_types=cfg.unknown_event_types,  # type: ignore[arg-type]
                is_capacity=cfg.is_capacity,
            ),
            batching=ServiceBatching(
                enabled=cfg.batching.enabled,
                max_batch_size=cfg.batching.max_batch_size,
                max_latency_ms=cfg.batching.max_latency_ms,
            ),
        )

    @bentoml.on_shutdown
    def _stop_batching(self) -> None:
        self._leads.close()
        self._deals.close()

    async def _model_info(self) -> dict[str, Any]:
        return self._info

    def __is_ready__(self) -> bool:
        """Ready when both champion models are loaded."""
        return {"lead_readiness", "deal_close"} <= set(self._info)


# ---------------------------------------------------------------- auth


_ENDPOINTS = ("score_leads", "handoff", "score_deals", "forecast", "metadata")
_OPEN_PATHS = ("/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/schema.json", "/")
_OPEN_PREFIXES = ("/static_content/", "/assets/")


class RequestMiddleware:
    """Every request but health, metrics and docs gets a request id (``X-Request-ID``
    when the caller sends a valid one, else a new one), echoed on the answer, and
    one log line with its status and time: the endpoints log their own answers
    (with counts and per-step timings); this layer logs the others, which the
    endpoints never see (BentoML's 400 for schema errors, 401, 404, ``/metadata``),
    and counts them in ``leadml_rejected_requests_total`` when refused.

    API key: requests without the configured key (``X-API-Key: <key>`` or
    ``Authorization: Bearer <key>``) are answered 401. The key comes from the
    environment variable named by ``serving.api_key_env``; no key configured = no check.

    Body: over ``serving.max_request_bytes`` is a 413 before it is read; an empty one
    where the endpoint needs fields is a 400; one over :data:`PRECHECK_BYTES` has its
    counts of leads / deals / records checked on its parsed JSON before the endpoint
    validates it (:func:`_precheck`). The router's 404 / 405 answer the error shape."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or _is_open(path):
            if path == "/docs.json":  # the OpenAPI document the docs page reads
                key = getattr(bentoml.get_current_service(), "api_key", None)
                send = _rewriting(send, lambda s: s == 200, functools.partial(_openapi, key))
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = next((v for k, v in scope.get("headers", []) if k == b"x-request-id"), b"")
        given = given.decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        state = scope.setdefault("state", {})
        state[_STATE_ID] = request_id
        status = 500
        # bodies are JSON whatever the content type says: curl -d sends form encoding,
        # which BentoML would parse as form fields (and name the whole body as a field)
        scope["headers"] = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"] + [
            (b"content-type", b"application/json")
        ]

        out = _rewriting(send, lambda s: s == 400, _plain_400)  # BentoML's schema errors
        # the router's plain-text 404 / 405 (and FastAPI's) in the shape of every error
        out = _rewriting(
            out, lambda s: s in (404, 405), lambda raw: _routing_error(status, raw), json_body=True
        )

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await out(message)

        service = bentoml.get_current_service()
        expected = getattr(service, "api_key", None)
        limit = getattr(service, "max_request_bytes", None)
        try:
            if expected is not None and not _has_key(scope, expected):
                await _refuse(scope, receive, send_with_id, _unauthorized(scope))
            elif (body := await _within(scope, receive, limit)) is None:
                problem = Problem(
                    ("body",),
                    f"the request body is larger than serving.max_request_bytes ({limit:,} "
                    "bytes); send fewer leads or deals per request",
                    "too_large",
                )
                await _refuse(scope, receive, send_with_id, (413, "request too large", problem))
            else:
                body, refused = await _precheck(scope, body, getattr(service, "settings", None))
                if refused is not None:
                    await _refuse(scope, body, send_with_id, refused)
                else:
                    await self.app(scope, body, send_with_id)
        finally:
            if not state.get(_STATE_LOGGED):
                endpoint = path.strip("/")
                endpoint = endpoint if endpoint in _ENDPOINTS else "other"
                if status >= 400:
                    _metrics()["rejected"].labels(endpoint=endpoint, status=str(status)).inc()
                logger.info(
                    "%s request_id=%s status=%d total_ms=%.2f",
                    endpoint,
                    request_id,
                    status,
                    (time.perf_counter() - start) * 1000,
                )


def _is_open(path: str) -> bool:
    return path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES)


def _rewriting(
    send: Any,
    when: Callable[[int], bool],
    transform: Callable[[bytes], bytes],
    json_body: bool = False,
) -> Callable[[MutableMapping[str, Any]], Awaitable[None]]:
    """``send`` that holds a response whose status passes ``when`` until its body is
    complete, then sends ``transform(body)`` with its Content-Length (and, with
    ``json_body``, Content-Type application/json)."""
    held: list[MutableMapping[str, Any]] = []

    async def out(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start" and when(message["status"]):
            held.append(message)
            return
        if held and message["type"] == "http.response.body":
            held.append(message)
            if message.get("more_body", False):
                return
            start, *parts = held
            held.clear()
            body = transform(b"".join(p.get("body", b"") for p in parts))
            replaced = (b"content-length", b"content-type") if json_body else (b"content-length",)
            headers = [(k, v) for k, v in start.get("headers", []) if k not in replaced]
            headers.append((b"content-length", str(len(body)).encode()))
            if json_body:
                headers.append((b"content-type", b"application/json"))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return out


# The error answers of each endpoint (docs/api.md, "Errors"), for the OpenAPI document.
_ERRORS: dict[str, str] = {
    "400": "Not JSON, an empty body, wrong types, missing or unknown fields, timestamps "
    "that are not ISO 8601 text or outside the years 1900-2199, values out of bounds",
    "401": "Missing or wrong API key (only when one is configured)",
    "413": "Over serving.max_request_bytes or the per-request limits (GET /metadata: limits)",
    "422": "Records at or after as_of, unknown vocabulary values, duplicates, a deal's "
    "history before its creation, bad periods",
    "503": "Batching on: the scoring queue is over its latency budget; retry after Retry-After",
}
_NOT_FOUND = "No nightly forecast published at or before as_of (/forecast without deals)"
_ERROR_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {
                "type": "array",
                "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                "description": "Field path, e.g. [leads, 0, events, 3, ts]",
            },
            "msg": {"type": "string", "description": "The reason and how to fix it"},
            "type": {"type": "string", "description": "Problem kind, e.g. after_as_of"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "Summary: N problems with ..."},
            "detail": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Problem"},
                "description": "One entry per problem (at most 50), each naming its field",
            },
        },
    },
}


def _declare_errors(doc: dict[str, Any], api_key: str | None) -> None:
    """Every POST endpoint's error answers with their real body ({error, detail: [{loc,
    msg, type}]}; BentoML declares 400 only, with detail as a string) and /metadata's
    401; the request body is required where an empty one is refused."""
    doc.setdefault("components", {}).setdefault("schemas", {}).update(_ERROR_SCHEMAS)
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for route, ops in (doc.get("paths") or {}).items():
        if route in _OPEN_PATHS or not isinstance(ops, dict):
            continue
        for method, op in ops.items():
            if not isinstance(op, dict):
                continue
            if route in _BODY_REQUIRED and isinstance(op.get("requestBody"), dict):
                op["requestBody"]["required"] = True  # an empty body is a 400
            responses = op.setdefault("responses", {})
            wanted = dict(_ERRORS) if method == "post" else {"401": _ERRORS["401"]}
            if api_key is None:
                wanted.pop("401")
            if route == "/forecast":
                wanted["404"] = _NOT_FOUND
            else:
                responses.pop("404", None)  # BentoML's generic one: no endpoint answers it
            for status, why in wanted.items():
                responses[status] = {"description": why, "content": ref}


def _nullable_refs(node: Any) -> None:
    """A ``$ref`` with keys beside it (a described model field: ``{"$ref": X,
    "description": D}``, or a nullable one, see ``schemas.NULLABLE``) as OpenAPI 3.0 reads
    it: ``allOf: [{"$ref": X}]`` beside those keys (keys beside a ``$ref`` are ignored)."""
    if isinstance(node, dict):
        if "$ref" in node and len(node) > 1:
            node["allOf"] = [{"$ref": node.pop("$ref")}]
        for value in node.values():
            _nullable_refs(value)
    elif isinstance(node, list):
        for value in node:
            _nullable_refs(value)


# The OpenAPI document's info.description (the page's header): what an integrator needs
# before the field-by-field reference (docs/api.md is the long form).
API_DESCRIPTION = """\
Online scoring of leads and deals from the MLflow champions: lead readiness \
(`/score_leads`), the inside-sales hand-off (`/handoff`), deal close probabilities \
(`/score_deals`) and the revenue forecast (`/forecast`). `GET /metadata` shows the models \
served (versions, training windows, features, the category values each knows, grade \
cut-offs, hand-off policy), the request `limits` in force and the `batching` settings.

**as_of.** Every POST takes an `as_of` time and uses only the records sent whose \
timestamps are before it; a record at or after it is refused (422), never silently \
dropped. Without `as_of` the request is scored as of its arrival, moved just after its \
newest record when that is at most `serving.clock_skew_seconds` (5 minutes) ahead (the \
sender's clock running fast). Timestamps are ISO 8601 text (e.g. `2025-06-02T09:30:00Z`; \
no timezone = UTC; numbers and digits-only text are refused), years 1900-2199. Periods \
(`period_end`, `[period_start, period_end)`) exclude their end.

**Errors.** Bad input is a 4xx naming the field, never a 5xx: \
`{"error": "N problems with ...", "detail": [{"loc": [field path], "msg": reason and fix, \
"type": kind}]}`. 400: not JSON, an empty body, wrong types, missing or unknown fields \
(no personal fields are taken), timestamps or values outside the declared bounds; \
401: API key missing or wrong; 404: no such path, or no nightly forecast (`/forecast` \
without deals); 405: wrong method; 413: a body over `limits.max_request_bytes` or over \
the per-request counts of `limits`; 422: records at or after `as_of`, values outside \
the vocabularies, duplicates, inconsistent histories or periods; 503: the scoring queue \
is over its latency budget (retry after `Retry-After`). Every answer but health, \
metrics and docs carries `X-Request-ID` (yours when you send a valid one: \
`[A-Za-z0-9._:-]{1,64}`). Bodies are read as JSON whatever the Content-Type says.

**Auth.** {auth}
"""
_AUTH = {
    True: "This server requires its API key on every endpoint but health, metrics and "
    "these docs: `X-API-Key: <key>` or `Authorization: Bearer <key>` (the Authorize "
    "button sends it). The key is the value of the variable named by "
    "`serving.api_key_env`.",
    False: "This server has no API key configured (`serving.api_key_env` unset): every "
    "request is accepted. When one is set, send `X-API-Key: <key>` or `Authorization: "
    "Bearer <key>`.",
}
# BentoML's own component schemas: the ones kept (its 500 answer) get descriptions; those
# no answer refers to any more (task endpoints, its 400 and 404) are dropped.
_BENTOML_SCHEMAS = ("TaskStatusResponse", "InvalidArgument", "NotFound", "InternalServerError")
_BENTOML_DESCRIPTIONS = {
    "error": "What went wrong (a server error: report it with the X-Request-ID)",
    "detail": "More about it, when BentoML gives any",
}


def _bentoml_schemas(doc: dict[str, Any]) -> None:
    schemas = doc.get("components", {}).get("schemas", {})
    used = json.dumps({k: v for k, v in doc.items() if k != "components"}) + json.dumps(
        {k: v for k, v in schemas.items() if k not in _BENTOML_SCHEMAS}
    )
    for name in _BENTOML_SCHEMAS:
        if name not in schemas:
            continue
        if f'"#/components/schemas/{name}"' not in used:
            del schemas[name]
            continue
        for prop, spec in (schemas[name].get("properties") or {}).items():
            if isinstance(spec, dict) and not spec.get("description"):
                spec["description"] = _BENTOML_DESCRIPTIONS.get(prop, prop)


def _openapi(api_key: str | None, raw: bytes) -> bytes:
    """The OpenAPI document with leadml's title, description (:data:`API_DESCRIPTION`,
    not BentoML's boilerplate and contact) and version, the error answers every endpoint
    gives (:func:`_declare_errors`), model references readable by OpenAPI 3.0 tools
    (described and nullable ones), and, when an API key is configured, its two header
    forms as security schemes required by every endpoint (so the docs page's "Authorize"
    button sends it)."""
    from leadml import __version__

    try:
        doc = json.loads(raw)
        info = doc.setdefault("info", {})
        info["title"] = "leadml scoring API"
        info["version"] = __version__
        info["description"] = API_DESCRIPTION.replace("{auth}", _AUTH[api_key is not None])
        info.pop("contact", None)  # BentoML's team; the project names no contact
        _declare_errors(doc, api_key)
        _nullable_refs(doc.get("paths"))
        _nullable_refs(doc.get("components"))
        _bentoml_schemas(doc)
    except (ValueError, AttributeError):
        return raw
    if api_key is not None:
        doc.setdefault("components", {})["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        }
        secured: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
        for route, ops in (doc.get("paths") or {}).items():
            if route in _OPEN_PATHS:
                continue
            for op in ops.values():
                if isinstance(op, dict):
                    op["security"] = secured
    return json.dumps(doc).encode()


def _plain_400(raw: bytes) -> bytes:
    """BentoML's 400 for a request that fails the schema, in the shape of every other
    error (docs/api.md): "N problems with the request" instead of pydantic's title (which
    names an internal class), each problem's loc / msg / type without pydantic's "Value
    error, " prefix and documentation link. Anything else passes unchanged."""
    try:
        data = json.loads(raw)
        detail = data["detail"]
        problems = [
            {
                "loc": list(d.get("loc", [])),
                "msg": str(d.get("msg", "")).removeprefix("Value error, "),
                "type": d.get("type", "invalid"),
            }
            for d in detail
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw
    n = len(problems)
    title = f"{n} problem{'' if n == 1 else 's'} with the request"
    return json.dumps({"error": title, "detail": problems}).encode()


_ROUTES = (
    "the API's paths: POST /score_leads, /handoff, /score_deals, /forecast; GET /metadata, "
    "/healthz, /readyz, /metrics; the OpenAPI page GET / (document: /docs.json)"
)


def _routing_error(status: int, raw: bytes) -> bytes:
    """The router's 404 / 405 (plain text "Not Found", or FastAPI's {"detail": ...}) in
    the shape of every other error; an endpoint's own error body (/forecast's 404) is
    kept. The path is not echoed (it is the caller's input)."""
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and "error" in data and isinstance(data.get("detail"), list):
            return raw
    except ValueError:
        pass
    if status == 405:
        problem = Problem(
            ("method",),
            "this path does not take this method (the Allow header lists those it takes); "
            f"{_ROUTES}",
            "method_not_allowed",
        )
        title = "method not allowed"
    else:
        problem = Problem(("path",), f"no such path; {_ROUTES}", "not_found")
        title = "not found"
    return json.dumps(RequestError(0, title, [problem]).body()).encode()


def _unauthorized(scope: dict[str, Any]) -> tuple[int, str, Problem]:
    """The 401, naming the header the caller used (X-API-Key unless only Authorization)."""
    sent = {k for k, _ in scope.get("headers", [])}
    header = (
        "authorization" if b"authorization" in sent and b"x-api-key" not in sent else "x-api-key"
    )
    problem = Problem(
        ("header", header),
        "missing or wrong API key; send X-API-Key: <key> or Authorization: Bearer <key>",
        "unauthorized",
    )
    return 401, "unauthorized", problem


async def _refuse(
    scope: Any, receive: Any, send: Any, what: tuple[int, str, Problem] | RequestError
) -> None:
    if isinstance(what, RequestError):
        error = what
    else:
        status, title, problem = what
        error = RequestError(status, title, [problem])
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    response = JSONResponse(error.body(), status_code=error.status, headers=headers)
    await response(scope, receive, send)


# Bodies of the scoring endpoints larger than this are parsed (``json.loads``) and their
# counts of leads / deals / records checked (413) BEFORE the endpoint validates them:
# pydantic validates ~20 us per lead, so a body of a million tiny leads under
# serving.max_request_bytes held the only worker ~20 s before the count check refused
# it, while json.loads reads the same body some 20-50x faster. Smaller bodies (at most a
# few thousand records: milliseconds of validation) go straight to the endpoint, so a
# typical request is parsed once.
PRECHECK_BYTES = 64 * 1024
_SCORING_PATHS = ("/score_leads", "/handoff", "/score_deals", "/forecast")
# Endpoints whose request has required fields: an empty body is refused as such (400)
# rather than read as {} ("leads: Field required"). /forecast takes an empty body as {}:
# the latest nightly forecast.
_BODY_REQUIRED = ("/score_leads", "/handoff", "/score_deals")
EMPTY_BODY = (
    "empty request body; send a JSON object (the OpenAPI page, GET /, has an example for "
    "every endpoint)"
)


def _declared_length(scope: dict[str, Any]) -> int | None:
    declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
    try:
        return None if declared is None else int(declared)
    except ValueError:
        return None


async def _precheck(
    scope: dict[str, Any], receive: Any, settings: Settings | None
) -> tuple[Any, RequestError | None]:
    """``receive`` (replaying the body when it was read) and the refusal of a scoring
    request that is empty where a body is required (400) or over the count limits (413,
    the message the endpoint's own check gives), decided on the parsed JSON before the
    schema validation. Bodies of at most :data:`PRECHECK_BYTES` (declared by
    Content-Length) are not read here."""
    path = scope.get("path", "")
    if scope.get("method") != "POST" or path not in _SCORING_PATHS:
        return receive, None
    declared = _declared_length(scope)
    if declared is not None and 0 < declared <= PRECHECK_BYTES:
        return receive, None
    chunks: list[bytes] = []
    while True:  # at most serving.max_request_bytes (checked before)
        message = await receive()
        if message["type"] != "http.request":
            return receive, None  # the client went away
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replay = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Any:
        return replay.pop() if replay else await receive()

    if path in _BODY_REQUIRED and not body.strip():
        return replayed, RequestError(
            400, "1 problem with the request", [Problem(("body",), EMPTY_BODY, "empty_body")]
        )
    if len(body) <= PRECHECK_BYTES or settings is None:
        return replayed, None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON (or nested too deep): the endpoint's 400
        return replayed, None
    try:
        checks.check_sizes_json(path.strip("/"), data, settings.serving)
    except RequestError as err:
        return replayed, err
    return replayed, None


async def _within(scope: dict[str, Any], receive: Any, limit: int | None) -> Any:
    """``receive`` for a body of at most ``limit`` bytes, or None when it is larger.

    A declared Content-Length is checked without reading anything; a body sent without
    one (chunked) is read up to the limit and replayed to the app."""
    if limit is None:
        return receive
    declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
    if declared is not None:
        try:
            return receive if int(declared) <= limit else None
        except ValueError:
            return receive  # the server answers a malformed length itself
    if scope.get("method") in ("GET", "HEAD"):
        return receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return receive
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None
        if not message.get("more_body", False):
            break
    replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replayed() -> Any:
        return replay.pop() if replay else await receive()

    return replayed


def _has_key(scope: dict[str, Any], expected: str) -> bool:
    """True when any ``X-API-Key`` or ``Authorization: Bearer`` header holds the key
    (a gateway may add its own Authorization header beside the client's X-API-Key)."""
    want = expected.encode()
    ok = False
    for name, value in scope.get("headers", []):
        given = None
        if name == b"x-api-key":
            given = value
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            given = value[7:]
        if given is not None:
            ok |= hmac.compare_digest(given.strip(), want)  # every header compared
    return ok


LeadmlAPI.add_asgi_middleware(RequestMiddleware)  # type: ignore[attr-defined]  # a bentoml Service


class _DropValidationTraceback(logging.Filter):
    """BentoML logs a full traceback for every 400; a client's bad request is not a
    server error, so keep the line and drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            from pydantic import ValidationError

            if issubclass(record.exc_info[0], ValidationError):
                record.exc_info = None
                record.exc_text = None
                record.levelno, record.levelname = logging.INFO, "INFO"
                if isinstance(record.msg, str) and record.msg.startswith("Exception on"):
                    record.msg = "bad request on" + record.msg.removeprefix("Exception on")
        return True


def _quiet_validation_tracebacks() -> None:
    target = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, _DropValidationTraceback) for f in target.filters):
        target.addFilter(_DropValidationTraceback())
