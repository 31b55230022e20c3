"""Dynamic batching without a wait: the calls that reach a replica together share one batch.

``MicroBatcher`` stands where ``@serve.batch(batch_wait_timeout_s=0)`` stood in the stage
and allocator replicas, and batches the same way: a batch is whatever queued while the
previous one ran. It does less per call: no timer task, no queue, no per-batch metrics
(``serve.batch`` records six), which cost ~0.5 ms per call in a replica on a 2-core node —
paid by every request at every hop when the app runs one request at a time.

The batch function runs synchronously on the replica's event loop (models of 1-10 ms per
batch on one thread): requests that arrive meanwhile wait in Ray's queue and form the next
batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """``await batcher(item)``: ``fn`` runs on up to ``max_batch`` items per call.

    The first item of an event-loop turn schedules a flush (``loop.call_soon``); every item
    added before it runs joins the batch. A lone request is served at once. ``fn`` must
    return one result per item, in order; if it raises, every caller of the batch gets
    the error. A cancelled caller's result is dropped.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._fn = fn
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._scheduled = False

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch = self._pending[: self._max_batch]
        self._pending = self._pending[self._max_batch :]
        self._scheduled = bool(self._pending)
        if self._scheduled:  # more than one batch queued: the rest goes next turn
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            results = self._fn([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} got {len(results)} results")
        except Exception as err:
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # done = cancelled by its caller (a timeout)
                future.set_result(result)
