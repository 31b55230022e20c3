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
    added before it runs joins the batch. A lone request is served at once. Under load
    (the last batch held more than one item) the flush waits ``linger_s`` for more items,
    so batches grow where they save work and one request at a time never waits. ``fn``
    must return one result per item, in order; if it raises, every caller of the batch
    gets the error. A cancelled caller's result is dropped.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], max_batch: int,
                 linger_s: float = 0.0) -> None:  # fmt: skip
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._fn = fn
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._last_size = 0  # items in the last batch: > 1 means load
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flush_handle: asyncio.Handle | None = None

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_batch:
            self._schedule(loop, 0.0)  # a full batch goes at once
        elif self._flush_handle is None:
            self._schedule(loop, self._linger_s if self._last_size > 1 else 0.0)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if delay_s > 0:
            self._flush_handle = loop.call_later(delay_s, self._flush)
        else:
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        batch = self._pending[: self._max_batch]
        self._pending = self._pending[self._max_batch :]
        if self._pending:  # more than one batch queued: the rest goes next turn
            self._schedule(asyncio.get_running_loop(), 0.0)
        self._last_size = len(batch)
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
