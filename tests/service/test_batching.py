"""The adaptive batcher of the scoring API (``leadml.serving.service.Batcher``) on its
own: concurrent requests share one call of the work, each gets its own results in
order, a failing request does not fail the others, a request over its latency
budget is shed (503), and only large work leaves the event loop. Also the
garbage-collector settings of a server process (``tune_gc``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from bentoml.exceptions import ServiceUnavailable

from leadml.serving.service import Batcher


class Recorder:
    """Work that doubles each task and records the calls (and their threads)."""

    def __init__(self, delay: float = 0.0, bad: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.threads: list[int] = []
        self.delay = delay
        self.bad = bad

    def __call__(self, tasks: list[int]) -> list[int]:
        self.calls.append(list(tasks))
        self.threads.append(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        if self.bad is not None and self.bad in tasks:
            raise ValueError(f"task {self.bad} is bad")
        return [2 * t for t in tasks]


def test_concurrent_requests_share_a_call_and_get_their_own_results() -> None:
    work = Recorder()
    batcher = Batcher(work, max_batch_size=64, max_latency_ms=10_000, inline_cost=10**6)

    async def main() -> list[list[int]]:
        requests = [[10 * i + j for j in range(i + 1)] for i in range(5)]
        return await asyncio.gather(*(batcher(r) for r in requests))

    results = asyncio.run(main())
    assert results == [[2 * (10 * i + j) for j in range(i + 1)] for i in range(5)]
    assert len(work.calls) == 1 and len(work.calls[0]) == 15


def test_batches_follow_the_load_and_respect_the_max_size() -> None:
    work = Recorder()
    sizes: list[int] = []
    batcher = Batcher(
        work, max_batch_size=4, max_latency_ms=10_000, inline_cost=10**6, observe=sizes.append
    )

    async def main() -> tuple[list[int], list[list[int]]]:
        alone = await batcher([1])  # idle: scored at once, on its own
        many = await asyncio.gather(batcher(list(range(10))), batcher([100, 101]))
        return alone, many

    alone, many = asyncio.run(main())
    assert alone == [2]
    assert many == [[2 * t for t in range(10)], [200, 202]]
    assert sizes[0] == 1 and max(sizes[1:]) <= 4 and sum(sizes) == 13
    assert [t for call in work.calls[1:] for t in call] == [*range(10), 100, 101]


def test_a_failing_request_does_not_fail_the_others() -> None:
    work = Recorder(bad=7)
    batcher = Batcher(work, max_batch_size=64, max_latency_ms=10_000, inline_cost=10**6)

    async def main() -> list[Any]:
        return await asyncio.gather(
            batcher([1, 2]), batcher([7]), batcher([3]), return_exceptions=True
        )

    ok1, bad, ok2 = asyncio.run(main())
    assert ok1 == [2, 4] and ok2 == [6]
    assert isinstance(bad, ValueError) and "task 7" in str(bad)


def test_a_request_over_its_latency_budget_is_shed() -> None:
    work = Recorder(delay=0.1)
    batcher = Batcher(work, max_batch_size=1, max_latency_ms=30, inline_cost=0)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(batcher([1]))
        await asyncio.sleep(0.02)  # the first batch is being scored (in a thread)
        second = asyncio.ensure_future(batcher([2]))
        return await asyncio.gather(first, second, return_exceptions=True)

    first, second = asyncio.run(main())
    assert first == [2]
    assert isinstance(second, ServiceUnavailable) and second.error_code.value == 503
    assert work.calls == [[1]]


@pytest.mark.parametrize("enabled", [True, False])
def test_only_large_work_leaves_the_event_loop(enabled: bool) -> None:
    work = Recorder()
    batcher = Batcher(
        work,
        max_batch_size=64,
        max_latency_ms=10_000,
        enabled=enabled,
        cost=lambda task: task,
        inline_cost=100,
    )

    async def main() -> int:
        await batcher([60, 40])  # 100 records: on the loop
        await batcher([60, 41])  # 101: in a worker thread
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert work.threads[0] == loop_thread
    assert work.threads[1] != loop_thread
    assert work.calls == [[60, 40], [60, 41]]


def test_tune_gc_freezes_the_loaded_objects_and_enlarges_the_young_generation() -> None:
    import gc

    from leadml.serving.service import GC_YOUNG, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
