"""MicroBatcher and CallBatcher: what arrives together shares a batch; a lone call goes at
once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from greenflow.serve_apps.batching import CallBatcher, MicroBatcher


def test_concurrent_calls_share_batches_of_at_most_max_batch() -> None:
    batches: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        batches.append(items)
        return [2 * i for i in items]

    async def main() -> list[int]:
        batcher = MicroBatcher(double, max_batch=4)
        alone = await batcher(-1)
        together = await asyncio.gather(*(batcher(i) for i in range(10)))
        return [alone, *together]

    assert asyncio.run(main()) == [-2] + [2 * i for i in range(10)]
    assert batches == [[-1], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_an_error_reaches_every_caller_of_the_batch_and_the_next_batch_runs() -> None:
    def fail_on_zero(items: list[int]) -> list[int]:
        if 0 in items:
            raise ValueError("zero")
        return items

    async def main() -> tuple[list[object], int]:
        batcher = MicroBatcher(fail_on_zero, max_batch=8)
        failed = await asyncio.gather(batcher(0), batcher(1), return_exceptions=True)
        return failed, await batcher(2)

    failed, after = asyncio.run(main())
    assert all(isinstance(e, ValueError) for e in failed) and after == 2


def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    async def main() -> int:
        batcher = MicroBatcher(lambda items: items, max_batch=8)
        cancelled = asyncio.ensure_future(batcher(1))
        kept = asyncio.ensure_future(batcher(2))
        await asyncio.sleep(0)
        cancelled.cancel()
        return await kept

    assert asyncio.run(main()) == 2


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda items: items, max_batch=0)


def test_under_load_a_batch_lingers_for_more_and_a_lone_call_never_waits() -> None:
    batches: list[list[int]] = []

    def record(items: list[int]) -> list[int]:
        batches.append(items)
        return items

    async def main() -> float:
        batcher = MicroBatcher(record, max_batch=8, linger_s=0.05)
        await asyncio.gather(batcher(0), batcher(1))  # a batch of 2: load
        first = asyncio.ensure_future(batcher(2))  # lingers...
        await asyncio.sleep(0.01)
        await asyncio.gather(first, batcher(3))  # ...so this one joins it
        await asyncio.sleep(0)
        start = asyncio.get_running_loop().time()
        await batcher(4)  # the last batch had 2; lingers once more
        await batcher(5)  # the last batch had 1: at once
        return asyncio.get_running_loop().time() - start

    waited = asyncio.run(main())
    assert batches == [[0, 1], [2, 3], [4], [5]]
    assert 0.04 < waited < 0.09


def test_call_batcher_sends_what_travels_together_as_one_call_without_waiting_for_it() -> None:
    """The call goes out at the flush, one per batch; a batch in flight does not hold back
    the next one; a failed call (or one that raises at once) fails its batch only."""
    sent: list[list[int]] = []
    release = asyncio.Event()

    def call(items: list[int]) -> Awaitable[list[int]]:
        sent.append(items)  # the remote call is made here, at the flush
        if -1 in items:
            raise ConnectionError("no replica")

        async def answer() -> list[int]:
            if 0 in items:
                await release.wait()  # the first batch is slow
            if 9 in items:
                raise TimeoutError("stage timed out")
            return [10 * i for i in items]

        return answer()

    async def main() -> tuple[list[object], ...]:
        batcher = CallBatcher(call, max_batch=3)
        slow = asyncio.gather(batcher.submit(0), batcher.submit(1))  # queued now
        await asyncio.sleep(0)  # one turn: the flush
        assert sent == [[0, 1]]  # sent at the flush, before anyone awaits the answer
        fast = await asyncio.gather(batcher(2), batcher(3), batcher(4), batcher(5))
        release.set()
        failed = await asyncio.gather(batcher(9), batcher(8), return_exceptions=True)
        refused = await asyncio.gather(batcher(-1), return_exceptions=True)
        return await slow, fast, failed, refused, await asyncio.gather(batcher(6))

    slow, fast, failed, refused, after = asyncio.run(main())
    assert slow == [0, 10] and fast == [20, 30, 40, 50] and after == [60]
    assert sent == [[0, 1], [2, 3, 4], [5], [9, 8], [-1], [6]]
    assert all(isinstance(e, TimeoutError) for e in failed)
    assert isinstance(refused[0], ConnectionError)
